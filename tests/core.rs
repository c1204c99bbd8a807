//! The Rust core without the C layer: servers, connections, clients and their errors.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use netsock::client::{tcp_send, udp_request};
use netsock::{Conn, Error, Options, Responder, Result, Server, TcpHandler, UdpHandler};
use socket2::SockAddr;

const T: Duration = Duration::from_secs(5);

/// What a test server saw, in order.
#[derive(Debug, PartialEq)]
enum Seen {
    Open(u64),
    Data(u64, Vec<u8>),
    Close(u64, String),
}

/// Echoes every chunk and reports each callback; closes after a chunk ending in '!'.
struct Echo(Sender<Seen>);

impl TcpHandler for Echo {
    fn on_open(&self, conn: &mut Conn<'_>) {
        self.0.send(Seen::Open(conn.id())).unwrap();
    }
    fn on_data(&self, conn: &mut Conn<'_>, data: &[u8]) {
        self.0.send(Seen::Data(conn.id(), data.to_vec())).unwrap();
        conn.send(data).unwrap();
        if data.ends_with(b"!") {
            conn.close();
            assert!(matches!(conn.send(b"late"), Err(Error::Closed(_))));
        }
    }
    fn on_close(&self, conn: &mut Conn<'_>, reason: &Result<()>) {
        let reason = match reason {
            Ok(()) => "ok".to_owned(),
            Err(Error::Stopped) => "stopped".to_owned(),
            Err(e) => e.to_string(),
        };
        self.0.send(Seen::Close(conn.id(), reason)).unwrap();
    }
}

fn echo_server(addr: &str) -> (Server, Receiver<Seen>) {
    let (tx, rx) = channel();
    let srv = Server::tcp(addr, &Options::default()).unwrap();
    srv.start_tcp(Echo(tx)).unwrap();
    (srv, rx)
}

fn next(rx: &Receiver<Seen>) -> Seen {
    rx.recv_timeout(T).expect("no callback within 5 s")
}

#[test]
fn tcp_echo_and_orderly_close() {
    let (srv, rx) = echo_server("127.0.0.1:0");
    let mut reply = [0u8; 64];
    let n = tcp_send(&srv.addr_text(), b"hello!", &mut reply, Some(T)).unwrap();
    assert_eq!(&reply[..n], b"hello!");
    let Seen::Open(id) = next(&rx) else { panic!("no open") };
    assert_ne!(id, 0);
    assert_eq!(next(&rx), Seen::Data(id, b"hello!".to_vec()));
    assert_eq!(next(&rx), Seen::Close(id, "ok".into()));
}

#[test]
fn half_close_flushes_then_closes() {
    let (srv, rx) = echo_server("127.0.0.1:0");
    let mut s = TcpStream::connect(srv.addr_text()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"abc").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"abc");
    let Seen::Open(id) = next(&rx) else { panic!("no open") };
    assert_eq!(next(&rx), Seen::Data(id, b"abc".to_vec()));
    assert_eq!(next(&rx), Seen::Close(id, "ok".into()));
}

#[test]
fn many_connections_on_one_loop() {
    let (srv, rx) = echo_server("127.0.0.1:0");
    let mut socks: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(srv.addr_text()).unwrap()).collect();
    for (i, s) in socks.iter_mut().enumerate() {
        s.set_read_timeout(Some(T)).unwrap();
        s.write_all(format!("msg {i}").as_bytes()).unwrap();
    }
    for (i, s) in socks.iter_mut().enumerate() {
        let want = format!("msg {i}");
        let mut got = vec![0u8; want.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, want.as_bytes());
    }
    drop(socks);
    let (mut opens, mut closes) = (0, 0);
    while closes < 200 {
        match next(&rx) {
            Seen::Open(_) => opens += 1,
            Seen::Close(_, reason) => {
                assert_eq!(reason, "ok");
                closes += 1
            }
            Seen::Data(..) => {}
        }
    }
    assert_eq!(opens, 200);
}

#[test]
fn stop_closes_open_connections_and_send_reaches_by_id() {
    let (srv, rx) = echo_server("[::1]:0");
    let mut s = TcpStream::connect(srv.addr_text()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let Seen::Open(id) = next(&rx) else { panic!() };
    std::thread::scope(|scope| {
        scope.spawn(|| srv.send(id, b"pushed").unwrap());
    });
    let mut got = [0u8; 6];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pushed");
    assert!(matches!(srv.send(id + 100, b"x"), Err(Error::Closed(_))));
    srv.stop();
    srv.wait().unwrap();
    assert_eq!(next(&rx), Seen::Close(id, "stopped".into()));
    assert_eq!(s.read(&mut got).unwrap(), 0);
    assert!(matches!(srv.send(id, b"x"), Err(Error::Closed(_))));
}

#[test]
fn unix_stream_server_removes_its_file() {
    let dir = std::env::temp_dir().join(format!("netsock-core-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let addr = format!("unix:{}", path.display());
    let (srv, _rx) = echo_server(&addr);
    assert_eq!(srv.port(), 0);
    assert_eq!(srv.addr_text(), addr);
    let mut reply = [0u8; 8];
    let n = tcp_send(&addr, b"unix!", &mut reply, Some(T)).unwrap();
    assert_eq!(&reply[..n], b"unix!");
    assert!(matches!(
        Server::tcp(&addr, &Options::default()),
        Err(Error::AddrInUse(_))
    ));
    drop(srv);
    assert!(!path.exists());
    assert!(matches!(
        tcp_send(&addr, b"x", &mut reply, Some(T)),
        Err(Error::Refused(_))
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn client_errors() {
    let mut reply = [0u8; 4];
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert!(matches!(
        tcp_send(&format!("127.0.0.1:{port}"), b"x", &mut reply, Some(T)),
        Err(Error::Refused(_))
    ));
    // A listener that accepts (in the kernel) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let r = tcp_send(&addr, b"x", &mut reply, Some(Duration::from_millis(200)));
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    assert!(matches!(
        tcp_send("127.0.0.1", b"x", &mut reply, Some(T)),
        Err(Error::Addr(_))
    ));
}

struct UdpEcho;

impl UdpHandler for UdpEcho {
    fn on_datagram(&self, responder: &Responder<'_>, from: &SockAddr, data: &[u8]) {
        responder.reply(from, data).unwrap();
    }
}

#[test]
fn udp_echo_truncation_and_timeout() {
    let srv = Server::udp("127.0.0.1:0", &Options::default()).unwrap();
    srv.start_udp(UdpEcho).unwrap();
    let mut reply = [0u8; 16];
    let n = udp_request(&srv.addr_text(), b"ping", &mut reply, Some(T)).unwrap();
    assert_eq!(&reply[..n], b"ping");
    let mut small = [0u8; 2];
    assert!(matches!(
        udp_request(&srv.addr_text(), b"ping", &mut small, Some(T)),
        Err(Error::Truncated(2))
    ));
    assert!(matches!(
        Server::udp(&srv.addr_text(), &Options::default()),
        Err(Error::AddrInUse(_))
    ));
    // A bound socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let r = udp_request(
        &silent.local_addr().unwrap().to_string(),
        b"x",
        &mut reply,
        Some(Duration::from_millis(200)),
    );
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
}

/// Replies from a thread that is not the loop, with a copied peer address.
#[test]
fn udp_reply_from_another_thread() {
    let (tx, rx) = channel::<SockAddr>();
    struct Forward(Sender<SockAddr>);
    impl UdpHandler for Forward {
        fn on_datagram(&self, _: &Responder<'_>, from: &SockAddr, _: &[u8]) {
            self.0.send(from.clone()).unwrap();
        }
    }
    let srv = Server::udp("127.0.0.1:0", &Options::default()).unwrap();
    srv.start_udp(Forward(tx)).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(T)).unwrap();
    client.send_to(b"hi", srv.addr_text()).unwrap();
    let from = rx.recv_timeout(T).unwrap();
    srv.reply(&from, b"later").unwrap();
    let mut buf = [0u8; 8];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"later");
    assert!(matches!(srv.send(1, b"x"), Err(Error::Invalid(_))));
}

/// Waiting for a server inside its own callback is refused, not a deadlock.
#[test]
fn wait_inside_own_callback_is_misuse() {
    use std::sync::{Arc, OnceLock};
    let cell: Arc<OnceLock<Server>> = Arc::new(OnceLock::new());
    let (tx, rx) = channel();
    struct Waits(Arc<OnceLock<Server>>, Sender<bool>);
    impl TcpHandler for Waits {
        fn on_data(&self, conn: &mut Conn<'_>, _: &[u8]) {
            let misuse = matches!(self.0.get().unwrap().wait(), Err(Error::Misuse(_)));
            self.1.send(misuse).unwrap();
            conn.close();
        }
    }
    let srv = Server::tcp("127.0.0.1:0", &Options::default()).unwrap();
    let addr = srv.addr_text();
    let _ = cell.set(srv);
    cell.get().unwrap().start_tcp(Waits(cell.clone(), tx)).unwrap();
    let mut reply = [0u8; 1];
    tcp_send(&addr, b"x", &mut reply, Some(T)).unwrap();
    assert!(rx.recv_timeout(T).unwrap());
    cell.get().unwrap().stop();
}

/// A panicking handler costs its connection, not the server.
#[test]
fn panic_in_handler_closes_only_that_connection() {
    struct Panics;
    impl TcpHandler for Panics {
        fn on_data(&self, conn: &mut Conn<'_>, data: &[u8]) {
            if data == b"boom" {
                panic!("handler bug");
            }
            conn.send(data).unwrap();
        }
    }
    let srv = Server::tcp("127.0.0.1:0", &Options::default()).unwrap();
    srv.start_tcp(Panics).unwrap();
    let mut reply = [0u8; 8];
    assert!(tcp_send(&srv.addr_text(), b"boom", &mut reply, Some(T)).is_ok_and(|n| n == 0));
    let n = tcp_send(&srv.addr_text(), b"fine", &mut reply, Some(T)).unwrap();
    assert_eq!(&reply[..n], b"fine");
}

/// With `run_in_wait`, loop 0 serves on the thread that calls `wait`, until the server stops;
/// a server dropped without a wait never runs it.
#[test]
fn run_in_wait_serves_on_the_waiting_thread() {
    struct Where(Sender<std::thread::ThreadId>);
    impl TcpHandler for Where {
        fn on_data(&self, conn: &mut Conn<'_>, data: &[u8]) {
            self.0.send(std::thread::current().id()).unwrap();
            conn.send(data).unwrap();
        }
    }
    let opts = Options {
        run_in_wait: true,
        ..Options::default()
    };
    let (tx, rx) = channel();
    let srv = Server::tcp("127.0.0.1:0", &opts).unwrap();
    srv.start_tcp(Where(tx.clone())).unwrap();
    let addr = srv.addr_text();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut reply = [0u8; 2];
            assert_eq!(tcp_send(&addr, b"hi", &mut reply, Some(T)).unwrap(), 2);
            srv.stop();
        });
        srv.wait().unwrap();
    });
    assert_eq!(rx.recv_timeout(T).unwrap(), std::thread::current().id());

    let idle = Server::tcp("127.0.0.1:0", &opts).unwrap();
    idle.start_tcp(Where(tx)).unwrap();
    let _queued = TcpStream::connect(idle.addr_text()).unwrap();
    drop(idle);
    assert!(rx.try_recv().is_err());
}

/// Replies made in a callback leave in the order made, whether they were batched (small),
/// sent at once (over 8 KiB), or flushed early because the batch filled; the counter sees
/// every one.
#[test]
fn udp_replies_in_a_callback_keep_their_order() {
    struct Many;
    impl UdpHandler for Many {
        fn on_datagram(&self, responder: &Responder<'_>, from: &SockAddr, data: &[u8]) {
            let count: usize = std::str::from_utf8(data).unwrap().parse().unwrap();
            for i in 0..count {
                let reply = if i == 2 {
                    vec![b'L'; 10_000]
                } else {
                    i.to_string().into_bytes()
                };
                responder.reply(from, &reply).unwrap();
            }
        }
    }
    let srv = Server::udp("127.0.0.1:0", &Options::default()).unwrap();
    srv.start_udp(Many).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(T)).unwrap();
    let mut buf = vec![0u8; 16_384];
    let mut expected = 0;
    for count in [5usize, 150] {
        client.send_to(count.to_string().as_bytes(), srv.addr_text()).unwrap();
        for i in 0..count {
            let n = client.recv(&mut buf).unwrap();
            if i == 2 {
                assert_eq!(n, 10_000);
            } else {
                assert_eq!(&buf[..n], i.to_string().as_bytes(), "reply {i} of {count}");
            }
        }
        expected += count as u64;
    }
    assert_eq!(srv.stats().datagrams_out, expected);
}

/// A lent buffer that reports when it is let go of.
struct Lent(Vec<u8>, Sender<usize>);

impl netsock::OwnedBuf for Lent {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let _ = self.1.send(self.0.len());
    }
}

#[test]
fn owned_sends_are_written_then_dropped_and_refused_ones_come_back() {
    let (srv, rx) = echo_server("127.0.0.1:0");
    let mut s = TcpStream::connect(srv.addr_text()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let Seen::Open(id) = next(&rx) else { panic!() };
    let (dropped_tx, dropped) = channel();
    let big = vec![7u8; 4 << 20]; // 4 MiB: more than the socket takes at once
    srv.send_owned(id, Box::new(Lent(big.clone(), dropped_tx.clone())))
        .map_err(|(e, _)| e)
        .unwrap();
    let mut got = vec![0u8; big.len()];
    s.read_exact(&mut got).unwrap();
    assert!(got == big);
    assert_eq!(dropped.recv_timeout(T).unwrap(), big.len(), "dropped once written");
    // Refused: handed back whole, not dropped.
    let Err((e, back)) = srv.send_owned(id + 100, Box::new(Lent(b"nobody".to_vec(), dropped_tx))) else {
        panic!("a send to a stale id was accepted")
    };
    assert!(matches!(e, Error::Closed(_)));
    assert!(dropped.try_recv().is_err());
    assert_eq!(back.bytes(), b"nobody");
    drop(back);
    assert_eq!(dropped.recv_timeout(T).unwrap(), 6);
    srv.stop();
    srv.wait().unwrap();
}
