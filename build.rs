//! Embeds every `drivers/*.yaml` file into the binary, so a release binary needs no files
//! beside it, and checks them here: a built-in driver that does not parse (YAML, the file
//! format, its detection entries, a name or alias used twice) is a build error with the file,
//! line and column, never a driver silently missing at run time.
//!
//! It also writes the index the registry needs to find a driver without parsing any: names
//! and aliases, and detection triples. A driver's YAML is parsed on its first use.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The driver file format, shared with the crate (`src/drivers/model.rs` depends on serde only).
#[allow(dead_code)]
#[path = "src/drivers/model.rs"]
mod model;

/// A `MFCT,version,type` detection entry (hex or `*`), as `src/drivers/mod.rs`'s `Mvt::parse`
/// reads it: (manufacturer, version, device type).
fn parse_detect(s: &str) -> Option<(String, Option<u8>, Option<u8>)> {
    let mut parts = s.split(',').map(str::trim);
    let m = parts.next()?.to_ascii_uppercase();
    let hex = |p: Option<&str>| -> Option<Option<u8>> {
        match p? {
            "*" => Some(None),
            v => u8::from_str_radix(v.trim_start_matches("0x"), 16)
                .ok()
                .map(Some),
        }
    };
    let version = hex(parts.next())?;
    let device_type = hex(parts.next())?;
    if parts.next().is_some() || m.len() != 3 {
        return None;
    }
    Some((m, version, device_type))
}

fn main() {
    let dir = Path::new("drivers");
    println!("cargo:rerun-if-changed=drivers");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("drivers/: {e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    files.sort();
    let mut problems = Vec::new();
    let mut entries = String::new();
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
        let mut detect = String::new();
        for m in &parsed.detect {
            match parse_detect(m) {
                Some((mfct, version, device_type)) => {
                    let _ = write!(detect, "({mfct:?}, {version:?}, {device_type:?}), ");
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
        let _ = writeln!(
            entries,
            "    BuiltIn {{ file: {file:?}, text: include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/drivers/{file}\")), detect: &[{detect}] }},"
        );
    }
    if !problems.is_empty() {
        panic!("broken built-in driver files:\n{}", problems.join("\n"));
    }
    let mut out = String::from(
        "/// Every built-in driver, by file name.\npub static BUILT_IN_DRIVERS: &[BuiltIn] = &[\n",
    );
    out.push_str(&entries);
    out.push_str("];\n\n/// Every name and alias (sorted) with its driver's index in `BUILT_IN_DRIVERS`.\npub static BUILT_IN_NAMES: &[(&str, usize)] = &[\n");
    for (name, (index, _)) in &names {
        let _ = writeln!(out, "    ({name:?}, {index}),");
    }
    out.push_str("];\n");
    let out_dir = std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
    let target = Path::new(&out_dir).join("built_in_drivers.rs");
    std::fs::write(&target, out).unwrap_or_else(|e| panic!("{}: {e}", target.display()));
}
