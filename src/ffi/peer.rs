//! `ns_peer`: a datagram sender's address as a plain C struct the caller may copy and keep.

use std::ffi::c_int;
use std::os::raw::c_char;

use socket2::SockAddr;

use super::boundary::write_text;
use super::result::ns_result;
use crate::Error;
use crate::mmsg::{addr_from_storage, storage_of};

/// The address of a datagram peer. A plain value: copy it (`ns_peer keep = *from;`) to answer
/// later with `ns_udp_reply()` from any thread, or make one from text with `ns_peer_parse()`.
/// The fields are private to netsock; two copies of the same address compare equal with
/// `memcmp`.
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
    /// Senders' addresses come zeroed past their length (see `RecvBatch`), as do socket2's
    /// (for `ns_peer_parse`), so copies of one address compare equal whole.
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

/// Makes an `ns_peer` from address text, without DNS, so that `ns_udp_reply()` can send to an
/// address the server never heard from (a UDP server on "127.0.0.1:0" is then a long-lived UDP
/// client): "1.2.3.4:5000", "[::1]:5000", "[fe80::1%eth0]:5000" (scoped, by interface name or
/// index) or "unix:/path" (a Unix datagram socket bound to that path), of the server's
/// family. The result compares equal (`memcmp`) to the `ns_peer` netsock fills in for a
/// datagram from that address (a server on ":port" sees IPv4 senders as
/// "[::ffff:1.2.3.4]:5000"), and `ns_peer_format()` gives its text back ("[fe80::1%2]:5000"
/// for a scope given by name). `*out` is the caller's and is written only on success.
/// `NS_ERR_ADDR` for a name ("localhost:5000": never resolved here), no host (":5000"), port 0,
/// an abstract Unix name ("unix:@name": not accepted here), text that is not UTF-8 or not an
/// address; `NS_ERR_INVALID` for NULL `addr` or `out`. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ns_peer_parse(addr: *const c_char, out: *mut ns_peer) -> c_int {
    ffi_panic_boundary! {
        let addr = try_addr!(addr);
        let out = try_mut!(out);
        *out = ns_peer::from(&ns_try!(crate::addr::parse_literal(addr)));
        ns_result::NS_OK as c_int
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What makes a parsed peer `memcmp`-equal to a received one: nothing but zeros past the
    /// address, whatever `*out` held before.
    #[test]
    fn parsed_peers_are_zero_past_their_length() {
        for text in [c"127.0.0.1:5", c"[::1]:5", c"[fe80::1%7]:5", c"unix:/tmp/a.sock"] {
            let mut peer = ns_peer {
                _storage: [u64::MAX; 16],
                _len: u32::MAX,
                _pad: u32::MAX,
            };
            assert_eq!(ns_peer_parse(text.as_ptr(), &mut peer), ns_result::NS_OK as c_int);
            let bytes: Vec<u8> = peer._storage.iter().flat_map(|w| w.to_ne_bytes()).collect();
            assert!(bytes[peer._len as usize..].iter().all(|&b| b == 0), "{text:?}");
            assert_eq!(peer._pad, 0);
        }
    }
}
