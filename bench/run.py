#!/usr/bin/env python3
"""The benchmark runner: netsock against libuv, raw epoll and io_uring, on loopback.

    python3 bench/run.py [BUILD_DIR]        (make bench; BUILD_DIR defaults to build/bench)

For each round, each scenario, each server: start the server fresh on core 1, run the load
generator on core 0 (warm-up, then a measured window during which it reads the server's
utime+stime from /proc/PID/stat), stop the server by its PID. Rounds are interleaved
(A B C, then B C A, C A B, ...: each round starts with another server); the table gives medians over rounds and every netsock figure as a ratio to
libuv and to raw epoll measured in the same run.

The RESP scenarios (resp-p1, resp-p16; BENCH_ONLY=resp names both) run redis-benchmark, pinned
to core 0, against examples-c/resp_server and against redis-server itself (Debian's package, run
with --save '' --appendonly no), each pinned to core 1: PING (inline and multibulk), SET and GET,
50 clients, pipelined 1 or 16 deep, one redis-benchmark run per command after a warm-up run. The
server's utime+stime is read from /proc/PID/stat around each run: server CPU per request, the
figure the issue's goal (<= 1.0x redis-server) is about. resp-gather (issue 17) runs the same
load, -P 16, against bench/ns_resp.c sending one reply per ns_conn_send (`each`) and gathering a
delivery's replies into one (`gather`): the goal is each <= 1.3x gather.

The references: `libuv` is libuv at its best (bench/uv_best.c), `libuv-textbook` libuv as its
examples write it (bench/uv_echo.c), `epoll` raw epoll (bench/epoll_echo.c), `uring` a
single-threaded io_uring server (bench/uring_echo.c; left out, and the table says why, when
`uring_echo probe` finds io_uring unavailable).

The TLS scenarios (tls-handshake, tls-pp-64, tls-stream; BENCH_ONLY=tls names all three) run
bench/tls_loadgen (OpenSSL clients on threads, pinned to core 0) against bench/ns_tls_echo
(netsock with rustls, provider ring) and bench/ossl_tls_echo (a minimal epoll + OpenSSL echo
server, the reference), each pinned to core 1, with the same ECDSA P-256 certificate
(BUILD_DIR/certs, made by tests/tls/certs.sh): server CPU per full handshake (no resumption),
per 64 B request over 50 persistent connections, and per GB streamed.

The 64 B ping-pongs (TCP and UDP) and the loops scenario (one loop against two on the server's
one core) judge differences of a few percent, below the noise of single runs (this VM moves
between a fast and a slow state within seconds), so they run differently: their servers are
started once (fresh for the scenario), idle in turn, and loaded one after the other in many
short rounds (0.2 s warm-up, 0.5 s window); their verdicts are medians of per-round ratios with
a bootstrap 95% interval.

Environment:
    BENCH_ROUNDS=n      rounds (default 5)
    BENCH_QUICK=1       smoke run: 1 round, 1 s windows, short warm-up
    BENCH_WINDOW=s      measured window (default 3; quick 1)
    BENCH_WARMUP=s      warm-up before it (default 0.5; quick 0.3; the timer scenarios: 1, quick 0.5)
    BENCH_IDLE_CONNS=n  connections of the idle scenario (default 5000)
    BENCH_TIMERS=n      repeating timers of the timers scenario (default 100000)
    BENCH_TIMER_CONNS=n connections of the conn-timers scenario (default 10000)
    BENCH_MANY_CONNS=n  connections of the pp10k scenario (default 10000)
    BENCH_QUIET_WAIT=s  before each run, wait up to s seconds for the machine to be quiet
                        (default 5; quick 1; 0 disables)
    BENCH_KEPT_ROUNDS=n rounds of the scenarios whose servers are kept up (tcp-pp-64,
                        tcp-pp-64-loops, udp-pp-64) (default 40; quick 3)
    BENCH_ONLY=a,b      only these scenarios (tcp-pp-64, tcp-pp-64-loops, tcp-pp-4k, tcp-stream,
                        pp1000, pp10k, fetch-64m, udp-pp-64, churn, idle, timers, conn-timers,
                        resp-p1, resp-p16, resp-gather, tls-handshake, tls-pp-64, tls-stream,
                        workers-block-100, workers-block-1000, workers-pp50); `timers` also names
                        both timer scenarios (timers and conn-timers), `resp` the three RESP ones,
                        `tls` the three TLS ones, `workers` the three workers ones
    BENCH_WORKERS=n     worker threads of netsock in the workers-block scenarios (default 16)
    BENCH_WORK_BLOCK_MS=ms  how long their handler blocks per request (default 10)
    BENCH_WORK_SPIN_US=us   CPU time per message of workers-pp50's handler (default 50)
    BENCH_SERVERS=a,b   only these servers (netsock, netsock-thr, netsock-2t, netsock-rp-2t, libuv,
                        libuv-textbook, epoll, epoll-2t, uring, owned, copy, netsock-base,
                        redis-server, each, gather, openssl)
    BENCH_BASE=rev      (set by `make bench BENCH_BASE=rev`, which builds BUILD_DIR/ns_echo_base
                        and BUILD_DIR/ns_work_base against netsock at that git revision) adds
                        the server netsock-base to tcp-pp-64, tcp-pp-4k, tcp-stream and
                        udp-pp-64, and netsock_w1-base to workers-pp50, interleaved as netsock
                        is, and the ratios netsock / netsock-base (netsock_w1 / netsock_w1-base)
    BENCH_WAIT_BUDGET=s at most s seconds in all spent on such waits and on repeating runs
                        that other processes disturbed (over 0.15 cores of theirs during the
                        window; up to 2 repeats each) (default 240; quick 30)
Output: the table on stdout and in BUILD_DIR/results.md; one raw line per run in
BUILD_DIR/raw.txt.
"""

import csv
import datetime
import hashlib
import os
import platform
import random
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import re
import sys
import threading
import time

OUT = sys.argv[1] if len(sys.argv) > 1 else "build/bench"
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1" if QUICK else "5"))
WINDOW = float(os.environ.get("BENCH_WINDOW", "1" if QUICK else "3"))
WARMUP = float(os.environ.get("BENCH_WARMUP", "0.3" if QUICK else "0.5"))
IDLE_CONNS = int(os.environ.get("BENCH_IDLE_CONNS", "5000"))
TIMERS = int(os.environ.get("BENCH_TIMERS", "100000"))
TIMER_PERIOD_MS = 100
TIMER_CONNS = int(os.environ.get("BENCH_TIMER_CONNS", "10000"))
# The timer scenarios warm up longer: every timer armed and firing, every connection open and
# its timer set, before the window.
TIMER_WARMUP = float(os.environ.get("BENCH_WARMUP", "0.5" if QUICK else "1"))
KEPT_ROUNDS = int(os.environ.get("BENCH_KEPT_ROUNDS", "3" if QUICK else "40"))
KEPT_WINDOW, KEPT_WARMUP = 0.5, 0.2
QUIET_WAIT = float(os.environ.get("BENCH_QUIET_WAIT", "1" if QUICK else "5"))
WAIT_BUDGET = float(os.environ.get("BENCH_WAIT_BUDGET", "30" if QUICK else "240"))
BG_LIMIT = 0.15   # cores used by other processes during a window, above which a run is repeated
RETRIES = 2
SERVER_CPU, LOADGEN_CPU = "1", "0"
ADDR = "127.0.0.1:0"

# BENCH_BASE: netsock at another git revision (bench/bench.mk builds ns_echo_base against it).
BASE = os.environ.get("BENCH_BASE", "").strip()

BIN = {name: os.path.join(OUT, name) for name in ("loadgen", "ns_echo", "uv_echo", "uv_best", "epoll_echo",
                                                   "uring_echo", "ns_resp", "ns_fetch", "ns_timers", "uv_timers",
                                                   "ns_work", "tpc_server", "tls_loadgen", "ns_tls_echo",
                                                   "ossl_tls_echo")
       + (("ns_echo_base", "ns_work_base") if BASE else ())}
# The TLS scenarios' certificate and key (ECDSA P-256), the same for every server.
CERT, KEY = os.path.join(OUT, "certs", "server.pem"), os.path.join(OUT, "certs", "server.key")
TLS_SERVERS = {"netsock": lambda proto: [BIN["ns_tls_echo"], ADDR, CERT, KEY],
               "openssl": lambda proto: [BIN["ossl_tls_echo"], ADDR, CERT, KEY]}

# Servers: how to start each for a protocol.
SERVERS = {
    "netsock": lambda proto: [BIN["ns_echo"], proto, ADDR, "1", "wait"],
    "netsock-thr": lambda proto: [BIN["ns_echo"], proto, ADDR, "1", "thread"],
    "netsock-2t": lambda proto: [BIN["ns_echo"], proto, ADDR, "2", "wait"],
    "libuv": lambda proto: [BIN["uv_best"], proto, ADDR],
    "libuv-textbook": lambda proto: [BIN["uv_echo"], proto, ADDR],
    "uring": lambda proto: [BIN["uring_echo"], proto, ADDR],
    "owned": lambda proto: [BIN["ns_fetch"], "owned", ADDR, str(FETCH_SIZE)],
    "copy": lambda proto: [BIN["ns_fetch"], "copy", ADDR, str(FETCH_SIZE)],
    "epoll": lambda proto: [BIN["epoll_echo"], proto, ADDR],
    "epoll-2t": lambda proto: [BIN["epoll_echo"], proto, ADDR, "2"],
    "netsock-rp-2t": lambda proto: [BIN["ns_echo"], proto, ADDR, "2", "wait", "reuseport"],
}
if BASE:
    SERVERS["netsock-base"] = lambda proto: [BIN["ns_echo_base"], proto, ADDR, "1", "wait"]
# The references, and how a netsock cell names its ratio to each.
REFS = {"libuv": "uv", "libuv-textbook": "uvt", "epoll": "ep", "uring": "ur", "redis-server": "redis", "tpc": "tpc",
        "openssl": "ossl"}

# Issue 18's workers scenarios: a handler that blocks WORK_BLOCK_MS per request (the classic
# server's protocol: one request per connection, "ACK!", close) on netsock with WORKERS worker
# threads, the classic thread-per-connection server in C (bench/tpc_server.c), and the seed's
# threaded Python server (bench/seed_server.py), each with a backlog of 4096; and a CPU-bound
# echo handler (WORK_SPIN_US of CPU per message) with 1 worker against none.
WORK_BLOCK_MS = int(os.environ.get("BENCH_WORK_BLOCK_MS", "10"))
WORK_SPIN_US = int(os.environ.get("BENCH_WORK_SPIN_US", "50"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "16"))
SEED_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seed_server.py")
BLOCKING = {
    f"netsock_w{WORKERS}": lambda proto: [BIN["ns_work"], "oneshot", ADDR, str(WORKERS), str(WORK_BLOCK_MS)],
    "tpc": lambda proto: [BIN["tpc_server"], "0", str(WORK_BLOCK_MS), "4096"],
    "seed_py": lambda proto: [sys.executable, SEED_SERVER, "127.0.0.1", "0", str(WORK_BLOCK_MS), "4096"],
}
SPINNING = {f"netsock_w{w}": (lambda w: lambda proto: [BIN["ns_work"], "spin", ADDR, str(w), str(WORK_SPIN_US)])(w)
            for w in (0, 1)}
if BASE and os.path.exists(BIN["ns_work_base"]):  # a base revision without workers has none
    SPINNING["netsock_w1-base"] = lambda proto: [BIN["ns_work_base"], "spin", ADDR, "1", str(WORK_SPIN_US)]

# The RESP scenarios: examples-c/resp_server (built beside the library) against redis-server.
RESP_SERVER = os.path.join(OUT, "..", "resp_server")
RESP_TESTS = ("ping", "set", "get")   # redis-benchmark -t names; ping is PING_INLINE + PING_MBULK
RESP_CLIENTS = 50
# The gathered-writes scenario's servers: bench/ns_resp.c, one send per reply or one per delivery.
RESP_NS = {"each": "each", "gather": "gather"}
MANY_CONNS = int(os.environ.get("BENCH_MANY_CONNS", "10000"))
# The large-response scenario: bench/ns_fetch.c answering each 1-byte request with this much.
FETCH_SIZE = 64 << 20

SCENARIOS = [
    dict(name="tcp-pp-64", title=f"TCP ping-pong, 50 conns x 64 B ({KEPT_ROUNDS} short rounds, servers kept up)",
         proto="tcp", mode="tcp-pingpong", conns=50, size=64, servers=["netsock", "libuv", "epoll"], kept_up=True),
    dict(name="tcp-pp-64-loops", title="One loop or two on the server's one core: TCP ping-pong, 50 conns x 64 B "
         f"({KEPT_ROUNDS} short rounds, servers kept up)", proto="tcp", mode="tcp-pingpong", conns=50, size=64,
         servers=["netsock", "netsock-thr", "netsock-2t", "epoll", "epoll-2t"], kept_up=True),
    dict(name="tcp-pp-4k", title="TCP ping-pong, 50 conns x 4 KiB", proto="tcp", mode="tcp-pingpong",
         conns=50, size=4096, servers=["netsock", "libuv", "libuv-textbook", "epoll"]),
    dict(name="tcp-stream", title="TCP streaming, 4 conns x 64 KiB writes", proto="tcp", mode="tcp-stream",
         conns=4, size=65536, servers=["netsock", "libuv", "libuv-textbook", "epoll"]),
    # Issue 17: many connections, with the io_uring reference beside the others.
    dict(name="pp1000", title="TCP ping-pong, 1,000 conns x 64 B", proto="tcp", mode="tcp-pingpong",
         conns=1000, size=64, servers=["netsock", "libuv", "epoll", "uring"]),
    dict(name="pp10k", title=f"TCP ping-pong, {MANY_CONNS:,} conns x 64 B ({TIMER_WARMUP:g} s warm-up)", proto="tcp",
         mode="tcp-pingpong", conns=MANY_CONNS, size=64, servers=["netsock", "libuv", "epoll", "uring"],
         warmup=TIMER_WARMUP),
    # Issue 17: a 64 MiB response per request, sent from the application's buffer
    # (ns_conn_send_owned) or copied (ns_conn_send).
    dict(name="fetch-64m", title=f"TCP, 4 conns, a {FETCH_SIZE >> 20} MiB response per 1-byte request, from "
         "the application's buffer (owned) or copied (copy)", proto="tcp", mode="tcp-fetch", conns=4,
         size=FETCH_SIZE, servers=["owned", "copy"]),
    dict(name="udp-pp-64", title=f"UDP ping-pong, 8 sockets x 64 B ({KEPT_ROUNDS} short rounds, servers kept up)",
         proto="udp", mode="udp-pingpong", conns=8, size=64, servers=["netsock", "libuv", "epoll"], kept_up=True),
    # Issue 15: accept-heavy load, one shared listener (loop 0 hands connections round) against
    # one SO_REUSEPORT socket per loop.
    dict(name="churn", title="Connection churn: 50 clients each connect, send 64 B, read the echo and reset, again "
         "and again: one loop, two loops sharing one listener, two loops with reuseport", proto="tcp",
         mode="tcp-churn", conns=50, size=64, servers=["netsock", "netsock-2t", "netsock-rp-2t", "epoll-2t"]),
    dict(name="idle", title=f"{IDLE_CONNS} idle connections, then one echo each", proto="tcp", mode="idle",
         conns=IDLE_CONNS, size=16, servers=["netsock", "libuv", "epoll"]),
    # Issue 13's timers: a program of each library runs its own timers on its loop, pinned to
    # the server's core, and measures itself (no load generator).
    dict(name="timers", group="timers", title=f"{TIMERS:,} repeating timers ({TIMER_PERIOD_MS} ms), one loop "
         f"thread, first expiries spread over the first period ({TIMER_WARMUP:g} s warm-up)", mode="timers",
         servers=["netsock", "libuv"], warmup=TIMER_WARMUP,
         cmd={"netsock": lambda w, d: [BIN["ns_timers"], "timers", str(TIMERS), str(TIMER_PERIOD_MS), str(w), str(d)],
              "libuv": lambda w, d: [BIN["uv_timers"], "timers", str(TIMERS), str(TIMER_PERIOD_MS), str(w), str(d)]}),
    # Issue 16: the RESP example against redis-server, redis-benchmark as the load.
    dict(name="resp-p1", group="resp", title=f"RESP: redis-benchmark -t ping,set,get -P 1, {RESP_CLIENTS} clients, "
         "against examples-c/resp_server and redis-server", mode="resp", pipeline=1,
         servers=["netsock", "redis-server"]),
    dict(name="resp-p16", group="resp", title=f"RESP: redis-benchmark -t ping,set,get -P 16, {RESP_CLIENTS} clients, "
         "against examples-c/resp_server and redis-server", mode="resp", pipeline=16,
         servers=["netsock", "redis-server"]),
    # Issue 17: gathered writes. bench/ns_resp.c answering redis-benchmark -P 16 with one
    # ns_conn_send per reply (each) or one per delivery (gather).
    dict(name="resp-gather", group="resp", title=f"RESP: redis-benchmark -t ping,set,get -P 16, {RESP_CLIENTS} "
         "clients, against bench/ns_resp.c sending each reply (each) or gathering a delivery's (gather)",
         mode="resp", pipeline=16, servers=["each", "gather"]),
    dict(name="workers-block-100", group="workers", title=f"Workers: a handler blocking {WORK_BLOCK_MS} ms per "
         "request, 100 clients (connect, request, \"ACK!\", close), netsock with "
         f"{WORKERS} workers vs a thread per connection", proto="tcp", mode="tcp-oneshot", conns=100, size=64,
         servers=list(BLOCKING), cmd=BLOCKING),
    dict(name="workers-block-1000", group="workers", title=f"Workers: a handler blocking {WORK_BLOCK_MS} ms per "
         f"request, 1,000 clients, netsock with {WORKERS} workers vs a thread per connection", proto="tcp",
         mode="tcp-oneshot", conns=1000, size=64, servers=list(BLOCKING), cmd=BLOCKING),
    dict(name="workers-pp50", group="workers", title=f"Workers: TCP ping-pong, 50 conns x 64 B, a CPU-bound handler "
         f"({WORK_SPIN_US} us of CPU per message) on 1 worker vs on the loop thread", proto="tcp",
         mode="tcp-pingpong", conns=50, size=64, servers=list(SPINNING), cmd=SPINNING),
    dict(name="conn-timers", group="timers", title=f"TCP ping-pong, {TIMER_CONNS:,} conns x 64 B, every message "
         f"re-arming its connection's timer (5 s) ({TIMER_WARMUP:g} s warm-up)", proto="tcp", mode="tcp-pingpong",
         conns=TIMER_CONNS, size=64, servers=["netsock", "libuv"], warmup=TIMER_WARMUP,
         cmd={"netsock": lambda proto: [BIN["ns_timers"], "conn", ADDR, "timer"],
              "libuv": lambda proto: [BIN["uv_timers"], "conn", ADDR, "timer"]}),
    # Issue 14: TLS, netsock (rustls) against a minimal epoll + OpenSSL server.
    dict(name="tls-handshake", group="tls", title="TLS: full handshakes (no resumption), 4 clients, each "
         "with a 1 B echo and close_notify", proto="tcp", mode="tls-handshake", conns=4, size=1,
         servers=["netsock", "openssl"], cmd=TLS_SERVERS, loadgen=BIN["tls_loadgen"]),
    dict(name="tls-pp-64", group="tls", title="TLS ping-pong, 50 persistent conns x 64 B", proto="tcp",
         mode="tls-pingpong", conns=50, size=64, servers=["netsock", "openssl"], cmd=TLS_SERVERS,
         loadgen=BIN["tls_loadgen"]),
    dict(name="tls-stream", group="tls", title="TLS streaming, 4 conns x 64 KiB echoed", proto="tcp",
         mode="tls-stream", conns=4, size=65536, servers=["netsock", "openssl"], cmd=TLS_SERVERS,
         loadgen=BIN["tls_loadgen"]),
]

# The base revision runs beside netsock (right after it in the rotation of each round).
BASE_SCENARIOS = ("tcp-pp-64", "tcp-pp-4k", "tcp-stream", "udp-pp-64", "idle")
if BASE:
    for sc in SCENARIOS:
        if sc["name"] in BASE_SCENARIOS:
            i = sc["servers"].index("netsock")
            sc["servers"].insert(i + 1, "netsock-base")

SERVERS_ONLY = [x for x in os.environ.get("BENCH_SERVERS", "").split(",") if x]
if SERVERS_ONLY:
    unknown = set(SERVERS_ONLY) - set(SERVERS) - {"redis-server", "openssl"} - set(RESP_NS)
    if unknown:
        sys.exit(f"bench: unknown server(s) in BENCH_SERVERS: {', '.join(sorted(unknown))}")
    for sc in SCENARIOS:
        sc["servers"] = [s for s in sc["servers"] if s in SERVERS_ONLY]

ONLY = [x for x in os.environ.get("BENCH_ONLY", "").split(",") if x]
if ONLY:
    unknown = set(ONLY) - {sc["name"] for sc in SCENARIOS} - {sc.get("group") for sc in SCENARIOS}
    if unknown:
        sys.exit(f"bench: unknown scenario(s) in BENCH_ONLY: {', '.join(sorted(unknown))}")
    SCENARIOS = [sc for sc in SCENARIOS if sc["name"] in ONLY or sc.get("group") in ONLY]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        uv = subprocess.run(["pkg-config", "--modversion", "libuv"], capture_output=True, text=True).stdout.strip()
    except OSError:
        uv = "?"
    try:
        rev = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = ""
    try:
        with open(os.path.join(OUT, "..", "libnetsock.so"), "rb") as f:
            lib = hashlib.sha256(f.read()).hexdigest()[:12]
    except OSError:
        lib = "?"
    info = {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(), "libuv": uv,
            "rev": rev or "?", "lib": lib}
    if any(sc["mode"] == "resp" for sc in SCENARIOS):
        try:
            v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
            info["redis"] = next((x[2:] for x in v if x.startswith("v=")), "?")
        except OSError:
            info["redis"] = "?"
    if BASE:
        def read(name, binary=False):
            try:
                with open(os.path.join(OUT, name), "rb" if binary else "r") as f:
                    return f.read() if binary else f.read().strip()
            except OSError:
                return None
        lib = read("base-lib/libnetsock.so", binary=True)
        info["base_rev"] = (read("base.rev") or "?")[:12]
        info["base_lib"] = hashlib.sha256(lib).hexdigest()[:12] if lib else "?"
        info["base_echo"] = read("base-echo.txt") or "?"
    return info


def probe_uring():
    """Whether the io_uring reference can run here (`uring_echo probe`); if not, it is left
    out of every scenario and the table says why."""
    try:
        r = subprocess.run([BIN["uring_echo"], "probe"], capture_output=True, text=True, timeout=10)
        why = (r.stdout.strip() or r.stderr.strip() or f"exit status {r.returncode}")
        ok = r.returncode == 0
    except (OSError, subprocess.TimeoutExpired) as e:
        ok, why = False, f"unavailable: {e}"
    if ok:
        return "available"
    log(f"bench: io_uring reference left out: {why}")
    for sc in SCENARIOS:
        sc["servers"] = [s for s in sc["servers"] if s != "uring"]
    return why


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    try:
        if hard < need:  # root may raise the hard limit too (ulimit -Hn)
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    except (ValueError, OSError) as e:
        log(f"bench: cannot raise the descriptor limit to {need} ({e}); soft limit stays {soft}")


def busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7], sum(v)


def wait_quiet(limit):
    """Waits (up to `limit` s) until the machine is quiet: under 10% of one core busy over
    0.3 s. Returns (seconds waited, busy cores seen last)."""
    start = time.monotonic()
    ncpu = os.cpu_count() or 1
    while True:
        b0, t0 = busy_ticks()
        time.sleep(0.3)
        b1, t1 = busy_ticks()
        cores = (b1 - b0) / max(1, t1 - t0) * ncpu
        waited = time.monotonic() - start
        if cores < 0.10 or waited >= limit:
            return waited, cores


def start_server(server, proto, sc=None):
    cmd = ["taskset", "-c", SERVER_CPU] + (sc.get("cmd") or SERVERS)[server](proto)
    errlog = open(os.path.join(OUT, "server.log"), "a")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errlog, text=True)
    errlog.close()
    ready, _, _ = select.select([p.stdout], [], [], 10)
    line = p.stdout.readline() if ready else ""
    # "port=N", or the seed server's "[*] Listening on HOST:N"
    port = re.match(r"port=(\d+)$|\[\*\] Listening on .*:(\d+)$", line.strip())
    if not port:
        stop_server(p)
        raise RuntimeError(f"{server} did not start (said {line!r}; see {OUT}/server.log)")
    # What a server prints later (the seed server, a line per request) must not fill the pipe.
    threading.Thread(target=drain, args=(p.stdout,), daemon=True).start()
    return p, int(port.group(1) or port.group(2))


def drain(f):
    try:
        for _ in f:
            pass
    except (OSError, ValueError):
        pass


def stop_server(p):
    """Stops the server we started, by its PID (taskset execs it, so that is the server's)."""
    if p.poll() is None:
        os.kill(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    if p.stdout is not None:
        p.stdout.close()


def parse_result(text):
    for line in text.splitlines():
        if line.startswith("RESULT "):
            out = {}
            for kv in line.split()[1:]:
                k, _, v = kv.partition("=")
                try:
                    out[k] = float(v)
                except ValueError:
                    out[k] = v
            return line, out
    return None, None


class Budget:
    """Time left for waiting for quiet and for repeating disturbed runs."""

    def __init__(self, seconds):
        self.left = seconds

    def spend(self, seconds):
        self.left = max(0.0, self.left - seconds)


BUDGET = Budget(WAIT_BUDGET)


def disturbed(res):
    bg, win = res.get("bg_cpu_s"), res.get("window_s")
    return isinstance(bg, float) and isinstance(win, float) and win > 0 and bg / win > BG_LIMIT


def run_measured(sc, server, raw, rnd, running=None):
    """One run, repeated (within the budget) while other processes disturbed it. `running`:
    (process, port) of a server kept up for the scenario, else one is started for the run."""
    for attempt in range(RETRIES + 1):
        t = time.monotonic()
        line, res = run_one(sc, server, running)
        res["attempt"] = attempt + 1
        if not disturbed(res) or attempt == RETRIES or BUDGET.left <= 0:
            return line, res
        BUDGET.spend(time.monotonic() - t)
        bg = res["bg_cpu_s"] / res["window_s"]
        log(f"  disturbed (other processes used {bg:.2f} cores): repeating")
        raw.write(f"round={rnd} scenario={sc['name']} server={server} DISCARDED(disturbed) {line}\n")


def run_self_measured(sc, server):
    """One run of a program that loads and measures itself (the timers scenario), pinned to
    the server's core."""
    warmup = sc.get("warmup", WARMUP)
    cmd = ["taskset", "-c", SERVER_CPU] + sc["cmd"][server](warmup, WINDOW)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=warmup + WINDOW + 60)
    line, res = parse_result(r.stdout)
    if res is None or r.returncode != 0:
        raise RuntimeError(f"{sc['name']}/{server} gave no result: rc={r.returncode} {r.stderr.strip()}")
    if r.stderr.strip():
        log(f"  {server} said: {r.stderr.strip()}")
    return line, res


def run_one(sc, server, running=None):
    if QUIET_WAIT > 0 and running is None:
        waited, cores = wait_quiet(min(QUIET_WAIT, max(0.3, BUDGET.left)))
        BUDGET.spend(max(0.0, waited - 0.3))
    else:
        waited, cores = 0.0, -1.0
    if sc["mode"] == "timers":
        line, res = run_self_measured(sc, server)
        res["quiet_wait_s"], res["pre_busy_cores"], res["server_alive"] = waited, cores, True
        return line, res
    if sc["mode"] == "resp":
        line, res = run_resp(sc, server)
        res["quiet_wait_s"], res["pre_busy_cores"] = waited, cores
        return line, res
    p, port = running or start_server(server, sc["proto"], sc)
    window, warmup = (KEPT_WINDOW, KEPT_WARMUP) if running else (WINDOW, sc.get("warmup", WARMUP))
    try:
        cmd = ["taskset", "-c", LOADGEN_CPU, sc.get("loadgen", BIN["loadgen"]), sc["mode"], "--host", "127.0.0.1",
               "--port", str(port), "--conns", str(sc["conns"]), "--size", str(sc["size"]), "--pid", str(p.pid)]
        if sc["mode"] == "idle":
            cmd += ["--duration", "60", "--settle", "0.5"]
            limit = 120
        else:
            cmd += ["--duration", str(window), "--warmup", str(warmup)]
            limit = window + warmup + 60
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
        alive = p.poll() is None
    finally:
        if running is None:
            stop_server(p)
    line, res = parse_result(r.stdout)
    if res is None:
        raise RuntimeError(f"loadgen gave no result for {sc['name']}/{server}: rc={r.returncode} {r.stderr.strip()}")
    if r.stderr.strip():
        log(f"  loadgen said: {r.stderr.strip()}")
    res["quiet_wait_s"], res["pre_busy_cores"], res["server_alive"] = waited, cores, alive
    if isinstance(res.get("srv_ctxsw"), float) and res.get("requests"):
        res["ctxsw_per_req"] = res["srv_ctxsw"] / res["requests"]
    if isinstance(res.get("srv_user_s"), float) and res.get("requests"):
        res["user_us_per_req"] = res["srv_user_s"] * 1e6 / res["requests"]
    if isinstance(res.get("srv_user_s"), float) and res.get("bytes"):
        res["user_ms_per_gb"] = res["srv_user_s"] * 1e3 / (res["bytes"] / 1e9)
    return line, res


# ---- the RESP scenarios ----

def free_port():
    """A port nobody listens on now (redis-server takes no port 0: it means no TCP at all)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_resp_server(server):
    """Starts resp_server or redis-server pinned to the server's core; (process, port)."""
    errlog = open(os.path.join(OUT, "server.log"), "a")
    try:
        if server == "netsock":
            p = subprocess.Popen(["taskset", "-c", SERVER_CPU, RESP_SERVER, "127.0.0.1:0"],
                                 stdout=subprocess.PIPE, stderr=errlog, text=True)
            ready, _, _ = select.select([p.stdout], [], [], 10)
            line = p.stdout.readline() if ready else ""
            if not line.startswith("listening on "):
                stop_server(p)
                raise RuntimeError(f"resp_server did not start (said {line!r}; see {OUT}/server.log)")
            return p, int(line.strip().rsplit(":", 1)[1])
        if server in RESP_NS:
            p = subprocess.Popen(["taskset", "-c", SERVER_CPU, BIN["ns_resp"], RESP_NS[server], ADDR],
                                 stdout=subprocess.PIPE, stderr=errlog, text=True)
            ready, _, _ = select.select([p.stdout], [], [], 10)
            line = p.stdout.readline() if ready else ""
            if not line.startswith("port="):
                stop_server(p)
                raise RuntimeError(f"ns_resp did not start (said {line!r}; see {OUT}/server.log)")
            return p, int(line.strip().split("=", 1)[1])
        port = free_port()
        workdir = os.path.join(OUT, "redis")
        os.makedirs(workdir, exist_ok=True)
        p = subprocess.Popen(["taskset", "-c", SERVER_CPU, "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", workdir,
                              "--logfile", ""], stdout=errlog, stderr=errlog)
    finally:
        errlog.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"redis-server exited with {p.returncode} (see {OUT}/server.log)")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return p, port
        except OSError:
            pass
        time.sleep(0.05)
    stop_server(p)
    raise RuntimeError(f"redis-server did not answer on port {port} within 10 s")


def proc_cpu_ticks(pid):
    """utime + stime of a process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def redis_benchmark(port, test, n, pipeline):
    """One redis-benchmark run pinned to the load generator's core: (rows, error text, CPU s it used).
    rows: {name: csv row} (PING_INLINE, PING_MBULK, SET, GET)."""
    cmd = ["taskset", "-c", LOADGEN_CPU, "redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c",
           str(RESP_CLIENTS), "-n", str(n), "-P", str(pipeline), "-t", test, "--csv"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rows, errors = {}, []
    for row in csv.reader(r.stdout.splitlines()):
        if len(row) >= 7 and row[0] != "test":
            try:
                rows[row[0]] = {"rps": float(row[1]), "p50_ms": float(row[4]), "p99_ms": float(row[6])}
            except ValueError:
                errors.append(",".join(row))
        elif row and row[0] != "test":
            errors.append(",".join(row))
    if r.returncode != 0:
        errors.append(f"exit status {r.returncode}")
    errors += [x for x in r.stderr.splitlines() if x.strip()]
    return rows, "; ".join(errors), used


def run_resp(sc, server):
    """One run: a fresh server, a warm-up run of the three commands, then each command measured
    alone for about a window, its request count set from the warm-up's rate."""
    p, port = start_resp_server(server)
    pipeline = sc["pipeline"]
    clk = os.sysconf("SC_CLK_TCK")
    res = {"mode": "resp", "errors": 0.0}
    problems = []
    try:
        warm = int(max(2000, 10000 * pipeline * WARMUP / 0.5))
        rows, err, _ = redis_benchmark(port, ",".join(RESP_TESTS), warm, pipeline)
        if err:
            problems.append(f"warm-up: {err}")
        rate = {t: med([v["rps"] for k, v in rows.items() if k.lower().startswith(t)]) for t in RESP_TESTS}
        cpu_total = reqs_total = wall_total = bg_total = 0.0
        p99 = []
        for test in RESP_TESTS:
            n = int(max(5000, (rate.get(test) or 20000) * WINDOW))
            busy0, _ = busy_ticks()
            t0, c0 = time.monotonic(), proc_cpu_ticks(p.pid)
            rows, err, bench_cpu = redis_benchmark(port, test, n, pipeline)
            t1, c1 = time.monotonic(), proc_cpu_ticks(p.pid)
            busy1, _ = busy_ticks()
            if err:
                problems.append(f"{test}: {err}")
            if not rows:
                raise RuntimeError(f"redis-benchmark -t {test} against {server} gave no result: {err}")
            reqs = n * len(rows)
            cpu = (c1 - c0) / clk
            res[f"cpu_us_{test}"] = cpu * 1e6 / reqs
            res[f"rps_{test}"] = sum(v["rps"] for v in rows.values()) / len(rows)
            p99 += [v["p99_ms"] for v in rows.values()]
            cpu_total += cpu
            reqs_total += reqs
            wall_total += t1 - t0
            bg_total += max(0.0, (busy1 - busy0) / clk - cpu - bench_cpu)
        res["cpu_us_per_req"] = cpu_total * 1e6 / reqs_total
        res["rps"] = reqs_total / wall_total
        res["p99_ms"] = max(p99)
        res["requests"] = reqs_total
        res["window_s"] = wall_total
        res["bg_cpu_s"] = bg_total
        res["server_alive"] = p.poll() is None
    finally:
        stop_server(p)
    if problems:
        res["errors"] = float(len(problems))
        log(f"  {server}: {' | '.join(problems)}")
    line = "RESULT " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items())
    return line, res


# ---- aggregation and the table ----

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, digits=1):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r, digits=2):
    return "-" if r is None else f"{r:.{digits}f}x"


def interval(xs, n=2000):
    """Bootstrap 95% interval of the median of xs (fixed seed: the same data, the same text)."""
    rng = random.Random(1)
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(n))
    return meds[int(0.025 * n)], meds[int(0.975 * n) - 1]


def base_of(srv):
    """The one-loop server a several-loop variant is compared with ("netsock-2t" -> "netsock");
    netsock-base (netsock_w1-base), another build of netsock, is its own."""
    return srv if srv == "redis-server" or srv.endswith("-base") else srv.split("-")[0]


# What each scenario reports: (key in the loadgen's line, column name, digits, higher is better)
METRICS = {
    "tcp-pingpong": [("rps", "req/s", 0, True), ("p50_us", "p50 us", 1, False), ("p99_us", "p99 us", 0, False),
                     ("cpu_us_per_req", "server CPU us/req", 2, False), ("user_us_per_req", "of it user us/req", 2, False),
                     ("ctxsw_per_req", "ctx sw/req", 3, False)],
    "udp-pingpong": [("rps", "req/s", 0, True), ("p50_us", "p50 us", 1, False), ("p99_us", "p99 us", 0, False),
                     ("cpu_us_per_req", "server CPU us/req", 2, False), ("user_us_per_req", "of it user us/req", 2, False),
                     ("ctxsw_per_req", "ctx sw/req", 3, False)],
    "tcp-churn": [("rps", "conns/s", 0, True), ("p50_us", "p50 us", 1, False), ("p99_us", "p99 us", 0, False),
                  ("cpu_us_per_req", "server CPU us/conn", 2, False), ("user_us_per_req", "of it user us/conn", 2, False),
                  ("ctxsw_per_req", "ctx sw/conn", 3, False)],
    "tcp-stream": [("mbps", "MB/s", 0, True), ("cpu_ms_per_gb", "server CPU ms/GB", 0, False),
                   ("user_ms_per_gb", "of it user ms/GB", 0, False)],
    "tcp-oneshot": [("rps", "req/s", 0, True), ("p50_us", "p50 us", 0, False), ("p99_us", "p99 us", 0, False),
                    ("srv_hwm_kb", "peak RSS kB", 0, False), ("srv_threads", "threads", 0, False),
                    ("cpu_us_per_req", "server CPU us/req", 1, False), ("errors", "errors", 0, False)],
    "tcp-fetch": [("rps", "req/s", 1, True), ("mbps", "MB/s", 0, True), ("p50_ms", "p50 ms", 1, False),
                  ("p99_ms", "p99 ms", 1, False), ("cpu_ms_per_gb", "server CPU ms/GB", 0, False),
                  ("srv_peak_rss_kb", "server peak VmRSS kB", 0, False)],
    "idle": [("held_b_per_conn", "B/conn held", 0, False), ("after_b_per_conn", "B/conn after echo", 0, False),
             ("connect_s", "connect all s", 2, False), ("echoed", "echoed", 0, True)],
    "resp": [("cpu_us_per_req", "server CPU us/req", 2, False), ("cpu_us_ping", "of it PING", 2, False),
             ("cpu_us_set", "SET", 2, False), ("cpu_us_get", "GET", 2, False), ("rps", "req/s", 0, True),
             ("p99_ms", "worst p99 ms", 2, False)],
    "tls-handshake": [("hps", "handshakes/s", 0, True), ("cpu_us_per_handshake", "server CPU us/handshake", 1, False)],
    "tls-pingpong": [("rps", "req/s", 0, True), ("cpu_us_per_req", "server CPU us/req", 2, False)],
    "tls-stream": [("mbps", "MB/s", 0, True), ("cpu_ms_per_gb", "server CPU ms/GB", 0, False)],
    "timers": [("fires_per_s", "fires/s", 0, True), ("cpu_ns_per_fire", "CPU ns/fire", 1, False),
               ("user_ns_per_fire", "of it user ns/fire", 1, False), ("b_per_timer", "B/armed timer", 1, False),
               ("sleeps_per_s", "loop sleeps/s", 0, False)],
}

# The targets: (scenario, metric, server, against, limit)
TARGETS = [
    ("tcp-pp-64", "cpu_us_per_req", "netsock", "libuv", 1.00),
    ("tcp-pp-64", "cpu_us_per_req", "netsock", "epoll", 1.05),
    ("tcp-pp-64", "p99_us", "netsock", "libuv", 1.00),
    ("tcp-pp-64-loops", "cpu_us_per_req", "netsock-2t", "netsock", 1.00),
    # The same, net of what a second thread on the core costs the raw-epoll floor in the same
    # rounds: (netsock-2t / netsock) / (epoll-2t / epoll).
    ("tcp-pp-64-loops", "cpu_us_per_req", ("netsock-2t", "netsock"), ("epoll-2t", "epoll"), 1.00),
    ("tcp-pp-4k", "cpu_us_per_req", "netsock", "libuv", 1.00),
    ("tcp-pp-4k", "p99_us", "netsock", "libuv", 1.00),
    ("tcp-stream", "cpu_ms_per_gb", "netsock", "libuv", 1.00),
    ("udp-pp-64", "cpu_us_per_req", "netsock", "epoll", 1.00),
    ("udp-pp-64", "p99_us", "netsock", "libuv", 1.00),
    ("idle", "after_b_per_conn", "netsock", None, 256),
    ("timers", "cpu_ns_per_fire", "netsock", "libuv", 1.00),
    ("timers", "b_per_timer", "netsock", "libuv", None),  # shown beside libuv, no target set
    ("conn-timers", "cpu_us_per_req", "netsock", "libuv", 1.00),
    ("resp-p1", "cpu_us_per_req", "netsock", "redis-server", 1.00),
    ("resp-p16", "cpu_us_per_req", "netsock", "redis-server", 1.00),
    # Issue 15 asks for the measurement, not a target: reuseport against the shared listener.
    ("churn", "cpu_us_per_req", "netsock-rp-2t", "netsock-2t", None),
    ("churn", "rps", "netsock-rp-2t", "netsock-2t", None),
    # Throughput >= 0.9x thread-per-connection at 100 clients: tpc / netsock <= 1/0.9.
    ("workers-block-100", "rps", "tpc", f"netsock_w{WORKERS}", 1.11),
    ("workers-block-1000", "srv_hwm_kb", f"netsock_w{WORKERS}", "tpc", None),
    ("workers-pp50", "cpu_us_per_req", "netsock_w1", "netsock_w0", 1.05),
    ("tls-handshake", "cpu_us_per_handshake", "netsock", "openssl", 1.00),
    ("tls-pp-64", "cpu_us_per_req", "netsock", "openssl", 1.00),
    ("tls-stream", "cpu_ms_per_gb", "netsock", "openssl", 1.00),
    # Issue 17: one send per reply costs at most 1.3x one send per delivery.
    ("resp-gather", "cpu_us_per_req", "each", "gather", 1.30),
    # Many connections, beside each reference (no target set yet).
    ("pp1000", "cpu_us_per_req", "netsock", "epoll", None),
    ("pp1000", "cpu_us_per_req", "netsock", "libuv", None),
    ("pp1000", "cpu_us_per_req", "netsock", "uring", None),
    ("pp1000", "cpu_us_per_req", "uring", "epoll", None),
    ("pp10k", "cpu_us_per_req", "netsock", "epoll", None),
    ("pp10k", "cpu_us_per_req", "netsock", "libuv", None),
    ("pp10k", "cpu_us_per_req", "netsock", "uring", None),
    ("pp10k", "cpu_us_per_req", "uring", "epoll", None),
    ("tcp-stream", "cpu_ms_per_gb", "netsock", "epoll", 1.00),
    # Large responses: what sending from the application's buffer saves (no target set).
    ("fetch-64m", "cpu_ms_per_gb", "owned", "copy", None),
    ("fetch-64m", "srv_peak_rss_kb", "owned", "copy", None),
]
if BASE:
    # No regression against the base revision: its ratio and spread, judged by the reader
    # (within noise), so no limit here.
    TARGETS += [("tcp-pp-64", "cpu_us_per_req", "netsock", "netsock-base", None),
                ("tcp-pp-4k", "cpu_us_per_req", "netsock", "netsock-base", None),
                ("tcp-stream", "cpu_ms_per_gb", "netsock", "netsock-base", None),
                ("udp-pp-64", "cpu_us_per_req", "netsock", "netsock-base", None),
                ("workers-pp50", "cpu_us_per_req", "netsock_w1", "netsock_w1-base", None),
                ("workers-pp50", "ctxsw_per_req", "netsock_w1", "netsock_w1-base", None),
                ("workers-pp50", "cpu_us_per_req", "netsock_w1-base", "netsock_w0", 1.05)]


def build_table(results, info, started, elapsed):
    """results: {(scenario, server): [res, ...]} -> markdown text."""
    medians = {}
    for (scn, srv), runs in results.items():
        keys = {k for r in runs for k, v in r.items() if isinstance(v, float)}
        medians[(scn, srv)] = {k: med([r.get(k) for r in runs if isinstance(r.get(k), float)]) for k in keys}

    lines = []
    lines.append("# netsock benchmark")
    lines.append("")
    lines.append(f"{started:%Y-%m-%d %H:%M} UTC; machine: {info['nproc']} cores ({info['cpu']}), Linux {info['kernel']}, "
                 f"libuv {info['libuv']}" + (f", redis-server {info['redis']}" if "redis" in info else "") +
                 (f"; io_uring reference: {info['uring']}" if "uring" in info else "") +
                 f"; netsock at git {info['rev']} (libnetsock.so sha256 {info['lib']}). Server pinned to core {SERVER_CPU}, load generator to core {LOADGEN_CPU}, "
                 f"loopback. {ROUNDS} interleaved round(s), {WINDOW:g} s windows after {WARMUP:g} s warm-up; "
                 f"medians over rounds; run took {elapsed:.0f} s."
                 + (f" Scenarios with servers kept up: {KEPT_ROUNDS} rounds of {KEPT_WINDOW:g} s windows after "
                    f"{KEPT_WARMUP:g} s warm-up, against servers started once for the scenario." if any(sc.get("kept_up") for sc in SCENARIOS) else "")
                 + (f" netsock-base: netsock at git {info['base_rev']} (BENCH_BASE={BASE}; libnetsock.so sha256 "
                    f"{info['base_lib']}): {info['base_echo']}, built against its header and library, run as "
                    f"netsock is." if BASE else ""))
    lines.append("")
    lines.append("Server CPU = the server's utime+stime (/proc/PID/stat) over the window, per request (per GB "
                 "echoed for streaming). Idle: the server's VmRSS growth per connection (user space only), "
                 "while holding them and after each echoed once. netsock cells: value, then "
                 "netsock/libuv and netsock/epoll (RESP: netsock/redis-server)" + (" (and netsock/netsock-base: `base`)" if BASE else "") +
                 " (the ratio of the medians of this run; < 1 is better for "
                 "every column but throughput and `echoed`).")
    lines.append("")
    for sc in SCENARIOS:
        cols = METRICS[sc["mode"]]
        lines.append(f"## {sc['title']}")
        lines.append("")
        lines.append("| server | " + " | ".join(c[1] for c in cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for srv in sc["servers"]:
            m = medians.get((sc["name"], srv))
            if m is None:
                continue
            cells = []
            for key, _, digits, _ in cols:
                v = m.get(key)
                cell = fmt(v, digits)
                notes = []
                if srv.startswith("netsock"):
                    notes = [f"{fmt_ratio(ratio(v, medians.get((sc['name'], ref), {}).get(key)))} {short}"
                             for ref, short in REFS.items() if ref in sc["servers"]]
                if base_of(srv) != srv:
                    notes.append(f"{fmt_ratio(ratio(v, medians.get((sc['name'], base_of(srv)), {}).get(key)))} 1t")
                if f"{srv}-base" in sc["servers"]:
                    notes.append(f"{fmt_ratio(ratio(v, medians.get((sc['name'], f'{srv}-base'), {}).get(key)))} base")
                if notes:
                    cell += f" ({', '.join(notes)})"
                cells.append(cell)
            lines.append(f"| {srv} | " + " | ".join(cells) + " |")
        lines.append("")

    lines.append("## The issue's targets")
    lines.append("")
    lines.append("| scenario | figure | netsock | against | ratio (or value) | target | met | per round |")
    lines.append("|---|---|---|---|---|---|---|---|")
    def per_round(scn, srv):
        """{round: value} of one server, or of a pair's ratio when srv is (a, b)."""
        if isinstance(srv, tuple):
            a, b = per_round(scn, srv[0]), per_round(scn, srv[1])
            return {k: ratio(a[k], b.get(k)) for k in a if k in b}
        return {r.get("round"): r.get(key) for r in results.get((scn, srv), [])}

    def name(srv):
        return f"{srv[0]} / {srv[1]}" if isinstance(srv, tuple) else srv

    for scn, key, srv, ref, limit in TARGETS:
        needed = [x for s in (srv, ref) if s is not None for x in (s if isinstance(s, tuple) else (s,))]
        if any((scn, x) not in results for x in needed):
            continue
        v = medians.get((scn, srv), {}).get(key) if not isinstance(srv, tuple) else None
        mine = per_round(scn, srv)
        kept_up = any(sc.get("kept_up") for sc in SCENARIOS if sc["name"] == scn)
        if ref is None:
            shown, ok = fmt(v, 0), (v is not None and v <= limit)
            each = " ".join(fmt(mine[k], 0) for k in sorted(mine) if isinstance(mine[k], float))
            lines.append(f"| {scn} | {key} | {srv} | - | {shown} B | <= {limit} B | {'yes' if ok else 'NO'} | {each} |")
        else:
            theirs = per_round(scn, ref)
            paired = [ratio(mine[k], theirs.get(k)) for k in sorted(mine) if k in theirs]
            # The verdict pairs the runs of each round (seconds apart, so slow drifts of the
            # machine cancel) and takes the median of those ratios.
            r = med(paired) if any(x is not None for x in paired) else ratio(v, medians.get((scn, ref), {}).get(key))
            ok = r is not None and limit is not None and r <= limit + 1e-9
            if kept_up:
                # Many rounds: their spread, not each of them.
                xs = [x for x in paired if x is not None]
                shown = fmt_ratio(r, 3)
                if len(xs) >= 10:
                    lo, hi = interval(xs)
                    each = f"{len(xs)} rounds, 95% interval {fmt_ratio(lo, 3)} to {fmt_ratio(hi, 3)}"
                else:
                    each = f"{len(xs)} rounds (too few for an interval): " + " ".join(fmt_ratio(x) for x in xs)
            else:
                shown = fmt_ratio(r)
                each = " ".join(fmt_ratio(x) for x in paired)
            target, met = (f"<= {limit:.2f}x", "yes" if ok else "NO") if limit is not None else ("-", "-")
            lines.append(f"| {scn} | {key} | {name(srv)} | {name(ref)} | {shown} | {target} | {met} | {each} |")
    lines.append("")
    lines.append("`ratio` is the median of the `per round` ratios, each pairing the runs of one round (they ran "
                 "within seconds of each other; the tables above give the ratio of the medians). Noise between runs on this machine is about +-10-15%: a ratio "
                 "within that of its target is not a verdict by itself; raw.txt has every run.")

    # Health of the runs: errors, background load, a server that died.
    notes = []
    for (scn, srv), runs in sorted(results.items()):
        for i, r in enumerate(runs):
            if r.get("errors", 0) or r.get("lost", 0) or not r.get("server_alive", True) or \
                    (r.get("mode") == "idle" and r.get("ok") != 1.0):
                notes.append(f"{scn}/{srv} round {i + 1}: errors={r.get('errors')} lost={r.get('lost', 0)} "
                             f"server_alive={r.get('server_alive')}")
            bg = r.get("bg_cpu_s")
            win = r.get("window_s") or 1
            if isinstance(bg, float) and bg / win > BG_LIMIT:
                notes.append(f"{scn}/{srv} round {i + 1}: other processes used {bg / win:.2f} cores during the "
                             f"window (after {int(r.get('attempt', 1))} attempt(s))")
    if notes:
        lines.append("")
        lines.append("## Run health")
        lines.append("")
        lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def record(sc, srv, rnd, raw, results, running=None):
    """Measures one run and files it under results and in raw.txt."""
    try:
        line, res = run_measured(sc, srv, raw, rnd, running)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
        log(f"  FAILED: {e}")
        raw.write(f"round={rnd} scenario={sc['name']} server={srv} FAILED {e}\n")
        raw.flush()
        return
    res["round"] = rnd
    results.setdefault((sc["name"], srv), []).append(res)
    raw.write(f"round={rnd} scenario={sc['name']} server={srv} attempt={res['attempt']} "
              f"quiet_wait_s={res['quiet_wait_s']:.1f} pre_busy_cores={res['pre_busy_cores']:.2f} {line}\n")
    raw.flush()


def run_kept_up(sc, raw, results):
    """All of a scenario's rounds against servers started once for it: each waits, idle, while
    another is loaded."""
    running = {}
    try:
        for srv in sc["servers"]:
            running[srv] = start_server(srv, sc["proto"], sc)
        if QUIET_WAIT > 0:
            waited, _ = wait_quiet(min(QUIET_WAIT, max(0.3, BUDGET.left)))
            BUDGET.spend(max(0.0, waited - 0.3))
        for rnd in range(1, KEPT_ROUNDS + 1):
            k = (rnd - 1) % len(sc["servers"])
            log(f"{sc['name']} round {rnd}/{KEPT_ROUNDS}")
            for srv in sc["servers"][k:] + sc["servers"][:k]:
                record(sc, srv, rnd, raw, results, running[srv])
    except (RuntimeError, OSError) as e:
        log(f"  FAILED: {e}")
        raw.write(f"scenario={sc['name']} FAILED {e}\n")
    finally:
        for p, _ in running.values():
            stop_server(p)


def main():
    for name, path in BIN.items():
        # ns_work_base is absent for a base revision without workers (bench.mk says so).
        if not os.access(path, os.X_OK) and name != "ns_work_base":
            sys.exit(f"bench: {path} is missing: build it with `make bench-build`")
    if any(sc["mode"] == "resp" for sc in SCENARIOS):
        if not os.access(RESP_SERVER, os.X_OK):
            sys.exit(f"bench: {RESP_SERVER} is missing: build it with `make bench-build`")
        for tool in ("redis-server", "redis-benchmark"):
            if shutil.which(tool) is None:
                sys.exit(f"bench: {tool} is missing (`make bench` installs Debian's redis-server)")
    raise_nofile(max(2 * IDLE_CONNS, TIMER_CONNS, MANY_CONNS) + 1024)
    info = machine()
    if any("uring" in sc["servers"] for sc in SCENARIOS):
        info["uring"] = probe_uring()
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    open(os.path.join(OUT, "server.log"), "w").close()
    raw_path = os.path.join(OUT, "raw.txt")
    results = {}
    with open(raw_path, "w") as raw:
        raw.write(f"# netsock bench {started.isoformat()} nproc={info['nproc']} cpu={info['cpu']!r} "
                  f"kernel={info['kernel']} libuv={info['libuv']}" + (f" redis={info['redis']}" if "redis" in info else "") +
                  f" git={info['rev']} libnetsock_sha256={info['lib']} rounds={ROUNDS} window_s={WINDOW} "
                  f"warmup_s={WARMUP} quick={int(QUICK)}"
                  + (f" base={BASE} base_git={info['base_rev']} base_libnetsock_sha256={info['base_lib']}" if BASE else "")
                  + "\n")
        for rnd in range(1, ROUNDS + 1):
            for sc in SCENARIOS:
                if sc.get("kept_up"):
                    if rnd == 1:
                        run_kept_up(sc, raw, results)
                    continue
                # Each round starts with another server: no server always runs first or last.
                k = (rnd - 1) % len(sc["servers"])
                for srv in sc["servers"][k:] + sc["servers"][:k]:
                    log(f"round {rnd}/{ROUNDS}  {sc['name']:<10}  {srv}")
                    record(sc, srv, rnd, raw, results)
    table = build_table(results, info, started, time.monotonic() - t0)
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(table)
    print(table)
    print(f"(table: {OUT}/results.md; raw lines: {raw_path})")


if __name__ == "__main__":
    main()
