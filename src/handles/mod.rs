//! The handle kinds that live on a loop (libuv's `stream.c`, `tcp.c`, `udp.c`): a listener
//! ([`listener`]), the streams it accepts, a client adopts or connects ([`stream`],
//! [`connect`], with each connection's state in [`conn`]), and a datagram socket
//! ([`datagram`]), for the servers and clients ([`service`]) that share the loop. [`Handles`]
//! is the loop body that holds them and routes the core's events, commands and deadlines.

pub(crate) mod conn;
mod connect;
pub(crate) mod datagram;
mod listener;
pub(crate) mod service;
pub(crate) mod stream;

use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Instant;

use mio::event::Event;
use mio::{Poll, Token};
use slab::Slab;
use socket2::Socket;

use crate::error::Result;
use crate::loop_core::{self as core, Body, Core, LoopShared, SendBudget};
use crate::socket::Bound;
use crate::stats::Counter;
use conn::Conn;
use datagram::{Datagrams, UdpHandler};
use service::{Counters, Ending, Service, Slot};
use stream::Streams;

/// The loops of a server or of clients, with the commands their handles take.
pub(crate) type Group = core::Group<HandleCmd>;
pub(crate) type Cmd = core::Cmd<HandleCmd>;

/// Work for the handles, from other threads.
pub(crate) enum HandleCmd {
    /// Write bytes (`frame`: as one framed message, `bytes` long with its framing) to a
    /// connection.
    Send {
        id: u64,
        data: Vec<u8>,
        frame: bool,
        bytes: usize,
    },
    /// Close a connection after its queue is flushed.
    Close { id: u64 },
    /// Close a connection at once (reason `Stopped`), then report on `done`.
    Drop { id: u64, done: Sender<()> },
    /// Run `task` with the connection in hand (`None` if it is no longer open).
    Task { id: u64, task: ConnTask },
    /// Connect a client on the loop to its service's addresses.
    Connect { id: u64, svc: Arc<Service> },
    /// Take over a connected socket (a client's, or one a listener on loop 0 hands over),
    /// with the slot it holds in its service.
    Adopt {
        id: u64,
        sock: Socket,
        slot: Slot,
        budget: Arc<SendBudget>,
    },
    /// Serve a TCP server's connections here, and with `bound`, accept them.
    Serve {
        svc: Arc<Service>,
        bound: Option<Arc<Bound>>,
    },
    /// Serve a UDP server's socket here.
    ServeDatagrams(Box<DatagramServer>),
}

/// What a loop needs to serve a UDP server's socket.
pub(crate) struct DatagramServer {
    pub(crate) bound: Arc<Bound>,
    pub(crate) sent: Arc<Counter>,
    pub(crate) handler: Arc<dyn UdpHandler>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) ending: Arc<Ending>,
}

/// Work posted to a connection from any thread, run on its loop with the connection, or with
/// `None` if the connection ended before it could run (so that what it holds can be freed).
pub type ConnTask = Box<dyn FnOnce(Option<&mut Conn<'_>>) + Send>;

/// Queues a send to connection `id` of `group` from any thread (`envelope`: the bytes its
/// framing adds, for a framed message), refused with `Limit` unless the connection's write
/// buffer (`max`) has room for it, counting what was accepted before: what is accepted is
/// never dropped later.
pub(crate) fn push_send(group: &Group, id: u64, data: &[u8], envelope: Option<usize>, max: usize) -> Result<()> {
    let bytes = data.len() + envelope.unwrap_or(0);
    let cmd = Cmd::Handle(HandleCmd::Send {
        id,
        data: data.to_vec(),
        frame: envelope.is_some(),
        bytes,
    });
    group
        .loop_of(id)?
        .push_checked(group, Some(id), cmd, |budget| budget.reserve(id, bytes, max))
}

/// Hands connection `id` (a connected socket) to loop `target` of `group`, listed as open
/// there from now on, so that sends to it are accepted before the loop has taken it.
pub(crate) fn adopt(group: &Group, target: &LoopShared<HandleCmd>, id: u64, sock: Socket, slot: Slot) -> Result<()> {
    let budget = Arc::new(SendBudget::default());
    target.add_live(id, budget.clone());
    let cmd = Cmd::Handle(HandleCmd::Adopt { id, sock, slot, budget });
    let pushed = target.push(group, None, cmd);
    if pushed.is_err() {
        target.remove_live(id);
    }
    pushed
}

/// Poll tokens: a kind in the low two bits (0 is the core's waker) and a slab key above.
const LISTENER: usize = 1;
const DATAGRAM: usize = 2;
const STREAM: usize = 3;

pub(crate) fn listener_token(key: usize) -> Token {
    Token(key << 2 | LISTENER)
}

fn datagram_token(key: usize) -> Token {
    Token(key << 2 | DATAGRAM)
}

pub(crate) fn stream_token(key: usize) -> Token {
    Token(key << 2 | STREAM)
}

/// The handles of one loop.
pub(crate) struct Handles<'g> {
    group: &'g Group,
    index: usize,
    streams: Streams<'g>,
    datagrams: Slab<Datagrams<'g>>,
    /// The group's count of end requests when this loop last looked for servers to end.
    ends_seen: u64,
}

impl Drop for Handles<'_> {
    /// A loop that ends (or panics) lets go of every server it still serves (datagram sockets
    /// let go when dropped).
    fn drop(&mut self) {
        self.streams.let_go_all();
    }
}

/// Runs loop `index` of `group` until the group stops; what it serves arrives in its inbox.
pub(crate) fn run(group: &Group, index: usize, poll: Poll) {
    let mut handles = Handles {
        group,
        index,
        streams: Streams::new(group, index),
        datagrams: Slab::new(),
        ends_seen: 0,
    };
    core::run(group, index, poll, &mut handles);
}

impl Handles<'_> {
    /// Lets go of the datagram sockets of servers whose end was asked for.
    fn end_datagrams(&mut self, core: &mut Core<'_, HandleCmd>) {
        let ending: Vec<usize> = self
            .datagrams
            .iter()
            .filter(|(_, d)| d.ending().requested())
            .map(|(k, _)| k)
            .collect();
        for key in ending {
            self.datagrams.remove(key).stop(core.poll.registry());
        }
    }
}

impl Body<HandleCmd> for Handles<'_> {
    fn start(&mut self, _core: &mut Core<'_, HandleCmd>) -> Result<()> {
        Ok(())
    }

    fn busy(&self) -> bool {
        self.streams.busy() || self.datagrams.iter().any(|(_, d)| d.busy())
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.streams.next_deadline()
    }

    fn resume(&mut self, core: &mut Core<'_, HandleCmd>) {
        self.streams.resume(core.now);
        for (_, d) in &mut self.datagrams {
            d.resume();
        }
    }

    fn event(&mut self, core: &mut Core<'_, HandleCmd>, ev: &Event) {
        let (kind, key) = (ev.token().0 & 3, ev.token().0 >> 2);
        match kind {
            LISTENER => self.streams.accept(core.poll.registry(), key),
            DATAGRAM => {
                if let Some(d) = self.datagrams.get_mut(key) {
                    d.readable();
                }
            }
            _ => self.streams.event(core.poll.registry(), key, ev),
        }
    }

    fn command(&mut self, core: &mut Core<'_, HandleCmd>, cmd: HandleCmd) {
        match cmd {
            HandleCmd::ServeDatagrams(server) => {
                let mut d = Datagrams::new(self.group, self.index, *server);
                if self.group.stopping() {
                    return; // let go when dropped
                }
                let entry = self.datagrams.vacant_entry();
                match d.start(core.poll.registry(), datagram_token(entry.key())) {
                    Ok(()) => {
                        entry.insert(d);
                    }
                    Err(e) => {
                        crate::log::log!(Error, "cannot serve datagrams: {e}");
                        d.stop(core.poll.registry());
                    }
                }
            }
            cmd => self.streams.command(core.poll.registry(), cmd),
        }
    }

    fn woken(&mut self, core: &mut Core<'_, HandleCmd>) {
        let ends = self.group.ends_requested();
        if ends != self.ends_seen {
            self.ends_seen = ends;
            self.streams.end_requested(core.poll.registry());
            self.end_datagrams(core);
        }
    }

    fn expire(&mut self, core: &mut Core<'_, HandleCmd>) {
        self.streams.expire(core.poll.registry(), core.now);
    }

    fn stop_step(&mut self, core: &mut Core<'_, HandleCmd>) -> bool {
        self.streams.stop_step(core.poll.registry())
    }

    fn close_all(&mut self, core: &mut Core<'_, HandleCmd>) {
        self.streams.close_all();
        for (_, d) in std::mem::take(&mut self.datagrams) {
            d.stop(core.poll.registry());
        }
    }
}
