//! Pacing: a loop whose helper threads (a worker pool) share its CPU, and have work, waits for
//! them rather than for each event. Every event that woke it (a peer's message, a helper's
//! send) would have the scheduler switch to it at once, since it slept and is owed CPU, and
//! back: two context switches per message, more than the loop's own work for it. Pacing, the
//! loop sleeps until a helper runs out of work or [`PACE`] passes, then takes in one turn all
//! that came meanwhile.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::sys;

/// The longest a pacing loop waits: how late it may see input, and its helpers' sends, while
/// they are busy. A few scheduler ticks' worth of their work per turn of the loop.
pub(super) const PACE: Duration = Duration::from_millis(1);

const IDLE: u32 = 0;
const WAITING: u32 = 1;
const KICKED: u32 = 2;

/// Whether a loop paces now, as a futex word it sleeps on.
#[derive(Debug, Default)]
pub(super) struct Pace(AtomicU32);

impl Pace {
    /// The loop is about to pace (set under its inbox's lock: a push after that sees it).
    pub(super) fn begin(&self) {
        self.0.store(WAITING, Ordering::SeqCst);
    }

    pub(super) fn pacing(&self) -> bool {
        self.0.load(Ordering::SeqCst) != IDLE
    }

    /// Sleeps until kicked or `timeout` passed, then ends the pacing.
    pub(super) fn wait(&self, timeout: Duration) {
        let until = Instant::now() + timeout;
        while self.0.load(Ordering::SeqCst) == WAITING {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sys::futex_wait(&self.0, WAITING, left);
        }
        self.0.store(IDLE, Ordering::SeqCst);
    }

    /// Ends a pacing wait now. An atomic and a system call only: safe in a signal handler.
    pub(super) fn kick(&self) {
        if self
            .0
            .compare_exchange(WAITING, KICKED, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            sys::futex_wake(&self.0);
        }
    }
}

thread_local! {
    /// The group (its address) whose loops this thread helps (`Group::help_here`), 0 for none.
    static HELPS: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as a helper of the group at `group`.
pub(super) fn help(group: usize) {
    HELPS.with(|h| h.set(group));
}

/// Whether the calling thread helps the group at `group`.
pub(super) fn helps(group: usize) -> bool {
    HELPS.with(|h| h.get()) == group
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_kick_ends_the_wait_and_a_wait_ends_by_itself() {
        let pace = Arc::new(Pace::default());
        // Not pacing: a kick changes nothing.
        pace.kick();
        assert!(!pace.pacing());

        pace.begin();
        let waiter = {
            let pace = pace.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                pace.wait(Duration::from_secs(30));
                t.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        pace.kick();
        let waited = waiter.join().unwrap();
        assert!(waited < Duration::from_secs(10), "kicked, it waited {waited:?}");
        assert!(!pace.pacing());

        pace.begin();
        let t = Instant::now();
        pace.wait(Duration::from_millis(5));
        assert!(t.elapsed() >= Duration::from_millis(5));
        assert!(!pace.pacing());
    }

    #[test]
    fn helpers_are_known_by_group() {
        assert!(!helps(1));
        help(1);
        assert!(helps(1) && !helps(2));
        let other = std::thread::spawn(|| helps(1)).join().unwrap();
        assert!(!other, "only the thread marked helps");
    }
}
