//! `ns_conn`: a connection as C callbacks see it.

use std::ffi::{c_int, c_void};
use std::os::raw::c_char;

use super::boundary::write_text;
use super::owned::{CBuf, ns_free_cb, owned_code};
use super::result::code;
use super::server::{CTcp, User, ns_server};
use crate::Conn;
use std::any::Any;
use std::sync::atomic::Ordering;

/// One TCP or Unix stream connection. Borrowed: valid only during the callback it was passed
/// to, and only on that thread: the loop's, or with `ns_options_set_workers()` a worker's,
/// where every `ns_conn_*` function works the same ("loop thread only" below means the
/// callback's thread). To reach a connection later or from another thread,
/// keep its `ns_conn_id()` and use `ns_server_send()`.
pub struct ns_conn {
    _private: [u8; 0],
}

/// The `Conn` behind a pointer handed to a callback, or `NS_ERR_INVALID` for NULL.
macro_rules! try_conn {
    ($p:ident) => {{
        if $p.is_null() {
            invalid!("`conn` is NULL");
        }
        // SAFETY: netsock hands out pointers to a live `Conn` only for the duration of a
        // callback, and the documented rules forbid keeping them.
        unsafe { &mut *($p as *const ns_conn).cast_mut().cast::<$crate::Conn<'_>>() }
    }};
}

pub(crate) use try_conn;

/// The pointer a callback receives for `c`.
pub(crate) fn conn_ptr(c: &mut Conn<'_>) -> *mut ns_conn {
    (c as *mut Conn<'_>).cast()
}

/// Sends `len` bytes from `data` (copied: the buffer is free again when this returns). The
/// sends made during one turn of the loop (in callbacks, posted tasks, timers) are gathered and
/// written together, with one system call for all of them: those of `on_data` once the
/// connection's input of the turn is handled, the others when the turn ends; a send over
/// 16 KiB goes to the socket at once, after what was gathered. What the socket does not take
/// is queued and written as the peer reads. One send of any size is taken when nothing waits
/// to be written for the connection; `NS_ERR_LIMIT` (nothing queued) refuses one that would
/// take what waits past the write buffer limit (`ns_options_set_max_write_buffer()`). `NS_OK`;
/// `NS_ERR_CLOSED` after `ns_conn_close()`, inside `on_close`, or once the connection failed;
/// `NS_ERR_INVALID` for NULL `conn` or NULL `data` with `len` > 0. Loop thread only (inside a
/// callback).
#[unsafe(no_mangle)]
pub extern "C" fn ns_conn_send(conn: *mut ns_conn, data: *const c_void, len: usize) -> c_int {
    ffi_panic_boundary! {
        let c = try_conn!(conn);
        code(c.send(try_slice!(data, len)))
    }
}

/// Sends the `len` bytes at `data` without copying them: netsock writes them from `data` and
/// then calls `free_fn(data, user)`.
///
/// Ownership: on `NS_OK` the buffer is lent to netsock: do not change or free it until
/// `free_fn` is called, which happens exactly once, on the loop thread, after the last byte is
/// written or when the connection ends first (after its `on_close` returned; the bytes may
/// then be partly sent). It may be called before this function returns (all written at
/// once, or `len` 0). On any other code the send was refused: `free_fn` is NOT called and the
/// buffer is still the caller's.
///
/// Like `ns_conn_send()` otherwise: in order with the connection's other output; one send of
/// any size is taken when nothing waits to be written for the connection, and `NS_ERR_LIMIT`
/// refuses one that would take what waits past the write buffer limit. `NS_ERR_CLOSED` after
/// `ns_conn_close()`, inside `on_close`, or once the connection failed; `NS_ERR_INVALID` for
/// NULL `conn`, NULL `free_fn`, or NULL `data` with `len` > 0. Loop thread only (inside a
/// callback).
#[unsafe(no_mangle)]
pub extern "C" fn ns_conn_send_owned(
    conn: *mut ns_conn,
    data: *mut c_void,
    len: usize,
    free_fn: ns_free_cb,
    user: *mut c_void,
) -> c_int {
    ffi_panic_boundary! {
        let c = try_conn!(conn);
        let buf = ns_try!(CBuf::new(data, len, free_fn, user));
        owned_code(c.send_owned(buf))
    }
}

/// Closes the connection once everything queued so far has been written; `on_close` follows
/// with `NS_OK`. Later sends return `NS_ERR_CLOSED`. Loop thread only (inside a callback).
#[unsafe(no_mangle)]
pub extern "C" fn ns_conn_close(conn: *mut ns_conn) -> c_int {
    ffi_panic_boundary! {
        try_conn!(conn).close();
        code(Ok(()))
    }
}

/// Raw framing, inside `on_data`: keeps the last `n` bytes of this delivery, so that the next
/// `on_data` starts with them, followed by what arrived since: for protocols no framing setting
/// describes (RESP values may hold newlines), an unfinished message takes one call instead of a
/// buffer of your own. After `ns_conn_pause()`, `ns_conn_resume()` hands the kept bytes back
/// at once (so a server may stop partway through a delivery while its output drains). `NS_OK`;
/// `NS_ERR_INVALID` outside `on_data`, with another framing, or for more than this delivery;
/// `NS_ERR_LIMIT` for more than `max_frame`. Kept bytes still there when the peer closes end
/// the connection with `NS_ERR_CLOSED`. Loop thread only.
#[unsafe(no_mangle)]
pub extern "C" fn ns_conn_keep(conn: *mut ns_conn, n: usize) -> c_int {
    ffi_panic_boundary! {
        code(try_conn!(conn).keep(n))
    }
}

/// Stops reading from the peer: no `on_data` until `ns_conn_resume()` (what the peer sends
/// waits in the kernel, and the peer stalls once the buffers are full). `NS_OK`;
/// `NS_ERR_INVALID` for NULL. Loop thread only (inside a callback, or a task of
/// `ns_server_post()` / `ns_client_post()` to pause a connection from another thread).
#[unsafe(no_mangle)]
pub extern "C" fn ns_conn_pause(conn: *mut ns_conn) -> c_int {
    ffi_panic_boundary! {
        try_conn!(conn).pause();
        code(Ok(()))
    }
}

/// Reads from the peer again after `ns_conn_pause()`; what arrived meanwhile is delivered
/// once the callback returns. `NS_OK`; `NS_ERR_INVALID` for NULL. Loop thread only.
#[unsafe(no_mangle)]
pub extern "C" fn ns_conn_resume(conn: *mut ns_conn) -> c_int {
    ffi_panic_boundary! {
        try_conn!(conn).resume();
        code(Ok(()))
    }
}

/// Arms the connection's one timer: `on_timer` (`ns_options_set_on_timer()`) runs on its loop
/// `ms` milliseconds from now. Setting it again re-arms it (a heartbeat, a request deadline);
/// `ms` 0 cancels it. It runs once per setting, and never after `on_close`. `NS_OK`;
/// `NS_ERR_INVALID` for NULL. Loop thread only.
#[unsafe(no_mangle)]
pub extern "C" fn ns_conn_set_timer(conn: *mut ns_conn, ms: u32) -> c_int {
    ffi_panic_boundary! {
        let conn = try_conn!(conn);
        conn.set_timer((ms != 0).then(|| std::time::Duration::from_millis(ms.into())));
        code(Ok(()))
    }
}

/// The connection's id: unique for the server's lifetime and never 0 (0 means `conn` was NULL,
/// with `NS_ERR_INVALID` in `ns_last_error()`).
/// Loop thread only (inside a callback); the id itself may be used from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ns_conn_id(conn: *const ns_conn) -> u64 {
    ffi_panic_boundary! {
        try_conn!(conn).id()
    }
}

/// Writes the peer's address as NUL-terminated text ("127.0.0.1:5000", "[::1]:5000", or
/// "unix:" for a Unix-domain peer, which has no name) into `buf` of `cap` bytes. `NS_OK`;
/// `NS_ERR_TRUNCATED` (nothing written) if it does not fit (64 bytes fit any IP address).
/// With `ns_options_set_proxy_protocol`, the client the connection's PROXY header named.
/// Loop thread only (inside a callback).
#[unsafe(no_mangle)]
pub extern "C" fn ns_conn_peer(conn: *const ns_conn, buf: *mut c_char, cap: usize) -> c_int {
    ffi_panic_boundary! {
        let peer = ns_try!(try_conn!(conn).peer());
        write_text(buf, cap, &crate::addr::format(&peer))
    }
}

/// Sends `len` bytes from `data` (copied) as one message in the connection's framing: a "\n"
/// after it for `NS_FRAMING_LINE`, the delimiter after it for `NS_FRAMING_DELIMITER` (for both,
/// `NS_ERR_INVALID` if the message contains it), a 4-byte big-endian length before it for
/// `NS_FRAMING_LEN32`, the length field before it for `NS_FRAMING_LENGTH_FIELD` (at offset 0
/// only, else `NS_ERR_INVALID`), as is for `NS_FRAMING_FIXED` (`NS_ERR_INVALID` for another
/// size) and raw framing. Otherwise like `ns_conn_send()`. Loop thread only (inside a callback).
#[unsafe(no_mangle)]
pub extern "C" fn ns_conn_send_frame(conn: *mut ns_conn, data: *const c_void, len: usize) -> c_int {
    ffi_panic_boundary! {
        let c = try_conn!(conn);
        code(c.send_frame(try_slice!(data, len)))
    }
}

/// Bytes queued on the connection and not yet written, the sends gathered during this loop
/// turn included (they are written when it ends) (0 for NULL, with `NS_ERR_INVALID` in
/// `ns_last_error()`). Loop thread only.
#[unsafe(no_mangle)]
pub extern "C" fn ns_conn_pending(conn: *const ns_conn) -> usize {
    ffi_panic_boundary! {
        try_conn!(conn).pending()
    }
}

/// Stores the application's pointer for this connection (its session state), so callbacks can
/// find it without a table of ids. netsock never reads or frees it: free what it points to in
/// `on_close` at the latest. Loop thread only (inside a callback).
#[unsafe(no_mangle)]
pub extern "C" fn ns_conn_set_user(conn: *mut ns_conn, user: *mut c_void) -> c_int {
    ffi_panic_boundary! {
        let conn = try_conn!(conn);
        conn.set_user((!user.is_null()).then(|| Box::new(User(user)) as Box<dyn Any + Send>));
        code(Ok(()))
    }
}

/// The pointer stored with `ns_conn_set_user()` (NULL until set, and for a NULL `conn`, which
/// records `NS_ERR_INVALID` in `ns_last_error()`). Loop thread only (inside a callback).
#[unsafe(no_mangle)]
pub extern "C" fn ns_conn_user(conn: *const ns_conn) -> *mut c_void {
    ffi_panic_boundary! {
        try_conn!(conn).user::<User>().map_or(std::ptr::null_mut(), |u| u.0)
    }
}

/// The server the connection belongs to (the one `ns_tcp_serve()` returns), so callbacks can
/// call `ns_server_send()` or `ns_server_stats()` even before `ns_tcp_serve()` has returned;
/// NULL for a client connection, a NULL `conn` (recording `NS_ERR_INVALID`), or once `ns_server_free()` of the server has
/// been called (from any thread). Loop thread only (inside a callback).
#[unsafe(no_mangle)]
pub extern "C" fn ns_conn_server(conn: *const ns_conn) -> *mut ns_server {
    ffi_panic_boundary! {
        let handler: &dyn Any = try_conn!(conn).handler();
        handler.downcast_ref::<CTcp>().map_or(std::ptr::null_mut(), |h| h.srv.load(Ordering::Acquire))
    }
}
