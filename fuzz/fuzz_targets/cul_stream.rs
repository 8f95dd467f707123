//! Bytes from a CUL stick (culfw) through `CulCodec`, split at points the input chooses, and
//! every line of the input through `parse_data_line`. Any panic is a bug.
//!
//! The first byte picks the chunk sizes (0: everything at once). Checks: a telegram's L equals
//! its length − 1, and putting its data-link CRCs back gives the bytes the line carried; the
//! events do not depend on how the stream was split.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use meterbridge::receivers::cul::{parse_data_line, CulCodec, CulEvent, CulTelegram};
use meterbridge::wire::hex;
use meterbridge::wire::wireless::add_dll_crcs;

fuzz_target!(|data: &[u8]| {
    let Some((&pattern, stream)) = data.split_first() else {
        return;
    };
    let chunked = read(stream, pattern);
    let whole = read(stream, 0);
    assert_eq!(chunked, whole, "events depend on the split");
    let text = String::from_utf8_lossy(stream);
    for line in text.split(['\r', '\n']) {
        if let Ok(t) = parse_data_line(line) {
            check(line, &t);
        }
    }
});

fn read(stream: &[u8], pattern: u8) -> Vec<CulEvent> {
    let mut codec = CulCodec::new();
    let mut events = Vec::new();
    for chunk in common::chunks(stream, pattern) {
        codec.push(chunk.bytes);
        while let Some(event) = codec.next_event() {
            if let CulEvent::Telegram(t) = &event {
                assert!(t.frame.len() >= 2);
                let _ = t.rssi_dbm();
            }
            events.push(event);
        }
    }
    events
}

fn check(line: &str, t: &CulTelegram) {
    common::assert_l_field(&t.frame);
    let body_start = if line.starts_with("bY") { 2 } else { 1 };
    let body = line.get(body_start..).unwrap_or_default().trim_end();
    let carried = hex::decode(body).expect("the line parsed as hex");
    let with_crcs = add_dll_crcs(&t.frame, t.format).expect("a telegram is not empty");
    assert_eq!(
        carried.get(..with_crcs.len()),
        Some(with_crcs.as_slice()),
        "CRCs put back do not give the line's bytes"
    );
    let suffix = carried.len() - with_crcs.len();
    assert!(suffix == 0 || suffix == 2, "suffix of {suffix} bytes");
}
