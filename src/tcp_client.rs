//! Persistent client connections: connected in the caller's thread, then run by a loop like a
//! server's connections, with the same callbacks and options. Many clients may share a loop.

use std::sync::Arc;

use crate::addr::Addr;
use crate::deadline::Deadline;
use crate::error::Result;
use crate::event_loop::{Cmd, Group};
use crate::framing;
use crate::options::Options;
use crate::socket;
use crate::tcp::{self, Service, TcpHandler};

/// Stops and joins the loops when the last client or handle lets go.
struct Owner(Arc<Group>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// Loop threads that client connections can share. Cloning shares them; they run until the
/// last clone and the last client using them are dropped.
#[derive(Clone)]
pub struct ClientLoop(Arc<Owner>);

impl ClientLoop {
    /// Starts `opts.threads` loop threads for clients (0: one per core).
    pub fn new(opts: &Options) -> Result<ClientLoop> {
        let (group, polls) = Group::new(opts.loop_count())?;
        let g = group.clone();
        group.spawn(polls, false, move |index, poll| tcp::run(&g, index, poll, None))?;
        Ok(ClientLoop(Arc::new(Owner(group))))
    }
}

/// One client connection. Dropping it closes the connection at once (`on_close` gets
/// `Stopped`) and waits until that has run, unless dropped inside one of its loop's callbacks.
pub struct Client {
    owner: Arc<Owner>,
    id: u64,
    svc: Arc<Service>,
}

impl Client {
    /// Connects to `addr` within `opts.connect_timeout`, blocking the caller, then hands the
    /// connection to `lp` (or to a loop of its own) where `handler` runs with `opts`.
    pub fn connect<H: TcpHandler>(addr: &str, handler: H, opts: &Options, lp: Option<&ClientLoop>) -> Result<Client> {
        let (sock, _) = socket::connect(&Addr::parse(addr)?, Deadline::after(opts.connect_timeout))?;
        let owner = match lp {
            Some(lp) => lp.0.clone(),
            None => {
                ClientLoop::new(&Options {
                    threads: 1,
                    ..opts.clone()
                })?
                .0
            }
        };
        let group = &owner.0;
        let shared = group.pick_loop();
        let id = shared.new_id();
        let inet = sock.peer_addr().is_ok_and(|a| a.as_socket().is_some());
        let svc = Arc::new(Service::new(Arc::new(handler), opts.clone(), 0, inet));
        shared.push(
            group,
            None,
            Cmd::Adopt {
                id,
                sock,
                svc: Some(svc.clone()),
                budget: Arc::default(),
            },
        )?;
        Ok(Client { owner, id, svc })
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
        let envelope = framing::envelope_len(self.svc.opts.framing, msg)?;
        self.push_send(msg, Some(envelope))
    }

    /// Closes the connection after its queued output is written.
    pub fn close(&self) -> Result<()> {
        self.push(Cmd::Close { id: self.id })
    }

    fn push(&self, cmd: Cmd) -> Result<()> {
        let group = &self.owner.0;
        group.loop_of(self.id)?.push(group, Some(self.id), cmd)
    }

    fn push_send(&self, data: &[u8], envelope: Option<usize>) -> Result<()> {
        let group = &self.owner.0;
        let max = self.svc.opts.max_write_buffer;
        group.loop_of(self.id)?.push_send(group, self.id, data, envelope, max)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Inside one of its own callbacks, this stops every callback but on_close at once.
        self.svc.release();
        let (done, finished) = std::sync::mpsc::channel();
        // Queued even if the connection is no longer open: its on_close may be running now, and
        // the loop takes the command only after that has returned.
        let group = &self.owner.0;
        let pushed = group
            .loop_of(self.id)
            .and_then(|l| l.push(group, None, Cmd::Drop { id: self.id, done }));
        // Inside a callback of this loop, waiting would deadlock: the close runs right after.
        if pushed.is_ok() && !group.on_loop_thread() {
            let _ = finished.recv();
        }
    }
}
