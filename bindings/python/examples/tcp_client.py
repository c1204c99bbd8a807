#!/usr/bin/env python3
"""tcp_client.py - the classic TCP client, on netsock (Python).

Connects, sends one message, shuts down its sending side and prints the reply read until the
server closes (netsock.tcp_send).

    python3 tcp_client.py                          -> 127.0.0.1:6666, "hehe, just for a test!"
    python3 tcp_client.py 127.0.0.1:6666 hello
"""
import sys

import _path  # noqa: F401  (finds netsock in the source tree)
import netsock


def main() -> int:
    addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:6666"
    message = sys.argv[2] if len(sys.argv) > 2 else "hehe, just for a test!"
    try:
        reply = netsock.tcp_send(addr, message.encode(), reply_cap=4096, timeout=5.0)
    except netsock.Error as e:
        print("tcp_client: %s: %s" % (addr, e), file=sys.stderr)
        return 1
    print("sent to %s: %s" % (addr, message))
    print("reply: %s" % reply.decode("utf-8", "replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
