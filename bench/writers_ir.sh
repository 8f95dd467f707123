#!/bin/sh
# Instruction counts (callgrind) per frame of the libmbus corpus for decoding with scaled
# values, decode + JSON and decode + libmbus XML (plain, normalized), and their ratios. Unlike
# wall time these do not move when the machine is busy.
#
#   bench/writers_ir.sh [ROUNDS]
#
# Needs valgrind; builds examples/writers_ir.rs in the release profile.
set -eu
ROUNDS=${1:-50}
cargo build --release --locked --example writers_ir >/dev/null 2>&1
BIN=target/release/examples/writers_ir
FRAMES=76
ir() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$1" "$2" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
base=$(ir none "$ROUNDS")
scaled=
for mode in scaled json xml xml-normalized; do
    total=$(ir "$mode" "$ROUNDS")
    per=$(( (total - base) / (ROUNDS * FRAMES) ))
    if [ -z "$scaled" ]; then scaled=$per; fi
    ratio=$(awk -v a="$per" -v b="$scaled" 'BEGIN { printf "%.2f", a / b }')
    printf '%-16s %10d instructions/frame  %6s x scaled\n' "$mode" "$per" "$ratio"
done
