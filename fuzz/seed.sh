#!/bin/sh
# Seed corpora for the fuzz targets from the libmbus fixture frames: each
# tests/fixtures/libmbus/**/*.hex becomes one binary file. Run from anywhere:
#   fuzz/seed.sh
# scan_stream's first input byte selects chunk sizes, so its seeds get one in front, plus one
# seed with every frame back to back.
# decode_wireless gets every telegram of tests/fixtures/wmbus/wmbusmeters_driver_tests.jsonl
# (and its preceding telegrams), with a first byte that selects the key the fuzz target knows
# for that meter, or none.
# The newer targets (stick framings, text lines, configuration, drivers, compact frames) are
# seeded at the end of this script.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
fixtures="$root/tests/fixtures/libmbus"
out="$root/fuzz/corpus"
mkdir -p "$out/decode_wired" "$out/scan_stream" "$out/decode_wireless"

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

python3 - "$root/tests/fixtures/wmbus/wmbusmeters_driver_tests.jsonl" "$out/decode_wireless" <<'PY'
import json, pathlib, sys

corpus, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
# The key selector of fuzz_targets/decode_wireless.rs: the keys that target holds.
selector = {
    "00000000000000000000000000000000": 1,
    "BEDB81B52C29B5C143388CBB0D15A051": 2,
    "28F64A24988064A079AA2C807D6102AE": 3,
}
# Worked vectors from tests/fixtures/wmbus/security_vectors.md that use those keys.
vectors = {
    "v5a": (1, "6e4401068888888805077a85006085bc2630713819512eb4cd87fba554fb43f67cf9654a68ee8e194088160df752e716238292e8af1ac20986202ee561d743602466915e42f1105d9c6782a54504e4f099e65a7656b930c73a30775122d2fdf074b5035cfaa7e0050bf32faae03a77"),
    "v6a": (3, "2A442D2C998734761B168D2091D37CAC21E1D68CDAFFCD3DC452BD802913FF7B1706CA9E355D6C2701CC24"),
    "v6b": (3, "23442D2C998734761B168D20983081B2227A6FA1F10E1B79B5EB4B17E81F930E937EE06C"),
}
count = 0
def write(name, mode, text):
    global count
    # One line carries a stray half byte; the decoder refuses odd hex, so drop it.
    data = bytes.fromhex(text[: len(text) // 2 * 2])
    (out / name).write_bytes(bytes([mode]) + data)
    count += 1

for number, line in enumerate(corpus.read_text(encoding="utf-8").splitlines(), 1):
    case = json.loads(line)
    mode = selector.get(case.get("key", "").upper(), 0)
    for i, earlier in enumerate(case.get("preceding_telegrams") or []):
        write(f"line{number:03}_preceding{i}", mode, earlier)
    write(f"line{number:03}", mode, case["telegram"])
for name, (mode, text) in vectors.items():
    write(name, mode, text)
    # Bit 2: decoded twice by one decoder.
    write(name + "_twice", mode | 4, text)
print(f"{count} seeds in {out}")
PY

# The stick and text-input targets get corpus telegrams wrapped in each stick's framing, the
# golden byte sequences of the stick unit tests, and (config_yaml, driver_yaml) the example
# configuration and every driver file. compact_and_records gets each meter's preceding
# telegrams followed by its telegram, so compact frames come after the full frame they name.
python3 - "$root" "$out" <<'PY'
import json, pathlib, sys

root, out = map(pathlib.Path, sys.argv[1:])
corpus = root / "tests/fixtures/wmbus/wmbusmeters_driver_tests.jsonl"
targets = ["imst_stream", "amber_stream", "cul_stream", "text_lines", "config_yaml",
           "driver_yaml", "compact_and_records"]
for t in targets:
    (out / t).mkdir(parents=True, exist_ok=True)
counts = dict.fromkeys(targets, 0)

def seed(target, name, data):
    (out / target / name).write_bytes(bytes(data))
    counts[target] += 1

def crc_en13757(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x3D65) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc ^ 0xFFFF

def crc_x25(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF

def with_crcs(frame, fmt):
    d = bytearray(frame)
    blocks = []
    if fmt == "A":
        d[0] = len(d) - 1
        blocks = [d[:10]] + [d[i:i + 16] for i in range(10, len(d), 16)]
    else:
        d[0] = len(d) - 1 + (2 if len(d) <= 126 else 4)
        blocks = [d[:126]] + ([d[126:]] if len(d) > 126 else [])
    outb = bytearray()
    for b in blocks:
        outb += b + crc_en13757(b).to_bytes(2, "big")
    return bytes(outb)

def slip(data):
    return b"\xC0" + bytes(data).replace(b"\xDB", b"\xDB\xDD").replace(b"\xC0", b"\xDB\xDC") + b"\xC0"

def hci_indication(frame, rssi=0x4C):
    body = bytes([0xC2, 0x03, len(frame)]) + frame + bytes([rssi])
    return b"\xA5" + body + crc_x25(body).to_bytes(2, "little")

def amber_frame(cmd, payload):
    f = bytes([0xFF, cmd, len(payload)]) + payload
    x = 0
    for b in f:
        x ^= b
    return f + bytes([x])

telegrams, chains = [], []
for number, line in enumerate(corpus.read_text(encoding="utf-8").splitlines(), 1):
    case = json.loads(line)
    text = case["telegram"]
    frame = bytes.fromhex(text[: len(text) // 2 * 2])
    telegrams.append((number, frame))
    chain = [bytes.fromhex(t[: len(t) // 2 * 2]) for t in case.get("preceding_telegrams") or []]
    if chain:
        chains.append((number, chain + [frame]))
# Plain frames whose L matches (CRC-less) and that fit a length byte, one in four lines.
plain = [(n, f) for n, f in telegrams if f and f[0] + 1 == len(f) and len(f) <= 250][::4]

# IMST: golden HCI answers and indications from the unit tests, then corpus indications,
# plain and in SLIP.
golden_hci = ["A58102004CA3", "A58104009CF7", "A581100833001301F13A000053D9",
              "A5810617FF000700B32512351000010001FF07023200010000000063C9",
              "A5C20309472D2C57277971340C4C6807", "A5010306000203300100",
              "A5C2032A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F6167134C0CBA"]
golden = b"".join(bytes.fromhex(h) for h in golden_hci)
seed("imst_stream", "golden_hci", b"\x00" + golden)
seed("imst_stream", "golden_slip", b"\x03" + b"".join(slip(bytes.fromhex(h)) for h in golden_hci))
seed("imst_stream", "golden_slip_escapes", b"\x00" + bytes.fromhex("C0A5C20305DBDCDBDDDCDDDBDCDBDD0102C0"))
for n, f in plain:
    seed("imst_stream", f"line{n:03}_hci", bytes([n % 256]) + hci_indication(f))
    seed("imst_stream", f"line{n:03}_slip", bytes([n % 256]) + slip(hci_indication(f)))

# Amber: [settings, chunks, pauses] then the stream.
nvm = bytes.fromhex("FF8A7A00780080710200000000FFFFFA00FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF003200021400FFFFFFFFFF010004000000FFFFFF01440000000000000000FFFF0B040100FFFFFFFFFF00030000FFFFFFFFFFFFFF0000FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF17")
answers = nvm + bytes.fromhex("FF0A02008077FF040108F2FF8B0400010203FF8B")
seed("amber_stream", "golden_answers", bytes([5, 0, 0]) + answers + amber_frame(0x8B, bytes.fromhex("01020304")) + amber_frame(0x8C, bytes.fromhex("010203")))
for n, f in plain:
    body = f[1:]
    for setting in range(4):
        cmd_out, rssi = setting & 1, setting & 2
        b = body + (b"\xD2" if rssi else b"")
        data = amber_frame(0x03, b) if cmd_out else bytes([len(b)]) + b
        seed("amber_stream", f"line{n:03}_s{setting}", bytes([setting, n % 256, 0]) + data + data)
    seed("amber_stream", f"line{n:03}_unknown", bytes([4, n % 256, 0]) + nvm + amber_frame(0x03, body) + bytes([len(body)]) + body)
    seed("amber_stream", f"line{n:03}_gaps", bytes([0, 3, 0x5A]) + amber_frame(0x03, body) * 3)

# CUL: culfw lines, format A as `b…` and format B as `bY…`, LQI and RSSI after them.
cul_text = b"V 1.67 nanoCUL868\r\n21\r\n"
for n, f in plain:
    a = with_crcs(f, "A").hex().upper().encode()
    b = with_crcs(f, "B").hex().upper().encode()
    seed("cul_stream", f"line{n:03}", bytes([n % 256]) + cul_text + b"b" + a + b"8040\r\nbY" + b + b"\r\n")

# Text lines: raw hex in each accepted style and rtl_wmbus lines.
for n, f in plain:
    h = f.hex().upper()
    lines = [h, "telegram=|" + h + "|;rssi=-71 dBm", '{"telegram":"' + h + '","rssi":-71}',
             " ".join(h[i:i + 2] for i in range(0, len(h), 2)),
             with_crcs(f, "A").hex(),
             "T1;1;1;2019-02-09 07:14:18.000;117;102;94740459;0x" + h,
             "C1;1;1;2024-05-01 10:00:00.000;-71;;;0x" + h]
    seed("text_lines", f"line{n:03}", "\n".join(lines).encode())

# Configuration and drivers.
example = (root / "config.example.yaml").read_bytes()
seed("config_yaml", "example", b"\x00" + example)
seed("config_yaml", "example_drivers_checked", b"\x01" + example)
for path in sorted((root / "drivers").glob("*.yaml")):
    seed("driver_yaml", path.stem, path.read_bytes())

# Compact frames after their full frames: [key selector] then length-prefixed telegrams.
for n, chain in chains:
    if all(len(t) <= 255 for t in chain):
        seed("compact_and_records", f"line{n:03}", b"\x00" + b"".join(bytes([len(t)]) + t for t in chain))
for n, f in plain[::4]:
    seed("compact_and_records", f"line{n:03}_single", b"\x00" + bytes([len(f)]) + f)
print(", ".join(f"{t}: {c}" for t, c in counts.items()), "seeds")
PY
