//! A pool of worker threads for handlers that may block (`Options::workers`). The loop calls
//! [`Pooled`], which hands each connection's events (open, data copied out with its framing,
//! drain, timer, close) to the pool through the connection's own ordered queue (a [`Line`]); a
//! line is in the pool's run queue, or on a worker, at most once, so a connection's callbacks
//! run one at a time and in order while different connections run in parallel. A callback on a
//! worker gets a [`Conn`] whose operations reach the loop through its inbox, in order with the
//! connection's other commands (sends reserve their room first, as sends from any thread do).
//!
//! Bounds: reading from a peer pauses once `max_frame` bytes (counting [`EVENT_OVERHEAD`] per
//! message) wait for a worker, so a connection's queue holds at most that plus one read of the
//! loop; the run queue holds each connection at most once. The loop never waits for the pool.

use std::any::Any;
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::SockAddr;

use super::cmd::{Cmd, ConnTask, Group, HandleCmd, push_send};
use super::conn::{Conn, Remote, TcpHandler, check_keep};
use crate::error::{Error, Result};
use crate::framing;
use crate::log::log;
use crate::loop_core::{SendBudget, lock};
use crate::options::Options;
use crate::panic::guard;

/// What a waiting message costs besides its bytes (its event, its allocation): counted toward
/// the bound at which reading pauses, so that a flood of tiny messages is bounded too.
pub(crate) const EVENT_OVERHEAD: usize = 64;

/// The most worker threads a pool may have.
pub(crate) const MAX_WORKERS: usize = 1024;

/// One event of a connection, for its callbacks on a worker.
enum Event {
    Open,
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
struct Shared {
    app: Arc<dyn TcpHandler>,
    group: Arc<Group>,
    opts: Options,
    queue: Mutex<RunQueue>,
    /// Work arrived, or the pool may end.
    work: Condvar,
    /// A line ended (for waiters of the pool's end).
    idle: Condvar,
    /// The owner let go: only `on_close` runs from now on.
    released: AtomicBool,
    /// Callbacks running now.
    busy: AtomicUsize,
    /// Events waiting for a worker.
    queued: AtomicUsize,
    /// The connections' lines by id, so that a client that reconnects keeps one order.
    lines: Mutex<HashMap<u64, Weak<Line>>>,
}

struct RunQueue {
    ready: VecDeque<Arc<Line>>,
    /// Lines alive: connections whose events are not all done.
    lines: usize,
    /// The owner let go: threads end once no line is left.
    closing: bool,
    /// Workers waiting for work: only then does new work need a wake-up (a system call).
    sleeping: usize,
}

thread_local! {
    /// The pool whose worker this thread is (the address of its `Shared`), 0 for none.
    static WORKER_OF: Cell<usize> = const { Cell::new(0) };
}

impl Shared {
    fn on_worker_thread(self: &Arc<Self>) -> bool {
        WORKER_OF.with(|w| w.get()) == Arc::as_ptr(self) as usize
    }

    /// Whether callbacks other than `on_close` may still start.
    fn live(&self) -> bool {
        !self.released.load(SeqCst) && !self.group.stopping()
    }

    /// Queues `line` for a worker (it has events and is nowhere else).
    fn schedule(&self, line: Arc<Line>) {
        let mut q = lock(&self.queue);
        q.ready.push_back(line);
        let wake = q.sleeping > 0;
        drop(q);
        if wake {
            self.work.notify_one();
        }
    }
}

/// The events of one connection, in order, and what a worker keeps of it between callbacks.
pub(crate) struct Line {
    shared: Arc<Shared>,
    id: u64,
    queue: Mutex<LineQueue>,
    /// The connection as it was opened (a client that reconnects opens it again).
    info: Mutex<Info>,
    /// Bytes (and overhead) of data events waiting or running.
    waiting: AtomicUsize,
    /// The loop holds reading for this line.
    held: AtomicBool,
    /// What callbacks keep: only the worker running the line takes it.
    side: Mutex<WorkerSide>,
}

struct LineQueue {
    events: VecDeque<Event>,
    /// In the run queue or on a worker.
    scheduled: bool,
}

struct Info {
    peer: Option<SockAddr>,
    budget: Arc<SendBudget>,
}

#[derive(Default)]
struct WorkerSide {
    user: Option<Box<dyn Any + Send>>,
    /// Raw bytes kept (`Conn::keep`) for the next delivery.
    carry: Vec<u8>,
    /// In `on_data`: the delivery's length, and what the callback keeps of it.
    delivering: usize,
    keep: usize,
    /// Closed by the application, or by the loop (`on_close` ran or runs).
    closed: bool,
    /// Paused by the application: messages that were read before the pause reached the loop
    /// wait here until it resumes (they still count toward the reading bound).
    paused: bool,
    deferred: VecDeque<Event>,
    /// A callback panicked: only `on_close` is left.
    failed: bool,
    /// `on_open` ran: `on_close` runs for this connection (and only then).
    opened: bool,
    /// Events from the loop done since the loop was last told (`ConnState::awaiting`).
    done: usize,
}

impl Line {
    /// Appends `ev`, scheduling the line unless it is scheduled already.
    fn push(self: &Arc<Self>, ev: Event) {
        // Counted first: the worker that takes it may count it off at once.
        self.shared.queued.fetch_add(1, SeqCst);
        let first = {
            let mut q = lock(&self.queue);
            q.events.push_back(ev);
            !std::mem::replace(&mut q.scheduled, true)
        };
        if first {
            self.shared.schedule(self.clone());
        }
    }

    fn bound(&self) -> usize {
        self.shared.opts.max_frame.max(1)
    }

    /// A data event of `counted` is done: below the bound again, reading resumes.
    fn consumed(&self, counted: usize) {
        if counted == 0 {
            return;
        }
        let now = self.waiting.fetch_sub(counted, SeqCst) - counted;
        if now < self.bound() && self.held.swap(false, SeqCst) {
            self.to_loop(|c| hold(c, false));
        }
    }

    /// Runs `f` on the loop with the connection in hand, in order with its other commands.
    fn to_loop(&self, f: impl FnOnce(&mut Conn<'_>) + Send + 'static) {
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
fn hold(c: &mut Conn<'_>, on: bool) {
    if let Some(st) = c.state() {
        st.held = on;
        if !on {
            st.wants_read = true;
        }
    }
}

/// Counts an event handed to a worker (`ConnState::awaiting`).
fn hand(c: &mut Conn<'_>) {
    if let Some(st) = c.state() {
        st.awaiting += 1;
    }
}

/// The handler the loop calls for a service with workers: it queues the events.
pub(crate) struct Pooled(Arc<Shared>);

impl Pooled {
    /// The line of the connection in hand (kept in its state on the loop).
    fn line(c: &mut Conn<'_>) -> Option<Arc<Line>> {
        let st = c.state()?;
        st.pooled.as_ref()?.downcast_ref::<Arc<Line>>().cloned()
    }
}

impl TcpHandler for Pooled {
    fn on_open(&self, conn: &mut Conn<'_>) {
        let shared = &self.0;
        let id = conn.id();
        let peer = conn.peer().ok();
        let Some(st) = conn.state() else { return };
        let info = Info {
            peer,
            budget: st.budget.clone(),
        };
        let mut lines = lock(&shared.lines);
        let line = match lines.get(&id).and_then(Weak::upgrade) {
            Some(line) => {
                *lock(&line.info) = info;
                line
            }
            None => {
                lock(&shared.queue).lines += 1;
                let line = Arc::new(Line {
                    shared: shared.clone(),
                    id,
                    queue: Mutex::new(LineQueue {
                        events: VecDeque::new(),
                        scheduled: false,
                    }),
                    info: Mutex::new(info),
                    waiting: AtomicUsize::new(0),
                    held: AtomicBool::new(false),
                    side: Mutex::default(),
                });
                lines.insert(id, Arc::downgrade(&line));
                line
            }
        };
        drop(lines);
        st.pooled = Some(Box::new(line.clone()));
        st.awaiting += 1;
        line.push(Event::Open);
    }

    fn on_data(&self, conn: &mut Conn<'_>, data: &[u8]) {
        let Some(line) = Pooled::line(conn) else { return };
        let counted = data.len() + EVENT_OVERHEAD;
        let now = line.waiting.fetch_add(counted, SeqCst) + counted;
        hand(conn);
        line.push(Event::Data {
            bytes: data.to_vec(),
            counted,
        });
        if now >= line.bound() {
            line.held.store(true, SeqCst);
            hold(conn, true);
            // The worker may have caught up meanwhile, and seen no hold to release.
            if line.waiting.load(SeqCst) < line.bound() && line.held.swap(false, SeqCst) {
                hold(conn, false);
            }
        }
    }

    fn on_drain(&self, conn: &mut Conn<'_>) {
        if let Some(line) = Pooled::line(conn) {
            hand(conn);
            line.push(Event::Drain);
        }
    }

    fn on_timer(&self, conn: &mut Conn<'_>) {
        if let Some(line) = Pooled::line(conn) {
            hand(conn);
            line.push(Event::Timer);
        }
    }

    fn on_close(&self, conn: &mut Conn<'_>, reason: &Result<()>) {
        if let Some(line) = Pooled::line(conn) {
            line.push(Event::Close(copy(reason)));
        }
    }
}

/// A copy of a close reason (the loop keeps its own).
fn copy(reason: &Result<()>) -> Result<()> {
    let Err(e) = reason else { return Ok(()) };
    Err(match e {
        Error::Invalid(d) => Error::Invalid(d.clone()),
        Error::Addr(d) => Error::Addr(d.clone()),
        Error::AddrInUse(d) => Error::AddrInUse(d.clone()),
        Error::Refused(d) => Error::Refused(d.clone()),
        Error::Timeout(d) => Error::Timeout(d.clone()),
        Error::Closed(d) => Error::Closed(d.clone()),
        Error::Truncated(n) => Error::Truncated(*n),
        Error::Limit(d) => Error::Limit(d.clone()),
        Error::Reset(d) => Error::Reset(d.clone()),
        Error::Stopped => Error::Stopped,
        Error::Panic(d) => Error::Panic(d.clone()),
        Error::Misuse(d) => Error::Misuse(d.clone()),
        Error::Io { context, source } => Error::Io {
            context,
            source: match source.raw_os_error() {
                Some(errno) => io::Error::from_raw_os_error(errno),
                None => io::Error::new(source.kind(), source.to_string()),
            },
        },
    })
}

/// A running pool, owned by its server or client: dropping it lets the pool end once every
/// connection's `on_close` has run, and waits for that unless called on a thread that would
/// deadlock (a loop's or a worker's: then the threads end by themselves).
pub(crate) struct Workers {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Starts `opts.workers` threads for `app`'s connections on `group`: `None` for 0 workers.
/// Returns the pool and the handler the loops call.
pub(crate) fn start(
    app: &Arc<dyn TcpHandler>,
    opts: &Options,
    group: &Arc<Group>,
) -> Result<Option<(Workers, Arc<dyn TcpHandler>)>> {
    if opts.workers == 0 {
        return Ok(None);
    }
    let shared = Arc::new(Shared {
        app: app.clone(),
        group: group.clone(),
        opts: opts.clone(),
        queue: Mutex::new(RunQueue {
            ready: VecDeque::new(),
            lines: 0,
            closing: false,
            sleeping: 0,
        }),
        work: Condvar::new(),
        idle: Condvar::new(),
        released: AtomicBool::new(false),
        busy: AtomicUsize::new(0),
        queued: AtomicUsize::new(0),
        lines: Mutex::new(HashMap::new()),
    });
    let workers = Workers {
        shared: shared.clone(),
        threads: Mutex::new(Vec::new()),
    };
    for n in 0..opts.workers.min(MAX_WORKERS) {
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("netsock-worker-{n}"))
            .spawn(move || work(s));
        match spawned {
            Ok(t) => lock(&workers.threads).push(t),
            // The threads started end when `workers` is dropped.
            Err(e) => return Err(Error::io("spawning a worker thread", e)),
        }
    }
    Ok(Some((workers, Arc::new(Pooled(shared)))))
}

impl Workers {
    /// The owner lets go: from now on only `on_close` callbacks start.
    pub(crate) fn release(&self) {
        self.shared.released.store(true, SeqCst);
    }

    /// Callbacks running now, and events waiting for a worker.
    pub(crate) fn load(&self) -> (u64, u64) {
        (
            self.shared.busy.load(SeqCst) as u64,
            self.shared.queued.load(SeqCst) as u64,
        )
    }

    /// Runs `task` on a worker with connection `id` in hand, in order with its callbacks (with
    /// `None` if it ended first). `Closed` if the pool has no such connection.
    pub(crate) fn post(&self, id: u64, task: ConnTask) -> Result<()> {
        let line = lock(&self.shared.lines).get(&id).and_then(Weak::upgrade);
        match line {
            Some(line) => {
                line.push(Event::Task(task));
                Ok(())
            }
            None => Err(Error::Closed(format!("no open connection with id {id}").into())),
        }
    }

    /// What waits for the pool's connections to be done, without borrowing the owner.
    pub(crate) fn idle(&self) -> Idle {
        Idle(self.shared.clone())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        lock(&self.shared.queue).closing = true;
        self.shared.work.notify_all();
        if self.shared.on_worker_thread() || self.shared.group.on_loop_thread() {
            return;
        }
        for t in std::mem::take(&mut *lock(&self.threads)) {
            let _ = t.join();
        }
    }
}

/// Waits until every connection of a pool is done (its `on_close` returned).
pub(crate) struct Idle(Arc<Shared>);

impl Idle {
    /// `Misuse` on one of the pool's own threads, where waiting would wait for itself.
    pub(crate) fn check(&self) -> Result<()> {
        if self.0.on_worker_thread() {
            return Err(Error::Misuse(
                "waiting for a server inside its own worker callback would deadlock".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn wait(&self) -> Result<()> {
        self.check()?;
        let mut q = lock(&self.0.queue);
        while q.lines > 0 {
            q = self.0.idle.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        Ok(())
    }
}

/// Counts a callback as running while it lives.
struct Busy<'a>(&'a AtomicUsize);

impl<'a> Busy<'a> {
    fn new(n: &'a AtomicUsize) -> Busy<'a> {
        n.fetch_add(1, SeqCst);
        Busy(n)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// A worker thread: runs one event of the next line in turn, until the pool ends.
fn work(shared: Arc<Shared>) {
    WORKER_OF.with(|w| w.set(Arc::as_ptr(&shared) as usize));
    loop {
        let line = {
            let mut q = lock(&shared.queue);
            loop {
                if let Some(line) = q.ready.pop_front() {
                    break line;
                }
                if q.closing && q.lines == 0 {
                    return;
                }
                q.sleeping += 1;
                q = shared.work.wait(q).unwrap_or_else(|p| p.into_inner());
                q.sleeping -= 1;
            }
        };
        let ev = lock(&line.queue).events.pop_front();
        if let Some(ev) = ev {
            shared.queued.fetch_sub(1, SeqCst);
            run(&line, ev);
        }
        let more = {
            let mut q = lock(&line.queue);
            q.scheduled = !q.events.is_empty();
            q.scheduled
        };
        // Behind the other connections: one event per turn keeps them fair.
        if more {
            shared.schedule(line);
        }
    }
}

/// Runs the callback of `ev` for `line`'s connection.
fn run(line: &Arc<Line>, ev: Event) {
    let shared = &line.shared;
    let app = &*shared.app;
    let mut side = lock(&line.side);
    if let Event::Close(reason) = ev {
        // Raw bytes kept for a message the peer never finished: as on the loop.
        let reason = match reason {
            Ok(()) if !side.carry.is_empty() => Err(Error::Closed(
                format!("the peer closed {} bytes into a message", side.carry.len()).into(),
            )),
            other => other,
        };
        side.closed = true;
        for ev in std::mem::take(&mut side.deferred) {
            if let Event::Data { counted, .. } = ev {
                line.consumed(counted);
            }
        }
        // Released before its on_open could start: the application never saw it.
        if side.opened {
            let _busy = Busy::new(&shared.busy);
            // A panic in on_close has nothing left to close.
            let _ = guard(|| app.on_close(&mut Conn::remote(&mut View { line, side: &mut side }), &reason));
        }
        // A client that reconnects starts afresh (with its next on_open).
        *side = WorkerSide {
            closed: true,
            ..WorkerSide::default()
        };
        return;
    }
    if !matches!(ev, Event::Kept | Event::Task(_)) {
        side.done += 1;
    }
    let counted = match &ev {
        Event::Data { counted, .. } => *counted,
        _ => 0,
    };
    let skip = side.failed || !shared.live() || (side.closed && !matches!(ev, Event::Open));
    if !skip && side.paused && counted > 0 {
        side.done -= 1;
        side.deferred.push_back(ev);
        return;
    }
    if skip {
        if let Event::Task(task) = ev {
            // The connection ended (or was let go) first: the task gets `None`, so that what
            // it holds can be freed.
            if let Err(e) = guard(|| task(None)) {
                log!(Error, "a task posted to connection {} failed: {e}", line.id);
            }
        }
    } else {
        let _busy = Busy::new(&shared.busy);
        let ran = match ev {
            Event::Open => {
                *side = WorkerSide {
                    opened: true,
                    done: side.done,
                    ..WorkerSide::default()
                };
                guard(|| app.on_open(&mut Conn::remote(&mut View { line, side: &mut side })))
            }
            Event::Data { bytes, .. } => deliver(line, &mut side, bytes),
            Event::Kept => deliver(line, &mut side, Vec::new()),
            Event::Drain => guard(|| app.on_drain(&mut Conn::remote(&mut View { line, side: &mut side }))),
            Event::Timer => guard(|| app.on_timer(&mut Conn::remote(&mut View { line, side: &mut side }))),
            Event::Task(task) => guard(|| task(Some(&mut Conn::remote(&mut View { line, side: &mut side })))),
            Event::Close(_) => Ok(()),
        };
        if let Err(e) = ran {
            log!(Error, "connection {}: a worker callback failed: {e}", line.id);
            side.failed = true;
            line.to_loop(move |c| c.fail(e));
        }
    }
    // Caught up: the loop learns it (after the callbacks' sends), once per catching up.
    if side.done > 0 && lock(&line.queue).events.is_empty() {
        let done = std::mem::take(&mut side.done);
        line.to_loop(move |c| {
            if let Some(st) = c.state() {
                st.awaiting = st.awaiting.saturating_sub(done);
            }
        });
    }
    drop(side);
    line.consumed(counted);
}

/// `on_data` with `bytes`, after what the last delivery kept.
fn deliver(line: &Arc<Line>, side: &mut WorkerSide, bytes: Vec<u8>) -> Result<()> {
    let mut data = std::mem::take(&mut side.carry);
    if data.is_empty() {
        data = bytes;
    } else {
        data.extend_from_slice(&bytes);
    }
    if data.is_empty() {
        return Ok(());
    }
    side.delivering = data.len();
    let app = &*line.shared.app;
    let ran = guard(|| app.on_data(&mut Conn::remote(&mut View { line, side: &mut *side }), &data));
    side.delivering = 0;
    let keep = std::mem::take(&mut side.keep);
    if keep > 0 {
        data.drain(..data.len() - keep);
        side.carry = data;
    }
    ran
}

/// The connection as a worker's callback sees it.
struct View<'a> {
    line: &'a Arc<Line>,
    side: &'a mut WorkerSide,
}

impl Remote for View<'_> {
    fn id(&self) -> u64 {
        self.line.id
    }

    fn peer(&self) -> Result<SockAddr> {
        lock(&self.line.info)
            .peer
            .clone()
            .ok_or_else(|| Error::Closed("the peer's address is unknown".into()))
    }

    fn send(&mut self, data: &[u8], frame: bool) -> Result<()> {
        if self.side.closed {
            return Err(Error::Closed("the connection is closed".into()));
        }
        let opts = &self.line.shared.opts;
        let envelope = if frame {
            Some(framing::envelope_len(&opts.framing, data)?)
        } else {
            None
        };
        push_send(
            &self.line.shared.group,
            self.line.id,
            data,
            envelope,
            opts.max_write_buffer,
        )
    }

    fn pause(&mut self) {
        self.side.paused = true;
        self.line.to_loop(|c| c.pause());
    }

    fn resume(&mut self) {
        if std::mem::take(&mut self.side.paused) {
            self.line.to_loop(|c| c.resume());
            // What was read before the pause comes next, before anything queued since.
            let deferred = std::mem::take(&mut self.side.deferred);
            if !deferred.is_empty() {
                self.line.shared.queued.fetch_add(deferred.len(), SeqCst);
                let mut q = lock(&self.line.queue);
                for ev in deferred.into_iter().rev() {
                    q.events.push_front(ev);
                }
            }
            // Kept bytes come back at once, new input or not (as on the loop).
            if !self.side.carry.is_empty() {
                self.line.push(Event::Kept);
            }
        }
    }

    fn set_timer(&mut self, after: Option<Duration>) {
        let at = after.map(|a| Instant::now() + a);
        self.line
            .to_loop(move |c| c.set_timer(at.map(|at| at.saturating_duration_since(Instant::now()))));
    }

    fn keep(&mut self, n: usize) -> Result<()> {
        check_keep(&self.line.shared.opts, self.side.delivering, n)?;
        self.side.keep = n;
        Ok(())
    }

    fn close(&mut self) {
        if !std::mem::replace(&mut self.side.closed, true) {
            let (group, id) = (&self.line.shared.group, self.line.id);
            let cmd = Cmd::Handle(HandleCmd::Close { id });
            let _ = group.loop_of(id).and_then(|l| l.push(group, Some(id), cmd));
        }
    }

    fn pending(&self) -> usize {
        lock(&self.line.info).budget.accepted()
    }

    fn handler(&self) -> &dyn TcpHandler {
        &*self.line.shared.app
    }

    fn user(&self) -> Option<&(dyn Any + Send)> {
        self.side.user.as_deref()
    }

    fn set_user(&mut self, user: Option<Box<dyn Any + Send>>) {
        self.side.user = user;
    }
}
