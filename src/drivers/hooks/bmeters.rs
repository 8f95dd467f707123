//! BMeters meters' own blocks after DIF 0x0F:
//!
//! - `hydrodigit`: Hydrodigit water meters, blocks chosen by a contents byte.
//! - `hydroclima`: Hydroclima heat cost allocators, frame 0x10 or 0x11.
//! - `rfmtx1`: RFM-TX1 radio modules. After the (unmasked, see `security::bmeters`) volume
//!   record, the block carries the meter's clock as five BCD bytes — minute, hour, day, month,
//!   two-digit year — at offset 7.

use super::payload::{
    bcd, date_text, manufacturer_data, status_text, tpl_status, tpl_status_texts, u16_le, u24_le,
    u32_le,
};
use super::{Hook, HookValue, HookValues};
use crate::telegram::Telegram;

pub const HOOKS: &[Hook] = &[
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
        name: "rfmtx1",
        values: &["meter_datetime"],
        decode: decode_rfmtx1,
    },
];

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

/// Where the clock starts in the block after DIF 0x0F.
const CLOCK_AT: usize = 7;

fn decode_rfmtx1(t: &Telegram<'_>, out: &mut HookValues) {
    let Some(block) = manufacturer_data(t) else {
        return;
    };
    let Some(clock) = block.get(CLOCK_AT..CLOCK_AT + 5) else {
        return;
    };
    let Some([minute, hour, day, month, year]) = clock
        .iter()
        .map(|&b| bcd(b))
        .collect::<Option<Vec<u32>>>()
        .and_then(|v| <[u32; 5]>::try_from(v).ok())
    else {
        return;
    };
    // A clock that is not a time of day is left out rather than shown wrong.
    if minute > 59 || hour > 23 || !(1..=31).contains(&day) || !(1..=12).contains(&month) {
        return;
    }
    out.text(
        "meter_datetime",
        format!(
            "{:04}-{month:02}-{day:02} {hour:02}:{minute:02}",
            2000 + year
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::hooks::testing::{number as num, run as values, run_with_driver, text};

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
    fn rfmtx1_clock() {
        // wmbusmeters' rfmtx1 test telegram: 2020-03-31 10:04 (its expected output).
        let v = run_with_driver(
            decode_rfmtx1,
            "rfmtx1",
            "4644B4097172737405077AA50006101115F78184AB0F1D1E200000005904103103208047004A4800E73C00193E00453F003E4000E64000E74100F442000144001545005B460000",
        );
        assert_eq!(text(&v, "meter_datetime"), "2020-03-31 10:04");
    }

    #[test]
    fn impossible_clocks_are_left_out() {
        // Month 13: the same telegram with one clock byte changed gives no date.
        let v = run_with_driver(
            decode_rfmtx1,
            "rfmtx1",
            "4644B4097172737405077AA50006101115F78184AB0F1D1E200000005904103113208047004A4800E73C00193E00453F003E4000E64000E74100F442000144001545005B460000",
        );
        assert!(v.get("meter_datetime").is_none());
    }
}
