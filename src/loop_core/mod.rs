//! The loop core, in the shape of libuv's `src/unix/core.c`: one loop per thread owns a
//! poller, its user timers and the cross-thread inbox through which posted tasks and commands
//! arrive; a [`Body`] (the handles: listeners, streams, datagram sockets) gets the events,
//! commands and deadlines that are its own. The core knows nothing of sockets or of C.

mod group;
mod inbox;
mod pace;
mod timers;

use std::io;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Poll};

pub(crate) use group::{Group, LoopShared, WAKER, lock};
pub(crate) use inbox::{Cmd, SendBudget};
use pace::PACE;
use timers::{Fired, Timers};

use crate::error::{Error, Result};
use crate::log::log;
use crate::panic::guard;

/// What runs on a loop: its handles. `H` is the kind of command they take from the inbox.
pub(crate) trait Body<H> {
    /// Registers what the body starts with, before the first wait.
    fn start(&mut self, core: &mut Core<'_, H>) -> Result<()>;
    /// Work is left over from the last turn: the loop looks for events without waiting.
    fn busy(&self) -> bool;
    /// The body's next deadline.
    fn next_deadline(&self) -> Option<Instant>;
    /// At the start of a turn, before its events: the work left over.
    fn resume(&mut self, core: &mut Core<'_, H>);
    fn event(&mut self, core: &mut Core<'_, H>, ev: &Event);
    fn command(&mut self, core: &mut Core<'_, H>, cmd: H);
    /// The loop was woken (after its inbox was taken): a stop or an end may have been asked.
    fn woken(&mut self, core: &mut Core<'_, H>);
    /// The body's deadlines due by `core.now`.
    fn expire(&mut self, core: &mut Core<'_, H>);
    /// The turn is over (its events, commands, timers and deadlines handled): what it
    /// gathered to write goes out now, before the loop waits.
    fn end_turn(&mut self, core: &mut Core<'_, H>);
    /// One step of stopping; true once the loop may end.
    fn stop_step(&mut self, core: &mut Core<'_, H>) -> bool;
    /// At the end: every handle closes.
    fn close_all(&mut self, core: &mut Core<'_, H>);
}

/// One loop's own state, lent to its body with each call.
pub(crate) struct Core<'g, H> {
    pub(crate) group: &'g Group<H>,
    pub(crate) me: &'g LoopShared<H>,
    pub(crate) poll: Poll,
    /// When the current turn began.
    pub(crate) now: Instant,
    timers: Timers,
}

/// Runs loop `index` of `group` with `body` until the group stops.
pub(crate) fn run<H, B: Body<H>>(group: &Group<H>, index: usize, poll: Poll, body: &mut B) {
    let mut core = Core {
        group,
        me: &group.loops[index],
        poll,
        now: Instant::now(),
        timers: Timers::default(),
    };
    let served = body.start(&mut core).and_then(|()| core.serve(body));
    if let Err(e) = served {
        log!(Error, "loop {index} failed: {e}");
    }
    body.close_all(&mut core);
    // What is still queued: posted tasks run (so they can free what they hold), the rest
    // is dropped by the body.
    core.drain_inbox(body);
}

impl<H> Core<'_, H> {
    fn serve(&mut self, body: &mut impl Body<H>) -> Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut yielded = Instant::now();
        loop {
            if self.group.stopping() && body.stop_step(self) {
                return Ok(());
            }
            let busy = body.busy();
            let pace = !busy && self.group.paces();
            // Commands queued while the loop was awake woke nothing: taken now, not waited on.
            let queued = !self.me.may_wait(pace);
            let mut timeout = if queued || busy {
                Some(Duration::ZERO)
            } else {
                let next = match (self.timers.next(), body.next_deadline()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                next.map(|at| at.saturating_duration_since(Instant::now()))
            };
            if pace && !queued {
                self.me.wait_for_helpers(timeout.map_or(PACE, |t| t.min(PACE)));
                timeout = Some(Duration::ZERO);
            }
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("epoll_wait", e)),
            }
            self.me.set_awake();
            self.now = Instant::now();
            body.resume(self);
            if self.me.take_quiet() || queued {
                self.drain_inbox(body);
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {
                        self.drain_inbox(body);
                        body.woken(self);
                    }
                    _ => body.event(self, ev),
                }
            }
            if !self.group.stopping() {
                self.run_timers();
            }
            body.expire(self);
            body.end_turn(self);
            if !events.is_empty() {
                self.group.take_turns(&mut yielded);
            }
        }
    }

    /// Takes what other threads (and callbacks) queued for this loop.
    fn drain_inbox(&mut self, body: &mut impl Body<H>) {
        for cmd in self.me.take_cmds() {
            match cmd {
                Cmd::Task(task) => {
                    if let Err(e) = guard(task) {
                        log!(Error, "a posted task failed: {e}");
                    }
                }
                Cmd::TimerStart {
                    id,
                    at,
                    repeat,
                    cb,
                    stopped,
                } => self.timers.start(id, at, repeat, cb, stopped),
                Cmd::TimerStop { id } => self.timers.forget(id),
                Cmd::Handle(cmd) => body.command(self, cmd),
            }
        }
    }

    /// Runs the user timers due by now; each runs at most once per turn.
    fn run_timers(&mut self) {
        let due = self.now;
        while let Some(id) = self.timers.pop_due(due) {
            let fired = self.timers.fire(id, due, |cb, id| {
                if let Err(e) = guard(|| cb(id)) {
                    log!(Error, "timer {id} failed: {e}");
                }
            });
            if let Some(Fired::Done) = fired {
                self.group.timer_done(id);
            }
            if self.group.stopping() {
                return;
            }
        }
    }
}
