//! A connection's ordered queue of events (a line), and what the pool's threads, the loop's
//! side and the owner share.

use std::any::Any;
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, Weak};

use socket2::SockAddr;

use crate::error::Result;
use crate::handles::cmd::{Cmd, ConnTask, Group, HandleCmd};
use crate::handles::conn::{Awaiting, Conn, TcpHandler};
use crate::loop_core::{SendBudget, lock};
use crate::options::Options;

/// What a waiting message costs besides its bytes (its event, its allocation): counted toward
/// the bound at which reading pauses, so that a flood of tiny messages is bounded too.
pub(super) const EVENT_OVERHEAD: usize = 64;

/// One event of a connection, for its callbacks on a worker.
pub(super) enum Event {
    /// With the count of the connection's events on the loop, whose flag asks for the worker's
    /// notice at once.
    Open(Arc<Awaiting>),
    /// A message (or a raw chunk), and what it counts toward the reading bound.
    Data {
        bytes: Vec<u8>,
        counted: usize,
    },
    Drain,
    Timer,
    Close(Result<()>),
    /// Raw bytes kept before a pause, handed back after the resume (from the worker itself).
    Kept,
    /// Work posted to the connection (`Server::post`), run in order with its callbacks.
    Task(ConnTask),
}

/// What the pool's threads share with the loops' side ([`Pooled`]) and the owner ([`Workers`]).
pub(super) struct Shared {
    pub(super) app: Arc<dyn TcpHandler>,
    pub(super) group: Arc<Group>,
    pub(super) opts: Options,
    pub(super) queue: Mutex<RunQueue>,
    /// Work arrived, or the pool may end.
    pub(super) work: Condvar,
    /// A line ended (for waiters of the pool's end).
    pub(super) idle: Condvar,
    /// The owner let go: only `on_close` runs from now on.
    pub(super) released: AtomicBool,
    /// Callbacks running now.
    pub(super) busy: AtomicUsize,
    /// Events waiting for a worker.
    pub(super) queued: AtomicUsize,
    /// The connections' lines by id, so that a client that reconnects keeps one order.
    pub(super) lines: Mutex<HashMap<u64, Weak<Line>>>,
}

pub(super) struct RunQueue {
    pub(super) ready: VecDeque<Arc<Line>>,
    /// Lines alive: connections whose events are not all done.
    pub(super) lines: usize,
    /// The owner let go: threads end once no line is left.
    pub(super) closing: bool,
    /// Workers waiting for work: only then does new work need a wake-up (a system call).
    pub(super) sleeping: usize,
    /// Of those, the ones woken and not yet up: a wake-up each is on its way.
    pub(super) waking: usize,
}

thread_local! {
    /// The pool whose worker this thread is (the address of its `Shared`), 0 for none.
    pub(super) static WORKER_OF: Cell<usize> = const { Cell::new(0) };
}

impl Shared {
    pub(super) fn on_worker_thread(self: &Arc<Self>) -> bool {
        WORKER_OF.with(|w| w.get()) == Arc::as_ptr(self) as usize
    }

    /// Whether callbacks other than `on_close` may still start.
    pub(super) fn live(&self) -> bool {
        !self.released.load(SeqCst) && !self.group.stopping()
    }

    /// Queues `line` for a worker (it has events and is nowhere else).
    pub(super) fn schedule(&self, line: Arc<Line>) {
        let mut q = lock(&self.queue);
        q.ready.push_back(line);
        let wake = q.sleeping > q.waking;
        q.waking += usize::from(wake);
        drop(q);
        if wake {
            self.work.notify_one();
        }
    }
}

/// The events of one connection, in order, and what a worker keeps of it between callbacks.
pub(super) struct Line {
    pub(super) shared: Arc<Shared>,
    pub(super) id: u64,
    pub(super) queue: Mutex<LineQueue>,
    /// The connection as it was opened (a client that reconnects opens it again).
    pub(super) info: Mutex<Info>,
    /// Bytes (and overhead) of data events waiting or running.
    pub(super) waiting: AtomicUsize,
    /// The loop holds reading for this line.
    pub(super) held: AtomicBool,
    /// What callbacks keep: only the worker running the line takes it.
    pub(super) side: Mutex<WorkerSide>,
}

pub(super) struct LineQueue {
    pub(super) events: VecDeque<Event>,
    /// In the run queue or on a worker.
    pub(super) scheduled: bool,
}

pub(super) struct Info {
    pub(super) peer: Option<SockAddr>,
    /// What the TLS handshake settled (ALPN, SNI), if any.
    pub(super) alpn: Option<Vec<u8>>,
    pub(super) server_name: Option<String>,
    pub(super) budget: Arc<SendBudget>,
}

#[derive(Default)]
pub(super) struct WorkerSide {
    pub(super) user: Option<Box<dyn Any + Send>>,
    /// Raw bytes kept (`Conn::keep`) for the next delivery.
    pub(super) carry: Vec<u8>,
    /// In `on_data`: the delivery's length, and what the callback keeps of it.
    pub(super) delivering: usize,
    pub(super) keep: usize,
    /// Closed by the application, or by the loop (`on_close` ran or runs).
    pub(super) closed: bool,
    /// Paused by the application: messages that were read before the pause reached the loop
    /// wait here until it resumes (they still count toward the reading bound).
    pub(super) paused: bool,
    pub(super) deferred: VecDeque<Event>,
    /// A callback panicked: only `on_close` is left.
    pub(super) failed: bool,
    /// `on_open` ran: `on_close` runs for this connection (and only then).
    pub(super) opened: bool,
    /// Events from the loop done since the loop was last told (`ConnState::awaiting`).
    pub(super) done: usize,
    /// Whether the loop waits for that notice (`Awaiting::wanted`).
    pub(super) awaiting: Option<Arc<Awaiting>>,
}

impl Line {
    /// Appends `ev`, scheduling the line unless it is scheduled already.
    pub(super) fn push(self: &Arc<Self>, ev: Event) {
        // Counted first: the worker that takes it may count it off at once.
        self.shared.queued.fetch_add(1, SeqCst);
        self.shared.group.hand(1);
        let first = {
            let mut q = lock(&self.queue);
            q.events.push_back(ev);
            !std::mem::replace(&mut q.scheduled, true)
        };
        if first {
            self.shared.schedule(self.clone());
        }
    }

    pub(super) fn bound(&self) -> usize {
        self.shared.opts.max_frame.max(1)
    }

    /// A data event of `counted` is done: below the bound again, reading resumes.
    pub(super) fn consumed(&self, counted: usize) {
        if counted == 0 {
            return;
        }
        let now = self.waiting.fetch_sub(counted, SeqCst) - counted;
        if now < self.bound() && self.held.swap(false, SeqCst) {
            self.to_loop(|c| hold(c, false));
        }
    }

    /// Runs `f` on the loop with the connection in hand, in order with its other commands.
    pub(super) fn to_loop(&self, f: impl FnOnce(&mut Conn<'_>) + Send + 'static) {
        let group = &self.shared.group;
        let task: ConnTask = Box::new(move |c| {
            if let Some(c) = c {
                f(c)
            }
        });
        let cmd = Cmd::Handle(HandleCmd::Task { id: self.id, task });
        // Fails only once the connection ended: its `on_close` is on its way.
        let _ = group.loop_of(self.id).and_then(|l| l.push(group, Some(self.id), cmd));
    }

    /// Tells the loop that `done` events of the connection counted by `awaiting` are done, in
    /// order after their commands: in its next turn, unless it waits for this (a wake-up costs
    /// the loop a turn, and the worker its CPU when they share one).
    pub(super) fn caught_up(&self, done: usize, awaiting: Arc<Awaiting>) {
        let group = &self.shared.group;
        let counted = awaiting.clone();
        // That connection's count (a client that reconnected has a new one under its id).
        let task: ConnTask = Box::new(move |_| counted.done(done));
        let cmd = Cmd::Handle(HandleCmd::Task { id: self.id, task });
        let urgent = || awaiting.wanted.load(SeqCst);
        // Fails only once the connection ended: its `on_close` is on its way.
        let _ = group
            .loop_of(self.id)
            .and_then(|l| l.push_quiet(group, Some(self.id), cmd, urgent));
    }
}

impl Drop for Line {
    /// One connection fewer: the pool may end.
    fn drop(&mut self) {
        let mut lines = lock(&self.shared.lines);
        if lines.get(&self.id).is_some_and(|w| w.strong_count() == 0) {
            lines.remove(&self.id);
        }
        drop(lines);
        lock(&self.shared.queue).lines -= 1;
        self.shared.work.notify_all();
        self.shared.idle.notify_all();
    }
}

/// Holds (or, with `false`, releases) reading from the connection on its loop.
pub(super) fn hold(c: &mut Conn<'_>, on: bool) {
    if let Some(st) = c.state() {
        st.held = on;
        if !on {
            st.wants_read = true;
        }
    }
}

/// Counts an event handed to a worker (`ConnState::awaiting`).
pub(super) fn hand(c: &mut Conn<'_>) {
    if let Some(a) = c.state().and_then(|st| st.awaiting.as_ref()) {
        a.hand();
    }
}
