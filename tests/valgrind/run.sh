#!/bin/sh
# Runs C test programs under valgrind's memcheck (make test-valgrind, test-valgrind-all).
# Usage: sh tests/valgrind/run.sh [-t SECONDS] [-s "NAMES"] [-m "NAMES"] DIR LOGDIR
#   DIR     holds the plain test_* programs (build/tests) and the canary
#   LOGDIR  gets the valgrind logs, one per process (NAME.PID.log: a test may fork)
#   -t      time limit per program (default 300 s; valgrind is 5-50x slower)
#   -s      program names to skip (the slow ones, for the quick run in make test)
#   -m      program names checked for memory errors only: valgrind must find nothing, but the
#           program's own verdict is shown and not counted (for a test whose subject valgrind
#           emulates differently from the kernel; hardening.mk says which and why)
#
# The canary first: a leaked ns_options must make valgrind fail with a definite
# leak, proving memcheck sees the Rust library's heap. Then each program runs as
#   valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect
# and passes only if it exits 0 and each of its logs says "ERROR SUMMARY: 0 errors" (no
# invalid access, no uninitialised use, no definitely or indirectly lost bytes;
# "possibly lost" and "still reachable" are not errors: Rust's std keeps a few
# one-time allocations, such as the main thread's handle, to the end). Each
# program's time is shown. Ends with "valgrind: N passed, N failed, N skipped,
# N errors, N bytes definitely+indirectly lost".
limit=300
skip=
memonly=
while [ $# -gt 0 ]; do
    case $1 in
        -t) limit=$2; shift 2 ;;
        -s) skip=$2; shift 2 ;;
        -m) memonly=$2; shift 2 ;;
        *) break ;;
    esac
done
dir=${1:?usage: run.sh [-t SECONDS] [-s NAMES] DIR LOGDIR}
logdir=${2:?usage: run.sh [-t SECONDS] [-s NAMES] DIR LOGDIR}
mkdir -p "$logdir"

vg="valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect"
vg="$vg --show-leak-kinds=definite,indirect --num-callers=40"
# ring's crypto assembly, which memcheck cannot follow (see the file for why).
vg="$vg --suppressions=$(dirname "$0")/ring.supp"
# ... and the same sealed bytes gathered into one sendmsg from a connection's queue (at most 64
# iovecs; a Param suppression names its parameter exactly).
i=0
while [ "$i" -lt 64 ]; do
    printf '{\n   ring-sealed-bytes-gathered-%d\n   Memcheck:Param\n   sendmsg(msg.msg_iov[%d])\n   ...\n   fun:*OutQueue*write_with*\n}\n' "$i" "$i"
    i=$((i + 1))
done >"$logdir/queue.supp"
vg="$vg --suppressions=$logdir/queue.supp"

command -v valgrind >/dev/null || { echo "valgrind is not installed"; exit 1; }

# Sum of "<what>: N bytes" over valgrind logs (0 if absent).
lost() {
    what=$1; shift
    cat "$@" 2>/dev/null | sed -n "s/.*$what: \([0-9,]*\) bytes.*/\1/p" | tr -d , |
        awk '{s += $1} END {print s + 0}'
}

# The canary.
rm -f "$logdir/canary.log"
$vg --log-file="$logdir/canary.log" "$dir/canary" leak >/dev/null 2>&1
rc=$?
if [ "$rc" -ne 1 ] || [ "$(lost 'definitely lost' "$logdir/canary.log")" -eq 0 ]; then
    cat "$logdir/canary.log"
    echo "canary: a leaked ns_options did not fail the valgrind run (exit $rc): memcheck is not working"
    exit 1
fi
echo "canary: a leak inside netsock fails the valgrind run"

passed=0 failed=0 skipped=0 errors=0 bytes=0 failed_names=
for t in "$dir"/test_*; do
    [ -f "$t" ] && [ -x "$t" ] || continue
    case $t in *.c|*.o|*.d|*.log) continue ;; esac
    name=$(basename "$t")
    case " $skip " in *" $name "*)
        echo "=== $name: skipped (slow under valgrind; make test-valgrind-all runs it)"
        skipped=$((skipped + 1)); continue ;;
    esac
    rm -f "$logdir/$name".*.log
    echo "=== $name (valgrind)"
    start=$(date +%s%N)
    timeout "$limit" $vg --log-file="$logdir/$name.%p.log" "$t" 2>&1
    rc=$?
    secs=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN {printf "%.1f", (b - a) / 1e9}')
    logs=$(ls "$logdir/$name".*.log 2>/dev/null)
    # The errors are summed over the processes (a forked child has a log of its own; one
    # killed by a signal writes no summary, which is noted).
    procs=$(echo "$logs" | grep -c .)
    summaries=$(cat $logs 2>/dev/null | grep -c 'ERROR SUMMARY:')
    n=$(cat $logs 2>/dev/null | sed -n 's/.*ERROR SUMMARY: \([0-9,]*\) errors.*/\1/p' | tr -d , |
        awk '{s += $1} END {print s + 0}')
    [ "$summaries" -gt 0 ] || n="?"
    [ "$summaries" -lt "$procs" ] &&
        echo "($name: $((procs - summaries)) of its $procs processes ended without a valgrind summary)"
    b=$(( $(lost 'definitely lost' $logs) + $(lost 'indirectly lost' $logs) ))
    [ "$n" = "?" ] || errors=$((errors + n))
    bytes=$((bytes + b))
    ok=0
    if [ "$n" = 0 ]; then
        if [ "$rc" -eq 0 ]; then
            ok=1
        else
            # memory-check only: its verdict does not count, but a crash or a hang does
            case " $memonly " in *" $name "*)
                [ "$rc" -le 128 ] && [ "$rc" -ne 124 ] && ok=1 ;;
            esac
        fi
    fi
    if [ "$ok" -eq 1 ]; then
        if [ "$rc" -eq 0 ]; then
            echo "=== $name: PASS under valgrind (${secs} s)"
        else
            echo "=== $name: PASS under valgrind (${secs} s): no memory error; its own checks failed" \
                 "(exit $rc), not counted: memory-check only (tests/hardening.mk says why)"
        fi
        passed=$((passed + 1))
    else
        if [ "$rc" -eq 124 ]; then
            why="timed out after $limit s"
        elif [ "$rc" -gt 128 ]; then
            why="killed by signal $((rc - 128))"
        else
            why="exit status $rc"
        fi
        [ -n "$logs" ] && cat $logs
        echo "=== $name: FAIL under valgrind ($why, $n valgrind errors, $b bytes lost, ${secs} s; logs: $logdir/$name.*.log)"
        failed=$((failed + 1))
        failed_names="$failed_names $name"
    fi
done

[ $((passed + failed)) -gt 0 ] || { echo "no test programs found in $dir" >&2; failed=$((failed + 1)); }
[ -n "$failed_names" ] && echo "failed:$failed_names"
echo "valgrind: $passed passed, $failed failed, $skipped skipped, $errors errors, $bytes bytes definitely+indirectly lost"
[ "$failed" -eq 0 ]
