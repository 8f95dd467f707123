//! Decoding speed over the libmbus corpus (76 frames) and over wireless telegrams from the
//! wmbusmeters corpus and `tests/fixtures/wmbus/security_vectors.md`, by protection:
//! `cargo bench --bench decode`.
//!
//! A plain timing loop (no criterion): each case runs for about two seconds after a warm-up and
//! reports frames (telegrams) and records per second on one core. Figures go to
//! docs/benchmarks.md.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use meterbridge::output::{json, libmbus_xml};
use meterbridge::security::{Key, KeyStore};
use meterbridge::telegram::wireless::Protection;
use meterbridge::telegram::{decode_wired, decode_wired_into, Telegram, WirelessDecoder};
use meterbridge::wire::hex;
use meterbridge::wire::records::Value;

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/libmbus/test-frames");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "hex"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| hex::decode(&std::fs::read_to_string(p).expect("readable")).expect("hex"))
        .collect()
}

/// Runs `f` over the corpus repeatedly; returns (frames/s, records/s).
fn measure<'a>(frames: &'a [Vec<u8>], mut f: impl FnMut(&'a [u8]) -> usize) -> (f64, f64) {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(300) {
        for fr in frames {
            black_box(f(fr));
        }
    }
    let start = Instant::now();
    let (mut n_frames, mut n_records) = (0u64, 0u64);
    while start.elapsed() < Duration::from_secs(2) {
        for fr in frames {
            n_records += f(black_box(fr)) as u64;
        }
        n_frames += frames.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    (n_frames as f64 / secs, n_records as f64 / secs)
}

/// A wireless telegram and the decoder that holds its key and has seen the telegrams its meter
/// sent before (a compact frame needs its full frame), as in the daemon.
struct Wireless {
    decoder: WirelessDecoder,
    bytes: Vec<u8>,
}

/// Wireless telegrams by how the decoder made them readable.
#[derive(Default)]
struct WirelessSets {
    plain: Vec<Wireless>,
    mode5: Vec<Wireless>,
    mode7: Vec<Wireless>,
    ell: Vec<Wireless>,
    ell_compact: Vec<Wireless>,
}

/// Worked vectors from security_vectors.md: key, telegram.
const VECTORS: &[(&str, &str)] = &[
    // V4, mode 7 with AFL and format B CRCs.
    ("622b9656991ff0c1574c0950cf9278d1", "C244C5140443054300048C200E900F002C25895E02003B0877D31DA840B17A0E009007100F8FAD4C4E61400DA4F3B1F7E273CC4C5C07F93CD20B237345DB39F9A98F8415E1C4B7A25C86E4C22D05C3352FA7E2E5627031F14643063F1DC8FE2C32459B6F02E4234B447B18E4BFDA8C4DA9B1EDE6CF29D0B2122A3E8B9DEEBEE3E6DBE6617B4E709EC6B595179CB01C2C0BDE6723A345B708652880C114A58DA07C73AD9EB8ACB17FA0A88F19BC84CB1FC56672DE8A9603FD0C05010002FD0B2111F60B"),
    // V5a, V5b, V5c: mode 5.
    ("00000000000000000000000000000000", "6e4401068888888805077a85006085bc2630713819512eb4cd87fba554fb43f67cf9654a68ee8e194088160df752e716238292e8af1ac20986202ee561d743602466915e42f1105d9c6782a54504e4f099e65a7656b930c73a30775122d2fdf074b5035cfaa7e0050bf32faae03a77"),
    ("BEDB81B52C29B5C143388CBB0D15A051", "3944FA122162092002067A3600202567C94D48D00DC47B11213E23383DB51968A705AAFA60C60E263D50CD259D7C9A03FD0C08000002FD0B0011"),
    ("A004EB23329A477F1DD2D7820B56EB3D", "76442104710007612507727100076121042507B5006005E2E95A3C2A1279A5415E6732679B43369FD5FDDDD783EEEBB48236D34E7C94AF0A18A5FDA5F7D64111EB42D4D891622139F2952F9D12A20088DFA4CF8123871123EE1F6C1DCEA414879DDB4E05E508F1826D7EFBA6964DF804C9261EA23BBF03"),
    // V6a, V6b: ELL AES-CTR, full and compact frame.
    ("28F64A24988064A079AA2C807D6102AE", "2A442D2C998734761B168D2091D37CAC21E1D68CDAFFCD3DC452BD802913FF7B1706CA9E355D6C2701CC24"),
    ("28F64A24988064A079AA2C807D6102AE", "23442D2C998734761B168D20983081B2227A6FA1F10E1B79B5EB4B17E81F930E937EE06C"),
];

/// Sorts each corpus telegram and vector by how the decoder made it readable. Telegrams stored
/// already decrypted, wired frames and the ones the decoder refuses are left out.
fn wireless_sets() -> WirelessSets {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/wmbus/wmbusmeters_driver_tests.jsonl");
    let text = std::fs::read_to_string(path).expect("wmbus corpus");
    // One corpus line carries a stray half byte after the telegram.
    let even = |t: &str| hex::decode(&t[..t.len() / 2 * 2]).expect("corpus hex");
    // (key, the meter's earlier telegrams, telegram)
    type Input = (Option<Key>, Vec<Vec<u8>>, Vec<u8>);
    let mut inputs: Vec<Input> = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        let key = v["key"].as_str().and_then(|k| Key::from_hex(k).ok());
        let preceding = v["preceding_telegrams"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str()).map(even).collect())
            .unwrap_or_default();
        let bytes = even(v["telegram"].as_str().unwrap_or(""));
        if bytes.first() == Some(&0x68) && decode_wired(&bytes).is_ok() {
            continue;
        }
        inputs.push((key, preceding, bytes));
    }
    for (key, telegram) in VECTORS {
        let key = Key::from_hex(key).ok();
        inputs.push((key, Vec::new(), hex::decode(telegram).expect("vector hex")));
    }

    let mut sets = WirelessSets::default();
    for (key, preceding, bytes) in inputs {
        let mut keys = KeyStore::new();
        if let Some(k) = key {
            keys.set_default(k);
        }
        let mut decoder = WirelessDecoder::new(keys);
        for p in &preceding {
            let _ = decoder.decode(p);
        }
        let Ok(frame) = decoder.decode(&bytes) else {
            continue;
        };
        if frame.telegram().is_err() {
            continue;
        }
        let link = &frame.link;
        let set = match (link.ell_protection, link.protection, link.security_mode) {
            (Some(Protection::Decrypted), ..) if link.compact.is_some() => &mut sets.ell_compact,
            (Some(Protection::Decrypted), ..) => &mut sets.ell,
            (None, Protection::Plain, _) => &mut sets.plain,
            (_, Protection::Decrypted, 5) => &mut sets.mode5,
            (_, Protection::Decrypted, 7) => &mut sets.mode7,
            _ => continue,
        };
        set.push(Wireless { decoder, bytes });
    }
    sets
}

/// One pass over `set`, each telegram with its own decoder; returns the records `f` counted.
fn wireless_round(set: &mut [Wireless], f: &mut impl FnMut(&Telegram<'_>) -> usize) -> usize {
    let mut records = 0;
    for w in set.iter_mut() {
        let Ok(frame) = w.decoder.decode(black_box(&w.bytes)) else {
            continue;
        };
        if let Ok(t) = frame.telegram() {
            records += f(&t);
        }
    }
    records
}

/// Like [`measure`], for wireless telegrams: returns (telegrams/s, records/s).
fn measure_wireless(set: &mut [Wireless], mut f: impl FnMut(&Telegram<'_>) -> usize) -> (f64, f64) {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(300) {
        black_box(wireless_round(set, &mut f));
    }
    let start = Instant::now();
    let (mut n, mut n_records) = (0u64, 0u64);
    while start.elapsed() < Duration::from_secs(2) {
        n_records += wireless_round(set, &mut f) as u64;
        n += set.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    (n as f64 / secs, n_records as f64 / secs)
}

/// Every record's scaled value and unit, as a consumer of the readings would ask for them.
fn scaled_values(t: &Telegram<'_>) -> usize {
    for r in &t.records {
        match r.value() {
            Value::Decimal(d) => {
                black_box(d);
            }
            other => {
                black_box(other);
            }
        }
        black_box(r.value_information());
    }
    t.records.len()
}

fn report(name: &str, rates: (f64, f64)) {
    report_as(name, "frame", rates);
}

fn report_as(name: &str, unit: &str, (fps, rps): (f64, f64)) {
    println!(
        "{name:<40} {:>12.0} {unit}s/s {:>14.0} records/s {:>8.0} ns/{unit}",
        fps,
        rps,
        1e9 / fps
    );
}

fn main() {
    let frames = corpus();
    println!("corpus: {} frames", frames.len());
    let mut records = Vec::with_capacity(64);

    report(
        "frame + records (framing only)",
        measure(&frames, |b| match decode_wired_into(b, &mut records) {
            Ok(_) => records.len(),
            Err(_) => 0,
        }),
    );

    report(
        "decode with scaled values",
        measure(&frames, |b| match decode_wired_into(b, &mut records) {
            Ok(_) => {
                for r in &records {
                    match r.value() {
                        Value::Decimal(d) => {
                            black_box(d);
                        }
                        other => {
                            black_box(other);
                        }
                    }
                    black_box(r.value_information());
                }
                records.len()
            }
            Err(_) => 0,
        }),
    );

    let mut text = String::with_capacity(16 * 1024);
    report(
        "decode + JSON",
        measure(&frames, |b| {
            let Ok(t) = meterbridge::telegram::decode_wired(b) else {
                return 0;
            };
            text.clear();
            json::render(&t, &mut text);
            black_box(&text);
            t.records.len()
        }),
    );

    for (name, style) in [
        ("decode + libmbus XML", libmbus_xml::XmlStyle::Plain),
        (
            "decode + libmbus normalized XML",
            libmbus_xml::XmlStyle::Normalized,
        ),
    ] {
        report(
            name,
            measure(&frames, |b| {
                let Ok(t) = meterbridge::telegram::decode_wired(b) else {
                    return 0;
                };
                text.clear();
                let _ = libmbus_xml::render(&t, style, &mut text);
                black_box(&text);
                t.records.len()
            }),
        );
    }

    let mut sets = wireless_sets();
    println!(
        "wireless: {} plain, {} mode 5, {} mode 7, {} ELL, {} ELL compact telegrams",
        sets.plain.len(),
        sets.mode5.len(),
        sets.mode7.len(),
        sets.ell.len(),
        sets.ell_compact.len()
    );
    for (name, set) in [
        ("wireless plain + scaled values", &mut sets.plain),
        ("wireless mode 5 + scaled values", &mut sets.mode5),
        ("wireless mode 7 (V4) + scaled values", &mut sets.mode7),
        ("wireless ELL AES-CTR (V6a) + scaled", &mut sets.ell),
        ("wireless ELL compact (V6b) + scaled", &mut sets.ell_compact),
    ] {
        report_as(name, "telegram", measure_wireless(set, scaled_values));
    }
    report_as(
        "wireless mode 5 + JSON",
        "telegram",
        measure_wireless(&mut sets.mode5, |t| {
            text.clear();
            json::render(t, &mut text);
            black_box(&text);
            t.records.len()
        }),
    );

    drivers_bench();
}

/// Decode + auto-detected driver + wmbusmeters line over the corpus mix, first with only the
/// corpus meters known, then with 10,000 more meters in the run's state: the per-telegram cost
/// must not grow with the number of meters (state is looked up by meter id).
fn drivers_bench() {
    use meterbridge::drivers::run::{DriverRun, FIXED_TIMESTAMP};
    use meterbridge::drivers::Registry;

    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/wmbus/wmbusmeters_driver_tests.jsonl");
    let text = std::fs::read_to_string(path).expect("corpus");
    let registry = Registry::built_in();
    let mut keys = KeyStore::new();
    let mut telegrams = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let t = v["telegram"].as_str().unwrap_or("");
        let Ok(bytes) = hex::decode(&t[..t.len() & !1]) else {
            continue;
        };
        if let (Some(k), Some(id)) = (v["key"].as_str(), v["id"].as_str()) {
            if let Ok(key) = Key::from_hex(k) {
                let _ = keys.insert(id, key);
            }
        }
        telegrams.push(bytes);
    }
    let mut run = DriverRun::new(&registry, keys);
    // Keep the telegrams a driver turns into readings.
    telegrams.retain(|b| run.process(b, "auto", "m", FIXED_TIMESTAMP).is_ok());
    let measure_run = |run: &mut DriverRun<'_>| {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(2) {
            for b in &telegrams {
                black_box(run.process(black_box(b), "auto", "m", FIXED_TIMESTAMP).ok());
            }
            n += telegrams.len() as u64;
        }
        n as f64 / start.elapsed().as_secs_f64()
    };
    let few = measure_run(&mut run);
    println!(
        "{:<40} {:>12.0} telegrams/s ({} telegrams, {} meters)",
        "decode + auto driver + wmbusmeters line",
        few,
        telegrams.len(),
        telegrams.len()
    );
    // 10,000 more Multical 21 meters (a stored-decrypted telegram with its id rewritten).
    let template = hex::decode(
        "2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713",
    )
    .expect("hex");
    for i in 0..10_000u32 {
        let mut t = template.clone();
        t[4..8].copy_from_slice(&(0x1000_0000 + i).to_le_bytes());
        let _ = run.process(&t, "auto", "m", FIXED_TIMESTAMP);
    }
    let many = measure_run(&mut run);
    println!(
        "{:<40} {:>12.0} telegrams/s (same telegrams, 10,000 more meters known: {:+.1} %)",
        "decode + auto driver, 10k meters",
        many,
        (many / few - 1.0) * 100.0
    );
}
