//! The handle kinds that live on a loop (libuv's `stream.c`, `tcp.c`, `udp.c`): a listener
//! ([`listener`]), the streams it accepts or a client adopts ([`stream`], with each
//! connection's state in [`conn`]), and a datagram socket ([`datagram`]). [`Handles`] is the
//! loop body that holds them and routes the core's events, commands and deadlines to them.

pub(crate) mod conn;
mod connect;
pub(crate) mod datagram;
mod listener;
pub(crate) mod stream;

use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Instant;

use mio::event::Event;
use mio::{Poll, Token};
use socket2::Socket;

use crate::error::Result;
use crate::loop_core::{self as core, Body, Core, LoopShared, SendBudget};
use crate::socket::Bound;
use crate::stats::Counter;
use conn::Conn;
use datagram::{Datagrams, UdpHandler};
use stream::{Service, Streams};

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
    /// Take over a connected socket: a client's, with its own service, or one the server's
    /// acceptor (loop 0) hands over, with `None` for the server's service.
    Adopt {
        id: u64,
        sock: Socket,
        svc: Option<Arc<Service>>,
        budget: Arc<SendBudget>,
    },
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
pub(crate) fn adopt(
    group: &Group,
    target: &LoopShared<HandleCmd>,
    id: u64,
    sock: Socket,
    svc: Option<Arc<Service>>,
) -> Result<()> {
    let budget = Arc::new(SendBudget::default());
    target.add_live(id, budget.clone());
    let cmd = Cmd::Handle(HandleCmd::Adopt { id, sock, svc, budget });
    let pushed = target.push(group, None, cmd);
    if pushed.is_err() {
        target.remove_live(id);
    }
    pushed
}

/// Poll tokens: the waker is the core's (0); then the listener, the datagram socket, and the
/// streams by their slab key.
const LISTENER: Token = Token(1);
const DATAGRAM: Token = Token(2);
const FIRST_STREAM: usize = 3;

/// What one loop of a server starts with.
pub(crate) enum Start {
    /// Nothing: client connections arrive through the inbox.
    Nothing,
    /// A TCP server's listener and service (loop 0 accepts; the others take connections).
    Listener(Arc<Bound>, Arc<Service>),
    /// A UDP server's socket, shared by its loops, with the counter of replies sent.
    Datagram(Arc<Bound>, Arc<Counter>, Arc<dyn UdpHandler>),
}

/// The handles of one loop.
pub(crate) struct Handles<'g> {
    streams: Streams<'g>,
    datagrams: Option<Datagrams<'g>>,
}

/// Runs loop `index` of `group`, with what it starts with, until the group stops.
pub(crate) fn run(group: &Group, index: usize, poll: Poll, start: Start) {
    let (listener, datagrams) = match start {
        Start::Nothing => (None, None),
        Start::Listener(bound, svc) => (Some((bound, svc)), None),
        Start::Datagram(bound, sent, handler) => (None, Some(Datagrams::new(group, index, bound, sent, handler))),
    };
    let mut handles = Handles {
        streams: Streams::new(group, index, listener),
        datagrams,
    };
    core::run(group, index, poll, &mut handles);
    if let Some(d) = &mut handles.datagrams {
        d.finish();
    }
}

impl Body<HandleCmd> for Handles<'_> {
    fn start(&mut self, core: &mut Core<'_, HandleCmd>) -> Result<()> {
        self.streams.start(core.poll.registry(), LISTENER)?;
        if let Some(d) = &mut self.datagrams {
            d.start(core.poll.registry(), DATAGRAM)?;
        }
        Ok(())
    }

    fn busy(&self) -> bool {
        self.streams.busy() || self.datagrams.as_ref().is_some_and(|d| d.busy())
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.streams.next_deadline()
    }

    fn resume(&mut self, core: &mut Core<'_, HandleCmd>) {
        self.streams.resume(core.now);
        if let Some(d) = &mut self.datagrams {
            d.resume();
        }
    }

    fn event(&mut self, core: &mut Core<'_, HandleCmd>, ev: &Event) {
        match ev.token() {
            LISTENER => self.streams.accept(core.poll.registry()),
            DATAGRAM => {
                if let Some(d) = &mut self.datagrams {
                    d.readable();
                }
            }
            Token(t) => self.streams.event(core.poll.registry(), t - FIRST_STREAM, ev),
        }
    }

    fn command(&mut self, core: &mut Core<'_, HandleCmd>, cmd: HandleCmd) {
        self.streams.command(core.poll.registry(), cmd);
    }

    fn expire(&mut self, core: &mut Core<'_, HandleCmd>) {
        self.streams.expire(core.poll.registry(), core.now);
    }

    fn stop_step(&mut self, core: &mut Core<'_, HandleCmd>) -> bool {
        self.streams.stop_step(core.poll.registry())
    }

    fn close_all(&mut self, _core: &mut Core<'_, HandleCmd>) {
        self.streams.close_all();
    }
}
