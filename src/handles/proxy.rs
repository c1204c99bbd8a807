//! The PROXY protocol phase of a server's stream ([`crate::Options::proxy_protocol`]): before
//! `on_open`, the header is looked at with MSG_PEEK until it is whole, then exactly its bytes
//! are taken, so that what follows it stays in the socket for the first read and `on_data`
//! never sees the header. A connection whose header is malformed, missing when the peer
//! closes, or not whole within the connect timeout is closed without `on_open` and counted.

use std::io;
use std::os::fd::AsRawFd;

use super::conn::Phase;
use super::stream::{ReadTo, Streams};
use crate::log::log;
use crate::proxy_protocol::{self, Header};
use crate::sys;

/// What the first look at a connection takes: any v1 header, and a v2 header with its
/// addresses and some TLVs; a longer v2 header is looked at again at its announced length.
const FIRST_LOOK: usize = 256;

impl Streams<'_> {
    /// A new connection of a server with the option waits for its header, up to the connect
    /// timeout from now.
    pub(super) fn await_proxy(&mut self, key: usize) {
        let st = &mut self.conns[key];
        st.phase = Phase::Proxy;
        st.since = self.now;
        self.schedule(key);
    }

    /// Input arrived on a connection waiting for its header.
    pub(super) fn read_proxy(&mut self, key: usize) {
        let fd = self.conns[key].sock.as_raw_fd();
        let mut want = FIRST_LOOK;
        let (len, source) = loop {
            let n = match sys::peek(fd, &mut self.buf[..want]) {
                Ok(0) => return self.proxy_failed(key, "closed before its PROXY header"),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.proxy_failed(key, &format!("read failed: {e}")),
            };
            match proxy_protocol::parse(&self.buf[..n]) {
                Ok(Header::Done { len, source }) => break (len, source),
                Ok(Header::Partial(Some(len))) if len > self.buf.len() => {
                    return self.proxy_failed(key, "a PROXY v2 header longer than 64 KiB");
                }
                Ok(Header::Partial(Some(len))) if len > want => want = len,
                // The rest comes with a new event.
                Ok(Header::Partial(_)) => return,
                Err(why) => return self.proxy_failed(key, why),
            }
        };
        // Exactly the header's bytes, which the look showed are there.
        match sys::recv(fd, &mut self.buf[..len]) {
            Ok(n) if n == len => {}
            Ok(_) => return self.proxy_failed(key, "the PROXY header could not be taken whole"),
            Err(e) => return self.proxy_failed(key, &format!("read failed: {e}")),
        }
        let st = &mut self.conns[key];
        st.proxied = source.map(Box::new);
        st.phase = Phase::Open;
        if !self.start_tls(key, None) {
            self.opened(key);
        }
        // What followed the header (data, or a TLS ClientHello) raised no event of its own.
        if self.conns.get(key).is_some_and(|st| st.phase == Phase::Open) {
            self.ready(key, Some(ReadTo::End), false);
        }
    }

    /// Closes a connection without a valid header (no `on_open`, so no `on_close`): with a
    /// FIN, not a reset, once what it sent (one buffer's worth at most) is taken.
    pub(super) fn proxy_failed(&mut self, key: usize, why: &str) {
        let st = &self.conns[key];
        let _ = sys::recv(st.sock.as_raw_fd(), &mut self.buf);
        let svc = &self.services[st.svc].0;
        svc.counters.of(self.me.index()).proxy_rejected.add(1);
        log!(Info, "connection {} refused: {why}", st.id);
        self.remove(key);
    }
}
