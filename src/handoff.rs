//! Handing a server's sockets to a new process (`handoff:`), both sides. The old process offers
//! them at a Unix socket path ([`offer`]); the new one connects there ([`take`]), receives every
//! socket in one message (`SCM_RIGHTS`), checks them, and acknowledges ([`Taken::ack`]). The
//! sockets are shared, not copied: connections waiting in their backlogs stay there for the new
//! process, so a restart refuses none as long as the old process stops accepting (and closes
//! its copies) only after the acknowledgment.
//!
//! Only a process of the same user (or root) is given the sockets (SO_PEERCRED): the path's
//! permissions alone would let any local user who can reach it take over the server's port.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Socket, Type};

use crate::addr::Addr;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::socket;

/// The message that carries the sockets starts with this.
const MAGIC: &[u8; 16] = b"netsock-handoff1";
/// What the new process answers once it holds them.
const ACK: &[u8; 2] = b"ok";
/// Naps of a millisecond between attempts to reach an offer not made yet.
const RETRY_NAPS: usize = 10;
/// At most this many sockets (a server's loops, at most 256) travel in one handoff.
const MAX_FDS: usize = 256;

/// The Unix socket address of a handoff path (`@name`: an abstract one), checked as `unix:` is.
fn unix_addr(path: &str) -> Result<Addr> {
    Addr::parse_without_lookup(&format!("unix:{path}"))?
        .ok_or_else(|| Error::Addr(format!("handoff path {path:?}").into()))
}

/// Offers `socks` at `path` until a new process of the same user takes them and acknowledges,
/// or `deadline` passes (`Timeout`; nothing was handed over). The path is bound for the offer
/// only (a stale socket file is replaced) and removed after.
pub(crate) fn offer(path: &str, socks: &[&Socket], deadline: Deadline) -> Result<()> {
    let listener = socket::bind(&unix_addr(path)?, Type::STREAM, 4)?;
    let timed_out = || {
        format!(
            "no new process took the sockets offered at {path:?} within {}",
            deadline.limit_text()
        )
    };
    loop {
        deadline.wait(listener.sock.as_raw_fd(), libc::POLLIN, timed_out)?;
        let conn = match listener.sock.accept4(libc::SOCK_CLOEXEC) {
            Ok((conn, _)) => conn,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("accept", e)),
        };
        if !same_user(&conn) {
            crate::log::log!(
                Warn,
                "handoff at {path:?}: a process of another user asked for the sockets: refused"
            );
            continue;
        }
        match hand_over(&conn, socks, deadline) {
            Ok(()) => return Ok(()),
            // That process failed before it took them: wait for another within the time left.
            Err(e @ Error::Timeout(_)) => return Err(e),
            Err(e) => crate::log::log!(Warn, "handoff at {path:?}: {e}; still offering"),
        }
    }
}

/// Sends the sockets over `conn` and waits for the acknowledgment.
fn hand_over(conn: &Socket, socks: &[&Socket], deadline: Deadline) -> Result<()> {
    let fds: Vec<RawFd> = socks.iter().map(|s| s.as_raw_fd()).collect();
    let mut head = MAGIC.to_vec();
    head.extend_from_slice(&(fds.len() as u16).to_be_bytes());
    send_fds(conn.as_raw_fd(), &head, &fds).map_err(|e| Error::io("sendmsg", e))?;
    let timed_out = || {
        format!(
            "the new process did not acknowledge the sockets within {}",
            deadline.limit_text()
        )
    };
    let mut ack = [0u8; 2];
    let mut got = 0;
    while got < ack.len() {
        deadline.wait(conn.as_raw_fd(), libc::POLLIN, timed_out)?;
        match crate::sys::recv(conn.as_raw_fd(), &mut ack[got..]) {
            Ok(0) => {
                return Err(Error::Closed(
                    "the new process went away without taking the sockets".into(),
                ));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("recv", e)),
        }
    }
    if &ack != ACK {
        return Err(Error::Closed(
            "the new process answered something else than its acknowledgment".into(),
        ));
    }
    Ok(())
}

/// Whether the peer of `conn` runs as this process's user, or as root.
fn same_user(conn: &Socket) -> bool {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writing, and `len` is `cred`'s size.
    let r = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    // SAFETY: geteuid cannot fail.
    r == 0 && (cred.uid == unsafe { libc::geteuid() } || cred.uid == 0)
}

/// The sockets received from an old process, until [`Taken::ack`] tells it they are held.
pub(crate) struct Taken {
    pub(crate) fds: Vec<OwnedFd>,
    conn: Socket,
}

impl Taken {
    /// Tells the old process that the sockets are held here: it stops accepting.
    pub(crate) fn ack(self) -> Result<()> {
        crate::sys::send(self.conn.as_raw_fd(), ACK).map_err(|e| Error::io("send", e))?;
        Ok(())
    }
}

/// Connects to the offer at `path`, waiting for it to appear until `deadline`, and receives
/// the sockets (close-on-exec).
pub(crate) fn take(path: &str, deadline: Deadline) -> Result<Taken> {
    let addr = unix_addr(path)?;
    let timed_out = || {
        format!(
            "no server offered its sockets at {path:?} within {}",
            deadline.limit_text()
        )
    };
    let conn = loop {
        match socket::connect(&addr, deadline) {
            Ok((conn, _)) => break conn,
            // Not offered yet: the old process may be told to hand off after this one started.
            Err(Error::Refused(_)) => {
                for _ in 0..RETRY_NAPS {
                    deadline.nap(timed_out)?;
                }
            }
            Err(Error::Timeout(_)) => return Err(Error::Timeout(timed_out().into())),
            Err(e) => return Err(e),
        }
    };
    let mut head = [0u8; 18];
    let fds = loop {
        deadline.wait(conn.as_raw_fd(), libc::POLLIN, timed_out)?;
        match recv_fds(conn.as_raw_fd(), &mut head) {
            Ok(got) => break got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("recvmsg", e)),
        }
    };
    let (n, fds) = fds;
    let bad = |why: &str| Error::Addr(format!("handoff at {path:?}: {why}").into());
    if n != head.len() || &head[..16] != MAGIC {
        return Err(bad("the offer is not a netsock handoff"));
    }
    let count = usize::from(u16::from_be_bytes([head[16], head[17]]));
    if count != fds.len() || count == 0 {
        return Err(bad("the offer's sockets did not all arrive"));
    }
    Ok(Taken { fds, conn })
}

/// Sends `data` with `fds` attached.
fn send_fds(fd: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut control = vec![0u8; cmsg_space(fds.len())];
    let iov = [IoSlice::new(data)];
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    // SAFETY: `control` has room for one header with `fds.len()` descriptors (CMSG_SPACE), so
    // the first header and its data lie inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of_val(fds) as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast::<RawFd>(), fds.len());
    }
    // SAFETY: `msg` points at live buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
    match n {
        n if n < 0 => Err(io::Error::last_os_error()),
        n if n as usize != data.len() => Err(io::Error::new(io::ErrorKind::WriteZero, "short handoff message")),
        _ => Ok(()),
    }
}

/// Receives into `buf` with descriptors attached (close-on-exec): the bytes read, the
/// descriptors. Descriptors that arrive are owned (closed on any failure after).
fn recv_fds(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut control = vec![0u8; cmsg_space(MAX_FDS)];
    let mut iov = [IoSliceMut::new(buf)];
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr().cast();
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    // SAFETY: `msg` points at live buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` up to `msg_controllen`; the CMSG macros walk it
    // within those bounds, and each SCM_RIGHTS payload holds whole descriptors, now ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..bytes / size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("more sockets were offered than a handoff carries"));
    }
    Ok((n as usize, fds))
}

fn cmsg_space(fds: usize) -> usize {
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE((fds * size_of::<RawFd>()) as u32) as usize }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::path::PathBuf;
    use std::time::Duration;

    use socket2::{Domain, SockAddr};

    use super::*;

    fn temp_path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("netsock-handoff-{tag}-{}", std::process::id()))
    }

    #[test]
    fn sockets_travel_and_are_acknowledged() {
        let path = temp_path("travel");
        let text = path.to_str().unwrap().to_owned();
        let a = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        a.bind(&SockAddr::from("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap()))
            .unwrap();
        a.listen(8).unwrap();
        let b = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
        let port = a.local_addr().unwrap().as_socket().unwrap().port();
        let taker = std::thread::spawn({
            let text = text.clone();
            move || {
                let taken = take(&text, Deadline::after(Some(Duration::from_secs(5)))).unwrap();
                assert_eq!(taken.fds.len(), 2);
                let got = crate::inherit::check(taken.fds[0].as_raw_fd(), Type::STREAM, "fd");
                got.unwrap();
                taken.ack().unwrap();
            }
        });
        offer(&text, &[&a, &b], Deadline::after(Some(Duration::from_secs(5)))).unwrap();
        taker.join().unwrap();
        assert!(!path.exists(), "the offer's socket file stays");
        assert_ne!(port, 0);
    }

    #[test]
    fn an_offer_nobody_takes_times_out() {
        let path = temp_path("nobody");
        let a = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let e = offer(
            path.to_str().unwrap(),
            &[&a],
            Deadline::after(Some(Duration::from_millis(50))),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e}");
        let e = take(path.to_str().unwrap(), Deadline::after(Some(Duration::from_millis(50))))
            .err()
            .unwrap();
        assert!(matches!(e, Error::Timeout(_)), "{e}");
    }
}
