//! Bytes from an Amber AMB8465/AMB3665 through `AmberDecoder`, under each of the four output
//! settings (command mode or transparent × RSSI byte or not) and with the settings unknown
//! (telegrams held back, then released by `set_settings`), with the gap rule driven by a
//! synthetic clock. Answer payloads go through the NVM dump, serial and firmware parsers.
//! Any panic is a bug.
//!
//! Input: byte 0 picks the settings (`% 6`: 0–3 fixed, 4 unknown then learned half-way, 5
//! unknown throughout); byte 1 the chunk sizes; byte 2 the pauses between chunks (0: none).
//! Checks: every telegram's L equals its length − 1; a decoder never waits on more than one
//! frame's worth of bytes; without pauses, the events do not depend on how the stream was
//! split; a pause of the gap timeout or more drops a partial frame.

#![no_main]

use std::time::{Duration, Instant};

mod common;

use libfuzzer_sys::fuzz_target;
use meterbridge::receivers::amber::{
    encode_frame, parse_firmware, parse_nvm_dump, parse_serial, AmberDecoder, AmberEvent,
    AmberSettings,
};

/// `FF cmd len payload CS`: the longest frame is 259 bytes; a transparent one is 256.
const MAX_FRAME: usize = 3 + 255 + 1;

fuzz_target!(|data: &[u8]| {
    let [choice, pattern, pauses, stream @ ..] = data else {
        return;
    };
    let settings = match choice % 6 {
        n @ 0..=3 => Some(AmberSettings {
            cmd_out: n & 1 != 0,
            rssi_enabled: n & 2 != 0,
        }),
        _ => None,
    };
    let learn_later = choice % 6 == 4;
    let base = Instant::now();
    let chunked = read(stream, settings, learn_later, *pattern, *pauses, base);
    if *pauses == 0 && !learn_later {
        let whole = read(stream, settings, false, 0, 0, base);
        assert_eq!(chunked, whole, "events depend on the split");
    }
    let _ = parse_nvm_dump(stream);
    let _ = (parse_serial(stream), parse_firmware(stream));
});

fn read(
    stream: &[u8],
    settings: Option<AmberSettings>,
    learn_later: bool,
    pattern: u8,
    pauses: u8,
    base: Instant,
) -> Vec<AmberEvent> {
    let mut decoder = AmberDecoder::new(settings);
    let mut events = Vec::new();
    let mut now = base;
    for chunk in common::chunks(stream, pattern) {
        if pauses != 0 {
            // Pauses of 0 to 3.5 s in steps of 250 ms, cycling with the chunk count.
            let quarter_seconds = u64::from((pauses >> (chunk.step % 4 * 2)) & 0x0F) % 15;
            now += Duration::from_millis(250 * quarter_seconds);
            if quarter_seconds % 2 == 1 {
                let before = decoder.malformed();
                let was_stale = decoder.gap_deadline().is_some_and(|d| now >= d);
                decoder.expire(now);
                if was_stale {
                    assert_eq!(decoder.pending(), 0, "a stale partial frame survived");
                    assert_eq!(decoder.malformed(), before + 1);
                }
            }
        }
        if learn_later && chunk.offset >= stream.len() / 2 && decoder.settings().is_none() {
            decoder.set_settings(AmberSettings {
                cmd_out: stream.len() % 2 == 0,
                rssi_enabled: stream.len() % 3 == 0,
            });
        }
        decoder.push_at(chunk.bytes, now);
        while let Some(event) = decoder.next_event() {
            match &event {
                AmberEvent::Telegram(t) => common::assert_l_field(&t.frame),
                AmberEvent::Answer { command, payload } => {
                    assert!(payload.len() <= 255);
                    let frame = encode_frame(*command, payload);
                    assert_eq!(frame.len(), payload.len() + 4);
                    if let Ok(nvm) = parse_nvm_dump(payload) {
                        let _ = (nvm.model.name(), nvm.settings());
                    }
                    let _ = (parse_serial(payload), parse_firmware(payload));
                }
            }
            events.push(event);
        }
        assert!(
            decoder.pending() < MAX_FRAME,
            "decoder holds {} bytes",
            decoder.pending()
        );
    }
    events
}
