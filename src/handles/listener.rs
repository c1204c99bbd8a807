//! A listening socket on a loop: takes pending connections off its backlog, and when the
//! process is out of descriptors, refuses them cleanly with a descriptor kept in reserve.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use socket2::Socket;

use crate::error::{Error, Result};
use crate::log::log;
use crate::socket::Bound;
use crate::stats::Counter;

pub(crate) struct Listener {
    bound: Arc<Bound>,
    /// A descriptor held in reserve, given up to refuse connections cleanly when none is left.
    spare_fd: Option<File>,
    /// Connections accepted here are served by this loop (one socket per loop, SO_REUSEPORT:
    /// the kernel spread them already), not handed round the loops.
    pub(crate) keep: bool,
}

impl Listener {
    pub(crate) fn new(bound: Arc<Bound>, keep: bool) -> Listener {
        Listener {
            bound,
            spare_fd: None,
            keep,
        }
    }

    /// Starts accepting on this loop: events for the listener come with `token`.
    pub(crate) fn register(&mut self, registry: &Registry, token: Token) -> Result<()> {
        self.spare_fd = File::open("/dev/null").ok();
        registry
            .register(&mut SourceFd(&self.bound.sock.as_raw_fd()), token, Interest::READABLE)
            .map_err(|e| Error::io("epoll_ctl", e))
    }

    pub(crate) fn deregister(&self, registry: &Registry) {
        let _ = registry.deregister(&mut SourceFd(&self.bound.sock.as_raw_fd()));
    }

    /// The next pending connection, or `None` once the backlog is empty (or accepting failed,
    /// which is logged). Connections refused for want of a descriptor count in `rejected`.
    pub(crate) fn next(&mut self, rejected: &Counter) -> Option<Socket> {
        loop {
            match self.bound.sock.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) {
                Ok((sock, _)) => return Some(sock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    match self.refuse_without_descriptors(rejected) {
                        Ok(true) => {}
                        // Linux reports EMFILE before it looks at the backlog: it was empty.
                        Ok(false) => return None,
                        Err(e) => {
                            log!(
                                Warn,
                                "accept failed: {e}; pending connections wait for a free descriptor"
                            );
                            return None;
                        }
                    }
                }
                Err(e) => {
                    log!(Warn, "accept failed: {e}");
                    return None;
                }
            }
        }
    }

    /// Out of descriptors, a pending connection can be neither served nor left in the backlog
    /// (the listener would stay ready, and the peer would wait for nothing): give up the spare
    /// descriptor, accept the connection, close it (a clean refusal, counted), take the spare
    /// back. `Ok(false)` when no connection was pending after all.
    fn refuse_without_descriptors(&mut self, rejected: &Counter) -> io::Result<bool> {
        drop(self.spare_fd.take());
        // The accepted socket is closed at once, before the spare is taken back.
        let accepted = self.bound.sock.accept4(libc::SOCK_CLOEXEC).map(drop);
        self.spare_fd = File::open("/dev/null").ok();
        match accepted {
            Ok(()) => {
                rejected.add(1);
                log!(Warn, "connection refused: out of file descriptors");
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }
}
