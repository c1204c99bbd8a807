//! The classic blocking clients, for C.

use std::ffi::{c_int, c_void};
use std::os::raw::c_char;
use std::time::Duration;

use super::result::{code, fail, ns_result};
use crate::{Error, client};

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

/// The classic one-shot TCP client: connects to `addr` (as for `ns_tcp_serve()`; a name is tried
/// at each of its addresses), sends the `len` bytes at `data`, shuts down its sending side, and
/// reads the reply into `reply` (`reply_cap` bytes) until the server closes. Blocks the calling
/// thread (any thread) for at most `timeout_ms` for the whole exchange (0 = no limit).
/// On `NS_OK`, `*reply_len` is the reply's length. `NS_ERR_TRUNCATED` if the reply outgrew
/// `reply_cap`: `reply` holds its first `reply_cap` bytes and `*reply_len` is `reply_cap`.
/// `NS_ERR_REFUSED` if nobody listens, `NS_ERR_TIMEOUT`, `NS_ERR_RESET`, `NS_ERR_ADDR`.
/// `reply` may be NULL only if `reply_cap` is 0; `reply_len` may be NULL; `data` may be NULL
/// only if `len` is 0.
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

/// Sends one datagram of `len` bytes from `data` to `addr` ("host:port", or "unix:/path" for a
/// Unix datagram socket) and returns without waiting for a reply. Any thread. `NS_ERR_LIMIT` if
/// the datagram is too large; `NS_ERR_REFUSED` if a Unix path has no socket.
#[unsafe(no_mangle)]
pub extern "C" fn ns_udp_send(addr: *const c_char, data: *const c_void, len: usize) -> c_int {
    ffi_panic_boundary! {
        let addr = try_addr!(addr);
        code(client::udp_send(addr, try_slice!(data, len)))
    }
}

/// Sends one datagram to `addr` and waits for one reply datagram from that address (others are
/// ignored), with the reply, truncation and timeout rules of `ns_tcp_send()`. Any thread.
/// `NS_ERR_REFUSED` if the host reports that nobody listens on the port, `NS_ERR_TIMEOUT` if no
/// reply came in time. A "unix:" request binds a temporary socket file of its own, removed
/// before returning, so the server can answer.
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
