//! `ns_peer`: a datagram sender's address as a plain C struct the caller may copy and keep.

use std::ffi::c_int;
use std::os::raw::c_char;

use socket2::{SockAddr, SockAddrStorage};

use super::boundary::write_text;
use crate::Error;

/// The address of a datagram peer. A plain value: copy it (`ns_peer keep = *from;`) to answer
/// later with `ns_udp_reply()` from any thread. The fields are private to netsock.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ns_peer {
    _storage: [u64; 16],
    _len: u32,
}

impl From<&SockAddr> for ns_peer {
    fn from(addr: &SockAddr) -> ns_peer {
        let mut peer = ns_peer {
            _storage: [0; 16],
            _len: 0,
        };
        let len = (addr.len() as usize).min(size_of_val(&peer._storage));
        // SAFETY: both are plain bytes; `len` fits in both.
        unsafe {
            std::ptr::copy_nonoverlapping(addr.as_ptr().cast::<u8>(), peer._storage.as_mut_ptr().cast::<u8>(), len)
        };
        peer._len = len as u32;
        peer
    }
}

impl TryFrom<&ns_peer> for SockAddr {
    type Error = Error;

    /// Checks what a caller hands back, since it may be garbage.
    fn try_from(peer: &ns_peer) -> crate::Result<SockAddr> {
        let len = peer._len as usize;
        let mut storage = SockAddrStorage::zeroed();
        if len < size_of::<libc::sa_family_t>() || len > storage.size_of() as usize {
            return Err(Error::Invalid("not a peer address filled in by netsock".into()));
        }
        // SAFETY: `len` bytes fit in the storage; the family is checked below before use.
        unsafe {
            std::ptr::copy_nonoverlapping(
                peer._storage.as_ptr().cast::<u8>(),
                (&mut storage as *mut SockAddrStorage).cast::<u8>(),
                len,
            )
        };
        // SAFETY: the length matches the bytes copied; the family is validated just after.
        let addr = unsafe { SockAddr::new(storage, len as libc::socklen_t) };
        let ok = match c_int::from(addr.family()) {
            libc::AF_INET => len >= size_of::<libc::sockaddr_in>(),
            libc::AF_INET6 => len >= size_of::<libc::sockaddr_in6>(),
            libc::AF_UNIX => true,
            _ => false,
        };
        if ok {
            Ok(addr)
        } else {
            Err(Error::Invalid("not a peer address filled in by netsock".into()))
        }
    }
}

/// Writes the peer's address as NUL-terminated text ("127.0.0.1:5000", "[::1]:5000",
/// "unix:/path", or "unix:" for an unnamed Unix socket) into `buf` of `cap` bytes. `NS_OK`;
/// `NS_ERR_TRUNCATED` (nothing written) if it does not fit (64 bytes fit any IP address);
/// `NS_ERR_INVALID` for NULL. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ns_peer_format(peer: *const ns_peer, buf: *mut c_char, cap: usize) -> c_int {
    ffi_panic_boundary! {
        let addr = ns_try!(SockAddr::try_from(try_ref!(peer)));
        write_text(buf, cap, &crate::addr::format(&addr))
    }
}
