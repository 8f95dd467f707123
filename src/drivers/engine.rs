//! Applying a driver to a decoded telegram: match records, scale them to the field's unit,
//! look up status texts, and keep the last value of every field per meter.

use std::fmt::Write as _;

use super::formula::Expr;
use super::hooks::KeyRefusal;
use super::model::{DriverFile, Field, Lookup, Match, NumberRange, Quantity};
use super::{DriverError, Mvt};
use crate::telegram::wireless::Scrambling;
use crate::telegram::{Link, Telegram};
use crate::wire::application::{Application, Header};
use crate::wire::datetime::{DateTimeKind, MeterDateTime};
use crate::wire::records::{DataField, Function, RawValue, Record, RecordKind, Value};
use crate::wire::vif::{Combinable, Unit};

/// A loaded, checked driver.
#[derive(Debug, Clone)]
pub struct Driver {
    /// The driver file. For a built-in driver its `tests` are empty: [`Driver::tests`] reads
    /// them from the binary when asked.
    pub file: DriverFile,
    pub detect: Vec<Mvt>,
    fields: Vec<CompiledField>,
    hook: Option<&'static super::hooks::Hook>,
    /// A built-in driver's packed form, where its test cases stay until asked for.
    built_in_tests: Option<&'static super::built_in::BuiltIn>,
}

#[derive(Debug, Clone)]
struct CompiledField {
    /// JSON key: name plus unit suffix.
    key: std::sync::Arc<str>,
    /// Exact DIF..VIF keys; a record matches any of them.
    difvif: Option<Vec<Vec<u8>>>,
    measurement: Option<Function>,
    combinable: CombinableRule,
    /// Multiplier from the record's base unit to the display unit (`None`: no unit to check).
    units: &'static [(Unit, f64)],
    formula: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq)]
enum CombinableRule {
    /// The record carries no combinable VIFE (a manufacturer VIFE 0x7F is allowed).
    None,
    /// No VIFE at all after the VIF, not even a manufacturer one.
    Bare,
    /// Any combinable VIFEs.
    Any,
    /// Exactly these VIFE codes (extension bit ignored), in any order.
    Exactly(Vec<u8>),
}

/// A reading's value.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadingValue {
    Number(f64),
    Text(String),
    /// The meter marked the value invalid (a date with the IV bit or `FF FF`), or a formula's
    /// input is missing: printed as `null`, as wmbusmeters does.
    Null,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Shared with the driver's field: every telegram's readings carry their keys without
    /// copying them.
    pub key: std::sync::Arc<str>,
    pub value: ReadingValue,
}

/// Display units per quantity: (unit name, record base unit, factor from base to display).
fn unit_table(q: Quantity, unit: &str) -> Option<&'static [(Unit, f64)]> {
    use Quantity as Q;
    Some(match (q, unit) {
        (Q::Volume, "m3") => &[(Unit::CubicMetre, 1.0)],
        (Q::Volume, "l") => &[(Unit::CubicMetre, 1000.0)],
        (Q::Energy, "kwh") => &[(Unit::Wh, 1e-3), (Unit::J, 1.0 / 3.6e6)],
        (Q::Energy, "mwh") => &[(Unit::Wh, 1e-6), (Unit::J, 1.0 / 3.6e9)],
        (Q::Energy, "wh") => &[(Unit::Wh, 1.0), (Unit::J, 1.0 / 3600.0)],
        (Q::Energy, "gj") => &[(Unit::J, 1e-9), (Unit::Wh, 3.6e-6)],
        (Q::Energy, "mj") => &[(Unit::J, 1e-6), (Unit::Wh, 3.6e-3)],
        (Q::Power, "kw") => &[(Unit::Watt, 1e-3), (Unit::JoulePerHour, 1.0 / 3.6e6)],
        (Q::Power, "w") => &[(Unit::Watt, 1.0), (Unit::JoulePerHour, 1.0 / 3600.0)],
        (Q::Flow, "m3h") => &[(Unit::CubicMetrePerHour, 1.0)],
        (Q::Flow, "lh") => &[(Unit::CubicMetrePerHour, 1000.0)],
        (Q::Temperature, "c") => &[(Unit::Celsius, 1.0), (Unit::Kelvin, 1.0)],
        (Q::Temperature, "k") => &[(Unit::Kelvin, 1.0)],
        (Q::Temperature, "f") => &[(Unit::Fahrenheit, 1.0)],
        (Q::Pressure, "bar") => &[(Unit::Bar, 1.0)],
        (Q::Hca, "hca") => &[(Unit::HcaUnits, 1.0), (Unit::None, 1.0)],
        (Q::Time, "s") => &[(Unit::Second, 1.0)],
        (Q::Time, "min") => &[(Unit::Second, 1.0 / 60.0)],
        (Q::Time, "h") => &[(Unit::Second, 1.0 / 3600.0)],
        (Q::Time, "d") => &[(Unit::Second, 1.0 / 86400.0), (Unit::Day, 1.0)],
        (Q::Time, "month") => &[(Unit::Month, 1.0)],
        (Q::Time, "y") => &[(Unit::Year, 1.0), (Unit::Second, 1.0 / 31_536_000.0)],
        (Q::Voltage, "v") => &[(Unit::Volt, 1.0)],
        (Q::Current, "a") => &[(Unit::Ampere, 1.0)],
        (Q::Frequency, "hz") => &[(Unit::Hertz, 1.0)],
        (Q::RelativeHumidity, "rh") => &[(Unit::Percent, 1.0)],
        (Q::Mass, "kg") => &[(Unit::Kilogram, 1.0)],
        (Q::Mass, "t") => &[(Unit::Kilogram, 1e-3)],
        (Q::ApparentEnergy, "kvah") => &[(Unit::VoltAmpereHour, 1e-3)],
        (Q::ReactiveEnergy, "kvarh") => &[(Unit::VarHour, 1e-3)],
        (Q::ApparentPower, "kva") => &[(Unit::VoltAmpere, 1e-3)],
        (Q::ReactivePower, "kvar") => &[(Unit::Var, 1e-3)],
        (Q::Angle, "deg") => &[(Unit::Degree, 1.0)],
        (Q::Counter | Q::Dimensionless, _) => &[],
        (Q::Datetime | Q::Date | Q::Text, _) => &[],
        _ => return None,
    })
}

fn default_unit(q: Quantity) -> &'static str {
    use Quantity as Q;
    match q {
        Q::Volume => "m3",
        Q::Energy => "kwh",
        Q::Power => "kw",
        Q::Flow => "m3h",
        Q::Temperature => "c",
        Q::Pressure => "bar",
        Q::Hca => "hca",
        Q::Time => "h",
        Q::Voltage => "v",
        Q::Current => "a",
        Q::Frequency => "hz",
        Q::RelativeHumidity => "rh",
        Q::Mass => "kg",
        Q::ApparentEnergy => "kvah",
        Q::ReactiveEnergy => "kvarh",
        Q::ApparentPower => "kva",
        Q::ReactivePower => "kvar",
        Q::Angle => "deg",
        Q::Counter => "counter",
        Q::Dimensionless | Q::Datetime | Q::Date | Q::Text => "",
    }
}

/// Quantity names the VIF tables give (`vif_range` values).
const VIF_RANGES: &[&str] = &[
    "energy",
    "volume",
    "mass",
    "on_time",
    "operating_time",
    "power",
    "volume_flow",
    "mass_flow",
    "flow_temperature",
    "return_temperature",
    "temperature_difference",
    "external_temperature",
    "pressure",
    "date",
    "date_time",
    "hca_units",
    "averaging_duration",
    "actuality_duration",
    "fabrication_number",
    "enhanced_identification",
    "bus_address",
    "manufacturer_specific",
    "credit",
    "debit",
    "access_number",
    "medium",
    "manufacturer",
    "parameter_set_id",
    "model_version",
    "hardware_version",
    "firmware_version",
    "software_version",
    "customer_location",
    "customer",
    "error_flags",
    "error_mask",
    "digital_output",
    "digital_input",
    "storage_interval",
    "duration_since_last_readout",
    "tariff_start",
    "tariff_duration",
    "tariff_period",
    "dimensionless",
    "voltage",
    "current",
    "reset_counter",
    "cumulation_counter",
    "control_signal",
    "day_of_week",
    "week_number",
    "day_change_time_point",
    "special_supplier_information",
    "duration_since_last_cumulation",
    "battery_operating_time",
    "battery_change",
    "rf_level",
    "remaining_battery_life",
    "reactive_energy",
    "apparent_energy",
    "reactive_power",
    "apparent_power",
    "relative_humidity",
    "frequency",
    "temperature_limit",
    "cumulative_max_power",
    "phase_voltage_voltage",
    "phase_voltage_current",
    "plain_text_unit",
    "time_point_second",
    "transmission_period",
];

fn invalid(file: &str, message: String) -> DriverError {
    DriverError::Invalid {
        file: file.to_string(),
        message,
    }
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    crate::wire::hex::decode(s).ok()
}

/// Events aliases may replay in one driver file. The library's default (1,000,000) let a
/// 6 KB file whose `tests` alias one test case of 1,000 telegrams 99 times replay 100,000
/// events, and a 16 KB one hundreds of thousands. No driver file uses aliases at all.
const MAX_REPLAYED_ALIAS_EVENTS: usize = 50_000;

impl Driver {
    pub fn from_yaml(file: &str, text: &str) -> Result<Driver, DriverError> {
        let options = serde_saphyr::options! {
            alias_limits: serde_saphyr::alias_limits! {
                max_total_replayed_events: MAX_REPLAYED_ALIAS_EVENTS,
            },
        };
        let parsed: DriverFile =
            serde_saphyr::from_str_with_options(text, options).map_err(|e| DriverError::Parse {
                file: file.to_string(),
                message: e.to_string(),
            })?;
        Driver::compile(file, parsed)
    }

    /// Checks a parsed driver file and prepares its fields (built-in drivers come here from
    /// their packed form, without YAML).
    pub(crate) fn compile(file: &str, d: DriverFile) -> Result<Driver, DriverError> {
        let mut detect = Vec::new();
        for m in &d.detect {
            detect.push(Mvt::parse(m).ok_or_else(|| {
                invalid(
                    file,
                    format!(
                        "detect entry {m:?} is not MFCT,version,type (hex or *), e.g. KAM,1b,16"
                    ),
                )
            })?);
        }
        for (key, modes) in [
            ("plain_security_modes", &d.plain_security_modes),
            ("scrambled_security_modes", &d.scrambled_security_modes),
        ] {
            if let Some(m) = modes.iter().find(|m| !(16..=31).contains(*m)) {
                // Modes 0-15 are the standard's: their meaning is fixed, no driver redefines it.
                return Err(invalid(
                    file,
                    format!("{key}: {m} is not a manufacturer-specific mode (16-31)"),
                ));
            }
        }
        match (&d.scrambling, d.scrambled_security_modes.is_empty()) {
            (None, false) => {
                return Err(invalid(
                    file,
                    format!(
                        "scrambled_security_modes needs `scrambling:`, one of {:?}",
                        Scrambling::NAMES
                    ),
                ))
            }
            (Some(_), true) => {
                return Err(invalid(
                    file,
                    "scrambling: is set but scrambled_security_modes lists no mode".to_string(),
                ))
            }
            (Some(name), false) if Scrambling::from_name(name).is_none() => {
                return Err(invalid(
                    file,
                    format!("scrambling: {name:?} is not one of {:?}", Scrambling::NAMES),
                ))
            }
            _ => {}
        }
        let hook = match &d.decoder {
            Some(name) => Some(super::hooks::find(name).ok_or_else(|| {
                invalid(
                    file,
                    format!("decoder {name:?} is not one of {:?}", super::hooks::names()),
                )
            })?),
            None => None,
        };
        // Kept for as long as the driver is in use: no slack from growing.
        let mut fields = Vec::with_capacity(d.fields.len());
        for f in &d.fields {
            let where_ = format!("field {:?}", f.name);
            if let Some(from) = &f.from {
                match hook {
                    Some(h) if h.values.contains(&from.as_str()) => {}
                    Some(h) => {
                        return Err(invalid(
                            file,
                            format!(
                                "{where_}: decoder {:?} makes no value {from:?} (it makes {:?})",
                                h.name, h.values
                            ),
                        ))
                    }
                    None => {
                        return Err(invalid(
                            file,
                            format!("{where_}: `from` needs a `decoder` at the top of the file"),
                        ))
                    }
                }
            }
            let unit = f
                .unit
                .clone()
                .unwrap_or_else(|| default_unit(f.quantity).to_string());
            let units = unit_table(f.quantity, &unit).ok_or_else(|| {
                invalid(
                    file,
                    format!(
                        "{where_}: unit {unit:?} does not fit quantity {:?}",
                        f.quantity
                    ),
                )
            })?;
            let m = f.matcher.clone().unwrap_or_default();
            let difvif = match &m.difvif {
                Some(first) => Some(
                    std::iter::once(first)
                        .chain(&m.difvif_or)
                        .map(|h| {
                            parse_hex(h).ok_or_else(|| {
                                invalid(file, format!("{where_}: difvif {h:?} is not hex"))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                None => None,
            };
            let measurement = match m.measurement.as_deref() {
                None | Some("instantaneous") => Some(Function::Instantaneous),
                Some("maximum") => Some(Function::Maximum),
                Some("minimum") => Some(Function::Minimum),
                Some("error") => Some(Function::DuringError),
                Some("any") => None,
                Some(other) => {
                    return Err(invalid(
                        file,
                        format!("{where_}: measurement {other:?} is not instantaneous, maximum, minimum, error or any"),
                    ))
                }
            };
            if let Some(r) = &m.vif_range {
                if !VIF_RANGES.contains(&r.as_str()) {
                    return Err(invalid(
                        file,
                        format!("{where_}: vif_range {r:?} is not a quantity of the VIF tables (e.g. volume, energy, flow_temperature)"),
                    ));
                }
            }
            let formula = match &f.formula {
                Some(text) => {
                    Some(Expr::parse(text).map_err(|e| invalid(file, format!("{where_}: {e}")))?)
                }
                None => None,
            };
            if formula.is_none()
                && f.date_shift.is_none()
                && f.from.is_none()
                && m.difvif.is_none()
                && m.vif_range.is_none()
                && f.lookup.is_none()
                && !f.has("status")
            {
                return Err(invalid(
                    file,
                    format!("{where_}: a match needs difvif or vif_range"),
                ));
            }
            let combinable = match m.combinable.as_slice() {
                [] => CombinableRule::None,
                [a] if a == "any" => CombinableRule::Any,
                [a] if a == "none" => CombinableRule::Bare,
                list => CombinableRule::Exactly(
                    list.iter()
                        .map(|c| {
                            u8::from_str_radix(c.trim_start_matches("0x"), 16)
                                .map(|b| b & 0x7F)
                                .map_err(|_| {
                                    invalid(
                                        file,
                                        format!("{where_}: combinable {c:?} is not a hex byte"),
                                    )
                                })
                        })
                        .collect::<Result<_, _>>()?,
                ),
            };
            if f.profile == Some(0) {
                return Err(invalid(
                    file,
                    format!("{where_}: profile counts from 1 (the first element)"),
                ));
            }
            if (f.profile.is_some() || f.null_value.is_some())
                && matches!(
                    f.quantity,
                    Quantity::Text | Quantity::Date | Quantity::Datetime
                )
            {
                return Err(invalid(
                    file,
                    format!(
                        "{where_}: profile and null_value are for numbers, not {:?}",
                        f.quantity
                    ),
                ));
            }
            if let Some(tf) = &f.text_format {
                if !["hex", "wire", "digits", "ascii"].contains(&tf.as_str()) {
                    return Err(invalid(
                        file,
                        format!("{where_}: text_format {tf:?} is not hex, wire, digits or ascii"),
                    ));
                }
            }
            if let Some(l) = &f.lookup {
                if l.kind != "bits" && l.kind != "index" {
                    return Err(invalid(
                        file,
                        format!("{where_}: lookup type {:?} is not bits or index", l.kind),
                    ));
                }
            }
            if let Some(ha) = &f.ha {
                const STATE: &[&str] = &["measurement", "total", "total_increasing", "none"];
                if !STATE.contains(&ha.state_class.as_str()) {
                    return Err(invalid(
                        file,
                        format!("{where_}: state_class {:?} is not measurement, total, total_increasing or none", ha.state_class),
                    ));
                }
            }
            let key = if unit.is_empty() {
                f.name.clone()
            } else {
                format!("{}_{}", f.name, unit)
            };
            fields.push(CompiledField {
                key: key.into(),
                difvif,
                measurement,
                combinable,
                units,
                formula,
            });
        }
        // Formulas and date shifts may only name fields of this driver.
        let keys: Vec<&str> = fields.iter().map(|c| &*c.key).collect();
        for f in &d.fields {
            if let Some(shift) = &f.date_shift {
                let when_ok = shift
                    .when
                    .as_ref()
                    .is_none_or(|w| keys.contains(&w.as_str()));
                if !keys.contains(&shift.from.as_str()) || !when_ok {
                    return Err(invalid(
                        file,
                        format!("field {:?}: date_shift names {:?} or {:?}, which is no field key of this driver", f.name, shift.from, shift.when),
                    ));
                }
            }
        }
        for c in &fields {
            if let Some(e) = &c.formula {
                let mut names = Vec::new();
                e.fields(&mut names);
                if let Some(unknown) = names.iter().find(|n| !keys.contains(&n.as_str())) {
                    return Err(invalid(
                        file,
                        format!("field {:?}: formula names {unknown:?}, which is no field key of this driver", c.key),
                    ));
                }
            }
        }
        Ok(Driver {
            file: d,
            detect,
            fields,
            hook,
            built_in_tests: None,
        })
    }

    /// A built-in driver built without its test cases, which stay in the binary.
    pub(crate) fn with_built_in_tests(self, packed: &'static super::built_in::BuiltIn) -> Driver {
        Driver {
            built_in_tests: Some(packed),
            ..self
        }
    }

    /// The driver's test cases: telegrams with their keys and expected readings (the
    /// simulators send them; `drivers NAME` counts them).
    pub fn tests(&self) -> std::borrow::Cow<'_, [super::model::TestCase]> {
        match self.built_in_tests {
            // The tests read back every built-in driver's cases, so this is never empty
            // for a driver that has some.
            Some(packed) => packed.tests().unwrap_or_default().into(),
            None => self.file.tests.as_slice().into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.file.name
    }

    /// JSON keys of the fields, in declaration order (hidden ones included).
    pub fn field_keys(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| &*f.key)
    }

    /// Decodes the driver's fields from a telegram into the meter's state (no key: a payload
    /// its manufacturer encrypts is refused, the state left as it was).
    pub fn apply(&self, t: &Telegram<'_>, state: &mut MeterState) -> Result<(), KeyRefusal> {
        self.apply_with_key(t, state, None)
    }

    /// Like [`Self::apply`], with the meter's key for decoders of payloads a manufacturer
    /// encrypts its own way. When such a decoder cannot read the payload with the key (or
    /// without one), nothing of the telegram is taken: its records, if any, are not the
    /// readings a user would want next to a stale decrypted total.
    pub fn apply_with_key(
        &self,
        t: &Telegram<'_>,
        state: &mut MeterState,
        key: Option<&crate::security::Key>,
    ) -> Result<(), KeyRefusal> {
        let mut hook_values = super::hooks::HookValues::with_key(key.cloned());
        if let Some(h) = self.hook {
            (h.decode)(t, &mut hook_values);
        }
        if let Some(refusal) = hook_values.refusal() {
            return Err(refusal);
        }
        if state.values.len() != self.fields.len() {
            state.values = vec![None; self.fields.len()];
        }
        if state.no_value.len() != self.fields.len() {
            state.no_value = vec![false; self.fields.len()];
        }
        let tpl_status = tpl_status(t);
        let mut injected: Vec<String> = Vec::new();
        let mut status_index = None;
        let mut status_texts: Vec<String> = Vec::new();
        let mut status_matched = false;
        for (i, (f, c)) in self.file.fields.iter().zip(&self.fields).enumerate() {
            if c.formula.is_some() || f.date_shift.is_some() {
                continue;
            }
            if let Some(from) = &f.from {
                use super::hooks::HookValue;
                if let Some(v) = hook_values.get(from) {
                    state.values[i] = Some(match v {
                        HookValue::Number(n) => ReadingValue::Number(n * f.scale.unwrap_or(1.0)),
                        HookValue::Text(s) => ReadingValue::Text(s.clone()),
                        HookValue::Null => ReadingValue::Null,
                    });
                    state.no_value[i] = hook_values.is_no_value(from);
                    continue;
                }
                // No value from the decoder: a `match` (if any) reads the records instead, so
                // one field serves both a manufacturer block and ordinary telegrams.
                if f.matcher.is_none() {
                    continue;
                }
            }
            let record = find_record(t, f, c);
            if f.has("status") {
                status_index = Some(i);
                if let Some(r) = record {
                    status_matched = true;
                    if let (Some(l), Some(raw)) = (&f.lookup, raw_integer(r)) {
                        status_texts.extend(lookup_texts(l, raw));
                    }
                }
                continue;
            }
            let Some(r) = record else { continue };
            let value = match f.quantity {
                Quantity::Text => text_value(f, r),
                Quantity::Datetime | Quantity::Date => match r.value() {
                    // wmbusmeters prints an unset date (all bits 1) as null; it ignores the
                    // IV bit, so do we here (our telegram JSON still reports it).
                    Value::DateTime(_) if r.data.iter().all(|&b| b == 0xFF) => {
                        Some(ReadingValue::Null)
                    }
                    Value::DateTime(d) if f.precision.as_deref() == Some("second") => {
                        Some(ReadingValue::Text(format_datetime_seconds(&d)))
                    }
                    Value::DateTime(d) if f.has("calendar_date") => {
                        Some(ReadingValue::Text(format_datetime(&normalized(d))))
                    }
                    Value::DateTime(d) => Some(ReadingValue::Text(format_datetime(&d))),
                    _ => None,
                },
                _ => number_value(f, c, r).map(|v| {
                    if f.null_value.is_some_and(|n| same_number(n, v)) {
                        ReadingValue::Null
                    } else {
                        ReadingValue::Number(v)
                    }
                }),
            };
            if f.has("inject_into_status") {
                status_matched = true;
                if let (Some(l), Some(raw)) = (&f.lookup, raw_integer(r)) {
                    injected.extend(lookup_texts(l, raw));
                }
            }
            if value.is_some() {
                state.no_value[i] = match (&value, f.quantity) {
                    (Some(ReadingValue::Number(_)), _) => {
                        !f.unsigned && f.mask.is_none() && is_no_value_marker(r)
                    }
                    (Some(ReadingValue::Text(_)), Quantity::Date | Quantity::Datetime) => {
                        is_date_placeholder(r)
                    }
                    _ => false,
                };
                state.values[i] = value;
            }
        }
        // Formulas last, in declaration order, so one may use another's result.
        for i in 0..self.fields.len() {
            let Some(e) = &self.fields[i].formula else {
                continue;
            };
            let value = e.eval(&|name| {
                let j = self.fields.iter().position(|c| *c.key == *name)?;
                match state.values.get(j)? {
                    Some(ReadingValue::Number(v)) => Some(*v),
                    _ => None,
                }
            });
            let scale = self.file.fields[i].scale.unwrap_or(1.0);
            state.values[i] = Some(match value {
                Some(v) => ReadingValue::Number(v * scale),
                None => ReadingValue::Null,
            });
        }
        for i in 0..self.fields.len() {
            let Some(shift) = &self.file.fields[i].date_shift else {
                continue;
            };
            let Some(j) = self.fields.iter().position(|c| *c.key == *shift.from) else {
                continue;
            };
            if let Some(when) = &shift.when {
                let present = self
                    .fields
                    .iter()
                    .position(|c| *c.key == **when)
                    .is_some_and(|k| state.values[k].is_some());
                if !present {
                    continue;
                }
            }
            let date_only = self.file.fields[i].quantity == Quantity::Date;
            let shifted = match &state.values[j] {
                Some(ReadingValue::Text(t)) => shift_date(t, shift.months).map(|d| {
                    // A `date` field shifted from a date-time keeps the date part only.
                    ReadingValue::Text(if date_only {
                        d.chars().take(10).collect()
                    } else {
                        d
                    })
                }),
                _ => None,
            };
            if let Some(v) = shifted {
                state.values[i] = Some(v);
                // A date counted from a placeholder is no date either.
                state.no_value[i] = state.no_value[j];
            }
        }
        if let Some(i) = status_index {
            let f = &self.file.fields[i];
            if f.has("include_tpl_status") {
                if let Some(s) = tpl_status {
                    status_texts.extend(tpl_status_texts(s, self.file.tpl_status_bits.as_ref()));
                    status_matched = true;
                }
            }
            // Printed when something speaks to it (its record, the transport header's status
            // byte, an injecting field) or when the driver says `always`; `OK` when none of
            // them reports a problem.
            if status_matched || f.has("always") {
                status_texts.extend(injected);
                let mut seen = Vec::new();
                for t in status_texts {
                    if !t.is_empty() && t != "OK" && !seen.contains(&t) {
                        seen.push(t);
                    }
                }
                // wmbusmeters lists status texts in alphabetical order.
                seen.sort();
                let text = if seen.is_empty() {
                    "OK".to_string()
                } else {
                    seen.join(" ")
                };
                state.values[i] = Some(ReadingValue::Text(text));
            }
        }
        Ok(())
    }

    /// How much of a telegram this driver understands, for choosing between drivers that
    /// detect the same meter: the telegram's records its fields read (each counted once, so two
    /// drivers naming the same records differently tie), plus one for a manufacturer payload
    /// its decoder reads. `None` when its decoder refuses the telegram for want of a key.
    pub fn records_read(
        &self,
        t: &Telegram<'_>,
        key: Option<&crate::security::Key>,
    ) -> Option<usize> {
        let mut hook_values = super::hooks::HookValues::with_key(key.cloned());
        if let Some(h) = self.hook {
            (h.decode)(t, &mut hook_values);
        }
        if hook_values.refusal().is_some() {
            return None;
        }
        let mut offsets: Vec<usize> = self
            .file
            .fields
            .iter()
            .zip(&self.fields)
            .filter(|(f, c)| c.formula.is_none() && f.date_shift.is_none())
            .filter(|(f, c)| f.matcher.is_some() || c.difvif.is_some())
            .filter_map(|(f, c)| find_record(t, f, c).map(|r| r.offset))
            .collect();
        offsets.sort_unstable();
        offsets.dedup();
        Some(offsets.len() + usize::from(!hook_values.is_empty()))
    }

    /// The keys of the readings whose value is the standard's "no value" marker.
    pub fn no_value_keys(&self, state: &MeterState) -> Vec<String> {
        self.fields
            .iter()
            .zip(&state.no_value)
            .filter(|(_, marked)| **marked)
            .map(|(c, _)| c.key.to_string())
            .collect()
    }

    /// The readings of a meter's state, in declaration order, hidden fields left out.
    pub fn readings(&self, state: &MeterState) -> Vec<Reading> {
        self.file
            .fields
            .iter()
            .zip(&self.fields)
            .zip(&state.values)
            .filter(|((f, _), _)| !f.has("hide"))
            .filter_map(|((_, c), v)| {
                v.clone().map(|value| Reading {
                    key: c.key.clone(),
                    value,
                })
            })
            .collect()
    }
}

/// The last value of every field of one meter (wmbusmeters keeps them across telegrams).
#[derive(Debug, Clone, Default)]
pub struct MeterState {
    values: Vec<Option<ReadingValue>>,
    /// Per field: its value is the standard's "no value" marker (the most negative number of a
    /// binary integer's width). wmbusmeters prints it as a number, so our wmbusmeters output
    /// does too; the MQTT state leaves it out.
    no_value: Vec<bool>,
}

/// Whether a date record holds what meters send for "never" rather than a date: all bits 0
/// (which wmbusmeters' calendar arithmetic turns into 1999-11-30), or year bits 0, the year
/// 2000 (a smoke alarm's "no alarm yet" 2000-01-01, a set date never reached, a clock never
/// set). No meter that speaks these protocols was read in 2000, so no real date is lost.
fn is_date_placeholder(r: &Record<'_>) -> bool {
    if !r.data.is_empty() && r.data.iter().all(|&b| b == 0) {
        return true;
    }
    matches!(r.value(), Value::DateTime(d) if d.year == 2000)
}

/// Whether a record holds the standard's "no value" marker for its binary integer type: only the
/// sign bit set (0x80, 0x8000, …, 0x80000000 for a 32-bit integer), which meters send for a
/// history slot not yet filled or a value they could not measure.
fn is_no_value_marker(r: &Record<'_>) -> bool {
    let bits = match r.field {
        DataField::Int8 => 8,
        DataField::Int16 => 16,
        DataField::Int24 => 24,
        DataField::Int32 => 32,
        DataField::Int48 => 48,
        DataField::Int64 => 64,
        _ => return false,
    };
    matches!(r.raw_value(), RawValue::Integer(i) if i == i64::MIN >> (64 - bits))
}

fn tpl_status(t: &Telegram<'_>) -> Option<u8> {
    match &t.application {
        Application::Variable {
            header: Header::Long(h),
            ..
        } => Some(h.status.0),
        Application::Variable {
            header: Header::Short(h),
            ..
        } => Some(h.status.0),
        _ => match &t.link {
            Link::Wireless(l) => l.tpl.and_then(|t| match t.header {
                Header::Long(h) => Some(h.status.0),
                Header::Short(h) => Some(h.status.0),
                Header::None => None,
            }),
            Link::Wired(_) => None,
        },
    }
}

/// wmbusmeters' names for the standard status bits, plus the driver's names for the others.
fn tpl_status_texts(status: u8, extra: Option<&Lookup>) -> Vec<String> {
    let mut out = Vec::new();
    match status & 0x03 {
        1 => out.push("BUSY".to_string()),
        2 => out.push("ERROR".to_string()),
        3 => out.push("ALARM".to_string()),
        _ => {}
    }
    let named: u8 = extra
        .map(|l| l.map.keys().fold(0u8, |acc, &k| acc | (k as u8)))
        .unwrap_or(0);
    for (bit, name) in [
        (0x04u8, "POWER_LOW"),
        (0x08, "PERMANENT_ERROR"),
        (0x10, "TEMPORARY_ERROR"),
    ] {
        if status & bit != 0 && named & bit == 0 {
            out.push(name.to_string());
        }
    }
    // Bits 5-7 are the manufacturer's: named by the driver, else UNKNOWN_<hex>.
    let mut unnamed = status & 0xE0;
    if let Some(l) = extra {
        let mask = l.mask.unwrap_or(0xF8) as u8;
        for (&bit, name) in &l.map {
            if status & mask & (bit as u8) != 0 {
                out.push(name.clone());
            }
            unnamed &= !(bit as u8);
        }
    }
    if unnamed != 0 {
        out.push(format!("UNKNOWN_{unnamed:02X}"));
    }
    out
}

fn measurement_matches(c: &CompiledField, r: &Record<'_>) -> bool {
    c.measurement.is_none_or(|m| m == r.function)
}

fn find_record<'r, 'a>(
    t: &'r Telegram<'a>,
    f: &Field,
    c: &CompiledField,
) -> Option<&'r Record<'a>> {
    // Borrowed, not cloned: this runs for every field of every telegram (an empty `Match`
    // allocates nothing).
    let no_match = Match::default();
    let m = f.matcher.as_ref().unwrap_or(&no_match);
    let nth = m.nth.unwrap_or(1).max(1);
    t.records
        .iter()
        .filter(|r| r.kind == RecordKind::Data)
        .filter(|r| record_matches(m, c, r))
        .nth(nth - 1)
}

fn record_matches(m: &Match, c: &CompiledField, r: &Record<'_>) -> bool {
    if let Some(keys) = &c.difvif {
        return keys.iter().any(|key| {
            let mut bytes = r.dib.iter().copied().chain(r.vib_bytes());
            key.iter().all(|k| bytes.next() == Some(*k)) && bytes.next().is_none()
        });
    }
    let in_range =
        |range: Option<NumberRange>, v: u64| range.unwrap_or(NumberRange::One(0)).contains(v);
    if !measurement_matches(c, r)
        || !in_range(m.storage, r.storage)
        || !in_range(m.tariff, u64::from(r.tariff))
        || !in_range(m.subunit, u64::from(r.subunit))
    {
        return false;
    }
    let Some(vi) = r.value_information() else {
        return false;
    };
    if let Some(range) = &m.vif_range {
        if vi.description.quantity != range {
            return false;
        }
    }
    let codes = vi
        .combinable
        .iter()
        .map(|b| b & 0x7F)
        .filter(|&b| !matches!(Combinable::from_code(b), Combinable::ManufacturerSpecific));
    match &c.combinable {
        CombinableRule::Any => true,
        CombinableRule::Bare => vi.combinable.is_empty() && vi.manufacturer_vifes.is_empty(),
        CombinableRule::None => codes.count() == 0,
        CombinableRule::Exactly(want) => {
            let have: Vec<u8> = codes.collect();
            have.len() == want.len() && want.iter().all(|w| have.contains(w))
        }
    }
}

fn raw_integer(r: &Record<'_>) -> Option<u64> {
    match r.raw_value() {
        RawValue::Integer(i) => Some(i as u64),
        RawValue::Bytes(b) => {
            let mut v = 0u64;
            for (i, &byte) in b.iter().take(8).enumerate() {
                v |= u64::from(byte) << (8 * i);
            }
            Some(v)
        }
        _ => None,
    }
}

fn lookup_texts(l: &Lookup, raw: u64) -> Vec<String> {
    let mask = l.mask.unwrap_or(u64::MAX);
    let v = raw & mask;
    let name = l.name.as_deref().unwrap_or("FLAGS");
    let mut out = Vec::new();
    if l.kind == "index" {
        match l.map.get(&v) {
            Some(t) => out.push(t.clone()),
            None => out.push(format!("{name}_{v:X}")),
        }
        return out;
    }
    let mut unknown = v;
    for (&bit, text) in &l.map {
        if bit != 0 && v & bit == bit {
            out.push(text.clone());
            unknown &= !bit;
        }
    }
    if unknown != 0 {
        out.push(format!("{name}_{unknown:X}"));
    }
    // wmbusmeters lists bit texts in alphabetical order.
    out.sort();
    if out.is_empty() {
        if let Some(d) = &l.default {
            out.push(d.clone());
        }
    }
    out
}

/// Equal up to rounding (1e-12 relative): a `null_value` written in decimal against a scaled
/// register; tight enough that the neighbouring register value (one unit of the last digit of
/// a 32-bit register) still counts as a value.
fn same_number(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1e-300)
}

/// Element `n` (1-based) of a compact profile (EN 13757-3 annex F): a spacing-control byte
/// (increment mode in bits 7-6, spacing unit in bits 5-4, element data field in bits 3-0), a
/// spacing value, then the elements, signed little-endian integers. Only absolute elements
/// (increment mode 0) are read: increments need a rule for which end the base value is at.
fn profile_element(data: &[u8], n: usize) -> Option<i64> {
    let (&control, rest) = data.split_first()?;
    let elements = rest.get(1..)?;
    if control >> 6 != 0 {
        return None;
    }
    let size = match control & 0x0F {
        code @ 1..=4 => usize::from(code),
        6 => 6,
        7 => 8,
        _ => return None,
    };
    let at = n.checked_sub(1)?.checked_mul(size)?;
    let bytes = elements.get(at..at.checked_add(size)?)?;
    let mut v = 0i64;
    for &b in bytes.iter().rev() {
        v = (v << 8) | i64::from(b);
    }
    // Sign-extend from the element's width.
    let unused = 64 - 8 * size as u32;
    Some(if unused > 0 {
        (v << unused) >> unused
    } else {
        v
    })
}

fn number_value(f: &Field, c: &CompiledField, r: &Record<'_>) -> Option<f64> {
    let scale = f.scale.unwrap_or(1.0);
    if let Some(n) = f.profile {
        let raw = profile_element(r.data, n)?;
        let s = r.scale()?;
        let e = i32::from(s.exponent);
        // Divided rather than multiplied by a fraction so that 1 litre is exactly 0.001 m3.
        let v = if e >= 0 {
            raw as f64 * f64::from(s.factor) * 10f64.powi(e)
        } else {
            raw as f64 * f64::from(s.factor) / 10f64.powi(-e)
        };
        if c.units.is_empty() {
            return Some(v * scale);
        }
        return c
            .units
            .iter()
            .find(|(u, _)| *u == s.unit)
            .map(|(_, factor)| v * factor * scale);
    }
    if f.unsigned {
        if let RawValue::Integer(i) = r.raw_value() {
            let bits = 8 * r.data.len().min(8) as u32;
            let v = if bits < 64 && i < 0 {
                i + (1i64 << bits)
            } else {
                i
            };
            return Some(v as f64 * scale);
        }
    }
    if let Some(mask) = f.mask {
        return raw_integer(r).map(|raw| (raw & mask) as f64 * scale);
    }
    let v = match r.value() {
        Value::Decimal(d) => d.to_f64(),
        Value::Float(x) => x,
        _ => return None,
    };
    if c.units.is_empty() {
        return Some(v * scale);
    }
    let unit = r.scale().map(|s| s.unit).unwrap_or(Unit::None);
    c.units
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, factor)| v * factor * scale)
}

fn text_value(f: &Field, r: &Record<'_>) -> Option<ReadingValue> {
    if let Some(l) = &f.lookup {
        let texts = lookup_texts(l, raw_integer(r)?);
        return Some(ReadingValue::Text(texts.join(" ")));
    }
    match f.text_format.as_deref() {
        // Identifiers (versions, parameter sets) read as the number's hex digits, most
        // significant byte first: 02FD0F 9500 is "0095".
        Some("hex") => {
            let msb_first: Vec<u8> = r.data.iter().rev().copied().collect();
            return Some(ReadingValue::Text(crate::wire::hex::encode_upper(
                &msb_first,
            )));
        }
        // A number whose bytes are characters, most significant first: 02FD0F 4C2B is "+L".
        Some("ascii") => {
            let text: String = r.data.iter().rev().map(|&b| b as char).collect();
            return Some(ReadingValue::Text(text));
        }
        Some("wire") => {
            if let Value::Text(t) = r.value() {
                return Some(ReadingValue::Text(t.iter().map(|&b| b as char).collect()));
            }
        }
        Some("digits") => {
            if let RawValue::Integer(i) = r.raw_value() {
                let width = f.width.unwrap_or(2);
                return Some(ReadingValue::Text(format!("{i:0width$}")));
            }
        }
        _ => {}
    }
    let text = match r.value() {
        Value::Text(t) => t.iter().rev().map(|&b| b as char).collect(),
        Value::InvalidBcd(d) => d.as_str().to_string(),
        Value::DateTime(_) if r.data.iter().all(|&b| b == 0xFF) => String::new(),
        Value::DateTime(d) => format_datetime(&d),
        Value::Bytes(b) => crate::wire::hex::encode_upper(b),
        Value::Decimal(_) | Value::Float(_) => match (r.raw_value(), r.field) {
            // BCD keeps its leading zeros: a fabrication number is a string of digits.
            (RawValue::Integer(i), field) if field.is_bcd() => {
                let digits = 2 * field.size().unwrap_or(0);
                format!("{i:0digits$}")
            }
            (RawValue::Integer(i), DataField::VariableLength) => i.to_string(),
            (RawValue::Integer(i), _) => i.to_string(),
            (RawValue::Real(x), _) => x.to_string(),
            _ => return None,
        },
        Value::None => return None,
    };
    Some(ReadingValue::Text(text))
}

/// `2023-05-20 10:08:12` for date-times with seconds, else as [`format_datetime`].
pub fn format_datetime_seconds(d: &MeterDateTime) -> String {
    match d.kind {
        DateTimeKind::DateTimeSeconds => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            d.year, d.month, d.day, d.hour, d.minute, d.second
        ),
        _ => format_datetime(d),
    }
}

/// wmbusmeters' date formats: `2020-07-30 10:40`, `2021-03-31`.
pub fn format_datetime(d: &MeterDateTime) -> String {
    let mut s = String::new();
    match d.kind {
        DateTimeKind::Date => {
            let _ = write!(s, "{:04}-{:02}-{:02}", d.year, d.month, d.day);
        }
        DateTimeKind::DateTime => {
            let _ = write!(
                s,
                "{:04}-{:02}-{:02} {:02}:{:02}",
                d.year, d.month, d.day, d.hour, d.minute
            );
        }
        // wmbusmeters prints type I date-times to the minute as well.
        DateTimeKind::DateTimeSeconds => {
            let _ = write!(
                s,
                "{:04}-{:02}-{:02} {:02}:{:02}",
                d.year, d.month, d.day, d.hour, d.minute
            );
        }
        DateTimeKind::Time => {
            let _ = write!(s, "{:02}:{:02}:{:02}", d.hour, d.minute, d.second);
        }
    }
    s
}

/// Readings for a meter no driver knows: every data record, named from its quantity, with
/// storage, tariff and subunit when they are not 0, and the unit wmbusmeters would use.
pub fn generic_readings(t: &Telegram<'_>) -> Vec<Reading> {
    let mut out: Vec<Reading> = Vec::new();
    for r in t.records.iter().filter(|r| r.kind == RecordKind::Data) {
        let Some(vi) = r.value_information() else {
            continue;
        };
        let q = vi.description.quantity;
        if q == "manufacturer_specific" || q == "reserved" {
            continue;
        }
        let mut key = q.to_string();
        let function = match r.function {
            Function::Instantaneous => "",
            Function::Maximum => "max_",
            Function::Minimum => "min_",
            Function::DuringError => "error_",
        };
        key.insert_str(0, function);
        if r.storage != 0 {
            let _ = write!(key, "_storage_{}", r.storage);
        }
        if r.tariff != 0 {
            let _ = write!(key, "_tariff_{}", r.tariff);
        }
        if r.subunit != 0 {
            let _ = write!(key, "_subunit_{}", r.subunit);
        }
        // The unit suffix and factor to it, for numbers: a real (float) record carries its
        // unit in the VIF just like an integer one.
        let (suffix, factor) = match vi.scale().unit {
            Unit::CubicMetre => ("_m3", 1.0),
            Unit::Wh => ("_kwh", 1e-3),
            Unit::J => ("_mj", 1e-6),
            Unit::Watt => ("_kw", 1e-3),
            Unit::JoulePerHour => ("_kw", 1.0 / 3.6e6),
            Unit::CubicMetrePerHour => ("_m3h", 1.0),
            Unit::Celsius => ("_c", 1.0),
            Unit::Kelvin => ("_k", 1.0),
            Unit::Bar => ("_bar", 1.0),
            Unit::Volt => ("_v", 1.0),
            Unit::Ampere => ("_a", 1.0),
            Unit::Second => ("_s", 1.0),
            Unit::HcaUnits => ("_hca", 1.0),
            Unit::Hertz => ("_hz", 1.0),
            Unit::Percent => ("_rh", 1.0),
            _ => ("", 1.0),
        };
        let value = match r.value() {
            Value::Decimal(d) => {
                key.push_str(suffix);
                ReadingValue::Number(d.to_f64() * factor)
            }
            Value::Float(f) => {
                key.push_str(suffix);
                ReadingValue::Number(f * factor)
            }
            Value::DateTime(d) => ReadingValue::Text(format_datetime(&d)),
            Value::Text(t) => ReadingValue::Text(t.iter().rev().map(|&b| b as char).collect()),
            Value::InvalidBcd(d) => ReadingValue::Text(d.as_str().to_string()),
            Value::Bytes(b) => ReadingValue::Text(crate::wire::hex::encode_upper(b)),
            Value::None => continue,
        };
        // Keep the first record of a name, as drivers do.
        if !out.iter().any(|o| *o.key == *key) {
            out.push(Reading {
                key: key.into(),
                value,
            });
        }
    }
    out
}

/// Shifts a `YYYY-MM-DD[ …]` date by whole months, keeping month-end dates at month end.
fn shift_date(date: &str, months: i32) -> Option<String> {
    let y: i32 = date.get(0..4)?.parse().ok()?;
    let m: i32 = date.get(5..7)?.parse().ok()?;
    let d: u32 = date.get(8..10)?.parse().ok()?;
    if !(1..=12).contains(&m) {
        return None;
    }
    let days_in = |y: i32, m: i32| -> u32 {
        match m {
            2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    };
    let total = y * 12 + (m - 1) + months;
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) + 1);
    let day = if d >= days_in(y, m) {
        days_in(ny, nm)
    } else {
        d.min(days_in(ny, nm))
    };
    Some(format!(
        "{ny:04}-{nm:02}-{day:02}{}",
        date.get(10..).unwrap_or("")
    ))
}

/// A date with day or month 0 read the way a calendar (C's `mktime`, and so wmbusmeters) rolls
/// it over: month 0 is December of the year before, day 0 the last day of the month before. An
/// all-zero type G date thus reads 1999-11-30.
fn normalized(mut d: MeterDateTime) -> MeterDateTime {
    if d.month == 0 {
        d.month = 12;
        d.year = d.year.saturating_sub(1);
    }
    if d.day == 0 && d.month <= 12 {
        if d.month == 1 {
            d.month = 12;
            d.year = d.year.saturating_sub(1);
        } else {
            d.month -= 1;
        }
        let y = i32::from(d.year);
        d.day = match d.month {
            2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
    }
    d
}

#[cfg(test)]
mod tests {
    use super::shift_date;

    /// A driver whose `tests` alias one test case, holding `telegrams` telegrams, `copies` times.
    fn aliased_tests(telegrams: usize, copies: usize) -> String {
        let list = vec!["2A44"; telegrams].join(",");
        let mut doc = format!(
            "name: x\nmeter_type: water\ntests:\n  - &t {{name: a, id: \"1\", telegrams: [{list}], expected: {{}}}}\n"
        );
        doc.push_str(&"  - *t\n".repeat(copies));
        doc
    }

    #[test]
    fn aliases_in_a_driver_file_expand_within_the_limit() {
        let driver = super::Driver::from_yaml("f.yaml", &aliased_tests(10, 20)).unwrap();
        assert_eq!(driver.file.tests.len(), 21);
        assert!(driver.file.tests.iter().all(|t| t.telegrams.len() == 10));
        assert_eq!(driver.file.tests[20].telegrams[9], "2A44");
    }

    #[test]
    fn alias_amplification_in_a_driver_file_is_refused_quickly() {
        // Found with a hand-made input replayed through the driver_yaml fuzz target. 99 copies
        // of 1,000 telegrams replay 100,000 events from 6 KB: within the library's defaults
        // (which refuse 100 aliases or more of one anchor), over ours.
        let doc = aliased_tests(1000, 99);
        let started = std::time::Instant::now();
        let e = super::Driver::from_yaml("f.yaml", &doc).unwrap_err();
        assert!(e.to_string().contains("alias"), "{e}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn manufacturer_security_declarations_are_checked() {
        let load = |extra: &str| {
            super::Driver::from_yaml("m.yaml", &format!("name: m\nmeter_type: heat\n{extra}"))
                .map(|d| d.file.scrambled_security_modes.clone())
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            load("scrambled_security_modes: [21]\nscrambling: diehl_lfsr\n"),
            Ok(vec![21])
        );
        let e = load("scrambled_security_modes: [5]\nscrambling: diehl_lfsr\n").unwrap_err();
        assert!(
            e.contains("scrambled_security_modes: 5 is not a manufacturer-specific mode"),
            "{e}"
        );
        let e = load("plain_security_modes: [7]\n").unwrap_err();
        assert!(e.contains("plain_security_modes: 7 is not"), "{e}");
        let e = load("scrambled_security_modes: [21]\n").unwrap_err();
        assert!(
            e.contains("needs `scrambling:`, one of [\"diehl_lfsr\", \"bmeters_mask\"]"),
            "{e}"
        );
        let e = load("scrambled_security_modes: [21]\nscrambling: rot13\n").unwrap_err();
        assert!(e.contains("scrambling: \"rot13\" is not one of"), "{e}");
        let e = load("scrambling: diehl_lfsr\n").unwrap_err();
        assert!(e.contains("lists no mode"), "{e}");
    }

    #[test]
    fn zero_dates_roll_over_like_a_calendar() {
        use crate::wire::datetime::MeterDateTime;
        let d = super::normalized(MeterDateTime::type_g([0, 0]));
        assert_eq!(super::format_datetime(&d), "1999-11-30");
        let d = super::normalized(MeterDateTime::type_g([
            0x01 | (21 << 5 & 0xE0),
            0x03 | (21 >> 3) << 4,
        ]));
        assert_eq!(super::format_datetime(&d), "2021-03-01");
    }

    #[test]
    fn month_shifts_keep_month_ends() {
        assert_eq!(shift_date("2020-12-31", -1).as_deref(), Some("2020-11-30"));
        assert_eq!(shift_date("2020-03-31", -1).as_deref(), Some("2020-02-29"));
        assert_eq!(shift_date("2020-01-15", -2).as_deref(), Some("2019-11-15"));
        assert_eq!(shift_date("2021-02-28", 1).as_deref(), Some("2021-03-31"));
        assert_eq!(
            shift_date("2021-02-27 10:00", 1).as_deref(),
            Some("2021-03-27 10:00")
        );
        assert_eq!(shift_date("garbage", 1), None);
    }

    #[test]
    fn profile_elements_are_signed_and_bounded() {
        use super::profile_element;
        // Zenner IUWS (corpus line 343): monthly spacing, 32-bit absolute elements.
        let mut data = vec![0x34, 0xFE];
        data.extend([0x00, 0x00, 0x00, 0x00]);
        data.extend([0x00, 0x00, 0x00, 0x80]);
        data.extend([0x2A, 0x01, 0x00, 0x00]);
        assert_eq!(profile_element(&data, 1), Some(0));
        assert_eq!(profile_element(&data, 2), Some(-2_147_483_648));
        assert_eq!(profile_element(&data, 3), Some(0x12A));
        assert_eq!(profile_element(&data, 4), None);
        assert_eq!(profile_element(&data, 0), None);
        assert_eq!(profile_element(&data, usize::MAX), None);
        // 16-bit elements sign-extend from 16 bits.
        assert_eq!(profile_element(&[0x02, 0x01, 0xFF, 0xFF], 1), Some(-1));
        // Increments (mode 1-3) are not read; too short or empty data gives nothing.
        assert_eq!(profile_element(&[0x74, 0xFE, 0, 0, 0, 0], 1), None);
        assert_eq!(profile_element(&[0x34], 1), None);
        assert_eq!(profile_element(&[], 1), None);
        // 64-bit elements.
        let mut data = vec![0x07, 0x01];
        data.extend(u64::MAX.to_le_bytes());
        assert_eq!(profile_element(&data, 1), Some(-1));
    }

    #[test]
    fn null_value_compares_relatively() {
        assert!(super::same_number(
            -2_147_483.648,
            -2_147_483_648.0 / 1000.0
        ));
        assert!(!super::same_number(-2_147_483.648, -2_147_483.647));
        assert!(super::same_number(0.0, 0.0));
    }
}
