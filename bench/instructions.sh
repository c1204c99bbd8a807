#!/bin/sh
# instructions.sh - user-space instructions per request of each echo server, counted by
# callgrind: unlike CPU time, the same for the same binaries and load whatever else the
# machine does, so it compares what each server's own code costs without the VM's noise.
# (The kernel's share, most of a request on loopback, is not counted: bench-syscalls shows
# that the servers make the same system calls, or netsock fewer.)
#
#   sh bench/instructions.sh [BUILD_DIR]          (make bench-instructions; BUILD_DIR: build/bench)
#
# netsock also runs with 2 loops (TCP), whose own code should cost what one loop's does.
# For each server: start it under `valgrind --tool=callgrind` pinned to core 1, run a ping-pong
# from core 0 (TCP: 50 connections x 64 B; UDP: 8 sockets x 64 B) with no warm-up, stop it,
# and divide every instruction it executed (start-up and shutdown included: under 1% here)
# by the requests the load generator completed.
#
# Environment: INSTR_SECONDS (load per server, default 3), INSTR_PROTOS (default "tcp udp").
# The table is printed and written to BUILD_DIR/instructions.md.
set -eu
B=${1:-build/bench}
SECS=${INSTR_SECONDS:-3}
PROTOS=${INSTR_PROTOS:-tcp udp}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ns-instr.XXXXXX")
SERVER_PID=
cleanup() {
    # Only what this script started, by PID.
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
command -v valgrind >/dev/null 2>&1 || { echo "instructions: valgrind is missing" >&2; exit 1; }

# measure NAME PROTO: one counted run; writes $TMP/NAME.PROTO.{ir,req}.
measure() {
    name=$1 proto=$2 out="$TMP/$1.$2"
    case $name in
        netsock) set -- "$B/ns_echo" "$proto" 127.0.0.1:0 ;;
        netsock-2t) set -- "$B/ns_echo" "$proto" 127.0.0.1:0 2 ;;
        libuv) set -- "$B/uv_best" "$proto" 127.0.0.1:0 ;;
        epoll) set -- "$B/epoll_echo" "$proto" 127.0.0.1:0 ;;
    esac
    : > "$out.port"
    taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$out.cg" "$@" > "$out.port" 2> "$out.err" &
    SERVER_PID=$!           # taskset execs valgrind, which runs the server in this process
    i=0
    while ! grep -q '^port=' "$out.port"; do
        i=$((i + 1))
        [ $i -le 200 ] || { echo "instructions: $name did not start" >&2; cat "$out.err" >&2; exit 1; }
        sleep 0.05
    done
    port=$(sed -n 's/^port=//p' "$out.port")
    case $proto in
        tcp) set -- tcp-pingpong --conns 50 ;;
        udp) set -- udp-pingpong --conns 8 ;;
    esac
    taskset -c 0 "$B/loadgen" "$@" --size 64 --duration "$SECS" --warmup 0 --port "$port" > "$out.result" || true
    sleep 0.3   # the server closes the connections
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    sed -n 's/.* requests=\([0-9]*\).*/\1/p' "$out.result" > "$out.req"
    sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$out.cg" > "$out.ir"
}

for proto in $PROTOS; do
    case $proto in tcp | udp) ;; *) echo "instructions: unknown proto $proto" >&2; exit 2 ;; esac
    if [ "$proto" = tcp ]; then servers="netsock netsock-2t libuv epoll"; else servers="netsock libuv epoll"; fi
    for name in $servers; do
        echo "instructions: $proto, $name" >&2
        measure "$name" "$proto"
    done
done

python3 - "$TMP" $PROTOS <<'EOF' | tee "$B/instructions.md"
import sys

tmp, protos = sys.argv[1], sys.argv[2:]
names = ["netsock", "netsock-2t", "libuv", "epoll"]
title = {"tcp": "TCP ping-pong 50 x 64 B", "udp": "UDP ping-pong 8 x 64 B"}


def num(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


print("## User-space instructions per request (callgrind)")
print()
print("| scenario | netsock | netsock, 2 loops | libuv | epoll | netsock / libuv | netsock / epoll | 2 loops / 1 |")
print("|---|---|---|---|---|---|---|---|")
for p in protos:
    per = {}
    for n in names:
        ir, req = num(f"{tmp}/{n}.{p}.ir"), num(f"{tmp}/{n}.{p}.req")
        per[n] = ir / req if ir and req else None
    cells = ["-" if per[n] is None else f"{per[n]:,.0f}" for n in names]
    ratios = ["-" if not (per[a] and per[b]) else f"{per[a] / per[b]:.2f}x"
              for a, b in (("netsock", "libuv"), ("netsock", "epoll"), ("netsock-2t", "netsock"))]
    print(f"| {title[p]} | " + " | ".join(cells + ratios) + " |")
EOF
