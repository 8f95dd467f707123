//! A sequence of wireless telegrams through one `WirelessDecoder`, so a compact frame can
//! follow the full frame whose layout it names (the `decode_wireless` target decodes one
//! telegram at a time and only reaches the built-in layouts). Also arbitrary layouts and
//! values straight into `CompactFormats::insert` and `expand`. Any panic is a bug.
//!
//! Input: byte 0 picks the key as in `decode_wireless` (`% 4`: none, all zero, V5b's key, V6's
//! key for meter 76348799); then segments, each a length byte and that many bytes, the last
//! one taking the rest. Checks: a layout learned from a decoded full frame is stored under
//! the signature computed from it.

#![no_main]

use std::fmt::Write as _;

mod common;

use libfuzzer_sys::fuzz_target;
use meterbridge::output::json;
use meterbridge::telegram::compact::CompactFormats;
use meterbridge::telegram::{Telegram, WirelessDecoder};

const MAX_SEGMENTS: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut segments = Vec::new();
    while !rest.is_empty() && segments.len() < MAX_SEGMENTS {
        let (&len, after) = rest.split_first().expect("not empty");
        let len = usize::from(len).min(after.len());
        let (segment, tail) = after.split_at(if segments.len() + 1 == MAX_SEGMENTS {
            after.len()
        } else {
            len
        });
        segments.push(segment);
        rest = tail;
    }

    let mut decoder = WirelessDecoder::new(common::key_store(mode));
    let mut out = String::new();
    for segment in &segments {
        match decoder.decode(segment) {
            Ok(frame) => {
                let manufacturer = frame.link.dll.manufacturer;
                if let Ok(t) = frame.telegram() {
                    exercise(&t, &mut out);
                    let layout = CompactFormats::layout_of(&t.records);
                    let mut formats = CompactFormats::new();
                    let signature = formats.insert(manufacturer.0, layout.clone());
                    assert_eq!(signature, CompactFormats::signature(&layout));
                    assert!(formats.is_learned(manufacturer.0, signature));
                }
            }
            Err(e) => {
                let _ = write!(out, "{e}");
                if let Some(link) = &e.link {
                    json::render_wireless_link(link, &mut out);
                }
            }
        }
        out.clear();
    }

    // Layouts and values straight in: the first segment is a layout, each later one a compact
    // payload (signature, full-frame CRC, values) for it or for a built-in layout.
    if let Some((layout, payloads)) = segments.split_first() {
        let mut formats = CompactFormats::new();
        let manufacturer = u16::from(mode) << 8 | 0x2D;
        formats.insert(manufacturer, layout.to_vec());
        for payload in payloads {
            let mut area = Vec::new();
            let _ = formats.expand(manufacturer, payload, &mut area);
            let _ = formats.expand(0x2C2D, payload, &mut area);
        }
    }
});

fn exercise(t: &Telegram<'_>, out: &mut String) {
    for r in &t.records {
        let _ = write!(
            out,
            "{:?} {:?} {:?}",
            r.raw_value(),
            r.value(),
            r.value_information()
        );
        if let Some(scale) = r.scale() {
            let _ = write!(out, "{} {scale:?}", scale.unit);
        }
        out.clear();
    }
    json::render(t, out);
}
