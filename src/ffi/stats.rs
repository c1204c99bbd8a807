//! `ns_stats`: a server's counters as a C struct that can grow without breaking old programs.

use crate::{Error, Stats};

/// Counters of a server (`ns_server_stats()`). `size` makes the struct extensible: the caller
/// sets it to `sizeof(ns_stats)`, netsock writes no more than that and sets it to what it wrote.
/// Fields only ever get added at the end.
#[repr(C)]
#[derive(Default)]
pub struct ns_stats {
    /// In: the caller's `sizeof(ns_stats)`. Out: the bytes netsock filled in.
    pub size: u32,
    pub _reserved: u32,
    /// Connections accepted and opened.
    pub accepted: u64,
    /// Connections open now.
    pub active: u64,
    /// Connections closed, for any reason.
    pub closed: u64,
    /// Connections refused: over the connection limit (`ns_options_set_max_conns()`), or
    /// accepted and closed at once because no file descriptor was left.
    pub rejected: u64,
    /// Bytes read from connections or datagrams.
    pub bytes_in: u64,
    /// Bytes written to connections.
    pub bytes_out: u64,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent with `ns_udp_reply()`.
    pub datagrams_out: u64,
    /// Connections closed for a message over the frame limit.
    pub frames_too_large: u64,
    /// Connections closed by the idle timeout.
    pub timeouts: u64,
    /// Connections closed without `on_open` because they did not start with a valid PROXY
    /// protocol header within the connect timeout (`ns_options_set_proxy_protocol()`): a
    /// malformed header, none, or the peer's close before it.
    pub proxy_rejected: u64,
    /// Worker callbacks running now (`ns_options_set_workers()`); 0 without workers.
    pub worker_busy: u64,
    /// Connection events (an open, a message, a drain, a timer, a close) waiting for a worker
    /// now; 0 without workers.
    pub worker_queued: u64,
    /// TLS handshakes completed (each then got `on_open`).
    pub tls_handshakes: u64,
    /// TLS connections that failed before `on_open`: a failed, refused or timed-out handshake
    /// (a server's get no callback at all; each is logged at `NS_LOG_INFO`).
    pub tls_failures: u64,
}

/// Writes `stats` into the caller's struct, no more than its `size` says.
pub(crate) fn fill(out: *mut ns_stats, stats: &Stats) -> crate::Result<()> {
    // SAFETY: checked for NULL; `size` bytes are the caller's, by the documented contract.
    let Some(size) = (unsafe { out.as_ref() }).map(|o| o.size as usize) else {
        return Err(Error::Invalid("`out` is NULL".into()));
    };
    if size < 8 {
        return Err(Error::Invalid("set out->size = sizeof(ns_stats) first".into()));
    }
    let full = ns_stats {
        size: 0,
        _reserved: 0,
        accepted: stats.accepted,
        active: stats.active,
        closed: stats.closed,
        rejected: stats.rejected,
        bytes_in: stats.bytes_in,
        bytes_out: stats.bytes_out,
        datagrams_in: stats.datagrams_in,
        datagrams_out: stats.datagrams_out,
        frames_too_large: stats.frames_too_large,
        timeouts: stats.timeouts,
        proxy_rejected: stats.proxy_rejected,
        worker_busy: stats.worker_busy,
        worker_queued: stats.worker_queued,
        tls_handshakes: stats.tls_handshakes,
        tls_failures: stats.tls_failures,
    };
    // Whole fields only: a size that ends inside a counter leaves that counter out.
    let n = size.min(size_of::<ns_stats>()) / 8 * 8;
    // SAFETY: `n` bytes fit in both structs; the header is written last, with the real size.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&full as *const ns_stats).cast::<u8>().add(8),
            out.cast::<u8>().add(8),
            n - 8,
        );
        (*out).size = n as u32;
    }
    Ok(())
}
