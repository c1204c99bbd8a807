#!/usr/bin/env python3
"""ctypes test of the netsock C ABI (python3 stdlib only).

Loads the shared library from $NETSOCK_LIBRARY (default: build/libnetsock.so
relative to the repository root), starts an echo server whose on_data
callback is a Python function, and talks to it with a plain socket and with
ns_tcp_send. Run: python3 tests/python/test_ffi.py
"""
import ctypes
import os
import socket
import threading
import time
import unittest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB_PATH = (os.environ.get("NETSOCK_LIBRARY") or os.environ.get("NETSOCK_LIB")
            or os.path.join(REPO_ROOT, "build", "libnetsock.so"))
if not os.path.isabs(LIB_PATH) and not os.path.exists(LIB_PATH):
    LIB_PATH = os.path.join(REPO_ROOT, LIB_PATH)

NS_OK = 0
NS_ERR_INVALID = -1
NS_ERR_ADDR = -2
NS_ERR_TRUNCATED = -7

lib = ctypes.CDLL(LIB_PATH)

c_server_p = ctypes.c_void_p  # ns_server *
c_conn_p = ctypes.c_void_p  # ns_conn *
c_options_p = ctypes.c_void_p  # ns_options *

# typedef void (*ns_data_cb)(ns_conn *, const uint8_t *, size_t, void *);
DATA_CB = ctypes.CFUNCTYPE(None, c_conn_p, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t,
                           ctypes.c_void_p)
# typedef void (*ns_open_cb)(ns_conn *, void *);
OPEN_CB = ctypes.CFUNCTYPE(None, c_conn_p, ctypes.c_void_p)
# typedef void (*ns_close_cb)(ns_conn *, int, void *);
CLOSE_CB = ctypes.CFUNCTYPE(None, c_conn_p, ctypes.c_int, ctypes.c_void_p)

lib.ns_version.argtypes = []
lib.ns_version.restype = ctypes.c_char_p
lib.ns_strerror.argtypes = [ctypes.c_int]
lib.ns_strerror.restype = ctypes.c_char_p
lib.ns_last_error.argtypes = []
lib.ns_last_error.restype = ctypes.c_char_p

lib.ns_options_new.argtypes = []
lib.ns_options_new.restype = c_options_p
lib.ns_options_free.argtypes = [c_options_p]
lib.ns_options_free.restype = None
lib.ns_options_set_on_open.argtypes = [c_options_p, OPEN_CB]
lib.ns_options_set_on_open.restype = ctypes.c_int
lib.ns_options_set_on_close.argtypes = [c_options_p, CLOSE_CB]
lib.ns_options_set_on_close.restype = ctypes.c_int

lib.ns_tcp_serve.argtypes = [ctypes.c_char_p, DATA_CB, ctypes.c_void_p, c_options_p,
                             ctypes.POINTER(c_server_p)]
lib.ns_tcp_serve.restype = ctypes.c_int
lib.ns_server_port.argtypes = [c_server_p]
lib.ns_server_port.restype = ctypes.c_int
lib.ns_server_addr.argtypes = [c_server_p, ctypes.c_char_p, ctypes.c_size_t]
lib.ns_server_addr.restype = ctypes.c_int
lib.ns_server_stop.argtypes = [c_server_p]
lib.ns_server_stop.restype = ctypes.c_int
lib.ns_server_free.argtypes = [c_server_p]
lib.ns_server_free.restype = None

lib.ns_conn_send.argtypes = [c_conn_p, ctypes.c_void_p, ctypes.c_size_t]
lib.ns_conn_send.restype = ctypes.c_int
lib.ns_conn_id.argtypes = [c_conn_p]
lib.ns_conn_id.restype = ctypes.c_uint64

lib.ns_tcp_send.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                            ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t), ctypes.c_uint32]
lib.ns_tcp_send.restype = ctypes.c_int


def tcp_send(addr, data, reply_cap, timeout_ms=5000):
    """ns_tcp_send wrapper: returns (rc, reply bytes)."""
    reply = ctypes.create_string_buffer(max(reply_cap, 1))
    rlen = ctypes.c_size_t(0)
    rc = lib.ns_tcp_send(addr.encode(), data, len(data), reply, reply_cap, ctypes.byref(rlen),
                         timeout_ms)
    return rc, reply.raw[:rlen.value]


class EchoServer:
    """An ns_tcp_serve echo server with Python callbacks (references kept on self)."""

    def __init__(self, addr="127.0.0.1:0"):
        self.lock = threading.Lock()
        self.received = bytearray()
        self.opened = []
        self.closed = []
        self.errors = []
        self.threads = set()
        # keep the ctypes callback objects alive as long as the server runs
        self._on_data = DATA_CB(self._data)
        self._on_open = OPEN_CB(self._open)
        self._on_close = CLOSE_CB(self._close)
        opts = lib.ns_options_new()
        assert opts
        assert lib.ns_options_set_on_open(opts, self._on_open) == NS_OK
        assert lib.ns_options_set_on_close(opts, self._on_close) == NS_OK
        self.srv = c_server_p()
        rc = lib.ns_tcp_serve(addr.encode(), self._on_data, None, opts, ctypes.byref(self.srv))
        lib.ns_options_free(opts)  # copied by serve
        if rc != NS_OK:
            raise OSError(rc, lib.ns_strerror(rc).decode() + ": " + lib.ns_last_error().decode())
        buf = ctypes.create_string_buffer(128)
        assert lib.ns_server_addr(self.srv, buf, len(buf)) == NS_OK
        self.addr = buf.value.decode()
        self.port = lib.ns_server_port(self.srv)

    def _data(self, conn, data, length, user):
        try:
            chunk = ctypes.string_at(data, length)
            with self.lock:
                self.received += chunk
                self.threads.add(threading.get_ident())
            rc = lib.ns_conn_send(conn, data, length)
            if rc != NS_OK:
                self.errors.append(("ns_conn_send", rc))
        except Exception as e:  # never let an exception escape into C
            self.errors.append(("on_data", repr(e)))

    def _open(self, conn, user):
        with self.lock:
            self.opened.append(lib.ns_conn_id(conn))
            self.threads.add(threading.get_ident())

    def _close(self, conn, reason, user):
        with self.lock:
            self.closed.append((lib.ns_conn_id(conn), reason))
            self.threads.add(threading.get_ident())

    def wait_closed(self, n, timeout=5.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if len(self.closed) >= n:
                    return True
            time.sleep(0.01)
        return False

    def free(self):
        if self.srv:
            lib.ns_server_free(self.srv)
            self.srv = c_server_p()


class FfiTest(unittest.TestCase):
    def setUp(self):
        self.server = EchoServer()

    def tearDown(self):
        self.server.free()

    def test_version(self):
        self.assertEqual(lib.ns_version().decode().count("."), 2)

    def test_server_address(self):
        self.assertGreater(self.server.port, 0)
        self.assertEqual(self.server.addr, "127.0.0.1:%d" % self.server.port)

    def test_plain_socket_round_trip(self):
        msg = b"hello from a python socket"
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=5) as s:
            s.settimeout(5)
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
            self.assertEqual(got, msg)
        self.assertTrue(self.server.wait_closed(1))
        with self.server.lock:
            self.assertEqual(len(self.server.opened), 1)
            self.assertNotEqual(self.server.opened[0], 0)
            self.assertEqual(self.server.closed, [(self.server.opened[0], NS_OK)])
            # every callback ran on one library thread, not this one
            self.assertEqual(len(self.server.threads), 1)
            self.assertNotIn(threading.get_ident(), self.server.threads)
        self.assertEqual(self.server.errors, [])

    def test_ns_tcp_send_round_trip(self):
        data = bytes(range(256)) * 400  # 100 KiB
        rc, reply = tcp_send(self.server.addr, data, len(data))
        self.assertEqual(rc, NS_OK, lib.ns_last_error())
        self.assertEqual(reply, data)
        self.assertEqual(bytes(self.server.received), data)
        self.assertEqual(self.server.errors, [])

    def test_truncated_reply(self):
        rc, reply = tcp_send(self.server.addr, b"0123456789", 4)
        self.assertEqual(rc, NS_ERR_TRUNCATED)
        self.assertEqual(reply, b"0123")

    def test_bad_address(self):
        srv = c_server_p()
        rc = lib.ns_tcp_serve(b"127.0.0.1:99999", self.server._on_data, None, None,
                              ctypes.byref(srv))
        self.assertEqual(rc, NS_ERR_ADDR)
        self.assertEqual(rc, -2)
        self.assertFalse(srv.value)  # *out written only on success
        self.assertNotEqual(lib.ns_last_error(), b"")
        text = lib.ns_strerror(rc)
        self.assertIsNotNone(text)
        self.assertIn(b"ADDR", text)
        rc, _ = tcp_send("no-port-here", b"x", 8)
        self.assertEqual(rc, NS_ERR_ADDR)
        rc = lib.ns_tcp_serve(None, self.server._on_data, None, None, ctypes.byref(srv))
        self.assertEqual(rc, NS_ERR_INVALID)

    def test_strerror(self):
        for code in list(range(-13, 1)) + [12345, -999, -2**31]:
            text = lib.ns_strerror(code)
            self.assertIsNotNone(text)
            self.assertNotEqual(text, b"")


if __name__ == "__main__":
    unittest.main(verbosity=2)
