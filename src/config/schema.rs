//! The typed configuration the daemon runs on. Values here have passed validation
//! (`super::validate`), so the daemon does not check them again.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::receivers::{LinkMode, StickKind};

/// A secret (meter key, inline MQTT password). `Debug` never shows it, so a configuration can
/// be logged or printed in a bug report without leaking it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that needs it (decryption, the MQTT login).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from; `None` when parsed from text.
    pub path: Option<PathBuf>,
    pub state_dir: PathBuf,
    /// How often the state cache is written when it changed (and at shutdown).
    pub state_save_interval: Duration,
    /// The level of everything no directive names (the bare level of `log_level`).
    pub log_level: LogLevel,
    /// `log_level` as written, level or `RUST_LOG`-style directives (`meterbridge::mqtt=debug,info`);
    /// the logging set-up parses it (`RUST_LOG` wins over it).
    pub log_filter: String,
    /// `log_format`: `text` (default) or `json`; `--log-format` wins over it.
    pub log_format: crate::logging::LogFormat,
    pub drivers_dir: Option<PathBuf>,
    /// Wireless telegrams repeated within this window are dropped; zero turns that off.
    pub dedup_window: Duration,
    /// How long the first copy of a wireless telegram waits for the copies other receivers
    /// hear, so one reading goes out with the best RSSI; zero publishes the first copy at once.
    pub settle_time: Duration,
    /// A receiver that hears nothing for this long is reported silent; zero never.
    pub silent_after: Duration,
    pub allow_bus_writes: bool,
    pub buses: Vec<BusConfig>,
    pub receivers: Vec<ReceiverConfig>,
    pub meters: Vec<MeterConfig>,
    /// `None`: readings go to standard output as JSON lines.
    pub mqtt: Option<MqttConfig>,
    /// The web page (`web:`); `None` when the section is absent: no port is opened unasked.
    pub web: Option<WebConfig>,
    /// Names of the meters merged from the page's saved file (`web::added`), not from the
    /// configuration file: the ones the page may edit.
    pub page_meters: Vec<String>,
}

/// The web page's listener and who may use it.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// `host:port`; port 0 takes any free port (tests, the demo).
    pub bind: String,
    /// HTTP Basic password (any user name), for browsers.
    pub password: Option<PasswordSource>,
    /// Bearer token, for scripts.
    pub token: Option<Secret>,
    /// When not empty, only these client addresses are served (the Home Assistant ingress
    /// proxy); everyone else gets 403.
    pub allow_from: Vec<std::net::IpAddr>,
    /// Where people reach the page, when it is not `bind` (behind a proxy, a wildcard bind,
    /// Home Assistant ingress): the gateway device's `configuration_url` in discovery.
    pub public_url: Option<String>,
}

impl WebConfig {
    /// The link Home Assistant shows on the gateway device ("Visit"): `public_url`, else the
    /// address the page listens on (`listening`, the actual port when `bind` asked for any)
    /// unless that is a wildcard, which names no host a browser could open.
    pub fn configuration_url(&self, listening: Option<std::net::SocketAddr>) -> Option<String> {
        if let Some(url) = &self.public_url {
            return Some(url.clone());
        }
        let addr = listening.or_else(|| self.bind.parse().ok())?;
        (!addr.ip().is_unspecified() && addr.port() != 0).then(|| format!("http://{addr}/"))
    }
}

pub const DEFAULT_WEB_BIND: &str = "127.0.0.1:8099";

pub const DEFAULT_STATE_DIR: &str = "./meterbridge-state";
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(10);
pub const DEFAULT_SETTLE_TIME: Duration = Duration::from_millis(500);
/// Longer would hold every reading back noticeably; no receiver is that late.
pub const MAX_SETTLE_TIME: Duration = Duration::from_secs(5);
pub const DEFAULT_SILENT_AFTER: Duration = Duration::from_secs(30 * 60);
pub const DEFAULT_STATE_SAVE_INTERVAL: Duration = Duration::from_secs(30);

/// Ordered from the fewest messages to the most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone)]
pub struct BusConfig {
    pub name: String,
    pub endpoint: BusEndpoint,
    pub polling: Polling,
    pub request_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    /// Repeats of a request that got no valid answer.
    pub retry: u32,
    pub apply_unit_factor: bool,
    pub only_values: bool,
    pub emit: Emit,
    /// Send SND_NKE before each read.
    pub force_reset: bool,
    pub max_frames: u32,
    pub tcp_server: Option<TcpBridgeConfig>,
}

pub const DEFAULT_BAUD: u32 = 2400;
pub const DEFAULT_POLLING: Duration = Duration::from_secs(60);
pub const DEFAULT_RETRY: u32 = 2;
pub const DEFAULT_MAX_FRAMES: u32 = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEndpoint {
    Serial {
        device: String,
        baud: u32,
    },
    /// `host:port` of an M-Bus/TCP gateway.
    Tcp {
        address: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Polling {
    Every(Duration),
    /// 5-field cron expressions (minute hour day month weekday); a read starts whenever any
    /// of them matches.
    Cron(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// Publish a reading only when a value differs from the last one published.
    Changes,
    /// Publish every reading.
    Every,
    /// Publish on change, and again after this long without a change.
    Interval(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpBridgeConfig {
    pub port: u16,
    pub bind: String,
    pub idle_timeout: Duration,
}

pub const DEFAULT_BRIDGE_PORT: u16 = 8222;
pub const DEFAULT_BRIDGE_BIND: &str = "127.0.0.1";
pub const DEFAULT_BRIDGE_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub name: String,
    pub kind: ReceiverKind,
    /// Overrides the global `dedup_window` being on or off for this receiver.
    pub dedup: Option<bool>,
    /// Overrides the global `silent_after` for this receiver (zero: never reported).
    pub silent_after: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverKind {
    Stick {
        /// `im871a`, `iu891a`, `amb8465` or `cul` (aliases are stored under these names).
        stick: String,
        device: String,
        /// `t1`, `c1`, `s1` or `c1t1`.
        mode: String,
        baud: Option<u32>,
    },
    RtlWmbus {
        /// Shell command whose output is rtl_wmbus lines; `None` reads standard input.
        command: Option<String>,
    },
    HexStdin,
    TcpClient {
        address: String,
    },
    TcpServer {
        /// `host:port`.
        bind: String,
    },
    Udp {
        /// `host:port`.
        bind: String,
    },
    /// Raw telegrams (hex) arriving on this topic of the configured broker.
    Mqtt {
        topic: String,
    },
    Simulated {
        stick: String,
        telegrams: Option<PathBuf>,
        interval: Duration,
    },
}

pub const DEFAULT_LINK_MODE: &str = "t1";
pub const DEFAULT_SIM_INTERVAL: Duration = Duration::from_secs(5);

impl ReceiverKind {
    /// The stick family of a stick or simulated receiver.
    pub fn stick_kind(&self) -> Option<StickKind> {
        match self {
            ReceiverKind::Stick { stick, .. } | ReceiverKind::Simulated { stick, .. } => {
                StickKind::from_str(stick).ok()
            }
            _ => None,
        }
    }

    /// The link mode of a stick receiver.
    pub fn link_mode(&self) -> Option<LinkMode> {
        match self {
            ReceiverKind::Stick { mode, .. } => LinkMode::from_str(mode).ok(),
            _ => None,
        }
    }

    /// The `type:` this kind is written as.
    pub fn type_name(&self) -> &str {
        match self {
            ReceiverKind::Stick { stick, .. } => stick,
            ReceiverKind::RtlWmbus { .. } => "rtlwmbus",
            ReceiverKind::HexStdin => "hex_stdin",
            ReceiverKind::TcpClient { .. } => "tcp_client",
            ReceiverKind::TcpServer { .. } => "tcp_server",
            ReceiverKind::Udp { .. } => "udp",
            ReceiverKind::Mqtt { .. } => "mqtt",
            ReceiverKind::Simulated { .. } => "simulated",
        }
    }
}

#[derive(Debug, Clone)]
pub struct MeterConfig {
    pub name: String,
    pub address: MeterAddress,
    /// The wired bus the meter hangs on; `None` for a wireless meter.
    pub bus: Option<String>,
    /// A driver name or alias, or `auto` to detect it from the telegram.
    pub driver: String,
    pub key: Option<KeySource>,
    pub fields: Vec<FieldAdjust>,
    pub polling: Option<Polling>,
    pub max_frames: Option<u32>,
    pub max_records: Option<u32>,
    pub expire_after: Option<Duration>,
}

impl MeterConfig {
    /// A meter with nothing but its name, address and driver set (what the web page adds):
    /// no key, no field adjustments, the bus's polling and limits.
    pub fn new(name: String, address: MeterAddress, driver: String) -> MeterConfig {
        MeterConfig {
            name,
            address,
            bus: None,
            driver,
            key: None,
            fields: Vec::new(),
            polling: None,
            max_frames: None,
            max_records: None,
            expire_after: None,
        }
    }

    /// The name as it appears in MQTT topics and entity ids.
    pub fn slug(&self) -> String {
        topic_slug(&self.name)
    }
}

pub const DEFAULT_DRIVER: &str = "auto";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MeterAddress {
    /// 0..=250.
    Primary(u8),
    /// 8 decimal digits (the identification number), or 16 hex digits (id, manufacturer,
    /// version, medium) in upper case.
    Secondary(String),
    /// 8 hex digits, lower case.
    Wireless(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// 32 hex digits.
    Inline(Secret),
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldAdjust {
    /// The field's JSON name, e.g. `total_m3`.
    pub field: String,
    pub scale: f64,
    pub offset: f64,
}

#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<PasswordSource>,
    pub client_id: String,
    pub base_topic: String,
    pub qos: u8,
    pub retain: bool,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub discovery_prefix: String,
    pub discovery: bool,
    /// Readings kept while the broker is away; the oldest are dropped beyond this.
    pub queue_limit: usize,
    /// MQTT keep-alive: a connection that goes silent is given up after about two of these.
    pub keep_alive: Duration,
}

pub const DEFAULT_CLIENT_ID: &str = "meterbridge";
pub const DEFAULT_BASE_TOPIC: &str = "meterbridge";
pub const DEFAULT_QOS: u8 = 1;
pub const DEFAULT_DISCOVERY_PREFIX: &str = "homeassistant";
pub const DEFAULT_QUEUE_LIMIT: usize = 10_000;
pub const DEFAULT_MQTT_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The CONNECT packet carries the keep-alive as a 16-bit number of seconds.
pub const MAX_MQTT_KEEP_ALIVE: Duration = Duration::from_secs(65_535);
pub const DEFAULT_MQTT_PORT: u16 = 1883;
pub const DEFAULT_MQTTS_PORT: u16 = 8883;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    Inline(Secret),
    File(PathBuf),
    /// Name of an environment variable holding the password.
    Env(String),
}

/// How a meter name becomes part of a topic or entity id: ASCII letters and digits are kept
/// (lower-cased), every run of anything else becomes one `_`, and `_` at either end is dropped.
/// `"Kitchen Water-1"` → `kitchen_water_1`.
pub fn topic_slug(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('_') {
            slug.push('_');
        }
    }
    while slug.ends_with('_') {
        slug.pop();
    }
    slug
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(topic_slug("Kitchen Water-1"), "kitchen_water_1");
        assert_eq!(topic_slug("  heat..meter  "), "heat_meter");
        assert_eq!(topic_slug("Zähler"), "z_hler");
        assert_eq!(topic_slug("ÄÖÜ"), "");
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("00112233445566778899AABBCCDDEEFF");
        assert_eq!(format!("{s:?}"), "\"<redacted>\"");
        assert_eq!(s.expose(), "00112233445566778899AABBCCDDEEFF");
    }
}
