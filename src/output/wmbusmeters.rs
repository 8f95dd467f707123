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
        ReadingValue::Number(v) if v.is_finite() => push_rounded(out, *v),
        ReadingValue::Number(_) | ReadingValue::Null => out.push_str("null"),
        ReadingValue::Text(t) => push_str(out, t),
    }
}

/// `v` rounded to 6 decimals, printed as Rust prints that `f64` (the shortest decimal that
/// reads back as it, no exponent): from the integer count of millionths when the value is
/// below 10⁹, where any two numbers of 6 decimals are further apart than two neighbouring
/// `f64`s, so that count's digits are that shortest decimal. `fmt` would take the long way
/// for every reading of every line.
fn push_rounded(out: &mut String, v: f64) {
    let rounded = (v * 1e6).round() / 1e6;
    if rounded.abs() >= 1e9 {
        let _ = write!(out, "{rounded}");
        return;
    }
    if rounded.is_sign_negative() {
        out.push('-');
    }
    // Exact: below 10⁹ the count of millionths is below 2⁵³.
    let millionths = (rounded.abs() * 1e6).round() as u64;
    let (whole, mut fraction) = (millionths / 1_000_000, millionths % 1_000_000);
    super::text::push_u64(out, whole);
    if fraction != 0 {
        let mut digits = 6;
        while fraction % 10 == 0 {
            fraction /= 10;
            digits -= 1;
        }
        out.push('.');
        super::text::push_u64_padded(out, fraction, digits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path prints what `{}` prints for the rounded value, for values of every
    /// magnitude and sign, halves and the ends of the fast path's range.
    #[test]
    fn rounded_numbers_print_as_rust_prints_them() {
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            723.611111,
            723.6111114999,
            0.0000005,
            -0.0000005,
            0.0000004999,
            1e-7,
            123456789.123456,
            999_999_999.999_999,
            1e9,
            -1e9,
            1e15,
            2.5e-6,
            0.1,
            0.2,
            0.3,
            1.1,
            12.34,
            3.0e-6,
            4.35e6,
        ];
        // A pseudo-random spread over many magnitudes (a fixed LCG: the test is repeatable).
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..200_000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let mantissa = (x >> 11) as f64 / (1u64 << 53) as f64;
            let exponent = ((x >> 3) % 24) as i32 - 12;
            let sign = if x & 1 == 0 { 1.0 } else { -1.0 };
            values.push(sign * mantissa * 10f64.powi(exponent));
        }
        for v in values {
            let mut fast = String::new();
            push_value(&mut fast, &ReadingValue::Number(v));
            let rounded = (v * 1e6).round() / 1e6;
            assert_eq!(fast, format!("{rounded}"), "{v:e}");
        }
    }
}
