//! Result codes, their texts, and the per-thread detail of the last failure.

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, CString, c_int};
use std::os::raw::c_char;

use super::boundary::ReturnValue;
use crate::Error;

/// Result codes. Every `int`-returning function returns `NS_OK` (0) or one of these negative
/// codes; `ns_strerror()` names them and `ns_last_error()` gives the detail of the last failure.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ns_result {
    /// Success.
    NS_OK = 0,
    /// A NULL pointer, a bad length, or a call on the wrong kind of server.
    NS_ERR_INVALID = -1,
    /// Address text that cannot be parsed or resolved.
    NS_ERR_ADDR = -2,
    /// The address is already bound by a live socket.
    NS_ERR_ADDR_IN_USE = -3,
    /// Nobody listens at the address.
    NS_ERR_REFUSED = -4,
    /// The operation outlasted its time limit.
    NS_ERR_TIMEOUT = -5,
    /// The connection is closed, the connection id is unknown, or the server has stopped.
    NS_ERR_CLOSED = -6,
    /// A reply or text did not fit the caller's buffer.
    NS_ERR_TRUNCATED = -7,
    /// A size limit was reached (such as a datagram too large to send).
    NS_ERR_LIMIT = -8,
    /// Any other operating-system error; `ns_last_error()` has the errno text.
    NS_ERR_IO = -9,
    /// The peer reset the connection.
    NS_ERR_RESET = -10,
    /// The server stopped while the connection was open (an `on_close` reason).
    NS_ERR_STOPPED = -11,
    /// A panic inside netsock was caught at the boundary; `ns_last_error()` has its message.
    NS_ERR_PANIC = -12,
    /// A call made where it cannot work, such as `ns_server_wait()` inside that server's callback.
    NS_ERR_MISUSE = -13,
    /// A TLS failure: a bad certificate or key (at configuration time), a failed handshake or
    /// verification, a TLS alert; `ns_last_error()` names the reason.
    NS_ERR_TLS = -14,
}

/// The lowest result code: every code lies in `NS_RESULT_MIN` to 0, with no gap (for range
/// checks, which then need no list of their own).
pub const NS_RESULT_MIN: c_int = -14;

impl ns_result {
    /// Every code, from 0 down: the one list that `ns_strerror()`, `NS_RESULT_MIN` and the
    /// tests of the codes are checked against.
    const ALL: [ns_result; 15] = [
        ns_result::NS_OK,
        ns_result::NS_ERR_INVALID,
        ns_result::NS_ERR_ADDR,
        ns_result::NS_ERR_ADDR_IN_USE,
        ns_result::NS_ERR_REFUSED,
        ns_result::NS_ERR_TIMEOUT,
        ns_result::NS_ERR_CLOSED,
        ns_result::NS_ERR_TRUNCATED,
        ns_result::NS_ERR_LIMIT,
        ns_result::NS_ERR_IO,
        ns_result::NS_ERR_RESET,
        ns_result::NS_ERR_STOPPED,
        ns_result::NS_ERR_PANIC,
        ns_result::NS_ERR_MISUSE,
        ns_result::NS_ERR_TLS,
    ];

    /// The code's name and meaning (an exhaustive match: a new code has none until written).
    fn meaning(self) -> &'static CStr {
        use ns_result::*;
        match self {
            NS_OK => c"NS_OK: success",
            NS_ERR_INVALID => c"NS_ERR_INVALID: invalid argument",
            NS_ERR_ADDR => c"NS_ERR_ADDR: bad address",
            NS_ERR_ADDR_IN_USE => c"NS_ERR_ADDR_IN_USE: address already in use",
            NS_ERR_REFUSED => c"NS_ERR_REFUSED: connection refused",
            NS_ERR_TIMEOUT => c"NS_ERR_TIMEOUT: timed out",
            NS_ERR_CLOSED => c"NS_ERR_CLOSED: connection closed",
            NS_ERR_TRUNCATED => c"NS_ERR_TRUNCATED: did not fit the buffer",
            NS_ERR_LIMIT => c"NS_ERR_LIMIT: limit reached",
            NS_ERR_IO => c"NS_ERR_IO: I/O error",
            NS_ERR_RESET => c"NS_ERR_RESET: connection reset by peer",
            NS_ERR_STOPPED => c"NS_ERR_STOPPED: server stopped",
            NS_ERR_PANIC => c"NS_ERR_PANIC: internal panic",
            NS_ERR_MISUSE => c"NS_ERR_MISUSE: call not allowed here",
            NS_ERR_TLS => c"NS_ERR_TLS: TLS failure",
        }
    }
}

impl From<&Error> for ns_result {
    fn from(e: &Error) -> ns_result {
        use ns_result::*;
        match e {
            Error::Invalid(_) => NS_ERR_INVALID,
            Error::Addr(_) => NS_ERR_ADDR,
            Error::AddrInUse(_) => NS_ERR_ADDR_IN_USE,
            Error::Refused(_) => NS_ERR_REFUSED,
            Error::Timeout(_) => NS_ERR_TIMEOUT,
            Error::Closed(_) => NS_ERR_CLOSED,
            Error::Truncated(_) => NS_ERR_TRUNCATED,
            Error::Limit(_) => NS_ERR_LIMIT,
            Error::Reset(_) => NS_ERR_RESET,
            Error::Stopped => NS_ERR_STOPPED,
            Error::Panic(_) => NS_ERR_PANIC,
            Error::Misuse(_) => NS_ERR_MISUSE,
            Error::Tls(_) => NS_ERR_TLS,
            Error::Io { .. } => NS_ERR_IO,
        }
    }
}

/// The code for a close reason: `NS_OK` for an orderly close.
pub(crate) fn reason_code(reason: &crate::Result<()>) -> c_int {
    match reason {
        Ok(()) => ns_result::NS_OK as c_int,
        Err(e) => ns_result::from(e) as c_int,
    }
}

// Reached with `try_with`: a C thread may call us from its TSD destructors, after this one is
// gone; a panic there would escape the boundary, which itself records errors here.
thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    /// A static text that takes precedence over `LAST_ERROR`, for `ns_server_stop`, which must
    /// stay async-signal-safe: setting it neither allocates nor frees.
    static STATIC_ERROR: Cell<Option<&'static CStr>> = const { Cell::new(None) };
}

/// Records `text` as this thread's last failure without allocating, and returns `code`.
pub(crate) fn fail_static(code: ns_result, text: &'static CStr) -> c_int {
    let _ = STATIC_ERROR.try_with(|s| s.set(Some(text)));
    code as c_int
}

/// Records `e` as this thread's last failure and returns the failure value for `T`.
pub(crate) fn fail<T: ReturnValue>(e: Error) -> T {
    let text = e.to_string().replace('\0', " ");
    let _ = STATIC_ERROR.try_with(|s| s.set(None));
    let _ = LAST_ERROR.try_with(|last| *last.borrow_mut() = CString::new(text).unwrap_or_default());
    T::from_error(ns_result::from(&e))
}

/// `NS_OK`, or the error's code after recording it.
pub(crate) fn code(r: crate::Result<()>) -> c_int {
    match r {
        Ok(()) => ns_result::NS_OK as c_int,
        Err(e) => fail(e),
    }
}

/// The name and meaning of a result code, e.g. "NS_ERR_TIMEOUT: timed out". Takes any `int`:
/// unknown codes give "unknown netsock result code". Never NULL; the text is static.
/// Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ns_strerror(code: c_int) -> *const c_char {
    ffi_panic_boundary! {
        let text = ns_result::ALL
            .iter()
            .find(|r| **r as c_int == code)
            .map_or(c"unknown netsock result code", |r| r.meaning());
        text.as_ptr()
    }
}

/// Detail text of this thread's last failed call (e.g. "bad address: missing ':port' in
/// \"localhost\""); "" if none failed yet, and possibly "" in a destructor of thread-specific
/// data while the thread exits. Owned by netsock: valid until this thread's next failing call.
/// Never NULL. Any thread; each thread has its own.
#[unsafe(no_mangle)]
pub extern "C" fn ns_last_error() -> *const c_char {
    ffi_panic_boundary! {
        if let Ok(Some(text)) = STATIC_ERROR.try_with(Cell::get) {
            return text.as_ptr();
        }
        LAST_ERROR.try_with(|last| last.borrow().as_ptr()).unwrap_or(c"".as_ptr())
    }
}

/// The library version, e.g. "0.1.0" (the same as the `NS_VERSION_*` macros of the header the
/// program was built with, unless it runs against another build). Static; never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn ns_version() -> *const c_char {
    ffi_panic_boundary! {
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn text(p: *const c_char) -> String {
        unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned()
    }

    #[test]
    fn the_list_of_codes_is_whole_and_without_gaps() {
        assert_eq!(ns_result::ALL.len() as c_int, 1 - NS_RESULT_MIN);
        for (i, r) in ns_result::ALL.iter().enumerate() {
            assert_eq!(*r as c_int, -(i as c_int), "{r:?} out of place");
            let name = format!("{r:?}");
            assert!(text(ns_strerror(*r as c_int)).starts_with(&format!("{name}: ")));
        }
    }

    #[test]
    fn every_code_has_its_name() {
        for (code, name) in [
            (ns_result::NS_OK, "NS_OK"),
            (ns_result::NS_ERR_MISUSE, "NS_ERR_MISUSE"),
            (ns_result::NS_ERR_TIMEOUT, "NS_ERR_TIMEOUT"),
        ] {
            assert!(text(ns_strerror(code as c_int)).starts_with(name));
        }
        for garbage in [1, -15, 12345, c_int::MIN, c_int::MAX] {
            assert_eq!(text(ns_strerror(garbage)), "unknown netsock result code");
        }
    }

    #[test]
    fn a_forced_panic_becomes_an_error_code() {
        let f = || -> c_int {
            ffi_panic_boundary! { panic!("forced") }
        };
        assert_eq!(f(), ns_result::NS_ERR_PANIC as c_int);
        assert_eq!(text(ns_last_error()), "internal panic: forced");
        let p = || -> *mut u8 {
            ffi_panic_boundary! { panic!("forced") }
        };
        assert!(p().is_null());
    }

    #[test]
    fn last_error_is_per_thread() {
        let _: c_int = fail(Error::Timeout("here".into()));
        std::thread::spawn(|| {
            let _: c_int = fail(Error::Refused("there".into()));
        })
        .join()
        .unwrap();
        assert_eq!(text(ns_last_error()), "here");
    }
}
