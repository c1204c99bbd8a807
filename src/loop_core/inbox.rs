//! The cross-thread inbox of a loop: commands other threads hand it (and its own thread, for
//! work posted from a callback), with the ids of the connections open on it so that a sender
//! learns of a stale id at once, and what each of them holds of accepted output.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::timers::TimerCb;

/// Work posted to a loop, run once on its thread.
pub(crate) type Task = Box<dyn FnOnce() + Send>;

/// A command for a loop: the core's own kinds, or one for its handles (`H`).
pub(crate) enum Cmd<H> {
    /// Run posted work.
    Task(Task),
    /// Start a user timer (its id is already known to the group's registry).
    TimerStart {
        id: u64,
        at: Instant,
        repeat: Option<Duration>,
        cb: TimerCb,
        stopped: Arc<AtomicBool>,
    },
    /// Forget a stopped user timer.
    TimerStop { id: u64 },
    /// For the handles.
    Handle(H),
}

pub(crate) struct Inbox<H> {
    /// This loop's open connections, with what each holds of accepted output.
    pub(crate) live: HashMap<u64, Arc<SendBudget>>,
    pub(crate) cmds: Vec<Cmd<H>>,
    /// A wake-up (an eventfd write) is on its way since the loop last looked: a push needs no
    /// wake-up of its own.
    pub(crate) woken: bool,
}

impl<H> Default for Inbox<H> {
    fn default() -> Self {
        Inbox {
            live: HashMap::new(),
            cmds: Vec::new(),
            woken: false,
        }
    }
}

/// What a waiting send holds besides its bytes (its command in a queue that may be twice as
/// long as it holds, and the allocator's block for the bytes): counted in the memory bound of
/// waiting sends, so that a flood of tiny sends is bounded in memory too.
pub(crate) const SEND_OVERHEAD: usize = 2 * 64 + 32;

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

    /// Takes room for a send of `bytes` from another thread, or says why not: past `max` with
    /// what was accepted before (one send of any size is taken when nothing is), or past the
    /// memory bound of waiting sends.
    pub(crate) fn reserve(&self, id: u64, bytes: usize, max: usize) -> crate::Result<()> {
        let ahead = self.accepted();
        if ahead > 0 && ahead.saturating_add(bytes) > max {
            return Err(crate::Error::Limit(
                format!(
                    "{ahead} bytes of output are queued or waiting for connection {id}; {bytes} \
                     more would pass its {max}-byte write buffer limit"
                )
                .into(),
            ));
        }
        let held = self.held.load(Ordering::Acquire);
        let bound = max.max(MIN_WAITING);
        // (The overhead never refuses a send with none waiting before it.)
        if held > 0 && held.saturating_add(bytes + SEND_OVERHEAD) > bound {
            return Err(crate::Error::Limit(
                format!(
                    "the sends waiting for the loop to take them hold {held} bytes of memory for \
                     connection {id}; this one would pass {bound}"
                )
                .into(),
            ));
        }
        self.accept(bytes);
        self.held.fetch_add(bytes + SEND_OVERHEAD, Ordering::AcqRel);
        Ok(())
    }

    /// The loop took a waiting send of `bytes` bytes from the inbox.
    pub(crate) fn taken(&self, bytes: usize) {
        self.held.fetch_sub(bytes + SEND_OVERHEAD, Ordering::AcqRel);
    }
}
