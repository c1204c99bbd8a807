#!/usr/bin/env python3
"""udp_client.py - the classic UDP client, on netsock (Python).

Each line read from stdin is sent as one datagram and the reply (waited for up to 2 s) is
printed; an empty line or EOF ends.

    python3 udp_client.py                          -> 127.0.0.1:6666, type lines
    printf 'one\\ntwo\\n' | python3 udp_client.py 127.0.0.1:6666
"""
import sys

import _path  # noqa: F401  (finds netsock in the source tree)
import netsock


def main() -> int:
    addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:6666"
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            break  # EOF
        line = line.rstrip("\n")
        if not line:
            break  # empty line
        try:
            reply = netsock.udp_request(addr, line.encode(), reply_cap=2048, timeout=2.0)
        except netsock.Error as e:
            print("udp_client: %s: %s" % (addr, e), file=sys.stderr)
            return 1
        print("reply: %s" % reply.decode("utf-8", "replace"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
