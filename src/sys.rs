//! The system calls of the message path, made with `syscall(2)` rather than through libc's
//! `recv`/`send`/`sendmsg`. Those are pthread cancellation points: once a process has a second
//! thread (a loop thread of ours, or the application's), glibc turns asynchronous cancellation
//! on and off around every call, two atomic read-modify-writes and about 100 instructions per
//! call (callgrind; single-threaded it skips them). Our loops are never cancelled, and a
//! cancellation unwinding through Rust frames would be undefined behaviour anyway. Also the
//! futex a pacing loop sleeps on (`loop_core`), which std does not offer.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Turns a raw syscall result into a byte count or the `errno` error.
fn result(r: libc::c_long) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `recv(fd, buf, 0)`: reads what the socket holds, up to `buf.len()` bytes.
pub(crate) fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for `buf.len()` bytes; no address is asked for.
    result(unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            buf.as_mut_ptr(),
            buf.len(),
            0,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    })
}

/// `recv(fd, buf, MSG_PEEK)`: looks at what the socket holds without taking it.
pub(crate) fn peek(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for `buf.len()` bytes; no address is asked for.
    result(unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            buf.as_mut_ptr(),
            buf.len(),
            libc::MSG_PEEK,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    })
}

/// `send(fd, buf, MSG_NOSIGNAL)`: a peer gone never raises SIGPIPE in the host program.
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is readable for `buf.len()` bytes; no address is given.
    result(unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            buf.as_ptr(),
            buf.len(),
            libc::MSG_NOSIGNAL,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    })
}

/// `sendmsg(fd, {iov}, MSG_NOSIGNAL)`: several slices written as one, in order.
pub(crate) fn send_vectored(fd: RawFd, iov: &[io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: all-zero is a valid msghdr (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec; the kernel only reads them.
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: `msg` points at `iov.len()` live slices for the duration of the call.
    result(unsafe { libc::syscall(libc::SYS_sendmsg, fd, &msg as *const libc::msghdr, libc::MSG_NOSIGNAL) })
}

/// `futex(FUTEX_WAIT_PRIVATE)`: sleeps while `word` holds `expected`, for at most `timeout`, or
/// until `futex_wake` on it (or spuriously: the caller looks at `word` again).
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, aligned 32-bit word and `ts` a valid timespec for the call; the
    // kernel only reads them.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// `futex(FUTEX_WAKE_PRIVATE)`: wakes one thread in `futex_wait` on `word`. Only a system call:
/// safe in a signal handler.
pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned 32-bit word; FUTEX_WAKE only uses its address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1u32,
        );
    }
}
