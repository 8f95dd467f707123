//! Arbitrary bytes through the wireless decoder, every record accessor and the JSON renderer;
//! any panic is a bug.
//!
//! The first byte picks the key the decoder holds, so libFuzzer explores the keyed paths (wrong
//! key, stored plaintext refused because a key is configured) as well as the keyless ones:
//!
//! | byte % 4 | key |
//! | --- | --- |
//! | 0 | none |
//! | 1 | all zero (the key of vector V5a) |
//! | 2 | `BEDB81B52C29B5C143388CBB0D15A051` (V5b, a real mode 5 meter) |
//! | 3 | `28F64A24988064A079AA2C807D6102AE` for meter 76348799 only (V6a/V6b, ELL AES-CTR) |
//!
//! Bit 2 of that byte decodes the telegram twice with one decoder, as the daemon would, so a
//! full frame's layout is learned before the same bytes come through again.
//!
//! Seeds are the corpus telegrams with a key byte in front (see `fuzz/seed.sh`).

#![no_main]

use std::fmt::Write as _;

use libfuzzer_sys::fuzz_target;
use meterbridge::output::json;
use meterbridge::security::{Key, KeyStore};
use meterbridge::telegram::{Telegram, WirelessDecoder};
use meterbridge::wire::records::Value;

const V5B_KEY: [u8; 16] = [
    0xBE, 0xDB, 0x81, 0xB5, 0x2C, 0x29, 0xB5, 0xC1, 0x43, 0x38, 0x8C, 0xBB, 0x0D, 0x15, 0xA0, 0x51,
];
const V6_KEY: [u8; 16] = [
    0x28, 0xF6, 0x4A, 0x24, 0x98, 0x80, 0x64, 0xA0, 0x79, 0xAA, 0x2C, 0x80, 0x7D, 0x61, 0x02, 0xAE,
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, telegram)) = data.split_first() else {
        return;
    };
    let mut keys = KeyStore::new();
    match mode % 4 {
        1 => keys.set_default(Key::from_bytes([0; 16])),
        2 => keys.set_default(Key::from_bytes(V5B_KEY)),
        3 => {
            let _ = keys.insert("76348799", Key::from_bytes(V6_KEY));
        }
        _ => {}
    }
    let mut decoder = WirelessDecoder::new(keys);
    let rounds = if mode & 4 != 0 { 2 } else { 1 };
    let mut out = String::new();
    for _ in 0..rounds {
        match decoder.decode(telegram) {
            Ok(frame) => {
                let _ = (frame.link.meter_id(), frame.link.manufacturer_letters());
                match frame.telegram() {
                    Ok(t) => exercise(&t, &mut out),
                    Err(e) => {
                        let _ = write!(out, "{e}");
                    }
                }
            }
            Err(e) => {
                let _ = write!(out, "{e} {}", e.is_key_error());
                if let Some(link) = &e.link {
                    // What `decode` prints for a key error.
                    json::render_wireless_link(link, &mut out);
                }
            }
        }
        out.clear();
    }
});

fn exercise(t: &Telegram<'_>, out: &mut String) {
    let _ = (t.more_records_follow(), t.link.master_to_slave());
    for r in &t.records {
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
    json::render(t, out);
}
