"""pytest tests of issue 15 through the package: reuseport=, proxy_protocol=, the fd: form, and
Server.handoff to a server on "handoff:" (one process; across processes see tests/peers)."""
import os
import socket
import tempfile
import threading

import pytest

import netsock
from helpers import WAIT, connect, recv_to_eof, wait_for


def greeter(name):
    """on_open: send `name` and the peer netsock reports, then close."""
    def on_open(conn):
        conn.send(("%s %s" % (name, conn.peer)).encode())
        conn.close()
    return on_open


def greeting(port):
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.settimeout(WAIT)
        return recv_to_eof(s).decode()


def test_reuseport_two_servers_share_a_port():
    a = netsock.tcp_serve("127.0.0.1:0", lambda c, d: None, on_open=greeter("A"), reuseport=True)
    with a:
        with pytest.raises(netsock.AddressInUseError):
            netsock.tcp_serve("127.0.0.1:%d" % a.port, lambda c, d: None)
        b = netsock.tcp_serve("127.0.0.1:%d" % a.port, lambda c, d: None, on_open=greeter("B"),
                              reuseport=True, threads=2)
        with b:
            seen = set()
            for _ in range(200):
                seen.add(greeting(a.port).split()[0])
                if seen == {"A", "B"}:
                    break
            assert seen == {"A", "B"}


def test_proxy_protocol_reports_the_client_and_counts_bad_headers():
    srv = netsock.tcp_serve("127.0.0.1:0", lambda c, d: None, on_open=greeter("S"),
                            proxy_protocol=True, connect_timeout=0.5)
    with srv:
        with connect(srv) as s:
            s.sendall(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n")
            assert recv_to_eof(s) == b"S 192.0.2.7:56324"
        with connect(srv) as s:
            s.sendall(b"not a header\r\n")
            assert recv_to_eof(s) == b""
        assert wait_for(lambda: srv.stats()["proxy_rejected"] == 1)
        assert srv.stats()["accepted"] == 1


def test_fd_form_serves_an_inherited_socket():
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    port = lsock.getsockname()[1]
    srv = netsock.tcp_serve("fd:%d" % lsock.detach(), lambda c, d: None, on_open=greeter("F"))
    with srv:
        assert srv.port == port
        assert greeting(port).startswith("F 127.0.0.1:")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    with pytest.raises(netsock.AddressError):
        netsock.tcp_serve("fd:%d" % udp.fileno(), lambda c, d: None)
    udp.close()  # still ours: a refused descriptor is left as it was


def test_handoff_to_a_server_on_handoff_path():
    path = os.path.join(tempfile.mkdtemp(), "handoff.sock")
    old = netsock.tcp_serve("127.0.0.1:0", lambda c, d: None, on_open=greeter("O"))
    with old:
        with pytest.raises(netsock.NetsockTimeout):
            old.handoff(path, timeout=0.05)
        assert greeting(old.port).startswith("O ")
        done = []
        t = threading.Thread(target=lambda: done.append(old.handoff(path, timeout=WAIT)))
        t.start()
        new = netsock.tcp_serve("handoff:" + path, lambda c, d: None, on_open=greeter("N"),
                                connect_timeout=WAIT)
        with new:
            t.join(WAIT)
            assert done == [None]
            assert new.port == old.port
            assert greeting(new.port).startswith("N ")
