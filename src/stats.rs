//! Counters. Each loop writes its own with plain loads and stores (one writer, so no atomic
//! read-modify-write on the message path); readers on any thread sum the loops.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A counter written by one thread and read by any.
#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`; only the owning loop thread may call this.
    pub(crate) fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Adds `n` from any thread.
    pub(crate) fn add_shared(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// Takes back `n` added with [`Counter::add_shared`].
    pub(crate) fn sub_shared(&self, n: u64) {
        self.0.fetch_sub(n, Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// The counters of one loop.
#[derive(Default)]
pub(crate) struct LoopStats {
    pub(crate) opened: Counter,
    pub(crate) closed: Counter,
    pub(crate) rejected: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) datagrams_in: Counter,
    pub(crate) frames_too_large: Counter,
    pub(crate) timeouts: Counter,
    pub(crate) proxy_rejected: Counter,
    pub(crate) tls_handshakes: Counter,
    pub(crate) tls_failures: Counter,
}

/// A server's counters since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted (or, on a client loop, adopted) and opened.
    pub accepted: u64,
    /// Connections open now.
    pub active: u64,
    /// Connections closed, for any reason.
    pub closed: u64,
    /// Connections refused: over the connection limit, or for lack of file descriptors.
    pub rejected: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    /// Connections closed for a message over the frame limit.
    pub frames_too_large: u64,
    /// Connections closed by the idle timeout.
    pub timeouts: u64,
    /// Connections closed before `on_open` for want of a valid PROXY protocol header in time
    /// ([`crate::Options::proxy_protocol`]).
    pub proxy_rejected: u64,
    /// Worker callbacks running now (`Options::workers`).
    pub worker_busy: u64,
    /// Connection events waiting for a worker now.
    pub worker_queued: u64,
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// TLS connections that failed before they opened: a failed, refused or timed-out handshake.
    pub tls_failures: u64,
}

impl Stats {
    pub(crate) fn sum<'a>(loops: impl Iterator<Item = &'a LoopStats>) -> Stats {
        let mut s = Stats::default();
        for l in loops {
            s.accepted += l.opened.get();
            s.closed += l.closed.get();
            s.rejected += l.rejected.get();
            s.bytes_in += l.bytes_in.get();
            s.bytes_out += l.bytes_out.get();
            s.datagrams_in += l.datagrams_in.get();
            s.frames_too_large += l.frames_too_large.get();
            s.timeouts += l.timeouts.get();
            s.proxy_rejected += l.proxy_rejected.get();
            s.tls_handshakes += l.tls_handshakes.get();
            s.tls_failures += l.tls_failures.get();
        }
        s.active = s.accepted.saturating_sub(s.closed);
        s
    }
}
