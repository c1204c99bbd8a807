//! A group of loop threads and what their handles share with them: the stop flag, one waker
//! and one inbox per loop, the counters, and the "all stopped" signal that `wait` blocks on.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Poll, Token, Waker};
use socket2::Socket;

use crate::error::{Error, Result};
use crate::stats::{LoopStats, Stats};
use crate::tcp::Service;

/// The poll token of the waker, the same in every loop.
pub(crate) const WAKER: Token = Token(1);

/// How many reads or datagrams one socket gets per turn before the others are served.
pub(crate) const READS_PER_TURN: usize = 16;

/// How long a loop sharing its CPU with other loops runs before it lets them (`take_turns`):
/// short enough to bound their wait well below a scheduler slice, long enough that switching
/// costs little per message.
const TURN: Duration = Duration::from_micros(200);

/// Size of the one read buffer each loop owns (connections own none).
pub(crate) const READ_BUF: usize = 64 * 1024;

/// Work handed to a loop by other threads.
pub(crate) enum Cmd {
    /// Write bytes (`frame`: as one framed message, `bytes` long with its framing) to a
    /// connection.
    Send {
        id: u64,
        data: Vec<u8>,
        frame: bool,
        bytes: usize,
    },
    /// Close a connection after its queue is flushed.
    Close { id: u64 },
    /// Close a connection at once (reason `Stopped`), then report on `done`.
    Drop { id: u64, done: std::sync::mpsc::Sender<()> },
    /// Take over a connected socket: a client's, with its own service, or one the server's
    /// acceptor (loop 0) hands over, with `None` for the server's service.
    Adopt {
        id: u64,
        sock: Socket,
        svc: Option<Arc<Service>>,
        budget: Arc<SendBudget>,
    },
}

/// What a waiting send holds besides its bytes (its command in a queue that may be twice as
/// long as it holds, and the allocator's block for the bytes): counted in the memory bound of
/// waiting sends, so that a flood of tiny sends is bounded in memory too.
const SEND_OVERHEAD: usize = 2 * std::mem::size_of::<Cmd>() + 32;

/// The least memory the waiting sends of a connection may hold, whatever its write buffer
/// limit: with a small limit, a burst of small messages may still wait for the loop.
const MIN_WAITING: usize = 64 * 1024;

/// The output accepted for a connection and not yet written, shared by the loop and the
/// senders on other threads, so that a send is refused (`Limit`) when it is made, never
/// dropped later: a send that returned `Ok` has its room.
#[derive(Debug, Default)]
pub(crate) struct SendBudget {
    /// Bytes (framing included) accepted and not yet written: the sends waiting in the inbox
    /// and the connection's queue.
    accepted: AtomicUsize,
    /// The memory the sends waiting in the inbox hold (their bytes and [`SEND_OVERHEAD`]).
    held: AtomicUsize,
}

impl SendBudget {
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Acquire)
    }

    /// `n` more bytes wait to be written.
    pub(crate) fn accept(&self, n: usize) {
        if n > 0 {
            self.accepted.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// `n` accepted bytes were written.
    pub(crate) fn written(&self, n: usize) {
        if n > 0 {
            self.accepted.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// The loop took a waiting send of `bytes` bytes from the inbox.
    pub(crate) fn taken(&self, bytes: usize) {
        self.held.fetch_sub(bytes + SEND_OVERHEAD, Ordering::AcqRel);
    }
}

pub(crate) struct Inbox {
    /// This loop's open connections, so that senders learn of a stale id at once, with what
    /// each holds of accepted output.
    pub(crate) live: HashMap<u64, Arc<SendBudget>>,
    pub(crate) cmds: Vec<Cmd>,
}

/// What one loop thread shares with the other threads.
pub(crate) struct LoopShared {
    index: u64,
    waker: Waker,
    pub(crate) inbox: Mutex<Inbox>,
    pub(crate) stats: LoopStats,
    next_seq: AtomicU64,
    /// The number (`thread_no`) of the thread running this loop; 0 while none does.
    runner: AtomicU64,
}

impl LoopShared {
    /// A new connection id: the loop's index in the low 8 bits, so any thread can route by id;
    /// a per-loop sequence above, so ids are never reused and never 0.
    pub(crate) fn new_id(&self) -> u64 {
        (self.next_seq.fetch_add(1, Ordering::Relaxed) << 8) | self.index
    }

    /// Queues `cmd` (for an open connection `id`, if given) and wakes the loop unless it was
    /// already woken for earlier commands it has not yet taken.
    pub(crate) fn push(&self, group: &Group, id: Option<u64>, cmd: Cmd) -> Result<()> {
        self.push_within(group, id, cmd)
    }

    /// Queues a send to connection `id` like `push`, but refuses it with `Limit` if the
    /// connection's output accepted so far (queued on the loop and waiting for it), with this
    /// send's bytes and its `envelope` (the framing's), would pass `max`, or if the sends
    /// waiting here would hold more memory than `max` (at least [`MIN_WAITING`]). What is
    /// accepted here has its room: the loop will not have to drop it.
    pub(crate) fn push_send(
        &self,
        group: &Group,
        id: u64,
        data: &[u8],
        envelope: Option<usize>,
        max: usize,
    ) -> Result<()> {
        let bytes = data.len() + envelope.unwrap_or(0);
        let cmd = Cmd::Send {
            id,
            data: data.to_vec(),
            frame: envelope.is_some(),
            bytes,
        };
        let inbox = lock(&self.inbox);
        if group.stopping() {
            return Err(Error::Closed("stopped".into()));
        }
        let Some(budget) = inbox.live.get(&id) else {
            return Err(Error::Closed(format!("no open connection with id {id}").into()));
        };
        let ahead = budget.accepted();
        if ahead.saturating_add(bytes) > max {
            return Err(Error::Limit(
                format!(
                    "{ahead} bytes of output are queued or waiting for connection {id}; {bytes} \
                     more would pass its {max}-byte write buffer limit"
                )
                .into(),
            ));
        }
        let held = budget.held.load(Ordering::Acquire);
        // (The overhead never refuses a send with none waiting before it.)
        if held > 0 && held.saturating_add(bytes + SEND_OVERHEAD) > max.max(MIN_WAITING) {
            return Err(Error::Limit(
                format!(
                    "the sends waiting for the loop to take them hold {held} bytes of memory for \
                     connection {id}; this one would pass {}",
                    max.max(MIN_WAITING)
                )
                .into(),
            ));
        }
        budget.accept(bytes);
        budget.held.fetch_add(bytes + SEND_OVERHEAD, Ordering::AcqRel);
        Self::enqueue(&self.waker, inbox, cmd);
        Ok(())
    }

    fn push_within(&self, group: &Group, id: Option<u64>, cmd: Cmd) -> Result<()> {
        let mut inbox = lock(&self.inbox);
        if group.stopping() {
            return Err(Error::Closed("stopped".into()));
        }
        if let Some(id) = id
            && !inbox.live.contains_key(&id)
        {
            return Err(Error::Closed(format!("no open connection with id {id}").into()));
        }
        if let Cmd::Adopt { id, budget, .. } = &cmd {
            inbox.live.insert(*id, budget.clone());
        }
        Self::enqueue(&self.waker, inbox, cmd);
        Ok(())
    }

    /// Adds `cmd` and wakes the loop unless it was woken already for commands not yet taken.
    fn enqueue(waker: &Waker, mut inbox: MutexGuard<'_, Inbox>, cmd: Cmd) {
        let first = inbox.cmds.is_empty();
        inbox.cmds.push(cmd);
        drop(inbox);
        if first {
            let _ = waker.wake();
        }
    }

    pub(crate) fn index(&self) -> usize {
        self.index as usize
    }

    /// Runs the loop's `body` on this thread, marked as running it meanwhile.
    fn run(&self, body: impl FnOnce()) {
        /// Unmarks also when `body` panics.
        struct Unmark<'a>(&'a AtomicU64);
        impl Drop for Unmark<'_> {
            fn drop(&mut self) {
                self.0.store(0, Ordering::Relaxed);
            }
        }
        self.runner.store(thread_no(), Ordering::Relaxed);
        let _unmark = Unmark(&self.runner);
        body();
    }

    /// Whether thread number `me` runs this loop now.
    fn runs_on(&self, me: u64) -> bool {
        self.runner.load(Ordering::Relaxed) == me
    }
}

/// The loop threads of one server, or of client connections sharing them.
pub(crate) struct Group {
    stop: AtomicBool,
    pub(crate) loops: Vec<LoopShared>,
    /// Connections open across all loops (for the connection limit).
    pub(crate) active: AtomicUsize,
    next_loop: AtomicUsize,
    /// More loops than CPUs this process may use: loops take turns (see `take_turns`).
    crowded: bool,
    /// The loops' threads, with their loop's index.
    threads: Mutex<Vec<(usize, JoinHandle<()>)>>,
    ends: Mutex<Ends>,
    ends_cv: Condvar,
}

/// How many loops were started and how many have ended, and loop 0 when `wait` runs it.
struct Ends {
    started: usize,
    finished: usize,
    in_wait: InWait,
}

/// Loop 0 of a group that runs it on the thread calling `wait` (`Options::run_in_wait`).
enum InWait {
    /// The group's loops all have threads of their own.
    No,
    /// Not run yet: the first `wait` runs it.
    Pending(Box<dyn FnOnce() + Send>),
    Running,
    Done,
}

impl Group {
    /// Creates `n` loops' shared parts and their polls (handed to the threads by `spawn`).
    pub(crate) fn new(n: usize) -> Result<(Arc<Group>, Vec<Poll>)> {
        let mut polls = Vec::with_capacity(n);
        let mut loops = Vec::with_capacity(n);
        for index in 0..n {
            let poll = Poll::new().map_err(|e| Error::io("epoll_create", e))?;
            let waker = Waker::new(poll.registry(), WAKER).map_err(|e| Error::io("eventfd", e))?;
            loops.push(LoopShared {
                index: index as u64,
                waker,
                inbox: Mutex::new(Inbox {
                    live: HashMap::new(),
                    cmds: Vec::new(),
                }),
                stats: LoopStats::default(),
                next_seq: AtomicU64::new(1),
                runner: AtomicU64::new(0),
            });
            polls.push(poll);
        }
        let group = Group {
            stop: AtomicBool::new(false),
            loops,
            active: AtomicUsize::new(0),
            next_loop: AtomicUsize::new(0),
            crowded: n > std::thread::available_parallelism().map_or(1, |c| c.get()),
            threads: Mutex::new(Vec::new()),
            ends: Mutex::new(Ends {
                started: 0,
                finished: 0,
                in_wait: InWait::No,
            }),
            ends_cv: Condvar::new(),
        };
        Ok((Arc::new(group), polls))
    }

    /// Starts one thread per loop, each running `body(loop index, its poll)`; with `in_wait`,
    /// loop 0 gets no thread: the first call to `wait` runs it on its caller's thread.
    pub(crate) fn spawn<F>(self: &Arc<Group>, polls: Vec<Poll>, in_wait: bool, body: F) -> Result<()>
    where
        F: Fn(usize, Poll) + Clone + Send + 'static,
    {
        let mut threads = lock(&self.threads);
        for (index, poll) in polls.into_iter().enumerate() {
            let (group, body) = (self.clone(), body.clone());
            if index == 0 && in_wait {
                let mut ends = lock(&self.ends);
                ends.started += 1;
                ends.in_wait = InWait::Pending(Box::new(move || body(0, poll)));
                continue;
            }
            // Counted before it starts, so that no waiter sees it end before it began.
            lock(&self.ends).started += 1;
            let spawned = std::thread::Builder::new()
                .name(format!("netsock-loop-{index}"))
                .spawn(move || {
                    let _end = Ended(&group, false);
                    group.loops[index].run(|| body(index, poll));
                });
            match spawned {
                Ok(handle) => threads.push((index, handle)),
                Err(e) => {
                    lock(&self.ends).started -= 1;
                    drop(threads);
                    self.stop();
                    return Err(Error::io("spawning a loop thread", e));
                }
            }
        }
        Ok(())
    }

    /// Runs loop 0 here if it waits for a caller of `wait` and nobody took it yet.
    fn run_in_wait(&self) {
        let body = {
            let mut ends = lock(&self.ends);
            match std::mem::replace(&mut ends.in_wait, InWait::Running) {
                InWait::Pending(body) => body,
                other => {
                    ends.in_wait = other;
                    return;
                }
            }
        };
        let _end = Ended(self, true);
        self.loops[0].run(body);
    }

    /// Asks every loop to stop. Only atomic stores and eventfd writes: safe in a signal handler.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        for l in &self.loops {
            let _ = l.waker.wake();
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Ends a loop's busy turn. Loops sharing a CPU would otherwise each run for a whole
    /// scheduler time slice (milliseconds) while the other's connections wait: a loop that
    /// has been busy for [`TURN`] since it last yielded lets the others run.
    pub(crate) fn take_turns(&self, yielded: &mut Instant) {
        if self.crowded {
            let now = Instant::now();
            if now.duration_since(*yielded) >= TURN {
                std::thread::yield_now();
                *yielded = now;
            }
        }
    }

    /// Whether the calling thread runs one of this group's loops (a callback of ours is
    /// running), also with the loops of other groups that `wait` runs nested in its callbacks.
    pub(crate) fn on_loop_thread(&self) -> bool {
        let me = thread_no();
        self.loops.iter().any(|l| l.runs_on(me))
    }

    /// The loop that owns connection `id`.
    pub(crate) fn loop_of(&self, id: u64) -> Result<&LoopShared> {
        self.loops
            .get((id & 0xff) as usize)
            .ok_or_else(|| Error::Closed(format!("no open connection with id {id}").into()))
    }

    /// The next loop in turn, for a new connection.
    pub(crate) fn pick_loop(&self) -> &LoopShared {
        &self.loops[self.next_loop.fetch_add(1, Ordering::Relaxed) % self.loops.len()]
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats::sum(self.loops.iter().map(|l| &l.stats))
    }

    /// Blocks until every started loop has finished; first runs loop 0 if it waits for a
    /// caller of `wait` (see `spawn`).
    pub(crate) fn wait(&self) -> Result<()> {
        if self.on_loop_thread() {
            return Err(Error::Misuse(
                "waiting for a server inside its own callback would deadlock".into(),
            ));
        }
        self.run_in_wait();
        let mut ends = lock(&self.ends);
        while ends.finished < ends.started {
            ends = self.ends_cv.wait(ends).unwrap_or_else(|p| p.into_inner());
        }
        Ok(())
    }

    /// Stops the loops and joins their threads (all but the caller's, when a callback calls it).
    pub(crate) fn shutdown(&self) {
        self.stop();
        // From one of the loops (a free inside a callback), that loop cannot be joined: it ends
        // by itself when the callback returns. The others are, so no callback of theirs runs
        // after this returns.
        let me = thread_no();
        for (index, handle) in std::mem::take(&mut *lock(&self.threads)) {
            if !self.loops[index].runs_on(me) {
                let _ = handle.join();
            }
        }
        // Loop 0 run by `wait`: never run, it never will (dropped here); running on another
        // thread, it is waited for like a thread.
        let mut ends = lock(&self.ends);
        if let InWait::Pending(_) = ends.in_wait {
            let body = std::mem::replace(&mut ends.in_wait, InWait::Running);
            drop(ends);
            drop(body);
            // Counted as ended the way a loop that ran is.
            drop(Ended(self, true));
            return;
        }
        if self.loops[0].runs_on(me) {
            return;
        }
        while matches!(ends.in_wait, InWait::Running) {
            ends = self.ends_cv.wait(ends).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Counts a loop as ended when dropped (also if the loop panicked, so no waiter hangs) and
/// wakes whoever waits for the loops; `true` for the loop run by `wait`.
struct Ended<'a>(&'a Group, bool);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        let mut ends = lock(&self.0.ends);
        if self.1 {
            ends.in_wait = InWait::Done;
        }
        ends.finished += 1;
        drop(ends);
        self.0.ends_cv.notify_all();
    }
}

thread_local! {
    /// This thread's number, 0 until `thread_no` gives it one. A plain word, so asking costs
    /// no allocation (`std::thread::current()` allocates a handle on threads it did not
    /// start, which memory checkers report as lost).
    static THREAD_NO: Cell<u64> = const { Cell::new(0) };
}

/// A number for the calling thread, never 0 and never given to another thread.
fn thread_no() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    THREAD_NO.with(|no| {
        if no.get() == 0 {
            no.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        no.get()
    })
}

/// Locks `m`, also after a panic elsewhere poisoned it: the data behind our locks stays
/// consistent across every panic the boundary can catch.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
