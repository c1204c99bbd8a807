//! The panic boundary and the argument checks every `ns_*` function is built from, in the
//! manner of rustls-ffi: one macro with a typed fallback per return type, and NULL checks that
//! return `NS_ERR_INVALID` instead of crashing.

use std::ffi::c_int;
use std::os::raw::c_char;

use super::result::ns_result;

/// What a function returns when it fails: its error code, or the closest thing its return type
/// can say (0 for ids, NULL for pointers).
pub(crate) trait ReturnValue {
    fn from_error(code: ns_result) -> Self;
}

impl ReturnValue for c_int {
    fn from_error(code: ns_result) -> c_int {
        code as c_int
    }
}

impl ReturnValue for u64 {
    fn from_error(_: ns_result) -> u64 {
        0
    }
}

impl ReturnValue for usize {
    fn from_error(_: ns_result) -> usize {
        0
    }
}

impl ReturnValue for () {
    fn from_error(_: ns_result) {}
}

impl<T> ReturnValue for *mut T {
    fn from_error(_: ns_result) -> *mut T {
        std::ptr::null_mut()
    }
}

/// Text functions promise never to return NULL.
impl ReturnValue for *const c_char {
    fn from_error(_: ns_result) -> *const c_char {
        c"internal error".as_ptr()
    }
}

/// Runs the body, turning a panic into the function's failure value (`NS_ERR_PANIC` for codes)
/// with the panic message in `ns_last_error()`.
macro_rules! ffi_panic_boundary {
    ( $($body:tt)* ) => {
        match $crate::panic::guard(move || { $($body)* }) {
            Ok(ret) => ret,
            Err(e) => $crate::ffi::result::fail(e),
        }
    };
}

/// Unwraps a `Result`, or returns its error as the function's failure value.
macro_rules! ns_try {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $crate::ffi::result::fail(e),
        }
    };
}

/// Returns `NS_ERR_INVALID` naming the argument.
macro_rules! invalid {
    ($what:expr) => {
        return $crate::ffi::result::fail($crate::Error::Invalid($what.into()))
    };
}

/// `&T` from a pointer argument, or `NS_ERR_INVALID` if it is NULL.
macro_rules! try_ref {
    ($p:ident) => {
        match unsafe { $p.as_ref() } {
            Some(r) => r,
            None => invalid!(concat!("`", stringify!($p), "` is NULL")),
        }
    };
}

/// `&mut T` from a pointer argument, or `NS_ERR_INVALID` if it is NULL.
macro_rules! try_mut {
    ($p:ident) => {
        match unsafe { $p.as_mut() } {
            Some(r) => r,
            None => invalid!(concat!("`", stringify!($p), "` is NULL")),
        }
    };
}

/// A byte slice from a pointer and a length: NULL is allowed only with length 0.
macro_rules! try_slice {
    ($p:ident, $len:ident) => {
        match $crate::ffi::boundary::check_len($p.is_null(), $len) {
            Err(e) => return $crate::ffi::result::fail(e),
            Ok(false) => &[][..],
            Ok(true) => unsafe { std::slice::from_raw_parts($p.cast::<u8>(), $len) },
        }
    };
}

/// A mutable byte slice from a pointer and a capacity: NULL is allowed only with capacity 0.
macro_rules! try_slice_mut {
    ($p:ident, $len:ident) => {
        match $crate::ffi::boundary::check_len($p.is_null(), $len) {
            Err(e) => return $crate::ffi::result::fail(e),
            Ok(false) => &mut [][..],
            Ok(true) => unsafe { std::slice::from_raw_parts_mut($p.cast::<u8>(), $len) },
        }
    };
}

/// Address text from a C string: NULL is `NS_ERR_INVALID`, text that is not UTF-8 `NS_ERR_ADDR`.
macro_rules! try_addr {
    ($p:ident) => {{
        if $p.is_null() {
            invalid!(concat!("`", stringify!($p), "` is NULL"));
        }
        match unsafe { std::ffi::CStr::from_ptr($p) }.to_str() {
            Ok(s) => s,
            Err(_) => return $crate::ffi::result::fail($crate::Error::Addr("address text is not UTF-8".into())),
        }
    }};
}

/// Frees a handle made with `Box::into_raw` by its constructor; NULL is a no-op. The caller
/// (a `ns_*_free` function) is the handle's one and only release, as the header says.
pub(crate) fn free_box<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: `p` came from `Box::into_raw` in the matching constructor and is freed once.
        drop(unsafe { Box::from_raw(p) });
    }
}

/// Whether a (pointer, length) pair names bytes to use: `Ok(false)` for an empty buffer.
pub(crate) fn check_len(is_null: bool, len: usize) -> crate::Result<bool> {
    match (is_null, len) {
        (_, 0) => Ok(false),
        (true, _) => Err(crate::Error::Invalid("NULL buffer with a non-zero length".into())),
        (false, len) if len > isize::MAX as usize => Err(crate::Error::Invalid("length too large".into())),
        (false, _) => Ok(true),
    }
}

/// Writes `text` and a NUL into a caller's buffer: `NS_ERR_TRUNCATED`, writing nothing, if it
/// does not fit.
pub(crate) fn write_text(buf: *mut c_char, cap: usize, text: &str) -> c_int {
    if buf.is_null() && cap > 0 {
        invalid!("`buf` is NULL");
    }
    if text.len() >= cap {
        return super::result::fail(crate::Error::Truncated(cap));
    }
    // SAFETY: the caller promises `cap` writable bytes at `buf`; we write `text.len() + 1 <= cap`.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
        *buf.add(text.len()) = 0;
    }
    ns_result::NS_OK as c_int
}
