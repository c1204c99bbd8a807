//! The UDP (and Unix datagram) loop: one callback per datagram; replies go straight to the
//! shared socket from any thread. Several loops may share one socket.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use socket2::{SockAddr, Socket};

use crate::error::{Error, Result};
use crate::event_loop::Group;
use crate::log::log;
use crate::mmsg::{BATCH, RecvBatch};
use crate::panic::guard;
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

    /// Sends one datagram to `to`.
    pub fn reply(&self, to: &SockAddr, data: &[u8]) -> Result<()> {
        if to.is_unix() && to.as_pathname().is_none() && to.as_abstract_namespace().is_none() {
            return Err(Error::Addr(
                "the peer's Unix socket is unnamed, so it cannot be answered".into(),
            ));
        }
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

/// The callback of a UDP server. With several loop threads it runs on all of them at once.
pub trait UdpHandler: Send + Sync + 'static {
    /// One datagram arrived from `from`.
    fn on_datagram(&self, responder: &Responder<'_>, from: &SockAddr, data: &[u8]);
}

const SOCKET: Token = Token(0);
/// Batches one socket gets per turn before the waker is looked at again.
const BATCHES_PER_TURN: usize = 4;

/// Runs loop `index` of `group` on `sock` until the group stops.
pub(crate) fn run(
    group: &Group,
    index: usize,
    mut poll: Poll,
    sock: &Socket,
    sent: &Counter,
    handler: &dyn UdpHandler,
) {
    let fd = sock.as_raw_fd();
    if let Err(e) = poll.registry().register(&mut SourceFd(&fd), SOCKET, Interest::READABLE) {
        log!(Error, "loop {index} cannot poll its socket: {e}");
        return;
    }
    let stats = &group.loops[index].stats;
    let responder = Responder::new(sock, sent);
    let mut batch = RecvBatch::new();
    let mut events = Events::with_capacity(64);
    let mut again = false;
    while !group.stopping() {
        let timeout = if again { Some(Duration::ZERO) } else { None };
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log!(Error, "loop {index} failed: {e}");
                return;
            }
        }
        if !again && !events.iter().any(|ev| ev.token() == SOCKET) {
            continue;
        }
        // Unless the socket runs dry within this turn, it gets another after the others.
        again = true;
        for _ in 0..BATCHES_PER_TURN {
            let n = match batch.recv(fd) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        log!(Warn, "recvmmsg failed: {e}");
                    }
                    again = false;
                    break;
                }
            };
            for i in 0..n {
                if group.stopping() {
                    return;
                }
                let dgram = batch.get(i);
                if dgram.truncated {
                    log!(Info, "dropped a datagram larger than 64 KiB");
                    continue;
                }
                stats.datagrams_in.add(1);
                stats.bytes_in.add(dgram.data.len() as u64);
                let from = unnamed_if_empty(dgram.from);
                // A panicking handler loses only this datagram.
                if let Err(e) = guard(|| handler.on_datagram(&responder, &from, dgram.data)) {
                    log!(Error, "datagram handler failed: {e}");
                }
            }
            if n < BATCH {
                again = false;
                break;
            }
        }
    }
}

/// Some kernels (gVisor) report an unnamed Unix sender with an empty address rather than a
/// bare family; both mean "unnamed", so give callbacks the same thing either way.
fn unnamed_if_empty(from: SockAddr) -> SockAddr {
    if (from.len() as usize) < size_of::<libc::sa_family_t>() {
        return SockAddr::unix("").unwrap_or(from);
    }
    from
}
