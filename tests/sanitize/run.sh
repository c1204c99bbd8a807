#!/bin/sh
# Runs the C tests built with -fsanitize=address,undefined (make test-asan).
# Usage: sh tests/sanitize/run.sh DIR     (DIR holds test_* and canary)
#
#  1. Every DIR/test_* must really carry the sanitizers: nm finds __asan_init
#     and __ubsan_handle_* in it (the runtimes are linked as libasan/libubsan).
#  2. The canary proves reports are fatal and see into the Rust library: a
#     leaked ns_options must give a LeakSanitizer report and a failing exit,
#     a signed overflow in C a fatal UBSan "runtime error".
#  3. tests/c/run.sh runs the programs with every report fatal (abort), leak
#     detection on; its output is kept in DIR/run.log and searched for reports
#     too, so a report can never pass unseen. Ends with
#     "ASan/UBSan: N programs, N failed, N sanitizer reports".
# Extra options may be given in ASAN_OPTIONS / UBSAN_OPTIONS (they come after
# the defaults below, so they win).
dir=${1:?usage: run.sh DIR}
here=$(dirname "$0")

ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:print_stacktrace=1:fast_unwind_on_malloc=0:detect_stack_use_after_return=1:strict_string_checks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export ASAN_OPTIONS UBSAN_OPTIONS

reports='ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer|WARNING: AddressSanitizer'

# 1. the sanitizers are linked in
n=0
for t in "$dir"/test_*; do
    [ -f "$t" ] && [ -x "$t" ] || continue
    case $t in *.c|*.o|*.d|*.log) continue ;; esac
    n=$((n + 1))
    syms=$(nm "$t" 2>/dev/null)
    echo "$syms" | grep -q '__asan_init' || { echo "$t: not built with AddressSanitizer (no __asan_init)"; exit 1; }
    echo "$syms" | grep -q '__ubsan_handle_' || { echo "$t: not built with UBSan (no __ubsan_handle_*)"; exit 1; }
done
[ "$n" -gt 0 ] || { echo "no test programs in $dir"; exit 1; }
echo "sanitizers linked into all $n test programs (__asan_init, __ubsan_handle_*)"

# 2. the canary: reports happen, are fatal, and see the Rust library's heap
out=$("$dir/canary" leak 2>&1)
rc=$?
if [ "$rc" -eq 0 ] || ! echo "$out" | grep -q 'ERROR: LeakSanitizer: detected memory leaks'; then
    echo "$out"
    echo "canary: a leaked ns_options gave no fatal LeakSanitizer report (exit $rc): leak detection is not working"
    exit 1
fi
out=$("$dir/canary" ub 2>&1)
rc=$?
if [ "$rc" -eq 0 ] || ! echo "$out" | grep -q 'runtime error:'; then
    echo "$out"
    echo "canary: a signed overflow gave no fatal UBSan report (exit $rc): UBSan is not working"
    exit 1
fi
echo "canary: a leak inside netsock and a C overflow are both caught and fatal"

# 3. the tests
log="$dir/run.log"
{ sh "$here/../c/run.sh" "$dir" 2>&1; echo $? > "$log.rc"; } | tee "$log"
rc=$(cat "$log.rc")
rm -f "$log.rc"
found=$(grep -c -E "$reports" "$log")
failed=$(sed -n 's/^C: [0-9]* passed, \([0-9]*\) failed$/\1/p' "$log" | tail -n 1)
echo "ASan/UBSan: $n programs, ${failed:-?} failed, $found sanitizer reports (full output: $log)"
[ "$rc" -eq 0 ] && [ "$found" -eq 0 ]
