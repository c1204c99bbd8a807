//! The commands a loop's handles take from other threads, and how they are sent: by
//! connection id, with the send budget checked first for sends.

use std::sync::Arc;
use std::sync::mpsc::Sender;

use mio::Token;
use socket2::Socket;

use super::conn::{Conn, Service, Slot};
use super::datagram::DatagramServer;
use super::outq::OwnedBuf;
use super::tls::Session;
use crate::error::{Error, Result};
use crate::loop_core::{self as core, LoopShared, SendBudget};
use crate::socket::Bound;

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
        /// A client's TLS session, its handshake done on its owner's thread.
        tls: Option<Box<Session>>,
    },
    /// Serve a TCP server's connections here, and accept them on the sockets `bound` (none, one,
    /// or several); with `keep`, a connection accepted here is served here, else the loops take
    /// turns.
    Serve {
        svc: Arc<Service>,
        bound: Vec<Arc<Bound>>,
        keep: bool,
    },
    /// Serve a UDP server's socket here.
    ServeDatagrams(Box<DatagramServer>),
    /// Write a buffer the application lent (`bytes` long) to a connection, without copying.
    SendOwned {
        id: u64,
        buf: Box<dyn OwnedBuf>,
        bytes: usize,
    },
}

/// Work posted to a connection from any thread, run on its loop with the connection, or with
/// `None` if the connection ended before it could run (so that what it holds can be freed).
pub(crate) type ConnTask = Box<dyn FnOnce(Option<&mut Conn<'_>>) + Send>;

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

/// Queues a lent buffer for connection `id` of `group` from any thread, as `push_send` does a
/// copy. Refused, the buffer is handed back with the error, not dropped.
pub(crate) fn push_send_owned(
    group: &Group,
    id: u64,
    buf: Box<dyn OwnedBuf>,
    max: usize,
) -> std::result::Result<(), (Error, Box<dyn OwnedBuf>)> {
    let bytes = buf.bytes().len();
    let lp = match group.loop_of(id) {
        Ok(lp) => lp,
        Err(e) => return Err((e, buf)),
    };
    let cmd = Cmd::Handle(HandleCmd::SendOwned { id, buf, bytes });
    lp.try_push(group, Some(id), cmd, |budget| budget.reserve(id, bytes, max))
        .map_err(|(e, cmd)| match cmd {
            Cmd::Handle(HandleCmd::SendOwned { buf, .. }) => (e, buf),
            _ => unreachable!("the command handed back is the one pushed"),
        })
}

/// Hands connection `id` (a connected socket, with its TLS session if it has one) to loop
/// `target` of `group`, listed as open there from now on, so that sends to it are accepted
/// before the loop has taken it.
pub(crate) fn adopt(
    group: &Group,
    target: &LoopShared<HandleCmd>,
    id: u64,
    sock: Socket,
    slot: Slot,
    tls: Option<Box<Session>>,
) -> Result<()> {
    let budget = Arc::new(SendBudget::default());
    target.add_live(id, budget.clone());
    let cmd = Cmd::Handle(HandleCmd::Adopt {
        id,
        sock,
        slot,
        budget,
        tls,
    });
    let pushed = target.push(group, None, cmd);
    if pushed.is_err() {
        target.remove_live(id);
    }
    pushed
}

/// Poll tokens: a kind in the low two bits (0 is the core's waker) and a slab key above.
pub(crate) const LISTENER: usize = 1;
pub(crate) const DATAGRAM: usize = 2;
const STREAM: usize = 3;

pub(crate) fn listener_token(key: usize) -> Token {
    Token(key << 2 | LISTENER)
}

pub(crate) fn datagram_token(key: usize) -> Token {
    Token(key << 2 | DATAGRAM)
}

pub(crate) fn stream_token(key: usize) -> Token {
    Token(key << 2 | STREAM)
}
