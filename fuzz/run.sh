#!/usr/bin/env bash
# fuzz/run.sh [SECONDS] — runs every fuzz target for SECONDS (default 60) on a copy of its
# committed seed corpus, prints each target's executions, and exits non-zero if any target
# crashed (a panic, a failed assertion, a sanitizer report, a timeout or running out of memory).
#
# cargo-fuzz is installed if missing. The toolchain is stable: cargo fuzz passes -Z flags
# (sanitizer, coverage instrumentation), which RUSTC_BOOTSTRAP=1 lets stable rustc accept.
#
# Environment:
#   FUZZ_WORK       scratch dir (default fuzz/target/fuzz-run, emptied first; git-ignored):
#                   <target>/corpus grows there, <target>/artifacts gets crashing inputs,
#                   <target>/log is libFuzzer's output
#   FUZZ_SANITIZER  address (default) or none (faster, catches panics only)
#   FUZZ_TARGETS    targets to run (default: all, from cargo fuzz list)
#   FUZZ_ARGS       extra libFuzzer flags, e.g. "-max_len=8192"
# make runs it as `sh fuzz/run.sh`: it needs bash.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

secs=${1:-60}
case $secs in '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-address}
work=${FUZZ_WORK:-$here/target/fuzz-run}
# Release build with debug assertions: integer overflow panics instead of wrapping.
opts=(--sanitizer "$sanitizer" --debug-assertions)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    start=$SECONDS
    cargo install cargo-fuzz --locked
    echo "== cargo-fuzz installed in $((SECONDS - start)) s"
fi

echo "== building the fuzz targets (sanitizer: $sanitizer)"
start=$SECONDS
cargo fuzz build "${opts[@]}"
echo "== built in $((SECONDS - start)) s"

targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
rm -rf "$work"
mkdir -p "$work"

failed=()
summary=()
for t in $targets; do
    dir=$work/$t
    mkdir -p "$dir/corpus" "$dir/artifacts"
    if [ -d "corpus/$t" ]; then
        cp -R "corpus/$t/." "$dir/corpus/"
    fi
    echo "== $t: ${secs}s on $(find "$dir/corpus" -type f | wc -l) seeds"
    rc=0
    # shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
    cargo fuzz run "${opts[@]}" "$t" "$dir/corpus" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$dir/artifacts/" ${FUZZ_ARGS:-} >"$dir/log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/log" | tail -n 1)
    cov=$(grep -E '^#[0-9]+' "$dir/log" | tail -n 1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9A-Za-z]+' || true)
    if [ "$rc" -eq 0 ]; then
        line="$t: ok, execs ${execs:-?}, exec/s ${rate:-?}, ${cov:-no stats}"
    else
        failed+=("$t")
        line="$t: FAILED (exit $rc), execs ${execs:-?}, exec/s ${rate:-?}"
        echo "-- $t failed; from $dir/log:" >&2
        grep -E -A4 "panicked at|ERROR: (libFuzzer|AddressSanitizer)|SUMMARY" "$dir/log" | head -n 40 >&2 || tail -n 40 "$dir/log" >&2
        for a in "$dir"/artifacts/*; do
            [ -f "$a" ] || continue
            echo "-- crashing input $a (hex): $(od -An -tx1 -v "$a" | tr -d ' \n' | head -c 512)" >&2
        done
        echo "-- reproduce: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${opts[*]} $t <input>)" >&2
    fi
    echo "$line"
    summary+=("$line")
done

echo "== fuzz summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: every target ran ${secs}s without a crash"
