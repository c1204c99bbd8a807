//! Creating sockets from parsed addresses: listening, binding and connecting, with the options a
//! server wants (SO_REUSEADDR on stream listeners, close-on-exec, non-blocking) set in one place.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::addr::Addr;
use crate::error::{Error, Result};
use crate::event_loop::time_left;

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

/// Connects a blocking stream socket, trying each resolved address until one answers.
pub fn connect(addr: &Addr, deadline: Option<Instant>) -> Result<Socket> {
    let mut last = Error::Addr("no address".into());
    for target in addr.sock_addrs()? {
        let sock = Socket::new(target.domain(), Type::STREAM, None).map_err(|e| Error::io("socket", e))?;
        let res = match time_left(deadline, "connecting")? {
            Some(left) => sock.connect_timeout(&target, left),
            None => sock.connect(&target),
        };
        match res {
            Ok(()) => return Ok(sock),
            Err(e) => last = connect_error("connect", e),
        }
    }
    Err(last)
}

/// Like [`Error::io`], but a Unix path with no socket behind it is a refusal too.
pub(crate) fn connect_error(context: &'static str, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        return Error::Refused(format!("{context}: no socket at that path").into());
    }
    Error::io(context, e)
}
