//! A simulated IMST stick: iM871A (plain HCI) or iU891A (HCI in SLIP). It answers PING,
//! GET_DEVICEINFO, GET_CONFIG and SET_CONFIG as the real stick does (CRC on every frame), and
//! once SET_CONFIG has chosen a receive mode it delivers the configured telegrams as
//! WMBUSMSG_IND with the RSSI byte attached.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep, sleep_until, Instant};

use super::stick::{lock_log, next_on_schedule, note_emitted, SharedStickLog, StickSimConfig};
use crate::receivers::imst::{
    link_mode_from_byte, rssi_raw_for_dbm, slip_encode, HciFrame, ImstDecoder, RadioConfig,
    ENDPOINT_DEVMGMT, ENDPOINT_RADIOLINK, FIRMWARE_WITHOUT_C1T1, MODULE_IM871A, MSG_GET_CONFIG_REQ,
    MSG_GET_CONFIG_RSP, MSG_GET_DEVICEINFO_REQ, MSG_GET_DEVICEINFO_RSP, MSG_PING_REQ, MSG_PING_RSP,
    MSG_SET_CONFIG_REQ, MSG_SET_CONFIG_RSP, MSG_WMBUS_IND,
};
use crate::receivers::{LinkMode, StickKind};
use crate::wire::hex;

/// What the simulated stick says about itself, and how it misbehaves.
#[derive(Debug, Clone)]
pub struct ImstSimOptions {
    /// 0x33 iM871A, 0x36 iM170A.
    pub module_type: u8,
    /// 0x13 cannot listen to C1 and T1 at once; 0x14 and later can.
    pub firmware: u8,
    /// The radio ID in the configuration (what hosts show as the stick's id).
    pub radio_id: u32,
    /// The chip's unique id in the device information.
    pub uid: u32,
    /// A telegram (`L C M A …`) delivered right before the SET_CONFIG answer, as a real stick
    /// can when it was already listening.
    pub telegram_before_set_config: Option<Vec<u8>>,
}

impl Default for ImstSimOptions {
    fn default() -> Self {
        // The values of a real stick's answers in wmbusmeters issue #951.
        ImstSimOptions {
            module_type: MODULE_IM871A,
            firmware: 0x15,
            radio_id: 0x0010_3512,
            uid: 0x0000_3AF1,
            telegram_before_set_config: None,
        }
    }
}

/// The stick's changeable settings.
struct Settings {
    link_mode: u8,
    rssi_attached: bool,
    timestamp_attached: bool,
}

struct Stick {
    kind: StickKind,
    options: ImstSimOptions,
    cfg: StickSimConfig,
    log: SharedStickLog,
    settings: Settings,
    listening: bool,
    next_telegram: usize,
    next_emit: Instant,
    started: Instant,
}

/// Serves a stick with [`ImstSimOptions::default`] (iM871A, firmware 0x15).
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send>(
    stream: S,
    kind: StickKind,
    cfg: StickSimConfig,
    log: SharedStickLog,
) -> std::io::Result<()> {
    serve_with_options(stream, kind, ImstSimOptions::default(), cfg, log).await
}

/// Serves a stick until the stream ends (EOF, or EIO when the pseudo-terminal's other side
/// closed), then returns Ok.
pub async fn serve_with_options<S: AsyncRead + AsyncWrite + Unpin + Send>(
    mut stream: S,
    kind: StickKind,
    options: ImstSimOptions,
    cfg: StickSimConfig,
    log: SharedStickLog,
) -> std::io::Result<()> {
    let now = Instant::now();
    let mut stick = Stick {
        kind,
        options,
        cfg,
        log,
        // Out of the box: C1 TF-B, RSSI attached (as the configuration in issue #951).
        settings: Settings {
            link_mode: 0x07,
            rssi_attached: true,
            timestamp_attached: false,
        },
        listening: false,
        next_telegram: 0,
        next_emit: now,
        started: now,
    };
    match stick.run(&mut stream).await {
        Err(e) if is_closed(&e) => Ok(()),
        other => other,
    }
}

/// Linux's EIO: what a pseudo-terminal master reads once no one has the slave open.
const EIO: i32 = 5;

fn is_closed(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(EIO)
        || matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        )
}

impl Stick {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> std::io::Result<()> {
        let mut decoder = ImstDecoder::new(self.kind);
        let mut buf = [0u8; 512];
        loop {
            while let Some(item) = decoder.next_frame_with_raw() {
                match item {
                    Ok((frame, raw)) => {
                        if self.cfg.log {
                            tracing::info!("{} <- {}", self.kind, hex::encode_upper(&raw));
                        }
                        lock_log(&self.log).requests.push(raw);
                        self.answer(stream, &frame).await?;
                    }
                    Err(e) => {
                        if self.cfg.log {
                            tracing::info!("{} <- dropped: {e}", self.kind);
                        }
                    }
                }
            }
            let emit_at = self.due();
            tokio::select! {
                read = stream.read(&mut buf) => {
                    let n = read?;
                    if n == 0 {
                        return Ok(());
                    }
                    decoder.push(buf.get(..n).unwrap_or_default());
                }
                _ = sleep_until(emit_at.unwrap_or(self.started)), if emit_at.is_some() => {
                    self.emit_next(stream).await?;
                }
            }
        }
    }

    /// When the next telegram is due, if one is.
    fn due(&self) -> Option<Instant> {
        let more = self.next_telegram < self.cfg.telegrams.len()
            || (self.cfg.repeat && !self.cfg.telegrams.is_empty());
        (self.listening && more).then_some(self.next_emit)
    }

    async fn emit_next<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) -> std::io::Result<()> {
        if self.next_telegram >= self.cfg.telegrams.len() {
            self.next_telegram = 0;
        }
        let telegram = self.cfg.telegram_at(self.next_telegram).unwrap_or_default();
        self.next_telegram += 1;
        self.next_emit = next_on_schedule(self.next_emit, self.cfg.interval);
        self.emit(stream, &telegram).await
    }

    /// Sends one telegram (`L C M A …`) as WMBUSMSG_IND: the payload from C on, `Len` = L.
    async fn emit<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        telegram: &[u8],
    ) -> std::io::Result<()> {
        let Some(payload) = telegram.get(1..).filter(|p| !p.is_empty()) else {
            return Ok(());
        };
        let elapsed_ms = u32::try_from(self.started.elapsed().as_millis()).unwrap_or(u32::MAX);
        let frame = HciFrame {
            endpoint: ENDPOINT_RADIOLINK,
            msg_id: MSG_WMBUS_IND,
            payload: payload.to_vec(),
            timestamp: self.settings.timestamp_attached.then_some(elapsed_ms),
            rssi_raw: self
                .settings
                .rssi_attached
                .then(|| rssi_raw_for_dbm(self.cfg.rssi_dbm)),
        };
        let Ok(bytes) = frame.encode(true) else {
            if self.cfg.log {
                tracing::info!(
                    "{}: telegram of {} bytes is too long to send",
                    self.kind,
                    telegram.len()
                );
            }
            return Ok(());
        };
        self.write(stream, bytes).await?;
        note_emitted(&self.log);
        Ok(())
    }

    async fn answer<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        request: &HciFrame,
    ) -> std::io::Result<()> {
        if request.endpoint != ENDPOINT_DEVMGMT {
            return Ok(());
        }
        let (msg_id, payload) = match request.msg_id {
            MSG_PING_REQ => (MSG_PING_RSP, Vec::new()),
            MSG_GET_DEVICEINFO_REQ => (MSG_GET_DEVICEINFO_RSP, self.device_info()),
            MSG_GET_CONFIG_REQ => (MSG_GET_CONFIG_RSP, self.config()),
            MSG_SET_CONFIG_REQ => {
                let status = self.set_config(&request.payload);
                if let Some(early) = self.options.telegram_before_set_config.take() {
                    self.emit(stream, &early).await?;
                }
                // The real stick answers success with an empty payload; a refusal is sent
                // here as a status byte so a host can tell.
                (
                    MSG_SET_CONFIG_RSP,
                    status.map(|s| vec![s]).unwrap_or_default(),
                )
            }
            _ => return Ok(()),
        };
        sleep(self.cfg.reply_delay).await;
        let bytes = HciFrame::request(ENDPOINT_DEVMGMT, msg_id, &payload)
            .encode(true)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.write(stream, bytes).await
    }

    async fn write<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        frame: Vec<u8>,
    ) -> std::io::Result<()> {
        let bytes = match self.kind {
            StickKind::Iu891a => slip_encode(&frame),
            _ => frame,
        };
        if self.cfg.log {
            tracing::info!("{} -> {}", self.kind, hex::encode_upper(&bytes));
        }
        stream.write_all(&bytes).await?;
        stream.flush().await
    }

    fn device_info(&self) -> Vec<u8> {
        let mut out = vec![self.options.module_type, 0x00, self.options.firmware, 0x01];
        out.extend_from_slice(&self.options.uid.to_le_bytes());
        out
    }

    /// Every field flagged, in the order of the configuration layout, plus the one trailing
    /// byte a real stick sends.
    fn config(&self) -> Vec<u8> {
        let mut out = vec![0xFF, 0x00, self.settings.link_mode, 0x00];
        out.extend_from_slice(&0x25B3u16.to_le_bytes());
        out.extend_from_slice(&self.options.radio_id.to_le_bytes());
        out.extend_from_slice(&[0x01, 0x00, 0x01]);
        out.extend_from_slice(&[
            0xFF,
            0x07,
            0x02,
            0x32,
            0x00,
            u8::from(self.settings.rssi_attached),
            u8::from(self.settings.timestamp_attached),
            0x00,
            0x00,
        ]);
        out.push(0x00);
        out
    }

    /// Applies a SET_CONFIG payload (`[NVM flag]` then the configuration layout). Returns a
    /// refusal status, or None when accepted.
    fn set_config(&mut self, payload: &[u8]) -> Option<u8> {
        let Some(fields) = payload.get(1..) else {
            return Some(0x01);
        };
        let Ok(requested) = RadioConfig::parse(fields) else {
            return Some(0x01);
        };
        if let Some(byte) = requested.link_mode {
            let mode = link_mode_from_byte(byte);
            if mode == Some(LinkMode::C1T1) && self.options.firmware <= FIRMWARE_WITHOUT_C1T1 {
                return Some(0x01);
            }
            self.settings.link_mode = byte;
            if let Some(mode) = mode {
                lock_log(&self.log).mode = Some(mode);
                if !self.listening {
                    self.listening = true;
                    self.next_emit = Instant::now() + self.cfg.interval;
                }
            }
        }
        if let Some(on) = requested.rssi_attached {
            self.settings.rssi_attached = on;
        }
        if let Some(on) = requested.timestamp_attached {
            self.settings.timestamp_attached = on;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receivers::imst::HciDecoder;
    use crate::sim::stick::StickSimLog;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::io::{duplex, DuplexStream};
    use tokio::time::timeout;

    const TEST_WAIT: Duration = Duration::from_secs(10);

    async fn ask(host: &mut DuplexStream, request: &str) -> Vec<u8> {
        host.write_all(&hex::decode(request).unwrap())
            .await
            .unwrap();
        let mut d = HciDecoder::new();
        let mut buf = [0u8; 256];
        loop {
            let n = timeout(TEST_WAIT, host.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0);
            d.push(&buf[..n]);
            if let Some((_, raw)) = d.next_frame_with_raw().map(|r| r.unwrap()) {
                return raw;
            }
        }
    }

    #[tokio::test]
    async fn answers_are_the_golden_vectors() {
        let (mut host, stick) = duplex(4096);
        let log: SharedStickLog = Arc::new(Mutex::new(StickSimLog::default()));
        let cfg = StickSimConfig {
            reply_delay: Duration::from_millis(1),
            ..StickSimConfig::default()
        };
        let server = tokio::spawn(serve(stick, StickKind::Im871a, cfg, log.clone()));
        let golden = |s: &str| hex::decode(s).unwrap();
        assert_eq!(ask(&mut host, "A5010100").await, golden("A58102004CA3"));
        assert_eq!(
            ask(&mut host, "A5010F00").await,
            golden("A581100833001501F13A0000A9C1")
        );
        assert_eq!(
            ask(&mut host, "A5010500").await,
            golden("A5810617FF000700B32512351000010001FF07023200010000000063C9")
        );
        assert_eq!(
            ask(&mut host, "A5010306000203300100").await,
            golden("A58104009CF7")
        );
        assert_eq!(lock_log(&log).mode, Some(LinkMode::T1));
        assert_eq!(lock_log(&log).requests.len(), 4);
        drop(host);
        timeout(TEST_WAIT, server).await.unwrap().unwrap().unwrap();
    }
}
