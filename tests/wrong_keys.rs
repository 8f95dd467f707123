//! Issue 17: every encrypted telegram of wmbusmeters' driver corpus that comes with a key is
//! refused with a key error (exit status 3, no reading) when `decode` is given a random key
//! instead — whatever protects it: AES modes 5 and 7, DES, Apator NA-1's own AES-CBC payload.
//! A reading made from a wrong key's garbage is worse than none.

mod support;

use std::process::Command;

use meterbridge::cli::decode::{Decoder, Format, EXIT_KEY};
use meterbridge::drivers::Registry;
use meterbridge::security::KeyStore;
use meterbridge::telegram::wireless::parse_key_argument;
use support::{wmbus_corpus_lines, Rng};

/// Random keys tried per case through the `decode` command's decoder. Each must be refused;
/// the checks that catch them are listed per mode in docs/conformance.md (the weakest, Apator
/// NA-1's, lets about one in 5,500 by).
const KEYS_PER_CASE: usize = 16;

struct Case {
    line: usize,
    driver: String,
    id: String,
    key_len: usize,
    telegram: String,
}

fn keyed_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (index, case) in wmbus_corpus_lines().iter().enumerate() {
        let Some(key) = case["key"].as_str().filter(|k| *k != "NOKEY") else {
            continue;
        };
        if case["encrypted"] != true {
            continue;
        }
        let text = |v: &serde_json::Value| v.as_str().expect("text").to_string();
        cases.push(Case {
            line: index + 1,
            driver: case["driver_arg"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| text(&case["driver"])),
            // The id the meter is printed with (the corpus' own `id` may be a wildcard).
            id: text(&case["expected_json"]["id"]),
            key_len: key.len(),
            telegram: text(&case["telegram"]),
        });
    }
    cases
}

fn random_hex(rng: &mut Rng, bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02X}", rng.byte())).collect()
}

#[test]
fn every_keyed_corpus_case_refuses_random_keys() {
    let cases = keyed_cases();
    // 34 keyed encrypted cases: 23 in mode 5, 10 Apator NA-1, 1 DES.
    assert_eq!(cases.len(), 34);
    let registry = Registry::built_in_static();
    let mut rng = Rng::new(0x5EED_0017);
    let mut problems = Vec::new();
    for c in &cases {
        for _ in 0..KEYS_PER_CASE {
            let wrong = random_hex(&mut rng, c.key_len / 2);
            let mut keys = KeyStore::new();
            parse_key_argument(&mut keys, &format!("{}={wrong}", c.id)).expect("key argument");
            let mut decoder = Decoder::with_keys(Format::Wmbusmeters, keys);
            decoder.use_driver(registry, &c.driver, "meter");
            match decoder.decode_line(&c.telegram) {
                Ok(line) => problems.push(format!(
                    "line {} ({}) key {wrong}: a reading: {line}",
                    c.line, c.driver
                )),
                Err(f) if f.exit_status == EXIT_KEY => {}
                Err(f) => problems.push(format!(
                    "line {} ({}) key {wrong}: status {}: {}",
                    c.line, c.driver, f.exit_status, f.message
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The same through the binary, one wrong key per case: exit status 3 and nothing on standard
/// output. One run per driver and distinct meter ids (a process per telegram is slow in a
/// debug build); each meter gets its own wrong key with `--key ID=HEX`.
#[test]
fn the_binary_exits_with_status_3_and_prints_no_reading() {
    let cases = keyed_cases();
    let mut rng = Rng::new(0x5EED_1017);
    let mut pending: Vec<&Case> = cases.iter().collect();
    let mut checked = 0;
    let mut problems = Vec::new();
    while let Some(first) = pending.first() {
        let driver = first.driver.clone();
        let mut batch: Vec<&Case> = Vec::new();
        pending.retain(|c| {
            let take = c.driver == driver && batch.iter().all(|b| b.id != c.id);
            if take {
                batch.push(c);
            }
            !take
        });
        let mut args: Vec<String> = ["decode", "--format", "wmbusmeters", "--driver", &driver]
            .map(String::from)
            .to_vec();
        for c in &batch {
            args.push("--key".into());
            args.push(format!("{}={}", c.id, random_hex(&mut rng, c.key_len / 2)));
        }
        args.extend(batch.iter().map(|c| c.telegram.clone()));
        let out = Command::new(env!("CARGO_BIN_EXE_meterbridge"))
            .args(&args)
            .output()
            .expect("binary runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(3) || !stdout.trim().is_empty() {
            problems.push(format!(
                "{driver}: status {:?}, stdout {stdout:?}",
                out.status.code()
            ));
        }
        for (n, c) in batch.iter().enumerate() {
            let label = format!("error: telegram {}: ", n + 1);
            let refused = stderr.lines().any(|l| {
                l.starts_with(&label)
                    && (l.contains("wrong key?") || l.contains("MAC does not verify"))
            });
            if !refused {
                problems.push(format!(
                    "line {} ({driver}, meter {}) not refused: {stderr}",
                    c.line, c.id
                ));
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 34);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
