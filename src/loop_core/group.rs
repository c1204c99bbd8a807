//! A group of loop threads and what their handles share with them: the stop flag, one waker
//! and one inbox per loop, the counters, the user timers' ids, and the "all stopped" signal
//! that `wait` blocks on.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Poll, Token, Waker};

use super::inbox::{Cmd, Inbox, SendBudget, Task};
use super::pace::{self, Pace};
use super::timers::TimerCb;
use crate::error::{Error, Result};

/// The poll token of the waker, the same in every loop; a loop body's tokens are the others.
pub(crate) const WAKER: Token = Token(0);

/// How long a loop sharing its CPU with other loops runs before it lets them (`take_turns`):
/// short enough to bound their wait well below a scheduler slice, long enough that switching
/// costs little per message.
const TURN: Duration = Duration::from_micros(200);

/// What one loop thread shares with the other threads.
pub(crate) struct LoopShared<H> {
    index: u64,
    waker: Waker,
    pub(crate) inbox: Mutex<Inbox<H>>,
    /// Commands were queued without a wake-up (`push_quiet`): the loop's next turn takes them.
    quiet: AtomicBool,
    /// The loop is in a turn (from its wait's end to its next look at the inbox, `may_wait`):
    /// it takes what is pushed meanwhile before it waits again, so a push wakes nothing.
    awake: AtomicBool,
    /// The loop waits for its helpers rather than for events (see `pace`).
    pace: Pace,
    next_seq: AtomicU64,
    /// The number (`thread_no`) of the thread running this loop; 0 while none does.
    runner: AtomicU64,
}

impl<H> LoopShared<H> {
    /// A new connection id: the loop's index in the low 8 bits, so any thread can route by id;
    /// a per-loop sequence above, so ids are never reused and never 0.
    pub(crate) fn new_id(&self) -> u64 {
        (self.next_seq.fetch_add(1, Ordering::Relaxed) << 8) | self.index
    }

    /// Queues `cmd` (for an open connection `id`, if given) and wakes the loop unless it is
    /// sure to take it before it next waits (it is awake, or was woken for earlier commands it
    /// has not yet taken), or it paces and this thread is one of its helpers (then it takes it
    /// when the pacing ends). `Closed` once the group stops, or if `id` is not open here.
    pub(crate) fn push(&self, group: &Group<H>, id: Option<u64>, cmd: Cmd<H>) -> Result<()> {
        self.push_checked(group, id, cmd, |_| Ok(()))
    }

    /// `push` that wakes a waiting loop only if `urgent()` (asked after `cmd` is queued): else
    /// the loop takes `cmd` in its next turn, whatever wakes it, and before it next waits.
    pub(crate) fn push_quiet(
        &self,
        group: &Group<H>,
        id: Option<u64>,
        cmd: Cmd<H>,
        urgent: impl FnOnce() -> bool,
    ) -> Result<()> {
        let mut inbox = self.queue(group, id)?;
        inbox.cmds.push(cmd);
        self.quiet.store(true, Ordering::Release);
        // Asked after the command is queued: whatever made it urgent before the loop's last
        // look at its inbox, that look found the command. Urgent, it also ends a pacing wait.
        if !inbox.woken && !self.awake.load(Ordering::Relaxed) && urgent() {
            inbox.woken = true;
            drop(inbox);
            self.wake();
        }
        Ok(())
    }

    /// Like `push`, after `check` accepted the command on the connection's send budget.
    pub(crate) fn push_checked(
        &self,
        group: &Group<H>,
        id: Option<u64>,
        cmd: Cmd<H>,
        check: impl FnOnce(&SendBudget) -> Result<()>,
    ) -> Result<()> {
        self.try_push(group, id, cmd, check).map_err(|(e, _)| e)
    }

    /// `push_checked` that hands a refused command back (what it holds is not dropped).
    pub(crate) fn try_push(
        &self,
        group: &Group<H>,
        id: Option<u64>,
        cmd: Cmd<H>,
        check: impl FnOnce(&SendBudget) -> Result<()>,
    ) -> std::result::Result<(), (Error, Cmd<H>)> {
        let mut inbox = match self.queue(group, id) {
            Ok(inbox) => inbox,
            Err(e) => return Err((e, cmd)),
        };
        if let Some(id) = id {
            // `queue` found it.
            if let Err(e) = check(&inbox.live[&id]) {
                return Err((e, cmd));
            }
        }
        inbox.cmds.push(cmd);
        // A helper's push while the loop paces is taken when the pacing ends: waking the loop
        // for it is what pacing spares.
        if self.pace.pacing() && pace::helps(group as *const Group<H> as usize) {
            self.quiet.store(true, Ordering::Release);
            return Ok(());
        }
        // Read under the lock: `may_wait` clears it under the lock before the loop waits.
        if !inbox.woken && !self.awake.load(Ordering::Relaxed) {
            inbox.woken = true;
            drop(inbox);
            self.wake();
        }
        Ok(())
    }

    /// The inbox, locked, if it takes commands (for an open connection `id`, if given).
    fn queue(&self, group: &Group<H>, id: Option<u64>) -> Result<MutexGuard<'_, Inbox<H>>> {
        let inbox = lock(&self.inbox);
        if group.stopping() {
            return Err(Error::Closed("stopped".into()));
        }
        if let Some(id) = id.filter(|id| !inbox.live.contains_key(id)) {
            return Err(Error::Closed(format!("no open connection with id {id}").into()));
        }
        Ok(inbox)
    }

    /// Wakes the loop from its wait for events, or for its helpers.
    fn wake(&self) {
        let _ = self.waker.wake();
        self.pace.kick();
    }

    /// Lists connection `id` as open here, so that commands for it are taken.
    pub(crate) fn add_live(&self, id: u64, budget: Arc<SendBudget>) {
        lock(&self.inbox).live.insert(id, budget);
    }

    /// The connection `id` is gone: commands for it are refused from now on.
    pub(crate) fn remove_live(&self, id: u64) {
        lock(&self.inbox).live.remove(&id);
    }

    /// The commands queued so far, taken by the loop.
    pub(crate) fn take_cmds(&self) -> Vec<Cmd<H>> {
        std::mem::take(&mut lock(&self.inbox).cmds)
    }

    /// The loop is about to wait (for its helpers, with `pace`): true if its inbox is empty
    /// (then the next push wakes it), false if it holds commands to take first.
    pub(crate) fn may_wait(&self, pace: bool) -> bool {
        let mut inbox = lock(&self.inbox);
        if !inbox.cmds.is_empty() {
            return false;
        }
        inbox.woken = false;
        self.awake.store(false, Ordering::Relaxed);
        if pace {
            self.pace.begin();
        }
        true
    }

    /// Waits for a helper to run out of work, a push that wakes the loop, or `timeout`.
    pub(crate) fn wait_for_helpers(&self, timeout: Duration) {
        self.pace.wait(timeout);
    }

    /// The loop's wait ended: it looks at its inbox again before it next waits.
    pub(crate) fn set_awake(&self) {
        self.awake.store(true, Ordering::Relaxed);
    }

    /// Whether quiet commands (`push_quiet`) were queued since the last call.
    pub(crate) fn take_quiet(&self) -> bool {
        self.quiet.load(Ordering::Relaxed) && self.quiet.swap(false, Ordering::Acquire)
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
pub(crate) struct Group<H> {
    stop: AtomicBool,
    pub(crate) loops: Vec<LoopShared<H>>,
    next_loop: AtomicUsize,
    /// More loops than CPUs this process may use: loops take turns (see `take_turns`).
    crowded: bool,
    /// The CPUs this process may use.
    cpus: usize,
    /// Threads working for these loops (worker pools), and the work handed to them and not
    /// yet done: while they have work on CPUs they share with the loops, the loops pace.
    helpers: AtomicUsize,
    handed: AtomicUsize,
    /// The loops' threads, with their loop's index.
    threads: Mutex<Vec<(usize, JoinHandle<()>)>>,
    ends: Mutex<Ends>,
    ends_cv: Condvar,
    /// The user timers not yet done, by id, with the flag their loop reads before each run.
    timers: Mutex<HashMap<u64, Arc<AtomicBool>>>,
    next_timer: AtomicU64,
    /// How many times an end of something on the loops (a server sharing them) was asked.
    end_requests: AtomicU64,
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

impl<H> Group<H> {
    /// Creates `n` loops' shared parts and their polls (handed to the threads by `spawn`).
    pub(crate) fn new(n: usize) -> Result<(Arc<Self>, Vec<Poll>)> {
        let mut polls = Vec::with_capacity(n);
        let mut loops = Vec::with_capacity(n);
        for index in 0..n {
            let poll = Poll::new().map_err(|e| Error::io("epoll_create", e))?;
            let waker = Waker::new(poll.registry(), WAKER).map_err(|e| Error::io("eventfd", e))?;
            loops.push(LoopShared {
                index: index as u64,
                waker,
                inbox: Mutex::new(Inbox::default()),
                quiet: AtomicBool::new(false),
                awake: AtomicBool::new(false),
                pace: Pace::default(),
                next_seq: AtomicU64::new(1),
                runner: AtomicU64::new(0),
            });
            polls.push(poll);
        }
        let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
        let group = Group {
            stop: AtomicBool::new(false),
            loops,
            next_loop: AtomicUsize::new(0),
            crowded: n > cpus,
            cpus,
            helpers: AtomicUsize::new(0),
            handed: AtomicUsize::new(0),
            threads: Mutex::new(Vec::new()),
            ends: Mutex::new(Ends {
                started: 0,
                finished: 0,
                in_wait: InWait::No,
            }),
            ends_cv: Condvar::new(),
            timers: Mutex::new(HashMap::new()),
            next_timer: AtomicU64::new(1),
            end_requests: AtomicU64::new(0),
        };
        Ok((Arc::new(group), polls))
    }

    /// Whether loop `index` waits for a caller of `wait` to run it, which none did yet.
    pub(crate) fn not_yet_run(&self, index: usize) -> bool {
        index == 0 && matches!(lock(&self.ends).in_wait, InWait::Pending(_))
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

    /// Asks every loop to stop. Only atomics and system calls (eventfd writes, futex wakes):
    /// safe in a signal handler.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        for l in &self.loops {
            l.wake();
        }
    }

    /// Wakes every loop to look for what asked to end (a flag its owner set). Only atomics and
    /// system calls: safe in a signal handler.
    pub(crate) fn request_ends(&self) {
        self.end_requests.fetch_add(1, Ordering::AcqRel);
        for l in &self.loops {
            l.wake();
        }
    }

    /// `n` threads start (`add`) or stop working for these loops (a worker pool).
    pub(crate) fn helpers(&self, n: usize, add: bool) {
        if add {
            self.helpers.fetch_add(n, Ordering::Relaxed);
        } else {
            self.helpers.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Marks the calling thread as one of those helpers: its pushes wake no pacing loop.
    pub(crate) fn help_here(&self) {
        pace::help(self as *const Self as usize);
    }

    /// `n` pieces of work were handed to the helpers.
    pub(crate) fn hand(&self, n: usize) {
        self.handed.fetch_add(n, Ordering::Relaxed);
    }

    /// A piece of work handed to the helpers is done.
    pub(crate) fn handed_done(&self) {
        self.handed.fetch_sub(1, Ordering::Relaxed);
    }

    /// A helper ran out of work: pacing loops take their events now (and may bring more).
    pub(crate) fn helper_idle(&self) {
        for l in &self.loops {
            l.pace.kick();
        }
    }

    /// Whether the loops pace (see `pace`): their helpers have work, on CPUs they share.
    pub(crate) fn paces(&self) -> bool {
        self.handed.load(Ordering::Relaxed) > 0 && self.loops.len() + self.helpers.load(Ordering::Relaxed) > self.cpus
    }

    pub(crate) fn ends_requested(&self) -> u64 {
        self.end_requests.load(Ordering::Acquire)
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
    pub(crate) fn loop_of(&self, id: u64) -> Result<&LoopShared<H>> {
        self.loops
            .get((id & 0xff) as usize)
            .ok_or_else(|| Error::Closed(format!("no open connection with id {id}").into()))
    }

    /// The next loop in turn, for a new connection.
    pub(crate) fn pick_loop(&self) -> &LoopShared<H> {
        &self.loops[self.next_loop.fetch_add(1, Ordering::Relaxed) % self.loops.len()]
    }

    /// Runs `task` on loop 0, in the order posted from one thread; `Closed` once stopped.
    pub(crate) fn post(&self, task: Task) -> Result<()> {
        self.loops[0].push(self, None, Cmd::Task(task))
    }

    /// Starts a user timer on loop 0: `cb(id)` after `after`, then every `repeat` if given.
    /// Returns its id, never 0.
    pub(crate) fn timer_start(&self, after: Duration, repeat: Option<Duration>, cb: TimerCb) -> Result<u64> {
        let id = self.next_timer.fetch_add(1, Ordering::Relaxed);
        let stopped = Arc::new(AtomicBool::new(false));
        lock(&self.timers).insert(id, stopped.clone());
        let at = Instant::now() + after;
        let started = self.loops[0].push(
            self,
            None,
            Cmd::TimerStart {
                id,
                at,
                repeat,
                cb,
                stopped,
            },
        );
        match started {
            Ok(()) => Ok(id),
            Err(e) => {
                lock(&self.timers).remove(&id);
                Err(e)
            }
        }
    }

    /// Stops a user timer: no run of it starts after this returns. `Closed` for an id that is
    /// unknown or done.
    pub(crate) fn timer_stop(&self, id: u64) -> Result<()> {
        let Some(stopped) = lock(&self.timers).remove(&id) else {
            return Err(Error::Closed(format!("no running timer with id {id}").into()));
        };
        stopped.store(true, Ordering::Release);
        // Frees the callback soon (fails harmlessly once the loop stopped).
        let _ = self.loops[0].push(self, None, Cmd::TimerStop { id });
        Ok(())
    }

    /// A one-shot timer ran, or a stopped one was dropped: its id is done.
    pub(crate) fn timer_done(&self, id: u64) {
        lock(&self.timers).remove(&id);
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

impl<H: Send + 'static> Group<H> {
    /// Starts one thread per loop, each running `body(loop index, its poll)`; with `in_wait`,
    /// loop 0 gets no thread: the first call to `wait` runs it on its caller's thread.
    pub(crate) fn spawn<F>(self: &Arc<Self>, polls: Vec<Poll>, in_wait: bool, body: F) -> Result<()>
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
}

/// Counts a loop as ended when dropped (also if the loop panicked, so no waiter hangs) and
/// wakes whoever waits for the loops; `true` for the loop run by `wait`.
struct Ended<'a, H>(&'a Group<H>, bool);

impl<H> Drop for Ended<'_, H> {
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
