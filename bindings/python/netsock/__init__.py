"""netsock for Python: TCP and UDP servers and clients over libnetsock, with ctypes.

No compile step and nothing beyond the standard library (Python 3.8+)::

    import netsock

    def on_data(conn, data):          # runs on a netsock loop thread
        conn.send(data)               # echo

    with netsock.tcp_serve("127.0.0.1:0", on_data) as server:
        print(netsock.tcp_send(server.address, b"hi"))      # b'hi'

Finding the library, first that exists wins: ``$NETSOCK_LIBRARY`` (a path; ``$NETSOCK_LIB`` is
read too; if it is set and cannot be loaded, importing fails), ``libnetsock.so`` inside this
package, ``build/libnetsock.so`` of the source tree when the package is run from it, then the
installed library (``libnetsock.so.0``, the soname of this ABI, or what
``ctypes.util.find_library("netsock")`` finds).

Errors are raised as :class:`Error` subclasses carrying the ``ns_result`` ``code``, its ``name``
("NS_ERR_ADDR") and the ``detail`` text of ``ns_last_error()``. Some also derive from the builtin
exception that matches: :class:`RefusedError` is a ``ConnectionRefusedError``,
:class:`NetsockTimeout` a ``TimeoutError``, :class:`ResetError` a ``ConnectionResetError``,
:class:`InvalidError` a ``ValueError``.

Threads and callbacks
---------------------
* Callbacks run on netsock's loop threads, not on the thread that started the server (ctypes
  takes the GIL for them). With ``threads=1`` (the default) a server's callbacks run one at a
  time; with more, callbacks of different connections (or datagrams) run on several threads at
  once, so guard shared state with a lock. A callback that blocks stalls its loop thread.
* The :class:`Conn` a callback receives is borrowed: it works only during that callback. To
  reach the connection later or from another thread, keep ``conn.id`` and use
  :meth:`Server.send`. A :class:`Peer` (UDP) is a copy: keep it and :meth:`Server.reply` from any
  thread.
* An exception raised in a callback never reaches C: it is reported (to
  :data:`on_callback_error` if set, else as a traceback on stderr) and the server keeps running.
  An exception in ``on_open`` or ``on_data`` also closes that connection (after what was already
  sent is flushed).
* A server keeps its callbacks (and itself) alive until :meth:`Server.close`, the end of its
  ``with`` block, or interpreter exit: dropping the last reference does not stop it.
* Inside a server's own callbacks, :meth:`Server.wait` raises :class:`MisuseError`;
  :meth:`Server.close` stops the server and finishes freeing it on a helper thread once the
  callback has returned. Prefer calling both from outside the callbacks.
"""

import atexit
import ctypes
import ctypes.util
import enum
import math
import os
import sys
import threading
import traceback

__all__ = [
    "Error", "InvalidError", "AddressError", "AddressInUseError", "RefusedError",
    "NetsockTimeout", "ClosedError", "TruncatedError", "LimitError", "NetsockIOError",
    "ResetError", "StoppedError", "PanicError", "MisuseError",
    "Result", "FRAMING_RAW", "FRAMING_LINE", "FRAMING_LEN32",
    "Conn", "Peer", "Server", "tcp_serve", "udp_serve", "tcp_send", "tcp_request", "udp_send",
    "udp_request", "version", "strerror", "ERRORS", "LIBRARY_PATH",
]

__version__ = "0.1.0"  # the package's version: the netsock release it was written with

# The ABI this module is written for (NS_VERSION_MAJOR of include/netsock.h).
_ABI_MAJOR = 0

# --------------------------------------------------------------------------------------------
# Loading the library
# --------------------------------------------------------------------------------------------


def _candidates():
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "libnetsock.so")  # a copy shipped inside the package
    source_root = os.path.normpath(os.path.join(here, "..", "..", ".."))
    if os.path.exists(os.path.join(source_root, "include", "netsock.h")):
        yield os.path.join(source_root, "build", "libnetsock.so")  # this source tree
    yield "libnetsock.so.%d" % _ABI_MAJOR  # the installed soname, via the dynamic loader
    found = ctypes.util.find_library("netsock")
    if found:
        yield found
    yield "libnetsock.so"


def _load():
    for var in ("NETSOCK_LIBRARY", "NETSOCK_LIB"):
        env = os.environ.get(var)
        if env:
            try:
                return ctypes.CDLL(os.path.abspath(env) if os.path.exists(env) else env), env
            except OSError as e:
                raise ImportError("netsock: cannot load $%s=%r: %s" % (var, env, e)) from None
    tried = []
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


_lib, LIBRARY_PATH = _load()

# --------------------------------------------------------------------------------------------
# C declarations (include/netsock.h)
# --------------------------------------------------------------------------------------------

c_int, c_size_t, c_uint32, c_uint64 = ctypes.c_int, ctypes.c_size_t, ctypes.c_uint32, ctypes.c_uint64
c_void_p, c_char_p, c_bool = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_bool


class _ns_server(ctypes.Structure):
    """Opaque ns_server."""


class _ns_options(ctypes.Structure):
    """Opaque ns_options."""


class _ns_peer(ctypes.Structure):
    _fields_ = [("_storage", c_uint64 * 16), ("_len", c_uint32), ("_pad", c_uint32)]


_STATS_FIELDS = ("accepted", "active", "closed", "rejected", "bytes_in", "bytes_out",
                 "datagrams_in", "datagrams_out", "frames_too_large", "timeouts")


class _ns_stats(ctypes.Structure):
    _fields_ = [("size", c_uint32), ("_reserved", c_uint32)] + [(f, c_uint64) for f in _STATS_FIELDS]


_server_p = ctypes.POINTER(_ns_server)
_options_p = ctypes.POINTER(_ns_options)
_conn_p = c_void_p  # ns_conn *: borrowed in callbacks, handled as a plain address

# Callback types. Pointers are declared c_void_p: the trampolines get plain ints (fast).
_DATA_CB = ctypes.CFUNCTYPE(None, c_void_p, c_void_p, c_size_t, c_void_p)        # ns_data_cb
_OPEN_CB = ctypes.CFUNCTYPE(None, c_void_p, c_void_p)                            # ns_open_cb
_DRAIN_CB = ctypes.CFUNCTYPE(None, c_void_p, c_void_p)                           # ns_drain_cb
_CLOSE_CB = ctypes.CFUNCTYPE(None, c_void_p, c_int, c_void_p)                    # ns_close_cb
_DATAGRAM_CB = ctypes.CFUNCTYPE(None, c_void_p, c_void_p, c_void_p, c_size_t, c_void_p)

_PROTOTYPES = {
    "ns_version": (c_char_p, []),
    "ns_strerror": (c_char_p, [c_int]),
    "ns_last_error": (c_char_p, []),
    "ns_options_new": (_options_p, []),
    "ns_options_free": (None, [_options_p]),
    "ns_options_set_threads": (c_int, [_options_p, c_size_t]),
    "ns_options_set_framing": (c_int, [_options_p, c_int]),
    "ns_options_set_max_frame": (c_int, [_options_p, c_size_t]),
    "ns_options_set_max_write_buffer": (c_int, [_options_p, c_size_t]),
    "ns_options_set_max_conns": (c_int, [_options_p, c_size_t]),
    "ns_options_set_idle_timeout_ms": (c_int, [_options_p, c_uint32]),
    "ns_options_set_drain_timeout_ms": (c_int, [_options_p, c_uint32]),
    "ns_options_set_backlog": (c_int, [_options_p, c_int]),
    "ns_options_set_nodelay": (c_int, [_options_p, c_bool]),
    "ns_options_set_keepalive": (c_int, [_options_p, c_uint32]),
    "ns_options_set_on_open": (c_int, [_options_p, _OPEN_CB]),
    "ns_options_set_on_close": (c_int, [_options_p, _CLOSE_CB]),
    "ns_options_set_on_drain": (c_int, [_options_p, _DRAIN_CB]),
    "ns_tcp_serve": (c_int, [c_char_p, _DATA_CB, c_void_p, _options_p, ctypes.POINTER(_server_p)]),
    "ns_udp_serve": (c_int, [c_char_p, _DATAGRAM_CB, c_void_p, _options_p,
                             ctypes.POINTER(_server_p)]),
    "ns_server_port": (c_int, [_server_p]),
    "ns_server_addr": (c_int, [_server_p, c_char_p, c_size_t]),
    "ns_server_send": (c_int, [_server_p, c_uint64, c_void_p, c_size_t]),
    "ns_server_send_frame": (c_int, [_server_p, c_uint64, c_void_p, c_size_t]),
    "ns_server_stats": (c_int, [_server_p, ctypes.POINTER(_ns_stats)]),
    "ns_server_stop": (c_int, [_server_p]),
    "ns_server_wait": (c_int, [_server_p]),
    "ns_server_free": (None, [_server_p]),
    "ns_udp_reply": (c_int, [_server_p, ctypes.POINTER(_ns_peer), c_void_p, c_size_t]),
    "ns_peer_format": (c_int, [ctypes.POINTER(_ns_peer), c_char_p, c_size_t]),
    "ns_peer_parse": (c_int, [c_char_p, ctypes.POINTER(_ns_peer)]),
    "ns_conn_send": (c_int, [_conn_p, c_void_p, c_size_t]),
    "ns_conn_send_frame": (c_int, [_conn_p, c_void_p, c_size_t]),
    "ns_conn_close": (c_int, [_conn_p]),
    "ns_conn_id": (c_uint64, [_conn_p]),
    "ns_conn_peer": (c_int, [_conn_p, c_char_p, c_size_t]),
    "ns_conn_pending": (c_size_t, [_conn_p]),
    "ns_tcp_send": (c_int, [c_char_p, c_void_p, c_size_t, c_void_p, c_size_t,
                            ctypes.POINTER(c_size_t), c_uint32]),
    "ns_tcp_request": (c_int, [c_char_p, c_void_p, c_size_t, c_void_p, c_size_t,
                               ctypes.POINTER(c_size_t), c_uint32, c_int]),
    "ns_udp_send": (c_int, [c_char_p, c_void_p, c_size_t]),
    "ns_udp_request": (c_int, [c_char_p, c_void_p, c_size_t, c_void_p, c_size_t,
                               ctypes.POINTER(c_size_t), c_uint32]),
}

for _name, (_restype, _argtypes) in _PROTOTYPES.items():
    try:
        _fn = getattr(_lib, _name)
    except AttributeError:
        raise ImportError("netsock: %s lacks %s (library too old?)" % (LIBRARY_PATH, _name)) from None
    _fn.restype = _restype
    _fn.argtypes = _argtypes
del _name, _restype, _argtypes, _fn


def version():
    """The library's version, e.g. "0.1.0" (``ns_version()``)."""
    return _lib.ns_version().decode()


if int(version().split(".")[0]) != _ABI_MAJOR:
    raise ImportError("netsock: %s is version %s; this module needs %d.x"
                      % (LIBRARY_PATH, version(), _ABI_MAJOR))

# --------------------------------------------------------------------------------------------
# Constants and errors
# --------------------------------------------------------------------------------------------

FRAMING_RAW = 0    # on_data gets bytes as they were read (the default)
FRAMING_LINE = 1   # one message per "\n"-terminated line (without it; a "\r" before it dropped)
FRAMING_LEN32 = 2  # a 4-byte big-endian length, then that many bytes


class Result(enum.IntEnum):
    """ns_result codes (``on_close`` reasons are given as these)."""
    OK = 0
    ERR_INVALID = -1
    ERR_ADDR = -2
    ERR_ADDR_IN_USE = -3
    ERR_REFUSED = -4
    ERR_TIMEOUT = -5
    ERR_CLOSED = -6
    ERR_TRUNCATED = -7
    ERR_LIMIT = -8
    ERR_IO = -9
    ERR_RESET = -10
    ERR_STOPPED = -11
    ERR_PANIC = -12
    ERR_MISUSE = -13


globals().update(Result.__members__)  # OK, ERR_INVALID, ... as module constants
__all__ += list(Result.__members__)


def strerror(code):
    """The name and meaning of a result code, e.g. "NS_ERR_TIMEOUT: timed out"."""
    return _lib.ns_strerror(int(code)).decode("utf-8", "replace")


def _result(code):
    try:
        return Result(code)
    except ValueError:
        return code


class Error(Exception):
    """A failed netsock call. ``code`` is the ns_result (negative int), ``name`` its name
    ("NS_ERR_ADDR"), ``detail`` the ``ns_last_error()`` text of the failure ("" if none)."""

    def __init__(self, code, detail=""):
        self.code = code
        self.detail = detail
        text = strerror(code)
        self.name = text.split(":", 1)[0]
        super().__init__("%s: %s" % (self.name, detail) if detail else text)

    def __reduce__(self):
        return (type(self), (self.code, self.detail), self.__dict__)


class InvalidError(Error, ValueError):
    """NS_ERR_INVALID: a bad argument (also raised for arguments this module rejects)."""


class AddressError(Error):
    """NS_ERR_ADDR: address text that cannot be parsed or resolved."""


class AddressInUseError(Error):
    """NS_ERR_ADDR_IN_USE: the address is already bound."""


class RefusedError(Error, ConnectionRefusedError):
    """NS_ERR_REFUSED: nobody listens at the address."""


class NetsockTimeout(Error, TimeoutError):
    """NS_ERR_TIMEOUT: the operation outlasted its time limit."""


class ClosedError(Error):
    """NS_ERR_CLOSED: the connection is closed or unknown, or the server stopped or closed."""


class TruncatedError(Error):
    """NS_ERR_TRUNCATED: the reply did not fit ``reply_cap``; ``data`` holds its first bytes."""

    def __init__(self, code=Result.ERR_TRUNCATED, detail="", data=b""):
        super().__init__(code, detail)
        self.data = data


class LimitError(Error):
    """NS_ERR_LIMIT: a size limit was reached (a full send queue, a datagram too large)."""


class NetsockIOError(Error):
    """NS_ERR_IO: another operating-system error; ``detail`` has the errno text."""


class ResetError(Error, ConnectionResetError):
    """NS_ERR_RESET: the peer reset the connection."""


class StoppedError(Error):
    """NS_ERR_STOPPED: the server stopped."""


class PanicError(Error):
    """NS_ERR_PANIC: a panic inside netsock was caught."""


class MisuseError(Error):
    """NS_ERR_MISUSE: a call made where it cannot work (such as Server.wait() in a callback)."""


ERRORS = {
    Result.ERR_INVALID: InvalidError,
    Result.ERR_ADDR: AddressError,
    Result.ERR_ADDR_IN_USE: AddressInUseError,
    Result.ERR_REFUSED: RefusedError,
    Result.ERR_TIMEOUT: NetsockTimeout,
    Result.ERR_CLOSED: ClosedError,
    Result.ERR_TRUNCATED: TruncatedError,
    Result.ERR_LIMIT: LimitError,
    Result.ERR_IO: NetsockIOError,
    Result.ERR_RESET: ResetError,
    Result.ERR_STOPPED: StoppedError,
    Result.ERR_PANIC: PanicError,
    Result.ERR_MISUSE: MisuseError,
}
"""Result code -> Error subclass."""


def _last_error():
    text = _lib.ns_last_error()
    return text.decode("utf-8", "replace") if text else ""


def _error(code, detail=None):
    """The exception for a failed call, with this thread's ns_last_error() unless given."""
    if detail is None:
        detail = _last_error()
    return ERRORS.get(code, Error)(_result(code), detail)


def _check(rc):
    """Raises the Error subclass for a negative result code; call it right after the C call,
    on the same thread (the detail is that thread's ns_last_error())."""
    if rc < 0:
        raise _error(rc)
    return rc


# --------------------------------------------------------------------------------------------
# Argument conversion
# --------------------------------------------------------------------------------------------


def _bytes(data, what="data"):
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        raise TypeError("%s must be bytes-like, not str (encode it first)" % what)
    try:
        return memoryview(data).tobytes()
    except TypeError:
        raise TypeError("%s must be bytes-like, not %s" % (what, type(data).__name__)) from None


def _addr(addr):
    if isinstance(addr, str):
        addr = addr.encode()
    elif not isinstance(addr, bytes):
        raise TypeError("address must be str, not %s" % type(addr).__name__)
    if b"\0" in addr:
        raise AddressError(Result.ERR_ADDR, "address text contains a NUL character")
    return addr


def _uint(value, what, maximum):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an int, not %s" % (what, type(value).__name__))
    if not 0 <= value <= maximum:
        raise InvalidError(Result.ERR_INVALID, "%s must be 0..%d, got %d" % (what, maximum, value))
    return value


_SIZE_MAX = 2 ** (8 * ctypes.sizeof(c_size_t)) - 1
_U32_MAX = 2 ** 32 - 1


def _ms(seconds, what, allow_zero):
    """Seconds (float) to whole milliseconds for a uint32_t, rounding up."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError("%s must be a number of seconds, not %s" % (what, type(seconds).__name__))
    if not (seconds > 0 or (allow_zero and seconds == 0)) or math.isnan(seconds):
        raise InvalidError(Result.ERR_INVALID, "%s must be %s seconds, got %r"
                           % (what, ">= 0" if allow_zero else "> 0 (None: no limit)", seconds))
    ms = max(int(math.ceil(seconds * 1000)), 1 if seconds > 0 else 0)
    if ms > _U32_MAX:
        raise InvalidError(Result.ERR_INVALID, "%s is too long: %r s" % (what, seconds))
    return ms


def _timeout_ms(timeout):
    return 0 if timeout is None else _ms(timeout, "timeout", False)


# --------------------------------------------------------------------------------------------
# Callback plumbing
# --------------------------------------------------------------------------------------------

on_callback_error = None
"""None, or a callable(exc) that receives every exception raised in a netsock callback, instead
of the default report (a traceback on stderr). It runs on the loop thread."""

# thread ident -> the Server whose callback that thread is running now
_running = {}


def _report(exc, where):
    """Reports an exception raised in a callback; never raises."""
    try:
        hook = on_callback_error
        if hook is not None:
            try:
                hook(exc)
                return
            except BaseException as hook_exc:  # report both below
                _print_exc(hook_exc, "netsock.on_callback_error")
        _print_exc(exc, where)
    except BaseException:
        pass


def _print_exc(exc, where):
    stream = sys.stderr
    if stream is None:
        return
    stream.write("netsock: exception in %s callback (the server keeps running):\n" % where)
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=stream)
    stream.flush()


class _InCallback:
    """Marks the current thread as running a callback of `server` (for misuse checks)."""
    __slots__ = ("server", "ident", "prev")

    def __init__(self, server):
        self.server = server

    def __enter__(self):
        self.ident = threading.get_ident()
        self.prev = _running.get(self.ident)
        _running[self.ident] = self.server

    def __exit__(self, *exc):
        if self.prev is None:
            _running.pop(self.ident, None)
        else:
            _running[self.ident] = self.prev
        return False


class Conn:
    """A TCP connection, as passed to ``on_open``/``on_data``/``on_close``/``on_drain``.

    Borrowed: its methods work only during the callback it was passed to (then they raise
    :class:`MisuseError`). ``id`` (an int, unique for the server's lifetime) and ``server`` may be
    kept and used from any thread: ``conn.server.send(conn.id, data)``.
    """

    __slots__ = ("_ptr", "id", "server", "_peer")

    def __init__(self, ptr, server):
        self._ptr = ptr
        self.server = server
        self.id = _lib.ns_conn_id(ptr)
        self._peer = None

    def _p(self):
        if self._ptr is None:
            raise MisuseError(Result.ERR_MISUSE,
                              "Conn used after its callback returned; keep conn.id and use "
                              "Server.send()")
        return self._ptr

    def send(self, data):
        """Queues ``data`` (bytes-like) for the peer. ClosedError once closed; LimitError if
        the connection's output queue is full."""
        data = _bytes(data)
        _check(_lib.ns_conn_send(self._p(), data, len(data)))

    def send_frame(self, data):
        """Sends ``data`` as one message in the server's framing (InvalidError for a line
        containing "\\n")."""
        data = _bytes(data)
        _check(_lib.ns_conn_send_frame(self._p(), data, len(data)))

    def close(self):
        """Closes the connection once what was sent is written; ``on_close`` follows."""
        _check(_lib.ns_conn_close(self._p()))

    @property
    def peer(self):
        """The peer's address text, "127.0.0.1:5000" or "[::1]:5000" ("unix:" for Unix)."""
        if self._peer is None:
            ptr = self._p()
            cap = 64
            while True:
                buf = ctypes.create_string_buffer(cap)
                rc = _lib.ns_conn_peer(ptr, buf, cap)
                if rc != Result.ERR_TRUNCATED or cap >= 4096:
                    break
                cap *= 4
            _check(rc)
            self._peer = buf.value.decode("utf-8", "replace")
        return self._peer

    @property
    def pending(self):
        """Bytes queued on the connection and not yet written."""
        return _lib.ns_conn_pending(self._p())

    def __repr__(self):
        return "<netsock.Conn id=%d%s>" % (self.id, "" if self._ptr else " (expired)")


class Peer:
    """The address of a datagram's sender: a copy, so it may be kept and answered from any
    thread with :meth:`Server.reply`. ``str(peer)`` is its address text. :meth:`parse` makes one
    from text, to send to an address the server never heard from."""

    __slots__ = ("_c", "_text")

    def __init__(self):
        raise TypeError("Peer objects come from udp_serve callbacks or Peer.parse()")

    @classmethod
    def parse(cls, addr):
        """The peer at ``addr``: "1.2.3.4:5000", "[::1]:5000", "[fe80::1%eth0]:5000" or
        "unix:/path" (ns_peer_parse). Never looks up a name: AddressError for names, ":port",
        port 0, "unix:@name" and anything else that is not one address."""
        peer = object.__new__(cls)
        peer._c = _ns_peer()
        _check(_lib.ns_peer_parse(_addr(addr), ctypes.byref(peer._c)))
        peer._text = None
        return peer

    @classmethod
    def _copy(cls, ptr):
        peer = object.__new__(cls)
        peer._c = _ns_peer()
        ctypes.memmove(ctypes.byref(peer._c), ptr, ctypes.sizeof(_ns_peer))
        peer._text = None
        return peer

    def __str__(self):
        if self._text is None:
            buf = ctypes.create_string_buffer(256)
            _check(_lib.ns_peer_format(ctypes.byref(self._c), buf, len(buf)))
            self._text = buf.value.decode("utf-8", "replace")
        return self._text

    def _key(self):
        n = min(self._c._len, ctypes.sizeof(self._c._storage))
        return ctypes.string_at(ctypes.addressof(self._c._storage), n)

    def __eq__(self, other):
        return isinstance(other, Peer) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return "<netsock.Peer %s>" % self


# Servers not yet closed: they (and so their callbacks) stay alive until close().
_servers = set()
_servers_lock = threading.Lock()


class Server:
    """A running TCP or UDP server, from :func:`tcp_serve` or :func:`udp_serve`.

    Usable as a context manager (``close()`` at the end). ``port`` and ``address`` (the bound
    address text, e.g. "127.0.0.1:40123") stay readable after close. Methods may be called from
    any thread; after ``close()`` they raise :class:`ClosedError` (``stop()``/``close()`` do
    nothing).
    """

    def __init__(self, kind, callbacks):
        self.kind = kind  # "tcp" or "udp"
        self.port = 0
        self.address = ""
        self._ptr = None
        self._callbacks = callbacks  # the CFUNCTYPE objects: C holds their addresses
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0  # calls in flight that use _ptr
        self._closing = False
        self._started = threading.Event()
        self._stopped = threading.Event()  # ns_server_wait returned, or closed
        self._closed = threading.Event()  # ns_server_free returned
        self._waiter = None

    # -- internals

    def _start(self, ptr):
        self._ptr = ptr
        buf = ctypes.create_string_buffer(256)
        _check(_lib.ns_server_addr(ptr, buf, len(buf)))
        self.address = buf.value.decode("utf-8", "replace")
        self.port = _lib.ns_server_port(ptr)
        with _servers_lock:
            _servers.add(self)
        self._started.set()

    def _call(self, fn, *args):
        """fn(ptr, *args) while the handle cannot be freed; ClosedError once closed."""
        if not self._started.is_set():  # a callback that came before serve() returned
            self._started.wait()
        with self._lock:
            ptr = self._ptr
            if ptr is None:
                raise ClosedError(Result.ERR_CLOSED, "the server is closed")
            self._busy += 1
        try:
            return fn(ptr, *args)
        finally:
            with self._lock:
                self._busy -= 1
                if not self._busy:
                    self._idle.notify_all()

    def _in_own_callback(self):
        return _running.get(threading.get_ident()) is self

    # -- public

    def send(self, conn_id, data):
        """Queues ``data`` for the TCP connection ``conn_id`` (from any thread). ClosedError
        if that connection is not open or the server stopped; LimitError (nothing queued) if
        the output queued for it, with the sends still waiting for its loop, would pass its
        write buffer limit. What was accepted is delivered in order unless the connection
        ends."""
        conn_id = _uint(conn_id, "conn_id", 2 ** 64 - 1)
        data = _bytes(data)
        _check(self._call(_lib.ns_server_send, conn_id, data, len(data)))

    def send_frame(self, conn_id, data):
        """Like :meth:`send`, as one message in the server's framing."""
        conn_id = _uint(conn_id, "conn_id", 2 ** 64 - 1)
        data = _bytes(data)
        _check(self._call(_lib.ns_server_send_frame, conn_id, data, len(data)))

    def reply(self, peer, data):
        """Sends one datagram from this UDP server to ``peer`` (a :class:`Peer`), from any
        thread. LimitError if it is too large or the socket buffer is full."""
        if not isinstance(peer, Peer):
            raise TypeError("peer must be a netsock.Peer, not %s" % type(peer).__name__)
        data = _bytes(data)
        _check(self._call(_lib.ns_udp_reply, ctypes.byref(peer._c), data, len(data)))

    def stats(self):
        """The server's counters since it started, as a dict (see ns_stats)."""
        st = _ns_stats()
        st.size = ctypes.sizeof(_ns_stats)
        _check(self._call(_lib.ns_server_stats, ctypes.byref(st)))
        filled = st.size
        out = {}
        for name, _type in _ns_stats._fields_[2:]:
            field = getattr(_ns_stats, name)
            if field.offset + field.size <= filled:
                out[name] = getattr(st, name)
        return out

    def stop(self):
        """Asks the server to stop and returns at once (any thread, repeatable): it stops
        accepting and every open connection gets on_close(ERR_STOPPED)."""
        try:
            self._call(_lib.ns_server_stop)  # sets no ns_last_error; fails only for NULL
        except ClosedError:
            pass

    def wait(self, timeout=None):
        """Blocks until the server has stopped (after :meth:`stop` from another thread or a
        signal handler) and its last callback returned, or ``timeout`` seconds passed. Returns
        True if it stopped. Interruptible (Ctrl-C). MisuseError inside its own callbacks."""
        if self._in_own_callback():
            raise MisuseError(Result.ERR_MISUSE,
                              "Server.wait() inside one of the server's own callbacks")
        with self._lock:
            if self._ptr is not None and self._waiter is None and not self._stopped.is_set():
                # ns_server_wait blocks in C, where Ctrl-C cannot reach: a helper thread waits
                self._busy += 1
                self._waiter = threading.Thread(target=self._wait_thread, args=(self._ptr,),
                                                name="netsock-wait", daemon=True)
                self._waiter.start()
        return self._stopped.wait(timeout)

    def _wait_thread(self, ptr):
        try:
            _lib.ns_server_wait(ptr)
        finally:
            self._stopped.set()
            with self._lock:
                self._busy -= 1
                if not self._busy:
                    self._idle.notify_all()

    def close(self):
        """Stops the server, waits for its last callback, frees it and drops its callbacks.
        Idempotent. Inside one of its own callbacks it cannot wait: the server is stopped and a
        helper thread frees it after the callback returns."""
        own = self._in_own_callback()
        with self._lock:
            first = not self._closing
            self._closing = True
            ptr, self._ptr = self._ptr, None
        if first and ptr is not None:
            _lib.ns_server_stop(ptr)
            if own:
                threading.Thread(target=self._finish, args=(ptr,), name="netsock-close").start()
            else:
                self._finish(ptr)
        elif not own:
            self._closed.wait()  # another thread is closing it: return once it is done

    def _abandon(self):
        """Marks a server that never started as closed."""
        self._closing = True
        self._started.set()
        self._stopped.set()
        self._closed.set()

    def _finish(self, ptr):
        with self._lock:
            while self._busy:  # other threads' calls (and the waiter) end once it stopped
                self._idle.wait()
        _lib.ns_server_free(ptr)
        self._callbacks = None
        self._stopped.set()
        with _servers_lock:
            _servers.discard(self)
        self._closed.set()

    @property
    def closed(self):
        return self._closing

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return "<netsock.Server %s %s%s>" % (self.kind, self.address,
                                             " (closed)" if self._closing else "")


@atexit.register
def _close_all():
    # Loop threads must not call into Python while the interpreter finalizes.
    with _servers_lock:
        servers = list(_servers)
    for server in servers:
        try:
            server.close()
        except BaseException:
            pass


def _options(setters):
    opts = _lib.ns_options_new()
    if not opts:
        raise MemoryError("ns_options_new failed")
    try:
        for fn, value in setters:
            _check(fn(opts, value))
    except BaseException:
        _lib.ns_options_free(opts)
        raise
    return opts


def tcp_serve(addr, on_data, *, on_open=None, on_close=None, on_drain=None, threads=1,
              framing=FRAMING_RAW, max_frame=None, idle_timeout=None, max_conns=None,
              drain_timeout=None, max_write_buffer=None, backlog=None, nodelay=None,
              keepalive=None):
    """Starts a TCP server on ``addr`` ("127.0.0.1:6666", "[::1]:0", "unix:/path", ...) and
    returns the :class:`Server` once it listens.

    ``on_data(conn, data)``: each chunk read (raw framing) or each whole message without its
    framing (``FRAMING_LINE``, ``FRAMING_LEN32``), as bytes. ``on_open(conn)`` before any data,
    ``on_close(conn, reason)`` exactly once per connection with a :class:`Result` (``OK`` for an
    orderly close, ``ERR_STOPPED``, ``ERR_RESET``, ``ERR_TIMEOUT``, ``ERR_LIMIT``, ...),
    ``on_drain(conn)`` when a long output queue has drained. They run on netsock's loop
    threads; ``conn`` is a :class:`Conn` valid during the call only.

    ``threads``: loop threads (0: one per core). ``max_frame`` (bytes, default 1 MiB) for
    framed connections; ``idle_timeout`` and ``drain_timeout`` in seconds (None: off);
    ``max_conns`` (None: no limit); ``max_write_buffer`` (bytes, default 8 MiB), ``backlog``,
    ``nodelay`` (default True), ``keepalive`` (idle seconds, None: off).
    """
    if not callable(on_data):
        raise TypeError("on_data must be callable")
    for name, cb in (("on_open", on_open), ("on_close", on_close), ("on_drain", on_drain)):
        if cb is not None and not callable(cb):
            raise TypeError("%s must be callable or None" % name)
    addr = _addr(addr)

    setters = [(_lib.ns_options_set_threads, _uint(threads, "threads", _SIZE_MAX)),
               (_lib.ns_options_set_framing, _uint(framing, "framing", 2**31 - 1))]
    if max_frame is not None:
        setters.append((_lib.ns_options_set_max_frame, _uint(max_frame, "max_frame", _SIZE_MAX)))
    if max_write_buffer is not None:
        setters.append((_lib.ns_options_set_max_write_buffer,
                        _uint(max_write_buffer, "max_write_buffer", _SIZE_MAX)))
    if max_conns is not None:
        setters.append((_lib.ns_options_set_max_conns, _uint(max_conns, "max_conns", _SIZE_MAX)))
    if idle_timeout is not None:
        setters.append((_lib.ns_options_set_idle_timeout_ms,
                        _ms(idle_timeout, "idle_timeout", True)))
    if drain_timeout is not None:
        setters.append((_lib.ns_options_set_drain_timeout_ms,
                        _ms(drain_timeout, "drain_timeout", True)))
    if backlog is not None:
        setters.append((_lib.ns_options_set_backlog, _uint(backlog, "backlog", 2**31 - 1)))
    if nodelay is not None:
        setters.append((_lib.ns_options_set_nodelay, bool(nodelay)))
    if keepalive is not None:
        setters.append((_lib.ns_options_set_keepalive, _uint(keepalive, "keepalive", _U32_MAX)))

    server = Server("tcp", None)

    def data_cb(conn_p, data_p, length, _user):
        conn = None
        with _InCallback(server):
            try:
                conn = Conn(conn_p, server)
                on_data(conn, ctypes.string_at(data_p, length))
            except BaseException as exc:
                _report(exc, "on_data")
                _lib.ns_conn_close(conn_p)
            finally:
                if conn is not None:
                    conn._ptr = None

    def open_cb(conn_p, _user):
        conn = None
        with _InCallback(server):
            try:
                conn = Conn(conn_p, server)
                on_open(conn)
            except BaseException as exc:
                _report(exc, "on_open")
                _lib.ns_conn_close(conn_p)
            finally:
                if conn is not None:
                    conn._ptr = None

    def close_cb(conn_p, reason, _user):
        conn = None
        with _InCallback(server):
            try:
                conn = Conn(conn_p, server)
                on_close(conn, _result(reason))
            except BaseException as exc:
                _report(exc, "on_close")
            finally:
                if conn is not None:
                    conn._ptr = None

    def drain_cb(conn_p, _user):
        conn = None
        with _InCallback(server):
            try:
                conn = Conn(conn_p, server)
                on_drain(conn)
            except BaseException as exc:
                _report(exc, "on_drain")
            finally:
                if conn is not None:
                    conn._ptr = None

    callbacks = {"on_data": _DATA_CB(data_cb)}
    if on_open is not None:
        callbacks["on_open"] = _OPEN_CB(open_cb)
        setters.append((_lib.ns_options_set_on_open, callbacks["on_open"]))
    if on_close is not None:
        callbacks["on_close"] = _CLOSE_CB(close_cb)
        setters.append((_lib.ns_options_set_on_close, callbacks["on_close"]))
    if on_drain is not None:
        callbacks["on_drain"] = _DRAIN_CB(drain_cb)
        setters.append((_lib.ns_options_set_on_drain, callbacks["on_drain"]))
    server._callbacks = callbacks

    opts = _options(setters)
    try:
        out = _server_p()
        rc = _lib.ns_tcp_serve(addr, callbacks["on_data"], None, opts, ctypes.byref(out))
        if rc < 0:
            err = _error(rc)
            server._abandon()
            raise err
    finally:
        _lib.ns_options_free(opts)  # copied by serve
    _start_or_free(server, out)
    return server


def _start_or_free(server, out):
    try:
        server._start(out)
    except BaseException:
        _lib.ns_server_free(out)
        server._abandon()
        raise


def udp_serve(addr, on_datagram, *, threads=1):
    """Starts a UDP server on ``addr`` and returns the :class:`Server` once it is bound.

    ``on_datagram(server, peer, data)`` runs on a loop thread for each datagram: ``peer`` is a
    :class:`Peer` (a copy: keep it to answer later), ``data`` bytes. Answer with
    ``server.reply(peer, data)``, from there or from any thread.
    """
    if not callable(on_datagram):
        raise TypeError("on_datagram must be callable")
    addr = _addr(addr)
    setters = [(_lib.ns_options_set_threads, _uint(threads, "threads", _SIZE_MAX))]
    server = Server("udp", None)

    def datagram_cb(_srv_p, peer_p, data_p, length, _user):
        with _InCallback(server):
            try:
                on_datagram(server, Peer._copy(peer_p), ctypes.string_at(data_p, length))
            except BaseException as exc:
                _report(exc, "on_datagram")

    callbacks = {"on_datagram": _DATAGRAM_CB(datagram_cb)}
    server._callbacks = callbacks
    opts = _options(setters)
    try:
        out = _server_p()
        rc = _lib.ns_udp_serve(addr, callbacks["on_datagram"], None, opts, ctypes.byref(out))
        if rc < 0:
            err = _error(rc)
            server._abandon()
            raise err
    finally:
        _lib.ns_options_free(opts)
    _start_or_free(server, out)
    return server


# --------------------------------------------------------------------------------------------
# Clients (blocking; they release the GIL while they wait)
# --------------------------------------------------------------------------------------------


def _exchange(fn, addr, data, reply_cap, timeout, *extra):
    addr = _addr(addr)
    data = _bytes(data)
    reply_cap = _uint(reply_cap, "reply_cap", _SIZE_MAX)
    ms = _timeout_ms(timeout)
    reply = ctypes.create_string_buffer(reply_cap) if reply_cap else None
    reply_len = c_size_t(0)
    rc = fn(addr, data, len(data), reply, reply_cap, ctypes.byref(reply_len), ms, *extra)
    if rc == Result.ERR_TRUNCATED:
        detail = _last_error()
        n = min(reply_len.value, reply_cap)
        raise TruncatedError(Result.ERR_TRUNCATED, detail, reply.raw[:n] if reply else b"")
    _check(rc)
    return reply.raw[:reply_len.value] if reply else b""


def tcp_send(addr, data, reply_cap=65536, timeout=5.0):
    """The classic one-shot client: connects to ``addr``, sends ``data``, shuts down its
    sending side and returns the reply read until the server closes (bytes). ``timeout``
    (seconds, None: none) bounds the whole exchange. TruncatedError (with ``.data``, the first
    ``reply_cap`` bytes) if the reply is longer; RefusedError, NetsockTimeout, ResetError,
    AddressError."""
    return _exchange(_lib.ns_tcp_send, addr, data, reply_cap, timeout)


def tcp_request(addr, data, framing, reply_cap=65536, timeout=5.0):
    """Sends ``data`` as one message in ``framing`` (FRAMING_LINE or FRAMING_LEN32) and returns
    one whole reply message without its framing, without needing the server to close.
    ClosedError if the server closed first; otherwise like :func:`tcp_send`."""
    framing = _uint(framing, "framing", 2**31 - 1)
    return _exchange(_lib.ns_tcp_request, addr, data, reply_cap, timeout, framing)


def udp_send(addr, data):
    """Sends one datagram to ``addr`` without waiting for a reply."""
    addr = _addr(addr)
    data = _bytes(data)
    _check(_lib.ns_udp_send(addr, data, len(data)))


def udp_request(addr, data, reply_cap=65536, timeout=5.0):
    """Sends one datagram to ``addr`` and returns the first reply datagram from that address.
    NetsockTimeout if none came in time; RefusedError if the host reports nobody listens;
    TruncatedError (with ``.data``) if the reply is longer than ``reply_cap``."""
    return _exchange(_lib.ns_udp_request, addr, data, reply_cap, timeout)
