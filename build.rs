//! Embeds every `drivers/*.yaml` file into the binary, so a release binary needs no files
//! beside it, and checks them here: a built-in driver that does not parse (YAML, the file
//! format, its detection entries, a name or alias used twice) is a build error with the file,
//! line and column, never a driver silently missing at run time.
//!
//! It also writes each driver in compiled form, constant data of the types in
//! `src/drivers/compiled.rs` (no YAML parser runs, and none of its code is paged in, when a
//! built-in driver is used), and the index the registry needs to find a driver without
//! building any: names and aliases, and detection triples. A driver is built from its data on
//! its first use.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The driver file format, shared with the crate (`src/drivers/model.rs` depends on serde only).
#[allow(dead_code)]
#[path = "src/drivers/model.rs"]
mod model;

/// The tables the compiled drivers live in (see `src/drivers/compiled.rs`): one string with
/// every text, and one array per kind of list element. Values refer to them by offset and
/// length, never by pointer: pointers in static data would need relocating when the program
/// loads, which touches every page of it in every process.
#[derive(Default)]
struct Tables {
    strings: String,
    /// Texts already in `strings`, so each distinct text is stored once.
    seen: std::collections::HashMap<String, String>,
    str_lists: Vec<String>,
    fields: Vec<String>,
    tests: Vec<String>,
    map: Vec<String>,
    expected: Vec<String>,
}

/// Writes a value as a Rust expression of its compiled twin (for `src/drivers/model.rs` types),
/// adding what it refers to to the tables.
trait Rust {
    fn rust(&self, t: &mut Tables) -> String;
}

/// A type whose lists go into one of the tables.
trait Listed: Rust {
    fn table(t: &mut Tables) -> &mut Vec<String>;
}

impl Rust for String {
    fn rust(&self, t: &mut Tables) -> String {
        if let Some(s) = t.seen.get(self) {
            return s.clone();
        }
        let s = format!("S({}, {})", t.strings.len(), self.len());
        t.strings.push_str(self);
        t.seen.insert(self.clone(), s.clone());
        s
    }
}

impl Listed for String {
    fn table(t: &mut Tables) -> &mut Vec<String> {
        &mut t.str_lists
    }
}

impl Listed for model::Field {
    fn table(t: &mut Tables) -> &mut Vec<String> {
        &mut t.fields
    }
}

impl Listed for model::TestCase {
    fn table(t: &mut Tables) -> &mut Vec<String> {
        &mut t.tests
    }
}

impl Rust for bool {
    fn rust(&self, _: &mut Tables) -> String {
        self.to_string()
    }
}

macro_rules! integer {
    ($($t:ty),*) => {$(
        impl Rust for $t {
            fn rust(&self, _: &mut Tables) -> String {
                format!("{self}{}", stringify!($t))
            }
        }
    )*};
}
integer!(u64, usize, i32);

impl Rust for f64 {
    fn rust(&self, _: &mut Tables) -> String {
        // Debug prints the shortest text that reads back as the same number.
        if self.is_finite() {
            format!("{self:?}f64")
        } else if self.is_nan() {
            "f64::NAN".into()
        } else if *self > 0.0 {
            "f64::INFINITY".into()
        } else {
            "f64::NEG_INFINITY".into()
        }
    }
}

/// Security modes (0-31) as a bit set: `plain_security_modes`, `scrambled_security_modes`.
impl Rust for Vec<u8> {
    fn rust(&self, _: &mut Tables) -> String {
        let bits = self
            .iter()
            .filter(|m| **m < 32)
            .fold(0u32, |acc, m| acc | (1u32 << m));
        format!("{bits}u32")
    }
}

impl<T: Rust> Rust for Option<T> {
    fn rust(&self, t: &mut Tables) -> String {
        match self {
            Some(v) => format!("Some({})", v.rust(t)),
            None => "None".into(),
        }
    }
}

/// A list: its elements go to their table, one after another; the value is where they are.
fn list(items: Vec<String>, table: &mut Vec<String>) -> String {
    let at = format!("L({}, {})", table.len(), items.len());
    table.extend(items);
    at
}

impl<T: Listed> Rust for Vec<T> {
    fn rust(&self, t: &mut Tables) -> String {
        let items: Vec<String> = self.iter().map(|v| v.rust(t)).collect();
        list(items, T::table(t))
    }
}

impl Rust for BTreeMap<u64, String> {
    fn rust(&self, t: &mut Tables) -> String {
        let items: Vec<String> = self
            .iter()
            .map(|(k, v)| format!("({}, {})", k.rust(t), v.rust(t)))
            .collect();
        list(items, &mut t.map)
    }
}

impl Rust for BTreeMap<String, model::serde_json_value::Value> {
    fn rust(&self, t: &mut Tables) -> String {
        let items: Vec<String> = self
            .iter()
            .map(|(k, v)| format!("({}, {})", k.rust(t), v.rust(t)))
            .collect();
        list(items, &mut t.expected)
    }
}

/// A constant of `crate::drivers::compiled::$name`, the read-only twin of the model's type.
/// The fields are listed by destructuring, so a field added to the model and not here does
/// not build.
macro_rules! record {
    ($name:ident { $($field:ident),* $(,)? }) => {
        impl Rust for model::$name {
            fn rust(&self, t: &mut Tables) -> String {
                let model::$name { $($field),* } = self;
                let mut o = String::from(concat!("C::", stringify!($name), " {"));
                $(
                    o.push_str(concat!(stringify!($field), ": "));
                    o.push_str(&$field.rust(t));
                    o.push_str(", ");
                )*
                o.push('}');
                o
            }
        }
    };
}

record!(DriverFile {
    name,
    aliases,
    meter_type,
    media,
    info,
    detect,
    link_modes,
    default_fields,
    tpl_status_bits,
    decoder,
    enhanced_identity,
    plain_security_modes,
    scrambled_security_modes,
    scrambling,
    fields,
    tests,
});
record!(Field {
    name,
    quantity,
    unit,
    info,
    matcher,
    lookup,
    attributes,
    scale,
    formula,
    from,
    mask,
    text_format,
    width,
    precision,
    unsigned,
    date_shift,
    null_value,
    profile,
    texts,
    ha,
});
record!(DateShift { from, months, when });
record!(Match {
    measurement,
    vif_range,
    storage,
    tariff,
    subunit,
    difvif,
    difvif_or,
    combinable,
    nth,
});
record!(Lookup {
    name,
    kind,
    mask,
    default,
    map,
});
record!(HaMeta {
    device_class,
    state_class,
    entity_category,
    icon,
});
record!(TestCase {
    name,
    id,
    key,
    driver,
    telegrams,
    expected,
    comment,
});

impl Rust for model::Quantity {
    fn rust(&self, _: &mut Tables) -> String {
        // Unit variants: Debug is the variant's name.
        format!("crate::drivers::model::Quantity::{self:?}")
    }
}

impl Rust for model::NumberRange {
    fn rust(&self, t: &mut Tables) -> String {
        match self {
            model::NumberRange::One(n) => {
                format!("crate::drivers::model::NumberRange::One({})", n.rust(t))
            }
            model::NumberRange::Range([lo, hi]) => format!(
                "crate::drivers::model::NumberRange::Range([{}, {}])",
                lo.rust(t),
                hi.rust(t)
            ),
        }
    }
}

impl Rust for model::serde_json_value::Value {
    fn rust(&self, t: &mut Tables) -> String {
        use model::serde_json_value::Value;
        match self {
            Value::Null => "C::Value::Null".into(),
            Value::Bool(b) => format!("C::Value::Bool({})", b.rust(t)),
            Value::Number(n) => format!("C::Value::Number({})", n.rust(t)),
            Value::Text(s) => format!("C::Value::Text({})", s.rust(t)),
        }
    }
}

/// `static NAME: [TYPE; N] = [...];`
fn table(out: &mut String, name: &str, ty: &str, items: &[String]) {
    let _ = writeln!(out, "static {name}: [{ty}; {}] = [", items.len());
    for i in items {
        let _ = writeln!(out, "    {i},");
    }
    out.push_str("];\n\n");
}

fn main() {
    link_in_symbol_order();
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
    let mut entries = String::new();
    let mut tables = Tables::default();
    let mut drivers = Vec::new();
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
        drivers.push(parsed.rust(&mut tables));
        let _ = writeln!(
            entries,
            "    BuiltIn {{ file: {file:?}, #[cfg(test)] text: include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/drivers/{file}\")), compiled: &DRIVERS[{index}] }},"
        );
    }
    if !problems.is_empty() {
        panic!("broken built-in driver files:\n{}", problems.join("\n"));
    }
    let mut out = String::from("use crate::drivers::compiled::{self as C, L, S};\n\n");
    table(&mut out, "DRIVERS", "C::DriverFile", &drivers);
    table(&mut out, "STR_LISTS", "S", &tables.str_lists);
    table(&mut out, "FIELDS", "C::Field", &tables.fields);
    table(&mut out, "TESTS", "C::TestCase", &tables.tests);
    table(&mut out, "MAP", "(u64, S)", &tables.map);
    table(&mut out, "EXPECTED", "(S, C::Value)", &tables.expected);
    let _ = writeln!(
        out,
        "/// Every text of the compiled drivers.\nstatic STRINGS: &str = {:?};\n",
        tables.strings
    );
    out.push_str("/// Where the compiled drivers' lists and texts are.\npub static TABLES: C::Tables = C::Tables {\n    strings: STRINGS,\n    str_lists: &STR_LISTS,\n    fields: &FIELDS,\n    tests: &TESTS,\n    map: &MAP,\n    expected: &EXPECTED,\n};\n\n");
    out.push_str(
        "/// Every built-in driver, by file name.\npub static BUILT_IN_DRIVERS: &[BuiltIn] = &[\n",
    );
    out.push_str(&entries);
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
    let out_dir = std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
    let target = Path::new(&out_dir).join("built_in_drivers.rs");
    std::fs::write(&target, out).unwrap_or_else(|e| panic!("{}: {e}", target.display()));
}

/// Release builds on x86-64 Linux link the functions that common commands run together, in
/// the order of `link/symbol-order.txt` (written by bench/symbol_order.sh): a process maps its
/// code a fault-around window or page-cache folio at a time, so scattered functions map most
/// of the binary (docs/benchmarks.md, "One process per telegram"). Only where the linker is
/// known to be lld, which reads the file: rust-lld is the default linker for this target from
/// Rust 1.90; with a linker of the user's choice, or on other targets, nothing changes.
fn link_in_symbol_order() {
    const ORDER: &str = "link/symbol-order.txt";
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-env-changed=METERBRIDGE_NO_SYMBOL_ORDER");
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let flags = env("CARGO_ENCODED_RUSTFLAGS");
    if env("PROFILE") != "release"
        || env("TARGET") != "x86_64-unknown-linux-gnu"
        || std::env::var_os("RUSTC_LINKER").is_some()
        || flags.contains("linker")
        || flags.contains("fuse-ld")
        || std::env::var_os("METERBRIDGE_NO_SYMBOL_ORDER").is_some()
    {
        return;
    }
    let rustc = std::process::Command::new(std::env::var("RUSTC").unwrap_or("rustc".into()))
        .arg("-V")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    // "rustc 1.95.0 (…)": rust-lld links by default from 1.90 on.
    let minor = rustc
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    if minor.is_none_or(|m| m < 90) {
        return;
    }
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
    }
    let path = Path::new(&env("CARGO_MANIFEST_DIR")).join(ORDER);
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        path.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// FNV-1a, 64 bits, as bench/symbol_order.py computes it.
fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
