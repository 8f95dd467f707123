//! Inputs as the daemon and `listen` run them: each one a task that delivers [`InputEvent`]s on
//! a channel and never gives up. A stick that is unplugged is reopened with backoff (the path
//! under `/dev/serial/by-id/` stays the same when it comes back), reported once when it goes and
//! once when it is back; a TCP peer or a command that ends is reconnected or restarted the same
//! way. Malformed input is counted and reported, never fatal.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::sleep;
use tokio_serial::{DataBits, Parity, SerialPortBuilderExt, SerialStream, StopBits};

use super::amber::AmberSession;
use super::cul::CulSession;
use super::imst::ImstSession;
use super::lines::{parse_any_line, parse_rtlwmbus_line, LineError};
use super::{Heard, LinkMode, StickError, StickInfo, StickKind, StickStats};

/// Where telegrams come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSpec {
    Stick {
        kind: StickKind,
        device: String,
        mode: LinkMode,
        baud: Option<u32>,
    },
    /// rtl_wmbus output lines: from standard input, or from a command it runs (restarted when it
    /// ends).
    RtlWmbus { command: Option<String> },
    /// Raw hex (or small JSON objects) one telegram per line on standard input.
    HexStdin,
    /// Raw hex lines read from a TCP server (an ESP32 receiver, ser2net, …).
    TcpClient { address: String },
    /// Raw hex lines from any client connecting to this address.
    TcpServer { bind: String },
    /// One telegram per datagram (hex or JSON).
    Udp { bind: String },
    /// Raw telegrams (hex or JSON) published on an MQTT topic, as ESP32 receivers do. Plain
    /// `mqtt://` here; the daemon reads such topics over its own (TLS-capable) connection.
    Mqtt {
        host: String,
        port: u16,
        topic: String,
        username: Option<String>,
        password: Option<String>,
    },
}

impl InputSpec {
    /// Short description for messages.
    pub fn describe(&self) -> String {
        match self {
            InputSpec::Stick {
                kind, device, mode, ..
            } => format!("{kind} on {device} ({mode})"),
            InputSpec::RtlWmbus { command: None } => "rtl_wmbus lines on standard input".into(),
            InputSpec::RtlWmbus { command: Some(c) } => format!("rtl_wmbus from `{c}`"),
            InputSpec::HexStdin => "hex lines on standard input".into(),
            InputSpec::TcpClient { address } => format!("hex lines from tcp://{address}"),
            InputSpec::TcpServer { bind } => format!("hex lines to tcp server {bind}"),
            InputSpec::Udp { bind } => format!("hex datagrams on udp {bind}"),
            InputSpec::Mqtt {
                host, port, topic, ..
            } => format!("raw telegrams on mqtt://{host}:{port} topic {topic}"),
        }
    }
}

#[derive(Debug)]
pub enum InputEvent {
    Telegram {
        input: Arc<str>,
        heard: Heard,
    },
    /// The receiver is (again) delivering; for sticks, what it said about itself.
    Up {
        input: Arc<str>,
        info: Option<StickInfo>,
    },
    /// The receiver went away; it is being retried. Sent once per outage.
    Down {
        input: Arc<str>,
        reason: String,
    },
    /// The input gave up (only with [`RetryPolicy::give_up_after`]): it ends after this.
    Failed {
        input: Arc<str>,
        reason: String,
    },
    /// A line or frame that could not be used, with why.
    Malformed {
        input: Arc<str>,
        reason: String,
    },
    /// Stick protocol counters after each telegram (for diagnostics).
    Stats {
        input: Arc<str>,
        stats: StickStats,
    },
}

/// Backoff between reconnection attempts: quick at first (a replugged stick is back within a
/// second), then every 10 s.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(10);

    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    pub async fn wait(&mut self) {
        sleep(self.next_delay()).await;
    }

    /// The delay before the next attempt; each one doubles, up to a cap well below the time a
    /// person takes to replug a stick, so a replugged stick is used within seconds.
    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// Reports an input going away once per outage, not once per retry.
#[derive(Debug, Default)]
struct Outage {
    reported: bool,
}

impl Outage {
    fn report(&mut self, tx: &mpsc::Sender<InputEvent>, name: &Arc<str>, reason: String) {
        if !std::mem::replace(&mut self.reported, true) {
            let _ = tx.try_send(InputEvent::Down {
                input: name.clone(),
                reason,
            });
        }
    }

    fn over(&mut self) {
        self.reported = false;
    }
}

/// Opens a stick's serial device: 8N1, exclusively (two programs reading one stick each get
/// half the telegrams).
pub fn open_stick(device: &str, baud: u32) -> std::io::Result<SerialStream> {
    let mut port = tokio_serial::new(device, baud)
        .data_bits(DataBits::Eight)
        .parity(Parity::None)
        .stop_bits(StopBits::One)
        .timeout(Duration::from_millis(10))
        .open_native_async()
        .map_err(std::io::Error::from)?;
    #[cfg(unix)]
    {
        // A pty cannot be locked on every system; a real stick can.
        let _ = port.set_exclusive(true);
    }
    Ok(port)
}

/// A started stick of any kind.
pub enum StickSession<S> {
    Imst(ImstSession<S>),
    Amber(AmberSession<S>),
    Cul(CulSession<S>),
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> StickSession<S> {
    pub async fn start(stream: S, kind: StickKind, mode: LinkMode) -> Result<Self, StickError> {
        Ok(match kind {
            StickKind::Im871a | StickKind::Iu891a => {
                StickSession::Imst(ImstSession::start(stream, kind, mode).await?)
            }
            StickKind::Amb8465 => StickSession::Amber(AmberSession::start(stream, mode).await?),
            StickKind::Cul => StickSession::Cul(CulSession::start(stream, mode).await?),
        })
    }

    pub fn info(&self) -> &StickInfo {
        match self {
            StickSession::Imst(s) => s.info(),
            StickSession::Amber(s) => s.info(),
            StickSession::Cul(s) => s.info(),
        }
    }

    pub fn stats(&self) -> StickStats {
        match self {
            StickSession::Imst(s) => s.stats(),
            StickSession::Amber(s) => s.stats(),
            StickSession::Cul(s) => s.stats(),
        }
    }

    /// Cancel-safe, as each session's `next` is.
    pub async fn next(&mut self) -> Result<Heard, StickError> {
        match self {
            StickSession::Imst(s) => s.next().await,
            StickSession::Amber(s) => s.next().await,
            StickSession::Cul(s) => s.next().await,
        }
    }
}

/// How long an input keeps trying. The daemon never gives up (a stick plugged in later, a
/// port that frees up); `listen`, with a person waiting, does.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryPolicy {
    /// Failed attempts in a row after which a stick input stops with [`InputEvent::Failed`]:
    /// a device that does not exist, or a stick that does not answer as the kind given. A
    /// path that is not a serial device at all ends it at once.
    pub give_up_after: Option<u32>,
}

/// Runs one input until the receiving side of `tx` is dropped.
pub async fn run(name: Arc<str>, spec: InputSpec, tx: mpsc::Sender<InputEvent>) {
    run_with(name, spec, tx, RetryPolicy::default()).await;
}

/// [`run`] with a retry policy.
pub async fn run_with(
    name: Arc<str>,
    spec: InputSpec,
    tx: mpsc::Sender<InputEvent>,
    policy: RetryPolicy,
) {
    match spec {
        InputSpec::Stick {
            kind,
            device,
            mode,
            baud,
        } => run_stick(name, kind, &device, mode, baud, tx, policy).await,
        InputSpec::RtlWmbus { command: None } => {
            read_lines(&name, tokio::io::stdin(), parse_rtlwmbus_line, &tx).await;
        }
        InputSpec::RtlWmbus {
            command: Some(command),
        } => run_command(name, &command, tx).await,
        InputSpec::HexStdin => {
            read_lines(&name, tokio::io::stdin(), parse_any_line, &tx).await;
        }
        InputSpec::TcpClient { address } => run_tcp_client(name, &address, tx).await,
        InputSpec::TcpServer { bind } => run_tcp_server(name, &bind, tx).await,
        InputSpec::Udp { bind } => run_udp(name, &bind, tx).await,
        InputSpec::Mqtt {
            host,
            port,
            topic,
            username,
            password,
        } => run_mqtt(name, host, port, topic, username, password, tx).await,
    }
}

/// Parses `mqtt://[user[:password]@]host[:port]/topic` into an [`InputSpec::Mqtt`]; the topic may
/// contain wildcards (`+`, `#`).
pub fn mqtt_input_from_url(url: &str) -> Result<InputSpec, String> {
    let rest = url
        .strip_prefix("mqtt://")
        .ok_or_else(|| format!("{url:?}: expected mqtt://host[:port]/topic"))?;
    let (authority, topic) = rest
        .split_once('/')
        .ok_or_else(|| format!("{url:?}: the topic is missing (mqtt://host:1883/wmbus/raw)"))?;
    if topic.is_empty() {
        return Err(format!("{url:?}: the topic is empty"));
    }
    let (credentials, hostport) = match authority.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, authority),
    };
    let (username, password) = match credentials {
        Some(c) => match c.split_once(':') {
            Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
            None => (Some(c.to_string()), None),
        },
        None => (None, None),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse::<u16>()
                .map_err(|_| format!("{url:?}: port {p:?} is not a number"))?,
        ),
        None => (hostport.to_string(), 1883),
    };
    if host.is_empty() {
        return Err(format!("{url:?}: the host is missing"));
    }
    Ok(InputSpec::Mqtt {
        host,
        port,
        topic: topic.to_string(),
        username,
        password,
    })
}

async fn run_mqtt(
    name: Arc<str>,
    host: String,
    port: u16,
    topic: String,
    username: Option<String>,
    password: Option<String>,
    tx: mpsc::Sender<InputEvent>,
) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let client_id = format!("meterbridge-listen-{}", std::process::id());
    let mut options = MqttOptions::new(client_id, host.clone(), port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(64 * 1024, 64 * 1024);
    if let Some(u) = username {
        options.set_credentials(u, password.unwrap_or_default());
    }
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let mut outage = Outage::default();
    let mut backoff = Backoff::new();
    loop {
        if tx.is_closed() {
            return;
        }
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                outage.over();
                if let Err(e) = client.try_subscribe(topic.clone(), QoS::AtLeastOnce) {
                    let _ = tx.try_send(InputEvent::Down {
                        input: name.clone(),
                        reason: format!("cannot subscribe to {topic}: {e}"),
                    });
                }
                let _ = tx
                    .send(InputEvent::Up {
                        input: name.clone(),
                        info: None,
                    })
                    .await;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let text = String::from_utf8_lossy(&p.payload);
                if !deliver_text(&name, &text, &tx).await {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                outage.report(
                    &tx,
                    &name,
                    format!("mqtt://{host}:{port}: {e}; reconnecting"),
                );
                backoff.wait().await;
            }
        }
    }
}

async fn run_stick(
    name: Arc<str>,
    kind: StickKind,
    device: &str,
    mode: LinkMode,
    baud: Option<u32>,
    tx: mpsc::Sender<InputEvent>,
    policy: RetryPolicy,
) {
    let baud = baud.unwrap_or(kind.default_baud());
    let mut backoff = Backoff::new();
    let mut outage = Outage::default();
    let mut failures = 0u32;
    let give_up = |reason: String| {
        let _ = tx.try_send(InputEvent::Failed {
            input: name.clone(),
            reason,
        });
    };
    loop {
        if tx.is_closed() {
            return;
        }
        let stream = match open_stick(device, baud) {
            Ok(s) => s,
            Err(e) => {
                failures += 1;
                if let Some(limit) = policy.give_up_after {
                    if let Some(why) = never_a_serial_device(device) {
                        give_up(format!("cannot use {device}: {why}"));
                        return;
                    }
                    if failures >= limit {
                        give_up(format!(
                            "cannot open {device}: {e}; gave up after {failures} attempts \
                             (is the stick plugged in? `ls /dev/serial/by-id/` lists the ones that are)"
                        ));
                        return;
                    }
                }
                outage.report(
                    &tx,
                    &name,
                    format!("cannot open {device}: {e}; retrying until it is back"),
                );
                backoff.wait().await;
                continue;
            }
        };
        let mut session = match StickSession::start(stream, kind, mode).await {
            Ok(s) => s,
            Err(e) => {
                failures += 1;
                if policy.give_up_after.is_some_and(|limit| failures >= limit) {
                    give_up(format!(
                        "{e}; gave up after {failures} attempts: {device} does not answer as a \
                         {kind} (check --stick and --baud)"
                    ));
                    return;
                }
                outage.report(&tx, &name, format!("{e}; retrying"));
                backoff.wait().await;
                continue;
            }
        };
        failures = 0;
        backoff.reset();
        outage.over();
        if tx
            .send(InputEvent::Up {
                input: name.clone(),
                info: Some(session.info().clone()),
            })
            .await
            .is_err()
        {
            return;
        }
        let mut malformed = session.stats().malformed;
        loop {
            match session.next().await {
                Ok(heard) => {
                    let stats = session.stats();
                    if stats.malformed != malformed {
                        malformed = stats.malformed;
                        let _ = tx.try_send(InputEvent::Stats {
                            input: name.clone(),
                            stats,
                        });
                    }
                    if tx
                        .send(InputEvent::Telegram {
                            input: name.clone(),
                            heard,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    outage.report(&tx, &name, format!("{e}; waiting for it to come back"));
                    break;
                }
            }
        }
        backoff.wait().await;
    }
}

/// Why `device` can never be a stick, whatever is plugged in later: it exists but is not a
/// character device (a regular file, a folder). A path that does not exist yet may appear.
fn never_a_serial_device(device: &str) -> Option<String> {
    let meta = std::fs::metadata(device).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_char_device() {
            return None;
        }
    }
    Some(if meta.is_dir() {
        "it is a folder, not a serial device".into()
    } else {
        "it is a file, not a serial device (a stick is a character device such as /dev/ttyUSB0)"
            .into()
    })
}

type LineParser = fn(&str) -> Result<Option<Heard>, LineError>;

/// Longest input line accepted. The longest real one (a 256-byte telegram as hex inside an
/// rtl_wmbus line or a JSON object with its RSSI and timestamps) is under 1 KiB.
pub const MAX_LINE: usize = 8192;

/// Reads lines until the stream ends; returns false if the consumer is gone. A line longer than
/// [`MAX_LINE`] is dropped (and reported) without being held in memory, so a peer that never
/// sends a newline cannot make the gateway grow; bytes that are not UTF-8 are replaced, and the
/// line is judged by the parser like any other.
async fn read_lines<R: AsyncRead + Unpin>(
    name: &Arc<str>,
    reader: R,
    parse: LineParser,
    tx: &mpsc::Sender<InputEvent>,
) -> bool {
    let mut reader = BufReader::new(reader);
    let mut line: Vec<u8> = Vec::new();
    let mut overlong = false;
    loop {
        let (used, complete) = match reader.fill_buf().await {
            Ok([]) => {
                // End of stream: a last line without a newline still counts.
                return overlong || line.is_empty() || deliver_bytes(name, &line, parse, tx).await;
            }
            Ok(buf) => {
                let newline = buf.iter().position(|&b| b == b'\n');
                let used = newline.map_or(buf.len(), |i| i + 1);
                let content = buf.get(..newline.unwrap_or(buf.len())).unwrap_or_default();
                if !overlong {
                    if line.len() + content.len() > MAX_LINE {
                        overlong = true;
                        line.clear();
                        let _ = tx.try_send(InputEvent::Malformed {
                            input: name.clone(),
                            reason: format!("a line longer than {MAX_LINE} bytes was dropped"),
                        });
                    } else {
                        line.extend_from_slice(content);
                    }
                }
                (used, newline.is_some())
            }
            Err(e) => {
                let _ = tx.try_send(InputEvent::Malformed {
                    input: name.clone(),
                    reason: format!("unreadable input: {e}"),
                });
                return true;
            }
        };
        reader.consume(used);
        if complete {
            if !overlong && !deliver_bytes(name, &line, parse, tx).await {
                return false;
            }
            line.clear();
            overlong = false;
        }
    }
}

async fn deliver_bytes(
    name: &Arc<str>,
    line: &[u8],
    parse: LineParser,
    tx: &mpsc::Sender<InputEvent>,
) -> bool {
    let text = String::from_utf8_lossy(line);
    deliver(name, text.strip_suffix('\r').unwrap_or(&text), parse, tx).await
}

async fn deliver(
    name: &Arc<str>,
    line: &str,
    parse: LineParser,
    tx: &mpsc::Sender<InputEvent>,
) -> bool {
    let event = match parse(line) {
        Ok(Some(heard)) => InputEvent::Telegram {
            input: name.clone(),
            heard,
        },
        Ok(None) => return true,
        Err(e) => InputEvent::Malformed {
            input: name.clone(),
            reason: e.to_string(),
        },
    };
    tx.send(event).await.is_ok()
}

async fn run_command(name: Arc<str>, command: &str, tx: mpsc::Sender<InputEvent>) {
    let mut backoff = Backoff::new();
    loop {
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdout(std::process::Stdio::piped())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        match child {
            Ok(mut child) => {
                let _ = tx
                    .send(InputEvent::Up {
                        input: name.clone(),
                        info: None,
                    })
                    .await;
                if let Some(out) = child.stdout.take() {
                    if !read_lines(&name, out, parse_rtlwmbus_line, &tx).await {
                        return;
                    }
                }
                let status = child.wait().await;
                let _ = tx.try_send(InputEvent::Down {
                    input: name.clone(),
                    reason: format!(
                        "`{command}` ended ({}); restarting it",
                        status.map_or_else(|e| e.to_string(), |s| s.to_string())
                    ),
                });
            }
            Err(e) => {
                let _ = tx.try_send(InputEvent::Down {
                    input: name.clone(),
                    reason: format!("cannot run `{command}`: {e}"),
                });
            }
        }
        if tx.is_closed() {
            return;
        }
        backoff.wait().await;
    }
}

async fn run_tcp_client(name: Arc<str>, address: &str, tx: mpsc::Sender<InputEvent>) {
    let mut backoff = Backoff::new();
    let mut outage = Outage::default();
    loop {
        if tx.is_closed() {
            return;
        }
        match TcpStream::connect(address).await {
            Ok(stream) => {
                backoff.reset();
                outage.over();
                let _ = tx
                    .send(InputEvent::Up {
                        input: name.clone(),
                        info: None,
                    })
                    .await;
                if !read_lines(&name, stream, parse_any_line, &tx).await {
                    return;
                }
                outage.report(
                    &tx,
                    &name,
                    format!("{address} closed the connection; reconnecting"),
                );
            }
            Err(e) => outage.report(
                &tx,
                &name,
                format!("cannot connect to {address}: {e}; retrying"),
            ),
        }
        backoff.wait().await;
    }
}

/// Binds a listening socket, retrying with backoff while the address is taken (another program
/// has the port, or a previous instance is still shutting down): reported once when it fails,
/// and the input's `Up` says when it works again. `None` once the consumer is gone.
async fn bind_with_retry<T, F, Fut>(
    name: &Arc<str>,
    what: &str,
    tx: &mpsc::Sender<InputEvent>,
    bind: F,
) -> Option<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    let mut backoff = Backoff::new();
    let mut outage = Outage::default();
    loop {
        if tx.is_closed() {
            return None;
        }
        match bind().await {
            Ok(socket) => {
                tx.send(InputEvent::Up {
                    input: name.clone(),
                    info: None,
                })
                .await
                .ok()?;
                return Some(socket);
            }
            Err(e) => {
                outage.report(
                    tx,
                    name,
                    format!("cannot listen on {what}: {e}; retrying until it is free"),
                );
                backoff.wait().await;
            }
        }
    }
}

/// How long a `tcp_server` client may stay silent before it is disconnected. Senders that keep
/// a connection open between telegrams reconnect; the limit only has to keep dead or hostile
/// connections from holding slots forever.
pub const TCP_CLIENT_IDLE: Duration = Duration::from_secs(300);
/// With every slot taken, a client silent for this long makes room for a new one.
pub const TCP_CLIENT_EVICT_AFTER: Duration = Duration::from_secs(10);

/// Time limits of a `tcp_server` input's clients.
#[derive(Debug, Clone, Copy)]
struct ClientLimits {
    idle: Duration,
    evict_after: Duration,
}

async fn run_tcp_server(name: Arc<str>, bind: &str, tx: mpsc::Sender<InputEvent>) {
    let limits = ClientLimits {
        idle: TCP_CLIENT_IDLE,
        evict_after: TCP_CLIENT_EVICT_AFTER,
    };
    run_tcp_server_with(name, bind, tx, limits).await;
}

/// When a client last sent anything, and how to tell it to go.
struct Client {
    activity: Arc<Activity>,
    evict: Arc<tokio::sync::Notify>,
    done: Arc<std::sync::atomic::AtomicBool>,
}

async fn run_tcp_server_with(
    name: Arc<str>,
    bind: &str,
    tx: mpsc::Sender<InputEvent>,
    limits: ClientLimits,
) {
    let what = format!("tcp {bind}");
    let Some(listener) = bind_with_retry(&name, &what, &tx, || TcpListener::bind(bind)).await
    else {
        return;
    };
    // Each client costs a task and a socket; a bridge has one or two. The cap keeps a confused
    // or hostile peer from exhausting file descriptors, and idle clients are evicted so the cap
    // cannot be held by connections that send nothing.
    let mut clients: Vec<Client> = Vec::new();
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            sleep(Duration::from_millis(100)).await;
            continue;
        };
        if tx.is_closed() {
            return;
        }
        clients.retain(|c| !c.done.load(std::sync::atomic::Ordering::Acquire));
        if clients.len() >= MAX_TCP_CLIENTS {
            // The client silent the longest makes room, if it has been silent long enough.
            let idlest = clients
                .iter()
                .filter(|c| c.activity.idle() >= limits.evict_after)
                .max_by_key(|c| c.activity.idle());
            match idlest {
                Some(c) => {
                    c.evict.notify_one();
                    c.done.store(true, std::sync::atomic::Ordering::Release);
                }
                None => {
                    let _ = tx.try_send(InputEvent::Malformed {
                        input: name.clone(),
                        reason: format!(
                            "connection from {peer} refused: {MAX_TCP_CLIENTS} clients are connected and sending already"
                        ),
                    });
                    drop(stream);
                    continue;
                }
            }
        }
        let client = Client {
            activity: Arc::new(Activity::new()),
            evict: Arc::new(tokio::sync::Notify::new()),
            done: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        let (activity, evict, done) = (
            client.activity.clone(),
            client.evict.clone(),
            client.done.clone(),
        );
        clients.push(client);
        let name = name.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let reader = Tracked {
                inner: stream,
                activity: activity.clone(),
            };
            tokio::select! {
                _ = read_lines(&name, reader, parse_any_line, &tx) => {}
                _ = evict.notified() => {}
                _ = async {
                    loop {
                        let idle = activity.idle();
                        if idle >= limits.idle {
                            break;
                        }
                        sleep(limits.idle - idle).await;
                    }
                } => {}
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
    }
}

/// The time of a connection's last received bytes, as milliseconds since it was accepted.
struct Activity {
    since: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            since: std::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed));
        self.since.elapsed().saturating_sub(last)
    }
}

/// A reader that records when bytes last arrived.
struct Tracked<R> {
    inner: R,
    activity: Arc<Activity>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Tracked<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

/// Clients a `tcp_server` input serves at once.
pub const MAX_TCP_CLIENTS: usize = 16;

/// Largest datagram accepted: a wireless telegram is at most 256 bytes, so 600 hex characters
/// plus JSON around them is plenty; longer ones are cut and then refused by the parser.
const MAX_DATAGRAM: usize = 4096;

async fn run_udp(name: Arc<str>, bind: &str, tx: mpsc::Sender<InputEvent>) {
    let what = format!("udp {bind}");
    let Some(socket) = bind_with_retry(&name, &what, &tx, || UdpSocket::bind(bind)).await else {
        return;
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((n, _peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let text = String::from_utf8_lossy(buf.get(..n).unwrap_or(&[]));
        for line in text.lines() {
            if !deliver(&name, line, parse_any_line, &tx).await {
                return;
            }
        }
    }
}

/// Handles a raw telegram that arrived some other way (an MQTT message): one telegram per line.
pub async fn deliver_text(name: &Arc<str>, text: &str, tx: &mpsc::Sender<InputEvent>) -> bool {
    for line in text.lines() {
        if !deliver(name, line, parse_any_line, tx).await {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::lines::parse_hex_line;
    use super::*;

    /// Every event `read_lines` sends for `input`, as short descriptions.
    async fn events_for(input: Vec<u8>) -> Vec<String> {
        let (tx, mut rx) = mpsc::channel(16);
        let name: Arc<str> = Arc::from("test");
        let reader =
            tokio::spawn(
                async move { read_lines(&name, input.as_slice(), parse_hex_line, &tx).await },
            );
        let mut seen = Vec::new();
        while let Some(event) = rx.recv().await {
            seen.push(match event {
                InputEvent::Telegram { heard, .. } => format!("telegram of {}", heard.frame.len()),
                InputEvent::Malformed { reason, .. } => format!("malformed: {reason}"),
                other => format!("{other:?}"),
            });
        }
        assert!(reader.await.unwrap());
        seen
    }

    const TELEGRAM: &str = "2E44A5119870659930037A060020052F2F0C933E842784060A3B00000A5A5901C4016D3B37DF2CCC01933E24032606";

    #[tokio::test]
    async fn an_endless_line_is_dropped_and_the_next_one_read() {
        let mut input = vec![b'A'; 3 * 1024 * 1024];
        input.extend_from_slice(format!("\n{TELEGRAM}\r\n").as_bytes());
        // Not UTF-8: judged by the parser, and the stream goes on.
        input.extend_from_slice(b"\xFF\xFE\n");
        input.extend_from_slice(TELEGRAM.as_bytes());
        let seen = events_for(input).await;
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert_eq!(
            seen[0],
            format!("malformed: a line longer than {MAX_LINE} bytes was dropped")
        );
        assert_eq!(seen[1], "telegram of 47");
        assert!(seen[2].starts_with("malformed: "), "{seen:?}");
        // The last line has no newline before the end of the stream.
        assert_eq!(seen[3], "telegram of 47");
    }

    #[tokio::test]
    async fn a_line_at_the_limit_reaches_the_parser_and_one_past_it_does_not() {
        let dropped = format!("malformed: a line longer than {MAX_LINE} bytes was dropped");
        let at_limit = format!("{}\n", "A".repeat(MAX_LINE));
        let seen = events_for(at_limit.into_bytes()).await;
        assert_eq!(seen.len(), 1);
        assert_ne!(seen[0], dropped, "the parser, not the reader, refuses it");
        let past = format!("{}\n", "A".repeat(MAX_LINE + 1));
        assert_eq!(events_for(past.into_bytes()).await, [dropped]);
    }

    async fn next(rx: &mut mpsc::Receiver<InputEvent>) -> InputEvent {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event in time")
            .expect("input alive")
    }

    #[tokio::test]
    async fn a_tcp_server_input_serves_a_bounded_number_of_clients() {
        use tokio::io::AsyncWriteExt;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bind = format!("127.0.0.1:{port}");
        let (tx, mut rx) = mpsc::channel(64);
        let server = tokio::spawn({
            let bind = bind.clone();
            async move { run_tcp_server(Arc::from("bridge"), &bind, tx).await }
        });
        assert!(matches!(next(&mut rx).await, InputEvent::Up { .. }));
        let mut clients = Vec::new();
        for _ in 0..MAX_TCP_CLIENTS {
            clients.push(TcpStream::connect(&bind).await.unwrap());
        }
        let _refused = TcpStream::connect(&bind).await.unwrap();
        match next(&mut rx).await {
            InputEvent::Malformed { reason, .. } => {
                assert!(
                    reason.contains("16 clients are connected and sending already"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        // A slot freed is a slot for the next client.
        drop(clients.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut late = TcpStream::connect(&bind).await.unwrap();
        late.write_all(format!("{TELEGRAM}\n").as_bytes())
            .await
            .unwrap();
        match next(&mut rx).await {
            InputEvent::Telegram { heard, .. } => assert_eq!(heard.frame.len(), 47),
            other => panic!("{other:?}"),
        }
        server.abort();
    }

    #[tokio::test]
    async fn idle_tcp_clients_cannot_hold_every_slot() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        let (tx, mut rx) = mpsc::channel(64);
        let limits = ClientLimits {
            idle: Duration::from_secs(3),
            evict_after: Duration::from_millis(500),
        };
        let server = tokio::spawn({
            let bind = bind.clone();
            async move { run_tcp_server_with(Arc::from("bridge"), &bind, tx, limits).await }
        });
        assert!(matches!(next(&mut rx).await, InputEvent::Up { .. }));
        let mut idle = Vec::new();
        for _ in 0..MAX_TCP_CLIENTS {
            idle.push(TcpStream::connect(&bind).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        // Every slot is held by a silent client: the newcomer takes the place of one of them.
        let mut sender = TcpStream::connect(&bind).await.unwrap();
        sender
            .write_all(format!("{TELEGRAM}\n").as_bytes())
            .await
            .unwrap();
        match next(&mut rx).await {
            InputEvent::Telegram { heard, .. } => assert_eq!(heard.frame.len(), 47),
            other => panic!("{other:?}"),
        }
        // The idle timeout closes the silent ones that were not evicted.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let mut closed = 0;
        for c in &mut idle {
            let mut b = [0u8; 1];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(200), c.read(&mut b)).await
            {
                closed += 1;
            }
        }
        assert_eq!(
            closed, MAX_TCP_CLIENTS,
            "every silent client was disconnected"
        );
        server.abort();
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// The events of an input until it reports itself up, with a time limit.
    async fn until_up(rx: &mut mpsc::Receiver<InputEvent>) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match next(rx).await {
                InputEvent::Up { .. } => return seen,
                InputEvent::Down { reason, .. } => seen.push(reason),
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_udp_input_on_a_busy_port_is_retried_until_the_port_is_free() {
        let squatter = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let bind = squatter.local_addr().unwrap().to_string();
        let (tx, mut rx) = mpsc::channel(64);
        let input = tokio::spawn({
            let bind = bind.clone();
            async move { run_udp(Arc::from("air"), &bind, tx).await }
        });
        // Several attempts fail meanwhile; the outage is reported once.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        drop(squatter);
        let downs = until_up(&mut rx).await;
        assert_eq!(downs.len(), 1, "{downs:?}");
        assert!(
            downs[0].contains(&format!("cannot listen on udp {bind}")),
            "{downs:?}"
        );
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sender.send_to(TELEGRAM.as_bytes(), &bind).await.unwrap();
        match next(&mut rx).await {
            InputEvent::Telegram { heard, .. } => assert_eq!(heard.frame.len(), 47),
            other => panic!("{other:?}"),
        }
        input.abort();
    }

    #[tokio::test]
    async fn a_tcp_server_input_on_a_busy_port_is_retried_until_the_port_is_free() {
        use tokio::io::AsyncWriteExt;
        let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let bind = squatter.local_addr().unwrap().to_string();
        let (tx, mut rx) = mpsc::channel(64);
        let input = tokio::spawn({
            let bind = bind.clone();
            async move { run_tcp_server(Arc::from("esp"), &bind, tx).await }
        });
        tokio::time::sleep(Duration::from_millis(1200)).await;
        drop(squatter);
        let downs = until_up(&mut rx).await;
        assert_eq!(downs.len(), 1, "{downs:?}");
        assert!(
            downs[0].contains(&format!("cannot listen on tcp {bind}")),
            "{downs:?}"
        );
        let mut sender = TcpStream::connect(&bind).await.unwrap();
        sender
            .write_all(format!("{TELEGRAM}\n").as_bytes())
            .await
            .unwrap();
        match next(&mut rx).await {
            InputEvent::Telegram { heard, .. } => assert_eq!(heard.frame.len(), 47),
            other => panic!("{other:?}"),
        }
        input.abort();
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_starts_over_after_a_reset() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(250));
    }
}
