//! The publisher: one persistent broker connection run by a background task, fed through a
//! bounded FIFO of our own so readings survive broker outages.
//!
//! A message leaves the FIFO only when it is written to the broker and stays "in flight" until
//! the broker acknowledges it (QoS 1 PUBACK). When the connection drops, everything in flight
//! goes back to the front of the FIFO in its original order and is sent again after the
//! reconnect: at QoS 1 a reading may arrive twice, never not at all (unless the FIFO overflows,
//! which drops the oldest and counts it).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};

use super::discovery::{discovery_payload, discovery_topic, DeviceDescriptor};
use super::packet::{self, Connect, Decoder, Packet, PacketError, Will};
use super::tls::{tls_setup, TlsSetup, Transport};

/// How many readings wait for the broker by default (issue 7: 10,000).
pub const DEFAULT_QUEUE_LIMIT: usize = 10_000;
/// Version written into discovery documents (`o.sw`).
pub const ORIGIN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Largest packet we accept from the broker. Discovery documents of big meters exceed the
/// 10 KiB many clients default to; subscribers may also receive them back.
const MAX_INCOMING_PACKET: usize = 1 << 20;
/// Publishes written but not yet acknowledged. Small, so a dropped connection re-sends little,
/// yet enough to keep a slow link busy.
const IN_FLIGHT_LIMIT: usize = 16;
const KEEP_ALIVE: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long `shutdown` keeps trying to deliver what is queued.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);
const INCOMING_CAPACITY: usize = 64;
/// Packet id of the one SUBSCRIBE per connection; publishes use the others.
const SUBSCRIBE_PKID: u16 = 1;

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
}

#[derive(Debug, Clone)]
struct Message {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
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
}

struct Shared {
    settings: MqttSettings,
    state: Mutex<State>,
    wake: Notify,
    task: Mutex<Option<JoinHandle<()>>>,
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
    let tls = tls_setup(&settings)?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| MqttError::NoRuntime)?;
    let shared = Arc::new(Shared {
        settings,
        state: Mutex::new(State::default()),
        wake: Notify::new(),
        task: Mutex::new(None),
    });
    let (tx, rx) = mpsc::channel(INCOMING_CAPACITY);
    let task = runtime.spawn(run(shared.clone(), tls, tx));
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

impl Publisher {
    /// Queues a message; never blocks. Over `queue_limit` the oldest reading is dropped.
    pub fn publish(&self, topic: String, payload: Vec<u8>, retain: bool) {
        let limit = self.shared.settings.queue_limit;
        {
            let mut st = lock(&self.shared.state);
            st.readings.push_back(Message {
                topic,
                payload,
                retain,
            });
            while st.readings.len() > limit {
                st.readings.pop_front();
                st.dropped += 1;
                let dropped = st.dropped;
                // One line per power of ten: an hour-long outage must not flood the log.
                if dropped.is_power_of_two() || dropped.is_multiple_of(1000) {
                    eprintln!(
                        "warning: mqtt: queue full ({limit} messages), dropped the oldest; \
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
        let message = Message {
            topic: discovery_topic(&s.discovery_prefix, &device.object_id),
            payload: discovery_payload(&device, &s.base_topic, ORIGIN_VERSION).into_bytes(),
            retain: true,
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
                payload: Vec::new(),
                retain: true,
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
        let mut stats = self.stats();
        stats.connected = false;
        stats
    }
}

/// Why a connection ended.
#[derive(Debug, Error)]
enum Lost {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Packet(#[from] PacketError),
    #[error("broker refused the connection: {}", connack_reason(*.0))]
    Refused(u8),
    #[error("{0}")]
    Timeout(&'static str),
    #[error("broker closed the connection")]
    Closed,
    #[error("unexpected packet type {0}")]
    Unexpected(u8),
}

fn connack_reason(code: u8) -> &'static str {
    match code {
        1 => "unacceptable protocol version",
        2 => "client id rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "unknown reason",
    }
}

async fn run(shared: Arc<Shared>, tls: Option<TlsSetup>, incoming: mpsc::Sender<Incoming>) {
    let s = &shared.settings;
    let mut backoff = BACKOFF_MIN;
    let mut close_deadline: Option<Instant> = None;
    let mut last_error = String::new();
    let mut repeats = 0u64;
    loop {
        if lock(&shared.state).closing {
            let deadline = *close_deadline.get_or_insert_with(|| Instant::now() + SHUTDOWN_FLUSH);
            if Instant::now() >= deadline {
                break;
            }
        }
        let mut session = Session::new(&shared, &incoming);
        let result = session
            .run(tls.as_ref(), &mut backoff, &mut close_deadline)
            .await;
        session.requeue();
        match result {
            // Shut down as asked.
            Ok(()) => break,
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
                    eprintln!(
                        "warning: mqtt: {}:{}: {text}{again}; retrying in {:.1} s",
                        s.host,
                        s.port,
                        backoff.as_secs_f32()
                    );
                }
                last_error = text;
            }
        }
        let mut wake_at = Instant::now() + backoff;
        if let Some(deadline) = close_deadline {
            wake_at = wake_at.min(deadline);
        }
        sleep_until(wake_at).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    lock(&shared.state).connected = false;
}

struct InFlight {
    pkid: u16,
    message: Message,
    lane: Lane,
}

struct Session<'a> {
    shared: &'a Shared,
    incoming: &'a mpsc::Sender<Incoming>,
    in_flight: VecDeque<InFlight>,
    next_pkid: u16,
}

impl<'a> Session<'a> {
    fn new(shared: &'a Shared, incoming: &'a mpsc::Sender<Incoming>) -> Self {
        Session {
            shared,
            incoming,
            in_flight: VecDeque::new(),
            next_pkid: SUBSCRIBE_PKID,
        }
    }

    /// Unacknowledged messages go back in front of their lanes, in their original order.
    fn requeue(&mut self) {
        let mut st = lock(&self.shared.state);
        st.connected = false;
        while let Some(f) = self.in_flight.pop_back() {
            match f.lane {
                Lane::Readings => {
                    st.readings_in_flight = st.readings_in_flight.saturating_sub(1);
                    st.readings.push_front(f.message);
                }
                Lane::Control => st.control.push_front(f.message),
            }
        }
    }

    fn pkid(&mut self) -> u16 {
        self.next_pkid = match self.next_pkid {
            u16::MAX => SUBSCRIBE_PKID + 1,
            n => n + 1,
        };
        self.next_pkid
    }

    async fn run(
        &mut self,
        tls: Option<&TlsSetup>,
        backoff: &mut Duration,
        close_deadline: &mut Option<Instant>,
    ) -> Result<(), Lost> {
        let s = &self.shared.settings;
        let mut t = timeout(CONNECT_TIMEOUT, Transport::connect(&s.host, s.port, tls))
            .await
            .map_err(|_| Lost::Timeout("connect timed out"))??;
        let status_topic = s.status_topic();
        let connect = packet::connect(&Connect {
            client_id: &s.client_id,
            keep_alive_secs: KEEP_ALIVE.as_secs() as u16,
            // Our own FIFO is the persistent state; a broker-side session would only add a
            // second, invisible queue.
            clean_session: true,
            username: s.username.as_deref(),
            password: s.password.as_deref().map(str::as_bytes),
            will: Some(Will {
                topic: &status_topic,
                payload: b"offline",
                qos: s.qos,
                retain: true,
            }),
        })?;
        t.write_all(&connect).await?;

        let mut decoder = Decoder::new(MAX_INCOMING_PACKET);
        let mut buf = vec![0u8; 16 * 1024];
        let connack = timeout(CONNECT_TIMEOUT, async {
            loop {
                if let Some(p) = decoder.next_packet()? {
                    return Ok::<Packet, Lost>(p);
                }
                let n = t.read(&mut buf).await?;
                if n == 0 {
                    return Err(Lost::Closed);
                }
                decoder.push(buf.get(..n).unwrap_or_default());
            }
        })
        .await
        .map_err(|_| Lost::Timeout("no CONNACK"))??;
        match connack {
            Packet::ConnAck { code: 0, .. } => {}
            Packet::ConnAck { code, .. } => return Err(Lost::Refused(code)),
            other => return Err(Lost::Unexpected(packet_kind(&other))),
        }
        *backoff = BACKOFF_MIN;

        let ha_status = format!("{}/status", s.discovery_prefix);
        let request_filter = format!("{}/request/+", s.base_topic);
        let mut filters: Vec<(&str, u8)> = Vec::new();
        if s.discovery {
            filters.push((&ha_status, 1));
        }
        filters.push((&request_filter, 1));
        for extra in &s.extra_subscriptions {
            filters.push((extra, 1));
        }
        t.write_all(&packet::subscribe(SUBSCRIBE_PKID, &filters)?)
            .await?;

        {
            let mut st = lock(&self.shared.state);
            st.connected = true;
            let docs: Vec<Message> = st.discovery.values().cloned().collect();
            for doc in docs.into_iter().rev() {
                st.control.push_front(doc);
            }
            st.control.push_front(Message {
                topic: status_topic.clone(),
                payload: b"online".to_vec(),
                retain: true,
            });
        }

        let mut ping_at = Instant::now() + KEEP_ALIVE / 2;
        let mut awaiting_pong = false;
        let mut offline_queued = false;
        loop {
            self.fill_window(&mut t).await?;

            let closing = lock(&self.shared.state).closing;
            if closing {
                let deadline =
                    *close_deadline.get_or_insert_with(|| Instant::now() + SHUTDOWN_FLUSH);
                let drained = {
                    let st = lock(&self.shared.state);
                    st.readings.is_empty() && st.control.is_empty()
                } && self.in_flight.is_empty();
                if drained && !offline_queued {
                    offline_queued = true;
                    lock(&self.shared.state).control.push_back(Message {
                        topic: status_topic.clone(),
                        payload: b"offline".to_vec(),
                        retain: true,
                    });
                    continue;
                }
                if (drained && offline_queued) || Instant::now() >= deadline {
                    // DISCONNECT tells the broker not to publish the will: `offline` is
                    // already there, published by us.
                    let _ = t.write_all(&packet::disconnect()).await;
                    t.close().await;
                    return Ok(());
                }
            }
            let deadline = close_deadline.unwrap_or_else(|| Instant::now() + KEEP_ALIVE);

            tokio::select! {
                read = t.read(&mut buf) => {
                    let n = read?;
                    if n == 0 {
                        return Err(Lost::Closed);
                    }
                    decoder.push(buf.get(..n).unwrap_or_default());
                    while let Some(p) = decoder.next_packet()? {
                        if p == Packet::PingResp {
                            awaiting_pong = false;
                        }
                        self.handle(p, &mut t, &ha_status).await?;
                    }
                    t.flush().await?;
                }
                _ = self.shared.wake.notified() => {}
                _ = sleep_until(ping_at) => {
                    if awaiting_pong {
                        return Err(Lost::Timeout("no answer to PINGREQ"));
                    }
                    t.write_all(&packet::pingreq()).await?;
                    awaiting_pong = true;
                    ping_at = Instant::now() + KEEP_ALIVE / 2;
                }
                _ = sleep_until(deadline), if closing => {}
            }
        }
    }

    /// Writes queued messages while fewer than `IN_FLIGHT_LIMIT` await their PUBACK.
    async fn fill_window(&mut self, t: &mut Transport) -> Result<(), Lost> {
        let qos = self.shared.settings.qos;
        while self.in_flight.len() < IN_FLIGHT_LIMIT {
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
                return Ok(());
            };
            let pkid = if qos > 0 { self.pkid() } else { 0 };
            let bytes = packet::publish(
                &message.topic,
                &message.payload,
                qos,
                message.retain,
                false,
                pkid,
            );
            let bytes = match bytes {
                Ok(b) => b,
                Err(e) => {
                    // Only a topic over 64 KiB or a payload over 256 MiB gets here; it can
                    // never be sent, so it must not block the queue.
                    eprintln!(
                        "warning: mqtt: dropping message for {:?}: {e}",
                        message.topic
                    );
                    let mut st = lock(&self.shared.state);
                    st.dropped += 1;
                    if lane == Lane::Readings {
                        st.readings_in_flight = st.readings_in_flight.saturating_sub(1);
                    }
                    continue;
                }
            };
            // In flight before the write, so a failed write puts it back on requeue.
            self.in_flight.push_back(InFlight {
                pkid,
                message,
                lane,
            });
            t.write_all(&bytes).await?;
            if qos == 0 {
                self.in_flight.pop_back();
                self.delivered(lane);
            }
        }
        Ok(())
    }

    fn delivered(&self, lane: Lane) {
        let mut st = lock(&self.shared.state);
        st.published += 1;
        if lane == Lane::Readings {
            st.readings_in_flight = st.readings_in_flight.saturating_sub(1);
        }
    }

    async fn handle(&mut self, p: Packet, t: &mut Transport, ha_status: &str) -> Result<(), Lost> {
        match p {
            Packet::PubAck { pkid } => {
                if let Some(i) = self.in_flight.iter().position(|f| f.pkid == pkid) {
                    if let Some(f) = self.in_flight.remove(i) {
                        self.delivered(f.lane);
                    }
                }
            }
            Packet::Publish(publish) => {
                if publish.qos > 0 {
                    t.write_all(&packet::puback(publish.pkid)).await?;
                }
                self.route(publish, ha_status);
            }
            Packet::SubAck { codes, .. } => {
                if codes.contains(&0x80) {
                    eprintln!("warning: mqtt: the broker refused a subscription: {codes:02X?}");
                }
            }
            Packet::PingResp | Packet::UnsubAck { .. } | Packet::ConnAck { .. } => {}
            Packet::Unexpected { kind } => return Err(Lost::Unexpected(kind)),
        }
        Ok(())
    }

    fn route(&self, publish: packet::Publish, ha_status: &str) {
        let s = &self.shared.settings;
        let event = if publish.topic == ha_status {
            // A retained `online` arrives with every subscribe; discovery was just sent on
            // connect, so only a live birth message means Home Assistant restarted.
            if publish.payload != b"online" || publish.retain {
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
                payload: publish.payload,
            }
        } else {
            Incoming::Message {
                topic: publish.topic,
                payload: publish.payload,
            }
        };
        if let Err(mpsc::error::TrySendError::Full(e)) = self.incoming.try_send(event) {
            // The connection must keep running; a caller that does not read loses events.
            eprintln!("warning: mqtt: incoming queue full, dropped {e:?}");
        }
    }
}

fn packet_kind(p: &Packet) -> u8 {
    match p {
        Packet::ConnAck { .. } => 2,
        Packet::Publish(_) => 3,
        Packet::PubAck { .. } => 4,
        Packet::SubAck { .. } => 9,
        Packet::UnsubAck { .. } => 11,
        Packet::PingResp => 13,
        Packet::Unexpected { kind } => *kind,
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
    }

    #[test]
    fn start_outside_a_runtime_is_an_error() {
        assert!(matches!(
            start(MqttSettings::new("127.0.0.1", 1)),
            Err(MqttError::NoRuntime)
        ));
    }
}
