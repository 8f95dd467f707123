#!/usr/bin/env python3
"""Byte-identical check of the output writers (JSON, libmbus XML plain and normalized).

    bench/writers_identical.py record DIR [--bin PATH]   save the outputs of a build
    bench/writers_identical.py check DIR [--bin PATH]    compare a build against them

Run `record` with the binary from before a change and `check` after it: every output of
`meterbridge decode` must be the same, byte for byte (standard output, standard error and the
exit status). The default binary is target/release/meterbridge.

Inputs, all made here from tests/fixtures (deterministic, fixed seed):
- the wired frames of tests/fixtures/libmbus (test, error and unsupported frames), each as it
  is and with MUTATIONS mutations: bytes of plain text, data, DIF, DIFE, VIF, VIFE and header
  fields set to `&`, `<`, `>`, `"`, `'`, NUL, control characters, Latin-1 bytes or random
  values, the checksum fixed so the frame still reaches the writers;
  as `--format json`, `--format xml` and `--format xml-normalized`;
- the wireless telegrams of tests/fixtures/wmbus/wmbusmeters_driver_tests.jsonl (with their
  keys) and WIRELESS_MUTATIONS mutations of each, as `--format json` without a driver and with
  `--driver auto`.
"""

import json
import os
import random
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBMBUS = os.path.join(ROOT, "tests/fixtures/libmbus")
WMBUS = os.path.join(ROOT, "tests/fixtures/wmbus/wmbusmeters_driver_tests.jsonl")
MUTATIONS = 150
WIRELESS_MUTATIONS = 20
SEED = 20261205

# Bytes that need escaping in XML or JSON, control characters, and bytes that are not ASCII.
SPECIAL = [ord(c) for c in "&<>\"'\\"] + [0x00, 0x01, 0x09, 0x0A, 0x0D, 0x1F, 0x7F,
                                          0x80, 0xA0, 0xC3, 0xE9, 0xFF]

# Data field length by the low nibble of a DIF (0x0D is variable, read from the LVAR byte).
DATA_LEN = [0, 1, 2, 3, 4, 4, 6, 8, 0, 1, 2, 3, 4, None, 6, 0]


def wired_frames():
    frames = []
    for sub in ("test-frames", "error-frames", "unsupported-frames"):
        folder = os.path.join(LIBMBUS, sub)
        for name in sorted(os.listdir(folder)):
            if name.endswith(".hex"):
                with open(os.path.join(folder, name)) as f:
                    text = "".join(f.read().split())
                try:
                    frames.append(bytes.fromhex(text))
                except ValueError:
                    pass
    return frames


def positions(frame):
    """Where the parts of a long frame's records are: {kind: [offsets]}. A rough walk of the
    DIF/VIF framing (enough to aim mutations; the decoder itself is not consulted)."""
    found = {k: [] for k in ("header", "dif", "dife", "vif", "vife", "data", "text")}
    if len(frame) < 10 or frame[0] != 0x68:
        return found
    end = len(frame) - 2  # checksum, stop byte
    ci = frame[6] if len(frame) > 6 else 0
    at = 7
    if ci in (0x72, 0x76):
        found["header"] = list(range(7, min(19, end)))
        at = 19
    elif ci == 0x7A:
        found["header"] = list(range(7, min(11, end)))
        at = 11
    else:
        found["data"] = list(range(7, end))
        return found
    while at < end:
        dif = frame[at]
        if dif in (0x2F,):
            at += 1
            continue
        found["dif"].append(at)
        if dif & 0x0F == 0x0F:
            found["data"].extend(range(at + 1, end))
            break
        at += 1
        ext = dif & 0x80
        while ext and at < end:
            found["dife"].append(at)
            ext = frame[at] & 0x80
            at += 1
        if at >= end:
            break
        vif = frame[at]
        found["vif"].append(at)
        at += 1
        ext = vif & 0x80
        while ext and at < end:
            found["vife"].append(at)
            ext = frame[at] & 0x80
            at += 1
        if vif & 0x7F == 0x7C and at < end:
            n = frame[at]
            found["text"].extend(range(at + 1, min(at + 1 + n, end)))
            at += 1 + n
        n = DATA_LEN[dif & 0x0F]
        if n is None:
            if at >= end:
                break
            lvar = frame[at]
            n = lvar if lvar < 0xC0 else (lvar & 0x0F) * 2 if lvar < 0xE0 else lvar & 0x0F
            found["text"].extend(range(at + 1, min(at + 1 + n, end)))
            at += 1 + n
            continue
        found["data"].extend(range(at, min(at + n, end)))
        at += n
    return found


def fix_checksum(frame):
    if len(frame) >= 6 and frame[0] == 0x68 and frame[-1] == 0x16:
        frame[-2] = sum(frame[4:-2]) & 0xFF


def mutate_wired(frame, rng):
    out = bytearray(frame)
    where = positions(frame)
    kinds = [k for k, v in where.items() if v]
    if not kinds:
        return bytes(out)
    for _ in range(rng.choice((1, 1, 2, 3, 5))):
        kind = rng.choice(kinds)
        at = rng.choice(where[kind])
        if kind in ("text", "data") or rng.random() < 0.3:
            if rng.random() < 0.7:
                out[at] = rng.choice(SPECIAL)
            else:
                out[at] = rng.randrange(256)
        elif kind in ("dif", "vif", "dife", "vife"):
            # Keep the extension bit half the time so the framing still lines up.
            if rng.random() < 0.5:
                out[at] = (out[at] & 0x80) | rng.randrange(128)
            else:
                out[at] = rng.randrange(256)
        else:
            out[at] = rng.randrange(256)
    fix_checksum(out)
    return bytes(out)


def wireless_inputs():
    telegrams, keys = [], []
    with open(WMBUS) as f:
        for line in f:
            v = json.loads(line)
            t = v.get("telegram", "")
            t = t[: len(t) // 2 * 2]
            for p in v.get("preceding_telegrams") or []:
                telegrams.append(p[: len(p) // 2 * 2])
            telegrams.append(t)
            key, ident = v.get("key"), v.get("id")
            if key and ident and len(key) == 32 and all(c in "0123456789abcdefABCDEF" for c in key):
                keys.append(f"{ident}={key}")
    return telegrams, sorted(set(keys))


def mutate_wireless(hex_text, rng):
    b = bytearray(bytes.fromhex(hex_text))
    # Past the DLL header (L C M M A A A A A A CI): the payload, plain or encrypted.
    if len(b) <= 12:
        return hex_text
    for _ in range(rng.choice((1, 2, 3))):
        at = rng.randrange(11, len(b))
        b[at] = rng.choice(SPECIAL) if rng.random() < 0.5 else rng.randrange(256)
    return b.hex().upper()


def runs(workdir):
    """(name, arguments, input lines) of every run."""
    rng = random.Random(SEED)
    wired = []
    for frame in wired_frames():
        wired.append(frame.hex().upper())
        for _ in range(MUTATIONS):
            wired.append(mutate_wired(frame, rng).hex().upper())
    wireless, keys = wireless_inputs()
    mutated = [mutate_wireless(t, rng) for t in wireless if t for _ in range(WIRELESS_MUTATIONS)]
    key_file = os.path.join(workdir, "keys.txt")
    with open(key_file, "w") as f:
        f.write("\n".join(keys) + "\n")
    yield "wired-json", ["--format", "json"], wired
    yield "wired-xml", ["--format", "xml"], wired
    yield "wired-xml-normalized", ["--format", "xml-normalized"], wired
    for name, lines in (("wireless", wireless), ("wireless-mutated", mutated)):
        yield name + "-json", ["--format", "json", "--key-file", key_file], lines
        yield name + "-json-auto", ["--format", "json", "--driver", "auto", "--key-file", key_file], lines


def run(binary, args, lines):
    """One process per run (the whole list on standard input) is fast; a telegram is found
    again by its line number in the errors and by the output order."""
    p = subprocess.run([binary, "decode", *args], input=("\n".join(lines) + "\n").encode(),
                       capture_output=True, text=False)
    return p.stdout, p.stderr, p.returncode


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("record", "check"):
        sys.exit(__doc__)
    mode, folder = sys.argv[1], sys.argv[2]
    binary = os.path.join(ROOT, "target/release/meterbridge")
    if "--bin" in sys.argv:
        binary = sys.argv[sys.argv.index("--bin") + 1]
    os.makedirs(folder, exist_ok=True)
    compared = differing = 0
    for name, args, lines in runs(folder):
        out, err, status = run(binary, args, lines)
        got = {"stdout": out, "stderr": err, "status": str(status).encode()}
        if mode == "record":
            for part, data in got.items():
                with open(os.path.join(folder, f"{name}.{part}"), "wb") as f:
                    f.write(data)
            print(f"{name}: {len(lines)} telegrams, {len(out)} bytes recorded")
            compared += len(lines)
            continue
        same = True
        for part, data in got.items():
            with open(os.path.join(folder, f"{name}.{part}"), "rb") as f:
                want = f.read()
            if data != want:
                same = False
                at = next((i for i, (a, b) in enumerate(zip(data, want)) if a != b),
                          min(len(data), len(want)))
                line = want[:at].count(b"\n") + 1
                print(f"{name}: {part} differs at byte {at} (line {line}):")
                print(f"  want {want[max(0, at - 80):at + 80]!r}")
                print(f"  got  {data[max(0, at - 80):at + 80]!r}")
        compared += len(lines)
        differing += not same
        print(f"{name}: {len(lines)} telegrams, {len(out)} bytes: {'same' if same else 'DIFFERENT'}")
    if mode == "check":
        verdict = "all identical" if differing == 0 else f"{differing} runs DIFFER"
        print(f"{compared} outputs compared: {verdict}")
        sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main()
