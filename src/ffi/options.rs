//! `ns_options`: the opaque builder of server settings, copied when a server starts.

use std::ffi::{c_int, c_void};

use super::conn::ns_conn;
use super::result::{code, ns_result};

/// Called on the server's loop thread when a connection is accepted, before any data.
/// `conn` is borrowed for the call only.
pub type ns_open_cb = Option<extern "C" fn(conn: *mut ns_conn, user: *mut c_void)>;

/// Called on the server's loop thread for each chunk of bytes read. `data` (never NULL) is
/// owned by netsock and valid until the callback returns: copy what you keep. `conn` is
/// borrowed for the call only.
pub type ns_data_cb = Option<extern "C" fn(conn: *mut ns_conn, data: *const u8, len: usize, user: *mut c_void)>;

/// Called on the server's loop thread exactly once per opened connection when it ends.
/// `reason` is `NS_OK` for an orderly close (the peer's end-of-stream, or `ns_conn_close()` after
/// the queue was flushed), `NS_ERR_RESET`, `NS_ERR_IO` or `NS_ERR_PANIC` for a failure, and
/// `NS_ERR_STOPPED` when the server stops. Sends from here return `NS_ERR_CLOSED`.
pub type ns_close_cb = Option<extern "C" fn(conn: *mut ns_conn, reason: c_int, user: *mut c_void)>;

/// Server settings. Create with `ns_options_new()`, free with `ns_options_free()`. A server
/// copies them when it starts, so they may be freed or reused right after. Not thread-safe:
/// use one `ns_options` from one thread at a time. Passing NULL where options are taken means
/// all defaults.
#[derive(Clone, Default)]
pub struct ns_options {
    pub(crate) on_open: ns_open_cb,
    pub(crate) on_close: ns_close_cb,
}

/// A new options object with every default (no `on_open`, no `on_close`). Free it with
/// `ns_options_free()`. NULL only if memory ran out.
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
        if !opts.is_null() {
            // SAFETY: `opts` came from `ns_options_new()` and is freed once, as documented.
            drop(unsafe { Box::from_raw(opts) });
        }
    }
}

/// Sets the callback for accepted connections; NULL clears it. `NS_ERR_INVALID` if `opts` is
/// NULL.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_on_open(opts: *mut ns_options, cb: ns_open_cb) -> c_int {
    ffi_panic_boundary! {
        try_mut!(opts).on_open = cb;
        ns_result::NS_OK as c_int
    }
}

/// Sets the callback for ended connections; NULL clears it. `NS_ERR_INVALID` if `opts` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_on_close(opts: *mut ns_options, cb: ns_close_cb) -> c_int {
    ffi_panic_boundary! {
        try_mut!(opts).on_close = cb;
        code(Ok(()))
    }
}
