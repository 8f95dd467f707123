//! Issue 17: when several drivers detect a meter's triple, auto-detection chooses by what the
//! telegram contains, deterministically (docs/drivers.md, "Auto-detection").

mod support;

use meterbridge::drivers::run::{DriverRun, FIXED_TIMESTAMP};
use meterbridge::drivers::Registry;
use meterbridge::security::KeyStore;
use meterbridge::wire::hex;
use support::wmbus_corpus_lines;

fn telegram(line: usize) -> Vec<u8> {
    let lines = wmbus_corpus_lines();
    hex::decode(lines[line - 1]["telegram"].as_str().expect("telegram")).expect("hex")
}

fn meter_of(run: &mut DriverRun<'_>, bytes: &[u8]) -> String {
    let out = run
        .process(bytes, "auto", "m", FIXED_TIMESTAMP)
        .expect("decodes");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v["meter"].as_str().expect("meter").to_string()
}

#[test]
fn drivers_reading_the_same_records_tie_and_the_first_name_wins() {
    let registry = Registry::built_in();
    // Corpus line 395: Qundis water meter QDS 0x17/0x07, which qwater and qwaterv2 both
    // detect and read from the same records.
    let bytes = telegram(395);
    let candidates: Vec<&str> = registry
        .candidates("QDS", 0x17, 0x07)
        .into_iter()
        .map(|(_, d)| d.name())
        .collect();
    assert_eq!(candidates, ["qwater", "qwaterv2"]);
    for _ in 0..3 {
        let mut run = DriverRun::new(&registry, KeyStore::new());
        assert_eq!(meter_of(&mut run, &bytes), "qwater");
    }
    assert_eq!(
        registry.detect("QDS", 0x17, 0x07).map(|d| d.name()),
        Some("qwater")
    );
}

#[test]
fn the_driver_that_reads_more_of_the_telegram_wins() {
    let registry = Registry::built_in();
    // Corpus line 383: a Qundis heat meter's walk-by telegram; qheatv2 reads its enhanced
    // identification record as well, qheat does not.
    let bytes = telegram(383);
    let mut run = DriverRun::new(&registry, KeyStore::new());
    assert_eq!(meter_of(&mut run, &bytes), "qheatv2");
    // Corpus line 367: WEH,fe,07 behind a Techem converter: weh_07 reads its volume record,
    // mkradio4a (which detects the converter's TCH,95,37) nothing.
    let mut run = DriverRun::new(&registry, KeyStore::new());
    assert_eq!(meter_of(&mut run, &telegram(367)), "weh_07");
}

#[test]
fn a_meter_keeps_the_driver_chosen_for_it() {
    let registry = Registry::built_in();
    // Corpus line 380 (CI 0x72, qheat and qheatv2 read the same records: qheat) moved to the
    // meter of line 383 (whose walk-by telegram qheatv2 reads more of), in both its data-link
    // and its long transport header.
    let mut moved = telegram(380);
    assert_eq!(moved[10], 0x72);
    for at in [4, 11] {
        moved[at..at + 4].copy_from_slice(&0x7856_3411u32.to_le_bytes());
    }
    let mut fresh = DriverRun::new(&registry, KeyStore::new());
    assert_eq!(meter_of(&mut fresh, &moved), "qheat");
    let mut run = DriverRun::new(&registry, KeyStore::new());
    assert_eq!(meter_of(&mut run, &telegram(383)), "qheatv2");
    assert_eq!(meter_of(&mut run, &moved), "qheatv2");
}
