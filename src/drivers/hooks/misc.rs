//! Small manufacturer payload decoders, one per meter family:
//!
//! - `bfw240radio`: BFW 240 radio heat cost allocators, whose whole application data after the
//!   `2F2F` fillers is a proprietary block.
//! - `hydrodigit`: BMeters Hydrodigit water meters, blocks after DIF 0x0F chosen by a contents
//!   byte.
//! - `zenner0b`: Zenner water meters (version 0x0B), three 32-bit words after DIF 0x0F.
//! - `gwfwater`: GWF water meters, a type byte, status bits and a battery byte after DIF 0x0F.
//! - `hydroclima`: BMeters Hydroclima heat cost allocators, frame 0x10 or 0x11 after DIF 0x0F.
//! - `compact_profile_hca`: the monthly HCA series in a compact profile record (`8D04 EE13`,
//!   `8D04 EE1F`) of Zenner Caltos E and Techem FHKV data IV heat cost allocators.

use super::{Hook, HookValue, HookValues};
use crate::telegram::{Link, Telegram};
use crate::wire::application::{Application, Header};
use crate::wire::records::RecordKind;

pub const HOOKS: &[Hook] = &[
    Hook {
        name: "bfw240radio",
        values: BFW_VALUES,
        decode: decode_bfw240radio,
    },
    Hook {
        name: "hydrodigit",
        values: &[
            "contents",
            "voltage_v",
            "fraud_type",
            "fraud_date",
            "leak_date",
            "backflow_m3",
            "January_total_m3",
            "February_total_m3",
            "March_total_m3",
            "April_total_m3",
            "May_total_m3",
            "June_total_m3",
            "July_total_m3",
            "August_total_m3",
            "September_total_m3",
            "October_total_m3",
            "November_total_m3",
            "December_total_m3",
        ],
        decode: decode_hydrodigit,
    },
    Hook {
        name: "zenner0b",
        values: &["status", "target_m3", "total_m3"],
        decode: decode_zenner0b,
    },
    Hook {
        name: "gwfwater",
        values: &["status", "power_mode", "battery_y"],
        decode: decode_gwfwater,
    },
    Hook {
        name: "hydroclima",
        values: &[
            "status",
            "average_ambient_temperature_c",
            "max_ambient_temperature_c",
            "average_ambient_temperature_last_month_c",
            "average_heater_temperature_last_month_c",
            "average_heater_temperature_c",
            "consumption_at_set_date_1_hca",
            "consumption_at_set_date_2_hca",
            "consumption_at_set_date_3_hca",
            "consumption_at_set_date_4_hca",
            "ambient_temperature_at_set_date_1_c",
            "ambient_temperature_at_set_date_2_c",
            "ambient_temperature_at_set_date_3_c",
            "total_consumption_hca",
        ],
        decode: decode_hydroclima,
    },
    Hook {
        name: "compact_profile_hca",
        values: PROFILE_VALUES,
        decode: decode_compact_profile_hca,
    },
];

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// The data after the first DIF 0x0F record, if the telegram has one.
fn manufacturer_data<'a>(t: &Telegram<'a>) -> Option<&'a [u8]> {
    t.records
        .iter()
        .find(|r| r.kind == RecordKind::ManufacturerData)
        .map(|r| r.data)
}

/// The record area of a variable data telegram, fillers included.
fn record_area<'a>(t: &Telegram<'a>) -> Option<&'a [u8]> {
    match &t.application {
        Application::Variable { records, .. } => Some(records),
        _ => None,
    }
}

fn u16_le(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u24_le(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 3)?;
    Some(u32::from(s[0]) | u32::from(s[1]) << 8 | u32::from(s[2]) << 16)
}

fn u32_le(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A BCD byte as a number, `None` when a nibble is not a decimal digit.
fn bcd(b: u8) -> Option<u32> {
    let (hi, lo) = (b >> 4, b & 0x0F);
    (hi < 10 && lo < 10).then(|| u32::from(hi) * 10 + u32::from(lo))
}

/// `YYYY-MM-DD` for a year in 2000-2099, or `None` when month or day is out of range.
fn date_text(year2: u32, month: u32, day: u32) -> Option<String> {
    ((1..=12).contains(&month) && (1..=31).contains(&day))
        .then(|| format!("{:04}-{month:02}-{day:02}", 2000 + year2))
}

/// The status byte of the transport header (short or long, also behind an ELL).
fn tpl_status(t: &Telegram<'_>) -> Option<u8> {
    let header = match &t.application {
        Application::Variable { header, .. } => *header,
        _ => match &t.link {
            Link::Wireless(l) => l.tpl.map(|tpl| tpl.header)?,
            Link::Wired(_) => return None,
        },
    };
    match header {
        Header::Long(h) => Some(h.status.0),
        Header::Short(h) => Some(h.status.0),
        Header::None => None,
    }
}

/// The names wmbusmeters gives the transport header's status bits (no manufacturer names:
/// bits 5-7 print as `UNKNOWN_<hex>`).
fn tpl_status_texts(status: u8, out: &mut Vec<String>) {
    match status & 0x03 {
        1 => out.push("BUSY".into()),
        2 => out.push("ERROR".into()),
        3 => out.push("ALARM".into()),
        _ => {}
    }
    for (bit, name) in [
        (0x04u8, "POWER_LOW"),
        (0x08, "PERMANENT_ERROR"),
        (0x10, "TEMPORARY_ERROR"),
    ] {
        if status & bit != 0 {
            out.push(name.into());
        }
    }
    if status & 0xE0 != 0 {
        out.push(format!("UNKNOWN_{:02X}", status & 0xE0));
    }
}

/// Status texts joined in alphabetical order, `OK` when there are none.
fn status_text(mut texts: Vec<String>) -> String {
    texts.sort();
    texts.dedup();
    if texts.is_empty() {
        "OK".into()
    } else {
        texts.join(" ")
    }
}

// ---------------------------------------------------------------------------------------------
// BFW 240 radio

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

// ---------------------------------------------------------------------------------------------
// BMeters Hydrodigit

const MONTH_TOTALS: [&str; 12] = [
    "January_total_m3",
    "February_total_m3",
    "March_total_m3",
    "April_total_m3",
    "May_total_m3",
    "June_total_m3",
    "July_total_m3",
    "August_total_m3",
    "September_total_m3",
    "October_total_m3",
    "November_total_m3",
    "December_total_m3",
];

/// Battery voltage by the low nibble of the battery byte (0, 0x0E and 0x0F: full, 3.7 V).
const HYDRODIGIT_VOLTAGE: [f64; 16] = [
    3.7, 1.9, 2.1, 2.2, 2.3, 2.4, 2.5, 2.65, 2.8, 2.9, 3.05, 3.2, 3.35, 3.5, 3.7, 3.7,
];

/// After DIF 0x0F: a contents byte whose bits say which blocks follow, in this order:
/// battery (0x01, one byte), fraud (0x02, a type byte and a 3-byte date), leak date (0x80,
/// three bytes), backflow (0x04, u32 LE litres), monthly totals (0x10, twelve u24 LE in
/// 0.01 m³, January first). Dates are BCD year, month, day; the fraud date's month is only the
/// low nibble.
fn decode_hydrodigit(t: &Telegram<'_>, out: &mut HookValues) {
    let Some(b) = manufacturer_data(t) else {
        return;
    };
    let Some(&contents) = b.first() else { return };
    let mut names: Vec<&str> = [
        (0x01u8, "BATTERY_VOLTAGE"),
        (0x02, "FRAUD_DATE"),
        (0x04, "BACKFLOW"),
        (0x10, "MONTHLY_DATA"),
        (0x80, "LEAK_DATE"),
    ]
    .iter()
    .filter(|(bit, _)| contents & bit != 0)
    .map(|&(_, name)| name)
    .collect();
    names.sort_unstable();
    out.text("contents", names.join(" "));

    let date = |s: &[u8], month_bcd: bool| -> HookValue {
        let year = bcd(s[0]);
        let month = if month_bcd {
            bcd(s[1])
        } else {
            Some(u32::from(s[1] & 0x0F))
        };
        match (year, month, bcd(s[2])) {
            (Some(y), Some(m), Some(d)) => {
                date_text(y, m, d).map_or(HookValue::Null, HookValue::Text)
            }
            _ => HookValue::Null,
        }
    };

    let mut i = 1;
    if contents & 0x01 != 0 {
        let Some(&battery) = b.get(i) else { return };
        out.number("voltage_v", HYDRODIGIT_VOLTAGE[usize::from(battery & 0x0F)]);
        i += 1;
    }
    if contents & 0x02 != 0 {
        let Some(s) = b.get(i..i + 4) else { return };
        let mut kinds: Vec<&str> = [
            (0x20u8, "MODULE_REMOVED"),
            (0x40, "SENSOR_FRAUD_ATTEMPT"),
            (0x80, "MAGNETIC_FRAUD_ATTEMPT"),
        ]
        .iter()
        .filter(|(bit, _)| s[0] & bit != 0)
        .map(|&(_, name)| name)
        .collect();
        kinds.sort_unstable();
        out.text(
            "fraud_type",
            if kinds.is_empty() {
                "NO_TYPE_INFO".to_string()
            } else {
                kinds.join(" ")
            },
        );
        out.set("fraud_date", date(&s[1..4], false));
        i += 4;
    }
    if contents & 0x80 != 0 {
        let Some(s) = b.get(i..i + 3) else { return };
        out.set("leak_date", date(s, true));
        i += 3;
    }
    if contents & 0x04 != 0 {
        let Some(v) = u32_le(b, i) else { return };
        out.number("backflow_m3", f64::from(v) / 1000.0);
        i += 4;
    }
    if contents & 0x10 != 0 {
        for name in MONTH_TOTALS {
            let Some(v) = u24_le(b, i) else { return };
            // Months before the module was installed read FFFFFF: printed as 0.
            let m3 = if v < 10_000_000 {
                f64::from(v) / 100.0
            } else {
                0.0
            };
            out.number(name, m3);
            i += 3;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Zenner 0x0B

/// After DIF 0x0F: a status word, this month's and the total volume, each u32 LE, volumes in
/// 1/256000 m³. A status of 0 is `OK`, any other prints as `STATUS_<hex>`.
fn decode_zenner0b(t: &Telegram<'_>, out: &mut HookValues) {
    let Some(b) = manufacturer_data(t) else {
        return;
    };
    if let Some(s) = u32_le(b, 0) {
        out.text(
            "status",
            if s == 0 {
                "OK".to_string()
            } else {
                format!("STATUS_{s:X}")
            },
        );
    }
    if let Some(v) = u32_le(b, 4) {
        out.number("target_m3", f64::from(v) / 256_000.0);
    }
    if let Some(v) = u32_le(b, 8) {
        out.number("total_m3", f64::from(v) / 256_000.0);
    }
}

// ---------------------------------------------------------------------------------------------
// GWF water

/// After DIF 0x0F: a type byte, 0x01 for the layout we know: status bits (0x02 continuous flow,
/// 0x08 broken pipe, 0x20 battery low, 0x40 backflow), then a byte whose bit 0 is the saving
/// power mode and whose upper five bits count half years of battery life. Another type byte
/// is reported in the status as `UNKNOWN_MFCT_STATUS_<hex>`. The status also carries the
/// transport header's status bits.
fn decode_gwfwater(t: &Telegram<'_>, out: &mut HookValues) {
    let mut texts = Vec::new();
    let tpl = tpl_status(t);
    if let Some(s) = tpl {
        tpl_status_texts(s, &mut texts);
    }
    let mfct = manufacturer_data(t);
    match mfct.and_then(|b| b.first()) {
        Some(0x01) => {
            let b = mfct.unwrap_or_default();
            if let Some(&flags) = b.get(1) {
                let mut unnamed = flags;
                for (bit, name) in [
                    (0x02u8, "CONTINUOUS_FLOW"),
                    (0x08, "BROKEN_PIPE"),
                    (0x20, "BATTERY_LOW"),
                    (0x40, "BACKFLOW"),
                ] {
                    if flags & bit != 0 {
                        texts.push(name.into());
                        unnamed &= !bit;
                    }
                }
                if unnamed != 0 {
                    texts.push(format!("MFCT_FLAGS_{unnamed:X}"));
                }
            }
            if let Some(&power) = b.get(2) {
                out.text(
                    "power_mode",
                    if power & 0x01 != 0 {
                        "SAVING"
                    } else {
                        "NORMAL"
                    },
                );
                out.number("battery_y", f64::from(power >> 3) * 0.5);
            }
        }
        Some(&other) => {
            texts.push(format!("UNKNOWN_MFCT_STATUS_{other:X}"));
            out.set("battery_y", HookValue::Null);
        }
        None => {}
    }
    if tpl.is_some() || mfct.is_some_and(|b| !b.is_empty()) {
        out.text("status", status_text(texts));
    }
}

// ---------------------------------------------------------------------------------------------
// BMeters Hydroclima

/// After DIF 0x0F, a frame byte, then a status word, time and date (u16 LE each). Temperatures
/// are u16 LE in 0.01 °C.
///
/// Frame 0x10: average ambient, maximum ambient, its date, the number of measurements, last
/// month's average ambient and heater temperatures, the current indication (u16) and the total
/// (u24).
///
/// Frame 0x11: housing-open date, average heater and ambient, maximum ambient, its date, last
/// month's average heater and ambient, four consumption values at set dates (u16), three
/// ambient temperatures at set dates (0x8000: none), three u24 temperature-bin counters, the
/// total (u24).
///
/// The status is `ERROR_FLAGS_<hex>` of a non-zero status word, plus the transport header's
/// status bits.
fn decode_hydroclima(t: &Telegram<'_>, out: &mut HookValues) {
    let mut texts = Vec::new();
    let tpl = tpl_status(t);
    if let Some(s) = tpl {
        tpl_status_texts(s, &mut texts);
    }
    let b = manufacturer_data(t).unwrap_or_default();
    let frame = b.first().copied();
    let known = matches!(frame, Some(0x10 | 0x11));
    let word = if known { u16_le(b, 1) } else { None };
    if let Some(w) = word.filter(|&w| w != 0) {
        texts.push(format!("ERROR_FLAGS_{w:X}"));
    }
    if tpl.is_some() || word.is_some() {
        out.text("status", status_text(texts));
    }
    let temp = |out: &mut HookValues, name: &'static str, at: usize| {
        if let Some(v) = u16_le(b, at) {
            out.number(name, f64::from(v) / 100.0);
        }
    };
    match frame {
        Some(0x10) => {
            temp(out, "average_ambient_temperature_c", 7);
            temp(out, "max_ambient_temperature_c", 9);
            temp(out, "average_ambient_temperature_last_month_c", 15);
            temp(out, "average_heater_temperature_last_month_c", 17);
            if let Some(v) = u24_le(b, 21) {
                out.number("total_consumption_hca", f64::from(v));
            }
        }
        Some(0x11) => {
            temp(out, "average_heater_temperature_c", 9);
            temp(out, "average_ambient_temperature_c", 11);
            temp(out, "max_ambient_temperature_c", 13);
            temp(out, "average_heater_temperature_last_month_c", 17);
            temp(out, "average_ambient_temperature_last_month_c", 19);
            for (k, name) in [
                "consumption_at_set_date_1_hca",
                "consumption_at_set_date_2_hca",
                "consumption_at_set_date_3_hca",
                "consumption_at_set_date_4_hca",
            ]
            .into_iter()
            .enumerate()
            {
                if let Some(v) = u16_le(b, 21 + 2 * k) {
                    out.number(name, f64::from(v));
                }
            }
            for (k, name) in [
                "ambient_temperature_at_set_date_1_c",
                "ambient_temperature_at_set_date_2_c",
                "ambient_temperature_at_set_date_3_c",
            ]
            .into_iter()
            .enumerate()
            {
                match u16_le(b, 29 + 2 * k) {
                    Some(0x8000) => out.set(name, HookValue::Null),
                    Some(v) => out.number(name, f64::from(v) / 100.0),
                    None => {}
                }
            }
            if let Some(v) = u24_le(b, 44) {
                out.number("total_consumption_hca", f64::from(v));
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Compact profiles of HCA values (Zenner Caltos E, Techem FHKV data IV)

const PROFILE_VALUES: &[&str] = &[
    "profile_1_hca",
    "profile_2_hca",
    "profile_3_hca",
    "profile_4_hca",
    "profile_5_hca",
    "profile_6_hca",
    "profile_7_hca",
    "profile_8_hca",
    "profile_9_hca",
    "profile_10_hca",
    "profile_11_hca",
    "profile_12_hca",
    "profile_13_hca",
    "profile_14_hca",
    "profile_15_hca",
    "profile_16_hca",
    "profile_17_hca",
    "profile_18_hca",
    "profile_19_hca",
    "profile_20_hca",
    "profile_21_hca",
    "profile_22_hca",
    "profile_23_hca",
    "profile_24_hca",
];

/// One element of a compact profile as a number: `size` bytes, least significant first, binary
/// (two's complement) or BCD (a top nibble 0xF is a minus sign). `None` for an unused slot
/// (every byte 0xFF) and for BCD with a non-decimal digit.
fn profile_element(bytes: &[u8], is_bcd: bool) -> Option<f64> {
    if bytes.is_empty() || bytes.iter().all(|&b| b == 0xFF) {
        return None;
    }
    if !is_bcd {
        let mut v: i64 = 0;
        for (i, &b) in bytes.iter().enumerate() {
            v |= i64::from(b) << (8 * i);
        }
        let bits = 8 * bytes.len() as u32;
        if bits < 64 && v & (1 << (bits - 1)) != 0 {
            v -= 1 << bits;
        }
        return Some(v as f64);
    }
    let mut v: i64 = 0;
    let mut negative = false;
    for (i, &b) in bytes.iter().enumerate().rev() {
        let digits = if i + 1 == bytes.len() && b >> 4 == 0x0F {
            negative = true;
            bcd(b & 0x0F)?
        } else {
            bcd(b)?
        };
        v = v * 100 + i64::from(digits);
    }
    Some(if negative { -(v as f64) } else { v as f64 })
}

/// A compact profile (EN 13757-3): one LVAR record (DIF 0x8D here, storage 8) whose VIF is
/// HCA units (0xEE: 0x6E with the extension bit) and whose VIFE says which kind of profile it
/// is, 0x13 (inverse profile) or 0x1F (profile). Its data starts with two bytes:
///
/// - the spacing control byte: bits 0-3 give every element's size and coding, with the codes
///   of a DIF's data field (0x2 a 16-bit integer, 0xB six BCD digits, …); bits 4-5 the spacing
///   unit and bits 6-7 whether the elements are absolute values or increments;
/// - the spacing value (0xFE in the corpus: one month).
///
/// The elements follow back to back. A slot of all 0xFF bytes is unused and gives no value.
///
/// The values are printed as sent (increments are not summed), numbered as wmbusmeters
/// numbers them: in an inverse profile (Caltos E, absolute BCD values, newest first)
/// `profile_1_hca` is the first element, the month before the base date; in a plain profile
/// (FHKV data IV, 16-bit increments) it is the last element.
fn decode_compact_profile_hca(t: &Telegram<'_>, out: &mut HookValues) {
    let Some((record, inverse)) = t.records.iter().find_map(|r| {
        if r.lvar.is_none() || r.vif != Some(0xEE) {
            return None;
        }
        match r.vifes.first().map(|v| v & 0x7F) {
            Some(0x13) => Some((r, true)),
            Some(0x1F) => Some((r, false)),
            _ => None,
        }
    }) else {
        return;
    };
    let Some((&control, elements)) = record.data.split_first() else {
        return;
    };
    // Skip the spacing value byte.
    let Some(elements) = elements.get(1..) else {
        return;
    };
    let (size, is_bcd) = match control & 0x0F {
        0x1 => (1, false),
        0x2 => (2, false),
        0x3 => (3, false),
        0x4 => (4, false),
        0x6 => (6, false),
        0x7 => (8, false),
        0x9 => (1, true),
        0xA => (2, true),
        0xB => (3, true),
        0xC => (4, true),
        0xE => (6, true),
        _ => return,
    };
    let slots: Vec<&[u8]> = elements.chunks_exact(size).collect();
    let ordered: Box<dyn Iterator<Item = &&[u8]>> = if inverse {
        Box::new(slots.iter())
    } else {
        Box::new(slots.iter().rev())
    };
    for (name, slot) in PROFILE_VALUES.iter().zip(ordered) {
        if let Some(v) = profile_element(slot, is_bcd) {
            out.number(name, v);
        }
    }
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

    #[test]
    fn hydrodigit_monthly_and_backflow() {
        // Corpus line 132.
        let v = values(
            decode_hydrodigit,
            "4644B4092143658713077A9C0000000C1364390400046D212F16350F152A0F000000440F00C00F00511000D51000B20B00180C007C0C00E60C00560D00D10D00400E00C60E0000",
        );
        assert_eq!(
            text(&v, "contents"),
            "BACKFLOW BATTERY_VOLTAGE MONTHLY_DATA"
        );
        assert_eq!(num(&v, "voltage_v"), 3.05);
        assert_eq!(num(&v, "backflow_m3"), 0.015);
        assert_eq!(num(&v, "January_total_m3"), 39.08);
        assert_eq!(num(&v, "December_total_m3"), 37.82);
        assert!(v.get("leak_date").is_none());
    }

    #[test]
    fn hydrodigit_leak_and_fraud_dates() {
        // Corpus line 133: a leak date, and FFFFFF months before installation.
        let v = values(
            decode_hydrodigit,
            "4944B4092243658713077A7F0000000C1363020400046D242C12360F950A24042507000000A405006E0700850900CA0B004A0E00FFFFFFFFFFFF020000020000250000B3010095030000",
        );
        assert_eq!(
            text(&v, "contents"),
            "BACKFLOW BATTERY_VOLTAGE LEAK_DATE MONTHLY_DATA"
        );
        assert_eq!(text(&v, "leak_date"), "2024-04-25");
        assert_eq!(num(&v, "backflow_m3"), 0.007);
        assert_eq!(num(&v, "June_total_m3"), 0.0);
        assert_eq!(num(&v, "April_total_m3"), 30.18);
        // Corpus line 135: empty dates are null.
        let v = values(
            decode_hydrodigit,
            "4C44B4096120120317077AB90000000C1330000000046D132E3E360F8F000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        );
        assert_eq!(
            text(&v, "contents"),
            "BACKFLOW BATTERY_VOLTAGE FRAUD_DATE LEAK_DATE"
        );
        assert_eq!(text(&v, "fraud_type"), "NO_TYPE_INFO");
        assert_eq!(v.get("fraud_date"), Some(&HookValue::Null));
        assert_eq!(v.get("leak_date"), Some(&HookValue::Null));
        assert_eq!(num(&v, "voltage_v"), 3.7);
        assert!(v.get("January_total_m3").is_none());
    }

    #[test]
    fn zenner0b_words() {
        // Corpus line 371.
        let v = values(
            decode_zenner0b,
            "1E44496A677308500B167AD80010252F2F0F80BF1B0080BF1B0000A6420000",
        );
        assert_eq!(text(&v, "status"), "STATUS_1BBF80");
        assert_eq!(num(&v, "target_m3"), 7.1035);
        assert_eq!(num(&v, "total_m3"), 17.062);
        // Corpus line 370.
        let v = values(
            decode_zenner0b,
            "1E44496A677308500B167AD80010252F2F0F0000000080BF1B0000A6420000",
        );
        assert_eq!(text(&v, "status"), "OK");
    }

    #[test]
    fn gwfwater_status_and_battery() {
        // Corpus line 113: battery low bit, power low in the transport header.
        let v = values(
            decode_gwfwater,
            "3144E61E31102220010E8C04F47ABE0420452F2F037410000004133E0000004413FFFFFFFF426CFFFF0F0120012F2F2F2F2F",
        );
        assert_eq!(text(&v, "status"), "BATTERY_LOW POWER_LOW");
        assert_eq!(text(&v, "power_mode"), "SAVING");
        assert_eq!(num(&v, "battery_y"), 0.0);
        // Corpus line 114.
        let v = values(
            decode_gwfwater,
            "3944E61E46441510020E8C04427250076819E61E3C07B10020452F2F03748B05000413DC690D004413A4630D00426C213C02FD74B5140F0100E3",
        );
        assert_eq!(text(&v, "status"), "OK");
        assert_eq!(num(&v, "battery_y"), 14.0);
        // Corpus line 115: an unknown type byte.
        let v = values(
            decode_gwfwater,
            "3944E61E46441510020E8C04427250076819E61E3C07B10020452F2F03748B05000413DC690D004413A4630D00426C213C02FD74B5140F0200E3",
        );
        assert_eq!(text(&v, "status"), "UNKNOWN_MFCT_STATUS_2");
        assert_eq!(v.get("battery_y"), Some(&HookValue::Null));
        assert!(v.get("power_mode").is_none());
    }

    #[test]
    fn hydroclima_frames() {
        // Corpus line 372 (frame 0x10).
        let v = values(
            decode_hydroclima,
            "2E44B0099861036853087A000020002F2F036E0000000F100043106A7D2C4A078F12202CB1242A06D3062100210000",
        );
        assert_eq!(num(&v, "average_ambient_temperature_c"), 18.66);
        assert_eq!(num(&v, "max_ambient_temperature_c"), 47.51);
        assert_eq!(num(&v, "average_ambient_temperature_last_month_c"), 15.78);
        assert_eq!(num(&v, "average_heater_temperature_last_month_c"), 17.47);
        assert_eq!(num(&v, "total_consumption_hca"), 33.0);
        assert_eq!(text(&v, "status"), "ERROR_FLAGS_4300");
        // hydroclimav2 corpus line 129 (frame 0x11), with an empty set-date temperature.
        let v = values(
            decode_hydroclima,
            "5144B0092110009385088C20FB7AFB4040252F2F036E000000436E000000426C3F350F110001B9604734CE2E2708FD071B088832940766070000000000000000C407260800802DD400000000000000220000",
        );
        assert_eq!(num(&v, "average_heater_temperature_c"), 20.87);
        assert_eq!(num(&v, "average_ambient_temperature_c"), 20.45);
        assert_eq!(num(&v, "ambient_temperature_at_set_date_1_c"), 19.88);
        assert_eq!(
            v.get("ambient_temperature_at_set_date_3_c"),
            Some(&HookValue::Null)
        );
        assert_eq!(num(&v, "total_consumption_hca"), 34.0);
        assert_eq!(text(&v, "status"), "ERROR_FLAGS_100 UNKNOWN_40");
        // Corpus line 373: another layout, nothing decoded.
        let v = values(
            decode_hydroclima,
            "2D44B009233739743308780F9D1300023ED97AEC7BC5908A32C15D8A32C126915AC15AC126912691269187912689",
        );
        assert!(v.get("average_ambient_temperature_c").is_none());
        assert!(v.get("status").is_none());
    }

    #[test]
    fn cut_payloads_do_not_panic() {
        let decoders: [super::super::Decoder; 5] = [
            decode_bfw240radio,
            decode_hydrodigit,
            decode_zenner0b,
            decode_gwfwater,
            decode_hydroclima,
        ];
        let telegrams = [
            "3644D7088877700002087ADBC000002F2F9E1F03C10388152A00000000000000000000000000000204000404000EE2020AC1321D280221",
            "4C44B4096120120317077AB90000000C1330000000046D132E3E360F97FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
            "1E44496A677308500B167AD80010252F2F0F80BF1B0080BF1B0000A6420000",
            "3944E61E46441510020E8C04427250076819E61E3C07B10020452F2F03748B05000413DC690D004413A4630D00426C213C02FD74B5140FFFFFFF",
            "5144B0092110009385088C20FB7AFB4040252F2F036E000000436E000000426C3F350F110001B9604734CE2E2708FD071B088832940766070000000000000000C407260800802DD400000000000000220000",
        ];
        for full in telegrams {
            for cut in (4..=full.len()).step_by(2) {
                let mut bytes = hex::decode(&full[..cut]).unwrap();
                bytes[0] = (bytes.len() - 1) as u8;
                let Ok(frame) = WirelessDecoder::new(KeyStore::new()).decode(&bytes) else {
                    continue;
                };
                let Ok(t) = frame.telegram() else { continue };
                for d in decoders {
                    let mut v = HookValues::default();
                    d(&t, &mut v);
                }
            }
        }
    }
}

#[cfg(test)]
mod compact_profile_tests {
    use super::*;
    use crate::security::{Key, KeyStore};
    use crate::telegram::WirelessDecoder;
    use crate::wire::hex;

    fn profile(key: &str, telegram: &str) -> HookValues {
        let mut keys = KeyStore::new();
        keys.set_default(Key::from_hex(key).unwrap());
        let frame = WirelessDecoder::new(keys)
            .decode(&hex::decode(telegram).unwrap())
            .unwrap();
        let t = frame.telegram().unwrap();
        let mut v = HookValues::default();
        decode_compact_profile_hca(&t, &mut v);
        v
    }

    fn nums(v: &HookValues, n: usize) -> Vec<Option<f64>> {
        (1..=n)
            .map(|i| match v.get(&format!("profile_{i}_hca")) {
                Some(HookValue::Number(x)) => Some(*x),
                None => None,
                other => panic!("profile_{i}_hca: {other:?}"),
            })
            .collect()
    }

    const CALTOS_1: (&str, &str) = (
        "6B6B5EB80884328A7B1E45043D39FAAD",
        "5E44496A91190880FC087A744050052F05BF0C6BAF613A078098E048AE47FFB93083B455065E03DE9B7878C8B3BB063637EA5693160E831CC3D4E0470FABBCD4FEDB09D289A0025CA7960D5C7B8064B1093037E7A0A57908EDB554D17AD587",
    );
    const FHKV_IV: (&str, &str) = (
        "FCF41938F63432975B52505F547FCEDF",
        "4E4468507620541494087AAD004005089D86B62A329B3439873999738F82461ABDE3C7AC78692B363F3B41EB68607F9C9160F550769B065B6EA00A2E44346E29FF5DC5CB86283C69324AD33D137F6F",
    );

    #[test]
    fn caltose_inverse_bcd_profile() {
        // Corpus line 61: 8D04 EE13, 3B FE, then 99, 52, 10, 0 and ten unused FFFFFF slots.
        let v = profile(CALTOS_1.0, CALTOS_1.1);
        assert_eq!(
            nums(&v, 5),
            [Some(99.0), Some(52.0), Some(10.0), Some(0.0), None]
        );
        assert!(v.get("profile_14_hca").is_none());
        // Corpus line 63: values above 99 (BCD 270600 is 627).
        let v = profile(
            "DC7C9EF16126348CDFD52CE6567A9FFD",
            "5E44496A12180880FC087A7040500584A63344B5AF071A23539C6020CBBA81FA6ADCFE738682A0924D4F6F7D89D165C9144E4918CDC2D5F86BE7B5BD8143528273ACCC131A13D0B100F2540DC1F2C379DDE4984236D3BCA424113CF0EE1BBD",
        );
        assert_eq!(
            nums(&v, 5),
            [Some(627.0), Some(395.0), Some(176.0), Some(7.0), None]
        );
        // Corpus line 64.
        let v = profile(
            "750381240D0A7E371D4CB8D1869D8F9B",
            "5E44496A07190880FC087A714050058922C9598BDDDFBB5BBF44B9D54830830EB6BE3BA8117DFC88AE1B251837DFECB04E071554125366EF9D72DCE87C9A099AD0CD9BF70F4A2E9C4C58D780444219C3F546C887FBC2D93C272E314F925473",
        );
        assert_eq!(nums(&v, 4), [Some(2.0), Some(0.0), Some(0.0), Some(0.0)]);
    }

    #[test]
    fn fhkvdataiv_profile_counts_from_the_end() {
        // Corpus line 108: 8D04 EE1F, 72 FE, fourteen 16-bit increments 0 … 0, 3, 22.
        let v = profile(FHKV_IV.0, FHKV_IV.1);
        let mut want = vec![Some(22.0), Some(3.0)];
        want.extend([Some(0.0); 12]);
        want.push(None);
        assert_eq!(nums(&v, 15), want);
    }

    #[test]
    fn elements() {
        assert_eq!(profile_element(&[0xFE, 0xFF], false), Some(-2.0));
        assert_eq!(profile_element(&[0x27, 0x06, 0x00], true), Some(627.0));
        assert_eq!(profile_element(&[0x27, 0xF6], true), Some(-627.0));
        assert_eq!(profile_element(&[0x2A, 0x00], true), None);
        assert_eq!(profile_element(&[0xFF, 0xFF, 0xFF], true), None);
        assert_eq!(profile_element(&[], false), None);
        assert_eq!(profile_element(&[0xFF; 8], false), None);
        assert_eq!(
            profile_element(&[0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], false),
            Some(-2.0)
        );
    }

    #[test]
    fn cut_profiles_do_not_panic() {
        for (key, full) in [CALTOS_1, FHKV_IV] {
            let bytes = hex::decode(full).unwrap();
            let mut keys = KeyStore::new();
            keys.set_default(Key::from_hex(key).unwrap());
            // Decrypt once, then cut the plain frame (no CRCs, no encryption).
            let frame = WirelessDecoder::new(keys).decode(&bytes).unwrap();
            let t = frame.telegram().unwrap();
            for r in &t.records {
                for cut in 0..=r.data.len() {
                    let mut rec = *r;
                    rec.data = &r.data[..cut];
                    let mut t2 = t.clone();
                    t2.records = vec![rec];
                    let mut v = HookValues::default();
                    decode_compact_profile_hca(&t2, &mut v);
                }
            }
        }
    }
}
