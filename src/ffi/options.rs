//! `ns_options`: the opaque builder of server and client settings, copied when used.

use std::ffi::{c_int, c_void};
use std::time::Duration;

use super::conn::ns_conn;
use super::result::code;
use crate::framing::{Delimiter, LengthField};
use crate::{ClientLoop, Error, Framing, Options};

/// Called on the connection's loop thread when a connection is accepted (or a client
/// connection starts), before any data. `conn` is borrowed for the call only.
pub type ns_open_cb = Option<extern "C" fn(conn: *mut ns_conn, user: *mut c_void)>;

/// Called on the connection's loop thread with data: each chunk as read (`NS_FRAMING_RAW`), or
/// one whole message without its framing (`NS_FRAMING_LINE`, `NS_FRAMING_LEN32`). `data` is never
/// NULL; it is owned by netsock and valid until the callback returns: copy what you keep.
/// `conn` is borrowed for the call only.
pub type ns_data_cb = Option<extern "C" fn(conn: *mut ns_conn, data: *const u8, len: usize, user: *mut c_void)>;

/// Called on the connection's loop thread when its queued output, after rising above the
/// low-water mark (a quarter of the max write buffer; reading pauses there), fell below it:
/// reading resumes, and it is a good moment to produce more output.
pub type ns_drain_cb = Option<extern "C" fn(conn: *mut ns_conn, user: *mut c_void)>;

/// Called on the connection's loop thread when the timer set with `ns_conn_set_timer()` fires.
/// `conn` is borrowed for the call only; set the timer again here for a periodic one.
pub type ns_conn_timer_cb = Option<extern "C" fn(conn: *mut ns_conn, user: *mut c_void)>;

/// Called on the connection's loop thread exactly once per opened connection when it ends.
/// `reason` is `NS_OK` for an orderly close (the peer's end-of-stream, or `ns_conn_close()` after
/// the queue was flushed); `NS_ERR_RESET` or `NS_ERR_IO` for a failure; `NS_ERR_TIMEOUT` for the
/// idle timeout; `NS_ERR_LIMIT` for a message over the frame limit; `NS_ERR_PANIC` for a caught
/// panic; `NS_ERR_STOPPED` when the server stops or the client is freed; with TLS
/// (`ns_options_set_tls()`), `NS_ERR_TLS` for an alert or a failed handshake or verification
/// (a client's; a server's connection that never opened gets no callback), and `NS_ERR_CLOSED`
/// for a TCP end without close_notify. Sends from here return `NS_ERR_CLOSED`.
pub type ns_close_cb = Option<extern "C" fn(conn: *mut ns_conn, reason: c_int, user: *mut c_void)>;

/// Ways to cut a TCP byte stream into messages (`ns_options_set_framing()`).
#[repr(C)]
pub enum ns_framing {
    /// No framing (the default): `on_data` gets bytes as they were read.
    NS_FRAMING_RAW = 0,
    /// Lines: each message ends with "\n" (a "\r" before it is dropped too). When the peer
    /// closes, a final line without its "\n" is a line too (as Python's readline and Go's
    /// bufio.Scanner read it); over `max_frame` it closes with `NS_ERR_LIMIT`.
    NS_FRAMING_LINE = 1,
    /// A 4-byte big-endian length, then that many bytes. A message cut short by the peer's
    /// close ends the connection with `NS_ERR_CLOSED` (not `NS_OK`).
    NS_FRAMING_LEN32 = 2,
    /// Messages ending with the delimiter of `ns_options_set_delimiter()` (default "\r\n"),
    /// delivered without it; sending a frame appends it, and a message containing it is
    /// `NS_ERR_INVALID`. A final message without it at the peer's close is a message.
    NS_FRAMING_DELIMITER = 3,
    /// Frames whose length is a field of their header (`ns_options_set_length_field()`;
    /// default a 4-byte big-endian length at offset 0 counting what follows it), delivered
    /// whole, header included. A frame cut short by the peer's close is `NS_ERR_CLOSED`.
    NS_FRAMING_LENGTH_FIELD = 4,
    /// Messages of exactly `ns_options_set_fixed_size()` bytes (which must be set). A message
    /// cut short by the peer's close is `NS_ERR_CLOSED`.
    NS_FRAMING_FIXED = 5,
}

/// The settings of the framings that take some, kept apart from the choice of framing so
/// that they may be set in either order.
#[derive(Clone, Copy)]
pub(crate) struct FramingParams {
    delimiter: Delimiter,
    field: LengthField,
    fixed: usize,
}

impl Default for FramingParams {
    fn default() -> Self {
        FramingParams {
            delimiter: Delimiter::new(b"\r\n").expect("a valid delimiter"),
            field: LengthField::new(0, 4, false, 0).expect("a valid length field"),
            fixed: 0,
        }
    }
}

/// A framing code from C, checked, with the settings it takes.
pub(crate) fn framing(code: c_int, params: &FramingParams) -> crate::Result<Framing> {
    match code {
        0 => Ok(Framing::Raw),
        1 => Ok(Framing::Line),
        2 => Ok(Framing::Len32),
        3 => Ok(Framing::Delimiter(params.delimiter)),
        4 => Ok(Framing::LengthField(params.field)),
        5 => Ok(Framing::Fixed(params.fixed)),
        _ => Err(Error::Invalid(format!("{code} is not an ns_framing value").into())),
    }
}

/// Settings of servers and client connections. Create with `ns_options_new()`, free with
/// `ns_options_free()`. A server or client copies them when it starts, so they may be freed or
/// reused right after. Not thread-safe: use one `ns_options` from one thread at a time.
/// Passing NULL where options are taken means all defaults.
#[derive(Clone, Default)]
pub struct ns_options {
    pub(crate) opts: Options,
    /// The `ns_framing` chosen, and the settings of the framings that take some.
    framing_code: c_int,
    framing_params: FramingParams,
    pub(crate) on_open: ns_open_cb,
    pub(crate) on_drain: ns_drain_cb,
    pub(crate) on_timer: ns_conn_timer_cb,
    pub(crate) on_close: ns_close_cb,
    pub(crate) client_loop: Option<ClientLoop>,
}

/// A new options object with every default: 1 loop thread, raw framing, 1 MiB max frame,
/// 8 MiB max write buffer per connection, no connection limit, no idle timeout, backlog 4096,
/// TCP_NODELAY on, no keep-alive, no drain on stop, 10 s connect timeout, no callbacks but the
/// data callback given to the serve or connect call. Free it with `ns_options_free()`. NULL
/// only if memory ran out.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_new() -> *mut ns_options {
    ffi_panic_boundary! {
        Box::into_raw(Box::default())
    }
}

/// Frees options made by `ns_options_new()`. NULL is a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_free(opts: *mut ns_options) {
    ffi_panic_boundary! {
        super::boundary::free_box(opts)
    }
}

/// Applies `set` to the options behind `opts`: `NS_ERR_INVALID` if it is NULL or `set` refuses.
fn update(opts: *mut ns_options, set: impl FnOnce(&mut ns_options) -> crate::Result<()>) -> c_int {
    match unsafe { opts.as_mut() } {
        Some(o) => code(set(o)),
        None => code(Err(Error::Invalid("`opts` is NULL".into()))),
    }
}

fn millis(ms: u32) -> Option<Duration> {
    (ms != 0).then(|| Duration::from_millis(ms.into()))
}

/// Sets the callback for opened connections; NULL clears it.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_on_open(opts: *mut ns_options, cb: ns_open_cb) -> c_int {
    ffi_panic_boundary! { update(opts, |o| {
        o.on_open = cb;
        Ok(())
    }) }
}

/// Sets the callback for ended connections; NULL clears it.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_on_close(opts: *mut ns_options, cb: ns_close_cb) -> c_int {
    ffi_panic_boundary! { update(opts, |o| {
        o.on_close = cb;
        Ok(())
    }) }
}

/// Sets the callback for drained output queues (see `ns_drain_cb`); NULL clears it.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_on_drain(opts: *mut ns_options, cb: ns_drain_cb) -> c_int {
    ffi_panic_boundary! { update(opts, |o| {
        o.on_drain = cb;
        Ok(())
    }) }
}

/// Makes a client (`ns_tcp_connect()` or `ns_tcp_connect_async()`) connect again whenever it
/// closes for any reason but `ns_client_close()` or `ns_client_free()`: after `min_ms`, then
/// after twice as long for each failed attempt, up to `max_ms`, each wait shortened by up to a
/// quarter at random. Every connection gets `on_open`, and `on_close` when it ends (a failed
/// attempt too); the client handle and its id stay the same; sends while it is disconnected
/// return `NS_ERR_CLOSED`. `0, 0` (the default) never reconnects; `NS_ERR_INVALID` for `min_ms`
/// 0 with `max_ms` not 0, or `max_ms` under `min_ms`.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_reconnect(opts: *mut ns_options, min_ms: u32, max_ms: u32) -> c_int {
    ffi_panic_boundary! { update(opts, |o| {
        o.opts.reconnect = match (min_ms, max_ms) {
            (0, 0) => None,
            (min, max) if min == 0 || max < min => {
                return Err(Error::Invalid(format!("reconnect waits {min_ms} to {max_ms} ms: need 0 < min <= max").into()))
            }
            (min, max) => Some((Duration::from_millis(min.into()), Duration::from_millis(max.into()))),
        };
        Ok(())
    }) }
}

/// Sets the callback for a connection's timer (`ns_conn_set_timer()`); NULL clears it.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_on_timer(opts: *mut ns_options, cb: ns_conn_timer_cb) -> c_int {
    ffi_panic_boundary! { update(opts, |o| {
        o.on_timer = cb;
        Ok(())
    }) }
}

/// Sets the number of loop threads of a server (or of an `ns_loop`): 0 means one per CPU the
/// process may run on (its affinity mask and CPU quota), at most 256. Loops sharing a core take
/// turns (each lets the others run after 200 us) and cost a few percent more CPU per message
/// than one loop, as any second thread does: give each loop a core of its own. All callbacks of
/// one connection run on one thread, in order; callbacks of different connections (and
/// datagrams of a UDP server) run on several threads at once, with the same `user` pointer.
/// Connections are spread over the threads as they are accepted.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_threads(opts: *mut ns_options, threads: usize) -> c_int {
    ffi_panic_boundary! {
        update(opts, |o| match threads {
            0..=256 => {
                o.opts.threads = threads;
                Ok(())
            }
            _ => Err(Error::Invalid("at most 256 loop threads".into())),
        })
    }
}

/// With `on` non-zero, a server started with these options runs its first loop inside
/// `ns_server_wait()`, on the thread that calls it, instead of on a thread of its own (like
/// `uv_run`): a one-loop server then adds no thread to the process, and its callbacks run on
/// the thread that waits. Until that call, connections wait in the listen backlog and
/// datagrams in the socket buffer. Other loops (`ns_options_set_threads`) still get threads.
/// A second `ns_server_wait` from another thread waits as usual. For `ns_loop_new()` it works
/// the same with `ns_loop_run()`. Default off; clients ignore it.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_run_in_wait(opts: *mut ns_options, on: c_int) -> c_int {
    ffi_panic_boundary! { update(opts, |o| {
        o.opts.run_in_wait = on != 0;
        Ok(())
    }) }
}

/// Sets how the byte stream is cut into messages for `on_data`: one of `ns_framing`.
/// `NS_ERR_INVALID` for any other value.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_framing(opts: *mut ns_options, framing: c_int) -> c_int {
    ffi_panic_boundary! { update(opts, |o| {
        o.opts.framing = self::framing(framing, &o.framing_params)?;
        o.framing_code = framing;
        Ok(())
    }) }
}

/// Updates the framing's settings, and the framing if it is the one they belong to.
fn set_params(o: &mut ns_options, change: impl FnOnce(&mut FramingParams)) -> crate::Result<()> {
    change(&mut o.framing_params);
    o.opts.framing = framing(o.framing_code, &o.framing_params)?;
    Ok(())
}

/// Sets the delimiter of `NS_FRAMING_DELIMITER`: `len` bytes (1 to 8, copied) at `delim`, such
/// as "\r\n" for Redis, SMTP or HTTP headers. `NS_ERR_INVALID` for NULL or another length.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_delimiter(opts: *mut ns_options, delim: *const u8, len: usize) -> c_int {
    ffi_panic_boundary! {
        let delimiter = ns_try!(Delimiter::new(try_slice!(delim, len)));
        update(opts, |o| set_params(o, |p| p.delimiter = delimiter))
    }
}

/// Sets the length field of `NS_FRAMING_LENGTH_FIELD`: `field_size` bytes (1, 2, 4 or 8; 0 for
/// an unsigned LEB128 varint of at most 10 bytes) at `field_offset` from the frame's start,
/// little-endian if `little_endian` is non-zero, give a length L; the whole frame is
/// `field_offset + field_size + L + length_adjust` bytes. DNS over TCP is `(0, 2, 0, 0)`,
/// PostgreSQL `(1, 4, 0, -4)`, MQTT `(1, 0, 0, 0)`. A frame over `max_frame`, shorter than
/// its header, or with a varint over 10 bytes closes the connection with `NS_ERR_LIMIT`
/// before it is buffered. Sending a frame builds the header when `field_offset` is 0 (else
/// `NS_ERR_INVALID`: send the whole frame with `ns_conn_send()`). `NS_ERR_INVALID` for another
/// size or an offset over 1 MiB.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_length_field(
    opts: *mut ns_options,
    field_offset: usize,
    field_size: usize,
    little_endian: c_int,
    length_adjust: i64,
) -> c_int {
    ffi_panic_boundary! {
        let field = ns_try!(LengthField::new(field_offset, field_size, little_endian != 0, length_adjust));
        update(opts, |o| set_params(o, |p| p.field = field))
    }
}

/// Sets the message size of `NS_FRAMING_FIXED` (at least 1; `NS_ERR_INVALID` for 0). Sending a
/// frame of another size is `NS_ERR_INVALID`.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_fixed_size(opts: *mut ns_options, size: usize) -> c_int {
    ffi_panic_boundary! {
        if size == 0 {
            invalid!("a fixed message size of 0");
        }
        update(opts, |o| set_params(o, |p| p.fixed = size))
    }
}

/// Sets the largest message a framed connection accepts (default 1 MiB; at least 1). A bigger
/// one closes that connection with `NS_ERR_LIMIT`, having cost no more memory than the limit.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_max_frame(opts: *mut ns_options, bytes: usize) -> c_int {
    ffi_panic_boundary! {
        update(opts, |o| match bytes {
            0 => Err(Error::Invalid("the frame limit must be at least 1 byte".into())),
            _ => {
                o.opts.max_frame = bytes;
                Ok(())
            }
        })
    }
}

/// Bounds each connection's queued output (default 8 MiB; at least 1). A send that would take
/// the queue past it returns `NS_ERR_LIMIT` and queues nothing of that message; one send of any
/// size is taken when nothing is queued (the limit bounds what piles up, not one message;
/// `ns_conn_send_owned()` streams a large one without a copy). While more than
/// a quarter of it is queued, netsock stops reading from that connection until it drains, so a
/// peer that never reads cannot make the server grow. `ns_server_send()` and
/// `ns_client_send()` count the sends still waiting for the loop as queued, so they refuse
/// (`NS_ERR_LIMIT`) what would not fit instead of dropping it later; and the memory those
/// waiting sends hold (about 100 bytes more for each) is bounded by the limit or 64 KiB,
/// whichever is more.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_max_write_buffer(opts: *mut ns_options, bytes: usize) -> c_int {
    ffi_panic_boundary! {
        update(opts, |o| match bytes {
            0 => Err(Error::Invalid("the write buffer limit must be at least 1 byte".into())),
            _ => {
                o.opts.max_write_buffer = bytes;
                Ok(())
            }
        })
    }
}

/// Sets the most connections a server holds at once (0, the default: no limit). Connections
/// over it are accepted and closed at once, and counted as `rejected` in `ns_server_stats()`.
/// A connection the server closed in order counts until its socket is gone: up to 2 s more,
/// while the socket waits for the peer's end so that the last output is not lost to a reset.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_max_conns(opts: *mut ns_options, max: usize) -> c_int {
    ffi_panic_boundary! { update(opts, |o| {
        o.opts.max_conns = max;
        Ok(())
    }) }
}

/// Closes connections with no traffic in either direction for `ms` milliseconds, with
/// `NS_ERR_TIMEOUT` (0, the default: never).
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_idle_timeout_ms(opts: *mut ns_options, ms: u32) -> c_int {
    ffi_panic_boundary! { update(opts, |o| {
        o.opts.idle_timeout = millis(ms);
        Ok(())
    }) }
}

/// Sets the listen backlog of a TCP server (default 4096, which the kernel caps at
/// net.core.somaxconn; at least 1).
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_backlog(opts: *mut ns_options, backlog: c_int) -> c_int {
    ffi_panic_boundary! {
        update(opts, |o| match backlog {
            1.. => {
                o.opts.backlog = backlog;
                Ok(())
            }
            _ => Err(Error::Invalid("the backlog must be at least 1".into())),
        })
    }
}

/// Turns TCP_NODELAY on (the default: small messages leave at once) or off (Nagle's algorithm
/// merges them).
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_nodelay(opts: *mut ns_options, on: bool) -> c_int {
    ffi_panic_boundary! { update(opts, |o| {
        o.opts.nodelay = on;
        Ok(())
    }) }
}

/// Turns TCP keep-alive probes on after `idle_seconds` without traffic (0, the default: off),
/// so connections to vanished peers end with an error.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_keepalive(opts: *mut ns_options, idle_seconds: u32) -> c_int {
    ffi_panic_boundary! {
        update(opts, |o| {
            o.opts.keepalive = (idle_seconds != 0).then(|| Duration::from_secs(idle_seconds.into()));
            Ok(())
        })
    }
}

/// Sets how long `ns_server_stop()` lets a TCP server on loops of its own flush queued output
/// (0, the default: not at all; a server on a shared loop closes its connections at once). When it stops, the server stops accepting and reading; each connection closes (with
/// `NS_ERR_STOPPED`) as soon as its queue is empty, and those still sending when the time is up
/// close then.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_drain_timeout_ms(opts: *mut ns_options, ms: u32) -> c_int {
    ffi_panic_boundary! { update(opts, |o| {
        o.opts.drain_timeout = millis(ms);
        Ok(())
    }) }
}

/// Sets how long `ns_tcp_connect()` may take to connect (default 10 s; 0: no limit).
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_connect_timeout_ms(opts: *mut ns_options, ms: u32) -> c_int {
    ffi_panic_boundary! { update(opts, |o| {
        o.opts.connect_timeout = millis(ms);
        Ok(())
    }) }
}

/// With `on` non-zero, a server on an IP address ("host:port", ":port") binds one socket per
/// loop thread, each with SO_REUSEPORT: the kernel spreads new connections (or datagrams, by
/// their sender) over the loops, with no hand-off between threads, and other processes of the
/// same user started with the option may bind the same address too (all get connections;
/// each process's sockets leave the group when it frees its server). Port 0 binds the port
/// the first socket got. Ignored for "unix:" paths and for inherited sockets ("fd:",
/// "systemd:", "handoff:"). Default off: one socket, whose connections loop 0 accepts and
/// hands round the loops.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_reuseport(opts: *mut ns_options, on: c_int) -> c_int {
    ffi_panic_boundary! { update(opts, |o| {
        o.opts.reuseport = on != 0;
        Ok(())
    }) }
}

/// With `on` non-zero, every connection a TCP server accepts must start with a PROXY protocol
/// header, version 1 (text) or 2 (binary), as HAProxy (send-proxy, send-proxy-v2), nginx, Envoy
/// and cloud load balancers send it. The header is read before `on_open` and never reaches
/// `on_data`; `ns_conn_peer()` then reports the client it names (a v2 LOCAL command, a health
/// check, or v1 UNKNOWN keeps the connection's own peer). A connection whose header is
/// malformed, missing, or not whole within the connect timeout (`ns_options_set_connect_timeout_ms`)
/// is closed without `on_open` and counted in `ns_stats.proxy_rejected`. Turn it on only
/// behind a proxy that always sends the header: anyone who can reach the server directly could
/// claim any address with one (SECURITY.md). Never detected automatically. Default off;
/// clients and UDP servers ignore it.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_proxy_protocol(opts: *mut ns_options, on: c_int) -> c_int {
    ffi_panic_boundary! { update(opts, |o| {
        o.opts.proxy_protocol = on != 0;
        Ok(())
    }) }
}

/// With `workers` > 0, a TCP server's (or client's) `on_open`, `on_data`, `on_drain`,
/// `on_timer` and `on_close` run on a pool of `workers` threads of its own instead of the loop
/// thread, so a handler may block (on a file, a database, a slow computation) without stalling
/// the other connections. The callbacks of one connection still run one at a time and in order,
/// never two at once, never reordered; different connections' run in parallel, up to
/// `workers` at once. Default 0: every callback on the loop thread. At most 1024;
/// `NS_ERR_INVALID` above.
///
/// Thread rule: in these callbacks, `conn` and every `ns_conn_*` function work as on the loop
/// (for the call only); what they do reaches the loop in order (sends are accepted or refused
/// at once, as `ns_server_send()` does, and written in the order made). `ns_conn_pending()`
/// also counts bytes on their way to the loop. `ns_conn_keep()` keeps the bytes on the worker
/// side: the next `on_data` of that connection starts with them. Tasks of `ns_server_post()`
/// and `ns_client_post()` run on a worker too, in order with the connection's callbacks.
///
/// Backpressure: while a connection's callback runs, what arrives for it waits, and reading
/// from that peer pauses once `max_frame` bytes (counting 64 bytes per message) wait for a
/// worker: a connection holds at most that plus one 64 KiB read. The pool's run queue holds
/// each connection at most once. `ns_stats` counts `worker_busy` and `worker_queued`.
///
/// Closing: a connection whose events a worker is still handling is not idle (the idle
/// timeout waits), and the peer's end closes it only once the worker is done with what came
/// before (so a peer that sends a request and half-closes gets its reply).
///
/// Sharing CPUs: when the workers and the loop threads outnumber the CPUs the process may use
/// (`taskset`, a cgroup's quota), a loop whose workers have work takes its events in turns,
/// once a worker runs out of work or 1 ms passed, rather than each as it comes (on a shared
/// CPU each would cost two context switches): its input, and the workers' sends, may wait that
/// long then.
///
/// Stop and free: callbacks already running finish; after `ns_server_free()` (or
/// `ns_client_free()`) only `on_close` callbacks start (none for a connection whose `on_open`
/// had not started yet: it gets neither), and they have all returned when it returns. Called
/// inside a worker callback, it cannot wait for that one: the pool then ends by itself once
/// the last `on_close` returned. `ns_server_wait()` also waits for them, and returns
/// `NS_ERR_MISUSE` inside a worker callback. A panic in a worker callback (a Rust handler)
/// closes that connection with `NS_ERR_PANIC`; the pool keeps its threads.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_workers(opts: *mut ns_options, workers: usize) -> c_int {
    ffi_panic_boundary! {
        update(opts, |o| match workers {
            0..=crate::handles::workers::MAX_WORKERS => {
                o.opts.workers = workers;
                Ok(())
            }
            _ => Err(Error::Invalid("at most 1024 worker threads".into())),
        })
    }
}
