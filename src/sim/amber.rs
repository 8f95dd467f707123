//! A simulated AMB8465/AMB3665: answers the host protocol from a parameter area that starts as
//! the factory default, and hands over telegrams in the output format that area selects.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep, sleep_until, Instant};

use super::stick::{lock_log, note_emitted, SharedStickLog, StickSimConfig};
use crate::receivers::amber::{
    checksum, cmd, encode_frame, factory_default_nvm, mode_from_byte, nvm, rssi_raw_from_dbm,
    AmberModel, SOF,
};
use crate::wire::hex;

/// How the simulated stick is set up (what its NVM says and who it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmberSimOptions {
    /// NVM 0x05: indications as `FF 03 …` frames (true) or transparent `L …` (false).
    pub cmd_out: bool,
    /// NVM 0x45: an RSSI byte after every telegram.
    pub rssi_enabled: bool,
    /// Be the 169 MHz AMB3665 (larger parameter area, N modes only).
    pub amb3665: bool,
    pub serial: u32,
    /// Major, minor, patch.
    pub firmware: [u8; 3],
    /// Deliver the first telegram right before answering the first parameter read, as a stick
    /// still listening in its power-up mode does.
    pub indication_during_startup: bool,
    /// Answer SERIALNO_REQ and FWV_REQ. Off: stay silent to both, as firmware that lacks them
    /// would.
    pub answers_identity: bool,
}

impl Default for AmberSimOptions {
    fn default() -> Self {
        AmberSimOptions {
            cmd_out: true,
            rssi_enabled: true,
            amb3665: false,
            serial: 0x1122_3344,
            firmware: [1, 7, 0],
            indication_during_startup: false,
            answers_identity: true,
        }
    }
}

const STATUS_OK: u8 = 0x00;
const STATUS_ERROR: u8 = 0x01;

/// EIO: what reading the master side of a pseudo-terminal gives once the client has gone.
const EIO: i32 = 5;

struct SimStick {
    opts: AmberSimOptions,
    cfg: StickSimConfig,
    log: SharedStickLog,
    model: AmberModel,
    /// The parameter area as stored; SET_REQ writes here, and it takes effect after a reset.
    stored_nvm: Vec<u8>,
    /// What the running firmware uses.
    cmd_out: bool,
    rssi_enabled: bool,
    listening: bool,
    next_telegram: usize,
    next_emit: Instant,
    startup_indication_due: bool,
}

impl SimStick {
    fn new(opts: AmberSimOptions, cfg: StickSimConfig, log: SharedStickLog) -> SimStick {
        let model = if opts.amb3665 {
            AmberModel::Amb3665
        } else {
            AmberModel::Amb8465
        };
        let mut stored_nvm = factory_default_nvm(model);
        if let Some(b) = stored_nvm.get_mut(nvm::UART_CMD_OUT_ENABLE) {
            *b = u8::from(opts.cmd_out);
        }
        if let Some(b) = stored_nvm.get_mut(nvm::RSSI_ENABLE) {
            *b = u8::from(opts.rssi_enabled);
        }
        SimStick {
            cmd_out: opts.cmd_out,
            rssi_enabled: opts.rssi_enabled,
            startup_indication_due: opts.indication_during_startup,
            opts,
            cfg,
            log,
            model,
            stored_nvm,
            listening: false,
            next_telegram: 0,
            next_emit: Instant::now(),
        }
    }

    fn telegrams_left(&self) -> bool {
        !self.cfg.telegrams.is_empty()
            && (self.cfg.repeat || self.next_telegram < self.cfg.telegrams.len())
    }

    /// The bytes the stick puts on the UART for `telegram` (`L C …`, CRCs already removed as
    /// the radio does).
    fn indication(&self, telegram: &[u8]) -> Option<Vec<u8>> {
        let mut body = telegram.get(1..)?.to_vec();
        if self.rssi_enabled {
            body.push(rssi_raw_from_dbm(self.cfg.rssi_dbm));
        }
        if body.len() > 255 {
            return None;
        }
        if self.cmd_out {
            Some(encode_frame(cmd::DATA_IND, &body))
        } else {
            let mut out = Vec::with_capacity(body.len() + 1);
            out.push(u8::try_from(body.len()).ok()?);
            out.extend_from_slice(&body);
            Some(out)
        }
    }

    async fn emit<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        telegram: &[u8],
    ) -> std::io::Result<()> {
        let Some(bytes) = self.indication(telegram) else {
            if self.cfg.log {
                tracing::warn!("amber sim: telegram too long for one frame, skipped");
            }
            return Ok(());
        };
        if self.cfg.log {
            tracing::info!("amber sim -> {}", hex::encode_upper(&bytes));
        }
        stream.write_all(&bytes).await?;
        stream.flush().await?;
        note_emitted(&self.log);
        Ok(())
    }

    async fn emit_next<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) -> std::io::Result<()> {
        let count = self.cfg.telegrams.len();
        if count == 0 {
            return Ok(());
        }
        let index = self.next_telegram % count;
        self.next_telegram += 1;
        self.next_emit += self.cfg.interval;
        let telegram = self.cfg.telegram_at(index).unwrap_or_default();
        self.emit(stream, &telegram).await
    }

    /// The answer to one well-formed host command, if the stick answers it.
    async fn answer<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        command: u8,
        payload: &[u8],
    ) -> std::io::Result<Option<Vec<u8>>> {
        let reply = |payload: &[u8]| Some(encode_frame(command | cmd::ANSWER_BIT, payload));
        Ok(match command {
            cmd::GET_REQ => {
                if self.startup_indication_due {
                    self.startup_indication_due = false;
                    if let Some(first) = self.cfg.telegrams.first().cloned() {
                        self.emit(stream, &first).await?;
                    }
                }
                let [start, count] = payload else {
                    return Ok(reply(&[STATUS_ERROR]));
                };
                let start = usize::from(*start).min(self.stored_nvm.len());
                let end = (start + usize::from(*count)).min(self.stored_nvm.len());
                let bytes = self.stored_nvm.get(start..end).unwrap_or_default();
                let mut out = vec![
                    u8::try_from(start).unwrap_or(u8::MAX),
                    u8::try_from(bytes.len()).unwrap_or(u8::MAX),
                ];
                out.extend_from_slice(bytes);
                reply(&out)
            }
            cmd::SET_MODE_REQ => {
                let status = match payload {
                    [mode] if self.accepts_mode(*mode) => {
                        let listened = match self.model {
                            AmberModel::Amb8465 => mode_from_byte(*mode),
                            // The same bytes are N sub-modes at 169 MHz.
                            AmberModel::Amb3665 => None,
                        };
                        lock_log(&self.log).mode = listened;
                        if listened.is_some() && !self.listening {
                            self.next_emit = Instant::now() + self.cfg.interval;
                        }
                        self.listening = listened.is_some();
                        STATUS_OK
                    }
                    _ => STATUS_ERROR,
                };
                reply(&[status])
            }
            cmd::SERIALNO_REQ if self.opts.answers_identity => {
                reply(&self.opts.serial.to_be_bytes())
            }
            cmd::FWV_REQ if self.opts.answers_identity => reply(&self.opts.firmware),
            cmd::SET_REQ => {
                let status = match payload {
                    [start, count, bytes @ ..] if usize::from(*count) == bytes.len() => {
                        let start = usize::from(*start);
                        match self.stored_nvm.get_mut(start..start + bytes.len()) {
                            Some(area) => {
                                area.copy_from_slice(bytes);
                                STATUS_OK
                            }
                            None => STATUS_ERROR,
                        }
                    }
                    _ => STATUS_ERROR,
                };
                reply(&[status])
            }
            cmd::RESET_REQ => {
                self.restart();
                reply(&[STATUS_OK])
            }
            cmd::FACTORYRESET_REQ => {
                self.stored_nvm = factory_default_nvm(self.model);
                self.restart();
                Some(encode_frame(cmd::FACTORYRESET_CNF, &[STATUS_OK]))
            }
            _ => None,
        })
    }

    /// A reset loads the stored parameters and forgets the volatile mode.
    fn restart(&mut self) {
        let at = |offset| self.stored_nvm.get(offset).copied().unwrap_or(0);
        self.cmd_out = at(nvm::UART_CMD_OUT_ENABLE) != 0;
        self.rssi_enabled = at(nvm::RSSI_ENABLE) != 0;
        self.listening = false;
        lock_log(&self.log).mode = None;
    }

    fn accepts_mode(&self, mode: u8) -> bool {
        match self.model {
            AmberModel::Amb8465 => (0x01..=0x0E).contains(&mode),
            AmberModel::Amb3665 => matches!(mode, 0x02 | 0x04 | 0x06 | 0x08 | 0x0A | 0x0C),
        }
    }

    async fn handle<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        frame: &[u8],
    ) -> std::io::Result<()> {
        lock_log(&self.log).requests.push(frame.to_vec());
        if self.cfg.log {
            tracing::info!("amber sim <- {}", hex::encode_upper(frame));
        }
        let Some((&sent, body)) = frame.split_last() else {
            return Ok(());
        };
        if checksum(body) != sent {
            // The stick ignores a damaged command; the host times out.
            return Ok(());
        }
        let command = body.get(1).copied().unwrap_or_default();
        let payload = body.get(3..).unwrap_or_default();
        let Some(reply) = self.answer(stream, command, payload).await? else {
            return Ok(());
        };
        sleep(self.cfg.reply_delay).await;
        if self.cfg.log {
            tracing::info!("amber sim -> {}", hex::encode_upper(&reply));
        }
        stream.write_all(&reply).await?;
        stream.flush().await
    }
}

/// Takes one host command `FF cmd len payload CS` off the front of `buf`, dropping bytes
/// before a start byte.
fn take_command(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let start = buf.iter().position(|&b| b == SOF);
    buf.drain(..start.unwrap_or(buf.len()));
    let len = usize::from(*buf.get(2)?);
    let total = 4 + len;
    if buf.len() < total {
        return None;
    }
    Some(buf.drain(..total).collect())
}

fn closed(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(EIO) || e.kind() == std::io::ErrorKind::BrokenPipe
}

/// Plays the stick on `stream` until it closes. Telegrams start `cfg.interval` after a receive
/// mode has been set.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send>(
    mut stream: S,
    opts: AmberSimOptions,
    cfg: StickSimConfig,
    log: SharedStickLog,
) -> std::io::Result<()> {
    let mut stick = SimStick::new(opts, cfg, log);
    let mut pending = Vec::new();
    let mut buf = [0u8; 256];
    // A host that stalls mid-command loses it, as on the real UART.
    let stale_after = Duration::from_millis(500);
    let result = async {
        loop {
            let emitting = stick.listening && stick.telegrams_left();
            let read_deadline = Instant::now() + stale_after;
            tokio::select! {
                read = stream.read(&mut buf) => {
                    let n = read?;
                    if n == 0 {
                        return Ok(());
                    }
                    pending.extend_from_slice(buf.get(..n).unwrap_or_default());
                    while let Some(frame) = take_command(&mut pending) {
                        stick.handle(&mut stream, &frame).await?;
                    }
                }
                _ = sleep_until(stick.next_emit), if emitting => {
                    stick.emit_next(&mut stream).await?;
                }
                _ = sleep_until(read_deadline), if !pending.is_empty() => {
                    pending.clear();
                }
            }
        }
    }
    .await;
    match result {
        Err(e) if closed(&e) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receivers::amber::{
        parse_nvm_dump, AmberDecoder, AmberEvent, AmberSettings, GET_ALL_PARAMETERS,
    };
    use crate::receivers::LinkMode;
    use std::sync::{Arc, Mutex};
    use tokio::io::duplex;

    async fn exchange(
        host: &mut tokio::io::DuplexStream,
        decoder: &mut AmberDecoder,
        request: &[u8],
    ) -> AmberEvent {
        host.write_all(request).await.unwrap();
        let mut buf = [0u8; 512];
        loop {
            if let Some(e) = decoder.next_event() {
                if matches!(e, AmberEvent::Answer { .. }) {
                    return e;
                }
                continue;
            }
            let n = host.read(&mut buf).await.unwrap();
            assert!(n > 0);
            decoder.push(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn nvm_writes_take_effect_after_reset_only() {
        let (mut host, stick) = duplex(4096);
        let log: SharedStickLog = Arc::new(Mutex::new(Default::default()));
        let cfg = StickSimConfig {
            reply_delay: Duration::ZERO,
            ..Default::default()
        };
        let opts = AmberSimOptions {
            cmd_out: true,
            rssi_enabled: false,
            ..Default::default()
        };
        let server = tokio::spawn(serve(stick, opts, cfg, Arc::clone(&log)));
        let mut decoder = AmberDecoder::new(Some(AmberSettings {
            cmd_out: true,
            rssi_enabled: false,
        }));
        let read_params = encode_frame(cmd::GET_REQ, &GET_ALL_PARAMETERS);
        let AmberEvent::Answer { payload, .. } =
            exchange(&mut host, &mut decoder, &read_params).await
        else {
            unreachable!()
        };
        assert!(!parse_nvm_dump(&payload).unwrap().rssi_enabled);

        let write = encode_frame(cmd::SET_REQ, &[nvm::RSSI_ENABLE as u8, 1, 1]);
        assert_eq!(
            exchange(&mut host, &mut decoder, &write).await,
            AmberEvent::Answer {
                command: 0x89,
                payload: vec![0]
            }
        );
        let set_mode = encode_frame(cmd::SET_MODE_REQ, &[0x08]);
        exchange(&mut host, &mut decoder, &set_mode).await;
        assert_eq!(lock_log(&log).mode, Some(LinkMode::T1));
        let reset = encode_frame(cmd::RESET_REQ, &[]);
        assert_eq!(
            exchange(&mut host, &mut decoder, &reset).await,
            AmberEvent::Answer {
                command: 0x85,
                payload: vec![0]
            }
        );
        assert_eq!(lock_log(&log).mode, None, "the mode is volatile");
        let AmberEvent::Answer { payload, .. } =
            exchange(&mut host, &mut decoder, &read_params).await
        else {
            unreachable!()
        };
        assert!(parse_nvm_dump(&payload).unwrap().rssi_enabled);
        let factory = encode_frame(cmd::FACTORYRESET_REQ, &[]);
        assert_eq!(
            exchange(&mut host, &mut decoder, &factory).await,
            AmberEvent::Answer {
                command: 0x90,
                payload: vec![0]
            }
        );
        assert_eq!(lock_log(&log).requests.len(), 6);
        drop(host);
        server.await.unwrap().unwrap();
    }
}
