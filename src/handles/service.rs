//! What a service (a server, or a client) shares with every loop it runs on besides its
//! handler: its counters, one set per loop, and, for a server on loops it shares, its end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use crate::loop_core::lock;
use crate::stats::{LoopStats, Stats};

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
