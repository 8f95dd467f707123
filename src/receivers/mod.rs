//! Wireless receivers: USB sticks (IMST iM871A/iU891A, Amber AMB8465, CUL) and text inputs
//! (rtl_wmbus lines, raw hex over stdin, TCP, UDP or MQTT) that hand over wireless M-Bus
//! telegrams.
//!
//! Each stick's host protocol lives in its own file as a sans-I/O codec (bytes in, frames out;
//! never panics) plus a session that runs the start-up sequence on any async byte stream and then
//! yields [`Heard`] telegrams. The rest of the program sees only [`Heard`]: the telegram from its
//! L field (data-link CRCs present or not, [`crate::wire::wireless::strip_dll_crcs`] copes with
//! both), the RSSI if the receiver reports one, and when it arrived.

pub mod amber;
pub mod cul;
pub mod imst;
pub mod input;
pub mod lines;
pub mod merge;

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;

/// The radio mode a receiver listens in (EN 13757-4). `C1T1` listens to both C1 and T1 where
/// the stick can (iM871A firmware 0x14 and later, AMB8465, CUL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkMode {
    T1,
    C1,
    S1,
    C1T1,
}

impl LinkMode {
    pub const ALL: [LinkMode; 4] = [LinkMode::T1, LinkMode::C1, LinkMode::S1, LinkMode::C1T1];

    pub fn name(self) -> &'static str {
        match self {
            LinkMode::T1 => "t1",
            LinkMode::C1 => "c1",
            LinkMode::S1 => "s1",
            LinkMode::C1T1 => "c1t1",
        }
    }
}

impl fmt::Display for LinkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LinkMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace(['+', ',', '-', '_'], "").as_str() {
            "t1" => Ok(LinkMode::T1),
            "c1" => Ok(LinkMode::C1),
            "s1" => Ok(LinkMode::S1),
            "c1t1" | "t1c1" => Ok(LinkMode::C1T1),
            _ => Err(format!(
                "unknown link mode {s:?}; use t1, c1, s1 or c1t1 (T1 is what most water and heat meters send)"
            )),
        }
    }
}

/// The stick families with a host protocol of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StickKind {
    /// IMST iM871A (and iM170A): HCI frames at 57600 baud.
    Im871a,
    /// IMST iU891A: the same HCI wrapped in SLIP at 115200 baud.
    Iu891a,
    /// Amber/Würth AMB8465 (and AMB3665): `FF cmd len … XOR` frames at 9600 baud.
    Amb8465,
    /// CUL/nanoCUL running culfw: ASCII lines at 38400 baud.
    Cul,
}

impl StickKind {
    pub const ALL: [StickKind; 4] = [
        StickKind::Im871a,
        StickKind::Iu891a,
        StickKind::Amb8465,
        StickKind::Cul,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StickKind::Im871a => "im871a",
            StickKind::Iu891a => "iu891a",
            StickKind::Amb8465 => "amb8465",
            StickKind::Cul => "cul",
        }
    }

    /// The serial speed the stick talks at out of the box.
    pub fn default_baud(self) -> u32 {
        match self {
            StickKind::Im871a => 57_600,
            StickKind::Iu891a => 115_200,
            StickKind::Amb8465 => 9_600,
            StickKind::Cul => 38_400,
        }
    }
}

impl fmt::Display for StickKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StickKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "im871a" | "im170a" => Ok(StickKind::Im871a),
            "iu891a" => Ok(StickKind::Iu891a),
            "amb8465" | "amb3665" | "amber" => Ok(StickKind::Amb8465),
            "cul" | "nanocul" => Ok(StickKind::Cul),
            _ => Err(format!(
                "unknown stick {s:?}; use im871a, iu891a, amb8465 or cul"
            )),
        }
    }
}

/// One telegram as a receiver delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    /// From the L field on; data-link CRCs may or may not be present.
    pub frame: Vec<u8>,
    /// Signal strength, if the receiver reports it.
    pub rssi_dbm: Option<i16>,
    /// The mode the receiver says the telegram came in, if it says.
    pub mode: Option<LinkMode>,
    /// When the telegram's last byte arrived (monotonic, for latency and duplicate windows).
    pub received: Instant,
    /// The same moment on the wall clock, for printing.
    pub received_at: SystemTime,
}

impl Heard {
    pub fn new(frame: Vec<u8>, rssi_dbm: Option<i16>) -> Heard {
        Heard {
            frame,
            rssi_dbm,
            mode: None,
            received: Instant::now(),
            received_at: SystemTime::now(),
        }
    }
}

/// What a stick told about itself during start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StickInfo {
    /// "iM871A", "AMB8465", "CUL" …
    pub model: String,
    /// Firmware version as the stick reports it.
    pub firmware: String,
    /// The stick's own identity (IMST radio id, Amber serial number), hex.
    pub id: String,
    /// Anything else worth showing (`rssi attached`, `uart cmd out`, …), in order.
    pub details: Vec<(String, String)>,
}

/// Counts a session keeps while it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StickStats {
    pub telegrams: u64,
    /// Frames that failed the stick protocol's checks (checksum, length, unknown message) and
    /// were skipped.
    pub malformed: u64,
    /// Bytes thrown away while looking for the start of a frame.
    pub skipped_bytes: u64,
}

/// Why a receiver stopped or could not start. Malformed frames do not end a session; they are
/// counted in [`StickStats`].
#[derive(Debug, Error)]
pub enum StickError {
    #[error("{stick}: the device stopped answering or was unplugged: {source}")]
    Io {
        stick: StickKind,
        source: std::io::Error,
    },
    #[error("{stick}: the device closed the connection (unplugged?)")]
    Closed { stick: StickKind },
    #[error("{stick}: no answer to {request} within {} ms; is this really a {stick} at the right baud rate?", .waited.as_millis())]
    Timeout {
        stick: StickKind,
        request: &'static str,
        waited: Duration,
    },
    #[error("{stick}: {request} refused with status 0x{status:02X}")]
    Refused {
        stick: StickKind,
        request: &'static str,
        status: u8,
    },
    #[error("{stick}: link mode {mode} is not supported by this device: {reason}")]
    ModeUnsupported {
        stick: StickKind,
        mode: LinkMode,
        reason: String,
    },
    #[error("{stick}: unexpected answer to {request}: {detail}")]
    Protocol {
        stick: StickKind,
        request: &'static str,
        detail: String,
    },
}

/// How long a start-up command waits for its answer.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(1_000);

/// Suppresses a telegram heard again within a window: meters repeat, and two receivers in
/// range deliver the same telegram twice. Keyed by the telegram bytes without CRCs, so a
/// stick that strips them and one that does not agree.
#[derive(Debug)]
pub struct Dedup {
    window: Duration,
    seen: std::collections::HashMap<Vec<u8>, Instant>,
    last_sweep: Option<Instant>,
}

impl Dedup {
    /// The window wmbusmeters users know: 10 s.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
    /// Bound on remembered telegrams; reached only by a flood, then the oldest go first.
    const MAX_ENTRIES: usize = 4_096;

    pub fn new(window: Duration) -> Dedup {
        Dedup {
            window,
            seen: std::collections::HashMap::new(),
            last_sweep: None,
        }
    }

    /// True if `telegram` (without CRCs) was already seen less than the window ago; records it
    /// otherwise. A zero window turns suppression off.
    pub fn is_repeat(&mut self, telegram: &[u8], now: Instant) -> bool {
        if self.window.is_zero() {
            return false;
        }
        self.sweep(now);
        match self.seen.get(telegram) {
            Some(&at) if now.saturating_duration_since(at) < self.window => true,
            _ => {
                self.seen.insert(telegram.to_vec(), now);
                false
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        let due = self
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= self.window);
        if !due && self.seen.len() < Self::MAX_ENTRIES {
            return;
        }
        self.last_sweep = Some(now);
        let window = self.window;
        self.seen
            .retain(|_, at| now.saturating_duration_since(*at) < window);
        if self.seen.len() >= Self::MAX_ENTRIES {
            // A flood: keep the newer half, so eviction costs one pass per MAX/2 telegrams.
            let mut times: Vec<Instant> = self.seen.values().copied().collect();
            let (_, &mut cutoff, _) = times.select_nth_unstable(Self::MAX_ENTRIES / 2);
            self.seen.retain(|_, at| *at > cutoff);
        }
    }
}

/// RSSI of the CC1101 (CUL) and Amber sticks: a two's-complement byte in half-dB steps with a
/// 74 dB offset.
pub fn rssi_half_db(raw: u8) -> i16 {
    i16::from(raw as i8) / 2 - 74
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_modes_parse_as_users_write_them() {
        assert_eq!("T1".parse::<LinkMode>(), Ok(LinkMode::T1));
        assert_eq!("c1,t1".parse::<LinkMode>(), Ok(LinkMode::C1T1));
        assert_eq!("c1+t1".parse::<LinkMode>(), Ok(LinkMode::C1T1));
        assert!("x1".parse::<LinkMode>().unwrap_err().contains("t1, c1, s1"));
        for m in LinkMode::ALL {
            assert_eq!(m.name().parse::<LinkMode>(), Ok(m));
        }
        for k in StickKind::ALL {
            assert_eq!(k.name().parse::<StickKind>(), Ok(k));
        }
    }

    #[test]
    fn dedup_window() {
        let t0 = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(10));
        assert!(!d.is_repeat(b"abc", t0));
        assert!(d.is_repeat(b"abc", t0 + Duration::from_secs(9)));
        assert!(!d.is_repeat(b"abd", t0 + Duration::from_secs(9)));
        assert!(!d.is_repeat(b"abc", t0 + Duration::from_secs(11)));
        let mut off = Dedup::new(Duration::ZERO);
        assert!(!off.is_repeat(b"abc", t0));
        assert!(!off.is_repeat(b"abc", t0));
    }

    #[test]
    fn dedup_memory_is_bounded() {
        let t0 = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(3600));
        for i in 0..10_000u32 {
            d.is_repeat(&i.to_be_bytes(), t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(d.seen.len() <= Dedup::MAX_ENTRIES);
    }

    #[test]
    fn half_db_rssi() {
        // Values from the AMB8465 manual's formula.
        assert_eq!(rssi_half_db(0x50), -34);
        assert_eq!(rssi_half_db(0x00), -74);
        assert_eq!(rssi_half_db(0xC0), -106);
    }
}
