//! The worker pool (`Options::workers`) from Rust: callbacks off the loop thread, in order per
//! connection, a panic closing its connection with the pool's threads kept, and the end.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use netsock::{Conn, Error, Framing, Options, Result, Server, TcpHandler};

const T: Duration = Duration::from_secs(5);

fn opts(workers: usize) -> Options {
    Options {
        framing: Framing::Line,
        workers,
        ..Options::default()
    }
}

fn connect(srv: &Server) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(("127.0.0.1", srv.port())).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l
}

/// Waits until `n` callbacks are inside it at once (each needs a thread of its own), or 5 s.
#[derive(Default)]
struct Meet(Mutex<usize>, Condvar);

impl Meet {
    fn arrive(&self, n: usize) -> bool {
        let mut here = self.0.lock().unwrap();
        *here += 1;
        self.1.notify_all();
        let (here, timeout) = self.1.wait_timeout_while(here, T, |h| *h < n).unwrap();
        drop(here);
        !timeout.timed_out()
    }
}

/// Panics on "boom"; on "meet" waits for 4 callbacks at once; echoes the thread's name.
struct Pooled {
    closes: Sender<String>,
    meet: Meet,
}

impl TcpHandler for Pooled {
    fn on_open(&self, conn: &mut Conn<'_>) {
        conn.set_user(Some(Box::new(7u32)));
    }
    fn on_data(&self, conn: &mut Conn<'_>, data: &[u8]) {
        assert_eq!(conn.user::<u32>(), Some(&7));
        match data {
            b"boom" => panic!("boom in a worker"),
            b"meet" => {
                let met = self.meet.arrive(4);
                conn.send_frame(if met { b"met" } else { b"alone" }).unwrap();
            }
            _ => {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                conn.send_frame(name.as_bytes()).unwrap();
                assert!(conn.peer().is_ok());
                assert!(conn.id() != 0);
            }
        }
    }
    fn on_close(&self, conn: &mut Conn<'_>, reason: &Result<()>) {
        assert!(matches!(conn.send(b"late"), Err(Error::Closed(_))));
        let why = match reason {
            Ok(()) => "ok".to_owned(),
            Err(Error::Panic(_)) => "panic".to_owned(),
            Err(Error::Stopped) => "stopped".to_owned(),
            Err(e) => e.to_string(),
        };
        let _ = self.closes.send(why);
    }
}

#[test]
fn callbacks_run_on_workers_and_a_panic_keeps_the_threads() {
    let (tx, closes) = channel();
    let srv = Server::tcp("127.0.0.1:0", &opts(4)).unwrap();
    srv.start_tcp(Pooled {
        closes: tx,
        meet: Meet::default(),
    })
    .unwrap();
    let (mut s, mut r) = connect(&srv);
    s.write_all(b"who\n").unwrap();
    assert!(line(&mut r).starts_with("netsock-worker-"));
    // A panic in each of the 4 workers: each closes its connection with Panic.
    for _ in 0..4 {
        let (mut s, mut r) = connect(&srv);
        s.write_all(b"boom\n").unwrap();
        assert_eq!(line(&mut r), "", "a panicking connection closes");
        assert_eq!(closes.recv_timeout(T).unwrap(), "panic");
    }
    // Still 4 threads: 4 callbacks can be inside at once.
    let mut conns: Vec<_> = (0..4).map(|_| connect(&srv)).collect();
    for (s, _) in &mut conns {
        s.write_all(b"meet\n").unwrap();
    }
    for (_, r) in &mut conns {
        assert_eq!(line(r), "met\n");
    }
    drop(conns);
    drop((s, r));
    for _ in 0..5 {
        assert_eq!(
            closes
                .recv_timeout(T)
                .map_err(|e| format!("{e} {:?}", srv.stats()))
                .unwrap(),
            "ok"
        );
    }
}

/// Counts callbacks and how many ran at once for one connection.
#[derive(Default)]
struct Order {
    inside: AtomicUsize,
    overlaps: AtomicUsize,
    closed: AtomicUsize,
}

struct Ordered(Arc<Order>);

impl TcpHandler for Ordered {
    fn on_data(&self, conn: &mut Conn<'_>, data: &[u8]) {
        if self.0.inside.fetch_add(1, Ordering::SeqCst) != 0 {
            self.0.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_micros(u64::from(data[0] % 7) * 100));
        conn.send_frame(data).unwrap();
        self.0.inside.fetch_sub(1, Ordering::SeqCst);
    }
    fn on_close(&self, _: &mut Conn<'_>, _: &Result<()>) {
        std::thread::sleep(Duration::from_millis(50));
        self.0.closed.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn one_connection_in_order_and_free_waits_for_on_close() {
    let order = Arc::new(Order::default());
    let srv = Server::tcp("127.0.0.1:0", &opts(4)).unwrap();
    srv.start_tcp(Ordered(order.clone())).unwrap();
    let (mut s, mut r) = connect(&srv);
    let all: String = (0..300).map(|i| format!("{i}\n")).collect();
    s.write_all(all.as_bytes()).unwrap();
    for i in 0..300 {
        assert_eq!(line(&mut r), format!("{i}\n"));
    }
    assert_eq!(order.overlaps.load(Ordering::SeqCst), 0);
    // The last callback may still be returning after its reply.
    let idle = (0..500).any(|_| {
        let stats = srv.stats();
        std::thread::sleep(Duration::from_millis(10));
        (stats.worker_busy, stats.worker_queued) == (0, 0)
    });
    assert!(idle, "{:?}", srv.stats());
    // Dropping the server waits for the connection's on_close on its worker.
    drop(srv);
    assert_eq!(order.closed.load(Ordering::SeqCst), 1);
}

#[test]
fn a_server_on_a_shared_loop_runs_its_callbacks_on_workers() {
    let lp = netsock::ClientLoop::new(&Options::default()).unwrap();
    let order = Arc::new(Order::default());
    let srv = Server::tcp_on("127.0.0.1:0", &opts(2), &lp).unwrap();
    srv.start_tcp(Ordered(order.clone())).unwrap();
    let (mut s, mut r) = connect(&srv);
    s.write_all(b"1\n2\n3\n").unwrap();
    for i in 1..=3 {
        assert_eq!(line(&mut r), format!("{i}\n"));
    }
    // Dropping the server closes its connections on the loop, which goes on, and waits for
    // their on_close on the workers.
    drop(srv);
    assert_eq!(order.closed.load(Ordering::SeqCst), 1);
    assert_eq!(order.overlaps.load(Ordering::SeqCst), 0);
    lp.post(|| {}).unwrap();
}

/// Records a client's callbacks in order, and any that overlapped.
struct Reconnecting {
    seen: Mutex<String>,
    order: Order,
}

impl Reconnecting {
    fn note(&self, what: char) {
        if self.order.inside.fetch_add(1, Ordering::SeqCst) != 0 {
            self.order.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        // Slow enough that the next connection's events queue up behind this one's.
        std::thread::sleep(Duration::from_millis(5));
        self.seen.lock().unwrap().push(what);
        self.order.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Client(Arc<Reconnecting>);

impl TcpHandler for Client {
    fn on_open(&self, conn: &mut Conn<'_>) {
        self.0.note('o');
        // (Closed if the test drops the client meanwhile.)
        let _ = conn.send_frame(b"hi");
    }
    fn on_data(&self, _: &mut Conn<'_>, _: &[u8]) {
        self.0.note('d');
    }
    fn on_close(&self, _: &mut Conn<'_>, _: &Result<()>) {
        self.0.note('c');
    }
}

/// Answers once, then closes.
struct Once;

impl TcpHandler for Once {
    fn on_data(&self, conn: &mut Conn<'_>, data: &[u8]) {
        conn.send_frame(data).unwrap();
        conn.close();
    }
}

#[test]
fn a_reconnecting_client_keeps_its_callbacks_in_order_across_connections() {
    let srv = Server::tcp("127.0.0.1:0", &opts(0)).unwrap();
    srv.start_tcp(Once).unwrap();
    let rec = Arc::new(Reconnecting {
        seen: Mutex::default(),
        order: Order::default(),
    });
    let copts = Options {
        reconnect: Some((Duration::from_millis(1), Duration::from_millis(2))),
        ..opts(2)
    };
    let addr = format!("127.0.0.1:{}", srv.port());
    let client = netsock::Client::connect(&addr, Client(rec.clone()), &copts, None).unwrap();
    let deadline = std::time::Instant::now() + T;
    while rec.seen.lock().unwrap().len() < 12 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(client);
    let seen = rec.seen.lock().unwrap().clone();
    assert!(seen.len() >= 12, "{seen}");
    // Each connection: open, its reply, close; the next one's open only after that close.
    assert!(seen.starts_with("odc"), "{seen}");
    for w in seen.as_bytes().windows(2) {
        let ok = matches!(w, [b'o', b'd'] | [b'o', b'c'] | [b'd', b'c'] | [b'c', b'o']);
        assert!(ok, "{seen}");
    }
    assert_eq!(rec.order.overlaps.load(Ordering::SeqCst), 0);
}
