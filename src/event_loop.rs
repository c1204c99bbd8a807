//! What a server's handles share with its loop thread: the stop flag, the waker that interrupts
//! the poll, and the "stopped" signal that `wait` blocks on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use mio::{Token, Waker};

use crate::error::{Error, Result};

/// The poll token of the waker, the same in every loop.
pub(crate) const WAKER: Token = Token(1);

/// How many reads or datagrams one socket gets per turn before the others are served.
pub(crate) const READS_PER_TURN: usize = 16;

/// Size of the one read buffer each loop owns (connections own none).
pub(crate) const READ_BUF: usize = 64 * 1024;

pub(crate) struct Control {
    stop: AtomicBool,
    waker: Waker,
    loop_thread: OnceLock<ThreadId>,
    done: Mutex<bool>,
    done_cv: Condvar,
}

impl Control {
    pub(crate) fn new(waker: Waker) -> Control {
        Control {
            stop: AtomicBool::new(false),
            waker,
            loop_thread: OnceLock::new(),
            done: Mutex::new(false),
            done_cv: Condvar::new(),
        }
    }

    /// Asks the loop to stop. Only an atomic store and an eventfd write: safe in a signal handler.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub(crate) fn wake(&self) {
        let _ = self.waker.wake();
    }

    /// Called first thing on the loop thread.
    pub(crate) fn enter_loop(&self) {
        let _ = self.loop_thread.set(std::thread::current().id());
    }

    pub(crate) fn on_loop_thread(&self) -> bool {
        self.loop_thread.get() == Some(&std::thread::current().id())
    }

    /// Called last thing on the loop thread: releases every `wait`.
    pub(crate) fn finish(&self) {
        *lock(&self.done) = true;
        self.done_cv.notify_all();
    }

    /// Blocks until the loop has finished.
    pub(crate) fn wait(&self) -> Result<()> {
        if self.on_loop_thread() {
            return Err(Error::Misuse(
                "waiting for a server inside its own callback would deadlock".into(),
            ));
        }
        let mut done = lock(&self.done);
        while !*done {
            done = self.done_cv.wait(done).unwrap_or_else(|p| p.into_inner());
        }
        Ok(())
    }
}

/// Time left until `deadline`, or `Timeout` once it has passed; `None` waits without limit.
pub(crate) fn time_left(deadline: Option<Instant>, what: &'static str) -> Result<Option<Duration>> {
    match deadline {
        None => Ok(None),
        Some(d) => match d.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(Some(left)),
            _ => Err(Error::Timeout(what.into())),
        },
    }
}

/// Locks `m`, also after a panic elsewhere poisoned it: the data behind our locks stays
/// consistent across every panic the boundary can catch.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
