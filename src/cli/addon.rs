//! `meterbridge addon-config`: turns the Home Assistant add-on's options (`/data/options.json`)
//! and the Supervisor's MQTT service into our YAML configuration. It lives in the binary rather
//! than in the run script so that the conversion is tested without Home Assistant, and so that
//! no secret ever passes through a command line (`ps` shows every process's arguments).

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::config::{self, ValidateOptions};

#[derive(Debug, Args)]
pub struct AddonConfigArgs {
    /// The add-on's options, as the Supervisor writes them.
    #[arg(long, value_name = "FILE", default_value = "/data/options.json")]
    pub options: PathBuf,
    /// The Supervisor's MQTT service (host, port, ssl, username, password) as JSON, as
    /// `bashio::services mqtt` prints it. Without it, only the add-on's own `mqtt` options count.
    #[arg(long, value_name = "FILE")]
    pub mqtt_service: Option<PathBuf>,
    /// The configuration file to write (mode 0600).
    #[arg(long, value_name = "FILE", default_value = "/data/meterbridge.yaml")]
    pub output: PathBuf,
    /// The daemon's state directory written into the configuration.
    #[arg(long, value_name = "DIR", default_value = "/data")]
    pub state_dir: String,
    /// The add-on's slug as the Supervisor knows it (`local_meterbridge`, `<repository>_…`):
    /// the gateway device in Home Assistant then links to the page through ingress.
    #[arg(long, value_name = "SLUG")]
    pub ingress_slug: Option<String>,
}

#[derive(Debug, Error)]
pub enum AddonError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid JSON ({source})")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// An option of the wrong shape; `option` is its path such as `buses[0].baud`.
    #[error("{option}: {message}")]
    Option { option: String, message: String },
    #[error("the MQTT service: {0}")]
    Service(String),
    #[error("{path}: cannot write it: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn option_error(option: impl Into<String>, message: impl Into<String>) -> AddonError {
    AddonError::Option {
        option: option.into(),
        message: message.into(),
    }
}

/// How an add-on option is written into our configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
    Bool,
    /// Timing options where our configuration reads a plain number as milliseconds but the
    /// add-on UI can only hand over text: digits are written as a number, anything else as text.
    MillisOrText,
    /// A duration our configuration reads with a unit (`500ms`, `30m`) or as a bare `0` (off).
    /// Digits are written as a number as for `MillisOrText`, so `0` is accepted and any other
    /// bare number gets the configuration's own "has no unit" message; text stays text.
    Duration,
    /// A meter address: on a bus, up to three digits are a primary address (a number).
    Address,
    /// A secret: written quoted like text, but never echoed in messages.
    Secret,
    /// The TCP bridge's port; becomes `tcp_server: {port, bind}`.
    BridgePort,
}

/// The add-on options of one section, each with how it is written. Every option of the
/// add-on's `schema` must appear here; tests/addon.rs checks that against addon/config.yaml.
const TOP_OPTIONS: &[(&str, Kind)] = &[
    ("log_level", Kind::Text),
    ("dedup_window", Kind::Duration),
    ("settle_time", Kind::Duration),
    ("silent_after", Kind::Duration),
    ("allow_bus_writes", Kind::Bool),
];

const BUS_OPTIONS: &[(&str, Kind)] = &[
    ("name", Kind::Text),
    ("device", Kind::Text),
    ("tcp", Kind::Text),
    ("baud", Kind::Int),
    ("polling", Kind::MillisOrText),
    ("request_timeout", Kind::MillisOrText),
    ("idle_timeout", Kind::MillisOrText),
    ("retry", Kind::Int),
    ("apply_unit_factor", Kind::Bool),
    ("only_values", Kind::Bool),
    ("emit", Kind::Text),
    ("force_reset", Kind::Bool),
    ("max_frames", Kind::Int),
    ("bridge_port", Kind::BridgePort),
];

const RECEIVER_OPTIONS: &[(&str, Kind)] = &[
    ("name", Kind::Text),
    ("type", Kind::Text),
    ("device", Kind::Text),
    ("mode", Kind::Text),
    ("baud", Kind::Int),
    ("address", Kind::Text),
    ("bind", Kind::Text),
    ("topic", Kind::Text),
    ("command", Kind::Text),
    ("dedup", Kind::Bool),
    ("silent_after", Kind::Duration),
];

const METER_OPTIONS: &[(&str, Kind)] = &[
    ("name", Kind::Text),
    ("address", Kind::Address),
    ("bus", Kind::Text),
    ("driver", Kind::Text),
    ("key", Kind::Secret),
    ("polling", Kind::MillisOrText),
    ("max_records", Kind::Int),
    ("expire_after", Kind::Text),
];

const MQTT_OPTIONS: &[&str] = &[
    "url",
    "username",
    "password",
    "base_topic",
    "discovery_prefix",
];

/// Inside the add-on's container the bridge must listen on every interface to be reachable
/// through the port mapping; whether it is reachable from the network is decided by that
/// mapping, which is off by default.
const ADDON_BRIDGE_BIND: &str = "0.0.0.0";

/// Writes `value` as a YAML double-quoted scalar that reads back as exactly `value`, whatever it
/// holds: quotes, backslashes, `#`, leading spaces, line breaks, control characters.
pub fn yaml_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // C0/C1 controls, DEL, and the characters YAML treats as line breaks or a BOM
            // would change the document's meaning or be refused if written raw.
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An option's value, or `None` when it is absent, `null` or empty text (the add-on UI leaves
/// unset optional fields out or empty).
fn given<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(v) => Some(v),
    }
}

fn as_text<'a>(value: &'a Value, option: &str) -> Result<&'a str, AddonError> {
    value
        .as_str()
        .ok_or_else(|| option_error(option, "expected text"))
}

/// Writes one scalar option as ` key: value`; the caller has written the indentation.
fn scalar(
    value: &Value,
    kind: Kind,
    option: &str,
    on_bus: bool,
    out: &mut String,
) -> Result<(), AddonError> {
    match kind {
        Kind::Text | Kind::Secret => {
            let text = match value {
                Value::String(s) => s.clone(),
                // The UI hands over numbers for text options only when edited as YAML.
                Value::Number(n) => n.to_string(),
                _ => return Err(option_error(option, "expected text")),
            };
            out.push_str(&yaml_quote(text.trim()));
        }
        Kind::Int => match value {
            Value::Number(n) if n.is_i64() => {
                let _ = write!(out, "{n}");
            }
            Value::String(s) if is_digits(s.trim()) => out.push_str(s.trim()),
            _ => return Err(option_error(option, "expected a whole number")),
        },
        Kind::Bool => match value {
            Value::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            _ => return Err(option_error(option, "expected true or false")),
        },
        Kind::MillisOrText | Kind::Duration => match value {
            Value::Number(n) if n.is_u64() => {
                let _ = write!(out, "{n}");
            }
            Value::String(s) if is_digits(s.trim()) => out.push_str(s.trim()),
            Value::String(s) => out.push_str(&yaml_quote(s.trim())),
            _ => return Err(option_error(option, "expected a duration such as 15m")),
        },
        Kind::Address => {
            let text = match value {
                Value::String(s) => s.trim().to_string(),
                Value::Number(n) if n.is_u64() => n.to_string(),
                _ => return Err(option_error(option, "expected text")),
            };
            if on_bus && !text.is_empty() && text.len() <= 3 && is_digits(&text) {
                out.push_str(&text);
            } else {
                out.push_str(&yaml_quote(&text));
            }
        }
        Kind::BridgePort => {
            let port = match value {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            }
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| option_error(option, "expected a port number 1 to 65535"))?;
            let _ = write!(
                out,
                "\n      port: {port}\n      bind: {}",
                yaml_quote(ADDON_BRIDGE_BIND)
            );
        }
    }
    Ok(())
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn yaml_key(kind: Kind, key: &str) -> &str {
    match kind {
        Kind::BridgePort => "tcp_server",
        _ => key,
    }
}

/// Writes one list section (`buses`, `receivers`, `meters`).
fn list_section(
    root: &Map<String, Value>,
    section: &str,
    options: &[(&str, Kind)],
    out: &mut String,
) -> Result<usize, AddonError> {
    let Some(value) = given(root, section) else {
        return Ok(0);
    };
    let Value::Array(items) = value else {
        return Err(option_error(section, "expected a list"));
    };
    if items.is_empty() {
        return Ok(0);
    }
    let _ = writeln!(out, "{section}:");
    for (i, item) in items.iter().enumerate() {
        let Value::Object(map) = item else {
            return Err(option_error(
                format!("{section}[{i}]"),
                "expected a mapping",
            ));
        };
        if let Some(unknown) = map.keys().find(|k| !options.iter().any(|(o, _)| o == k)) {
            return Err(option_error(
                format!("{section}[{i}].{unknown}"),
                "not an option of the add-on",
            ));
        }
        let on_bus = given(map, "bus").is_some();
        let mut first = true;
        for (key, kind) in options {
            let Some(value) = given(map, key) else {
                continue;
            };
            out.push_str(if first { "  - " } else { "    " });
            first = false;
            let _ = write!(out, "{}: ", yaml_key(*kind, key));
            scalar(value, *kind, &format!("{section}[{i}].{key}"), on_bus, out)?;
            out.push('\n');
        }
        if first {
            // An item with every option empty: keep it so validation names what is missing.
            out.push_str("  - {}\n");
        }
    }
    Ok(items.len())
}

/// Where the MQTT settings came from, for the summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerSource {
    None,
    Service,
    Options,
}

/// The CA bundle of the add-on image (Alpine's ca-certificates).
const ADDON_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The broker: the add-on's `mqtt.url` wins outright (the service's credentials belong to the
/// service's broker and must not be sent elsewhere); otherwise the Supervisor's service, with
/// the add-on's `username`/`password` replacing the service's where given.
fn mqtt_section(
    root: &Map<String, Value>,
    service: Option<&Map<String, Value>>,
    out: &mut String,
) -> Result<BrokerSource, AddonError> {
    let empty = Map::new();
    let opts = match given(root, "mqtt") {
        None => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err(option_error("mqtt", "expected a mapping")),
    };
    if let Some(unknown) = opts.keys().find(|k| !MQTT_OPTIONS.contains(&k.as_str())) {
        return Err(option_error(
            format!("mqtt.{unknown}"),
            "not an option of the add-on",
        ));
    }
    let text = |key: &str| -> Result<Option<String>, AddonError> {
        given(opts, key)
            .map(|v| as_text(v, &format!("mqtt.{key}")).map(|s| s.trim().to_string()))
            .transpose()
    };
    let (url, mut username, mut password, source) = if let Some(url) = text("url")? {
        (url, None, None, BrokerSource::Options)
    } else if let Some(service) = service {
        let (url, username, password) = service_broker(service)?;
        (url, username, password, BrokerSource::Service)
    } else {
        if let Some(key) = MQTT_OPTIONS.iter().find(|k| given(opts, k).is_some()) {
            return Err(option_error(
                format!("mqtt.{key}"),
                "is set but there is no broker: set mqtt.url, or install the Mosquitto broker add-on",
            ));
        }
        return Ok(BrokerSource::None);
    };
    if let Some(u) = text("username")? {
        username = Some(u);
    }
    if let Some(p) = given(opts, "password") {
        // A password is taken as written: leading or trailing spaces may be part of it.
        password = Some(as_text(p, "mqtt.password")?.to_string());
    }
    let _ = writeln!(out, "mqtt:\n  url: {}", yaml_quote(&url));
    if url.starts_with("mqtts://") {
        // The gateway checks the broker's certificate only against a CA file; the add-on
        // image's system bundle holds the public CAs.
        let _ = writeln!(out, "  ca_file: {}", yaml_quote(ADDON_CA_BUNDLE));
    }
    if let Some(u) = &username {
        let _ = writeln!(out, "  username: {}", yaml_quote(u));
    }
    if let Some(p) = &password {
        if username.is_none() {
            return Err(option_error(
                "mqtt.password",
                "is set without a username; set mqtt.username too",
            ));
        }
        let _ = writeln!(out, "  password: {}", yaml_quote(p));
    }
    for key in ["base_topic", "discovery_prefix"] {
        if let Some(v) = text(key)? {
            let _ = writeln!(out, "  {key}: {}", yaml_quote(&v));
        }
    }
    Ok(source)
}

/// The service's broker as (url, username, password).
fn service_broker(
    service: &Map<String, Value>,
) -> Result<(String, Option<String>, Option<String>), AddonError> {
    let host = match service.get("host") {
        Some(Value::String(h)) if !h.trim().is_empty() => h.trim().to_string(),
        _ => return Err(AddonError::Service("it names no host".into())),
    };
    let tls = match service.get("ssl") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    };
    let port = match service.get("port") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        None | Some(Value::Null) => Some(if tls { 8883 } else { 1883 }),
        _ => None,
    }
    .filter(|p| (1..=65535).contains(p))
    .ok_or_else(|| AddonError::Service("its port is not a port number".into()))?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let scheme = if tls { "mqtts" } else { "mqtt" };
    let text = |key: &str| match service.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    Ok((
        format!("{scheme}://{host}:{port}"),
        text("username"),
        text("password"),
    ))
}

/// What a conversion produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    pub yaml: String,
    pub broker: BrokerSource,
}

/// Converts the add-on options (and the MQTT service, if the Supervisor offers one) into the
/// text of our configuration file.
/// Where the add-on's web page listens: `ingress_port` in addon/config.yaml.
pub const ADDON_WEB_BIND: &str = "0.0.0.0:8099";
/// The Supervisor's ingress proxy, the only client of the add-on's web page.
pub const INGRESS_PROXY: &str = "172.30.32.2";

pub fn convert(
    options: &Value,
    service: Option<&Value>,
    state_dir: &str,
) -> Result<Converted, AddonError> {
    let Value::Object(root) = options else {
        return Err(option_error("options", "expected a mapping"));
    };
    let service = match service {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) if m.is_empty() => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(AddonError::Service("expected a JSON object".into())),
    };
    let sections = ["buses", "receivers", "meters", "mqtt"];
    if let Some(unknown) = root
        .keys()
        .find(|k| !sections.contains(&k.as_str()) && !TOP_OPTIONS.iter().any(|(o, _)| o == k))
    {
        return Err(option_error(
            unknown.as_str(),
            "not an option of the add-on",
        ));
    }
    let mut out = String::new();
    out.push_str(
        "# Written by `meterbridge addon-config` from the add-on's options at every start of the\n\
         # add-on: change the options in Home Assistant, not this file.\n",
    );
    let _ = writeln!(out, "state_dir: {}", yaml_quote(state_dir));
    for (key, kind) in TOP_OPTIONS {
        if let Some(value) = given(root, key) {
            let _ = write!(out, "{key}: ");
            scalar(value, *kind, key, false, &mut out)?;
            out.push('\n');
        }
    }
    list_section(root, "buses", BUS_OPTIONS, &mut out)?;
    list_section(root, "receivers", RECEIVER_OPTIONS, &mut out)?;
    list_section(root, "meters", METER_OPTIONS, &mut out)?;
    let broker = mqtt_section(root, service, &mut out)?;
    // The web page is reached through Home Assistant's ingress only: no host port is mapped,
    // and the ingress proxy (which has logged the user in) is the one address served.
    let _ = writeln!(
        out,
        "web:\n  bind: {}\n  allow_from: [{}]",
        yaml_quote(ADDON_WEB_BIND),
        yaml_quote(INGRESS_PROXY)
    );
    Ok(Converted { yaml: out, broker })
}

fn read_json(path: &Path) -> Result<Value, AddonError> {
    let text = std::fs::read_to_string(path).map_err(|source| AddonError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if text.trim().is_empty() {
        // bashio prints nothing when the Supervisor has no such service.
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|source| AddonError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `text` to `path` with mode 0600. The file is created under a temporary name with that
/// mode and then renamed over `path`, so neither a half-written file nor one readable by others
/// ever exists under either name (an old file's wider mode does not carry over).
pub fn write_private(path: &Path, text: &str) -> Result<(), AddonError> {
    let write_err = |source| AddonError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "meterbridge.yaml".into());
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    // A leftover from an interrupted run would make create_new fail.
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(write_err)
}

/// The page's address inside Home Assistant, for the gateway device's "Visit" link.
pub fn ingress_url(slug: &str) -> Result<String, AddonError> {
    let ok = !slug.is_empty()
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err(option_error(
            "--ingress-slug",
            format!("`{slug}` is not an add-on slug (lower-case letters, digits and _)"),
        ));
    }
    Ok(format!("homeassistant://hassio/ingress/{slug}"))
}

fn convert_files(args: &AddonConfigArgs) -> Result<Converted, AddonError> {
    let options = read_json(&args.options)?;
    let service = args.mqtt_service.as_deref().map(read_json).transpose()?;
    let mut converted = convert(&options, service.as_ref(), &args.state_dir)?;
    if let Some(slug) = &args.ingress_slug {
        // The web section is the last one `convert` writes.
        let _ = writeln!(
            converted.yaml,
            "  public_url: {}",
            yaml_quote(&ingress_url(slug)?)
        );
    }
    write_private(&args.output, &converted.yaml)?;
    Ok(converted)
}

pub fn run(args: &AddonConfigArgs) -> i32 {
    let converted = match convert_files(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    match config::load_with(&args.output, &ValidateOptions::with_built_in_drivers()) {
        Ok((config, warnings)) => {
            for w in &warnings {
                eprintln!("{w}");
            }
            let broker = match converted.broker {
                BrokerSource::None => "no MQTT broker: readings go to the log",
                BrokerSource::Service => "MQTT broker from the Supervisor's service",
                BrokerSource::Options => "MQTT broker from the add-on's mqtt options",
            };
            outln!(
                "{}: written ({} bus{}, {} receiver{}, {} meter{}; {broker})",
                args.output.display(),
                config.buses.len(),
                if config.buses.len() == 1 { "" } else { "es" },
                config.receivers.len(),
                if config.receivers.len() == 1 { "" } else { "s" },
                config.meters.len(),
                if config.meters.len() == 1 { "" } else { "s" },
            );
            0
        }
        Err(errors) => {
            eprintln!("{errors}");
            let n = errors.errors.len();
            eprintln!(
                "{n} error{} in the add-on's options (named as in the add-on's configuration: \
                 meters[0] is the first meter); the gateway was not started",
                if n == 1 { "" } else { "s" },
            );
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::node::{self, Value as Node};
    use serde_json::json;

    fn read_back(quoted: &str) -> Node {
        let doc = node::parse(&format!("v: {quoted}\n")).unwrap();
        doc.get("v").unwrap().value.clone()
    }

    #[test]
    fn quoting_reads_back_exactly() {
        for s in [
            "",
            "plain",
            "with \"quotes\" and 'apostrophes'",
            "back\\slash\\",
            "# not a comment",
            "key: value",
            "  leading and trailing  ",
            "line\nbreak\r\ttab",
            "nul\0bell\u{7}del\u{7f}",
            "next\u{85}line\u{2028}sep\u{2029}bom\u{feff}",
            "Zähler °C €",
            "- [a, b] {c: d} & * ! | > % @ `",
            "true",
            "0123",
            "null",
        ] {
            assert_eq!(read_back(&yaml_quote(s)), Node::Str(s.to_string()), "{s:?}");
        }
    }

    #[test]
    fn service_broker_with_option_overrides() {
        let options = json!({
            "log_level": "info",
            "mqtt": {"username": "meters", "base_topic": "mb"}
        });
        let service = json!({"host": "core-mosquitto", "port": 1883, "ssl": false,
                              "username": "addons", "password": "s3cret"});
        let c = convert(&options, Some(&service), "/data").unwrap();
        assert_eq!(c.broker, BrokerSource::Service);
        let (cfg, _) = config::parse(&c.yaml, "out.yaml").unwrap();
        let mqtt = cfg.mqtt.unwrap();
        assert_eq!(mqtt.host, "core-mosquitto");
        assert_eq!(mqtt.port, 1883);
        assert!(!mqtt.tls);
        assert_eq!(mqtt.username.as_deref(), Some("meters"));
        assert_eq!(
            mqtt.password,
            Some(config::PasswordSource::Inline(config::Secret::new(
                "s3cret"
            )))
        );
        assert_eq!(mqtt.base_topic, "mb");
        assert_eq!(cfg.state_dir, PathBuf::from("/data"));
        // The web page for the ingress proxy alone: on the network, yet no password needed.
        let web = cfg.web.unwrap();
        assert_eq!(web.bind, "0.0.0.0:8099");
        assert_eq!(
            web.allow_from,
            ["172.30.32.2".parse::<std::net::IpAddr>().unwrap()]
        );
        assert!(web.password.is_none());
    }

    #[test]
    fn explicit_url_does_not_take_the_service_credentials() {
        let options = json!({"mqtt": {"url": "mqtts://broker.example:8883"}});
        let service = json!({"host": "core-mosquitto", "port": "1884", "ssl": true,
                              "username": "addons", "password": "s3cret"});
        let c = convert(&options, Some(&service), "/data").unwrap();
        assert_eq!(c.broker, BrokerSource::Options);
        assert!(!c.yaml.contains("s3cret"), "{}", c.yaml);
        let (cfg, _) = config::parse(&c.yaml, "out.yaml").unwrap();
        let mqtt = cfg.mqtt.unwrap();
        assert_eq!(
            (mqtt.host.as_str(), mqtt.port, mqtt.tls),
            ("broker.example", 8883, true)
        );
        assert_eq!(mqtt.ca_file, Some(PathBuf::from(ADDON_CA_BUNDLE)));
        assert_eq!(mqtt.username, None);
    }

    #[test]
    fn tls_service_and_ipv6_host() {
        let service = json!({"host": "fd00::5", "port": 8883, "ssl": true});
        let c = convert(&json!({}), Some(&service), "/data").unwrap();
        let (cfg, _) = config::parse(&c.yaml, "out.yaml").unwrap();
        let mqtt = cfg.mqtt.unwrap();
        assert_eq!(
            (mqtt.host.as_str(), mqtt.port, mqtt.tls),
            ("fd00::5", 8883, true)
        );
    }

    #[test]
    fn no_broker_means_no_mqtt_section_unless_options_ask_for_one() {
        let c = convert(&json!({"mqtt": {}}), None, "/data").unwrap();
        assert_eq!(c.broker, BrokerSource::None);
        assert!(!c.yaml.contains("mqtt:"));
        let e = convert(&json!({"mqtt": {"username": "u"}}), None, "/data").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("mqtt.username: is set but there is no broker"),
            "{e}"
        );
    }

    #[test]
    fn wired_addresses_become_numbers_and_ids_stay_text() {
        let options = json!({
            "buses": [{"name": "cellar", "device": "/dev/ttyUSB0", "polling": "60000",
                       "bridge_port": 8222}],
            "meters": [
                {"name": "heat", "bus": "cellar", "address": "5"},
                {"name": "power", "bus": "cellar", "address": "12345678"},
                {"name": "water", "address": "00123456", "key": "00112233445566778899AABBCCDDEEFF"}
            ]
        });
        let c = convert(&options, None, "/data").unwrap();
        let (cfg, warnings) = config::parse(&c.yaml, "out.yaml").unwrap();
        use crate::config::{MeterAddress, Polling};
        assert_eq!(cfg.meters[0].address, MeterAddress::Primary(5));
        assert_eq!(
            cfg.meters[1].address,
            MeterAddress::Secondary("12345678".into())
        );
        assert_eq!(
            cfg.meters[2].address,
            MeterAddress::Wireless("00123456".into())
        );
        assert_eq!(
            cfg.buses[0].polling,
            Polling::Every(std::time::Duration::from_secs(60))
        );
        let bridge = cfg.buses[0].tcp_server.as_ref().unwrap();
        assert_eq!((bridge.port, bridge.bind.as_str()), (8222, "0.0.0.0"));
        // The bridge on every interface of the container is worth the warning it gets.
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }

    #[test]
    fn wrong_shapes_and_unknown_options_are_named() {
        let e = convert(
            &json!({"buses": [{"name": "b", "baud": "fast"}]}),
            None,
            "/",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "buses[0].baud: expected a whole number");
        let e = convert(
            &json!({"meters": [{"name": "m", "colour": "red"}]}),
            None,
            "/",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "meters[0].colour: not an option of the add-on"
        );
        let e = convert(&json!({"verbose": true}), None, "/").unwrap_err();
        assert_eq!(e.to_string(), "verbose: not an option of the add-on");
        let e = convert(&json!([1]), None, "/").unwrap_err();
        assert_eq!(e.to_string(), "options: expected a mapping");
        let e = convert(&json!({}), Some(&json!({"port": 1883})), "/").unwrap_err();
        assert_eq!(e.to_string(), "the MQTT service: it names no host");
    }

    #[test]
    fn private_file_replaces_a_readable_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("mb-addon-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.yaml");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, "new: 1\n").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new: 1\n");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "temporary file left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
