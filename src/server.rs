//! A server handle: binds at creation, runs its loop threads once started, and stops, waits,
//! sends and reports from any thread.

use std::sync::{Arc, Mutex, OnceLock};

use mio::Poll;
use socket2::{SockAddr, Type};

use crate::addr::{self, Addr};
use crate::error::{Error, Result};
use crate::framing;
use crate::handles::datagram::{Responder, UdpHandler};
use crate::handles::stream::{Service, TcpHandler};
use crate::handles::{self, Cmd, Group, HandleCmd, Start};
use crate::loop_core::lock;
use crate::options::Options;
use crate::socket::{self, Bound};
use crate::stats::{Counter, Stats};
use crate::{ClientLoop, Conn};

/// A bound TCP or UDP server. Dropping it stops it and waits for its loops to end.
pub struct Server {
    group: Arc<Group>,
    bound: Arc<Bound>,
    kind: Type,
    opts: Options,
    /// Datagrams sent by replies, from any thread.
    replies: Arc<Counter>,
    /// The loops' polls, until `start` hands them to the threads.
    polls: Mutex<Option<Vec<Poll>>>,
    /// A TCP server's service, released when the server is dropped.
    service: OnceLock<Arc<Service>>,
}

impl Server {
    /// Binds a TCP (or `unix:` stream) server socket and starts listening. It serves nothing
    /// until [`Server::start_tcp`].
    pub fn tcp(addr: &str, opts: &Options) -> Result<Server> {
        Server::bind(addr, Type::STREAM, opts)
    }

    /// Binds a UDP (or `unix:` datagram) server socket. It serves nothing until
    /// [`Server::start_udp`].
    pub fn udp(addr: &str, opts: &Options) -> Result<Server> {
        Server::bind(addr, Type::DGRAM, opts)
    }

    fn bind(addr: &str, kind: Type, opts: &Options) -> Result<Server> {
        let bound = socket::bind(&Addr::parse(addr)?, kind, opts.backlog)?;
        let (group, polls) = Group::new(opts.loop_count())?;
        Ok(Server {
            group,
            bound: Arc::new(bound),
            kind,
            opts: opts.clone(),
            replies: Arc::default(),
            polls: Mutex::new(Some(polls)),
            service: OnceLock::new(),
        })
    }

    fn take_polls(&self) -> Result<Vec<Poll>> {
        lock(&self.polls)
            .take()
            .ok_or_else(|| Error::Misuse("the server was already started".into()))
    }

    /// Starts serving TCP connections on the loop threads.
    pub fn start_tcp<H: TcpHandler>(&self, handler: H) -> Result<()> {
        self.start_tcp_owned(handler, 0)
    }

    /// Like [`Server::start_tcp`], with a word its connections report as their owner.
    pub(crate) fn start_tcp_owned<H: TcpHandler>(&self, handler: H, owner: usize) -> Result<()> {
        if self.kind != Type::STREAM {
            return Err(Error::Invalid("not a TCP server".into()));
        }
        let inet = self.bound.local.as_socket().is_some();
        let svc = Arc::new(Service::new(Arc::new(handler), self.opts.clone(), owner, inet));
        let _ = self.service.set(svc.clone());
        let (group, bound) = (self.group.clone(), self.bound.clone());
        self.group
            .spawn(self.take_polls()?, self.opts.run_in_wait, move |index, poll| {
                handles::run(&group, index, poll, Start::Listener(bound.clone(), svc.clone()));
            })
    }

    /// Starts serving datagrams on the loop threads.
    pub fn start_udp<H: UdpHandler>(&self, handler: H) -> Result<()> {
        if self.kind != Type::DGRAM {
            return Err(Error::Invalid("not a UDP server".into()));
        }
        let handler: Arc<dyn UdpHandler> = Arc::new(handler);
        let (group, bound, replies) = (self.group.clone(), self.bound.clone(), self.replies.clone());
        self.group
            .spawn(self.take_polls()?, self.opts.run_in_wait, move |index, poll| {
                let start = Start::Datagram(bound.clone(), replies.clone(), handler.clone());
                handles::run(&group, index, poll, start);
            })
    }

    /// The bound address (after port 0, the port the OS chose).
    pub fn local_addr(&self) -> &SockAddr {
        &self.bound.local
    }

    /// The bound port; 0 for a Unix-domain server.
    pub fn port(&self) -> u16 {
        self.bound.local.as_socket().map_or(0, |a| a.port())
    }

    /// The bound address as text, in the form [`Addr::parse`] reads.
    pub fn addr_text(&self) -> String {
        addr::format(&self.bound.local)
    }

    /// Asks the server to stop and returns at once. Safe from any thread and from a signal
    /// handler: it only stores a flag and writes to eventfds.
    pub fn stop(&self) {
        self.group.stop();
    }

    /// Blocks until the server's loops have ended (after [`Server::stop`]). With
    /// [`Options::run_in_wait`], the first call runs loop 0 on its thread until then.
    pub fn wait(&self) -> Result<()> {
        self.waiter()?.wait()
    }

    /// What [`Server::wait`] does, without borrowing the server: a callback that runs inside
    /// the wait (`run_in_wait`) may free it.
    pub(crate) fn waiter(&self) -> Result<Waiter> {
        if lock(&self.polls).is_some() {
            return Err(Error::Misuse("the server was never started".into()));
        }
        Ok(Waiter(self.group.clone()))
    }

    /// Sends `data` (copied) to the TCP connection `id`, from any thread.
    pub fn send(&self, id: u64, data: &[u8]) -> Result<()> {
        self.send_cmd(id, data, false)
    }

    /// Sends `msg` (copied) as one message in the server's framing, from any thread.
    pub fn send_frame(&self, id: u64, msg: &[u8]) -> Result<()> {
        self.send_cmd(id, msg, true)
    }

    fn send_cmd(&self, id: u64, data: &[u8], frame: bool) -> Result<()> {
        if self.kind != Type::STREAM {
            return Err(Error::Invalid("connection sends need a TCP server".into()));
        }
        // A message the framing cannot carry is refused here, not dropped by the loop.
        let envelope = if frame {
            Some(framing::envelope_len(self.opts.framing, data)?)
        } else {
            None
        };
        handles::push_send(&self.group, id, data, envelope, self.opts.max_write_buffer)
    }

    /// Closes the TCP connection `id` once its queued output is written, from any thread.
    /// `Closed` if it is not open.
    pub fn close(&self, id: u64) -> Result<()> {
        if self.kind != Type::STREAM {
            return Err(Error::Invalid("connections belong to a TCP server".into()));
        }
        let cmd = Cmd::Handle(HandleCmd::Close { id });
        self.group.loop_of(id)?.push(&self.group, Some(id), cmd)
    }

    /// Runs `task` on the loop of TCP connection `id` with the connection in hand, or with
    /// `None` if it closed before the task could run. `Closed` (task dropped unrun) if it is
    /// not open now.
    pub fn post(&self, id: u64, task: impl FnOnce(Option<&mut Conn<'_>>) + Send + 'static) -> Result<()> {
        if self.kind != Type::STREAM {
            return Err(Error::Invalid("connections belong to a TCP server".into()));
        }
        let cmd = Cmd::Handle(HandleCmd::Task {
            id,
            task: Box::new(task),
        });
        self.group.loop_of(id)?.push(&self.group, Some(id), cmd)
    }

    /// The server's loops as a handle, for posted work and timers (they run on its first
    /// loop) and for clients that should share them. Valid as long as the server.
    pub fn event_loop(&self) -> ClientLoop {
        ClientLoop::borrowed(self.group.clone())
    }

    /// Sends one datagram from a UDP server's socket to `to`, from any thread.
    pub fn reply(&self, to: &SockAddr, data: &[u8]) -> Result<()> {
        if self.kind != Type::DGRAM {
            return Err(Error::Invalid("datagram replies need a UDP server".into()));
        }
        if self.group.stopping() {
            return Err(Error::Closed("the server has stopped".into()));
        }
        // On one of the server's loops (in a callback), the reply may join the loop's batch.
        Responder::new(&self.bound.sock, &self.replies).reply(to, data)
    }

    /// The server's counters.
    pub fn stats(&self) -> Stats {
        let mut stats = self.group.stats();
        stats.datagrams_out += self.replies.get();
        stats
    }
}

/// Waits for a server's loops (see [`Server::waiter`]).
pub(crate) struct Waiter(Arc<Group>);

impl Waiter {
    pub(crate) fn wait(self) -> Result<()> {
        self.0.wait()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Dropped inside a callback, the loops outlive the handle for a moment: no callback
        // but on_close may run, and none may see the handle.
        if let Some(svc) = self.service.get() {
            svc.release();
        }
        self.group.shutdown();
    }
}
