//! Decoding speed over the libmbus corpus (76 frames): `cargo bench --bench decode`.
//!
//! A plain timing loop (no criterion): each case runs for about two seconds after a warm-up and
//! reports frames and records per second on one core. Figures go to docs/benchmarks.md.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use meterbridge::output::{json, libmbus_xml};
use meterbridge::telegram::decode_wired_into;
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

fn report(name: &str, (fps, rps): (f64, f64)) {
    println!(
        "{name:<40} {:>12.0} frames/s {:>14.0} records/s {:>8.0} ns/frame",
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
}
