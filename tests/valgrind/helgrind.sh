#!/bin/sh
# Runs the thread-heavy C tests once under valgrind's helgrind (make helgrind; not part of
# make test) and groups its reports with helgrind_summary.py.
# Usage: sh tests/valgrind/helgrind.sh DIR LOGDIR NAME...
#   DIR holds the plain test programs, LOGDIR gets NAME.log (helgrind's full report) per
#   program; names with no program in DIR are skipped.
# helgrind knows pthread locks only: netsock's std Mutex/Condvar (futexes) and atomics are
# invisible to it, so most of what it prints is ordered access it cannot see (see the summary
# script's comment). Helgrind is slower still than memcheck, and timing checks of the tests
# may fail under it: their verdict is shown, not counted. Exit status 1 only if a program
# crashed or hung; the reports are for a person to judge.
dir=${1:?usage: helgrind.sh DIR LOGDIR NAME...}
logdir=${2:?usage: helgrind.sh DIR LOGDIR NAME...}
shift 2
here=$(dirname "$0")
python=${PYTHON:-python3}
mkdir -p "$logdir"
command -v valgrind >/dev/null || { echo "valgrind is not installed"; exit 1; }

failed=0 logs=
for name in "$@"; do
    t=$dir/$name
    [ -x "$t" ] || { echo "=== $name: no such program, skipped"; continue; }
    log=$logdir/$name.log
    echo "=== $name (helgrind)"
    start=$(date +%s%N)
    timeout 900 valgrind --tool=helgrind --num-callers=40 --log-file="$log" "$t" 2>&1
    rc=$?
    secs=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN {printf "%.1f", (b - a) / 1e9}')
    if [ "$rc" -eq 0 ]; then
        echo "=== $name: passed under helgrind (${secs} s)"
    elif [ "$rc" -le 128 ] && [ "$rc" -ne 124 ]; then
        echo "=== $name: its own checks failed under helgrind (exit $rc, ${secs} s): shown, not counted"
    else
        echo "=== $name: CRASHED or HUNG under helgrind (exit $rc, ${secs} s)"
        failed=1
    fi
    logs="$logs $log"
done
[ -n "$logs" ] && "$python" "$here/helgrind_summary.py" $logs
exit $failed
