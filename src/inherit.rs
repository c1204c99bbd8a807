//! Server sockets this process did not bind: `fd:N`, a descriptor inherited from the parent,
//! and `systemd:N` or `systemd:NAME`, one passed by systemd socket activation. Either is checked
//! before it is served (a socket at all, of the server's type, of an IP or Unix family, and
//! listening or bound), so that a wrong descriptor is a clean `Addr` error, not a loop polling
//! something it cannot serve.
//!
//! Socket activation follows `sd_listen_fds(0)` without linking libsystemd: `LISTEN_PID` must be
//! this process (a child that inherited the variables is not meant), `LISTEN_FDS` counts the
//! descriptors, which start at 3, and `LISTEN_FDNAMES` names them, separated by ':'. The
//! variables are left set, so that several servers of the process can each take one; the
//! descriptor taken is made close-on-exec, as `sd_listen_fds` makes them all.

use std::os::fd::{FromRawFd, RawFd};

use socket2::{Socket, Type};

use crate::error::{Error, Result};
use crate::socket::Bound;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// The descriptor that `fd:N` names.
pub(crate) fn parse_fd(n: &str) -> Result<RawFd> {
    let ok = !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| n.parse().ok())
        .flatten()
        .ok_or_else(|| Error::Addr(format!("\"fd:{n}\": a descriptor number is 0 to 999999999").into()))
}

/// The descriptor that `systemd:N` or `systemd:NAME` names, read from the environment as
/// `env` gives it, for the process `pid`.
pub(crate) fn systemd_fd(spec: &str, env: impl Fn(&str) -> Option<String>, pid: u32) -> Result<RawFd> {
    let bad = |why: String| Error::Addr(format!("\"systemd:{spec}\": {why}").into());
    let listen_pid = env("LISTEN_PID").ok_or_else(|| bad("LISTEN_PID is not set (not socket-activated)".into()))?;
    if listen_pid.trim().parse::<u32>().ok() != Some(pid) {
        return Err(bad(format!(
            "LISTEN_PID={listen_pid} is not this process ({pid}): the sockets were passed to another"
        )));
    }
    let count: usize = env("LISTEN_FDS")
        .and_then(|n| n.trim().parse().ok())
        .filter(|&n| n <= 4096)
        .ok_or_else(|| bad("LISTEN_FDS is not set to a count".into()))?;
    let index = match spec.parse::<usize>() {
        Ok(i) if spec.bytes().all(|b| b.is_ascii_digit()) => i,
        _ => {
            if spec.is_empty() {
                return Err(bad("no index or name".into()));
            }
            let names = env("LISTEN_FDNAMES").unwrap_or_default();
            names
                .split(':')
                .position(|name| name == spec)
                .ok_or_else(|| bad(format!("no socket of that name in LISTEN_FDNAMES={names:?}")))?
        }
    };
    if index >= count {
        return Err(bad(format!("LISTEN_FDS={count}: no socket {index}")));
    }
    Ok(LISTEN_FDS_START + index as RawFd)
}

/// Takes descriptor `fd` to serve as a socket of type `kind`, once it passed the checks; a
/// descriptor that fails them is left open and untouched. `what` names it in errors.
pub(crate) fn take(fd: RawFd, kind: Type, what: &str) -> Result<Bound> {
    check(fd, kind, what)?;
    // SAFETY: `fd` is an open socket (getsockopt just answered on it). Not owned until it is
    // set up: a failure before leaves it open, as the caller gave it.
    let sock = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) });
    sock.set_cloexec(true).map_err(|e| Error::io("FD_CLOEXEC", e))?;
    sock.set_nonblocking(true).map_err(|e| Error::io("O_NONBLOCK", e))?;
    // From here the server owns it, and closes it when it is done.
    Bound::adopted(std::mem::ManuallyDrop::into_inner(sock))
}

/// Whether `fd` is a socket a server of type `kind` can serve.
pub(crate) fn check(fd: RawFd, kind: Type, what: &str) -> Result<()> {
    let bad = |why: &str| Error::Addr(format!("{what}: {why}").into());
    let ty = sockopt(fd, libc::SO_TYPE).map_err(|e| match e.raw_os_error() {
        Some(libc::EBADF) => bad("no such descriptor"),
        Some(libc::ENOTSOCK) => bad("not a socket"),
        _ => Error::io("getsockopt", e),
    })?;
    let domain = sockopt(fd, libc::SO_DOMAIN).map_err(|e| Error::io("getsockopt", e))?;
    if !matches!(domain, libc::AF_INET | libc::AF_INET6 | libc::AF_UNIX) {
        return Err(bad("not an IPv4, IPv6 or Unix socket"));
    }
    let stream = kind == Type::STREAM;
    match (stream, ty) {
        (true, libc::SOCK_STREAM) => {
            if sockopt(fd, libc::SO_ACCEPTCONN).map_err(|e| Error::io("getsockopt", e))? == 0 {
                return Err(bad("a stream socket that is not listening"));
            }
        }
        (false, libc::SOCK_DGRAM) => {
            // SAFETY: `fd` is a socket; the borrowed `Socket` is forgotten, never closed.
            let sock = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) });
            let local = sock.local_addr().map_err(|e| Error::io("getsockname", e))?;
            let unbound = local.as_socket().is_some_and(|a| a.port() == 0)
                || (local.is_unix() && local.as_pathname().is_none() && local.as_abstract_namespace().is_none());
            if unbound {
                return Err(bad("a datagram socket that is not bound"));
            }
        }
        (true, _) => {
            return Err(bad(
                "not a stream socket (a TCP server needs a listening stream socket)",
            ));
        }
        (false, _) => {
            return Err(bad(
                "not a datagram socket (a UDP server needs a bound datagram socket)",
            ));
        }
    }
    Ok(())
}

/// An integer socket option of `fd`.
fn sockopt(fd: RawFd, opt: libc::c_int) -> std::io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writing, and `len` is `value`'s size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(value)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::os::fd::AsRawFd;

    use socket2::{Domain, SockAddr};

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn systemd_follows_sd_listen_fds() {
        let vars = env(&[
            ("LISTEN_PID", "42"),
            ("LISTEN_FDS", "2"),
            ("LISTEN_FDNAMES", "web:admin"),
        ]);
        assert_eq!(systemd_fd("0", &vars, 42).unwrap(), 3);
        assert_eq!(systemd_fd("1", &vars, 42).unwrap(), 4);
        assert_eq!(systemd_fd("admin", &vars, 42).unwrap(), 4);
        assert_eq!(systemd_fd("web", &vars, 42).unwrap(), 3);
        for (spec, pid, why) in [
            ("2", 42, "no socket 2"),
            ("other", 42, "no socket of that name"),
            ("0", 43, "not this process"),
            ("", 42, "no index or name"),
        ] {
            let e = systemd_fd(spec, &vars, pid).unwrap_err();
            assert!(
                matches!(e, Error::Addr(_)) && e.to_string().contains(why),
                "{spec}: {e}"
            );
        }
        let e = systemd_fd("0", env(&[]), 42).unwrap_err();
        assert!(e.to_string().contains("LISTEN_PID is not set"), "{e}");
        let e = systemd_fd("0", env(&[("LISTEN_PID", "42")]), 42).unwrap_err();
        assert!(e.to_string().contains("LISTEN_FDS"), "{e}");
    }

    #[test]
    fn fd_numbers() {
        assert_eq!(parse_fd("3").unwrap(), 3);
        for bad in ["", "-1", "x", "1234567890", " 3"] {
            assert!(matches!(parse_fd(bad), Err(Error::Addr(_))), "{bad:?}");
        }
    }

    #[test]
    fn sockets_are_checked_for_their_type() {
        let listening = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        listening
            .bind(&SockAddr::from("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap()))
            .unwrap();
        let idle = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let udp = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
        assert!(
            check(udp.as_raw_fd(), Type::DGRAM, "udp")
                .unwrap_err()
                .to_string()
                .contains("not bound")
        );
        udp.bind(&SockAddr::from("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap()))
            .unwrap();
        assert!(check(listening.as_raw_fd(), Type::STREAM, "x").is_err());
        listening.listen(1).unwrap();
        check(listening.as_raw_fd(), Type::STREAM, "x").unwrap();
        check(udp.as_raw_fd(), Type::DGRAM, "x").unwrap();
        for (fd, kind) in [
            (udp.as_raw_fd(), Type::STREAM),
            (listening.as_raw_fd(), Type::DGRAM),
            (idle.as_raw_fd(), Type::STREAM),
        ] {
            assert!(matches!(check(fd, kind, "x"), Err(Error::Addr(_))));
        }
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(
            check(file.as_raw_fd(), Type::STREAM, "x")
                .unwrap_err()
                .to_string()
                .contains("not a socket")
        );
        assert!(
            check(1 << 20, Type::STREAM, "x")
                .unwrap_err()
                .to_string()
                .contains("no such descriptor")
        );
    }
}
