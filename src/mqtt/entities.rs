//! Which Home Assistant entities a meter gets, and with which classes: the rules that turn a
//! driver's field declarations (or, for a meter no driver knows, its record names) into
//! [`Component`]s. `discovery` renders them; the gateway announces only those whose value the
//! meter actually sent. The rules are written down with their reasons in
//! `docs/home-assistant.md` ("Which entities, which classes").

use super::discovery::{Component, Platform};
use super::manufacturers::manufacturer_name;
use super::units::{ha_unit, is_total_class, unit_fits};
use crate::drivers::engine::Driver;
use crate::drivers::model::{Field, NumberRange, Quantity};

/// Name tokens of values that are not a running lifetime total: a value stored at a set date,
/// a history slot, a difference, a target. Home Assistant would offer them as Energy sources
/// and build nonsense statistics from them, so they get no state class.
const SNAPSHOT_TOKENS: &[&str] = &[
    "target", "prev", "previous", "last", "set", "date", "history", "ago", "delta", "month",
    "months", "year", "period", "at", "half", "profile",
];

/// Tokens after which a trailing number names an input, tariff or phase (a lifetime counter of
/// its own), not a history slot.
const INDEX_OWNERS: &[&str] = &["tariff", "subunit", "input", "phase", "l"];

/// Whether a field name describes a snapshot (history, set-date, delta or target value) rather
/// than a lifetime counter or a live measurement.
pub fn is_snapshot_name(name: &str) -> bool {
    let tokens: Vec<&str> = name.split('_').filter(|t| !t.is_empty()).collect();
    if tokens.iter().any(|t| {
        let word = t.trim_end_matches(|c: char| c.is_ascii_digit());
        SNAPSHOT_TOKENS.contains(&word) || SNAPSHOT_TOKENS.contains(t)
    }) {
        return true;
    }
    // `consumption_3`, `prev_01`: a bare trailing number is a history index unless it belongs
    // to a tariff, subunit, input or phase (`total_tariff_2`).
    if let [.., before, last] = tokens.as_slice() {
        if last.chars().all(|c| c.is_ascii_digit()) && !INDEX_OWNERS.contains(before) {
            return true;
        }
    }
    false
}

/// A driver field that holds a snapshot: stored at a storage number other than 0, or named
/// like one.
pub fn is_snapshot(field: &Field) -> bool {
    let stored = field
        .matcher
        .as_ref()
        .and_then(|m| m.storage)
        .is_some_and(|s| s != NumberRange::One(0));
    stored || is_snapshot_name(&field.name)
}

/// The device class of a volume: a water meter's volume is `water` (accepted as water
/// consumption), a gas meter's `gas`, anything else's (a heat meter's circuit) plain `volume`.
/// The telegram's medium decides first, so a driver that covers water and heat models classes
/// each meter by what it is.
pub fn volume_class(media: &str, meter_type: &str) -> &'static str {
    let media = media.to_ascii_lowercase();
    if media.contains("water") {
        "water"
    } else if media.contains("gas") {
        "gas"
    } else if media.contains("heat") || media.contains("cool") {
        "volume"
    } else {
        match meter_type {
            "water" => "water",
            "gas" => "gas",
            _ => "volume",
        }
    }
}

/// `total_energy_consumption` → `Total energy consumption`.
pub fn display_name(field_name: &str) -> String {
    let spaced = field_name.replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => spaced,
    }
}

/// The binary-sensor classes a status text belongs to. Past events (`WAS_LEAKING`,
/// `LEAK_PREV_MONTH`, `PREV_LEAKAGE`) are history, not a current state, and belong to none.
pub fn flag_class(text: &str, meter_type: &str) -> Option<&'static str> {
    let t = text.to_ascii_uppercase();
    let past = t.starts_with("WAS_")
        || t.starts_with("PREV_")
        || t.ends_with("_THIS_MONTH")
        || t.ends_with("_PREV_MONTH")
        || t.ends_with("_PAST")
        || t.ends_with("_DATE")
        || t.contains("HISTOR");
    if past || t.starts_with("UNKNOWN") || t.starts_with("RESERVED") {
        return None;
    }
    let has = |w: &str| t.contains(w);
    let faulty = has("FAULT")
        || has("END_OF_LIFE")
        || has("COVERED")
        || has("NO_CONNECTION")
        || has("SENSOR");
    if has("SMOKE") && !faulty {
        return Some("smoke");
    }
    if meter_type == "smoke" && t == "ALARM" {
        return Some("smoke");
    }
    if t == "OPEN" || t.ends_with("_OPEN") {
        return Some("door");
    }
    if has("BATTERY") {
        return Some("battery");
    }
    if has("TAMPER") || has("REMOVED") || has("MAGNETIC") || has("FRAUD") || has("SEAL_BROKEN") {
        return Some("tamper");
    }
    if has("LEAK") || has("BURST") || has("BROKEN_PIPE") {
        return Some("moisture");
    }
    if has("ERROR")
        || has("FAULT")
        || has("FAILURE")
        || has("DEFECT")
        || has("END_OF_LIFE")
        || has("NO_CONNECTION")
        || has("COVERED")
        || t == "ALARM"
        || has("DRY")
    {
        return Some("problem");
    }
    None
}

/// Entity names for the binary classes.
fn flag_name(class: &str) -> &'static str {
    match class {
        "smoke" => "Smoke",
        "door" => "Open",
        "battery" => "Battery",
        "tamper" => "Tamper",
        "moisture" => "Leak",
        _ => "Problem",
    }
}

/// Every text a driver field can show: its lookup's names, what its decoder declares
/// (`texts`), and for the status field the transport header's texts and those of the fields
/// that inject into it.
fn field_texts(driver: &Driver, field: &Field) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(l) = &field.lookup {
        out.extend(l.map.values().cloned());
    }
    out.extend(field.texts.iter().cloned());
    if field.has("status") {
        for f in driver
            .file
            .fields
            .iter()
            .filter(|f| f.has("inject_into_status"))
        {
            if let Some(l) = &f.lookup {
                out.extend(l.map.values().cloned());
            }
            out.extend(f.texts.iter().cloned());
        }
        if field.has("include_tpl_status") {
            out.extend(
                ["ERROR", "ALARM", "PERMANENT_ERROR", "TEMPORARY_ERROR"]
                    .iter()
                    .map(|s| s.to_string()),
            );
            if let Some(l) = &driver.file.tpl_status_bits {
                out.extend(l.map.values().cloned());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Binary sensors for one text field: one per class that any of its texts belongs to, on when
/// the current text holds one of that class's words.
fn binary_components(driver: &Driver, field: &Field, key: &str) -> Vec<Component> {
    let meter_type = driver.file.meter_type.as_str();
    let mut classes: Vec<(&'static str, Vec<String>)> = Vec::new();
    for text in field_texts(driver, field) {
        if let Some(class) = flag_class(&text, meter_type) {
            match classes.iter_mut().find(|(c, _)| *c == class) {
                Some((_, words)) => words.push(text),
                None => classes.push((class, vec![text])),
            }
        }
    }
    classes
        .into_iter()
        .map(|(class, words)| {
            let (entity_key, name) = if key == "status" {
                (class.to_string(), flag_name(class).to_string())
            } else {
                (
                    format!("{key}_{class}"),
                    format!("{} {}", display_name(key), flag_name(class).to_lowercase()),
                )
            };
            let mut c = Component::sensor(&entity_key, &name);
            c.value_key = key.to_string();
            c.platform = Platform::BinarySensor;
            c.device_class = Some(if class == "door" && meter_type != "door_window" {
                "opening".to_string()
            } else {
                class.to_string()
            });
            // A smoke or door state is what the device is for; the rest are diagnostics.
            if !matches!(class, "smoke" | "door" | "moisture") {
                c.entity_category = Some("diagnostic".into());
            }
            c.on_words = words;
            c
        })
        .collect()
}

/// Every entity a driver can give a meter of the given medium (wmbusmeters' media text): one
/// sensor per visible field, plus binary sensors for its alarm and status words. The gateway
/// announces the subset whose values the meter sent.
pub fn components_for_driver(
    driver: &Driver,
    media: &str,
    expire_after: Option<u64>,
) -> Vec<Component> {
    let mut out = Vec::new();
    let meter_type = driver.file.meter_type.as_str();
    for (field, key) in driver.file.fields.iter().zip(driver.field_keys()) {
        if field.has("hide") {
            continue;
        }
        let mut c = Component::sensor(key, &display_name(&field.name));
        c.expire_after = expire_after;
        let textual = matches!(
            field.quantity,
            Quantity::Text | Quantity::Date | Quantity::Datetime
        );
        c.text = textual;
        let suffix = key
            .strip_prefix(field.name.as_str())
            .and_then(|s| s.strip_prefix('_'));
        if !textual {
            c.unit = suffix.and_then(ha_unit).map(str::to_string);
        }
        if let Some(ha) = &field.ha {
            c.entity_category = ha.entity_category.clone().filter(|s| s != "none");
            c.icon = ha.icon.clone().filter(|s| s != "none");
            let mut class = Some(ha.device_class.as_str()).filter(|s| *s != "none");
            if field.quantity == Quantity::Volume
                && class.is_none_or(|c| matches!(c, "water" | "gas" | "volume"))
            {
                class = Some(volume_class(media, meter_type));
            }
            if field.quantity == Quantity::Date {
                class = Some("date");
            }
            let state = Some(ha.state_class.as_str()).filter(|s| *s != "none");
            // Texts have no statistics; a state class would make HA expect numbers. Snapshots
            // are not statistics either (see `is_snapshot`).
            c.state_class = state
                .filter(|_| !textual && !is_snapshot(field))
                .map(str::to_string);
            c.device_class = class
                .filter(|class| class_fits(class, field.quantity, c.unit.as_deref()))
                .map(str::to_string);
            if let (Some(class), Some("measurement")) =
                (c.device_class.as_deref(), c.state_class.as_deref())
            {
                if is_total_class(class) {
                    c.state_class = Some("total".into());
                }
            }
        } else if field.quantity == Quantity::Date {
            c.device_class = Some("date".into());
        }
        if c.unit.as_deref() == Some("m³") {
            c.display_precision = Some(3);
        }
        if field.quantity == Quantity::Text {
            out.extend(
                binary_components(driver, field, key)
                    .into_iter()
                    .map(|mut b| {
                        b.expire_after = expire_after;
                        b
                    }),
            );
        }
        out.push(c);
    }
    out
}

pub(crate) fn class_fits(class: &str, quantity: Quantity, unit: Option<&str>) -> bool {
    match class {
        // `date` wants YYYY-MM-DD; our date-times print without a time zone, which the
        // `timestamp` class rejects.
        "date" => quantity == Quantity::Date,
        "timestamp" => false,
        _ => unit_fits(class, unit),
    }
}

/// What a generic reading's key (`max_power_storage_2_kw`, see
/// `drivers::engine::generic_readings`) says about it.
struct GenericKey<'a> {
    function: Option<&'static str>,
    quantity: &'a str,
    storage: Option<&'a str>,
    tariff: Option<&'a str>,
    subunit: Option<&'a str>,
    unit: Option<&'static str>,
}

fn parse_generic_key(key: &str) -> GenericKey<'_> {
    let mut rest = key;
    let mut function = None;
    for (prefix, name) in [
        ("max_", "Maximum"),
        ("min_", "Minimum"),
        ("error_", "At error"),
    ] {
        if let Some(r) = rest.strip_prefix(prefix) {
            function = Some(name);
            rest = r;
            break;
        }
    }
    let mut unit = None;
    if let Some((head, suffix)) = rest.rsplit_once('_') {
        if let Some(u) = ha_unit(suffix) {
            unit = Some(u);
            rest = head;
        }
    }
    // Markers follow the quantity in a fixed order (storage, tariff, subunit): take them
    // from the end.
    let mut take = |marker: &str| -> Option<&str> {
        let (head, n) = rest.rsplit_once(marker)?;
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        rest = head;
        Some(n)
    };
    let subunit = take("_subunit_");
    let tariff = take("_tariff_");
    let storage = take("_storage_");
    GenericKey {
        function,
        quantity: rest,
        storage,
        tariff,
        subunit,
        unit,
    }
}

/// The sensor device class for a unit (and, for volumes, the medium).
fn class_for_unit(unit: &str, quantity: &str, media: &str) -> Option<String> {
    let class = match unit {
        "m³" | "L" => volume_class(media, ""),
        "Wh" | "kWh" | "MWh" | "GWh" | "MJ" | "GJ" => "energy",
        "W" | "kW" | "MW" => "power",
        "m³/h" | "L/h" => "volume_flow_rate",
        "°C" | "°F" => "temperature",
        "K" if quantity.contains("difference") => "temperature_delta",
        "K" => "temperature",
        "bar" => "pressure",
        "V" => "voltage",
        "A" => "current",
        "Hz" => "frequency",
        "s" | "min" | "h" | "d" => "duration",
        _ => return None,
    };
    unit_fits(class, Some(unit)).then(|| class.to_string())
}

/// Entities for a meter no driver knows, from the keys of the readings it sent: unit, device
/// class and state class follow from the record's quantity and unit, by the same rules as
/// driver fields; names read as words (`Volume (storage 1)`).
pub fn components_for_generic(
    keys: &[String],
    media: &str,
    expire_after: Option<u64>,
) -> Vec<Component> {
    keys.iter()
        .map(|key| {
            let g = parse_generic_key(key);
            let mut name = display_name(g.quantity);
            if let Some(f) = g.function {
                name = format!("{f} {}", name.to_lowercase());
            }
            let mut details = Vec::new();
            if let Some(s) = g.storage {
                details.push(format!("storage {s}"));
            }
            if let Some(t) = g.tariff {
                details.push(format!("tariff {t}"));
            }
            if let Some(s) = g.subunit {
                details.push(format!("subunit {s}"));
            }
            if !details.is_empty() {
                name = format!("{name} ({})", details.join(", "));
            }
            let mut c = Component::sensor(key, &name);
            c.expire_after = expire_after;
            c.unit = g.unit.map(str::to_string);
            c.device_class = g.unit.and_then(|u| class_for_unit(u, g.quantity, media));
            if g.quantity.contains("date") || g.quantity == "time_point" {
                // Record dates print without a zone; Home Assistant takes them as text.
                c.unit = None;
                c.device_class = None;
                c.text = true;
            }
            let snapshot = g.storage.is_some() || g.function.is_some();
            c.state_class = match c.device_class.as_deref() {
                _ if snapshot => None,
                Some(class) if is_total_class(class) => Some("total_increasing".into()),
                Some("duration") => Some("total_increasing".into()),
                Some(_) => Some("measurement".into()),
                None if g.unit.is_some() => Some("measurement".into()),
                None => None,
            };
            if c.unit.as_deref() == Some("m³") {
                c.display_precision = Some(3);
            }
            c
        })
        .collect()
}

/// Entities every meter has besides its fields; the daemon writes these keys into the state
/// document. RSSI only where there is a radio.
pub fn meter_components_extra(wireless: bool) -> Vec<Component> {
    let mut out = Vec::new();
    if wireless {
        let mut rssi = Component::sensor("rssi_dbm", "RSSI");
        rssi.device_class = Some("signal_strength".into());
        rssi.unit = Some("dBm".into());
        rssi.state_class = Some("measurement".into());
        rssi.entity_category = Some("diagnostic".into());
        rssi.enabled_by_default = false;
        out.push(rssi);
    }
    let mut seen = Component::sensor("timestamp", "Last seen");
    seen.device_class = Some("timestamp".into());
    seen.text = true;
    seen.entity_category = Some("diagnostic".into());
    out.push(seen);

    // Counts from the last start or saved state: it can go back after a crash, so it is no
    // statistic (`total_increasing` would read a dip as a reset and add it all again).
    let mut counter = Component::sensor("telegram_counter", "Telegrams");
    counter.entity_category = Some("diagnostic".into());
    counter.icon = Some("mdi:counter".into());
    counter.enabled_by_default = false;
    out.push(counter);
    out
}

/// A meter's RSSI as one receiver hears it (`rssi_garden_dbm`), for a gateway with several
/// receivers: which receiver hears the meter best. Off by default, like the meter's `rssi_dbm`:
/// useful when placing receivers, noise otherwise.
pub fn receiver_rssi_component(key: &str, receiver: &str) -> Component {
    let mut rssi = Component::sensor(key, &format!("RSSI at {receiver}"));
    rssi.device_class = Some("signal_strength".into());
    rssi.unit = Some("dBm".into());
    rssi.state_class = Some("measurement".into());
    rssi.entity_category = Some("diagnostic".into());
    rssi.enabled_by_default = false;
    rssi
}

/// The gateway device's entities for one receiver, reading the gateway state's
/// `receiver_<slug>_per_minute`, `_meters` and `_silent`.
pub fn gateway_receiver_components(slug: &str, receiver: &str) -> Vec<Component> {
    let mut rate = Component::sensor(
        &format!("receiver_{slug}_per_minute"),
        &format!("{receiver} telegrams per minute"),
    );
    rate.state_class = Some("measurement".into());
    rate.unit = Some("telegrams/min".into());
    rate.icon = Some("mdi:radio-tower".into());
    rate.entity_category = Some("diagnostic".into());
    let mut meters = Component::sensor(
        &format!("receiver_{slug}_meters"),
        &format!("{receiver} meters heard"),
    );
    meters.state_class = Some("measurement".into());
    meters.icon = Some("mdi:counter".into());
    meters.entity_category = Some("diagnostic".into());
    let mut silent = Component::sensor(
        &format!("receiver_{slug}_silent"),
        &format!("{receiver} silent"),
    );
    silent.platform = Platform::BinarySensor;
    silent.device_class = Some("problem".into());
    silent.entity_category = Some("diagnostic".into());
    vec![rate, meters, silent]
}

/// Manufacturer and model as a person knows them: `Kamstrup`, `Multical 21 / flowIQ water
/// meter` (the driver's description without the maker's name).
pub fn device_names(manufacturer_code: &str, driver: Option<&Driver>) -> (String, String) {
    let maker = manufacturer_name(manufacturer_code)
        .map(str::to_string)
        .unwrap_or_else(|| manufacturer_code.to_string());
    let model = match driver {
        Some(d) => match d
            .file
            .info
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            Some(info) => {
                // `Kamstrup Multical 21 …` → `Multical 21 …`: the maker is shown on its own.
                let lower = info.to_ascii_lowercase();
                let first = info.split_whitespace().next().unwrap_or("");
                // Only a whole word: `NZR/EMH electricity meter` keeps its first word.
                let whole = |n: usize| info[n..].starts_with(char::is_whitespace);
                let rest = if lower.starts_with(&maker.to_ascii_lowercase()) && whole(maker.len()) {
                    &info[maker.len()..]
                } else if maker
                    .split_whitespace()
                    .next()
                    .is_some_and(|m| m.eq_ignore_ascii_case(first))
                    && whole(first.len())
                {
                    &info[first.len()..]
                } else {
                    info
                };
                let rest = rest.trim();
                if rest.is_empty() { info } else { rest }.to_string()
            }
            None => d.name().to_string(),
        },
        None => "Unknown meter".to_string(),
    };
    (maker, model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::Registry;

    #[test]
    fn snapshot_names() {
        for snapshot in [
            "target",
            "consumption_at_set_date_3",
            "prev_2_month",
            "last_jan",
            "volume_delta_4",
            "consumption_2",
            "prev_01",
            "delta_1_half_months_ago",
            "total_energy_consumption_at_date",
            "on_time_at_error",
            "target_2",
        ] {
            assert!(is_snapshot_name(snapshot), "{snapshot}");
        }
        for lifetime in [
            "total",
            "total_energy_consumption",
            "total_energy_consumption_tariff_2",
            "total_tariff1",
            "total_volume_subunit1",
            "current_consumption",
            "operating_time",
            "total_energy_consumption_l1",
            "flow_temperature",
            "a",
        ] {
            assert!(!is_snapshot_name(lifetime), "{lifetime}");
        }
    }

    #[test]
    fn flag_words() {
        assert_eq!(flag_class("SMOKE", "smoke"), Some("smoke"));
        assert_eq!(flag_class("ALARM", "smoke"), Some("smoke"));
        assert_eq!(flag_class("ALARM", "water"), Some("problem"));
        assert_eq!(
            flag_class("SMOKE_SENSOR_END_OF_LIFE", "smoke"),
            Some("problem")
        );
        assert_eq!(flag_class("OPEN", "door_window"), Some("door"));
        assert_eq!(flag_class("CLOSED", "door_window"), None);
        assert_eq!(flag_class("LEAK", "water"), Some("moisture"));
        assert_eq!(flag_class("WAS_LEAKING", "water"), None);
        assert_eq!(flag_class("LEAK_PREV_MONTH", "water"), None);
        assert_eq!(flag_class("LOW_BATTERY_FAULT", "smoke"), Some("battery"));
        assert_eq!(flag_class("TAMPER_WHILE_REMOVED", "smoke"), Some("tamper"));
        assert_eq!(flag_class("SENSOR_ERROR", "heat"), Some("problem"));
        assert_eq!(flag_class("V1_AIR", "heat"), None);
        assert_eq!(flag_class("OK", "heat"), None);
    }

    #[test]
    fn volume_classes_follow_the_medium() {
        assert_eq!(volume_class("water", "heat"), "water");
        assert_eq!(volume_class("warm water", "water"), "water");
        assert_eq!(volume_class("heat", "heat"), "volume");
        assert_eq!(volume_class("heat/cooling load", "water"), "volume");
        assert_eq!(volume_class("gas", "gas"), "gas");
        assert_eq!(volume_class("other", "water"), "water");
    }

    #[test]
    fn generic_keys_get_units_classes_and_words() {
        let keys: Vec<String> = [
            "volume_m3",
            "energy_kwh",
            "volume_storage_1_m3",
            "max_power_kw",
            "flow_temperature_c",
            "energy_tariff_2_kwh",
            "fabrication_no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = components_for_generic(&keys, "water", None);
        let by = |k: &str| c.iter().find(|c| c.key == k).unwrap();
        let v = by("volume_m3");
        assert_eq!(
            (
                v.name.as_str(),
                v.unit.as_deref(),
                v.device_class.as_deref()
            ),
            ("Volume", Some("m³"), Some("water"))
        );
        assert_eq!(v.state_class.as_deref(), Some("total_increasing"));
        let e = by("energy_kwh");
        assert_eq!(e.device_class.as_deref(), Some("energy"));
        assert_eq!(e.name, "Energy");
        let s = by("volume_storage_1_m3");
        assert_eq!(s.name, "Volume (storage 1)");
        assert_eq!(s.state_class, None);
        assert_eq!(s.device_class.as_deref(), Some("water"));
        let p = by("max_power_kw");
        assert_eq!(p.name, "Maximum power");
        assert_eq!(p.state_class, None);
        assert_eq!(
            by("flow_temperature_c").state_class.as_deref(),
            Some("measurement")
        );
        assert_eq!(by("energy_tariff_2_kwh").name, "Energy (tariff 2)");
        let f = by("fabrication_no");
        assert_eq!((f.unit.as_deref(), f.state_class.as_deref()), (None, None));
    }

    #[test]
    fn devices_are_named_by_maker_and_model() {
        let r = Registry::built_in_static();
        let (maker, model) = device_names("KAW", r.get("multical21"));
        assert_eq!(maker, "Kamstrup");
        assert!(model.starts_with("Multical 21"), "{model}");
        assert_eq!(
            device_names("ZZZ", None),
            ("ZZZ".into(), "Unknown meter".into())
        );
        let (maker, model) = device_names("GAV", r.get("em24"));
        assert_eq!(
            (maker.as_str(), model.as_str()),
            ("Carlo Gavazzi", "EM24 electricity meter")
        );
    }
}

/// The rules over every built-in driver, on the readings its own test telegrams decode to: what
/// a meter of that model would announce.
#[cfg(test)]
mod every_driver {
    use super::*;
    use crate::drivers::run::{DriverRun, MeterOutput};
    use crate::drivers::{ReadingValue, Registry};
    use crate::security::{Key, KeyStore};
    use crate::telegram::decode_wired;
    use crate::wire::hex;

    /// Each test case's last output, with the driver that made it.
    fn outputs() -> Vec<(&'static Driver, MeterOutput)> {
        let registry = Registry::built_in_static();
        let mut out = Vec::new();
        for d in registry.iter() {
            for case in d.tests().iter() {
                let mut keys = KeyStore::new();
                if let Some(k) = case.key.as_deref().and_then(|k| Key::from_hex(k).ok()) {
                    keys.set_default(k);
                }
                let mut run = DriverRun::new(registry, keys);
                let mut last = None;
                for t in &case.telegrams {
                    let mut digits = t.clone();
                    if digits.len() % 2 == 1 {
                        digits.pop();
                    }
                    let Ok(bytes) = hex::decode(&digits) else {
                        continue;
                    };
                    let driver = case.driver.as_deref().unwrap_or(d.name());
                    let applied = if matches!(bytes.as_slice(), [0x68, a, b, 0x68, ..] if a == b) {
                        decode_wired(&bytes)
                            .ok()
                            .and_then(|t| run.apply(&t, driver).ok())
                    } else {
                        match run.decoder().decode(&bytes) {
                            Ok(frame) => match frame.telegram() {
                                Ok(t) => run.apply(&t, driver).ok(),
                                Err(_) => None,
                            },
                            Err(_) => None,
                        }
                    };
                    if applied.is_some() {
                        last = applied;
                    }
                }
                if let Some(o) = last {
                    out.push((d, o));
                }
            }
        }
        out
    }

    /// What the gateway would announce for an output (no merging over telegrams here).
    fn announced(d: &Driver, o: &MeterOutput) -> Vec<Component> {
        let mut c = components_for_driver(d, &o.media, None);
        c.retain(|c| {
            o.readings.iter().any(|r| {
                *r.key == *c.value_key
                    && r.value != ReadingValue::Null
                    && !o.no_value.iter().any(|k| **k == *r.key)
            })
        });
        c
    }

    #[test]
    fn classes_state_classes_and_flags_follow_the_rules() {
        let outputs = outputs();
        assert!(outputs.len() > 150, "{} test outputs", outputs.len());
        let mut snapshots_checked = 0;
        let mut binary = 0;
        for (d, o) in &outputs {
            let comps = announced(d, o);
            let mut keys: Vec<&str> = comps.iter().map(|c| c.key.as_str()).collect();
            keys.sort();
            let n = keys.len();
            keys.dedup();
            assert_eq!(n, keys.len(), "{}: entity keys repeat", d.name());
            for c in &comps {
                let what = format!("{} ({}): {}", d.name(), o.media, c.key);
                let field = d
                    .file
                    .fields
                    .iter()
                    .zip(d.field_keys())
                    .find(|(_, k)| *k == c.value_key)
                    .map(|(f, _)| f)
                    .expect("a component reads a driver field");
                if c.platform == Platform::BinarySensor {
                    binary += 1;
                    assert_eq!(field.quantity, Quantity::Text, "{what}");
                    assert!(!c.on_words.is_empty(), "{what}");
                    continue;
                }
                let textual = matches!(
                    field.quantity,
                    Quantity::Text | Quantity::Date | Quantity::Datetime
                );
                if textual {
                    assert_eq!(c.state_class, None, "{what}");
                    assert_eq!(c.unit, None, "{what}");
                }
                if field.quantity == Quantity::Date {
                    assert_eq!(c.device_class.as_deref(), Some("date"), "{what}");
                }
                // Only texts may treat an empty or zero value as none.
                assert_eq!(c.text, textual, "{what}");
                if let Some(class) = &c.device_class {
                    assert!(
                        class_fits(class, field.quantity, c.unit.as_deref()),
                        "{what}: class {class} with unit {:?}",
                        c.unit
                    );
                    if is_total_class(class) {
                        assert_ne!(c.state_class.as_deref(), Some("measurement"), "{what}");
                    }
                }
                if field.quantity == Quantity::Volume {
                    if let Some(class) = &c.device_class {
                        assert_eq!(class, volume_class(&o.media, &d.file.meter_type), "{what}");
                    }
                }
                if is_snapshot(field) {
                    snapshots_checked += 1;
                    assert_eq!(c.state_class, None, "{what}: a snapshot is no statistic");
                }
                if matches!(c.state_class.as_deref(), Some("total" | "total_increasing")) {
                    let value = o.readings.iter().find(|r| *r.key == *c.value_key);
                    if let Some(ReadingValue::Number(v)) = value.map(|r| &r.value) {
                        assert!(
                            *v >= 0.0 || c.state_class.as_deref() == Some("total"),
                            "{what}: counter {v} is negative"
                        );
                    }
                }
            }
        }
        assert!(snapshots_checked > 100, "{snapshots_checked} snapshots");
        assert!(binary > 20, "{binary} binary sensors");
    }

    /// A water, gas, electricity or heat meter offers its main counter to the Energy dashboard:
    /// every lifetime total it sends of volume or energy is a statistic with the class the
    /// dashboard takes for that kind of meter.
    #[test]
    fn every_main_counter_is_offered_to_the_energy_dashboard() {
        let mut checked = 0;
        let mut missing = Vec::new();
        for (d, o) in outputs() {
            if !matches!(
                d.file.meter_type.as_str(),
                "water" | "gas" | "electricity" | "heat"
            ) {
                continue;
            }
            let comps = announced(d, &o);
            for (field, key) in d.file.fields.iter().zip(d.field_keys()) {
                let lifetime_total = matches!(field.quantity, Quantity::Volume | Quantity::Energy)
                    && !is_snapshot(field)
                    && !field.has("hide")
                    && field
                        .ha
                        .as_ref()
                        .is_some_and(|h| h.state_class.starts_with("total"));
                let sent = o.readings.iter().any(|r| {
                    *r.key == *key && matches!(r.value, ReadingValue::Number(v) if v >= 0.0)
                });
                if !(lifetime_total && sent) {
                    continue;
                }
                checked += 1;
                let wanted = match field.quantity {
                    Quantity::Energy => "energy",
                    _ => volume_class(&o.media, &d.file.meter_type),
                };
                let ok = comps.iter().any(|c| {
                    c.key == key
                        && c.device_class.as_deref() == Some(wanted)
                        && matches!(c.state_class.as_deref(), Some("total" | "total_increasing"))
                });
                if !ok {
                    missing.push(format!("{}: {key}", d.name()));
                }
            }
        }
        assert!(checked > 150, "{checked}");
        assert!(
            missing.is_empty(),
            "not offered to the Energy dashboard: {missing:?}"
        );
    }

    /// The "no value" markers the test telegrams carry are recognised, so the MQTT state leaves
    /// them out: c5isf's empty history slots (0x80000000) and sensostar's all-zero set date
    /// (printed 1999-11-30, as wmbusmeters prints it).
    #[test]
    fn no_value_markers_are_found() {
        let outputs = outputs();
        let marked = |driver: &str, key: &str, shown: ReadingValue| {
            outputs.iter().any(|(d, o)| {
                d.name() == driver
                    && o.no_value.iter().any(|k| k == key)
                    && o.readings
                        .iter()
                        .any(|r| *r.key == *key && r.value == shown)
            })
        };
        assert!(marked(
            "c5isf",
            "prev_10_month_kwh",
            ReadingValue::Number(-2147483648.0)
        ));
        assert!(marked(
            "sensostar",
            "target_date",
            ReadingValue::Text("1999-11-30".into())
        ));
        // A real reading is never marked.
        for (d, o) in &outputs {
            for key in &o.no_value {
                assert!(
                    !key.starts_with("total_") || key.contains("date"),
                    "{}: {key} marked as no value",
                    d.name()
                );
            }
        }
    }

    /// Smoke and door detectors show their state as binary sensors, and so do the meters whose
    /// status has leak, tamper, battery or error words.
    #[test]
    fn detectors_and_alarm_words_become_binary_sensors() {
        let registry = Registry::built_in_static();
        for d in registry.iter() {
            let all = components_for_driver(d, "", None);
            let classes: Vec<&str> = all
                .iter()
                .filter(|c| c.platform == Platform::BinarySensor)
                .filter_map(|c| c.device_class.as_deref())
                .collect();
            match d.file.meter_type.as_str() {
                "smoke" => assert!(classes.contains(&"smoke"), "{}: {classes:?}", d.name()),
                "door_window" => assert!(classes.contains(&"door"), "{}: {classes:?}", d.name()),
                _ => {}
            }
            for (field, key) in d.file.fields.iter().zip(d.field_keys()) {
                let words = field_texts(d, field);
                for class in ["moisture", "tamper", "battery"] {
                    if field.quantity == Quantity::Text
                        && !field.has("hide")
                        && words
                            .iter()
                            .any(|w| flag_class(w, &d.file.meter_type) == Some(class))
                    {
                        assert!(
                            all.iter()
                                .any(|c| c.value_key == key
                                    && c.device_class.as_deref() == Some(class)),
                            "{}: {key} can say {class} but has no such binary sensor",
                            d.name()
                        );
                    }
                }
            }
        }
        let kamwater = registry.get("kamwater").unwrap();
        let leak = components_for_driver(kamwater, "water", None)
            .into_iter()
            .find(|c| c.key == "moisture")
            .expect("kamwater's status has a leak sensor");
        assert!(leak.on_words.iter().any(|w| w == "LEAK"));
        assert!(leak.on_words.iter().any(|w| w == "BURST"));
    }
}
