//! TLS as a layer of the stream handle: the bytes of the socket go through a rustls session
//! ([`Session`]) and the callbacks see plaintext, with the stream's framing, limits and
//! backpressure unchanged. A connection is open (`on_open`) only once its handshake is done,
//! within the connect timeout; a server's connection that fails before then is counted and
//! dropped without a callback, a client's gets `on_close` with the reason.
//!
//! Output is sealed at once and queued as ciphertext, so the write queue, its limit and the
//! send budget count the bytes that wait for the socket, as they do without TLS.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, ServerConnection};
use socket2::Socket;

use super::conn::{ConnState, GATHER_MAX, Phase};
use super::outq::OutQueue;
use super::stream::{self, Streams};
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::log::log;
use crate::sys;
use crate::tls_config::{Side, TlsConfig};

/// Most ciphertext read from the socket at once: one record's worth, so that what it decrypts
/// to always fits rustls's plaintext buffer and nothing waits in the backlog.
const CIPHER_READ: usize = 16 * 1024 + 512;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshaking,
    /// The handshake finished; `on_open` has not run yet.
    Done,
    /// `on_open` ran: failures from now on are closes like any other.
    Open,
}

/// What a read of plaintext found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// This many bytes of plaintext.
    Plain(usize),
    /// Nothing decrypted waits: read the socket.
    Empty,
    /// The peer's close_notify: an orderly end of its stream.
    End,
}

/// One TLS session over a stream: ciphertext in from the socket, plaintext out to the
/// callbacks, and the reverse. Knows no socket: the stream reads and writes for it.
pub struct Session {
    conn: Connection,
    /// Ciphertext read from the socket that rustls had no room for yet.
    backlog: Vec<u8>,
    state: State,
    /// The handshake must be done by then.
    pub(crate) deadline: Option<Instant>,
}

fn tls_error(e: rustls::Error) -> Error {
    Error::Tls(e.to_string().into())
}

impl Session {
    /// A server's session with `config` (`Invalid` for a client's configuration).
    pub fn server(config: &TlsConfig) -> Result<Session> {
        let Side::Server(config) = &config.0 else {
            return Err(Error::Invalid("a server needs a server TLS configuration".into()));
        };
        let conn = ServerConnection::new(config.clone()).map_err(tls_error)?;
        Ok(Session::new(conn.into()))
    }

    /// A client's session with `config`, which names the server (`TlsConfig::for_address`).
    pub fn client(config: &TlsConfig) -> Result<Session> {
        let Side::Client(config, Some(name)) = &config.0 else {
            return Err(Error::Invalid(
                "a client needs a client TLS configuration with a server name".into(),
            ));
        };
        let name: ServerName<'static> = name.clone();
        let conn = ClientConnection::new(config.clone(), name).map_err(tls_error)?;
        Ok(Session::new(conn.into()))
    }

    fn new(mut conn: Connection) -> Session {
        // What waits to be sent is bounded by the stream's write buffer limit, not here.
        conn.set_buffer_limit(None);
        Session {
            conn,
            backlog: Vec::new(),
            state: State::Handshaking,
            deadline: None,
        }
    }

    /// The handshake is not finished.
    pub fn handshaking(&self) -> bool {
        self.state == State::Handshaking
    }

    /// The handshake finished since the last call (once per session).
    fn take_done(&mut self) -> bool {
        let done = self.state == State::Done;
        if done {
            self.state = State::Open;
        }
        done
    }

    /// Whether the socket should be read: rustls holds no undelivered input.
    pub fn wants_input(&self) -> bool {
        self.backlog.is_empty()
    }

    /// Takes `data`, ciphertext from the socket: rustls processes what it has room for, the
    /// rest waits in the backlog for `read_plain`. A malformed or refused record, a failed
    /// verification or an alert is `Tls` (an alert of ours may then wait to be sent).
    pub fn feed(&mut self, data: &[u8]) -> Result<()> {
        if !self.backlog.is_empty() {
            self.backlog.extend_from_slice(data);
            return self.pump();
        }
        let mut rest = data;
        self.take(&mut rest)?;
        self.backlog.extend_from_slice(rest);
        Ok(())
    }

    /// The peer ended its TCP stream.
    pub fn feed_eof(&mut self) {
        // An empty read is how rustls learns of the end; it refuses none while input waits,
        // and the stream reads the socket only when none does.
        let _ = self.conn.read_tls(&mut io::empty());
    }

    /// Hands rustls what it takes of `data`, processing each piece.
    fn take(&mut self, data: &mut &[u8]) -> Result<()> {
        while !data.is_empty() {
            match self.conn.read_tls(data) {
                // After the peer's close_notify nothing more is read: the rest is dropped.
                Ok(0) => *data = &[],
                Ok(_) => {}
                // Decrypted input fills rustls's buffer: the rest waits until it is read.
                Err(e) if e.kind() == io::ErrorKind::Other => break,
                Err(e) => return Err(Error::Tls(format!("bad TLS input: {e}").into())),
            }
            self.conn.process_new_packets().map_err(tls_error)?;
        }
        if self.state == State::Handshaking && !self.conn.is_handshaking() {
            self.state = State::Done;
        }
        Ok(())
    }

    /// Feeds the backlog, keeping what rustls still has no room for.
    fn pump(&mut self) -> Result<()> {
        let mut backlog = std::mem::take(&mut self.backlog);
        let mut rest = &backlog[..];
        let taken = self.take(&mut rest);
        let used = backlog.len() - rest.len();
        backlog.drain(..used);
        self.backlog = backlog;
        taken
    }

    /// Decrypted input into `buf` (not empty), from what rustls holds or the backlog. A TCP
    /// end without the peer's close_notify after the handshake is `Closed` (a truncation).
    pub fn read_plain(&mut self, buf: &mut [u8]) -> Result<Input> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(0) => return Ok(Input::End),
                Ok(n) => return Ok(Input::Plain(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    let step = if self.handshaking() {
                        "during the TLS handshake"
                    } else {
                        "without a TLS close_notify"
                    };
                    return Err(Error::Closed(format!("the peer ended the connection {step}").into()));
                }
                Err(e) => return Err(Error::Tls(e.to_string().into())),
            }
            if self.backlog.is_empty() {
                return Ok(Input::Empty);
            }
            self.pump()?;
        }
    }

    /// Seals `parts` as one piece of plaintext (before the handshake is done, rustls keeps
    /// it until then).
    pub fn write_plain(&mut self, parts: &[&[u8]]) -> Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut done = 0;
        while done < total {
            let n = match (done, parts) {
                // One part (`ns_conn_send`): sealed without gathering anything first.
                (0, [one]) => self.conn.writer().write(one),
                (0, _) => {
                    let slices: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
                    self.conn.writer().write_vectored(&slices)
                }
                _ => self.conn.writer().write(&parts.concat()[done..]),
            }
            .map_err(|e| Error::Tls(format!("cannot seal output: {e}").into()))?;
            if n == 0 {
                return Err(Error::Tls("the TLS session takes no more output".into()));
            }
            done += n;
        }
        Ok(())
    }

    /// Sends the close_notify alert (with the next ciphertext taken).
    pub fn close_notify(&mut self) {
        self.conn.send_close_notify();
    }

    /// Whether ciphertext waits to be taken.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Writes waiting ciphertext to `out` until none waits or `out` fails (`WouldBlock`
    /// included); returns how much was written.
    pub fn write_cipher(&mut self, out: &mut dyn Write) -> io::Result<usize> {
        let mut n = 0;
        while self.conn.wants_write() {
            n += self.conn.write_tls(out)?;
        }
        Ok(n)
    }

    /// The ALPN protocol agreed on, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The name a client asked for with SNI (server side), if any.
    pub fn server_name(&self) -> Option<&str> {
        match &self.conn {
            Connection::Server(s) => s.server_name(),
            Connection::Client(_) => None,
        }
    }
}

/// Sends what `pending` holds and what ciphertext waits in `s`, as far as the socket `fd`
/// takes it now; the rest stays in `pending` (`WouldBlock` then).
fn send_cipher(s: &mut Session, fd: RawFd, pending: &mut Vec<u8>) -> io::Result<()> {
    s.write_cipher(pending)?;
    while !pending.is_empty() {
        match sys::send(fd, pending) {
            Ok(n) => drop(pending.drain(..n)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs a client's handshake on the caller's thread over the connected non-blocking `sock`,
/// within `deadline` (`ns_tcp_connect()` returns only once it is done).
pub(crate) fn handshake_blocking(sock: &Socket, config: &TlsConfig, deadline: Deadline) -> Result<Box<Session>> {
    let fd = sock.as_raw_fd();
    let mut s = Box::new(Session::client(config)?);
    let mut buf = vec![0; CIPHER_READ];
    let mut unsent = Vec::new();
    let timed_out = || format!("the TLS handshake did not finish within {}", deadline.limit_text());
    loop {
        while s.wants_write() || !unsent.is_empty() {
            match send_cipher(&mut s, fd, &mut unsent) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    deadline.wait(fd, libc::POLLOUT, timed_out)?;
                }
                Err(e) => return Err(Error::io("TLS handshake", e)),
            }
        }
        if !s.handshaking() {
            s.state = State::Open;
            return Ok(s);
        }
        match sys::recv(fd, &mut buf) {
            Ok(0) => {
                return Err(Error::Tls(
                    "the server closed the connection during the handshake".into(),
                ));
            }
            Ok(n) => {
                if let Err(e) = s.feed(&buf[..n]) {
                    // Tell the server why, if the socket takes it now.
                    let _ = send_cipher(&mut s, fd, &mut unsent);
                    return Err(e);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                deadline.wait(fd, libc::POLLIN, timed_out)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("TLS handshake", e)),
        }
    }
}

impl ConnState {
    /// Seals `parts` and sends them as the plaintext path does (`send`, `send_accepted`).
    pub(crate) fn send_sealed(&mut self, parts: &[&[u8]]) -> Result<()> {
        let tls = self.tls.as_mut().expect("a TLS connection");
        if let Err(e) = tls.write_plain(parts) {
            let reply = Error::Closed(format!("the connection failed: {e}").into());
            self.failed = Some(e);
            return Err(reply);
        }
        self.queue_cipher(true);
        match &self.failed {
            Some(e) => Err(Error::Closed(format!("the connection failed: {e}").into())),
            None => Ok(()),
        }
    }

    /// Moves the session's ciphertext to the queue (counted in the send budget like any
    /// queued output) and writes what the socket takes of it now.
    pub(crate) fn push_cipher(&mut self) {
        self.queue_cipher(false);
    }

    /// `push_cipher`, or for an application's send (`gather`), as a plaintext send is
    /// (`ConnState::put`): small output waits for the turn's end, to go out with the rest.
    fn queue_cipher(&mut self, gather: bool) {
        let Some(tls) = self.tls.as_mut() else { return };
        let before = self.out.len();
        let _ = tls.write_cipher(&mut ToQueue(&mut self.out));
        self.budget.accept(self.out.len() - before);
        if before > 0 && !self.gathered {
            // Behind output that waits for the socket to drain.
            return;
        }
        if gather && self.out.len() <= GATHER_MAX {
            self.gathered = true;
            return;
        }
        self.flush();
    }
}

/// The connection's queue as rustls's sink: it takes every byte (copied).
struct ToQueue<'a>(&'a mut OutQueue);

impl Write for ToQueue<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.push_copy(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Streams<'_> {
    /// Starts TLS on a connection just registered, if its service has it: a server's session,
    /// a client's (after its connect on the loop), or `given` (a client's, handshaken on its
    /// owner's thread). True while the handshake runs: `on_open` waits for its end.
    pub(super) fn start_tls(&mut self, key: usize, given: Option<Box<Session>>) -> bool {
        let st = &mut self.conns[key];
        let svc = &self.services[st.svc].0;
        if let Some(session) = given {
            st.tls = Some(session);
            // Input the server sent right after the handshake may wait in the session.
            st.wants_read = true;
            return false;
        }
        let Some(config) = &svc.opts.tls else { return false };
        let session = match config.is_server() {
            true => Session::server(config),
            false => Session::client(config),
        };
        let mut session = match session {
            Ok(s) => s,
            Err(e) => {
                // The configuration was checked when the server or client started.
                log!(Error, "connection {}: cannot start TLS: {e}", st.id);
                svc.counters.of(self.me.index()).tls_failures.add(1);
                let id = st.id;
                self.ids.remove(&id);
                self.me.remove_live(id);
                self.remove(key);
                return true;
            }
        };
        session.deadline = svc.opts.connect_timeout.map(|t| self.now + t);
        st.tls = Some(Box::new(session));
        st.push_cipher();
        self.schedule(key);
        true
    }

    /// A TLS connection's turn of reading (as `read` does for plaintext): decrypted input is
    /// delivered first, then the socket is read, one record's worth at a time.
    pub(super) fn read_tls(&mut self, key: usize, short: bool) {
        let st = &mut self.conns[key];
        let svc = &self.services[st.svc].0;
        let stats = svc.counters.of(self.me.index());
        let (cipher, plain) = self.buf.split_at_mut(CIPHER_READ);
        let mut drained = false;
        for _ in 0..stream::READS_PER_TURN * 2 {
            let backlogged = st.paused || st.user_paused || st.pending() > svc.opts.low_water();
            if st.phase != Phase::Open
                || st.failed.is_some()
                || st.peer_eof
                || backlogged
                || !stream::live(self.group, svc)
            {
                return;
            }
            let tls = st.tls.as_mut().expect("a TLS connection");
            if !tls.handshaking() && tls.state != State::Done {
                match tls.read_plain(plain) {
                    Ok(Input::Plain(n)) => {
                        stream::deliver(self.group, st, svc, &plain[..n]);
                        if matches!(st.failed, Some(Error::Limit(_))) {
                            stats.frames_too_large.add(1);
                        }
                        continue;
                    }
                    Ok(Input::End) => {
                        st.peer_eof = true;
                        stream::finish_input(self.group, st, svc);
                        if matches!(st.failed, Some(Error::Limit(_))) {
                            stats.frames_too_large.add(1);
                        }
                        return;
                    }
                    Ok(Input::Empty) => {}
                    Err(e) => {
                        st.peer_eof = matches!(e, Error::Closed(_));
                        st.failed = Some(e);
                        return;
                    }
                }
            }
            if drained {
                return;
            }
            match sys::recv(st.sock.as_raw_fd(), cipher) {
                Ok(0) => {
                    let tls = st.tls.as_mut().expect("a TLS connection");
                    tls.feed_eof();
                    if tls.state != State::Open {
                        st.peer_eof = true;
                        st.failed = Some(Error::Tls("the peer closed the connection during the handshake".into()));
                        return;
                    }
                }
                Ok(n) => {
                    stats.bytes_in.add(n as u64);
                    let tls = st.tls.as_mut().expect("a TLS connection");
                    let fed = tls.feed(&cipher[..n]);
                    let done = tls.state == State::Done;
                    // Handshake messages, or the alert that says why it failed.
                    st.push_cipher();
                    if let Err(e) = fed {
                        st.failed = Some(e);
                        return;
                    }
                    if done {
                        // `settle` runs `on_open`, then reads on.
                        return;
                    }
                    if st.tls.as_ref().is_some_and(|t| t.state == State::Open) {
                        st.since = self.now;
                    }
                    drained = short && n < cipher.len();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    st.failed = Some(Error::io("read", e));
                    return;
                }
            }
        }
        // Once, as in `read`.
        if !st.read_again {
            st.read_again = true;
            self.again.push((key, st.id));
        }
    }

    /// In `settle`: a handshake just done opens the connection (`on_open`), and what came with
    /// it is read at once. True if it did (and settled the connection).
    pub(super) fn tls_opened(&mut self, key: usize) -> bool {
        let st = &mut self.conns[key];
        let svc = &self.services[st.svc].0;
        let Some(tls) = st.tls.as_mut() else { return false };
        // Failed, closed or released meanwhile: it ends as a handshake that never finished.
        if st.phase != Phase::Open || st.failed.is_some() || !stream::live(self.group, svc) || !tls.take_done() {
            return false;
        }
        tls.deadline = None;
        svc.counters.of(self.me.index()).tls_handshakes.add(1);
        st.wants_read = true;
        self.opened(key);
        true
    }

    /// The handshake deadline of connection `key`, while it runs.
    pub(super) fn tls_deadline(&self, key: usize) -> Option<Instant> {
        let tls = self.conns[key].tls.as_ref()?;
        tls.deadline.filter(|_| tls.state != State::Open)
    }

    /// The handshake deadline passed: the connection fails with `Timeout`.
    pub(super) fn tls_timed_out(&mut self, key: usize) {
        let st = &mut self.conns[key];
        let limit = self.services[st.svc]
            .0
            .opts
            .connect_timeout
            .unwrap_or_default()
            .as_millis();
        st.failed = Some(Error::Timeout(
            format!("the TLS handshake did not finish within {limit} ms").into(),
        ));
        self.settle(key);
    }

    /// In `end`: a TLS connection that ends. An orderly end of an open one sends close_notify;
    /// one that never opened is counted and logged, and a server's (or one whose owner let
    /// go) is dropped without `on_close` (true: nothing more to do).
    pub(super) fn tls_end(&mut self, key: usize, reason: &Result<()>) -> bool {
        let st = &mut self.conns[key];
        // Closed by the application, or by its server's stop with nothing left to write: the
        // peer sees an orderly end, not a truncation. (A client freed by its owner closes at
        // once, as without TLS.)
        let server = self.services[st.svc].0.target.get().is_none();
        let stopped = server && matches!(reason, Err(Error::Stopped)) && st.pending() == 0;
        let orderly = reason.is_ok() || stopped;
        let Some(tls) = st.tls.as_mut() else { return false };
        let fd = st.sock.as_raw_fd();
        if tls.state == State::Open {
            if orderly {
                tls.close_notify();
            }
            let _ = send_cipher(tls, fd, &mut Vec::new());
            return false;
        }
        // An alert saying why, if the socket takes it now.
        let _ = send_cipher(tls, fd, &mut Vec::new());
        let svc = &self.services[st.svc].0;
        let client = svc.target.get().is_some();
        // Closed or let go by its owner before it opened: nothing failed, and nothing to say.
        let quiet = matches!(reason, Ok(()) | Err(Error::Stopped));
        if !quiet {
            svc.counters.of(self.me.index()).tls_failures.add(1);
            let peer = st.sock.peer_addr().map(|a| crate::addr::format(&a)).unwrap_or_default();
            if let Err(e) = reason {
                log!(Info, "TLS handshake with {peer} failed: {e}");
            }
        }
        if client && !quiet {
            return false;
        }
        let id = st.id;
        self.ids.remove(&id);
        self.me.remove_live(id);
        self.remove(key);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls_config::TlsSettings;

    const CERT: &[u8] = include_bytes!("../../tests/tls/localhost.pem");
    const KEY: &[u8] = include_bytes!("../../tests/tls/localhost.key");

    fn pair() -> (Session, Session) {
        let server = TlsSettings::server(CERT, KEY).unwrap().build().unwrap();
        let client = TlsSettings::client(Some(CERT)).unwrap().build().unwrap();
        let client = client.for_address("localhost:443").unwrap();
        (Session::client(&client).unwrap(), Session::server(&server).unwrap())
    }

    /// Moves what `from` has to send into `to`, `step` bytes per read; returns `to`'s
    /// plaintext and how its input ended.
    fn carry(from: &mut Session, to: &mut Session, step: usize) -> Result<(Vec<u8>, Option<Input>)> {
        let mut wire = Vec::new();
        from.write_cipher(&mut wire).unwrap();
        let (mut got, mut buf) = (Vec::new(), [0u8; 1000]);
        for read in wire.chunks(step) {
            to.feed(read)?;
            loop {
                match to.read_plain(&mut buf)? {
                    Input::Plain(n) => got.extend_from_slice(&buf[..n]),
                    Input::Empty => break,
                    Input::End => return Ok((got, Some(Input::End))),
                }
            }
        }
        Ok((got, None))
    }

    #[test]
    fn a_handshake_and_data_survive_reads_cut_anywhere() {
        for step in [1, 7, 100, 1 << 20] {
            let (mut c, mut s) = pair();
            let message = vec![7u8; 40_000];
            c.write_plain(&[&message[..10], &message[10..]]).unwrap();
            let mut at_server = Vec::new();
            for _ in 0..4 {
                at_server.extend(carry(&mut c, &mut s, step).unwrap().0);
                carry(&mut s, &mut c, step).unwrap();
            }
            assert!(!c.handshaking() && !s.handshaking(), "step {step}");
            assert_eq!(at_server, message, "step {step}");
            assert!(s.wants_input());
            c.close_notify();
            assert_eq!(carry(&mut c, &mut s, step).unwrap().1, Some(Input::End), "step {step}");
        }
    }

    #[test]
    fn a_tcp_end_without_close_notify_is_a_truncation() {
        let (mut c, mut s) = pair();
        for _ in 0..3 {
            carry(&mut c, &mut s, 1000).unwrap();
            carry(&mut s, &mut c, 1000).unwrap();
        }
        s.feed_eof();
        let e = s.read_plain(&mut [0u8; 10]).unwrap_err();
        assert!(matches!(e, Error::Closed(_)), "{e}");
    }

    #[test]
    fn plaintext_to_a_server_is_a_tls_error() {
        let (_, mut s) = pair();
        let e = s.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap_err();
        assert!(matches!(e, Error::Tls(_)), "{e}");
        // An alert tells the peer why.
        assert!(s.wants_write());
    }

    #[test]
    fn a_wrong_name_fails_the_client() {
        let server = TlsSettings::server(CERT, KEY).unwrap().build().unwrap();
        let client = TlsSettings::client(Some(CERT)).unwrap().build().unwrap();
        let mut c = Session::client(&client.for_address("other.example:443").unwrap()).unwrap();
        let mut s = Session::server(&server).unwrap();
        carry(&mut c, &mut s, 1000).unwrap();
        let e = carry(&mut s, &mut c, 1000).unwrap_err();
        assert!(e.to_string().contains("not valid for name"), "{e}");
    }
}
