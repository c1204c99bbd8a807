"""netsock for Python: TCP and UDP servers and clients over libnetsock, with ctypes.

No compile step and nothing beyond the standard library (Python 3.8+)::

    import netsock

    def on_data(conn, data):          # runs on a netsock loop thread
        conn.send(data)               # echo

    with netsock.tcp_serve("127.0.0.1:0", on_data) as server:
        print(netsock.tcp_send(server.address, b"hi"))      # b'hi'

What the C API has, this package has: servers (:func:`tcp_serve`, :func:`udp_serve`),
persistent clients (:func:`tcp_connect`, blocking or ``async_``, with ``reconnect``), loops
(:class:`Loop`: a whole program on one thread with ``run_in_wait``; tasks and timers), every
framing (:class:`Framing`), limits and stats, the one-shot clients (:func:`tcp_send`,
:func:`tcp_request`, :func:`udp_send`, :func:`udp_request`), and the library's diagnostics as
records of the ``logging`` logger ``"netsock"`` (:func:`set_log_level`). Every handle is a
context manager. Durations are seconds (floats), rounded up to whole milliseconds.

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
  takes the GIL for them), or on the thread in :meth:`Loop.run` for a ``run_in_wait`` loop.
  With ``threads=1`` (the default) a server's callbacks run one at a time; with more,
  callbacks of different connections (or datagrams) run on several threads at once, so guard
  shared state with a lock. A callback that blocks stalls its loop thread.
* The :class:`Conn` a callback receives is borrowed: it works only during that callback. To
  reach the connection later or from another thread, keep ``conn.id`` and use
  :meth:`Server.send` or :meth:`Server.post` (or the :class:`Client`'s methods). A
  :class:`Peer` (UDP) is a copy: keep it and :meth:`Server.reply` from any thread.
* An exception raised in a callback never reaches C: it is reported (to
  :data:`on_callback_error` if set, else as a traceback on stderr) and the loop keeps running.
  An exception in ``on_open``, ``on_data`` or ``on_timer`` also closes that connection (after
  what was already sent is flushed). Ctrl-C landing in a callback run by :meth:`Loop.run`
  stops that loop and is raised by ``run()``.
* A server, client or loop keeps its callbacks (and itself) alive until its ``close()``, the
  end of its ``with`` block, or interpreter exit: dropping the last reference does not stop it.
* Inside callbacks of its own loop, :meth:`Server.wait` raises :class:`MisuseError`, and
  ``close()`` cannot wait for the loop it runs on: it stops the handle and finishes freeing it
  on a helper thread once the callback has returned. Prefer calling both from outside.
"""

from __future__ import annotations

import atexit
import ctypes
import enum
import itertools
import logging
import math
import os
import signal
import sys
import threading
import traceback
from types import FrameType
from typing import (Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple, Type, TypeVar,
                    Union)

from . import _capi
from ._capi import LIBRARY_PATH

__version__ = "0.1.0"  # the package's version: the netsock release it was written with

__all__ = [
    "Error", "InvalidError", "AddressError", "AddressInUseError", "RefusedError",
    "NetsockTimeout", "ClosedError", "TruncatedError", "LimitError", "NetsockIOError",
    "ResetError", "StoppedError", "PanicError", "MisuseError", "TlsError", "Tls",
    "Result", "CloseReason", "Framing", "LogLevel", "LengthField",
    "FRAMING_RAW", "FRAMING_LINE", "FRAMING_LEN32", "FRAMING_DELIMITER", "FRAMING_LENGTH_FIELD",
    "FRAMING_FIXED",
    "Conn", "Peer", "Server", "Client", "Loop",
    "tcp_serve", "udp_serve", "tcp_connect", "tcp_send", "tcp_request", "udp_send",
    "udp_request", "version", "strerror", "set_log_level", "logger", "on_callback_error",
    "ERRORS", "LIBRARY_PATH",
]

_lib: Any = _capi.lib


def version() -> str:
    """The library's version, e.g. "0.1.0" (``ns_version()``)."""
    return str(_lib.ns_version().decode())


if int(version().split(".")[0]) != _capi.ABI_MAJOR:
    raise ImportError("netsock: %s is version %s; this package needs %d.x"
                      % (LIBRARY_PATH, version(), _capi.ABI_MAJOR))

# --------------------------------------------------------------------------------------------
# Constants and errors
# --------------------------------------------------------------------------------------------


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
    ERR_TLS = -14


CloseReason = Result
"""Why a connection ended (``on_close``): ``OK`` for an orderly close, else an error code."""

OK = Result.OK
ERR_INVALID = Result.ERR_INVALID
ERR_ADDR = Result.ERR_ADDR
ERR_ADDR_IN_USE = Result.ERR_ADDR_IN_USE
ERR_REFUSED = Result.ERR_REFUSED
ERR_TIMEOUT = Result.ERR_TIMEOUT
ERR_CLOSED = Result.ERR_CLOSED
ERR_TRUNCATED = Result.ERR_TRUNCATED
ERR_LIMIT = Result.ERR_LIMIT
ERR_IO = Result.ERR_IO
ERR_RESET = Result.ERR_RESET
ERR_STOPPED = Result.ERR_STOPPED
ERR_PANIC = Result.ERR_PANIC
ERR_MISUSE = Result.ERR_MISUSE
ERR_TLS = Result.ERR_TLS
__all__ += list(Result.__members__)


class Framing(enum.IntEnum):
    """How a TCP byte stream is cut into messages (ns_framing)."""
    RAW = 0           # on_data gets bytes as they were read (the default)
    LINE = 1          # one message per "\n"-terminated line (without it; a "\r" before it dropped)
    LEN32 = 2         # a 4-byte big-endian length, then that many bytes
    DELIMITER = 3     # messages ending with ``delimiter=`` (default b"\r\n"), delivered without it
    LENGTH_FIELD = 4  # frames with a length field in their header (``length_field=``), whole
    FIXED = 5         # messages of exactly ``fixed_size=`` bytes


FRAMING_RAW = Framing.RAW
FRAMING_LINE = Framing.LINE
FRAMING_LEN32 = Framing.LEN32
FRAMING_DELIMITER = Framing.DELIMITER
FRAMING_LENGTH_FIELD = Framing.LENGTH_FIELD
FRAMING_FIXED = Framing.FIXED


class LengthField(NamedTuple):
    """The length field of ``Framing.LENGTH_FIELD``: ``size`` bytes (1, 2, 4, 8; 0 for a LEB128
    varint) at ``offset`` give a length L; the frame is ``offset + size + L + adjust`` bytes.
    DNS over TCP is ``LengthField(0, 2)``, PostgreSQL ``LengthField(1, 4, adjust=-4)``, MQTT
    ``LengthField(1, 0)``."""
    offset: int
    size: int
    little_endian: bool = False
    adjust: int = 0


LengthFieldSpec = Union[LengthField, Tuple[int, int], Tuple[int, int, bool],
                        Tuple[int, int, bool, int]]


class LogLevel(enum.IntEnum):
    """The library's log levels (ns_log_level); :func:`set_log_level` takes ``logging``'s."""
    OFF = 0
    ERROR = 1
    WARN = 2
    INFO = 3
    DEBUG = 4


def strerror(code: int) -> str:
    """The name and meaning of a result code, e.g. "NS_ERR_TIMEOUT: timed out"."""
    return str(_lib.ns_strerror(int(code)).decode("utf-8", "replace"))


def _result(code: int) -> Result:
    try:
        return Result(code)
    except ValueError:
        return code  # type: ignore[return-value]  # a code newer than this package: kept as is


class Error(Exception):
    """A failed netsock call. ``code`` is the ns_result (negative int), ``name`` its name
    ("NS_ERR_ADDR"), ``detail`` the ``ns_last_error()`` text of the failure ("" if none)."""

    def __init__(self, code: int, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        text = strerror(code)
        self.name = text.split(":", 1)[0]
        super().__init__("%s: %s" % (self.name, detail) if detail else text)

    def __reduce__(self) -> Tuple[Any, ...]:
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
    """NS_ERR_CLOSED: the connection is closed or unknown, or the handle stopped or closed."""


class TruncatedError(Error):
    """NS_ERR_TRUNCATED: the reply did not fit ``reply_cap``; ``data`` holds its first bytes."""

    def __init__(self, code: int = Result.ERR_TRUNCATED, detail: str = "",
                 data: bytes = b"") -> None:
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


class TlsError(Error):
    """NS_ERR_TLS: a bad certificate or key, a failed handshake or verification, a TLS alert
    (the detail names the reason)."""


ERRORS: Dict[int, Type[Error]] = {
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
    Result.ERR_TLS: TlsError,
}
"""Result code -> Error subclass."""


def _last_error() -> str:
    text = _lib.ns_last_error()
    return text.decode("utf-8", "replace") if text else ""


def _error(code: int, detail: Optional[str] = None) -> Error:
    """The exception for a failed call, with this thread's ns_last_error() unless given."""
    if detail is None:
        detail = _last_error()
    return ERRORS.get(code, Error)(_result(code), detail)


def _check(rc: int) -> int:
    """Raises the Error subclass for a negative result code; call it right after the C call,
    on the same thread (the detail is that thread's ns_last_error())."""
    if rc < 0:
        raise _error(rc)
    return rc


# --------------------------------------------------------------------------------------------
# Argument conversion
# --------------------------------------------------------------------------------------------

Buffer = Union[bytes, bytearray, memoryview]


def _bytes(data: Buffer, what: str = "data") -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        raise TypeError("%s must be bytes-like, not str (encode it first)" % what)
    try:
        return memoryview(data).tobytes()
    except TypeError:
        raise TypeError("%s must be bytes-like, not %s" % (what, type(data).__name__)) from None


def _addr(addr: Union[str, bytes]) -> bytes:
    if isinstance(addr, str):
        addr = addr.encode()
    elif not isinstance(addr, bytes):
        raise TypeError("address must be str, not %s" % type(addr).__name__)
    if b"\0" in addr:
        raise AddressError(Result.ERR_ADDR, "address text contains a NUL character")
    return addr


def _uint(value: int, what: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an int, not %s" % (what, type(value).__name__))
    if not 0 <= value <= maximum:
        raise InvalidError(Result.ERR_INVALID, "%s must be 0..%d, got %d" % (what, maximum, value))
    return int(value)


_SIZE_MAX = 2 ** (8 * ctypes.sizeof(ctypes.c_size_t)) - 1
_U32_MAX = 2 ** 32 - 1
_U64_MAX = 2 ** 64 - 1


def _ms(seconds: float, what: str, allow_zero: bool) -> int:
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


def _timeout_ms(timeout: Optional[float]) -> int:
    return 0 if timeout is None else _ms(timeout, "timeout", False)


def _callable(cb: Any, what: str, required: bool = False) -> None:
    if cb is None and not required:
        return
    if not callable(cb):
        raise TypeError("%s must be callable%s" % (what, "" if required else " or None"))


# --------------------------------------------------------------------------------------------
# Callback plumbing
# --------------------------------------------------------------------------------------------
# C calls back through a few module-level trampolines that live as long as the process, so a
# late callback can never reach a freed ctypes thunk. Each carries a token (the `user` pointer)
# that names its Python target in _handles; a token whose target is gone is ignored.

on_callback_error: Optional[Callable[[BaseException], Any]] = None
"""None, or a callable(exc) that receives every exception raised in a netsock callback, instead
of the default report (a traceback on stderr). It runs on the loop thread."""

_handles: Dict[int, Any] = {}
_next_token = itertools.count(1)


def _register(target: Any) -> int:
    token = next(_next_token)
    _handles[token] = target
    return token


# thread ident -> keys of the loops whose callbacks that thread is running, innermost last
_running: Dict[int, List[object]] = {}


class _InCallback:
    """Marks the current thread as running a callback of the loop named by `key` (a Loop, or
    the Server or Client that has loops of its own), for misuse checks."""
    __slots__ = ("key", "ident")

    def __init__(self, key: object) -> None:
        self.key = key
        self.ident = 0

    def __enter__(self) -> None:
        self.ident = threading.get_ident()
        stack = _running.get(self.ident)
        if stack is None:
            stack = _running[self.ident] = []
        stack.append(self.key)

    def __exit__(self, *exc: object) -> None:
        stack = _running.get(self.ident)
        if stack:
            stack.pop()
            if not stack:
                _running.pop(self.ident, None)


def _in_callback(key: Optional[object] = None) -> bool:
    """True inside a netsock callback (of the loop named by `key`, if given)."""
    stack = _running.get(threading.get_ident())
    if not stack:
        return False
    return key is None or any(k is key for k in stack)


class _Run:
    """A Loop.run() running loop 0 on this thread: Ctrl-C in one of its callbacks stops it."""
    __slots__ = ("ptr", "exc")

    def __init__(self, ptr: Any) -> None:
        self.ptr = ptr
        self.exc: Optional[BaseException] = None


# thread ident -> the Loop.run() calls running a loop on that thread, innermost last
_runs: Dict[int, List[_Run]] = {}


def _report(exc: BaseException, where: str) -> None:
    """Reports an exception raised in a callback; never raises."""
    try:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            runs = _runs.get(threading.get_ident())
            if runs:
                run = runs[-1]
                if run.exc is None:
                    run.exc = exc
                _lib.ns_loop_stop(run.ptr)
                return
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


def _print_exc(exc: BaseException, where: str) -> None:
    stream = sys.stderr
    if stream is None:
        return
    stream.write("netsock: exception in %s callback (the loop keeps running):\n" % where)
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=stream)
    stream.flush()


DataCallback = Callable[["Conn", bytes], Any]
ConnCallback = Callable[["Conn"], Any]
CloseCallback = Callable[["Conn", Result], Any]
ConnTask = Callable[[Optional["Conn"]], Any]
Task = Callable[[], Any]
DatagramCallback = Callable[["Server", "Peer", bytes], Any]


class _Stream:
    """The connection callbacks of a server or client, found by their token."""
    __slots__ = ("owner", "key", "on_data", "on_open", "on_close", "on_drain", "on_timer",
                 "users")

    def __init__(self, owner: Union["Server", "Client"], on_data: Optional[DataCallback],
                 on_open: Optional[ConnCallback], on_close: Optional[CloseCallback],
                 on_drain: Optional[ConnCallback], on_timer: Optional[ConnCallback]) -> None:
        self.owner = owner
        self.key: object = owner._key
        self.on_data = on_data
        self.on_open = on_open
        self.on_close = on_close
        self.on_drain = on_drain
        self.on_timer = on_timer
        self.users: Dict[int, Any] = {}  # Conn.user of each open connection, by id


def _conn_event(conn_p: int, token: int, where: str, close_on_error: bool, *args: Any) -> None:
    """Every connection callback: ``where`` names it; ``args`` follow the connection. An
    exception is reported, never raised into C (and closes the connection if asked)."""
    try:
        st = _handles.get(token)
        if st is None:
            return
        conn = None
        with _InCallback(st.key):
            try:
                conn = Conn(conn_p, st)
                cb = getattr(st, where)
                if cb is not None:
                    cb(conn, *args)
            except BaseException as exc:
                _report(exc, where)
                if close_on_error:
                    _lib.ns_conn_close(conn_p)
            finally:
                if conn is not None:
                    conn._ptr = None
                    if where == "on_close":
                        st.users.pop(conn.id, None)
            if where in ("on_open", "on_close") and isinstance(st.owner, Client):
                st.owner._note(where == "on_open")
    except BaseException as exc:
        _report(exc, where)


def _data_trampoline(conn_p: int, data_p: int, length: int, token: int) -> None:
    _conn_event(conn_p, token, "on_data", True, ctypes.string_at(data_p, length))


def _open_trampoline(conn_p: int, token: int) -> None:
    _conn_event(conn_p, token, "on_open", True)


def _drain_trampoline(conn_p: int, token: int) -> None:
    _conn_event(conn_p, token, "on_drain", False)


def _timer_trampoline(conn_p: int, token: int) -> None:
    _conn_event(conn_p, token, "on_timer", True)


def _close_trampoline(conn_p: int, reason: int, token: int) -> None:
    _conn_event(conn_p, token, "on_close", False, _result(reason))


def _conn_task_trampoline(conn_p: Optional[int], token: int) -> None:
    try:
        entry = _handles.pop(token, None)
        if entry is None:
            return
        st, fn = entry
        conn = None
        with _InCallback(st.key):
            try:
                if conn_p:
                    conn = Conn(conn_p, st)
                fn(conn)
            except BaseException as exc:
                _report(exc, "posted task")
            finally:
                if conn is not None:
                    conn._ptr = None
    except BaseException as exc:
        _report(exc, "posted task")


def _task_trampoline(token: int) -> None:
    try:
        entry = _handles.pop(token, None)
        if entry is None:
            return
        key, fn = entry
        with _InCallback(key):
            try:
                fn()
            except BaseException as exc:
                _report(exc, "posted task")
    except BaseException as exc:
        _report(exc, "posted task")


class _Timer:
    __slots__ = ("loop", "fn", "repeat")

    def __init__(self, loop: "Loop", fn: Task, repeat: bool) -> None:
        self.loop = loop
        self.fn = fn
        self.repeat = repeat


def _loop_timer_trampoline(timer_id: int, token: int) -> None:
    try:
        timer = _handles.get(token)
        if timer is None:
            return
        if not timer.repeat:  # a one-shot runs once: forget it
            _handles.pop(token, None)
            timer.loop._timers.pop(timer_id, None)
        with _InCallback(timer.loop._key):
            try:
                timer.fn()
            except BaseException as exc:
                _report(exc, "timer")
    except BaseException as exc:
        _report(exc, "timer")


def _datagram_trampoline(_srv_p: int, peer_p: int, data_p: int, length: int,
                         token: int) -> None:
    try:
        entry = _handles.get(token)
        if entry is None:
            return
        server, on_datagram = entry
        with _InCallback(server._key):
            try:
                on_datagram(server, Peer._copy(peer_p), ctypes.string_at(data_p, length))
            except BaseException as exc:
                _report(exc, "on_datagram")
    except BaseException as exc:
        _report(exc, "on_datagram")


_T_DATA = _capi.DATA_CB(_data_trampoline)
_T_OPEN = _capi.OPEN_CB(_open_trampoline)
_T_CLOSE = _capi.CLOSE_CB(_close_trampoline)
_T_DRAIN = _capi.DRAIN_CB(_drain_trampoline)
_T_CONN_TIMER = _capi.CONN_TIMER_CB(_timer_trampoline)
_T_CONN_TASK = _capi.CONN_TASK_CB(_conn_task_trampoline)
_T_TASK = _capi.TASK_CB(_task_trampoline)
_T_TIMER = _capi.TIMER_CB(_loop_timer_trampoline)
_T_DATAGRAM = _capi.DATAGRAM_CB(_datagram_trampoline)

# Buffers lent to the owned sends, by token, until netsock releases them (on a loop thread).
_lent: Dict[int, Any] = {}
_lent_lock = threading.Lock()


def _release_trampoline(_data_p: int, token: int) -> None:
    with _lent_lock:
        _lent.pop(token, None)


_T_RELEASE = _capi.FREE_CB(_release_trampoline)


def _send_owned(call: Callable[..., int], data: Buffer) -> None:
    """Lends ``data`` to a ``ns_*_send_owned`` call (``call(ptr, len, free_fn, user)``): bytes
    and writable buffers (bytearray, a writable memoryview, numpy arrays...) are sent from where
    they are, and stay referenced (a writable one also locked against resizing) until netsock
    releases them; other read-only buffers are copied once into bytes first."""
    holder: Any
    if isinstance(data, bytes):
        holder = data
        ptr = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
        n = len(data)
    else:
        if isinstance(data, str):
            raise TypeError("data must be bytes-like, not str (encode it first)")
        try:
            view = memoryview(data).cast("B")
        except TypeError:
            raise TypeError("data must be bytes-like, not %s" % type(data).__name__) from None
        n = view.nbytes
        if view.readonly:
            holder = view.tobytes()
            ptr = ctypes.cast(ctypes.c_char_p(holder), ctypes.c_void_p).value
        else:
            holder = (ctypes.c_char * n).from_buffer(view) if n else view
            ptr = ctypes.addressof(holder) if n else None
    token = next(_next_token)
    with _lent_lock:
        _lent[token] = holder
    rc: int = Result.ERR_CLOSED
    try:
        rc = call(ptr, n, _T_RELEASE, token)
    finally:
        if rc != Result.OK:
            with _lent_lock:  # refused: netsock will not release it
                _lent.pop(token, None)
    _check(rc)

# --------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------

logger = logging.getLogger("netsock")
"""The logger that receives the library's diagnostics (see :func:`set_log_level`)."""

_PY_LEVELS: Dict[int, int] = {LogLevel.ERROR: logging.ERROR, LogLevel.WARN: logging.WARNING,
              LogLevel.INFO: logging.INFO, LogLevel.DEBUG: logging.DEBUG}


def _log_trampoline(level: int, msg: Optional[bytes]) -> None:
    try:
        text = msg.decode("utf-8", "replace") if msg else ""
        logger.log(_PY_LEVELS.get(level, logging.ERROR), "%s", text)
    except BaseException:
        pass


_T_LOG = _capi.LOG_CB(_log_trampoline)
_NO_LOG = _capi.LOG_CB()  # NULL


def set_log_level(level: Optional[int]) -> None:
    """Sends the library's diagnostics at ``level`` (a ``logging`` level) and above to the
    logger ``"netsock"``; None turns them off. Set at import to that logger's effective level
    (WARNING unless configured), so ``logging.basicConfig(level=logging.DEBUG)`` before
    ``import netsock`` shows everything. The level filters in C: messages below it cost
    nothing, where the logger's own level would filter only after the call into Python."""
    if level is not None and (isinstance(level, bool) or not isinstance(level, int)):
        raise TypeError("level must be a logging level (int) or None")
    if level is None or level > logging.CRITICAL:
        _check(_lib.ns_set_log(_NO_LOG, LogLevel.OFF))
        return
    if level >= logging.ERROR:
        ns = LogLevel.ERROR
    elif level >= logging.WARNING:
        ns = LogLevel.WARN
    elif level >= logging.INFO:
        ns = LogLevel.INFO
    else:
        ns = LogLevel.DEBUG
    _check(_lib.ns_set_log(_T_LOG, ns))


set_log_level(logger.getEffectiveLevel())

# --------------------------------------------------------------------------------------------
# Connections and peers
# --------------------------------------------------------------------------------------------


class Conn:
    """A TCP connection, as passed to the callbacks of a server or client.

    Borrowed: its methods work only during the callback it was passed to (then they raise
    :class:`MisuseError`). ``id`` (an int, unique for the server's lifetime) and ``server`` or
    ``client`` may be kept and used from any thread: ``conn.server.send(conn.id, data)``.
    """

    __slots__ = ("_ptr", "id", "_stream", "_peer")

    def __init__(self, ptr: int, stream: _Stream) -> None:
        self._ptr: Optional[int] = ptr
        self._stream = stream
        self.id: int = _lib.ns_conn_id(ptr)
        self._peer: Optional[str] = None

    def _p(self) -> int:
        if self._ptr is None:
            raise MisuseError(Result.ERR_MISUSE,
                              "Conn used after its callback returned; keep conn.id and use "
                              "Server.send() or Server.post()")
        return self._ptr

    @property
    def server(self) -> Optional["Server"]:
        """The server of this connection (None for a client's)."""
        owner = self._stream.owner
        return owner if isinstance(owner, Server) else None

    @property
    def client(self) -> Optional["Client"]:
        """The client of this connection (None for a server's)."""
        owner = self._stream.owner
        return owner if isinstance(owner, Client) else None

    def send(self, data: Buffer) -> None:
        """Queues ``data`` (bytes-like) for the peer. ClosedError once closed; LimitError if
        the connection's output queue is full."""
        data = _bytes(data)
        _check(_lib.ns_conn_send(self._p(), data, len(data)))

    def send_owned(self, data: Buffer) -> None:
        """Sends ``data`` without copying it (bytes, or a writable buffer such as a bytearray,
        which must not change until written): netsock writes from it and lets go of it once
        written or when the connection ends. Refused (ClosedError, LimitError) as :meth:`send`
        is; one send of any size is taken when nothing waits for the connection."""
        ptr = self._p()
        _send_owned(lambda *a: _lib.ns_conn_send_owned(ptr, *a), data)

    def send_frame(self, data: Buffer) -> None:
        """Sends ``data`` as one message in the connection's framing (InvalidError for a line
        or delimited message containing its terminator, or a fixed-size one of another
        size)."""
        data = _bytes(data)
        _check(_lib.ns_conn_send_frame(self._p(), data, len(data)))

    def keep(self, n: int) -> None:
        """Raw framing, inside ``on_data``: keeps the last ``n`` bytes of this delivery for
        the next ``on_data``, which starts with them, so an unfinished message needs no buffer
        of your own. InvalidError outside on_data or with another framing; LimitError past
        ``max_frame``."""
        _check(_lib.ns_conn_keep(self._p(), _uint(n, "n", _SIZE_MAX)))

    def close(self) -> None:
        """Closes the connection once what was sent is written; ``on_close`` follows."""
        _check(_lib.ns_conn_close(self._p()))

    def pause(self) -> None:
        """Stops reading from the peer (no ``on_data``) until :meth:`resume`: backpressure,
        such as a proxy whose other side is slow."""
        _check(_lib.ns_conn_pause(self._p()))

    def resume(self) -> None:
        """Reads from the peer again after :meth:`pause`."""
        _check(_lib.ns_conn_resume(self._p()))

    def set_timer(self, seconds: float) -> None:
        """Arms the connection's one timer: ``on_timer(conn)`` runs ``seconds`` from now
        (again for a heartbeat: set it again there). Re-arms it if set; 0 cancels it."""
        _check(_lib.ns_conn_set_timer(self._p(), _ms(seconds, "seconds", True)))

    @property
    def user(self) -> Any:
        """The application's state for this connection (None until set), kept until its
        ``on_close`` has run: a session object without a table of ids."""
        self._p()
        return self._stream.users.get(self.id)

    @user.setter
    def user(self, value: Any) -> None:
        self._p()
        self._stream.users[self.id] = value

    @property
    def peer(self) -> str:
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
    def pending(self) -> int:
        """Bytes queued on the connection and not yet written."""
        return int(_lib.ns_conn_pending(self._p()))

    def _text(self, fn: Callable[..., int]) -> str:
        buf = ctypes.create_string_buffer(256)
        _check(fn(self._p(), buf, 256))
        return buf.value.decode("utf-8", "replace")

    @property
    def alpn(self) -> str:
        """The ALPN protocol agreed on in the TLS handshake ("" without TLS or ALPN)."""
        return self._text(_lib.ns_conn_alpn)

    @property
    def server_name(self) -> str:
        """The host name a TLS client asked this server for (SNI; "" if none)."""
        return self._text(_lib.ns_conn_server_name)

    def __repr__(self) -> str:
        return "<netsock.Conn id=%d%s>" % (self.id, "" if self._ptr else " (expired)")


class Peer:
    """The address of a datagram's sender: a copy, so it may be kept and answered from any
    thread with :meth:`Server.reply`. ``str(peer)`` is its address text. :meth:`parse` makes one
    from text, to send to an address the server never heard from."""

    __slots__ = ("_c", "_text")
    _c: _capi.ns_peer
    _text: Optional[str]

    def __init__(self) -> None:
        raise TypeError("Peer objects come from udp_serve callbacks or Peer.parse()")

    @classmethod
    def _new(cls) -> "Peer":
        peer: Peer = object.__new__(cls)
        peer._c = _capi.ns_peer()
        peer._text = None
        return peer

    @classmethod
    def parse(cls, addr: str) -> "Peer":
        """The peer at ``addr``: "1.2.3.4:5000", "[::1]:5000", "[fe80::1%eth0]:5000" or
        "unix:/path" (ns_peer_parse). Never looks up a name: AddressError for names, ":port",
        port 0, "unix:@name" and anything else that is not one address."""
        peer = cls._new()
        _check(_lib.ns_peer_parse(_addr(addr), ctypes.byref(peer._c)))
        return peer

    @classmethod
    def _copy(cls, ptr: int) -> "Peer":
        peer = cls._new()
        ctypes.memmove(ctypes.byref(peer._c), ptr, ctypes.sizeof(_capi.ns_peer))
        return peer

    def __str__(self) -> str:
        if self._text is None:
            buf = ctypes.create_string_buffer(256)
            _check(_lib.ns_peer_format(ctypes.byref(self._c), buf, len(buf)))
            self._text = buf.value.decode("utf-8", "replace")
        return self._text

    def _key(self) -> bytes:
        n = min(self._c._len, ctypes.sizeof(self._c._storage))
        return ctypes.string_at(ctypes.addressof(self._c._storage), n)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Peer) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "<netsock.Peer %s>" % self


# --------------------------------------------------------------------------------------------
# Handles
# --------------------------------------------------------------------------------------------

_live_lock = threading.Lock()
_live: Set[Any] = set()  # handles not yet closed: they (and their callbacks) stay alive

_R = TypeVar("_R")
_H = TypeVar("_H", bound="_Handle")


class _Handle:
    """A C handle that several threads may use: a call holds it (``_busy``) so that closing
    waits for the calls in flight, and the pointer is never used once freed."""

    def __init__(self) -> None:
        self._ptr: Any = None
        self._key: object = self
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0
        self._closing = False
        self._started = threading.Event()  # the creating call returned (or failed)
        self._closed = threading.Event()  # freed

    def _set_ptr(self, ptr: Any) -> None:
        self._ptr = ptr
        with _live_lock:
            _live.add(self)
        self._started.set()

    def _abandon(self) -> None:
        """Marks a handle that never started as closed."""
        self._closing = True
        self._started.set()
        self._closed.set()

    def _call(self, fn: Callable[..., _R], *args: Any) -> _R:
        """fn(ptr, *args) while the handle cannot be freed; ClosedError once closed."""
        if not self._started.is_set():  # a callback that came before the creating call returned
            self._started.wait()
        with self._lock:
            ptr = self._ptr
            if ptr is None:
                raise ClosedError(Result.ERR_CLOSED, "the %s is closed" % type(self).__name__)
            self._busy += 1
        try:
            return fn(ptr, *args)
        finally:
            with self._lock:
                self._busy -= 1
                if not self._busy:
                    self._idle.notify_all()

    def _take(self) -> Tuple[bool, Any]:
        """Starts closing: (whether this is the first close, the pointer to free)."""
        with self._lock:
            first = not self._closing
            self._closing = True
            ptr, self._ptr = self._ptr, None
        return first, ptr

    def _free_when_idle(self, ptr: Any, free: Callable[[Any], None]) -> None:
        with self._lock:
            while self._busy:  # other threads' calls end (they fail fast once stopped)
                self._idle.wait()
        try:
            free(ptr)
        finally:
            self._forget()
            with _live_lock:
                _live.discard(self)
            self._closed.set()

    def _forget(self) -> None:
        """Drops what C could call back into (once it no longer can)."""

    @property
    def closed(self) -> bool:
        """True once ``close()`` has been called."""
        return self._closing

    def __enter__(self: _H) -> _H:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError


def _free_later(handle: _Handle, ptr: Any, free: Callable[[Any], None], name: str,
                daemon: bool = False) -> None:
    """Frees on a helper thread: inside a callback of the handle's loop, waiting for that loop
    (or for calls in flight on it) would never end."""
    threading.Thread(target=handle._free_when_idle, args=(ptr, free), name=name,
                     daemon=daemon).start()


class Loop(_Handle):
    """Loop threads that servers and clients can share (``loop=``), with posted tasks and timers.

    ``Loop(threads=1)`` starts its threads at once. With ``run_in_wait=True`` its first loop gets
    no thread: :meth:`run` runs it on the calling thread, so a whole program (servers, clients,
    timers) can live on the main thread, one callback at a time. Tasks and timers run on the
    first loop. Methods may be called from any thread, callbacks included. ``with Loop() as
    loop:`` closes it at the end: everything on it stops (connections close with
    ``ERR_STOPPED``).

    The loop of a server (:attr:`Server.loop`) is lent: it lives as long as the server, and its
    ``close()`` does nothing.
    """

    def __init__(self, threads: int = 1, *, run_in_wait: bool = False) -> None:
        super().__init__()
        self.threads = _uint(threads, "threads", _SIZE_MAX)
        self.run_in_wait = bool(run_in_wait)
        self._server: Optional[Server] = None
        self._timers: Dict[int, int] = {}  # timer id -> token
        self._ran = False  # run() was called: a run_in_wait loop's first loop has run
        self._running = 0  # run() calls under way
        opts = _options([_set(_lib.ns_options_set_threads, self.threads),
                         _set(_lib.ns_options_set_run_in_wait, int(self.run_in_wait))])
        try:
            out = _capi.loop_p()
            rc = _lib.ns_loop_new(opts, ctypes.byref(out))
            if rc < 0:
                err = _error(rc)
                self._abandon()
                raise err
        finally:
            _lib.ns_options_free(opts)
        self._set_ptr(out)

    @classmethod
    def _lent_by(cls, server: "Server") -> "Loop":
        lp: Loop = object.__new__(cls)
        _Handle.__init__(lp)
        lp.threads = 0
        lp.run_in_wait = False
        lp._server = server
        lp._key = server._key
        lp._timers = {}
        lp._ran = True
        lp._running = 0
        lp._started.set()
        return lp

    def _call(self, fn: Callable[..., _R], *args: Any) -> _R:
        server = self._server
        if server is None:
            return super()._call(fn, *args)

        def lent(srv: Any) -> _R:
            lp = _lib.ns_server_loop(srv)
            if not lp:
                raise _error(Result.ERR_CLOSED)
            return fn(lp, *args)
        return server._call(lent)

    def post(self, fn: Task) -> None:
        """Runs ``fn()`` on the loop's first thread, in the order posted from one thread.
        ClosedError (``fn`` not run) once the loop stopped."""
        _callable(fn, "fn", True)
        token = _register((self._key, fn))
        try:
            _check(self._call(_lib.ns_loop_post, _T_TASK, token))
        except BaseException:
            _handles.pop(token, None)
            raise

    def timer_start(self, after: float, repeat: Optional[float], fn: Task) -> int:
        """Runs ``fn()`` on the loop's first thread ``after`` seconds from now, then every
        ``repeat`` seconds (None or 0: once). Returns the timer's id for :meth:`timer_stop`."""
        _callable(fn, "fn", True)
        after_ms = _ms(after, "after", True)
        repeat_ms = 0 if repeat is None else _ms(repeat, "repeat", True)
        token = _register(_Timer(self, fn, repeat_ms != 0))
        timer_id = ctypes.c_uint64(0)
        try:
            _check(self._call(_lib.ns_timer_start, after_ms, repeat_ms, _T_TIMER, token,
                              ctypes.byref(timer_id)))
        except BaseException:
            _handles.pop(token, None)
            raise
        if token in _handles:  # a one-shot may have run already
            self._timers[timer_id.value] = token
        return int(timer_id.value)

    def timer_stop(self, timer_id: int) -> bool:
        """Stops a timer: True if it was running, False for one that is done (a one-shot that
        ran, stopped already, or unknown). From the loop's first thread it never runs again;
        from another, no run starts after this returns."""
        timer_id = _uint(timer_id, "timer_id", _U64_MAX)
        try:
            rc = self._call(_lib.ns_timer_stop, timer_id)
        except ClosedError:
            rc = Result.ERR_CLOSED
        token = self._timers.pop(timer_id, None)
        if token is not None:
            _handles.pop(token, None)
        if rc == Result.ERR_CLOSED:
            return False
        _check(rc)
        return True

    def stop(self) -> None:
        """Asks the loop to stop and returns at once (any thread): :meth:`run` returns, what
        runs on it closes (``ERR_STOPPED``), its timers end, posts fail. Stopping a server's
        loop stops the server. Repeatable; nothing after close."""
        try:
            self._call(_lib.ns_loop_stop)
        except ClosedError:
            pass

    def run(self) -> None:
        """Runs until :meth:`stop`. With ``run_in_wait`` the first loop runs on this thread
        meanwhile, so every callback of what lives on it runs here; on the main thread it
        wakes every 0.1 s so that Python's signal handlers run, and what they raise (Ctrl-C's
        KeyboardInterrupt) stops the loop and is raised here. Without, it waits (interruptibly). MisuseError inside one of the
        loop's own callbacks."""
        if _in_callback(self._key):
            raise MisuseError(Result.ERR_MISUSE, "Loop.run() inside one of the loop's callbacks")
        self._call(self._run)

    def _run(self, ptr: Any) -> None:
        self._ran = True
        if not self.run_in_wait:
            done = threading.Event()
            rcs: List[int] = []

            def wait() -> None:
                try:
                    rcs.append(_lib.ns_loop_run(ptr))
                finally:
                    done.set()

            threading.Thread(target=wait, name="netsock-loop-run", daemon=True).start()
            try:
                done.wait()
            except BaseException:  # Ctrl-C: stop the loop, let the waiter go, re-raise
                _lib.ns_loop_stop(ptr)
                done.wait(5.0)
                raise
            _check(rcs[0] if rcs else Result.OK)
            return
        ident = threading.get_ident()
        run = _Run(ptr)
        _runs.setdefault(ident, []).append(run)
        tick = None
        handlers: Dict[int, Tuple[Any, Any]] = {}
        try:
            if threading.current_thread() is threading.main_thread():
                handlers = _catch_signal_handlers(run)
                tick = self.timer_start(0.1, 0.1, _noop)
            self._running += 1
            try:
                rc = _lib.ns_loop_run(ptr)
            finally:
                self._running -= 1
        finally:
            runs = _runs.get(ident)
            if runs:
                runs.remove(run)
                if not runs:
                    _runs.pop(ident, None)
            if tick is not None:
                self.timer_stop(tick)
            for sig, (handler, wrapper) in handlers.items():
                if signal.getsignal(sig) is wrapper:  # unless a callback installed another
                    signal.signal(sig, handler)
        if run.exc is not None:
            raise run.exc
        _check(rc)

    def close(self) -> None:
        """Stops the loop and releases it (idempotent): what runs on it closes, its timers
        end. Nothing for a server's loop."""
        if self._server is not None:
            return
        first, ptr = self._take()
        if first and ptr is not None:
            _lib.ns_loop_stop(ptr)
            if _in_callback():
                _free_later(self, ptr, _lib.ns_loop_free, "netsock-loop-close")
            else:
                self._free_when_idle(ptr, _lib.ns_loop_free)
        elif not _in_callback():
            self._closed.wait()

    def _forget(self) -> None:
        timers, self._timers = self._timers, {}
        for token in timers.values():
            _handles.pop(token, None)

    def __repr__(self) -> str:
        if self._server is not None:
            return "<netsock.Loop of %r>" % self._server
        return "<netsock.Loop threads=%d%s%s>" % (self.threads,
                                                 " run_in_wait" if self.run_in_wait else "",
                                                 " (closed)" if self._closing else "")


def _noop() -> None:
    pass


def _catch_signal_handlers(run: _Run) -> Dict[int, Tuple[Any, Any]]:
    """Wraps the Python signal handlers for a Loop.run() on the main thread. Python runs them
    in whatever Python code runs next on that thread: here the first line of a trampoline,
    where nothing could catch what they raise (Ctrl-C's KeyboardInterrupt). Wrapped, what they
    raise stops the loop and run() raises it."""
    saved: Dict[int, Tuple[Any, Any]] = {}
    for sig in signal.valid_signals():
        try:
            handler = signal.getsignal(sig)
        except (ValueError, OSError):
            continue
        if not callable(handler):
            continue

        def wrapper(signum: int, frame: Optional[FrameType], handler: Any = handler) -> None:
            try:
                handler(signum, frame)
            except BaseException as exc:
                if run.exc is None:
                    run.exc = exc
                _lib.ns_loop_stop(run.ptr)

        try:
            signal.signal(sig, wrapper)
        except (ValueError, OSError):
            continue
        saved[sig] = (handler, wrapper)
    return saved


# --------------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------------


def _path(path: Union[str, "os.PathLike[str]"], what: str) -> bytes:
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError("%s must be a path (str), not %s" % (what, type(text).__name__))
    return text.encode("utf-8")


class Tls:
    """A TLS configuration (rustls inside netsock) for ``tls=`` of :func:`tcp_serve` and
    :func:`tcp_connect`. Made by :meth:`server`, :meth:`server_pem` or :meth:`client`; each
    server or client keeps what it needs, so one Tls may serve many, and it may be dropped
    at once. Raises TlsError for unreadable files, bad PEM or a key that does not match its
    certificate.

    Servers: callbacks start once the handshake is done; a handshake that fails or takes
    longer than ``connect_timeout`` never reaches them and is counted in ``stats()``
    ("tls_failures"). Clients verify the server's certificate against the host of their
    address (sent as SNI; an IP address checks the certificate's IP addresses): a failure
    raises TlsError from a blocking :func:`tcp_connect`, or is ``on_close(conn, ERR_TLS)``
    without ``on_open`` with ``async_=True``. ``Conn.close()`` sends close_notify; a peer's
    TCP end without one is ``ERR_CLOSED``.
    """

    def __init__(self, ptr: Any, side: str) -> None:
        self._ptr: Any = ptr
        self.side = side  # "server" or "client"

    @classmethod
    def _made(cls, make: Callable[[Any], int], side: str, alpn: Optional[str],
              more: Optional[Callable[[Any], int]] = None) -> "Tls":
        out = _capi.tls_p()
        _check(make(ctypes.byref(out)))
        tls = cls(out, side)
        if alpn is not None:
            _check(_lib.ns_tls_set_alpn(out, alpn.encode("utf-8")))
        if more is not None:
            _check(more(out))
        return tls

    @classmethod
    def server(cls, cert: str, key: str, *, alpn: Optional[str] = None,
               client_ca: Optional[str] = None) -> "Tls":
        """A server presenting the PEM certificate chain ``cert`` (leaf first) with its PEM
        private ``key``; ``alpn``: protocols accepted ("h2,http/1.1"); ``client_ca``: a PEM
        file of CAs, requiring every client to present a certificate they signed."""
        bcert, bkey = _path(cert, "cert"), _path(key, "key")
        ca = _path(client_ca, "client_ca") if client_ca is not None else None
        return cls._made(lambda out: _lib.ns_tls_server_new(bcert, bkey, out), "server", alpn,
                         None if ca is None else lambda t: _lib.ns_tls_set_client_ca(t, ca))

    @classmethod
    def server_pem(cls, cert_pem: Buffer, key_pem: Buffer, *, alpn: Optional[str] = None) -> "Tls":
        """Like :meth:`server`, from PEM text in memory."""
        c, k = _bytes(cert_pem, "cert_pem"), _bytes(key_pem, "key_pem")
        return cls._made(lambda out: _lib.ns_tls_server_new_pem(c, len(c), k, len(k), out),
                         "server", alpn)

    @classmethod
    def client(cls, ca: Optional[str] = None, *, alpn: Optional[str] = None,
               cert: Optional[str] = None, key: Optional[str] = None) -> "Tls":
        """A client trusting the CAs of the PEM file ``ca`` (None: the system's roots);
        ``alpn``: protocols offered; ``cert`` and ``key``: a client certificate for servers
        that ask for one."""
        bca = _path(ca, "ca") if ca is not None else None
        more: Optional[Callable[[Any], int]] = None
        if cert is not None or key is not None:
            if cert is None or key is None:
                raise InvalidError(Result.ERR_INVALID, "a client certificate needs cert and key")
            bcert, bkey = _path(cert, "cert"), _path(key, "key")
            more = lambda t: _lib.ns_tls_set_client_cert(t, bcert, bkey)  # noqa: E731
        return cls._made(lambda out: _lib.ns_tls_client_new(bca, out), "client", alpn, more)

    def _setter(self, side: str) -> "_Setter":
        if not isinstance(self, Tls):
            raise TypeError("tls must be a netsock.Tls, not %s" % type(self).__name__)
        if self.side != side:
            raise InvalidError(Result.ERR_INVALID, "a %s needs Tls.%s(...), not a %s's "
                               "configuration" % (side, side, self.side))
        return lambda opts: _lib.ns_options_set_tls(opts, self._ptr)

    def close(self) -> None:
        """Frees the configuration now (servers and clients made with it go on)."""
        ptr, self._ptr = self._ptr, None
        if ptr:
            _lib.ns_tls_free(ptr)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter exit the library may be gone already
            pass

    def __repr__(self) -> str:
        return "<netsock.Tls %s>" % self.side


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------

_Setter = Callable[[Any], int]


def _set(fn: Callable[..., int], *args: Any) -> _Setter:
    return lambda opts: fn(opts, *args)


def _options(setters: List[_Setter]) -> Any:
    opts = _lib.ns_options_new()
    if not opts:
        raise MemoryError("ns_options_new failed")
    try:
        for setter in setters:
            _check(setter(opts))
    except BaseException:
        _lib.ns_options_free(opts)
        raise
    return opts


def _loop_setter(loop: Optional[Loop]) -> List[_Setter]:
    if loop is None:
        return []
    if not isinstance(loop, Loop):
        raise TypeError("loop must be a netsock.Loop, not %s" % type(loop).__name__)
    return [lambda opts: loop._call(lambda lp: _lib.ns_options_set_loop(opts, lp))]


def _stream_setters(framing: int, delimiter: Optional[Buffer],
                    length_field: Optional[LengthFieldSpec], fixed_size: Optional[int],
                    max_frame: Optional[int], max_write_buffer: Optional[int],
                    idle_timeout: Optional[float], nodelay: Optional[bool],
                    keepalive: Optional[int]) -> List[_Setter]:
    """The settings servers and clients share: framing, limits, socket options."""
    setters = [_set(_lib.ns_options_set_framing, _uint(framing, "framing", 2**31 - 1))]
    if delimiter is not None:
        delim = _bytes(delimiter, "delimiter")
        setters.append(_set(_lib.ns_options_set_delimiter, delim, len(delim)))
    if length_field is not None:
        spec = tuple(length_field)
        if not 2 <= len(spec) <= 4:
            raise TypeError("length_field must be (offset, size[, little_endian[, adjust]])")
        offset, size = spec[0], spec[1]
        little = spec[2] if len(spec) > 2 else False
        adjust = spec[3] if len(spec) > 3 else 0
        if isinstance(adjust, bool) or not isinstance(adjust, int):
            raise TypeError("length_field adjust must be an int")
        if not -2**63 <= adjust < 2**63:
            raise InvalidError(Result.ERR_INVALID, "length_field adjust out of range")
        setters.append(_set(_lib.ns_options_set_length_field,
                            _uint(offset, "length_field offset", _SIZE_MAX),
                            _uint(size, "length_field size", _SIZE_MAX), int(bool(little)),
                            adjust))
    if fixed_size is not None:
        setters.append(_set(_lib.ns_options_set_fixed_size,
                            _uint(fixed_size, "fixed_size", _SIZE_MAX)))
    if max_frame is not None:
        setters.append(_set(_lib.ns_options_set_max_frame, _uint(max_frame, "max_frame",
                                                                 _SIZE_MAX)))
    if max_write_buffer is not None:
        setters.append(_set(_lib.ns_options_set_max_write_buffer,
                            _uint(max_write_buffer, "max_write_buffer", _SIZE_MAX)))
    if idle_timeout is not None:
        setters.append(_set(_lib.ns_options_set_idle_timeout_ms,
                            _ms(idle_timeout, "idle_timeout", True)))
    if nodelay is not None:
        setters.append(_set(_lib.ns_options_set_nodelay, bool(nodelay)))
    if keepalive is not None:
        setters.append(_set(_lib.ns_options_set_keepalive, _uint(keepalive, "keepalive",
                                                                 _U32_MAX)))
    return setters


def _callback_setters(stream: _Stream) -> List[_Setter]:
    # on_close always: it drops the connection's Conn.user (and tracks a client's state)
    setters = [_set(_lib.ns_options_set_on_close, _T_CLOSE)]
    if stream.on_open is not None or isinstance(stream.owner, Client):
        setters.append(_set(_lib.ns_options_set_on_open, _T_OPEN))
    if stream.on_drain is not None:
        setters.append(_set(_lib.ns_options_set_on_drain, _T_DRAIN))
    if stream.on_timer is not None:
        setters.append(_set(_lib.ns_options_set_on_timer, _T_CONN_TIMER))
    return setters


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


class Server(_Handle):
    """A running TCP or UDP server, from :func:`tcp_serve` or :func:`udp_serve`.

    Usable as a context manager (``close()`` at the end). ``port`` and ``address`` (the bound
    address text, e.g. "127.0.0.1:40123") stay readable after close. Methods may be called from
    any thread; after ``close()`` they raise :class:`ClosedError` (``stop()``/``close()`` do
    nothing).
    """

    def __init__(self, kind: str, loop: Optional[Loop]) -> None:
        super().__init__()
        self.kind = kind  # "tcp" or "udp"
        self.port = 0
        self.address = ""
        self._key = loop._key if loop is not None else self
        self._token = 0
        self._stopped = threading.Event()  # ns_server_wait returned, or closed
        self._waiter: Optional[threading.Thread] = None
        self._lent: Optional[Loop] = None
        self._loop = loop
        self._deferred = False  # freed when its run_in_wait loop first runs

    def _start(self, ptr: Any) -> None:
        buf = ctypes.create_string_buffer(256)
        _check(_lib.ns_server_addr(ptr, buf, len(buf)))
        self.address = buf.value.decode("utf-8", "replace")
        self.port = int(_lib.ns_server_port(ptr))
        self._set_ptr(ptr)

    def _in_own_callback(self) -> bool:
        return _in_callback(self._key)

    def _abandon(self) -> None:
        super()._abandon()
        self._stopped.set()
        _handles.pop(self._token, None)

    # -- public

    @property
    def loop(self) -> Loop:
        """The server's loop, lent for as long as the server lives: post tasks and start
        timers on its first thread, or pass it as ``loop=`` so clients share its threads."""
        if self._lent is None:
            self._lent = Loop._lent_by(self)
        return self._lent

    def send(self, conn_id: int, data: Buffer) -> None:
        """Queues ``data`` for the TCP connection ``conn_id`` (from any thread). ClosedError
        if that connection is not open or the server stopped; LimitError (nothing queued) if
        the output queued for it, with the sends still waiting for its loop, would pass its
        write buffer limit. What was accepted is delivered in order unless the connection
        ends."""
        conn_id = _uint(conn_id, "conn_id", _U64_MAX)
        data = _bytes(data)
        _check(self._call(_lib.ns_server_send, conn_id, data, len(data)))

    def send_owned(self, conn_id: int, data: Buffer) -> None:
        """Like :meth:`send`, without copying ``data`` (see :meth:`Conn.send_owned`): it is
        referenced until the connection's loop has written it or the connection ended."""
        conn_id = _uint(conn_id, "conn_id", _U64_MAX)
        _send_owned(lambda *a: self._call(_lib.ns_server_send_owned, conn_id, *a), data)

    def send_frame(self, conn_id: int, data: Buffer) -> None:
        """Like :meth:`send`, as one message in the server's framing."""
        conn_id = _uint(conn_id, "conn_id", _U64_MAX)
        data = _bytes(data)
        _check(self._call(_lib.ns_server_send_frame, conn_id, data, len(data)))

    def close_conn(self, conn_id: int) -> None:
        """Closes connection ``conn_id`` once what was queued for it is written (from any
        thread); its ``on_close`` follows (``OK``). ClosedError if it is not open."""
        conn_id = _uint(conn_id, "conn_id", _U64_MAX)
        _check(self._call(_lib.ns_server_close, conn_id))

    def post(self, conn_id: int, fn: ConnTask) -> None:
        """Runs ``fn(conn)`` on the loop thread of connection ``conn_id`` with the connection
        in hand (pause, resume, set a timer, send: everything a callback can), from any
        thread; ``fn(None)`` if it closes before the task runs. ClosedError (``fn`` not run) if
        it is not open now."""
        conn_id = _uint(conn_id, "conn_id", _U64_MAX)
        _callable(fn, "fn", True)
        stream = _handles.get(self._token)
        if not isinstance(stream, _Stream):
            raise InvalidError(Result.ERR_INVALID, "post() is for TCP servers")
        token = _register((stream, fn))
        try:
            _check(self._call(_lib.ns_server_post, conn_id, _T_CONN_TASK, token))
        except BaseException:
            _handles.pop(token, None)
            raise

    def reply(self, peer: Peer, data: Buffer) -> None:
        """Sends one datagram from this UDP server to ``peer`` (a :class:`Peer`), from any
        thread. LimitError if it is too large or the socket buffer is full."""
        if not isinstance(peer, Peer):
            raise TypeError("peer must be a netsock.Peer, not %s" % type(peer).__name__)
        data = _bytes(data)
        _check(self._call(_lib.ns_udp_reply, ctypes.byref(peer._c), data, len(data)))

    def stats(self) -> Dict[str, int]:
        """The server's counters since it started, as a dict (see ns_stats)."""
        st = _capi.ns_stats()
        st.size = ctypes.sizeof(_capi.ns_stats)
        _check(self._call(_lib.ns_server_stats, ctypes.byref(st)))
        filled = st.size
        out = {}
        for name in _capi.STATS_FIELDS:
            field = getattr(_capi.ns_stats, name)
            if field.offset + field.size <= filled:
                out[name] = int(getattr(st, name))
        return out

    def handoff(self, path: str, timeout: float = 10.0) -> None:
        """Hands the server's sockets to a new process started with the address
        "handoff:<path>" (ns_server_handoff): waits up to ``timeout`` seconds for it at the
        Unix socket ``path``, passes the sockets, stops accepting, lets its connections end
        (within the drain timeout) and stops; then :meth:`close` it. NetsockTimeout (the server
        serves on) if nobody came. Blocks; not inside the server's own callbacks."""
        if self._in_own_callback():
            raise MisuseError(Result.ERR_MISUSE,
                              "Server.handoff() inside one of the server's own callbacks")
        bpath = _addr(path)
        _check(self._call(_lib.ns_server_handoff, bpath, _ms(timeout, "timeout", True)))

    def stop(self) -> None:
        """Asks the server to stop and returns at once (any thread, repeatable): it stops
        accepting and every open connection gets on_close(ERR_STOPPED)."""
        try:
            self._call(_lib.ns_server_stop)  # sets no ns_last_error; fails only for NULL
        except ClosedError:
            pass

    def wait(self, timeout: Optional[float] = None) -> bool:
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

    def _wait_thread(self, ptr: Any) -> None:
        try:
            _lib.ns_server_wait(ptr)
        finally:
            self._stopped.set()
            with self._lock:
                self._busy -= 1
                if not self._busy:
                    self._idle.notify_all()

    def close(self) -> None:
        """Stops the server, waits for its last callback, frees it and drops its callbacks.
        Idempotent. Inside a callback of its loop it cannot wait: the server is stopped and a
        helper thread frees it after the callback returns."""
        own = self._in_own_callback()
        first, ptr = self._take()
        if first and ptr is not None:
            _lib.ns_server_stop(ptr)
            # A run_in_wait loop that never ran cannot let go of the server (ns_server_free
            # would wait for it forever): freed once the loop runs, or never if it does not.
            unrun = self._loop is not None and self._loop.run_in_wait and not self._loop._ran
            if own or unrun:
                self._deferred = unrun
                _free_later(self, ptr, _lib.ns_server_free, "netsock-close", daemon=unrun)
            else:
                self._free_when_idle(ptr, _lib.ns_server_free)
        elif not own and not self._deferred:
            self._closed.wait()  # another thread is closing it: return once it is done

    def _forget(self) -> None:
        self._stopped.set()
        _handles.pop(self._token, None)
        if self._lent is not None:
            self._lent._forget()

    def __repr__(self) -> str:
        return "<netsock.Server %s %s%s>" % (self.kind, self.address,
                                             " (closed)" if self._closing else "")


def tcp_serve(addr: str, on_data: DataCallback, *, on_open: Optional[ConnCallback] = None,
              on_close: Optional[CloseCallback] = None, on_drain: Optional[ConnCallback] = None,
              on_timer: Optional[ConnCallback] = None, threads: int = 1,
              loop: Optional[Loop] = None, framing: int = Framing.RAW,
              delimiter: Optional[Buffer] = None, length_field: Optional[LengthFieldSpec] = None,
              fixed_size: Optional[int] = None, max_frame: Optional[int] = None,
              idle_timeout: Optional[float] = None, max_conns: Optional[int] = None,
              drain_timeout: Optional[float] = None, max_write_buffer: Optional[int] = None,
              backlog: Optional[int] = None, nodelay: Optional[bool] = None,
              keepalive: Optional[int] = None, reuseport: bool = False,
              proxy_protocol: bool = False, connect_timeout: Optional[float] = None,
              workers: int = 0, tls: Optional[Tls] = None) -> Server:
    """Starts a TCP server on ``addr`` ("127.0.0.1:6666", "[::1]:0", "unix:/path", ...) and
    returns the :class:`Server` once it listens.

    ``on_data(conn, data)``: each chunk read (raw framing) or each whole message (see
    :class:`Framing`), as bytes. ``on_open(conn)`` before any data, ``on_close(conn, reason)``
    exactly once per connection with a :class:`Result` (``OK`` for an orderly close,
    ``ERR_STOPPED``, ``ERR_RESET``, ``ERR_TIMEOUT``, ``ERR_LIMIT``, ...), ``on_drain(conn)`` when
    a long output queue has drained, ``on_timer(conn)`` when the timer of
    :meth:`Conn.set_timer` fires. They run on netsock's loop threads; ``conn`` is a
    :class:`Conn` valid during the call only.

    ``threads``: loop threads of its own (0: one per core), or ``loop``: run on that
    :class:`Loop` beside what else runs there. ``framing`` with ``delimiter`` (1-8 bytes),
    ``length_field`` (a :class:`LengthField`) or ``fixed_size``. ``max_frame`` (bytes, default
    1 MiB) for framed connections; ``idle_timeout`` and ``drain_timeout`` in seconds (None:
    off); ``max_conns`` (None: no limit); ``max_write_buffer`` (bytes, default 8 MiB),
    ``backlog``, ``nodelay`` (default True), ``keepalive`` (idle seconds, None: off).

    ``addr`` may also name a socket the server does not bind: "fd:N" (inherited), "systemd:N"
    or "systemd:NAME" (socket activation), "handoff:/path" (from :meth:`Server.handoff` of
    another process, awaited up to ``connect_timeout`` seconds). ``reuseport``: one
    SO_REUSEPORT socket per loop thread, and other processes may bind the same address.
    ``proxy_protocol``: every connection must start with a PROXY v1/v2 header (within
    ``connect_timeout``, default 10 s), whose client :meth:`Conn.peer` then reports; only
    behind a proxy that always sends one (SECURITY.md).
    ``workers``: with more than 0, the callbacks run on a pool of that many worker threads
    instead of the loop thread, so a handler may block (``time.sleep``, a file, a database)
    without stalling the other connections; each connection's callbacks still run one at a
    time and in order. Each call holds the GIL only while in Python.
    ``tls``: a :meth:`Tls.server` configuration (the callbacks see plaintext); its handshake
    must finish within ``connect_timeout`` too (after the PROXY header, with both).
    """
    _callable(on_data, "on_data", True)
    for name, cb in (("on_open", on_open), ("on_close", on_close), ("on_drain", on_drain),
                     ("on_timer", on_timer)):
        _callable(cb, name)
    baddr = _addr(addr)
    setters = [_set(_lib.ns_options_set_threads, _uint(threads, "threads", _SIZE_MAX))]
    setters += _loop_setter(loop)
    setters += _stream_setters(framing, delimiter, length_field, fixed_size, max_frame,
                               max_write_buffer, idle_timeout, nodelay, keepalive)
    if max_conns is not None:
        setters.append(_set(_lib.ns_options_set_max_conns, _uint(max_conns, "max_conns",
                                                                 _SIZE_MAX)))
    if drain_timeout is not None:
        setters.append(_set(_lib.ns_options_set_drain_timeout_ms,
                            _ms(drain_timeout, "drain_timeout", True)))
    if backlog is not None:
        setters.append(_set(_lib.ns_options_set_backlog, _uint(backlog, "backlog", 2**31 - 1)))
    setters += _scale_setters(reuseport, proxy_protocol, connect_timeout)
    if _uint(workers, "workers", 1024):
        setters.append(_set(_lib.ns_options_set_workers, workers))
    if tls is not None:
        setters.append(Tls._setter(tls, "server"))

    server = Server("tcp", loop)
    stream = _Stream(server, on_data, on_open, on_close, on_drain, on_timer)
    setters += _callback_setters(stream)
    server._token = _register(stream)
    _serve(server, _lib.ns_tcp_serve, baddr, _T_DATA, setters)
    return server


def _serve(server: Server, serve: Callable[..., int], addr: bytes, cb: Any,
           setters: List[_Setter]) -> None:
    try:
        opts = _options(setters)
    except BaseException:
        server._abandon()
        raise
    try:
        out = _capi.server_p()
        rc = serve(addr, cb, server._token, opts, ctypes.byref(out))
        if rc < 0:
            err = _error(rc)
            server._abandon()
            raise err
    finally:
        _lib.ns_options_free(opts)  # copied by serve
    try:
        server._start(out)
    except BaseException:
        _lib.ns_server_free(out)
        server._abandon()
        raise


def _scale_setters(reuseport: bool, proxy_protocol: bool,
                   connect_timeout: Optional[float]) -> List[_Setter]:
    setters = [_set(_lib.ns_options_set_reuseport, 1 if reuseport else 0),
               _set(_lib.ns_options_set_proxy_protocol, 1 if proxy_protocol else 0)]
    if connect_timeout is not None:
        setters.append(_set(_lib.ns_options_set_connect_timeout_ms,
                            _ms(connect_timeout, "connect_timeout", True)))
    return setters


def udp_serve(addr: str, on_datagram: DatagramCallback, *, threads: int = 1,
              loop: Optional[Loop] = None, reuseport: bool = False,
              connect_timeout: Optional[float] = None) -> Server:
    """Starts a UDP server on ``addr`` and returns the :class:`Server` once it is bound.

    ``on_datagram(server, peer, data)`` runs on a loop thread for each datagram: ``peer`` is a
    :class:`Peer` (a copy: keep it to answer later), ``data`` bytes. Answer with
    ``server.reply(peer, data)``, from there or from any thread. ``threads`` loop threads of
    its own, or ``loop``: run on that :class:`Loop`. ``addr``, ``reuseport`` and
    ``connect_timeout`` (for "handoff:") as for :func:`tcp_serve`.
    """
    _callable(on_datagram, "on_datagram", True)
    baddr = _addr(addr)
    setters = [_set(_lib.ns_options_set_threads, _uint(threads, "threads", _SIZE_MAX))]
    setters += _loop_setter(loop)
    setters += _scale_setters(reuseport, False, connect_timeout)
    server = Server("udp", loop)
    server._token = _register((server, on_datagram))
    _serve(server, _lib.ns_udp_serve, baddr, _T_DATAGRAM, setters)
    return server


# --------------------------------------------------------------------------------------------
# Persistent clients
# --------------------------------------------------------------------------------------------


class Client(_Handle):
    """A persistent client connection, from :func:`tcp_connect`.

    Its callbacks run on its loop like a server's; its methods may be called from any thread.
    ``id`` is the connection's id (the same across reconnects). ``close()`` (also at the end of a
    ``with`` block) closes in order and frees it; :meth:`abort` cuts it at once.
    """

    def __init__(self, address: str, loop: Optional[Loop]) -> None:
        super().__init__()
        self.address = address
        self.id = 0
        self._key = loop._key if loop is not None else self
        self._loop = loop
        self._token = 0
        self._state = threading.Condition()
        self._opens = 0  # on_open calls so far
        self._closes = 0  # on_close calls so far

    def _note(self, opened: bool) -> None:
        with self._state:
            if opened:
                self._opens += 1
            else:
                self._closes += 1
            self._state.notify_all()

    @property
    def connected(self) -> bool:
        """True between ``on_open`` and ``on_close``, as the callbacks have run so far (a
        blocking :func:`tcp_connect` returns once connected, maybe before ``on_open`` ran:
        sends work from then on)."""
        with self._state:
            return self._opens > self._closes

    def wait_connected(self, timeout: Optional[float] = None) -> bool:
        """Waits until the client is connected (``on_open`` has run) or ``timeout`` seconds
        passed: for an ``async_`` or reconnecting client. Returns :attr:`connected`."""
        with self._state:
            self._state.wait_for(lambda: self._opens > self._closes or self._closing, timeout)
            return self._opens > self._closes

    def send(self, data: Buffer) -> None:
        """Queues ``data`` on the connection (from any thread). ClosedError while it is not
        connected; LimitError if its output queue is full."""
        data = _bytes(data)
        _check(self._call(_lib.ns_client_send, data, len(data)))

    def send_owned(self, data: Buffer) -> None:
        """Like :meth:`send`, without copying ``data`` (see :meth:`Conn.send_owned`)."""
        _send_owned(lambda *a: self._call(_lib.ns_client_send_owned, *a), data)

    def send_frame(self, data: Buffer) -> None:
        """Like :meth:`send`, as one message in the client's framing."""
        data = _bytes(data)
        _check(self._call(_lib.ns_client_send_frame, data, len(data)))

    def post(self, fn: ConnTask) -> None:
        """Runs ``fn(conn)`` on the client's loop thread with its connection in hand;
        ``fn(None)`` if it closes first. ClosedError (``fn`` not run) if it is not open."""
        _callable(fn, "fn", True)
        stream = _handles.get(self._token)
        if stream is None:
            raise ClosedError(Result.ERR_CLOSED, "the Client is closed")
        token = _register((stream, fn))
        try:
            _check(self._call(_lib.ns_client_post, _T_CONN_TASK, token))
        except BaseException:
            _handles.pop(token, None)
            raise

    def close(self, timeout: Optional[float] = 5.0) -> None:
        """Closes in order and frees the client (idempotent): what was sent is written, then
        ``on_close`` runs with ``OK``, and it does not reconnect. Waits at most ``timeout``
        seconds (None: no limit) for that before cutting the connection. Inside a netsock
        callback it does not wait: a helper thread finishes it."""
        first, ptr = self._take()
        if not first or ptr is None:
            if not _in_callback():
                self._closed.wait()
            return
        with self._state:
            closes = self._closes
        # OK: a connection is open (on_open may not have run yet after a blocking connect),
        # and its on_close follows once what was queued is written; unless it lives on a
        # run_in_wait loop that nobody runs now, which could not write it anyway.
        loop = self._loop
        wait = _lib.ns_client_close(ptr) == Result.OK and (
            loop is None or not loop.run_in_wait or loop._running > 0)

        def finish() -> None:
            if wait:
                with self._state:
                    self._state.wait_for(lambda: self._closes > closes, timeout)
            self._free_when_idle(ptr, _lib.ns_client_free)

        if _in_callback():
            threading.Thread(target=finish, name="netsock-client-close").start()
        else:
            finish()

    def abort(self) -> None:
        """Cuts the connection at once (``on_close`` gets ``ERR_STOPPED``) and frees the
        client; what was queued is dropped. Idempotent."""
        first, ptr = self._take()
        if first and ptr is not None:
            if _in_callback():
                _free_later(self, ptr, _lib.ns_client_free, "netsock-client-close")
            else:
                self._free_when_idle(ptr, _lib.ns_client_free)
        elif not _in_callback():
            self._closed.wait()

    def _forget(self) -> None:
        _handles.pop(self._token, None)
        with self._state:
            self._state.notify_all()

    def __repr__(self) -> str:
        return "<netsock.Client %s id=%d%s>" % (self.address, self.id,
                                                " (closed)" if self._closing else "")


def tcp_connect(addr: str, on_data: Optional[DataCallback] = None, *,
                on_open: Optional[ConnCallback] = None,
                on_close: Optional[CloseCallback] = None,
                on_drain: Optional[ConnCallback] = None,
                on_timer: Optional[ConnCallback] = None, async_: bool = False,
                reconnect: Optional[Tuple[float, float]] = None, loop: Optional[Loop] = None,
                connect_timeout: Optional[float] = None, framing: int = Framing.RAW,
                delimiter: Optional[Buffer] = None,
                length_field: Optional[LengthFieldSpec] = None,
                fixed_size: Optional[int] = None, max_frame: Optional[int] = None,
                max_write_buffer: Optional[int] = None, idle_timeout: Optional[float] = None,
                nodelay: Optional[bool] = None, keepalive: Optional[int] = None,
                tls: Optional[Tls] = None) -> Client:
    """Connects to ``addr`` and returns a :class:`Client` whose connection runs on a loop
    (``loop``, or one of its own) with the callbacks, framing and limits of
    :func:`tcp_serve` (``on_data`` may be None: what arrives is dropped).

    Blocking (the default): returns once connected, within ``connect_timeout`` seconds
    (default 10; 0: no limit), or raises RefusedError, NetsockTimeout, AddressError. Inside a
    loop callback, use ``async_=True``: it returns at once, and ``on_open`` (or ``on_close``
    with ``ERR_REFUSED``/``ERR_TIMEOUT``/``ERR_ADDR``) tells how connecting went.
    ``reconnect=(min, max)`` seconds: whenever the connection ends for any reason but
    ``close()``, connect again after ``min``, doubling per failure up to ``max``; every
    connection gets ``on_open`` and ``on_close``, and sends between them raise ClosedError.
    ``tls``: a :meth:`Tls.client` configuration; the handshake is part of connecting (within
    ``connect_timeout``), and a failed one raises TlsError (``on_close`` with ``ERR_TLS``
    with ``async_=True``).
    """
    for name, cb in (("on_data", on_data), ("on_open", on_open), ("on_close", on_close),
                     ("on_drain", on_drain), ("on_timer", on_timer)):
        _callable(cb, name)
    baddr = _addr(addr)
    setters = _loop_setter(loop)
    setters += _stream_setters(framing, delimiter, length_field, fixed_size, max_frame,
                               max_write_buffer, idle_timeout, nodelay, keepalive)
    if connect_timeout is not None:
        setters.append(_set(_lib.ns_options_set_connect_timeout_ms,
                            _ms(connect_timeout, "connect_timeout", True)))
    if tls is not None:
        setters.append(Tls._setter(tls, "client"))
    if reconnect is not None:
        low, high = reconnect
        setters.append(_set(_lib.ns_options_set_reconnect, _ms(low, "reconnect min", False),
                            _ms(high, "reconnect max", False)))
    client = Client(baddr.decode("utf-8", "replace"), loop)
    stream = _Stream(client, on_data, on_open, on_close, on_drain, on_timer)
    setters += _callback_setters(stream)
    client._token = _register(stream)
    try:
        opts = _options(setters)
    except BaseException:
        _handles.pop(client._token, None)
        client._abandon()
        raise
    try:
        out = _capi.client_p()
        connect = _lib.ns_tcp_connect_async if async_ else _lib.ns_tcp_connect
        rc = connect(baddr, _T_DATA, client._token, opts, ctypes.byref(out))
        if rc < 0:
            err = _error(rc)
            _handles.pop(client._token, None)
            client._abandon()
            raise err
    finally:
        _lib.ns_options_free(opts)
    client.id = int(_lib.ns_client_id(out))
    client._set_ptr(out)
    return client


# --------------------------------------------------------------------------------------------
# One-shot clients (blocking; they release the GIL while they wait)
# --------------------------------------------------------------------------------------------


def _exchange(fn: Callable[..., int], addr: str, data: Buffer, reply_cap: int,
              timeout: Optional[float], *extra: Any) -> bytes:
    baddr = _addr(addr)
    data = _bytes(data)
    reply_cap = _uint(reply_cap, "reply_cap", _SIZE_MAX)
    ms = _timeout_ms(timeout)
    reply = ctypes.create_string_buffer(reply_cap) if reply_cap else None
    reply_len = ctypes.c_size_t(0)
    rc = fn(baddr, data, len(data), reply, reply_cap, ctypes.byref(reply_len), ms, *extra)
    if rc == Result.ERR_TRUNCATED:
        detail = _last_error()
        n = min(reply_len.value, reply_cap)
        raise TruncatedError(Result.ERR_TRUNCATED, detail, reply.raw[:n] if reply else b"")
    _check(rc)
    return reply.raw[:reply_len.value] if reply else b""


def tcp_send(addr: str, data: Buffer, reply_cap: int = 65536,
             timeout: Optional[float] = 5.0) -> bytes:
    """The classic one-shot client: connects to ``addr``, sends ``data``, shuts down its
    sending side and returns the reply read until the server closes (bytes). ``timeout``
    (seconds, None: none) bounds the whole exchange. TruncatedError (with ``.data``, the first
    ``reply_cap`` bytes) if the reply is longer; RefusedError, NetsockTimeout, ResetError,
    AddressError."""
    return _exchange(_lib.ns_tcp_send, addr, data, reply_cap, timeout)


def tcp_request(addr: str, data: Buffer, framing: int, reply_cap: int = 65536,
                timeout: Optional[float] = 5.0) -> bytes:
    """Sends ``data`` as one message in ``framing`` and returns one whole reply message (as
    ``on_data`` would get it), without needing the server to close. Every framing that finds a
    reply's end, with its default settings: LINE, LEN32, DELIMITER (b"\\r\\n"), LENGTH_FIELD
    (4-byte big-endian length first, the frame returned whole); InvalidError for RAW and FIXED.
    ClosedError if the server closed first; otherwise like :func:`tcp_send`."""
    framing = _uint(framing, "framing", 2**31 - 1)
    return _exchange(_lib.ns_tcp_request, addr, data, reply_cap, timeout, framing)


def udp_send(addr: str, data: Buffer) -> None:
    """Sends one datagram to ``addr`` without waiting for a reply."""
    baddr = _addr(addr)
    data = _bytes(data)
    _check(_lib.ns_udp_send(baddr, data, len(data)))


def udp_request(addr: str, data: Buffer, reply_cap: int = 65536,
                timeout: Optional[float] = 5.0) -> bytes:
    """Sends one datagram to ``addr`` and returns the first reply datagram from that address.
    NetsockTimeout if none came in time; RefusedError if the host reports nobody listens;
    TruncatedError (with ``.data``) if the reply is longer than ``reply_cap``."""
    return _exchange(_lib.ns_udp_request, addr, data, reply_cap, timeout)


# --------------------------------------------------------------------------------------------
# Interpreter exit
# --------------------------------------------------------------------------------------------


@atexit.register
def _close_all() -> None:
    # Loop threads must not call into Python while the interpreter finalizes: close what is
    # open (clients first, in order, then servers, then loops), then stop the logging.
    with _live_lock:
        live = list(_live)
    order = {Client: 0, Server: 1, Loop: 2}
    for handle in sorted(live, key=lambda h: order.get(type(h), 3)):
        try:
            if isinstance(handle, Client):
                handle.close(timeout=2.0)
            else:
                handle.close()
        except BaseException:
            pass
    try:
        _lib.ns_set_log(_NO_LOG, LogLevel.OFF)
    except BaseException:
        pass
