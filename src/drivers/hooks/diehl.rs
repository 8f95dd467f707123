//! Diehl IZAR (PRIOS) water meters. The application data of a PRIOS telegram is the four
//! clear header bytes after the CI (alarm bits, battery, transmit period), then the
//! descrambled block: `4B`, total (u32 LE, litres), last month's total (u32 LE, litres), the
//! date of that reading (type G).
//!
//! Sappel (SAP) sends its PRIOS frames with its own reading of the address field: the low 26
//! bits of the six address bytes (id, version, type; as one little-endian number) are eight
//! decimal digits, the two-digit manufacture year and a six-digit serial number; bits 29-33,
//! 34-38 and 39-43 are three letters (`@` + value) of the prefix printed on the meter:
//! supplier, year, meter type, diameter, e.g. `C19UA`.

use super::{manufacturer_payload, Hook, HookValue, HookValues};
use crate::telegram::{Link, Telegram};
use crate::wire::application::Application;
use crate::wire::datetime::MeterDateTime;

pub const HOOKS: &[Hook] = &[Hook {
    name: "diehl_prios",
    values: &[
        "total_m3",
        "last_month_total_m3",
        "last_month_date",
        "battery_y",
        "transmit_period_s",
        "status",
        "current_alarms",
        "previous_alarms",
        "prefix",
        "serial_number",
        "manufacture_year",
    ],
    decode: decode_prios,
}];

/// One alarm bit: header byte index after the CI, bit, status name, and its name in the
/// current or previous alarm list.
type Alarm = (
    usize,
    u8,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

/// Alarm bits of the clear header bytes after the CI.
const ALARMS: &[Alarm] = &[
    (0, 0x80, "GENERAL_ALARM", Some("general_alarm"), None),
    (1, 0x80, "LEAKAGE", Some("leakage"), None),
    (1, 0x40, "PREV_LEAKAGE", None, Some("leakage")),
    (1, 0x20, "METER_BLOCKED", Some("meter_blocked"), None),
    (2, 0x80, "BACK_FLOW", Some("back_flow"), None),
    (2, 0x40, "UNDERFLOW", Some("underflow"), None),
    (2, 0x20, "OVERFLOW", Some("overflow"), None),
    (2, 0x10, "SUBMARINE", Some("submarine"), None),
    (2, 0x08, "SENSOR_FRAUD", Some("sensor_fraud"), None),
    (2, 0x04, "PREV_SENSOR_FRAUD", None, Some("sensor_fraud")),
    (2, 0x02, "MECHANICAL_FRAUD", Some("mechanical_fraud"), None),
    (
        2,
        0x01,
        "PREV_MECHANICAL_FRAUD",
        None,
        Some("mechanical_fraud"),
    ),
];

fn le32(b: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?))
}

/// Prefix, serial number and manufacture year of a Sappel PRIOS frame (sent as SND_NR or
/// SND_IR with a CI of 0xA0-0xA7), read from its address field; `None` for other frames.
fn sappel_identity(t: &Telegram<'_>) -> Option<(String, String, String)> {
    let Link::Wireless(link) = &t.link else {
        return None;
    };
    let dll = &link.dll;
    let Application::Other { ci, .. } = t.application else {
        return None;
    };
    if dll.manufacturer.letters() != *b"SAP"
        || !matches!(dll.c, 0x44 | 0x46)
        || !(0xA0..=0xA7).contains(&ci)
    {
        return None;
    }
    let mut wide = [0u8; 8];
    wide[..6].copy_from_slice(&dll.raw_a);
    let address = u64::from_le_bytes(wide);
    // 26 bits hold at most 67,108,863: eight digits, the first two the year within 2000-2067.
    let digits = address & 0x03FF_FFFF;
    let year = digits / 1_000_000;
    let serial = digits % 1_000_000;
    let letter = |shift: u32| char::from(b'@' + ((address >> shift) & 0x1F) as u8);
    let prefix = format!("{}{year:02}{}{}", letter(39), letter(34), letter(29));
    Some((prefix, format!("{serial:06}"), format!("{}", 2000 + year)))
}

fn decode_prios(t: &Telegram<'_>, out: &mut HookValues) {
    let Some(data) = manufacturer_payload(t) else {
        return;
    };
    // Four clear bytes, then the block that starts with the 0x4B check byte.
    let (Some(header), Some(block)) = (data.get(..4), data.get(4..)) else {
        return;
    };
    if block.first() != Some(&0x4B) {
        return;
    }
    if let Some(total) = block.get(1..5).and_then(le32) {
        out.number("total_m3", f64::from(total) / 1000.0);
    }
    if let Some(last) = block.get(5..9).and_then(le32) {
        out.number("last_month_total_m3", f64::from(last) / 1000.0);
    }
    if let Some(d) = block.get(9..11) {
        let date = MeterDateTime::type_g([d[0], d[1]]);
        out.text(
            "last_month_date",
            crate::drivers::engine::format_datetime(&date),
        );
    }
    if let Some((prefix, serial, year)) = sappel_identity(t) {
        out.text("prefix", prefix);
        out.text("serial_number", serial);
        out.text("manufacture_year", year);
    }
    out.number("battery_y", f64::from(header[1] & 0x1F) / 2.0);
    out.number(
        "transmit_period_s",
        f64::from(1u32 << ((header[0] & 0x0F) + 2)),
    );
    let mut status = Vec::new();
    let mut current = Vec::new();
    let mut previous = Vec::new();
    for &(byte, bit, name, now, before) in ALARMS {
        if header[byte] & bit != 0 {
            status.push(name);
            current.extend(now);
            previous.extend(before);
        }
    }
    status.sort_unstable();
    let join = |v: &[&str]| {
        if v.is_empty() {
            "no_alarm".to_string()
        } else {
            v.join(",")
        }
    };
    out.set(
        "status",
        HookValue::Text(if status.is_empty() {
            "OK".to_string()
        } else {
            status.join(" ")
        }),
    );
    out.text("current_alarms", join(&current));
    out.text("previous_alarms", join(&previous));
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::wire::hex;

    fn values(telegram: &str) -> HookValues {
        super::super::testing::run(decode_prios, telegram)
    }

    #[test]
    fn dme_telegram() {
        // security_vectors.md V7 (DME): 16760 l, last month 11840 l on 2019-11-30.
        let v = values(
            "2944A511780729662366A20118001378D3B3DB8CEDD77731F25832AAF3DA8CADF9774EA673172E8C61F2",
        );
        assert_eq!(v.get("total_m3"), Some(&HookValue::Number(16.76)));
        assert_eq!(
            v.get("last_month_total_m3"),
            Some(&HookValue::Number(11.84))
        );
        assert_eq!(
            v.get("last_month_date"),
            Some(&HookValue::Text("2019-11-30".into()))
        );
        assert_eq!(v.get("battery_y"), Some(&HookValue::Number(12.0)));
        assert_eq!(v.get("transmit_period_s"), Some(&HookValue::Number(8.0)));
        assert_eq!(v.get("status"), Some(&HookValue::Text("OK".into())));
        // Not a Sappel frame: its address is an ordinary id.
        assert!(v.get("prefix").is_none());
        assert!(v.get("serial_number").is_none());
        assert!(v.get("manufacture_year").is_none());
    }

    #[test]
    fn sappel_address_gives_prefix_serial_and_year() {
        // Corpus lines 173, 176 and 177 (izarv2), 374, 377 and 378 (izar).
        for (telegram, prefix, serial, year) in [
            (
                "1944304C72242421D401A2013D4013DD8B46A4999C1293E582CC",
                "C19UA",
                "145842",
                "2019",
            ),
            (
                "1944304C9C5824210C04A363140013716577EC59E8663AB0D31C",
                "H19CA",
                "159196",
                "2019",
            ),
            (
                "1944304CDEFFE420CC01A263120013258F907B0AFF12529AC33B",
                "C15SA",
                "007710",
                "2015",
            ),
        ] {
            let v = values(telegram);
            assert_eq!(v.get("prefix"), Some(&HookValue::Text(prefix.into())));
            assert_eq!(
                v.get("serial_number"),
                Some(&HookValue::Text(serial.into()))
            );
            assert_eq!(
                v.get("manufacture_year"),
                Some(&HookValue::Text(year.into()))
            );
        }
    }

    #[test]
    fn alarms_of_a_sappel_telegram() {
        let v = values("1944304C72242421D401A2013D4013DD8B46A4999C1293E582CC");
        assert_eq!(
            v.get("status"),
            Some(&HookValue::Text("METER_BLOCKED UNDERFLOW".into()))
        );
        assert_eq!(
            v.get("current_alarms"),
            Some(&HookValue::Text("meter_blocked,underflow".into()))
        );
        assert_eq!(v.get("battery_y"), Some(&HookValue::Number(14.5)));
    }

    #[test]
    fn other_payloads_yield_nothing() {
        let bytes = hex::decode("68 04 04 68 08 01 70 08 81 16").unwrap();
        let t = crate::telegram::decode_wired(&bytes).unwrap();
        let mut v = HookValues::default();
        decode_prios(&t, &mut v);
        assert!(v.get("total_m3").is_none());
    }
}
