//! Persistent client connections: connected in the caller's thread, then run by a loop like a
//! server's connections, with the same callbacks and options. Many clients may share a loop.

use std::sync::Arc;
use std::time::Duration;

use crate::OwnedBuf;
use crate::addr::Addr;
use crate::deadline::Deadline;
use crate::error::Result;
use crate::framing;
use crate::handles::conn::{Service, Slot, TcpHandler};
use crate::handles::workers::{self, Workers};
use crate::handles::{self, Cmd, Group, HandleCmd};
use crate::options::Options;
use crate::socket;

/// Stops and joins the loops when the last client or handle lets go.
struct Owner(Arc<Group>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// Loop threads, as a handle: client connections can share them, and posted work and timers
/// run on the first of them. Cloning shares them. Loops made by [`ClientLoop::new`] run until
/// [`ClientLoop::stop`], or until the last clone and the last client using them are dropped; a
/// server's ([`crate::Server::event_loop`]) live as long as the server.
#[derive(Clone)]
pub struct ClientLoop {
    group: Arc<Group>,
    owner: Option<Arc<Owner>>,
}

impl ClientLoop {
    /// Starts `opts.threads` loop threads (0: one per core). With `opts.run_in_wait`, the
    /// first loop gets no thread: [`ClientLoop::run`] runs it on its caller's thread.
    pub fn new(opts: &Options) -> Result<ClientLoop> {
        let (group, polls) = Group::new(opts.loop_count())?;
        let g = group.clone();
        group.spawn(polls, opts.run_in_wait, move |index, poll| {
            handles::run(&g, index, poll)
        })?;
        Ok(ClientLoop {
            owner: Some(Arc::new(Owner(group.clone()))),
            group,
        })
    }

    pub(crate) fn group(&self) -> &Arc<Group> {
        &self.group
    }

    /// A handle on a server's loops, which the server owns.
    pub(crate) fn borrowed(group: Arc<Group>) -> ClientLoop {
        ClientLoop { group, owner: None }
    }

    /// Runs `task` on the first loop's thread, in the order posted from one thread; `Closed`
    /// (and `task` dropped unrun) once the loops stopped. Tasks still queued when they stop run
    /// then, so that what they hold is freed.
    pub fn post(&self, task: impl FnOnce() + Send + 'static) -> Result<()> {
        self.group.post(Box::new(task))
    }

    /// Starts a timer on the first loop: `cb(id)` after `after`, then every `repeat` (if
    /// given). Returns its id, never 0.
    pub fn timer_start(
        &self,
        after: Duration,
        repeat: Option<Duration>,
        cb: impl FnMut(u64) + Send + 'static,
    ) -> Result<u64> {
        self.group.timer_start(after, repeat, Box::new(cb))
    }

    /// Stops a timer: inside a callback of the first loop, it never runs again; from another
    /// thread, no run starts after this returns (one may be running). `Closed` for an id that
    /// is unknown or done.
    pub fn timer_stop(&self, id: u64) -> Result<()> {
        self.group.timer_stop(id)
    }

    /// Blocks until the loops have ended (after [`ClientLoop::stop`]); with `run_in_wait`, runs
    /// the first loop on this thread meanwhile. `Misuse` inside one of their callbacks.
    pub fn run(&self) -> Result<()> {
        self.group.wait()
    }

    /// Asks the loops to stop and returns at once; their connections close with `Stopped`.
    /// Only atomic stores and eventfd writes: safe in a signal handler.
    pub fn stop(&self) {
        self.group.stop();
    }
}

/// One client connection. Dropping it closes the connection at once (`on_close` gets
/// `Stopped`) and waits until that has run, unless dropped inside one of its loop's callbacks.
pub struct Client {
    group: Arc<Group>,
    /// Keeps a loop of its own (or a shared one) running.
    _owner: Option<Arc<Owner>>,
    id: u64,
    svc: Arc<Service>,
    /// The worker pool of its callbacks (`Options::workers`), ended after the connection.
    workers: Option<Workers>,
}

impl Client {
    /// Connects to `addr` within `opts.connect_timeout`, blocking the caller, then hands the
    /// connection to `lp` (or to a loop of its own) where `handler` runs with `opts`.
    /// With TLS (`opts.tls`), the handshake is done here too, within the same timeout.
    pub fn connect<H: TcpHandler>(addr: &str, handler: H, opts: &Options, lp: Option<&ClientLoop>) -> Result<Client> {
        opts.framing.check()?;
        let opts = &named_tls(opts, addr)?;
        let addr = Addr::parse(addr)?;
        let deadline = Deadline::after(opts.connect_timeout);
        let (sock, _) = socket::connect(&addr, deadline)?;
        let session = match &opts.tls {
            Some(tls) => Some(handles::tls::handshake_blocking(&sock, tls, deadline)?),
            None => None,
        };
        let lp = Self::loop_for(opts, lp)?;
        let group = &lp.group;
        let shared = group.pick_loop();
        let id = shared.new_id();
        let inet = sock.peer_addr().is_ok_and(|a| a.as_socket().is_some());
        let (svc, workers) = Self::service(handler, opts, inet, &lp)?;
        // Kept for reconnecting, which happens on the loop and never resolves names there.
        let _ = svc.target.set(addr.sock_addrs()?);
        handles::adopt(group, shared, id, sock, Slot::take(&svc, 0).expect("no limit"), session)?;
        Ok(Client {
            group: lp.group,
            _owner: lp.owner,
            id,
            svc,
            workers,
        })
    }

    /// Like [`Client::connect`], but returns at once: the connect runs on the loop (a name is
    /// resolved on a thread of its own first, never on a loop thread), then `on_open`; or
    /// `on_close` with `Refused`, `Timeout` or `Addr` and no `on_open`. Only text that cannot be
    /// parsed fails here. Sends before `on_open` are `Closed`.
    pub fn connect_async<H: TcpHandler>(
        addr: &str,
        handler: H,
        opts: &Options,
        lp: Option<&ClientLoop>,
    ) -> Result<Client> {
        opts.framing.check()?;
        let opts = &named_tls(opts, addr)?;
        let parsed = Addr::parse_without_lookup(addr)?;
        let lp = Self::loop_for(opts, lp)?;
        let group = lp.group.clone();
        let id = group.pick_loop().new_id();
        let inet = !matches!(parsed, Some(Addr::Unix(_)));
        let (svc, workers) = Self::service(handler, opts, inet, &lp)?;
        let connect = move |group: &Group, svc: Arc<Service>| {
            let cmd = Cmd::Handle(HandleCmd::Connect { id, svc });
            group.loop_of(id).and_then(|l| l.push(group, None, cmd))
        };
        match parsed {
            Some(addr) => {
                let _ = svc.target.set(addr.sock_addrs()?);
                connect(&group, svc.clone())?;
            }
            None => {
                let (text, svc, group) = (addr.to_owned(), svc.clone(), group.clone());
                std::thread::Builder::new()
                    .name("netsock-resolve".into())
                    .spawn(move || {
                        // A failed lookup leaves no address: the loop reports it in on_close.
                        let addrs = Addr::parse(&text).and_then(|a| a.sock_addrs()).unwrap_or_default();
                        let _ = svc.target.set(addrs);
                        let _ = connect(&group, svc);
                    })
                    .map_err(|e| crate::Error::io("spawning a resolver thread", e))?;
            }
        }
        Ok(Client {
            group: lp.group,
            _owner: lp.owner,
            id,
            svc,
            workers,
        })
    }

    /// The service of a client's connection, with its worker pool if it has one.
    fn service<H: TcpHandler>(
        handler: H,
        opts: &Options,
        inet: bool,
        lp: &ClientLoop,
    ) -> Result<(Arc<Service>, Option<Workers>)> {
        let app: Arc<dyn TcpHandler> = Arc::new(handler);
        let mut svc = Service::new(app.clone(), opts.clone(), inet, lp.group.loops.len());
        let pool = workers::start(&app, opts, &lp.group)?.map(|(pool, dispatch)| {
            svc.handler = dispatch;
            pool
        });
        Ok((Arc::new(svc), pool))
    }

    /// The loop a client runs on: `lp`, or one of its own.
    fn loop_for(opts: &Options, lp: Option<&ClientLoop>) -> Result<ClientLoop> {
        match lp {
            Some(lp) => Ok(lp.clone()),
            None => ClientLoop::new(&Options {
                threads: 1,
                run_in_wait: false,
                ..opts.clone()
            }),
        }
    }

    /// Runs `task` on the connection's loop with the connection in hand, or with `None` if it
    /// closed before the task could run. `Closed` (task dropped unrun) if it is not open now.
    pub fn post(&self, task: impl FnOnce(Option<&mut crate::Conn<'_>>) + Send + 'static) -> Result<()> {
        // With workers, on the connection's worker side, in order with its callbacks.
        if let Some(pool) = &self.workers {
            return pool.post(self.id, Box::new(task));
        }
        let cmd = Cmd::Handle(HandleCmd::Task {
            id: self.id,
            task: Box::new(task),
        });
        self.group.loop_of(self.id)?.push(&self.group, Some(self.id), cmd)
    }

    /// The connection's id, as its callbacks see it.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sends `data` (copied), from any thread.
    pub fn send(&self, data: &[u8]) -> Result<()> {
        self.push_send(data, None)
    }

    /// Sends `msg` (copied) as one message in the connection's framing, from any thread.
    pub fn send_frame(&self, msg: &[u8]) -> Result<()> {
        let envelope = framing::envelope_len(&self.svc.opts.framing, msg)?;
        self.push_send(msg, Some(envelope))
    }

    /// Sends `buf` without copying it, from any thread: written from where it is on the
    /// connection's loop and dropped there once written or when the connection ends.
    /// Refused (`Limit`, `Closed`), it is handed back with the error, not dropped.
    pub fn send_owned(&self, buf: Box<dyn OwnedBuf>) -> std::result::Result<(), (crate::Error, Box<dyn OwnedBuf>)> {
        handles::push_send_owned(&self.group, self.id, buf, self.svc.opts.max_write_buffer)
    }

    /// Closes the connection after its queued output is written; it does not reconnect.
    pub fn close(&self) -> Result<()> {
        self.svc.by_user.store(true, std::sync::atomic::Ordering::Release);
        self.push(Cmd::Handle(HandleCmd::Close { id: self.id }))
    }

    fn push(&self, cmd: Cmd) -> Result<()> {
        self.group.loop_of(self.id)?.push(&self.group, Some(self.id), cmd)
    }

    fn push_send(&self, data: &[u8], envelope: Option<usize>) -> Result<()> {
        let group = &self.group;
        let max = self.svc.opts.max_write_buffer;
        handles::push_send(group, self.id, data, envelope, max)
    }
}

/// `opts` with its TLS configuration, if any, bound to the host of `addr` (its SNI and the
/// name the server's certificate must be valid for).
fn named_tls(opts: &Options, addr: &str) -> Result<Options> {
    let tls = opts.tls.as_ref().map(|t| t.for_address(addr)).transpose()?;
    Ok(Options { tls, ..opts.clone() })
}

impl Drop for Client {
    fn drop(&mut self) {
        // Inside one of its own callbacks, this stops every callback but on_close at once.
        self.svc.release();
        if let Some(pool) = &self.workers {
            pool.release();
        }
        let (done, finished) = std::sync::mpsc::channel();
        // Queued even if the connection is no longer open: its on_close may be running now, and
        // the loop takes the command only after that has returned.
        let group = &self.group;
        let pushed = group
            .loop_of(self.id)
            .and_then(|l| l.push(group, None, Cmd::Handle(HandleCmd::Drop { id: self.id, done })));
        // Inside a callback of this loop, waiting would deadlock: the close runs right after.
        // A loop that `run` has not started yet has not opened the connection either.
        if pushed.is_ok() && !group.on_loop_thread() && !group.not_yet_run(self.id as usize & 0xff) {
            let _ = finished.recv();
        }
    }
}
