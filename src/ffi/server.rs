//! `ns_server`: TCP and UDP servers, and the adapters that call C callbacks from the loop.

use std::any::Any;
use std::ffi::{c_int, c_void};
use std::os::raw::c_char;
use std::sync::atomic::{AtomicPtr, Ordering};

use socket2::SockAddr;

use super::boundary::write_text;
use super::client::ns_loop;
use super::conn::{conn_ptr, ns_conn};
use super::options::{ns_close_cb, ns_conn_timer_cb, ns_data_cb, ns_drain_cb, ns_open_cb, ns_options};
use super::owned::{CBuf, ns_free_cb, owned_code};
use super::peer::ns_peer;
use super::result::{code, fail_static, ns_result, reason_code};
use super::stats::ns_stats;
use crate::{Conn, Responder, Server, TcpHandler, UdpHandler};

/// A running TCP or UDP server. Made by `ns_tcp_serve()` / `ns_udp_serve()`, freed by
/// `ns_server_free()`. Its functions may be called from any thread, except where a function
/// says otherwise.
pub struct ns_server {
    inner: Server,
    /// What `ns_server_loop()` lends.
    lp: ns_loop,
}

impl Drop for ns_server {
    /// Connections still closing (a free inside a callback) must not see the freed handle.
    fn drop(&mut self) {
        let handler: Option<&dyn Any> = self.inner.handler().map(|h| h as &dyn Any);
        if let Some(h) = handler.and_then(|h| h.downcast_ref::<CTcp>()) {
            h.srv.store(std::ptr::null_mut(), Ordering::Release);
        }
    }
}

impl ns_server {
    fn new(inner: Server) -> ns_server {
        let lp = ns_loop::from(inner.event_loop());
        ns_server { inner, lp }
    }
}

/// Called on a loop thread of the server for each datagram. `srv` is the server
/// `ns_udp_serve()` returned; `from` and `data` (never NULL) are owned by netsock and valid until
/// the callback returns: copy the `ns_peer` to answer later.
pub type ns_datagram_cb =
    Option<extern "C" fn(srv: *mut ns_server, from: *const ns_peer, data: *const u8, len: usize, user: *mut c_void)>;

/// The application's `user` pointer, handed back to its callbacks on the loop threads.
pub(crate) struct User(pub(crate) *mut c_void);

// SAFETY: netsock never dereferences `user`; the header tells the application which threads
// its callbacks, and so `user`, run on.
unsafe impl Send for User {}
unsafe impl Sync for User {}

/// C callbacks as a connection handler, for servers and clients alike.
pub(crate) struct CTcp {
    /// The server whose connections these are (NULL for a client's), cleared when it is freed
    /// so that no callback still to come hands out a dangling handle.
    pub(crate) srv: AtomicPtr<ns_server>,
    pub(crate) on_open: ns_open_cb,
    pub(crate) on_data: extern "C" fn(*mut ns_conn, *const u8, usize, *mut c_void),
    pub(crate) on_drain: ns_drain_cb,
    pub(crate) on_timer: ns_conn_timer_cb,
    pub(crate) on_close: ns_close_cb,
    pub(crate) user: User,
}

impl CTcp {
    pub(crate) fn new(
        on_data: extern "C" fn(*mut ns_conn, *const u8, usize, *mut c_void),
        opts: &ns_options,
        user: *mut c_void,
    ) -> CTcp {
        CTcp {
            srv: AtomicPtr::new(std::ptr::null_mut()),
            on_open: opts.on_open,
            on_data,
            on_drain: opts.on_drain,
            on_timer: opts.on_timer,
            on_close: opts.on_close,
            user: User(user),
        }
    }
}

impl TcpHandler for CTcp {
    fn on_open(&self, conn: &mut Conn<'_>) {
        if let Some(cb) = self.on_open {
            cb(conn_ptr(conn), self.user.0);
        }
    }

    fn on_data(&self, conn: &mut Conn<'_>, data: &[u8]) {
        (self.on_data)(conn_ptr(conn), data.as_ptr(), data.len(), self.user.0);
    }

    fn on_drain(&self, conn: &mut Conn<'_>) {
        if let Some(cb) = self.on_drain {
            cb(conn_ptr(conn), self.user.0);
        }
    }

    fn on_timer(&self, conn: &mut Conn<'_>) {
        if let Some(cb) = self.on_timer {
            cb(conn_ptr(conn), self.user.0);
        }
    }

    fn on_close(&self, conn: &mut Conn<'_>, reason: &crate::Result<()>) {
        if let Some(cb) = self.on_close {
            cb(conn_ptr(conn), reason_code(reason), self.user.0);
        }
    }
}

struct CUdp {
    on_datagram: extern "C" fn(*mut ns_server, *const ns_peer, *const u8, usize, *mut c_void),
    srv: *mut ns_server,
    user: User,
}

// SAFETY: `srv` is only handed back to the application's callback, and the server outlives its
// loops; `ns_udp_reply()` on it is safe from any thread.
unsafe impl Send for CUdp {}
unsafe impl Sync for CUdp {}

impl UdpHandler for CUdp {
    fn on_datagram(&self, _: &Responder<'_>, from: &SockAddr, data: &[u8]) {
        let peer = ns_peer::from(from);
        (self.on_datagram)(self.srv, &peer, data.as_ptr(), data.len(), self.user.0);
    }
}

/// Starts a TCP server on `addr` ("127.0.0.1:6666", "0.0.0.0:0", "[::1]:6666",
/// "localhost:6666", ":6666" for every interface (one dual-stack socket on "[::]", or "0.0.0.0"
/// on a host without IPv6), "[fe80::1%eth0]:6666" or "[fe80::1%2]:6666" for an IPv6 address
/// scoped to an interface (by name or index), or "unix:/path/to.sock" for a Unix stream socket;
/// port 0 lets the OS choose) and returns once it listens, with the server in `*out` (written
/// only on success). The server runs on loop threads of its own (one unless
/// `ns_options_set_threads()` says otherwise), or, with `ns_options_set_loop()`, on that loop's
/// threads beside what else runs there, until stopped; `on_data` (required) and the callbacks
/// of `opts` run there with `user` as their last argument, one at a time per loop thread. `opts` may be NULL (defaults) and is copied: free it whenever you like. Callbacks
/// may run before this returns: inside them, reach the server with `ns_conn_server()`, not
/// through `*out`. Listening sockets set SO_REUSEADDR; a stale Unix socket file (nobody
/// answering) is replaced, and the file is removed when the server is freed. `NS_ERR_ADDR` for
/// bad address text (also "256.1.1.1:80", never looked up as a name, and "::1:80", which needs
/// brackets: "[::1]:80") or a Unix path whose folder is missing, `NS_ERR_ADDR_IN_USE`,
/// `NS_ERR_INVALID` for NULL `addr`, `on_data` or `out`.
///
/// Sockets the server does not bind itself (for `ns_udp_serve()` too; the server owns the
/// descriptor from then on and closes it when freed; its type is checked: a datagram socket
/// given to `ns_tcp_serve()`, a stream socket that does not listen, or a descriptor that is no
/// IP or Unix socket is `NS_ERR_ADDR`, and the descriptor is left as it was):
///  - "fd:N": descriptor N, inherited from the parent, already bound (and listening, for a
///    stream socket); made close-on-exec.
///  - "systemd:N" or "systemd:NAME": the N-th socket (from 0) systemd passed by socket
///    activation, or the one `LISTEN_FDNAMES` names NAME (FileDescriptorName= of the .socket
///    unit): as `sd_listen_fds(0)`, without libsystemd: `LISTEN_PID` must be this process,
///    `LISTEN_FDS` counts the sockets, from descriptor 3; the variables are left set (so
///    several servers may each take one); the socket is made close-on-exec.
///  - "handoff:/path": the socket(s) a running server offers with `ns_server_handoff()` at
///    the Unix socket /path ("handoff:@name" for an abstract one), waiting for the offer to
///    appear for up to the connect timeout (`ns_options_set_connect_timeout_ms`), so this
///    process may start before the old one is told to hand off. `NS_ERR_TIMEOUT` if none came.
#[unsafe(no_mangle)]
pub extern "C" fn ns_tcp_serve(
    addr: *const c_char,
    on_data: ns_data_cb,
    user: *mut c_void,
    opts: *const ns_options,
    out: *mut *mut ns_server,
) -> c_int {
    ffi_panic_boundary! {
        let addr = try_addr!(addr);
        let Some(on_data) = on_data else { invalid!("`on_data` is NULL") };
        let out = try_mut!(out);
        // SAFETY: NULL or live options, per the header's rules.
        let opts = unsafe { opts.as_ref() }.cloned().unwrap_or_default();
        let srv = Box::into_raw(Box::new(ns_server::new(ns_try!(match &opts.client_loop {
            Some(lp) => Server::tcp_on(addr, &opts.opts, lp),
            None => Server::tcp(addr, &opts.opts),
        }))));
        // Connections hand `srv` back only through `ns_conn_server()`.
        let handler = CTcp::new(on_data, &opts, user);
        handler.srv.store(srv, Ordering::Release);
        // SAFETY: just allocated, and freed by nobody else before this returns.
        let started = unsafe { &*srv }.inner.start_tcp(handler);
        if let Err(e) = started {
            // SAFETY: the loops never started, so nothing else holds `srv`.
            drop(unsafe { Box::from_raw(srv) });
            return super::result::fail(e);
        }
        *out = srv;
        ns_result::NS_OK as c_int
    }
}

/// Starts a UDP server on `addr` (as for `ns_tcp_serve()`; "unix:/path" makes a Unix datagram
/// socket) and returns once it is bound, with the server in `*out` (written only on success).
/// `on_datagram` (required) runs on a loop thread of the server for each datagram, with `user`
/// (with several threads, on several at once). Answer with `ns_udp_reply()`. `opts` may be NULL;
/// of its settings, only the thread count, `ns_options_set_run_in_wait()` and
/// `ns_options_set_loop()` (serve on that loop's threads) apply.
#[unsafe(no_mangle)]
pub extern "C" fn ns_udp_serve(
    addr: *const c_char,
    on_datagram: ns_datagram_cb,
    user: *mut c_void,
    opts: *const ns_options,
    out: *mut *mut ns_server,
) -> c_int {
    ffi_panic_boundary! {
        let addr = try_addr!(addr);
        let Some(on_datagram) = on_datagram else { invalid!("`on_datagram` is NULL") };
        let out = try_mut!(out);
        // SAFETY: NULL or live options, per the header's rules.
        let opts = unsafe { opts.as_ref() }.cloned().unwrap_or_default();
        let srv = Box::into_raw(Box::new(ns_server::new(ns_try!(match &opts.client_loop {
            Some(lp) => Server::udp_on(addr, &opts.opts, lp),
            None => Server::udp(addr, &opts.opts),
        }))));
        // SAFETY: just allocated; the loop only hands `srv` back to the callback.
        if let Err(e) = unsafe { &*srv }.inner.start_udp(CUdp { on_datagram, srv, user: User(user) }) {
            // SAFETY: the loop never started, so nothing else holds `srv`.
            drop(unsafe { Box::from_raw(srv) });
            return super::result::fail(e);
        }
        *out = srv;
        ns_result::NS_OK as c_int
    }
}

/// The port the server is bound to (the one the OS chose for port 0); 0 for a Unix-domain
/// server; `NS_ERR_INVALID` for NULL. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ns_server_port(srv: *const ns_server) -> c_int {
    ffi_panic_boundary! {
        c_int::from(try_ref!(srv).inner.port())
    }
}

/// Writes the bound address as NUL-terminated text ("127.0.0.1:40123", "[::1]:5000",
/// "[::]:6666" for ":6666", "[fe80::1%2]:80" with the scope as an index, "unix:/tmp/x.sock")
/// into `buf` of `cap` bytes. `NS_OK`; `NS_ERR_TRUNCATED` (nothing written) if it does not fit.
/// Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ns_server_addr(srv: *const ns_server, buf: *mut c_char, cap: usize) -> c_int {
    ffi_panic_boundary! {
        write_text(buf, cap, &try_ref!(srv).inner.addr_text())
    }
}

/// Asks the server to stop and returns at once: it stops accepting, and every open connection
/// gets `on_close` with `NS_ERR_STOPPED` (after flushing its output, within the drain timeout
/// if one is set). On a shared loop (`ns_options_set_loop`), only this server stops: its
/// connections close at once, and the loop goes on with the rest. Any thread, repeatable, and async-signal-safe (call it from a SIGINT
/// handler). `NS_ERR_INVALID` for NULL, recorded in `ns_last_error()` like every other
/// function's failure (without allocating, so still async-signal-safe).
#[unsafe(no_mangle)]
pub extern "C" fn ns_server_stop(srv: *mut ns_server) -> c_int {
    ffi_panic_boundary! {
        // SAFETY: NULL or a live server, per the header's rules.
        match unsafe { srv.as_ref() } {
            Some(srv) => {
                srv.inner.stop();
                ns_result::NS_OK as c_int
            }
            None => fail_static(ns_result::NS_ERR_INVALID, c"invalid argument: `srv` is NULL"),
        }
    }
}

/// Blocks until the server has stopped (after `ns_server_stop()` from a signal handler or another
/// thread) and its last callback has returned. A server on a shared loop (`ns_options_set_loop`)
/// has stopped once that loop let go of it (the loop runs on). With `ns_options_set_run_in_wait`, the first
/// call serves loop 0 on its own thread meanwhile (its callbacks run there). Any thread but the
/// server's own loop threads: from inside one of its callbacks it returns `NS_ERR_MISUSE`
/// instead of deadlocking. A callback run by this wait may free the server
/// (`ns_server_free()`): the wait then returns `NS_OK` once that loop has ended.
#[unsafe(no_mangle)]
pub extern "C" fn ns_server_wait(srv: *mut ns_server) -> c_int {
    ffi_panic_boundary! {
        // No reference to the server is held while waiting: a callback run by this wait
        // (`run_in_wait`) may free it.
        let waiter = ns_try!(try_ref!(srv).inner.waiter());
        code(waiter.wait())
    }
}

/// Stops the server, waits for its loops to end, and frees it; no callback runs after it
/// returns. NULL is a no-op. Once it is called, no callback but `on_close` starts, and
/// `ns_conn_server()` gives NULL (also in a callback already running). Called inside one of the
/// server's own callbacks, it cannot wait for the loop running that callback: the server stops,
/// the other loops are waited for, the handle is freed, and that loop ends by itself after the
/// callback returns, running only `on_close` callbacks. A thread blocked in `ns_server_wait()` on
/// it meanwhile (running loop 0 with `ns_options_set_run_in_wait`, or not) returns `NS_OK` once
/// the loops have ended: the wait holds no reference to the handle. Do not use `srv` afterwards.
#[unsafe(no_mangle)]
pub extern "C" fn ns_server_free(srv: *mut ns_server) {
    ffi_panic_boundary! {
        super::boundary::free_box(srv)
    }
}

/// Sends `len` bytes from `data` (copied) to the TCP connection `conn_id`, from any thread: the
/// loop is woken and writes them in order with the connection's other output. `NS_OK` means
/// accepted: they reach the peer unless the connection ends first (the delivery rule of the
/// preamble). `NS_ERR_CLOSED` for an id that is not open (never was, or already closed) or a
/// stopped server; `NS_ERR_INVALID` for a UDP server; `NS_ERR_LIMIT` (nothing queued) if the
/// connection has output queued on the loop or waiting for it, and these bytes would take it
/// past its write buffer limit (`ns_options_set_max_write_buffer()`): one send of any size is
/// taken when nothing waits.
#[unsafe(no_mangle)]
pub extern "C" fn ns_server_send(srv: *mut ns_server, conn_id: u64, data: *const c_void, len: usize) -> c_int {
    ffi_panic_boundary! {
        let srv = try_ref!(srv);
        code(srv.inner.send(conn_id, try_slice!(data, len)))
    }
}

/// Sends the `len` bytes at `data` to the TCP connection `conn_id` without copying them, from
/// any thread: the connection's loop writes them from `data`, in order with its other output,
/// then calls `free_fn(data, user)`.
///
/// Ownership: on `NS_OK` the buffer is lent to netsock: do not change or free it until
/// `free_fn` is called, which happens exactly once, on the connection's loop thread, after
/// the last byte is written or when the connection ends first (the bytes may then be partly
/// sent). On a TLS connection the bytes are sealed (copied, encrypted) when the loop takes
/// them, and `free_fn` runs then. Only if that loop never runs again (a `run_in_wait` loop nobody runs) is it called
/// elsewhere: on the thread that frees the last handle of the loop (`ns_server_free()`,
/// `ns_client_free()` or `ns_loop_free()`). On any other code the send was refused: `free_fn`
/// is NOT called and the buffer is still the caller's.
///
/// Refused as `ns_server_send()` is (`NS_ERR_CLOSED`, `NS_ERR_INVALID`, `NS_ERR_LIMIT`); also
/// `NS_ERR_INVALID` for NULL `free_fn` or NULL `data` with `len` > 0. One send of any size is
/// taken when nothing waits for the connection: a 1 GiB buffer streams from where it is.
#[unsafe(no_mangle)]
pub extern "C" fn ns_server_send_owned(
    srv: *mut ns_server,
    conn_id: u64,
    data: *mut c_void,
    len: usize,
    free_fn: ns_free_cb,
    user: *mut c_void,
) -> c_int {
    ffi_panic_boundary! {
        let srv = try_ref!(srv);
        let buf = ns_try!(CBuf::new(data, len, free_fn, user));
        owned_code(srv.inner.send_owned(conn_id, buf))
    }
}

/// Called on a connection's loop thread with the connection in hand (`ns_server_post()`,
/// `ns_client_post()`), or with `conn` NULL if the connection ended before the task could run
/// (so that `user` can be freed). `conn` is borrowed for the call only.
pub type ns_conn_task_cb = Option<extern "C" fn(conn: *mut ns_conn, user: *mut c_void)>;

/// The task of `ns_server_post()` and `ns_client_post()` as the core takes it.
pub(crate) fn conn_task(
    cb: extern "C" fn(*mut ns_conn, *mut c_void),
    user: *mut c_void,
) -> impl FnOnce(Option<&mut Conn<'_>>) + Send + 'static {
    let user = User(user);
    move |conn| {
        let user = user;
        cb(conn.map_or(std::ptr::null_mut(), conn_ptr), user.0)
    }
}

/// The server's loop: pass it to `ns_loop_post()` and the timer functions (they run on the
/// server's first loop thread), or to `ns_options_set_loop()` so that clients share the
/// server's loops. Borrowed: valid until `ns_server_free()`, and never to be freed with
/// `ns_loop_free()`. NULL for NULL (with `NS_ERR_INVALID`). Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ns_server_loop(srv: *const ns_server) -> *mut ns_loop {
    ffi_panic_boundary! {
        (&try_ref!(srv).lp as *const ns_loop).cast_mut()
    }
}

/// Runs `cb(conn, user)` on the loop thread of connection `conn_id`, with the connection in
/// hand: every `ns_conn_*` call works there, as in any callback (pause, resume, close, send,
/// set a timer). `NS_ERR_CLOSED` (`cb` not run) if that connection is not open now or the
/// server stopped; if it closes before the task runs, `cb(NULL, user)` runs instead, so `user`
/// can be freed. Tasks to one connection run in the order posted from one thread. With
/// `ns_options_set_workers()` the task runs on a worker instead, in order with the
/// connection's callbacks. `NS_ERR_INVALID` for NULL `srv` or `cb`, or a UDP server. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ns_server_post(srv: *mut ns_server, conn_id: u64, cb: ns_conn_task_cb, user: *mut c_void) -> c_int {
    ffi_panic_boundary! {
        let srv = try_ref!(srv);
        let Some(cb) = cb else { invalid!("`cb` is NULL") };
        code(srv.inner.post(conn_id, conn_task(cb, user)))
    }
}

/// Closes connection `conn_id` once what was queued for it (also by earlier sends from any
/// thread) is written; its `on_close` follows on its loop (`NS_OK`). `NS_ERR_CLOSED` if it is
/// not open; `NS_ERR_INVALID` for NULL or a UDP server. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ns_server_close(srv: *mut ns_server, conn_id: u64) -> c_int {
    ffi_panic_boundary! {
        code(try_ref!(srv).inner.close(conn_id))
    }
}

/// Sends one datagram of `len` bytes from `data` (copied) from the UDP server's socket to `to`
/// (an `ns_peer` netsock filled in, for a datagram or by `ns_peer_parse()`, or a copy of one).
/// Any thread, inside or outside the callback. Inside the server's callback, a datagram of up
/// to 8 KiB is queued and leaves, in order, with the other replies to the batch of datagrams
/// that callback belongs to (one `sendmmsg`), before the loop waits again; if the kernel then
/// refuses it (a full send buffer, a Unix peer gone) it is lost, as UDP may lose it, and
/// logged. Elsewhere, and for larger datagrams, it is sent at once: `NS_ERR_LIMIT` if it is too
/// large or the socket's buffer is full. `NS_ERR_ADDR` for an unnamed Unix peer (it cannot be
/// answered); `NS_ERR_CLOSED` once the server stopped; `NS_ERR_INVALID` for a TCP server or a
/// `to` netsock did not fill in.
#[unsafe(no_mangle)]
pub extern "C" fn ns_udp_reply(srv: *mut ns_server, to: *const ns_peer, data: *const c_void, len: usize) -> c_int {
    ffi_panic_boundary! {
        let srv = try_ref!(srv);
        let to = ns_try!(SockAddr::try_from(try_ref!(to)));
        code(srv.inner.reply(&to, try_slice!(data, len)))
    }
}

/// Like `ns_server_send()`, but sends `len` bytes from `data` as one message in the server's
/// framing, framed as `ns_conn_send_frame()` frames it (`NS_ERR_INVALID`, nothing queued, for a
/// message the framing cannot carry).
#[unsafe(no_mangle)]
pub extern "C" fn ns_server_send_frame(srv: *mut ns_server, conn_id: u64, data: *const c_void, len: usize) -> c_int {
    ffi_panic_boundary! {
        let srv = try_ref!(srv);
        code(srv.inner.send_frame(conn_id, try_slice!(data, len)))
    }
}

/// Hands the server's listening socket(s) to a new process, for a restart that refuses no
/// connection (the hot-restart pattern of nginx, HAProxy and Envoy). It listens at the Unix
/// socket `unix_path` ("@name": an abstract one; a stale socket file there is replaced) and
/// waits up to `timeout_ms` for a process of the same user (or root) started with the address
/// "handoff:<unix_path>" to connect; passes it every socket of the server (`SCM_RIGHTS`); once
/// that process holds them, stops accepting (connections waiting in the backlog are the new
/// process's: the sockets stay open there), waits up to the drain timeout
/// (`ns_options_set_drain_timeout_ms`) for its own connections to end by themselves, then stops
/// as `ns_server_stop()` does (flushing within the drain timeout) and returns `NS_OK` once its
/// loops have ended: free the server and exit. A Unix socket file of the server is left for
/// the new process. `NS_ERR_TIMEOUT` if no process took the sockets in time: the server serves
/// on. `NS_ERR_MISUSE` before it started or inside one of its callbacks; `NS_ERR_INVALID` for
/// NULL; `NS_ERR_ADDR` for a bad path. Blocks; any thread but the server's loop threads.
#[unsafe(no_mangle)]
pub extern "C" fn ns_server_handoff(srv: *mut ns_server, unix_path: *const c_char, timeout_ms: u32) -> c_int {
    ffi_panic_boundary! {
        let path = try_addr!(unix_path);
        let srv = try_ref!(srv);
        code(srv.inner.handoff(path, std::time::Duration::from_millis(timeout_ms.into())))
    }
}

/// Counters of a server since it started (see `ns_stats`). Set `out->size = sizeof(ns_stats)`
/// first: netsock fills in that many bytes at most, so programs built against an older, smaller
/// `ns_stats` keep working, and sets `out->size` to what it filled in (whole fields only).
/// `NS_ERR_INVALID` for NULL or a `size` under 8 (unset). Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ns_server_stats(srv: *const ns_server, out: *mut ns_stats) -> c_int {
    ffi_panic_boundary! {
        let srv = try_ref!(srv);
        code(super::stats::fill(out, &srv.inner.stats()))
    }
}
