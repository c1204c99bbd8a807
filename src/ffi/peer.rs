//! `ns_peer`: a datagram sender's address as a plain C struct the caller may copy and keep.

use std::ffi::c_int;
use std::os::raw::c_char;

use socket2::SockAddr;

use super::boundary::write_text;
use crate::Error;
use crate::mmsg::{addr_from_storage, storage_of};

/// The address of a datagram peer. A plain value: copy it (`ns_peer keep = *from;`) to answer
/// later with `ns_udp_reply()` from any thread. The fields are private to netsock; two copies
/// of the same address compare equal with `memcmp`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ns_peer {
    _storage: [u64; 16],
    _len: u32,
    /// Always 0: padding made a field, so that `memcmp` never reads undefined bytes.
    _pad: u32,
}

impl From<&SockAddr> for ns_peer {
    /// Made for each datagram: the storage is copied whole, a fixed-size copy made inline.
    /// Senders' addresses come zeroed past their length (see `RecvBatch`), so copies of one
    /// address compare equal whole.
    fn from(addr: &SockAddr) -> ns_peer {
        // SAFETY: sockaddr_storage and [u64; 16] are plain bytes of the same size and alignment.
        let storage = unsafe { std::mem::transmute::<libc::sockaddr_storage, [u64; 16]>(storage_of(addr)) };
        ns_peer {
            _storage: storage,
            _len: addr.len(),
            _pad: 0,
        }
    }
}

impl TryFrom<&ns_peer> for SockAddr {
    type Error = Error;

    /// Checks what a caller hands back, since it may be garbage.
    fn try_from(peer: &ns_peer) -> crate::Result<SockAddr> {
        let len = peer._len as usize;
        if len < size_of::<libc::sa_family_t>() || len > size_of::<libc::sockaddr_storage>() {
            return Err(Error::Invalid("not a peer address filled in by netsock".into()));
        }
        // SAFETY: the same bytes as a sockaddr_storage; `len` fits, and the family is
        // validated just after.
        let addr = unsafe {
            addr_from_storage(
                &std::mem::transmute::<[u64; 16], libc::sockaddr_storage>(peer._storage),
                len as libc::socklen_t,
            )
        };
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
