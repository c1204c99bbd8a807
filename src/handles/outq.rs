//! A connection's unsent output, in order: copied bytes (small sends gathered into one buffer)
//! and buffers the application lent (owned sends, written from where they are). All of it goes
//! to the socket with one `sendmsg` of up to [`MAX_IOV`] slices. A lent buffer is dropped (its
//! owner's release runs) once its last byte is written, or with the queue.
//!
//! Copy buffers come from, and go back to, a small pool of the loop thread's own: a connection
//! that sent and drained owns none, and the next turn's gathering allocates nothing.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;

use crate::sys;

/// Bytes the application lent for sending: read from where they are until written, then
/// dropped (which returns them to their owner). The core knows no C pointer: the FFI wraps
/// one in this.
pub trait OwnedBuf: std::any::Any + Send {
    /// The bytes to send; the same slice every time.
    fn bytes(&self) -> &[u8];
}

impl OwnedBuf for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// Slices handed to one `sendmsg` (Linux takes up to 1024).
const MAX_IOV: usize = 64;

/// Copy buffers up to this capacity go back to the pool once drained; larger ones are freed.
const POOL_BUF: usize = 16 * 1024;
/// Buffers the pool of one loop thread keeps (1 MiB at the very most; as small sends leave
/// them, a few KiB).
const POOL_LEN: usize = 64;
/// Small copies join the last copy buffer up to this size.
const COALESCE: usize = 64 * 1024;
/// The least a copy buffer is allocated with: small, as a turn may gather for thousands of
/// connections at once (the heap keeps that peak: 64 B each keeps an idle server's memory
/// per connection as it was without gathering); it grows by doubling past that.
const MIN_BUF: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

// (`try_with`: a queue dropped while its thread exits finds the pool gone, and does without.)
fn pooled(want: usize) -> Vec<u8> {
    if want <= POOL_BUF
        && let Ok(Some(buf)) = POOL.try_with(|p| p.borrow_mut().pop())
    {
        return buf;
    }
    Vec::with_capacity(want.max(MIN_BUF))
}

fn unpool(mut buf: Vec<u8>) {
    if buf.capacity() <= POOL_BUF {
        buf.clear();
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_LEN {
                p.push(buf);
            }
        });
    }
}

enum Seg {
    Copied(Vec<u8>),
    Owned(Box<dyn OwnedBuf>),
}

impl Seg {
    fn bytes(&self) -> &[u8] {
        match self {
            Seg::Copied(v) => v,
            Seg::Owned(b) => b.bytes(),
        }
    }
}

/// The segments in order: the first apart, and the list of the others boxed, so that the usual
/// queue (one copy buffer) costs no allocation of a list, a drained one holds no memory, and
/// an idle connection carries 8 bytes for the list.
#[derive(Default)]
pub(crate) struct OutQueue {
    first: Option<Seg>,
    // Boxed on purpose: 8 bytes in every connection instead of 32, for a list most never need.
    #[allow(clippy::box_collection)]
    more: Option<Box<VecDeque<Seg>>>,
    /// Bytes of the first segment already written.
    head: usize,
    /// Bytes not yet written.
    len: usize,
}

impl OutQueue {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn segs(&self) -> impl Iterator<Item = &Seg> {
        self.first.iter().chain(self.more.iter().flat_map(|m| m.iter()))
    }

    fn last_mut(&mut self) -> Option<&mut Seg> {
        match self.more.as_mut().and_then(|m| m.back_mut()) {
            Some(seg) => Some(seg),
            None => self.first.as_mut(),
        }
    }

    fn push(&mut self, seg: Seg) {
        if self.first.is_none() {
            self.first = Some(seg);
        } else {
            self.more.get_or_insert_default().push_back(seg);
        }
    }

    /// Drops the first segment (written); a copy buffer goes back to the pool.
    fn pop(&mut self) {
        let next = self.more.as_mut().and_then(|m| m.pop_front());
        if let Some(Seg::Copied(buf)) = std::mem::replace(&mut self.first, next) {
            unpool(buf);
        }
        if self.first.is_none() {
            self.more = None;
        }
    }

    /// Appends a copy of `data`, into the last copy buffer while it has room.
    pub(crate) fn push_copy(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        if let Some(Seg::Copied(last)) = self.last_mut()
            && (last.capacity() - last.len() >= data.len() || last.len() + data.len() <= COALESCE)
        {
            last.extend_from_slice(data);
            return;
        }
        let mut buf = pooled(data.len());
        buf.extend_from_slice(data);
        self.push(Seg::Copied(buf));
    }

    /// Appends a lent buffer (dropped at once if empty).
    pub(crate) fn push_owned(&mut self, buf: Box<dyn OwnedBuf>) {
        let n = buf.bytes().len();
        if n > 0 {
            self.len += n;
            self.push(Seg::Owned(buf));
        }
    }

    /// Writes what the socket takes of the queue followed by `extra` (not queued), in one
    /// `sendmsg`; returns how many bytes went (those of the queue first).
    pub(crate) fn write_with(&self, fd: RawFd, extra: &[IoSlice<'_>]) -> io::Result<usize> {
        // The usual queue, one buffer: no slice list to build.
        if self.more.is_none() && extra.is_empty() {
            return match &self.first {
                Some(seg) => sys::send(fd, &seg.bytes()[self.head..]),
                None => Ok(0),
            };
        }
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let mut n = 0;
        for (i, seg) in self.segs().enumerate() {
            if n == MAX_IOV {
                break;
            }
            let b = seg.bytes();
            iov[n] = IoSlice::new(if i == 0 { &b[self.head..] } else { b });
            n += 1;
        }
        for e in extra {
            if n == MAX_IOV {
                break;
            }
            iov[n] = *e;
            n += 1;
        }
        match &iov[..n] {
            [] => Ok(0),
            [one] => sys::send(fd, one),
            many => sys::send_vectored(fd, many),
        }
    }

    /// Drops the first `n` bytes (written): lent buffers finished are released, copy buffers
    /// drained go back to the pool. Returns what was left of `n` past the queue's end.
    pub(crate) fn consume(&mut self, mut n: usize) -> usize {
        while n > 0 {
            let Some(first) = &self.first else { break };
            let rest = first.bytes().len() - self.head;
            if n < rest {
                self.head += n;
                self.len -= n;
                return 0;
            }
            n -= rest;
            self.len -= rest;
            self.head = 0;
            self.pop();
        }
        n
    }

    /// Drops everything (lent buffers are released).
    pub(crate) fn clear(&mut self) {
        while self.first.is_some() {
            self.pop();
        }
        self.head = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Lent(Vec<u8>, Arc<AtomicUsize>);
    impl OwnedBuf for Lent {
        fn bytes(&self) -> &[u8] {
            &self.0
        }
    }
    impl Drop for Lent {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn copies_gather_and_lent_buffers_are_released_once_written() {
        let released = Arc::new(AtomicUsize::new(0));
        let mut q = OutQueue::default();
        q.push_copy(b"ab");
        q.push_copy(b"cd");
        q.push_owned(Box::new(Lent(b"efgh".to_vec(), released.clone())));
        q.push_copy(b"ij");
        assert_eq!(q.len(), 10);
        assert_eq!(q.segs().count(), 3, "two small copies share one buffer");
        assert_eq!(q.consume(7), 0);
        assert_eq!(
            released.load(Ordering::SeqCst),
            0,
            "one byte of the lent buffer is left"
        );
        assert_eq!(q.consume(1), 0);
        assert_eq!(released.load(Ordering::SeqCst), 1);
        assert_eq!(q.consume(5), 3, "past the end");
        assert_eq!(q.len(), 0);
        q.push_owned(Box::new(Lent(b"x".to_vec(), released.clone())));
        q.clear();
        assert_eq!(released.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn writes_the_queue_then_the_extra_in_order() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut q = OutQueue::default();
        q.push_copy(b"hello ");
        q.push_owned(Box::new(b"lent ".to_vec()));
        assert_eq!(q.consume(2), 0);
        let n = q
            .write_with(std::os::fd::AsRawFd::as_raw_fd(&a), &[IoSlice::new(b"world")])
            .unwrap();
        assert_eq!(n, 4 + 5 + 5);
        let mut got = [0u8; 14];
        std::io::Read::read_exact(&mut &b, &mut got).unwrap();
        assert_eq!(&got, b"llo lent world");
        assert_eq!(q.consume(n), 5);
    }
}
