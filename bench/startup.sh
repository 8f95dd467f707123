#!/bin/sh
# Start-up cost of one `meterbridge` process: wall time and peak RSS, median of N runs
# (default 50), for `--version` and for `decode` of one telegram (wired; wireless with
# `--driver auto`), in the same run so the figures compare on any machine.
#
#   bench/startup.sh [RUNS] [BINARY]
#
# Wall time is measured around a direct spawn; peak RSS with GNU time (`/usr/bin/time -f %M`,
# as in the issue), because a child spawned by python itself would report python's own RSS
# (Linux keeps the larger of the pre-exec and the new address space's peak). GNU time adds
# about 1 MB of its own (`/usr/bin/time -f %M true` prints ~1100 kB).
# Needs python3 and GNU time; build first: cargo build --release --locked.
set -eu
RUNS=${1:-50}
BIN=${2:-target/release/meterbridge}
exec python3 - "$RUNS" "$BIN" <<'PY'
import os, statistics, sys, tempfile, time

runs, binary = int(sys.argv[1]), sys.argv[2]
# A Kamstrup heat meter's wired response (libmbus corpus), a Kamstrup water meter's
# unencrypted wireless telegram (as in tests/cli.rs).
wired = "68 1F 1F 68 08 00 72 31 77 67 17 2D 2C 01 02 00 00 00 00 2F 2F 04 83 3B 88 13 00 00 2F 2F 2F 2F 2F 2F 2F 00 16"
wireless = "2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713"
cases = [
    ("--version", ["--version"]),
    ("decode wired", ["decode", wired]),
    ("decode wireless --driver auto", ["decode", "--driver", "auto", wireless]),
    ("decode wireless --format wmbusmeters", ["decode", "--format", "wmbusmeters", wireless]),
]
devnull = os.open(os.devnull, os.O_WRONLY)
rss_file = tempfile.NamedTemporaryFile(prefix="startup-rss-")


def spawn(argv):
    pid = os.posix_spawn(argv[0], argv, os.environ,
                         file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1)])
    _, status, _ = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{' '.join(argv)}: exit status {code}")


print(f"{binary}, {runs} runs each, median (min-max)")
print(f"{'command':40} {'wall ms':>20} {'peak RSS MB':>20}")
for label, args in cases:
    walls, rss = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        spawn([binary, *args])
        walls.append((time.perf_counter() - t0) * 1000)
        spawn(["/usr/bin/time", "-f", "%M", "-o", rss_file.name, binary, *args])
        with open(rss_file.name) as f:
            rss.append(int(f.read().split()[-1]) / 1024)
    w = f"{statistics.median(walls):.2f} ({min(walls):.2f}-{max(walls):.2f})"
    r = f"{statistics.median(rss):.2f} ({min(rss):.2f}-{max(rss):.2f})"
    print(f"{label:40} {w:>20} {r:>20}")
PY
