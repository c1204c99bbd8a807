//! Client streams that connect on the loop: a non-blocking connect to each resolved address in
//! turn within the connect timeout, then `on_open`; or `on_close` with the reason and no
//! `on_open`. A client with a reconnect policy connects again after every close it did not ask
//! for, with a backoff that doubles from `min` to `max`, with jitter.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry};
use socket2::{Domain, SockAddr, Socket, Type};

use super::cmd::stream_token;
use super::conn::{ConnState, Dialing, Phase, Service, Slot};
use super::stream::{Reconnect, Streams};
use crate::error::{Error, Result};
use crate::log::log;
use crate::socket::connect_error;

impl Streams<'_> {
    /// Starts connecting client `id` to its service's addresses, from the first.
    pub(crate) fn dial(&mut self, reg: &Registry, id: u64, svc: Arc<Service>, attempt: u32) {
        if svc.released.load(Ordering::Acquire) || svc.by_user.load(Ordering::Acquire) {
            return;
        }
        let until = self.now + svc.opts.connect_timeout.unwrap_or(Duration::MAX / 4);
        self.dial_from(
            reg,
            id,
            svc,
            Dialing {
                next: 0,
                until,
                attempt,
            },
            None,
        );
    }

    /// Tries the addresses from `dialing.next` on until one is in progress or connected; all
    /// failed: the client fails with the last reason (or `last`).
    fn dial_from(&mut self, reg: &Registry, id: u64, svc: Arc<Service>, mut dialing: Dialing, mut last: Option<Error>) {
        let addrs = svc.target.get().cloned().unwrap_or_default();
        while let Some(addr) = addrs.get(dialing.next) {
            dialing.next += 1;
            let text = crate::addr::format(addr);
            match start_connect(addr, &text) {
                Ok((sock, done)) => {
                    let key = self.conns.vacant_entry().key();
                    let fd = sock.as_raw_fd();
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) = reg.register(&mut SourceFd(&fd), stream_token(key), interest) {
                        last = Some(Error::io("epoll_ctl", e));
                        continue;
                    }
                    let slot = Slot::take(&svc, 0).expect("no limit");
                    let svc_key = self.service_key(&svc);
                    let mut st = ConnState::new(sock, id, svc_key, slot, Arc::default(), self.now);
                    st.phase = Phase::Connecting;
                    st.dialing = Some(dialing);
                    self.conns.insert(st);
                    self.ids.insert(id, key);
                    if done {
                        self.connected(key);
                    } else {
                        self.schedule(key);
                    }
                    return;
                }
                Err(e) => last = Some(e),
            }
        }
        let why = last.unwrap_or_else(|| Error::Addr("no address to connect to".into()));
        self.dial_failed(None, id, svc, dialing.attempt, why);
    }

    /// An event for a connecting stream: connected, or on to the next address.
    pub(crate) fn dialed(&mut self, reg: &Registry, key: usize) {
        let st = &mut self.conns[key];
        let failed = match st.sock.take_error() {
            Ok(None) => match st.sock.peer_addr() {
                Ok(_) => None,
                // Not connected yet (a spurious wake-up): wait for the next event.
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => return,
                Err(e) => Some(e),
            },
            Ok(Some(e)) | Err(e) => Some(e),
        };
        match failed {
            None => self.connected(key),
            Some(e) => {
                let text = st.sock.peer_addr().map(|a| crate::addr::format(&a)).unwrap_or_default();
                let why = connect_error(if text.is_empty() { "the server" } else { &text }, e);
                let (id, dialing) = (st.id, st.dialing.take().expect("a connecting stream dials"));
                let svc = self.services[st.svc].0.clone();
                let _ = reg.deregister(&mut SourceFd(&st.sock.as_raw_fd()));
                self.ids.remove(&id);
                self.remove(key);
                self.dial_from(reg, id, svc, dialing, Some(why));
            }
        }
    }

    /// The connect timeout passed on a connecting stream.
    pub(crate) fn dial_timed_out(&mut self, key: usize) {
        let st = &mut self.conns[key];
        let text = st.sock.peer_addr().map(|a| crate::addr::format(&a)).unwrap_or_default();
        let svc = self.services[st.svc].0.clone();
        let limit = svc.opts.connect_timeout.unwrap_or_default().as_millis();
        let why = Error::Timeout(format!("could not connect to the server {text} within {limit} ms").into());
        let (id, attempt) = (st.id, st.dialing.as_ref().map_or(0, |d| d.attempt));
        self.dial_failed(Some(key), id, svc, attempt, why);
    }

    /// The connection is up: it opens as an adopted one does.
    fn connected(&mut self, key: usize) {
        let st = &mut self.conns[key];
        // Closed by its owner while it connected: it never opens.
        if self.services[st.svc].0.by_user.load(Ordering::Acquire) {
            let id = st.id;
            self.ids.remove(&id);
            return self.remove(key);
        }
        let st = &mut self.conns[key];
        st.phase = Phase::Open;
        st.dialing = None;
        self.me.add_live(st.id, st.budget.clone());
        if self.start_tls(key, None) {
            return;
        }
        self.opened(key);
    }

    /// No address answered: `on_close` with `why` (there was no `on_open`), then maybe again.
    fn dial_failed(&mut self, key: Option<usize>, id: u64, svc: Arc<Service>, attempt: u32, why: Error) {
        let key = match key {
            Some(key) => key,
            // No socket of its own: a placeholder carries the connection through `on_close`.
            None => match Socket::new(Domain::UNIX, Type::STREAM, None) {
                Ok(sock) => {
                    let slot = Slot::take(&svc, 0).expect("no limit");
                    let svc_key = self.service_key(&svc);
                    let st = ConnState::new(sock, id, svc_key, slot, Arc::default(), self.now);
                    let key = self.conns.insert(st);
                    self.ids.insert(id, key);
                    key
                }
                Err(e) => {
                    log!(Error, "client {id}: {why}; and no socket for its on_close: {e}");
                    return;
                }
            },
        };
        log!(Debug, "client {id}: {why}");
        self.conns[key].phase = Phase::Open;
        self.end(key, Err(why), attempt + 1);
    }

    /// Schedules client `svc`'s next connect after a close, unless it was closed or freed by
    /// its owner, has no reconnect policy, or the loop stops.
    pub(crate) fn reconnect_later(&mut self, id: u64, svc: &Arc<Service>, attempt: u32) {
        let Some((min, max)) = svc.opts.reconnect else { return };
        if svc.released.load(Ordering::Acquire) || svc.by_user.load(Ordering::Acquire) || self.group.stopping() {
            return;
        }
        let at = self.now + backoff(min, max, attempt, id);
        self.reconnects.push(Reconnect {
            at,
            id,
            svc: svc.clone(),
            attempt,
        });
    }

    /// Connects the clients whose wait is over.
    pub(crate) fn reconnect_due(&mut self, reg: &Registry) {
        let now = self.now;
        let mut i = 0;
        while i < self.reconnects.len() {
            if self.reconnects[i].at <= now {
                let r = self.reconnects.swap_remove(i);
                self.dial(reg, r.id, r.svc, r.attempt);
            } else {
                i += 1;
            }
        }
    }

    pub(crate) fn next_reconnect(&self) -> Option<Instant> {
        self.reconnects.iter().map(|r| r.at).min()
    }
}

/// The wait before connect attempt `attempt` (0 after a connection that was up): `min`
/// doubled per failed attempt up to `max`, less up to a quarter at random, so that clients
/// of one server that went away do not all come back at the same moment.
fn backoff(min: Duration, max: Duration, attempt: u32, seed: u64) -> Duration {
    let full = min.saturating_mul(1u32 << attempt.min(20)).min(max);
    let mut x = seed ^ (attempt as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ nanos();
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    full - full / 4 * (x % 1000) as u32 / 1000
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos().into())
}

/// A non-blocking connect to `addr`: the socket, and whether it connected at once.
fn start_connect(addr: &SockAddr, text: &str) -> Result<(Socket, bool)> {
    let sock = Socket::new(addr.domain(), Type::STREAM, None).map_err(|e| Error::io("socket", e))?;
    sock.set_nonblocking(true).map_err(|e| Error::io("O_NONBLOCK", e))?;
    sock.set_cloexec(true).map_err(|e| Error::io("FD_CLOEXEC", e))?;
    match sock.connect(addr) {
        Ok(()) => Ok((sock, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok((sock, false)),
        // A Unix listener's backlog is full: a refusal, as a TCP one with a full backlog is.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            Err(Error::Refused(format!("{text} is not accepting connections").into()))
        }
        Err(e) => Err(connect_error(text, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_max_with_jitter() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(1000));
        for (attempt, full) in [(0, 100), (1, 200), (2, 400), (3, 800), (4, 1000), (40, 1000)] {
            for seed in 0..50 {
                let d = backoff(min, max, attempt, seed).as_millis();
                assert!(d <= full && d >= full * 3 / 4, "attempt {attempt}: {d} ms");
            }
        }
    }
}
