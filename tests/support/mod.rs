//! Helpers shared by the robustness tests (included with `mod support;`).

use std::fmt::Write as _;

use meterbridge::wire::records::{Record, Value};

/// Calls every accessor of a decoded record and formats what it returns, so a panic or an
/// inconsistent view anywhere in the record API shows up under random input.
pub fn exercise_record(r: &Record<'_>, out: &mut String) {
    out.clear();
    let _ = write!(out, "{:?} {:?}", r.raw_value(), r.value_information());
    match r.value() {
        Value::Decimal(d) => {
            let _ = write!(out, " {d} {}", d.to_f64());
        }
        Value::InvalidBcd(digits) => {
            let _ = write!(out, " {digits}");
        }
        Value::DateTime(time) => {
            let _ = write!(out, " {time}");
        }
        other => {
            let _ = write!(out, " {other:?}");
        }
    }
    if let Some(scale) = r.scale() {
        let _ = write!(out, " {} {scale:?}", scale.unit);
    }
    for c in r.combinables() {
        out.push_str(&c.describe());
    }
    let _ = (r.dif(), r.difes(), r.vib_bytes().count(), r.is_time_point());
    out.extend(r.plain_text_unit());
}
