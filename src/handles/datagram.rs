//! A datagram socket on a loop (UDP and Unix datagram): one callback per datagram; replies made
//! in a callback leave together with those to the rest of its batch, in one `sendmmsg`;
//! replies from other threads go straight to the shared socket. Several loops may share one
//! socket.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use socket2::{SockAddr, Socket};

use super::service::{Counters, Ending};
use crate::error::{Error, Result};
use crate::log::log;
use crate::loop_core::Group;
use crate::mmsg::{BATCH, QUEUE_MAX, RecvBatch, SendBatch};
use crate::panic::guard;
use crate::socket::Bound;
use crate::stats::Counter;

/// Sends replies on a datagram server's socket.
pub struct Responder<'a> {
    sock: &'a Socket,
    sent: &'a Counter,
}

impl<'a> Responder<'a> {
    pub(crate) fn new(sock: &'a Socket, sent: &'a Counter) -> Responder<'a> {
        Responder { sock, sent }
    }

    /// Sends one datagram to `to`. Inside a callback, a datagram of up to 8 KiB is queued and
    /// sent with the other replies to the callback's batch of datagrams, before the loop
    /// waits again; one the kernel then refuses (a full send buffer) is lost, as UDP may lose
    /// it, and logged. Elsewhere, and for larger datagrams, it is sent at once.
    pub fn reply(&self, to: &SockAddr, data: &[u8]) -> Result<()> {
        if to.is_unix() && to.as_pathname().is_none() && to.as_abstract_namespace().is_none() {
            return Err(Error::Addr(
                "the peer's Unix socket is unnamed, so it cannot be answered".into(),
            ));
        }
        // Only a thread running one of this socket's loops (in a callback) has a queue for it.
        let fd = self.sock.as_raw_fd();
        if data.len() <= QUEUE_MAX && queue(fd, to, data, self.sent) {
            return Ok(());
        }
        // Sent at once: what this thread's loop queued goes first, so replies keep their order.
        flush(fd, self.sent);
        // Counted before it leaves, so a peer that has the reply never finds it uncounted.
        self.sent.add_shared(1);
        let sent = self.sock.send_to(data, to);
        if sent.is_err() {
            self.sent.sub_shared(1);
        }
        match sent {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(Error::Limit(
                "the socket's send buffer is full; the datagram was not sent".into(),
            )),
            Err(e) => Err(Error::io("sendto", e)),
        }
    }
}

thread_local! {
    /// The replies queued by callbacks of the UDP loop running on this thread, with the
    /// descriptor of its socket.
    static QUEUED: RefCell<Option<(RawFd, SendBatch)>> = const { RefCell::new(None) };
}

/// Queues a reply on this thread's loop batch if that loop serves `fd`; false if it does not.
fn queue(fd: RawFd, to: &SockAddr, data: &[u8], sent: &Counter) -> bool {
    let queued = QUEUED.with_borrow_mut(|q| match q {
        Some((qfd, batch)) if *qfd == fd => {
            batch.push(to, data);
            Some(batch.full())
        }
        _ => None,
    });
    if queued == Some(true) {
        flush(fd, sent);
    }
    queued.is_some()
}

/// Sends the replies this thread's loop queued for `fd`.
fn flush(fd: RawFd, sent: &Counter) {
    let done = QUEUED.with_borrow_mut(|q| {
        let (qfd, batch) = q.as_mut().filter(|(qfd, b)| *qfd == fd && b.len() > 0)?;
        // Counted before they leave, as single replies are.
        sent.add_shared(batch.len() as u64);
        Some(batch.flush(*qfd))
    });
    // Logged after the queue is let go: a log callback may reply.
    if let Some(done) = done.filter(|d| d.dropped > 0) {
        sent.sub_shared(done.dropped as u64);
        let why = done.error.map(|e| e.to_string()).unwrap_or_default();
        log!(
            Info,
            "{} of {} replies dropped: {why}",
            done.dropped,
            done.dropped + done.sent
        );
    }
}

/// The callback of a UDP server. With several loop threads it runs on all of them at once.
pub trait UdpHandler: Send + Sync + 'static {
    /// One datagram arrived from `from`.
    fn on_datagram(&self, responder: &Responder<'_>, from: &SockAddr, data: &[u8]);
}

/// What a loop needs to serve a UDP server's socket.
pub(crate) struct DatagramServer {
    pub(crate) bound: Arc<Bound>,
    pub(crate) sent: Arc<Counter>,
    pub(crate) handler: Arc<dyn UdpHandler>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) ending: Arc<Ending>,
}

/// Batches one socket gets per turn before the others are served.
const BATCHES_PER_TURN: usize = 4;

/// A datagram server's socket as one of its loops serves it.
pub(crate) struct Datagrams<'g, H> {
    group: &'g Group<H>,
    index: usize,
    server: DatagramServer,
    batch: RecvBatch,
    /// The replies queued by callbacks, lent to the thread while they run.
    queue: SendBatch,
    /// The socket was not read dry in its last turn.
    again: bool,
}

impl<H> Drop for Datagrams<'_, H> {
    fn drop(&mut self) {
        self.server.ending.let_go();
    }
}

impl<'g, H> Datagrams<'g, H> {
    pub(crate) fn new(group: &'g Group<H>, index: usize, server: DatagramServer) -> Datagrams<'g, H> {
        Datagrams {
            group,
            index,
            server,
            batch: RecvBatch::new(),
            queue: SendBatch::default(),
            again: false,
        }
    }

    /// Starts reading, with events for the socket coming with `token`.
    pub(crate) fn start(&mut self, registry: &Registry, token: Token) -> Result<()> {
        let fd = self.server.bound.sock.as_raw_fd();
        registry
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
            .map_err(|e| Error::io("epoll_ctl", e))
    }

    /// Stops reading on this loop; dropping `self` then lets go of the server.
    pub(crate) fn stop(self, registry: &Registry) {
        let _ = registry.deregister(&mut SourceFd(&self.server.bound.sock.as_raw_fd()));
    }

    pub(crate) fn ending(&self) -> &Ending {
        &self.server.ending
    }

    pub(crate) fn busy(&self) -> bool {
        self.again
    }

    /// The socket gets another turn if its last one did not read it dry.
    pub(crate) fn resume(&mut self) {
        if self.again {
            self.readable();
        }
    }

    /// Reads and hands out a few batches, with the thread's reply queue set to this socket's
    /// meanwhile (and the queue of a loop this one runs inside, if any, put back after).
    pub(crate) fn readable(&mut self) {
        let fd = self.server.bound.sock.as_raw_fd();
        let outer = QUEUED.replace(Some((fd, std::mem::take(&mut self.queue))));
        self.read_batches(fd);
        flush(fd, &self.server.sent);
        if let Some((_, queue)) = QUEUED.replace(outer) {
            self.queue = queue;
        }
    }

    /// Reads and hands out a few batches; unless the socket runs dry meanwhile, it gets
    /// another turn after the others.
    fn read_batches(&mut self, fd: RawFd) {
        let stats = self.server.counters.of(self.index);
        let responder = Responder::new(&self.server.bound.sock, &self.server.sent);
        self.again = true;
        for _ in 0..BATCHES_PER_TURN {
            let n = match self.batch.recv(fd) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        log!(Warn, "recvmmsg failed: {e}");
                    }
                    self.again = false;
                    return;
                }
            };
            for i in 0..n {
                if self.group.stopping() {
                    return;
                }
                let mut dgram = self.batch.get(i);
                if dgram.truncated {
                    log!(Info, "dropped a datagram larger than 64 KiB");
                    continue;
                }
                stats.datagrams_in.add(1);
                stats.bytes_in.add(dgram.data.len() as u64);
                unnamed_if_empty(&mut dgram.from);
                // A panicking handler loses only this datagram.
                let handler = &self.server.handler;
                if let Err(e) = guard(|| handler.on_datagram(&responder, &dgram.from, dgram.data)) {
                    log!(Error, "datagram handler failed: {e}");
                }
            }
            flush(fd, &self.server.sent);
            if n < BATCH {
                self.again = false;
                return;
            }
        }
    }
}

/// Some kernels (gVisor) report an unnamed Unix sender with an empty address rather than a
/// bare family; both mean "unnamed", so give callbacks the same thing either way.
fn unnamed_if_empty(from: &mut SockAddr) {
    if (from.len() as usize) < size_of::<libc::sa_family_t>()
        && let Ok(unnamed) = SockAddr::unix("")
    {
        *from = unnamed;
    }
}
