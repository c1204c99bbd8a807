//! Creating sockets from parsed addresses: listening, binding and connecting, with the options a
//! server wants (SO_REUSEADDR on stream listeners, close-on-exec, non-blocking) set in one place.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::addr::{self, Addr};
use crate::deadline::Deadline;
use crate::error::{Error, Result};

/// A bound server socket. A Unix socket file it created is removed when it is dropped, unless
/// the socket was handed over to another process meanwhile ([`Bound::keep_file`]).
#[derive(Debug)]
pub struct Bound {
    pub sock: Socket,
    pub local: SockAddr,
    unlink: Mutex<Option<PathBuf>>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some(path) = crate::loop_core::lock(&self.unlink).take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Bound {
    /// A socket this process did not bind (inherited or handed over), already checked by the
    /// caller: made non-blocking; its socket file, if any, is not ours to remove.
    pub(crate) fn adopted(sock: Socket) -> Result<Bound> {
        sock.set_nonblocking(true).map_err(|e| Error::io("O_NONBLOCK", e))?;
        let local = sock.local_addr().map_err(|e| Error::io("getsockname", e))?;
        Ok(Bound {
            sock,
            local,
            unlink: Mutex::new(None),
        })
    }

    /// Another process serves this socket now: its file stays when this copy goes.
    pub(crate) fn keep_file(&self) {
        crate::loop_core::lock(&self.unlink).take();
    }
}

/// Binds a non-blocking server socket of type `ty` (stream sockets also listen, with `backlog`).
pub fn bind(addr: &Addr, ty: Type, backlog: i32) -> Result<Bound> {
    bind_with(addr, ty, backlog, false)
}

/// [`bind`], with SO_REUSEPORT on IP sockets when `reuseport` is set (several sockets, of this
/// process or of others, may then bind the same address, and the kernel spreads the peers).
pub(crate) fn bind_with(addr: &Addr, ty: Type, backlog: i32, reuseport: bool) -> Result<Bound> {
    let (sock, target, unlink) = match addr {
        Addr::Unix(path) => {
            let target = first(addr)?;
            let sock = server_socket(target.domain(), ty, false).map_err(|e| Error::io("socket", e))?;
            bind_unix(&sock, &target, path, ty)?;
            (sock, target, Some(path.clone()))
        }
        Addr::Inet(_) => {
            let target = first(addr)?;
            let sock = server_socket(target.domain(), ty, reuseport).map_err(|e| Error::io("socket", e))?;
            sock.bind(&target).map_err(|e| Error::io("bind", e))?;
            (sock, target, None)
        }
        Addr::AnyHost(port) => {
            let (sock, target) = bind_any_host(*port, ty, reuseport)?;
            (sock, target, None)
        }
    };
    // From here on a failure must still remove the file we created: `Bound` owns it.
    let mut bound = Bound {
        sock,
        local: target,
        unlink: Mutex::new(unlink),
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

/// The first address of `addr`: a server binds one, and a datagram goes to one.
pub(crate) fn first(addr: &Addr) -> Result<SockAddr> {
    addr.sock_addrs()?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Addr("no address".into()))
}

/// A socket for a server: stream sockets on IP reuse the address, so a restarted server need
/// not wait out the old one's TIME_WAIT connections; with `reuseport`, the port too.
fn server_socket(domain: Domain, ty: Type, reuseport: bool) -> io::Result<Socket> {
    let sock = Socket::new(domain, ty, None)?;
    if ty == Type::STREAM && domain != Domain::UNIX {
        sock.set_reuse_address(true)?;
    }
    if reuseport && domain != Domain::UNIX {
        sock.set_reuse_port(true)?;
    }
    Ok(sock)
}

/// Binds `:port` on every interface: one dual-stack socket on `[::]` (IPv4 peers arrive as
/// mapped addresses) where the host has IPv6, else `0.0.0.0`.
fn bind_any_host(port: u16, ty: Type, reuseport: bool) -> Result<(Socket, SockAddr)> {
    let v6 = SockAddr::from(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)));
    let dual_stack = server_socket(Domain::IPV6, ty, reuseport).and_then(|sock| {
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
    let sock = server_socket(Domain::IPV4, ty, reuseport).map_err(|e| Error::io("socket", e))?;
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

/// Connects a non-blocking stream socket, trying each resolved address in turn until one
/// answers, all within `deadline`. Returns the socket and the address it reached, as text.
pub(crate) fn connect(addr: &Addr, deadline: Deadline) -> Result<(Socket, String)> {
    let mut last = Error::Addr("no address".into());
    for target in addr.sock_addrs()? {
        not_port_0(&target)?;
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
