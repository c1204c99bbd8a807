#!/bin/sh
# syscalls.sh - system calls per request of each echo server, so that every extra one netsock
# makes (against raw epoll and libuv) can be explained.
#
#   sh bench/syscalls.sh [BUILD_DIR]          (make bench-syscalls; BUILD_DIR: build/bench)
#
# For each server: start it pinned to core 1, attach `strace -c -f -p PID` (all its threads),
# run a short ping-pong from core 0 (TCP: 50 connections x 64 B; UDP: 8 sockets x 64 B), detach,
# and divide each system call's count by the requests the load generator completed. strace
# (ptrace) slows the server several times over, which makes its batches per epoll_wait bigger
# than in the real benchmark: with perf available the same is also counted with `perf trace -s`
# (kernel tracepoints, far lighter), closer to the batching of an untraced run. "stream" is
# TCP streaming (4 connections of 64 KiB writes), counted per 64 KiB echoed. "resp" is
# redis-benchmark -P 16 (PING, SET, GET; SYSCALL_RESP_REQUESTS each, default 50000) against
# bench/ns_resp.c sending one reply per ns_conn_send (each) or one buffer per delivery
# (gather): with the sends of a loop turn gathered, both make the same system calls.
#
# Environment: SYSCALL_SECONDS (load per server, default 2), SYSCALL_PROTOS (default
# "tcp udp stream"), SYSCALL_TRACERS (default "strace perf"). strace is installed with apt if missing.
# The tables are printed and written to BUILD_DIR/syscalls.md.
set -eu

B=${1:-build/bench}
SECS=${SYSCALL_SECONDS:-2}
PROTOS=${SYSCALL_PROTOS:-tcp udp stream resp}
RESP_N=${SYSCALL_RESP_REQUESTS:-50000}
TRACERS=${SYSCALL_TRACERS:-strace perf}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ns-syscalls.XXXXXX")
SERVER_PID=
TRACER_PID=

cleanup() {
    # Only what this script started, by PID.
    [ -n "$TRACER_PID" ] && kill -INT "$TRACER_PID" 2>/dev/null || true
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

for bin in loadgen ns_echo uv_best epoll_echo ns_resp; do
    [ -x "$B/$bin" ] || { echo "syscalls: $B/$bin is missing: run make bench-build" >&2; exit 1; }
done
if ! command -v strace >/dev/null 2>&1; then
    echo "syscalls: installing strace" >&2
    apt-get update && apt-get install -y strace
fi
have_perf() { command -v perf >/dev/null 2>&1 && perf trace -s -o /dev/null -- true >/dev/null 2>&1; }

# start_server NAME PROTO: starts it on core 1; sets SERVER_PID and PORT.
start_server() {
    case $1 in
        netsock) set -- "$B/ns_echo" "$2" 127.0.0.1:0 ;;
        netsock-2t) set -- "$B/ns_echo" "$2" 127.0.0.1:0 2 ;;
        libuv) set -- "$B/uv_best" "$2" 127.0.0.1:0 ;;
        epoll) set -- "$B/epoll_echo" "$2" 127.0.0.1:0 ;;
        each | gather) set -- "$B/ns_resp" "$1" 127.0.0.1:0 ;;
    esac
    : > "$TMP/port"
    taskset -c 1 "$@" > "$TMP/port" 2>> "$TMP/server.log" &
    SERVER_PID=$!           # taskset execs the server: this is the server's PID
    i=0
    while ! grep -q '^port=' "$TMP/port"; do
        i=$((i + 1))
        [ $i -le 100 ] || { echo "syscalls: $1 did not start" >&2; exit 1; }
        sleep 0.05
    done
    PORT=$(sed -n 's/^port=//p' "$TMP/port")
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# measure TRACER NAME PROTO: one traced run; writes $TMP/TRACER.NAME.PROTO.{calls,req}.
measure() {
    tracer=$1 name=$2 proto=$3 out="$TMP/$1.$2.$3"
    if [ "$proto" = udp ]; then start_server "$name" udp; else start_server "$name" tcp; fi
    case $tracer in
        strace) strace -c -f -p "$SERVER_PID" -o "$out.trace" 2> "$out.err" & ;;
        perf) perf trace -s -p "$SERVER_PID" -o "$out.trace" 2> "$out.err" & ;;
    esac
    TRACER_PID=$!
    sleep 1     # attached to every thread; the idle server makes no calls meanwhile
    case $proto in
        tcp) set -- tcp-pingpong --conns 50 --size 64 ;;
        udp) set -- udp-pingpong --conns 8 --size 64 ;;
        stream) set -- tcp-stream --conns 4 --size 65536 ;;
    esac
    if [ "$proto" = resp ]; then
        # PING (inline and multibulk), SET, GET: four runs of RESP_N requests
        taskset -c 0 redis-benchmark -p "$PORT" -c 50 -P 16 -t ping,set,get -n "$RESP_N" -q \
            > "$out.bench" 2>&1 || true
        echo "requests=$((4 * RESP_N))" > "$out.result"
    else
        taskset -c 0 "$B/loadgen" "$@" --duration "$SECS" --warmup 0 --port "$PORT" \
            --pid "$SERVER_PID" > "$out.result" || true
    fi
    sleep 0.3   # the server closes the connections
    kill -INT "$TRACER_PID" 2>/dev/null || true
    wait "$TRACER_PID" 2>/dev/null || true
    TRACER_PID=
    stop_server
    # requests, or 64 KiB chunks echoed for streaming
    sed -n -e 's/.*requests=\([0-9]*\).*/\1/p' -e 's/.* bytes=\([0-9]*\).*/\1/p' "$out.result" |
        awk -v p="$proto" '{ print (p == "stream") ? int($1 / 65536) : $1 }' > "$out.req"
}

TRACERS_RUN=
for tracer in $TRACERS; do
    if [ "$tracer" = perf ] && ! have_perf; then
        echo "syscalls: perf trace is not available; counting with strace only" >&2
        continue
    fi
    TRACERS_RUN="$TRACERS_RUN $tracer"
    for proto in $PROTOS; do
        case $proto in
            tcp) servers="netsock netsock-2t libuv epoll" ;;
            udp | stream) servers="netsock libuv epoll" ;;
            resp) servers="each gather"
                  command -v redis-benchmark >/dev/null 2>&1 || {
                      echo "syscalls: redis-benchmark is missing (make bench installs it): resp skipped" >&2
                      continue; } ;;
            *) echo "syscalls: unknown proto $proto" >&2; exit 2 ;;
        esac
        for name in $servers; do
            echo "syscalls: $tracer, $proto, $name" >&2
            measure "$tracer" "$name" "$proto"
        done
    done
done

# The tables: calls per request (errors per request, such as EAGAIN, in parentheses).
python3 - "$TMP" $TRACERS_RUN <<'EOF' | tee "$B/syscalls.md"
import os, re, sys

tmp, tracers = sys.argv[1], sys.argv[2:]

def parse(tracer, path):
    calls = {}
    for line in open(path, errors="replace"):
        f = line.split()
        if tracer == "strace":
            # % time  seconds  usecs/call  calls  [errors]  syscall
            if len(f) in (5, 6) and re.fullmatch(r"[\d.]+", f[0]) and f[-1] != "total":
                calls[f[-1]] = (int(f[3]), int(f[4]) if len(f) == 6 else 0)
        else:
            # syscall  calls  errors  total  min  avg  max  stddev   (one block per thread)
            if len(f) >= 8 and f[1].isdigit() and f[2].isdigit() and not f[0].startswith("-"):
                c, e = calls.get(f[0], (0, 0))
                calls[f[0]] = (c + int(f[1]), e + int(f[2]))
    return calls

for tracer in tracers:
    for proto in ("tcp", "udp", "stream", "resp"):
        names = [n for n in ("netsock", "netsock-2t", "libuv", "epoll", "each", "gather")
                 if os.path.exists(f"{tmp}/{tracer}.{n}.{proto}.req")]
        if not names:
            continue
        data, reqs = {}, {}
        for n in names:
            base = f"{tmp}/{tracer}.{n}.{proto}"
            req = open(base + ".req").read().strip()
            reqs[n] = int(req) if req else 0
            data[n] = parse(tracer, base + ".trace") if os.path.exists(base + ".trace") else {}
        what, per = {"tcp": ("TCP ping-pong 50 x 64 B", "request"), "udp": ("UDP ping-pong 8 x 64 B", "request"),
                     "stream": ("TCP streaming 4 x 64 KiB writes", "64 KiB echoed"),
                     "resp": ("RESP, redis-benchmark -P 16 against ns_resp each / gather", "request")}[proto]
        print(f"\n## {what}: system calls per {per} ({tracer}; errors in parentheses)\n")
        print("| syscall | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        rows = sorted({s for n in names for s in data[n]},
                      key=lambda s: -max(data[n].get(s, (0, 0))[0] / max(1, reqs[n]) for n in names))
        totals = {n: 0.0 for n in names}
        for s in rows:
            cells = []
            for n in names:
                c, e = data[n].get(s, (0, 0))
                r = max(1, reqs[n])
                totals[n] += c / r
                cells.append("-" if c == 0 else f"{c / r:.3f}" + (f" ({e / r:.3f})" if e else ""))
            if all(data[n].get(s, (0, 0))[0] / max(1, reqs[n]) < 0.001 for n in names):
                continue   # per-connection setup and teardown: not per request
            print(f"| {s} | " + " | ".join(cells) + " |")
        print("| **total** | " + " | ".join(f"**{totals[n]:.3f}**" for n in names) + " |")
        print(f"| traced ({per}) | " + " | ".join(str(reqs[n]) for n in names) + " |")
EOF
