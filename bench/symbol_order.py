#!/usr/bin/env python3
"""Writes link/symbol-order.txt: the functions the common commands run, in the order the
linker should place them (see bench/symbol_order.sh, which runs the commands).

    bench/symbol_order.py BINARY OUTPUT CALLGRIND_FILE...

BINARY is an unstripped release build (its symbol table names the functions); each
CALLGRIND_FILE is a `valgrind --tool=callgrind --demangle=no --compress-strings=no` profile of
one command, most common first (`--version` and `decode` before the daemon). A function is
listed once, in the group of the first command that ran it; within a group, in the order the
binary has them now, which keeps a crate's functions together.
"""
import os
import re
import subprocess
import sys


def defined_functions(binary):
    """Mangled name -> address, for every function the binary defines."""
    out = subprocess.run(["nm", "--defined-only", binary], check=True,
                         capture_output=True, text=True).stdout
    functions = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            functions[parts[2]] = int(parts[0], 16)
    return functions


def executed(profile, binary_name):
    """Names of the functions of the binary that a callgrind profile saw run."""
    names = []
    in_binary = False
    for line in open(profile, encoding="utf-8", errors="replace"):
        if line.startswith("ob="):
            in_binary = os.path.basename(line[3:].strip()) == binary_name
        elif line.startswith("fn=") and in_binary:
            names.append(line[3:].strip())
    return names


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    binary, output, profiles = sys.argv[1], sys.argv[2], sys.argv[3:]
    functions = defined_functions(binary)
    if len(functions) < 1000:
        sys.exit(f"{binary} has {len(functions)} function symbols: build it unstripped "
                 "(bench/symbol_order.sh does)")
    seen = set()
    groups = []
    for profile in profiles:
        group = [n for n in executed(profile, os.path.basename(binary))
                 if n in functions and n not in seen]
        seen.update(group)
        group.sort(key=lambda n: functions[n])
        groups.append((os.path.basename(profile), group))
    version = subprocess.run(["rustc", "-V"], check=True, capture_output=True,
                             text=True).stdout.strip()
    cargo_files = fnv1a64(open("Cargo.toml", "rb").read() + open("Cargo.lock", "rb").read())
    sources = sources_hash()
    with open(output, "w") as f:
        f.write("# The functions `meterbridge --version`, `decode` and the daemon run, in the order\n"
                "# the linker places them (lld's --symbol-ordering-file, passed by build.rs for\n"
                "# release builds): code that runs together shares pages, so a process maps a\n"
                "# fraction of the binary. Written by bench/symbol_order.sh; regenerate it after\n"
                "# code changes and when the compiler, Cargo.toml or Cargo.lock change (the names\n"
                "# carry hashes of the crates, their versions, features and the profile, and of\n"
                "# the code itself; build.rs warns). Names that no longer exist are skipped by\n"
                "# the linker.\n")
        f.write(f"# made-for-rustc: {version}\n")
        f.write(f"# made-for-cargo-files: {cargo_files:016x}\n")
        f.write(f"# made-for-sources: {sources:016x}\n")
        for name, group in groups:
            f.write(f"# {name}: {len(group)} functions\n")
            for n in group:
                f.write(n + "\n")
    total = sum(len(g) for _, g in groups)
    print(f"{output}: {total} functions in {len(groups)} groups")


def sources_hash():
    """The hash build.rs computes of src/, drivers/ and build.rs (paths and contents)."""
    files = ["build.rs"]
    for top in ("src", "drivers"):
        for root, _, names in os.walk(top):
            files.extend(os.path.join(root, n) for n in names)
    data = bytearray()
    for path in sorted(files):
        data += path.encode() + b"\0" + open(path, "rb").read() + b"\0"
    return fnv1a64(data)


def fnv1a64(data):
    """The hash build.rs computes of Cargo.toml and Cargo.lock (no dependency for it)."""
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


if __name__ == "__main__":
    main()
