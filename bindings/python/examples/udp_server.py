#!/usr/bin/env python3
"""udp_server.py - the classic UDP server, on netsock (Python).

Every datagram is printed and answered with "Recvice message ok!" (the spelling of the classic
program, kept). Ctrl-C (or SIGTERM) stops it.

    python3 udp_server.py 127.0.0.1:6666      (default 0.0.0.0:6666; port 0 = any free port)
    python3 udp_client.py 127.0.0.1:6666      or:  nc -u 127.0.0.1 6666
"""
import signal
import sys

import _path  # noqa: F401  (finds netsock in the source tree)
import netsock


def on_datagram(server: netsock.Server, peer: netsock.Peer, data: bytes) -> None:
    text = data.rstrip(b"\r\n").decode("utf-8", "replace")
    print("received from %s: %s" % (peer, text), flush=True)
    try:
        server.reply(peer, b"Recvice message ok!")
    except netsock.Error as e:
        print("reply to %s failed: %s" % (peer, e), file=sys.stderr, flush=True)


def main() -> int:
    addr = sys.argv[1] if len(sys.argv) > 1 else "0.0.0.0:6666"
    try:
        server = netsock.udp_serve(addr, on_datagram)
    except netsock.Error as e:
        print("cannot bind %s: %s" % (addr, e), file=sys.stderr)
        return 1
    with server:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: server.stop())
        print("listening on %s" % server.address, flush=True)
        server.wait()
    print("server stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
