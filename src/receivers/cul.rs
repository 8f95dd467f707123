//! CUL / nanoCUL sticks running culfw: wireless M-Bus telegrams as ASCII hex lines.
//!
//! Facts this module relies on (all from public culfw sources and documentation; the culfw
//! sources were read for facts only):
//!
//! * Serial line 38400 8N1 ([`StickKind::default_baud`]).
//! * culfw executes a command when it sees CR or LF; empty lines are ignored, so `\n` alone
//!   is a complete terminator (culfw `ttydata.c: analyze_ttydata`). An unknown command is
//!   answered with `? (<cmd> is unknown) Use one of …`.
//! * `V` answers the version line, e.g. `V 1.67 nanoCUL868` (culfw) or
//!   `V 1.26.08 a-culfw Build: … nanoCUL868 …` (a-culfw); wmbusmeters' `detectCUL` probes
//!   with `V` and looks for `CUL` in the answer.
//! * `br<x>` turns the wireless M-Bus receiver on: `brs` S mode, `brt` T mode, `brc` C mode;
//!   any other letter turns it off. The stick answers with its state: `SMODE`, `TMODE`,
//!   `CMODE` or `OFF` (culfw `clib/rf_mbus.c: rf_mbus_func`/`mbus_status`, e.g. in the
//!   DecksLabs/every-culfw and heliflieger/a-culfw trees). Firmware without the C-mode
//!   receiver (older culfw, a-culfw) answers `brc` with `OFF`; firmware built without
//!   wireless M-Bus does not know `b` at all.
//! * There is no separate C+T mode: the C-mode receiver also takes T-mode frames ("In C-mode
//!   we allow receiving T-mode because they are similar", rf_mbus.c), so `c1` and `c1t1`
//!   both use `brc`, and a `c1` session also delivers T1 telegrams.
//! * `X<hh>` sets the report flags silently; bit 0x20 (`REP_RSSI`) appends LQI and RSSI to
//!   every received telegram; `X21` is what FHEM sends at start-up and wmbusmeters after
//!   `br<x>` (this session sends it first, so no telegram comes without RSSI). `X` alone
//!   answers the flags as two hex digits followed by the send credit in decimal
//!   (`21  900`) (culfw `rf_receive.c: set_txreport`, `rf_receive.h`).
//! * A received telegram is one line: `b`, then `Y` if it was a C-mode frame in format B,
//!   then the telegram from its L field as uppercase hex *with the data-link CRCs still in
//!   place* (format A for T, S and C/A frames, format B after `Y`), then, if `REP_RSSI` is
//!   set, the LQI byte and the RSSI byte as two hex digits each, then CR LF (rf_mbus.c
//!   `rf_mbus_task`; wmbusmeters `wmbus_cul.cc: checkCULFrame` reads them the same way).
//! * RSSI is the CC1101's raw register value: two's complement in half dB with a 74 dB
//!   offset (CC1101 datasheet SWRS061, section 17.3), i.e. [`rssi_half_db`].
//!
//! The byte-level side is the sans-I/O [`CulCodec`]; [`CulSession`] runs the start-up
//! sequence over any async byte stream and then yields [`Heard`] telegrams.

use std::collections::VecDeque;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

use super::{
    rssi_half_db, Heard, LinkMode, StickError, StickInfo, StickKind, StickStats, COMMAND_TIMEOUT,
};
use crate::wire::hex::{self, HexError};
use crate::wire::wireless::{strip_dll_crcs, DllError, FrameFormat};

/// Longest line kept. The longest telegram culfw prints is format A with L = 0xFF: 290 bytes
/// with CRCs, 580 hex digits, plus `bY`, LQI/RSSI and CR LF; anything much longer is noise.
pub const MAX_LINE: usize = 1024;

/// `REP_RSSI` in culfw's report flags.
const REPORT_RSSI: u8 = 0x20;
/// The report flags the session sets: known messages, with RSSI (what wmbusmeters uses).
const REPORT_FLAGS: &str = "21";

/// Why a line was not a telegram. Column counts characters from the start of the line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CulLineError {
    #[error("line longer than {MAX_LINE} characters ({len} skipped); not something culfw sends")]
    Overlong { len: usize },
    #[error("bad hex after the `b` prefix: {source} (column {column})")]
    Hex { column: usize, source: HexError },
    #[error("L field 0x{l:02X} is shorter than the 9 bytes every wireless M-Bus header has")]
    LTooSmall { l: u8 },
    #[error(
        "telegram cut short: L field 0x{l:02X} needs {needed} bytes in format {format} \
         (CRCs included), the line has {have}"
    )]
    Truncated {
        l: u8,
        format: FrameFormat,
        needed: usize,
        have: usize,
    },
    #[error(
        "{extra} byte(s) after the telegram (column {column}); culfw appends none, or LQI and RSSI (2)"
    )]
    Trailing { column: usize, extra: usize },
    #[error("data-link check failed: {0}")]
    Dll(DllError),
    #[error("format {format} data-link CRCs do not match")]
    CrcMismatch { format: FrameFormat },
}

/// One telegram line from culfw, with the CRCs checked and removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CulTelegram {
    /// `L C M A CI …` without CRCs, L == len - 1.
    pub frame: Vec<u8>,
    /// The CRC layout the stick sent it in (`bY` lines are format B).
    pub format: FrameFormat,
    /// Link quality byte as culfw prints it (bit 7: CC1101 CRC flag, unused in M-Bus mode).
    pub lqi: Option<u8>,
    /// The CC1101 RSSI register value.
    pub rssi_raw: Option<u8>,
}

impl CulTelegram {
    pub fn rssi_dbm(&self) -> Option<i16> {
        self.rssi_raw.map(rssi_half_db)
    }
}

/// True for lines culfw prints for received telegrams (`b` + hex digit, or `bY`).
pub fn is_data_line(line: &str) -> bool {
    let mut chars = line.chars();
    chars.next() == Some('b')
        && chars
            .next()
            .is_some_and(|c| c == 'Y' || c.is_ascii_hexdigit())
}

/// Bytes a format A telegram with this L occupies with its CRCs: a 10-byte first block,
/// 16-byte blocks after it, each followed by 2 CRC bytes. `None` if L cannot hold a header.
fn format_a_len_with_crcs(l: u8) -> Option<usize> {
    let data = usize::from(l) + 1;
    let after_first = data.checked_sub(10)?;
    Some(data + 2 * (1 + after_first.div_ceil(16)))
}

/// Parses one culfw telegram line (without its line end): splits the telegram from the
/// LQI/RSSI suffix using the L field and the frame format, then checks and removes the
/// data-link CRCs. A telegram whose CRCs fail is an error, never returned.
pub fn parse_data_line(line: &str) -> Result<CulTelegram, CulLineError> {
    let (format, body_start) = if line.starts_with("bY") {
        (FrameFormat::B, 2)
    } else {
        (FrameFormat::A, 1)
    };
    let body = line.get(body_start..).unwrap_or_default().trim_end();
    let bytes = hex::decode(body).map_err(|source| CulLineError::Hex {
        column: body_start
            + match source {
                HexError::InvalidCharacter { offset, .. } => offset,
                _ => body.len(),
            },
        source,
    })?;
    let Some(&l) = bytes.first() else {
        return Err(CulLineError::LTooSmall { l: 0 });
    };
    let needed = match format {
        FrameFormat::A => format_a_len_with_crcs(l).ok_or(CulLineError::LTooSmall { l })?,
        FrameFormat::B => {
            if l < 11 {
                return Err(CulLineError::LTooSmall { l });
            }
            usize::from(l) + 1
        }
    };
    let (telegram, suffix) = match (bytes.get(..needed), bytes.get(needed..)) {
        (Some(t), Some(s)) => (t, s),
        _ => {
            return Err(CulLineError::Truncated {
                l,
                format,
                needed,
                have: bytes.len(),
            })
        }
    };
    let (lqi, rssi_raw) = match *suffix {
        [] => (None, None),
        [lqi, rssi] => (Some(lqi), Some(rssi)),
        _ => {
            return Err(CulLineError::Trailing {
                column: body_start + 2 * needed,
                extra: suffix.len(),
            })
        }
    };
    let stripped = strip_dll_crcs(telegram).map_err(CulLineError::Dll)?;
    // A format B frame whose CRC fails looks like a CRC-less telegram to strip_dll_crcs;
    // culfw always sends CRCs, so anything but the announced layout is a failed check.
    if stripped.crcs != Some(format) {
        return Err(CulLineError::CrcMismatch { format });
    }
    Ok(CulTelegram {
        frame: stripped.bytes,
        format,
        lqi,
        rssi_raw,
    })
}

/// What the codec makes of one line from the stick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CulEvent {
    Telegram(CulTelegram),
    /// Any other line: answers to commands, or noise.
    Text(String),
    /// A telegram line that failed its checks, or an overlong line.
    Malformed {
        line: String,
        error: CulLineError,
    },
}

/// Splits the stick's output into lines (CR, LF or both end a line) and classifies them.
/// Never holds more than [`MAX_LINE`] bytes of an unfinished line plus one pushed chunk.
#[derive(Debug, Default)]
pub struct CulCodec {
    buf: Vec<u8>,
    /// Bytes of an overlong line thrown away so far; the rest of it is dropped up to its end.
    discarding: Option<usize>,
    skipped_bytes: u64,
}

impl CulCodec {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes thrown away in overlong lines.
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped_bytes
    }

    /// The next complete line's event, or `None` until more bytes arrive.
    pub fn next_event(&mut self) -> Option<CulEvent> {
        loop {
            let Some(end) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') else {
                if self.buf.len() > MAX_LINE {
                    let dropped = self.buf.len();
                    self.skipped_bytes += dropped as u64;
                    self.discarding = Some(self.discarding.unwrap_or(0) + dropped);
                    self.buf.clear();
                }
                return None;
            };
            let line_bytes: Vec<u8> = self.buf.drain(..=end).collect();
            let line_bytes = line_bytes.get(..end).unwrap_or_default();
            if let Some(dropped) = self.discarding.take() {
                let len = dropped + line_bytes.len();
                self.skipped_bytes += line_bytes.len() as u64;
                return Some(CulEvent::Malformed {
                    line: String::new(),
                    error: CulLineError::Overlong { len },
                });
            }
            if line_bytes.len() > MAX_LINE {
                self.skipped_bytes += line_bytes.len() as u64;
                return Some(CulEvent::Malformed {
                    line: String::new(),
                    error: CulLineError::Overlong {
                        len: line_bytes.len(),
                    },
                });
            }
            let line = String::from_utf8_lossy(line_bytes).trim().to_string();
            if line.is_empty() {
                continue;
            }
            if !is_data_line(&line) {
                return Some(CulEvent::Text(line));
            }
            return Some(match parse_data_line(&line) {
                Ok(t) => CulEvent::Telegram(t),
                Err(error) => CulEvent::Malformed { line, error },
            });
        }
    }
}

/// What `br<x>` set the receiver to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receiver {
    S,
    T,
    C,
}

impl Receiver {
    fn for_mode(mode: LinkMode) -> Receiver {
        match mode {
            LinkMode::T1 => Receiver::T,
            LinkMode::S1 => Receiver::S,
            LinkMode::C1 | LinkMode::C1T1 => Receiver::C,
        }
    }

    fn command(self) -> &'static str {
        match self {
            Receiver::S => "brs",
            Receiver::T => "brt",
            Receiver::C => "brc",
        }
    }

    fn answer(self) -> &'static str {
        match self {
            Receiver::S => "SMODE",
            Receiver::T => "TMODE",
            Receiver::C => "CMODE",
        }
    }

    /// The mode a telegram came in, as far as the line tells: in C mode only `bY` lines are
    /// surely C1, since format A lines may be C1 or T1.
    fn heard_mode(self, format: FrameFormat) -> Option<LinkMode> {
        match (self, format) {
            (Receiver::S, _) => Some(LinkMode::S1),
            (Receiver::T, _) => Some(LinkMode::T1),
            (Receiver::C, FrameFormat::B) => Some(LinkMode::C1),
            (Receiver::C, FrameFormat::A) => None,
        }
    }
}

/// Splits a version answer into (firmware, model): `V 1.67 nanoCUL868` gives
/// (`1.67`, `nanoCUL868`); a-culfw's longer line gives its version and the board word
/// that names a CUL, else the last word.
fn parse_version(line: &str) -> (String, String) {
    let mut words = line.split_whitespace().skip(1);
    let firmware = words.next().unwrap_or_default().to_string();
    let rest: Vec<&str> = words.collect();
    let model = rest
        .iter()
        .find(|w| w.to_ascii_uppercase().contains("CUL") && !w.eq_ignore_ascii_case("a-culfw"))
        .or(rest.last())
        .map_or_else(|| "CUL".to_string(), |w| w.to_string());
    (firmware, model)
}

/// How a command's answer line is judged.
enum Answer<T> {
    Done(T),
    Fail(StickError),
}

/// A running CUL: start-up done, receiver on.
pub struct CulSession<S> {
    stream: S,
    codec: CulCodec,
    queued: VecDeque<Heard>,
    info: StickInfo,
    receiver: Receiver,
    stats: StickStats,
    /// Bytes of text lines that were not answers we waited for.
    text_bytes: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> CulSession<S> {
    /// Asks the version (`V`), turns on LQI/RSSI reporting (`X21`) and reads the report
    /// flags back (`X`), then switches the wireless M-Bus receiver on (`brt`, `brs` or
    /// `brc`).
    pub async fn start(stream: S, mode: LinkMode) -> Result<Self, StickError> {
        let receiver = Receiver::for_mode(mode);
        let mut session = CulSession {
            stream,
            codec: CulCodec::new(),
            queued: VecDeque::new(),
            info: StickInfo::default(),
            receiver,
            stats: StickStats::default(),
            text_bytes: 0,
        };

        let version = session
            .command("V", "V (version)", |line| {
                line.starts_with("V ")
                    .then(|| Answer::Done(line.to_string()))
            })
            .await?;
        let (firmware, model) = parse_version(&version);
        session.info = StickInfo {
            model,
            firmware,
            id: String::new(),
            details: vec![("version line".to_string(), version)],
        };

        // Reporting goes on before the receiver, so that every telegram carries RSSI (the
        // first one can follow the mode answer at once). X21 has no answer; reading the
        // flags back confirms the stick took it. With the receiver still off, culfw briefly
        // re-arms its SlowRF receiver here (`set_txrestore`); `br<x>` then resets the radio.
        session.send(&format!("X{REPORT_FLAGS}")).await?;
        let flags = session
            .command("X", "X (report flags)", |line| {
                let digits = line.get(..2)?;
                let rest = line.get(2..)?;
                if !rest.chars().all(|c| c == ' ' || c.is_ascii_digit()) {
                    return None;
                }
                u8::from_str_radix(digits, 16).ok().map(Answer::Done)
            })
            .await?;
        if flags & REPORT_RSSI == 0 {
            return Err(StickError::Protocol {
                stick: StickKind::Cul,
                request: "X (report flags)",
                detail: format!("flags read back as {flags:02X} after X{REPORT_FLAGS}"),
            });
        }
        session.info.details.push((
            "report flags".to_string(),
            format!("{flags:02X} (rssi attached)"),
        ));

        let expected = receiver.answer();
        session
            .command(receiver.command(), "br (receive mode)", |line| {
                if line == expected {
                    Some(Answer::Done(()))
                } else if line.starts_with("? (") {
                    Some(Answer::Fail(StickError::ModeUnsupported {
                        stick: StickKind::Cul,
                        mode,
                        reason: format!(
                            "the firmware does not know the `b` command (built without wireless \
                             M-Bus): {line}"
                        ),
                    }))
                } else if line == "OFF" && receiver == Receiver::C {
                    Some(Answer::Fail(StickError::ModeUnsupported {
                        stick: StickKind::Cul,
                        mode,
                        reason: "the firmware answers `brc` with OFF, so it has no C-mode \
                                 receiver; update to a culfw build that has one (culfw 1.67 \
                                 does) or listen in t1"
                            .to_string(),
                    }))
                } else if matches!(line, "OFF" | "SMODE" | "TMODE" | "CMODE") {
                    Some(Answer::Fail(StickError::Protocol {
                        stick: StickKind::Cul,
                        request: "br (receive mode)",
                        detail: format!("asked for {expected}, the stick says {line}"),
                    }))
                } else {
                    None
                }
            })
            .await?;
        session.info.details.push((
            "receiver".to_string(),
            format!("{} ({expected})", receiver.command()),
        ));

        Ok(session)
    }

    pub fn info(&self) -> &StickInfo {
        &self.info
    }

    pub fn stats(&self) -> StickStats {
        StickStats {
            skipped_bytes: self.stats.skipped_bytes + self.codec.skipped_bytes() + self.text_bytes,
            ..self.stats
        }
    }

    /// The next telegram. Lines that fail their checks are counted and skipped; text lines
    /// between telegrams are ignored. Cancel-safe: bytes live in the codec between calls.
    pub async fn next(&mut self) -> Result<Heard, StickError> {
        loop {
            if let Some(heard) = self.queued.pop_front() {
                return Ok(heard);
            }
            while let Some(event) = self.codec.next_event() {
                if let Some(text) = self.absorb(event) {
                    self.text_bytes += text.len() as u64;
                }
                if let Some(heard) = self.queued.pop_front() {
                    return Ok(heard);
                }
            }
            self.read_some().await?;
        }
    }

    /// Queues telegrams and counts failures; hands back text lines.
    fn absorb(&mut self, event: CulEvent) -> Option<String> {
        match event {
            CulEvent::Telegram(t) => {
                let mut heard = Heard::new(t.frame.clone(), t.rssi_dbm());
                heard.mode = self.receiver.heard_mode(t.format);
                self.stats.telegrams += 1;
                self.queued.push_back(heard);
                None
            }
            CulEvent::Malformed { .. } => {
                self.stats.malformed += 1;
                None
            }
            CulEvent::Text(line) => Some(line),
        }
    }

    async fn read_some(&mut self) -> Result<(), StickError> {
        let mut buf = [0u8; 512];
        let n = self
            .stream
            .read(&mut buf)
            .await
            .map_err(|source| StickError::Io {
                stick: StickKind::Cul,
                source,
            })?;
        if n == 0 {
            return Err(StickError::Closed {
                stick: StickKind::Cul,
            });
        }
        self.codec.push(buf.get(..n).unwrap_or_default());
        Ok(())
    }

    async fn send(&mut self, command: &str) -> Result<(), StickError> {
        let mut bytes = command.as_bytes().to_vec();
        bytes.push(b'\n');
        let io = |source| StickError::Io {
            stick: StickKind::Cul,
            source,
        };
        self.stream.write_all(&bytes).await.map_err(io)?;
        self.stream.flush().await.map_err(io)
    }

    /// Sends `command` and waits up to [`COMMAND_TIMEOUT`] for a line `judge` accepts.
    /// Telegrams arriving meanwhile are queued for [`next`](Self::next); other lines are
    /// ignored.
    async fn command<T>(
        &mut self,
        command: &str,
        request: &'static str,
        judge: impl Fn(&str) -> Option<Answer<T>>,
    ) -> Result<T, StickError> {
        self.send(command).await?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            while let Some(event) = self.codec.next_event() {
                let Some(line) = self.absorb(event) else {
                    continue;
                };
                match judge(&line) {
                    Some(Answer::Done(v)) => return Ok(v),
                    Some(Answer::Fail(e)) => return Err(e),
                    None => self.text_bytes += line.len() as u64,
                }
            }
            match timeout_at(deadline, self.read_some()).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(StickError::Timeout {
                        stick: StickKind::Cul,
                        request,
                        waited: COMMAND_TIMEOUT,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::stick::builtin_corpus;
    use crate::wire::wireless::add_dll_crcs;

    /// Hydrodigit water meter from drivers/hydrodigit.yaml (71 bytes, 5 format A blocks).
    const WATER: &str = "4644B4092143658713077A9C0000000C1364390400046D212F16350F152A0F000000440F00C00F00511000D51000B20B00180C007C0C00E60C00560D00D10D00400E00C60E0000";

    fn line_for(data: &[u8], format: FrameFormat, suffix: &str) -> String {
        let with = add_dll_crcs(data, format).unwrap();
        let prefix = if format == FrameFormat::B { "bY" } else { "b" };
        format!("{prefix}{}{suffix}", hex::encode_upper(&with))
    }

    #[test]
    fn format_a_line_with_rssi() {
        let data = hex::decode(WATER).unwrap();
        // RSSI 0xC8 = -56 raw → -28 - 74 = -102 dBm.
        let t = parse_data_line(&line_for(&data, FrameFormat::A, "2DC8")).unwrap();
        assert_eq!(t.frame, data);
        assert_eq!(t.format, FrameFormat::A);
        assert_eq!(t.lqi, Some(0x2D));
        assert_eq!(t.rssi_raw, Some(0xC8));
        assert_eq!(t.rssi_dbm(), Some(-102));
    }

    #[test]
    fn format_b_line_and_no_suffix() {
        let data = hex::decode(WATER).unwrap();
        let t = parse_data_line(&line_for(&data, FrameFormat::B, "")).unwrap();
        assert_eq!(t.frame, data);
        assert_eq!(t.format, FrameFormat::B);
        assert_eq!(t.rssi_dbm(), None);
    }

    #[test]
    fn whole_corpus_round_trips_in_both_formats() {
        let mut checked = 0;
        for data in builtin_corpus() {
            for format in [FrameFormat::A, FrameFormat::B] {
                if add_dll_crcs(&data, format).is_none() || data.len() < 12 {
                    continue;
                }
                let t = parse_data_line(&line_for(&data, format, "8050")).unwrap();
                assert_eq!(t.frame, data);
                assert_eq!(t.rssi_dbm(), Some(-34));
                checked += 1;
            }
        }
        assert!(checked > 300, "{checked}");
    }

    #[test]
    fn broken_crc_is_an_error_in_both_formats() {
        let data = hex::decode(WATER).unwrap();
        for format in [FrameFormat::A, FrameFormat::B] {
            let mut with = add_dll_crcs(&data, format).unwrap();
            with[20] ^= 0x01;
            let prefix = if format == FrameFormat::B { "bY" } else { "b" };
            let line = format!("{prefix}{}2DC8", hex::encode_upper(&with));
            let err = parse_data_line(&line).unwrap_err();
            assert!(
                matches!(
                    err,
                    CulLineError::Dll(DllError::BadCrc { .. }) | CulLineError::CrcMismatch { .. }
                ),
                "{format}: {err}"
            );
        }
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        let data = hex::decode(WATER).unwrap();
        let good = line_for(&data, FrameFormat::A, "");
        let truncated = &good[..good.len() - 6];
        assert!(matches!(
            parse_data_line(truncated),
            Err(CulLineError::Truncated { l: 0x46, .. })
        ));
        let trailing = format!("{good}2DC8AA");
        assert!(matches!(
            parse_data_line(&trailing),
            Err(CulLineError::Trailing { extra: 3, .. })
        ));
        let bad_hex = format!("{}zz", &good[..9]);
        match parse_data_line(&bad_hex) {
            Err(CulLineError::Hex { column, .. }) => assert_eq!(column, 9),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_data_line("b05AABBCCDDEE"),
            Err(CulLineError::LTooSmall { l: 5 })
        ));
    }

    #[test]
    fn codec_handles_split_reads_text_garbage_and_resync() {
        let data = hex::decode(WATER).unwrap();
        let good = line_for(&data, FrameFormat::A, "2DC8");
        let mut broken = add_dll_crcs(&data, FrameFormat::A).unwrap();
        broken[3] ^= 0x40;
        let stream = format!(
            "\u{0}\u{7f}garbage\r\nTMODE\r\n{good}\r\nb{}2DC8\r\n{}\r\n{good}\n",
            hex::encode_upper(&broken),
            "b".repeat(MAX_LINE + 10)
        );
        let mut codec = CulCodec::new();
        let mut events = Vec::new();
        for chunk in stream.as_bytes().chunks(7) {
            codec.push(chunk);
            while let Some(e) = codec.next_event() {
                events.push(e);
            }
        }
        assert_eq!(events.len(), 6, "{events:?}");
        assert!(matches!(&events[0], CulEvent::Text(t) if t.ends_with("garbage")));
        assert_eq!(events[1], CulEvent::Text("TMODE".into()));
        assert!(matches!(&events[2], CulEvent::Telegram(t) if t.frame == data));
        assert!(matches!(&events[3], CulEvent::Malformed { .. }));
        assert!(matches!(
            &events[4],
            CulEvent::Malformed {
                error: CulLineError::Overlong { len },
                ..
            } if *len == MAX_LINE + 10
        ));
        assert!(matches!(&events[5], CulEvent::Telegram(t) if t.rssi_dbm() == Some(-102)));
        assert_eq!(codec.skipped_bytes(), (MAX_LINE + 10) as u64);
    }

    #[test]
    fn codec_never_panics_on_noise() {
        let mut codec = CulCodec::new();
        let mut x: u32 = 0x1234_5678;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let b = match x % 7 {
                0 => b'b',
                1 => b'\n',
                2 => b'Y',
                _ => b"0123456789ABCDEF"[(x >> 8) as usize % 16],
            };
            codec.push(&[b]);
            while codec.next_event().is_some() {}
        }
        assert!(codec.buf.len() <= MAX_LINE + 1);
    }

    #[test]
    fn version_lines() {
        assert_eq!(
            parse_version("V 1.67 nanoCUL868"),
            ("1.67".to_string(), "nanoCUL868".to_string())
        );
        assert_eq!(
            parse_version(
                "V 1.26.08 a-culfw Build: 194 (2018-09-18_20-56-57) nanoCUL868 (F-Band: 868MHz)"
            ),
            ("1.26.08".to_string(), "nanoCUL868".to_string())
        );
        assert_eq!(parse_version("V"), (String::new(), "CUL".to_string()));
    }
}
