//! One TCP (or Unix stream) connection: its socket, its queue of unsent output, and the tail of
//! an incomplete incoming message. An idle connection between messages owns no buffer; the
//! loop lends its own read buffer to each read. Every write passes MSG_NOSIGNAL: a peer gone
//! away must be an error code, not a SIGPIPE that kills the application.

use std::any::Any;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use socket2::{SockAddr, Socket};

use super::outq::{OutQueue, OwnedBuf};
use super::service::{Counters, Ending};
use super::tls::Session;
use crate::error::{Error, Result};
use crate::framing::{self, Framing};
use crate::loop_core::SendBudget;
use crate::options::Options;
use crate::sys;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// A client's connect is in progress (`on_open` has not run).
    Connecting,
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
    /// A server's connection waiting for its PROXY protocol header (`on_open` has not run).
    Proxy,
}

pub(crate) struct ConnState {
    pub(crate) sock: Socket,
    pub(crate) id: u64,
    /// The loop's key of the handler and options this connection follows.
    pub(crate) svc: usize,
    pub(crate) phase: Phase,
    /// The peer has shut down its sending side.
    pub(crate) peer_eof: bool,
    /// Reads are paused until the queue drains below the low-water mark.
    pub(crate) paused: bool,
    /// An I/O error or a broken limit ended the connection; it closes with this reason.
    pub(crate) failed: Option<Error>,
    /// Last traffic (for the idle timeout), or when lingering began.
    pub(crate) since: Instant,
    /// The application's state for the connection.
    pub(crate) user: Option<Box<dyn Any + Send>>,
    /// The start of an incomplete incoming message (framed connections only).
    pub(crate) partial: Vec<u8>,
    /// Bytes written to the socket since the loop last counted them.
    pub(crate) written: usize,
    /// Listed in the loop's connections to read again (input was left after a full turn).
    pub(crate) read_again: bool,
    /// The application paused reading (`Conn::pause`).
    pub(crate) user_paused: bool,
    /// Resumed by the application: read what arrived meanwhile (no new event comes for it).
    pub(crate) wants_read: bool,
    /// When the connection's own timer fires (`Conn::set_timer`).
    pub(crate) timer_at: Option<Instant>,
    /// The timer was set since the loop last scheduled the connection's deadlines.
    pub(crate) timer_moved: bool,
    /// The earliest deadline entry the loop holds for this connection.
    pub(crate) next_check: Option<Instant>,
    /// With `Phase::Connecting`: the connect in progress.
    pub(crate) dialing: Option<Dialing>,
    /// Raw framing: the length of the delivery `on_data` has now, and how much of its end
    /// the application keeps for the next one (`Conn::keep`).
    pub(crate) delivering: usize,
    pub(crate) keep: usize,
    /// The output accepted for this connection, as other threads' senders see it.
    pub(crate) budget: Arc<SendBudget>,
    /// Counts the connection as open for its service, until it is dropped.
    _slot: Slot,
    /// Output accepted and not yet written.
    pub(super) out: OutQueue,
    /// `out` holds sends gathered this turn, not yet tried on the socket: the turn's end
    /// writes them (with a full socket, output waits for it to drain instead).
    pub(crate) gathered: bool,
    /// Listed in the loop's connections to write at the turn's end.
    pub(crate) flush_listed: bool,
    /// Reading stopped with output waiting past the stall bound: read again once it drains.
    pub(crate) stalled: bool,
    /// The client a PROXY protocol header named, reported as the peer (boxed: most
    /// connections have none, and an address inline would grow every connection by 136 bytes).
    pub(crate) proxied: Option<Box<SockAddr>>,
    /// Reading waits: `max_frame` bytes of input wait for a worker (see `workers`).
    pub(crate) held: bool,
    /// The worker pool's side of the connection (see `workers`), dropped with it.
    pub(crate) pooled: Option<Box<dyn Any + Send>>,
    /// Events handed to a worker and not yet done (with workers): the orderly close at the
    /// peer's end waits for them (their replies are on their way).
    pub(crate) awaiting: Option<Arc<Awaiting>>,
    /// A TLS connection's session (handles/tls.rs): output is sealed by it, so `out` holds
    /// ciphertext, and input is opened by it.
    pub(crate) tls: Option<Box<Session>>,
}

/// The events of a connection handed to a worker and not yet done, counted on the loop (as it
/// hands them, and as the worker's notices that it caught up arrive). A notice comes through
/// the inbox after the commands of those events, and wakes the loop only if it waits for it
/// (`wanted`): else the loop takes it in its next turn, whatever wakes it.
#[derive(Debug, Default)]
pub(crate) struct Awaiting {
    /// Only the loop counts (an atomic only to be shared with the flag).
    n: AtomicUsize,
    /// The loop waits for the worker to catch up (the peer ended): its notice wakes the loop.
    pub(crate) wanted: AtomicBool,
}

impl Awaiting {
    pub(crate) fn count(&self) -> usize {
        self.n.load(Ordering::Relaxed)
    }

    pub(crate) fn hand(&self) {
        self.n.store(self.count() + 1, Ordering::Relaxed);
    }

    /// The worker told of `done` events done.
    pub(crate) fn done(&self, done: usize) {
        self.n.store(self.count().saturating_sub(done), Ordering::Relaxed);
    }

    /// Whether every event handed is done; if not, the worker's notice will wake the loop.
    pub(crate) fn caught_up(&self) -> bool {
        if self.count() == 0 {
            return true;
        }
        self.wanted.store(true, Ordering::SeqCst);
        false
    }
}

/// A connect in progress: the next address to try if this one fails, and until when.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialing {
    pub(crate) next: usize,
    pub(crate) until: Instant,
    /// Failed attempts since the client was last connected (for the reconnect backoff).
    pub(crate) attempt: u32,
}

/// Sends up to this size made during a loop turn are gathered (copied) and written together
/// (after the connection's reads of the turn, or when the turn ends); a larger one goes to the
/// socket at once, from where it is, after what was gathered before it.
const GATHER_MSG: usize = 16 * 1024;
/// What a connection gathers in one turn at most (and never more than its low-water mark, so
/// gathering never pauses reading): past it, the gathered sends are written at once.
pub(super) const GATHER_MAX: usize = 64 * 1024;

impl ConnState {
    pub(crate) fn new(
        sock: Socket,
        id: u64,
        svc: usize,
        slot: Slot,
        budget: Arc<SendBudget>,
        now: Instant,
    ) -> ConnState {
        ConnState {
            sock,
            id,
            svc,
            phase: Phase::Open,
            peer_eof: false,
            paused: false,
            failed: None,
            since: now,
            user: None,
            partial: Vec::new(),
            written: 0,
            read_again: false,
            user_paused: false,
            wants_read: false,
            timer_at: None,
            timer_moved: false,
            next_check: None,
            dialing: None,
            delivering: 0,
            keep: 0,
            budget,
            _slot: slot,
            out: OutQueue::default(),
            gathered: false,
            flush_listed: false,
            stalled: false,
            proxied: None,
            held: false,
            pooled: None,
            awaiting: None,
            tls: None,
        }
    }

    pub(crate) fn pending(&self) -> usize {
        self.out.len()
    }

    /// Writes what the queue holds until it is empty or the socket would block.
    pub(crate) fn flush(&mut self) {
        self.gathered = false;
        let before = self.pending();
        while self.pending() > 0 && self.failed.is_none() {
            match self.out.write_with(self.sock.as_raw_fd(), &[]) {
                Ok(n) => {
                    self.out.consume(n);
                    self.written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.failed = Some(Error::io("write", e)),
            }
        }
        self.budget.written(before - self.pending());
    }

    /// Sends `parts` as one message from the loop: gathered until the turn ends if small,
    /// else written at once as far as the socket takes it; the rest queued. Refused whole
    /// (`Limit`) if output is accepted for the connection already (queued here, or sends from
    /// other threads waiting for the loop) and this message would take it past `max`: the
    /// limit bounds what piles up, so one message of any size is taken when nothing waits.
    pub(crate) fn send(&mut self, parts: &[&[u8]], max: usize) -> Result<()> {
        self.check_open()?;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        self.check_room(total, max)?;
        if self.tls.is_some() {
            // The queue holds ciphertext: what is sealed takes the room.
            return self.send_sealed(parts);
        }
        // (A sender on another thread may take room between the check and here: the limit
        // can then be passed by one message, never a message lost.)
        self.budget.accept(total);
        self.put(parts, total, max)
    }

    /// Sends a buffer the application lent: written from where it is, released once written
    /// or when the connection ends. Refused as `send` is, and then handed back unreleased.
    pub(crate) fn send_owned(
        &mut self,
        buf: Box<dyn OwnedBuf>,
        max: usize,
    ) -> std::result::Result<(), (Error, Box<dyn OwnedBuf>)> {
        let total = buf.bytes().len();
        if let Err(e) = self.check_open().and_then(|()| self.check_room(total, max)) {
            return Err((e, buf));
        }
        if self.tls.is_some() {
            // Sealed at once: the lent buffer is released here and its ciphertext queued (a
            // failure ends the connection, as a failed write does).
            let _ = self.send_sealed(&[buf.bytes()]);
            return Ok(());
        }
        self.budget.accept(total);
        // Accepted: the buffer is the connection's now. A write that fails here ends the
        // connection (`on_close` says why), which releases the buffer with its queue.
        let _ = self.put_owned(buf);
        Ok(())
    }

    /// Delivers a send that another thread made, whose room was taken when it was accepted:
    /// no limit applies here, so the loop never drops what a caller was told was sent.
    pub(crate) fn send_accepted(&mut self, parts: &[&[u8]], max: usize) -> Result<()> {
        self.check_open()?;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if self.tls.is_some() {
            // The room was taken for plaintext: the queue holds ciphertext, counted as queued.
            self.budget.written(total);
            return self.send_sealed(parts);
        }
        self.put(parts, total, max)
    }

    /// Delivers a lent buffer another thread sent, whose room was taken when it was accepted.
    pub(crate) fn send_owned_accepted(&mut self, buf: Box<dyn OwnedBuf>) -> Result<()> {
        self.check_open()?;
        if self.tls.is_some() {
            self.budget.written(buf.bytes().len());
            return self.send_sealed(&[buf.bytes()]);
        }
        self.put_owned(buf)
    }

    fn check_room(&self, total: usize, max: usize) -> Result<()> {
        let ahead = self.budget.accepted();
        if ahead > 0 && ahead.saturating_add(total) > max {
            return Err(Error::Limit(
                format!("{ahead} bytes queued; {total} more would pass the {max}-byte write buffer limit").into(),
            ));
        }
        Ok(())
    }

    /// Queues `parts` (accepted on the budget) behind the output waiting for a full socket,
    /// gathers them if small, or writes them now with what was gathered.
    fn put(&mut self, parts: &[&[u8]], total: usize, max: usize) -> Result<()> {
        let pending = self.pending();
        if pending > 0 && !self.gathered {
            self.queue_rest(parts, 0);
            return Ok(());
        }
        let bound = GATHER_MAX.min(max / 4);
        if total <= GATHER_MSG && pending + total <= bound {
            self.queue_rest(parts, 0);
            self.gathered = true;
            return Ok(());
        }
        self.write_now(parts, total)
    }

    /// Queues a lent buffer (accepted on the budget) after what is queued, then writes what
    /// the socket takes unless it is known to be full: the turn's gathered sends go with it.
    fn put_owned(&mut self, buf: Box<dyn OwnedBuf>) -> Result<()> {
        let idle = self.pending() == 0 || self.gathered;
        self.out.push_owned(buf);
        if idle {
            self.write_now(&[], 0)?;
        }
        Ok(())
    }

    fn check_open(&self) -> Result<()> {
        if self.phase != Phase::Open {
            return Err(Error::Closed("the connection is closed".into()));
        }
        if let Some(e) = &self.failed {
            return Err(Error::Closed(format!("the connection failed: {e}").into()));
        }
        Ok(())
    }

    /// Writes what the socket takes of the queue (gathered sends) and then of `parts`
    /// (`total` bytes, accepted on the budget, not queued) in as few system calls as it takes;
    /// queues the rest of `parts`.
    fn write_now(&mut self, parts: &[&[u8]], total: usize) -> Result<()> {
        self.gathered = false;
        let fd = self.sock.as_raw_fd();
        let mut done = 0;
        while self.pending() > 0 || done < total {
            let (slices, n) = tail_slices(parts, done);
            let written = match (self.pending(), &slices[..n]) {
                (0, [one]) => sys::send(fd, one),
                (0, many) => sys::send_vectored(fd, many),
                _ => self.out.write_with(fd, &slices[..n]),
            };
            match written {
                Ok(k) => {
                    self.written += k;
                    self.budget.written(k);
                    done += self.out.consume(k);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // What of `parts` was neither written nor queued gives its room back.
                    self.budget.written(total - done);
                    let reason = Error::io("write", e);
                    let reply = Error::Closed(format!("the connection failed: {reason}").into());
                    self.failed = Some(reason);
                    return Err(reply);
                }
            }
        }
        self.queue_rest(parts, done);
        Ok(())
    }

    fn queue_rest(&mut self, parts: &[&[u8]], sent: usize) {
        if let [one] = parts {
            // A plain send: one part, no list of slices to build.
            return self.out.push_copy(&one[sent.min(one.len())..]);
        }
        let (rest, n) = tail_slices(parts, sent);
        for slice in &rest[..n] {
            self.out.push_copy(slice);
        }
    }

    /// Ends our side after an orderly close and starts lingering.
    pub(crate) fn start_linger(&mut self, now: Instant) {
        let _ = self.sock.shutdown(Shutdown::Write);
        self.phase = Phase::Lingering;
        self.since = now;
        self.out.clear();
        self.gathered = false;
        self.partial = Vec::new();
    }
}

/// The non-empty parts of a message (at most 3: head, body, tail) from byte `skip` on, without
/// allocating.
fn tail_slices<'a>(parts: &[&'a [u8]], mut skip: usize) -> ([IoSlice<'a>; 3], usize) {
    let mut out = [IoSlice::new(&[]); 3];
    let mut n = 0;
    for p in parts {
        if skip >= p.len() {
            skip -= p.len();
        } else {
            out[n] = IoSlice::new(&p[skip..]);
            n += 1;
            skip = 0;
        }
    }
    (out, n)
}

/// A connection as callbacks see it: borrowed for the duration of one callback.
pub struct Conn<'a>(Side<'a>);

/// Where the callback runs: on the connection's loop, with its state in hand, or on a worker
/// thread (`Options::workers`), whose operations reach the loop through its inbox, in order.
enum Side<'a> {
    Loop { st: &'a mut ConnState, svc: &'a Service },
    Remote(&'a mut (dyn Remote + 'a)),
}

/// A connection as a worker thread sees it (implemented in `workers`, which the core of
/// `Conn` need not know): the operations of [`Conn`] that do not borrow the loop's state.
pub(crate) trait Remote {
    fn id(&self) -> u64;
    fn peer(&self) -> Result<SockAddr>;
    /// `frame`: as one message in the connection's framing.
    fn send(&mut self, data: &[u8], frame: bool) -> Result<()>;
    fn pause(&mut self);
    fn resume(&mut self);
    fn set_timer(&mut self, after: Option<std::time::Duration>);
    fn keep(&mut self, n: usize) -> Result<()>;
    fn close(&mut self);
    fn pending(&self) -> usize;
    fn handler(&self) -> &dyn TcpHandler;
    fn user(&self) -> Option<&(dyn Any + Send)>;
    fn set_user(&mut self, user: Option<Box<dyn Any + Send>>);
    fn alpn(&self) -> Option<Vec<u8>>;
    fn server_name(&self) -> Option<String>;
    /// Hands the buffer back with the error when refused.
    fn send_owned(&mut self, buf: Box<dyn OwnedBuf>) -> std::result::Result<(), (Error, Box<dyn OwnedBuf>)>;
}

impl<'a> Conn<'a> {
    pub(crate) fn new(st: &'a mut ConnState, svc: &'a Service) -> Conn<'a> {
        Conn(Side::Loop { st, svc })
    }

    /// A connection seen from a worker thread.
    pub(crate) fn remote(view: &'a mut (dyn Remote + 'a)) -> Conn<'a> {
        Conn(Side::Remote(view))
    }

    /// The connection's id: unique for the server's lifetime, never 0.
    pub fn id(&self) -> u64 {
        match &self.0 {
            Side::Loop { st, .. } => st.id,
            Side::Remote(r) => r.id(),
        }
    }

    /// The peer's address (asked of the kernel, so idle connections store none), or the client
    /// a PROXY protocol header named ([`crate::Options::proxy_protocol`]).
    pub fn peer(&self) -> Result<SockAddr> {
        match &self.0 {
            Side::Loop { st, .. } => match &st.proxied {
                Some(client) => Ok((**client).clone()),
                None => st.sock.peer_addr().map_err(|e| Error::io("getpeername", e)),
            },
            Side::Remote(r) => r.peer(),
        }
    }

    /// Sends `data` (copied if it cannot be written at once).
    pub fn send(&mut self, data: &[u8]) -> Result<()> {
        match &mut self.0 {
            Side::Loop { st, svc } => st.send(&[data], svc.opts.max_write_buffer),
            Side::Remote(r) => r.send(data, false),
        }
    }

    /// Sends `msg` as one message in the connection's framing.
    pub fn send_frame(&mut self, msg: &[u8]) -> Result<()> {
        match &mut self.0 {
            Side::Loop { st, svc } => {
                let (head, tail) = framing::envelope(&svc.opts.framing, msg)?;
                st.send(&[head.as_bytes(), msg, tail], svc.opts.max_write_buffer)
            }
            Side::Remote(r) => r.send(msg, true),
        }
    }

    /// Delivers a send another thread made (`frame`: as one framed message), whose room was
    /// taken when it was accepted.
    pub(crate) fn send_accepted(&mut self, data: &[u8], frame: bool) -> Result<()> {
        let Side::Loop { st, svc } = &mut self.0 else {
            return Err(Error::Misuse("accepted sends are delivered on the loop".into()));
        };
        let framing = if frame { svc.opts.framing } else { Framing::Raw };
        let (head, tail) = framing::envelope(&framing, data)?;
        st.send_accepted(&[head.as_bytes(), data, tail], svc.opts.max_write_buffer)
    }

    /// Sends `buf` without copying it: written from where it is, and dropped once written or
    /// when the connection ends. Refused (`Limit`, `Closed`) as [`Conn::send`] is, and then
    /// handed back with the error, not dropped.
    pub fn send_owned(&mut self, buf: Box<dyn OwnedBuf>) -> std::result::Result<(), (Error, Box<dyn OwnedBuf>)> {
        match &mut self.0 {
            Side::Loop { st, svc } => st.send_owned(buf, svc.opts.max_write_buffer),
            Side::Remote(r) => r.send_owned(buf),
        }
    }

    /// Delivers a lent buffer another thread sent, whose room was taken when it was accepted.
    pub(crate) fn send_owned_accepted(&mut self, buf: Box<dyn OwnedBuf>) -> Result<()> {
        let Side::Loop { st, .. } = &mut self.0 else {
            return Err(Error::Misuse("accepted sends are delivered on the loop".into()));
        };
        st.send_owned_accepted(buf)
    }

    /// Stops reading from the peer until [`Conn::resume`] (input waits in the kernel, and the
    /// peer's sending stalls once its buffers fill).
    pub fn pause(&mut self) {
        match &mut self.0 {
            Side::Loop { st, .. } => st.user_paused = true,
            Side::Remote(r) => r.pause(),
        }
    }

    /// Reads from the peer again after [`Conn::pause`].
    pub fn resume(&mut self) {
        match &mut self.0 {
            Side::Loop { st, .. } => {
                if st.user_paused {
                    st.user_paused = false;
                    st.wants_read = true;
                }
            }
            Side::Remote(r) => r.resume(),
        }
    }

    /// Arms the connection's one timer to fire `after` from now ([`TcpHandler::on_timer`]),
    /// replacing an earlier setting; `None` cancels it.
    ///
    /// [`TcpHandler::on_timer`]: crate::TcpHandler::on_timer
    pub fn set_timer(&mut self, after: Option<std::time::Duration>) {
        match &mut self.0 {
            Side::Loop { st, .. } => {
                st.timer_at = after.map(|a| Instant::now() + a);
                st.timer_moved = true;
            }
            Side::Remote(r) => r.set_timer(after),
        }
    }

    /// Raw framing, inside `on_data`: keeps the last `n` bytes of this delivery, so that the
    /// next `on_data` starts with them (an unfinished message of a protocol no framing
    /// setting describes). `Invalid` elsewhere or past the delivery; `Limit` past `max_frame`.
    pub fn keep(&mut self, n: usize) -> Result<()> {
        let (st, svc) = match &mut self.0 {
            Side::Loop { st, svc } => (st, svc),
            Side::Remote(r) => return r.keep(n),
        };
        check_keep(&svc.opts, st.delivering, n)?;
        st.keep = n;
        Ok(())
    }

    /// Closes the connection once everything queued so far has been written.
    pub fn close(&mut self) {
        match &mut self.0 {
            Side::Loop { st, .. } => {
                if st.phase == Phase::Open {
                    st.phase = Phase::Closing;
                }
            }
            Side::Remote(r) => r.close(),
        }
    }

    /// Bytes queued and not yet written (on a worker: also those on their way to the loop).
    pub fn pending(&self) -> usize {
        match &self.0 {
            Side::Loop { st, .. } => st.pending(),
            Side::Remote(r) => r.pending(),
        }
    }

    /// The handler the connection's callbacks go to (an adapter finds its own state there).
    pub fn handler(&self) -> &dyn TcpHandler {
        match &self.0 {
            Side::Loop { svc, .. } => &*svc.app,
            Side::Remote(r) => r.handler(),
        }
    }

    /// The application's per-connection state, if it is a `T` (`None` until set).
    pub fn user<T: Any>(&self) -> Option<&T> {
        let user = match &self.0 {
            Side::Loop { st, .. } => st.user.as_deref(),
            Side::Remote(r) => r.user(),
        };
        user.and_then(|u| (u as &dyn Any).downcast_ref())
    }

    /// Stores the application's per-connection state (`None` clears it); it is dropped with
    /// the connection.
    pub fn set_user(&mut self, user: Option<Box<dyn Any + Send>>) {
        match &mut self.0 {
            Side::Loop { st, .. } => st.user = user,
            Side::Remote(r) => r.set_user(user),
        }
    }

    /// The ALPN protocol agreed on in the TLS handshake (`None` without TLS or ALPN).
    pub fn alpn(&self) -> Option<Vec<u8>> {
        match &self.0 {
            Side::Loop { st, .. } => st.tls.as_ref().and_then(|t| t.alpn()).map(<[u8]>::to_vec),
            Side::Remote(r) => r.alpn(),
        }
    }

    /// The host name a TLS client asked this server for (SNI), if any.
    pub fn server_name(&self) -> Option<String> {
        match &self.0 {
            Side::Loop { st, .. } => st.tls.as_ref().and_then(|t| t.server_name()).map(str::to_owned),
            Side::Remote(r) => r.server_name(),
        }
    }

    /// The loop's state of the connection (`None` on a worker), for the worker pool.
    pub(crate) fn state(&mut self) -> Option<&mut ConnState> {
        match &mut self.0 {
            Side::Loop { st, .. } => Some(st),
            Side::Remote(_) => None,
        }
    }

    /// Ends the connection with `reason` (a worker's callback panicked), on the loop.
    pub(crate) fn fail(&mut self, reason: Error) {
        if let Some(st) = self.state() {
            st.failed.get_or_insert(reason);
        }
    }
}

/// Whether `n` bytes of a `delivering`-byte delivery may be kept (`Conn::keep`).
pub(crate) fn check_keep(opts: &Options, delivering: usize, n: usize) -> Result<()> {
    if opts.framing != Framing::Raw || delivering == 0 {
        return Err(Error::Invalid("keeping bytes works in on_data with raw framing".into()));
    }
    if n > delivering {
        return Err(Error::Invalid(
            format!("{n} bytes to keep of a {delivering}-byte delivery").into(),
        ));
    }
    if n > opts.max_frame {
        return Err(Error::Limit(
            format!("keeping {n} bytes passes the {}-byte frame limit", opts.max_frame).into(),
        ));
    }
    Ok(())
}

/// Callbacks of TCP connections. A connection's callbacks all run on one loop thread, in
/// order; a server with several loop threads calls them concurrently for different connections.
/// With [`Options::workers`] they run on a pool of worker threads instead: still one at a time
/// and in order for each connection.
pub trait TcpHandler: Any + Send + Sync + 'static {
    /// A connection was accepted (or a client connection started).
    fn on_open(&self, _conn: &mut Conn<'_>) {}
    /// Bytes arrived: a chunk as read (raw framing) or one whole message (line, len32).
    fn on_data(&self, conn: &mut Conn<'_>, data: &[u8]);
    /// The queue, after rising above the low-water mark (which pauses reading), fell below it.
    fn on_drain(&self, _conn: &mut Conn<'_>) {}
    /// The connection ended: `Ok` for an orderly close, the error otherwise. Runs exactly once
    /// for each connection that was opened.
    fn on_close(&self, _conn: &mut Conn<'_>, _reason: &Result<()>) {}
    /// The connection's timer fired ([`Conn::set_timer`]).
    fn on_timer(&self, _conn: &mut Conn<'_>) {}
}

/// A handler with the options its connections follow.
pub(crate) struct Service {
    /// What the loop calls: the application's handler, or with workers the pool's dispatch.
    pub(crate) handler: Arc<dyn TcpHandler>,
    /// The application's handler (`Conn::handler`).
    pub(crate) app: Arc<dyn TcpHandler>,
    pub(crate) opts: Options,
    /// Set when the owner let go (a server freed, a client dropped), possibly inside one of
    /// these callbacks: from then on only `on_close` runs.
    pub(crate) released: AtomicBool,
    /// TCP rather than Unix-domain: TCP options apply (known up front, so accepting a
    /// connection costs no getsockname).
    pub(crate) inet: bool,
    /// A client's addresses, to connect (again) on the loop.
    pub(crate) target: OnceLock<Vec<SockAddr>>,
    /// The client's owner closed it: it does not reconnect.
    pub(crate) by_user: AtomicBool,
    /// Connections open (or lingering) now: the slots taken.
    active: AtomicUsize,
    pub(crate) counters: Counters,
    /// How a server on shared loops ends (a server's own loops end with their group).
    pub(crate) ending: Arc<Ending>,
    /// The server handed its sockets to another process (`Server::handoff`): it accepts no more.
    pub(crate) handed_off: AtomicBool,
}

impl Service {
    pub(crate) fn new(handler: Arc<dyn TcpHandler>, opts: Options, inet: bool, loops: usize) -> Service {
        Service {
            app: handler.clone(),
            handler,
            opts,
            released: AtomicBool::new(false),
            inet,
            target: OnceLock::new(),
            by_user: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            counters: Counters::new(loops),
            ending: Arc::default(),
            handed_off: AtomicBool::new(false),
        }
    }

    /// Connections holding a descriptor now: open, lingering, or waiting for a PROXY header.
    pub(crate) fn held(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Releases the connections: no callback but `on_close` runs after this.
    pub(crate) fn release(&self) {
        self.released.store(true, Ordering::Release);
    }
}

/// One open connection of a service, counted as long as it lives: dropped with the
/// connection, on whichever path it goes.
pub(crate) struct Slot(Arc<Service>);

impl Slot {
    /// A slot unless `max` (0: no limit) connections are open already.
    pub(crate) fn take(svc: &Arc<Service>, max: usize) -> Option<Slot> {
        let before = svc.active.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(svc.clone());
        (max == 0 || before < max).then_some(slot)
    }

    pub(crate) fn service(&self) -> &Arc<Service> {
        &self.0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}
