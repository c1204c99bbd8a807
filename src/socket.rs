//! Creating sockets from parsed addresses: listening, binding and connecting, with the options a
//! server wants (SO_REUSEADDR on stream listeners, close-on-exec, non-blocking) set in one place.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::addr::{self, Addr};
use crate::deadline::Deadline;
use crate::error::{Error, Result};

/// A bound server socket. A Unix socket file it created is removed when it is dropped.
#[derive(Debug)]
pub struct Bound {
    pub sock: Socket,
    pub local: SockAddr,
    unlink: Option<PathBuf>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some(path) = &self.unlink {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds a non-blocking server socket of type `ty` (stream sockets also listen, with `backlog`).
pub fn bind(addr: &Addr, ty: Type, backlog: i32) -> Result<Bound> {
    let target = addr
        .sock_addrs()?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Addr("no address".into()))?;
    let sock = Socket::new(target.domain(), ty, None).map_err(|e| Error::io("socket", e))?;
    if ty == Type::STREAM && target.domain() != Domain::UNIX {
        sock.set_reuse_address(true).map_err(|e| Error::io("SO_REUSEADDR", e))?;
    }
    let unlink = match addr {
        Addr::Unix(path) => {
            bind_unix(&sock, &target, path, ty)?;
            Some(path.clone())
        }
        Addr::Inet(_) => {
            sock.bind(&target).map_err(|e| Error::io("bind", e))?;
            None
        }
    };
    // From here on a failure must still remove the file we created: `Bound` owns it.
    let mut bound = Bound {
        sock,
        local: target,
        unlink,
    };
    if ty == Type::STREAM {
        bound.sock.listen(backlog).map_err(|e| Error::io("listen", e))?;
    }
    bound
        .sock
        .set_nonblocking(true)
        .map_err(|e| Error::io("O_NONBLOCK", e))?;
    bound.local = bound.sock.local_addr().map_err(|e| Error::io("getsockname", e))?;
    Ok(bound)
}

/// Binds a Unix socket path, replacing a stale socket file left by a dead server but never one
/// that a live server still answers on.
fn bind_unix(sock: &Socket, target: &SockAddr, path: &Path, ty: Type) -> Result<()> {
    match sock.bind(target) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && is_stale_socket(path, ty) => {
            std::fs::remove_file(path).map_err(|e| Error::io("removing stale socket file", e))?;
            sock.bind(target).map_err(|e| Error::io("bind", e))
        }
        other => other.map_err(|e| Error::io("bind", e)),
    }
}

/// A socket file nobody answers on.
fn is_stale_socket(path: &Path, ty: Type) -> bool {
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    is_socket
        && SockAddr::unix(path).is_ok_and(|addr| {
            Socket::new(Domain::UNIX, ty, None)
                .and_then(|probe| probe.connect(&addr))
                .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
        })
}

/// Connects a non-blocking stream socket, trying each resolved address in turn until one
/// answers, all within `deadline`. Returns the socket and the address it reached, as text.
pub(crate) fn connect(addr: &Addr, deadline: Deadline) -> Result<(Socket, String)> {
    let mut last = Error::Addr("no address".into());
    for target in addr.sock_addrs()? {
        let text = addr::format(&target);
        match connect_one(&target, &text, deadline) {
            Ok(sock) => return Ok((sock, text)),
            // The time is spent: the next address would time out at once.
            Err(e @ Error::Timeout(_)) => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn connect_one(target: &SockAddr, text: &str, deadline: Deadline) -> Result<Socket> {
    let sock = Socket::new(target.domain(), Type::STREAM, None).map_err(|e| Error::io("socket", e))?;
    sock.set_nonblocking(true).map_err(|e| Error::io("O_NONBLOCK", e))?;
    let timed_out = || format!("could not connect to {text} within {}", deadline.limit_text());
    loop {
        match sock.connect(target) {
            Ok(()) => return Ok(sock),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => break,
            // A Unix listener's backlog is full: there is nothing to poll for, so try again
            // shortly (still within the deadline).
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => deadline.nap(timed_out)?,
            Err(e) => return Err(connect_error(text, e)),
        }
    }
    deadline.wait(sock.as_raw_fd(), libc::POLLOUT, timed_out)?;
    match sock.take_error() {
        Ok(None) => Ok(sock),
        Ok(Some(e)) | Err(e) => Err(connect_error(text, e)),
    }
}

/// A failed connect (or a datagram refused), named by the address `text`, without errno text
/// for the failures a user can act on.
pub(crate) fn connect_error(text: &str, e: io::Error) -> Error {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => Error::Refused(format!("connection refused by {text}").into()),
        // A Unix path with no socket behind it is a refusal too.
        K::NotFound => Error::Refused(format!("no socket at {text}").into()),
        K::TimedOut => Error::Timeout(format!("no answer from {text}").into()),
        K::ConnectionReset | K::ConnectionAborted => Error::Reset(format!("{text} reset the connection").into()),
        _ => Error::io("connect", e),
    }
}
