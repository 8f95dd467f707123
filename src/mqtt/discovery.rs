//! Home Assistant device-based MQTT discovery: one retained document per meter on
//! `<prefix>/device/<object_id>/config`, its entities under `cmps`, generated from the driver
//! files' field metadata.

use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Sensor,
    BinarySensor,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Sensor => "sensor",
            Platform::BinarySensor => "binary_sensor",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// JSON key in the state document (`total_m3`); also the key under `cmps`.
    pub key: String,
    /// Entity name shown under the device (`Total`).
    pub name: String,
    pub platform: Platform,
    pub device_class: Option<String>,
    pub state_class: Option<String>,
    /// Home Assistant spelling: `m³`, `kWh`, `°C`.
    pub unit: Option<String>,
    pub entity_category: Option<String>,
    pub enabled_by_default: bool,
    pub expire_after: Option<u64>,
    pub display_precision: Option<u8>,
    pub icon: Option<String>,
    /// The state document's key the entity reads: `key` for sensors, the text field for a
    /// binary sensor derived from it (`status` for `smoke`).
    pub value_key: String,
    /// The value is a text (a status, a date): an empty one is no value.
    pub text: bool,
    /// Binary sensors: on while the text holds one of these words (texts are separated by spaces
    /// or commas).
    pub on_words: Vec<String>,
}

impl Component {
    pub fn sensor(key: &str, name: &str) -> Component {
        Component {
            key: key.to_string(),
            name: name.to_string(),
            platform: Platform::Sensor,
            device_class: None,
            state_class: None,
            unit: None,
            entity_category: None,
            enabled_by_default: true,
            expire_after: None,
            display_precision: None,
            icon: None,
            value_key: key.to_string(),
            text: false,
            on_words: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceDescriptor {
    /// `meterbridge_kam_76348799`: device id, discovery topic and unique-id prefix.
    pub object_id: String,
    pub name: String,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub hw_version: Option<String>,
    /// Object id of the device this one is reached through (the gateway).
    pub via_device: Option<String>,
    /// The device's "Visit" link in Home Assistant (the gateway's web page).
    pub configuration_url: Option<String>,
    pub state_topic: String,
    pub components: Vec<Component>,
}

/// Where the project lives, when Cargo.toml says so (`o.url` is optional for Home Assistant).
const ORIGIN_URL: Option<&str> = option_env!("CARGO_PKG_REPOSITORY");

pub fn discovery_topic(prefix: &str, object_id: &str) -> String {
    format!("{prefix}/device/{object_id}/config")
}

/// Entity ids allow `[a-z0-9_]` only, object ids also `-`.
fn entity_slug(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect()
}

/// A template that renders without a warning whatever the message holds. A missing key,
/// `null` or (for texts) an empty string renders `None`, Home Assistant's "no value" (the
/// entity shows unknown); `value_json.x` on a missing key would log a template warning for
/// every message, and an empty text would show as a blank state. Binary sensors render nothing
/// when their key is missing (ignored: the last state stays).
fn value_template(c: &Component) -> String {
    let v = json_access(&c.value_key);
    match c.platform {
        // `default(None, true)` also takes an empty text for no value; a number 0 must stay 0.
        Platform::Sensor if c.text => format!("{{{{ {v} | default(None, true) }}}}"),
        Platform::Sensor => format!("{{{{ {v} | default(None) }}}}"),
        Platform::BinarySensor if c.on_words.is_empty() => {
            format!("{{% if {v} is defined %}}{{{{ 'ON' if {v} else 'OFF' }}}}{{% endif %}}")
        }
        Platform::BinarySensor => {
            let words: Vec<String> = c.on_words.iter().map(|w| format!("'{w}'")).collect();
            format!(
                "{{% if {v} is defined and {v} is string %}}{{{{ 'ON' if {v}.replace(',', ' ').split(' ') | select('in', [{}]) | list else 'OFF' }}}}{{% endif %}}",
                words.join(", ")
            )
        }
    }
}

/// `value_json.key`, or `value_json['key']` when the key is not a plain name: Jinja reads
/// `value_json.rssi_demo-stick_dbm` as a subtraction, and the entity never gets a value (a
/// receiver or bus name with a hyphen did exactly that, seen in a real Home Assistant).
fn json_access(key: &str) -> String {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        format!("value_json.{key}")
    } else {
        let quoted = key.replace('\\', "\\\\").replace('\'', "\\'");
        format!("value_json['{quoted}']")
    }
}

fn component_json(d: &DeviceDescriptor, c: &Component) -> Value {
    let mut m = Map::new();
    m.insert("p".into(), json!(c.platform.as_str()));
    m.insert("name".into(), json!(c.name));
    let unique_id = format!("{}_{}", d.object_id, c.key);
    m.insert(
        "default_entity_id".into(),
        json!(format!(
            "{}.{}",
            c.platform.as_str(),
            entity_slug(&unique_id)
        )),
    );
    m.insert("unique_id".into(), json!(unique_id));
    let some = |v: &Option<String>| v.as_deref().filter(|s| *s != "none").map(|s| json!(s));
    if let Some(v) = some(&c.device_class) {
        m.insert("device_class".into(), v);
    }
    if let Some(v) = some(&c.unit) {
        m.insert("unit_of_measurement".into(), v);
    }
    if let Some(v) = some(&c.state_class) {
        m.insert("state_class".into(), v);
    }
    if let Some(v) = some(&c.entity_category) {
        m.insert("entity_category".into(), v);
    }
    if !c.enabled_by_default {
        m.insert("enabled_by_default".into(), json!(false));
    }
    if let Some(s) = c.expire_after.filter(|s| *s > 0) {
        m.insert("expire_after".into(), json!(s));
    }
    if let Some(p) = c.display_precision {
        m.insert("suggested_display_precision".into(), json!(p));
    }
    if let Some(v) = some(&c.icon) {
        m.insert("icon".into(), v);
    }
    m.insert("value_template".into(), json!(value_template(c)));
    Value::Object(m)
}

/// The device-based discovery document (HA ≥ 2024.11) for one device.
pub fn discovery_payload(d: &DeviceDescriptor, base_topic: &str, origin_version: &str) -> String {
    let mut dev = Map::new();
    dev.insert("ids".into(), json!([d.object_id]));
    dev.insert("name".into(), json!(d.name));
    for (key, value) in [
        ("mf", &d.manufacturer),
        ("mdl", &d.model),
        ("sn", &d.serial),
        ("hw", &d.hw_version),
        ("via_device", &d.via_device),
        ("cu", &d.configuration_url),
    ] {
        if let Some(v) = value {
            dev.insert(key.into(), json!(v));
        }
    }
    let mut origin = Map::new();
    origin.insert("name".into(), json!("meterbridge"));
    origin.insert("sw".into(), json!(origin_version));
    if let Some(url) = ORIGIN_URL.filter(|u| !u.is_empty()) {
        origin.insert("url".into(), json!(url));
    }
    let cmps: Map<String, Value> = d
        .components
        .iter()
        .map(|c| (c.key.clone(), component_json(d, c)))
        .collect();
    json!({
        "dev": dev,
        "o": origin,
        "availability": [{"topic": format!("{base_topic}/status")}],
        "state_topic": d.state_topic,
        "qos": 1,
        "cmps": cmps,
    })
    .to_string()
}

/// The gateway as a device of its own; meters name it in `via_device`.
pub fn gateway_descriptor(instance: &str, base_topic: &str, version: &str) -> DeviceDescriptor {
    // Counted since the gateway started: they restart at 0, so they are measurements, not
    // lifetime totals.
    let diagnostic_counter = |key: &str, name: &str| {
        let mut c = Component::sensor(key, name);
        c.state_class = Some("measurement".into());
        c.entity_category = Some("diagnostic".into());
        c
    };
    let mut rate = Component::sensor("telegrams_per_minute", "Telegrams per minute");
    rate.state_class = Some("measurement".into());
    rate.unit = Some("telegrams/min".into());
    rate.icon = Some("mdi:radio-tower".into());
    let mut receiver = Component::sensor("receiver_connected", "Receiver");
    receiver.platform = Platform::BinarySensor;
    receiver.device_class = Some("connectivity".into());
    receiver.entity_category = Some("diagnostic".into());
    // On while a receiver or bus is down; the state's `parts_down` names them.
    let mut down = Component::sensor("parts_down", "Parts down");
    down.platform = Platform::BinarySensor;
    down.device_class = Some("problem".into());
    down.entity_category = Some("diagnostic".into());
    DeviceDescriptor {
        object_id: format!("meterbridge_gw_{}", entity_slug(instance)),
        name: format!("meterbridge {instance}"),
        manufacturer: Some("meterbridge".into()),
        model: Some(format!("Gateway {version}")),
        serial: None,
        hw_version: None,
        via_device: None,
        configuration_url: None,
        state_topic: format!("{base_topic}/gateway/state"),
        components: vec![
            rate,
            diagnostic_counter("decode_errors", "Decode errors"),
            diagnostic_counter("key_errors", "Key errors"),
            diagnostic_counter("bus_errors", "Bus errors"),
            receiver,
            down,
        ],
    }
}

fn id_chars(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect()
}

/// `meterbridge_<manufacturer>_<id>`, lower case, `[a-z0-9_-]` only: stable across renames.
pub fn object_id(manufacturer: &str, id: &str) -> String {
    format!("meterbridge_{}_{}", id_chars(manufacturer), id_chars(id))
}

/// A meter name made safe as one topic level: lower case `[a-z0-9_-]`, runs of anything else
/// become one `_`; never empty.
pub fn slug(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.trim().chars() {
        let c = match c {
            'a'..='z' | '0'..='9' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    let trimmed = out.trim_matches('_');
    if trimmed.is_empty() {
        "meter".into()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_slugs_are_topic_and_entity_safe() {
        assert_eq!(object_id("KAM", "76348799"), "meterbridge_kam_76348799");
        assert_eq!(object_id("K/M", "7a+B"), "meterbridge_k_m_7a_b");
        assert_eq!(slug("Küche Wasser #2"), "k_che_wasser_2");
        assert_eq!(slug("  "), "meter");
        assert_eq!(slug("a/b+c"), "a_b_c");
        assert_eq!(
            discovery_topic("homeassistant", "meterbridge_kam_1"),
            "homeassistant/device/meterbridge_kam_1/config"
        );
    }

    /// A missing key never warns; an empty text is no value, a count of 0 stays 0.
    #[test]
    fn templates_cannot_warn_and_keep_zero() {
        let count = Component::sensor("consumption_at_set_date_3_hca", "x");
        assert_eq!(
            value_template(&count),
            "{{ value_json.consumption_at_set_date_3_hca | default(None) }}"
        );
        let mut status = Component::sensor("status", "Status");
        status.text = true;
        assert_eq!(
            value_template(&status),
            "{{ value_json.status | default(None, true) }}"
        );
        let mut leak = Component::sensor("moisture", "Leak");
        leak.platform = Platform::BinarySensor;
        leak.value_key = "status".into();
        leak.on_words = vec!["LEAK".into(), "BURST".into()];
        let t = value_template(&leak);
        assert!(
            t.starts_with("{% if value_json.status is defined and value_json.status is string %}"),
            "{t}"
        );
        assert!(t.contains("select('in', ['LEAK', 'BURST'])"), "{t}");
    }

    /// Keys that are not plain names (a receiver called `demo-stick`) are read with brackets.
    #[test]
    fn keys_with_hyphens_are_read_with_brackets() {
        let rate = Component::sensor("receiver_demo-stick_per_minute", "x");
        assert_eq!(
            value_template(&rate),
            "{{ value_json['receiver_demo-stick_per_minute'] | default(None) }}"
        );
        let mut silent = Component::sensor("receiver_demo-stick_silent", "x");
        silent.platform = Platform::BinarySensor;
        assert_eq!(
            value_template(&silent),
            "{% if value_json['receiver_demo-stick_silent'] is defined %}{{ 'ON' if value_json['receiver_demo-stick_silent'] else 'OFF' }}{% endif %}"
        );
        assert_eq!(json_access("9lives"), "value_json['9lives']");
        assert_eq!(json_access("it's"), "value_json['it\\'s']");
        assert_eq!(json_access("total_m3"), "value_json.total_m3");
    }

    #[test]
    fn payload_omits_none_and_defaults() {
        let mut c = Component::sensor("status", "Status");
        c.device_class = Some("none".into());
        let d = DeviceDescriptor {
            object_id: "meterbridge_x-y_1".into(),
            name: "X".into(),
            state_topic: "b/x/state".into(),
            components: vec![c],
            ..Default::default()
        };
        let v: Value = serde_json::from_str(&discovery_payload(&d, "b", "9.9")).unwrap();
        let status = &v["cmps"]["status"];
        assert_eq!(
            status["default_entity_id"],
            "sensor.meterbridge_x_y_1_status"
        );
        assert_eq!(status["unique_id"], "meterbridge_x-y_1_status");
        for absent in ["device_class", "enabled_by_default", "unit_of_measurement"] {
            assert!(status.get(absent).is_none(), "{absent}");
        }
        assert_eq!(v["dev"], json!({"ids": ["meterbridge_x-y_1"], "name": "X"}));
    }
}
