"""pytest tests of the Python package netsock (bindings/python/netsock/).

make test-python runs them against the package installed in a fresh virtual environment
(conftest.py says which one is used). The library is found as the package finds it:
$NETSOCK_LIBRARY (make test-python sets it), else the source tree's build/libnetsock.so.
Everything binds 127.0.0.1 port 0 and every wait is bounded.
Run: python3 -m pytest -q tests/python/test_binding.py
"""
import gc
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINDING_DIR = os.path.join(REPO_ROOT, "bindings", "python")
EXAMPLES_DIR = os.path.join(BINDING_DIR, "examples")

import netsock  # noqa: E402  (conftest.py chose which)

from helpers import WAIT, connect, recv_exactly, recv_to_eof, wait_for  # noqa: E402


class Events:
    """What the callbacks saw, recorded from the loop threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.opened = []
        self.closed = []
        self.threads = set()

    def on_open(self, conn):
        with self.lock:
            self.opened.append((conn.id, conn.peer))
            self.threads.add(threading.get_ident())

    def on_close(self, conn, reason):
        with self.lock:
            self.closed.append((conn.id, reason))
            self.threads.add(threading.get_ident())


def echo(conn, data):
    conn.send(data)


def frame_echo(conn, data):
    conn.send_frame(data)


@pytest.fixture
def events():
    return Events()


@pytest.fixture
def echo_server(events):
    with netsock.tcp_serve("127.0.0.1:0", echo, on_open=events.on_open,
                           on_close=events.on_close, threads=2) as server:
        yield server


@pytest.fixture
def callback_errors():
    """Captures what callbacks raise through netsock.on_callback_error."""
    errors = []
    saved = netsock.on_callback_error
    netsock.on_callback_error = errors.append
    try:
        yield errors
    finally:
        netsock.on_callback_error = saved


# ---------------------------------------------------------------------------------------------
# Basics


def test_version_and_constants():
    assert netsock.version().count(".") == 2
    assert netsock.version().split(".")[0] == "0"
    assert (netsock.FRAMING_RAW, netsock.FRAMING_LINE, netsock.FRAMING_LEN32) == (0, 1, 2)
    assert netsock.OK == 0 and netsock.ERR_ADDR == -2 and netsock.ERR_MISUSE == -13
    assert netsock.strerror(netsock.ERR_TIMEOUT).startswith("NS_ERR_TIMEOUT")
    assert netsock.strerror(12345)  # unknown codes are named too
    for code, cls in netsock.ERRORS.items():
        assert issubclass(cls, netsock.Error)
        err = cls(code, "detail")
        assert err.code == code and err.name == netsock.strerror(code).split(":")[0]
        assert "detail" in str(err)


def test_error_class_hierarchy():
    assert issubclass(netsock.RefusedError, ConnectionRefusedError)
    assert issubclass(netsock.NetsockTimeout, TimeoutError)
    assert issubclass(netsock.ResetError, ConnectionResetError)
    assert issubclass(netsock.InvalidError, ValueError)
    assert netsock.ERRORS[-9] is netsock.NetsockIOError
    assert netsock.ERRORS[-7] is netsock.TruncatedError


# ---------------------------------------------------------------------------------------------
# A TCP echo server written in Python


def test_tcp_echo_plain_socket(echo_server, events):
    assert echo_server.port > 0
    assert echo_server.address == "127.0.0.1:%d" % echo_server.port
    msg = b"hello from a python socket"
    with connect(echo_server) as sock:
        client_port = sock.getsockname()[1]
        sock.sendall(msg)
        assert recv_exactly(sock, len(msg)) == msg
    assert wait_for(lambda: len(events.closed) == 1)
    with events.lock:
        [(conn_id, peer)] = events.opened
        assert conn_id != 0
        assert peer == "127.0.0.1:%d" % client_port
        assert events.closed == [(conn_id, netsock.OK)]
        assert events.closed[0][1] is netsock.Result.OK
        # callbacks ran on a netsock loop thread, not this one
        assert threading.get_ident() not in events.threads


def test_tcp_echo_tcp_send(echo_server):
    data = bytes(range(256)) * 400  # 100 KiB
    assert netsock.tcp_send(echo_server.address, data, reply_cap=len(data)) == data
    assert netsock.tcp_send(echo_server.address, bytearray(b"bytearray")) == b"bytearray"
    assert netsock.tcp_send(echo_server.address, memoryview(b"view")) == b"view"
    assert netsock.tcp_send(echo_server.address, b"") == b""


def test_tcp_echo_50_concurrent_clients(echo_server, events):
    n = 50
    results = [None] * n
    start = threading.Barrier(n, timeout=WAIT)

    def client(i):
        try:
            msg = (b"client %02d says hi; " % i) * 200
            with connect(echo_server) as sock:
                start.wait()
                for k in range(0, len(msg), 997):  # several writes per client
                    sock.sendall(msg[k:k + 997])
                sock.shutdown(socket.SHUT_WR)
                results[i] = recv_to_eof(sock) == msg
        except Exception as e:  # reported through results
            results[i] = e

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(2 * WAIT)
    assert results == [True] * n
    assert wait_for(lambda: len(events.closed) == n)
    with events.lock:
        assert sorted(i for i, _ in events.opened) == sorted(i for i, _ in events.closed)
        assert len({i for i, _ in events.opened}) == n
        assert all(reason == netsock.OK for _, reason in events.closed)


def test_server_send_from_another_thread():
    ids = queue.Queue()
    with netsock.tcp_serve("127.0.0.1:0", lambda conn, data: ids.put(conn.id)) as server:
        with connect(server) as sock:
            sock.sendall(b"hi")
            conn_id = ids.get(timeout=WAIT)
            server.send(conn_id, b"pushed ")
            server.send(conn_id, bytearray(b"later"))
            assert recv_exactly(sock, 12) == b"pushed later"
        with pytest.raises(netsock.ClosedError) as info:
            server.send(987654321, b"nobody")
        assert info.value.code == netsock.ERR_CLOSED


@pytest.mark.parametrize("framing", [netsock.FRAMING_LINE, netsock.FRAMING_LEN32])
def test_framed_echo_tcp_request(framing):
    with netsock.tcp_serve("127.0.0.1:0", frame_echo, framing=framing) as server:
        for msg in [b"one", b"", b"x" * 10000]:
            assert netsock.tcp_request(server.address, msg, framing) == msg
        # and on the wire, with a plain socket
        with connect(server) as sock:
            if framing == netsock.FRAMING_LINE:
                sock.sendall(b"alpha\nbeta\r\n")
                assert recv_exactly(sock, 11) == b"alpha\nbeta\n"
            else:
                sock.sendall(struct.pack(">I", 5) + b"alpha" + struct.pack(">I", 4) + b"beta")
                assert recv_exactly(sock, 17) == (struct.pack(">I", 5) + b"alpha"
                                                   + struct.pack(">I", 4) + b"beta")


def test_framed_server_send_frame_and_limits():
    ids = queue.Queue()
    reasons = queue.Queue()
    with netsock.tcp_serve("127.0.0.1:0", lambda c, d: ids.put((c.id, d)),
                           on_close=lambda c, r: reasons.put(r),
                           framing=netsock.FRAMING_LINE, max_frame=16) as server:
        with connect(server) as sock:
            sock.sendall(b"hello\n")
            conn_id, data = ids.get(timeout=WAIT)
            assert data == b"hello"
            server.send_frame(conn_id, b"world")
            assert recv_exactly(sock, 6) == b"world\n"
            sock.sendall(b"y" * 100 + b"\n")  # over max_frame: the connection is closed
            assert recv_to_eof(sock) == b""
        assert reasons.get(timeout=WAIT) == netsock.ERR_LIMIT
        assert wait_for(lambda: server.stats()["frames_too_large"] == 1)


def test_tcp_request_rejects_raw_framing(echo_server):
    with pytest.raises(netsock.InvalidError) as info:
        netsock.tcp_request(echo_server.address, b"x", netsock.FRAMING_RAW)
    assert info.value.code == -1 and info.value.detail


# ---------------------------------------------------------------------------------------------
# UDP


def udp_echo(server, peer, data):
    server.reply(peer, data)


def test_udp_echo_udp_request():
    with netsock.udp_serve("127.0.0.1:0", udp_echo) as server:
        assert server.port > 0 and server.address == "127.0.0.1:%d" % server.port
        for msg in [b"ping", b"", bytes(range(256)) * 20]:
            assert netsock.udp_request(server.address, msg) == msg
        with pytest.raises(netsock.TruncatedError) as info:
            netsock.udp_request(server.address, b"0123456789", reply_cap=4)
        assert info.value.data == b"0123"
        # a reply is counted just after it is sent: the client may be quicker
        assert wait_for(lambda: server.stats()["datagrams_out"] == 4)
        assert server.stats()["datagrams_in"] == 4


def test_udp_reply_to_kept_peer_from_another_thread():
    peers = queue.Queue()

    def on_datagram(server, peer, data):
        peers.put((peer, data))  # a copy: valid after the callback

    with netsock.udp_serve("127.0.0.1:0", on_datagram) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(WAIT)
        sock.bind(("127.0.0.1", 0))
        sock.sendto(b"remember me", ("127.0.0.1", server.port))
        peer, data = peers.get(timeout=WAIT)
        assert data == b"remember me"
        assert str(peer) == "127.0.0.1:%d" % sock.getsockname()[1]
        assert "127.0.0.1" in repr(peer)
        sock.sendto(b"again", ("127.0.0.1", server.port))
        peer2, _ = peers.get(timeout=WAIT)
        assert peer2 == peer and hash(peer2) == hash(peer)
        gc.collect()

        errors = []

        def later():
            try:
                server.reply(peer, b"answer from another thread")
            except Exception as e:
                errors.append(e)

        t = threading.Thread(target=later)
        t.start()
        t.join(WAIT)
        assert errors == []
        reply, addr = sock.recvfrom(2048)
        assert reply == b"answer from another thread"
        assert addr == ("127.0.0.1", server.port)
        with pytest.raises(TypeError):
            server.reply("127.0.0.1:1", b"x")
    with pytest.raises(netsock.ClosedError):
        server.reply(peer, b"after close")


def test_peer_parse_lets_a_server_send_to_any_address():
    got = queue.Queue()
    with netsock.udp_serve("127.0.0.1:0", lambda s, p, d: got.put((p, d))) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(WAIT)
        sock.bind(("127.0.0.1", 0))
        text = "127.0.0.1:%d" % sock.getsockname()[1]
        peer = netsock.Peer.parse(text)
        assert str(peer) == text
        server.reply(peer, b"hi")  # an address the server never heard from
        data, addr = sock.recvfrom(64)
        assert data == b"hi" and addr == ("127.0.0.1", server.port)
        sock.sendto(b"back", addr)
        seen, data = got.get(timeout=WAIT)
        assert data == b"back" and seen == peer and hash(seen) == hash(peer)
    for bad in ["localhost:5", ":5", "127.0.0.1:0", "unix:@x", "nonsense", "a\0b:5"]:
        with pytest.raises(netsock.AddressError):
            netsock.Peer.parse(bad)
    with pytest.raises(TypeError):
        netsock.Peer.parse(5)


def test_udp_send():
    got = queue.Queue()
    with netsock.udp_serve("127.0.0.1:0", lambda s, p, d: got.put(d)) as server:
        netsock.udp_send(server.address, b"fire and forget")
        assert got.get(timeout=WAIT) == b"fire and forget"


# ---------------------------------------------------------------------------------------------
# The classic programs, run against each other


class Program:
    """An example run as a subprocess, its output lines collected by a thread."""

    def __init__(self, name, *args, stdin=None):
        env = dict(os.environ)
        if os.sep in netsock.LIBRARY_PATH:
            env["NETSOCK_LIBRARY"] = os.path.abspath(netsock.LIBRARY_PATH)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(EXAMPLES_DIR, name)] + list(args),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO_ROOT)
        self.lines = queue.Queue()
        self.out = []
        self._stderr = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if stdin is not None:
            self.proc.stdin.write(stdin)
            self.proc.stdin.close()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.out.append(line)
            self.lines.put(line)

    def expect(self, prefix, timeout=WAIT):
        """The next output line starting with prefix, waiting at most timeout."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise AssertionError("no %r line within %ss; output so far: %r; stderr: %r"
                                     % (prefix, timeout, self.out, self.stderr())) from None
            if line.startswith(prefix):
                return line

    def stderr(self):
        if self.proc.poll() is None:
            return "(running)"
        if self._stderr is None:
            self._stderr = self.proc.stderr.read().decode("utf-8", "replace")
        return self._stderr

    def finish(self, timeout=WAIT):
        """Waits for exit; returns (status, stdout lines, stderr)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("%r did not exit; output %r" % (self.proc.args, self.out))
        self.reader.join(WAIT)
        err = self.stderr()
        self._close_pipes()
        return self.proc.returncode, list(self.out), err

    def interrupt(self):
        """Ctrl-C, then wait for the exit."""
        self.proc.send_signal(signal.SIGINT)
        return self.finish()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        self.reader.join(WAIT)
        self._close_pipes()

    def _close_pipes(self):
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()


@pytest.fixture
def programs():
    started = []

    def run(name, *args, **kw):
        program = Program(name, *args, **kw)
        started.append(program)
        return program

    yield run
    for program in started:
        program.kill()


def test_classic_tcp_server_and_client(programs):
    server = programs("tcp_server.py", "127.0.0.1:0")
    addr = server.expect("listening on ").split()[-1]
    assert addr.startswith("127.0.0.1:") and not addr.endswith(":0")

    status, out, err = programs("tcp_client.py", addr).finish()
    assert status == 0, err
    assert out == ["sent to %s: hehe, just for a test!" % addr, "reply: ACK!"]
    assert "hehe, just for a test!" in server.expect("received from 127.0.0.1:")

    status, out, err = programs("tcp_client.py", addr, "another message").finish()
    assert status == 0, err
    assert out[-1] == "reply: ACK!"
    assert server.expect("received from ").endswith(": another message")

    # and the binding's own client against the Python server
    assert netsock.tcp_send(addr, b"from the test") == b"ACK!"
    assert server.expect("received from ").endswith(": from the test")

    status, out, err = server.interrupt()
    assert status == 0, err
    assert out[-1] == "server stopped"
    assert "Traceback" not in err


def test_classic_udp_server_and_client(programs):
    server = programs("udp_server.py", "127.0.0.1:0")
    addr = server.expect("listening on ").split()[-1]

    client = programs("udp_client.py", addr, stdin=b"one\ntwo\n\nnot sent\n")
    status, out, err = client.finish()
    assert status == 0, err
    assert out == ["reply: Recvice message ok!"] * 2
    assert server.expect("received from 127.0.0.1:").endswith(": one")
    assert server.expect("received from 127.0.0.1:").endswith(": two")

    assert netsock.udp_request(addr, b"direct") == b"Recvice message ok!"

    status, out, err = server.interrupt()
    assert status == 0, err
    assert "not sent" not in "\n".join(out)
    assert out[-1] == "server stopped"


def test_classic_clients_report_errors(programs):
    with socket.socket() as bound:  # bound, not listening: connecting is refused
        bound.bind(("127.0.0.1", 0))
        addr = "127.0.0.1:%d" % bound.getsockname()[1]
        status, out, err = programs("tcp_client.py", addr).finish()
    assert status == 1
    assert "NS_ERR_REFUSED" in err
    status, out, err = programs("tcp_server.py", "nonsense").finish()
    assert status == 1 and "NS_ERR_ADDR" in err


# ---------------------------------------------------------------------------------------------
# Errors


def test_bad_address():
    with pytest.raises(netsock.AddressError) as info:
        netsock.tcp_serve("127.0.0.1:99999", echo)
    err = info.value
    assert err.code == -2 and err.code == netsock.ERR_ADDR
    assert err.name == "NS_ERR_ADDR"
    assert err.detail and "99999" in err.detail
    assert err.detail in str(err)
    with pytest.raises(netsock.AddressError) as info:
        netsock.tcp_send("no-port-here", b"x")
    assert info.value.code == -2 and "no-port-here" in info.value.detail
    with pytest.raises(netsock.AddressError):
        netsock.udp_serve("localhost", udp_echo)
    with pytest.raises(netsock.AddressError):
        netsock.tcp_send("127.0.0.1:1\0junk", b"x")


def test_address_in_use():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        with pytest.raises(netsock.AddressInUseError) as info:
            netsock.tcp_serve("127.0.0.1:%d" % sock.getsockname()[1], echo)
    assert info.value.code == netsock.ERR_ADDR_IN_USE and info.value.detail
    with netsock.udp_serve("127.0.0.1:0", udp_echo) as server:
        with pytest.raises(netsock.AddressInUseError):
            netsock.udp_serve(server.address, udp_echo)


def test_refused():
    with socket.socket() as bound:  # bound, never listening
        bound.bind(("127.0.0.1", 0))
        addr = "127.0.0.1:%d" % bound.getsockname()[1]
        with pytest.raises(netsock.RefusedError) as info:
            netsock.tcp_send(addr, b"anyone?")
        assert info.value.code == -4 and info.value.detail
        with pytest.raises(ConnectionRefusedError):  # the builtin class catches it too
            netsock.tcp_request(addr, b"anyone?", netsock.FRAMING_LINE)


def test_timeout_against_silent_sockets():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)  # accepts (in the kernel), never answers
        addr = "127.0.0.1:%d" % silent.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(netsock.NetsockTimeout) as info:
            netsock.tcp_send(addr, b"hello?", timeout=0.3)
        assert time.monotonic() - start < WAIT
        assert info.value.code == netsock.ERR_TIMEOUT and info.value.detail
        assert isinstance(info.value, TimeoutError)
        with pytest.raises(netsock.NetsockTimeout):
            netsock.tcp_request(addr, b"hello?", netsock.FRAMING_LEN32, timeout=0.3)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        with pytest.raises(netsock.NetsockTimeout):
            netsock.udp_request("127.0.0.1:%d" % silent.getsockname()[1], b"hello?",
                                timeout=0.3)


def test_truncated_reply_carries_data(echo_server):
    with pytest.raises(netsock.TruncatedError) as info:
        netsock.tcp_send(echo_server.address, b"0123456789", reply_cap=4)
    assert info.value.code == -7
    assert info.value.data == b"0123"
    with netsock.tcp_serve("127.0.0.1:0", frame_echo, framing=netsock.FRAMING_LEN32) as framed:
        with pytest.raises(netsock.TruncatedError) as info:
            netsock.tcp_request(framed.address, b"abcdefgh", netsock.FRAMING_LEN32, reply_cap=3)
        assert info.value.data == b"abc"


def test_argument_errors(echo_server):
    with pytest.raises(TypeError):
        netsock.tcp_send(echo_server.address, "text is not bytes")
    with pytest.raises(TypeError):
        netsock.tcp_serve("127.0.0.1:0", "not callable")
    with pytest.raises(netsock.InvalidError) as info:
        netsock.tcp_serve("127.0.0.1:0", echo, framing=7)
    assert info.value.code == -1 and info.value.detail
    with pytest.raises(netsock.InvalidError):
        netsock.tcp_serve("127.0.0.1:0", echo, threads=-1)
    with pytest.raises(ValueError):
        netsock.tcp_send(echo_server.address, b"x", timeout=-1)


def test_errors_pickle():
    import pickle
    err = netsock.TruncatedError(netsock.ERR_TRUNCATED, "detail", b"partial")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is netsock.TruncatedError
    assert (back.code, back.detail, back.data, str(back)) == (-7, "detail", b"partial", str(err))


# ---------------------------------------------------------------------------------------------
# Callbacks: exceptions, lifetime, misuse


def test_exception_in_on_data_is_reported_and_server_keeps_serving(callback_errors):
    def on_data(conn, data):
        if data.startswith(b"boom"):
            raise ValueError("boom from on_data")
        conn.send(data)

    with netsock.tcp_serve("127.0.0.1:0", on_data) as server:
        with connect(server) as good:
            good.sendall(b"before")
            assert recv_exactly(good, 6) == b"before"
            with connect(server) as bad:
                bad.sendall(b"boom")
                assert recv_to_eof(bad) == b""  # that connection was closed
            assert wait_for(lambda: len(callback_errors) == 1)
            [exc] = callback_errors
            assert isinstance(exc, ValueError) and str(exc) == "boom from on_data"
            assert exc.__traceback__ is not None
            good.sendall(b"after")  # the other connection is still served
            assert recv_exactly(good, 5) == b"after"
        assert netsock.tcp_send(server.address, b"new connections too") == b"new connections too"
    assert len(callback_errors) == 1


def test_exception_reported_on_stderr_by_default(capsys):
    assert netsock.on_callback_error is None

    def on_datagram(server, peer, data):
        if data == b"bad":
            raise KeyError("udp callback failure")
        server.reply(peer, data)

    with netsock.udp_serve("127.0.0.1:0", on_datagram) as server:
        with pytest.raises(netsock.NetsockTimeout):
            netsock.udp_request(server.address, b"bad", timeout=0.2)
        assert netsock.udp_request(server.address, b"good") == b"good"
    err = capsys.readouterr().err
    assert "netsock: exception in on_datagram callback" in err
    assert "Traceback" in err and "KeyError: 'udp callback failure'" in err


def test_failing_error_hook_is_reported_too(capsys):
    def hook(exc):
        raise RuntimeError("the hook failed")

    saved = netsock.on_callback_error
    netsock.on_callback_error = hook
    try:
        with netsock.tcp_serve("127.0.0.1:0", lambda c, d: 1 / 0) as server:
            assert netsock.tcp_send(server.address, b"x") == b""
    finally:
        netsock.on_callback_error = saved
    err = capsys.readouterr().err
    assert "RuntimeError: the hook failed" in err and "ZeroDivisionError" in err


def _start_server_with_local_callbacks(finalized):
    """A server whose callbacks exist nowhere but in the server."""
    prefix = b"kept:"

    def on_data(conn, data):
        conn.send(prefix + data)

    def on_close(conn, reason):
        pass

    weakref.finalize(on_data, finalized.set)
    return netsock.tcp_serve("127.0.0.1:0", on_data, on_close=on_close)


def test_callbacks_kept_alive_for_server_lifetime():
    finalized = threading.Event()
    server = _start_server_with_local_callbacks(finalized)
    try:
        for _ in range(3):
            gc.collect()
        assert not finalized.is_set()
        assert netsock.tcp_send(server.address, b"still here") == b"kept:still here"
        with connect(server) as sock:
            sock.sendall(b"socket")
            assert recv_exactly(sock, 11) == b"kept:socket"
    finally:
        server.close()
    gc.collect()
    assert finalized.is_set()  # close() let go of them


def test_conn_is_only_valid_during_its_callback(callback_errors):
    kept = queue.Queue()

    def on_data(conn, data):
        conn.send(b"pending=%d" % conn.pending)
        kept.put(conn)

    with netsock.tcp_serve("127.0.0.1:0", on_data) as server:
        assert netsock.tcp_send(server.address, b"x") == b"pending=0"
        conn = kept.get(timeout=WAIT)
        assert conn.id > 0 and conn.server is server
        with pytest.raises(netsock.MisuseError):
            conn.send(b"too late")
        with pytest.raises(netsock.MisuseError):
            conn.close()
        assert "expired" in repr(conn)
    assert callback_errors == []


def test_wait_inside_callback_is_misuse_and_close_inside_callback_works(callback_errors):
    seen = queue.Queue()

    def on_data(conn, data):
        try:
            conn.server.wait()
        except netsock.MisuseError as e:
            seen.put(e)
        if data == b"close":
            conn.server.close()  # cannot wait here: finished on a helper thread
        conn.send(data)

    server = netsock.tcp_serve("127.0.0.1:0", on_data)
    assert netsock.tcp_send(server.address, b"x") == b"x"
    assert seen.get(timeout=WAIT).code == netsock.ERR_MISUSE
    with connect(server) as sock:
        sock.sendall(b"close")
        recv_to_eof(sock)
    assert seen.get(timeout=WAIT).code == netsock.ERR_MISUSE
    assert server._closed.wait(WAIT)
    assert server.closed
    server.close()  # idempotent
    with pytest.raises(netsock.ClosedError):
        server.stats()
    assert callback_errors == []


# ---------------------------------------------------------------------------------------------
# Server object


def test_context_manager_stop_wait_close(events):
    with netsock.tcp_serve("127.0.0.1:0", echo, on_close=events.on_close) as server:
        port, address = server.port, server.address
        sock = connect(server)
        sock.sendall(b"open")
        assert recv_exactly(sock, 4) == b"open"
        assert server.wait(0.05) is False
        threading.Timer(0.05, server.stop).start()
        assert server.wait(WAIT) is True
        assert server.wait() is True
        server.stop()  # repeatable
        assert recv_to_eof(sock) == b""
        sock.close()
        with events.lock:
            assert [reason for _, reason in events.closed] == [netsock.ERR_STOPPED]
    assert server.closed
    assert (server.port, server.address) == (port, address)  # still readable
    server.close()
    server.stop()
    with pytest.raises(netsock.ClosedError):
        server.send(1, b"x")
    with pytest.raises(netsock.RefusedError):
        netsock.tcp_send(address, b"x")


def test_stats_count(events):
    with netsock.tcp_serve("127.0.0.1:0", echo, on_close=events.on_close,
                           max_conns=1) as server:
        assert server.stats()["accepted"] == 0
        n = 5
        for i in range(n):
            assert netsock.tcp_send(server.address, b"%d" % i * 10) == b"%d" % i * 10
        assert wait_for(lambda: server.stats()["closed"] == n)
        stats = server.stats()
        assert stats["accepted"] == n and stats["active"] == 0
        assert stats["bytes_in"] == 10 * n and stats["bytes_out"] == 10 * n
        assert stats["rejected"] == 0
        with connect(server) as first:  # max_conns=1: a second connection is refused
            first.sendall(b"hold")
            assert recv_exactly(first, 4) == b"hold"
            with connect(server) as second:
                assert recv_to_eof(second) == b""
            assert wait_for(lambda: server.stats()["rejected"] == 1)
            assert server.stats()["active"] == 1
        assert set(stats) == {"accepted", "active", "closed", "rejected", "bytes_in",
                              "bytes_out", "datagrams_in", "datagrams_out",
                              "frames_too_large", "timeouts", "proxy_rejected",
                              "worker_busy", "worker_queued", "tls_handshakes",
                              "tls_failures"}


def test_idle_timeout(events):
    with netsock.tcp_serve("127.0.0.1:0", echo, on_close=events.on_close,
                           idle_timeout=0.1) as server:
        with connect(server) as sock:
            assert recv_to_eof(sock) == b""  # closed by the server within the bound
        assert wait_for(lambda: len(events.closed) == 1)
        assert events.closed[0][1] == netsock.ERR_TIMEOUT
        assert server.stats()["timeouts"] == 1


def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = netsock.tcp_serve("[::1]:0", echo)
    except netsock.AddressError:
        pytest.skip("no ::1")
    except netsock.NetsockIOError:
        pytest.skip("no ::1")
    with server:
        assert server.address == "[::1]:%d" % server.port
        assert netsock.tcp_send(server.address, b"six") == b"six"
