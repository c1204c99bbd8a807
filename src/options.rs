//! Server and client settings. Every default is safe for a server facing the internet: memory
//! per connection is bounded, and nothing waits forever unless asked to.

use std::time::Duration;

use crate::framing::Framing;
use crate::tls_config::TlsConfig;

/// Settings of a server, a client connection, or a shared loop.
#[derive(Debug, Clone)]
pub struct Options {
    /// Loop threads of a server (or a shared client loop); 0 means one per core the process
    /// may run on.
    pub threads: usize,
    /// A server's loop 0 runs inside [`crate::Server::wait`], on the thread that calls it,
    /// instead of on a thread of its own: a one-loop server then adds no thread to the
    /// process, and its callbacks run on the caller's thread. Clients ignore it.
    pub run_in_wait: bool,
    /// How the byte stream is cut into messages for `on_data`.
    pub framing: Framing,
    /// Largest message a framed connection accepts; a bigger one closes it with `Limit`.
    pub max_frame: usize,
    /// Bound on a connection's queued output: a send that would pass it fails with `Limit`.
    pub max_write_buffer: usize,
    /// Most connections a server holds at once; more are accepted and closed at once. 0: no limit.
    pub max_conns: usize,
    /// A connection with no traffic for this long is closed with `Timeout`.
    pub idle_timeout: Option<Duration>,
    /// Listen backlog.
    pub backlog: i32,
    /// TCP_NODELAY on connections (small messages are sent at once).
    pub nodelay: bool,
    /// TCP keep-alive probes after this long idle.
    pub keepalive: Option<Duration>,
    /// On stop, how long queued output may still be flushed before connections are closed.
    pub drain_timeout: Option<Duration>,
    /// How long a client connection may take to connect.
    pub connect_timeout: Option<Duration>,
    /// A client that closed for any reason but its owner's close connects again after the
    /// first wait, doubled after each failed attempt up to the second (with jitter).
    pub reconnect: Option<(Duration, Duration)>,
    /// A server binds one socket per loop thread with SO_REUSEPORT (IP addresses only): the
    /// kernel spreads connections over the loops, and other processes with the option may bind
    /// the same address.
    pub reuseport: bool,
    /// Every connection starts with a PROXY protocol header (v1 or v2) naming the real client:
    /// read before `on_open`, and required (see [`crate::proxy_protocol`]).
    pub proxy_protocol: bool,
    /// With more than 0, the connection callbacks run on a pool of this many worker threads
    /// (per server, or per client connection) instead of the loop thread, so they may block;
    /// each connection's callbacks still run one at a time, in order.
    pub workers: usize,
    /// TLS on the connections (a server's or a client's configuration, [`TlsConfig`]); the
    /// handshake must finish within `connect_timeout`, on servers too.
    pub tls: Option<TlsConfig>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            threads: 1,
            run_in_wait: false,
            framing: Framing::Raw,
            max_frame: 1 << 20,
            max_write_buffer: 8 << 20,
            max_conns: 0,
            idle_timeout: None,
            // The kernel caps it at net.core.somaxconn. A deep backlog rides out bursts of
            // connections (growing a threaded process's descriptor table can stall accept).
            backlog: 4096,
            nodelay: true,
            keepalive: None,
            drain_timeout: None,
            connect_timeout: Some(Duration::from_secs(10)),
            reconnect: None,
            reuseport: false,
            proxy_protocol: false,
            workers: 0,
            tls: None,
        }
    }
}

impl Options {
    /// The number of loop threads to run: `threads`, or for 0 one per CPU this process may use
    /// (its affinity mask and CPU quota); at most 256 (ids carry the loop's index in 8 bits).
    pub(crate) fn loop_count(&self) -> usize {
        let n = match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        n.clamp(1, 256)
    }

    /// Queued output above which a connection's reads pause until it drains.
    pub(crate) fn low_water(&self) -> usize {
        self.max_write_buffer / 4
    }
}
