//! Runs every driver file's own test cases: the telegrams in order through the driver, the
//! wmbusmeters-format output compared with the expected object (numbers to 1e-9 relative,
//! `timestamp` ignored). One test for all drivers, so a new driver file is tested by existing.

use meterbridge::drivers::model::serde_json_value::Value as Expected;
use meterbridge::drivers::run::{DriverRun, FIXED_TIMESTAMP};
use meterbridge::drivers::Registry;
use meterbridge::security::KeyStore;
use meterbridge::telegram::wireless::parse_key_argument;
use meterbridge::wire::hex;

fn same(expected: &Expected, got: &serde_json::Value) -> bool {
    match (expected, got) {
        (Expected::Null, serde_json::Value::Null) => true,
        (Expected::Bool(a), serde_json::Value::Bool(b)) => a == b,
        (Expected::Text(a), serde_json::Value::String(b)) => a == b,
        (Expected::Number(a), serde_json::Value::Number(b)) => b
            .as_f64()
            .is_some_and(|b| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)),
        _ => false,
    }
}

#[test]
fn every_driver_file_loads() {
    let mut problems = Vec::new();
    for (file, result) in Registry::check_built_in() {
        if let Err(e) = result {
            let _ = file;
            problems.push(e.to_string());
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_driver_passes_its_own_tests() {
    let registry = Registry::built_in();
    let mut cases = 0;
    let mut failures = Vec::new();
    // MB_DRIVERS=a,b limits the run to some drivers while writing them.
    let only: Option<Vec<String>> = std::env::var("MB_DRIVERS")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    for driver in registry.iter() {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|n| n == driver.name()))
        {
            continue;
        }
        for case in driver.tests().iter() {
            cases += 1;
            let mut keys = KeyStore::new();
            if let Some(k) = &case.key {
                // As `--key HEX` reads it: 32 digits an AES key, 16 a DES key.
                parse_key_argument(&mut keys, k).expect("test key");
            }
            let mut run = DriverRun::new(&registry, keys);
            let chosen = case
                .driver
                .clone()
                .unwrap_or_else(|| driver.name().to_string());
            let mut last = Err("no telegrams".to_string());
            for t in &case.telegrams {
                let bytes = hex::decode(t).expect("test telegram hex");
                last = run.process(&bytes, &chosen, &case.name, FIXED_TIMESTAMP);
            }
            let label = format!(
                "{} ({})",
                driver.name(),
                case.comment.as_deref().unwrap_or(&case.name)
            );
            let line = match last {
                Ok(l) => l,
                Err(e) => {
                    failures.push(format!("{label}: {e}"));
                    continue;
                }
            };
            let got: serde_json::Value = serde_json::from_str(&line).expect("our JSON parses");
            let mut diffs = Vec::new();
            for (k, v) in &case.expected {
                match got.get(k) {
                    Some(g) if same(v, g) => {}
                    Some(g) => diffs.push(format!("{k}: expected {v:?}, got {g}")),
                    None => diffs.push(format!("{k}: missing (expected {v:?})")),
                }
            }
            if let Some(obj) = got.as_object() {
                for k in obj.keys() {
                    if k != "timestamp" && !case.expected.contains_key(k) {
                        diffs.push(format!("{k}: not expected, got {}", obj[k]));
                    }
                }
            }
            if !diffs.is_empty() {
                failures.push(format!("{label}:\n    {}", diffs.join("\n    ")));
            }
        }
    }
    eprintln!("driver tests: {cases} cases, {} failing", failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_field_has_home_assistant_metadata() {
    let registry = Registry::built_in();
    let mut missing = Vec::new();
    for d in registry.iter() {
        for f in &d.file.fields {
            if f.ha.is_none() && !f.has("hide") {
                missing.push(format!("{}: {}", d.name(), f.name));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "fields without `ha` (device_class/state_class, or `none`): {missing:?}"
    );
}
