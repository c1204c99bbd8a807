//! What a server or a client is to the loops that run it: its handler and options, its
//! counters per loop, the connections it holds open (each counted by the [`Slot`] it holds,
//! so the count stays exact on every path), and, for a server on loops it shares, its end.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use socket2::SockAddr;

use super::stream::TcpHandler;
use crate::loop_core::lock;
use crate::options::Options;
use crate::stats::{LoopStats, Stats};

/// A handler with the options its connections follow.
pub(crate) struct Service {
    pub(crate) handler: Arc<dyn TcpHandler>,
    pub(crate) opts: Options,
    /// Set when the owner let go (a server freed, a client dropped), possibly inside one of
    /// these callbacks: from then on only `on_close` runs.
    pub(crate) released: AtomicBool,
    /// TCP rather than Unix-domain: TCP options apply (known up front, so accepting a
    /// connection costs no getsockname).
    pub(crate) inet: bool,
    /// A client's addresses, to connect (again) on the loop.
    pub(crate) target: OnceLock<Vec<SockAddr>>,
    /// The client's owner closed it: it does not reconnect.
    pub(crate) by_user: AtomicBool,
    /// Connections open (or lingering) now: the slots taken.
    active: AtomicUsize,
    pub(crate) counters: Counters,
    /// How a server on shared loops ends (a server's own loops end with their group).
    pub(crate) ending: Arc<Ending>,
}

impl Service {
    pub(crate) fn new(handler: Arc<dyn TcpHandler>, opts: Options, inet: bool, loops: usize) -> Service {
        Service {
            handler,
            opts,
            released: AtomicBool::new(false),
            inet,
            target: OnceLock::new(),
            by_user: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            counters: Counters::new(loops),
            ending: Arc::default(),
        }
    }

    /// Releases the connections: no callback but `on_close` runs after this.
    pub(crate) fn release(&self) {
        self.released.store(true, Ordering::Release);
    }
}

/// One open connection of a service, counted as long as it lives: dropped with the
/// connection, on whichever path it goes.
pub(crate) struct Slot(Arc<Service>);

impl Slot {
    /// A slot unless `max` (0: no limit) connections are open already.
    pub(crate) fn take(svc: &Arc<Service>, max: usize) -> Option<Slot> {
        let before = svc.active.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(svc.clone());
        (max == 0 || before < max).then_some(slot)
    }

    pub(crate) fn service(&self) -> &Arc<Service> {
        &self.0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counters of one service, one set per loop of its group (each written by its loop only).
pub(crate) struct Counters(Box<[LoopStats]>);

impl Counters {
    pub(crate) fn new(loops: usize) -> Counters {
        Counters((0..loops.max(1)).map(|_| LoopStats::default()).collect())
    }

    pub(crate) fn of(&self, index: usize) -> &LoopStats {
        &self.0[index]
    }

    pub(crate) fn sum(&self) -> Stats {
        Stats::sum(self.0.iter())
    }
}

/// The end of a server on loops it shares: asked for with a flag (so a signal handler can ask),
/// and reached once every loop of the group has let go of the server's handles.
#[derive(Default)]
pub(crate) struct Ending {
    requested: AtomicBool,
    /// Loops that still hold the server's handles.
    holding: Mutex<usize>,
    done: Condvar,
}

impl Ending {
    pub(crate) fn requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Asks for the end: only an atomic store (the caller wakes the loops).
    pub(crate) fn request(&self) {
        self.requested.store(true, Ordering::Release);
    }

    /// `n` loops take the server's handles.
    pub(crate) fn hold(&self, n: usize) {
        *lock(&self.holding) += n;
    }

    /// A loop let go of the server's handles.
    pub(crate) fn let_go(&self) {
        let mut holding = lock(&self.holding);
        *holding = holding.saturating_sub(1);
        if *holding == 0 {
            self.done.notify_all();
        }
    }

    /// Blocks until no loop holds the server's handles.
    pub(crate) fn wait(&self) {
        let mut holding = lock(&self.holding);
        while *holding > 0 {
            holding = self.done.wait(holding).unwrap_or_else(|p| p.into_inner());
        }
    }
}
