//! `ns_set_log`: the library's own diagnostics for C programs.

use std::ffi::{CString, c_int};
use std::os::raw::c_char;
use std::sync::Arc;

use super::result::code;
use crate::Error;
use crate::log::{Level, set_logger};

/// Receives one diagnostic: `level` (an `ns_log_level`) and a NUL-terminated message owned by
/// netsock, valid until the callback returns. Runs on whichever thread logs, usually a loop
/// thread; it must not block for long.
pub type ns_log_cb = Option<extern "C" fn(level: c_int, msg: *const c_char)>;

/// How much netsock logs (`ns_set_log()`): each level includes the ones before it.
#[repr(C)]
pub enum ns_log_level {
    NS_LOG_OFF = 0,
    /// Failures of the library itself (a loop that cannot go on, a panic in a callback).
    NS_LOG_ERROR = 1,
    /// Failed accepts, dropped cross-thread messages.
    NS_LOG_WARN = 2,
    /// Refused connections, messages over the frame limit, dropped datagrams.
    NS_LOG_INFO = 3,
    /// Every connection closed with an error, and why.
    NS_LOG_DEBUG = 4,
}

/// Sends the library's diagnostics at `level` and above to `cb`, process-wide; off by default.
/// NULL `cb` or `NS_LOG_OFF` turns logging off. `NS_ERR_INVALID` for a level outside
/// `ns_log_level`. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ns_set_log(cb: ns_log_cb, level: c_int) -> c_int {
    ffi_panic_boundary! {
        let level = match level {
            0 => None,
            1 => Some(Level::Error),
            2 => Some(Level::Warn),
            3 => Some(Level::Info),
            4 => Some(Level::Debug),
            _ => return code(Err(Error::Invalid(format!("{level} is not an ns_log_level").into()))),
        };
        match (cb, level) {
            (Some(cb), Some(level)) => set_logger(
                Some(Arc::new(move |level: Level, msg: &str| {
                    let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
                    cb(level as c_int, msg.as_ptr());
                })),
                level,
            ),
            _ => set_logger(None, Level::Error),
        }
        code(Ok(()))
    }
}
