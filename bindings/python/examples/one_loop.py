#!/usr/bin/env python3
"""one_loop.py - a TCP echo server, a UDP echo server and a heartbeat on one loop, all run by
the main thread (netsock.Loop with run_in_wait): no thread of netsock's, one callback at a time,
so the program needs no lock. Ctrl-C (or SIGTERM) stops it.

    python3 one_loop.py 127.0.0.1:6666 127.0.0.1:6667 1.0   (TCP address, UDP address, beat s)
    python3 tcp_client.py 127.0.0.1:6666 hello     or:  nc -u 127.0.0.1 6667
"""
import signal
import sys
import threading

import _path  # noqa: F401  (finds netsock in the source tree)
import netsock


def main() -> int:
    tcp_addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:6666"
    udp_addr = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1:6667"
    beat = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    main_thread = threading.get_ident()
    counts = {"tcp": 0, "udp": 0, "beats": 0}

    def on_data(conn: netsock.Conn, data: bytes) -> None:
        assert threading.get_ident() == main_thread  # every callback runs in loop.run()
        counts["tcp"] += 1
        conn.send(data)

    def on_datagram(server: netsock.Server, peer: netsock.Peer, data: bytes) -> None:
        counts["udp"] += 1
        server.reply(peer, data)

    def heartbeat() -> None:
        counts["beats"] += 1
        print("beat %d: %d tcp reads, %d datagrams" % (counts["beats"], counts["tcp"],
                                                      counts["udp"]), flush=True)

    with netsock.Loop(run_in_wait=True) as loop:
        try:
            tcp = netsock.tcp_serve(tcp_addr, on_data, loop=loop)
            udp = netsock.udp_serve(udp_addr, on_datagram, loop=loop)
        except netsock.Error as e:
            print("one_loop: %s" % e, file=sys.stderr)
            return 1
        with tcp, udp:
            loop.timer_start(beat, beat, heartbeat)
            signal.signal(signal.SIGTERM, lambda *_: loop.stop())
            print("tcp on %s, udp on %s" % (tcp.address, udp.address), flush=True)
            try:
                loop.run()  # until loop.stop() or Ctrl-C
            except KeyboardInterrupt:
                pass
    print("stopped after %d beats" % counts["beats"], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
