//! The gateway: wires the configured inputs to the decoder, the state cache and the outputs.
//! One task owns the decoder and the state (no locks on the telegram path); inputs and buses
//! are tasks of their own that send it events. Meters are found by address in maps, never by a
//! loop over the configuration.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};
use tracing::instrument::WithSubscriber as _;
use tracing::{debug, info, trace, warn};

mod bridge_topics;
mod web_view;
mod web_wired;

use super::bus::{run_bus, target_of, BusCommand, BusEvent, PolledMeter};
use super::state::{StateCache, StateError};
use crate::config::schema::{
    Config, Emit, KeySource, MeterAddress, MeterConfig, PasswordSource, Polling, ReceiverKind,
};
use crate::drivers::run::{DriverRun, MeterOutput};
use crate::drivers::Registry;
use crate::master::ReadOptions;
use crate::mqtt::client::{Incoming, MqttSettings, Publisher};
use crate::mqtt::discovery::{self, DeviceDescriptor};
use crate::mqtt::entities;
use crate::output::json::push_str;
use crate::output::wmbusmeters::{media_name, push_value};
use crate::receivers::input::{self, InputEvent, InputSpec};
use crate::receivers::merge::{HeardBy, Merger, Offer, Settled};
use crate::receivers::LinkMode;
use crate::security::KeyStore;
use crate::sim::stick::{StickSimConfig, StickSimLog};
use crate::telegram::decode_wired;
use crate::telegram::wireless::parse_key_argument;
use crate::wire::wireless::strip_dll_crcs;

/// How readings are printed on standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrintFormat {
    /// Nothing on standard output (MQTT only).
    None,
    /// The state document, one JSON object per line.
    Json,
    /// One line per reading for people (the demo).
    Text,
}

/// What the caller decides beyond the configuration file.
pub struct RunOptions {
    pub print: PrintFormat,
    /// Replaces the configuration's `mqtt` section (the demo's `--mqtt URL`).
    pub mqtt: Option<MqttSettings>,
    /// Set to `true` to stop the gateway (tests, demo duration); Ctrl-C and SIGTERM also stop it.
    pub stop: Option<watch::Receiver<bool>>,
    /// Name of this gateway instance in discovery (the gateway device's id).
    pub instance: String,
    /// State documents that were emitted, for tests: (meter slug, JSON).
    pub emitted: Option<mpsc::UnboundedSender<(String, String)>>,
    /// Take every device and retained state this run published off the broker when it ends
    /// (the demo: it must leave nothing behind in a real Home Assistant).
    pub withdraw_at_exit: bool,
    /// Told the web page's address once it listens (tests bind port 0).
    pub web_bound: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            print: PrintFormat::Json,
            mqtt: None,
            stop: None,
            instance: "main".into(),
            emitted: None,
            withdraw_at_exit: false,
            web_bound: None,
        }
    }
}

/// Counters shown on the gateway device.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GatewayStats {
    pub telegrams: u64,
    pub readings_emitted: u64,
    pub decode_errors: u64,
    pub key_errors: u64,
    pub bus_errors: u64,
    pub duplicates: u64,
    pub unknown_meters: u64,
    /// Gateway state documents and `bridge/devices` and `bridge/event` messages published
    /// (they share the outage queue with readings).
    pub gateway_states: u64,
    /// What became of the readings sent to MQTT, at shutdown; `None` without MQTT.
    pub mqtt: Option<crate::mqtt::client::MqttStats>,
}

struct Meter {
    cfg: MeterConfig,
    /// Key in the state cache: stable across renames.
    state_key: String,
    slug: String,
    emit: Emit,
    expire_after: Option<u64>,
    /// The discovery document's object id once announced.
    announced: Option<String>,
    /// The state keys the announced document has entities for: what the meter has sent (with
    /// a value) so far. It only grows, and it is rebuilt from the saved state after a restart,
    /// so the document never shrinks or flaps.
    announced_keys: std::collections::BTreeSet<String>,
    /// The bus says `only_values`: the state document carries the readings and the time only.
    only_values: bool,
    /// Driver, medium and id of the last decoded telegram: what the state document names, also
    /// when it is re-emitted without a new telegram.
    identity: Option<(String, String, String)>,
    /// Which receivers hear this meter (wireless meters).
    reception: Reception,
}

/// Which receivers hear a wireless meter, and how well.
#[derive(Debug, Default)]
struct Reception {
    /// Receivers that heard the last telegram, with their RSSI, in the order heard.
    heard_by: Vec<(Arc<str>, Option<i16>)>,
    /// The receiver whose copy of the last telegram was published (the best RSSI).
    best_receiver: Option<Arc<str>>,
    /// Per receiver that ever heard this meter (since the start): when last, with what RSSI.
    last_seen_by: Vec<(Arc<str>, SystemTime, Option<i16>)>,
}

/// One receiver's activity: what the gateway device and the web view show per receiver, and
/// whether it has gone silent.
struct ReceiverActivity {
    /// Copies delivered, duplicates included (what the receiver did, not what was published).
    telegrams: u64,
    /// Copies per second over the last minute, in a ring: constant memory at any rate.
    seconds: [u32; 60],
    /// The second (since `started`) the ring was last moved to.
    second: u64,
    started: Instant,
    /// Configured meters it heard, by index (bounded by the configuration).
    meters: HashSet<usize>,
    last_heard: Option<Instant>,
    /// Zero: never reported silent.
    silent_after: Duration,
    silent: bool,
}

impl ReceiverActivity {
    fn new(silent_after: Duration) -> ReceiverActivity {
        ReceiverActivity {
            telegrams: 0,
            seconds: [0; 60],
            second: 0,
            started: Instant::now(),
            meters: HashSet::new(),
            last_heard: None,
            silent_after,
            silent: false,
        }
    }

    /// Moves the ring to `now`, clearing the seconds nobody counted in.
    fn advance(&mut self, now: Instant) {
        let second = now.saturating_duration_since(self.started).as_secs();
        if second <= self.second {
            return;
        }
        let gap = (second - self.second).min(60);
        for s in 1..=gap {
            self.seconds[((self.second + s) % 60) as usize] = 0;
        }
        self.second = second;
    }

    fn heard(&mut self, now: Instant) {
        self.advance(now);
        self.seconds[(self.second % 60) as usize] += 1;
        self.telegrams += 1;
        self.last_heard = Some(now);
    }

    fn per_minute(&mut self, now: Instant) -> u64 {
        self.advance(now);
        self.seconds.iter().map(|&n| u64::from(n)).sum()
    }

    /// Heard nothing for `silent_after` (counted from the start if it never heard anything).
    fn is_silent(&self, now: Instant) -> bool {
        !self.silent_after.is_zero()
            && now.saturating_duration_since(self.last_heard.unwrap_or(self.started))
                >= self.silent_after
    }
}

/// The state key of a receiver's RSSI for a meter: `rssi_garden_dbm`.
fn receiver_rssi_key(receiver: &str) -> String {
    format!("rssi_{}_dbm", discovery::slug(receiver))
}

enum Sink {
    Stdout,
    Mqtt {
        publisher: Publisher,
        discovery: bool,
    },
}

struct Gateway {
    registry: &'static Registry,
    run: DriverRun<'static>,
    state: StateCache,
    meters: Vec<Meter>,
    wireless: HashMap<String, usize>,
    /// Copies of one telegram from several receivers become one reading.
    merge: Merger,
    /// What each configured receiver heard, by name.
    receivers: HashMap<Arc<str>, ReceiverActivity>,
    /// More than one wireless receiver is configured: state documents name who heard what.
    multi_receiver: bool,
    no_dedup: HashSet<Arc<str>>,
    sink: Sink,
    print: PrintFormat,
    emitted: Option<mpsc::UnboundedSender<(String, String)>>,
    stats: GatewayStats,
    minute: Vec<Instant>,
    receivers_up: HashMap<Arc<str>, bool>,
    /// Buses by name: whether their connection is up (absent until it was first tried).
    buses_up: HashMap<String, bool>,
    warned: HashSet<String>,
    base_topic: String,
    instance: String,
    allow_bus_writes: bool,
    /// Command channels of the bus tasks, by bus name.
    bus_commands: Vec<(String, mpsc::Sender<BusCommand>)>,
    /// A wireless scan requested over MQTT: until when, and what was heard.
    listening: Option<(
        Instant,
        std::collections::BTreeMap<String, serde_json::Value>,
    )>,
    /// What the web page shows; `None` without a `web` section.
    web: Option<web_view::WebState>,
    /// The meters as `<base>/bridge/devices` lists them; `None` without MQTT.
    bridge: Option<bridge_topics::BridgeDevices>,
    /// The web page's wired buses (scans, reads); `None` without a `web` section.
    wired_web: Option<web_wired::WiredWeb>,
}

fn state_key(m: &MeterConfig) -> String {
    match (&m.address, &m.bus) {
        (MeterAddress::Wireless(id), _) => format!("wmbus/{id}"),
        (MeterAddress::Primary(a), Some(bus)) => format!("bus/{bus}/{a}"),
        (MeterAddress::Secondary(s), Some(bus)) => format!("bus/{bus}/{s}"),
        (a, None) => format!("meter/{a:?}"),
    }
}

fn read_secret_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Keys of the configured wireless meters.
pub(crate) fn key_store(config: &Config) -> Result<KeyStore, String> {
    let mut keys = KeyStore::default();
    for (i, m) in config.meters.iter().enumerate() {
        let (MeterAddress::Wireless(id), Some(source)) = (&m.address, &m.key) else {
            continue;
        };
        let hex = match source {
            KeySource::Inline(secret) => secret.expose().to_string(),
            KeySource::File(path) => read_secret_file(path)
                .map_err(|e| format!("meters[{i}] ({}): key_file: {e}", m.name))?,
        };
        parse_key_argument(&mut keys, &format!("{id}={hex}"))
            .map_err(|e| format!("meters[{i}] ({}): {}", m.name, e.replace("--key ", "key ")))?;
    }
    Ok(keys)
}

/// MQTT settings from the configuration (password from the file or environment it names).
pub fn mqtt_settings(config: &Config) -> Result<Option<MqttSettings>, String> {
    let Some(m) = &config.mqtt else {
        return Ok(None);
    };
    let password = match &m.password {
        None => None,
        Some(PasswordSource::Inline(s)) => Some(s.expose().to_string()),
        Some(PasswordSource::File(p)) => {
            Some(read_secret_file(p).map_err(|e| format!("mqtt.password_file: {e}"))?)
        }
        Some(PasswordSource::Env(var)) => Some(std::env::var(var).map_err(|_| {
            format!("mqtt.password_env: the environment variable {var} is not set")
        })?),
    };
    let extra_subscriptions = config
        .receivers
        .iter()
        .filter_map(|r| match &r.kind {
            ReceiverKind::Mqtt { topic } => Some(topic.clone()),
            _ => None,
        })
        .collect();
    Ok(Some(MqttSettings {
        host: m.host.clone(),
        port: m.port,
        tls: m.tls,
        username: m.username.clone(),
        password,
        client_id: m.client_id.clone(),
        base_topic: m.base_topic.clone(),
        qos: m.qos,
        retain: m.retain,
        ca_file: m.ca_file.clone(),
        client_cert: m.client_cert.clone(),
        client_key: m.client_key.clone(),
        discovery_prefix: m.discovery_prefix.clone(),
        discovery: m.discovery,
        queue_limit: m.queue_limit,
        extra_subscriptions,
        keep_alive: m.keep_alive,
        // Queued readings survive a crash next to the rest of the state.
        outbox_dir: Some(config.state_dir.clone()),
    }))
}

/// Longest part of an input's complaint that goes into the log.
const LOGGED_REASON: usize = 160;

/// What an input said about bytes it refused, fit for a log line: whatever a peer sent (random
/// bytes, escape sequences, a megabyte of garbage quoted back) is cut to [`LOGGED_REASON`]
/// characters, and control characters are shown as escapes instead of reaching the terminal.
fn loggable(reason: &str) -> String {
    let mut out = String::new();
    for (n, c) in reason.chars().enumerate() {
        if n >= LOGGED_REASON {
            out.push('…');
            break;
        }
        if c.is_control() || c == char::REPLACEMENT_CHARACTER {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn timestamp(t: SystemTime) -> String {
    crate::cli::listen::utc_timestamp(t)
}

/// Does an MQTT topic filter (`+`, `#`) match a topic?
fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl Gateway {
    /// Whether a warning about `topic` is the first one: things that repeat (a meter with a
    /// wrong key sends every few seconds) are said once per kind and then only counted.
    fn first_time(&mut self, topic: String) -> bool {
        // Bounded: a gateway runs for years among meters that come and go.
        if self.warned.len() >= 10_000 {
            self.warned.clear();
        }
        self.warned.insert(topic)
    }

    fn wireless_telegram(&mut self, input: &Arc<str>, heard: crate::receivers::Heard) {
        let stripped = match strip_dll_crcs(&heard.frame) {
            Ok(s) => s.bytes,
            Err(e) => {
                self.stats.decode_errors += 1;
                if self.first_time(format!("crc/{input}")) {
                    warn!(receiver = %input, "{input}: telegram refused at the data link layer: {e} (further ones are counted, not shown)");
                }
                return;
            }
        };
        self.receiver_heard(input, heard.received);
        let suppress = !self.no_dedup.contains(input);
        match self.merge.offer(input, heard, stripped, suppress) {
            Offer::Now(settled) => self.settled(*settled),
            Offer::Held => {}
            Offer::Duplicate => self.stats.duplicates += 1,
        }
    }

    /// Hands over the telegrams whose settle time is over.
    fn settle_due(&mut self) {
        for settled in self.merge.take_due(Instant::now()) {
            self.settled(settled);
        }
    }

    /// One telegram, heard by one receiver or more: decoded and published once, from the copy
    /// heard best.
    fn settled(&mut self, settled: Settled) {
        let Settled {
            input,
            heard,
            stripped,
            copies,
        } = settled;
        let input = &input;
        // Every copy after the first was a duplicate, as when the first copy alone was kept.
        self.stats.duplicates += copies.len().saturating_sub(1) as u64;
        self.stats.telegrams += 1;
        self.minute.push(heard.received);
        trace!(
            receiver = %input,
            "{input}: telegram of {} bytes{}",
            stripped.len(),
            heard
                .rssi_dbm
                .map(|r| format!(", {r} dBm"))
                .unwrap_or_default()
        );
        let decoded = self.run.decoder().decode(&stripped);
        self.web_heard(input, heard.rssi_dbm, &decoded, &stripped);
        self.bridge_heard(input, heard.rssi_dbm, &decoded);
        if let Some((_, heard_ids)) = &mut self.listening {
            let link = match &decoded {
                Ok(f) => Some(&f.link),
                Err(e) => e.link.as_deref(),
            };
            if let Some(l) = link {
                let id = l.meter_id().to_ascii_lowercase();
                let driver = self
                    .registry
                    .detect(
                        &l.manufacturer_letters(),
                        l.dll.version,
                        l.dll.device_type.code(),
                    )
                    .map(|d| d.name().to_string());
                heard_ids.insert(
                    id.clone(),
                    serde_json::json!({
                        "id": id,
                        "manufacturer": l.manufacturer_letters(),
                        "media": media_name(l.dll.device_type.code()),
                        "version": l.dll.version,
                        "encryption": crate::cli::listen::encryption_name(l),
                        "driver": driver,
                        "rssi_dbm": heard.rssi_dbm,
                        "configured": self.wireless.contains_key(&id),
                    }),
                );
            }
        }
        let frame = match decoded {
            Ok(f) => f,
            Err(e) => {
                let id = e.link.as_ref().map(|l| l.meter_id().to_ascii_lowercase());
                let configured = id.as_ref().and_then(|id| self.wireless.get(id)).copied();
                match configured {
                    Some(i) => {
                        if e.is_key_error() {
                            self.stats.key_errors += 1;
                        } else {
                            self.stats.decode_errors += 1;
                        }
                        let name = self.meters[i].cfg.name.clone();
                        if self.first_time(format!("decode/{name}")) {
                            warn!(meter = %name, "meter {name}: {e} (repeats of this are counted, not shown)");
                        }
                    }
                    None => {
                        if let (Some(id), Some(link)) = (id, e.link.as_ref()) {
                            // Encrypted, but its header still says which driver would read it.
                            let driver = self
                                .registry
                                .detect(
                                    &link.manufacturer_letters(),
                                    link.dll.version,
                                    link.dll.device_type.code(),
                                )
                                .map(|d| d.name().to_string());
                            self.unknown_meter(&id, driver.as_deref());
                        } else {
                            self.stats.decode_errors += 1;
                        }
                    }
                }
                return;
            }
        };
        let id = frame.link.meter_id().to_ascii_lowercase();
        let Some(&index) = self.wireless.get(&id) else {
            let driver = self
                .registry
                .detect(
                    &frame.link.manufacturer_letters(),
                    frame.link.dll.version,
                    frame.link.dll.device_type.code(),
                )
                .map(|d| d.name().to_string());
            self.unknown_meter(&id, driver.as_deref());
            return;
        };
        let telegram = match frame.telegram() {
            Ok(t) => t,
            Err(e) => {
                self.stats.decode_errors += 1;
                let name = self.meters[index].cfg.name.clone();
                if self.first_time(format!("decode/{name}")) {
                    warn!(meter = %name, "meter {name}: {e}");
                }
                return;
            }
        };
        let driver = self.meters[index].cfg.driver.clone();
        self.meter_heard_by(index, input, &copies);
        match self.run.apply(&telegram, &driver) {
            Ok(output) => self.reading(index, output, heard.rssi_dbm),
            Err(e) => {
                self.web_error(index, &e);
                let name = self.meters[index].cfg.name.clone();
                if self.first_time(format!("driver/{name}")) {
                    warn!(meter = %name, "meter {name}: {e}");
                }
            }
        }
    }

    /// A copy arrived from `input`: its counters, and the news if it had been silent.
    fn receiver_heard(&mut self, input: &Arc<str>, at: Instant) {
        let Some(r) = self.receivers.get_mut(input) else {
            return;
        };
        r.heard(at);
        if r.silent {
            r.silent = false;
            info!(receiver = %input, "receiver {input}: hears telegrams again");
            self.publish_gateway_state();
        }
    }

    /// Reports receivers that heard nothing for their `silent_after`, once each time.
    fn check_silent(&mut self) {
        let now = Instant::now();
        let mut changed = false;
        let mut newly = Vec::new();
        for (name, r) in &mut self.receivers {
            if !r.silent && r.is_silent(now) {
                r.silent = true;
                changed = true;
                newly.push((name.clone(), r.silent_after));
            }
        }
        // A warning: shown at `log_level: warn` too, like the other problems an operator must see.
        for (name, after) in newly {
            warn!(
                receiver = %name,
                "receiver {name}: silent, no telegram for {} (it is reported again when it hears one)",
                crate::config::duration::format_duration(after)
            );
        }
        if changed {
            self.publish_gateway_state();
        }
    }

    /// Who heard the meter's telegram, for its state document and the receivers' counters.
    fn meter_heard_by(&mut self, index: usize, best: &Arc<str>, copies: &[HeardBy]) {
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let meter = &mut self.meters[index].reception;
        meter.heard_by.clear();
        meter.best_receiver = Some(best.clone());
        for c in copies {
            if let Some(r) = self.receivers.get_mut(&c.input) {
                r.meters.insert(index);
            }
            // Copies arrive within the settle time; each gets its own wall-clock moment.
            let when = wall_now
                .checked_sub(now.saturating_duration_since(c.received))
                .unwrap_or(wall_now);
            if !meter.heard_by.iter().any(|(n, _)| *n == c.input) {
                meter.heard_by.push((c.input.clone(), c.rssi_dbm));
            }
            match meter
                .last_seen_by
                .iter_mut()
                .find(|(n, _, _)| *n == c.input)
            {
                Some(slot) => {
                    slot.1 = when;
                    slot.2 = c.rssi_dbm.or(slot.2);
                }
                None => meter.last_seen_by.push((c.input.clone(), when, c.rssi_dbm)),
            }
        }
    }

    /// What the web view adds about reception: per receiver the copies it delivered (also
    /// those merged into another receiver's reading), their rate, the configured meters it
    /// hears and whether it is silent; per wireless meter the receiver that hears it best and
    /// each receiver's last RSSI and time.
    fn web_reception(&mut self, links: &mut [serde_json::Value], meters: &mut [serde_json::Value]) {
        let now = Instant::now();
        for link in links.iter_mut() {
            let Some(obj) = link.as_object_mut() else {
                continue;
            };
            if obj.get("kind").and_then(|k| k.as_str()) != Some("receiver") {
                continue;
            }
            let Some(r) = obj
                .get("name")
                .and_then(|n| n.as_str())
                .and_then(|n| self.receivers.get_mut(n))
            else {
                continue;
            };
            obj.insert("copies".into(), r.telegrams.into());
            obj.insert("copies_per_minute".into(), r.per_minute(now).into());
            obj.insert("meters_heard".into(), r.meters.len().into());
            obj.insert("silent".into(), r.silent.into());
        }
        for (meter, view) in self.meters.iter().zip(meters.iter_mut()) {
            let (Some(obj), Some(best)) = (view.as_object_mut(), &meter.reception.best_receiver)
            else {
                continue;
            };
            obj.insert("best_receiver".into(), (**best).into());
            let heard_by: Vec<serde_json::Value> = meter
                .reception
                .last_seen_by
                .iter()
                .map(|(name, when, rssi)| {
                    serde_json::json!({
                        "name": &**name,
                        "rssi": rssi,
                        "last_seen": when
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_secs(),
                    })
                })
                .collect();
            obj.insert("heard_by".into(), heard_by.into());
        }
    }

    fn unknown_meter(&mut self, id: &str, driver: Option<&str>) {
        self.stats.unknown_meters += 1;
        let hint = match driver {
            Some(d) => format!("driver {d} would read it"),
            None => "no driver knows it; `meterbridge listen` shows its records".into(),
        };
        if self.first_time(format!("unknown/{id}")) {
            warn!(meter = %id, "heard meter {id}, which is not in the configuration ({hint}); add it under `meters:` to publish it");
        }
    }

    fn wired_read(&mut self, index: usize, result: Result<Vec<Vec<u8>>, String>, forced: bool) {
        // A read asked for on the web page is answered there, not on `<base>/response/read`.
        let web_asked = self.web_wired_take(index);
        let copy = (!web_asked.is_empty()).then(|| result.clone());
        self.wired_read_inner(index, result, forced, forced && web_asked.is_empty());
        if let Some(result) = copy {
            self.web_wired_answer(index, result, web_asked);
        }
    }

    fn wired_read_inner(
        &mut self,
        index: usize,
        result: Result<Vec<Vec<u8>>, String>,
        forced: bool,
        answer_mqtt: bool,
    ) {
        let name = self.meters[index].cfg.name.clone();
        let frames = match result {
            Ok(f) => f,
            Err(e) => {
                self.stats.bus_errors += 1;
                self.web_error(index, &e);
                warn!(meter = %name, "meter {name}: {e}");
                if answer_mqtt {
                    self.respond(
                        "read",
                        serde_json::json!({"ok": false, "meter": name, "error": e}),
                    );
                }
                return;
            }
        };
        let driver = self.meters[index].cfg.driver.clone();
        let mut last = None;
        for frame in &frames {
            self.stats.telegrams += 1;
            self.minute.push(Instant::now());
            match decode_wired(frame) {
                Ok(t) => match self.run.apply(&t, &driver) {
                    Ok(out) => last = Some(out),
                    Err(e) => {
                        if self.first_time(format!("driver/{name}")) {
                            warn!(meter = %name, "meter {name}: {e}");
                        }
                    }
                },
                Err(e) => {
                    self.stats.decode_errors += 1;
                    warn!(meter = %name, "meter {name}: {e}");
                }
            }
        }
        if let Some(bus) = self.meters[index].cfg.bus.clone() {
            let via: Arc<str> = Arc::from(bus.as_str());
            for frame in &frames {
                self.web_recent(index, frame, None, via.clone());
            }
        }
        match last {
            Some(out) => {
                self.web_wired(index);
                self.reading(index, out, None);
                if forced {
                    // Asked for: the state goes out even if nothing changed.
                    self.emit(index, SystemTime::now());
                    let state = self
                        .state
                        .get(&self.meters[index].state_key)
                        .map(|e| fields_json(&e.fields))
                        .unwrap_or_default();
                    if !answer_mqtt {
                        return;
                    }
                    self.respond(
                        "read",
                        serde_json::json!({"ok": true, "meter": name, "fields": state}),
                    );
                }
            }
            None if answer_mqtt => {
                self.respond("read", serde_json::json!({"ok": false, "meter": name, "error": "no telegram could be decoded"}));
            }
            None => {}
        }
    }

    /// Publishes the answer to a request on `<base>/response/<name>`.
    fn respond(&self, name: &str, body: serde_json::Value) {
        let text = body.to_string();
        match &self.sink {
            Sink::Mqtt { publisher, .. } => publisher.publish(
                format!("{}/response/{name}", self.base_topic),
                text.into_bytes(),
                false,
            ),
            Sink::Stdout => info!("response {name}: {text}"),
        }
    }

    /// A request over MQTT (`<base>/request/<name>`), as zigbee2mqtt takes them.
    fn request(&mut self, name: &str, payload: &[u8]) {
        let body: serde_json::Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(_) if payload.is_empty() => serde_json::json!({}),
            Err(e) => {
                self.respond(name, serde_json::json!({"ok": false, "error": format!("the request is not JSON: {e}")}));
                return;
            }
        };
        let text = |key: &str| body.get(key).and_then(|v| v.as_str()).map(str::to_string);
        match name {
            "read" => {
                let Some(wanted) = text("meter") else {
                    self.respond(name, serde_json::json!({"ok": false, "error": "say which meter: {\"meter\": \"<name>\"}"}));
                    return;
                };
                let Some(index) = self
                    .meters
                    .iter()
                    .position(|m| m.cfg.name == wanted || m.slug == wanted)
                else {
                    self.respond(name, serde_json::json!({"ok": false, "error": format!("no meter named {wanted:?}")}));
                    return;
                };
                let meter = &self.meters[index];
                match &meter.cfg.bus {
                    Some(bus) => {
                        let sent = self
                            .bus_commands
                            .iter()
                            .find(|(n, _)| n == bus)
                            .map(|(_, tx)| tx.try_send(BusCommand::ReadNow { meter: index }).is_ok());
                        if sent != Some(true) {
                            self.respond(name, serde_json::json!({"ok": false, "meter": wanted, "error": "the bus is busy; try again"}));
                        }
                    }
                    None => {
                        // A radio meter cannot be asked; answer with what it last sent.
                        let fields = self
                            .state
                            .get(&meter.state_key)
                            .map(|e| fields_json(&e.fields))
                            .unwrap_or_default();
                        self.respond(name, serde_json::json!({"ok": true, "meter": wanted, "wireless": true, "fields": fields}));
                    }
                }
            }
            "scan" => {
                let kind = text("type").unwrap_or_else(|| "primary".into());
                if kind == "wireless" {
                    let seconds = body.get("seconds").and_then(|v| v.as_u64()).unwrap_or(30).clamp(1, 3600);
                    self.listening = Some((
                        Instant::now() + Duration::from_secs(seconds),
                        std::collections::BTreeMap::new(),
                    ));
                    return;
                }
                let secondary = match kind.as_str() {
                    "primary" => false,
                    "secondary" => true,
                    other => {
                        self.respond(name, serde_json::json!({"ok": false, "error": format!("unknown scan type {other:?}; use primary, secondary or wireless")}));
                        return;
                    }
                };
                let bus = text("bus").or_else(|| self.bus_commands.first().map(|(n, _)| n.clone()));
                let Some((bus, tx)) = bus.and_then(|b| self.bus_commands.iter().find(|(n, _)| *n == b).cloned()) else {
                    self.respond(name, serde_json::json!({"ok": false, "error": "no such bus"}));
                    return;
                };
                let (reply, answer) = tokio::sync::oneshot::channel();
                if tx.try_send(BusCommand::Scan { secondary, reply: Some(reply), cancel: None }).is_err() {
                    self.respond(name, serde_json::json!({"ok": false, "bus": bus, "error": "the bus is busy; try again"}));
                    return;
                }
                let respond = self.responder();
                tokio::spawn(async move {
                    let body = match answer.await {
                        Ok(Ok(found)) => serde_json::json!({
                            "ok": true, "bus": bus, "type": kind,
                            "meters": found.iter().map(|f| serde_json::json!({
                                "primary": f.primary, "secondary": f.secondary,
                                "manufacturer": f.manufacturer.to_string(),
                                "version": f.version, "medium": f.medium.code(),
                            })).collect::<Vec<_>>(),
                        }),
                        Ok(Err(e)) => serde_json::json!({"ok": false, "bus": bus, "error": e}),
                        Err(_) => serde_json::json!({"ok": false, "bus": bus, "error": "the bus task stopped"}),
                    };
                    respond("scan", body);
                }.with_current_subscriber());
            }
            "set_address" => {
                // Read as the page reads them (primary 0-250, secondary 16 or 8 hex digits).
                use crate::web::wired::{address_of, WiredAddress};
                let address = address_of(&body, "address");
                let new = address_of(&body, "new_address");
                let bus = text("bus").or_else(|| self.bus_commands.first().map(|(n, _)| n.clone()));
                let (Ok(address), Ok(WiredAddress::Primary(new)), Some(bus)) = (address, new, bus) else {
                    self.respond(name, serde_json::json!({"ok": false, "error": "give bus, address (primary number or secondary text) and new_address (0-250)"}));
                    return;
                };
                // The page's path: the same checks, and a meter added on the page follows.
                let (reply, answer) = tokio::sync::oneshot::channel();
                if let Err(e) = self.set_primary_address(&bus, address, new, reply, "over MQTT") {
                    warn!("mqtt: set address refused: {e}");
                }
                let respond = self.responder();
                tokio::spawn(async move {
                    let body = match answer.await {
                        Ok(Ok(done)) => serde_json::json!({"ok": true, "bus": bus, "new_address": new, "message": done["message"]}),
                        Ok(Err(e)) => serde_json::json!({"ok": false, "bus": bus, "error": e}),
                        Err(_) => serde_json::json!({"ok": false, "bus": bus, "error": "the bus task stopped"}),
                    };
                    respond("set_address", body);
                }.with_current_subscriber());
            }
            other => self.respond(other, serde_json::json!({"ok": false, "error": format!("unknown request {other:?}; known: read, scan, set_address")})),
        }
    }

    /// A way to answer a request from another task.
    fn responder(&self) -> impl Fn(&str, serde_json::Value) + Send + 'static {
        let publisher = match &self.sink {
            Sink::Mqtt { publisher, .. } => Some(publisher.clone()),
            Sink::Stdout => None,
        };
        let base = self.base_topic.clone();
        move |name: &str, body: serde_json::Value| match &publisher {
            Some(p) => p.publish(
                format!("{base}/response/{name}"),
                body.to_string().into_bytes(),
                false,
            ),
            None => info!("response {name}: {body}"),
        }
    }

    /// Ends a wireless scan whose time is up (or any, with `now`) and answers it.
    fn finish_listening(&mut self, now: bool) {
        let due = self
            .listening
            .as_ref()
            .is_some_and(|(until, _)| now || Instant::now() >= *until);
        if !due {
            return;
        }
        if let Some((_, heard)) = self.listening.take() {
            let meters: Vec<serde_json::Value> = heard.into_values().collect();
            self.respond(
                "scan",
                serde_json::json!({"ok": true, "type": "wireless", "meters": meters}),
            );
        }
    }

    /// A decoded reading: into the state, out if the emit policy says so.
    fn reading(&mut self, index: usize, mut output: MeterOutput, rssi: Option<i16>) {
        let now = SystemTime::now();
        without_impossible_values(&mut output);
        let meter = &self.meters[index];
        let key = meter.state_key.clone();
        let update = self.state.update(
            &key,
            &output.readings,
            &meter.cfg.fields,
            rssi,
            meter.emit,
            now,
        );
        let present = self.present_keys(index);
        let meter = &self.meters[index];
        if meter.announced.is_none() || !present.is_subset(&meter.announced_keys) {
            self.meters[index].announced_keys.extend(present);
            self.announce(index, &output);
        }
        if let Some(hint) = &output.hint {
            let name = self.meters[index].cfg.name.clone();
            if self.first_time(format!("hint/{name}")) {
                warn!(meter = %name, "meter {name}: {hint}");
            }
        }
        self.bridge_reading(index, &output);
        self.meters[index].identity = Some((
            output.driver.clone(),
            output.media.clone(),
            output.id.clone(),
        ));
        if update.emit {
            self.emit(index, now);
        }
    }

    /// The keys of the meter's state document that hold a value: its fields with one, and the
    /// extras the document carries (`rssi_dbm` when a receiver measured one).
    fn present_keys(&self, index: usize) -> std::collections::BTreeSet<String> {
        let meter = &self.meters[index];
        let mut keys = std::collections::BTreeSet::new();
        let Some(entry) = self.state.get(&meter.state_key) else {
            return keys;
        };
        for (k, v) in &entry.fields {
            // An empty text is no value either (kamwater's `time_leaking` when it never leaked).
            let empty = matches!(v, crate::drivers::ReadingValue::Text(t) if t.is_empty());
            if *v != crate::drivers::ReadingValue::Null && !empty {
                keys.insert(k.to_string());
            }
        }
        keys.insert("timestamp".to_string());
        if !meter.only_values {
            keys.insert("telegram_counter".to_string());
            if entry.rssi_dbm.is_some() {
                keys.insert("rssi_dbm".to_string());
            }
            if self.multi_receiver {
                for (name, _, rssi) in &meter.reception.last_seen_by {
                    if rssi.is_some() {
                        keys.insert(receiver_rssi_key(name));
                    }
                }
            }
        }
        keys
    }

    /// Publishes the meter's discovery document with an entity for every key it has sent.
    fn announce(&mut self, index: usize, output: &MeterOutput) {
        let object_id = discovery::object_id(&output.manufacturer, &output.id);
        self.meters[index].announced = Some(object_id.clone());
        let Sink::Mqtt {
            publisher,
            discovery: true,
        } = &self.sink
        else {
            return;
        };
        let meter = &self.meters[index];
        let keys = &meter.announced_keys;
        let driver = self.registry.get(&output.driver);
        let mut components = match driver {
            Some(d) => entities::components_for_driver(d, &output.media, meter.expire_after),
            // A meter no driver knows: one sensor per reading it sent.
            None => {
                let extras = ["timestamp", "telegram_counter", "rssi_dbm"];
                let sent: Vec<String> = keys
                    .iter()
                    .filter(|k| !extras.contains(&k.as_str()))
                    .filter(|k| !self.receivers.keys().any(|r| **k == receiver_rssi_key(r)))
                    .cloned()
                    .collect();
                entities::components_for_generic(&sent, &output.media, meter.expire_after)
            }
        };
        components.extend(entities::meter_components_extra(true));
        if self.multi_receiver {
            let mut names: Vec<&Arc<str>> = self.receivers.keys().collect();
            names.sort();
            for name in names {
                components.push(entities::receiver_rssi_component(
                    &receiver_rssi_key(name),
                    name,
                ));
            }
        }
        components.retain(|c| keys.contains(&c.value_key));
        let (manufacturer, model) = entities::device_names(&output.manufacturer, driver);
        let device = DeviceDescriptor {
            object_id,
            name: meter.cfg.name.clone(),
            manufacturer: Some(manufacturer),
            model: Some(model),
            serial: Some(output.id.clone()),
            hw_version: Some(format!("{:02x}", output.version)),
            via_device: Some(format!(
                "meterbridge_gw_{}",
                discovery::slug(&self.instance)
            )),
            configuration_url: None,
            state_topic: format!("{}/{}/state", self.base_topic, meter.slug),
            components,
        };
        publisher.announce(device);
    }

    /// Renders and sends the meter's merged state.
    fn emit(&mut self, index: usize, now: SystemTime) {
        let meter = &self.meters[index];
        let (Some(entry), Some((driver, media, id))) =
            (self.state.get(&meter.state_key), &meter.identity)
        else {
            return;
        };
        let mut json = String::with_capacity(256);
        if meter.only_values {
            json.push('{');
        } else {
            json.push_str("{\"_\":\"telegram\",\"media\":");
            push_str(&mut json, media);
            json.push_str(",\"meter\":");
            push_str(&mut json, driver);
            json.push_str(",\"name\":");
            push_str(&mut json, &meter.cfg.name);
            json.push_str(",\"id\":");
            push_str(&mut json, id);
            json.push(',');
        }
        for (k, v) in &entry.fields {
            push_str(&mut json, k);
            json.push(':');
            push_value(&mut json, v);
            json.push(',');
        }
        if !meter.only_values {
            if let Some(r) = entry.rssi_dbm {
                json.push_str(&format!("\"rssi_dbm\":{r},"));
            }
            json.push_str(&format!("\"telegram_counter\":{},", entry.telegrams));
            if self.multi_receiver {
                push_reception(&mut json, &meter.reception);
            }
        }
        json.push_str("\"timestamp\":");
        push_str(&mut json, &timestamp(entry.last_seen.unwrap_or(now)));
        json.push('}');
        let slug = meter.slug.clone();
        let entry_len = entry.fields.len();
        match self.print {
            PrintFormat::None => {}
            PrintFormat::Json => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{json}");
                let _ = out.flush();
            }
            PrintFormat::Text => {
                let mut line = format!("{:<16} {:<12} {id}", meter.cfg.name, driver);
                for (k, v) in entry.fields.iter().take(6) {
                    line.push_str(&format!("  {k}="));
                    push_value(&mut line, v);
                }
                if let Some(r) = entry.rssi_dbm {
                    line.push_str(&format!("  ({r} dBm)"));
                }
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
        if let Sink::Mqtt { publisher, .. } = &self.sink {
            publisher.state(&slug, json.clone());
        }
        if let Some(tx) = &self.emitted {
            let _ = tx.send((slug, json));
        }
        self.state.mark_emitted(&self.meters[index].state_key, now);
        self.stats.readings_emitted += 1;
        let name = &self.meters[index].cfg.name;
        debug!(meter = %name, "meter {name}: state published ({entry_len} fields)");
    }

    /// Meters whose state should go out again without a new telegram: periodic re-emit, or
    /// everything after Home Assistant restarted.
    fn re_emit(&mut self, all: bool) {
        let now = SystemTime::now();
        for index in 0..self.meters.len() {
            let meter = &self.meters[index];
            let Some(entry) = self.state.get(&meter.state_key) else {
                continue;
            };
            if entry.fields.is_empty() {
                continue;
            }
            let due = match meter.emit {
                Emit::Interval(every) => entry
                    .emitted_at
                    .is_none_or(|at| super::state::is_due(at, every, now)),
                _ => false,
            };
            if all || due {
                self.emit(index, now);
            }
        }
    }

    /// Publishes the gateway's state document (every minute, and when a part goes down or
    /// comes back, so Home Assistant shows it at once).
    fn publish_gateway_state(&mut self) {
        if !matches!(self.sink, Sink::Mqtt { .. }) {
            return;
        }
        let doc = self.gateway_state();
        if let Sink::Mqtt { publisher, .. } = &self.sink {
            publisher.publish(
                format!("{}/gateway/state", self.base_topic),
                doc.into_bytes(),
                true,
            );
            self.stats.gateway_states += 1;
        }
    }

    /// The parts that are down, by name: `receiver esp, bus cellar`; empty when all run.
    fn parts_down(&self) -> String {
        let mut down: Vec<String> = self
            .receivers_up
            .iter()
            .filter(|(_, up)| !**up)
            .map(|(name, _)| format!("receiver {name}"))
            .chain(
                self.buses_up
                    .iter()
                    .filter(|(_, up)| !**up)
                    .map(|(name, _)| format!("bus {name}")),
            )
            .collect();
        // Silent: connected (or never reporting a connection, as MQTT inputs) but hearing
        // nothing; a receiver that is down is named once, as down.
        down.extend(
            self.receivers
                .iter()
                .filter(|(name, r)| r.silent && self.receivers_up.get(*name) != Some(&false))
                .map(|(name, _)| format!("receiver {name} (silent)")),
        );
        down.sort();
        down.join(", ")
    }

    fn gateway_state(&mut self) -> String {
        let now = Instant::now();
        self.minute
            .retain(|t| now.saturating_duration_since(*t) < Duration::from_secs(60));
        // Every configured receiver delivering (a gateway without receivers has nothing to lose).
        let connected = self.receivers_up.values().all(|u| *u);
        let mut doc = serde_json::json!({
            "telegrams_per_minute": self.minute.len(),
            "telegrams": self.stats.telegrams,
            "decode_errors": self.stats.decode_errors,
            "key_errors": self.stats.key_errors,
            "bus_errors": self.stats.bus_errors,
            "duplicates": self.stats.duplicates,
            "unknown_meters": self.stats.unknown_meters,
            "receiver_connected": connected,
            "parts_down": self.parts_down(),
            "timestamp": timestamp(SystemTime::now()),
        });
        // Per receiver: copies heard in the last minute, configured meters heard, silent.
        if let Some(map) = doc.as_object_mut() {
            for (name, r) in &mut self.receivers {
                let slug = discovery::slug(name);
                map.insert(
                    format!("receiver_{slug}_per_minute"),
                    r.per_minute(now).into(),
                );
                map.insert(format!("receiver_{slug}_meters"), r.meters.len().into());
                map.insert(format!("receiver_{slug}_silent"), r.silent.into());
            }
        }
        doc.to_string()
    }
}

/// Who heard the meter, for a gateway with several receivers: `receivers` (every receiver that
/// heard the last telegram, with its RSSI), `best_receiver` (the one published),
/// `last_seen_by` (per receiver, when it last heard the meter) and per receiver its last RSSI
/// under its own key (`rssi_garden_dbm`), which Home Assistant's per-receiver sensors read.
fn push_reception(json: &mut String, r: &Reception) {
    if r.heard_by.is_empty() {
        return;
    }
    json.push_str("\"receivers\":{");
    for (i, (name, rssi)) in r.heard_by.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        push_str(json, name);
        match rssi {
            Some(v) => json.push_str(&format!(":{v}")),
            None => json.push_str(":null"),
        }
    }
    json.push_str("},");
    if let Some(best) = &r.best_receiver {
        json.push_str("\"best_receiver\":");
        push_str(json, best);
        json.push(',');
    }
    json.push_str("\"last_seen_by\":{");
    for (i, (name, when, _)) in r.last_seen_by.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        push_str(json, name);
        json.push(':');
        push_str(json, &timestamp(*when));
    }
    json.push_str("},");
    for (name, _, rssi) in &r.last_seen_by {
        if let Some(v) = rssi {
            push_str(json, &receiver_rssi_key(name));
            json.push_str(&format!(":{v},"));
        }
    }
}

fn fields_json(fields: &[(Arc<str>, crate::drivers::ReadingValue)]) -> serde_json::Value {
    let mut text = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        push_str(&mut text, k);
        text.push(':');
        push_value(&mut text, v);
    }
    text.push('}');
    serde_json::from_str(&text).unwrap_or_default()
}

/// The input spec of a configured receiver; simulated sticks are started here on a pty.
pub(crate) async fn receiver_spec(
    kind: &ReceiverKind,
    sims: &mut tokio::task::JoinSet<()>,
) -> Result<Option<InputSpec>, String> {
    Ok(Some(match kind {
        ReceiverKind::Stick {
            device, baud, mode, ..
        } => InputSpec::Stick {
            kind: kind.stick_kind().ok_or("unknown stick")?,
            device: device.clone(),
            mode: mode.parse::<LinkMode>()?,
            baud: *baud,
        },
        ReceiverKind::RtlWmbus { command } => InputSpec::RtlWmbus {
            command: command.clone(),
        },
        ReceiverKind::HexStdin => InputSpec::HexStdin,
        ReceiverKind::TcpClient { address } => InputSpec::TcpClient {
            address: address.clone(),
        },
        ReceiverKind::TcpServer { bind } => InputSpec::TcpServer { bind: bind.clone() },
        ReceiverKind::Udp { bind } => InputSpec::Udp { bind: bind.clone() },
        // Read over the gateway's own MQTT connection.
        ReceiverKind::Mqtt { .. } => return Ok(None),
        ReceiverKind::Simulated {
            telegrams,
            interval,
            ..
        } => {
            let stick = kind.stick_kind().ok_or("unknown stick")?;
            let telegrams = match telegrams {
                Some(path) => crate::cli::simulate::load_telegrams(path)?,
                None => crate::sim::stick::builtin_corpus(),
            };
            let cfg = StickSimConfig {
                telegrams,
                interval: *interval,
                rssi_dbm: -67,
                repeat: true,
                ..StickSimConfig::default()
            };
            let (path_tx, path_rx) = tokio::sync::oneshot::channel();
            sims.spawn(
                async move {
                    let sim_log = Arc::new(Mutex::new(StickSimLog::default()));
                    let result = crate::sim::stick::serve_on_pty(
                        stick,
                        crate::sim::amber::AmberSimOptions::default(),
                        cfg,
                        sim_log,
                        None,
                        |p| {
                            let _ = path_tx.send(p.to_string());
                        },
                    )
                    .await;
                    if let Err(e) = result {
                        warn!("simulated {stick}: {e}");
                    }
                }
                .with_current_subscriber(),
            );
            let device = path_rx
                .await
                .map_err(|_| "the simulated stick did not start".to_string())?;
            InputSpec::Stick {
                kind: stick,
                device,
                mode: LinkMode::T1,
                baud: None,
            }
        }
    }))
}

fn expire_after(m: &MeterConfig, bus_polling: Option<&Polling>) -> Option<u64> {
    if let Some(e) = m.expire_after {
        return (!e.is_zero()).then(|| e.as_secs().max(1));
    }
    // A wired meter is read on a known rhythm: three missed reads make it unavailable.
    match m.polling.as_ref().or(bus_polling) {
        Some(Polling::Every(d)) => Some((d.as_secs() * 3).max(600)),
        _ => None,
    }
}

/// Runs the gateway until Ctrl-C, SIGTERM or `options.stop`. Returns the final counters.
pub async fn run(config: Config, options: RunOptions) -> Result<GatewayStats, String> {
    let registry: &'static Registry = match &config.drivers_dir {
        Some(dir) => crate::cli::drivers::registry(Some(dir))?,
        None => Registry::built_in_static(),
    };
    let keys = key_store(&config)?;
    let mut run_state = DriverRun::new(registry, keys);
    let (mut state, warning) =
        StateCache::load(&config.state_dir, &mut run_state.decoder().compact);
    if let Some(w) = warning {
        warn!("{w}");
    }

    let mqtt = match options.mqtt.clone() {
        Some(s) => Some(s),
        None => mqtt_settings(&config)?,
    };
    let base_topic = mqtt
        .as_ref()
        .map(|m| m.base_topic.clone())
        .unwrap_or_else(|| "meterbridge".into());
    // The page's port is taken first, so discovery can link to the address it really has.
    let web_listener = match &config.web {
        Some(web) => Some(
            tokio::net::TcpListener::bind(&web.bind)
                .await
                .map_err(|e| format!("web page: cannot listen on {}: {e}", web.bind))?,
        ),
        None => None,
    };
    let (sink, mut mqtt_incoming) = match mqtt {
        Some(settings) => {
            let discovery = settings.discovery;
            let (publisher, incoming) =
                crate::mqtt::client::start(settings).map_err(|e| e.to_string())?;
            (
                Sink::Mqtt {
                    publisher,
                    discovery,
                },
                Some(incoming),
            )
        }
        None => (Sink::Stdout, None),
    };

    let mut meters = Vec::new();
    let mut wireless = HashMap::new();
    for (i, m) in config.meters.iter().enumerate() {
        let bus = m
            .bus
            .as_ref()
            .and_then(|b| config.buses.iter().find(|c| &c.name == b));
        if let MeterAddress::Wireless(id) = &m.address {
            wireless.insert(id.to_ascii_lowercase(), i);
        }
        meters.push(Meter {
            cfg: m.clone(),
            state_key: state_key(m),
            slug: m.slug(),
            // Wireless meters publish every new telegram (repeats are already suppressed);
            // wired meters follow their bus's `emit`.
            emit: bus.map_or(Emit::Every, |b| b.emit),
            expire_after: expire_after(m, bus.map(|b| &b.polling)),
            announced: None,
            announced_keys: Default::default(),
            only_values: bus.is_some_and(|b| b.only_values),
            identity: None,
            reception: Reception::default(),
        });
    }
    // Meters removed from the configuration: forget them and take their entities away.
    let keep: HashSet<String> = meters.iter().map(|m| m.state_key.clone()).collect();
    let removed = state.retain_meters(&|k| keep.contains(k));
    if let Sink::Mqtt {
        publisher,
        discovery: true,
    } = &sink
    {
        for key in &removed {
            if let Some(device) = state_device(&config.state_dir, key) {
                publisher.withdraw(&device);
            }
        }
        let mut descriptor = discovery::gateway_descriptor(
            &options.instance,
            &base_topic,
            env!("CARGO_PKG_VERSION"),
        );
        for r in &config.receivers {
            descriptor
                .components
                .extend(entities::gateway_receiver_components(
                    &discovery::slug(&r.name),
                    &r.name,
                ));
        }
        // The "Visit" link on the gateway device leads to the page.
        descriptor.configuration_url = config.web.as_ref().and_then(|w| {
            w.configuration_url(web_listener.as_ref().and_then(|l| l.local_addr().ok()))
        });
        publisher.announce(descriptor);
    }
    if !removed.is_empty() {
        info!(
            "{} meter(s) no longer configured were removed from the state",
            removed.len()
        );
    }

    let no_dedup: HashSet<Arc<str>> = config
        .receivers
        .iter()
        .filter(|r| r.dedup == Some(false))
        .map(|r| Arc::from(r.name.as_str()))
        .collect();
    let mut gateway = Gateway {
        registry,
        run: run_state,
        state,
        meters,
        wireless,
        merge: Merger::new(config.dedup_window, config.settle_time),
        receivers: config
            .receivers
            .iter()
            .map(|r| {
                let silent_after = r.silent_after.unwrap_or(config.silent_after);
                (
                    Arc::from(r.name.as_str()),
                    ReceiverActivity::new(silent_after),
                )
            })
            .collect(),
        multi_receiver: config.receivers.len() > 1,
        no_dedup,
        sink,
        print: options.print,
        emitted: options.emitted.clone(),
        stats: GatewayStats::default(),
        minute: Vec::new(),
        receivers_up: HashMap::new(),
        buses_up: HashMap::new(),
        warned: HashSet::new(),
        base_topic: base_topic.clone(),
        instance: options.instance.clone(),
        allow_bus_writes: config.allow_bus_writes,
        bus_commands: Vec::new(),
        listening: None,
        web: None,
        bridge: None,
        wired_web: None,
    };
    if matches!(gateway.sink, Sink::Mqtt { .. }) {
        gateway.bridge = Some(bridge_topics::BridgeDevices::new());
    }
    let mut web_commands = match &config.web {
        Some(web) => {
            Some(start_web(&mut gateway, &config, web, web_listener, options.web_bound).await?)
        }
        None => None,
    };

    // Inputs.
    let (input_tx, mut input_rx) = mpsc::channel::<InputEvent>(1024);
    let mut tasks = tokio::task::JoinSet::new();
    let mut sims = tokio::task::JoinSet::new();
    let mut mqtt_inputs: Vec<(String, Arc<str>)> = Vec::new();
    for r in &config.receivers {
        let name: Arc<str> = Arc::from(r.name.as_str());
        if let ReceiverKind::Mqtt { topic } = &r.kind {
            mqtt_inputs.push((topic.clone(), name));
            continue;
        }
        if let Some(spec) = receiver_spec(&r.kind, &mut sims).await? {
            gateway.receivers_up.insert(name.clone(), false);
            info!(receiver = %r.name, "receiver {}: {}", r.name, spec.describe());
            tasks.spawn(input::run(name, spec, input_tx.clone()).with_current_subscriber());
        }
    }
    // Buses.
    let (bus_tx, mut bus_rx) = mpsc::channel::<BusEvent>(256);
    // Pause switches of buses without a bridge, kept so their tasks do not see them dropped.
    let mut pauses = Vec::new();
    for (b, bus) in config.buses.iter().enumerate() {
        let polled: Vec<PolledMeter> = config
            .meters
            .iter()
            .enumerate()
            .filter(|(_, m)| m.bus.as_deref() == Some(bus.name.as_str()))
            .filter_map(|(i, m)| {
                Some(PolledMeter {
                    index: i,
                    target: target_of(&m.address)?,
                    read: ReadOptions {
                        max_frames: m.max_frames.unwrap_or(bus.max_frames).max(1) as usize,
                        max_records: m.max_records.map(|r| r as usize),
                        reset_first: bus.force_reset,
                    },
                    polling: m.polling.clone().unwrap_or_else(|| bus.polling.clone()),
                })
            })
            .collect();
        let (pause_tx, pause_rx) = watch::channel(false);
        let (released_tx, released_rx) = watch::channel(false);
        let (command_tx, command_rx) = mpsc::channel(8);
        gateway.bus_commands.push((bus.name.clone(), command_tx));
        info!(bus = %bus.name, "bus {}: {} meter(s)", bus.name, polled.len());
        tasks.spawn(
            run_bus(
                b,
                bus.clone(),
                polled,
                bus_tx.clone(),
                pause_rx,
                released_tx,
                command_rx,
            )
            .with_current_subscriber(),
        );
        match &bus.tcp_server {
            Some(bridge) => {
                tasks.spawn(
                    super::bridge::run_bridge(
                        bus.name.clone(),
                        bus.endpoint.clone(),
                        bridge.clone(),
                        pause_tx,
                        released_rx,
                    )
                    .with_current_subscriber(),
                );
            }
            None => pauses.push(pause_tx),
        }
    }
    drop(input_tx);
    drop(bus_tx);

    let mut stop = options.stop.clone();
    let mut save_timer = tokio::time::interval(config.state_save_interval);
    let mut heartbeat_timer = tokio::time::interval(HEARTBEAT_EVERY);
    // Failed saves since the last one that worked: a full or read-only disk is reported once
    // when it starts and once when it is over, not every interval.
    let mut failed_saves: u64 = 0;
    // The save in progress: written on a blocking thread, since flushing to an SD card can take
    // seconds and telegrams must not wait for it. At most one at a time.
    let mut save_job: Option<tokio::task::JoinHandle<Result<(), StateError>>> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut web_tick = tokio::time::interval(Duration::from_millis(250));
    let mut gateway_timer = tokio::time::interval(Duration::from_secs(60));
    #[cfg(unix)]
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch for SIGTERM: {e}"))?;
    loop {
        #[cfg(unix)]
        let terminate = sigterm.recv();
        #[cfg(not(unix))]
        let terminate = std::future::pending::<Option<()>>();
        tokio::select! {
            Some(event) = input_rx.recv() => match event {
                InputEvent::Telegram { input, heard } => gateway.wireless_telegram(&input, heard),
                InputEvent::Up { input, info } => {
                    let was = gateway.receivers_up.insert(input.clone(), true);
                    match info {
                        Some(i) => info!(receiver = %input, "receiver {input}: {} firmware {} ready", i.model, i.firmware),
                        None => info!(receiver = %input, "receiver {input}: ready"),
                    }
                    if was != Some(true) {
                        gateway.publish_gateway_state();
                    }
                }
                InputEvent::Down { input, reason } | InputEvent::Failed { input, reason } => {
                    let was = gateway.receivers_up.insert(input.clone(), false);
                    warn!(receiver = %input, "receiver {input}: {reason}");
                    if was != Some(false) {
                        gateway.publish_gateway_state();
                    }
                }
                InputEvent::Malformed { input, reason } => {
                    gateway.stats.decode_errors += 1;
                    // Once per input and kind of problem: a noisy input must not flood the log.
                    let kind: String = reason
                        .chars()
                        .take_while(|c| *c != ':' && !c.is_ascii_digit())
                        .collect();
                    if gateway.first_time(format!("malformed/{input}/{kind}")) {
                        warn!(
                            receiver = %input,
                            "{input}: {} (more like this are counted, not shown)",
                            loggable(&reason)
                        );
                    }
                }
                InputEvent::Stats { .. } => {}
            },
            Some(event) = bus_rx.recv() => match event {
                BusEvent::Read { meter, result, forced } => gateway.wired_read(meter, result, forced),
                BusEvent::ScanProgress { bus, progress } => gateway.web_scan_progress(bus, progress),
                BusEvent::ScanDone { bus, result, cancelled } => gateway.web_scan_done(bus, result, cancelled),
                BusEvent::Link { bus, up, message } => {
                    gateway.web_bus_link(bus, up);
                    if !up {
                        gateway.stats.bus_errors += 1;
                    }
                    let name = config.buses.get(bus).map(|b| b.name.as_str()).unwrap_or_default();
                    if up {
                        info!(bus = %name, "{message}");
                    } else {
                        warn!(bus = %name, "{message}");
                    }
                    if let Some(b) = config.buses.get(bus) {
                        if gateway.buses_up.insert(b.name.clone(), up) != Some(up) {
                            gateway.publish_gateway_state();
                        }
                    }
                }
            },
            Some(incoming) = async {
                match mqtt_incoming.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => match incoming {
                Incoming::HomeAssistantOnline => {
                    gateway.re_emit(true);
                    // The gateway device's entities need their state as much as the meters'.
                    gateway.publish_gateway_state();
                }
                Incoming::Message { topic, payload } => {
                    if let Some((_, name)) = mqtt_inputs.iter().find(|(f, _)| topic_matches(f, &topic)) {
                        let text = String::from_utf8_lossy(&payload);
                        for line in text.lines() {
                            match crate::receivers::lines::parse_any_line(line) {
                                Ok(Some(heard)) => gateway.wireless_telegram(name, heard),
                                Ok(None) => {}
                                Err(e) => {
                                    gateway.stats.decode_errors += 1;
                                    // Once per input: a misconfigured publisher sends thousands.
                                    if gateway.first_time(format!("malformed/{name}")) {
                                        warn!(
                                            receiver = %name,
                                            "{name}: message on {topic} not understood: {} (more like this are counted, not shown)",
                                            loggable(&e.to_string())
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
                Incoming::Request { name, payload } => gateway.request(&name, &payload),
            },
            _ = tick.tick() => {
                gateway.re_emit(false);
                gateway.finish_listening(false);
                gateway.bridge_publish();
                gateway.check_silent();
            }
            // The first copy of a telegram waited its settle time for the others.
            _ = async {
                match gateway.merge.next_due() {
                    Some(due) => tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await,
                    None => std::future::pending().await,
                }
            } => gateway.settle_due(),
            // A quarter second: the page shows a telegram well within a second of it, and the
            // view (all meters) is built at most four times a second, only when it changed.
            _ = web_tick.tick(), if gateway.web.is_some() => {
                gateway.web_publish();
                gateway.web_wired_publish();
            }
            Some(command) = async {
                match web_commands.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => gateway.web_command(command),
            _ = gateway_timer.tick() => gateway.publish_gateway_state(),
            _ = save_timer.tick(), if save_job.is_none() => {
                if let Some(snapshot) = gateway.state.snapshot(&gateway.run.decoder().compact) {
                    save_job = Some(tokio::task::spawn_blocking(move || snapshot.write()));
                }
            }
            saved = async {
                match save_job.as_mut() {
                    Some(job) => job.await,
                    None => std::future::pending().await,
                }
            }, if save_job.is_some() => {
                save_job = None;
                let saved = saved.unwrap_or_else(|e| {
                    Err(StateError::Io {
                        path: config.state_dir.clone(),
                        source: std::io::Error::other(e.to_string()),
                    })
                });
                match saved {
                    Err(e) => {
                        gateway.state.write_failed();
                        failed_saves += 1;
                        if gateway.first_time("state-save".into()) {
                            warn!("{e}");
                        }
                    }
                    Ok(()) if failed_saves > 0 => {
                        info!(
                            "state saved to {} again after {failed_saves} failed attempt(s)",
                            config.state_dir.display()
                        );
                        failed_saves = 0;
                        gateway.warned.remove("state-save");
                    }
                    Ok(()) => {}
                }
            }
            _ = heartbeat_timer.tick() => write_heartbeat(&config.state_dir),
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate => break,
            _ = async {
                match stop.as_mut() {
                    Some(rx) => {
                        while !*rx.borrow() {
                            if rx.changed().await.is_err() {
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                    None => std::future::pending().await,
                }
            } => break,
        }
    }
    tasks.abort_all();
    sims.abort_all();
    // Telegrams still in their settle time are published, not lost.
    for settled in gateway
        .merge
        .take_due(Instant::now() + Duration::from_secs(3600))
    {
        gateway.settled(settled);
    }
    save_devices(&config.state_dir, &gateway.meters);
    if let Some(job) = save_job.take() {
        // Its snapshot is older than what the final save below writes; only its outcome matters.
        if !matches!(job.await, Ok(Ok(()))) {
            gateway.state.write_failed();
        }
    }
    if let Err(e) = gateway.state.save(&gateway.run.decoder().compact) {
        warn!("{e}");
    }
    if let Sink::Mqtt { publisher, .. } = gateway.sink {
        if options.withdraw_at_exit {
            for m in &gateway.meters {
                if let Some(id) = &m.announced {
                    publisher.withdraw(id);
                }
                publisher.publish(format!("{base_topic}/{}/state", m.slug), Vec::new(), true);
            }
            publisher.withdraw(&format!(
                "meterbridge_gw_{}",
                discovery::slug(&options.instance)
            ));
            publisher.publish(format!("{base_topic}/gateway/state"), Vec::new(), true);
            publisher.publish(format!("{base_topic}/bridge/devices"), Vec::new(), true);
        }
        let left = publisher.shutdown().await;
        gateway.stats.mqtt = Some(left);
    }
    Ok(gateway.stats)
}

/// Opens the web page's listener and starts serving it; the returned channel carries the
/// page's commands to the gateway task.
async fn start_web(
    gateway: &mut Gateway,
    config: &Config,
    web: &crate::config::schema::WebConfig,
    listener: Option<tokio::net::TcpListener>,
    bound: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> Result<mpsc::Receiver<crate::web::Command>, String> {
    let password = match &web.password {
        None => None,
        Some(PasswordSource::Inline(s)) => Some(s.expose().to_string()),
        Some(PasswordSource::File(p)) => {
            Some(read_secret_file(p).map_err(|e| format!("web.password_file: {e}"))?)
        }
        Some(PasswordSource::Env(var)) => Some(
            std::env::var(var)
                .map_err(|_| format!("web: the environment variable {var} is not set"))?,
        ),
    };
    let access = crate::web::Access {
        password,
        token: web.token.as_ref().map(|t| t.expose().to_string()),
        allow_from: web.allow_from.clone(),
    };
    let listener = listener.ok_or("web page: no listener")?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("web page: {e}"))?;
    let (view_tx, view_rx) = watch::channel(crate::web::View::default());
    let (command_tx, command_rx) = mpsc::channel(16);
    gateway.web = Some(web_view::WebState::new(
        view_tx,
        config.buses.iter().map(|b| b.name.clone()).collect(),
        config
            .receivers
            .iter()
            .map(|r| Arc::from(r.name.as_str()))
            .collect(),
        config.state_dir.clone(),
    ));
    if let Some(web) = gateway.web.as_mut() {
        web.page_meters = config.page_meters.iter().cloned().collect();
    }
    gateway.web_publish();
    let (wired_tx, wired_rx) = watch::channel(crate::web::wired::WiredView::default());
    gateway.wired_web = Some(web_wired::WiredWeb::new(
        wired_tx,
        config.buses.clone(),
        config.state_dir.clone(),
        command_tx.downgrade(),
    ));
    gateway.web_wired_publish();
    tokio::spawn(
        async move {
            if let Err(e) = crate::web::serve(listener, view_rx, wired_rx, command_tx, access).await
            {
                warn!("web page: {e}");
            }
        }
        .with_current_subscriber(),
    );
    info!("web page: http://{address}/");
    if let Some(tx) = bound {
        let _ = tx.send(address);
    }
    Ok(command_rx)
}

const DEVICES_FILE: &str = "devices.json";
/// Rewritten every [`HEARTBEAT_EVERY`] while the gateway's main loop runs: `meterbridge health`
/// checks its age. A state directory that cannot be written therefore shows as unhealthy.
pub const HEARTBEAT_FILE: &str = "heartbeat";
const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);

fn write_heartbeat(dir: &Path) {
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // Renamed into place so `health` never reads half a number; not flushed to the device,
    // since it only has to survive as long as the process does.
    let tmp = dir.join(format!("{HEARTBEAT_FILE}.tmp"));
    if std::fs::write(&tmp, format!("{now}\n")).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join(HEARTBEAT_FILE));
    }
}

/// How long ago the gateway using `dir` last showed it was alive; `None` if it never did.
pub fn heartbeat_age(dir: &Path) -> Option<Duration> {
    let text = std::fs::read_to_string(dir.join(HEARTBEAT_FILE)).ok()?;
    let then = std::time::UNIX_EPOCH + Duration::from_secs(text.trim().parse().ok()?);
    Some(SystemTime::now().duration_since(then).unwrap_or_default())
}

/// Values a reading cannot have leave the MQTT state: the standard's "no value" marker
/// (0x80000000 and its kind) and the "never" dates (all zero, 2000-01-01; see
/// `MeterOutput::no_value`), numbers that are not finite, and dates that do not exist
/// (`2000-00-00`). They become `null`, which keeps the last real value in the state and never
/// reaches Home Assistant as a reading.
fn without_impossible_values(output: &mut MeterOutput) {
    use crate::drivers::ReadingValue;
    for r in &mut output.readings {
        let impossible = output.no_value.iter().any(|k| **k == *r.key)
            || match &r.value {
                // Not-a-number prints as null: no value either.
                ReadingValue::Number(n) => !n.is_finite(),
                ReadingValue::Text(t) => looks_like_impossible_date(t),
                ReadingValue::Null => false,
            };
        if impossible {
            r.value = ReadingValue::Null;
        }
    }
}

/// `YYYY-MM-DD` (optionally followed by a time) whose month or day does not exist.
fn looks_like_impossible_date(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() < 10
        || b[4] != b'-'
        || b[7] != b'-'
        || (b.len() > 10 && !matches!(b[10], b' ' | b'T'))
    {
        return false;
    }
    let number = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = text.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (Some(year), Some(month), Some(day)) = (number(0..4), number(5..7), number(8..10)) else {
        return false;
    };
    chrono::NaiveDate::from_ymd_opt(year as i32, month, day).is_none()
}

/// Remembers which discovery device each meter was announced as, so a meter removed from the
/// configuration can have its entities withdrawn after a restart.
fn save_devices(dir: &Path, meters: &[Meter]) {
    let mut previous: serde_json::Map<String, serde_json::Value> =
        std::fs::read_to_string(dir.join(DEVICES_FILE))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
    for m in meters {
        if let Some(id) = &m.announced {
            previous.insert(m.state_key.clone(), serde_json::Value::String(id.clone()));
        }
    }
    let keep: HashSet<&str> = meters.iter().map(|m| m.state_key.as_str()).collect();
    previous.retain(|k, _| keep.contains(k.as_str()));
    // Atomically: a truncated file would forget which devices to withdraw.
    let _ = crate::daemon::state::write_atomically(
        &dir.join(DEVICES_FILE),
        serde_json::Value::Object(previous).to_string().as_bytes(),
    );
}

fn state_device(dir: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(DEVICES_FILE)).ok()?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).ok()?;
    map.get(key)?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_dates() {
        assert!(looks_like_impossible_date("2000-00-00"));
        assert!(looks_like_impossible_date("2023-02-29"));
        assert!(looks_like_impossible_date("2021-04-31 12:00"));
        assert!(!looks_like_impossible_date("2024-02-29"));
        assert!(!looks_like_impossible_date("2021-04-30 12:00"));
        assert!(!looks_like_impossible_date("OK"));
        assert!(!looks_like_impossible_date("2021-04-30X"));
    }

    #[test]
    fn topic_filters() {
        assert!(topic_matches("wmbus/+/raw", "wmbus/esp1/raw"));
        assert!(topic_matches("wmbus/#", "wmbus/a/b/c"));
        assert!(!topic_matches("wmbus/+/raw", "wmbus/esp1/other"));
        assert!(!topic_matches("a/b", "a/b/c"));
    }
}
