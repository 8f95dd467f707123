//! Our JSON rendering of a decoded telegram (schema in `docs/json.md`). Written by hand into a
//! reused `String`: it is on the hot path of `decode` and the daemon, and the shape is fixed.

use std::fmt::Write;

use crate::telegram::wireless::WirelessLink;
use crate::telegram::{Link, Telegram};
use crate::wire::application::{self, Application, FixedData, Header, Status};
use crate::wire::datetime::MeterDateTime;
use crate::wire::hex;
use crate::wire::medium::Medium;
use crate::wire::records::{Decimal, RawValue, Record, RecordKind, Value};
use crate::wire::vif::{Combinable, Unit};

/// Appends a JSON string literal.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    // Names, units and quantities need no escaping: copy them whole.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    out.push('"');
    hex::push_upper(out, bytes);
    out.push('"');
}

fn push_hex_byte(out: &mut String, b: u8) {
    out.push('"');
    hex::push_upper(out, &[b]);
    out.push('"');
}

/// Appends a number that is exactly the decimal value, or `null` for non-finite floats.
fn push_decimal(out: &mut String, d: Decimal) {
    let mut buf = [0u8; 256];
    out.push_str(d.format(&mut buf));
}

/// Integers without going through `fmt` (this runs several times per record).
fn push_int(out: &mut String, v: i128) {
    // Indexes, offsets, storage and tariff numbers: small and not negative.
    let Ok(mut n) = u64::try_from(v) else {
        push_decimal(out, Decimal::new(v, 0));
        return;
    };
    // Most are one digit (storage, tariff, subunit): no buffer, no UTF-8 check.
    if n < 10 {
        out.push(char::from(b'0' + n as u8));
        return;
    }
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits, pushed as characters: cheaper than validating them as a string.
    out.extend(buf[at..].iter().map(|&d| char::from(d)));
}

fn push_float(out: &mut String, f: f64) {
    if f.is_finite() {
        let _ = write!(out, "{f}");
    } else {
        out.push_str("null");
    }
}

/// Text sent by a meter is reversed on the wire and may not be ASCII; bytes above 0x7F are
/// read as Latin-1 so nothing is lost.
fn push_meter_text(out: &mut String, text: &[u8]) {
    let s: String = text.iter().rev().map(|&b| b as char).collect();
    push_str(out, &s);
}

fn push_datetime(out: &mut String, t: &MeterDateTime) {
    let _ = write!(out, "\"{t}\"");
}

fn push_status(out: &mut String, status: Status) {
    let _ = write!(out, "\"status\":\"{:02X}\",\"status_flags\":[", status.0);
    for (i, f) in status.flags().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, f);
    }
    out.push(']');
}

fn push_medium(out: &mut String, key: &str, medium: Medium) {
    let _ = write!(
        out,
        "\"{key}\":\"{}\",\"{key}_code\":\"{:02X}\"",
        medium.name(),
        medium.code()
    );
}

/// Renders one telegram as a single-line JSON object.
pub fn render(t: &Telegram<'_>, out: &mut String) {
    match &t.link {
        Link::Wired(l) => {
            let _ = write!(
                out,
                "{{\"kind\":\"wired\",\"link\":{{\"kind\":\"wired\",\"c\":\"{:02X}\",\"a\":{},\"ci\":\"{:02X}\",\"direction\":\"{}\"}}",
                l.control,
                l.address,
                l.ci,
                if l.master_to_slave() {
                    "master_to_slave"
                } else {
                    "slave_to_master"
                }
            );
        }
        Link::Wireless(l) => render_wireless_link(l, out),
    }
    match &t.application {
        Application::Variable { header, .. } => {
            out.push_str(",\"header\":");
            render_header(header, out);
            out.push_str(",\"records\":[");
            for (i, r) in t.records.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render_record(i, r, out);
            }
            out.push(']');
            let _ = write!(out, ",\"more_records_follow\":{}", t.more_records_follow());
            if let Some(e) = &t.record_error {
                out.push_str(",\"record_error\":");
                push_str(out, &e.to_string());
            }
        }
        Application::Fixed(f) => render_fixed(f, out),
        Application::Error(e) => {
            out.push_str(",\"application_error\":{\"code\":");
            match e.code {
                Some(c) => {
                    let _ = write!(out, "{c}");
                }
                None => out.push_str("null"),
            }
            out.push_str(",\"text\":");
            push_str(out, e.text());
            if !e.extra.is_empty() {
                out.push_str(",\"extra\":");
                push_hex(out, e.extra);
            }
            out.push('}');
        }
        Application::Alarm { status } => {
            out.push_str(",\"alarm\":{\"status\":");
            match status {
                Some(s) => push_hex_byte(out, *s),
                None => out.push_str("null"),
            }
            out.push('}');
        }
        Application::Other { ci, data } => {
            out.push_str(",\"payload\":{\"ci_name\":");
            push_str(out, application::CiField::from_byte(*ci).name());
            out.push_str(",\"data\":");
            push_hex(out, data);
            out.push('}');
        }
    }
    out.push('}');
}

/// [`render`] with a driver's view next to the records, as `decode --format json --driver`
/// prints it: `driver` and `fields`, or `driver: null` and the reason as `hint`.
pub fn render_with_driver(
    t: &Telegram<'_>,
    driver: Result<&crate::drivers::run::MeterOutput, &str>,
    out: &mut String,
) {
    use crate::drivers::ReadingValue;
    render(t, out);
    // Reopen the object to add the driver's view next to the records.
    out.pop();
    match driver {
        Ok(o) => {
            out.push_str(",\"driver\":");
            push_str(out, &o.driver);
            out.push_str(",\"fields\":{");
            for (i, r) in o.readings.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_str(out, &r.key);
                out.push(':');
                match &r.value {
                    ReadingValue::Number(v) if v.is_finite() => {
                        let _ = write!(out, "{v}");
                    }
                    ReadingValue::Number(_) | ReadingValue::Null => out.push_str("null"),
                    ReadingValue::Text(t) => push_str(out, t),
                }
            }
            out.push('}');
            if let Some(hint) = &o.hint {
                out.push_str(",\"hint\":");
                push_str(out, hint);
            }
        }
        Err(hint) => {
            out.push_str(",\"driver\":null,\"hint\":");
            push_str(out, hint);
        }
    }
    out.push('}');
}

/// The wireless layers: data link, ELL, AFL, TPL and how the payload was made readable.
pub fn render_wireless_link(l: &WirelessLink, out: &mut String) {
    let d = &l.dll;
    out.push_str("{\"kind\":\"wireless\",\"link\":{\"kind\":\"wireless\",\"c\":");
    push_hex_byte(out, d.c);
    out.push_str(",\"c_name\":");
    push_str(out, d.link_control().name());
    out.push_str(",\"manufacturer\":");
    let letters = d.manufacturer.letters();
    push_str(out, std::str::from_utf8(&letters).unwrap_or("???"));
    let _ = write!(out, ",\"id\":\"{}\",\"version\":{},", d.id, d.version);
    push_medium(out, "device_type", d.device_type);
    let _ = write!(
        out,
        ",\"secondary_address\":\"{}\",\"dll_crcs\":",
        d.secondary_address()
    );
    match l.crcs {
        Some(f) => {
            let _ = write!(out, "\"{f}\"");
        }
        None => out.push_str("null"),
    }
    out.push('}');
    if let Some(e) = &l.ell {
        let _ = write!(
            out,
            ",\"ell\":{{\"ci\":\"{:02X}\",\"cc\":\"{:02X}\",\"access_number\":{}",
            e.ci, e.cc, e.access_number
        );
        if let Some(sn) = e.session_number {
            out.push_str(",\"session_number\":");
            push_hex(out, &sn);
        }
        if let Some(p) = l.ell_protection {
            let _ = write!(
                out,
                ",\"encryption\":\"aes_ctr\",\"protection\":\"{}\"",
                p.name()
            );
        }
        out.push('}');
    }
    if let Some(a) = &l.afl {
        let _ = write!(out, ",\"afl\":{{\"fcl\":\"{:04X}\"", a.fcl);
        if let Some(mcl) = a.mcl {
            let _ = write!(out, ",\"mcl\":\"{mcl:02X}\"");
        }
        if let Some(mcr) = a.mcr {
            let _ = write!(out, ",\"message_counter\":{}", u32::from_le_bytes(mcr));
        }
        if let Some(n) = a.mac_len() {
            let _ = write!(out, ",\"mac_len\":{n}");
        }
        out.push('}');
    }
    if let Some(t) = &l.tpl {
        let _ = write!(
            out,
            ",\"tpl\":{{\"ci\":\"{:02X}\",\"security_mode\":{},\"encrypted_blocks\":{},\"protection\":\"{}\"",
            t.ci,
            l.security_mode,
            l.encrypted_blocks,
            l.protection.name()
        );
        if let Some(c) = t.config {
            let _ = write!(out, ",\"config\":\"{:04X}\"", c.0);
        }
        if let Some(x) = t.config_ext {
            let _ = write!(out, ",\"config_ext\":\"{x:02X}\"");
        }
        out.push('}');
    }
    if let Some(c) = &l.compact {
        let _ = write!(
            out,
            ",\"compact\":{{\"signature\":\"{:04X}\",\"full_frame_crc\":\"{:04X}\",\"full_frame_crc_ok\":{},\"built_in_format\":{}}}",
            c.signature, c.full_frame_crc, c.full_frame_crc_ok, c.built_in_format
        );
    }
}

fn render_header(h: &Header, out: &mut String) {
    match h {
        Header::Long(h) => {
            let _ = write!(
                out,
                "{{\"type\":\"long\",\"id\":\"{}\",\"manufacturer\":",
                h.id
            );
            // Codes 27-31 are not letters: 28 is a backslash, so the letters must be escaped.
            let letters = h.manufacturer.letters();
            push_str(out, std::str::from_utf8(&letters).unwrap_or("???"));
            let _ = write!(out, ",\"version\":{},", h.version);
            push_medium(out, "medium", h.medium);
            let _ = write!(out, ",\"access_number\":{},", h.access_number);
            push_status(out, h.status);
            out.push_str(",\"signature\":\"");
            hex::push_upper(out, &h.signature.to_be_bytes());
            out.push_str("\",\"secondary_address\":\"");
            let m = h.manufacturer.0.to_le_bytes();
            hex::push_upper(out, &h.id.0.to_be_bytes());
            hex::push_upper(out, &[m[0], m[1], h.version, h.medium.code()]);
            out.push_str("\"}");
        }
        Header::Short(h) => {
            let _ = write!(
                out,
                "{{\"type\":\"short\",\"access_number\":{},",
                h.access_number
            );
            push_status(out, h.status);
            let _ = write!(out, ",\"signature\":\"{:04X}\"}}", h.signature);
        }
        Header::None => out.push_str("{\"type\":\"none\"}"),
    }
}

fn render_fixed(f: &FixedData<'_>, out: &mut String) {
    let _ = write!(
        out,
        ",\"header\":{{\"type\":\"fixed\",\"id\":\"{}\",\"access_number\":{},\"status\":\"{:02X}\",\"counter_coding\":\"{}\",\"values\":\"{}\",\"medium_code\":\"{:X}\"}}",
        f.id,
        f.access_number,
        f.status,
        if f.binary_counters() { "binary" } else { "bcd" },
        if f.stored_values() { "stored" } else { "actual" },
        f.medium_code
    );
    out.push_str(",\"records\":[");
    for (i, (unit_code, counter)) in [(f.unit1, f.counter1), (f.unit2, f.counter2)]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"index\":{i},\"unit_code\":\"{unit_code:02X}\",");
        let raw = f.counter_value(counter);
        let unit = application::fixed_unit(unit_code);
        out.push_str("\"quantity\":");
        match unit {
            Some((q, _, _)) => push_str(out, q),
            None => out.push_str("null"),
        }
        out.push_str(",\"unit\":");
        push_str(out, unit.map(|(_, u, _)| u.symbol()).unwrap_or(""));
        out.push_str(",\"value\":");
        match (raw, unit) {
            (Some(v), Some((_, _, e))) => push_decimal(out, Decimal::new(i128::from(v), e.into())),
            (Some(v), None) => {
                let _ = write!(out, "{v}");
            }
            (None, _) => out.push_str("null"),
        }
        out.push_str(",\"raw\":");
        match raw {
            Some(v) => {
                let _ = write!(out, "{v}");
            }
            None => push_hex(out, counter),
        }
        out.push('}');
    }
    out.push(']');
}

fn render_record(index: usize, r: &Record<'_>, out: &mut String) {
    out.push_str("{\"index\":");
    push_int(out, index as i128);
    out.push_str(",\"offset\":");
    push_int(out, r.offset as i128);
    out.push_str(",\"dif\":");
    push_hex_byte(out, r.dif());
    if !r.difes().is_empty() {
        out.push_str(",\"dife\":");
        push_hex(out, r.difes());
    }
    match r.kind {
        RecordKind::Data => {}
        RecordKind::ManufacturerData | RecordKind::MoreRecordsFollow => {
            out.push_str(",\"type\":");
            push_str(
                out,
                if r.kind == RecordKind::ManufacturerData {
                    "manufacturer_data"
                } else {
                    "more_records_follow"
                },
            );
            out.push_str(",\"data\":");
            push_hex(out, r.data);
            out.push('}');
            return;
        }
        RecordKind::SpecialFunction(dif) => {
            let _ = write!(out, ",\"type\":\"special_function_{dif:02X}\",\"data\":");
            push_hex(out, r.data);
            out.push('}');
            return;
        }
    }
    out.push_str(",\"vif\":\"");
    if let Some(vif) = r.vif {
        hex::push_upper(out, &[vif]);
    }
    hex::push_upper(out, r.vifes);
    out.push_str("\",\"storage\":");
    push_int(out, i128::from(r.storage));
    out.push_str(",\"tariff\":");
    push_int(out, i128::from(r.tariff));
    out.push_str(",\"subunit\":");
    push_int(out, i128::from(r.subunit));
    out.push_str(",\"function\":\"");
    out.push_str(r.function.name());
    out.push('"');
    let vi = r.value_information();
    out.push_str(",\"quantity\":");
    match vi {
        Some(v) => push_str(out, v.description.quantity),
        None => out.push_str("null"),
    }
    out.push_str(",\"unit\":");
    let unit = vi.map(|v| v.scale().unit).unwrap_or(Unit::None);
    if !r.plain_text.is_empty() {
        push_meter_text(out, r.plain_text);
    } else {
        push_str(out, unit.symbol());
    }
    out.push_str(",\"value\":");
    let raw = r.raw_value_with(vi.as_ref());
    let value = r.value_from(raw, vi.as_ref());
    match value {
        Value::None => out.push_str("null"),
        Value::Decimal(d) => push_decimal(out, d),
        Value::Float(f) => push_float(out, f),
        Value::InvalidBcd(d) => push_str(out, d.as_str()),
        Value::DateTime(t) => push_datetime(out, &t),
        Value::Text(t) => push_meter_text(out, t),
        Value::Bytes(b) => push_hex(out, b),
    }
    out.push_str(",\"raw\":");
    match raw {
        RawValue::None => out.push_str("null"),
        RawValue::Integer(i) => push_int(out, i128::from(i)),
        RawValue::Real(f) => push_float(out, f64::from(f)),
        RawValue::InvalidBcd(d) => push_str(out, d.as_str()),
        RawValue::DateTime(_) | RawValue::Text(_) | RawValue::Bytes(_) => push_hex(out, r.data),
    }
    if let Value::DateTime(t) = value {
        if t.invalid {
            out.push_str(",\"invalid\":true");
        }
        if t.summer_time {
            out.push_str(",\"summer_time\":true");
        }
    }
    if let Some(v) = vi {
        let mut first = true;
        for c in v.combinable.iter().map(|&b| Combinable::from_code(b)) {
            out.push_str(if first { ",\"vife\":[" } else { "," });
            first = false;
            push_str(out, &c.describe());
        }
        if !first {
            out.push(']');
        }
        if let Some(err) = v
            .combinable
            .iter()
            .find_map(|&b| match Combinable::from_code(b) {
                Combinable::RecordError(e) => Some(e),
                _ => None,
            })
        {
            out.push_str(",\"error\":");
            push_str(out, err.text());
        }
        if !v.manufacturer_vifes.is_empty() {
            out.push_str(",\"manufacturer_vife\":");
            push_hex(out, v.manufacturer_vifes);
        }
        if v.description.is_reserved() {
            out.push_str(",\"reserved_vif\":true");
        }
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_print_as_rust_prints_them() {
        let mut values: Vec<i128> = vec![0, 1, 9, 10, 99, 100, 65_535, -1, -10];
        values.extend([
            u64::MAX as i128,
            u64::MAX as i128 + 1,
            i128::MIN + 1,
            i128::MAX,
        ]);
        values.extend((0..64).map(|b| 1i128 << b));
        for v in values {
            let mut s = String::new();
            push_int(&mut s, v);
            assert_eq!(s, v.to_string());
        }
    }

    #[test]
    fn strings_without_special_characters_are_copied_and_others_escaped() {
        for (text, json) in [
            ("", "\"\""),
            ("m^3", "\"m^3\""),
            ("°C ✓", "\"°C ✓\""),
            ("a\"b", "\"a\\\"b\""),
            ("tab\t", "\"tab\\t\""),
        ] {
            let mut s = String::new();
            push_str(&mut s, text);
            assert_eq!(s, json);
        }
    }
    use crate::telegram::decode_wired;

    #[test]
    fn renders_scaled_values_exactly() {
        // Corpus frame `filler`: fillers around one record, `04 83 3B 88 13 00 00`: energy in
        // Wh (VIF 0x03 with extension) with VIFE 0x3B, raw 0x1388 = 5000.
        let bytes = hex::decode(
            "68 1F 1F 68 08 00 72 31 77 67 17 2D 2C 01 02 00 00 00 00 2F 2F 04 83 3B 88 13 00 00 2F 2F 2F 2F 2F 2F 2F 00 16",
        )
        .unwrap();
        let t = decode_wired(&bytes).unwrap();
        let mut s = String::new();
        render(&t, &mut s);
        assert!(
            s.starts_with("{\"kind\":\"wired\",\"link\":{\"kind\":\"wired\",\"c\":\"08\",\"a\":0,\"ci\":\"72\""),
            "{s}"
        );
        assert!(
            s.contains("\"id\":\"17677731\",\"manufacturer\":\"KAM\""),
            "{s}"
        );
        assert!(s.contains("\"vif\":\"833B\""), "{s}");
        assert!(
            s.contains("\"quantity\":\"energy\",\"unit\":\"Wh\",\"value\":5000,\"raw\":5000"),
            "{s}"
        );
        assert!(
            s.contains("\"vife\":[\"accumulation only if positive\"]"),
            "{s}"
        );
    }

    #[test]
    fn escapes_strings() {
        let mut s = String::new();
        push_str(&mut s, "a\"b\\c\n\u{1}");
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
