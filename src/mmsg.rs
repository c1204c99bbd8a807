//! Receiving a batch of datagrams with one `recvmmsg` call, where a plain loop would make one
//! `recvfrom` per datagram plus one more to learn the socket is empty. Neither socket2 nor mio
//! offers `recvmmsg`, so this small module holds the `unsafe` it takes.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

use socket2::{SockAddr, SockAddrStorage};

/// Datagrams received per call.
pub(crate) const BATCH: usize = 16;
/// Room for each: the largest UDP payload fits, so none is cut short. The buffer is left
/// uninitialised, so pages small datagrams never reach cost no memory.
const SLOT: usize = 64 * 1024;

pub(crate) struct RecvBatch {
    bufs: Vec<MaybeUninit<u8>>,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

/// A plain C struct with every byte zero.
fn zeroed<T: Copy>() -> T {
    // SAFETY: only used for libc's plain-data structs (addresses, iovec, mmsghdr), for which
    // all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

/// One received datagram.
pub(crate) struct Datagram<'a> {
    pub(crate) from: SockAddr,
    pub(crate) data: &'a [u8],
    /// The datagram was larger than its slot and arrived cut short.
    pub(crate) truncated: bool,
}

impl RecvBatch {
    /// The headers point into the batch's own vectors, whose heap memory never moves, so they
    /// are set up once; each call only resets what the kernel writes back.
    pub(crate) fn new() -> RecvBatch {
        let mut b = RecvBatch {
            bufs: Vec::with_capacity(BATCH * SLOT),
            names: (0..BATCH).map(|_| zeroed()).collect(),
            iovs: (0..BATCH).map(|_| zeroed()).collect(),
            hdrs: (0..BATCH).map(|_| zeroed()).collect(),
        };
        let base = b.bufs.as_mut_ptr();
        for i in 0..BATCH {
            // SAFETY: slot `i` lies within the allocated capacity of `bufs`.
            b.iovs[i] = libc::iovec {
                iov_base: unsafe { base.add(i * SLOT) }.cast(),
                iov_len: SLOT,
            };
            let hdr = &mut b.hdrs[i].msg_hdr;
            hdr.msg_name = (&mut b.names[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_iov = &mut b.iovs[i];
            hdr.msg_iovlen = 1;
        }
        b
    }

    /// Receives up to [`BATCH`] datagrams without blocking; how many arrived. Fewer than
    /// `BATCH` means the socket was empty when the call returned.
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for hdr in &mut self.hdrs {
            hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: every header points at live buffers of the stated sizes, owned by `self`.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Datagram `i` of the last [`RecvBatch::recv`], `i` below what it returned.
    pub(crate) fn get(&self, i: usize) -> Datagram<'_> {
        let hdr = &self.hdrs[i];
        let len = (hdr.msg_len as usize).min(SLOT);
        // SAFETY: the kernel initialised `len` bytes of slot `i`.
        let data = unsafe { std::slice::from_raw_parts(self.bufs.as_ptr().add(i * SLOT).cast::<u8>(), len) };
        let mut storage = SockAddrStorage::zeroed();
        let name_len = (hdr.msg_hdr.msg_namelen as usize).min(size_of::<libc::sockaddr_storage>());
        // SAFETY: both are sockaddr_storage-sized; the kernel filled `name_len` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&self.names[i] as *const libc::sockaddr_storage).cast::<u8>(),
                (&mut storage as *mut SockAddrStorage).cast::<u8>(),
                name_len,
            );
        }
        // SAFETY: the kernel wrote an address of this length and family.
        let from = unsafe { SockAddr::new(storage, name_len as libc::socklen_t) };
        Datagram {
            from,
            data,
            truncated: hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        }
    }
}
