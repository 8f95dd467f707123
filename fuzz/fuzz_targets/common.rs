//! Pieces several fuzz targets share; each target includes this file with `mod common;`.
//! Cargo.toml names the targets one by one, so this file is not a target of its own.

// Every target uses a different subset of these.
#![allow(dead_code)]

use std::fmt::Write as _;

use meterbridge::security::{Key, KeyStore};
use meterbridge::wire::records::{Record, Value};

/// The key of vector V5b, a real mode 5 meter.
pub const V5B_KEY: [u8; 16] = [
    0xBE, 0xDB, 0x81, 0xB5, 0x2C, 0x29, 0xB5, 0xC1, 0x43, 0x38, 0x8C, 0xBB, 0x0D, 0x15, 0xA0, 0x51,
];
/// The key of vectors V6a/V6b (ELL AES-CTR), for meter 76348799.
pub const V6_KEY: [u8; 16] = [
    0x28, 0xF6, 0x4A, 0x24, 0x98, 0x80, 0x64, 0xA0, 0x79, 0xAA, 0x2C, 0x80, 0x7D, 0x61, 0x02, 0xAE,
];

/// The keys a decoder holds for an input's key byte (`% 4`: none, all zero, V5b's key as the
/// default, V6's key for meter 76348799 only), so libFuzzer explores the keyed paths as well as
/// the keyless ones. `fuzz/seed.sh` writes its seeds for this table.
pub fn key_store(selector: u8) -> KeyStore {
    let mut keys = KeyStore::new();
    match selector % 4 {
        1 => keys.set_default(Key::from_bytes([0; 16])),
        2 => keys.set_default(Key::from_bytes(V5B_KEY)),
        3 => {
            let _ = keys.insert("76348799", Key::from_bytes(V6_KEY));
        }
        _ => {}
    }
    keys
}

/// Formats what every accessor of a record returns, so a panic anywhere in the record API
/// shows up; leaves `out` empty.
pub fn exercise_record(r: &Record<'_>, out: &mut String) {
    let _ = write!(out, "{:?} {:?}", r.raw_value(), r.value_information());
    match r.value() {
        Value::Decimal(d) => {
            let _ = write!(out, "{d} {}", d.to_f64());
        }
        Value::InvalidBcd(digits) => {
            let _ = write!(out, "{digits}");
        }
        Value::DateTime(time) => {
            let _ = write!(out, "{time}");
        }
        other => {
            let _ = write!(out, "{other:?}");
        }
    }
    if let Some(scale) = r.scale() {
        let _ = write!(out, "{} {scale:?}", scale.unit);
    }
    for c in r.combinables() {
        out.push_str(&c.describe());
    }
    out.extend(r.plain_text_unit());
    out.clear();
}

/// A wireless telegram's L field counts the bytes after it.
#[track_caller]
pub fn assert_l_field(frame: &[u8]) {
    assert_eq!(
        frame.first().map(|&l| usize::from(l) + 1),
        Some(frame.len()),
        "telegram L does not match its length"
    );
}

/// One piece of a stream as a receiver would get it from the serial port.
pub struct Chunk<'a> {
    /// How many chunks the pattern has produced so far, this one included; 0 when the pattern
    /// is 0 (everything at once).
    pub step: usize,
    /// Where `bytes` starts in the stream.
    pub offset: usize,
    pub bytes: &'a [u8],
}

/// `stream` in the chunks an input's pattern byte picks, so libFuzzer explores how a stream is
/// split as well as what it contains: pattern 0 gives everything at once; otherwise the sizes
/// cycle through 1..=8 times the low nibble (at least 1), plus the high nibble modulo 3.
pub fn chunks(stream: &[u8], pattern: u8) -> Chunks<'_> {
    Chunks {
        stream,
        pattern,
        pos: 0,
        step: 0,
    }
}

pub struct Chunks<'a> {
    stream: &'a [u8],
    pattern: u8,
    pos: usize,
    step: usize,
}

impl<'a> Iterator for Chunks<'a> {
    type Item = Chunk<'a>;

    fn next(&mut self) -> Option<Chunk<'a>> {
        if self.pos >= self.stream.len() {
            return None;
        }
        let n = if self.pattern == 0 {
            self.stream.len()
        } else {
            self.step += 1;
            (self.step % 8 + 1) * usize::from(self.pattern & 0x0F).max(1)
                + usize::from(self.pattern >> 4) % 3
        };
        let offset = self.pos;
        let end = self.stream.len().min(offset + n);
        self.pos = end;
        Some(Chunk {
            step: self.step,
            offset,
            bytes: self.stream.get(offset..end)?,
        })
    }
}
