//! Techem radio meters whose telegrams (CI 0xA0-0xA2) carry a Techem payload instead of M-Bus
//! records. Every offset below counts from the first byte after the CI; words are little
//! endian.
//!
//! Techem packs a billing date into one 16-bit word. The previous billing date uses bits 0-4
//! for the day, 5-8 for the month and 9-15 for the year after 2000. The current billing date
//! of MK Radio 3 and FHKV data III leaves out the year (day in bits 4-8, month in bits 9-12):
//! it is the previous date's year, or the year after when the current day of the year does not
//! come after the previous one. Dates are counted as wmbusmeters counts them: months and days
//! out of range roll over (day 0 is the last day of the month before).

use super::{manufacturer_payload, Hook, HookValue, HookValues};
use crate::telegram::Telegram;
use crate::wire::datetime::{civil_from_days, days_from_civil};

pub const HOOKS: &[Hook] = &[
    Hook {
        name: "techem_mkradio3",
        values: &[
            "previous_date",
            "previous_m3",
            "current_date",
            "current_m3",
            "total_m3",
        ],
        decode: decode_mkradio3,
    },
    Hook {
        name: "techem_mkradio3a",
        values: &[
            "current_date",
            "total_m3",
            "target_m3",
            "last_jan_m3",
            "last_feb_m3",
            "last_mar_m3",
            "last_apr_m3",
            "last_may_m3",
            "last_jun_m3",
            "last_jul_m3",
            "last_aug_m3",
            "last_sep_m3",
            "last_oct_m3",
            "last_nov_m3",
            "last_dec_m3",
        ],
        decode: decode_mkradio3a,
    },
    Hook {
        name: "techem_mkradio4",
        values: &["previous_m3", "current_m3", "total_m3"],
        decode: decode_mkradio4,
    },
    Hook {
        name: "techem_fhkv3",
        values: &[
            "previous_date",
            "previous_hca",
            "current_date",
            "current_hca",
            "temp_room_c",
            "temp_radiator_c",
        ],
        decode: decode_fhkv3,
    },
    Hook {
        name: "techem_compact5",
        values: &["previous_kwh", "current_kwh", "total_kwh"],
        decode: decode_compact5,
    },
    Hook {
        name: "techem_vario451",
        values: &["previous_kwh", "current_kwh", "total_kwh"],
        decode: decode_vario451,
    },
    Hook {
        name: "techem_tsd2",
        values: &["status", "previous_date"],
        decode: decode_tsd2,
    },
];

/// Little-endian unsigned integer of the bytes `at..at + len` (at most 4), if present.
fn le(data: &[u8], at: usize, len: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(len)?)?;
    if bytes.len() > 4 {
        return None;
    }
    Some(
        bytes
            .iter()
            .rev()
            .fold(0u32, |acc, &b| (acc << 8) | u32::from(b)),
    )
}

/// `YYYY-MM-DD` of a packed Techem date: `year` after 2000, `month` and `day` as sent; out of
/// range months and days roll over into the next (or previous) month or year.
fn techem_date(year: u32, month: u32, day: u32) -> String {
    let months = i64::from(year) * 12 + i64::from(month) - 1;
    let first = days_from_civil(2000 + months.div_euclid(12), months.rem_euclid(12) + 1, 1);
    let (y, m, d) = civil_from_days(first + i64::from(day) - 1);
    format!("{y:04}-{m:02}-{d:02}")
}

/// (year after 2000, month, day) of a previous-billing-date word.
fn full_date(word: u32) -> (u32, u32, u32) {
    (word >> 9, (word >> 5) & 0x0F, word & 0x1F)
}

/// (month, day) of a current-billing-date word (no year).
fn month_day(word: u32) -> (u32, u32) {
    ((word >> 9) & 0x0F, (word >> 4) & 0x1F)
}

/// The year of the current billing date: the previous date's year, or the next one when the
/// current month and day do not come after the previous ones.
fn current_year(prev: (u32, u32, u32), month: u32, day: u32) -> u32 {
    let (year, prev_month, prev_day) = prev;
    let wrapped = month < prev_month || (month == prev_month && day <= prev_day);
    year + u32::from(wrapped)
}

/// MK Radio 3: byte 0 unknown, then the previous billing date, the volume at that date (0.1
/// m³), the current billing date and the volume since then (0.1 m³).
fn decode_mkradio3(t: &Telegram<'_>, out: &mut HookValues) {
    let Some(data) = manufacturer_payload(t) else {
        return;
    };
    let prev_word = le(data, 1, 2);
    let previous = le(data, 3, 2);
    let current = le(data, 7, 2);
    if let Some(w) = prev_word {
        let (y, m, d) = full_date(w);
        out.text("previous_date", techem_date(y, m, d));
    }
    if let Some(v) = previous {
        out.number("previous_m3", f64::from(v) / 10.0);
    }
    if let (Some(p), Some(w)) = (prev_word, le(data, 5, 2)) {
        let prev = full_date(p);
        let (m, d) = month_day(w);
        out.text("current_date", techem_date(current_year(prev, m, d), m, d));
    }
    if let Some(v) = current {
        out.number("current_m3", f64::from(v) / 10.0);
    }
    if let (Some(p), Some(c)) = (previous, current) {
        out.number("total_m3", f64::from(p + c) / 10.0);
    }
}

/// Month names of the `last_*_m3` values, January first.
const MONTHS: [&str; 12] = [
    "last_jan_m3",
    "last_feb_m3",
    "last_mar_m3",
    "last_apr_m3",
    "last_may_m3",
    "last_jun_m3",
    "last_jul_m3",
    "last_aug_m3",
    "last_sep_m3",
    "last_oct_m3",
    "last_nov_m3",
    "last_dec_m3",
];

/// MK Radio 3a: bytes 0-1 unknown, the current date (full packed date), the total (3 bytes,
/// 0.1 m³), then twelve history entries of one unknown byte and two consumption bytes (0.1
/// m³). A month's consumption is both bytes of its entry from the 16th of the month on; before
/// that, it is the second byte of the entry before plus the first byte of its own (the first
/// entry alone for the month that has just begun). Entry 0 is the current month, entry 1 the
/// month before, and so on.
fn decode_mkradio3a(t: &Telegram<'_>, out: &mut HookValues) {
    let Some(data) = manufacturer_payload(t) else {
        return;
    };
    let date = le(data, 2, 2).map(full_date);
    if let Some((y, m, d)) = date {
        out.text("current_date", techem_date(y, m, d));
    }
    if let Some(v) = le(data, 4, 3) {
        out.number("total_m3", f64::from(v) / 10.0);
    }
    let Some((_, month, day)) = date else { return };
    let mut entries = [(0u32, 0u32); 12];
    for (k, entry) in entries.iter_mut().enumerate() {
        let at = 8 + 3 * k;
        let (Some(&lo), Some(&hi)) = (data.get(at), data.get(at + 1)) else {
            return;
        };
        *entry = (u32::from(lo), u32::from(hi));
    }
    let late = day > 15;
    let used = |k: usize| -> u32 {
        let (lo, hi) = entries[k];
        if late {
            lo + hi
        } else if k == 0 {
            lo
        } else {
            entries[k - 1].1 + lo
        }
    };
    out.number("target_m3", f64::from(used(0)) / 10.0);
    // Without a real month the entries cannot be named.
    if !(1..=12).contains(&month) {
        return;
    }
    let current = month as usize - 1;
    for (i, name) in MONTHS.iter().enumerate() {
        let ago = (current + 12 - i) % 12;
        out.number(name, f64::from(used(ago)) / 10.0);
    }
}

/// MK Radio 4: the previous period's volume in bytes 3-4 and the current period's in bytes 7-8
/// (0.1 m³).
fn decode_mkradio4(t: &Telegram<'_>, out: &mut HookValues) {
    let Some(data) = manufacturer_payload(t) else {
        return;
    };
    let previous = le(data, 3, 2);
    let current = le(data, 7, 2);
    if let Some(v) = previous {
        out.number("previous_m3", f64::from(v) / 10.0);
    }
    if let Some(v) = current {
        out.number("current_m3", f64::from(v) / 10.0);
    }
    if let (Some(p), Some(c)) = (previous, current) {
        out.number("total_m3", f64::from(p + c) / 10.0);
    }
}

/// FHKV data III: a version byte (0x01, 0x11, or 0x0F, which has one more byte before the
/// temperatures), the previous billing date, its HCA units, the current billing date, its HCA
/// units, the room and the radiator temperature (0.01 °C).
fn decode_fhkv3(t: &Telegram<'_>, out: &mut HookValues) {
    let Some(data) = manufacturer_payload(t) else {
        return;
    };
    let temps_at = match data.first() {
        Some(0x01 | 0x11) => 9,
        Some(0x0F) => 10,
        _ => return,
    };
    let prev_word = le(data, 1, 2);
    if let Some(w) = prev_word {
        let (y, m, d) = full_date(w);
        out.text("previous_date", techem_date(y, m, d));
    }
    if let Some(v) = le(data, 3, 2) {
        out.number("previous_hca", f64::from(v));
    }
    if let (Some(p), Some(w)) = (prev_word, le(data, 5, 2)) {
        // This meter sends day 0 for the 1st and month 0 for December.
        let (m, d) = month_day(w);
        let m = if m == 0 { 12 } else { m };
        let d = d.max(1);
        out.text(
            "current_date",
            techem_date(current_year(full_date(p), m, d), m, d),
        );
    }
    if let Some(v) = le(data, 7, 2) {
        out.number("current_hca", f64::from(v));
    }
    if let Some(v) = le(data, temps_at, 2) {
        out.number("temp_room_c", f64::from(v) / 100.0);
    }
    if let Some(v) = le(data, temps_at + 2, 2) {
        out.number("temp_radiator_c", f64::from(v) / 100.0);
    }
}

/// Previous period in bytes `prev..prev + len`, current period in `curr..curr + len`, each in
/// units that `divisor` turns into kWh.
fn two_periods(
    t: &Telegram<'_>,
    out: &mut HookValues,
    (prev, curr, len): (usize, usize, usize),
    divisor: f64,
) {
    let Some(data) = manufacturer_payload(t) else {
        return;
    };
    let previous = le(data, prev, len);
    let current = le(data, curr, len);
    if let Some(v) = previous {
        out.number("previous_kwh", f64::from(v) / divisor);
    }
    if let Some(v) = current {
        out.number("current_kwh", f64::from(v) / divisor);
    }
    if let (Some(p), Some(c)) = (previous, current) {
        out.number("total_kwh", (f64::from(p) + f64::from(c)) / divisor);
    }
}

/// Compact V: previous period kWh in bytes 3-5, current period kWh in bytes 7-9.
fn decode_compact5(t: &Telegram<'_>, out: &mut HookValues) {
    two_periods(t, out, (3, 7, 3), 1.0);
}

/// Vario 4 (4.5.1): previous period in bytes 3-4, current period in bytes 7-8, in MJ (kWh =
/// MJ / 3.6).
fn decode_vario451(t: &Telegram<'_>, out: &mut HookValues) {
    two_periods(t, out, (3, 7, 2), 3.6);
}

/// Smoke detector: byte 0 a state (0 OK, 1 SMOKE, 0x80 DEFECT), bytes 1-2 the previous
/// billing date. A payload too short for both is reported as a decoding error, as wmbusmeters
/// does.
fn decode_tsd2(t: &Telegram<'_>, out: &mut HookValues) {
    let Some(data) = manufacturer_payload(t) else {
        return;
    };
    let (Some(&state), Some(word)) = (data.first(), le(data, 1, 2)) else {
        out.text("status", "DECODING_ERROR_payload");
        out.set("previous_date", HookValue::Null);
        return;
    };
    let status = match state {
        0x00 => "OK".to_string(),
        0x01 => "SMOKE".to_string(),
        0x80 => "DEFECT".to_string(),
        other => format!("STATUS_{other:02X}"),
    };
    out.text("status", status);
    let (y, m, d) = full_date(word);
    out.text("previous_date", techem_date(y, m, d));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::KeyStore;
    use crate::telegram::WirelessDecoder;
    use crate::wire::hex;

    fn values(decode: super::super::Decoder, telegram: &str) -> HookValues {
        super::super::testing::run(decode, telegram)
    }

    use super::super::testing::number as num;

    use super::super::testing::text;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn dates_roll_over_like_calendar_arithmetic() {
        assert_eq!(techem_date(19, 12, 31), "2019-12-31");
        assert_eq!(techem_date(20, 2, 30), "2020-03-01");
        assert_eq!(techem_date(20, 0, 0), "2019-11-30");
        assert_eq!(techem_date(127, 15, 31), "2128-03-31");
        assert_eq!(techem_date(20, 2, 31), "2020-03-02");
    }

    #[test]
    fn mkradio3_billing_dates_and_volumes() {
        let v = values(
            decode_mkradio3,
            "2F446850313233347462A2069F255900B029310000000306060906030609070606050509050505050407040605070500",
        );
        assert!(close(num(&v, "total_m3"), 13.8));
        assert!(close(num(&v, "previous_m3"), 8.9));
        assert!(close(num(&v, "current_m3"), 4.9));
        assert_eq!(text(&v, "current_date"), "2019-04-27");
        assert_eq!(text(&v, "previous_date"), "2018-12-31");
        // Same month and day as the previous date: the year after.
        let v = values(
            decode_mkradio3,
            "2F446850313233347462A2067F245900F007310000000306060906030609070606050509050505050407040605070500",
        );
        assert_eq!(text(&v, "current_date"), "2019-03-31");
        assert_eq!(text(&v, "previous_date"), "2018-03-31");
        let v = values(
            decode_mkradio3,
            "2F446850313233347462A2067F2459001008310000000306060906030609070606050509050505050407040605070500",
        );
        assert_eq!(text(&v, "current_date"), "2018-04-01");
    }

    #[test]
    fn mkradio3a_history() {
        let v = values(
            decode_mkradio3a,
            "36446850420656625072A20C007C3110250000293400373A002E38000E15002F37003A39003835002F24003930001D2500312500162900",
        );
        assert_eq!(text(&v, "current_date"), "2024-11-28");
        assert!(close(num(&v, "total_m3"), 948.8));
        assert!(close(num(&v, "target_m3"), 9.3));
        for (name, want) in [
            ("last_jan_m3", 8.6),
            ("last_feb_m3", 6.6),
            ("last_mar_m3", 10.5),
            ("last_apr_m3", 8.3),
            ("last_may_m3", 10.9),
            ("last_jun_m3", 11.5),
            ("last_jul_m3", 10.2),
            ("last_aug_m3", 3.5),
            ("last_sep_m3", 10.2),
            ("last_oct_m3", 11.3),
            ("last_nov_m3", 9.3),
            ("last_dec_m3", 6.3),
        ] {
            assert!(close(num(&v, name), want), "{name}");
        }
    }

    #[test]
    fn mkradio4_volumes() {
        let v = values(
            decode_mkradio4,
            "2F446850200141029562A206702901006017030004000300000000000000000000000000000000000000000000000000",
        );
        assert!(close(num(&v, "previous_m3"), 0.1));
        assert!(close(num(&v, "current_m3"), 0.3));
        assert!(close(num(&v, "total_m3"), 0.4));
    }

    #[test]
    fn fhkv3_versions() {
        let v = values(
            decode_fhkv3,
            "34446850226677116980A0119F27020480048300C408F709143C003D341A2B0B2A0707000000000000062D114457563D71A1850000",
        );
        assert_eq!(num(&v, "current_hca"), 131.0);
        assert_eq!(num(&v, "previous_hca"), 1026.0);
        assert_eq!(text(&v, "current_date"), "2020-02-08");
        assert_eq!(text(&v, "previous_date"), "2019-12-31");
        assert!(close(num(&v, "temp_room_c"), 22.44));
        assert!(close(num(&v, "temp_radiator_c"), 25.51));
        // Version 0x0F: one more byte before the temperatures.
        let v = values(
            decode_fhkv3,
            "33446850341211119480A20F9F292D005024040011BD08380904000000070000000000000000000000000001000000000003140E",
        );
        assert_eq!(num(&v, "current_hca"), 4.0);
        assert_eq!(num(&v, "previous_hca"), 45.0);
        assert_eq!(text(&v, "current_date"), "2021-02-05");
        assert_eq!(text(&v, "previous_date"), "2020-12-31");
        assert!(close(num(&v, "temp_room_c"), 22.37));
        assert!(close(num(&v, "temp_radiator_c"), 23.6));
        let v = values(
            decode_fhkv3,
            "32446850059605416980A0019F334805400CFE029808B1080000000000060F4F3467AEA9A88D7B8D503E000000000000000000",
        );
        assert_eq!(text(&v, "current_date"), "2026-06-04");
        assert_eq!(num(&v, "previous_hca"), 1352.0);
        assert!(close(num(&v, "temp_room_c"), 22.0));
    }

    #[test]
    fn compact5_periods() {
        let v = values(
            decode_compact5,
            "37446850336633663943A210672C866100181C01000480794435D50000000000000000000000000000000000000000000000000000000000",
        );
        assert_eq!(num(&v, "previous_kwh"), 24966.0);
        assert_eq!(num(&v, "current_kwh"), 284.0);
        assert_eq!(num(&v, "total_kwh"), 25250.0);
        let v = values(
            decode_compact5,
            "3D446850221471414543A100FF32406002C8CD0000019F81071F68E001072C0C9106642075B5A6AC6AD229E993376AA7D10E1E5C60C1050000000056FED3",
        );
        assert_eq!(num(&v, "previous_kwh"), 155712.0);
        assert_eq!(num(&v, "current_kwh"), 205.0);
    }

    #[test]
    fn vario451_periods_in_mj() {
        let v = values(
            decode_vario451,
            "374468506549235827C3A2129F25383300A8622600008200800A2AF862115175552877A36F26C9AB1CB24400000004000000000004908002",
        );
        assert!(close(num(&v, "previous_kwh"), 3642.222222));
        assert!(close(num(&v, "current_kwh"), 2729.444444));
        assert!(close(num(&v, "total_kwh"), 6371.666667));
    }

    #[test]
    fn tsd2_states() {
        let tail = "9F2782290060822900000401D6311AF93E1BF93E008DC3009ED4000FE500";
        for (state, want) in [
            ("00", "OK"),
            ("01", "SMOKE"),
            ("80", "DEFECT"),
            ("71", "STATUS_71"),
        ] {
            let v = values(decode_tsd2, &format!("294468506935639176F0A0{state}{tail}"));
            assert_eq!(text(&v, "status"), want);
            assert_eq!(text(&v, "previous_date"), "2019-12-31");
        }
        let v = values(decode_tsd2, "0C4468506935639176F0A0019F");
        assert_eq!(text(&v, "status"), "DECODING_ERROR_payload");
        assert_eq!(v.get("previous_date"), Some(&HookValue::Null));
    }

    #[test]
    fn short_payloads_never_panic() {
        let full = hex::decode(
            "36446850420656625072A20C007C3110250000293400373A002E38000E15002F37003A39003835002F24003930001D2500312500162900",
        )
        .unwrap();
        let mut decoded = 0;
        for len in 11..full.len() {
            let mut bytes = full[..len].to_vec();
            bytes[0] = (len - 1) as u8;
            let Ok(frame) = WirelessDecoder::new(KeyStore::new()).decode(&bytes) else {
                continue;
            };
            let Ok(t) = frame.telegram() else { continue };
            decoded += 1;
            for h in HOOKS {
                let mut v = HookValues::default();
                (h.decode)(&t, &mut v);
            }
        }
        assert!(decoded > 30, "{decoded}");
    }
}
