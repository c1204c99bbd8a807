//! A buffer a C caller lent to `ns_*_send_owned`: its pointer, its length and the caller's
//! release, wrapped as the core's [`OwnedBuf`] so that the core holds no C pointer. Dropping it
//! runs the release, so it runs exactly once, wherever the core lets go of the buffer (on the
//! loop thread); a refused send disarms it and the caller keeps the buffer.

use std::any::Any;
use std::ffi::c_void;

use crate::{Error, OwnedBuf};

/// The release of `ns_conn_send_owned()`, `ns_server_send_owned()` and
/// `ns_client_send_owned()`: called once with the `data` and `user` of the send.
pub type ns_free_cb = Option<extern "C" fn(data: *mut c_void, user: *mut c_void)>;

pub(crate) struct CBuf {
    data: *mut c_void,
    len: usize,
    free_fn: ns_free_cb,
    user: *mut c_void,
}

// SAFETY: the header's rule for the owned sends: the caller does not touch `data` until
// `free_fn` is called, and lets `free_fn` (with `user`) run on the loop thread.
unsafe impl Send for CBuf {}

impl CBuf {
    /// The lent buffer, or `Invalid` (nothing taken) for a NULL release, or NULL `data` with a
    /// non-zero length.
    pub(crate) fn new(
        data: *mut c_void,
        len: usize,
        free_fn: ns_free_cb,
        user: *mut c_void,
    ) -> crate::Result<Box<CBuf>> {
        if free_fn.is_none() {
            return Err(Error::Invalid("`free_fn` is NULL".into()));
        }
        super::boundary::check_len(data.is_null(), len)?;
        Ok(Box::new(CBuf {
            data,
            len,
            free_fn,
            user,
        }))
    }

    /// A refused send: the buffer goes back to the caller, unreleased.
    pub(crate) fn give_back(buf: Box<dyn OwnedBuf>) {
        let any: Box<dyn Any> = buf;
        if let Ok(mut c) = any.downcast::<CBuf>() {
            c.free_fn = None;
        }
    }
}

impl OwnedBuf for CBuf {
    fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `data` is readable for `len` bytes until `free_fn` runs (checked non-NULL
        // in `new`; the header's rule keeps it valid and unchanged).
        unsafe { std::slice::from_raw_parts(self.data.cast::<u8>(), self.len) }
    }
}

impl Drop for CBuf {
    fn drop(&mut self) {
        if let Some(free_fn) = self.free_fn.take() {
            free_fn(self.data, self.user);
        }
    }
}

/// `NS_OK` for an accepted send; a refused one gives the buffer back and returns its error.
pub(crate) fn owned_code(r: std::result::Result<(), (Error, Box<dyn OwnedBuf>)>) -> std::ffi::c_int {
    match r {
        Ok(()) => super::result::code(Ok(())),
        Err((e, buf)) => {
            CBuf::give_back(buf);
            super::result::code(Err(e))
        }
    }
}
