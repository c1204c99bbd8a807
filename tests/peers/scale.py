#!/usr/bin/env python3
"""Past one process (issue 15), against programs nobody here wrote and across processes:

    python3 tests/peers/scale.py BINDIR        (run by tests/peers/run.sh, make test-peers)

- a parent that binds and passes descriptor 3 ("fd:3"): TCP (echo_server), UDP (udp_server),
  Unix (echo_server), and a UDP socket given to a TCP server (refused: bad address);
- systemd-socket-activate (the systemd package) passing a socket: "systemd:0", "systemd:NAME"
  (--fdname), and a datagram socket (-d) to udp_server;
- prefork_server: two worker processes with reuseport on one port both get connections, and a
  killed worker is restarted;
- HAProxy in front of proxied_server with send-proxy and send-proxy-v2: the server reports the
  client's real address and port;
- restart_server handed over under load (SIGHUP): clients connecting and asking continuously
  across the handoff see no failure, replies come from both processes, the old one exits 0.

Every process is started here and stopped by its pid (or its own process group); every wait is
bounded; ports are 127.0.0.1 ones the kernel chose. Prints "ok   NAME" or "FAIL NAME" per
check and exits 1 if any failed.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "build"
TMP = tempfile.mkdtemp(prefix="netsock-scale-")
failed = 0
started = []


def check(name, ok, detail=""):
    global failed
    if ok:
        print(f"ok   {name}", flush=True)
    else:
        failed += 1
        print(f"FAIL {name}", flush=True)
        if detail:
            for line in str(detail).splitlines():
                print(f"     | {line}", flush=True)


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(args, **kw):
    """Starts a program in a process group of its own (so that what it spawns goes with it)."""
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True, **kw)
    started.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=10):
    """Stops a process we started, and its group; its exit status."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return p.returncode


def read_line(p, want, timeout=10):
    """The first line of p's output containing `want` (within timeout), or None."""
    got = []
    done = threading.Event()

    def reader():
        for line in p.stdout:
            got.append(line)
            if want in line:
                break
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    done.wait(timeout)
    return next((l for l in got if want in l), None)


def ask(port, text=b"hello\n", timeout=5, host="127.0.0.1"):
    """Connects, sends text, returns (reply line, our local port)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        local = s.getsockname()[1]
        s.sendall(text)
        buf = b""
        while not buf.endswith(b"\n"):
            b = s.recv(4096)
            if not b:
                break
            buf += b
        return buf.decode(errors="replace"), local


def wait_port(port, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


# ---- fd:3 from a parent -------------------------------------------------------------------

def with_fd3(sock, args):
    """Starts args with sock as its descriptor 3 (as a parent process hands one down)."""
    fd = sock.fileno()

    def as_fd3():
        if fd != 3:
            os.dup2(fd, 3)
        os.set_inheritable(3, True)  # dup2 onto itself would keep close-on-exec

    return start(args, close_fds=False, preexec_fn=as_fd3)


def fd_passing():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    port = s.getsockname()[1]
    p = with_fd3(s, [f"{BIN}/echo_server", "fd:3"])
    line = read_line(p, "listening on")
    s.close()
    reply, _ = ask(port) if line else ("", 0)
    check("fd:3 from a parent, TCP: echo_server serves the inherited socket", reply == "hello\n", f"{line!r} {reply!r}")
    stop(p)

    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    uport = u.getsockname()[1]
    p = with_fd3(u, [f"{BIN}/udp_server", "fd:3"])
    line = read_line(p, "listening on")
    u.close()
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(5)
    try:
        c.sendto(b"ping", ("127.0.0.1", uport))
        reply = c.recv(100)
    except OSError as e:
        reply = repr(e).encode()
    c.close()
    check("fd:3 from a parent, UDP: udp_server answers on the inherited socket", reply == b"Recvice message ok!",
          f"{line!r} {reply!r}")
    stop(p)

    path = os.path.join(TMP, "fd3.sock")
    x = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    x.bind(path)
    x.listen(4)
    p = with_fd3(x, [f"{BIN}/echo_server", "fd:3"])
    line = read_line(p, "listening on")
    x.close()
    reply = ""
    if line:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(5)
            c.connect(path)
            c.sendall(b"unix\n")
            reply = c.recv(100).decode()
    check("fd:3 from a parent, Unix: echo_server serves the inherited socket", reply == "unix\n", f"{line!r} {reply!r}")
    stop(p)

    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    p = with_fd3(u, [f"{BIN}/echo_server", "fd:3"])
    u.close()
    try:
        out, _ = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        out = "still running"
    check("fd:3 of a UDP socket to a TCP server: refused, bad address", p.returncode == 1 and "NS_ERR_ADDR" in out, out)
    stop(p)


# ---- systemd-socket-activate ------------------------------------------------------------------

def socket_activation():
    for extra, spec in (([], "systemd:0"), (["--fdname=web"], "systemd:web")):
        port = free_port()
        p = start(["systemd-socket-activate", "-l", f"127.0.0.1:{port}", *extra, f"{BIN}/echo_server", spec])
        ok = read_line(p, "Listening on", 10) is not None or wait_port(port)
        try:
            reply, _ = ask(port, b"activated\n") if ok else ("", 0)
        except OSError as e:
            reply = repr(e)
        check(f"systemd-socket-activate -l 127.0.0.1:PORT {' '.join(extra)} echo_server {spec}".replace("  ", " "),
              reply == "activated\n", reply)
        stop(p)
    port = free_port(socket.SOCK_DGRAM)
    p = start(["systemd-socket-activate", "-d", "-l", f"127.0.0.1:{port}", f"{BIN}/udp_server", "systemd:0"])
    read_line(p, "Listening on", 10)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(1)
    reply = b""
    for _ in range(10):
        try:
            c.sendto(b"ping", ("127.0.0.1", port))
            reply = c.recv(100)
            break
        except OSError:
            pass
    c.close()
    check("systemd-socket-activate -d (datagram) udp_server systemd:0", reply == b"Recvice message ok!", reply)
    stop(p)


# ---- prefork workers with reuseport ------------------------------------------------------------

def prefork():
    p = start([f"{BIN}/prefork_server", "127.0.0.1:0", "2"])
    line = read_line(p, "listening on")
    if not line:
        check("prefork_server starts", False, "no 'listening on' line")
        stop(p)
        return
    port = int(line.split()[2].rsplit(":", 1)[1])
    wait_port(port)

    def workers_seen(n):
        seen = {}
        for i in range(n):
            try:
                reply, _ = ask(port, b"x\n")
            except OSError:
                continue
            if reply.startswith("worker "):
                pid = int(reply.split()[1].rstrip(":"))
                seen[pid] = seen.get(pid, 0) + 1
        return seen

    time.sleep(0.3)
    seen = workers_seen(60)
    check("prefork_server: two processes with reuseport on one port both get connections", len(seen) == 2,
          f"replies by worker: {seen}")
    if seen:
        victim = next(iter(seen))
        os.kill(victim, signal.SIGKILL)
        restarted = read_line(p, "restarted as", 10)
        time.sleep(0.3)
        after = workers_seen(60)
        check("prefork_server: a killed worker is restarted, and the new one gets connections",
              restarted is not None and victim not in after and len(after) == 2, f"{restarted!r} {after}")
    rc = stop(p)
    check("prefork_server stops its workers and exits 0 on SIGTERM", rc == 0, f"exit {rc}")


# ---- HAProxy with send-proxy and send-proxy-v2 -----------------------------------------------

def haproxy():
    srv = start([f"{BIN}/proxied_server", "127.0.0.1:0"])
    line = read_line(srv, "listening on")
    if not line:
        check("proxied_server starts", False)
        stop(srv)
        return
    back = int(line.split()[2].rsplit(":", 1)[1])
    f1, f2, f3 = free_port(), free_port(), free_port()
    cfg = os.path.join(TMP, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(f"""global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend v1
    bind 127.0.0.1:{f1}
    default_backend v1
backend v1
    server app 127.0.0.1:{back} send-proxy
frontend v2
    bind 127.0.0.1:{f2}
    default_backend v2
backend v2
    server app 127.0.0.1:{back} send-proxy-v2
frontend direct
    bind 127.0.0.1:{f3}
    default_backend direct
backend direct
    server app 127.0.0.1:{back}
""")
    hp = start(["haproxy", "-db", "-f", cfg])
    up = wait_port(f1) and wait_port(f2)
    for name, port in (("send-proxy", f1), ("send-proxy-v2", f2)):
        try:
            reply, local = ask(port, b"hi\n") if up else ("", 0)
        except OSError as e:
            reply, local = repr(e), 0
        want = f"127.0.0.1:{local}: hi\n"
        check(f"HAProxy {name} in front: the server sees the client's real address and port", reply == want,
              f"want {want!r}, got {reply!r}")
    # Without a header (a proxy that does not send one): refused, never served.
    try:
        reply, _ = ask(f3, b"hi\n", timeout=8) if up else ("x", 0)
    except OSError as e:
        reply = ""
    check("HAProxy without send-proxy: the connection is refused, nothing answered", reply == "", repr(reply))
    stop(hp)
    rc = stop(srv, signal.SIGINT)
    out = srv.stdout.read() if srv.stdout else ""
    check("proxied_server counts the connection without a header", "1 refused for a bad or missing PROXY header" in out
          and rc == 0, out)


# ---- restart_server handed over under load -----------------------------------------------------

def handoff_under_load():
    path = os.path.join(TMP, "restart.sock")
    old = start([f"{BIN}/restart_server", "127.0.0.1:0", path])
    line = read_line(old, "listening on")
    if not line:
        check("restart_server starts", False)
        stop(old)
        return
    port = int(line.split()[3].rsplit(":", 1)[1])
    replies, failures, lock = {}, [], threading.Lock()
    stop_at = [time.monotonic() + 30]

    def client(n):
        i = 0
        while time.monotonic() < stop_at[0]:
            i += 1
            text = f"c{n}-{i}"
            try:
                reply, _ = ask(port, (text + "\n").encode())
                pid, _, echoed = reply.strip().partition(": ")
                ok = echoed == text
            except (OSError, ValueError) as e:
                reply, ok = repr(e), False
            with lock:
                if ok:
                    replies[int(pid)] = replies.get(int(pid), 0) + 1
                else:
                    failures.append(reply)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    os.kill(old.pid, signal.SIGHUP)
    try:
        rc = old.wait(timeout=20)
    except subprocess.TimeoutExpired:
        rc = None
    stop_at[0] = time.monotonic() + 1.0  # load goes on after the old process is gone
    for t in threads:
        t.join(timeout=30)
    total = sum(replies.values()) + len(failures)
    check(f"handoff under load: {total} requests across the restart, none failed", total > 100 and not failures,
          f"{len(failures)} failures, e.g. {failures[:3]}")
    check("handoff under load: replies from both processes", len(replies) == 2 and old.pid in replies, replies)
    check("handoff under load: the old process exits 0", rc == 0, f"exit {rc}")
    for pid in replies:
        if pid != old.pid:
            os.kill(pid, signal.SIGTERM)  # the new process, which the old one started
            end = time.monotonic() + 10
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < end:
                time.sleep(0.05)
            check("the new process stops on SIGTERM", not os.path.exists(f"/proc/{pid}"))


def main():
    try:
        fd_passing()
        socket_activation()
        prefork()
        haproxy()
        handoff_under_load()
    finally:
        for p in started:
            if p.poll() is None:
                stop(p, signal.SIGKILL)
        subprocess.run(["rm", "-rf", TMP])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
