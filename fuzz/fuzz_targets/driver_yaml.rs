//! Arbitrary text (lossy UTF-8, at most 16 KiB) through `Driver::from_yaml`. It must return a
//! driver or an error, never panic or hang. A driver that compiles is applied to a few plain
//! corpus telegrams and its readings are taken, so fuzzed fields, formulas and status rules
//! run against real records.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meterbridge::drivers::engine::Driver;
use meterbridge::drivers::MeterState;
use meterbridge::security::KeyStore;
use meterbridge::telegram::wireless::{WirelessDecoder, WirelessFrame};
use meterbridge::wire::hex;

const MAX_TEXT: usize = 16 * 1024;

/// Unencrypted telegrams from the stick tests: a water meter with many records, a small one,
/// and a Kamstrup compact-layout meter.
const TELEGRAMS: [&str; 3] = [
    "4644B4092143658713077A9C0000000C1364390400046D212F16350F152A0F000000440F00C00F00511000D51000B20B00180C007C0C00E60C00560D00D10D00400E00C60E0000",
    "2144B4099163742315077A400000000C1399999999046D092A30340F050B01000000",
    "844442040011223320027A3E0000200E840017495200000004FFA0150000000004FFA1150000000004FFA2150000000004FFA3150000000007FFA600000000000000000007FFA700000000000000000007FFA800000000000000000007FFA90000000000000000000DFD8E0007302E38322E31420DFFAA000B3030312D313131203332421F",
];

fn frames() -> &'static [WirelessFrame] {
    static FRAMES: OnceLock<Vec<WirelessFrame>> = OnceLock::new();
    FRAMES.get_or_init(|| {
        let mut decoder = WirelessDecoder::new(KeyStore::new());
        TELEGRAMS
            .iter()
            .map(|t| {
                decoder
                    .decode(&hex::decode(t).expect("hex"))
                    .expect("test telegram decodes")
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(&data[..data.len().min(MAX_TEXT)]);
    let Ok(driver) = Driver::from_yaml("f.yaml", &text) else {
        return;
    };
    let _ = (driver.name(), driver.field_keys().count());
    let mut state = MeterState::default();
    for frame in frames() {
        if let Ok(t) = frame.telegram() {
            let _ = driver.apply(&t, &mut state);
            for reading in driver.readings(&state) {
                let _ = format!("{} {:?}", reading.key, reading.value);
            }
        }
    }
});
