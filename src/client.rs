//! The classic blocking clients: one TCP exchange, one datagram, one datagram request. Each is
//! bounded by a timeout covering the whole exchange.

use std::io;
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::addr::{self, Addr};
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::framing::{self, Framing};
use crate::socket::{self, connect_error};
use crate::sys;

/// Connects, sends all of `data`, shuts down the write side, and reads the reply into `reply`
/// until the peer closes, reading while it writes (an echo of a request larger than the socket
/// buffers would otherwise deadlock). Returns the reply's length; [`Error::Truncated`] if it
/// outgrew `reply`, which then holds its first `reply.len()` bytes (the rest is read and
/// dropped until the peer closes). `timeout` bounds the whole exchange.
pub fn tcp_send(addr: &str, data: &[u8], reply: &mut [u8], timeout: Option<Duration>) -> Result<usize> {
    let deadline = Deadline::after(timeout);
    let (sock, peer) = socket::connect(&Addr::parse(addr)?, deadline)?;
    let mut sink = UntilEof {
        reply,
        len: 0,
        truncated: false,
        scratch: Vec::new(),
    };
    exchange(&sock, &peer, &[data], true, deadline, &mut sink)
}

/// Sends `msg` as one framed message and reads one whole framed reply into `reply`, without
/// needing the peer to close. Returns the reply's length; [`Error::Truncated`] if it outgrew
/// `reply`. `timeout` bounds the whole exchange.
pub fn tcp_request(
    addr: &str,
    msg: &[u8],
    reply: &mut [u8],
    timeout: Option<Duration>,
    framing: Framing,
) -> Result<usize> {
    if framing == Framing::Raw {
        return Err(Error::Invalid(
            "a request needs a framing that finds the reply's end (tcp_send covers raw bytes)".into(),
        ));
    }
    framing.check()?;
    let deadline = Deadline::after(timeout);
    let (head, tail) = framing::envelope(&framing, msg)?;
    let (sock, peer) = socket::connect(&Addr::parse(addr)?, deadline)?;
    let mut sink = OneMessage {
        framing,
        reply,
        peer: &peer,
        chunk: vec![0; 16 * 1024],
        partial: Vec::new(),
        oversize: None,
    };
    exchange(&sock, &peer, &[head.as_bytes(), msg, tail], false, deadline, &mut sink)
}

/// Where an exchange puts what it reads.
trait Sink {
    /// Where the next read goes (never empty).
    fn buf(&mut self) -> &mut [u8];
    /// `n` bytes were read into `buf()`: `Some` ends the exchange with that result.
    fn got(&mut self, n: usize) -> Option<Result<usize>>;
    /// The peer closed its side.
    fn eof(&mut self) -> Result<usize>;
}

/// Writes `parts` (then shuts down the sending side if `shut`) while reading into `sink`, so
/// neither side waits for the other to read: one non-blocking socket, one `poll` per wait.
fn exchange(
    sock: &Socket,
    peer: &str,
    parts: &[&[u8]],
    shut: bool,
    deadline: Deadline,
    sink: &mut impl Sink,
) -> Result<usize> {
    let fd = sock.as_raw_fd();
    let (mut part, mut off) = (0, 0);
    let (mut read_any, mut peer_done) = (false, false);
    loop {
        while part < parts.len() {
            match sys::send(fd, &parts[part][off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(step_error(peer, "while sending", e)),
            }
            if off == parts[part].len() {
                (part, off) = (part + 1, 0);
                if part == parts.len() && shut {
                    sock.shutdown(Shutdown::Write).map_err(|e| Error::io("shutdown", e))?;
                }
            }
        }
        let sending = part < parts.len();
        // The peer may end its side before it has read the whole request (a half-close is
        // legal): the request still goes out in full, or fails with the peer's reset.
        while !peer_done {
            match sys::recv(fd, sink.buf()) {
                Ok(0) => peer_done = true,
                Ok(n) => {
                    read_any = true;
                    if let Some(done) = sink.got(n) {
                        return done;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(step_error(peer, "while reading the reply", e)),
            }
        }
        if peer_done && !sending {
            return sink.eof();
        }
        let events = match (sending, peer_done) {
            (true, false) => libc::POLLIN | libc::POLLOUT,
            (true, true) => libc::POLLOUT,
            (false, _) => libc::POLLIN,
        };
        deadline.wait(fd, events, || {
            let limit = deadline.limit_text();
            match (sending, read_any) {
                (true, _) => format!("{peer} did not take the whole request within {limit}"),
                (false, false) => format!("no reply from {peer} within {limit}"),
                (false, true) => format!("the reply from {peer} did not end within {limit}"),
            }
        })?;
    }
}

/// An I/O failure during an exchange, named by the peer and the step.
fn step_error(peer: &str, step: &str, e: io::Error) -> Error {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
            Error::Reset(format!("{peer} reset the connection {step}").into())
        }
        _ => Error::io("exchange", e),
    }
}

/// A reply that ends when the peer closes; bytes past `reply` are read and dropped.
struct UntilEof<'a> {
    reply: &'a mut [u8],
    len: usize,
    truncated: bool,
    /// Where bytes past `reply` are read to be dropped (allocated only if needed).
    scratch: Vec<u8>,
}

impl Sink for UntilEof<'_> {
    fn buf(&mut self) -> &mut [u8] {
        if self.len < self.reply.len() {
            return &mut self.reply[self.len..];
        }
        if self.scratch.is_empty() {
            self.scratch = vec![0; 64 * 1024];
        }
        &mut self.scratch
    }

    fn got(&mut self, n: usize) -> Option<Result<usize>> {
        if self.len < self.reply.len() {
            self.len += n;
        } else {
            self.truncated = true;
        }
        None
    }

    fn eof(&mut self) -> Result<usize> {
        if self.truncated {
            return Err(Error::Truncated(self.len));
        }
        Ok(self.len)
    }
}

/// A reply of one framed message, decoded by the connections' own framer (each read fed once:
/// nothing that came before is scanned again).
struct OneMessage<'a> {
    framing: Framing,
    reply: &'a mut [u8],
    peer: &'a str,
    chunk: Vec<u8>,
    partial: Vec<u8>,
    /// The start of a message that outgrew `reply`, until `reply` can be filled from it.
    oversize: Option<Vec<u8>>,
}

impl OneMessage<'_> {
    /// Fills `reply` from an oversize message once its first `reply.len()` bytes are here (a
    /// length prefix tells the size before the body arrives).
    fn fill_truncated(&mut self) -> Option<Result<usize>> {
        let got = self.oversize.as_ref()?;
        let skip = if self.framing == Framing::Len32 { 4 } else { 0 };
        let cap = self.reply.len();
        let head = got.get(skip..skip + cap)?;
        self.reply.copy_from_slice(head);
        Some(Err(Error::Truncated(cap)))
    }
}

impl Sink for OneMessage<'_> {
    fn buf(&mut self) -> &mut [u8] {
        &mut self.chunk
    }

    fn got(&mut self, n: usize) -> Option<Result<usize>> {
        let chunk = &self.chunk[..n];
        if let Some(got) = &mut self.oversize {
            got.extend_from_slice(chunk);
            return self.fill_truncated();
        }
        let (reply, mut len) = (&mut *self.reply, None);
        let fed = framing::feed(self.framing, reply.len(), &mut self.partial, chunk, |m| {
            reply[..m.len()].copy_from_slice(m);
            len = Some(m.len());
            false
        });
        if fed.is_err() {
            // The message outgrew `reply`: it begins what arrived of it, in `partial` or, if it
            // began in this read, in the chunk.
            let got = if self.partial.is_empty() {
                chunk.to_vec()
            } else {
                std::mem::take(&mut self.partial)
            };
            self.oversize = Some(got);
            return self.fill_truncated();
        }
        len.map(Ok)
    }

    fn eof(&mut self) -> Result<usize> {
        let closed = || Error::Closed(format!("{} closed before a whole reply arrived", self.peer).into());
        if self.oversize.is_some() {
            return Err(closed());
        }
        match framing::at_eof(self.framing, self.reply.len(), &self.partial) {
            Ok(Some(last)) => {
                self.reply[..last.len()].copy_from_slice(last);
                Ok(last.len())
            }
            Ok(None) => Err(closed()),
            Err(Error::Limit(_)) => {
                let cap = self.reply.len();
                self.reply.copy_from_slice(&self.partial[..cap]);
                Err(Error::Truncated(cap))
            }
            Err(_) => Err(closed()),
        }
    }
}

/// Sends one datagram and returns without waiting for anything.
pub fn udp_send(addr: &str, data: &[u8]) -> Result<()> {
    let target = first(&Addr::parse(addr)?)?;
    let text = addr::format(&target);
    let sock = Socket::new(target.domain(), Type::DGRAM, None).map_err(|e| Error::io("socket", e))?;
    sock.send_to(data, &target).map_err(|e| connect_error(&text, e))?;
    Ok(())
}

/// Sends one datagram and waits for one reply from that address. Returns the reply's length;
/// [`Error::Truncated`] if it outgrew `reply`.
pub fn udp_request(addr: &str, data: &[u8], reply: &mut [u8], timeout: Option<Duration>) -> Result<usize> {
    let deadline = Deadline::after(timeout);
    let target = first(&Addr::parse(addr)?)?;
    let text = addr::format(&target);
    let sock = Socket::new(target.domain(), Type::DGRAM, None).map_err(|e| Error::io("socket", e))?;
    // A Unix datagram client needs a name of its own to be answered.
    let _name = if target.domain() == Domain::UNIX {
        Some(TempName::bind(&sock)?)
    } else {
        None
    };
    // Connected, the socket takes datagrams only from the target and learns of ICMP refusals.
    sock.connect(&target).map_err(|e| connect_error(&text, e))?;
    sock.set_nonblocking(true).map_err(|e| Error::io("O_NONBLOCK", e))?;
    sock.send(data).map_err(|e| connect_error(&text, e))?;
    // SAFETY: `u8` and `MaybeUninit<u8>` have the same layout, and the kernel only writes bytes.
    let buf = unsafe { &mut *(reply as *mut [u8] as *mut [MaybeUninit<u8>]) };
    loop {
        match sock.recv_with_flags(buf, libc::MSG_TRUNC) {
            Ok(n) if n > buf.len() => return Err(Error::Truncated(buf.len())),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                deadline.wait(sock.as_raw_fd(), libc::POLLIN, || {
                    format!("no reply from {text} within {}", deadline.limit_text())
                })?;
            }
            Err(e) => return Err(connect_error(&text, e)),
        }
    }
}

/// The first resolved address (a datagram cannot tell which of several would answer).
fn first(addr: &Addr) -> Result<SockAddr> {
    let target = socket::first(addr)?;
    socket::not_port_0(&target)?;
    Ok(target)
}

/// A temporary Unix socket name for a datagram client, removed when dropped.
struct TempName(PathBuf);

impl TempName {
    fn bind(sock: &Socket) -> Result<TempName> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("netsock-client-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let addr = SockAddr::unix(&path).map_err(|e| Error::io("client socket path", e))?;
        sock.bind(&addr)
            .map_err(|e| Error::io("binding the client socket", e))?;
        Ok(TempName(path))
    }
}

impl Drop for TempName {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
