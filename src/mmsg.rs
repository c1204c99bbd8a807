//! Receiving a batch of datagrams with one `recvmmsg` call, where a plain loop would make one
//! `recvfrom` per datagram plus one more to learn the socket is empty, and sending the replies
//! to a batch with one `sendmmsg`. Neither socket2 nor mio offers these calls, so this small
//! module holds the `unsafe` they take.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

use socket2::{SockAddr, SockAddrStorage};

use crate::error::Error;

/// Datagrams received per call.
pub(crate) const BATCH: usize = 16;
/// Room for each: the largest UDP payload fits, so none is cut short. The buffer is left
/// uninitialised, so pages small datagrams never reach cost no memory.
const SLOT: usize = 64 * 1024;

pub(crate) struct RecvBatch {
    bufs: Vec<MaybeUninit<u8>>,
    /// The senders' addresses, zero past each (so that copies of one compare equal whole).
    names: Vec<libc::sockaddr_storage>,
    /// How many of `names` the last call wrote.
    used: usize,
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
            used: 0,
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
        // A shorter name would leave the end of a longer one behind it.
        self.names[..self.used].fill(zeroed());
        self.used = 0;
        // SAFETY: every header points at live buffers of the stated sizes, owned by `self`.
        // Made with syscall(2), not libc's cancellable wrapper (see `sys`).
        let n = unsafe {
            libc::syscall(
                libc::SYS_recvmmsg,
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut::<libc::timespec>(),
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            self.used = n as usize;
            Ok(n as usize)
        }
    }

    /// Datagram `i` of the last [`RecvBatch::recv`], `i` below what it returned.
    pub(crate) fn get(&self, i: usize) -> Datagram<'_> {
        let hdr = &self.hdrs[i];
        let len = (hdr.msg_len as usize).min(SLOT);
        // SAFETY: the kernel initialised `len` bytes of slot `i`.
        let data = unsafe { std::slice::from_raw_parts(self.bufs.as_ptr().add(i * SLOT).cast::<u8>(), len) };
        let name_len = (hdr.msg_hdr.msg_namelen as usize).min(size_of::<libc::sockaddr_storage>());
        // SAFETY: the kernel wrote an address of this length and family at its start.
        let from = unsafe { addr_from_storage(&self.names[i], name_len as libc::socklen_t) };
        Datagram {
            from,
            data,
            truncated: hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        }
    }
}

/// The address of `len` bytes at the start of `storage`. The storage is copied whole: a copy of
/// fixed size, made inline, costs less per datagram than zeroing a new one and copying `len`
/// bytes through a call.
///
/// # Safety
/// `storage` must start with an address of `len` bytes (at most its size).
pub(crate) unsafe fn addr_from_storage(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> SockAddr {
    // SAFETY: SockAddrStorage is a transparent sockaddr_storage, and the caller vouches for
    // the address in it.
    unsafe {
        SockAddr::new(
            std::ptr::read((storage as *const libc::sockaddr_storage).cast::<SockAddrStorage>()),
            len,
        )
    }
}

/// The storage of `addr`, whole (see [`addr_from_storage`]).
pub(crate) fn storage_of(addr: &SockAddr) -> libc::sockaddr_storage {
    // SAFETY: a SockAddr holds a whole sockaddr_storage, which `as_ptr` points at.
    unsafe { std::ptr::read(addr.as_ptr().cast::<libc::sockaddr_storage>()) }
}

/// Replies queued for one `sendmmsg`: at most this many...
pub(crate) const SEND_BATCH: usize = 64;
/// ...and at most this many bytes in all.
const SEND_BYTES: usize = 256 * 1024;
/// Larger replies are not queued: they are sent at once, where a size error can be reported.
pub(crate) const QUEUE_MAX: usize = 8 * 1024;

/// Datagrams waiting to be sent together. The vectors keep their capacity, so a loop in steady
/// state allocates nothing per reply.
#[derive(Default)]
pub(crate) struct SendBatch {
    /// The payloads, back to back.
    data: Vec<u8>,
    /// Each datagram's address and its length, and where its payload starts in `data` and its
    /// length.
    msgs: Vec<(libc::sockaddr_storage, libc::socklen_t, usize, usize)>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

/// What a flush did.
pub(crate) struct Flushed {
    pub(crate) sent: usize,
    pub(crate) dropped: usize,
    /// Why the last dropped datagram was not sent.
    pub(crate) error: Option<Error>,
}

impl SendBatch {
    /// Queues a copy of `data` (at most [`QUEUE_MAX`] bytes) for `to`.
    pub(crate) fn push(&mut self, to: &SockAddr, data: &[u8]) {
        debug_assert!(data.len() <= QUEUE_MAX);
        self.msgs.push((storage_of(to), to.len(), self.data.len(), data.len()));
        self.data.extend_from_slice(data);
    }

    pub(crate) fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Whether the next push should wait for a flush.
    pub(crate) fn full(&self) -> bool {
        self.msgs.len() >= SEND_BATCH || self.data.len() >= SEND_BYTES - QUEUE_MAX
    }

    /// Sends everything queued, in order, without blocking, and empties the batch. A datagram
    /// the kernel refuses is dropped (as UDP may drop it) and the rest still go; a full send
    /// buffer drops the remainder.
    pub(crate) fn flush(&mut self, fd: RawFd) -> Flushed {
        let n = self.msgs.len();
        let mut done = Flushed {
            sent: 0,
            dropped: 0,
            error: None,
        };
        if n == 0 {
            return done;
        }
        self.iovs.clear();
        self.hdrs.clear();
        let base = self.data.as_mut_ptr();
        for (_, _, start, len) in &self.msgs {
            // SAFETY: `start..start + len` lies within `data`, which is not touched until the
            // headers are gone.
            self.iovs.push(libc::iovec {
                iov_base: unsafe { base.add(*start) }.cast(),
                iov_len: *len,
            });
        }
        for (i, (to, to_len, _, _)) in self.msgs.iter().enumerate() {
            let mut hdr: libc::mmsghdr = zeroed();
            hdr.msg_hdr.msg_name = (to as *const libc::sockaddr_storage).cast_mut().cast();
            hdr.msg_hdr.msg_namelen = *to_len;
            hdr.msg_hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_hdr.msg_iovlen = 1;
            self.hdrs.push(hdr);
        }
        let mut at = 0;
        while at < n {
            // SAFETY: headers `at..n` point at addresses in `msgs` and payloads in `data`,
            // both alive and unmoved for the call; the kernel only reads them.
            // Made with syscall(2), not libc's cancellable wrapper (see `sys`).
            let r = unsafe {
                libc::syscall(
                    libc::SYS_sendmmsg,
                    fd,
                    self.hdrs.as_mut_ptr().add(at),
                    (n - at) as libc::c_uint,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if r > 0 {
                at += r as usize;
                done.sent += r as usize;
                continue;
            }
            let e = match r {
                0 => io::Error::from(io::ErrorKind::WouldBlock),
                _ => io::Error::last_os_error(),
            };
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    done.dropped += n - at;
                    done.error = Some(Error::Limit("the socket's send buffer is full".into()));
                    break;
                }
                _ => {
                    // This datagram cannot go (its peer is gone, say): skip it.
                    done.dropped += 1;
                    done.error = Some(Error::io("sendmmsg", e));
                    at += 1;
                }
            }
        }
        self.msgs.clear();
        self.data.clear();
        done
    }
}
