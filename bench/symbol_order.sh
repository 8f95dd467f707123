#!/bin/sh
# Regenerates link/symbol-order.txt, the order in which the linker places the functions that
# common commands run (build.rs passes it to lld for release builds on x86_64 Linux).
#
#   bench/symbol_order.sh
#
# Why: a process maps its binary's code a fault-around window (64 KB or a whole page-cache
# folio) at a time, so a command that runs 500 KB of functions scattered over a 7 MB text
# segment maps most of it; placed together, the same functions map a few windows.
# docs/benchmarks.md ("One process per telegram") has the figures.
#
# How: builds the release binary with its symbols (the same crates and hashes as a normal
# release build, only the final link keeps the symbol table), runs `--version`, `decode`
# (wired, wireless, the 109-meter mixed input, XML), `drivers` and the daemon bench (quick)
# under callgrind, and writes the functions each ran, the most common commands first.
# Run it again after a compiler update or a change of Cargo.lock: the names carry the crates'
# hashes, and build.rs warns when the file was made for another compiler or lock file.
# Needs valgrind, python3 and nm; takes a few minutes.
set -eu
cd "$(dirname "$0")/.."
OUT=target/symbol-order
rm -rf "$OUT"
mkdir -p "$OUT"

cargo build --release --locked
cargo rustc --release --locked --bin meterbridge -- -C strip=none
BIN="$OUT/meterbridge"
cp target/release/meterbridge "$BIN"

profile() {
    name=$1
    shift
    valgrind --tool=callgrind --demangle=no --compress-strings=no \
        --callgrind-out-file="$OUT/$name.cg" "$BIN" "$@" >/dev/null 2>"$OUT/$name.log"
}
WIRED="68 1F 1F 68 08 00 72 31 77 67 17 2D 2C 01 02 00 00 00 00 2F 2F 04 83 3B 88 13 00 00 2F 2F 2F 2F 2F 2F 2F 00 16"
WIRELESS=2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713
profile 1-version --version
profile 2-decode-wired decode "$WIRED"
profile 3-decode-auto decode --driver auto "$WIRELESS"
profile 4-decode-wmbusmeters decode --format wmbusmeters "$WIRELESS"
profile 5-decode-xml decode --format xml "$WIRED"
# shellcheck disable=SC2046 # one argument per key
profile 6-decode-mixed decode --format wmbusmeters --driver auto $(cat bench/inputs/mixed.keys) \
    <bench/inputs/mixed.hex
profile 7-drivers drivers

# The daemon as the daemon bench runs it (100 meters, MQTT, discovery, the full run: its timers
# and the wired cycle at 2400 baud reach code a short run does not), under callgrind.
cat >"$OUT/daemon-wrapper.sh" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --demangle=no --compress-strings=no \
    --callgrind-out-file="$PWD/$OUT/8-daemon.cg" "$PWD/$BIN" "\$@"
EOF
chmod +x "$OUT/daemon-wrapper.sh"
MB_BENCH_BIN="$PWD/$OUT/daemon-wrapper.sh" cargo bench --locked --bench daemon \
    >"$OUT/8-daemon.log" 2>&1

python3 bench/symbol_order.py "$BIN" link/symbol-order.txt "$OUT"/*.cg
# The release binary as users build it, linked in the new order.
cargo build --release --locked
