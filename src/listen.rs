//! Where a server's sockets come from, and which loops serve each: bound here from address
//! text (once, or once per loop with SO_REUSEPORT), inherited (`fd:N`, `systemd:N|NAME`, see
//! [`crate::inherit`]), or handed over by the process serving them before (`handoff:/path`, see
//! [`crate::handoff`]).

use std::os::fd::AsRawFd;
use std::sync::Arc;

use socket2::{Socket, Type};

use crate::addr::Addr;
use crate::deadline::Deadline;
use crate::error::Result;
use crate::options::Options;
use crate::socket::{self, Bound};
use crate::{handoff, inherit};

/// The sockets of a server of type `kind` on `text`, for `loops` loops.
pub(crate) fn sockets(text: &str, kind: Type, opts: &Options, loops: usize) -> Result<Vec<Bound>> {
    if let Some(n) = text.strip_prefix("fd:") {
        return Ok(vec![inherit::take(inherit::parse_fd(n)?, kind, text)?]);
    }
    if let Some(spec) = text.strip_prefix("systemd:") {
        let fd = inherit::systemd_fd(spec, |k| std::env::var(k).ok(), std::process::id())?;
        return Ok(vec![inherit::take(fd, kind, text)?]);
    }
    if let Some(path) = text.strip_prefix("handoff:") {
        let mut taken = handoff::take(path, Deadline::after(opts.connect_timeout))?;
        // All are checked before any is kept: on a failure the old process keeps serving.
        for fd in &taken.fds {
            inherit::check(fd.as_raw_fd(), kind, text)?;
        }
        let bound = std::mem::take(&mut taken.fds)
            .into_iter()
            .map(|fd| Bound::adopted(Socket::from(fd)))
            .collect::<Result<Vec<_>>>()?;
        taken.ack()?;
        return Ok(bound);
    }
    let addr = Addr::parse(text)?;
    // A Unix path binds once: the kernel spreads nothing over Unix sockets.
    if !opts.reuseport || matches!(addr, Addr::Unix(_)) {
        return Ok(vec![socket::bind(&addr, kind, opts.backlog)?]);
    }
    let first = socket::bind_with(&addr, kind, opts.backlog, true)?;
    // Port 0: the others bind the port the first one got.
    let port = first.local.as_socket().map_or(0, |a| a.port());
    let same = match addr {
        Addr::Inet(list) => Addr::Inet(
            list.into_iter()
                .take(1)
                .map(|mut a| {
                    a.set_port(port);
                    a
                })
                .collect(),
        ),
        Addr::AnyHost(_) => Addr::AnyHost(port),
        unix @ Addr::Unix(_) => unix,
    };
    let mut all = vec![first];
    for _ in 1..loops {
        all.push(socket::bind_with(&same, kind, opts.backlog, true)?);
    }
    Ok(all)
}

/// Which listening sockets each of `loops` loops accepts on, and whether it keeps what it
/// accepts: one socket is polled by loop 0, which hands connections round the loops (a socket
/// polled by every loop would let whichever wakes first take them all); with a socket for
/// every loop (or more: handed over from a process with more loops), each loop keeps its own,
/// spread by the kernel; fewer sockets than loops go round the first loops, which hand out.
pub(crate) fn tcp_shares(bound: &[Arc<Bound>], loops: usize) -> Vec<(Vec<Arc<Bound>>, bool)> {
    let keep = bound.len() >= loops;
    let mut shares: Vec<(Vec<Arc<Bound>>, bool)> = (0..loops).map(|_| (Vec::new(), keep)).collect();
    for (i, b) in bound.iter().enumerate() {
        shares[i % loops].0.push(b.clone());
    }
    shares
}

/// Which datagram socket each loop reads (loop index, socket): one socket is shared by every
/// loop; several go one to a loop, and loops beyond them share them in turn; sockets beyond
/// the loops (handed over from a process with more) go round the loops, so each is read.
pub(crate) fn udp_shares(bound: &[Arc<Bound>], loops: usize) -> Vec<(usize, Arc<Bound>)> {
    let mut shares: Vec<(usize, Arc<Bound>)> = (0..loops).map(|i| (i, bound[i % bound.len()].clone())).collect();
    for (j, b) in bound.iter().enumerate().skip(loops) {
        shares.push((j % loops, b.clone()));
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuseport_binds_one_port_per_loop() {
        let opts = Options {
            reuseport: true,
            ..Options::default()
        };
        let all = sockets("127.0.0.1:0", Type::STREAM, &opts, 3).unwrap();
        assert_eq!(all.len(), 3);
        let port = all[0].local.as_socket().unwrap().port();
        assert!(all.iter().all(|b| b.local.as_socket().unwrap().port() == port));
        let one = sockets("127.0.0.1:0", Type::STREAM, &Options::default(), 3).unwrap();
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn shares_cover_every_socket() {
        let opts = Options {
            reuseport: true,
            ..Options::default()
        };
        let four: Vec<Arc<Bound>> = sockets("127.0.0.1:0", Type::DGRAM, &opts, 4)
            .unwrap()
            .into_iter()
            .map(Arc::new)
            .collect();
        let tcp = tcp_shares(&four[..1], 3);
        assert_eq!(tcp.iter().map(|s| s.0.len()).collect::<Vec<_>>(), [1, 0, 0]);
        assert!(!tcp[0].1);
        let tcp = tcp_shares(&four, 2);
        assert_eq!(tcp.iter().map(|s| s.0.len()).collect::<Vec<_>>(), [2, 2]);
        assert!(tcp.iter().all(|s| s.1));
        let udp = udp_shares(&four, 2);
        assert_eq!(udp.len(), 4);
        let udp = udp_shares(&four[..1], 3);
        assert_eq!(udp.iter().map(|s| s.0).collect::<Vec<_>>(), [0, 1, 2]);
    }
}
