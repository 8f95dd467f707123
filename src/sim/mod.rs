//! Simulated meters for testing masters without hardware.
//!
//! [`bus`] is the segment's logic; this module loads it from files and serves it over TCP
//! (like an M-Bus/TCP gateway) or a pseudo-terminal (like a serial level converter), with the
//! line's timing so that a master's response windows are exercised as on a real bus.

pub mod amber;
pub mod bus;
pub mod cul;
pub mod demo;
pub mod imst;
pub mod stick;

pub use bus::{
    BusConfig, BusSim, MeterConfig, Request, SecondaryAddress, SimError, SimMeter, SimReply,
};

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::transport::timing;
use crate::wire::hex;
use crate::wire::wired::{Frame, FrameReader, ADDRESS_MAX_PRIMARY};

/// Makes a telegram at the moment it is sent, so a simulated meter's readings can move with
/// time (the demo's meters count up). A bus meter calls it with the access number of the
/// reading (a repeat after a lost answer asks for the same one again); a stick with the index
/// of the configured telegram it would have sent, which it sends instead of that one.
#[derive(Clone)]
pub struct LiveTelegram(pub Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync>);

impl std::fmt::Debug for LiveTelegram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveTelegram")
    }
}

/// How a server puts the segment on a stream.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// The rate the master is taken to send at; meters at other rates do not hear it.
    pub baud: u32,
    /// One line per request and answer on standard error.
    pub log: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            baud: bus::DEFAULT_BAUD,
            log: false,
        }
    }
}

/// Reads a YAML segment description (see [`BusConfig`]).
pub fn load_config(path: &Path) -> Result<BusConfig, SimError> {
    let text = std::fs::read_to_string(path).map_err(|e| SimError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    BusConfig::from_yaml_str(&text)
}

impl BusSim {
    pub fn from_yaml_file(path: &Path) -> Result<BusSim, SimError> {
        load_config(path)?.build()
    }

    /// One meter per `*.hex` frame file (libmbus corpus layout), in file-name order at
    /// primary addresses 1, 2, …; the secondary address comes from each frame's header.
    /// Files beyond the 250 primary addresses are left out.
    pub fn from_corpus_dir(path: &Path) -> Result<BusSim, SimError> {
        let file_error = |p: &Path, message: String| SimError::File {
            path: p.display().to_string(),
            message,
        };
        let entries = std::fs::read_dir(path).map_err(|e| file_error(path, e.to_string()))?;
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "hex"))
            .collect();
        files.sort();
        let mut meters = Vec::new();
        for (file, primary) in files.iter().zip(1..=ADDRESS_MAX_PRIMARY) {
            let text =
                std::fs::read_to_string(file).map_err(|e| file_error(file, e.to_string()))?;
            let frame = hex::decode(&text).map_err(|e| file_error(file, e.to_string()))?;
            if let Err(e) = Frame::parse(&frame) {
                return Err(file_error(file, e.to_string()));
            }
            let secondary = bus::secondary_of(&frame).unwrap_or(SecondaryAddress {
                id: u32::from(primary),
                manufacturer: 0,
                version: 0,
                medium: 0,
            });
            let meter = SimMeter::new(primary, secondary)
                .with_telegrams(vec![frame])
                .map_err(|e| file_error(file, e.to_string()))?;
            meters.push(meter);
        }
        if meters.is_empty() {
            return Err(file_error(path, "no *.hex frame files".into()));
        }
        Ok(BusSim::new(meters))
    }
}

/// The segment lock; a panic elsewhere while holding it leaves the meters usable.
fn lock(sim: &Mutex<BusSim>) -> MutexGuard<'_, BusSim> {
    sim.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn spaced_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn log_exchange(frame: &[u8], reply: &SimReply) {
    let what = match bus::classify(frame) {
        Some((address, request)) => format!("A={address} {request}"),
        None => "not a request".to_owned(),
    };
    let answer = match reply.responders {
        0 => "silence".to_owned(),
        1 => format!("1 meter: {}", spaced_hex(reply.answer())),
        n => format!("{n} meters (collision): {}", spaced_hex(reply.answer())),
    };
    tracing::info!("<- {} [{what}] -> {answer}", spaced_hex(frame));
}

/// Bytes per write when pacing: about 2 ms of line time, so fast rates do not need a timer
/// wake-up per byte (tokio timers have millisecond resolution).
fn chunk_len(baud: u32) -> usize {
    let per_byte = timing::byte_time(baud).as_secs_f64();
    if per_byte <= 0.0 {
        return 1;
    }
    ((0.002 / per_byte).ceil() as usize).clamp(1, 16)
}

/// Writes `bytes` as a UART would deliver them from `start` on: each byte only once its
/// 11 bits have crossed the line.
async fn paced_write<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    baud: u32,
    start: Instant,
) -> std::io::Result<()> {
    let mut sent = 0;
    for part in bytes.chunks(chunk_len(baud)) {
        sent += part.len();
        sleep_until(start + timing::wire_time(baud, sent)).await;
        stream.write_all(part).await?;
        stream.flush().await?;
    }
    Ok(())
}

/// Puts one exchange on the line: the request takes its wire time (echoed at that pace if
/// the converter echoes), the meters wait the minimum response delay plus their own, and the
/// answer follows at the line rate.
async fn transmit<S: AsyncWrite + Unpin>(
    stream: &mut S,
    request_len: usize,
    reply: &SimReply,
    baud: u32,
) -> std::io::Result<()> {
    let start = Instant::now();
    let (echo, answer) = reply.bytes.split_at(reply.echo.min(reply.bytes.len()));
    paced_write(stream, echo, baud, start).await?;
    let request_end = start + timing::wire_time(baud, request_len);
    if answer.is_empty() {
        // The line stays busy until the request is through, whoever answers.
        sleep_until(request_end).await;
        return Ok(());
    }
    let answer_start = request_end + timing::idle_gap(baud) + reply.delay;
    paced_write(stream, answer, baud, answer_start).await
}

/// Serves the segment on one byte stream until it closes: frames requests (dropping
/// garbage), lets the meters answer and writes the answer with the line's timing.
pub async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    sim: &Mutex<BusSim>,
    opts: ServeOptions,
) -> std::io::Result<()> {
    serve_stream_at(stream, sim, opts, |_| None).await
}

/// [`serve_stream`] on a line whose rate the client may change: `line_rate` reads the rate
/// the client set (a pseudo-terminal's shared settings) before each request, so a master
/// that switched a meter's baud rate and reopened its port at the new rate reaches it.
pub async fn serve_stream_at<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    sim: &Mutex<BusSim>,
    opts: ServeOptions,
    line_rate: fn(&S) -> Option<u32>,
) -> std::io::Result<()> {
    let mut reader = FrameReader::new();
    let mut buf = [0u8; 512];
    // A slave's receiver gives up on a frame after a long gap; without this, a truncated
    // request would swallow the next good one.
    let stale_after = timing::response_window(opts.baud).max(Duration::from_millis(100));
    loop {
        let n = if reader.pending() > 0 {
            match timeout(stale_after, stream.read(&mut buf)).await {
                Ok(read) => read?,
                Err(_) => {
                    if opts.log {
                        tracing::info!(
                            "<- dropped {} byte(s) of an incomplete frame",
                            reader.pending()
                        );
                    }
                    reader.clear();
                    continue;
                }
            }
        } else {
            stream.read(&mut buf).await?
        };
        if n == 0 {
            return Ok(());
        }
        reader.push(buf.get(..n).unwrap_or_default());
        while let Some(item) = reader.next_frame() {
            let frame = match item {
                Ok(frame) => frame,
                Err(e) => {
                    if opts.log {
                        tracing::info!("<- dropped line noise: {e}");
                    }
                    continue;
                }
            };
            let baud = line_rate(&stream)
                .filter(|b| timing::BAUD_RATES.contains(b))
                .unwrap_or(opts.baud);
            let reply = lock(sim).handle(&frame, baud);
            if opts.log {
                log_exchange(&frame, &reply);
            }
            transmit(&mut stream, frame.len(), &reply, baud).await?;
        }
    }
}

/// Serves every TCP connection (each with its own framing, all on the one segment) until
/// the task is dropped. A connection ending, however it ends, does not stop the server.
pub async fn serve_tcp(
    listener: TcpListener,
    sim: Arc<Mutex<BusSim>>,
    opts: ServeOptions,
) -> std::io::Result<()> {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                // Paced writes are small; Nagle plus delayed ACKs would bunch them up.
                let _ = stream.set_nodelay(true);
                if opts.log {
                    tracing::info!("connection from {peer}");
                }
                let sim = Arc::clone(&sim);
                tokio::spawn(async move {
                    let result = serve_stream(stream, &sim, opts).await;
                    if opts.log {
                        match result {
                            Ok(()) => tracing::info!("connection from {peer} closed"),
                            Err(e) => tracing::warn!("connection from {peer} failed: {e}"),
                        }
                    }
                });
            }
            Err(e) => {
                // Usually out of file descriptors: wait for connections to close.
                tracing::warn!("accept failed: {e}");
                sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A pseudo-terminal pair: the simulator talks on the master side, a client opens
/// [`PtyBus::path`] as if it were a serial converter.
pub struct PtyBus {
    master: tokio_serial::SerialStream,
    /// Kept open so the master side does not fail with EIO between clients.
    _slave: tokio_serial::SerialStream,
    path: String,
}

/// Creates the pseudo-terminal pair (inside a tokio runtime).
pub fn open_pty() -> std::io::Result<PtyBus> {
    use tokio_serial::SerialPort;
    let (master, slave) = tokio_serial::SerialStream::pair()?;
    let path = slave.name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the pseudo-terminal has no device name",
        )
    })?;
    Ok(PtyBus {
        master,
        _slave: slave,
        path,
    })
}

impl PtyBus {
    /// The device a client opens.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Serves the segment until the pseudo-terminal fails.
    pub async fn serve(self, sim: Arc<Mutex<BusSim>>, opts: ServeOptions) -> std::io::Result<()> {
        use tokio_serial::SerialPort;
        let PtyBus { master, _slave, .. } = self;
        let result = serve_stream_at(master, &sim, opts, |m| m.baud_rate().ok()).await;
        drop(_slave);
        result
    }
}
