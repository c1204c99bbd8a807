//! The streams of a loop (TCP and Unix): accepted from the loop's listener (for a server) or
//! adopted (for clients), read into the loop's one buffer, framed, handed to the handler,
//! written as the socket drains, with backpressure, limits and timeouts; each connection
//! closes exactly once with a reason.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use slab::Slab;
use socket2::{Socket, TcpKeepalive};

use super::cmd::{self, Group, HandleCmd, stream_token};
use super::conn::{Conn, ConnState, Phase, Service, Slot};
use super::listener::Listener;
use super::tls::Session;
use crate::error::{Error, Result};
use crate::framing::{self, Framing};
use crate::log::log;
use crate::loop_core::{LoopShared, SendBudget};
use crate::panic::guard;
use crate::socket::Bound;
use crate::sys;

/// How many reads one socket gets per turn before the others are served.
pub(crate) const READS_PER_TURN: usize = 16;

/// Size of the one read buffer each loop owns (connections own none).
const READ_BUF: usize = 64 * 1024;

/// Reading stops while more than this (or the low-water mark, if lower) waits for the socket,
/// until a writable event drains it: a stream answering what it reads then copies at most the
/// unsent tail of one answer, never a backlog of them (libuv at its best stops reading while a
/// write is pending). No `on_drain` comes of it: that is for the low-water mark.
const STALL: usize = 64 * 1024;

/// How far a read turn goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadTo {
    /// Until a read returns less than the buffer holds: the socket was empty then, and data
    /// arriving later raises a new edge-triggered event. Saves the read that would only say
    /// "would block" (libuv does the same).
    Short,
    /// Until the socket says "would block" or end-of-stream: when the event reported the
    /// peer's end (which raises no second event), and when no event is coming at all.
    End,
}

/// A client waiting to connect again.
pub(crate) struct Reconnect {
    pub(crate) at: Instant,
    pub(crate) id: u64,
    pub(crate) svc: Arc<Service>,
    pub(crate) attempt: u32,
}

/// How long a closed connection may linger, discarding the peer's late data.
const LINGER: Duration = Duration::from_secs(2);

/// The streams of one loop.
pub(crate) struct Streams<'g> {
    pub(super) group: &'g Group,
    pub(super) me: &'g LoopShared<HandleCmd>,
    /// Servers' listening sockets, with their service's key. Only loop 0 of a group listens:
    /// it hands connections round-robin to the loops, which spreads them evenly (a listener
    /// polled by every loop lets whichever wakes first take them all).
    listeners: Slab<(Listener, usize)>,
    /// The services of this loop's connections and listeners, with how many use each.
    pub(super) services: Slab<(Arc<Service>, usize)>,
    /// The servers whose connections this loop serves (for their drain and their end).
    servers: Vec<Arc<Service>>,
    pub(super) conns: Slab<ConnState>,
    pub(super) ids: HashMap<u64, usize>,
    pub(super) buf: Vec<u8>,
    /// Connections that still had input when their turn ended.
    pub(super) again: Vec<(usize, u64)>,
    /// Idle and linger deadlines; an entry is checked against the connection when it is due.
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    pub(super) now: Instant,
    /// Set once stopping began: when queued output stops being flushed.
    drain_until: Option<Instant>,
    /// Clients waiting to connect again.
    pub(super) reconnects: Vec<Reconnect>,
    /// Connections with sends gathered this turn, written when it ends.
    flushes: Vec<(usize, u64)>,
}

/// Whether callbacks other than `on_close` may still run for `svc`'s connections.
pub(super) fn live(group: &Group, svc: &Service) -> bool {
    !group.stopping() && !svc.released.load(Ordering::Acquire)
}

impl<'g> Streams<'g> {
    pub(crate) fn new(group: &'g Group, index: usize) -> Self {
        Streams {
            group,
            me: &group.loops[index],
            listeners: Slab::new(),
            services: Slab::new(),
            servers: Vec::new(),
            conns: Slab::new(),
            ids: HashMap::new(),
            buf: vec![0; READ_BUF],
            again: Vec::new(),
            timers: BinaryHeap::new(),
            now: Instant::now(),
            drain_until: None,
            reconnects: Vec::new(),
            flushes: Vec::new(),
        }
    }

    /// Serves `svc`'s connections here; on each of `bound`, also accepts them (events for a
    /// listener come with the token `token_of(key)`; `keep`: see [`Listener`]). On a group
    /// already stopping, the server is let go at once.
    pub(crate) fn serve(
        &mut self,
        reg: &Registry,
        svc: Arc<Service>,
        (bound, keep): (Vec<Arc<Bound>>, bool),
        token_of: impl Fn(usize) -> Token,
    ) {
        // A loop that stops, or a server freed before this loop ever ran: nothing to serve.
        if self.group.stopping() || svc.ending.requested() {
            svc.ending.let_go();
            return;
        }
        for bound in bound {
            let key = self.service_key(&svc);
            let entry = self.listeners.vacant_entry();
            let mut listener = Listener::new(bound, keep);
            match listener.register(reg, token_of(entry.key())) {
                Ok(()) => {
                    entry.insert((listener, key));
                }
                Err(e) => {
                    log!(Error, "cannot listen: {e}");
                    self.release_service(key);
                }
            }
        }
        self.servers.push(svc);
    }

    /// The key of `svc` among this loop's services, counted as used once more.
    pub(super) fn service_key(&mut self, svc: &Arc<Service>) -> usize {
        match self.services.iter_mut().find(|(_, (s, _))| Arc::ptr_eq(s, svc)) {
            Some((key, (_, refs))) => {
                *refs += 1;
                key
            }
            None => self.services.insert((svc.clone(), 1)),
        }
    }

    /// One use of service `key` less; gone with the last.
    fn release_service(&mut self, key: usize) {
        let refs = &mut self.services[key].1;
        *refs -= 1;
        if *refs == 0 {
            self.services.remove(key);
        }
    }

    /// This loop's counters of service `key`.
    fn stats(&self, key: usize) -> &crate::stats::LoopStats {
        self.services[key].0.counters.of(self.me.index())
    }

    /// Ends here the servers whose end was asked for: their listeners go, their connections
    /// close (`Stopped`), and the loop lets go of them.
    pub(crate) fn end_requested(&mut self, reg: &Registry) {
        let ending: Vec<Arc<Service>> = self.servers.iter().filter(|s| s.ending.requested()).cloned().collect();
        for svc in ending {
            self.servers.retain(|s| !Arc::ptr_eq(s, &svc));
            let listening: Vec<usize> = self
                .listeners
                .iter()
                .filter(|(_, (_, k))| Arc::ptr_eq(&self.services[*k].0, &svc))
                .map(|(key, _)| key)
                .collect();
            for key in listening {
                let (listener, svc_key) = self.listeners.remove(key);
                listener.deregister(reg);
                self.release_service(svc_key);
            }
            let conns: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, st)| Arc::ptr_eq(&self.services[st.svc].0, &svc))
                .map(|(key, _)| key)
                .collect();
            for key in conns {
                match self.conns[key].phase {
                    Phase::Open | Phase::Closing => self.close(key, Err(Error::Stopped)),
                    _ => self.remove(key),
                }
            }
            svc.ending.let_go();
        }
    }

    /// The turn is over: the sends each connection gathered during it go out together. Until
    /// none is left: a flush may run callbacks (`on_drain`, then the input that waited) that
    /// send again, and nothing may wait for the socket while the loop sleeps.
    pub(crate) fn end_turn(&mut self) {
        while !self.flushes.is_empty() {
            let mut list = std::mem::take(&mut self.flushes);
            for (key, id) in list.drain(..) {
                let Some(st) = self.conns.get_mut(key).filter(|st| st.id == id) else {
                    continue;
                };
                st.flush_listed = false;
                if st.gathered {
                    st.flush();
                    self.settle(key);
                }
            }
            // The list is kept for the next turn, unless a burst made it large.
            if self.flushes.is_empty() && list.capacity() <= 1024 {
                self.flushes = list;
            }
        }
    }

    /// Connections had input left when their turn ended.
    pub(crate) fn busy(&self) -> bool {
        !self.again.is_empty()
    }

    /// A new turn: the connections with input left get their next turn.
    pub(crate) fn resume(&mut self, now: Instant) {
        self.now = now;
        for key in std::mem::take(&mut self.again) {
            self.read_again(key);
        }
    }

    /// An event for the stream with slab key `key`.
    pub(crate) fn event(&mut self, reg: &Registry, key: usize, ev: &Event) {
        // Stopped by a callback (a free inside it, say): nothing more is dispatched.
        if self.group.stopping() && self.drain_until.is_none() {
            return;
        }
        if self.conns.get(key).is_some_and(|st| st.phase == Phase::Connecting) {
            return self.dialed(reg, key);
        }
        let read = match (ev.is_readable(), ev.is_read_closed()) {
            (_, true) => Some(ReadTo::End),
            (true, false) => Some(ReadTo::Short),
            (false, false) => None,
        };
        self.ready(key, read, ev.is_writable());
    }

    /// One step of stopping; true when the loop may end. Without a drain timeout every
    /// connection closes at once; with one, reading stops, idle connections close, and the
    /// others close as their queues empty or when the time is up.
    pub(crate) fn stop_step(&mut self, reg: &Registry) -> bool {
        let Some(until) = self.drain_until else {
            for (_, (l, _)) in &self.listeners {
                l.deregister(reg);
            }
            let Some(drain) = self.servers.iter().filter_map(|s| s.opts.drain_timeout).max() else {
                return true;
            };
            self.drain_until = Some(self.now + drain);
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                // Not opened yet: nothing to drain.
                if self.conns[key].phase == Phase::Proxy {
                    self.remove(key);
                    continue;
                }
                // A writable event may have been left undispatched when the stop came: write
                // what the socket takes now, or no new edge may come to say it can.
                self.conns[key].flush();
                self.settle(key);
            }
            return self.conns.is_empty();
        };
        Instant::now() >= until || self.conns.is_empty()
    }

    /// Takes listener `key`'s pending connections and hands them round-robin to the loops.
    pub(crate) fn accept(&mut self, reg: &Registry, key: usize) {
        if self.drain_until.is_some() || self.group.stopping() {
            return;
        }
        let Some((listener, svc_key)) = self.listeners.get(key) else {
            return;
        };
        let (keep, svc) = (listener.keep, self.services[*svc_key].0.clone());
        // Handed over to another process: what waits in the backlog is the new one's.
        if svc.handed_off.load(Ordering::Acquire) {
            return;
        }
        let stats = svc.counters.of(self.me.index());
        while let Some(sock) = self.listeners[key].0.next(&stats.rejected) {
            // The slot is taken here, before the connection reaches its loop, so that a burst
            // of connections handed to several loops cannot pass the limit.
            let Some(slot) = Slot::take(&svc, svc.opts.max_conns) else {
                stats.rejected.add(1);
                log!(
                    Info,
                    "connection refused: {} connections are open (the limit)",
                    svc.opts.max_conns
                );
                continue;
            };
            let target = if keep { self.me } else { self.group.pick_loop() };
            let id = target.new_id();
            if target.index() == self.me.index() {
                let budget = Arc::new(SendBudget::default());
                self.me.add_live(id, budget.clone());
                self.open(reg, sock, id, slot, budget, None);
            } else if let Err(e) = cmd::adopt(self.group, target, id, sock, slot, None) {
                log!(Debug, "connection dropped while stopping: {e}");
            }
        }
    }

    /// Registers a connection (already listed as live, and holding its slot) and runs
    /// `on_open`, after the TLS handshake if it has one (`tls`: a client's, already done).
    fn open(
        &mut self,
        reg: &Registry,
        sock: Socket,
        id: u64,
        slot: Slot,
        budget: Arc<SendBudget>,
        tls: Option<Box<Session>>,
    ) {
        let Service { opts, inet, .. } = &**slot.service();
        if *inet {
            let _ = sock.set_tcp_nodelay(opts.nodelay);
            if let Some(idle) = opts.keepalive {
                let _ = sock.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle));
            }
        }
        let key = self.conns.vacant_entry().key();
        let fd = sock.as_raw_fd();
        let registered = reg.register(
            &mut SourceFd(&fd),
            stream_token(key),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = registered {
            log!(Warn, "cannot poll a new connection: {e}");
            self.me.remove_live(id);
            return;
        }
        let svc = self.service_key(slot.service());
        self.conns.insert(ConnState::new(sock, id, svc, slot, budget, self.now));
        self.ids.insert(id, key);
        let server = self.services[svc].0.target.get().is_none();
        if server && self.services[svc].0.opts.proxy_protocol {
            // TLS, if any, starts after the header (HAProxy sends it before the ClientHello).
            return self.await_proxy(key);
        }
        if self.start_tls(key, tls) {
            return;
        }
        self.opened(key);
    }

    /// A connection is up (accepted, adopted, or connected on the loop): `on_open`.
    pub(super) fn opened(&mut self, key: usize) {
        self.stats(self.conns[key].svc).opened.add(1);
        let st = &mut self.conns[key];
        st.since = self.now;
        if self.services[st.svc].0.opts.idle_timeout.is_some() {
            self.schedule(key);
        }
        let svc = self.conns[key].svc;
        let (st, svc) = (&mut self.conns[key], &self.services[svc].0);
        if let Err(e) = guard(|| svc.handler.on_open(&mut Conn::new(st, svc))) {
            st.failed = Some(e);
        }
        self.settle(key);
    }

    pub(super) fn ready(&mut self, key: usize, read: Option<ReadTo>, writable: bool) {
        let Some(st) = self.conns.get_mut(key) else { return };
        if st.phase == Phase::Lingering {
            self.discard(key);
            return;
        }
        if st.phase == Phase::Proxy {
            return self.read_proxy(key);
        }
        let mut read = read;
        if writable && st.pending() > 0 {
            st.flush();
            if st.stalled && st.pending() <= STALL {
                // Input that waited raised no new event: read it now.
                st.stalled = false;
                read = Some(ReadTo::End);
            }
        }
        if let Some(to) = read {
            self.read(key, to);
            // What the callbacks of this read burst sent goes out now, in one write, rather
            // than after every other connection's turn: the reply does not wait on them.
            let st = &mut self.conns[key];
            if st.gathered {
                st.flush();
            }
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
        if self.conns[key].tls.is_some() {
            return self.read_tls(key, to == ReadTo::Short);
        }
        let st = &mut self.conns[key];
        let svc = &self.services[st.svc].0;
        let stats = svc.counters.of(self.me.index());
        for _ in 0..READS_PER_TURN {
            let backlogged = st.paused || st.user_paused || st.held || st.pending() > svc.opts.low_water();
            if st.phase != Phase::Open || st.failed.is_some() || st.peer_eof || backlogged || !live(self.group, svc) {
                return;
            }
            if st.pending() > STALL {
                st.stalled = true;
                return;
            }
            match sys::recv(st.sock.as_raw_fd(), &mut self.buf) {
                Ok(0) => {
                    st.peer_eof = true;
                    finish_input(self.group, st, svc);
                    if matches!(st.failed, Some(Error::Limit(_))) {
                        stats.frames_too_large.add(1);
                    }
                }
                Ok(n) => {
                    stats.bytes_in.add(n as u64);
                    st.since = self.now;
                    deliver(self.group, st, svc, &self.buf[..n]);
                    if matches!(st.failed, Some(Error::Limit(_))) {
                        stats.frames_too_large.add(1);
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
    pub(super) fn settle(&mut self, key: usize) {
        if self.tls_opened(key) {
            return;
        }
        let st = &mut self.conns[key];
        let svc = &self.services[st.svc].0;
        // Already closed (lingering): `on_close` has run and must not run again.
        if !matches!(st.phase, Phase::Open | Phase::Closing) {
            return;
        }
        if st.gathered && !st.flush_listed {
            st.flush_listed = true;
            self.flushes.push((key, st.id));
        }
        if st.written > 0 {
            svc.counters.of(self.me.index()).bytes_out.add(st.written as u64);
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
        if st.timer_moved {
            st.timer_moved = false;
            self.schedule(key);
            return self.settle(key);
        }
        if st.wants_read && st.failed.is_none() {
            st.wants_read = false;
            // Raw bytes kept before the pause come back at once, new input or not.
            if svc.opts.framing == Framing::Raw && !st.partial.is_empty() && live(self.group, svc) {
                deliver(self.group, st, svc, &[]);
            }
            self.read(key, ReadTo::End);
            return self.settle(key);
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
        } else if (st.phase == Phase::Closing || (st.peer_eof && st.awaiting.as_ref().is_none_or(|a| a.caught_up())))
            && st.pending() == 0
        {
            self.close(key, Ok(()));
        } else if !st.paused && st.pending() > low_water {
            st.paused = true;
        }
    }

    /// Runs `on_close` once, then drops the socket (or lingers after an orderly close of ours).
    fn close(&mut self, key: usize, reason: Result<()>) {
        self.end(key, reason, 0)
    }

    /// `close`, for a client whose connect attempts since it was last up are `attempt`: it
    /// connects again later if its policy says so.
    pub(super) fn end(&mut self, key: usize, reason: Result<()>, attempt: u32) {
        if self.tls_end(key, &reason) {
            return;
        }
        let st = &mut self.conns[key];
        let svc = &self.services[st.svc].0;
        self.ids.remove(&st.id);
        self.me.remove_live(st.id);
        svc.counters.of(self.me.index()).closed.add(1);
        if st.gathered {
            // Sends gathered before the end go out as they would have at once.
            st.flush();
            svc.counters.of(self.me.index()).bytes_out.add(st.written as u64);
            st.written = 0;
        }
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
        let (id, client) = (st.id, svc.target.get().is_some().then(|| svc.clone()));
        if (orderly || drained) && !st.peer_eof {
            st.start_linger(self.now);
            self.add_timer(self.now + LINGER, key, id);
        } else {
            self.remove(key);
        }
        if let Some(svc) = client {
            self.reconnect_later(id, &svc, attempt);
        }
    }

    /// Drops a closed connection's socket. It counts toward `max_conns` until here: a
    /// lingering socket holds a descriptor as an open one does.
    pub(super) fn remove(&mut self, key: usize) {
        let st = self.conns.remove(key);
        if st.phase == Phase::Proxy {
            // Never opened, so never closed: still listed.
            self.ids.remove(&st.id);
            self.me.remove_live(st.id);
        }
        self.release_service(st.svc);
    }

    /// A command from another thread (or a callback) for a connection of this loop.
    pub(crate) fn command(&mut self, reg: &Registry, cmd: HandleCmd) {
        {
            match cmd {
                HandleCmd::Send { id, .. } if !self.ids.contains_key(&id) => {}
                HandleCmd::Send { id, data, frame, bytes } => {
                    let key = self.ids[&id];
                    let st = &mut self.conns[key];
                    st.budget.taken(bytes);
                    // Fails only if the connection is ending: then `on_close` says why.
                    let _ = Conn::new(st, &self.services[st.svc].0).send_accepted(&data, frame);
                    self.settle(key);
                }
                // Not open any more: the buffer is released as the command is dropped.
                HandleCmd::SendOwned { id, .. } if !self.ids.contains_key(&id) => {}
                HandleCmd::SendOwned { id, buf, bytes } => {
                    let key = self.ids[&id];
                    let st = &mut self.conns[key];
                    st.budget.taken(bytes);
                    // Fails only if the connection is ending (releasing the buffer): then
                    // `on_close` says why.
                    let _ = Conn::new(st, &self.services[st.svc].0).send_owned_accepted(buf);
                    self.settle(key);
                }
                HandleCmd::Close { id } => {
                    let Some(&key) = self.ids.get(&id) else { return };
                    let st = &mut self.conns[key];
                    Conn::new(st, &self.services[st.svc].0).close();
                    self.settle(key);
                }
                HandleCmd::Task { id, task } => {
                    let key = self.ids.get(&id).copied().filter(|&key| {
                        let st = &self.conns[key];
                        matches!(st.phase, Phase::Open | Phase::Closing) && live(self.group, &self.services[st.svc].0)
                    });
                    let Some(key) = key else {
                        if let Err(e) = guard(|| task(None)) {
                            log!(Error, "a task posted to connection {id} failed: {e}");
                        }
                        return;
                    };
                    let st = &mut self.conns[key];
                    let svc = &self.services[st.svc].0;
                    if let Err(e) = guard(|| task(Some(&mut Conn::new(st, svc)))) {
                        st.failed = Some(e);
                    }
                    self.settle(key);
                }
                HandleCmd::Drop { id, done } => {
                    self.reconnects.retain(|r| r.id != id);
                    match self.ids.get(&id).map(|&key| (key, self.conns[key].phase)) {
                        // Not up yet: no `on_open`, so no `on_close` either.
                        Some((key, Phase::Connecting)) => {
                            self.ids.remove(&id);
                            self.remove(key);
                        }
                        Some((key, _)) => self.close(key, Err(Error::Stopped)),
                        None => {}
                    }
                    let _ = done.send(());
                }
                HandleCmd::Connect { id, svc } => self.dial(reg, id, svc, 0),
                HandleCmd::Adopt {
                    id,
                    sock,
                    slot,
                    budget,
                    tls,
                } => {
                    let released = slot.service().released.load(Ordering::Acquire);
                    if self.group.stopping() || released {
                        self.me.remove_live(id);
                    } else {
                        self.open(reg, sock, id, slot, budget, tls);
                    }
                }
                HandleCmd::Serve { svc, bound, keep } => self.serve(reg, svc, (bound, keep), cmd::listener_token),
                // Taken by the loop's datagram handles.
                HandleCmd::ServeDatagrams(_) => {}
            }
        }
    }

    /// The next idle or linger deadline, or the end of the drain.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
        [timer, self.drain_until, self.next_reconnect()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Adds a deadline for connection `key` (`id`). The entries of connections closed since
    /// stay until due; once they outnumber the open ones' (at most two each), they are dropped,
    /// so the timers take memory by the connections open, not by how fast they come and go.
    fn add_timer(&mut self, at: Instant, key: usize, id: u64) {
        self.timers.push(Reverse((at, key, id)));
        if let Some(st) = self.conns.get_mut(key).filter(|st| st.id == id) {
            st.next_check = Some(st.next_check.map_or(at, |c| c.min(at)));
        }
        if self.timers.len() > 4 * self.conns.len() + 64 {
            let conns = &self.conns;
            self.timers
                .retain(|Reverse((_, key, id))| conns.get(*key).is_some_and(|st| st.id == *id));
        }
    }

    /// The connection's next deadline: its timer, its idle timeout, or the end of lingering.
    fn due(&self, key: usize) -> Option<Instant> {
        let st = &self.conns[key];
        match st.phase {
            Phase::Connecting => st.dialing.map(|d| d.until),
            Phase::Proxy => self.services[st.svc].0.opts.connect_timeout.map(|t| st.since + t),
            Phase::Lingering => Some(st.since + LINGER),
            Phase::Open | Phase::Closing if self.tls_deadline(key).is_some() => self.tls_deadline(key),
            Phase::Open | Phase::Closing => {
                let idle = self.services[st.svc].0.opts.idle_timeout.map(|idle| st.since + idle);
                match (idle, st.timer_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Phase::Closed => None,
        }
    }

    /// Makes sure an entry is due no later than the connection's next deadline. Deadlines that
    /// move later (traffic, a timer set again) need none: the earlier entry finds them.
    pub(super) fn schedule(&mut self, key: usize) {
        let Some(due) = self.due(key) else { return };
        let st = &self.conns[key];
        if st.next_check.is_none_or(|c| due < c) {
            let id = st.id;
            self.add_timer(due, key, id);
        }
    }

    /// Runs the connections' timers that are due, closes the connections idle too long, and
    /// ends the lingering ones whose time is up.
    pub(crate) fn expire(&mut self, reg: &Registry, now: Instant) {
        self.now = now;
        if !self.reconnects.is_empty() && !self.group.stopping() {
            self.reconnect_due(reg);
        }
        while let Some(&Reverse((at, key, id))) = self.timers.peek() {
            if at > self.now {
                return;
            }
            self.timers.pop();
            let Some(st) = self.conns.get_mut(key).filter(|st| st.id == id) else {
                continue;
            };
            // Only the connection's earliest entry acts; later ones were superseded by it.
            if st.next_check != Some(at) {
                continue;
            }
            st.next_check = None;
            let open = matches!(st.phase, Phase::Open | Phase::Closing);
            if open && st.timer_at.is_some_and(|t| t <= self.now) {
                st.timer_at = None;
                let svc = &self.services[st.svc].0;
                if live(self.group, svc)
                    && let Err(e) = guard(|| svc.handler.on_timer(&mut Conn::new(st, svc)))
                {
                    st.failed = Some(e);
                }
                self.settle(key);
                if self.conns.get(key).is_none_or(|st| st.id != id) {
                    continue;
                }
            }
            match self.due(key) {
                None => {}
                Some(due) if due > self.now => self.schedule(key),
                Some(_) if self.conns[key].phase == Phase::Lingering => self.remove(key),
                Some(_) if self.conns[key].phase == Phase::Connecting => self.dial_timed_out(key),
                Some(_) if self.conns[key].phase == Phase::Proxy => self.proxy_failed(key, "no PROXY header in time"),
                Some(_) if self.tls_deadline(key).is_some() => self.tls_timed_out(key),
                Some(_) => {
                    let st = &mut self.conns[key];
                    if st.timer_at.is_some_and(|t| t <= self.now) {
                        // Set again, already due, inside its own callback: next turn.
                        self.add_timer(self.now + Duration::from_millis(1), key, id);
                        continue;
                    }
                    if st.awaiting.as_ref().is_some_and(|a| a.count() > 0) {
                        // A worker is busy with its events: not idle. Looked at again later.
                        st.since = self.now;
                        self.schedule(key);
                        continue;
                    }
                    self.services[st.svc].0.counters.of(self.me.index()).timeouts.add(1);
                    st.failed = Some(Error::Timeout("the connection was idle too long".into()));
                    self.settle(key);
                }
            }
        }
    }

    /// Lets go of every server this loop serves (it ends).
    pub(crate) fn let_go_all(&mut self) {
        for svc in self.servers.drain(..) {
            svc.ending.let_go();
        }
    }

    /// At the end: every open connection closes with `Stopped`.
    pub(crate) fn close_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            match self.conns[key].phase {
                Phase::Connecting | Phase::Lingering | Phase::Closed | Phase::Proxy => self.remove(key),
                Phase::Open | Phase::Closing => self.close(key, Err(Error::Stopped)),
            }
        }
    }
}

/// At the peer's end: the final line without its newline is a line; a message cut short
/// fails the connection (`Closed`).
pub(super) fn finish_input(group: &Group, st: &mut ConnState, svc: &Service) {
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
pub(super) fn deliver(group: &Group, st: &mut ConnState, svc: &Service, data: &[u8]) {
    let opts = &svc.opts;
    if opts.framing == Framing::Raw {
        // What the application kept of the last delivery (`Conn::keep`) comes first.
        let mut kept = std::mem::take(&mut st.partial);
        let data = if kept.is_empty() {
            data
        } else {
            kept.extend_from_slice(data);
            &kept[..]
        };
        st.delivering = data.len();
        if let Err(e) = guard(|| svc.handler.on_data(&mut Conn::new(st, svc), data)) {
            st.failed = Some(e);
        }
        st.delivering = 0;
        let keep = std::mem::take(&mut st.keep);
        if keep > 0 {
            // Kept from a combined buffer, it stays where it is (a message arriving over many
            // reads is copied once per read, not once per read for all it has so far).
            let start = data.len() - keep;
            if kept.is_empty() {
                st.partial = data[start..].to_vec();
            } else {
                kept.drain(..start);
                st.partial = kept;
            }
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

    use super::super::conn::TcpHandler;
    use super::*;

    #[test]
    fn timers_of_closed_connections_do_not_pile_up() {
        let (group, polls) = Group::new(1).unwrap();
        let mut lp = Streams::new(&group, 0);
        drop(polls);
        struct Nop;
        impl TcpHandler for Nop {
            fn on_data(&self, _: &mut Conn<'_>, _: &[u8]) {}
        }
        let svc = Arc::new(Service::new(Arc::new(Nop), Default::default(), true, 1));
        let slot = Slot::take(&svc, 0).unwrap();
        let svc_key = lp.service_key(&svc);
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let key = lp
            .conns
            .insert(ConnState::new(sock, 7, svc_key, slot, Arc::default(), lp.now));
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
