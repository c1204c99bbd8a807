//! The loop's side of a service with workers: the handler the loop calls, which queues each
//! event on its connection's line and holds reading while too much waits.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};

use super::line::{EVENT_OVERHEAD, Event, Info, Line, LineQueue, Shared, hand, hold};
use crate::error::{Error, Result};
use crate::handles::conn::{Awaiting, Conn, TcpHandler};
use crate::loop_core::lock;

/// The handler the loop calls for a service with workers: it queues the events.
pub(super) struct Pooled(pub(super) Arc<Shared>);

impl Pooled {
    /// The line of the connection in hand (kept in its state on the loop).
    fn line(c: &mut Conn<'_>) -> Option<Arc<Line>> {
        let st = c.state()?;
        st.pooled.as_ref()?.downcast_ref::<Arc<Line>>().cloned()
    }
}

impl TcpHandler for Pooled {
    fn on_open(&self, conn: &mut Conn<'_>) {
        let shared = &self.0;
        let id = conn.id();
        let peer = conn.peer().ok();
        let (alpn, server_name) = (conn.alpn(), conn.server_name());
        let Some(st) = conn.state() else { return };
        let info = Info {
            peer,
            alpn,
            server_name,
            budget: st.budget.clone(),
        };
        let mut lines = lock(&shared.lines);
        let line = match lines.get(&id).and_then(Weak::upgrade) {
            Some(line) => {
                *lock(&line.info) = info;
                line
            }
            None => {
                lock(&shared.queue).lines += 1;
                let line = Arc::new(Line {
                    shared: shared.clone(),
                    id,
                    queue: Mutex::new(LineQueue {
                        events: VecDeque::new(),
                        scheduled: false,
                    }),
                    info: Mutex::new(info),
                    waiting: AtomicUsize::new(0),
                    held: AtomicBool::new(false),
                    side: Mutex::default(),
                });
                lines.insert(id, Arc::downgrade(&line));
                line
            }
        };
        drop(lines);
        st.pooled = Some(Box::new(line.clone()));
        let awaiting = Arc::new(Awaiting::default());
        awaiting.hand();
        st.awaiting = Some(awaiting.clone());
        line.push(Event::Open(awaiting));
    }

    fn on_data(&self, conn: &mut Conn<'_>, data: &[u8]) {
        let Some(line) = Pooled::line(conn) else { return };
        let counted = data.len() + EVENT_OVERHEAD;
        let now = line.waiting.fetch_add(counted, SeqCst) + counted;
        hand(conn);
        line.push(Event::Data {
            bytes: data.to_vec(),
            counted,
        });
        if now >= line.bound() {
            line.held.store(true, SeqCst);
            hold(conn, true);
            // The worker may have caught up meanwhile, and seen no hold to release.
            if line.waiting.load(SeqCst) < line.bound() && line.held.swap(false, SeqCst) {
                hold(conn, false);
            }
        }
    }

    fn on_drain(&self, conn: &mut Conn<'_>) {
        if let Some(line) = Pooled::line(conn) {
            hand(conn);
            line.push(Event::Drain);
        }
    }

    fn on_timer(&self, conn: &mut Conn<'_>) {
        if let Some(line) = Pooled::line(conn) {
            hand(conn);
            line.push(Event::Timer);
        }
    }

    fn on_close(&self, conn: &mut Conn<'_>, reason: &Result<()>) {
        if let Some(line) = Pooled::line(conn) {
            line.push(Event::Close(copy(reason)));
        }
    }
}

/// A copy of a close reason (the loop keeps its own).
fn copy(reason: &Result<()>) -> Result<()> {
    let Err(e) = reason else { return Ok(()) };
    Err(match e {
        Error::Invalid(d) => Error::Invalid(d.clone()),
        Error::Addr(d) => Error::Addr(d.clone()),
        Error::AddrInUse(d) => Error::AddrInUse(d.clone()),
        Error::Refused(d) => Error::Refused(d.clone()),
        Error::Timeout(d) => Error::Timeout(d.clone()),
        Error::Closed(d) => Error::Closed(d.clone()),
        Error::Truncated(n) => Error::Truncated(*n),
        Error::Limit(d) => Error::Limit(d.clone()),
        Error::Reset(d) => Error::Reset(d.clone()),
        Error::Stopped => Error::Stopped,
        Error::Panic(d) => Error::Panic(d.clone()),
        Error::Misuse(d) => Error::Misuse(d.clone()),
        Error::Tls(d) => Error::Tls(d.clone()),
        Error::Io { context, source } => Error::Io {
            context,
            source: match source.raw_os_error() {
                Some(errno) => io::Error::from_raw_os_error(errno),
                None => io::Error::new(source.kind(), source.to_string()),
            },
        },
    })
}
