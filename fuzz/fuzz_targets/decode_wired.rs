//! Arbitrary bytes through the whole decoder and every renderer; any panic is a bug.
//!
//! Seeds are whole frames (see `fuzz/seed.sh`). Most mutations of a frame break its checksum,
//! so an input that fails in the link layer is decoded a second time with L, CS and stop
//! rewritten: that way the mutation itself reaches the application layer and the records.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use meterbridge::output::{json, libmbus_xml};
use meterbridge::telegram::{decode_wired, DecodeError, Telegram};
use meterbridge::wire::application::Application;

fuzz_target!(|data: &[u8]| {
    match decode_wired(data) {
        Ok(telegram) => exercise(&telegram),
        Err(DecodeError::Frame(_)) => {
            if let Some(fixed) = with_valid_framing(data) {
                if let Ok(telegram) = decode_wired(&fixed) {
                    exercise(&telegram);
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});

/// `data` as a long frame with correct start bytes, L fields, checksum and stop byte; `None`
/// if it is too short to hold C, A and CI.
fn with_valid_framing(data: &[u8]) -> Option<Vec<u8>> {
    // 68 L L 68 C A CI CS 16, and L is one byte.
    if data.len() < 9 {
        return None;
    }
    let mut f = data[..data.len().min(255 + 6)].to_vec();
    let n = f.len();
    let l = (n - 6) as u8;
    f[..4].copy_from_slice(&[0x68, l, l, 0x68]);
    f[n - 2] = f[4..n - 2].iter().fold(0u8, |sum, &b| sum.wrapping_add(b));
    f[n - 1] = 0x16;
    Some(f)
}

fn exercise(t: &Telegram<'_>) {
    let mut out = String::new();
    let _ = t.more_records_follow();
    if let Application::Variable { records: area, .. } = &t.application {
        // Each record consumes at least its DIF; more records than bytes means no progress.
        assert!(t.records.len() <= area.len());
    }
    for r in &t.records {
        common::exercise_record(r, &mut out);
    }
    json::render(t, &mut out);
    for style in [
        libmbus_xml::XmlStyle::Plain,
        libmbus_xml::XmlStyle::Normalized,
    ] {
        out.clear();
        // Refusing a telegram is fine; panicking is not.
        let _ = libmbus_xml::render(t, style, &mut out);
    }
}
