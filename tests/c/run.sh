#!/bin/sh
# Runs every DIR/test_* program (each under `timeout 120`), shows its output,
# and ends with one summary line: "C: N passed, N failed" (programs).
# Exit status 1 if any program failed (non-zero exit, crash or timeout).
# Usage: sh tests/c/run.sh DIR
dir=${1:?usage: run.sh DIR}
passed=0
failed=0
failed_names=
found=0

for t in "$dir"/test_*; do
    [ -f "$t" ] && [ -x "$t" ] || continue
    case $t in *.c|*.o|*.d|*.dSYM) continue ;; esac
    found=1
    name=$(basename "$t")
    echo "=== $name"
    timeout 120 "$t" 2>&1
    rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "=== $name: PASS"
        passed=$((passed + 1))
    else
        if [ "$rc" -eq 124 ]; then
            why="timed out after 120 s"
        elif [ "$rc" -gt 128 ]; then
            why="killed by signal $((rc - 128))"
        else
            why="exit status $rc"
        fi
        echo "=== $name: FAIL ($why)"
        failed=$((failed + 1))
        failed_names="$failed_names $name"
    fi
done

if [ "$found" -eq 0 ]; then
    echo "no test programs found in $dir" >&2
    failed=$((failed + 1))
fi
[ -n "$failed_names" ] && echo "failed:$failed_names"
echo "C: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
