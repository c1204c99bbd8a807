"""pytest tests of the newer C API through the package: loops, tasks and timers, servers on a
loop, posts to a connection, pause/resume, connection timers, keep, every framing, persistent
clients (blocking, async, reconnecting), enums, logging. Real sockets (Python's socket module)
on 127.0.0.1, every wait bounded.
"""
import logging
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

import netsock
from netsock import _capi

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES_DIR = os.path.join(REPO_ROOT, "bindings", "python", "examples")
from helpers import WAIT, connect, recv_exactly, recv_to_eof, wait_for  # noqa: E402


@pytest.fixture
def callback_errors():
    errors = []
    saved = netsock.on_callback_error
    netsock.on_callback_error = errors.append
    try:
        yield errors
    finally:
        netsock.on_callback_error = saved


class Listener:
    """A plain Python TCP server for the clients to connect to: accepts on a thread, hands each
    accepted socket to the test through a queue."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(WAIT)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.accepted = queue.Queue()
        self._stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(WAIT)
            self.accepted.put(conn)

    def next(self):
        return self.accepted.get(timeout=WAIT)

    def close(self):
        self._stop = True
        self.sock.close()
        while not self.accepted.empty():
            self.accepted.get().close()


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


# ---------------------------------------------------------------------------------------------
# The package against the header


def header():
    with open(os.path.join(REPO_ROOT, "include", "netsock.h")) as f:
        return f.read()


def test_every_header_function_is_declared():
    declared = set(re.findall(r"\b(ns_[a-z0-9_]+)\s*\(", header()))
    declared -= {"ns_conn_task_cb", "ns_task_cb", "ns_close_cb", "ns_drain_cb", "ns_open_cb",
                 "ns_conn_timer_cb", "ns_log_cb", "ns_data_cb", "ns_timer_cb", "ns_datagram_cb"}
    functions = {name for name in declared
                 if re.search(r"\b%s\s*\([^;{]*\)\s*;" % name, header())}
    assert functions, "no function found in the header"
    assert functions - set(_capi.PROTOTYPES) == set()


def test_enums_match_the_header():
    text = header()
    for name, value in re.findall(r"\bNS_(OK|ERR_[A-Z_]+) = (-?\d+)", text):
        assert netsock.Result[name] == int(value)
        assert getattr(netsock, name) == int(value)  # the old module constants
    framings = re.findall(r"\bNS_FRAMING_([A-Z_0-9]+) = (\d+)", text)
    assert len(framings) == len(netsock.Framing) == 6
    for name, value in framings:
        assert netsock.Framing[name] == int(value)
        assert getattr(netsock, "FRAMING_" + name) is netsock.Framing[name]
    for name, value in re.findall(r"\bNS_LOG_([A-Z]+) = (\d+)", text):
        assert netsock.LogLevel[name] == int(value)
    assert netsock.CloseReason is netsock.Result
    assert isinstance(netsock.CloseReason.OK, int)


# ---------------------------------------------------------------------------------------------
# Loops: tasks and timers


def test_loop_post_runs_in_order_on_one_thread():
    got = queue.Queue()
    with netsock.Loop() as loop:
        for i in range(20):
            loop.post(lambda i=i: got.put((i, threading.get_ident())))
        results = [got.get(timeout=WAIT) for _ in range(20)]
    assert [i for i, _ in results] == list(range(20))
    assert len({t for _, t in results}) == 1
    assert results[0][1] != threading.get_ident()
    assert loop.closed
    with pytest.raises(netsock.ClosedError):
        loop.post(lambda: None)


def test_loop_timers_repeat_once_and_stop():
    ticks = queue.Queue()
    with netsock.Loop() as loop:
        start = time.monotonic()
        rep = loop.timer_start(0.02, 0.02, lambda: ticks.put("rep"))
        one = loop.timer_start(0.05, None, lambda: ticks.put("one"))
        assert rep != one and rep > 0 and one > 0
        seen = [ticks.get(timeout=WAIT) for _ in range(5)]
        assert seen.count("rep") >= 3
        assert time.monotonic() - start >= 0.02
        assert loop.timer_stop(rep) is True
        assert loop.timer_stop(rep) is False  # stopped already
        assert wait_for(lambda: "one" in seen or ticks.get(timeout=WAIT) == "one")
        assert loop.timer_stop(one) is False  # a one-shot that ran
        time.sleep(0.1)
        while not ticks.empty():  # at most one run was under way when it stopped
            assert ticks.get() == "rep"
        time.sleep(0.1)
        assert ticks.empty()
        assert loop._timers == {}  # nothing kept for timers that are done
        assert loop.timer_stop(987654) is False


def test_loop_timer_stopped_from_its_own_callback():
    runs = []
    with netsock.Loop() as loop:
        ids = []

        def tick():
            runs.append(1)
            if len(runs) == 3:
                loop.timer_stop(ids[0])

        ids.append(loop.timer_start(0.01, 0.01, tick))
        assert wait_for(lambda: len(runs) == 3)
        time.sleep(0.1)
        assert len(runs) == 3


def test_loop_callback_errors_are_reported(callback_errors):
    done = threading.Event()
    with netsock.Loop() as loop:
        loop.post(lambda: 1 / 0)
        loop.timer_start(0, None, lambda: [][1])
        loop.post(done.set)  # the loop goes on
        assert done.wait(WAIT)
        assert wait_for(lambda: len(callback_errors) == 2)
    assert {type(e) for e in callback_errors} == {ZeroDivisionError, IndexError}


def test_loop_run_in_wait_runs_callbacks_on_the_calling_thread():
    seen = []
    loop = netsock.Loop(run_in_wait=True)
    with loop:
        loop.post(lambda: seen.append(("post", threading.get_ident())))

        def last():
            seen.append(("timer", threading.get_ident()))
            loop.stop()

        loop.timer_start(0.05, None, last)
        time.sleep(0.1)
        assert seen == []  # nothing runs until run()
        start = time.monotonic()
        loop.run()
        assert time.monotonic() - start < WAIT
    me = threading.get_ident()
    assert seen == [("post", me), ("timer", me)]


def test_loop_run_without_run_in_wait_waits_for_stop():
    with netsock.Loop() as loop:
        threading.Timer(0.05, loop.stop).start()
        start = time.monotonic()
        loop.run()
        assert 0.03 < time.monotonic() - start < WAIT
        with pytest.raises(netsock.ClosedError):
            loop.post(lambda: None)  # stopped: posts fail


def test_loop_run_inside_its_callback_is_misuse():
    got = queue.Queue()
    with netsock.Loop() as loop:
        def task():
            try:
                loop.run()
            except netsock.MisuseError as e:
                got.put(e)
        loop.post(task)
        assert got.get(timeout=WAIT).code == netsock.ERR_MISUSE


def test_loop_close_inside_its_callback():
    closed = threading.Event()
    loop = netsock.Loop()

    def task():
        loop.close()  # cannot wait here: finished on a helper thread
        closed.set()

    loop.post(task)
    assert closed.wait(WAIT)
    assert loop._closed.wait(WAIT)
    loop.close()


def test_one_loop_for_servers_clients_and_timers_on_the_main_thread():
    me = threading.get_ident()
    threads = set()
    replies = []
    loop = netsock.Loop(run_in_wait=True)

    def on_data(conn, data):
        threads.add(threading.get_ident())
        conn.send_frame(data.upper())

    def on_datagram(server, peer, data):
        threads.add(threading.get_ident())
        server.reply(peer, data[::-1])

    def client_data(conn, data):
        threads.add(threading.get_ident())
        replies.append(data)
        loop.stop()

    with loop, \
            netsock.tcp_serve("127.0.0.1:0", on_data, loop=loop, framing=netsock.FRAMING_LINE) as tcp, \
            netsock.udp_serve("127.0.0.1:0", on_datagram, loop=loop) as udp:
        # blocking calls from another thread while the loop runs here
        results = queue.Queue()

        def outside():
            results.put(netsock.tcp_request(tcp.address, b"abc", netsock.FRAMING_LINE))
            results.put(netsock.udp_request(udp.address, b"xyz"))
            netsock.tcp_connect(tcp.address, client_data, loop=loop, async_=True,
                                framing=netsock.FRAMING_LINE,
                                on_open=lambda c: c.send_frame(b"from the client"))

        threading.Thread(target=outside).start()
        loop.run()
        assert results.get(timeout=WAIT) == b"ABC"
        assert results.get(timeout=WAIT) == b"zyx"
    assert replies == [b"FROM THE CLIENT"]
    assert threads == {me}


def test_server_closed_before_its_run_in_wait_loop_ever_ran():
    # ns_server_free would wait for a loop that nobody runs: the package frees it once the
    # loop runs instead of hanging in close()
    with netsock.Loop(run_in_wait=True) as loop:
        srv = netsock.tcp_serve("127.0.0.1:0", lambda c, d: None, loop=loop)
        start = time.monotonic()
        srv.close()
        srv.close()
        assert time.monotonic() - start < 1.0 and srv.closed
        with pytest.raises(netsock.ClosedError):
            srv.stats()
        loop.timer_start(0.01, None, loop.stop)
        loop.run()
        assert srv._closed.wait(WAIT)  # freed now
        assert srv._token not in netsock._handles


def test_client_closed_on_a_run_in_wait_loop_nobody_runs(listener):
    with netsock.Loop(run_in_wait=True) as loop:
        client = netsock.tcp_connect(listener.address, None, loop=loop)
        start = time.monotonic()
        client.close()  # nobody could deliver its on_close: no wait for it
        assert time.monotonic() - start < 1.0
        assert client._closed.is_set()


# ---------------------------------------------------------------------------------------------
# Servers: the lent loop, posts, close by id, pause/resume, timers, keep


def test_server_loop_posts_and_timers_run_on_the_server_thread():
    threads = queue.Queue()
    with netsock.tcp_serve("127.0.0.1:0", lambda c, d: threads.put(threading.get_ident())) as srv:
        loop = srv.loop
        assert loop is srv.loop
        loop.post(lambda: threads.put(threading.get_ident()))
        loop.timer_start(0.01, None, lambda: threads.put(threading.get_ident()))
        with connect(srv) as sock:
            sock.sendall(b"x")
            seen = {threads.get(timeout=WAIT) for _ in range(3)}
        assert len(seen) == 1 and threading.get_ident() not in seen
        loop.close()  # a lent loop: nothing happens
        assert netsock.tcp_send(srv.address, b"") == b""
    with pytest.raises(netsock.ClosedError):
        loop.post(lambda: None)


def test_clients_share_a_server_loop():
    threads = queue.Queue()
    with netsock.tcp_serve("127.0.0.1:0", lambda c, d: (threads.put(threading.get_ident()),
                                                        c.send(d))) as srv:
        with netsock.tcp_connect(srv.address, lambda c, d: threads.put(threading.get_ident()),
                                 loop=srv.loop) as client:
            client.send(b"ping")
            assert threads.get(timeout=WAIT) == threads.get(timeout=WAIT)


def test_server_post_pause_resume_and_close_conn():
    ids = queue.Queue()
    data = queue.Queue()
    closes = queue.Queue()

    def on_data(conn, chunk):
        data.put(chunk)

    with netsock.tcp_serve("127.0.0.1:0", on_data, on_open=lambda c: ids.put(c.id),
                           on_close=lambda c, r: closes.put(r)) as srv:
        with connect(srv) as sock:
            conn_id = ids.get(timeout=WAIT)
            done = queue.Queue()
            srv.post(conn_id, lambda conn: (conn.pause(), done.put(conn.id)))
            assert done.get(timeout=WAIT) == conn_id
            sock.sendall(b"held")
            with pytest.raises(queue.Empty):
                data.get(timeout=0.2)  # paused: nothing delivered
            srv.post(conn_id, lambda conn: conn.resume())
            assert data.get(timeout=WAIT) == b"held"
            srv.post(conn_id, lambda conn: conn.send(b"from a task"))
            assert recv_exactly(sock, 11) == b"from a task"
            srv.send(conn_id, b"last")
            srv.close_conn(conn_id)  # after what was queued
            assert recv_to_eof(sock) == b"last"
        assert closes.get(timeout=WAIT) == netsock.OK
        with pytest.raises(netsock.ClosedError):
            srv.post(conn_id, lambda conn: None)
        with pytest.raises(netsock.ClosedError):
            srv.close_conn(conn_id)
    with netsock.udp_serve("127.0.0.1:0", lambda s, p, d: None) as udp:
        with pytest.raises(netsock.InvalidError):
            udp.post(1, lambda conn: None)


def test_post_to_a_connection_that_closes_first_gets_none():
    got = queue.Queue()
    entered = threading.Event()
    gate = threading.Event()
    ids = queue.Queue()

    def on_data(conn, data):
        entered.set()
        gate.wait(WAIT)  # holds the loop while the test posts, then closes the connection
        conn.close()

    with netsock.tcp_serve("127.0.0.1:0", on_data, on_open=lambda c: ids.put(c.id)) as srv:
        with connect(srv) as sock:
            conn_id = ids.get(timeout=WAIT)
            sock.sendall(b"x")
            assert entered.wait(WAIT)
            srv.post(conn_id, got.put)  # queued behind on_data, which closes the connection
            gate.set()
            assert got.get(timeout=WAIT) is None


def test_connection_timer_heartbeat_and_cancel():
    def on_data(conn, data):
        conn.set_timer(0)  # cancels it: no tick after this
        conn.send(b"stopped")

    with netsock.tcp_serve("127.0.0.1:0", on_data,
                           on_open=lambda c: c.set_timer(0.02),
                           on_timer=lambda c: (c.send(b"tick;"), c.set_timer(0.02))) as srv:
        with connect(srv) as sock:
            assert recv_exactly(sock, 15) == b"tick;" * 3
            sock.sendall(b"stop")
            got = b""
            while not got.endswith(b"stopped"):
                chunk = sock.recv(100)
                assert chunk
                got += chunk
            assert set(got[:-7].split(b";")) <= {b"tick", b""}
            time.sleep(0.1)
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(100)


def test_exception_in_on_timer_closes_the_connection(callback_errors):
    with netsock.tcp_serve("127.0.0.1:0", lambda c, d: None,
                           on_open=lambda c: c.set_timer(0.01),
                           on_timer=lambda c: {}["boom"]) as srv:
        with connect(srv) as sock:
            assert recv_to_eof(sock) == b""
    assert len(callback_errors) == 1 and isinstance(callback_errors[0], KeyError)


def test_keep_assembles_messages_in_raw_framing(callback_errors):
    messages = queue.Queue()

    def on_data(conn, data):
        # "<n>:<n bytes>" records, split anywhere by the network: keep the unfinished tail
        while data:
            head, sep, rest = data.partition(b":")
            if not sep or len(rest) < int(head):
                conn.keep(len(data))
                return
            n = int(head)
            messages.put(rest[:n])
            data = rest[n:]

    with netsock.tcp_serve("127.0.0.1:0", on_data) as srv:
        with connect(srv) as sock:
            stream = b"5:hello3:abc11:hello world0:2:ok"
            for i in range(0, len(stream), 3):
                sock.sendall(stream[i:i + 3])
                time.sleep(0.005)
            got = [messages.get(timeout=WAIT) for _ in range(5)]
    assert got == [b"hello", b"abc", b"hello world", b"", b"ok"]
    assert callback_errors == []


def test_keep_rules():
    errors = queue.Queue()

    def on_open(conn):
        try:
            conn.keep(0)  # outside on_data
        except netsock.Error as e:
            errors.put(e)

    def on_data(conn, data):
        for n in (len(data) + 1, -1):
            try:
                conn.keep(n)
            except (netsock.Error, ValueError) as e:
                errors.put(e)

    with netsock.tcp_serve("127.0.0.1:0", on_data, on_open=on_open) as srv:
        with connect(srv) as sock:
            sock.sendall(b"abc")
            got = [errors.get(timeout=WAIT) for _ in range(3)]
    assert [type(e) for e in got] == [netsock.InvalidError] * 3
    with netsock.tcp_serve("127.0.0.1:0", on_data, framing=netsock.FRAMING_LINE) as srv:
        with connect(srv) as sock:
            sock.sendall(b"line\n")
            assert isinstance(errors.get(timeout=WAIT), netsock.InvalidError)  # not raw


def test_conn_user_state_lives_until_on_close():
    seen = queue.Queue()

    def on_open(conn):
        assert conn.user is None
        conn.user = {"count": 0}

    def on_data(conn, data):
        conn.user["count"] += 1
        conn.send(b"%d" % conn.user["count"])

    def on_close(conn, reason):
        seen.put(conn.user["count"])

    with netsock.tcp_serve("127.0.0.1:0", on_data, on_open=on_open, on_close=on_close) as srv:
        with connect(srv) as sock:
            for i in range(1, 4):
                sock.sendall(b"x")
                assert recv_exactly(sock, 1) == b"%d" % i
        assert seen.get(timeout=WAIT) == 3
        stream = netsock._handles[srv._token]
        assert wait_for(lambda: stream.users == {})


def test_drain_timeout_flushes_on_stop_and_options_are_taken():
    big = bytes(range(256)) * 4096  # 1 MiB: more than the socket buffers hold
    sent = threading.Event()

    def on_data(conn, data):
        conn.send(big)
        sent.set()

    with netsock.tcp_serve("127.0.0.1:0", on_data, drain_timeout=WAIT, backlog=16,
                           nodelay=False, keepalive=30, max_conns=4,
                           max_write_buffer=4 << 20) as srv:
        with connect(srv) as sock:
            sock.sendall(b"go")
            assert sent.wait(WAIT)
            srv.stop()  # with a drain time, queued output is written before the close
            assert recv_to_eof(sock) == big
        assert srv.wait(WAIT)


def test_owned_sends_write_from_the_buffer_and_let_go_of_it():
    big = bytearray(range(256)) * 8192  # 2 MiB, sent from where it is
    ids = queue.Queue()

    def on_data(conn, data):
        conn.send_owned(bytearray(data))  # a writable buffer: no copy
        conn.send_owned(b"|")  # bytes: no copy either

    with netsock.tcp_serve("127.0.0.1:0", on_data, on_open=lambda c: ids.put(c.id)) as srv:
        with connect(srv) as sock:
            conn_id = ids.get(timeout=WAIT)
            sock.sendall(b"hello")
            assert recv_exactly(sock, 6) == b"hello|"
            srv.send_owned(conn_id, big)
            assert recv_exactly(sock, len(big)) == big
            deadline = time.monotonic() + WAIT
            while netsock._lent and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not netsock._lent  # every buffer released once written
            with pytest.raises(netsock.ClosedError):
                srv.send_owned(conn_id + 1000, b"nobody")
            assert not netsock._lent  # refused: not kept


def test_client_send_owned(listener):
    client = netsock.tcp_connect(listener.address, None)
    peer = listener.next()
    client.send_owned(memoryview(bytearray(b"lent")))
    assert recv_exactly(peer, 4) == b"lent"
    client.close()
    with pytest.raises(netsock.ClosedError):
        client.send_owned(b"late")
    assert not netsock._lent
    peer.close()


# ---------------------------------------------------------------------------------------------
# Every framing


def framed_echo(conn, data):
    conn.send_frame(data)


def test_delimiter_framing_crlf_default_and_custom():
    got = queue.Queue()
    with netsock.tcp_serve("127.0.0.1:0", lambda c, d: (got.put(d), c.send_frame(d)),
                           framing=netsock.Framing.DELIMITER) as srv:
        with connect(srv) as sock:
            sock.sendall(b"PING\r\nSET k v\r")
            sock.sendall(b"\nhalf\nline\r\n")
            assert [got.get(timeout=WAIT) for _ in range(3)] == [b"PING", b"SET k v",
                                                                 b"half\nline"]
            assert recv_exactly(sock, 26) == b"PING\r\nSET k v\r\nhalf\nline\r\n"
        assert netsock.tcp_request(srv.address, b"request", netsock.FRAMING_DELIMITER) == b"request"
    with netsock.tcp_serve("127.0.0.1:0", framed_echo, framing=netsock.FRAMING_DELIMITER,
                           delimiter=b"||") as srv:
        with connect(srv) as sock:
            sock.sendall(b"a|b||c||")
            assert recv_exactly(sock, 8) == b"a|b||c||"
    with pytest.raises(netsock.InvalidError):
        netsock.tcp_serve("127.0.0.1:0", framed_echo, framing=netsock.FRAMING_DELIMITER,
                          delimiter=b"123456789")


def test_delimiter_in_a_message_is_invalid():
    errors = queue.Queue()

    def on_data(conn, data):
        try:
            conn.send_frame(b"a\r\nb")
        except netsock.InvalidError as e:
            errors.put(e)

    with netsock.tcp_serve("127.0.0.1:0", on_data, framing=netsock.FRAMING_DELIMITER) as srv:
        with connect(srv) as sock:
            sock.sendall(b"x\r\n")
            assert errors.get(timeout=WAIT).code == netsock.ERR_INVALID


def test_length_field_framing_dns_postgres_mqtt():
    # DNS over TCP: a 2-byte big-endian length of what follows; send_frame builds it
    with netsock.tcp_serve("127.0.0.1:0", lambda c, d: c.send_frame(d[2:].upper()),
                           framing=netsock.FRAMING_LENGTH_FIELD,
                           length_field=netsock.LengthField(0, 2)) as srv:
        with connect(srv) as sock:
            sock.sendall(struct.pack(">H", 5) + b"query" + struct.pack(">H", 2))
            sock.sendall(b"ok")
            assert recv_exactly(sock, 7) == struct.pack(">H", 5) + b"QUERY"
            assert recv_exactly(sock, 4) == struct.pack(">H", 2) + b"OK"
    # PostgreSQL: a type byte, then a 4-byte length counting itself; delivered whole
    got = queue.Queue()
    with netsock.tcp_serve("127.0.0.1:0", lambda c, d: got.put(d),
                           framing=netsock.FRAMING_LENGTH_FIELD,
                           length_field=(1, 4, False, -4)) as srv:
        with connect(srv) as sock:
            msg = b"Q" + struct.pack(">I", 4 + 9) + b"SELECT 1\0"
            sock.sendall(msg + msg[:3])
            sock.sendall(msg[3:])
            assert got.get(timeout=WAIT) == msg
            assert got.get(timeout=WAIT) == msg
    # MQTT: a varint length after the first byte; little-endian fields too
    with netsock.tcp_serve("127.0.0.1:0", lambda c, d: got.put(d),
                           framing=netsock.FRAMING_LENGTH_FIELD, length_field=(1, 0)) as srv:
        with connect(srv) as sock:
            body = b"p" * 200
            msg = b"\x30" + bytes([200 & 0x7F | 0x80, 200 >> 7]) + body
            sock.sendall(msg)
            assert got.get(timeout=WAIT) == msg
    with netsock.tcp_serve("127.0.0.1:0", framed_echo, framing=netsock.FRAMING_LENGTH_FIELD,
                           length_field=(0, 4, True)) as srv:
        with connect(srv) as sock:
            sock.sendall(struct.pack("<I", 3) + b"abc")
            assert recv_exactly(sock, 11) == struct.pack("<I", 7) + struct.pack("<I", 3) + b"abc"
    # tcp_request: the default length field, a 4-byte big-endian length first
    with netsock.tcp_serve("127.0.0.1:0", framed_echo,
                           framing=netsock.FRAMING_LENGTH_FIELD) as srv:
        reply = netsock.tcp_request(srv.address, b"xyz", netsock.FRAMING_LENGTH_FIELD)
        assert reply == struct.pack(">I", 7) + struct.pack(">I", 3) + b"xyz"
    with pytest.raises(netsock.InvalidError):
        netsock.tcp_serve("127.0.0.1:0", framed_echo, framing=netsock.FRAMING_LENGTH_FIELD,
                          length_field=(0, 3))
    with pytest.raises(TypeError):
        netsock.tcp_serve("127.0.0.1:0", framed_echo, framing=netsock.FRAMING_LENGTH_FIELD,
                          length_field=(0,))


def test_length_field_over_max_frame_closes_with_limit():
    reasons = queue.Queue()
    with netsock.tcp_serve("127.0.0.1:0", framed_echo, framing=netsock.FRAMING_LENGTH_FIELD,
                           length_field=(0, 2), max_frame=100,
                           on_close=lambda c, r: reasons.put(r)) as srv:
        with connect(srv) as sock:
            sock.sendall(struct.pack(">H", 1000))
            assert recv_to_eof(sock) == b""
        assert reasons.get(timeout=WAIT) is netsock.CloseReason.ERR_LIMIT
        assert wait_for(lambda: srv.stats()["frames_too_large"] == 1)


def test_fixed_framing():
    got = queue.Queue()
    errors = queue.Queue()

    def on_data(conn, data):
        got.put(data)
        conn.send_frame(data[::-1])
        try:
            conn.send_frame(b"toolong")
        except netsock.InvalidError as e:
            errors.put(e)

    with netsock.tcp_serve("127.0.0.1:0", on_data, framing=netsock.FRAMING_FIXED,
                           fixed_size=4) as srv:
        with connect(srv) as sock:
            sock.sendall(b"abcdef")
            sock.sendall(b"gh")
            assert [got.get(timeout=WAIT), got.get(timeout=WAIT)] == [b"abcd", b"efgh"]
            assert recv_exactly(sock, 8) == b"dcbahgfe"
            assert errors.get(timeout=WAIT).code == netsock.ERR_INVALID
    with pytest.raises(netsock.InvalidError):  # FIXED needs its size
        netsock.tcp_serve("127.0.0.1:0", on_data, framing=netsock.FRAMING_FIXED)
    with pytest.raises(netsock.InvalidError):
        netsock.tcp_serve("127.0.0.1:0", on_data, framing=netsock.FRAMING_FIXED, fixed_size=0)
    with pytest.raises(netsock.InvalidError):
        netsock.tcp_request("127.0.0.1:1", b"x", netsock.FRAMING_FIXED)


# ---------------------------------------------------------------------------------------------
# Persistent clients


def test_blocking_client_against_a_python_server(listener):
    got = queue.Queue()
    events = queue.Queue()
    with netsock.tcp_connect(listener.address, lambda c, d: got.put((c.id, d)),
                             on_open=lambda c: events.put(("open", c.id, c.client)),
                             on_close=lambda c, r: events.put(("close", r))) as client:
        assert client.id > 0
        assert events.get(timeout=WAIT) == ("open", client.id, client)
        assert client.wait_connected(WAIT) and client.connected
        peer = listener.next()
        client.send(b"hello ")
        client.send_frame(bytearray(b"world"))  # raw framing: as is
        assert recv_exactly(peer, 11) == b"hello world"
        peer.sendall(b"answer")
        assert got.get(timeout=WAIT) == (client.id, b"answer")
        posted = queue.Queue()
        client.post(lambda conn: (conn.send(b"!"), posted.put(conn.peer)))
        assert posted.get(timeout=WAIT) == listener.address
        assert recv_exactly(peer, 1) == b"!"
        client.send(b"x" * 100000)  # flushed before the orderly close
    assert recv_to_eof(peer) == b"x" * 100000
    assert events.get(timeout=WAIT) == ("close", netsock.OK)
    assert client.closed and not client.connected
    with pytest.raises(netsock.ClosedError):
        client.send(b"late")
    client.close()  # idempotent
    client.abort()
    peer.close()


def test_close_right_after_a_blocking_connect_delivers_what_was_sent(listener):
    big = bytes(range(256)) * 4096 * 4  # 4 MiB: more than the socket buffers hold
    for _ in range(3):
        received = queue.Queue()

        def read():
            with listener.next() as peer:
                received.put(recv_to_eof(peer))

        reader = threading.Thread(target=read)
        reader.start()
        with netsock.tcp_connect(listener.address, None) as client:
            client.send(big)  # maybe before on_open ran: still written before the close
        assert received.get(timeout=WAIT) == big
        reader.join(WAIT)


def test_blocking_client_errors():
    with socket.socket() as bound:  # bound, not listening
        bound.bind(("127.0.0.1", 0))
        addr = "127.0.0.1:%d" % bound.getsockname()[1]
        with pytest.raises(netsock.RefusedError):
            netsock.tcp_connect(addr, lambda c, d: None)
    with pytest.raises(netsock.AddressError):
        netsock.tcp_connect("not an address", lambda c, d: None)
    with pytest.raises(TypeError):
        netsock.tcp_connect("127.0.0.1:1", "not callable")
    with pytest.raises(netsock.InvalidError):
        netsock.tcp_connect("127.0.0.1:1", None, reconnect=(2.0, 1.0))


def test_async_client_reports_refused_in_on_close():
    closes = queue.Queue()
    opens = []
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        addr = "127.0.0.1:%d" % bound.getsockname()[1]
        client = netsock.tcp_connect(addr, None, async_=True, on_open=opens.append,
                                     on_close=lambda c, r: closes.put(r))
        with client:
            assert closes.get(timeout=WAIT) == netsock.ERR_REFUSED
            assert opens == [] and not client.connected
            with pytest.raises(netsock.ClosedError):
                client.send(b"x")


def test_async_client_connects_and_wait_connected(listener):
    got = queue.Queue()
    with netsock.tcp_connect(listener.address, lambda c, d: got.put(d), async_=True,
                             framing=netsock.FRAMING_LINE,
                             on_open=lambda c: c.send_frame(b"first")) as client:
        assert client.wait_connected(WAIT)
        peer = listener.next()
        assert recv_exactly(peer, 6) == b"first\n"
        peer.sendall(b"one\ntwo\n")
        assert [got.get(timeout=WAIT), got.get(timeout=WAIT)] == [b"one", b"two"]
    peer.close()


def test_reconnecting_client(listener):
    opens = queue.Queue()
    closes = queue.Queue()
    client = netsock.tcp_connect(listener.address, None, reconnect=(0.02, 0.1),
                                 on_open=lambda c: opens.put(c.id),
                                 on_close=lambda c, r: closes.put(r))
    with client:
        first = opens.get(timeout=WAIT)
        assert first == client.id
        for _ in range(2):
            listener.next().close()  # the server drops it: the client connects again
            assert closes.get(timeout=WAIT) == netsock.OK
            assert opens.get(timeout=WAIT) == first  # same id
        peer = listener.next()
        assert client.wait_connected(WAIT)
        client.send(b"still here")
        assert recv_exactly(peer, 10) == b"still here"
    # close() ends it for good: no new connection
    assert closes.get(timeout=WAIT) == netsock.OK
    with pytest.raises(queue.Empty):
        listener.accepted.get(timeout=0.3)
    peer.close()


def test_client_abort_and_limits(listener):
    closes = queue.Queue()
    client = netsock.tcp_connect(listener.address, None, max_write_buffer=1000,
                                 on_close=lambda c, r: closes.put(r))
    peer = listener.next()
    client.send(b"y" * 2000)  # more than the write buffer holds: one send is taken when none waits
    assert recv_exactly(peer, 2000) == b"y" * 2000

    def send_z():  # the loop may count the y's as written a moment after the peer has them
        try:
            client.send(b"z" * 10)
            return True
        except netsock.LimitError:
            return False

    assert wait_for(send_z)
    assert recv_exactly(peer, 10) == b"z" * 10
    client.abort()
    assert closes.get(timeout=WAIT) == netsock.ERR_STOPPED
    assert recv_to_eof(peer) == b""
    peer.close()


def test_clients_on_a_shared_loop_and_close_inside_a_callback(listener):
    closed = threading.Event()
    with netsock.Loop() as loop:
        def on_data(conn, data):
            conn.client.close()  # in a callback: finished on a helper thread

        client = netsock.tcp_connect(listener.address, on_data, loop=loop,
                                     on_close=lambda c, r: closed.set())
        peer = listener.next()
        peer.sendall(b"bye")
        assert closed.wait(WAIT)
        assert client._closed.wait(WAIT)
        assert recv_to_eof(peer) == b""
        peer.close()


def test_client_on_a_stopped_loop(listener):
    closes = queue.Queue()
    loop = netsock.Loop()
    client = netsock.tcp_connect(listener.address, None, loop=loop,
                                 on_close=lambda c, r: closes.put(r))
    peer = listener.next()
    # once opened on the loop (a stop before the loop took the connection in ends it with
    # no callback: it never opened)
    assert client.wait_connected(WAIT)
    loop.close()  # what runs on the loop stops
    assert closes.get(timeout=WAIT) == netsock.ERR_STOPPED
    with pytest.raises(netsock.ClosedError):
        client.send(b"x")
    client.close()
    peer.close()


# ---------------------------------------------------------------------------------------------
# Logging


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_library_diagnostics_go_to_the_netsock_logger():
    handler = Records()
    netsock.logger.addHandler(handler)
    saved = netsock.logger.level
    netsock.logger.setLevel(logging.DEBUG)
    try:
        netsock.set_log_level(logging.DEBUG)
        with netsock.tcp_serve("127.0.0.1:0", lambda c, d: None, idle_timeout=0.05) as srv:
            with connect(srv) as sock:
                assert recv_to_eof(sock) == b""  # closed by the idle timeout: logged
            assert wait_for(lambda: any(r.levelno == logging.DEBUG for r in handler.records))
        assert all(r.name == "netsock" for r in handler.records)
        netsock.set_log_level(None)
        handler.records.clear()
        with netsock.tcp_serve("127.0.0.1:0", lambda c, d: None, idle_timeout=0.05) as srv:
            with connect(srv) as sock:
                assert recv_to_eof(sock) == b""
        time.sleep(0.05)
        assert handler.records == []
        with pytest.raises(TypeError):
            netsock.set_log_level("debug")
    finally:
        netsock.set_log_level(logging.WARNING)
        netsock.logger.setLevel(saved)
        netsock.logger.removeHandler(handler)


# ---------------------------------------------------------------------------------------------
# The new examples, run as programs


def run_example(name, *args, stdin=None):
    env = dict(os.environ)
    if os.sep in netsock.LIBRARY_PATH:
        env["NETSOCK_LIBRARY"] = os.path.abspath(netsock.LIBRARY_PATH)
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen([sys.executable, os.path.join(EXAMPLES_DIR, name)] + list(args),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=REPO_ROOT)


def test_one_loop_example_serves_and_stops_on_ctrl_c():
    proc = run_example("one_loop.py", "127.0.0.1:0", "127.0.0.1:0", "0.05")
    try:
        line = proc.stdout.readline().decode()
        m = re.match(r"tcp on (\S+), udp on (\S+)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        assert netsock.tcp_send(m.group(1), b"echo me") == b"echo me"
        assert netsock.udp_request(m.group(2), b"and me") == b"and me"
        assert proc.stdout.readline().startswith(b"beat ")
        proc.send_signal(signal.SIGINT)  # Ctrl-C: run() raises it, the program ends cleanly
        out, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.decode().splitlines()[-1].startswith("stopped after ")
    assert b"Traceback" not in err


@pytest.mark.parametrize("run_in_wait", [True, False])
def test_ctrl_c_stops_loop_run(run_in_wait):
    code = ("import netsock\n"
            "loop = netsock.Loop(run_in_wait=%r)\n"
            "loop.timer_start(0.01, 0.01, lambda: None)\n"
            "print('running', flush=True)\n"
            "try:\n"
            "    loop.run()\n"
            "except KeyboardInterrupt:\n"
            "    print('interrupted', flush=True)\n"
            "loop.close()\n"
            "print('closed', flush=True)\n" % run_in_wait)
    env = dict(os.environ)
    if os.sep in netsock.LIBRARY_PATH:
        env["NETSOCK_LIBRARY"] = os.path.abspath(netsock.LIBRARY_PATH)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline() == b"running\n"
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, out, err) == (0, b"interrupted\nclosed\n", b"")


def test_line_client_example():
    with netsock.tcp_serve("127.0.0.1:0", lambda c, d: c.send_frame(b"re: " + d),
                           framing=netsock.FRAMING_LINE) as srv:
        proc = run_example("line_client.py", srv.address)
        out, err = proc.communicate(b"one\ntwo\nthree\n", timeout=2 * WAIT)
    assert proc.returncode == 0, err
    assert out.decode().splitlines() == ["reply: re: one", "reply: re: two", "reply: re: three"]
