//! Bytes from an IMST stick, split at points the input chooses, through both byte-level
//! decoders (plain HCI for the iM871A, HCI in SLIP for the iU891A), and every frame's payload
//! through the DEVICEINFO and CONFIG answer parsers. Any panic is a bug.
//!
//! The first byte picks the chunk sizes (0: everything at once). Checks:
//! - every frame re-encodes to exactly the bytes that carried it (HCI) or to its SLIP content;
//! - a decoder never waits on more than one frame's worth of bytes;
//! - the frames do not depend on how the stream was split.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use meterbridge::receivers::imst::{
    decode_frame, slip_encode, DeviceInfo, HciFrame, ImstDecoder, RadioConfig,
};
use meterbridge::receivers::StickKind;

/// Longest HCI frame: header 4, payload 255, timestamp 4, RSSI 1, CRC 2.
const MAX_HCI_FRAME: usize = 4 + 255 + 7;
/// A SLIP frame is dropped once its content passes twice that (533 bytes); each content byte
/// may have arrived escaped (two bytes), and nothing is kept after the drop.
const MAX_SLIP_PENDING: usize = 2 * (2 * MAX_HCI_FRAME + 1) + 1;

fuzz_target!(|data: &[u8]| {
    let Some((&pattern, stream)) = data.split_first() else {
        return;
    };
    for kind in [StickKind::Im871a, StickKind::Iu891a] {
        let chunked = read(kind, stream, pattern);
        let whole = read(kind, stream, 0);
        assert_eq!(chunked, whole, "{kind:?}: frames depend on the split");
    }
    // Answer parsers on raw bytes as well, so short and odd payloads are covered directly.
    parse_answers(stream);
});

type Item = Result<(HciFrame, Vec<u8>), String>;

fn read(kind: StickKind, stream: &[u8], pattern: u8) -> Vec<Item> {
    let mut decoder = ImstDecoder::new(kind);
    let mut items = Vec::new();
    for chunk in common::chunks(stream, pattern) {
        decoder.push(chunk.bytes);
        while let Some(item) = decoder.next_frame_with_raw() {
            match item {
                Ok((frame, raw)) => {
                    check_frame(kind, &frame, &raw);
                    parse_answers(&frame.payload);
                    items.push(Ok((frame, raw)));
                }
                Err(e) => items.push(Err(e.to_string())),
            }
        }
        let limit = match kind {
            StickKind::Iu891a => MAX_SLIP_PENDING,
            _ => MAX_HCI_FRAME,
        };
        assert!(
            decoder.pending() < limit,
            "{kind:?} decoder holds {} bytes",
            decoder.pending()
        );
    }
    items
}

fn check_frame(kind: StickKind, frame: &HciFrame, raw: &[u8]) {
    let hci = match kind {
        StickKind::Iu891a => {
            let content = unslip(raw);
            assert_eq!(slip_encode(&content), raw, "SLIP frame does not re-encode");
            content
        }
        _ => raw.to_vec(),
    };
    let with_crc = hci.get(1).is_some_and(|ctrl| ctrl & 0x80 != 0);
    let encoded = frame
        .encode(with_crc)
        .expect("a decoded payload fits its length byte");
    assert_eq!(encoded, hci, "HCI frame does not re-encode to its bytes");
    assert_eq!(decode_frame(&hci).as_ref(), Ok(frame));
}

/// The content of one SLIP frame `END … END` (the decoder already accepted its escapes).
fn unslip(raw: &[u8]) -> Vec<u8> {
    let inner = raw
        .strip_prefix(&[0xC0])
        .and_then(|r| r.strip_suffix(&[0xC0]))
        .expect("SLIP raw bytes start and end with END");
    let mut out = Vec::with_capacity(inner.len());
    let mut escaped = false;
    for &b in inner {
        if escaped {
            escaped = false;
            match b {
                0xDC => out.push(0xC0),
                0xDD => out.push(0xDB),
                other => panic!("bad escape 0x{other:02X} in an accepted frame"),
            }
        } else {
            match b {
                0xDB => escaped = true,
                0xC0 => panic!("END inside an accepted frame"),
                other => out.push(other),
            }
        }
    }
    assert!(!escaped, "accepted frame ends in an escape");
    out
}

fn parse_answers(payload: &[u8]) {
    if let Ok(info) = DeviceInfo::parse(payload) {
        let _ = info.model(StickKind::Im871a);
        assert!(payload.len() >= 8);
    }
    if let Ok(cfg) = RadioConfig::parse(payload) {
        let _ = format!("{cfg:?}");
    }
}
