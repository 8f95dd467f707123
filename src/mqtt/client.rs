//! The publisher: one persistent broker connection (rumqttc) run by a background task, fed
//! through a bounded FIFO of our own so readings survive broker outages.
//!
//! A message leaves the FIFO only when it is handed to rumqttc and stays "in flight" until the
//! broker acknowledges it (QoS 1 PUBACK). When the connection drops, everything in flight goes
//! back to the front of the FIFO in its original order and is sent again after the reconnect:
//! at QoS 1 a reading may arrive twice, never not at all (unless the FIFO overflows, which drops
//! the oldest and counts it).
//!
//! rumqttc keeps its own list of unacknowledged publishes and replays it when a session is
//! resumed. We never let it: every connection attempt gets a fresh `EventLoop` with a clean
//! session, so our FIFO is the only place a message waits and the order stays ours. (Reusing
//! one `EventLoop` is not enough: after an error it keeps buffered events and a packet-id
//! collision from the dead connection, which would be reported against the new one.)

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    NetworkOptions, Outgoing, Packet, QoS, SubscribeFilter, SubscribeReasonCode, TlsConfiguration,
    Transport,
};
use thiserror::Error;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};
use tracing::instrument::WithSubscriber as _;
use tracing::{info, warn};

use super::discovery::{discovery_payload, discovery_topic, DeviceDescriptor};
use super::outbox::{self, Outbox};
use super::tls::tls_setup;

/// How many readings wait for the broker by default (issue 7: 10,000).
pub const DEFAULT_QUEUE_LIMIT: usize = 10_000;
/// Version written into discovery documents (`o.sw`).
pub const ORIGIN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Largest packet we accept from the broker. Discovery documents of big meters exceed the
/// 10 KiB rumqttc defaults to; subscribers may also receive them back.
const MAX_INCOMING_PACKET: usize = 1 << 20;
/// Largest packet we send. A bigger message is dropped (and counted) before it reaches
/// rumqttc, which would otherwise fail the whole connection on it, again after every reconnect.
const MAX_OUTGOING_PACKET: usize = 256 << 10;
/// Publishes handed to rumqttc but not yet acknowledged. Small, so a dropped connection re-sends
/// little, yet enough to keep a slow link busy.
const IN_FLIGHT_LIMIT: usize = 16;
/// rumqttc's own in-flight bound. Above ours so it never holds requests back; its packet ids
/// cycle through 1..=this, so a wide range also keeps an id from being reused while the broker
/// still owes its acknowledgement.
const RUMQTTC_INFLIGHT: u16 = 4 * IN_FLIGHT_LIMIT as u16;
/// rumqttc's request channel. Our FIFO is the queue; this only hands messages over.
const REQUEST_CAPACITY: usize = 4;
/// rumqttc sends PINGREQ every keep-alive period and gives up when the previous one is still
/// unanswered, so a dead link is noticed within two periods. The default of `keep_alive`.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long `shutdown` keeps trying to deliver what is queued.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);
const INCOMING_CAPACITY: usize = 64;

#[derive(Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub username: Option<String>,
    /// Never logged or printed by `Debug`.
    pub password: Option<String>,
    pub client_id: String,
    pub base_topic: String,
    pub qos: u8,
    pub retain: bool,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub discovery_prefix: String,
    pub discovery: bool,
    pub queue_limit: usize,
    pub extra_subscriptions: Vec<String>,
    /// Whole seconds, 1 s to 65535 s (checked by `start`): how soon a silent connection is
    /// given up (within two periods).
    pub keep_alive: Duration,
    /// Where the outage queue is kept on disk (the state directory), so queued readings
    /// survive a crash; `None` keeps it in memory only.
    pub outbox_dir: Option<PathBuf>,
}

impl fmt::Debug for MqttSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("client_id", &self.client_id)
            .field("base_topic", &self.base_topic)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("discovery_prefix", &self.discovery_prefix)
            .field("discovery", &self.discovery)
            .field("queue_limit", &self.queue_limit)
            .field("extra_subscriptions", &self.extra_subscriptions)
            .field("keep_alive", &self.keep_alive)
            .field("outbox_dir", &self.outbox_dir)
            .finish()
    }
}

impl MqttSettings {
    /// The defaults of issue 7: base topic `meterbridge`, QoS 1, retained states, discovery on
    /// under `homeassistant`, 10,000 queued readings.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        MqttSettings {
            host: host.into(),
            port,
            tls: false,
            username: None,
            password: None,
            client_id: "meterbridge".into(),
            base_topic: "meterbridge".into(),
            qos: 1,
            retain: true,
            ca_file: None,
            client_cert: None,
            client_key: None,
            discovery_prefix: "homeassistant".into(),
            discovery: true,
            queue_limit: DEFAULT_QUEUE_LIMIT,
            extra_subscriptions: Vec::new(),
            keep_alive: KEEP_ALIVE,
            outbox_dir: None,
        }
    }

    /// `mqtt://host[:port]` (port 1883) or `mqtts://host[:port]` (port 8883); nothing else.
    pub fn from_url(url: &str) -> Result<Self, MqttError> {
        let bad = |reason| MqttError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(bad("expected mqtt:// or mqtts://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '@', '?', '#']) {
            return Err(bad(
                "only host and port belong in the URL (credentials are separate options)",
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, _)) if !h.ends_with(']') && h.contains(':') => (rest, None),
            Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| bad("bad port"))?)),
            None => (rest, None),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let mut s = MqttSettings::new(host, port.unwrap_or(if tls { 8883 } else { 1883 }));
        s.tls = tls;
        Ok(s)
    }

    fn status_topic(&self) -> String {
        format!("{}/status", self.base_topic)
    }

    fn validate(&self) -> Result<(), MqttError> {
        let wildcard = |t: &str| t.contains(['+', '#']);
        if self.base_topic.is_empty() || wildcard(&self.base_topic) {
            return Err(MqttError::Invalid(
                "base_topic must be non-empty and without + or #",
            ));
        }
        if self.discovery_prefix.is_empty() || wildcard(&self.discovery_prefix) {
            return Err(MqttError::Invalid(
                "discovery_prefix must be non-empty and without + or #",
            ));
        }
        if self.queue_limit == 0 {
            return Err(MqttError::Invalid("queue_limit must be at least 1"));
        }
        if self.client_id.is_empty() || self.client_id.len() > 65_535 {
            return Err(MqttError::Invalid("client_id must be 1 to 65535 bytes"));
        }
        if self.qos > 1 {
            return Err(MqttError::Qos(self.qos));
        }
        // rumqttc panics below one second and sends the value as 16-bit seconds.
        if self.keep_alive < Duration::from_secs(1)
            || self.keep_alive > Duration::from_secs(u64::from(u16::MAX))
            || self.keep_alive.subsec_nanos() != 0
        {
            return Err(MqttError::Invalid(
                "keep_alive must be whole seconds from 1 s to 65535 s",
            ));
        }
        // rumqttc refuses a SUBSCRIBE with any bad filter as a whole, on every connect.
        if !self
            .extra_subscriptions
            .iter()
            .all(|f| rumqttc::valid_filter(f))
        {
            return Err(MqttError::Invalid(
                "extra_subscriptions must be valid MQTT topic filters",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Error)]
pub enum MqttError {
    #[error(
        "mqtts:// needs a CA certificate file (ca_file): this build has no access to the \
         system's trusted roots"
    )]
    NoCaFile,
    #[error("ca_file, client_cert and client_key need TLS (an mqtts:// URL)")]
    TlsOptionsWithoutTls,
    #[error("client_cert and client_key must be given together")]
    ClientCertWithoutKey,
    #[error("{}: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("TLS: {0}")]
    Tls(#[source] rustls::Error),
    #[error("{0:?} is not a valid server name for TLS")]
    BadServerName(String),
    #[error("invalid MQTT URL {url:?}: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error("QoS {0} is not supported (use 0 or 1)")]
    Qos(u8),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("the MQTT client must be started inside a tokio runtime")]
    NoRuntime,
}

/// What arrives from the broker for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Home Assistant (re)started: discovery has been re-published; re-send the states.
    HomeAssistantOnline,
    /// `<base>/request/<name>`; answer on `<base>/response/<name>`.
    Request { name: String, payload: Vec<u8> },
    /// A message on one of `extra_subscriptions`.
    Message { topic: String, payload: Vec<u8> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MqttStats {
    pub connected: bool,
    /// Readings waiting for the broker (including those sent but not yet acknowledged).
    pub queued: usize,
    /// Readings dropped because the queue was full.
    pub dropped: u64,
    /// Messages the broker acknowledged (or, at QoS 0, that were written to it).
    pub published: u64,
    /// Of those, readings (meter and gateway state documents).
    pub readings_published: u64,
    /// Readings found in the outage queue on disk at start (queued before a restart).
    pub restored: u64,
}

#[derive(Debug, Clone)]
struct Message {
    topic: String,
    payload: Payload,
    retain: bool,
    /// Its number in the outage queue on disk (readings only, when there is one).
    seq: Option<u64>,
}

/// A message's bytes: owned (readings and status, queued once), or shared (discovery
/// documents, which are kept and queued again after every reconnect and Home Assistant
/// restart: with 100 meters, copying them for that took 0.5 MB at once).
#[derive(Debug, Clone)]
enum Payload {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Payload::Owned(bytes) => bytes,
            Payload::Shared(bytes) => bytes,
        }
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Payload {
        Payload::Owned(bytes)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// Readings: bounded, the oldest dropped when full.
    Readings,
    /// Status, discovery and withdrawals: few, never dropped, sent before readings.
    Control,
}

#[derive(Default)]
struct State {
    readings: VecDeque<Message>,
    control: VecDeque<Message>,
    /// Discovery documents by object id, re-published on every connect and HA birth.
    discovery: BTreeMap<String, Message>,
    readings_in_flight: usize,
    connected: bool,
    closing: bool,
    dropped: u64,
    published: u64,
    readings_published: u64,
    /// The next reading's number in the outage queue on disk.
    next_seq: u64,
    restored: u64,
}

struct Shared {
    settings: MqttSettings,
    state: Mutex<State>,
    wake: Notify,
    task: Mutex<Option<JoinHandle<()>>>,
    /// The outage queue's journal on disk; `None` without one (or after shutdown).
    outbox: Mutex<Option<Outbox>>,
}

impl Shared {
    /// Tells the journal a reading left the queue (delivered or dropped).
    fn done(&self, message: &Message) {
        if let Some(seq) = message.seq {
            if let Some(outbox) = lock(&self.outbox).as_ref() {
                outbox.done(seq);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop publishing; the state stays consistent per operation.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn request_close(&self) {
        lock(&self.state).closing = true;
        self.wake.notify_one();
    }
}

/// Asks the task to flush and stop when the last `Publisher` clone goes away.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.request_close();
    }
}

/// A cheap, cloneable handle to the background connection task.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("settings", &self.shared.settings)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Starts the connection task. Settings and TLS files are checked here; the broker being
/// unreachable is not an error (the task keeps retrying and queues meanwhile).
pub fn start(settings: MqttSettings) -> Result<(Publisher, mpsc::Receiver<Incoming>), MqttError> {
    settings.validate()?;
    let options = mqtt_options(&settings, tls_setup(&settings)?);
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| MqttError::NoRuntime)?;
    let mut state = State::default();
    let outbox = match &settings.outbox_dir {
        Some(dir) => open_outbox(dir, &settings, &mut state),
        None => None,
    };
    let shared = Arc::new(Shared {
        settings,
        state: Mutex::new(state),
        wake: Notify::new(),
        task: Mutex::new(None),
        outbox: Mutex::new(outbox),
    });
    let (tx, rx) = mpsc::channel(INCOMING_CAPACITY);
    // The caller's log subscriber goes with the task (tests capture one gateway's log).
    let task = runtime.spawn(run(shared.clone(), options, tx).with_current_subscriber());
    *lock(&shared.task) = Some(task);
    let owner = Arc::new(Owner(shared.clone()));
    Ok((
        Publisher {
            shared,
            _owner: owner,
        },
        rx,
    ))
}

/// Loads the outage queue kept on disk into `state` (oldest first, ahead of anything new) and
/// starts its writer. Trouble with the file is reported and the queue stays in memory: the
/// gateway must run on.
fn open_outbox(
    dir: &std::path::Path,
    settings: &MqttSettings,
    state: &mut State,
) -> Option<Outbox> {
    let mut loaded = match outbox::load(dir) {
        Ok(l) => l,
        Err(e) => {
            warn!(
                "mqtt: cannot read the outage queue in {}: {e}; starting with an empty one",
                dir.display()
            );
            outbox::Loaded::default()
        }
    };
    if loaded.unreadable_lines > 0 {
        warn!(
            "mqtt: {} unreadable line(s) in the outage queue skipped (a write cut short by a crash)",
            loaded.unreadable_lines
        );
    }
    state.restored = loaded.queued.len() as u64;
    // Beyond the limit the oldest go, as they would have while running.
    let excess = loaded.queued.len().saturating_sub(settings.queue_limit);
    if excess > 0 {
        loaded.queued.drain(..excess);
        state.dropped += excess as u64;
    }
    if !loaded.queued.is_empty() {
        info!(
            "mqtt: {} reading(s) queued before the restart are delivered first",
            loaded.queued.len()
        );
    }
    state.next_seq = loaded.next_seq;
    let writer = match Outbox::start(dir.to_path_buf(), &loaded.queued) {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(
                "mqtt: cannot write the outage queue in {}: {e}; it is kept in memory only",
                dir.display()
            );
            None
        }
    };
    for m in loaded.queued {
        state.readings.push_back(Message {
            topic: m.topic,
            payload: m.payload.into(),
            retain: m.retain,
            seq: writer.is_some().then_some(m.seq),
        });
    }
    writer
}

impl Publisher {
    /// Queues a message; never blocks. Over `queue_limit` the oldest reading is dropped.
    pub fn publish(&self, topic: String, payload: Vec<u8>, retain: bool) {
        let limit = self.shared.settings.queue_limit;
        {
            let outbox = lock(&self.shared.outbox);
            let mut st = lock(&self.shared.state);
            let seq = outbox.as_ref().map(|o| {
                let seq = st.next_seq;
                st.next_seq += 1;
                o.queued(outbox::Stored {
                    seq,
                    topic: topic.clone(),
                    payload: payload.clone(),
                    retain,
                });
                seq
            });
            st.readings.push_back(Message {
                topic,
                payload: payload.into(),
                retain,
                seq,
            });
            while st.readings.len() > limit {
                if let (Some(m), Some(o)) = (st.readings.pop_front(), outbox.as_ref()) {
                    if let Some(seq) = m.seq {
                        o.done(seq);
                    }
                }
                st.dropped += 1;
                let dropped = st.dropped;
                // One line per power of ten: an hour-long outage must not flood the log.
                if dropped.is_power_of_two() || dropped.is_multiple_of(1000) {
                    warn!(
                        "mqtt: queue full ({limit} messages), dropped the oldest; \
                         {dropped} dropped so far"
                    );
                }
            }
        }
        self.shared.wake.notify_one();
    }

    /// A meter's state JSON on `<base>/<slug>/state`, retained as configured.
    pub fn state(&self, meter_slug: &str, json: String) {
        let s = &self.shared.settings;
        self.publish(
            format!("{}/{}/state", s.base_topic, meter_slug),
            json.into_bytes(),
            s.retain,
        );
    }

    /// Publishes a device's discovery document (retained) and remembers it, so it is sent again
    /// after every reconnect and every Home Assistant restart. No-op with discovery off.
    pub fn announce(&self, device: DeviceDescriptor) {
        let s = &self.shared.settings;
        if !s.discovery {
            return;
        }
        let text = discovery_payload(&device, &s.base_topic, ORIGIN_VERSION);
        // Kept for as long as the device exists (sent again on every reconnect and Home
        // Assistant restart) and shared by every copy queued for that: exactly its length,
        // without the slack the text grew with, which is up to half.
        let payload = Payload::Shared(Arc::from(text.as_bytes()));
        let message = Message {
            topic: discovery_topic(&s.discovery_prefix, &device.object_id),
            payload,
            retain: true,
            seq: None,
        };
        {
            let mut st = lock(&self.shared.state);
            // The latest announce/withdraw for a topic wins, whatever is still pending.
            st.control.retain(|m| m.topic != message.topic);
            if st.connected {
                st.control.push_back(message.clone());
            }
            st.discovery.insert(device.object_id, message);
        }
        self.shared.wake.notify_one();
    }

    /// Removes a device from Home Assistant: an empty retained payload on its config topic.
    pub fn withdraw(&self, object_id: &str) {
        let s = &self.shared.settings;
        let topic = discovery_topic(&s.discovery_prefix, object_id);
        {
            let mut st = lock(&self.shared.state);
            st.discovery.remove(object_id);
            st.control.retain(|m| m.topic != topic);
            st.control.push_back(Message {
                topic,
                payload: Vec::new().into(),
                retain: true,
                seq: None,
            });
        }
        self.shared.wake.notify_one();
    }

    pub fn stats(&self) -> MqttStats {
        let st = lock(&self.shared.state);
        MqttStats {
            connected: st.connected,
            queued: st.readings.len() + st.readings_in_flight,
            dropped: st.dropped,
            published: st.published,
            readings_published: st.readings_published,
            restored: st.restored,
        }
    }

    /// Delivers what is queued (for up to 10 s), publishes `offline`, disconnects cleanly and
    /// returns the final counters; `queued` > 0 means those readings were not delivered.
    pub async fn shutdown(self) -> MqttStats {
        self.shared.request_close();
        let task = lock(&self.shared.task).take();
        if let Some(task) = task {
            // The task bounds its own flush; the margin covers one connect attempt.
            let _ = timeout(SHUTDOWN_FLUSH + CONNECT_TIMEOUT, task).await;
        }
        // What is still queued stays in the journal for the next start; wait for its writer
        // (on a blocking thread: it may be flushing to a slow card).
        let outbox = lock(&self.shared.outbox).take();
        if let Some(outbox) = outbox {
            let _ = tokio::task::spawn_blocking(move || outbox.close()).await;
        }
        let mut stats = self.stats();
        stats.connected = false;
        stats
    }
}

/// Why a connection ended.
#[derive(Debug, Error)]
enum Lost {
    #[error("broker refused the connection: {}", connack_reason(*.0))]
    Refused(ConnectReturnCode),
    #[error("{0}")]
    Connection(ConnectionError),
}

fn connack_reason(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::Success => "accepted",
        ConnectReturnCode::RefusedProtocolVersion => "unacceptable protocol version",
        ConnectReturnCode::BadClientId => "client id rejected",
        ConnectReturnCode::ServiceUnavailable => "server unavailable",
        ConnectReturnCode::BadUserNamePassword => "bad user name or password",
        ConnectReturnCode::NotAuthorized => "not authorized",
    }
}

fn qos_of(settings: &MqttSettings) -> QoS {
    if settings.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

fn mqtt_options(s: &MqttSettings, tls: Option<Arc<rustls::ClientConfig>>) -> MqttOptions {
    // An IPv6 literal works unbracketed: rumqttc joins host and port with ':' and the resolver
    // splits at the last one; the TLS server name is the bare address, as it must be.
    let mut options = MqttOptions::new(s.client_id.clone(), s.host.clone(), s.port);
    options
        .set_keep_alive(s.keep_alive)
        // Our own FIFO is the persistent state; a broker-side session would only add a second,
        // invisible queue, and rumqttc would replay its copy ahead of ours.
        .set_clean_session(true)
        .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET)
        .set_request_channel_capacity(REQUEST_CAPACITY)
        .set_inflight(RUMQTTC_INFLIGHT)
        .set_last_will(LastWill::new(s.status_topic(), "offline", qos_of(s), true));
    if s.username.is_some() || s.password.is_some() {
        // rumqttc leaves out an empty user name or password, so either may be absent.
        options.set_credentials(
            s.username.clone().unwrap_or_default(),
            s.password.clone().unwrap_or_default(),
        );
    }
    if let Some(config) = tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    }
    options
}

fn network_options() -> NetworkOptions {
    let mut network = NetworkOptions::new();
    // Small MQTT packets (acks, pings) must not wait for Nagle.
    network.set_tcp_nodelay(true);
    // Bounds TCP connect + TLS handshake + CONNACK, and every flush.
    network.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
    network
}

/// Bytes the PUBLISH would take on the wire, as rumqttc counts them against its limit.
fn publish_packet_size(topic: &str, payload: &[u8], qos: QoS) -> usize {
    let pkid = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let remaining = 2 + topic.len() + pkid + payload.len();
    let length_bytes = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + length_bytes + remaining
}

/// Why a message can never be sent, so it must not block the queue.
fn undeliverable(m: &Message, qos: QoS) -> Option<&'static str> {
    if m.topic.is_empty() || !rumqttc::valid_topic(&m.topic) {
        Some("a topic must be non-empty and without + or #")
    } else if m.topic.len() > usize::from(u16::MAX) {
        Some("the topic is longer than 65535 bytes")
    } else if publish_packet_size(&m.topic, &m.payload, qos) > MAX_OUTGOING_PACKET {
        Some("the message is larger than 256 KiB")
    } else {
        None
    }
}

async fn run(shared: Arc<Shared>, options: MqttOptions, incoming: mpsc::Sender<Incoming>) {
    let s = &shared.settings;
    let mut backoff = BACKOFF_MIN;
    let mut close_deadline: Option<Instant> = None;
    let mut last_error = String::new();
    let mut repeats = 0u64;
    // For the connect and reconnect messages: whether a connection ever succeeded, and since
    // when the current outage lasts (a reconnect says how long delivery was interrupted).
    let mut ever_connected = false;
    let mut lost_at: Option<Instant> = None;
    loop {
        if lock(&shared.state).closing {
            let deadline = *close_deadline.get_or_insert_with(|| Instant::now() + SHUTDOWN_FLUSH);
            if Instant::now() >= deadline {
                break;
            }
        }
        // A fresh client per attempt: nothing rumqttc kept from the last connection (pending
        // publishes, buffered events, a packet-id collision) can leak into this one.
        let (client, mut eventloop) = AsyncClient::new(options.clone(), REQUEST_CAPACITY);
        eventloop.set_network_options(network_options());
        let mut link = Link::new(&shared, client, &incoming);
        link.reconnect = ever_connected.then_some(lost_at).flatten();
        let result = link
            .run(&mut eventloop, &mut backoff, &mut close_deadline)
            .await;
        // Packets rumqttc had already taken in when the connection failed (acknowledgements
        // among them) still count.
        for event in eventloop.state.events.drain(..) {
            link.handle(event);
        }
        drop(eventloop);
        let was_connected = link.connected;
        link.requeue();
        match result {
            // Shut down as asked.
            Ok(()) => break,
            Err(lost) if was_connected => {
                ever_connected = true;
                lost_at = Some(Instant::now());
                let text = lost.to_string();
                warn!(
                    broker = %format_args!("{}:{}", s.host, s.port),
                    "mqtt: connection to broker {}:{} lost: {text}; retrying in {:.1} s",
                    s.host,
                    s.port,
                    backoff.as_secs_f32()
                );
                last_error = text;
                repeats = 1;
            }
            Err(lost) => {
                // A broker that stays away (or a certificate that stays wrong) must not write
                // a line every 5 s for hours: repeats of the same error are thinned out.
                let text = lost.to_string();
                repeats = if text == last_error { repeats + 1 } else { 1 };
                if repeats.is_power_of_two() {
                    let again = if repeats > 1 {
                        format!(" ({repeats} times)")
                    } else {
                        String::new()
                    };
                    warn!(
                        broker = %format_args!("{}:{}", s.host, s.port),
                        "mqtt: {}:{}: {text}{again}; retrying in {:.1} s",
                        s.host,
                        s.port,
                        backoff.as_secs_f32()
                    );
                }
                last_error = text;
            }
        }
        let retry_at = Instant::now() + backoff;
        loop {
            let wake_at = close_deadline.map_or(retry_at, |d| d.min(retry_at));
            tokio::select! {
                _ = sleep_until(wake_at) => break,
                // Readings arriving meanwhile only queue; a shutdown starts its deadline now.
                _ = shared.wake.notified() => {
                    if lock(&shared.state).closing {
                        close_deadline
                            .get_or_insert_with(|| Instant::now() + SHUTDOWN_FLUSH);
                    }
                }
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    lock(&shared.state).connected = false;
    let st = lock(&shared.state);
    let left = st.readings.len() + st.control.len();
    if left > 0 {
        warn!("mqtt: stopped with {left} messages not delivered");
    }
}

/// A message handed to rumqttc; `pkid` is known once rumqttc has written it.
struct Sent {
    pkid: Option<u16>,
    message: Message,
    lane: Lane,
}

/// One connection attempt: our side of the bookkeeping around one rumqttc `EventLoop`.
struct Link<'a> {
    shared: &'a Shared,
    client: AsyncClient,
    incoming: &'a mpsc::Sender<Incoming>,
    qos: QoS,
    ha_status: String,
    /// In the order handed to rumqttc, which is the order it writes them in.
    sent: VecDeque<Sent>,
    connected: bool,
    offline_queued: bool,
    disconnect_requested: bool,
    disconnect_written: bool,
    /// Set when an earlier connection was lost: since when (for the reconnect message).
    reconnect: Option<Instant>,
}

impl<'a> Link<'a> {
    fn new(shared: &'a Shared, client: AsyncClient, incoming: &'a mpsc::Sender<Incoming>) -> Self {
        let s = &shared.settings;
        Link {
            shared,
            client,
            incoming,
            qos: qos_of(s),
            ha_status: format!("{}/status", s.discovery_prefix),
            sent: VecDeque::new(),
            connected: false,
            offline_queued: false,
            disconnect_requested: false,
            disconnect_written: false,
            reconnect: None,
        }
    }

    /// Drives the event loop until the connection fails or the shutdown is done.
    ///
    /// `poll()` is never cancelled while the connection lives (a cancelled poll could drop a
    /// half-made connection): new messages are handed over between its events, while the same
    /// poll future keeps running.
    async fn run(
        &mut self,
        eventloop: &mut EventLoop,
        backoff: &mut Duration,
        close_deadline: &mut Option<Instant>,
    ) -> Result<(), Lost> {
        loop {
            let polled = {
                let poll = eventloop.poll();
                tokio::pin!(poll);
                loop {
                    self.step(close_deadline);
                    let deadline = *close_deadline;
                    tokio::select! {
                        polled = &mut poll => break polled,
                        _ = self.shared.wake.notified() => {}
                        // Out of time: dropping the connection without DISCONNECT lets the
                        // broker publish the will (`offline`).
                        _ = sleep_until(deadline.unwrap_or_else(Instant::now)),
                            if deadline.is_some() => return Ok(()),
                    }
                }
            };
            match polled {
                Ok(event) => {
                    if matches!(event, Event::Incoming(Packet::ConnAck(_))) {
                        *backoff = BACKOFF_MIN;
                    }
                    self.handle(event);
                    if self.disconnect_written {
                        return Ok(());
                    }
                }
                // The broker may close first once DISCONNECT is on its way.
                Err(_) if self.disconnect_requested => return Ok(()),
                Err(ConnectionError::ConnectionRefused(code)) => return Err(Lost::Refused(code)),
                Err(e) => return Err(Lost::Connection(e)),
            }
        }
    }

    /// Hands queued messages over and, when shutting down, finishes with `offline` and
    /// DISCONNECT once everything is acknowledged.
    fn step(&mut self, close_deadline: &mut Option<Instant>) {
        let closing = lock(&self.shared.state).closing;
        if closing && close_deadline.is_none() {
            *close_deadline = Some(Instant::now() + SHUTDOWN_FLUSH);
        }
        if !self.connected || self.disconnect_requested {
            return;
        }
        self.feed();
        if !closing {
            return;
        }
        let drained = self.sent.is_empty() && {
            let st = lock(&self.shared.state);
            st.readings.is_empty() && st.control.is_empty()
        };
        if !drained {
            return;
        }
        if !self.offline_queued {
            self.offline_queued = true;
            lock(&self.shared.state).control.push_back(Message {
                topic: self.shared.settings.status_topic(),
                payload: b"offline".to_vec().into(),
                retain: true,
                seq: None,
            });
            self.feed();
        } else if self.client.try_disconnect().is_ok() {
            // DISCONNECT tells the broker not to publish the will: `offline` is already
            // there, published by us.
            self.disconnect_requested = true;
        }
    }

    /// Moves messages from our FIFO to rumqttc while fewer than `IN_FLIGHT_LIMIT` await their
    /// acknowledgement and its request channel has room. Control messages go first.
    fn feed(&mut self) {
        while self.sent.len() < IN_FLIGHT_LIMIT {
            let next = {
                let mut st = lock(&self.shared.state);
                if let Some(m) = st.control.pop_front() {
                    Some((m, Lane::Control))
                } else if let Some(m) = st.readings.pop_front() {
                    st.readings_in_flight += 1;
                    Some((m, Lane::Readings))
                } else {
                    None
                }
            };
            let Some((message, lane)) = next else {
                return;
            };
            if let Some(reason) = undeliverable(&message, self.qos) {
                warn!("mqtt: dropping message for {:?}: {reason}", message.topic);
                self.shared.done(&message);
                let mut st = lock(&self.shared.state);
                st.dropped += 1;
                if lane == Lane::Readings {
                    st.readings_in_flight = st.readings_in_flight.saturating_sub(1);
                }
                continue;
            }
            let handed = self.client.try_publish(
                message.topic.clone(),
                self.qos,
                message.retain,
                message.payload.to_vec(),
            );
            if handed.is_err() {
                // The channel is full (the topic was checked above); retry after its next event.
                let mut st = lock(&self.shared.state);
                match lane {
                    Lane::Readings => {
                        st.readings_in_flight = st.readings_in_flight.saturating_sub(1);
                        st.readings.push_front(message);
                    }
                    Lane::Control => st.control.push_front(message),
                }
                return;
            }
            self.sent.push_back(Sent {
                pkid: None,
                message,
                lane,
            });
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => self.on_connack(),
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(i) = self.sent.iter().position(|f| f.pkid == Some(ack.pkid)) {
                    if let Some(f) = self.sent.remove(i) {
                        self.delivered(&f);
                    }
                }
            }
            Event::Incoming(Packet::Publish(publish)) => self.route(publish),
            Event::Incoming(Packet::SubAck(ack))
                if ack.return_codes.contains(&SubscribeReasonCode::Failure) =>
            {
                warn!(
                    "mqtt: the broker refused a subscription: {:?}",
                    ack.return_codes
                );
            }
            // rumqttc writes publishes in the order they were requested, so this one is the
            // oldest that has no packet id yet.
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(i) = self.sent.iter().position(|f| f.pkid.is_none()) {
                    if self.qos == QoS::AtMostOnce {
                        if let Some(f) = self.sent.remove(i) {
                            self.delivered(&f);
                        }
                    } else if let Some(f) = self.sent.get_mut(i) {
                        f.pkid = Some(pkid);
                    }
                }
            }
            Event::Outgoing(Outgoing::Disconnect) => self.disconnect_written = true,
            _ => {}
        }
    }

    /// Subscriptions first, then `online` and every remembered discovery document ahead of
    /// whatever else is queued (a broker that lost its retained messages gets them back).
    fn on_connack(&mut self) {
        let s = &self.shared.settings;
        self.connected = true;
        let mut filters = Vec::new();
        if s.discovery {
            filters.push(SubscribeFilter::new(
                self.ha_status.clone(),
                QoS::AtLeastOnce,
            ));
        }
        filters.push(SubscribeFilter::new(
            format!("{}/request/+", s.base_topic),
            QoS::AtLeastOnce,
        ));
        for extra in &s.extra_subscriptions {
            filters.push(SubscribeFilter::new(extra.clone(), QoS::AtLeastOnce));
        }
        // The channel of a fresh client is empty, so this cannot find it full.
        if let Err(e) = self.client.try_subscribe_many(filters) {
            warn!("mqtt: could not subscribe: {e}");
        }
        let mut st = lock(&self.shared.state);
        st.connected = true;
        // Said before the control messages below join the queue: the count is of readings.
        let queued = st.readings.len();
        let broker = format_args!("{}:{}", s.host, s.port);
        match self.reconnect {
            Some(since) => info!(
                broker = %broker,
                "mqtt: reconnected to broker {broker} after {} s, {queued} reading(s) queued are being sent",
                since.elapsed().as_secs()
            ),
            None if queued > 0 => info!(
                broker = %broker,
                "mqtt: connected to broker {broker}, {queued} reading(s) queued are being sent"
            ),
            None => info!(broker = %broker, "mqtt: connected to broker {broker}"),
        }
        let docs: Vec<Message> = st.discovery.values().cloned().collect();
        for doc in docs.into_iter().rev() {
            st.control.push_front(doc);
        }
        st.control.push_front(Message {
            topic: s.status_topic(),
            payload: b"online".to_vec().into(),
            retain: true,
            seq: None,
        });
    }

    fn delivered(&self, sent: &Sent) {
        self.shared.done(&sent.message);
        let mut st = lock(&self.shared.state);
        st.published += 1;
        if sent.lane == Lane::Readings {
            st.readings_published += 1;
            st.readings_in_flight = st.readings_in_flight.saturating_sub(1);
        }
    }

    /// Unacknowledged messages go back in front of their lanes, in their original order.
    fn requeue(&mut self) {
        let mut st = lock(&self.shared.state);
        st.connected = false;
        while let Some(f) = self.sent.pop_back() {
            match f.lane {
                Lane::Readings => {
                    st.readings_in_flight = st.readings_in_flight.saturating_sub(1);
                    st.readings.push_front(f.message);
                }
                Lane::Control => st.control.push_front(f.message),
            }
        }
    }

    fn route(&self, publish: rumqttc::Publish) {
        let s = &self.shared.settings;
        let event = if publish.topic == self.ha_status {
            // A retained `online` arrives with every subscribe; discovery was just sent on
            // connect, so only a live birth message means Home Assistant restarted.
            if publish.payload[..] != b"online"[..] || publish.retain {
                return;
            }
            let mut st = lock(&self.shared.state);
            let docs: Vec<Message> = st.discovery.values().cloned().collect();
            st.control.extend(docs);
            self.shared.wake.notify_one();
            Incoming::HomeAssistantOnline
        } else if let Some(name) = publish
            .topic
            .strip_prefix(&s.base_topic)
            .and_then(|t| t.strip_prefix("/request/"))
        {
            Incoming::Request {
                name: name.to_string(),
                payload: publish.payload.to_vec(),
            }
        } else {
            Incoming::Message {
                topic: publish.topic,
                payload: publish.payload.to_vec(),
            }
        };
        if let Err(mpsc::error::TrySendError::Full(e)) = self.incoming.try_send(event) {
            // The connection must keep running; a caller that does not read loses events.
            warn!("mqtt: incoming queue full, dropped {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_and_tls() {
        let s = MqttSettings::from_url("mqtt://broker.lan").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.tls),
            ("broker.lan", 1883, false)
        );
        let s = MqttSettings::from_url("mqtts://10.0.0.2:18883/").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.tls), ("10.0.0.2", 18883, true));
        let s = MqttSettings::from_url("mqtt://[::1]:1884").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 1884));
        for bad in [
            "http://x",
            "mqtt://",
            "mqtt://u:p@host",
            "mqtt://h:99999",
            "mqtt://h/topic",
        ] {
            assert!(MqttSettings::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_the_password() {
        let mut s = MqttSettings::new("h", 1);
        s.password = Some("hunter2-secret".into());
        let text = format!("{s:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn tls_without_a_ca_file_is_a_clear_error() {
        let mut s = MqttSettings::from_url("mqtts://broker").unwrap();
        let err = tls_setup(&s).err().unwrap();
        assert!(matches!(err, MqttError::NoCaFile));
        assert!(err.to_string().contains("ca_file"));

        s.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(tls_setup(&s), Err(MqttError::Pem { .. })));

        let dir = std::env::temp_dir().join(format!("mb-mqtt-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        s.ca_file = Some(empty);
        let err = tls_setup(&s).err().unwrap();
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();

        let mut plain = MqttSettings::new("h", 1883);
        plain.client_cert = Some("c.pem".into());
        assert!(matches!(
            tls_setup(&plain),
            Err(MqttError::TlsOptionsWithoutTls)
        ));
    }

    #[test]
    fn settings_are_validated_before_anything_starts() {
        let mut s = MqttSettings::new("h", 1883);
        s.qos = 2;
        assert!(matches!(s.validate(), Err(MqttError::Qos(2))));
        s.qos = 1;
        s.base_topic = "a/#".into();
        assert!(s.validate().is_err());
        s.base_topic = "a".into();
        s.queue_limit = 0;
        assert!(s.validate().is_err());
        s.queue_limit = 1;
        assert!(s.validate().is_ok());
        // Each of these would make rumqttc panic or tell the broker something else.
        for bad_ms in [0, 500, 1_500, 65_536_000] {
            s.keep_alive = Duration::from_millis(bad_ms);
            assert!(
                matches!(s.validate(), Err(MqttError::Invalid(m)) if m.contains("keep_alive")),
                "{bad_ms} ms"
            );
        }
        for good in [1, 65_535] {
            s.keep_alive = Duration::from_secs(good);
            assert!(s.validate().is_ok(), "{good} s");
        }
    }

    #[test]
    fn packet_size_is_counted_as_rumqttc_counts_it() {
        for len in [0, 100, 120, 127, 128, 16_370, 16_383, 16_384, 300_000] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
                let payload = vec![b'x'; len];
                let mut publish = rumqttc::Publish::new("a/b", qos, payload.clone());
                // rumqttc measures when it writes, after giving QoS 1 a packet id.
                if qos == QoS::AtLeastOnce {
                    publish.pkid = 1;
                }
                let expected = publish.size();
                assert_eq!(publish_packet_size("a/b", &payload, qos), expected, "{len}");
            }
        }
    }

    #[test]
    fn messages_that_can_never_be_sent_are_recognised() {
        let message = |topic: &str, len: usize| Message {
            topic: topic.into(),
            payload: vec![0; len].into(),
            retain: false,
            seq: None,
        };
        assert_eq!(undeliverable(&message("a/b", 1000), QoS::AtLeastOnce), None);
        assert!(undeliverable(&message("a/#", 1), QoS::AtLeastOnce).is_some());
        assert!(undeliverable(&message("", 1), QoS::AtLeastOnce).is_some());
        assert!(undeliverable(&message("a", MAX_OUTGOING_PACKET), QoS::AtMostOnce).is_some());
        assert_eq!(
            undeliverable(&message("a", MAX_OUTGOING_PACKET - 9), QoS::AtLeastOnce),
            None
        );
    }

    #[test]
    fn options_carry_the_will_limits_and_credentials() {
        let mut s = MqttSettings::new("broker", 1883);
        s.base_topic = "mb".into();
        s.username = Some("gw".into());
        let o = mqtt_options(&s, None);
        let will = o.last_will().unwrap();
        assert_eq!(
            (
                will.topic.as_str(),
                &will.message[..],
                will.qos,
                will.retain
            ),
            ("mb/status", &b"offline"[..], QoS::AtLeastOnce, true)
        );
        assert_eq!(o.max_packet_size(), MAX_INCOMING_PACKET);
        assert!(o.clean_session());
        assert_eq!(o.keep_alive(), KEEP_ALIVE);
        s.keep_alive = Duration::from_secs(3);
        assert_eq!(mqtt_options(&s, None).keep_alive(), Duration::from_secs(3));
        let login = o.credentials().unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("gw", "")
        );
        assert!(matches!(o.transport(), Transport::Tcp));
    }

    /// The bookkeeping between our FIFO and rumqttc, driven by the events rumqttc would emit.
    #[tokio::test]
    async fn acknowledgements_are_matched_by_write_order_and_the_rest_requeued() {
        let mut s = MqttSettings::new("127.0.0.1", 1);
        s.discovery = false;
        let shared = Shared {
            settings: s.clone(),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            task: Mutex::new(None),
            outbox: Mutex::new(None),
        };
        for seq in 0..5 {
            lock(&shared.state).readings.push_back(Message {
                topic: "t".into(),
                payload: vec![seq].into(),
                retain: false,
                seq: None,
            });
        }
        let (tx, _rx) = mpsc::channel(4);
        let (client, _eventloop) = AsyncClient::new(mqtt_options(&s, None), REQUEST_CAPACITY);
        let mut link = Link::new(&shared, client, &tx);
        link.handle(Event::Incoming(Packet::ConnAck(rumqttc::ConnAck::new(
            ConnectReturnCode::Success,
            false,
        ))));
        link.feed();
        // The subscription and `online` take two channel slots; two readings fit.
        let payloads = |link: &Link| -> Vec<Vec<u8>> {
            link.sent
                .iter()
                .map(|f| f.message.payload.to_vec())
                .collect()
        };
        assert_eq!(payloads(&link), [b"online".to_vec(), vec![0], vec![1]]);
        assert_eq!(shared_stats(&shared), (true, 5, 0));

        for pkid in [7, 8, 9] {
            link.handle(Event::Outgoing(Outgoing::Publish(pkid)));
        }
        link.handle(Event::Incoming(Packet::PubAck(rumqttc::PubAck::new(8))));
        link.handle(Event::Incoming(Packet::PubAck(rumqttc::PubAck::new(7))));
        // An acknowledgement for nothing of ours changes nothing.
        link.handle(Event::Incoming(Packet::PubAck(rumqttc::PubAck::new(42))));
        assert_eq!(payloads(&link), [vec![1]]);
        assert_eq!(shared_stats(&shared), (true, 4, 2));

        link.requeue();
        let st = lock(&shared.state);
        let queued: Vec<u8> = st.readings.iter().map(|m| m.payload[0]).collect();
        assert_eq!(queued, [1, 2, 3, 4]);
        assert_eq!((st.connected, st.readings_in_flight), (false, 0));
    }

    /// Discovery documents queued again after a reconnect and after Home Assistant's birth
    /// message are the remembered ones, shared, not copies; their bytes are what was announced.
    #[test]
    fn discovery_documents_are_queued_again_without_copies() {
        let s = MqttSettings::new("127.0.0.1", 1);
        let shared = Arc::new(Shared {
            settings: s.clone(),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            task: Mutex::new(None),
            outbox: Mutex::new(None),
        });
        let publisher = Publisher {
            shared: shared.clone(),
            _owner: Arc::new(Owner(shared.clone())),
        };
        let gateway = super::super::discovery::gateway_descriptor("main", "mb", "0.1.0");
        let expected = discovery_payload(&gateway, &s.base_topic, ORIGIN_VERSION);
        publisher.announce(gateway);
        let remembered = |st: &State| match &st.discovery["meterbridge_gw_main"].payload {
            Payload::Shared(bytes) => bytes.clone(),
            Payload::Owned(_) => panic!("a discovery document is kept shared"),
        };
        let (tx, mut rx) = mpsc::channel(4);
        let (client, _eventloop) = AsyncClient::new(mqtt_options(&s, None), REQUEST_CAPACITY);
        let mut link = Link::new(&shared, client, &tx);
        link.handle(Event::Incoming(Packet::ConnAck(rumqttc::ConnAck::new(
            ConnectReturnCode::Success,
            false,
        ))));
        let birth = rumqttc::Publish::new(&link.ha_status, QoS::AtMostOnce, "online");
        link.handle(Event::Incoming(Packet::Publish(birth)));
        assert_eq!(rx.try_recv().ok(), Some(Incoming::HomeAssistantOnline));
        let st = lock(&shared.state);
        let kept = remembered(&st);
        assert_eq!(&kept[..], expected.as_bytes());
        // `online`, the document queued on connect, and again on Home Assistant's birth.
        let docs: Vec<&Message> = st
            .control
            .iter()
            .filter(|m| m.topic.ends_with("/meterbridge_gw_main/config"))
            .collect();
        assert_eq!(docs.len(), 2);
        for m in docs {
            match &m.payload {
                Payload::Shared(bytes) => assert!(Arc::ptr_eq(bytes, &kept)),
                Payload::Owned(_) => panic!("queued as a copy"),
            }
        }
    }

    fn shared_stats(shared: &Shared) -> (bool, usize, u64) {
        let st = lock(&shared.state);
        (
            st.connected,
            st.readings.len() + st.readings_in_flight,
            st.published,
        )
    }

    #[test]
    fn start_outside_a_runtime_is_an_error() {
        assert!(matches!(
            start(MqttSettings::new("127.0.0.1", 1)),
            Err(MqttError::NoRuntime)
        ));
    }
}
