//! The classic blocking clients: one TCP exchange, one datagram, one datagram request. Each is
//! bounded by a timeout covering the whole exchange.

use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::addr::Addr;
use crate::error::{Error, Result};
use crate::event_loop::time_left;
use crate::framing::{self, Framing};
use crate::socket::{self, connect_error};

/// Connects, sends all of `data`, shuts down the write side, and reads the reply into `reply`
/// until the peer closes. Returns the reply's length; [`Error::Truncated`] if it outgrew `reply`
/// (which then holds its first `reply.len()` bytes). `timeout` bounds the whole exchange.
pub fn tcp_send(addr: &str, data: &[u8], reply: &mut [u8], timeout: Option<Duration>) -> Result<usize> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let sock = socket::connect(&Addr::parse(addr)?, deadline)?;
    write_all(&sock, data, deadline)?;
    sock.shutdown(Shutdown::Write).map_err(|e| Error::io("shutdown", e))?;
    let mut len = 0;
    let mut probe = [0u8; 1];
    loop {
        sock.set_read_timeout(time_left(deadline, "waiting for the reply")?)
            .map_err(|e| Error::io("SO_RCVTIMEO", e))?;
        // Once the buffer is full, one more byte decides between "complete" and "truncated".
        let into = if len < reply.len() {
            &mut reply[len..]
        } else {
            &mut probe[..]
        };
        match (&sock).read(into) {
            Ok(0) => return Ok(len),
            Ok(_) if len == reply.len() => return Err(Error::Truncated(len)),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("waiting for the reply", e)),
        }
    }
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
            "a request needs line or len32 framing (tcp_send covers raw bytes)".into(),
        ));
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    let (head, head_len, tail) = framing::envelope(framing, msg)?;
    let sock = socket::connect(&Addr::parse(addr)?, deadline)?;
    for part in [&head[..head_len], msg, tail] {
        write_all(&sock, part, deadline)?;
    }
    // Read until one whole message has arrived; anything after it is the peer's business. The
    // decoder is the connections' own, fed each read once (no rescanning of what came before).
    let mut partial = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = read_some(&sock, &mut chunk, deadline)?;
        let mut len = None;
        let fed = framing::feed(framing, reply.len(), &mut partial, &chunk[..n], |m| {
            len = Some(m.len());
            reply[..m.len()].copy_from_slice(m);
            false
        });
        if fed.is_err() {
            // The message outgrew `reply`: it begins what arrived of it, in `partial` or, if it
            // began in this read, in the chunk. A length prefix can tell that before the body
            // arrives: read on until the caller's first `reply.len()` bytes are there.
            let mut got = if partial.is_empty() {
                chunk[..n].to_vec()
            } else {
                partial
            };
            let skip = if framing == Framing::Len32 { 4 } else { 0 };
            while got.len() < skip + reply.len() {
                let n = read_some(&sock, &mut chunk, deadline)?;
                got.extend_from_slice(&chunk[..n]);
            }
            reply.copy_from_slice(&got[skip..skip + reply.len()]);
            return Err(Error::Truncated(reply.len()));
        }
        if let Some(len) = len {
            return Ok(len);
        }
    }
}

/// Reads some of a reply before `deadline`; a close before the whole reply is an error.
fn read_some(sock: &Socket, buf: &mut [u8], deadline: Option<Instant>) -> Result<usize> {
    loop {
        sock.set_read_timeout(time_left(deadline, "waiting for the reply")?)
            .map_err(|e| Error::io("SO_RCVTIMEO", e))?;
        match (&*sock).read(buf) {
            Ok(0) => return Err(Error::Closed("the peer closed before a whole reply arrived".into())),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("waiting for the reply", e)),
        }
    }
}

fn write_all(sock: &Socket, mut rest: &[u8], deadline: Option<Instant>) -> Result<()> {
    while !rest.is_empty() {
        sock.set_write_timeout(time_left(deadline, "sending")?)
            .map_err(|e| Error::io("SO_SNDTIMEO", e))?;
        match sock.send_with_flags(rest, libc::MSG_NOSIGNAL) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("sending", e)),
        }
    }
    Ok(())
}

/// Sends one datagram and returns without waiting for anything.
pub fn udp_send(addr: &str, data: &[u8]) -> Result<()> {
    let target = first(&Addr::parse(addr)?)?;
    let sock = Socket::new(target.domain(), Type::DGRAM, None).map_err(|e| Error::io("socket", e))?;
    sock.send_to(data, &target)
        .map_err(|e| connect_error("sendto", &target, e))?;
    Ok(())
}

/// Sends one datagram and waits for one reply from that address. Returns the reply's length;
/// [`Error::Truncated`] if it outgrew `reply`.
pub fn udp_request(addr: &str, data: &[u8], reply: &mut [u8], timeout: Option<Duration>) -> Result<usize> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let target = first(&Addr::parse(addr)?)?;
    let sock = Socket::new(target.domain(), Type::DGRAM, None).map_err(|e| Error::io("socket", e))?;
    // A Unix datagram client needs a name of its own to be answered.
    let _name = if target.domain() == Domain::UNIX {
        Some(TempName::bind(&sock)?)
    } else {
        None
    };
    // Connected, the socket takes datagrams only from the target and learns of ICMP refusals.
    sock.connect(&target)
        .map_err(|e| connect_error("connect", &target, e))?;
    sock.send(data).map_err(|e| connect_error("send", &target, e))?;
    // SAFETY: `u8` and `MaybeUninit<u8>` have the same layout, and the kernel only writes bytes.
    let buf = unsafe { &mut *(reply as *mut [u8] as *mut [MaybeUninit<u8>]) };
    loop {
        sock.set_read_timeout(time_left(deadline, "waiting for the reply")?)
            .map_err(|e| Error::io("SO_RCVTIMEO", e))?;
        match sock.recv_with_flags(buf, libc::MSG_TRUNC) {
            Ok(n) if n > buf.len() => return Err(Error::Truncated(buf.len())),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(connect_error("waiting for the reply", &target, e)),
        }
    }
}

/// The first resolved address (a datagram cannot tell which of several would answer).
fn first(addr: &Addr) -> Result<SockAddr> {
    let target = addr
        .sock_addrs()?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Addr("no address".into()))?;
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
