//! The UDP (and Unix datagram) server loop: one callback per datagram; replies go straight to
//! the shared socket from any thread.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use socket2::{SockAddr, Socket};

use crate::error::{Error, Result};
use crate::event_loop::{Control, READ_BUF, READS_PER_TURN};
use crate::panic::guard;

/// Sends replies on a datagram server's socket.
pub struct Responder<'a> {
    sock: &'a Socket,
}

impl Responder<'_> {
    pub(crate) fn new(sock: &Socket) -> Responder<'_> {
        Responder { sock }
    }

    /// Sends one datagram to `to`.
    pub fn reply(&self, to: &SockAddr, data: &[u8]) -> Result<()> {
        if to.is_unix() && to.as_pathname().is_none() && to.as_abstract_namespace().is_none() {
            return Err(Error::Addr(
                "the peer's Unix socket is unnamed, so it cannot be answered".into(),
            ));
        }
        match self.sock.send_to(data, to) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(Error::Limit(
                "the socket's send buffer is full; the datagram was not sent".into(),
            )),
            Err(e) => Err(Error::io("sendto", e)),
        }
    }
}

/// The callback of a UDP server. Runs on the server's loop thread.
pub trait UdpHandler: Send + 'static {
    /// One datagram arrived from `from`.
    fn on_datagram(&mut self, responder: &Responder<'_>, from: &SockAddr, data: &[u8]);
}

const SOCKET: Token = Token(0);

/// Runs the loop until the server is stopped.
pub(crate) fn run<H: UdpHandler>(mut poll: Poll, sock: &Socket, control: &Control, mut handler: H) {
    control.enter_loop();
    let fd = sock.as_raw_fd();
    if poll
        .registry()
        .register(&mut SourceFd(&fd), SOCKET, Interest::READABLE)
        .is_ok()
    {
        let mut buf = vec![MaybeUninit::<u8>::uninit(); READ_BUF];
        let mut events = Events::with_capacity(64);
        let mut again = false;
        while !control.stopping() {
            let timeout = if again { Some(Duration::ZERO) } else { None };
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            if again || events.iter().any(|ev| ev.token() == SOCKET) {
                again = receive(sock, control, &mut buf, &mut handler);
            }
        }
    }
    control.finish();
}

/// Receives up to a turn's worth of datagrams; true if the socket may hold more.
fn receive<H: UdpHandler>(sock: &Socket, control: &Control, buf: &mut [MaybeUninit<u8>], handler: &mut H) -> bool {
    let responder = Responder::new(sock);
    for _ in 0..READS_PER_TURN {
        if control.stopping() {
            return false;
        }
        // MSG_TRUNC makes the kernel report a datagram's full length, so an oversized one is
        // dropped rather than handed over cut short.
        match sock.recv_from_with_flags(buf, libc::MSG_TRUNC) {
            Ok((n, _)) if n > buf.len() => {}
            Ok((n, from)) => {
                let from = unnamed_if_empty(from);
                // SAFETY: the kernel initialised the first `n` bytes of `buf`.
                let data = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
                // A panicking handler loses only this datagram.
                let _ = guard(|| handler.on_datagram(&responder, &from, data));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Nothing else concerns a datagram waiting here; the next readiness event retries.
            Err(_) => return false,
        }
    }
    true
}

/// Some kernels (gVisor) report an unnamed Unix sender with an empty address rather than a
/// bare family; both mean "unnamed", so give callbacks the same thing either way.
fn unnamed_if_empty(from: SockAddr) -> SockAddr {
    if (from.len() as usize) < size_of::<libc::sa_family_t>() {
        return SockAddr::unix("").unwrap_or(from);
    }
    from
}
