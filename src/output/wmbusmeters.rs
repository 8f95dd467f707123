//! The flat JSON object wmbusmeters prints (`--format wmbusmeters`), so dashboards and
//! automations built on it keep working: `_`, `media`, `meter`, `name`, `id`, the fields in
//! driver order, `timestamp`.

use std::fmt::Write as _;

use super::json::push_str;
use crate::drivers::{Reading, ReadingValue};

/// wmbusmeters' `media` text for a device type byte.
pub fn media_name(device_type: u8) -> &'static str {
    match device_type {
        0x00 => "other",
        0x01 => "oil",
        0x02 => "electricity",
        0x03 => "gas",
        0x04 => "heat",
        0x05 => "steam",
        0x06 => "warm water",
        0x07 => "water",
        0x08 => "heat cost allocation",
        0x09 => "compressed air",
        0x0A => "cooling load volume at outlet",
        0x0B => "cooling load volume at inlet",
        0x0C => "heat volume at inlet",
        0x0D => "heat/cooling load",
        0x0E => "bus/system component",
        0x0F => "unknown",
        0x10 => "irrigation water",
        0x11 => "water data logger",
        0x12 => "gas data logger",
        0x13 => "gas converter",
        0x14 => "colorific",
        0x15 => "hot water",
        0x16 => "cold water",
        0x17 => "dual water",
        0x18 => "pressure",
        0x19 => "a/d converter",
        0x1A => "smoke detector",
        0x1B => "room sensor",
        0x1C => "gas detector",
        0x20 => "breaker",
        0x21 => "valve",
        0x25 => "customer unit",
        0x28 => "waste water",
        0x29 => "garbage",
        0x2A => "carbon dioxide",
        0x31 => "communication controller",
        0x32 => "unidirectional repeater",
        0x33 => "bidirectional repeater",
        0x36 => "radio converter (system side)",
        0x37 => "radio converter (meter side)",
        0x80 => "heat cost allocator",
        _ => "reserved",
    }
}

pub struct MeterLine<'a> {
    pub media: &'a str,
    pub driver: &'a str,
    pub name: &'a str,
    pub id: &'a str,
    pub readings: &'a [Reading],
    pub timestamp: &'a str,
}

/// One JSON object on one line (no newline appended).
pub fn render(line: &MeterLine<'_>, out: &mut String) {
    out.push_str("{\"_\":\"telegram\",\"media\":");
    push_str(out, line.media);
    out.push_str(",\"meter\":");
    push_str(out, line.driver);
    out.push_str(",\"name\":");
    push_str(out, line.name);
    out.push_str(",\"id\":");
    push_str(out, line.id);
    for r in line.readings {
        out.push(',');
        push_str(out, &r.key);
        out.push(':');
        push_value(out, &r.value);
    }
    out.push_str(",\"timestamp\":");
    push_str(out, line.timestamp);
    out.push('}');
}

/// A reading's value as wmbusmeters prints it: numbers rounded to at most 6 decimals
/// (723.611111), invalid values as `null`.
pub fn push_value(out: &mut String, value: &ReadingValue) {
    match value {
        ReadingValue::Number(v) if v.is_finite() => {
            let rounded = (v * 1e6).round() / 1e6;
            let _ = write!(out, "{rounded}");
        }
        ReadingValue::Number(_) | ReadingValue::Null => out.push_str("null"),
        ReadingValue::Text(t) => push_str(out, t),
    }
}
