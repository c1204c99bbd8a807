//! A pool of worker threads for handlers that may block (`Options::workers`). The loop calls
//! `Pooled`, which hands each connection's events (open, data copied out with its framing,
//! drain, timer, close) to the pool through the connection's own ordered queue (a `Line`); a
//! line is in the pool's run queue, or on a worker, at most once, so a connection's callbacks
//! run one at a time and in order while different connections run in parallel. A callback on a
//! worker gets a `Conn` whose operations reach the loop through its inbox, in order with the
//! connection's other commands (sends reserve their room first, as sends from any thread do).
//!
//! Bounds: reading from a peer pauses once `max_frame` bytes (counting `EVENT_OVERHEAD` per
//! message) wait for a worker, so a connection's queue holds at most that plus one read of the
//! loop; the run queue holds each connection at most once. The loop never waits for the pool,
//! but for a while at most: on CPUs it shares with the workers, it paces while they have work
//! (`loop_core::pace`), and a worker that runs out of work tells it so.
//!
//! The pool's threads and its owner's handle are here; `line` holds a connection's queue and
//! what the pool shares, `dispatch` the loop's side, `run` a worker's side (the callbacks, and
//! the connection as a worker sees it).

mod dispatch;
mod line;
mod run;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;

use super::cmd::{ConnTask, Group};
use super::conn::TcpHandler;
use crate::error::{Error, Result};
use crate::loop_core::lock;
use crate::options::Options;
use dispatch::Pooled;
use line::{Event, RunQueue, Shared, WORKER_OF};

/// The most worker threads a pool may have.
pub(crate) const MAX_WORKERS: usize = 1024;

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
            waking: 0,
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
            Ok(t) => {
                group.helpers(1, true);
                lock(&workers.threads).push(t)
            }
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
        self.shared.group.helpers(lock(&self.threads).len(), false);
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
/// A worker thread: runs one event of the next line in turn, until the pool ends.
fn work(shared: Arc<Shared>) {
    WORKER_OF.with(|w| w.set(Arc::as_ptr(&shared) as usize));
    shared.group.help_here();
    // Out of work since the loops were last told.
    let mut idle = false;
    loop {
        let line = {
            let mut q = lock(&shared.queue);
            loop {
                if let Some(line) = q.ready.pop_front() {
                    break Some(line);
                }
                if q.closing && q.lines == 0 {
                    return;
                }
                if !idle {
                    break None;
                }
                q.sleeping += 1;
                q = shared.work.wait(q).unwrap_or_else(|p| p.into_inner());
                q.sleeping -= 1;
                // Up, whichever wake-up it was (the count only spares needless ones).
                q.waking = q.waking.saturating_sub(1);
            }
        };
        let Some(line) = line else {
            // Out of work: a loop waiting for its helpers (pacing) takes its events now, and
            // may bring more before this thread sleeps.
            shared.group.helper_idle();
            idle = true;
            continue;
        };
        idle = false;
        let ev = lock(&line.queue).events.pop_front();
        if let Some(ev) = ev {
            shared.queued.fetch_sub(1, SeqCst);
            run::run(&line, ev);
            shared.group.handed_done();
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
