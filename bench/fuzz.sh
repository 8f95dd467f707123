#!/bin/sh
# Runs every cargo-fuzz target for a given time, one after another, and prints what each did:
#   bench/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 300 s, every target)
# Needs a nightly toolchain and cargo-fuzz (see docs/fuzzing.md). Seeds come from
# fuzz/seed.sh (the libmbus fixtures, the wireless corpus telegrams wrapped in each stick's
# framing, the stick tests' byte sequences, config.example.yaml and drivers/*.yaml); the
# corpora grow across runs. One target runs at a time, on one core. libFuzzer's own log of each
# run is kept in fuzz/artifacts/<target>.log; a crash or timeout is saved under
# fuzz/artifacts/<target>/ and makes the script exit non-zero after the remaining targets ran.
#
# FUZZ_SANITIZER=none builds without AddressSanitizer: about ten times the executions per
# second. The crate has no `unsafe` code, so ASan mostly guards the dependencies; use the default
# (address) for short runs and `none` for long ones.
set -eu
sanitizer=${FUZZ_SANITIZER:-address}

seconds=${1:-300}
[ $# -gt 0 ] && shift
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

all="decode_wired scan_stream decode_wireless imst_stream amber_stream cul_stream text_lines
config_yaml driver_yaml compact_and_records"
targets=${*:-$all}

fuzz/seed.sh >/dev/null
# -a: debug assertions and overflow checks, as in the tests (cargo fuzz builds release without them).
cargo +nightly fuzz build -a -s "$sanitizer" >/dev/null
mkdir -p fuzz/artifacts

failed=0
printf '%-22s %8s %14s %9s %8s %9s %8s  %s\n' target seconds executions exec/s edges features corpus result
for target in $targets; do
    log="fuzz/artifacts/$target.log"
    # -timeout: an input taking 10 s is a hang. -rss_limit_mb: unbounded allocation is a bug too.
    if cargo +nightly fuzz run -a -s "$sanitizer" "$target" -- -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result="FAILED (see $log)"
        failed=1
    fi
    # libFuzzer prints its final stats after a crash as well; "Done" only after a clean run.
    runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    [ -n "$runs" ] || runs=$(sed -n 's/^Done \([0-9]*\) runs in.*/\1/p' "$log" | tail -n 1)
    last=$(grep -E '^#[0-9]+.*(cov|ft):' "$log" | tail -n 1)
    edges=$(printf '%s\n' "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    features=$(printf '%s\n' "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
    corpus=$(printf '%s\n' "$last" | sed -n 's/.*corp: \([0-9]*\).*/\1/p')
    runs=${runs:-0}
    printf '%-22s %8s %14s %9s %8s %9s %8s  %s\n' "$target" "$seconds" "$runs" \
        "$((runs / seconds))" "${edges:-?}" "${features:-?}" "${corpus:-?}" "$result"
done
exit "$failed"
