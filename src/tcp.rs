//! The TCP (and Unix stream) server loop: accepts, reads into the loop's one buffer, hands each
//! chunk to the handler, writes queued output when the socket drains, and closes connections
//! exactly once with a reason.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::Socket;

use crate::conn::{Conn, ConnState, Phase};
use crate::error::{Error, Result};
use crate::event_loop::{Control, READ_BUF, READS_PER_TURN, WAKER, lock};
use crate::panic::guard;
use crate::socket::Bound;

/// Callbacks of a TCP server. All run on the server's loop thread, one at a time.
pub trait TcpHandler: Send + 'static {
    /// A connection was accepted.
    fn on_open(&mut self, _conn: &mut Conn<'_>) {}
    /// A chunk of bytes arrived, as the kernel delivered it (no message boundaries).
    fn on_data(&mut self, conn: &mut Conn<'_>, data: &[u8]);
    /// The connection ended: `Ok` for an orderly close, the error otherwise. Runs exactly once
    /// for each connection that was opened.
    fn on_close(&mut self, _conn: &mut Conn<'_>, _reason: &Result<()>) {}
}

const LISTENER: Token = Token(0);
/// Tokens of connections are their slab key plus this.
const FIRST_CONN: usize = 2;
/// How long a closed connection may linger, discarding the peer's late data.
const LINGER: Duration = Duration::from_secs(2);

/// Work handed to the loop by other threads.
pub(crate) struct Inbox {
    /// Open connections: id to slab key, so senders can tell a stale id at once.
    live: HashMap<u64, usize>,
    sends: Vec<(usize, u64, Vec<u8>)>,
}

impl Inbox {
    pub(crate) fn new() -> Inbox {
        Inbox {
            live: HashMap::new(),
            sends: Vec::new(),
        }
    }
}

/// Queues `data` for connection `id` and wakes the loop if it was not already woken.
pub(crate) fn send_from_any_thread(control: &Control, inbox: &Mutex<Inbox>, id: u64, data: &[u8]) -> Result<()> {
    let mut inbox = lock(inbox);
    if control.stopping() {
        return Err(Error::Closed("the server has stopped".into()));
    }
    let key = *inbox
        .live
        .get(&id)
        .ok_or_else(|| Error::Closed(format!("no open connection with id {id}").into()))?;
    let first = inbox.sends.is_empty();
    inbox.sends.push((key, id, data.to_vec()));
    drop(inbox);
    if first {
        control.wake();
    }
    Ok(())
}

struct TcpLoop<H> {
    handler: H,
    control: Arc<Control>,
    inbox: Arc<Mutex<Inbox>>,
    conns: Slab<ConnState>,
    next_id: u64,
    buf: Vec<u8>,
    /// Connections that still had input when their turn ended.
    again: Vec<(usize, u64)>,
    /// Lingering connections by deadline (all lingers are equally long, so this stays sorted).
    lingering: VecDeque<(Instant, usize, u64)>,
    inet: bool,
}

/// Runs the loop until the server is stopped.
pub(crate) fn run<H: TcpHandler>(
    mut poll: Poll,
    listener: Bound,
    control: Arc<Control>,
    inbox: Arc<Mutex<Inbox>>,
    handler: H,
) {
    control.enter_loop();
    let mut lp = TcpLoop {
        handler,
        control: control.clone(),
        inbox,
        conns: Slab::new(),
        next_id: 1,
        buf: vec![0; READ_BUF],
        again: Vec::new(),
        lingering: VecDeque::new(),
        inet: listener.local.as_socket().is_some(),
    };
    let fd = listener.sock.as_raw_fd();
    if poll
        .registry()
        .register(&mut SourceFd(&fd), LISTENER, Interest::READABLE)
        .is_ok()
    {
        let mut events = Events::with_capacity(1024);
        while !control.stopping() {
            let timeout = if lp.again.is_empty() {
                lp.next_deadline()
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            for key in std::mem::take(&mut lp.again) {
                lp.read_again(key);
            }
            for ev in events.iter() {
                if control.stopping() {
                    break;
                }
                match ev.token() {
                    LISTENER => lp.accept(&poll, &listener.sock),
                    WAKER => lp.drain_inbox(),
                    Token(t) => lp.ready(
                        t - FIRST_CONN,
                        ev.is_readable() || ev.is_read_closed(),
                        ev.is_writable(),
                    ),
                }
            }
            lp.expire_lingering();
        }
    }
    lp.close_all();
    drop(listener);
    control.finish();
}

impl<H: TcpHandler> TcpLoop<H> {
    fn accept(&mut self, poll: &Poll, listener: &Socket) {
        loop {
            match listener.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) {
                Ok((sock, _)) => self.open(poll, sock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(_) => return,
            }
        }
    }

    fn open(&mut self, poll: &Poll, sock: Socket) {
        if self.inet {
            let _ = sock.set_tcp_nodelay(true);
        }
        let id = self.next_id;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let fd = sock.as_raw_fd();
        if poll
            .registry()
            .register(
                &mut SourceFd(&fd),
                Token(key + FIRST_CONN),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            return;
        }
        self.next_id += 1;
        entry.insert(ConnState::new(sock, id));
        lock(&self.inbox).live.insert(id, key);
        let st = &mut self.conns[key];
        if let Err(e) = guard(|| self.handler.on_open(&mut Conn::new(st))) {
            st.failed = Some(e);
        }
        self.settle(key);
    }

    fn ready(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(st) = self.conns.get_mut(key) else { return };
        if st.phase == Phase::Lingering {
            self.discard(key);
            return;
        }
        if writable {
            st.flush();
        }
        if readable {
            self.read(key);
        }
        self.settle(key);
    }

    fn read_again(&mut self, (key, id): (usize, u64)) {
        if self
            .conns
            .get(key)
            .is_some_and(|st| st.id == id && st.phase != Phase::Closed)
        {
            self.ready(key, true, false);
        }
    }

    /// Reads until the socket is empty, handing each chunk to `on_data`.
    fn read(&mut self, key: usize) {
        let st = &mut self.conns[key];
        for _ in 0..READS_PER_TURN {
            if st.phase != Phase::Open || st.failed.is_some() || st.peer_eof {
                return;
            }
            match (&st.sock).read(&mut self.buf) {
                Ok(0) => st.peer_eof = true,
                Ok(n) => {
                    let data = &self.buf[..n];
                    if let Err(e) = guard(|| self.handler.on_data(&mut Conn::new(st), data)) {
                        st.failed = Some(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => st.failed = Some(Error::io("read", e)),
            }
        }
        self.again.push((key, st.id));
    }

    /// Reads and drops a lingering connection's input; closes it at the peer's end.
    fn discard(&mut self, key: usize) {
        let st = &mut self.conns[key];
        loop {
            match (&st.sock).read(&mut self.buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.conns.remove(key);
    }

    /// Closes the connection if its state says it is time.
    fn settle(&mut self, key: usize) {
        let st = &mut self.conns[key];
        if let Some(e) = st.failed.take() {
            self.close(key, Err(e));
        } else if (st.phase == Phase::Closing || st.peer_eof) && st.pending() == 0 {
            self.close(key, Ok(()));
        }
    }

    /// Runs `on_close` once, then drops the socket (or lingers after an orderly close of ours).
    fn close(&mut self, key: usize, reason: Result<()>) {
        let st = &mut self.conns[key];
        lock(&self.inbox).live.remove(&st.id);
        st.phase = Phase::Closed;
        // A panic in on_close has nothing left to close; the connection goes either way.
        let _ = guard(|| self.handler.on_close(&mut Conn::new(st), &reason));
        if reason.is_ok() && !st.peer_eof && !self.control.stopping() {
            st.start_linger();
            self.lingering.push_back((Instant::now() + LINGER, key, st.id));
        } else {
            self.conns.remove(key);
        }
    }

    fn drain_inbox(&mut self) {
        let sends = std::mem::take(&mut lock(&self.inbox).sends);
        for (key, id, data) in sends {
            if let Some(st) = self.conns.get_mut(key).filter(|st| st.id == id) {
                // A send that fails here has nobody to report to; the close reason tells.
                let _ = Conn::new(st).send(&data);
                self.settle(key);
            }
        }
    }

    fn next_deadline(&self) -> Option<Duration> {
        self.lingering
            .front()
            .map(|(at, _, _)| at.saturating_duration_since(Instant::now()))
    }

    fn expire_lingering(&mut self) {
        let now = Instant::now();
        while let Some(&(at, key, id)) = self.lingering.front() {
            if at > now {
                break;
            }
            self.lingering.pop_front();
            if self
                .conns
                .get(key)
                .is_some_and(|st| st.id == id && st.phase == Phase::Lingering)
            {
                self.conns.remove(key);
            }
        }
    }

    /// On stop: every open connection closes with `Stopped`.
    fn close_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if self.conns[key].phase == Phase::Lingering {
                self.conns.remove(key);
            } else {
                self.close(key, Err(Error::Stopped));
            }
        }
    }
}
