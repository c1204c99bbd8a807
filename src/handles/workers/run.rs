//! A worker's side: the callback of each event, with the connection as a worker sees it (its
//! operations go to the loop through the inbox, in order).

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use socket2::SockAddr;

use super::line::{Event, Line, WorkerSide};
use crate::error::{Error, Result};
use crate::framing;
use crate::handles::cmd::{Cmd, HandleCmd, push_send, push_send_owned};
use crate::handles::conn::{Conn, Remote, TcpHandler, check_keep};
use crate::handles::outq::OwnedBuf;
use crate::log::log;
use crate::loop_core::lock;
use crate::panic::guard;

/// Counts a callback as running while it lives.
struct Busy<'a>(&'a AtomicUsize);

impl<'a> Busy<'a> {
    fn new(n: &'a AtomicUsize) -> Busy<'a> {
        n.fetch_add(1, SeqCst);
        Busy(n)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}
/// Runs the callback of `ev` for `line`'s connection.
pub(super) fn run(line: &Arc<Line>, ev: Event) {
    let shared = &line.shared;
    let app = &*shared.app;
    let mut side = lock(&line.side);
    if let Event::Close(reason) = ev {
        // Raw bytes kept for a message the peer never finished: as on the loop.
        let reason = match reason {
            Ok(()) if !side.carry.is_empty() => Err(Error::Closed(
                format!("the peer closed {} bytes into a message", side.carry.len()).into(),
            )),
            other => other,
        };
        side.closed = true;
        for ev in std::mem::take(&mut side.deferred) {
            if let Event::Data { counted, .. } = ev {
                line.consumed(counted);
            }
        }
        // Released before its on_open could start: the application never saw it.
        if side.opened {
            let _busy = Busy::new(&shared.busy);
            // A panic in on_close has nothing left to close.
            let _ = guard(|| app.on_close(&mut Conn::remote(&mut View { line, side: &mut side }), &reason));
        }
        // A client that reconnects starts afresh (with its next on_open).
        *side = WorkerSide {
            closed: true,
            ..WorkerSide::default()
        };
        return;
    }
    if !matches!(ev, Event::Kept | Event::Task(_)) {
        side.done += 1;
    }
    if let Event::Open(awaiting) = &ev {
        // The new connection's count, told of this event even if its callback is skipped.
        side.awaiting = Some(awaiting.clone());
    }
    let counted = match &ev {
        Event::Data { counted, .. } => *counted,
        _ => 0,
    };
    let skip = side.failed || !shared.live() || (side.closed && !matches!(ev, Event::Open(_)));
    if !skip && side.paused && counted > 0 {
        side.done -= 1;
        side.deferred.push_back(ev);
        return;
    }
    if skip {
        if let Event::Task(task) = ev {
            // The connection ended (or was let go) first: the task gets `None`, so that what
            // it holds can be freed.
            if let Err(e) = guard(|| task(None)) {
                log!(Error, "a task posted to connection {} failed: {e}", line.id);
            }
        }
    } else {
        let _busy = Busy::new(&shared.busy);
        let ran = match ev {
            Event::Open(_) => {
                *side = WorkerSide {
                    opened: true,
                    done: side.done,
                    awaiting: side.awaiting.take(),
                    ..WorkerSide::default()
                };
                guard(|| app.on_open(&mut Conn::remote(&mut View { line, side: &mut side })))
            }
            Event::Data { bytes, .. } => deliver(line, &mut side, bytes),
            Event::Kept => deliver(line, &mut side, Vec::new()),
            Event::Drain => guard(|| app.on_drain(&mut Conn::remote(&mut View { line, side: &mut side }))),
            Event::Timer => guard(|| app.on_timer(&mut Conn::remote(&mut View { line, side: &mut side }))),
            Event::Task(task) => guard(|| task(Some(&mut Conn::remote(&mut View { line, side: &mut side })))),
            Event::Close(_) => Ok(()),
        };
        if let Err(e) = ran {
            log!(Error, "connection {}: a worker callback failed: {e}", line.id);
            side.failed = true;
            line.to_loop(move |c| c.fail(e));
        }
    }
    // Caught up: the loop learns it (after the callbacks' sends), once per catching up.
    if side.done > 0 && lock(&line.queue).events.is_empty() {
        if let Some(awaiting) = side.awaiting.clone() {
            line.caught_up(std::mem::take(&mut side.done), awaiting);
        }
    }
    drop(side);
    line.consumed(counted);
}

/// `on_data` with `bytes`, after what the last delivery kept.
fn deliver(line: &Arc<Line>, side: &mut WorkerSide, bytes: Vec<u8>) -> Result<()> {
    let mut data = std::mem::take(&mut side.carry);
    if data.is_empty() {
        data = bytes;
    } else {
        data.extend_from_slice(&bytes);
    }
    if data.is_empty() {
        return Ok(());
    }
    side.delivering = data.len();
    let app = &*line.shared.app;
    let ran = guard(|| app.on_data(&mut Conn::remote(&mut View { line, side: &mut *side }), &data));
    side.delivering = 0;
    let keep = std::mem::take(&mut side.keep);
    if keep > 0 {
        data.drain(..data.len() - keep);
        side.carry = data;
    }
    ran
}

/// The connection as a worker's callback sees it.
struct View<'a> {
    line: &'a Arc<Line>,
    side: &'a mut WorkerSide,
}

impl Remote for View<'_> {
    fn id(&self) -> u64 {
        self.line.id
    }

    fn peer(&self) -> Result<SockAddr> {
        lock(&self.line.info)
            .peer
            .clone()
            .ok_or_else(|| Error::Closed("the peer's address is unknown".into()))
    }

    fn alpn(&self) -> Option<Vec<u8>> {
        lock(&self.line.info).alpn.clone()
    }

    fn server_name(&self) -> Option<String> {
        lock(&self.line.info).server_name.clone()
    }

    fn send_owned(&mut self, buf: Box<dyn OwnedBuf>) -> std::result::Result<(), (Error, Box<dyn OwnedBuf>)> {
        if self.side.closed {
            return Err((Error::Closed("the connection is closed".into()), buf));
        }
        let max = self.line.shared.opts.max_write_buffer;
        push_send_owned(&self.line.shared.group, self.line.id, buf, max)
    }

    fn send(&mut self, data: &[u8], frame: bool) -> Result<()> {
        if self.side.closed {
            return Err(Error::Closed("the connection is closed".into()));
        }
        let opts = &self.line.shared.opts;
        let envelope = if frame {
            Some(framing::envelope_len(&opts.framing, data)?)
        } else {
            None
        };
        push_send(
            &self.line.shared.group,
            self.line.id,
            data,
            envelope,
            opts.max_write_buffer,
        )
    }

    fn pause(&mut self) {
        self.side.paused = true;
        self.line.to_loop(|c| c.pause());
    }

    fn resume(&mut self) {
        if std::mem::take(&mut self.side.paused) {
            self.line.to_loop(|c| c.resume());
            // What was read before the pause comes next, before anything queued since.
            let deferred = std::mem::take(&mut self.side.deferred);
            if !deferred.is_empty() {
                self.line.shared.queued.fetch_add(deferred.len(), SeqCst);
                self.line.shared.group.hand(deferred.len());
                let mut q = lock(&self.line.queue);
                for ev in deferred.into_iter().rev() {
                    q.events.push_front(ev);
                }
            }
            // Kept bytes come back at once, new input or not (as on the loop).
            if !self.side.carry.is_empty() {
                self.line.push(Event::Kept);
            }
        }
    }

    fn set_timer(&mut self, after: Option<Duration>) {
        let at = after.map(|a| Instant::now() + a);
        self.line
            .to_loop(move |c| c.set_timer(at.map(|at| at.saturating_duration_since(Instant::now()))));
    }

    fn keep(&mut self, n: usize) -> Result<()> {
        check_keep(&self.line.shared.opts, self.side.delivering, n)?;
        self.side.keep = n;
        Ok(())
    }

    fn close(&mut self) {
        if !std::mem::replace(&mut self.side.closed, true) {
            let (group, id) = (&self.line.shared.group, self.line.id);
            let cmd = Cmd::Handle(HandleCmd::Close { id });
            let _ = group.loop_of(id).and_then(|l| l.push(group, Some(id), cmd));
        }
    }

    fn pending(&self) -> usize {
        lock(&self.line.info).budget.accepted()
    }

    fn handler(&self) -> &dyn TcpHandler {
        &*self.line.shared.app
    }

    fn user(&self) -> Option<&(dyn Any + Send)> {
        self.side.user.as_deref()
    }

    fn set_user(&mut self, user: Option<Box<dyn Any + Send>>) {
        self.side.user = user;
    }
}
