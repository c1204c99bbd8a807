//! The handle kinds that live on a loop (libuv's `stream.c`, `tcp.c`, `udp.c`): a listener
//! ([`listener`]), the streams it accepts, a client adopts or connects ([`stream`],
//! [`connect`], with each connection's state in [`conn`]), and a datagram socket
//! ([`datagram`]), for the servers and clients ([`service`]) that share the loop. [`Handles`]
//! is the loop body that holds them and routes the core's events, commands and deadlines.

mod cmd;
pub(crate) mod conn;
mod connect;
pub(crate) mod datagram;
mod listener;
pub(crate) mod outq;
mod proxy;
pub(crate) mod service;
mod stream;
pub(crate) mod tls;
pub(crate) mod workers;

pub(crate) use cmd::{Cmd, Group, HandleCmd, adopt, push_send, push_send_owned};

use std::time::Instant;

use mio::Poll;
use mio::event::Event;
use slab::Slab;

use crate::error::Result;
use crate::loop_core::{self as core, Body, Core};
use cmd::{DATAGRAM, LISTENER, datagram_token};
use datagram::Datagrams;
use stream::Streams;

/// The handles of one loop.
pub(crate) struct Handles<'g> {
    group: &'g Group,
    index: usize,
    streams: Streams<'g>,
    datagrams: Slab<Datagrams<'g, HandleCmd>>,
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
                if self.group.stopping() || d.ending().requested() {
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

    fn end_turn(&mut self, _core: &mut Core<'_, HandleCmd>) {
        self.streams.end_turn();
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
