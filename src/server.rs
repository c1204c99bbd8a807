//! A server handle: binds at creation, runs its loop threads once started, and stops, waits,
//! sends and reports from any thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use mio::Poll;
use socket2::{SockAddr, Type};

use crate::addr;
use crate::error::{Error, Result};
use crate::framing;
use crate::handles::conn::{Service, TcpHandler};
use crate::handles::datagram::DatagramServer;
use crate::handles::datagram::{Responder, UdpHandler};
use crate::handles::service::{Counters, Ending};
use crate::handles::workers::{self, Idle, Workers};
use crate::handles::{self, Cmd, Group, HandleCmd};
use crate::listen;
use crate::loop_core::lock;
use crate::options::Options;
use crate::socket::Bound;
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
    /// Its sockets after `bound`: one per loop with SO_REUSEPORT, or as many as were handed over.
    more: Vec<Arc<Bound>>,
    /// A TCP server's worker pool (`Options::workers`), ended after the loops let go.
    workers: OnceLock<Workers>,
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
        let (group, polls) = match lp {
            Some(lp) => (lp.group().clone(), None),
            None => {
                let (group, polls) = Group::new(opts.loop_count())?;
                (group, Some(polls))
            }
        };
        let mut bound = listen::sockets(addr, kind, opts, group.loops.len())?
            .into_iter()
            .map(Arc::new);
        let first = bound.next().ok_or_else(|| Error::Addr("no socket".into()))?;
        Ok(Server {
            group,
            shared: lp.cloned(),
            bound: first,
            more: bound.collect(),
            kind,
            opts: opts.clone(),
            replies: Arc::default(),
            polls: Mutex::new(polls),
            started: AtomicBool::new(false),
            service: OnceLock::new(),
            counters: OnceLock::new(),
            ending: OnceLock::new(),
            workers: OnceLock::new(),
        })
    }

    /// Hands the loops what they serve of this server (`cmds`: loop index and command; each
    /// command's handles let go of the server once), counting the holds until they let go,
    /// then starts the loops if they are its own.
    fn start(&self, ending: Arc<Ending>, cmds: Vec<(usize, HandleCmd)>) -> Result<()> {
        if self.started.swap(true, Ordering::AcqRel) {
            return Err(Error::Misuse("the server was already started".into()));
        }
        let _ = self.ending.set(ending.clone());
        let total = cmds.len();
        ending.hold(total);
        for (sent, (index, cmd)) in cmds.into_iter().enumerate() {
            if let Err(e) = self.group.loops[index].push(&self.group, None, Cmd::Handle(cmd)) {
                // The loops stopped already; the ones that took the command let go as they end.
                for _ in sent..total {
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
        if self.opts.tls.as_ref().is_some_and(|t| !t.is_server()) {
            return Err(Error::Invalid("a server needs a server TLS configuration".into()));
        }
        let inet = self.bound.local.as_socket().is_some();
        let loops = self.group.loops.len();
        let app: Arc<dyn TcpHandler> = Arc::new(handler);
        let mut svc = Service::new(app.clone(), self.opts.clone(), inet, loops);
        if let Some((pool, dispatch)) = workers::start(&app, &self.opts, &self.group)? {
            let _ = self.workers.set(pool);
            svc.handler = dispatch;
        }
        let svc = Arc::new(svc);
        let _ = self.service.set(svc.clone());
        let cmds = listen::tcp_shares(&self.bounds(), loops)
            .into_iter()
            .enumerate()
            .map(|(index, (bound, keep))| {
                let svc = svc.clone();
                (index, HandleCmd::Serve { svc, bound, keep })
            })
            .collect();
        self.start(svc.ending.clone(), cmds)
    }

    /// Every socket of the server.
    fn bounds(&self) -> Vec<Arc<Bound>> {
        std::iter::once(&self.bound).chain(&self.more).cloned().collect()
    }

    /// Hands the server's sockets to a new process started with `handoff:PATH` (passed with
    /// SCM_RIGHTS, to a process of the same user): offers them at `path` for up to `timeout`, then stops accepting,
    /// gives its connections up to the drain timeout to end by themselves, and stops (as
    /// [`Server::stop`], then [`Server::wait`]). `Timeout` if nobody took them: the server
    /// serves on. Not from the server's own loop threads (`Misuse`).
    pub fn handoff(&self, path: &str, timeout: std::time::Duration) -> Result<()> {
        if self.ending.get().is_none() {
            return Err(Error::Misuse("the server was never started".into()));
        }
        if self.group.on_loop_thread() {
            return Err(Error::Misuse(
                "handing off inside a callback of the server's loops would deadlock".into(),
            ));
        }
        let bounds = self.bounds();
        let socks: Vec<&socket2::Socket> = bounds.iter().map(|b| &b.sock).collect();
        crate::handoff::offer(path, &socks, crate::deadline::Deadline::after(Some(timeout)))?;
        for b in &bounds {
            b.keep_file();
        }
        if let Some(svc) = self.service.get() {
            svc.handed_off.store(true, Ordering::Release);
            let until = std::time::Instant::now() + self.opts.drain_timeout.unwrap_or_default();
            // Also those lingering (a stop would cut them short, and late input would then
            // draw a reset) or still waiting for their PROXY header.
            while svc.held() > 0 && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        self.stop();
        self.wait()
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
        let cmds = listen::udp_shares(&self.bounds(), self.group.loops.len())
            .into_iter()
            .map(|(index, bound)| {
                let cmd = HandleCmd::ServeDatagrams(Box::new(DatagramServer {
                    bound,
                    sent: self.replies.clone(),
                    handler: handler.clone(),
                    counters: counters.clone(),
                    ending: ending.clone(),
                }));
                (index, cmd)
            })
            .collect();
        self.start(ending.clone(), cmds)
    }

    /// The bound address (after port 0, the port the OS chose).
    pub fn local_addr(&self) -> &SockAddr {
        &self.bound.local
    }

    /// The bound port; 0 for a Unix-domain server.
    pub fn port(&self) -> u16 {
        self.bound.local.as_socket().map_or(0, |a| a.port())
    }

    /// The bound address as text, in the form [`crate::addr::Addr::parse`] reads.
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
        let how = match self.shared {
            None => Waiting::Own(self.group.clone()),
            Some(_) => Waiting::Shared(self.group.clone(), ending.clone()),
        };
        Ok(Waiter(how, self.workers.get().map(Workers::idle)))
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
        // With workers, on the connection's worker side, in order with its callbacks.
        if let Some(pool) = self.workers.get() {
            return pool.post(id, Box::new(task));
        }
        let cmd = Cmd::Handle(HandleCmd::Task {
            id,
            task: Box::new(task),
        });
        self.group.loop_of(id)?.push(&self.group, Some(id), cmd)
    }

    /// A TCP server's handler, once started.
    pub fn handler(&self) -> Option<&dyn TcpHandler> {
        self.service.get().map(|svc| &*svc.app)
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
        if let Some(pool) = self.workers.get() {
            (stats.worker_busy, stats.worker_queued) = pool.load();
        }
        stats
    }
}

/// Waits for a server's end (see [`Server::waiter`]): its loops, then its worker pool.
pub(crate) struct Waiter(Waiting, Option<Idle>);

enum Waiting {
    /// Its own loops, which end with it.
    Own(Arc<Group>),
    /// Shared loops, which let go of it.
    Shared(Arc<Group>, Arc<Ending>),
}

impl Waiter {
    pub(crate) fn wait(self) -> Result<()> {
        let Waiter(how, idle) = self;
        // Inside a worker callback, waiting for the pool would wait for itself.
        if let Some(idle) = &idle {
            idle.check()?;
        }
        match how {
            Waiting::Own(group) => group.wait()?,
            Waiting::Shared(group, _) if group.on_loop_thread() => {
                return Err(Error::Misuse(
                    "waiting for a server inside a callback of its loops would deadlock".into(),
                ));
            }
            Waiting::Shared(_, ending) => ending.wait(),
        }
        idle.map_or(Ok(()), |idle| idle.wait())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Dropped inside a callback, the loops outlive the handle for a moment: no callback
        // but on_close may run, and none may see the handle.
        if let Some(svc) = self.service.get() {
            svc.release();
        }
        if let Some(pool) = self.workers.get() {
            pool.release();
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
