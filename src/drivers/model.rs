//! The driver file format (`drivers/<name>.yaml`, documented in `docs/drivers.md`). One
//! declaration per reading: its name, unit, record matcher, lookup and Home Assistant classes
//! drive both the decoded JSON and (later) discovery.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverFile {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `water`, `heat`, `electricity`, `gas`, `hca`, `temperature`, `smoke`, `pressure`, …
    pub meter_type: String,
    /// wmbusmeters' `media` string; by default taken from the telegram's device type.
    #[serde(default)]
    pub media: Option<String>,
    #[serde(default)]
    pub info: Option<String>,
    /// `MFCT,version,type` in hex, `*` for any: `KAM,1b,16`.
    #[serde(default)]
    pub detect: Vec<String>,
    #[serde(default)]
    pub link_modes: Vec<String>,
    #[serde(default)]
    pub default_fields: Vec<String>,
    /// Names for the bits of the TPL status byte that the manufacturer defines (bits 5-7 and
    /// the ones a meter uses differently): `{0x08: PERMANENT_ERROR}`.
    #[serde(default)]
    pub tpl_status_bits: Option<Lookup>,
    /// A Rust decoder for what records cannot express (manufacturer payloads); fields take
    /// its values with `from`. The decoders are listed in `src/drivers/hooks/`.
    #[serde(default)]
    pub decoder: Option<String>,
    /// The meter's id, version and device type come from the enhanced identification record
    /// (DIF 07, VIF 79) when a telegram carries one: a radio converter that relays a meter
    /// sends its own address in the data-link header and the meter's in that record.
    #[serde(default)]
    pub enhanced_identity: bool,
    /// TPL security modes (16-31 are the manufacturer's) that this meter's firmware writes in
    /// its configuration field while it sends its records in the clear, as the Hydrus IZAR RS
    /// does with 24 and 29. The generic decoder refuses such a mode; for a telegram this
    /// driver detects it reads the records instead, and only if they frame completely.
    #[serde(default)]
    pub plain_security_modes: Vec<u8>,
    /// Manufacturer-specific TPL security modes (16-31) in which this meter hides its records
    /// behind a fixed, published obfuscation rather than a key; `scrambling` names it. As with
    /// `plain_security_modes`, only telegrams this driver detects are read this way, and only
    /// when the scheme's own check passes and the records frame completely.
    #[serde(default)]
    pub scrambled_security_modes: Vec<u8>,
    /// The obfuscation of `scrambled_security_modes`: `diehl_lfsr` (the PRIOS shift register
    /// over the payload after the short transport header, Sharky 775) or `bmeters_mask` (the
    /// RFM-TX1's masked volume record).
    #[serde(default)]
    pub scrambling: Option<String>,
    #[serde(default)]
    pub fields: Vec<Field>,
    #[serde(default)]
    pub tests: Vec<TestCase>,
}

/// A `MFCT,version,type` detection entry (hex, or `*` for any): manufacturer, version, device
/// type. Read by the registry and, through this file, by `build.rs` when it indexes drivers.
pub fn parse_detect_entry(s: &str) -> Option<(String, Option<u8>, Option<u8>)> {
    let mut parts = s.split(',').map(str::trim);
    let m = parts.next()?.to_ascii_uppercase();
    let hex = |p: Option<&str>| -> Option<Option<u8>> {
        match p? {
            "*" => Some(None),
            v => u8::from_str_radix(v.trim_start_matches("0x"), 16)
                .ok()
                .map(Some),
        }
    };
    let version = hex(parts.next())?;
    let device_type = hex(parts.next())?;
    if parts.next().is_some() || m.len() != 3 {
        return None;
    }
    Some((m, version, device_type))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    Volume,
    Energy,
    Power,
    Flow,
    Temperature,
    Pressure,
    Hca,
    Time,
    Voltage,
    Current,
    Frequency,
    RelativeHumidity,
    Mass,
    ApparentEnergy,
    ReactiveEnergy,
    ApparentPower,
    ReactivePower,
    Angle,
    Datetime,
    Date,
    Text,
    Counter,
    Dimensionless,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: String,
    pub quantity: Quantity,
    /// Display unit; the JSON key is `<name>_<unit>`. Defaults per quantity (m3, kwh, c, …).
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub info: Option<String>,
    #[serde(default, rename = "match")]
    pub matcher: Option<Match>,
    /// Boxed, as few fields have one (a `Lookup` is 112 bytes; every built field is kept for
    /// as long as its driver is in use).
    #[serde(default)]
    pub lookup: Option<Box<Lookup>>,
    /// `status` (the meter's status text; `OK` when nothing is set), `include_tpl_status`
    /// (add the transport header's status bits), `inject_into_status` (add this field's texts to
    /// the status field), `hide` (decoded but not printed).
    #[serde(default)]
    pub attributes: Vec<String>,
    /// Multiplies the value (for meters that send a wrong exponent).
    #[serde(default)]
    pub scale: Option<f64>,
    /// Computed from other fields of this driver: `+ - * /`, parentheses, numbers and field
    /// keys (`current_kwh + previous_kwh`). Evaluated after every matched field; absent when a
    /// field it names has no value yet.
    #[serde(default)]
    pub formula: Option<String>,
    /// A value the driver's `decoder` computes (already in this field's unit).
    #[serde(default)]
    pub from: Option<String>,
    /// Numbers: keep only these bits of the raw integer (before `scale`).
    #[serde(default)]
    pub mask: Option<u64>,
    /// Texts: `hex` (the data bytes in hex, as sent), `wire` (text in the order sent, for
    /// meters that do not reverse it), or `digits` (an integer zero-padded to `width`).
    #[serde(default)]
    pub text_format: Option<String>,
    #[serde(default)]
    pub width: Option<usize>,
    /// Date-times with seconds (type I) print to the minute unless this is `second`.
    #[serde(default)]
    pub precision: Option<String>,
    /// Numbers: read the raw integer as unsigned (meters that send counters in signed types).
    #[serde(default)]
    pub unsigned: bool,
    /// Dates: another date field of this driver shifted by whole months; a date on the last
    /// day of its month stays on the last day (`2020-12-31` minus one month is `2020-11-30`).
    /// Boxed, as few fields have one.
    #[serde(default)]
    pub date_shift: Option<Box<DateShift>>,
    /// Numbers: the value (in this field's unit) a meter sends for "no value"; the field
    /// prints `null` then (0x80000000 in a 32-bit litre register is -2147483.648 m3).
    #[serde(default)]
    pub null_value: Option<f64>,
    /// Numbers: the n-th element (1 = the first) of the compact profile the matched record
    /// carries, instead of the record's whole data.
    #[serde(default)]
    pub profile: Option<usize>,
    /// Texts: the words a `decoder` can put in this field (a lookup's names are known from
    /// the lookup). Home Assistant's binary sensors (smoke, leak, tamper, …) are generated from
    /// the words a field can show.
    #[serde(default)]
    pub texts: Vec<String>,
    #[serde(default)]
    pub ha: Option<HaMeta>,
}

impl Field {
    pub fn has(&self, attribute: &str) -> bool {
        self.attributes.iter().any(|a| a == attribute)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateShift {
    /// The key of a date field of this driver (`target_date`).
    pub from: String,
    /// Months to add (negative: earlier).
    pub months: i32,
    /// Only when this field (a key of this driver) has a value: a history date belongs to a
    /// history value.
    #[serde(default)]
    pub when: Option<String>,
}

/// A storage, tariff or subunit number, or an inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum NumberRange {
    One(u64),
    Range([u64; 2]),
}

impl NumberRange {
    pub fn contains(self, v: u64) -> bool {
        match self {
            NumberRange::One(n) => v == n,
            NumberRange::Range([lo, hi]) => (lo..=hi).contains(&v),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// `instantaneous` (default), `maximum`, `minimum`, `error`, `any`.
    #[serde(default)]
    pub measurement: Option<String>,
    /// A quantity name from the VIF tables (`volume`, `energy`, `flow_temperature`, …).
    #[serde(default)]
    pub vif_range: Option<String>,
    /// Default 0.
    #[serde(default)]
    pub storage: Option<NumberRange>,
    /// Default 0.
    #[serde(default)]
    pub tariff: Option<NumberRange>,
    /// Default 0.
    #[serde(default)]
    pub subunit: Option<NumberRange>,
    /// Exact DIF, DIFEs, VIF and VIFEs in hex: `04FF23`.
    #[serde(default)]
    pub difvif: Option<String>,
    /// More exact keys a record may have instead of `difvif` (a model that sends either
    /// layout, e.g. a 64-bit integer or a real).
    #[serde(default)]
    pub difvif_or: Vec<String>,
    /// Combinable VIFE codes (hex) the record must carry; `any` accepts any.
    #[serde(default)]
    pub combinable: Vec<String>,
    /// The n-th matching record (1-based), default 1.
    #[serde(default)]
    pub nth: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lookup {
    /// Used for bits no entry names: `<name>_<hex>`.
    #[serde(default)]
    pub name: Option<String>,
    /// `bits` (every set bit that has a name), `index` (the masked value names one state).
    #[serde(default = "default_lookup_kind", rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub mask: Option<u64>,
    /// Text when no bit is set (`OK`), for `bits`.
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub map: BTreeMap<u64, String>,
}

fn default_lookup_kind() -> String {
    "bits".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaMeta {
    /// A Home Assistant sensor device class, or `none`.
    pub device_class: String,
    /// `measurement`, `total`, `total_increasing`, or `none`.
    pub state_class: String,
    #[serde(default)]
    pub entity_category: Option<String>,
    #[serde(default)]
    pub icon: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// Meter name as given to wmbusmeters (`name` in the output).
    pub name: String,
    /// Meter id (8 hex digits) or `*`.
    pub id: String,
    /// AES key (32 hex digits); absent for meters without encryption.
    #[serde(default)]
    pub key: Option<String>,
    /// Driver name as the user gives it (an alias works); default the file's name.
    #[serde(default)]
    pub driver: Option<String>,
    /// Telegrams fed in order to the same meter; the expected output is after the last one.
    pub telegrams: Vec<String>,
    /// The expected wmbusmeters-format JSON (timestamp ignored).
    pub expected: serde_json_value::Map,
    #[serde(default)]
    pub comment: Option<String>,
}

/// A small JSON-like value for expected outputs in YAML (numbers, strings, booleans, null).
pub mod serde_json_value {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(untagged)]
    pub enum Value {
        Null,
        Bool(bool),
        Number(f64),
        Text(String),
    }

    pub type Map = BTreeMap<String, Value>;
}
