//! User timers of a loop: a binary heap of deadlines (as libuv keeps them), and the callbacks
//! by id. A timer stopped from another thread is marked in a flag the loop reads before each
//! run, so no run starts after the stop returns.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A timer's callback, given the timer's id.
pub(crate) type TimerCb = Box<dyn FnMut(u64) + Send>;

struct Timer {
    cb: TimerCb,
    repeat: Option<Duration>,
    stopped: Arc<AtomicBool>,
}

/// The timers one loop runs.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    by_id: HashMap<u64, Timer>,
}

/// What `Timers::fire` did with a due timer.
pub(crate) enum Fired {
    /// It runs again later.
    Again,
    /// It is done (a one-shot, or stopped): the group forgets its id.
    Done,
}

impl Timers {
    pub(crate) fn start(
        &mut self,
        id: u64,
        at: Instant,
        repeat: Option<Duration>,
        cb: TimerCb,
        stopped: Arc<AtomicBool>,
    ) {
        self.heap.push(Reverse((at, id)));
        self.by_id.insert(id, Timer { cb, repeat, stopped });
    }

    /// Drops a stopped timer's callback (its heap entry goes when it is due).
    pub(crate) fn forget(&mut self, id: u64) {
        self.by_id.remove(&id);
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The next timer due by `now`, taken off the heap.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<u64> {
        match self.heap.peek() {
            Some(&Reverse((at, id))) if at <= now => {
                self.heap.pop();
                Some(id)
            }
            _ => None,
        }
    }

    /// Runs timer `id` (popped by `pop_due`) through `run`, unless it was stopped, and re-arms
    /// a repeating one `repeat` after `now`. `None` for an id already forgotten.
    pub(crate) fn fire(&mut self, id: u64, now: Instant, run: impl FnOnce(&mut TimerCb, u64)) -> Option<Fired> {
        let timer = self.by_id.get_mut(&id)?;
        if !timer.stopped.load(Ordering::Acquire) {
            run(&mut timer.cb, id);
        }
        // Stopped before or during its run: no further run.
        match timer.repeat {
            Some(every) if !timer.stopped.load(Ordering::Acquire) => {
                self.heap.push(Reverse((now + every, id)));
                Some(Fired::Again)
            }
            _ => {
                self.by_id.remove(&id);
                Some(Fired::Done)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn one_shot_repeating_and_stopped_timers() {
        let runs = Arc::new(Mutex::new(Vec::new()));
        let mut t = Timers::default();
        let now = Instant::now();
        let cb = |runs: &Arc<Mutex<Vec<u64>>>| -> TimerCb {
            let runs = runs.clone();
            Box::new(move |id| runs.lock().unwrap().push(id))
        };
        let stop3 = Arc::new(AtomicBool::new(false));
        t.start(1, now, None, cb(&runs), Arc::default());
        t.start(2, now, Some(Duration::from_millis(5)), cb(&runs), Arc::default());
        t.start(3, now, None, cb(&runs), stop3.clone());
        stop3.store(true, Ordering::Release);
        let mut done = Vec::new();
        while let Some(id) = t.pop_due(now) {
            if let Some(Fired::Done) = t.fire(id, now, |cb, id| cb(id)) {
                done.push(id);
            }
        }
        assert_eq!(*runs.lock().unwrap(), vec![1, 2]);
        assert_eq!(done, vec![1, 3]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.next(), Some(now + Duration::from_millis(5)));
        assert_eq!(t.pop_due(now), None);
    }
}
