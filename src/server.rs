//! A server handle: binds at creation, runs its loop on a thread of its own once started, and
//! stops, waits and sends from any thread.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use mio::{Poll, Waker};
use socket2::{SockAddr, Type};

use crate::addr::{self, Addr};
use crate::error::{Error, Result};
use crate::event_loop::{Control, WAKER, lock};
use crate::socket::{self, Bound};
use crate::tcp::{self, Inbox, TcpHandler};
use crate::udp::{self, Responder, UdpHandler};

/// A bound TCP or UDP server. Dropping it stops it and waits for its loop to end.
pub struct Server {
    control: Arc<Control>,
    kind: Kind,
    local: SockAddr,
    /// The poll (and the TCP listener), until `start` moves them to the loop thread.
    setup: Mutex<Option<(Poll, Option<Bound>)>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

enum Kind {
    Tcp(Arc<Mutex<Inbox>>),
    /// The datagram socket, shared so that replies can be sent from any thread.
    Udp(Arc<Bound>),
}

impl Server {
    /// Binds a TCP (or `unix:` stream) server socket and starts listening. It serves nothing
    /// until [`Server::start_tcp`].
    pub fn tcp(addr: &str) -> Result<Server> {
        let bound = socket::bind(&Addr::parse(addr)?, Type::STREAM)?;
        Server::new(bound, |b| (Kind::Tcp(Arc::new(Mutex::new(Inbox::new()))), Some(b)))
    }

    /// Binds a UDP (or `unix:` datagram) server socket. It serves nothing until
    /// [`Server::start_udp`].
    pub fn udp(addr: &str) -> Result<Server> {
        let bound = socket::bind(&Addr::parse(addr)?, Type::DGRAM)?;
        Server::new(bound, |b| (Kind::Udp(Arc::new(b)), None))
    }

    fn new(bound: Bound, split: impl FnOnce(Bound) -> (Kind, Option<Bound>)) -> Result<Server> {
        let poll = Poll::new().map_err(|e| Error::io("epoll_create", e))?;
        let waker = Waker::new(poll.registry(), WAKER).map_err(|e| Error::io("eventfd", e))?;
        let local = bound.local.clone();
        let (kind, listener) = split(bound);
        Ok(Server {
            control: Arc::new(Control::new(waker)),
            kind,
            local,
            setup: Mutex::new(Some((poll, listener))),
            thread: Mutex::new(None),
        })
    }

    /// Starts serving TCP connections on a new loop thread.
    pub fn start_tcp<H: TcpHandler>(&self, handler: H) -> Result<()> {
        let Kind::Tcp(inbox) = &self.kind else {
            return Err(Error::Invalid("not a TCP server".into()));
        };
        let (control, inbox) = (self.control.clone(), inbox.clone());
        self.spawn(move |poll, listener| {
            if let Some(listener) = listener {
                tcp::run(poll, listener, control, inbox, handler);
            }
        })
    }

    /// Starts serving datagrams on a new loop thread.
    pub fn start_udp<H: UdpHandler>(&self, handler: H) -> Result<()> {
        let Kind::Udp(bound) = &self.kind else {
            return Err(Error::Invalid("not a UDP server".into()));
        };
        let (control, bound) = (self.control.clone(), bound.clone());
        self.spawn(move |poll, _| udp::run(poll, &bound.sock, &control, handler))
    }

    fn spawn(&self, body: impl FnOnce(Poll, Option<Bound>) + Send + 'static) -> Result<()> {
        let (poll, listener) = lock(&self.setup)
            .take()
            .ok_or_else(|| Error::Misuse("the server was already started".into()))?;
        let handle = std::thread::Builder::new()
            .name("netsock-loop".into())
            .spawn(move || body(poll, listener))
            .map_err(|e| Error::io("spawning the loop thread", e))?;
        *lock(&self.thread) = Some(handle);
        Ok(())
    }

    /// The bound address (after port 0, the port the OS chose).
    pub fn local_addr(&self) -> &SockAddr {
        &self.local
    }

    /// The bound port; 0 for a Unix-domain server.
    pub fn port(&self) -> u16 {
        self.local.as_socket().map_or(0, |a| a.port())
    }

    /// The bound address as text, in the form [`Addr::parse`] reads.
    pub fn addr_text(&self) -> String {
        addr::format(&self.local)
    }

    /// Asks the server to stop and returns at once. Safe from any thread and from a signal
    /// handler: it only stores a flag and writes to an eventfd.
    pub fn stop(&self) {
        self.control.stop();
    }

    /// Blocks until the server's loop has ended (after [`Server::stop`]).
    pub fn wait(&self) -> Result<()> {
        if lock(&self.setup).is_some() {
            return Err(Error::Misuse("the server was never started".into()));
        }
        self.control.wait()
    }

    /// Sends `data` (copied) to the TCP connection `id` from any thread.
    pub fn send(&self, id: u64, data: &[u8]) -> Result<()> {
        match &self.kind {
            Kind::Tcp(inbox) => tcp::send_from_any_thread(&self.control, inbox, id, data),
            Kind::Udp(_) => Err(Error::Invalid("connection sends need a TCP server".into())),
        }
    }

    /// Sends one datagram from a UDP server's socket to `to`, from any thread.
    pub fn reply(&self, to: &SockAddr, data: &[u8]) -> Result<()> {
        match &self.kind {
            Kind::Udp(_) if self.control.stopping() => Err(Error::Closed("the server has stopped".into())),
            Kind::Udp(bound) => Responder::new(&bound.sock).reply(to, data),
            Kind::Tcp(_) => Err(Error::Invalid("datagram replies need a UDP server".into())),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let handle = lock(&self.thread).take();
        // Dropped inside its own callback, the loop cannot be joined: it ends by itself once the
        // callback returns, since it is stopping.
        if let Some(handle) = handle.filter(|_| !self.control.on_loop_thread()) {
            let _ = handle.join();
        }
    }
}
