//! A server handle: binds at creation, runs its loop threads once started, and stops, waits,
//! sends and reports from any thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use mio::Poll;
use socket2::{SockAddr, Type};

use crate::addr::{self, Addr};
use crate::error::{Error, Result};
use crate::framing;
use crate::handles::conn::{Service, TcpHandler};
use crate::handles::datagram::DatagramServer;
use crate::handles::datagram::{Responder, UdpHandler};
use crate::handles::service::{Counters, Ending};
use crate::handles::{self, Cmd, Group, HandleCmd};
use crate::loop_core::lock;
use crate::options::Options;
use crate::socket::{self, Bound};
use crate::stats::{Counter, Stats};
use crate::{ClientLoop, Conn, OwnedBuf};

/// A bound TCP or UDP server. It runs on loops of its own, or on loops it shares with other
/// servers and clients ([`Server::tcp_on`], [`Server::udp_on`]). Dropping it stops it and waits
/// until its loops let go of it.
pub struct Server {
    group: Arc<Group>,
    /// The loops it shares (kept running while it lives); `None`: loops of its own.
    shared: Option<ClientLoop>,
    bound: Arc<Bound>,
    kind: Type,
    opts: Options,
    /// Datagrams sent by replies, from any thread.
    replies: Arc<Counter>,
    /// Loops of its own: their polls, until `start` hands them to the threads.
    polls: Mutex<Option<Vec<Poll>>>,
    started: AtomicBool,
    /// A TCP server's service, released when the server is dropped.
    service: OnceLock<Arc<Service>>,
    /// A UDP server's counters.
    counters: OnceLock<Arc<Counters>>,
    /// The server's end on shared loops.
    ending: OnceLock<Arc<Ending>>,
}

impl Server {
    /// Binds a TCP (or `unix:` stream) server socket and starts listening. It serves nothing
    /// until [`Server::start_tcp`].
    pub fn tcp(addr: &str, opts: &Options) -> Result<Server> {
        Server::bind(addr, Type::STREAM, opts, None)
    }

    /// Binds a UDP (or `unix:` datagram) server socket. It serves nothing until
    /// [`Server::start_udp`].
    pub fn udp(addr: &str, opts: &Options) -> Result<Server> {
        Server::bind(addr, Type::DGRAM, opts, None)
    }

    /// Like [`Server::tcp`], on the loops of `lp` instead of loops of its own.
    pub fn tcp_on(addr: &str, opts: &Options, lp: &ClientLoop) -> Result<Server> {
        Server::bind(addr, Type::STREAM, opts, Some(lp))
    }

    /// Like [`Server::udp`], on the loops of `lp` instead of loops of its own.
    pub fn udp_on(addr: &str, opts: &Options, lp: &ClientLoop) -> Result<Server> {
        Server::bind(addr, Type::DGRAM, opts, Some(lp))
    }

    fn bind(addr: &str, kind: Type, opts: &Options, lp: Option<&ClientLoop>) -> Result<Server> {
        opts.framing.check()?;
        let bound = socket::bind(&Addr::parse(addr)?, kind, opts.backlog)?;
        let (group, polls) = match lp {
            Some(lp) => (lp.group().clone(), None),
            None => {
                let (group, polls) = Group::new(opts.loop_count())?;
                (group, Some(polls))
            }
        };
        Ok(Server {
            group,
            shared: lp.cloned(),
            bound: Arc::new(bound),
            kind,
            opts: opts.clone(),
            replies: Arc::default(),
            polls: Mutex::new(polls),
            started: AtomicBool::new(false),
            service: OnceLock::new(),
            counters: OnceLock::new(),
            ending: OnceLock::new(),
        })
    }

    /// Hands each loop what it serves of this server (`cmd(loop index)`), counting the loops
    /// that hold it until they let go, then starts the loops if they are its own.
    fn start(&self, ending: Arc<Ending>, cmd: impl Fn(usize) -> HandleCmd) -> Result<()> {
        if self.started.swap(true, Ordering::AcqRel) {
            return Err(Error::Misuse("the server was already started".into()));
        }
        let _ = self.ending.set(ending.clone());
        ending.hold(self.group.loops.len());
        for (index, l) in self.group.loops.iter().enumerate() {
            if let Err(e) = l.push(&self.group, None, Cmd::Handle(cmd(index))) {
                // The loops stopped already; the ones that took the command let go as they end.
                for _ in index..self.group.loops.len() {
                    ending.let_go();
                }
                return Err(e);
            }
        }
        let Some(polls) = lock(&self.polls).take() else {
            return Ok(());
        };
        let group = self.group.clone();
        self.group.spawn(polls, self.opts.run_in_wait, move |index, poll| {
            handles::run(&group, index, poll)
        })
    }

    /// Starts serving TCP connections on the loop threads.
    pub fn start_tcp<H: TcpHandler>(&self, handler: H) -> Result<()> {
        if self.kind != Type::STREAM {
            return Err(Error::Invalid("not a TCP server".into()));
        }
        let inet = self.bound.local.as_socket().is_some();
        let loops = self.group.loops.len();
        let svc = Arc::new(Service::new(Arc::new(handler), self.opts.clone(), inet, loops));
        let _ = self.service.set(svc.clone());
        let bound = self.bound.clone();
        self.start(svc.ending.clone(), |index| HandleCmd::Serve {
            svc: svc.clone(),
            bound: (index == 0).then(|| bound.clone()),
        })
    }

    /// Starts serving datagrams on the loop threads.
    pub fn start_udp<H: UdpHandler>(&self, handler: H) -> Result<()> {
        if self.kind != Type::DGRAM {
            return Err(Error::Invalid("not a UDP server".into()));
        }
        let handler: Arc<dyn UdpHandler> = Arc::new(handler);
        let counters = Arc::new(Counters::new(self.group.loops.len()));
        let _ = self.counters.set(counters.clone());
        let ending: Arc<Ending> = Arc::default();
        self.start(ending.clone(), |_| {
            HandleCmd::ServeDatagrams(Box::new(DatagramServer {
                bound: self.bound.clone(),
                sent: self.replies.clone(),
                handler: handler.clone(),
                counters: counters.clone(),
                ending: ending.clone(),
            }))
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

    /// Asks the server to stop and returns at once: loops of its own stop; on shared loops,
    /// its listener and sockets go and its connections close, the rest goes on. Safe from any
    /// thread and from a signal handler: it only stores flags and writes to eventfds.
    pub fn stop(&self) {
        match (&self.shared, self.ending.get()) {
            (None, _) => self.group.stop(),
            (Some(_), Some(ending)) => {
                ending.request();
                self.group.request_ends();
            }
            (Some(_), None) => {}
        }
    }

    /// Blocks until the server's loops have ended (after [`Server::stop`]). With
    /// [`Options::run_in_wait`], the first call runs loop 0 on its thread until then.
    pub fn wait(&self) -> Result<()> {
        self.waiter()?.wait()
    }

    /// What [`Server::wait`] does, without borrowing the server: a callback that runs inside
    /// the wait (`run_in_wait`) may free it.
    pub(crate) fn waiter(&self) -> Result<Waiter> {
        let Some(ending) = self.ending.get() else {
            return Err(Error::Misuse("the server was never started".into()));
        };
        Ok(match self.shared {
            None => Waiter::Own(self.group.clone()),
            Some(_) => Waiter::Shared(self.group.clone(), ending.clone()),
        })
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
            Some(framing::envelope_len(&self.opts.framing, data)?)
        } else {
            None
        };
        handles::push_send(&self.group, id, data, envelope, self.opts.max_write_buffer)
    }

    /// Sends `buf` to the TCP connection `id` without copying it, from any thread: written
    /// from where it is on the connection's loop and dropped there once written or when the
    /// connection ends. Refused (`Limit`, `Closed`, `Invalid`), it is handed back with the
    /// error, not dropped.
    pub fn send_owned(&self, id: u64, buf: Box<dyn OwnedBuf>) -> std::result::Result<(), (Error, Box<dyn OwnedBuf>)> {
        if self.kind != Type::STREAM {
            return Err((Error::Invalid("connection sends need a TCP server".into()), buf));
        }
        handles::push_send_owned(&self.group, id, buf, self.opts.max_write_buffer)
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

    /// A TCP server's handler, once started.
    pub fn handler(&self) -> Option<&dyn TcpHandler> {
        self.service.get().map(|svc| &*svc.handler)
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
        let mut stats = match (self.service.get(), self.counters.get()) {
            (Some(svc), _) => svc.counters.sum(),
            (None, Some(counters)) => counters.sum(),
            (None, None) => Stats::default(),
        };
        stats.datagrams_out += self.replies.get();
        stats
    }
}

/// Waits for a server's end (see [`Server::waiter`]).
pub(crate) enum Waiter {
    /// Its own loops, which end with it.
    Own(Arc<Group>),
    /// Shared loops, which let go of it.
    Shared(Arc<Group>, Arc<Ending>),
}

impl Waiter {
    pub(crate) fn wait(self) -> Result<()> {
        match self {
            Waiter::Own(group) => group.wait(),
            Waiter::Shared(group, _) if group.on_loop_thread() => Err(Error::Misuse(
                "waiting for a server inside a callback of its loops would deadlock".into(),
            )),
            Waiter::Shared(_, ending) => {
                ending.wait();
                Ok(())
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Dropped inside a callback, the loops outlive the handle for a moment: no callback
        // but on_close may run, and none may see the handle.
        if let Some(svc) = self.service.get() {
            svc.release();
        }
        match &self.shared {
            None => self.group.shutdown(),
            Some(_) => {
                self.stop();
                let Some(ending) = self.ending.get() else { return };
                // A first loop that `run` has not started yet will let go when it starts (it
                // serves nothing of a server that asked to end): not waited for.
                if self.group.not_yet_run(0) {
                    ending.let_go();
                }
                // Inside a callback of its loops the end follows when the callback returns.
                if !self.group.on_loop_thread() {
                    ending.wait();
                }
            }
        }
    }
}
