//! A simulated CUL running culfw: answers `V`, `X`/`X<hh>` and `br<x>` as culfw does (see
//! [`crate::receivers::cul`] for the facts) and, once the receiver is on, prints the
//! configured telegrams as culfw prints received ones: `b` + hex with the data-link CRCs,
//! or `bY` + hex in format B for C-mode frames, then LQI and RSSI if reporting asks for them.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep, sleep_until, Instant};

use super::stick::{lock_log, next_on_schedule, note_emitted, SharedStickLog, StickSimConfig};
use crate::receivers::LinkMode;
use crate::wire::hex;
use crate::wire::wireless::{add_dll_crcs, FrameFormat};

/// The firmware the simulator pretends to run.
#[derive(Debug, Clone)]
pub struct CulFirmware {
    /// The answer to `V`.
    pub version_line: String,
    /// culfw 1.67 and later have the C-mode receiver (`brc`); older builds answer `OFF`.
    pub c_mode: bool,
    /// Built with wireless M-Bus at all; without it `b` is an unknown command.
    pub wmbus: bool,
    /// Emitted telegrams (counting from 0) whose line gets one CRC bit flipped, as serial
    /// noise would do; culfw itself never prints a frame that failed its CRC check.
    pub damaged: Vec<u64>,
}

impl Default for CulFirmware {
    fn default() -> Self {
        CulFirmware {
            version_line: "V 1.67 nanoCUL868".to_string(),
            c_mode: true,
            wmbus: true,
            damaged: Vec::new(),
        }
    }
}

/// culfw's report flag that appends LQI and RSSI.
const REPORT_RSSI: u8 = 0x20;
/// culfw's send credit after start-up, in 10 ms units (printed by `X`).
const CREDIT_10MS: u16 = 900;
/// A plausible LQI byte (CC1101 LQI register, bit 7 = CRC flag).
const LQI: u8 = 0x80 | 0x1B;
/// Longest command culfw buffers (TTY_BUFSIZE is 128 on most boards).
const MAX_COMMAND: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receiver {
    S,
    T,
    C,
}

/// Serves culfw 1.67 with the wireless M-Bus C-mode receiver.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send>(
    stream: S,
    cfg: StickSimConfig,
    log: SharedStickLog,
) -> std::io::Result<()> {
    serve_firmware(stream, CulFirmware::default(), cfg, log).await
}

/// Serves the given firmware until the stream ends (EOF, or EIO from a closed
/// pseudo-terminal).
pub async fn serve_firmware<S: AsyncRead + AsyncWrite + Unpin + Send>(
    mut stream: S,
    firmware: CulFirmware,
    cfg: StickSimConfig,
    log: SharedStickLog,
) -> std::io::Result<()> {
    let mut state = Sim {
        firmware,
        receiver: None,
        report: 0,
        next: 0,
        emitted: 0,
        due: None,
    };
    let mut command = Vec::new();
    let mut overlong = false;
    let mut buf = [0u8; 256];
    loop {
        let due = state.due;
        tokio::select! {
            read = stream.read(&mut buf) => {
                let n = match read {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if e.raw_os_error() == Some(EIO) => return Ok(()),
                    Err(e) => return Err(e),
                };
                for &b in buf.get(..n).unwrap_or_default() {
                    if b != b'\n' && b != b'\r' {
                        if command.len() < MAX_COMMAND {
                            command.push(b);
                        } else {
                            overlong = true;
                        }
                        continue;
                    }
                    if command.is_empty() {
                        continue;
                    }
                    let text = String::from_utf8_lossy(&command).into_owned();
                    lock_log(&log).requests.push(std::mem::take(&mut command));
                    if cfg.log {
                        let cut = if overlong { " (cut)" } else { "" };
                        tracing::info!("cul <- {text}{cut}");
                    }
                    overlong = false;
                    let answer = state.handle(&text, &cfg, &log);
                    if let Some(answer) = answer {
                        sleep(cfg.reply_delay).await;
                        if cfg.log {
                            tracing::info!("cul -> {answer}");
                        }
                        write_line(&mut stream, &answer).await?;
                    }
                }
            }
            _ = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                let line = state.next_telegram_line(&cfg);
                state.due = state.next_due(&cfg).map(|fresh| match due {
                    Some(previous) => next_on_schedule(previous, cfg.interval.max(Duration::from_millis(1))),
                    None => fresh,
                });
                if let Some(line) = line {
                    if cfg.log {
                        tracing::info!("cul -> {line}");
                    }
                    write_line(&mut stream, &line).await?;
                    note_emitted(&log);
                }
            }
        }
    }
}

/// The errno a pseudo-terminal master reads once the other side is closed.
const EIO: i32 = 5;

async fn write_line<S: AsyncWrite + Unpin>(stream: &mut S, line: &str) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(line.len() + 2);
    bytes.extend_from_slice(line.as_bytes());
    bytes.extend_from_slice(b"\r\n");
    stream.write_all(&bytes).await?;
    stream.flush().await
}

struct Sim {
    firmware: CulFirmware,
    receiver: Option<Receiver>,
    report: u8,
    /// Index of the next telegram in the configuration.
    next: usize,
    emitted: u64,
    due: Option<Instant>,
}

impl Sim {
    /// The answer line to a command, if culfw prints one.
    fn handle(&mut self, text: &str, cfg: &StickSimConfig, log: &SharedStickLog) -> Option<String> {
        let mut chars = text.chars();
        match chars.next() {
            Some('V') => Some(self.firmware.version_line.clone()),
            Some('X') => {
                let arg = chars.as_str();
                if arg.is_empty() {
                    return Some(format!("{:02X}{CREDIT_10MS:>5}", self.report));
                }
                // culfw reads one hex byte and stays silent.
                if let Some(v) = arg.get(..2).and_then(|d| u8::from_str_radix(d, 16).ok()) {
                    self.report = v;
                }
                None
            }
            Some('b') if self.firmware.wmbus => {
                let rest = chars.as_str();
                if let Some(mode) = rest.strip_prefix('r').filter(|m| !m.is_empty()) {
                    self.receiver = match mode.chars().next() {
                        Some('s') => Some(Receiver::S),
                        Some('t') => Some(Receiver::T),
                        Some('c') if self.firmware.c_mode => Some(Receiver::C),
                        _ => None,
                    };
                    lock_log(log).mode = self.receiver.map(|r| match r {
                        Receiver::S => LinkMode::S1,
                        Receiver::T => LinkMode::T1,
                        // The C-mode receiver takes T-mode frames too.
                        Receiver::C => LinkMode::C1T1,
                    });
                    self.next = 0;
                    self.due = self.next_due(cfg);
                } else if rest.starts_with('s') {
                    // Sending is out of scope; culfw prints nothing after a send either.
                    return None;
                }
                Some(
                    match self.receiver {
                        Some(Receiver::S) => "SMODE",
                        Some(Receiver::T) => "TMODE",
                        Some(Receiver::C) => "CMODE",
                        None => "OFF",
                    }
                    .to_string(),
                )
            }
            _ => Some(format!(
                "? ({text} is unknown) Use one of{}",
                if self.firmware.wmbus {
                    " B b C F i A Z N k G M K U Y R T V W X e f l m t u x"
                } else {
                    " B C F i A Z N k G M K U Y R T V W X e f l m t u x"
                }
            )),
        }
    }

    /// When the next telegram is due, if the receiver is on and telegrams remain.
    fn next_due(&self, cfg: &StickSimConfig) -> Option<Instant> {
        let more = self.next < cfg.telegrams.len() || (cfg.repeat && !cfg.telegrams.is_empty());
        (self.receiver.is_some() && more)
            .then(|| Instant::now() + cfg.interval.max(Duration::from_millis(1)))
    }

    /// The line for the next telegram, as culfw prints it in the current receiver mode.
    fn next_telegram_line(&mut self, cfg: &StickSimConfig) -> Option<String> {
        if self.next >= cfg.telegrams.len() {
            if !cfg.repeat {
                return None;
            }
            self.next = 0;
        }
        let index = self.next;
        let data = cfg.telegram_at(index)?;
        let data = data.as_slice();
        self.next += 1;
        let receiver = self.receiver?;
        // In C mode every other telegram comes as a format B frame, the rest as format A.
        let want_b = receiver == Receiver::C && index.is_multiple_of(2);
        let (format, mut with_crcs) = match want_b.then(|| add_dll_crcs(data, FrameFormat::B)) {
            Some(Some(b)) => (FrameFormat::B, b),
            _ => (FrameFormat::A, add_dll_crcs(data, FrameFormat::A)?),
        };
        let emitted = self.emitted;
        self.emitted += 1;
        if self.firmware.damaged.contains(&emitted) {
            if let Some(last) = with_crcs.last_mut() {
                *last ^= 0x01;
            }
        }
        let mut line = String::from(if format == FrameFormat::B { "bY" } else { "b" });
        hex::push_upper(&mut line, &with_crcs);
        if self.report & REPORT_RSSI != 0 {
            hex::push_upper(&mut line, &[LQI, rssi_raw(cfg.rssi_dbm)]);
        }
        Some(line)
    }
}

/// The CC1101 register value culfw would print for this signal strength (the inverse of
/// [`crate::receivers::rssi_half_db`]).
fn rssi_raw(dbm: i16) -> u8 {
    let half_db = (i32::from(dbm) + 74) * 2;
    half_db.clamp(-128, 127) as i8 as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receivers::rssi_half_db;

    #[test]
    fn rssi_encoding_inverts_the_receivers_formula() {
        for dbm in -137..=-11 {
            assert_eq!(rssi_half_db(rssi_raw(dbm)), dbm, "{dbm}");
        }
    }
}
