//! Issue 4, points 1 and 2: every case of wmbusmeters' driver tests, run through our drivers
//! with its driver name (and then with `auto`), compared with wmbusmeters' output. The pass
//! counts are printed and may only go up (the floor below is raised as drivers are added).

use std::path::Path;

use meterbridge::drivers::run::{DriverRun, FIXED_TIMESTAMP};
use meterbridge::drivers::Registry;
use meterbridge::security::KeyStore;
use meterbridge::telegram::wireless::parse_key_argument;
use meterbridge::wire::hex;
use serde_json::Value;

/// Cases that pass with the driver wmbusmeters was given. Raise when drivers improve.
const FLOOR_NAMED: usize = 403;
/// Cases that pass with `auto`.
const FLOOR_AUTO: usize = 380;

fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-12),
        _ => a == b,
    }
}

fn run_case(registry: &Registry, case: &Value, driver: &str) -> Result<(), String> {
    let mut keys = KeyStore::new();
    if let Some(k) = case["key"].as_str().filter(|k| *k != "NOKEY") {
        // As `--key HEX` reads it: 32 digits an AES key, 16 a DES key, for every meter.
        parse_key_argument(&mut keys, k)?;
    }
    let mut run = DriverRun::new(registry, keys);
    // The meter's name is configuration, not decoded data: use the one wmbusmeters ran with,
    // which is what its expected output shows (one case ran with an empty name).
    let name = case["expected_json"]["name"]
        .as_str()
        .or(case["name"].as_str())
        .unwrap_or("");
    let mut telegrams: Vec<String> = case["preceding_telegrams"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    telegrams.push(case["telegram"].as_str().unwrap_or("").to_string());
    let mut last = Err("no telegram".to_string());
    for t in &telegrams {
        let mut digits = t.clone();
        if digits.len() % 2 == 1 {
            digits.pop();
        }
        let bytes = hex::decode(&digits).map_err(|e| e.to_string())?;
        last = run.process(&bytes, driver, name, FIXED_TIMESTAMP);
    }
    let got: Value = serde_json::from_str(&last?).map_err(|e| e.to_string())?;
    let expected = case["expected_json"].as_object().ok_or("no expected")?;
    let got = got.as_object().ok_or("not an object")?;
    for (k, v) in expected {
        if k == "timestamp" {
            continue;
        }
        match got.get(k) {
            Some(g) if close(v, g) => {}
            other => return Err(format!("{k}: expected {v}, got {other:?}")),
        }
    }
    for k in got.keys() {
        if k != "timestamp" && !expected.contains_key(k) {
            return Err(format!("{k}: not expected"));
        }
    }
    Ok(())
}

#[test]
fn corpus_pass_rate() {
    let registry = Registry::built_in();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/wmbus/wmbusmeters_driver_tests.jsonl");
    let text = std::fs::read_to_string(path).expect("corpus");
    let (mut total, mut named, mut auto) = (0, 0, 0);
    let mut by_driver: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for (index, line) in text.lines().enumerate() {
        let case: Value = serde_json::from_str(line).expect("json");
        total += 1;
        let arg = case["driver_arg"]
            .as_str()
            .or(case["driver"].as_str())
            .unwrap_or("")
            .to_string();
        let named_result = run_case(&registry, &case, &arg);
        if let (Err(e), Ok(_)) = (&named_result, std::env::var("MB_VERBOSE_NAMED")) {
            eprintln!("line {}: fails with {arg}: {e}", index + 1);
        }
        let ok = named_result.is_ok();
        let entry = by_driver
            .entry(case["driver"].as_str().unwrap_or("").to_string())
            .or_default();
        entry.0 += 1;
        if ok {
            named += 1;
            entry.1 += 1;
        }
        match run_case(&registry, &case, "auto") {
            Ok(()) => auto += 1,
            Err(e) if ok && std::env::var("MB_VERBOSE").is_ok() => {
                eprintln!("line {}: auto differs for {arg}: {e}", index + 1);
            }
            Err(_) => {}
        }
    }
    let drivers_passing = by_driver.values().filter(|(n, p)| n == p).count();
    eprintln!(
        "driver corpus: {named}/{total} pass with their driver, {auto}/{total} with auto; {drivers_passing}/{} drivers pass every case",
        by_driver.len()
    );
    assert_eq!(total, 403);
    assert!(named >= FLOOR_NAMED, "named: {named} < {FLOOR_NAMED}");
    assert!(auto >= FLOOR_AUTO, "auto: {auto} < {FLOOR_AUTO}");
}
