#!/bin/sh
# Seed corpora for the fuzz targets from the libmbus fixture frames: each
# tests/fixtures/libmbus/**/*.hex becomes one binary file. Run from anywhere:
#   fuzz/seed.sh
# scan_stream's first input byte selects chunk sizes, so its seeds get one in front, plus one
# seed with every frame back to back.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
fixtures="$root/tests/fixtures/libmbus"
out="$root/fuzz/corpus"
mkdir -p "$out/decode_wired" "$out/scan_stream"

python3 - "$fixtures" "$out" <<'PY'
import pathlib, string, sys

fixtures, out = map(pathlib.Path, sys.argv[1:])
stream = bytearray()
count = 0
for path in sorted(fixtures.rglob("*.hex")):
    text = path.read_text(encoding="utf-8", errors="replace")
    # Like libmbus's reader, stop at the first character that is neither hex nor space.
    digits = []
    for c in text:
        if c in string.hexdigits:
            digits.append(c)
        elif not c.isspace():
            break
    if len(digits) < 2:
        continue
    frame = bytes.fromhex("".join(digits[: len(digits) // 2 * 2]))
    name = "_".join(path.relative_to(fixtures).with_suffix("").parts)
    (out / "decode_wired" / name).write_bytes(frame)
    (out / "scan_stream" / name).write_bytes(bytes([count % 256]) + frame)
    stream += frame
    count += 1
(out / "scan_stream" / "all_frames").write_bytes(b"\x07" + bytes(stream))
print(f"{count} seeds in {out}/decode_wired and {out}/scan_stream")
PY
