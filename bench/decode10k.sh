#!/bin/sh
# 10,000 telegrams through one `meterbridge decode --format wmbusmeters` process, as the
# wmbusmeters comparison in docs/benchmarks.md ran them:
#
#   one meter:  a Kamstrup Multical 21 (bench/inputs/multical21.hex, --driver multical21)
#   109 meters: one per driver (bench/inputs/mixed.hex, --driver auto, keys from mixed.keys)
#
# Each input file's telegrams are repeated in order up to 10,000 lines (into target/bench/);
# the inputs come from bench/make_inputs.py. Prints the median, min and max wall time of RUNS
# runs (default 20) and the peak RSS (GNU time).
#
#   bench/decode10k.sh [RUNS] [BINARY]
#
# wmbusmeters 3.0 on the same machine and telegrams (one run, from the issue):
#   wmbusmeters --format=json stdin:hex MyMeter multical21 76348799 NOKEY   1.37-1.46 s
#   (109 meters, one per driver, auto)                                       34-37 s
set -eu
RUNS=${1:-20}
BIN=${2:-target/release/meterbridge}
cd "$(dirname "$0")/.."
mkdir -p target/bench
expand() {
    grep -v '^#' "$1" | awk -v n=10000 '{ l[NR] = $0 } END { for (i = 0; i < n; i++) print l[i % NR + 1] }' >"$2"
}
expand bench/inputs/multical21.hex target/bench/multical21-10k.hex
expand bench/inputs/mixed.hex target/bench/mixed-10k.hex
# One `--key=ID=HEX` per line, no spaces: word splitting below is intended.
KEYS=$(cat bench/inputs/mixed.keys)
exec python3 - "$RUNS" "$BIN" "$KEYS" <<'PY'
import os, statistics, subprocess, sys, time

runs, binary, keys = int(sys.argv[1]), sys.argv[2], sys.argv[3].split()
cases = [
    ("1 meter, --driver multical21", "target/bench/multical21-10k.hex",
     ["decode", "--format", "wmbusmeters", "--driver", "multical21"]),
    ("109 meters, --driver auto", "target/bench/mixed-10k.hex",
     ["decode", "--format", "wmbusmeters", "--driver", "auto", *keys]),
]
print(f"{binary}: 10,000 telegrams per run, {runs} runs")
for label, path, args in cases:
    walls = []
    for _ in range(runs):
        with open(path) as stdin:
            t0 = time.perf_counter()
            p = subprocess.run([binary, *args], stdin=stdin, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
            walls.append((time.perf_counter() - t0) * 1000)
    lines = p.stdout.count(b"\n")
    errors = p.stderr.count(b"\n")
    with open(path) as stdin:
        t = subprocess.run(["/usr/bin/time", "-f", "%M", binary, *args], stdin=stdin,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rss = int(t.stderr.split()[-1]) / 1024
    print(f"{label:32} median {statistics.median(walls):7.1f} ms "
          f"(min {min(walls):.1f}, max {max(walls):.1f}), peak RSS {rss:.1f} MB, "
          f"{lines} lines out, {errors} errors")
PY
