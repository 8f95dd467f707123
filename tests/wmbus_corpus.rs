//! Issue 3, point 2: the 403 telegrams of wmbusmeters' driver tests decode with their keys, and
//! the values wmbusmeters shows are there in our records.
//!
//! Drivers (which turn records into named fields) come later, so the check here is by value:
//! for every field of the expected JSON whose name ends in a unit we know (`_m3`, `_kwh`, `_c`,
//! …), some record of the telegram, scaled to that unit, must carry the same number. Fields a
//! driver computes (sums, differences, manufacturer payloads) cannot match a single record;
//! they are counted and listed, and the counts are asserted so they cannot silently grow.

use std::collections::BTreeMap;

use meterbridge::security::KeyStore;
use meterbridge::telegram::wireless::parse_key_argument;
use meterbridge::telegram::{decode_wired, Telegram, WirelessDecoder};
use meterbridge::wire::hex;
use meterbridge::wire::records::Value;
use meterbridge::wire::vif::Unit;
use serde_json::Value as Json;

mod support;
use support::{preceding_telegrams, wmbus_corpus_lines};

struct Case {
    line: usize,
    driver: String,
    key: Option<String>,
    telegram: String,
    preceding: Vec<String>,
    expected: serde_json::Map<String, Json>,
}

fn cases() -> Vec<Case> {
    wmbus_corpus_lines()
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let key = v["key"].as_str().unwrap_or("NOKEY");
            Case {
                line: i + 1,
                driver: v["driver"].as_str().unwrap_or("").to_string(),
                key: (key != "NOKEY").then(|| key.to_string()),
                telegram: v["telegram"].as_str().unwrap_or("").to_string(),
                preceding: preceding_telegrams(&v)
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
                expected: v["expected_json"].as_object().cloned().unwrap_or_default(),
            }
        })
        .collect()
}

/// Field-name unit suffixes wmbusmeters uses, as (suffix, our unit, factor from our unit).
const SUFFIXES: &[(&str, Unit, f64)] = &[
    ("_m3", Unit::CubicMetre, 1.0),
    ("_l", Unit::CubicMetre, 1000.0),
    ("_kwh", Unit::Wh, 1e-3),
    ("_kwh", Unit::J, 1.0 / 3.6e6),
    ("_mwh", Unit::Wh, 1e-6),
    ("_wh", Unit::Wh, 1.0),
    ("_gj", Unit::J, 1e-9),
    ("_mj", Unit::J, 1e-6),
    ("_kj", Unit::J, 1e-3),
    ("_c", Unit::Celsius, 1.0),
    // Temperature differences are K in records, `_c` in wmbusmeters' names.
    ("_c", Unit::Kelvin, 1.0),
    ("_k", Unit::Kelvin, 1.0),
    ("_m3h", Unit::CubicMetrePerHour, 1.0),
    ("_lh", Unit::CubicMetrePerHour, 1000.0),
    ("_w", Unit::Watt, 1.0),
    ("_kw", Unit::Watt, 1e-3),
    ("_kw", Unit::JoulePerHour, 1.0 / 3.6e6),
    ("_v", Unit::Volt, 1.0),
    ("_a", Unit::Ampere, 1.0),
    ("_bar", Unit::Bar, 1.0),
    ("_hz", Unit::Hertz, 1.0),
    ("_hca", Unit::HcaUnits, 1.0),
    ("_rh", Unit::Percent, 1.0),
];

/// Numbers a record carries in `unit` (scaled).
fn record_numbers(t: &Telegram<'_>, unit: Unit) -> Vec<f64> {
    t.records
        .iter()
        .filter(|r| r.scale().is_some_and(|s| s.unit == unit))
        .filter_map(|r| match r.value() {
            Value::Decimal(d) => Some(d.to_f64()),
            Value::Float(f) => Some(f),
            _ => None,
        })
        .collect()
}

/// wmbusmeters prints at most 6 decimals (723.611111 kWh for 2605 MJ), so a record matches
/// when it rounds to the printed number.
fn close(record: f64, printed: &Json) -> bool {
    let text = printed.to_string();
    let decimals = text.split_once('.').map(|(_, f)| f.len()).unwrap_or(0);
    let Some(expected) = printed.as_f64() else {
        return false;
    };
    let tolerance = 0.5 * 10f64.powi(-(decimals as i32)) + 1e-9 * expected.abs();
    (record - expected).abs() <= tolerance
}

#[derive(Default)]
struct Tally {
    cases: usize,
    decoded: usize,
    wired: usize,
    checkable_fields: usize,
    matched_fields: usize,
    cases_with_checkable: usize,
    cases_all_matched: usize,
    unmatched: BTreeMap<String, Vec<String>>,
    failures: Vec<String>,
}

#[test]
fn every_corpus_telegram_decodes_and_carries_the_expected_values() {
    let mut tally = Tally::default();
    for case in cases() {
        tally.cases += 1;
        let mut keys = KeyStore::new();
        if let Some(k) = &case.key {
            // As `--key HEX` reads it: 32 digits an AES key, 16 a DES key, for every meter.
            parse_key_argument(&mut keys, k).expect("corpus key");
        }
        let mut decoder = WirelessDecoder::new(keys);
        let bytes = match hex::decode(&case.telegram) {
            Ok(b) => b,
            // Line 303 (qwaterv2) carries one stray hex digit after the 61 bytes its L field
            // announces; wmbusmeters ignores a trailing half byte. We refuse odd hex input, so
            // the test drops the stray digit and checks the rest.
            Err(hex::HexError::OddLength { .. }) if case.line == 303 => {
                hex::decode(&case.telegram[..case.telegram.len() - 1]).expect("corpus hex")
            }
            Err(e) => panic!("line {}: {e}", case.line),
        };
        if bytes.first() == Some(&0x68) && decode_wired(&bytes).is_ok() {
            tally.wired += 1;
        }
        for p in &case.preceding {
            let pb = hex::decode(p).expect("corpus hex");
            let _ = decoder.decode(&pb);
        }
        let wired;
        let frame;
        let telegram = if bytes.first() == Some(&0x68) && decode_wired(&bytes).is_ok() {
            wired = bytes.clone();
            decode_wired(&wired).expect("checked")
        } else {
            frame = match decoder.decode(&bytes) {
                Ok(f) => f,
                Err(e) => {
                    tally
                        .failures
                        .push(format!("line {} ({}): {e}", case.line, case.driver));
                    continue;
                }
            };
            match frame.telegram() {
                Ok(t) => t,
                Err(e) => {
                    tally.failures.push(format!(
                        "line {} ({}): records: {e}",
                        case.line, case.driver
                    ));
                    continue;
                }
            }
        };
        tally.decoded += 1;

        let mut checkable = 0;
        let mut matched = 0;
        for (name, value) in &case.expected {
            let Some(expected) = value.as_f64() else {
                continue;
            };
            // The longest matching suffix names the unit (`_m3h` before `_m3`, `_kwh` before
            // `_wh`); the same suffix may stand for several record units.
            let Some(longest) = SUFFIXES
                .iter()
                .filter(|(s, _, _)| name.ends_with(s))
                .map(|(s, _, _)| s.len())
                .max()
            else {
                continue;
            };
            let _ = expected;
            checkable += 1;
            let found = SUFFIXES
                .iter()
                .filter(|(s, _, _)| s.len() == longest && name.ends_with(s))
                .any(|(_, unit, factor)| {
                    record_numbers(&telegram, *unit)
                        .iter()
                        .any(|v| close(v * factor, value))
                });
            if found {
                matched += 1;
            } else {
                tally
                    .unmatched
                    .entry(case.driver.clone())
                    .or_default()
                    .push(format!("line {}: {name}={expected}", case.line));
            }
        }
        tally.checkable_fields += checkable;
        tally.matched_fields += matched;
        if checkable > 0 {
            tally.cases_with_checkable += 1;
            if matched == checkable {
                tally.cases_all_matched += 1;
            }
        }
    }
    eprintln!(
        "wmbus corpus: {} cases, {} decoded ({} wired), {} failures; unit fields {} of {} found in records; cases with every unit field found: {} of {}",
        tally.cases,
        tally.decoded,
        tally.wired,
        tally.failures.len(),
        tally.matched_fields,
        tally.checkable_fields,
        tally.cases_all_matched,
        tally.cases_with_checkable
    );
    for (driver, fields) in &tally.unmatched {
        eprintln!("  not in a record ({driver}): {}", fields.join(", "));
    }
    // Telegrams we refuse on purpose, each with the reason (docs/wireless.md lists them too).
    // The message must stay what it is, so a change in behaviour shows up here.
    let expected_failures: &[(usize, &str)] = &[
        // Manufacturer-specific security modes 16-31: without a driver nothing says what they
        // mean, so the generic decoder refuses them. The hydrus driver declares 24 and 29 as
        // plaintext (tests/driver_corpus.rs, tests/manufacturer_modes.rs); 16 (BMT RFM-TX1)
        // and 21 (Hydrometer Sharky 775) are not understood yet.
        (139, "unsupported security mode 29"),
        (140, "unsupported security mode 24"),
        (321, "unsupported security mode 16"),
        (325, "unsupported security mode 21"),
    ];
    let mut unexpected = Vec::new();
    for f in &tally.failures {
        let known = expected_failures
            .iter()
            .any(|(line, text)| f.starts_with(&format!("line {line} ")) && f.contains(text));
        if !known {
            unexpected.push(f.clone());
        }
    }
    assert!(
        unexpected.is_empty(),
        "{} telegrams failed unexpectedly:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    assert_eq!(
        tally.failures.len(),
        expected_failures.len(),
        "{:?}",
        tally.failures
    );
    assert_eq!(tally.cases, 403);
    assert_eq!(tally.decoded, 403 - expected_failures.len());

    // Drivers whose readings come (partly) from manufacturer payloads or are computed by the
    // driver (proprietary frames after 2F 2F, Techem and Qundis formats, PRIOS, per-month
    // deltas, manufacturer VIFs): their values need the driver layer (issue 4). Every other
    // driver's unit fields must all be found in a record.
    const NEEDS_DRIVER: &[&str] = &[
        "apator08",
        "apator162",
        "apator172",
        "apatoreitn",
        "apatorna1",
        "bfw240radio",
        "caltose",
        "compact5",
        "ebzwmbe",
        "fhkvdataiii",
        "fhkvdataiv",
        "hydroclima",
        "hydroclimav2",
        "hydrodigit",
        "iem3000",
        "ime",
        "izar",
        "izarv2",
        "mkradio3",
        "mkradio3a",
        "mkradio4",
        "nemo",
        "qcaloric",
        "qheat",
        "qheatv2",
        "qwater",
        "qwaterv2",
        "vario451",
        "zenner0b",
    ];
    let surprising: Vec<_> = tally
        .unmatched
        .iter()
        .filter(|(driver, _)| !NEEDS_DRIVER.contains(&driver.as_str()))
        .collect();
    assert!(
        surprising.is_empty(),
        "values missing from the records: {surprising:#?}"
    );
    assert!(tally.matched_fields >= 1775, "{}", tally.matched_fields);
}
