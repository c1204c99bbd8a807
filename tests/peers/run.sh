#!/bin/sh
# tests/peers/run.sh - the RESP and DNS examples against clients nobody here wrote:
# redis-cli and redis-benchmark (Debian's redis-tools) against examples-c/resp_server, and
# dig (bind9-dnsutils) against examples-c/dns_server; TLS: openssl s_client and Python's ssl
# against examples-c/tls_echo_server, examples-c/tls_client against openssl s_server and a
# Python ssl server, mutual TLS both ways (certificates from tests/tls/certs.sh); then
# tests/peers/scale.py: fd:3 from a parent, systemd-socket-activate (systemd), prefork
# workers, HAProxy (haproxy) with the PROXY protocol, and a handoff under load. `make
# test-peers` (part of `make test`) builds the examples, installs the tools when they are
# missing, and runs this.
#
#   sh tests/peers/run.sh BINDIR        BINDIR holds the built examples
#   PEERS_VALGRIND=1 sh tests/peers/run.sh BINDIR
#                                       the servers run under valgrind memcheck: any error,
#                                       or a definite or indirect leak, fails
#
# Servers listen on 127.0.0.1 port 0 (the port they report in their "listening on" line);
# files go to a temporary directory; every wait is bounded. Ends with the line
# "peers: N passed, N failed"; exit status 1 if any check failed.
set -u

bindir=${1:?usage: run.sh BINDIR}
for tool in redis-cli redis-benchmark dig timeout openssl; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "peers: $tool not found (make test-peers installs redis-tools and bind9-dnsutils)" >&2
        exit 1
    }
done
for prog in resp_server dns_server tls_echo_server tls_client; do
    [ -x "$bindir/$prog" ] || { echo "peers: $bindir/$prog not found (build it first)" >&2; exit 1; }
done
have_python=0
command -v python3 >/dev/null 2>&1 && have_python=1

tmp=$(mktemp -d "${TMPDIR:-/tmp}/netsock-peers.XXXXXX")
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

passed=0
failed=0
wrap=
limit=10 # seconds a server gets to start and to stop
if [ "${PEERS_VALGRIND:-0}" != 0 ]; then
    command -v valgrind >/dev/null 2>&1 || { echo "peers: valgrind not found" >&2; exit 1; }
    limit=60
fi

pass() {
    passed=$((passed + 1))
    printf 'ok   %s\n' "$1"
}

fail() {
    failed=$((failed + 1))
    printf 'FAIL %s\n' "$1"
    shift
    [ $# -gt 0 ] && printf '%s\n' "$@" | sed 's/^/     | /'
    return 0
}

# expect NAME EXPECTED ACTUAL: the two texts equal.
expect() {
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "expected: $2" "got:      $3"; fi
}

# contains NAME NEEDLE HAYSTACK
contains() {
    case $3 in
    *"$2"*) pass "$1" ;;
    *) fail "$1" "expected to contain: $2" "got: $3" ;;
    esac
}

nap() { sleep 0.1 2>/dev/null || sleep 1; }

# start_server NAME ARGS...: start $bindir/NAME ARGS in the background (under valgrind with
# PEERS_VALGRIND=1) and wait for its "listening on" line; sets server_pid, server_log, port.
start_server() {
    name=$1
    shift
    server_log=$tmp/$name.log
    : >"$server_log"
    if [ "${PEERS_VALGRIND:-0}" != 0 ]; then
        valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
            --show-leak-kinds=definite,indirect --log-file="$tmp/$name.valgrind.log" \
            --suppressions="$(dirname "$0")/../valgrind/ring.supp" \
            "$bindir/$name" "$@" >>"$server_log" 2>&1 &
    else
        "$bindir/$name" "$@" >>"$server_log" 2>&1 &
    fi
    server_pid=$!
    tries=0
    while :; do
        addr=$(sed -n 's/^listening on //p' "$server_log")
        if [ -n "$addr" ]; then
            port=${addr##*:}
            echo "--- $name listening on $addr"
            return 0
        fi
        if ! kill -0 "$server_pid" 2>/dev/null || [ "$tries" -ge $((limit * 10)) ]; then
            fail "$name starts" "$(cat "$server_log")"
            kill -KILL "$server_pid" 2>/dev/null
            wait "$server_pid" 2>/dev/null
            server_pid=
            return 1
        fi
        tries=$((tries + 1))
        nap
    done
}

# stop_server NAME: SIGINT, then the server must exit 0 within the limit (and valgrind
# must have found nothing).
stop_server() {
    kill -INT "$server_pid" 2>/dev/null
    tries=0
    while kill -0 "$server_pid" 2>/dev/null && [ "$tries" -lt $((limit * 10)) ]; do
        tries=$((tries + 1))
        nap
    done
    if kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
        server_pid=
        fail "$1 stops on SIGINT within $limit s" "$(tail -n 20 "$server_log")"
        return
    fi
    status=0
    wait "$server_pid" || status=$?
    server_pid=
    if [ "$status" -eq 0 ]; then
        pass "$1 stops on SIGINT, exit status 0"
    elif [ "$status" -eq 99 ]; then
        fail "$1: valgrind found errors" "$(grep -A12 -E 'Invalid|uninitialised|definitely|indirectly' \
            "$tmp/$1.valgrind.log" | head -n 60)"
    else
        fail "$1 exits 0 after SIGINT (got $status)" "$(tail -n 20 "$server_log")"
    fi
}

# ---- RESP: redis-cli and redis-benchmark against resp_server ------------------------------

if start_server resp_server 127.0.0.1:0; then
    cli() { timeout 20 redis-cli -h 127.0.0.1 -p "$port" "$@" 2>&1; }

    expect "redis-cli PING" "PONG" "$(cli PING)"
    expect "redis-cli SET greeting hello" "OK" "$(cli SET greeting hello)"
    expect "redis-cli GET greeting" "hello" "$(cli GET greeting)"
    expect "redis-cli INCR visits (new key)" "1" "$(cli INCR visits)"
    expect "redis-cli INCR visits" "2" "$(cli INCR visits)"
    expect "redis-cli INCR of a word: an error" "ERR value is not an integer or out of range" \
        "$(cli INCR greeting)"
    expect "redis-cli DEL greeting visits missing" "2" "$(cli DEL greeting visits missing)"
    expect "redis-cli GET of a deleted key: nil" "" "$(cli GET greeting)"
    expect "redis-cli ECHO" "hi there" "$(cli ECHO 'hi there')"

    # A value holding "\r\n" (RESP is binary-safe; a "\r\n" delimiter framing is not).
    printf 'one\r\ntwo\r\n' >"$tmp/crlf"
    cli -x SET crlf <"$tmp/crlf" >/dev/null
    cli --no-raw GET crlf >"$tmp/crlf.got"
    expect "a value with \\r\\n in it comes back whole" '"one\r\ntwo\r\n"' "$(cat "$tmp/crlf.got")"

    # 300 KB of random bytes: one command over many reads, kept with ns_conn_keep between them.
    head -c 300000 /dev/urandom >"$tmp/big"
    expect "redis-cli -x SET of 300 KB of random bytes" "OK" "$(cli -x SET big <"$tmp/big")"
    cli GET big >"$tmp/big.got"
    if head -c 300000 "$tmp/big.got" | cmp -s - "$tmp/big" && [ "$(wc -c <"$tmp/big.got")" -eq 300001 ]; then
        pass "redis-cli GET gives the 300 KB back byte for byte"
    else
        fail "redis-cli GET gives the 300 KB back byte for byte" "got $(wc -c <"$tmp/big.got") bytes"
    fi

    # Commands typed into redis-cli (stdin not a terminal: one per line, replies in order).
    printf 'SET counter 10\nINCR counter\nINCR counter\nGET counter\nDEL counter\n' >"$tmp/lines"
    expect "commands piped into redis-cli" "$(printf 'OK\n11\n12\n12\n1')" "$(cli <"$tmp/lines")"

    # Pipelining: 2,000 commands in RESP written as fast as redis-cli --pipe can.
    awk 'BEGIN {
        for (i = 0; i < 1000; i++) {
            k = "key:" i; v = "value\r\n" i
            printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v
            printf "*2\r\n$4\r\nINCR\r\n$5\r\nhits!\r\n"
        }
    }' >"$tmp/pipe"
    contains "redis-cli --pipe: 2,000 pipelined commands" "errors: 0, replies: 2000" \
        "$(cli --pipe <"$tmp/pipe")"
    expect "after the pipeline: INCR counted every one" "1000" "$(cli GET 'hits!')"
    expect "after the pipeline: the last SET" '"value\r\n999"' "$(cli --no-raw GET key:999)"

    # redis-benchmark: inline and multibulk PING, SET, GET; pipelined 16 deep, then not. (A
    # test done within its clock's tick reports "inf" requests per second: that is a pass.)
    for depth in 16 1; do
        out=$(timeout 60 redis-benchmark -h 127.0.0.1 -p "$port" -t ping,set,get -n 2000 -P "$depth" -q \
            2>&1 | tr '\r' '\n')
        status=$?
        summary=$(printf '%s\n' "$out" | grep 'requests per second' | grep -v 'rps=' | sed 's/^ *//')
        if [ "$status" -eq 0 ] && [ "$(printf '%s\n' "$summary" | grep -c -E \
            '^(PING_INLINE|PING_MBULK|SET|GET): ([0-9.]+|inf) requests per second')" -eq 4 ] &&
            ! printf '%s\n' "$out" | grep -q -i -E 'error|warning'; then
            pass "redis-benchmark -t ping,set,get -n 2000 -P $depth (req/s: $(printf '%s\n' "$summary" |
                sed 's/ requests per second.*//' | tr '\n' ' ' | sed 's/ $//'))"
        else
            fail "redis-benchmark -t ping,set,get -n 2000 -P $depth completes with no error" "$out"
        fi
    done

    if [ "$have_python" -eq 1 ]; then
        # Inline commands split at every byte, and protocol errors: a plain socket client.
        out=$(timeout 20 python3 - "$port" <<'EOF' 2>&1
import socket, sys, time
port = int(sys.argv[1])

def talk(chunks, want_close=False):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    for c in chunks:
        s.sendall(c)
        time.sleep(0.002)
    got = b""
    s.settimeout(0.5 if not want_close else 5)
    try:
        while True:
            b = s.recv(4096)
            if not b:
                got += b"<closed>"
                break
            got += b
    except socket.timeout:
        pass
    s.close()
    return got

inline = b"PING\r\nECHO split\r\nSET k v\nGET k\r\n"
print("inline:", talk([inline[i:i + 1] for i in range(len(inline))]))
print("bad length:", talk([b"*1\r\n$x\r\n"], True))
print("too long:", talk([b"*1\r\n$9999999\r\n"], True))
print("quit:", talk([b"*1\r\n$4\r\nQUIT\r\n*1\r\n$4\r\nPING\r\n"], True))
EOF
)
        contains "inline commands, sent a byte at a time" \
            "inline: b'+PONG\\r\\n\$5\\r\\nsplit\\r\\n+OK\\r\\n\$1\\r\\nv\\r\\n'" "$out"
        contains "a bad bulk length: protocol error, then closed" \
            "bad length: b'-ERR Protocol error: invalid bulk length\\r\\n<closed>'" "$out"
        contains "a bulk length over 512 KiB: protocol error before it is buffered" \
            "too long: b'-ERR Protocol error: invalid bulk length\\r\\n<closed>'" "$out"
        contains "QUIT: +OK, then closed (the PING after it unanswered)" "quit: b'+OK\\r\\n<closed>'" "$out"
    else
        echo "(python3 not found: inline and protocol-error checks skipped)"
    fi
    expect "the server is still up" "PONG" "$(cli PING)"
    stop_server resp_server
fi

# ---- DNS over TCP: dig against dns_server -----------------------------------------------

if start_server dns_server 127.0.0.1:0 10.1.2.3; then
    dig_() { timeout 20 dig +tcp @127.0.0.1 -p "$port" +tries=1 +time=2 "$@" 2>&1; }

    expect "dig +tcp example.com A +short" "10.1.2.3" "$(dig_ example.com A +short)"
    out=$(dig_ example.com AAAA)
    contains "dig +tcp example.com AAAA: NOERROR" "status: NOERROR" "$out"
    contains "dig +tcp example.com AAAA: no record" "ANSWER: 0," "$out"
    expect "dig +tcp +keepopen: three queries on one connection" "$(printf '10.1.2.3\n10.1.2.3')" \
        "$(dig_ +keepopen one.example A +short two.example A +short three.example MX +short)"
    contains "dig +opcode=status: NOTIMP" "status: NOTIMP" "$(dig_ +opcode=status example.com)"

    if [ "$have_python" -eq 1 ]; then
        # Hostile frames: each connection must be closed (after a FORMERR where one fits).
        out=$(timeout 30 python3 - "$port" <<'EOF' 2>&1
import socket, struct, sys
port = int(sys.argv[1])

def frame(msg):
    return struct.pack(">H", len(msg)) + msg

def closed_after(data):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(data)
    got = b""
    try:
        while True:
            b = s.recv(4096)
            if not b:
                return "closed after %d bytes" % len(got)
            got += b
    except socket.timeout:
        return "still open after 5 s"
    except ConnectionResetError:
        return "closed after %d bytes" % len(got)

header = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0)
cases = {
    "empty frame": frame(b""),
    "short header": frame(b"\x00\x07\x01"),
    "a response": frame(struct.pack(">HHHHHH", 7, 0x8000, 1, 0, 0, 0) + b"\x00\x00\x01\x00\x01"),
    "pointer in the question": frame(header + b"\xc0\x0c\x00\x01\x00\x01"),
    "label past the end": frame(header + b"\x3fabc"),
    "no type and class": frame(header + b"\x03abc\x00\x00"),
    "name over 255 bytes": frame(header + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01"),
    "length over max_frame": b"\xff\xff" + b"x" * 100,
}
for name, data in cases.items():
    print("%s: %s" % (name, closed_after(data)))
EOF
)
        for case in "empty frame" "short header" "a response" "length over max_frame"; do
            contains "hostile input, $case: closed" "$case: closed after 0 bytes" "$out"
        done
        for case in "pointer in the question" "label past the end" "no type and class" "name over 255 bytes"; do
            # A FORMERR reply: 2 length bytes + a 12-byte header.
            contains "hostile input, $case: FORMERR, then closed" "$case: closed after 14 bytes" "$out"
        done
    else
        echo "(python3 not found: hostile-input checks skipped)"
    fi
    expect "the server still answers" "10.1.2.3" "$(dig_ after.example A +short)"
    stop_server dns_server
fi

# Past one process (issue 15): inherited and socket-activated sockets, reuseport workers,
# HAProxy with the PROXY protocol, a restart under load (tests/peers/scale.py says what).
if [ "$have_python" -eq 1 ] && command -v haproxy >/dev/null 2>&1 &&
    command -v systemd-socket-activate >/dev/null 2>&1; then
    out=$(timeout 300 python3 "$(dirname "$0")/scale.py" "$bindir" 2>&1)
    status=$?
    printf '%s\n' "$out"
    passed=$((passed + $(printf '%s\n' "$out" | grep -c '^ok   ')))
    failed=$((failed + $(printf '%s\n' "$out" | grep -c '^FAIL ')))
    if [ "$status" -ne 0 ] && ! printf '%s\n' "$out" | grep -q '^FAIL '; then
        fail "tests/peers/scale.py ran to its end" "exit status $status"
    fi
else
    fail "tests/peers/scale.py needs python3, haproxy and systemd-socket-activate" \
        "(make test-peers installs haproxy and systemd)"
fi

# ---- TLS: openssl and Python's ssl against tls_echo_server and tls_client ----------------
c=$tmp/certs
if ! sh "$(dirname "$0")/../tls/certs.sh" "$c"; then
    fail "test certificates made by tests/tls/certs.sh"
elif start_server tls_echo_server 127.0.0.1:0 "$c/server.pem" "$c/server.key"; then
    for v in 1_2 1_3; do
        out=$( (printf 'hello-tls%s\n' "$v"; sleep 1) | timeout 10 openssl s_client -connect "127.0.0.1:$port" \
            -tls$v -servername localhost -alpn echo -CAfile "$c/ca.pem" -verify_return_error -brief 2>&1)
        contains "openssl s_client -tls$v: verified" "Verification: OK" "$out"
        contains "openssl s_client -tls$v: protocol" "TLSv$(echo "$v" | tr _ .)" "$out"
        contains "openssl s_client -tls$v: the line echoed" "hello-tls$v" "$out"
    done
    contains "the server saw SNI localhost and ALPN echo" 'SNI "localhost", ALPN "echo"' "$(cat "$server_log")"
    out=$( (sleep 1) | timeout 10 openssl s_client -connect "127.0.0.1:$port" -alpn h2 \
        -CAfile "$c/ca.pem" -brief 2>&1)
    contains "openssl s_client -alpn h2 (not offered by the server): refused" "no application protocol" "$out"
    if [ "$have_python" -eq 1 ]; then
        out=$(python3 - "$port" "$c/ca.pem" <<'PY'
import socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ctx.maximum_version = v
    data = bytes(range(256)) * 1024
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            version = s.version()
            s.sendall(data)
            got = b""
            while len(got) < len(data):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            s.unwrap()  # close_notify, and the server's in return
            print("%s: %s" % (version, "echoed" if got == data else "got %d bytes" % len(got)))
PY
)
        contains "Python ssl TLS 1.2: 256 KB echoed, close_notify" "TLSv1.2: echoed" "$out"
        contains "Python ssl TLS 1.3: 256 KB echoed, close_notify" "TLSv1.3: echoed" "$out"
        nap
        contains "close_notify from Python's ssl is an orderly close (NS_OK)" "closed: NS_OK" "$(cat "$server_log")"
    fi
    stop_server tls_echo_server
fi

if [ -f "$c/ca.pem" ] && start_server tls_echo_server 127.0.0.1:0 "$c/server.pem" "$c/server.key" "$c/ca.pem"; then
    out=$( (printf 'mutual\n'; sleep 1) | timeout 10 openssl s_client -connect "127.0.0.1:$port" \
        -servername localhost -CAfile "$c/ca.pem" -cert "$c/client.pem" -key "$c/client.key" -brief 2>&1)
    contains "mutual TLS: openssl s_client with a client certificate is served" "mutual" "$out"
    out=$( (printf 'anonymous\n'; sleep 1) | timeout 10 openssl s_client -connect "127.0.0.1:$port" \
        -servername localhost -CAfile "$c/ca.pem" -brief 2>&1)
    contains "mutual TLS: openssl s_client without one is refused" "alert" "$out"
    stop_server tls_echo_server
fi

# s_server PORT ARGS...: openssl s_server on 127.0.0.1:PORT for one connection, reversing
# lines; sets spid.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
s_server() {
    sport=$1
    shift
    : >"$tmp/s_server.log"
    timeout 20 openssl s_server -accept "127.0.0.1:$sport" -rev -naccept 1 "$@" >"$tmp/s_server.log" 2>&1 &
    spid=$!
    tries=0
    while ! grep -q ACCEPT "$tmp/s_server.log" 2>/dev/null && [ "$tries" -lt 50 ]; do
        tries=$((tries + 1))
        nap
    done
}
if [ -f "$c/ca.pem" ] && [ "$have_python" -eq 1 ]; then
    for v in 1_2 1_3; do
        sp=$(free_port)
        s_server "$sp" -cert "$c/server.pem" -key "$c/server.key" -tls$v
        out=$(timeout 10 "$bindir/tls_client" "localhost:$sp" "$c/ca.pem" "to s_server" 2>&1)
        contains "tls_client against openssl s_server -tls$v: the line comes back reversed" "reply: revres_s ot" "$out"
        contains "tls_client against openssl s_server -tls$v: close_notify both ways" "closed: NS_OK" "$out"
        wait "$spid" 2>/dev/null
    done
    sp=$(free_port)
    s_server "$sp" -cert "$c/server.pem" -key "$c/server.key" -Verify 1 -CAfile "$c/ca.pem"
    out=$(timeout 10 "$bindir/tls_client" "localhost:$sp" "$c/ca.pem" "mutual" "$c/client.pem" "$c/client.key" 2>&1)
    contains "mutual TLS: tls_client with a client certificate, against openssl s_server -Verify" "reply: lautum" "$out"
    wait "$spid" 2>/dev/null
    sp=$(free_port)
    s_server "$sp" -cert "$c/server.pem" -key "$c/server.key" -Verify 1 -CAfile "$c/ca.pem"
    out=$(timeout 10 "$bindir/tls_client" "localhost:$sp" "$c/ca.pem" "anonymous" 2>&1)
    case $out in
    *"reply: suomynona"*) fail "mutual TLS: tls_client without a certificate is refused by s_server" "$out" ;;
    *) pass "mutual TLS: tls_client without a certificate is refused by s_server" ;;
    esac
    wait "$spid" 2>/dev/null
    sp=$(free_port)
    s_server "$sp" -cert "$c/wrongname.pem" -key "$c/wrongname.key"
    out=$(timeout 10 "$bindir/tls_client" "localhost:$sp" "$c/ca.pem" "hi" 2>&1)
    contains "tls_client refuses a certificate for another name" "not valid for name" "$out"
    kill "$spid" 2>/dev/null
    wait "$spid" 2>/dev/null

    # A Python ssl echo server (TLS 1.2, then 1.3 requiring a client certificate).
    out=$(python3 - "$bindir/tls_client" "$c" <<'PY'
import socket, ssl, subprocess, sys, threading
client, c = sys.argv[1], sys.argv[2]
for v, mutual in ((ssl.TLSVersion.TLSv1_2, False), (ssl.TLSVersion.TLSv1_3, True)):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ctx.maximum_version = v
    ctx.load_cert_chain(c + "/server.pem", c + "/server.key")
    if mutual:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(c + "/ca.pem")
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(10)
    port = lsock.getsockname()[1]
    seen = {}
    def serve():
        conn, _ = lsock.accept()
        conn.settimeout(10)
        with ctx.wrap_socket(conn, server_side=True) as s:
            seen["version"] = s.version()
            seen["peer"] = bool(s.getpeercert())
            data = s.recv(4096)
            s.sendall(data.upper())
            try:
                s.unwrap()
                seen["close_notify"] = True
            except (ssl.SSLError, OSError) as e:
                seen["close_notify"] = repr(e)
    t = threading.Thread(target=serve)
    t.start()
    args = [client, "localhost:%d" % port, c + "/ca.pem", "shout"]
    if mutual:
        args += [c + "/client.pem", c + "/client.key"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=15).stdout
    t.join(15)
    print("%s mutual=%s: %s, client cert seen %s, close_notify %s" % (
        seen.get("version"), mutual, "SHOUT" if "reply: SHOUT" in out else out.strip(),
        seen.get("peer"), seen.get("close_notify")))
PY
)
    contains "tls_client against Python's ssl server, TLS 1.2" "TLSv1.2 mutual=False: SHOUT, client cert seen False, close_notify True" "$out"
    contains "tls_client against Python's ssl server, TLS 1.3, mutual TLS" "TLSv1.3 mutual=True: SHOUT, client cert seen True, close_notify True" "$out"
fi

echo "peers: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
