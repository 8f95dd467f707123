//! Embeds every `drivers/*.yaml` file into the binary, so a release binary needs no files
//! beside it, and checks them here: a built-in driver that does not parse (YAML, the file
//! format, its detection entries, a name or alias used twice) is a build error with the file,
//! line and column, never a driver silently missing at run time.
//!
//! It also writes each driver in packed form (`src/drivers/packed.rs`: no YAML parser runs,
//! and none of its code is paged in, when a built-in driver is used), and the index the
//! registry needs to find a driver without building any: names and aliases, and detection
//! triples. A driver is built from its bytes on its first use.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The driver file format, shared with the crate (`src/drivers/model.rs` depends on serde only).
#[allow(dead_code)]
#[path = "src/drivers/model.rs"]
mod model;

/// The packed form of a driver, shared with the crate (`src/drivers/packed.rs`): one
/// definition for writing (here) and reading (at run time).
#[allow(dead_code)]
#[path = "src/drivers/packed.rs"]
mod packed;

use packed::Packed as _;

fn main() {
    link_release_binary();
    let dir = Path::new("drivers");
    println!("cargo:rerun-if-changed=drivers");
    println!("cargo:rerun-if-changed=src/drivers/model.rs");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("drivers/: {e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    files.sort();
    let mut problems = Vec::new();
    // Every driver's packed bytes, one after another, and every driver's packed test cases.
    let mut data = Vec::new();
    let mut tests = Vec::new();
    // (file, bytes in `data`, bytes in `tests`, has manufacturer security modes) per driver.
    let mut spans = Vec::new();
    // (manufacturer, driver index, version, device type) of every detection entry.
    let mut triples = Vec::new();
    // Name or alias → index of the driver, for a binary search at run time.
    let mut names: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for (index, file) in files.iter().enumerate() {
        println!("cargo:rerun-if-changed=drivers/{file}");
        let path = format!("drivers/{file}");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let parsed: model::DriverFile = match serde_saphyr::from_str(&text) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("{path}: {e}"));
                continue;
            }
        };
        for m in &parsed.detect {
            match model::parse_detect_entry(m) {
                Some((mfct, version, device_type)) => {
                    triples.push((mfct, index, version, device_type));
                }
                None => problems.push(format!(
                    "{path}: detect entry {m:?} is not MFCT,version,type (hex or *), e.g. KAM,1b,16"
                )),
            }
        }
        for name in std::iter::once(&parsed.name).chain(&parsed.aliases) {
            if let Some((_, other)) = names.insert(name.clone(), (index, file.clone())) {
                problems.push(format!(
                    "{path}: driver name {name:?} is also used by {other}"
                ));
            }
        }
        let at = data.len();
        parsed.pack(&mut data);
        let tests_at = tests.len();
        parsed.tests.pack(&mut tests);
        let security_modes =
            !parsed.plain_security_modes.is_empty() || !parsed.scrambled_security_modes.is_empty();
        spans.push((
            file.clone(),
            (at, data.len() - at),
            (tests_at, tests.len() - tests_at),
            security_modes,
        ));
    }
    if !problems.is_empty() {
        panic!("broken built-in driver files:\n{}", problems.join("\n"));
    }
    // The test cases after every driver: a process that builds drivers maps their bytes,
    // which are then together.
    let tests_start = data.len();
    data.extend_from_slice(&tests);
    let out_dir = std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
    let packed_path = Path::new(&out_dir).join("drivers.bin");
    std::fs::write(&packed_path, &data)
        .unwrap_or_else(|e| panic!("{}: {e}", packed_path.display()));
    let mut out = String::from(
        "/// Every built-in driver, packed (src/drivers/packed.rs): the drivers, then their tests.\n\
         static PACKED: &[u8] = include_bytes!(concat!(env!(\"OUT_DIR\"), \"/drivers.bin\"));\n\n",
    );
    out.push_str(
        "/// Every built-in driver, by file name.\npub static BUILT_IN_DRIVERS: &[BuiltIn] = &[\n",
    );
    for (file, (at, len), (tests_at, tests_len), security_modes) in &spans {
        let _ = writeln!(
            out,
            "    BuiltIn {{ file: {file:?}, #[cfg(test)] text: include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/drivers/{file}\")), packed: Span({at}, {len}), packed_tests: Span({}, {tests_len}), manufacturer_security_modes: {security_modes} }},",
            tests_start + tests_at
        );
    }
    out.push_str("];\n\n/// Every name and alias (sorted) with its driver's index in `BUILT_IN_DRIVERS`.\npub static BUILT_IN_NAMES: &[(&str, usize)] = &[\n");
    for (name, (index, _)) in &names {
        let _ = writeln!(out, "    ({name:?}, {index}),");
    }
    out.push_str("];\n\n/// Every detection entry as (manufacturer, version, device type, driver index), sorted\n/// by manufacturer: detection looks at one manufacturer's entries only.\npub static BUILT_IN_DETECT: &[(&str, Option<u8>, Option<u8>, usize)] = &[\n");
    triples.sort();
    for (mfct, index, version, device_type) in &triples {
        let _ = writeln!(
            out,
            "    ({mfct:?}, {version:?}, {device_type:?}, {index}),"
        );
    }
    out.push_str("];\n");
    let target = Path::new(&out_dir).join("built_in_drivers.rs");
    std::fs::write(&target, out).unwrap_or_else(|e| panic!("{}: {e}", target.display()));
}

/// Release builds on x86-64 Linux, linked by lld: rust-lld is the default linker for this
/// target from Rust 1.90. With a linker of the user's choice, in other profiles, or on other
/// targets, nothing changes.
fn link_release_binary() {
    println!("cargo:rerun-if-env-changed=METERBRIDGE_NO_SYMBOL_ORDER");
    let flags = env("CARGO_ENCODED_RUSTFLAGS");
    if env("PROFILE") != "release"
        || env("TARGET") != "x86_64-unknown-linux-gnu"
        || std::env::var_os("RUSTC_LINKER").is_some()
        || flags.contains("linker")
        || flags.contains("fuse-ld")
    {
        return;
    }
    let rustc = output_of(&std::env::var("RUSTC").unwrap_or("rustc".into()), "-V");
    // "rustc 1.95.0 (…)": rust-lld links by default from 1.90 on.
    if major_minor(rustc.split_whitespace().nth(1).unwrap_or_default()) < (1, 90) {
        return;
    }
    pack_relative_relocations();
    if std::env::var_os("METERBRIDGE_NO_SYMBOL_ORDER").is_none() {
        link_in_symbol_order(&rustc);
    }
}

/// The loader's table of places to patch with the load address (about 11,000 of them: vtables,
/// panic locations, static lists of texts) in the compact RELR form: 260 KB that every process
/// read at start shrink to a few KB (docs/benchmarks.md, "The daemon with 100 meters").
/// glibc reads RELR from 2.36 on, and lld then marks the binary as needing it, so an older
/// glibc refuses it with a message instead of running it unpatched. Only when the glibc it
/// is built against, this machine's, is that recent (the target is this machine's).
fn pack_relative_relocations() {
    if env("HOST") != env("TARGET") {
        return;
    }
    // "glibc 2.36"
    let version = output_of("getconf", "GNU_LIBC_VERSION");
    if major_minor(version.strip_prefix("glibc ").unwrap_or_default()) >= (2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

/// What `program arg` prints, trimmed; empty when it cannot run.
fn output_of(program: &str, arg: &str) -> String {
    std::process::Command::new(program)
        .arg(arg)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// `1.95.0` → (1, 95); a part that is not a number reads as 0.
fn major_minor(version: &str) -> (u32, u32) {
    let mut numbers = version.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

/// Links the functions that common commands run together, in the order of
/// `link/symbol-order.txt` (written by bench/symbol_order.sh): a process maps its code a
/// fault-around window or page-cache folio at a time, so scattered functions map most of the
/// binary (docs/benchmarks.md, "One process per telegram").
fn link_in_symbol_order(rustc: &str) {
    const ORDER: &str = "link/symbol-order.txt";
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=Cargo.toml");
    // For the check of the sources below (release builds only: a test build never gets here).
    println!("cargo:rerun-if-changed=src");
    let Ok(text) = std::fs::read_to_string(ORDER) else {
        return;
    };
    // The names carry their crates' hashes: a file made for another compiler or other
    // dependency versions still links, but orders nothing.
    let header = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    // Cargo.toml holds the features and the profile, which are in the hashes too.
    let mut cargo_files = std::fs::read("Cargo.toml").unwrap_or_default();
    cargo_files.extend(std::fs::read("Cargo.lock").unwrap_or_default());
    if header("# made-for-rustc:") != rustc
        || header("# made-for-cargo-files:") != format!("{:016x}", fnv1a64(&cargo_files))
    {
        println!(
            "cargo:warning={ORDER} was made for another compiler, Cargo.toml or Cargo.lock; \
             run bench/symbol_order.sh to regenerate it (the binary works, but maps more \
             of itself at start)"
        );
    } else if header("# made-for-sources:") != format!("{:016x}", sources_hash()) {
        // Any change to the code renames some functions (ThinLTO gives the functions it
        // promotes a suffix made from their module's contents; closures and generic
        // instances carry hashes), and a renamed function is left out of the order. A few
        // edits left 190 of 1,600 names behind and the 100-meter daemon at 9.4 MB instead
        // of 7.4 (docs/benchmarks.md).
        println!(
            "cargo:warning={ORDER} was made for other sources; before a release, run \
             bench/symbol_order.sh to regenerate it (the binary works, but maps more of itself)"
        );
    }
    let path = Path::new(&env("CARGO_MANIFEST_DIR")).join(ORDER);
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        path.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// FNV-1a of every file under `src/` and `drivers/` and of build.rs (their paths and contents,
/// in the order of their paths), as bench/symbol_order.py computes it: what the function
/// names of a release build depend on besides the compiler and the Cargo files.
fn sources_hash() -> u64 {
    fn walk(dir: &Path, files: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, files);
            } else {
                files.push(path.to_string_lossy().into_owned());
            }
        }
    }
    let mut files = vec!["build.rs".to_string()];
    walk(Path::new("src"), &mut files);
    walk(Path::new("drivers"), &mut files);
    files.sort();
    let mut data = Vec::new();
    for file in &files {
        data.extend_from_slice(file.as_bytes());
        data.push(0);
        data.extend(std::fs::read(file).unwrap_or_default());
        data.push(0);
    }
    fnv1a64(&data)
}

/// FNV-1a, 64 bits, as bench/symbol_order.py computes it.
fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
