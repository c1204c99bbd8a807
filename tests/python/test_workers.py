"""pytest tests of ``workers=`` on servers: Python handlers that block run on netsock's worker
threads, in parallel across connections and in order within one, each call holding the GIL
only while in Python. Real sockets on 127.0.0.1, every wait bounded."""
import threading
import time

import netsock
from helpers import WAIT, connect, wait_for


def read_lines(sock, n):
    got = b""
    while got.count(b"\n") < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got.split(b"\n")[:n]


def test_blocking_handlers_run_in_parallel():
    def on_data(conn, data):
        time.sleep(0.1)  # blocks: releases the GIL, the worker waits
        conn.send_frame(data + b" " + threading.current_thread().name.encode())

    with netsock.tcp_serve("127.0.0.1:0", on_data, framing=netsock.Framing.LINE,
                           workers=4) as server:
        socks = [connect(server) for _ in range(8)]
        start = time.monotonic()
        for i, s in enumerate(socks):
            s.sendall(b"m%d\n" % i)
        replies = [read_lines(s, 1)[0] for s in socks]
        took = time.monotonic() - start
        for s in socks:
            s.close()
    assert [r.split(b" ")[0] for r in replies] == [b"m%d" % i for i in range(8)]
    # 8 x 100 ms on 4 workers: ~200 ms; a serial loop needs 800 ms
    assert took < 0.6, took


def test_one_connection_in_order_and_stats():
    inside = []
    overlaps = []
    closed = threading.Event()

    def on_data(conn, data):
        if inside:
            overlaps.append(data)
        inside.append(data)
        time.sleep(0.001 * (int(data) % 3))
        conn.send_frame(data)
        inside.pop()

    with netsock.tcp_serve("127.0.0.1:0", on_data, framing=netsock.Framing.LINE, workers=3,
                           on_close=lambda conn, reason: closed.set()) as server:
        with connect(server) as s:
            s.sendall(b"".join(b"%d\n" % i for i in range(200)))
            assert read_lines(s, 200) == [b"%d" % i for i in range(200)]
        assert closed.wait(WAIT)
        assert wait_for(lambda: server.stats()["worker_busy"] == 0)
        assert server.stats()["worker_queued"] == 0
    assert overlaps == []


def test_workers_must_be_a_small_int():
    for bad in (-1, 1025):
        try:
            netsock.tcp_serve("127.0.0.1:0", lambda conn, data: None, workers=bad)
        except netsock.InvalidError:
            pass
        else:
            raise AssertionError("workers=%d accepted" % bad)
