//! BFW 240 radio heat cost allocators: the whole application data after the `2F2F` fillers is
//! a proprietary block.

use super::payload::{bcd, date_text, record_area};
use super::{Hook, HookValues};
use crate::telegram::Telegram;

pub const HOOKS: &[Hook] = &[Hook {
    name: "bfw240radio",
    values: BFW_VALUES,
    decode: decode_bfw240radio,
}];

const BFW_VALUES: &[&str] = &[
    "current_hca",
    "prev_hca",
    "prev_01_hca",
    "prev_02_hca",
    "prev_03_hca",
    "prev_04_hca",
    "prev_05_hca",
    "prev_06_hca",
    "prev_07_hca",
    "prev_08_hca",
    "prev_09_hca",
    "prev_10_hca",
    "prev_11_hca",
    "prev_12_hca",
    "prev_13_hca",
    "prev_14_hca",
    "prev_15_hca",
    "prev_16_hca",
    "prev_17_hca",
    "prev_18_hca",
    "device_date",
];

/// The record area (40 bytes, starting with the `2F2F` fillers) is one proprietary block:
/// bytes 4-5 the previous period's value and 6-7 the current value (big-endian), bytes 10-36
/// eighteen 12-bit monthly values, bytes 37-39 the date as BCD day, month, year.
///
/// The monthly values are read backwards from byte 36: every three bytes `a b c` (in that
/// backwards order) hold two values, the newer `a` plus the low nibble of `b` as its high bits,
/// the older `c` plus the high nibble of `b`.
fn decode_bfw240radio(t: &Telegram<'_>, out: &mut HookValues) {
    let Some(c) = record_area(t) else { return };
    if c.len() < 40 {
        return;
    }
    let be16 = |at: usize| f64::from(u16::from_be_bytes([c[at], c[at + 1]]));
    out.number("prev_hca", be16(4));
    out.number("current_hca", be16(6));
    // 27 history bytes, newest first.
    let history: Vec<u8> = c[10..37].iter().rev().copied().collect();
    for (group, bytes) in history.chunks_exact(3).enumerate() {
        let (a, b, cc) = (
            u16::from(bytes[0]),
            u16::from(bytes[1]),
            u16::from(bytes[2]),
        );
        let newer = a | (b & 0x0F) << 8;
        let older = cc | (b >> 4) << 8;
        for (k, v) in [(2 * group, newer), (2 * group + 1, older)] {
            if let Some(name) = BFW_VALUES.get(2 + k) {
                out.number(name, f64::from(v));
            }
        }
    }
    if let (Some(d), Some(m), Some(y)) = (bcd(c[37]), bcd(c[38]), bcd(c[39])) {
        if let Some(date) = date_text(y, m, d) {
            out.text("device_date", date);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::hooks::testing::{number as num, run as values, text};

    #[test]
    fn bfw240radio_history() {
        // Corpus line 56.
        let v = values(
            decode_bfw240radio,
            "3644D7084774700002087A80C000002F2F6F1F01440100147000000000000000000000000000000000000000000037009B4410AC260221",
        );
        assert_eq!(num(&v, "current_hca"), 256.0);
        assert_eq!(num(&v, "prev_hca"), 324.0);
        assert_eq!(num(&v, "prev_01_hca"), 172.0);
        assert_eq!(num(&v, "prev_02_hca"), 324.0);
        assert_eq!(num(&v, "prev_03_hca"), 155.0);
        assert_eq!(num(&v, "prev_04_hca"), 55.0);
        assert_eq!(num(&v, "prev_18_hca"), 0.0);
        assert_eq!(text(&v, "device_date"), "2021-02-26");
        // Corpus line 52.
        let v = values(
            decode_bfw240radio,
            "3644D7088877700002087ADBC000002F2F9E1F03C10388152A00000000000000000000000000000204000404000EE2020AC1321D280221",
        );
        assert_eq!(num(&v, "current_hca"), 904.0);
        assert_eq!(num(&v, "prev_hca"), 961.0);
        let history: Vec<f64> = (1..=9)
            .map(|k| num(&v, &format!("prev_{k:02}_hca")))
            .collect();
        assert_eq!(
            history,
            [541.0, 961.0, 522.0, 226.0, 14.0, 4.0, 4.0, 4.0, 2.0]
        );
        assert_eq!(text(&v, "device_date"), "2021-02-28");
    }
}
