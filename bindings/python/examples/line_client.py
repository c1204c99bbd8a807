#!/usr/bin/env python3
"""line_client.py - a persistent line client (netsock.tcp_connect): sends each line of stdin
and prints each reply line; reconnects on its own if the server goes away, and exits at the end
of stdin once every line was answered (or after 5 s without an answer).

    python3 line_client.py 127.0.0.1:6666 < lines.txt
"""
import sys
import threading

import _path  # noqa: F401  (finds netsock in the source tree)
import netsock


def main() -> int:
    addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:6666"
    answered = threading.Condition()
    replies = [0]

    def on_data(conn: netsock.Conn, line: bytes) -> None:
        print("reply: %s" % line.decode("utf-8", "replace"), flush=True)
        with answered:
            replies[0] += 1
            answered.notify_all()

    def on_close(conn: netsock.Conn, reason: netsock.CloseReason) -> None:
        if reason != netsock.CloseReason.OK:
            print("connection lost: %s" % netsock.strerror(reason), file=sys.stderr, flush=True)

    try:
        client = netsock.tcp_connect(addr, on_data, on_close=on_close,
                                     framing=netsock.Framing.LINE, reconnect=(0.1, 2.0))
    except netsock.Error as e:
        print("line_client: %s: %s" % (addr, e), file=sys.stderr)
        return 1
    sent = 0
    with client:
        for line in sys.stdin:
            try:
                client.send_frame(line.rstrip("\n").encode())
                sent += 1
            except netsock.ClosedError:  # between two connections: the line is not sent
                print("not connected, dropped: %s" % line.rstrip("\n"), file=sys.stderr)
        with answered:
            if not answered.wait_for(lambda: replies[0] >= sent, timeout=5.0):
                print("line_client: %d of %d lines answered" % (replies[0], sent),
                      file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
