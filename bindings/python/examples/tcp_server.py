#!/usr/bin/env python3
"""tcp_server.py - the classic TCP server, on netsock (Python).

Every time a connection sends something, the server prints it, answers "ACK!" and closes the
connection. Ctrl-C (or SIGTERM) stops it.

    python3 tcp_server.py 127.0.0.1:6666      (default 0.0.0.0:6666; port 0 = any free port)
    python3 tcp_client.py 127.0.0.1:6666 hello     or:  echo hello | nc 127.0.0.1 6666
"""
import signal
import sys

import _path  # noqa: F401  (finds netsock in the source tree)
import netsock


def on_open(conn: netsock.Conn) -> None:
    print("connection #%d from %s" % (conn.id, conn.peer), flush=True)


def on_data(conn: netsock.Conn, data: bytes) -> None:
    text = data.rstrip(b"\r\n").decode("utf-8", "replace")
    print("received from %s: %s" % (conn.peer, text), flush=True)
    conn.send(b"ACK!")
    conn.close()  # the answer is flushed first


def on_close(conn: netsock.Conn, reason: netsock.CloseReason) -> None:
    if reason == netsock.OK:
        print("connection #%d closed" % conn.id, flush=True)
    else:  # ERR_RESET: the peer reset it; ERR_STOPPED: we are shutting down
        print("connection #%d closed: %s" % (conn.id, netsock.strerror(reason)), flush=True)


def main() -> int:
    addr = sys.argv[1] if len(sys.argv) > 1 else "0.0.0.0:6666"
    try:
        server = netsock.tcp_serve(addr, on_data, on_open=on_open, on_close=on_close)
    except netsock.Error as e:
        print("cannot listen on %s: %s" % (addr, e), file=sys.stderr)
        return 1
    with server:
        # stop() is safe from a signal handler; wait() then returns.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: server.stop())
        print("listening on %s" % server.address, flush=True)
        server.wait()
    print("server stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
