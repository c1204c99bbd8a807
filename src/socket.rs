//! Creating sockets from parsed addresses: listening, binding and connecting, with the options a
//! server wants (SO_REUSEADDR on stream listeners, close-on-exec, non-blocking) set in one place.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
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
    let (sock, target, unlink) = match addr {
        Addr::Unix(path) => {
            let target = first(addr)?;
            let sock = server_socket(target.domain(), ty).map_err(|e| Error::io("socket", e))?;
            bind_unix(&sock, &target, path, ty)?;
            (sock, target, Some(path.clone()))
        }
        Addr::Inet(_) => {
            let target = first(addr)?;
            let sock = server_socket(target.domain(), ty).map_err(|e| Error::io("socket", e))?;
            sock.bind(&target).map_err(|e| Error::io("bind", e))?;
            (sock, target, None)
        }
        Addr::AnyHost(port) => {
            let (sock, target) = bind_any_host(*port, ty)?;
            (sock, target, None)
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

/// The first address of `addr`: a server binds one.
fn first(addr: &Addr) -> Result<SockAddr> {
    addr.sock_addrs()?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Addr("no address".into()))
}

/// A socket for a server: stream sockets on IP reuse the address, so a restarted server need
/// not wait out the old one's TIME_WAIT connections.
fn server_socket(domain: Domain, ty: Type) -> io::Result<Socket> {
    let sock = Socket::new(domain, ty, None)?;
    if ty == Type::STREAM && domain != Domain::UNIX {
        sock.set_reuse_address(true)?;
    }
    Ok(sock)
}

/// Binds `:port` on every interface: one dual-stack socket on `[::]` (IPv4 peers arrive as
/// mapped addresses) where the host has IPv6, else `0.0.0.0`.
fn bind_any_host(port: u16, ty: Type) -> Result<(Socket, SockAddr)> {
    let v6 = SockAddr::from(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)));
    let dual_stack = server_socket(Domain::IPV6, ty).and_then(|sock| {
        // Off by default on Linux, but a sysctl (net.ipv6.bindv6only) can turn it on.
        sock.set_only_v6(false)?;
        sock.bind(&v6)?;
        Ok(sock)
    });
    match dual_stack {
        Ok(sock) => return Ok((sock, v6)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)) => {}
        Err(e) => return Err(Error::io("bind", e)),
    }
    let v4 = SockAddr::from(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    let sock = server_socket(Domain::IPV4, ty).map_err(|e| Error::io("socket", e))?;
    sock.bind(&v4).map_err(|e| Error::io("bind", e))?;
    Ok((sock, v4))
}

/// Binds a Unix socket path, replacing a stale socket file left by a dead server but never one
/// that a live server still answers on.
fn bind_unix(sock: &Socket, target: &SockAddr, path: &Path, ty: Type) -> Result<()> {
    let bound = match sock.bind(target) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && is_stale_socket(path, ty) => {
            std::fs::remove_file(path).map_err(|e| Error::io("removing stale socket file", e))?;
            sock.bind(target)
        }
        other => other,
    };
    bound.map_err(|e| match e.kind() {
        // What a bind does not find is a folder on the way: name the path, not just ENOENT.
        io::ErrorKind::NotFound => Error::Addr(format!("no folder for unix socket {path:?}").into()),
        _ => Error::io("bind", e),
    })
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
        not_port_0(&target)?;
        let sock = Socket::new(target.domain(), Type::STREAM, None).map_err(|e| Error::io("socket", e))?;
        let res = match time_left(deadline, "connecting")? {
            Some(left) => sock.connect_timeout(&target, left),
            None => sock.connect(&target),
        };
        match res {
            Ok(()) => return Ok(sock),
            Err(e) => last = connect_error("connect", &target, e),
        }
    }
    Err(last)
}

/// Refuses port 0 as a client's destination: to a server it means "any free port", and no
/// peer can be reached there (the kernel answers with a refusal or EINVAL, which would mislead).
pub(crate) fn not_port_0(target: &SockAddr) -> Result<()> {
    match target.as_socket() {
        Some(inet) if inet.port() == 0 => Err(Error::Addr(
            format!("port 0 cannot be reached ({inet}): only a server uses it, to get any free port").into(),
        )),
        _ => Ok(()),
    }
}

/// Like [`Error::io`], but a Unix path with no socket behind it is a refusal too, naming the path.
pub(crate) fn connect_error(context: &'static str, target: &SockAddr, e: io::Error) -> Error {
    match target.as_pathname() {
        Some(path) if e.kind() == io::ErrorKind::NotFound => {
            Error::Refused(format!("{context}: no socket at {path:?}").into())
        }
        _ => Error::io(context, e),
    }
}
