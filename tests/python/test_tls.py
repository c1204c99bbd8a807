"""pytest tests of TLS through the package: tls= on servers and clients (netsock.Tls), against
Python's own ssl module on both sides, with certificates made by tests/tls/certs.sh (the openssl
CLI). Real sockets on 127.0.0.1, every wait bounded."""
import os
import socket
import ssl
import subprocess
import threading
import time

import pytest

import netsock
from helpers import WAIT, wait_for

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    subprocess.run(["sh", os.path.join(REPO_ROOT, "tests", "tls", "certs.sh"), str(d)], check=True,
                   timeout=60)
    return lambda name: str(d / name)


def echo_server(certs, **kw):
    seen = {"open": [], "close": []}

    def on_open(conn):
        seen["open"].append((conn.server_name, conn.alpn))

    def on_close(conn, reason):
        seen["close"].append(reason)

    tls = netsock.Tls.server(certs("server.pem"), certs("server.key"), alpn="h2,echo", **kw)
    srv = netsock.tcp_serve("127.0.0.1:0", lambda conn, data: conn.send(data), on_open=on_open,
                            on_close=on_close, tls=tls, connect_timeout=2)
    return srv, seen


def test_python_ssl_client_against_a_tls_server(certs):
    srv, seen = echo_server(certs)
    with srv:
        ctx = ssl.create_default_context(cafile=certs("ca.pem"))
        ctx.set_alpn_protocols(["echo"])
        with socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                assert s.selected_alpn_protocol() == "echo"
                s.sendall(b"x" * 100000)
                got = b""
                while len(got) < 100000:
                    got += s.recv(65536)
                assert got == b"x" * 100000
                s.unwrap()
        assert wait_for(lambda: seen["close"] == [netsock.OK])
        assert seen["open"] == [("localhost", "echo")]
        stats = srv.stats()
        assert stats["tls_handshakes"] == 1 and stats["tls_failures"] == 0


def test_tls_client_against_python_ssl_server(certs):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs("server.pem"), certs("server.key"))
    ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS
    ctx.load_verify_locations(certs("ca.pem"))
    ctx.set_alpn_protocols(["h2"])
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(WAIT)
    port = lsock.getsockname()[1]
    seen = {}

    def serve():
        conn, _ = lsock.accept()
        conn.settimeout(WAIT)
        with ctx.wrap_socket(conn, server_side=True) as s:
            seen["peer"] = s.getpeercert()["subject"]
            s.sendall(s.recv(100).upper())
            s.unwrap()

    t = threading.Thread(target=serve)
    t.start()
    got = []
    opened = []
    tls = netsock.Tls.client(certs("ca.pem"), alpn="h2", cert=certs("client.pem"),
                             key=certs("client.key"))
    c = netsock.tcp_connect("localhost:%d" % port, lambda conn, data: got.append(data),
                            on_open=lambda conn: opened.append(conn.alpn), tls=tls)
    del tls  # the client keeps what it needs
    try:
        c.send(b"hello")
        assert wait_for(lambda: b"".join(got) == b"HELLO")
        assert opened == ["h2"]
    finally:
        c.close()
        t.join(WAIT)
        lsock.close()
    assert ("commonName", "netsock test client") in [kv for rdn in seen["peer"] for kv in rdn]


def test_verification_failures_raise_tls_error(certs):
    srv, seen = echo_server(certs)
    with srv:
        wrong = netsock.Tls.client(certs("other-ca.pem"))
        with pytest.raises(netsock.TlsError) as e:
            netsock.tcp_connect("localhost:%d" % srv.port, tls=wrong)
        assert e.value.code == netsock.ERR_TLS and "UnknownIssuer" in str(e.value)
        closed = []
        c = netsock.tcp_connect("localhost:%d" % srv.port, tls=wrong, async_=True,
                                on_close=lambda conn, reason: closed.append(reason))
        assert wait_for(lambda: closed == [netsock.ERR_TLS])
        c.close()
        assert wait_for(lambda: srv.stats()["tls_failures"] == 2)
        assert seen["open"] == [] and seen["close"] == []


def test_configuration_errors(certs):
    with pytest.raises(netsock.TlsError):
        netsock.Tls.server(certs("server.pem"), certs("client.key"))
    with pytest.raises(netsock.TlsError):
        netsock.Tls.server("/nonexistent.pem", certs("server.key"))
    with pytest.raises(netsock.TlsError):
        netsock.Tls.server_pem(b"junk", b"junk")
    with open(certs("server.pem"), "rb") as f, open(certs("server.key"), "rb") as g:
        assert netsock.Tls.server_pem(f.read(), g.read()).side == "server"
    client = netsock.Tls.client(certs("ca.pem"))
    with pytest.raises(netsock.InvalidError):
        netsock.tcp_serve("127.0.0.1:0", lambda c, d: None, tls=client)
    with pytest.raises(TypeError):
        netsock.tcp_serve("127.0.0.1:0", lambda c, d: None, tls="not a Tls")


def test_a_silent_peer_is_dropped_at_the_handshake_timeout(certs):
    srv, seen = echo_server(certs)
    with srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT) as s:
            s.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, then silence
            start = time.monotonic()
            assert s.recv(100) == b""  # closed, at connect_timeout (2 s)
            assert 1.5 < time.monotonic() - start < WAIT
        assert wait_for(lambda: srv.stats()["tls_failures"] == 1)
        assert seen["open"] == [] and seen["close"] == []


@pytest.mark.parametrize("workers", [0, 2])
def test_proxy_header_then_tls_handshake(certs, workers):
    """Behind HAProxy with send-proxy and TLS passed through, the PROXY header comes before the
    ClientHello: the server reads the header, then does the handshake; with workers too."""
    seen = []

    def on_data(conn, data):
        seen.append((conn.peer, conn.server_name, conn.alpn))
        conn.send(data.upper())

    tls = netsock.Tls.server(certs("server.pem"), certs("server.key"), alpn="echo")
    srv = netsock.tcp_serve("127.0.0.1:0", on_data, tls=tls, proxy_protocol=True,
                            connect_timeout=2, workers=workers)
    with srv:
        ctx = ssl.create_default_context(cafile=certs("ca.pem"))
        ctx.set_alpn_protocols(["echo"])
        with socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT) as raw:
            raw.sendall(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n")
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"hello")
                assert s.recv(100) == b"HELLO"
                s.unwrap()
        assert wait_for(lambda: len(seen) == 1)
        peer, sni, alpn = seen[0]
        assert str(peer) == "192.0.2.7:56324" and sni == "localhost" and alpn == "echo"
        stats = srv.stats()
        assert stats["tls_handshakes"] == 1 and stats["proxy_rejected"] == 0


def test_server_stop_ends_tls_connections_with_close_notify(certs):
    """A server that stops closes its TLS connections in order (close_notify): the client sees
    an orderly end of the stream, not a truncation."""
    opened = []
    tls = netsock.Tls.server(certs("server.pem"), certs("server.key"))
    srv = netsock.tcp_serve("127.0.0.1:0", lambda conn, data: conn.send(data),
                            on_open=lambda conn: opened.append(conn.id), tls=tls, connect_timeout=2)
    ctx = ssl.create_default_context(cafile=certs("ca.pem"))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as s:
            s.sendall(b"ping")
            assert s.recv(100) == b"ping"
            assert wait_for(lambda: len(opened) == 1)
            srv.close()
            assert s.recv(100) == b""  # a truncation would raise ssl.SSLEOFError


@pytest.mark.parametrize("workers", [0, 2])
def test_owned_sends_on_tls_are_sealed_and_released(certs, workers):
    """ns_conn_send_owned on a TLS connection: the bytes arrive encrypted and whole, and every
    lent buffer is released (sealed when the loop takes it), on the loop and from workers."""
    tls = netsock.Tls.server(certs("server.pem"), certs("server.key"))
    srv = netsock.tcp_serve("127.0.0.1:0", lambda conn, data: conn.send_owned(bytes(data) * 1000),
                            tls=tls, connect_timeout=2, workers=workers)
    with srv:
        ctx = ssl.create_default_context(cafile=certs("ca.pem"))
        with socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"0123456789")
                got = b""
                while len(got) < 10000:
                    got += s.recv(65536)
                assert got == b"0123456789" * 1000
        assert wait_for(lambda: not netsock._lent)
