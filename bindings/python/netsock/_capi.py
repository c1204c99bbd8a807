"""The C side of netsock: finding libnetsock, and the declarations of include/netsock.h.

Kept apart from the Python API so that every C signature sits in one table that a test can hold
against the header (every function the header declares is declared here).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any, Dict, Iterator, List, Tuple

# The ABI this package is written for (NS_VERSION_MAJOR of include/netsock.h).
ABI_MAJOR = 0


def _candidates() -> Iterator[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "libnetsock.so")  # a copy shipped inside the package
    source_root = os.path.normpath(os.path.join(here, "..", "..", ".."))
    if os.path.exists(os.path.join(source_root, "include", "netsock.h")):
        yield os.path.join(source_root, "build", "libnetsock.so")  # this source tree
    yield "libnetsock.so.%d" % ABI_MAJOR  # the installed soname, via the dynamic loader
    found = ctypes.util.find_library("netsock")
    if found:
        yield found
    yield "libnetsock.so"


def _load() -> Tuple[ctypes.CDLL, str]:
    for var in ("NETSOCK_LIBRARY", "NETSOCK_LIB"):
        env = os.environ.get(var)
        if env:
            try:
                return ctypes.CDLL(os.path.abspath(env) if os.path.exists(env) else env), env
            except OSError as e:
                raise ImportError("netsock: cannot load $%s=%r: %s" % (var, env, e)) from None
    tried: List[str] = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path + " (missing)")
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError("netsock: libnetsock not found; set NETSOCK_LIBRARY to its path. Tried: "
                      + "; ".join(tried))


_cdll, LIBRARY_PATH = _load()

c_int, c_size_t, c_uint32, c_uint64 = ctypes.c_int, ctypes.c_size_t, ctypes.c_uint32, ctypes.c_uint64
c_int64, c_void_p, c_char_p, c_bool = ctypes.c_int64, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_bool


class ns_server(ctypes.Structure):
    """Opaque ns_server."""


class ns_options(ctypes.Structure):
    """Opaque ns_options."""


class ns_loop(ctypes.Structure):
    """Opaque ns_loop."""


class ns_client(ctypes.Structure):
    """Opaque ns_client."""


class ns_tls(ctypes.Structure):
    """Opaque ns_tls."""


class ns_peer(ctypes.Structure):
    _fields_ = [("_storage", c_uint64 * 16), ("_len", c_uint32), ("_pad", c_uint32)]


STATS_FIELDS = ("accepted", "active", "closed", "rejected", "bytes_in", "bytes_out",
                "datagrams_in", "datagrams_out", "frames_too_large", "timeouts", "proxy_rejected",
                "worker_busy", "worker_queued", "tls_handshakes", "tls_failures")


class ns_stats(ctypes.Structure):
    _fields_ = ([("size", c_uint32), ("_reserved", c_uint32)]
                + [(f, c_uint64) for f in STATS_FIELDS])


server_p = ctypes.POINTER(ns_server)
options_p = ctypes.POINTER(ns_options)
loop_p = ctypes.POINTER(ns_loop)
client_p = ctypes.POINTER(ns_client)
tls_p = ctypes.POINTER(ns_tls)
conn_p = c_void_p  # ns_conn *: borrowed in callbacks, handled as a plain address

# Callback types. Pointers are declared c_void_p: the trampolines get plain ints (fast).
DATA_CB = ctypes.CFUNCTYPE(None, c_void_p, c_void_p, c_size_t, c_void_p)      # ns_data_cb
OPEN_CB = ctypes.CFUNCTYPE(None, c_void_p, c_void_p)                          # ns_open_cb
DRAIN_CB = ctypes.CFUNCTYPE(None, c_void_p, c_void_p)                         # ns_drain_cb
CLOSE_CB = ctypes.CFUNCTYPE(None, c_void_p, c_int, c_void_p)                  # ns_close_cb
CONN_TIMER_CB = ctypes.CFUNCTYPE(None, c_void_p, c_void_p)                    # ns_conn_timer_cb
CONN_TASK_CB = ctypes.CFUNCTYPE(None, c_void_p, c_void_p)                     # ns_conn_task_cb
FREE_CB = ctypes.CFUNCTYPE(None, c_void_p, c_void_p)                          # ns_free_cb
TASK_CB = ctypes.CFUNCTYPE(None, c_void_p)                                    # ns_task_cb
TIMER_CB = ctypes.CFUNCTYPE(None, c_uint64, c_void_p)                         # ns_timer_cb
DATAGRAM_CB = ctypes.CFUNCTYPE(None, c_void_p, c_void_p, c_void_p, c_size_t, c_void_p)
LOG_CB = ctypes.CFUNCTYPE(None, c_int, c_char_p)                              # ns_log_cb

_size_p = ctypes.POINTER(c_size_t)

PROTOTYPES: Dict[str, Tuple[Any, List[Any]]] = {
    "ns_version": (c_char_p, []),
    "ns_strerror": (c_char_p, [c_int]),
    "ns_last_error": (c_char_p, []),
    "ns_set_log": (c_int, [LOG_CB, c_int]),
    # options
    "ns_options_new": (options_p, []),
    "ns_options_free": (None, [options_p]),
    "ns_options_set_threads": (c_int, [options_p, c_size_t]),
    "ns_options_set_workers": (c_int, [options_p, c_size_t]),
    "ns_options_set_run_in_wait": (c_int, [options_p, c_int]),
    "ns_options_set_loop": (c_int, [options_p, loop_p]),
    "ns_options_set_framing": (c_int, [options_p, c_int]),
    "ns_options_set_delimiter": (c_int, [options_p, c_char_p, c_size_t]),
    "ns_options_set_length_field": (c_int, [options_p, c_size_t, c_size_t, c_int, c_int64]),
    "ns_options_set_fixed_size": (c_int, [options_p, c_size_t]),
    "ns_options_set_max_frame": (c_int, [options_p, c_size_t]),
    "ns_options_set_max_write_buffer": (c_int, [options_p, c_size_t]),
    "ns_options_set_max_conns": (c_int, [options_p, c_size_t]),
    "ns_options_set_idle_timeout_ms": (c_int, [options_p, c_uint32]),
    "ns_options_set_drain_timeout_ms": (c_int, [options_p, c_uint32]),
    "ns_options_set_connect_timeout_ms": (c_int, [options_p, c_uint32]),
    "ns_options_set_reuseport": (c_int, [options_p, c_int]),
    "ns_options_set_proxy_protocol": (c_int, [options_p, c_int]),
    "ns_server_handoff": (c_int, [server_p, c_char_p, c_uint32]),
    "ns_options_set_reconnect": (c_int, [options_p, c_uint32, c_uint32]),
    "ns_options_set_backlog": (c_int, [options_p, c_int]),
    "ns_options_set_nodelay": (c_int, [options_p, c_bool]),
    "ns_options_set_keepalive": (c_int, [options_p, c_uint32]),
    "ns_options_set_on_open": (c_int, [options_p, OPEN_CB]),
    "ns_options_set_on_close": (c_int, [options_p, CLOSE_CB]),
    "ns_options_set_on_drain": (c_int, [options_p, DRAIN_CB]),
    "ns_options_set_on_timer": (c_int, [options_p, CONN_TIMER_CB]),
    # servers
    "ns_tcp_serve": (c_int, [c_char_p, DATA_CB, c_void_p, options_p, ctypes.POINTER(server_p)]),
    "ns_udp_serve": (c_int, [c_char_p, DATAGRAM_CB, c_void_p, options_p,
                             ctypes.POINTER(server_p)]),
    "ns_server_port": (c_int, [server_p]),
    "ns_server_addr": (c_int, [server_p, c_char_p, c_size_t]),
    "ns_server_send": (c_int, [server_p, c_uint64, c_void_p, c_size_t]),
    "ns_server_send_frame": (c_int, [server_p, c_uint64, c_void_p, c_size_t]),
    "ns_server_send_owned": (c_int, [server_p, c_uint64, c_void_p, c_size_t, FREE_CB, c_void_p]),
    "ns_server_close": (c_int, [server_p, c_uint64]),
    "ns_server_post": (c_int, [server_p, c_uint64, CONN_TASK_CB, c_void_p]),
    "ns_server_loop": (loop_p, [server_p]),
    "ns_server_stats": (c_int, [server_p, ctypes.POINTER(ns_stats)]),
    "ns_server_stop": (c_int, [server_p]),
    "ns_server_wait": (c_int, [server_p]),
    "ns_server_free": (None, [server_p]),
    "ns_udp_reply": (c_int, [server_p, ctypes.POINTER(ns_peer), c_void_p, c_size_t]),
    "ns_peer_format": (c_int, [ctypes.POINTER(ns_peer), c_char_p, c_size_t]),
    "ns_peer_parse": (c_int, [c_char_p, ctypes.POINTER(ns_peer)]),
    # connections, inside callbacks
    "ns_conn_send": (c_int, [conn_p, c_void_p, c_size_t]),
    "ns_conn_send_frame": (c_int, [conn_p, c_void_p, c_size_t]),
    "ns_conn_send_owned": (c_int, [conn_p, c_void_p, c_size_t, FREE_CB, c_void_p]),
    "ns_conn_keep": (c_int, [conn_p, c_size_t]),
    "ns_conn_close": (c_int, [conn_p]),
    "ns_conn_pause": (c_int, [conn_p]),
    "ns_conn_resume": (c_int, [conn_p]),
    "ns_conn_set_timer": (c_int, [conn_p, c_uint32]),
    "ns_conn_id": (c_uint64, [conn_p]),
    "ns_conn_peer": (c_int, [conn_p, c_char_p, c_size_t]),
    "ns_conn_pending": (c_size_t, [conn_p]),
    # The binding keeps per-connection state and the owner on the Python side (Conn.user,
    # Conn.server): these three are declared for completeness, not called.
    "ns_conn_server": (server_p, [conn_p]),
    "ns_conn_set_user": (c_int, [conn_p, c_void_p]),
    "ns_conn_user": (c_void_p, [conn_p]),
    # loops and timers
    "ns_loop_new": (c_int, [options_p, ctypes.POINTER(loop_p)]),
    "ns_loop_free": (None, [loop_p]),
    "ns_loop_run": (c_int, [loop_p]),
    "ns_loop_stop": (c_int, [loop_p]),
    "ns_loop_post": (c_int, [loop_p, TASK_CB, c_void_p]),
    "ns_timer_start": (c_int, [loop_p, c_uint32, c_uint32, TIMER_CB, c_void_p,
                               ctypes.POINTER(c_uint64)]),
    "ns_timer_stop": (c_int, [loop_p, c_uint64]),
    # persistent clients
    "ns_tcp_connect": (c_int, [c_char_p, DATA_CB, c_void_p, options_p, ctypes.POINTER(client_p)]),
    "ns_tcp_connect_async": (c_int, [c_char_p, DATA_CB, c_void_p, options_p,
                                     ctypes.POINTER(client_p)]),
    "ns_client_send": (c_int, [client_p, c_void_p, c_size_t]),
    "ns_client_send_frame": (c_int, [client_p, c_void_p, c_size_t]),
    "ns_client_send_owned": (c_int, [client_p, c_void_p, c_size_t, FREE_CB, c_void_p]),
    "ns_client_post": (c_int, [client_p, CONN_TASK_CB, c_void_p]),
    "ns_client_close": (c_int, [client_p]),
    "ns_client_free": (None, [client_p]),
    "ns_client_id": (c_uint64, [client_p]),
    # one-shot clients
    "ns_tcp_send": (c_int, [c_char_p, c_void_p, c_size_t, c_void_p, c_size_t, _size_p, c_uint32]),
    "ns_tcp_request": (c_int, [c_char_p, c_void_p, c_size_t, c_void_p, c_size_t, _size_p,
                               c_uint32, c_int]),
    "ns_udp_send": (c_int, [c_char_p, c_void_p, c_size_t]),
    "ns_udp_request": (c_int, [c_char_p, c_void_p, c_size_t, c_void_p, c_size_t, _size_p,
                               c_uint32]),
    # TLS
    "ns_tls_server_new": (c_int, [c_char_p, c_char_p, ctypes.POINTER(tls_p)]),
    "ns_tls_server_new_pem": (c_int, [c_char_p, c_size_t, c_char_p, c_size_t,
                                      ctypes.POINTER(tls_p)]),
    "ns_tls_client_new": (c_int, [c_char_p, ctypes.POINTER(tls_p)]),
    "ns_tls_set_alpn": (c_int, [tls_p, c_char_p]),
    "ns_tls_set_client_ca": (c_int, [tls_p, c_char_p]),
    "ns_tls_set_client_cert": (c_int, [tls_p, c_char_p, c_char_p]),
    "ns_tls_free": (None, [tls_p]),
    "ns_options_set_tls": (c_int, [options_p, tls_p]),
    "ns_conn_alpn": (c_int, [conn_p, c_char_p, c_size_t]),
    "ns_conn_server_name": (c_int, [conn_p, c_char_p, c_size_t]),
}

for _name, (_restype, _argtypes) in PROTOTYPES.items():
    try:
        _fn = getattr(_cdll, _name)
    except AttributeError:
        raise ImportError("netsock: %s lacks %s (library too old?)" % (LIBRARY_PATH, _name)) from None
    _fn.restype = _restype
    _fn.argtypes = _argtypes
del _name, _restype, _argtypes, _fn

# Typed Any: ctypes gives the functions' results as plain Python values.
lib: Any = _cdll
