//! Qundis meters (Q water 5.5, Q heat 5.5, Q caloric). Besides ordinary telegrams (CI 0x72/0x7A
//! with DIF/VIF records), they send walk-by telegrams (CI 0x78) whose readings sit in one
//! manufacturer record: DIF 0x0D (LVAR), VIF 0xFF, VIFE 0x5F, 53 bytes:
//!
//! | bytes | content |
//! | --- | --- |
//! | 0-2 | `00 82`, then a byte that changes from telegram to telegram |
//! | 3-4 | configuration; `00 00` when the block is sent in clear (otherwise we do not read it) |
//! | 5-8 | not decoded (byte 7 is `07`) |
//! | 9 | the VIF of every value in the block (`13` litres, `05`/`06` energy in Wh, `0D` in J, `6E` HCA) |
//! | 10-11 | error date (type G like the other dates, `FF FF` when there is none; every sample we have is `FF FF`) |
//! | 12-15 | current total, 8 BCD digits, least significant byte first |
//! | 16-17, 18-21 | date and total at the end of last year |
//! | 22-23, 24-27 | date and total at the end of last month |
//! | 28-51 | twelve history values, signed 16-bit little endian, in the block's unit (wmbusmeters calls them `delta_2` to `delta_13`); `00 80` where the meter has none |
//! | 52 | filler `2F` |
//!
//! A driver field cannot take its value from a decoder in one telegram and from a record in
//! the next, so the decoder gives the same values for ordinary telegrams too, read from the
//! records with the same meaning (storage 0 total, storage 1 year, storage 17 month).
//!
//! Dates come twice: `target_date` is `Null` when the meter has none (`FF FF`), for date fields;
//! `target_date_text` is `""` then, for drivers whose dates are texts (wmbusmeters' qheat and
//! qcaloric). The error date of a walk-by block is only given when the meter has one
//! (wmbusmeters prints none for the unset date there).

use super::{Hook, HookValue, HookValues};
use crate::drivers::engine::format_datetime;
use crate::telegram::Telegram;
use crate::wire::datetime::MeterDateTime;
use crate::wire::records::{Function, Record, RecordKind, Value};
use crate::wire::vif::{self, Unit};

const VOLUME_DELTAS: [&str; 12] = [
    "volume_delta_2_m3",
    "volume_delta_3_m3",
    "volume_delta_4_m3",
    "volume_delta_5_m3",
    "volume_delta_6_m3",
    "volume_delta_7_m3",
    "volume_delta_8_m3",
    "volume_delta_9_m3",
    "volume_delta_10_m3",
    "volume_delta_11_m3",
    "volume_delta_12_m3",
    "volume_delta_13_m3",
];

const ENERGY_DELTAS: [&str; 12] = [
    "energy_delta_2_kwh",
    "energy_delta_3_kwh",
    "energy_delta_4_kwh",
    "energy_delta_5_kwh",
    "energy_delta_6_kwh",
    "energy_delta_7_kwh",
    "energy_delta_8_kwh",
    "energy_delta_9_kwh",
    "energy_delta_10_kwh",
    "energy_delta_11_kwh",
    "energy_delta_12_kwh",
    "energy_delta_13_kwh",
];

pub const HOOKS: &[Hook] = &[
    Hook {
        name: "qundis",
        values: VALUES,
        decode: decode_qundis,
    },
    Hook {
        name: "qundis_qheat",
        values: VALUES,
        decode: decode_qundis_qheat,
    },
];

/// The walk-by block's VIF as wmbusmeters' qheat reads every block: 0.1 kWh (VIF 05).
const QHEAT_BLOCK_VIF: u8 = 0x05;

const VALUES: &[&str] = &[
    "total_m3",
    "target_m3",
    "target_year_m3",
    "total_kwh",
    "target_kwh",
    "target_year_kwh",
    "total_hca",
    "target_hca",
    "target_year_hca",
    "target_date",
    "target_year_date",
    "target_date_text",
    "target_year_date_text",
    "error_date",
    "error_date_text",
    "volume_delta_2_m3",
    "volume_delta_3_m3",
    "volume_delta_4_m3",
    "volume_delta_5_m3",
    "volume_delta_6_m3",
    "volume_delta_7_m3",
    "volume_delta_8_m3",
    "volume_delta_9_m3",
    "volume_delta_10_m3",
    "volume_delta_11_m3",
    "volume_delta_12_m3",
    "volume_delta_13_m3",
    "energy_delta_2_kwh",
    "energy_delta_3_kwh",
    "energy_delta_4_kwh",
    "energy_delta_5_kwh",
    "energy_delta_6_kwh",
    "energy_delta_7_kwh",
    "energy_delta_8_kwh",
    "energy_delta_9_kwh",
    "energy_delta_10_kwh",
    "energy_delta_11_kwh",
    "energy_delta_12_kwh",
    "energy_delta_13_kwh",
];

/// What a value of a given unit is, and the value names it goes under.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Volume,
    Energy,
    Hca,
}

impl Kind {
    /// Names of the current total, last month's and last year's totals.
    fn names(self) -> [&'static str; 3] {
        match self {
            Kind::Volume => ["total_m3", "target_m3", "target_year_m3"],
            Kind::Energy => ["total_kwh", "target_kwh", "target_year_kwh"],
            Kind::Hca => ["total_hca", "target_hca", "target_year_hca"],
        }
    }

    fn deltas(self) -> Option<&'static [&'static str; 12]> {
        match self {
            Kind::Volume => Some(&VOLUME_DELTAS),
            Kind::Energy => Some(&ENERGY_DELTAS),
            // The layout is the same, but no sample confirms what an allocator sends there.
            Kind::Hca => None,
        }
    }
}

/// A number in a record unit, as m³, kWh or HCA units.
fn convert(v: f64, unit: Unit) -> Option<(Kind, f64)> {
    match unit {
        Unit::CubicMetre => Some((Kind::Volume, v)),
        Unit::Wh => Some((Kind::Energy, v / 1000.0)),
        Unit::J => Some((Kind::Energy, v / 3.6e6)),
        Unit::HcaUnits => Some((Kind::Hca, v)),
        _ => None,
    }
}

/// `raw` × 10^`exponent`, divided by a power of ten rather than multiplied by a fraction so
/// that 2048 litres is exactly 2.048 m³.
fn scaled(raw: i64, exponent: i8) -> f64 {
    let e = i32::from(exponent);
    if e >= 0 {
        raw as f64 * 10f64.powi(e)
    } else {
        raw as f64 / 10f64.powi(-e)
    }
}

/// Eight BCD digits, least significant byte first; `None` if a nibble is not a digit.
fn bcd32(b: &[u8]) -> Option<i64> {
    let mut v = 0i64;
    for &byte in b.get(..4)?.iter().rev() {
        let (hi, lo) = (byte >> 4, byte & 0x0F);
        if hi > 9 || lo > 9 {
            return None;
        }
        v = v * 100 + i64::from(hi) * 10 + i64::from(lo);
    }
    Some(v)
}

/// Sets a date value and its text twin (`""` instead of `Null`).
fn set_date(out: &mut HookValues, names: (&'static str, &'static str), v: HookValue) {
    let text = match &v {
        HookValue::Null => HookValue::Text(String::new()),
        other => other.clone(),
    };
    out.set(names.0, v);
    out.set(names.1, text);
}

const TARGET_DATE: (&str, &str) = ("target_date", "target_date_text");
const TARGET_YEAR_DATE: (&str, &str) = ("target_year_date", "target_year_date_text");
const ERROR_DATE: (&str, &str) = ("error_date", "error_date_text");

/// A type G date; `Null` for the unset date `FF FF`.
fn date(b: &[u8]) -> Option<HookValue> {
    let d = b.get(..2)?;
    if d == [0xFF, 0xFF] {
        return Some(HookValue::Null);
    }
    let date = MeterDateTime::type_g([d[0], d[1]]);
    Some(HookValue::Text(format_datetime(&date)))
}

fn is_walk_by_block(r: &Record<'_>) -> bool {
    r.kind == RecordKind::Data && r.dib == [0x0D] && r.vif == Some(0xFF) && r.vifes == [0x5F]
}

fn decode_qundis(t: &Telegram<'_>, out: &mut HookValues) {
    decode_telegram(t, None, out);
}

/// wmbusmeters' qheat reads the walk-by block's energies in 0.1 kWh whatever VIF the block
/// names: a block that says 0D (100 kJ) prints 3083.1 kWh for 30831 where qheatv2 prints
/// 856.416667. Its users' dashboards carry those numbers, so this decoder reads them the same
/// way; ordinary telegrams are read by their records' units as with `qundis`.
fn decode_qundis_qheat(t: &Telegram<'_>, out: &mut HookValues) {
    decode_telegram(t, Some(QHEAT_BLOCK_VIF), out);
}

/// `block_vif`: read the walk-by block's values with this VIF instead of the block's own.
fn decode_telegram(t: &Telegram<'_>, block_vif: Option<u8>, out: &mut HookValues) {
    // Other telegrams may carry a 0DFF5F record of another kind (the WHE 46x sends 12 bytes
    // next to ordinary records): those are read from their records.
    let walk_by = t
        .records
        .iter()
        .find(|r| is_walk_by_block(r))
        .is_some_and(|r| decode_block(r.data, block_vif, out));
    if !walk_by {
        decode_records(&t.records, out);
    }
}

/// The walk-by block (table at the top of the file); false if this is not one we can read.
fn decode_block(b: &[u8], block_vif: Option<u8>, out: &mut HookValues) -> bool {
    if b.len() != 53 || b.get(3..5) != Some(&[0, 0][..]) {
        return false;
    }
    let Some(&vif_code) = block_vif.as_ref().or(b.get(9)) else {
        return false;
    };
    let d = vif::primary(vif_code);
    // Only a plain VIF of the primary table (no extension bit) describes the values.
    if vif_code & 0x80 != 0 || d.factor != 1 {
        return false;
    }
    let Some((kind, _)) = convert(1.0, d.unit) else {
        return false;
    };
    let exponent = d.exponent;
    let value = |raw: i64| convert(scaled(raw, exponent), d.unit).map(|(_, v)| v);
    let [total, target, target_year] = kind.names();
    for (name, at) in [(total, 12), (target_year, 18), (target, 24)] {
        if let Some(v) = b.get(at..at + 4).and_then(bcd32).and_then(value) {
            out.number(name, v);
        }
    }
    for (names, at) in [(TARGET_YEAR_DATE, 16), (TARGET_DATE, 22)] {
        if let Some(v) = b.get(at..).and_then(date) {
            set_date(out, names, v);
        }
    }
    // Only a set error date (see the top of the file).
    if let Some(v @ HookValue::Text(_)) = b.get(10..).and_then(date) {
        set_date(out, ERROR_DATE, v);
    }
    if let Some(names) = kind.deltas() {
        for (i, name) in names.iter().enumerate() {
            let at = 28 + 2 * i;
            let Some(&[lo, hi]) = b.get(at..at + 2) else {
                continue;
            };
            let raw = i16::from_le_bytes([lo, hi]);
            if let Some(v) = value(i64::from(raw)) {
                out.number(name, v);
                // `00 80` where the meter has no history value yet.
                if raw == i16::MIN {
                    out.mark_no_value(name);
                }
            }
        }
    }
    true
}

/// An ordinary telegram: the same values from the records (instantaneous, tariff 0, subunit 0,
/// no VIFEs): totals at storage 0, 1 (last year) and 17 (last month), type G dates at storage
/// 1 and 17, and the error date (function "during error").
fn decode_records(records: &[Record<'_>], out: &mut HookValues) {
    let plain = |r: &&Record<'_>| {
        r.kind == RecordKind::Data && r.tariff == 0 && r.subunit == 0 && r.vifes.is_empty()
    };
    for (storage, slot) in [(0u64, 0usize), (17, 1), (1, 2)] {
        let found = records
            .iter()
            .filter(plain)
            .filter(|r| r.function == Function::Instantaneous && r.storage == storage)
            .find_map(|r| {
                let unit = r.scale()?.unit;
                let v = match r.value() {
                    Value::Decimal(d) => d.to_f64(),
                    _ => return None,
                };
                convert(v, unit)
            });
        if let Some((kind, v)) = found {
            out.number(kind.names()[slot], v);
        }
    }
    let date_record = |function: Function, storage: u64| {
        records
            .iter()
            .filter(plain)
            .find(|r| r.vif == Some(0x6C) && r.function == function && r.storage == storage)
    };
    for (names, storage) in [(TARGET_DATE, 17), (TARGET_YEAR_DATE, 1)] {
        if let Some(v) = date_record(Function::Instantaneous, storage).and_then(|r| date(r.data)) {
            set_date(out, names, v);
        }
    }
    if let Some(v) = date_record(Function::DuringError, 0).and_then(|r| date(r.data)) {
        set_date(out, ERROR_DATE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(telegram: &str) -> HookValues {
        super::super::testing::run(decode_qundis, telegram)
    }

    use super::super::testing::number;

    use super::super::testing::text;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn water_walk_by_block() {
        // wmbusmeters corpus line 301 (qwaterv2): litres (VIF 13).
        let v = values("4B449344483635121806780DFF5F350082DA0000600107C113FFFF48200000BF2C91170000DF2120200000008001000000060019001000160018000D001300350017002F046D370CC422C759");
        assert!(close(number(&v, "total_m3"), 2.048));
        assert!(close(number(&v, "target_m3"), 2.02));
        assert!(close(number(&v, "target_year_m3"), 1.791));
        assert_eq!(text(&v, "target_date"), "2022-01-31");
        assert_eq!(text(&v, "target_year_date"), "2021-12-31");
        assert!(close(number(&v, "volume_delta_2_m3"), -32.768));
        assert!(close(number(&v, "volume_delta_3_m3"), 0.001));
        assert!(close(number(&v, "volume_delta_12_m3"), 0.053));
        assert!(close(number(&v, "volume_delta_13_m3"), 0.023));
        // The block's error date is unset: no value at all.
        assert_eq!(v.get("error_date"), None);
        assert_eq!(v.get("total_kwh"), None);
    }

    #[test]
    fn unset_dates_in_the_block_are_null() {
        // Corpus line 316: a new meter, no billing dates yet.
        let v = values("49449344153119611D06780DFF5F3500826E0000F00007C113FFFF66000000FFFF00000000FFFF000000000080008000800080008000800080008000800080008000802F046D33125F31");
        assert!(close(number(&v, "total_m3"), 0.066));
        assert!(close(number(&v, "target_m3"), 0.0));
        assert_eq!(v.get("target_date"), Some(&HookValue::Null));
        assert_eq!(v.get("target_year_date"), Some(&HookValue::Null));
        assert_eq!(text(&v, "target_date_text"), "");
        assert_eq!(text(&v, "target_year_date_text"), "");
    }

    #[test]
    fn heat_walk_by_block_in_joules() {
        // Corpus line 290 (qheatv2): VIF 0D, 100 kJ units.
        let v = values("58449344414620684737780779414620689344470C0DFF5F3500825A00000E0007C00DFFFF310803001F3C036800003E34310803000080008000800080008000800000931A92293128190C00002F02FD170000046D000F3235");
        assert!(close(number(&v, "total_kwh"), 856.416_666_666_7));
        assert!(close(number(&v, "target_year_kwh"), 188.972_222_222_2));
        assert_eq!(text(&v, "target_date"), "2025-04-30");
        assert_eq!(text(&v, "target_year_date"), "2024-12-31");
        assert!(close(number(&v, "energy_delta_2_kwh"), -910.222_222_222_2));
        assert!(close(number(&v, "energy_delta_8_kwh"), 0.0));
        assert!(close(number(&v, "energy_delta_10_kwh"), 295.611_111_111_1));
        assert_eq!(v.get("total_m3"), None);
    }

    #[test]
    fn heat_walk_by_block_in_kwh() {
        // Corpus line 293 (qheatv2): VIF 06, kWh.
        let v = values("58449344798995673E377807797989956793443E040DFF5F3500827D0000810007C006FFFF531100003F3C490900005F318010000083003C0022000B0000000000000000000A002B00510083002F02FD170000046D16085832");
        assert!(close(number(&v, "total_kwh"), 1153.0));
        assert!(close(number(&v, "target_kwh"), 1080.0));
        assert!(close(number(&v, "target_year_kwh"), 949.0));
        assert_eq!(text(&v, "target_date"), "2026-01-31");
        assert!(close(number(&v, "energy_delta_2_kwh"), 131.0));
        assert!(close(number(&v, "energy_delta_13_kwh"), 131.0));
    }

    #[test]
    fn qheat_reads_the_block_in_tenths_of_kwh() {
        // Corpus line 384: the block says VIF 0D (100 kJ); wmbusmeters' qheat prints 0.1 kWh.
        let telegram = "58449344414620684737780779414620689344470C0DFF5F3500825A00000E0007C00DFFFF310803001F3C036800003E34310803000080008000800080008000800000931A92293128190C00002F02FD170000046D000F3235";
        let v = super::super::testing::run(decode_qundis_qheat, telegram);
        assert!(close(number(&v, "total_kwh"), 3083.1));
        assert!(close(number(&v, "target_kwh"), 3083.1));
        assert!(close(number(&v, "target_year_kwh"), 680.3));
        assert_eq!(text(&v, "target_date_text"), "2025-04-30");
        // Ordinary telegrams keep their records' units (corpus line 385's second telegram).
        let v = super::super::testing::run(decode_qundis_qheat, "4144934441462068473772414620689344470C5B0000200C0D310803004C0D03680000426C1F3CCC080D31080300C2086C3E3402FD170000326CFFFF046D000F3235");
        assert!(close(number(&v, "total_kwh"), 856.416_666_666_7));
    }

    #[test]
    fn allocator_walk_by_block() {
        // Corpus line 278 (qcaloric): VIF 6E, HCA units.
        let v = values("49449344939291903408780DFF5F350082180000800007B06EFFFF970000009F2C70020000BE26970000000000010018002E001F002E0023FF210008000500020000002F046D220FA227");
        assert!(close(number(&v, "total_hca"), 97.0));
        assert!(close(number(&v, "target_year_hca"), 270.0));
        assert!(close(number(&v, "target_hca"), 97.0));
        assert_eq!(text(&v, "target_year_date"), "2020-12-31");
        assert_eq!(text(&v, "target_date"), "2021-06-30");
    }

    #[test]
    fn encrypted_block_gives_nothing() {
        // Corpus line 285: configuration 0x3500, the block is not in clear.
        let v = values("49449344825253303608780DFF5F350082430035E3DFC4EAC97A58B8610713D93549E2601258D617D267E7515C764B002A88CD341A9F9DF3C6034DE5B6D1FAB3619CBA9F046D250DDA2C");
        assert_eq!(v.get("total_hca"), None);
        assert_eq!(v.get("target_date"), None);
    }

    #[test]
    fn ordinary_telegram_records() {
        // Corpus line 388 (qwater): the same values from DIF/VIF records.
        let v = values("3C449344682268363537726666666693443507720000200C13670512004C1361100300426CBF2CCC081344501100C2086CDF28326CFFFF046D0813CF29");
        assert!(close(number(&v, "total_m3"), 120.567));
        assert!(close(number(&v, "target_year_m3"), 31.061));
        assert!(close(number(&v, "target_m3"), 115.044));
        assert_eq!(text(&v, "target_year_date"), "2021-12-31");
        assert_eq!(text(&v, "target_date"), "2022-08-31");
        assert_eq!(text(&v, "target_date_text"), "2022-08-31");
        assert_eq!(v.get("error_date"), Some(&HookValue::Null));
        assert_eq!(text(&v, "error_date_text"), "");
    }

    #[test]
    fn other_manufacturer_record_falls_back_to_the_records() {
        // Corpus line 283 (WHE 46x): a 12-byte 0DFF5F record next to ordinary records.
        let v = values("344465325566366018087A90040000046D1311962C01FD0C03326CFFFF01FD7300025AC2000DFF5F0C0008003030810613080BFFFC");
        assert_eq!(v.get("error_date"), Some(&HookValue::Null));
        assert_eq!(text(&v, "error_date_text"), "");
        assert_eq!(v.get("total_hca"), None);
    }

    #[test]
    fn short_or_odd_blocks_do_not_panic() {
        let mut out = HookValues::default();
        for len in 0..60 {
            decode_block(&vec![0x00; len], None, &mut out);
            assert!(!decode_block(&vec![0xFF; len], None, &mut out));
        }
        let mut b = vec![0u8; 53];
        b[9] = 0xFD;
        assert!(!decode_block(&b, None, &mut out));
        assert_eq!(out.get("total_m3"), None);
    }
}
