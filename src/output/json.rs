//! Our JSON rendering of a decoded telegram (schema in `docs/json.md`). Written by hand into a
//! reused `String`: it is on the hot path of `decode` and the daemon, and the shape is fixed.
//! Most of a record's text depends only on its DIF/VIF bytes and is copied from a per-thread
//! cache of record shapes ([`super::shapes`]); numbers are written without `fmt`.

use std::cell::RefCell;
use std::fmt::Write;

use crate::telegram::wireless::WirelessLink;
use crate::telegram::{Link, Telegram};
use crate::wire::application::{self, Application, FixedData, Header, Status};
use crate::wire::datetime::{DateTimeKind, MeterDateTime};
use crate::wire::hex;
use crate::wire::medium::Medium;
use crate::wire::records::{Decimal, RawValue, Record, RecordKind, Scale, Value};
use crate::wire::vif::{Combinable, Unit};

use super::shapes::{ShapeCache, ShapeKey};
use super::text;

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

fn push_float(out: &mut String, f: f64) {
    // Whole numbers (zero, above all) print as integers do, without the float machinery of
    // `fmt`; only -0 keeps its sign there.
    if f.fract() == 0.0 && f.abs() < 1e15 && !(f == 0.0 && f.is_sign_negative()) {
        text::push_i64(out, f as i64);
    } else if f.is_finite() {
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

/// As `MeterDateTime`'s `Display` writes it (ISO 8601), without `fmt`.
fn push_datetime(out: &mut String, t: &MeterDateTime) {
    let two = |out: &mut String, n: u8| text::push_u64_padded(out, u64::from(n), 2);
    out.push('"');
    if t.kind != DateTimeKind::Time {
        text::push_u64_padded(out, u64::from(t.year), 4);
        out.push('-');
        two(out, t.month);
        out.push('-');
        two(out, t.day);
    }
    if matches!(
        t.kind,
        DateTimeKind::DateTime | DateTimeKind::DateTimeSeconds
    ) {
        out.push('T');
    }
    if t.kind != DateTimeKind::Date {
        two(out, t.hour);
        out.push(':');
        two(out, t.minute);
    }
    if matches!(t.kind, DateTimeKind::DateTimeSeconds | DateTimeKind::Time) {
        out.push(':');
        two(out, t.second);
    }
    out.push('"');
}

/// The three letters of a manufacturer code (characters 64 to 95) as a JSON string.
fn push_manufacturer(out: &mut String, letters: [u8; 3]) {
    out.push('"');
    for b in letters {
        // Codes 27-31 are not letters: 28 is a backslash, which must be escaped.
        if b == b'\\' {
            out.push_str("\\\\");
        } else {
            out.push(char::from(b));
        }
    }
    out.push('"');
}

fn push_status(out: &mut String, status: Status) {
    // Nearly every meter reports no flags.
    if status.0 == 0 {
        out.push_str("\"status\":\"00\",\"status_flags\":[]");
        return;
    }
    out.push_str("\"status\":");
    push_hex_byte(out, status.0);
    out.push_str(",\"status_flags\":[");
    for (i, f) in status.flags().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, f);
    }
    out.push(']');
}

/// `"medium":"…","medium_code":"…"` (or with another key).
fn push_medium(out: &mut String, key: &str, medium: Medium) {
    out.push('"');
    out.push_str(key);
    out.push_str("\":\"");
    out.push_str(medium.name());
    out.push_str("\",\"");
    out.push_str(key);
    out.push_str("_code\":");
    push_hex_byte(out, medium.code());
}

/// Renders one telegram as a single-line JSON object.
pub fn render(t: &Telegram<'_>, out: &mut String) {
    match &t.link {
        Link::Wired(l) => {
            out.push_str("{\"kind\":\"wired\",\"link\":{\"kind\":\"wired\",\"c\":");
            push_hex_byte(out, l.control);
            out.push_str(",\"a\":");
            text::push_u64(out, u64::from(l.address));
            out.push_str(",\"ci\":");
            push_hex_byte(out, l.ci);
            out.push_str(if l.master_to_slave() {
                ",\"direction\":\"master_to_slave\"}"
            } else {
                ",\"direction\":\"slave_to_master\"}"
            });
        }
        Link::Wireless(l) => render_wireless_link(l, out),
    }
    match &t.application {
        Application::Variable { header, .. } => {
            out.push_str(",\"header\":");
            render_header(header, out);
            out.push_str(",\"records\":[");
            render_records(&t.records, out);
            out.push(']');
            out.push_str(if t.more_records_follow() {
                ",\"more_records_follow\":true"
            } else {
                ",\"more_records_follow\":false"
            });
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
    push_manufacturer(out, d.manufacturer.letters());
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
            out.push_str("{\"type\":\"long\",\"id\":\"");
            hex::push_upper(out, &h.id.0.to_be_bytes());
            out.push_str("\",\"manufacturer\":");
            push_manufacturer(out, h.manufacturer.letters());
            out.push_str(",\"version\":");
            text::push_u64(out, u64::from(h.version));
            out.push(',');
            push_medium(out, "medium", h.medium);
            out.push_str(",\"access_number\":");
            text::push_u64(out, u64::from(h.access_number));
            out.push(',');
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
            out.push_str("{\"type\":\"short\",\"access_number\":");
            text::push_u64(out, u64::from(h.access_number));
            out.push(',');
            push_status(out, h.status);
            out.push_str(",\"signature\":\"");
            hex::push_upper(out, &h.signature.to_be_bytes());
            out.push_str("\"}");
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
            (Some(v), Some((_, _, e))) => {
                text::push_decimal(out, Decimal::new(i128::from(v), e.into()))
            }
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

/// The part of a record's JSON that its DIF, DIFEs, VIF and VIFEs fix (see
/// [`super::shapes`]), and what its value needs to know from them.
struct Shape {
    /// From `,"dif":` to `,"value":`, then from the VIFE descriptions to the closing brace.
    text: String,
    /// Where the second part starts.
    tail: usize,
    time_point: bool,
    scale: Option<Scale>,
}

impl Shape {
    /// The constant text of a data record.
    fn new(r: &Record<'_>) -> Shape {
        let mut out = String::with_capacity(160);
        push_dib(&mut out, r);
        out.push_str(",\"vif\":\"");
        if let Some(vif) = r.vif {
            hex::push_upper(&mut out, &[vif]);
        }
        hex::push_upper(&mut out, r.vifes);
        out.push_str("\",\"storage\":");
        text::push_u64(&mut out, r.storage);
        out.push_str(",\"tariff\":");
        text::push_u64(&mut out, u64::from(r.tariff));
        out.push_str(",\"subunit\":");
        text::push_u64(&mut out, u64::from(r.subunit));
        out.push_str(",\"function\":\"");
        out.push_str(r.function.name());
        out.push('"');
        let vi = r.value_information();
        out.push_str(",\"quantity\":");
        match vi {
            Some(v) => push_str(&mut out, v.description.quantity),
            None => out.push_str("null"),
        }
        out.push_str(",\"unit\":");
        let unit = vi.map(|v| v.scale().unit).unwrap_or(Unit::None);
        if !r.plain_text.is_empty() {
            push_meter_text(&mut out, r.plain_text);
        } else {
            push_str(&mut out, unit.symbol());
        }
        out.push_str(",\"value\":");
        let tail = out.len();
        if let Some(v) = vi {
            let mut first = true;
            for c in v.combinable.iter().map(|&b| Combinable::from_code(b)) {
                out.push_str(if first { ",\"vife\":[" } else { "," });
                first = false;
                push_str(&mut out, &c.describe());
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
                push_str(&mut out, err.text());
            }
            if !v.manufacturer_vifes.is_empty() {
                out.push_str(",\"manufacturer_vife\":");
                push_hex(&mut out, v.manufacturer_vifes);
            }
            if v.description.is_reserved() {
                out.push_str(",\"reserved_vif\":true");
            }
        }
        out.push('}');
        Shape {
            text: out,
            tail,
            time_point: vi.is_some_and(|v| v.is_time_point()),
            scale: vi.map(|v| v.scale()),
        }
    }
}

/// `,"dif":"…"` and, when there are DIFEs, `,"dife":"…"`.
fn push_dib(out: &mut String, r: &Record<'_>) {
    out.push_str(",\"dif\":");
    push_hex_byte(out, r.dif());
    if !r.difes().is_empty() {
        out.push_str(",\"dife\":");
        push_hex(out, r.difes());
    }
}

/// The records of a variable data structure, with this thread's cache of record shapes when
/// it is available (it is not while the thread is being torn down).
fn render_records(records: &[Record<'_>], out: &mut String) {
    thread_local! {
        static SHAPES: RefCell<ShapeCache<Shape>> = const { RefCell::new(ShapeCache::new()) };
    }
    let mut done = false;
    let _ = SHAPES.try_with(|cell| {
        if let Ok(mut shapes) = cell.try_borrow_mut() {
            for (i, r) in records.iter().enumerate() {
                render_record(i, r, Some(&mut shapes), out);
            }
            done = true;
        }
    });
    if !done {
        for (i, r) in records.iter().enumerate() {
            render_record(i, r, None, out);
        }
    }
}

fn render_record(
    index: usize,
    r: &Record<'_>,
    shapes: Option<&mut ShapeCache<Shape>>,
    out: &mut String,
) {
    out.push_str(if index == 0 {
        "{\"index\":"
    } else {
        ",{\"index\":"
    });
    text::push_u64(out, index as u64);
    out.push_str(",\"offset\":");
    text::push_u64(out, r.offset as u64);
    match r.kind {
        RecordKind::Data => {}
        RecordKind::ManufacturerData | RecordKind::MoreRecordsFollow => {
            push_dib(out, r);
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
            push_dib(out, r);
            let _ = write!(out, ",\"type\":\"special_function_{dif:02X}\",\"data\":");
            push_hex(out, r.data);
            out.push('}');
            return;
        }
    }
    let made;
    let shape = match (shapes, ShapeKey::of(r)) {
        (Some(shapes), Some(key)) => shapes.get_or_make(key, || Shape::new(r)),
        _ => {
            made = Shape::new(r);
            &made
        }
    };
    let (head, tail) = shape.text.split_at(shape.tail);
    out.push_str(head);
    let raw = r.raw_value_as(shape.time_point);
    let value = Record::value_scaled(raw, shape.scale);
    match value {
        Value::None => out.push_str("null"),
        Value::Decimal(d) => text::push_decimal(out, d),
        Value::Float(f) => push_float(out, f),
        Value::InvalidBcd(d) => push_str(out, d.as_str()),
        Value::DateTime(t) => push_datetime(out, &t),
        Value::Text(t) => push_meter_text(out, t),
        Value::Bytes(b) => push_hex(out, b),
    }
    out.push_str(",\"raw\":");
    match raw {
        RawValue::None => out.push_str("null"),
        RawValue::Integer(i) => text::push_i64(out, i),
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
    out.push_str(tail);
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn floats_print_as_rust_prints_them() {
        let values = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            35.0,
            21.536_703_109_741_21,
            0.1,
            1e14,
            1e15,
            1e16,
            -1e15,
            1e-7,
            0.5,
            2.5e-3,
            123_456.0,
            f64::MAX,
            f64::MIN_POSITIVE,
            9_007_199_254_740_993.0,
        ];
        for f in values {
            let mut s = String::new();
            push_float(&mut s, f);
            assert_eq!(s, f.to_string(), "{f:?}");
        }
        for f in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut s = String::new();
            push_float(&mut s, f);
            assert_eq!(s, "null");
        }
    }

    #[test]
    fn dates_print_as_their_display() {
        for kind in [
            DateTimeKind::Date,
            DateTimeKind::DateTime,
            DateTimeKind::DateTimeSeconds,
            DateTimeKind::Time,
        ] {
            for (year, month, day, hour, minute, second) in [
                (2026, 12, 5, 8, 3, 59),
                (1999, 1, 1, 0, 0, 0),
                (2127, 15, 31, 31, 63, 63),
                (0, 0, 0, 0, 0, 0),
                (65_535, 255, 255, 255, 255, 255),
            ] {
                let t = MeterDateTime {
                    kind,
                    year,
                    month,
                    day,
                    hour,
                    minute,
                    second,
                    invalid: false,
                    summer_time: false,
                };
                let mut s = String::new();
                push_datetime(&mut s, &t);
                assert_eq!(s, format!("\"{t}\""));
            }
        }
    }

    #[test]
    fn manufacturer_letters_are_escaped_like_any_string() {
        use crate::wire::manufacturer::Manufacturer;
        // KAM, then code 28 (a backslash) in the middle, and the highest code (31, `_`).
        for code in [0x2C2D, 28 << 10 | 28 << 5 | 1, 0x7FFF, 0] {
            let letters = Manufacturer(code).letters();
            let mut s = String::new();
            push_manufacturer(&mut s, letters);
            let mut want = String::new();
            push_str(&mut want, std::str::from_utf8(&letters).unwrap());
            assert_eq!(s, want);
        }
    }

    #[test]
    fn records_from_the_shape_cache_read_as_freshly_rendered_ones() {
        // Corpus frame `EDC`: shapes that repeat, DIFEs, plain-text units, a date, a special
        // function (0x0F) at the end.
        let bytes = hex::decode(
            "68 AE AE 68 28 01 72 95 08 12 11 83 14 02 04 17 00 00 00 84 00 86 3B 23 00 00 00 84 00 86 3C D1 01 00 00 84 40 86 3B 00 00 00 00 84 40 86 3C 00 00 00 00 85 00 5B 2B 4B AC 41 85 00 5F 20 D7 AC 41 85 40 5B 00 00 B8 42 85 40 5F 00 00 B8 42 85 00 3B 84 00 35 3F 85 40 3B 00 00 00 00 95 00 3B 95 CF B2 43 95 40 3B 00 00 00 00 85 00 2B 00 00 00 00 85 40 2B 00 00 00 00 95 00 2B D3 9F 90 46 95 40 2B 00 00 00 00 04 6D 19 0F 8A 17 84 00 7C 01 43 F3 0D 00 00 84 40 7C 01 43 9D 01 00 00 84 00 7C 01 63 01 00 00 00 84 40 7C 01 63 01 00 00 00 0F 2F 16",
        )
        .unwrap();
        let t = decode_wired(&bytes).unwrap();
        let mut fresh = String::new();
        for (i, r) in t.records.iter().enumerate() {
            render_record(i, r, None, &mut fresh);
        }
        // The first rendering fills the cache, the second reads from it.
        for _ in 0..2 {
            let mut cached = String::new();
            render_records(&t.records, &mut cached);
            assert_eq!(cached, fresh);
        }
        assert!(
            fresh.contains("{\"index\":17,\"offset\":141,\"dif\":\"84\",\"dife\":\"00\",\"vif\":\"7C\",\"storage\":0,\"tariff\":0,\"subunit\":0,\"function\":\"instantaneous\",\"quantity\":\"plain_text_unit\",\"unit\":\"C\",\"value\":3571,\"raw\":3571}"),
            "{fresh}"
        );
    }

    #[test]
    fn escapes_strings() {
        let mut s = String::new();
        push_str(&mut s, "a\"b\\c\n\u{1}");
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
