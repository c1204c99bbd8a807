//! The TCP (and Unix stream) loop: accepts (for a server) or adopts (for clients), reads into
//! the loop's one buffer, frames, hands messages to the handler, writes queued output as the
//! socket drains, applies backpressure, limits and timeouts, and closes each connection exactly
//! once with a reason.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::{Socket, TcpKeepalive};

use crate::conn::{Conn, ConnState, Phase};
use crate::error::{Error, Result};
use crate::event_loop::{Cmd, Group, LoopShared, READ_BUF, READS_PER_TURN, SendBudget, WAKER, lock};
use crate::framing::{self, Framing};
use crate::log::log;
use crate::options::Options;
use crate::panic::guard;
use crate::socket::Bound;
use crate::sys;

/// Callbacks of TCP connections. A connection's callbacks all run on one loop thread, in
/// order; a server with several loop threads calls them concurrently for different connections.
pub trait TcpHandler: Send + Sync + 'static {
    /// A connection was accepted (or a client connection started).
    fn on_open(&self, _conn: &mut Conn<'_>) {}
    /// Bytes arrived: a chunk as read (raw framing) or one whole message (line, len32).
    fn on_data(&self, conn: &mut Conn<'_>, data: &[u8]);
    /// The queue, after rising above the low-water mark (which pauses reading), fell below it.
    fn on_drain(&self, _conn: &mut Conn<'_>) {}
    /// The connection ended: `Ok` for an orderly close, the error otherwise. Runs exactly once
    /// for each connection that was opened.
    fn on_close(&self, _conn: &mut Conn<'_>, _reason: &Result<()>) {}
}

/// How far a read turn goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReadTo {
    /// Until a read returns less than the buffer holds: the socket was empty then, and data
    /// arriving later raises a new edge-triggered event. Saves the read that would only say
    /// "would block" (libuv does the same).
    Short,
    /// Until the socket says "would block" or end-of-stream: when the event reported the
    /// peer's end (which raises no second event), and when no event is coming at all.
    End,
}

/// A handler with the options its connections follow.
pub(crate) struct Service {
    pub(crate) handler: Arc<dyn TcpHandler>,
    pub(crate) opts: Options,
    /// A word naming who owns the connections (the C layer keeps its `ns_server *` here);
    /// cleared when the owner is freed, so callbacks still to come never see a dangling handle.
    pub(crate) owner: AtomicUsize,
    /// Set when the owner let go (a server freed, a client dropped), possibly inside one of
    /// these callbacks: from then on only `on_close` runs.
    pub(crate) released: AtomicBool,
    /// TCP rather than Unix-domain: TCP options apply (known up front, so accepting a
    /// connection costs no getsockname).
    pub(crate) inet: bool,
}

const LISTENER: Token = Token(0);
/// Tokens of connections are their slab key plus this.
const FIRST_CONN: usize = 2;
/// How long a closed connection may linger, discarding the peer's late data.
const LINGER: Duration = Duration::from_secs(2);

struct TcpLoop<'g> {
    group: &'g Group,
    me: &'g LoopShared,
    poll: Poll,
    /// A server's listening socket (its service is slot 0 of `services`). Only loop 0 accepts:
    /// it hands connections round-robin to the loops, which spreads them evenly (a listener
    /// polled by every loop lets whichever wakes first take them all).
    listener: Option<Arc<Bound>>,
    services: Slab<Arc<Service>>,
    conns: Slab<ConnState>,
    ids: HashMap<u64, usize>,
    buf: Vec<u8>,
    /// Connections that still had input when their turn ended.
    again: Vec<(usize, u64)>,
    /// Idle and linger deadlines; an entry is checked against the connection when it is due.
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    now: Instant,
    /// Set once stopping began: when queued output stops being flushed.
    drain_until: Option<Instant>,
    /// A descriptor held in reserve, given up to refuse connections cleanly when none is left.
    spare_fd: Option<File>,
}

/// Runs loop `index` of `group` until the group stops. A server loop gets its listener and
/// service; a client loop gets neither. Both adopt connected sockets from their inbox.
pub(crate) fn run(group: &Group, index: usize, poll: Poll, listener: Option<(Arc<Bound>, Arc<Service>)>) {
    let mut lp = TcpLoop::new(group, index, poll, listener);
    if let Err(e) = lp.serve() {
        log!(Error, "loop {index} failed: {e}");
    }
    lp.close_all();
    lp.drain_inbox();
}

impl Service {
    pub(crate) fn new(handler: Arc<dyn TcpHandler>, opts: Options, owner: usize, inet: bool) -> Service {
        Service {
            handler,
            opts,
            owner: AtomicUsize::new(owner),
            released: AtomicBool::new(false),
            inet,
        }
    }

    /// Releases the connections: no callback but `on_close` runs after this.
    pub(crate) fn release(&self) {
        self.owner.store(0, Ordering::Release);
        self.released.store(true, Ordering::Release);
    }
}

/// Whether callbacks other than `on_close` may still run for `svc`'s connections.
fn live(group: &Group, svc: &Service) -> bool {
    !group.stopping() && !svc.released.load(Ordering::Acquire)
}

impl<'g> TcpLoop<'g> {
    fn new(group: &'g Group, index: usize, poll: Poll, listener: Option<(Arc<Bound>, Arc<Service>)>) -> Self {
        let mut services = Slab::new();
        let listener = listener.map(|(bound, svc)| {
            services.insert(svc);
            bound
        });
        TcpLoop {
            group,
            me: &group.loops[index],
            poll,
            listener,
            services,
            conns: Slab::new(),
            ids: HashMap::new(),
            buf: vec![0; READ_BUF],
            again: Vec::new(),
            timers: BinaryHeap::new(),
            now: Instant::now(),
            drain_until: None,
            spare_fd: None,
        }
    }

    fn serve(&mut self) -> Result<()> {
        if let Some(l) = self.listener.as_ref().filter(|_| self.me.index() == 0) {
            self.spare_fd = File::open("/dev/null").ok();
            let fd = l.sock.as_raw_fd();
            self.poll
                .registry()
                .register(&mut SourceFd(&fd), LISTENER, Interest::READABLE)
                .map_err(|e| Error::io("epoll_ctl", e))?;
        }
        let mut events = Events::with_capacity(1024);
        let mut yielded = Instant::now();
        loop {
            if self.group.stopping() && self.stop_step() {
                return Ok(());
            }
            let timeout = if self.again.is_empty() {
                self.next_timeout()
            } else {
                Some(Duration::ZERO)
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("epoll_wait", e)),
            }
            self.now = Instant::now();
            for key in std::mem::take(&mut self.again) {
                self.read_again(key);
            }
            for ev in events.iter() {
                // Stopped by a callback (a free inside it, say): nothing more is dispatched.
                if self.group.stopping() && self.drain_until.is_none() {
                    break;
                }
                match ev.token() {
                    LISTENER if self.drain_until.is_none() => self.accept(),
                    LISTENER => {}
                    WAKER => self.drain_inbox(),
                    Token(t) => {
                        let read = match (ev.is_readable(), ev.is_read_closed()) {
                            (_, true) => Some(ReadTo::End),
                            (true, false) => Some(ReadTo::Short),
                            (false, false) => None,
                        };
                        self.ready(t - FIRST_CONN, read, ev.is_writable())
                    }
                }
            }
            self.expire_timers();
            if !events.is_empty() {
                self.group.take_turns(&mut yielded);
            }
        }
    }

    /// One step of stopping; true when the loop may end. Without a drain timeout every
    /// connection closes at once; with one, reading stops, idle connections close, and the
    /// others close as their queues empty or when the time is up.
    fn stop_step(&mut self) -> bool {
        let Some(until) = self.drain_until else {
            if let Some(l) = &self.listener {
                let _ = self.poll.registry().deregister(&mut SourceFd(&l.sock.as_raw_fd()));
            }
            let Some(drain) = self
                .services
                .get(0)
                .and_then(|s| s.opts.drain_timeout)
                .filter(|_| self.listener.is_some())
            else {
                return true;
            };
            self.drain_until = Some(self.now + drain);
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                // A writable event may have been left undispatched when the stop came: write
                // what the socket takes now, or no new edge may come to say it can.
                self.conns[key].flush();
                self.settle(key);
            }
            return self.conns.is_empty();
        };
        Instant::now() >= until || self.conns.is_empty()
    }

    fn accept(&mut self) {
        let Some(listener) = self.listener.clone() else { return };
        let max = self.services[0].opts.max_conns;
        loop {
            match listener.sock.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) {
                // The slot is taken here, before the connection reaches its loop, so that a
                // burst of connections handed to several loops cannot pass the limit.
                Ok((sock, _)) if !self.reserve_slot(max) => {
                    self.me.stats.rejected.add(1);
                    log!(Info, "connection refused: {max} connections are open (the limit)");
                    drop(sock);
                }
                Ok((sock, _)) => {
                    let target = self.group.pick_loop();
                    let id = target.new_id();
                    let budget = Arc::new(SendBudget::default());
                    if target.index() == self.me.index() {
                        lock(&self.me.inbox).live.insert(id, budget.clone());
                        self.open(sock, id, 0, budget);
                    } else if let Err(e) = target.push(
                        self.group,
                        None,
                        Cmd::Adopt {
                            id,
                            sock,
                            svc: None,
                            budget,
                        },
                    ) {
                        self.group.active.fetch_sub(1, Ordering::Relaxed);
                        log!(Debug, "connection dropped while stopping: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    match self.refuse_without_descriptors(&listener.sock) {
                        Ok(true) => {}
                        // Linux reports EMFILE before it looks at the backlog: it was empty.
                        Ok(false) => return,
                        Err(e) => {
                            log!(
                                Warn,
                                "accept failed: {e}; pending connections wait for a free descriptor"
                            );
                            return;
                        }
                    }
                }
                Err(e) => {
                    log!(Warn, "accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Counts one more open connection unless `max` (0: no limit) are open already.
    fn reserve_slot(&self, max: usize) -> bool {
        let before = self.group.active.fetch_add(1, Ordering::Relaxed);
        if max > 0 && before >= max {
            self.group.active.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Out of descriptors, a pending connection can be neither served nor left in the backlog
    /// (the listener would stay ready, and the peer would wait for nothing): give up the spare
    /// descriptor, accept the connection, close it (a clean refusal, counted), take the spare
    /// back. `Ok(false)` when no connection was pending after all.
    fn refuse_without_descriptors(&mut self, listener: &Socket) -> io::Result<bool> {
        drop(self.spare_fd.take());
        // The accepted socket is closed at once, before the spare is taken back.
        let accepted = listener.accept4(libc::SOCK_CLOEXEC).map(drop);
        self.spare_fd = File::open("/dev/null").ok();
        match accepted {
            Ok(()) => {
                self.me.stats.rejected.add(1);
                log!(Warn, "connection refused: out of file descriptors");
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Registers a connection (already listed as live and counted as active) and runs `on_open`.
    fn open(&mut self, sock: Socket, id: u64, svc: usize, budget: Arc<SendBudget>) {
        let Service { opts, inet, .. } = &*self.services[svc];
        if *inet {
            let _ = sock.set_tcp_nodelay(opts.nodelay);
            if let Some(idle) = opts.keepalive {
                let _ = sock.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle));
            }
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let fd = sock.as_raw_fd();
        let registered = self.poll.registry().register(
            &mut SourceFd(&fd),
            Token(key + FIRST_CONN),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = registered {
            log!(Warn, "cannot poll a new connection: {e}");
            lock(&self.me.inbox).live.remove(&id);
            self.group.active.fetch_sub(1, Ordering::Relaxed);
            self.release_service(svc);
            return;
        }
        entry.insert(ConnState::new(sock, id, svc, budget, self.now));
        self.ids.insert(id, key);
        self.me.stats.opened.add(1);
        if let Some(idle) = opts.idle_timeout {
            self.add_timer(self.now + idle, key, id);
        }
        let (st, svc) = (&mut self.conns[key], &self.services[svc]);
        if let Err(e) = guard(|| svc.handler.on_open(&mut Conn::new(st, svc))) {
            st.failed = Some(e);
        }
        self.settle(key);
    }

    fn ready(&mut self, key: usize, read: Option<ReadTo>, writable: bool) {
        let Some(st) = self.conns.get_mut(key) else { return };
        if st.phase == Phase::Lingering {
            self.discard(key);
            return;
        }
        if writable && st.pending() > 0 {
            st.flush();
        }
        if let Some(to) = read {
            self.read(key, to);
        }
        self.settle(key);
    }

    fn read_again(&mut self, (key, id): (usize, u64)) {
        let Some(st) = self.conns.get_mut(key).filter(|st| st.id == id) else {
            return;
        };
        st.read_again = false;
        if st.phase == Phase::Open {
            self.ready(key, Some(ReadTo::End), false);
        }
    }

    /// Reads a turn's worth from the socket, handing chunks or messages to `on_data`.
    fn read(&mut self, key: usize, to: ReadTo) {
        let st = &mut self.conns[key];
        let svc = &self.services[st.svc];
        for _ in 0..READS_PER_TURN {
            let backlogged = st.paused || st.pending() > svc.opts.low_water();
            if st.phase != Phase::Open || st.failed.is_some() || st.peer_eof || backlogged || !live(self.group, svc) {
                return;
            }
            match sys::recv(st.sock.as_raw_fd(), &mut self.buf) {
                Ok(0) => {
                    st.peer_eof = true;
                    finish_input(self.group, st, svc);
                    if matches!(st.failed, Some(Error::Limit(_))) {
                        self.me.stats.frames_too_large.add(1);
                    }
                }
                Ok(n) => {
                    self.me.stats.bytes_in.add(n as u64);
                    st.since = self.now;
                    deliver(self.group, st, svc, &self.buf[..n]);
                    if matches!(st.failed, Some(Error::Limit(_))) {
                        self.me.stats.frames_too_large.add(1);
                    }
                    if to == ReadTo::Short && n < self.buf.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => st.failed = Some(Error::io("read", e)),
            }
        }
        // Once: a connection listed again at each turn and each new event would get a turn
        // per listing, starving the others for as long as its peer keeps sending.
        if !st.read_again {
            st.read_again = true;
            self.again.push((key, st.id));
        }
    }

    /// Reads and drops a lingering connection's input; removes it at the peer's end.
    fn discard(&mut self, key: usize) {
        let st = &mut self.conns[key];
        loop {
            match sys::recv(st.sock.as_raw_fd(), &mut self.buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.remove(key);
    }

    /// After anything happened to a connection: counts its output, applies backpressure, and
    /// closes it if its state says it is time.
    fn settle(&mut self, key: usize) {
        let st = &mut self.conns[key];
        let svc = &self.services[st.svc];
        // Already closed (lingering): `on_close` has run and must not run again.
        if !matches!(st.phase, Phase::Open | Phase::Closing) {
            return;
        }
        if st.written > 0 {
            self.me.stats.bytes_out.add(st.written as u64);
            st.written = 0;
            st.since = self.now;
        }
        let low_water = svc.opts.low_water();
        if svc.released.load(Ordering::Acquire) && self.drain_until.is_none() {
            // Released inside a callback: close right after it, with the reason a free gives.
            // A stop alone (from another thread, say, while a callback ran) leaves the
            // connection to the stop step, which drains it within the drain timeout.
            st.failed.get_or_insert(Error::Stopped);
        }
        if st.paused && st.pending() <= low_water && st.failed.is_none() {
            st.paused = false;
            if let Err(e) = guard(|| svc.handler.on_drain(&mut Conn::new(st, svc))) {
                st.failed = Some(e);
            }
            // Input that arrived while paused raised no new event: read it now.
            self.read(key, ReadTo::End);
            return self.settle(key);
        }
        if let Some(e) = st.failed.take() {
            self.close(key, Err(e));
        } else if self.drain_until.is_some() && st.pending() == 0 {
            self.close(key, Err(Error::Stopped));
        } else if (st.phase == Phase::Closing || st.peer_eof) && st.pending() == 0 {
            self.close(key, Ok(()));
        } else if !st.paused && st.pending() > low_water {
            st.paused = true;
        }
    }

    /// Runs `on_close` once, then drops the socket (or lingers after an orderly close of ours).
    fn close(&mut self, key: usize, reason: Result<()>) {
        let st = &mut self.conns[key];
        let svc = &self.services[st.svc];
        self.ids.remove(&st.id);
        lock(&self.me.inbox).live.remove(&st.id);
        self.me.stats.closed.add(1);
        st.phase = Phase::Closed;
        if let Err(e) = &reason {
            log!(Debug, "connection {} closed: {e}", st.id);
        }
        // A panic in on_close has nothing left to close; the connection goes either way.
        let _ = guard(|| svc.handler.on_close(&mut Conn::new(st, svc), &reason));
        // After an orderly close, or a drained one while stopping, our output may still be in
        // flight: linger, so that input the peer sends meanwhile does not make the kernel
        // reset the connection and destroy it.
        let drained = self.drain_until.is_some() && matches!(reason, Err(Error::Stopped));
        let orderly = reason.is_ok() && !self.group.stopping();
        if (orderly || drained) && !st.peer_eof {
            st.start_linger(self.now);
            let id = st.id;
            self.add_timer(self.now + LINGER, key, id);
        } else {
            self.remove(key);
        }
    }

    /// Drops a closed connection's socket. It counts toward `max_conns` until here: a
    /// lingering socket holds a descriptor as an open one does.
    fn remove(&mut self, key: usize) {
        let st = self.conns.remove(key);
        self.group.active.fetch_sub(1, Ordering::Relaxed);
        self.release_service(st.svc);
    }

    /// Client connections have a service each; a server's is shared and stays.
    fn release_service(&mut self, svc: usize) {
        if svc != 0 || self.listener.is_none() {
            self.services.remove(svc);
        }
    }

    fn drain_inbox(&mut self) {
        let cmds = std::mem::take(&mut lock(&self.me.inbox).cmds);
        for cmd in cmds {
            match cmd {
                Cmd::Send { id, .. } if !self.ids.contains_key(&id) => {}
                Cmd::Send { id, data, frame, bytes } => {
                    let key = self.ids[&id];
                    let st = &mut self.conns[key];
                    st.budget.taken(bytes);
                    // Fails only if the connection is ending: then `on_close` says why.
                    let _ = Conn::new(st, &self.services[st.svc]).send_accepted(&data, frame);
                    self.settle(key);
                }
                Cmd::Close { id } => {
                    let Some(&key) = self.ids.get(&id) else { continue };
                    let st = &mut self.conns[key];
                    Conn::new(st, &self.services[st.svc]).close();
                    self.settle(key);
                }
                Cmd::Drop { id, done } => {
                    if let Some(&key) = self.ids.get(&id) {
                        self.close(key, Err(Error::Stopped));
                    }
                    let _ = done.send(());
                }
                Cmd::Adopt { id, sock, svc, budget } => {
                    let released = svc.as_ref().is_some_and(|s| s.released.load(Ordering::Acquire));
                    // A server's connections were counted by the acceptor; a client's are here.
                    let svc = match svc {
                        Some(svc) => {
                            self.group.active.fetch_add(1, Ordering::Relaxed);
                            self.services.insert(svc)
                        }
                        None => 0,
                    };
                    if self.group.stopping() || released {
                        lock(&self.me.inbox).live.remove(&id);
                        self.group.active.fetch_sub(1, Ordering::Relaxed);
                        self.release_service(svc);
                    } else {
                        self.open(sock, id, svc, budget);
                    }
                }
            }
        }
    }

    fn next_timeout(&self) -> Option<Duration> {
        let timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
        let next = match (timer, self.drain_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Adds a deadline for connection `key` (`id`). The entries of connections closed since
    /// stay until due; once they outnumber the open ones' (at most two each), they are dropped,
    /// so the timers take memory by the connections open, not by how fast they come and go.
    fn add_timer(&mut self, at: Instant, key: usize, id: u64) {
        self.timers.push(Reverse((at, key, id)));
        if self.timers.len() > 4 * self.conns.len() + 64 {
            let conns = &self.conns;
            self.timers
                .retain(|Reverse((_, key, id))| conns.get(*key).is_some_and(|st| st.id == *id));
        }
    }

    fn expire_timers(&mut self) {
        while let Some(&Reverse((at, key, id))) = self.timers.peek() {
            if at > self.now {
                return;
            }
            self.timers.pop();
            let Some(st) = self.conns.get_mut(key).filter(|st| st.id == id) else {
                continue;
            };
            let due = match st.phase {
                Phase::Lingering => st.since + LINGER,
                Phase::Open | Phase::Closing => match self.services[st.svc].opts.idle_timeout {
                    Some(idle) => st.since + idle,
                    None => continue,
                },
                Phase::Closed => continue,
            };
            if due > self.now {
                self.timers.push(Reverse((due, key, id)));
            } else if st.phase == Phase::Lingering {
                self.remove(key);
            } else {
                self.me.stats.timeouts.add(1);
                st.failed = Some(Error::Timeout("the connection was idle too long".into()));
                self.settle(key);
            }
        }
    }

    /// At the end: every open connection closes with `Stopped`.
    fn close_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            match self.conns[key].phase {
                Phase::Lingering | Phase::Closed => self.remove(key),
                Phase::Open | Phase::Closing => self.close(key, Err(Error::Stopped)),
            }
        }
    }
}

/// At the peer's end: the final line without its newline is a line; a message cut short
/// fails the connection (`Closed`).
fn finish_input(group: &Group, st: &mut ConnState, svc: &Service) {
    let partial = std::mem::take(&mut st.partial);
    match framing::at_eof(svc.opts.framing, svc.opts.max_frame, &partial) {
        Ok(None) => {}
        Ok(Some(last)) => {
            if st.phase == Phase::Open
                && st.failed.is_none()
                && live(group, svc)
                && let Err(e) = guard(|| svc.handler.on_data(&mut Conn::new(st, svc), last))
            {
                st.failed = Some(e);
            }
        }
        Err(e) => {
            log!(Info, "connection {}: {e}", st.id);
            st.failed = Some(e);
        }
    }
}

/// Hands a chunk to `on_data`: as is, or cut into whole messages.
fn deliver(group: &Group, st: &mut ConnState, svc: &Service, data: &[u8]) {
    let opts = &svc.opts;
    if opts.framing == Framing::Raw {
        if let Err(e) = guard(|| svc.handler.on_data(&mut Conn::new(st, svc), data)) {
            st.failed = Some(e);
        }
        return;
    }
    let mut partial = std::mem::take(&mut st.partial);
    let fed = framing::feed(opts.framing, opts.max_frame, &mut partial, data, |msg| {
        if let Err(e) = guard(|| svc.handler.on_data(&mut Conn::new(st, svc), msg)) {
            st.failed = Some(e);
        }
        st.phase == Phase::Open && st.failed.is_none() && live(group, svc)
    });
    match fed {
        Ok(()) => st.partial = partial,
        Err(e) => {
            log!(Info, "connection {}: {e}", st.id);
            st.failed = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use socket2::{Domain, Type};

    use super::*;

    #[test]
    fn timers_of_closed_connections_do_not_pile_up() {
        let (group, mut polls) = Group::new(1).unwrap();
        let mut lp = TcpLoop::new(&group, 0, polls.pop().unwrap(), None);
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let key = lp.conns.insert(ConnState::new(sock, 7, 0, Arc::default(), lp.now));
        let later = lp.now + Duration::from_secs(600);
        lp.add_timer(later, key, 7);
        // Deadlines of connections long gone (as a connect-and-reset flood leaves them).
        for id in 100..100_000 {
            lp.add_timer(later, key + 1, id);
        }
        assert!(lp.timers.len() <= 4 + 64, "{} timers for 1 connection", lp.timers.len());
        assert!(lp.timers.iter().any(|Reverse((_, k, id))| (*k, *id) == (key, 7)));
    }
}
