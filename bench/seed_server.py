#!/usr/bin/env python3
# coding=utf-8
"""The seed tutorial's threaded TCP server (tcp_server.py, Python 2), ported to Python 3 for
the benchmark (bench/run.py, the `workers-*` scenarios): a thread per client, which reads one
request, prints it, answers "ACK!" and closes, as the original does.

Changes from the original, all for the benchmark and all optional:
  - the address and port come from argv[1] and argv[2] (default 0.0.0.0 and 6666, as in the
    seed); port 0 lets the OS choose, and the listening line shows the port it chose;
  - argv[3]: milliseconds the handler blocks before answering (simulated I/O; default 0);
  - argv[4]: the listen backlog (default 5, the seed's; the benchmark gives every server the
    same, so that 1,000 clients measure threads, not a full accept queue);
  - Python 3: bytes on the socket, print() as a function, flushed once the server listens.

    python3 bench/seed_server.py 127.0.0.1 0 10 4096
"""
import socket
import sys
import threading
import time

bind_ip = sys.argv[1] if len(sys.argv) > 1 else '0.0.0.0'
bind_port = int(sys.argv[2]) if len(sys.argv) > 2 else 6666
block_s = (int(sys.argv[3]) if len(sys.argv) > 3 else 0) / 1000.0
backlog = int(sys.argv[4]) if len(sys.argv) > 4 else 5

server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((bind_ip, bind_port))
server.listen(backlog)

print('[*] Listening on %s:%d' % (bind_ip, server.getsockname()[1]), flush=True)


# this is our client-handling thread
def handle_client(client_socket):
    # print out what the client sends
    request = client_socket.recv(1024)
    print('[*] Received: %s' % request.decode('latin-1'))
    if block_s:
        time.sleep(block_s)
    # send back a packet
    client_socket.send(b'ACK!')
    client_socket.close()


while True:
    client, addr = server.accept()
    print('[*] Accept connection from: %s:%d' % (addr[0], addr[1]))
    # spin up our client thread to handle incoming data
    client_handler = threading.Thread(target=handle_client, args=(client,))
    client_handler.start()
