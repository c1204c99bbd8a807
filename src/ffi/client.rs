//! The classic blocking clients, for C.

use std::ffi::{c_int, c_void};
use std::os::raw::c_char;
use std::time::Duration;

use super::options::{self, ns_data_cb, ns_options};
use super::owned::{CBuf, ns_free_cb, owned_code};
use super::result::{code, fail, fail_static, ns_result};
use super::server::{CTcp, User, conn_task, ns_conn_task_cb};
use crate::{Client, ClientLoop, Error, client};

/// `timeout_ms` as the core takes it: 0 means no limit.
fn timeout(ms: u32) -> Option<Duration> {
    (ms != 0).then(|| Duration::from_millis(ms.into()))
}

/// Reports a reply's length: `*reply_len` (if not NULL) is written on success and on truncation.
fn finish(res: crate::Result<usize>, reply_len: *mut usize) -> c_int {
    let len = match &res {
        Ok(n) | Err(Error::Truncated(n)) => Some(*n),
        Err(_) => None,
    };
    if let (Some(len), Some(out)) = (len, unsafe { reply_len.as_mut() }) {
        *out = len;
    }
    match res {
        Ok(_) => ns_result::NS_OK as c_int,
        Err(e) => fail(e),
    }
}

/// The classic one-shot TCP client: connects to `addr` (as for `ns_tcp_serve()`; a name is
/// tried at each of its addresses, and ":6666" is this host: 127.0.0.1, then ::1), sends the
/// `len` bytes at `data`, shuts down its sending side, and reads the reply into `reply`
/// (`reply_cap` bytes) until the server closes. Blocks the calling thread (any thread) for at
/// most `timeout_ms` for the whole exchange (0 = no limit). On `NS_OK`, `*reply_len` is the
/// reply's length. `NS_ERR_TRUNCATED` if the reply outgrew `reply_cap`: `reply` holds its first
/// `reply_cap` bytes and `*reply_len` is `reply_cap`. `NS_ERR_REFUSED` if nobody listens,
/// `NS_ERR_TIMEOUT`, `NS_ERR_RESET`, `NS_ERR_ADDR` (also for port 0, which no client can
/// reach). `reply` may be NULL only if `reply_cap` is 0; `reply_len` may be NULL; `data` may be
/// NULL only if `len` is 0.
#[unsafe(no_mangle)]
pub extern "C" fn ns_tcp_send(
    addr: *const c_char,
    data: *const c_void,
    len: usize,
    reply: *mut c_void,
    reply_cap: usize,
    reply_len: *mut usize,
    timeout_ms: u32,
) -> c_int {
    ffi_panic_boundary! {
        let addr = try_addr!(addr);
        let data = try_slice!(data, len);
        let reply = try_slice_mut!(reply, reply_cap);
        finish(client::tcp_send(addr, data, reply, timeout(timeout_ms)), reply_len)
    }
}

/// Sends one datagram of `len` bytes from `data` to `addr` (as for `ns_tcp_send()`, to a name's
/// first address and to 127.0.0.1 for ":port"; "unix:/path" for a Unix datagram socket) and
/// returns without waiting for a reply. Any thread. `NS_ERR_LIMIT` if the datagram is too
/// large; `NS_ERR_REFUSED` if a Unix path has no socket; `NS_ERR_ADDR` for port 0.
#[unsafe(no_mangle)]
pub extern "C" fn ns_udp_send(addr: *const c_char, data: *const c_void, len: usize) -> c_int {
    ffi_panic_boundary! {
        let addr = try_addr!(addr);
        code(client::udp_send(addr, try_slice!(data, len)))
    }
}

/// Sends one datagram to `addr` (as for `ns_udp_send()`) and waits for one reply datagram from
/// that address (others are ignored), with the reply, truncation and timeout rules of
/// `ns_tcp_send()`. Any thread. `NS_ERR_REFUSED` if the host reports that nobody listens on the
/// port, `NS_ERR_TIMEOUT` if no reply came in time. A "unix:" request binds a temporary socket
/// file of its own, removed before returning, so the server can answer.
#[unsafe(no_mangle)]
pub extern "C" fn ns_udp_request(
    addr: *const c_char,
    data: *const c_void,
    len: usize,
    reply: *mut c_void,
    reply_cap: usize,
    reply_len: *mut usize,
    timeout_ms: u32,
) -> c_int {
    ffi_panic_boundary! {
        let addr = try_addr!(addr);
        let data = try_slice!(data, len);
        let reply = try_slice_mut!(reply, reply_cap);
        finish(client::udp_request(addr, data, reply, timeout(timeout_ms)), reply_len)
    }
}

/// Sends one message of `len` bytes from `data` in `framing` and reads one whole reply message
/// into `reply` without needing the peer to close, with the reply, truncation and timeout rules
/// of `ns_tcp_send()` (the reply is the message as `on_data` would get it). Every framing that
/// finds a reply's end works, with its default settings: `NS_FRAMING_LINE`, `NS_FRAMING_LEN32`,
/// `NS_FRAMING_DELIMITER` ("\r\n"), `NS_FRAMING_LENGTH_FIELD` (a 4-byte big-endian length at
/// offset 0, the frame delivered whole). `NS_ERR_INVALID` for `NS_FRAMING_RAW` (use
/// `ns_tcp_send()`) and `NS_FRAMING_FIXED` (it has no size here); `NS_ERR_CLOSED` if the peer
/// closed before a whole reply arrived. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ns_tcp_request(
    addr: *const c_char,
    data: *const c_void,
    len: usize,
    reply: *mut c_void,
    reply_cap: usize,
    reply_len: *mut usize,
    timeout_ms: u32,
    framing: c_int,
) -> c_int {
    ffi_panic_boundary! {
        let addr = try_addr!(addr);
        let data = try_slice!(data, len);
        let reply = try_slice_mut!(reply, reply_cap);
        let framing = ns_try!(options::framing(framing, &Default::default()));
        finish(client::tcp_request(addr, data, reply, timeout(timeout_ms), framing), reply_len)
    }
}

/// Loop threads: posted tasks and timers run on the first of them, and client connections
/// share them (`ns_options_set_loop()`), so many clients cost no thread each. Made by
/// `ns_loop_new()` and released by `ns_loop_free()`, or lent by `ns_server_loop()` for as long as
/// its server lives. Its functions may be called from any thread, callbacks included.
pub struct ns_loop {
    inner: ClientLoop,
}

impl From<ClientLoop> for ns_loop {
    fn from(inner: ClientLoop) -> ns_loop {
        ns_loop { inner }
    }
}

/// Called on a loop's first thread with the `user` given to `ns_loop_post()`.
pub type ns_task_cb = Option<extern "C" fn(user: *mut c_void)>;

/// Called on a loop's first thread when a timer of `ns_timer_start()` fires.
pub type ns_timer_cb = Option<extern "C" fn(timer_id: u64, user: *mut c_void)>;

/// A persistent client connection made by `ns_tcp_connect()`, freed by `ns_client_free()`. Its
/// functions may be called from any thread.
pub struct ns_client {
    inner: Client,
}

/// Starts loop threads (`ns_options_set_threads()` of `opts` says how many; NULL: one), written
/// to `*out` on success. Give it to clients with `ns_options_set_loop()`; post tasks and start
/// timers on it. With `ns_options_set_run_in_wait(opts, 1)` its first loop gets no thread:
/// `ns_loop_run()` runs it on the calling thread, so a whole program can run on its main
/// thread. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ns_loop_new(opts: *const ns_options, out: *mut *mut ns_loop) -> c_int {
    ffi_panic_boundary! {
        let out = try_mut!(out);
        // SAFETY: NULL or live options, per the header's rules.
        let opts = unsafe { opts.as_ref() }.map(|o| o.opts.clone()).unwrap_or_default();
        *out = Box::into_raw(Box::new(ns_loop { inner: ns_try!(ClientLoop::new(&opts)) }));
        code(Ok(()))
    }
}

/// Releases the handle. The loop threads run on while clients (or options) still use the loop
/// and stop once the last of them is freed. NULL is a no-op. Never for the loop of
/// `ns_server_loop()`, which belongs to its server.
#[unsafe(no_mangle)]
pub extern "C" fn ns_loop_free(lp: *mut ns_loop) {
    ffi_panic_boundary! {
        super::boundary::free_box(lp)
    }
}

/// Runs `cb(user)` on the loop's first thread, in the order posted from one thread (the loop's
/// own included). `NS_ERR_CLOSED` (`cb` not run) once the loop stopped; a task queued when it
/// stops still runs then, so `user` can be freed. `NS_ERR_INVALID` for NULL `lp` or `cb`.
/// Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ns_loop_post(lp: *mut ns_loop, cb: ns_task_cb, user: *mut c_void) -> c_int {
    ffi_panic_boundary! {
        let lp = try_ref!(lp);
        let Some(cb) = cb else { invalid!("`cb` is NULL") };
        let user = User(user);
        code(lp.inner.post(move || {
            let user = user;
            cb(user.0)
        }))
    }
}

/// Starts a timer on the loop's first thread: `cb(id, user)` runs `after_ms` from now, then
/// every `repeat_ms` (0: once). Its id (never 0) is written to `*timer_id`. `NS_ERR_CLOSED`
/// once the loop stopped; `NS_ERR_INVALID` for NULL `lp`, `cb` or `timer_id`. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ns_timer_start(
    lp: *mut ns_loop,
    after_ms: u32,
    repeat_ms: u32,
    cb: ns_timer_cb,
    user: *mut c_void,
    timer_id: *mut u64,
) -> c_int {
    ffi_panic_boundary! {
        let lp = try_ref!(lp);
        let Some(cb) = cb else { invalid!("`cb` is NULL") };
        let timer_id = try_mut!(timer_id);
        let user = User(user);
        let after = Duration::from_millis(after_ms.into());
        let repeat = (repeat_ms != 0).then(|| Duration::from_millis(repeat_ms.into()));
        *timer_id = ns_try!(lp.inner.timer_start(after, repeat, move |id| {
            let user = &user;
            cb(id, user.0)
        }));
        code(Ok(()))
    }
}

/// Stops a timer. From the loop's first thread (in any callback there) it never runs again;
/// from another thread, no run starts after this returns (one may be running). `NS_ERR_CLOSED`
/// for an id that is unknown, stopped, or a one-shot that has run. `NS_ERR_INVALID` for NULL.
/// Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ns_timer_stop(lp: *mut ns_loop, timer_id: u64) -> c_int {
    ffi_panic_boundary! {
        code(try_ref!(lp).inner.timer_stop(timer_id))
    }
}

/// Runs the loop until `ns_loop_stop()`, then returns `NS_OK`. With run_in_wait (see
/// `ns_loop_new()`), its first loop runs on the calling thread meanwhile: every callback of
/// what lives on it (clients, tasks, timers) runs here. Without, it waits like
/// `ns_server_wait()`. `NS_ERR_MISUSE` inside one of the loop's own callbacks; `NS_ERR_INVALID`
/// for NULL. Any thread but the loop's.
#[unsafe(no_mangle)]
pub extern "C" fn ns_loop_run(lp: *mut ns_loop) -> c_int {
    ffi_panic_boundary! {
        // The handle is not used after the wait begins: a callback may free it meanwhile.
        let inner = try_ref!(lp).inner.clone();
        code(inner.run())
    }
}

/// Asks the loop to stop and returns at once: `ns_loop_run()` returns, its open clients close
/// with `NS_ERR_STOPPED` (one the loop had not opened yet gets no callback at all), its timers
/// end, and posts fail with `NS_ERR_CLOSED`. Stopping a server's
/// loop stops the server. Any thread, and async-signal-safe (from a SIGINT handler).
/// `NS_ERR_INVALID` for NULL (recorded without allocating).
#[unsafe(no_mangle)]
pub extern "C" fn ns_loop_stop(lp: *mut ns_loop) -> c_int {
    ffi_panic_boundary! {
        // SAFETY: NULL or a live loop handle, per the header's rules.
        match unsafe { lp.as_ref() } {
            Some(lp) => {
                lp.inner.stop();
                ns_result::NS_OK as c_int
            }
            None => fail_static(ns_result::NS_ERR_INVALID, c"invalid argument: `lp` is NULL"),
        }
    }
}

/// Makes clients and servers started with these options run on `lp` (NULL: each on loop
/// threads of its own, the default), so that a TCP server, a UDP server, clients, tasks and
/// timers can share one thread. `lp` may be a server's (`ns_server_loop()`): what runs on it
/// then ends when that server is freed. The options keep an `ns_loop_new()` loop alive until
/// they are freed or set again, and a server or client keeps the loop it runs on alive.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_loop(opts: *mut ns_options, lp: *const ns_loop) -> c_int {
    ffi_panic_boundary! {
        let opts = try_mut!(opts);
        // SAFETY: NULL or a live loop handle, per the header's rules.
        opts.client_loop = unsafe { lp.as_ref() }.map(|l| l.inner.clone());
        code(Ok(()))
    }
}

/// Connects to `addr` (as for `ns_tcp_send()`), blocking the caller for at most the connect
/// timeout of `opts` (default 10 s), then runs the connection on a loop: the loop of
/// `ns_options_set_loop()`, or one of its own. `on_data` (required) and the callbacks of `opts`
/// run on that loop thread with `user`, with the framing, limits and timeouts of `opts`, as for
/// a server's connections; `on_open` runs first. The client is written to `*out` on success.
/// `NS_ERR_REFUSED`, `NS_ERR_TIMEOUT`, `NS_ERR_ADDR` when connecting fails. With TLS
/// (`ns_options_set_tls()`), the handshake is done before this returns, within the same
/// timeout: `NS_ERR_TLS` if it fails (the reason in `ns_last_error()`). A closed client
/// stays closed unless `ns_options_set_reconnect()` says otherwise (or free it and connect
/// again). Blocks: inside a loop callback, use `ns_tcp_connect_async()`.
#[unsafe(no_mangle)]
pub extern "C" fn ns_tcp_connect(
    addr: *const c_char,
    on_data: ns_data_cb,
    user: *mut c_void,
    opts: *const ns_options,
    out: *mut *mut ns_client,
) -> c_int {
    ffi_panic_boundary! {
        new_client(addr, on_data, user, opts, out, Client::connect::<CTcp>)
    }
}

/// Like `ns_tcp_connect()`, but returns at once, without blocking: the connect runs on the
/// loop, within the connect timeout of `opts`, trying each address of a name in turn (a name
/// is resolved on a thread of netsock's, never on a loop thread). Then `on_open` runs; or, if it
/// fails, `on_close(conn, NS_ERR_REFUSED | NS_ERR_TIMEOUT | NS_ERR_ADDR)` runs with no `on_open`
/// before it. With TLS, `on_open` waits for the handshake (within another connect timeout),
/// and a failed one is `on_close(conn, NS_ERR_TLS | NS_ERR_TIMEOUT)` without `on_open`. Only text that cannot be parsed fails at once (`NS_ERR_ADDR`). Sends before
/// `on_open` return `NS_ERR_CLOSED`. The client is written to `*out` on success; free it with
/// `ns_client_free()` as usual. Any thread, callbacks included (a proxy opening its upstream).
#[unsafe(no_mangle)]
pub extern "C" fn ns_tcp_connect_async(
    addr: *const c_char,
    on_data: ns_data_cb,
    user: *mut c_void,
    opts: *const ns_options,
    out: *mut *mut ns_client,
) -> c_int {
    ffi_panic_boundary! {
        new_client(addr, on_data, user, opts, out, Client::connect_async::<CTcp>)
    }
}

/// How `ns_tcp_connect()` and `ns_tcp_connect_async()` make their client.
type Connect = fn(&str, CTcp, &crate::Options, Option<&ClientLoop>) -> crate::Result<Client>;

/// The body of both connect calls, with their checks.
fn new_client(
    addr: *const c_char,
    on_data: ns_data_cb,
    user: *mut c_void,
    opts: *const ns_options,
    out: *mut *mut ns_client,
    connect: Connect,
) -> c_int {
    let addr = try_addr!(addr);
    let Some(on_data) = on_data else {
        invalid!("`on_data` is NULL")
    };
    let out = try_mut!(out);
    // SAFETY: NULL or live options, per the header's rules.
    let opts = unsafe { opts.as_ref() }.cloned().unwrap_or_default();
    let handler = CTcp::new(on_data, &opts, user);
    let client = ns_try!(connect(addr, handler, &opts.opts, opts.client_loop.as_ref()));
    *out = Box::into_raw(Box::new(ns_client { inner: client }));
    code(Ok(()))
}

/// Sends `len` bytes from `data` (copied) on the client connection, from any thread; the loop
/// writes them in order. `NS_ERR_CLOSED` once the connection has closed; `NS_ERR_LIMIT` as for
/// `ns_server_send()`.
#[unsafe(no_mangle)]
pub extern "C" fn ns_client_send(client: *mut ns_client, data: *const c_void, len: usize) -> c_int {
    ffi_panic_boundary! {
        let client = try_ref!(client);
        code(client.inner.send(try_slice!(data, len)))
    }
}

/// Sends the `len` bytes at `data` on the client connection without copying them, from any
/// thread, as `ns_server_send_owned()` does for a server's connection: on `NS_OK`, `free_fn(data,
/// user)` is called exactly once, on the loop thread, after the last byte is written or when
/// the connection ends first (for a loop that never runs again, as there); on any other code
/// it is NOT called and the buffer is still the caller's. Refused as `ns_client_send()`
/// is; `NS_ERR_INVALID` for NULL `free_fn` or NULL `data` with `len` > 0.
#[unsafe(no_mangle)]
pub extern "C" fn ns_client_send_owned(
    client: *mut ns_client,
    data: *mut c_void,
    len: usize,
    free_fn: ns_free_cb,
    user: *mut c_void,
) -> c_int {
    ffi_panic_boundary! {
        let client = try_ref!(client);
        let buf = ns_try!(CBuf::new(data, len, free_fn, user));
        owned_code(client.inner.send_owned(buf))
    }
}

/// Like `ns_client_send()`, as one message in the client's framing, framed as
/// `ns_conn_send_frame()` frames it (`NS_ERR_INVALID` for a message the framing cannot carry).
#[unsafe(no_mangle)]
pub extern "C" fn ns_client_send_frame(client: *mut ns_client, data: *const c_void, len: usize) -> c_int {
    ffi_panic_boundary! {
        let client = try_ref!(client);
        code(client.inner.send_frame(try_slice!(data, len)))
    }
}

/// The client connection's id (as `ns_conn_id()` gives it in its callbacks); 0 for NULL (with
/// `NS_ERR_INVALID` in `ns_last_error()`).
#[unsafe(no_mangle)]
pub extern "C" fn ns_client_id(client: *const ns_client) -> u64 {
    ffi_panic_boundary! {
        try_ref!(client).inner.id()
    }
}

/// Runs `cb(conn, user)` on the client's loop thread with its connection in hand, as
/// `ns_server_post()` does for a server's connection: `NS_ERR_CLOSED` (`cb` not run) if it is
/// not open now; `cb(NULL, user)` if it closes before the task runs. `NS_ERR_INVALID` for NULL
/// `client` or `cb`. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ns_client_post(client: *mut ns_client, cb: ns_conn_task_cb, user: *mut c_void) -> c_int {
    ffi_panic_boundary! {
        let client = try_ref!(client);
        let Some(cb) = cb else { invalid!("`cb` is NULL") };
        code(client.inner.post(conn_task(cb, user)))
    }
}

/// Closes the connection once what was sent before is written; `on_close` follows (`NS_OK`).
/// The client does not reconnect after this, also while it waits to reconnect (then the
/// result is `NS_ERR_CLOSED`: nothing was open). Any thread. Free the client afterwards.
#[unsafe(no_mangle)]
pub extern "C" fn ns_client_close(client: *mut ns_client) -> c_int {
    ffi_panic_boundary! {
        code(try_ref!(client).inner.close())
    }
}

/// Closes the connection at once if it is still open (`on_close` gets `NS_ERR_STOPPED`), waits
/// for that callback, and frees the client; no callback of it runs after this returns. A client
/// freed before its loop started it (before `on_open`) gets no callback at all. Inside
/// one of its loop's callbacks it cannot wait: the close follows when the callback returns.
/// NULL is a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn ns_client_free(client: *mut ns_client) {
    ffi_panic_boundary! {
        super::boundary::free_box(client)
    }
}
