//! Built-in drivers in compiled form: build.rs parses every `drivers/*.yaml` and writes its
//! contents as constant data of the types below (nothing to run or parse). A driver's first
//! use turns its data into the owned `DriverFile` the engine works with.
//!
//! Texts and lists are offsets into a few tables ([`Tables`]), not references: the program is
//! position-independent, so every pointer in static data is patched by the loader when any
//! `meterbridge` process starts, which would page in all of the drivers' data (1.5 MB more
//! peak memory for `meterbridge --version`). Offsets need no patching, and a driver's data is
//! only read when that driver is built.
//!
//! Each type mirrors one of `model.rs` field by field; the conversions destructure both sides,
//! so a field added to the model and not here (and in build.rs) does not build.

use std::collections::BTreeMap;

use super::model::{self, serde_json_value, NumberRange, Quantity};

/// A text: byte offset and length in [`Tables::strings`].
#[derive(Clone, Copy)]
pub struct S(pub u32, pub u32);

/// A list: index of its first element and its length in the table for its element type.
#[derive(Clone, Copy)]
pub struct L(pub u32, pub u32);

/// Where the lists and texts of the compiled drivers are (written by build.rs).
pub struct Tables {
    pub strings: &'static str,
    pub str_lists: &'static [S],
    pub fields: &'static [Field],
    pub tests: &'static [TestCase],
    pub map: &'static [(u64, S)],
    pub expected: &'static [(S, Value)],
}

impl L {
    fn of<T>(self, table: &'static [T]) -> &'static [T] {
        let start = self.0 as usize;
        &table[start..start + self.1 as usize]
    }
}

impl Tables {
    fn text(&self, s: S) -> String {
        let start = s.0 as usize;
        self.strings[start..start + s.1 as usize].to_string()
    }

    fn opt(&self, s: Option<S>) -> Option<String> {
        s.map(|s| self.text(s))
    }

    fn texts(&self, l: L) -> Vec<String> {
        l.of(self.str_lists).iter().map(|s| self.text(*s)).collect()
    }
}

pub struct DriverFile {
    pub name: S,
    pub aliases: L,
    pub meter_type: S,
    pub media: Option<S>,
    pub info: Option<S>,
    pub detect: L,
    pub link_modes: L,
    pub default_fields: L,
    pub tpl_status_bits: Option<Lookup>,
    pub decoder: Option<S>,
    pub enhanced_identity: bool,
    /// `plain_security_modes` as a bit set (modes 0-31, bit n for mode n).
    pub plain_security_modes: u32,
    /// `scrambled_security_modes`, the same way.
    pub scrambled_security_modes: u32,
    pub scrambling: Option<S>,
    pub fields: L,
    pub tests: L,
}

pub struct Field {
    pub name: S,
    pub quantity: Quantity,
    pub unit: Option<S>,
    pub info: Option<S>,
    pub matcher: Option<Match>,
    pub lookup: Option<Lookup>,
    pub attributes: L,
    pub scale: Option<f64>,
    pub formula: Option<S>,
    pub from: Option<S>,
    pub mask: Option<u64>,
    pub text_format: Option<S>,
    pub width: Option<usize>,
    pub precision: Option<S>,
    pub unsigned: bool,
    pub date_shift: Option<DateShift>,
    pub null_value: Option<f64>,
    pub profile: Option<usize>,
    pub texts: L,
    pub ha: Option<HaMeta>,
}

pub struct DateShift {
    pub from: S,
    pub months: i32,
    pub when: Option<S>,
}

pub struct Match {
    pub measurement: Option<S>,
    pub vif_range: Option<S>,
    pub storage: Option<NumberRange>,
    pub tariff: Option<NumberRange>,
    pub subunit: Option<NumberRange>,
    pub difvif: Option<S>,
    pub difvif_or: L,
    pub combinable: L,
    pub nth: Option<usize>,
}

pub struct Lookup {
    pub name: Option<S>,
    pub kind: S,
    pub mask: Option<u64>,
    pub default: Option<S>,
    pub map: L,
}

pub struct HaMeta {
    pub device_class: S,
    pub state_class: S,
    pub entity_category: Option<S>,
    pub icon: Option<S>,
}

pub struct TestCase {
    pub name: S,
    pub id: S,
    pub key: Option<S>,
    pub driver: Option<S>,
    pub telegrams: L,
    pub expected: L,
    pub comment: Option<S>,
}

pub enum Value {
    Null,
    // The format allows a boolean; no built-in test expects one today.
    #[allow(dead_code)]
    Bool(bool),
    Number(f64),
    Text(S),
}

/// Only its name: the driver behind it is printed in full by the model it builds.
impl std::fmt::Debug for DriverFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("compiled::DriverFile")
            .field("name", &super::built_in::TABLES.text(self.name))
            .finish_non_exhaustive()
    }
}

impl DriverFile {
    /// The driver as its file reads, test cases included (what the registry builds leaves
    /// them out: see [`DriverFile::to_model_without_tests`]).
    pub fn to_model(&self, t: &Tables) -> model::DriverFile {
        model::DriverFile {
            tests: self.tests_to_model(t),
            ..self.to_model_without_tests(t)
        }
    }

    /// The test cases (telegrams, keys, expected readings): read by the simulators and
    /// `drivers NAME`, never by decoding, so a driver in use does not keep them in memory.
    pub fn tests_to_model(&self, t: &Tables) -> Vec<model::TestCase> {
        self.tests
            .of(t.tests)
            .iter()
            .map(|c| c.to_model(t))
            .collect()
    }

    /// The driver without its test cases (`tests` is empty; [`DriverFile::tests_to_model`]).
    pub fn to_model_without_tests(&self, t: &Tables) -> model::DriverFile {
        let DriverFile {
            name,
            aliases,
            meter_type,
            media,
            info,
            detect,
            link_modes,
            default_fields,
            tpl_status_bits,
            decoder,
            enhanced_identity,
            plain_security_modes,
            scrambled_security_modes,
            scrambling,
            fields,
            tests: _,
        } = self;
        model::DriverFile {
            name: t.text(*name),
            aliases: t.texts(*aliases),
            meter_type: t.text(*meter_type),
            media: t.opt(*media),
            info: t.opt(*info),
            detect: t.texts(*detect),
            link_modes: t.texts(*link_modes),
            default_fields: t.texts(*default_fields),
            tpl_status_bits: tpl_status_bits.as_ref().map(|l| l.to_model(t)),
            decoder: t.opt(*decoder),
            enhanced_identity: *enhanced_identity,
            plain_security_modes: modes(*plain_security_modes),
            scrambled_security_modes: modes(*scrambled_security_modes),
            scrambling: t.opt(*scrambling),
            fields: fields.of(t.fields).iter().map(|f| f.to_model(t)).collect(),
            tests: Vec::new(),
        }
    }
}

/// Security modes back from their bit set.
fn modes(bits: u32) -> Vec<u8> {
    (0u8..32).filter(|m| bits & (1u32 << m) != 0).collect()
}

impl Field {
    fn to_model(&self, t: &Tables) -> model::Field {
        let Field {
            name,
            quantity,
            unit,
            info,
            matcher,
            lookup,
            attributes,
            scale,
            formula,
            from,
            mask,
            text_format,
            width,
            precision,
            unsigned,
            date_shift,
            null_value,
            profile,
            texts: words,
            ha,
        } = self;
        model::Field {
            name: t.text(*name),
            quantity: *quantity,
            unit: t.opt(*unit),
            info: t.opt(*info),
            matcher: matcher.as_ref().map(|m| m.to_model(t)),
            lookup: lookup.as_ref().map(|l| l.to_model(t)),
            attributes: t.texts(*attributes),
            scale: *scale,
            formula: t.opt(*formula),
            from: t.opt(*from),
            mask: *mask,
            text_format: t.opt(*text_format),
            width: *width,
            precision: t.opt(*precision),
            unsigned: *unsigned,
            date_shift: date_shift.as_ref().map(|DateShift { from, months, when }| {
                model::DateShift {
                    from: t.text(*from),
                    months: *months,
                    when: t.opt(*when),
                }
            }),
            null_value: *null_value,
            profile: *profile,
            texts: t.texts(*words),
            ha: ha.as_ref().map(
                |HaMeta {
                     device_class,
                     state_class,
                     entity_category,
                     icon,
                 }| model::HaMeta {
                    device_class: t.text(*device_class),
                    state_class: t.text(*state_class),
                    entity_category: t.opt(*entity_category),
                    icon: t.opt(*icon),
                },
            ),
        }
    }
}

impl Match {
    fn to_model(&self, t: &Tables) -> model::Match {
        let Match {
            measurement,
            vif_range,
            storage,
            tariff,
            subunit,
            difvif,
            difvif_or,
            combinable,
            nth,
        } = self;
        model::Match {
            measurement: t.opt(*measurement),
            vif_range: t.opt(*vif_range),
            storage: *storage,
            tariff: *tariff,
            subunit: *subunit,
            difvif: t.opt(*difvif),
            difvif_or: t.texts(*difvif_or),
            combinable: t.texts(*combinable),
            nth: *nth,
        }
    }
}

impl Lookup {
    fn to_model(&self, t: &Tables) -> model::Lookup {
        let Lookup {
            name,
            kind,
            mask,
            default,
            map,
        } = self;
        model::Lookup {
            name: t.opt(*name),
            kind: t.text(*kind),
            mask: *mask,
            default: t.opt(*default),
            map: map
                .of(t.map)
                .iter()
                .map(|(k, v)| (*k, t.text(*v)))
                .collect(),
        }
    }
}

impl TestCase {
    fn to_model(&self, t: &Tables) -> model::TestCase {
        let TestCase {
            name,
            id,
            key,
            driver,
            telegrams,
            expected,
            comment,
        } = self;
        model::TestCase {
            name: t.text(*name),
            id: t.text(*id),
            key: t.opt(*key),
            driver: t.opt(*driver),
            telegrams: t.texts(*telegrams),
            expected: expected
                .of(t.expected)
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::Null => serde_json_value::Value::Null,
                        Value::Bool(b) => serde_json_value::Value::Bool(*b),
                        Value::Number(n) => serde_json_value::Value::Number(*n),
                        Value::Text(s) => serde_json_value::Value::Text(t.text(*s)),
                    };
                    (t.text(*k), v)
                })
                .collect::<BTreeMap<_, _>>(),
            comment: t.opt(*comment),
        }
    }
}
