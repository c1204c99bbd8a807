//! One TCP (or Unix stream) connection: its socket and its queue of unsent output. A
//! connection owns no read buffer; the loop lends its own to each `on_data` call. Every write
//! passes MSG_NOSIGNAL: a peer gone away must be an error code, not a SIGPIPE that kills the
//! application.

use std::io;
use std::net::Shutdown;

use socket2::{SockAddr, Socket};

use crate::error::{Error, Result};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading and writing.
    Open,
    /// The application closed it: flush the queue, then close.
    Closing,
    /// `on_close` has run; sends are refused.
    Closed,
    /// Closed by us while the peer may still send: our side is shut down and we read and
    /// discard until the peer's end-of-file, so the kernel does not answer its late data with a
    /// reset that would destroy the reply we just sent.
    Lingering,
}

pub(crate) struct ConnState {
    pub(crate) sock: Socket,
    pub(crate) id: u64,
    pub(crate) phase: Phase,
    /// The peer has shut down its sending side.
    pub(crate) peer_eof: bool,
    /// An I/O error ended the connection; it closes with this reason.
    pub(crate) failed: Option<Error>,
    out: Vec<u8>,
    out_pos: usize,
}

/// Queues above this size are released once they drain, so a burst does not pin memory.
const KEEP_QUEUE_CAPACITY: usize = 64 * 1024;

impl ConnState {
    pub(crate) fn new(sock: Socket, id: u64) -> ConnState {
        ConnState {
            sock,
            id,
            phase: Phase::Open,
            peer_eof: false,
            failed: None,
            out: Vec::new(),
            out_pos: 0,
        }
    }

    pub(crate) fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Writes what the queue holds until it is empty or the socket would block.
    pub(crate) fn flush(&mut self) {
        while self.pending() > 0 && self.failed.is_none() {
            match self.sock.send_with_flags(&self.out[self.out_pos..], libc::MSG_NOSIGNAL) {
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.failed = Some(Error::io("write", e)),
            }
        }
        if self.pending() == 0 {
            self.out_pos = 0;
            if self.out.capacity() > KEEP_QUEUE_CAPACITY {
                self.out = Vec::new();
            } else {
                self.out.clear();
            }
        }
    }

    /// Sends now what the socket takes and queues the rest.
    fn send(&mut self, mut data: &[u8]) -> Result<()> {
        if self.phase != Phase::Open {
            return Err(Error::Closed("the connection is closed".into()));
        }
        if let Some(e) = &self.failed {
            return Err(Error::Closed(format!("the connection failed: {e}").into()));
        }
        if self.pending() == 0 {
            while !data.is_empty() {
                match self.sock.send_with_flags(data, libc::MSG_NOSIGNAL) {
                    Ok(n) => data = &data[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let reason = Error::io("write", e);
                        let reply = Error::Closed(format!("the connection failed: {reason}").into());
                        self.failed = Some(reason);
                        return Err(reply);
                    }
                }
            }
        }
        self.out.extend_from_slice(data);
        Ok(())
    }

    /// Ends our side after an orderly close and starts lingering.
    pub(crate) fn start_linger(&mut self) {
        let _ = self.sock.shutdown(Shutdown::Write);
        self.phase = Phase::Lingering;
        self.out = Vec::new();
        self.out_pos = 0;
    }
}

/// A connection as callbacks see it: borrowed for the duration of one callback.
pub struct Conn<'a> {
    st: &'a mut ConnState,
}

impl<'a> Conn<'a> {
    pub(crate) fn new(st: &'a mut ConnState) -> Conn<'a> {
        Conn { st }
    }

    /// The connection's id: unique for the server's lifetime, never 0.
    pub fn id(&self) -> u64 {
        self.st.id
    }

    /// The peer's address (asked of the kernel, so idle connections store none).
    pub fn peer(&self) -> Result<SockAddr> {
        self.st.sock.peer_addr().map_err(|e| Error::io("getpeername", e))
    }

    /// Sends `data`: written at once as far as the socket takes it, the rest copied to the queue.
    pub fn send(&mut self, data: &[u8]) -> Result<()> {
        self.st.send(data)
    }

    /// Closes the connection once everything queued so far has been written.
    pub fn close(&mut self) {
        if self.st.phase == Phase::Open {
            self.st.phase = Phase::Closing;
        }
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.st.pending()
    }
}
