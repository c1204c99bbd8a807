#!/bin/sh
# demo.sh - run the netsock C examples against each other (this is `make demo`).
#
#   sh examples-c/demo.sh BINDIR     BINDIR holds the built example binaries
#
# Everything runs on loopback with ports chosen by the OS (port 0) and a
# Unix socket in a temporary directory; servers report the address they
# really bound in their "listening on ..." line.  Exits non-zero if any
# exchange fails.
set -eu

bindir=${1:-build}
for prog in tcp_server tcp_client udp_server udp_client echo_server kv_server kv_client \
    chat_server tcp_proxy one_loop resp_server dns_server; do
    if [ ! -x "$bindir/$prog" ]; then
        printf 'demo: %s not found (build the examples first)\n' "$bindir/$prog" >&2
        exit 1
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/netsock-demo.XXXXXX")
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
    printf 'demo: FAILED: %s\n' "$*" >&2
    exit 1
}

nap() { # a tenth of a second where sleep takes fractions, a second elsewhere
    sleep 0.1 2>/dev/null || sleep 1
}

section() {
    echo
    printf -- '--- %s ---\n' "$*"
}

# start_server NAME ADDRESS: start $bindir/NAME in the background and wait (at
# most 5 s) for its "listening on" line; sets server_pid, server_addr, server_log.
start_server() {
    server_log=$tmp/$1.log
    : >"$server_log" # exists before we poll it, even if the server is slow to start
    "$bindir/$1" "$2" ${3:+"$3"} >>"$server_log" 2>&1 &
    server_pid=$!
    tries=0
    while :; do
        server_addr=$(sed -n 's/^listening on //p' "$server_log")
        if [ -n "$server_addr" ]; then
            printf '%s is listening on %s\n' "$1" "$server_addr"
            return 0
        fi
        if ! kill -0 "$server_pid" 2>/dev/null; then
            cat "$server_log" >&2
            fail "$1 $2 exited before listening"
        fi
        tries=$((tries + 1))
        [ "$tries" -lt 50 ] || fail "$1 $2 did not start listening within 5 s"
        nap
    done
}

# stop_server: SIGINT the server, wait (at most 5 s) for it to exit, show its output.
stop_server() {
    kill -INT "$server_pid"
    tries=0
    while kill -0 "$server_pid" 2>/dev/null; do
        tries=$((tries + 1))
        if [ "$tries" -ge 50 ]; then
            sed 's/^/  server | /' "$server_log"
            fail "server did not exit within 5 s of SIGINT"
        fi
        nap
    done
    status=0
    wait "$server_pid" || status=$?
    server_pid=
    echo "server output:"
    sed 's/^/  server | /' "$server_log"
    [ "$status" -eq 0 ] || fail "server exited with status $status"
}

# client SHOWN EXPECTED COMMAND...: print SHOWN (the command as a reader would
# type it), run COMMAND, show its output and check that the output contains
# EXPECTED.  stdin is passed through; the output is left in $out.
client() {
    printf '$ %s\n' "$1"
    expected=$2
    shift 2
    status=0
    out=$("$@" 2>&1) || status=$?
    printf '%s\n' "$out" | sed 's/^/  client | /'
    [ "$status" -eq 0 ] || fail "client exited with status $status"
    case $out in
    *"$expected"*) ;;
    *) fail "client output does not contain \"$expected\"" ;;
    esac
}

# server_said TEXT: check the server's log contains TEXT.
server_said() {
    grep -F -q -- "$1" "$server_log" || fail "server output does not contain \"$1\""
}

section "TCP: tcp_client -> tcp_server"
start_server tcp_server 127.0.0.1:0
client "tcp_client $server_addr" \
    "reply: ACK!" "$bindir/tcp_client" "$server_addr"
client "tcp_client $server_addr 'hello from demo.sh'" \
    "reply: ACK!" "$bindir/tcp_client" "$server_addr" "hello from demo.sh"
stop_server
server_said "hehe, just for a test!"
server_said "hello from demo.sh"

section "UDP: udp_client -> udp_server"
start_server udp_server 127.0.0.1:0
printf 'first datagram\nsecond datagram\n' >"$tmp/udp_input"
client "printf 'first datagram\\nsecond datagram\\n' | udp_client $server_addr" \
    "reply: Recvice message ok!" "$bindir/udp_client" "$server_addr" <"$tmp/udp_input"
[ "$(printf '%s\n' "$out" | grep -c '^reply: Recvice message ok!$')" -eq 2 ] ||
    fail "udp_client did not get two replies"
stop_server
server_said "first datagram"
server_said "second datagram"

section "TCP: plain Python socket client -> echo_server"
if command -v python3 >/dev/null 2>&1; then
    start_server echo_server 127.0.0.1:0
    client "python3 -c '<connect, send a line, shut down writing, read the echo>' $server_addr" \
        "echo: hello from a plain Python socket" python3 -c '
import socket, sys
host, _, port = sys.argv[1].rpartition(":")
message = b"hello from a plain Python socket\n"
with socket.create_connection((host.strip("[]"), int(port)), timeout=5) as s:
    s.sendall(message)
    s.shutdown(socket.SHUT_WR)   # done sending; the server flushes and closes
    echoed = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        echoed += chunk
print("sent: " + message.decode().rstrip())
print("echo: " + echoed.decode().rstrip())
sys.exit(0 if echoed == message else 1)
' "$server_addr"
    stop_server
else
    echo "(python3 not found, skipping)"
fi

section "Unix domain socket: tcp_client -> tcp_server"
sock=$tmp/demo.sock
start_server tcp_server "unix:$sock"
client "tcp_client $server_addr 'hello over a Unix socket'" \
    "reply: ACK!" "$bindir/tcp_client" "$server_addr" "hello over a Unix socket"
stop_server
server_said "hello over a Unix socket"
[ ! -e "$sock" ] || fail "tcp_server left its socket file $sock behind"

section "LEN32 key-value store: kv_client -> kv_server"
start_server kv_server 127.0.0.1:0
client "kv_client $server_addr SET name netsock" \
    "OK" "$bindir/kv_client" "$server_addr" SET name netsock
client "kv_client $server_addr GET name" \
    "VALUE netsock" "$bindir/kv_client" "$server_addr" GET name
# The same client, -i: one persistent connection, requests read from stdin.
printf 'DEL name\nGET name\n' >"$tmp/kv_input"
client "printf 'DEL name\\nGET name\\n' | kv_client -i $server_addr" \
    "NOT_FOUND" "$bindir/kv_client" -i "$server_addr" <"$tmp/kv_input"
[ "$out" = "$(printf 'OK\nNOT_FOUND')" ] || fail "kv_client -i did not get OK then NOT_FOUND"
stop_server
server_said "SET name netsock -> OK"
server_said "GET name -> NOT_FOUND"

section "Line chat: two plain Python socket clients -> chat_server"
if command -v python3 >/dev/null 2>&1; then
    start_server chat_server 127.0.0.1:0
    client "python3 -c '<alice and bob join, alice says hello, bob hears it>' $server_addr" \
        "bob got: <alice> hello" python3 -c '
import socket, sys
host, _, port = sys.argv[1].rpartition(":")

class Member:
    def __init__(self, nick):
        self.sock = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
        self.buf = b""
        self.nick = nick
        self.say(nick)                  # the first line is the nickname
    def say(self, line):
        self.sock.sendall(line.encode() + b"\n")
    def expect(self, wanted):           # read lines until `wanted` (each recv waits 5 s at most)
        while True:
            while b"\n" not in self.buf:
                chunk = self.sock.recv(4096)
                if not chunk:
                    sys.exit(self.nick + ": connection closed while waiting for " + repr(wanted))
                self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
            if line.decode() == wanted:
                print(self.nick + " got: " + wanted)
                return

alice = Member("alice")
alice.expect("* you are alice; /who lists who is here, /quit leaves")
bob = Member("bob")
bob.expect("* you are bob; /who lists who is here, /quit leaves")
alice.expect("* bob joined")
alice.say("hello")
bob.expect("<alice> hello")
bob.say("/quit")
alice.expect("* bob left")
' "$server_addr"
    stop_server
    server_said "<alice> hello"
else
    echo "(python3 not found, skipping)"
fi

section "TCP proxy: plain Python socket client -> tcp_proxy -> echo_server"
if command -v python3 >/dev/null 2>&1; then
    start_server echo_server 127.0.0.1:0
    upstream=$server_addr upstream_pid=$server_pid upstream_log=$server_log
    start_server tcp_proxy 127.0.0.1:0 "$upstream"
    client "python3 -c '<1 MiB through the proxy and back, reading while writing>' $server_addr" \
        "1048576 bytes came back through the proxy" python3 -c '
import os, socket, sys, threading
host, _, port = sys.argv[1].rpartition(":")
data = os.urandom(1 << 20)
s = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
got = bytearray()
def read():
    while len(got) < len(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        got.extend(chunk)
reader = threading.Thread(target=read)
reader.start()
s.sendall(data)
reader.join(10)
s.close()
print("%d bytes came back through the proxy" % len(got) if bytes(got) == data else "mismatch")
sys.exit(0 if bytes(got) == data else 1)
' "$server_addr"
    stop_server
    server_pid=$upstream_pid server_log=$upstream_log
    stop_server
else
    echo "(python3 not found, skipping)"
fi

section "One thread: TCP echo, UDP echo and a heartbeat on one loop (one_loop)"
if command -v python3 >/dev/null 2>&1; then
    start_server one_loop 127.0.0.1:0
    client "python3 -c '<a TCP line and a UDP datagram to the same port>' $server_addr" \
        "tcp and udp echoed" python3 -c '
import socket, sys
host, _, port = sys.argv[1].rpartition(":")
addr = (host.strip("[]"), int(port))
with socket.create_connection(addr, timeout=5) as t:
    t.sendall(b"over tcp\n")
    got = b""
    while not got.endswith(b"\n"):
        got += t.recv(64)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(5)
u.sendto(b"over udp", addr)
back, _ = u.recvfrom(64)
ok = got == b"over tcp\n" and back == b"over udp"
print("tcp and udp echoed" if ok else "mismatch: %r %r" % (got, back))
sys.exit(0 if ok else 1)
' "$server_addr"
    stop_server
    server_said "stopped after"
else
    echo "(python3 not found, skipping)"
fi

section "Redis protocol: redis-cli -> resp_server"
if command -v redis-cli >/dev/null 2>&1; then
    start_server resp_server 127.0.0.1:0
    port=${server_addr##*:}
    client "redis-cli -p $port SET greeting hello" "OK" timeout 10 redis-cli -p "$port" SET greeting hello
    client "redis-cli -p $port INCR visits" "1" timeout 10 redis-cli -p "$port" INCR visits
    client "redis-cli -p $port GET greeting" "hello" timeout 10 redis-cli -p "$port" GET greeting
    stop_server
    server_said "keys stored: 2"
else
    echo "(redis-cli not found, skipping: apt-get install redis-tools)"
fi

section "DNS over TCP: dig -> dns_server"
if command -v dig >/dev/null 2>&1; then
    start_server dns_server 127.0.0.1:0 10.0.0.7
    port=${server_addr##*:}
    client "dig +tcp @127.0.0.1 -p $port example.com A +short" "10.0.0.7" \
        timeout 10 dig +tcp @127.0.0.1 -p "$port" example.com A +short +tries=1 +time=2
    stop_server
    server_said "example.com. A -> 10.0.0.7"
else
    echo "(dig not found, skipping: apt-get install bind9-dnsutils)"
fi

echo
echo "demo: all exchanges succeeded"
