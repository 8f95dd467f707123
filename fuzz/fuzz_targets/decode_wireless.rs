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

mod common;

use libfuzzer_sys::fuzz_target;
use meterbridge::output::json;
use meterbridge::telegram::{Telegram, WirelessDecoder};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, telegram)) = data.split_first() else {
        return;
    };
    let mut decoder = WirelessDecoder::new(common::key_store(mode));
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
        common::exercise_record(r, out);
    }
    json::render(t, out);
}
