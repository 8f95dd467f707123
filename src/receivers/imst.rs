//! IMST iM871A / iM170A (HCI frames at 57600 baud) and iU891A (the same HCI inside SLIP
//! frames at 115200 baud).
//!
//! An HCI frame is `A5 <ctrl|endpoint> <msg> <len> <payload> [timestamp LE32] [rssi] [crc LE16]`;
//! the high bits of the second byte say which optional fields follow. A received telegram
//! (RADIOLINK / WMBUSMSG_IND) carries the wM-Bus frame from its C field on without the L field
//! and without data-link CRCs; `len` is the L field, so the host puts it back in front.
//!
//! The byte-level part is sans-I/O: [`HciDecoder`] (and [`SlipDecoder`] in front of it for the
//! iU891A, both joined in [`ImstDecoder`]) take bytes in any pieces and hand out frames or
//! counted errors. [`ImstSession`] runs the start-up sequence over any async byte stream.

use std::collections::VecDeque;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::{Heard, LinkMode, StickError, StickInfo, StickKind, StickStats, COMMAND_TIMEOUT};

/// First byte of every HCI frame.
pub const SOF: u8 = 0xA5;

/// Device management: configuration, identity, reset.
pub const ENDPOINT_DEVMGMT: u8 = 0x01;
/// Radio link: telegrams sent and received.
pub const ENDPOINT_RADIOLINK: u8 = 0x02;
/// Radio link test.
pub const ENDPOINT_RADIOLINKTEST: u8 = 0x03;
/// Hardware test.
pub const ENDPOINT_HWTEST: u8 = 0x04;

pub const MSG_PING_REQ: u8 = 0x01;
pub const MSG_PING_RSP: u8 = 0x02;
pub const MSG_SET_CONFIG_REQ: u8 = 0x03;
pub const MSG_SET_CONFIG_RSP: u8 = 0x04;
pub const MSG_GET_CONFIG_REQ: u8 = 0x05;
pub const MSG_GET_CONFIG_RSP: u8 = 0x06;
pub const MSG_GET_DEVICEINFO_REQ: u8 = 0x0F;
pub const MSG_GET_DEVICEINFO_RSP: u8 = 0x10;
/// RADIOLINK: a telegram the stick received.
pub const MSG_WMBUS_IND: u8 = 0x03;

/// Bits of the second frame byte.
const CTRL_CRC: u8 = 0x80;
const CTRL_RSSI: u8 = 0x40;
const CTRL_TIMESTAMP: u8 = 0x20;
const CTRL_RESERVED: u8 = 0x10;
const ENDPOINT_MASK: u8 = 0x0F;

/// Module types in the device information.
pub const MODULE_IM871A: u8 = 0x33;
pub const MODULE_IM170A: u8 = 0x36;

/// The last firmware that can listen to C or T but not both at once.
pub const FIRMWARE_WITHOUT_C1T1: u8 = 0x13;

/// SLIP (RFC 1055) special bytes.
pub const SLIP_END: u8 = 0xC0;
pub const SLIP_ESC: u8 = 0xDB;
pub const SLIP_ESC_END: u8 = 0xDC;
pub const SLIP_ESC_ESC: u8 = 0xDD;

/// A SLIP frame longer than this cannot hold one HCI frame (at most 4 + 255 + 7 bytes, every
/// byte escaped in the worst case); the rest up to the next END is noise.
const SLIP_MAX_FRAME: usize = 2 * (4 + 255 + 7);

/// How long a partial HCI frame may wait for its remaining bytes. A whole frame takes under
/// 50 ms at 57600 baud, so a longer silence means the length byte was noise or bytes were lost.
const STALE_PARTIAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Why a frame was dropped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HciError {
    #[error("HCI frame CRC is 0x{received:04X}, computed 0x{computed:04X}")]
    BadCrc { received: u16, computed: u16 },
    #[error("HCI control byte 0x{0:02X} has the reserved bit 0x10 set")]
    ReservedBit(u8),
    #[error("HCI endpoint 0x{0:02X} is unknown")]
    UnknownEndpoint(u8),
    #[error("HCI message 0x{msg_id:02X} is unknown on endpoint 0x{endpoint:02X}")]
    UnknownMessage { endpoint: u8, msg_id: u8 },
    #[error("HCI frame of {expected} bytes arrived as {got} bytes")]
    WrongLength { expected: usize, got: usize },
    #[error("a partial HCI frame waited too long for its remaining bytes")]
    Stale,
    #[error("HCI payload of {0} bytes does not fit the length byte")]
    PayloadTooLong(usize),
    #[error("SLIP escape 0xDB followed by 0x{0:02X}")]
    SlipBadEscape(u8),
    #[error("SLIP frame longer than {SLIP_MAX_FRAME} bytes")]
    SlipOverflow,
}

/// One HCI frame, in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HciFrame {
    pub endpoint: u8,
    pub msg_id: u8,
    pub payload: Vec<u8>,
    /// The stick's receive timestamp, when it attaches one.
    pub timestamp: Option<u32>,
    /// The raw RSSI byte, when the stick attaches one ([`rssi_dbm`] converts it).
    pub rssi_raw: Option<u8>,
}

impl HciFrame {
    /// A frame with no optional fields, as the host sends requests.
    pub fn request(endpoint: u8, msg_id: u8, payload: &[u8]) -> HciFrame {
        HciFrame {
            endpoint,
            msg_id,
            payload: payload.to_vec(),
            timestamp: None,
            rssi_raw: None,
        }
    }

    /// The frame's bytes; the timestamp and RSSI go in when present, the CRC when `with_crc`.
    pub fn encode(&self, with_crc: bool) -> Result<Vec<u8>, HciError> {
        let len = u8::try_from(self.payload.len())
            .map_err(|_| HciError::PayloadTooLong(self.payload.len()))?;
        let mut ctrl = self.endpoint & ENDPOINT_MASK;
        if with_crc {
            ctrl |= CTRL_CRC;
        }
        if self.rssi_raw.is_some() {
            ctrl |= CTRL_RSSI;
        }
        if self.timestamp.is_some() {
            ctrl |= CTRL_TIMESTAMP;
        }
        let mut out = Vec::with_capacity(4 + self.payload.len() + 7);
        out.extend_from_slice(&[SOF, ctrl, self.msg_id, len]);
        out.extend_from_slice(&self.payload);
        if let Some(ts) = self.timestamp {
            out.extend_from_slice(&ts.to_le_bytes());
        }
        if let Some(rssi) = self.rssi_raw {
            out.push(rssi);
        }
        if with_crc {
            let crc = crc16_x25(out.get(1..).unwrap_or_default());
            out.extend_from_slice(&crc.to_le_bytes());
        }
        Ok(out)
    }
}

/// A host request as the sticks expect it: `A5 <endpoint> <msg> <len> <payload>`, no optional
/// fields.
pub fn encode_request(endpoint: u8, msg_id: u8, payload: &[u8]) -> Result<Vec<u8>, HciError> {
    HciFrame::request(endpoint, msg_id, payload).encode(false)
}

/// CRC-16/X-25 (reflected 0x1021, init and xorout 0xFFFF), over the frame from its second byte.
pub fn crc16_x25(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x8408
            } else {
                crc >> 1
            };
        }
    }
    crc ^ 0xFFFF
}

/// The RSSI byte in dBm, with the linear mapping wmbusmeters uses for these sticks:
/// 230 and above is 0 dBm, below that -100 dBm at 45 in half-dB steps, truncated toward zero.
pub fn rssi_dbm(raw: u8) -> i16 {
    if raw >= 230 {
        0
    } else {
        (i16::from(raw) - 245) / 2
    }
}

/// The RSSI byte that [`rssi_dbm`] turns back into `dbm` (exactly from -122 to -8 dBm; above
/// that the nearer of -8 and 0 dBm, below it the weakest value).
pub fn rssi_raw_for_dbm(dbm: i16) -> u8 {
    if dbm >= -4 {
        230
    } else if dbm >= -8 {
        229
    } else {
        u8::try_from(2 * i32::from(dbm) + 245).unwrap_or(0)
    }
}

fn message_known(endpoint: u8, msg_id: u8) -> Result<(), HciError> {
    let range = match endpoint {
        ENDPOINT_DEVMGMT => 0x01..=0x27,
        ENDPOINT_RADIOLINK => 0x01..=0x05,
        ENDPOINT_RADIOLINKTEST => 0x01..=0x07,
        ENDPOINT_HWTEST => 0x01..=0x02,
        other => return Err(HciError::UnknownEndpoint(other)),
    };
    if range.contains(&msg_id) {
        Ok(())
    } else {
        Err(HciError::UnknownMessage { endpoint, msg_id })
    }
}

/// What the bytes at the start of a buffer (which begins with [`SOF`]) hold.
enum Parsed {
    NeedMore,
    Frame(HciFrame, usize),
    Bad(HciError),
}

fn read_u8(bytes: &[u8], at: usize) -> Option<u8> {
    bytes.get(at).copied()
}

/// Parses the frame at the start of `bytes`, which begins with [`SOF`].
fn parse_frame(bytes: &[u8]) -> Parsed {
    let (Some(ctrl), Some(msg_id), Some(len)) =
        (read_u8(bytes, 1), read_u8(bytes, 2), read_u8(bytes, 3))
    else {
        // Check what has arrived so far, so noise is rejected without waiting for more.
        if let Some(ctrl) = read_u8(bytes, 1) {
            if ctrl & CTRL_RESERVED != 0 {
                return Parsed::Bad(HciError::ReservedBit(ctrl));
            }
            let endpoint = ctrl & ENDPOINT_MASK;
            if !(ENDPOINT_DEVMGMT..=ENDPOINT_HWTEST).contains(&endpoint) {
                return Parsed::Bad(HciError::UnknownEndpoint(endpoint));
            }
        }
        return Parsed::NeedMore;
    };
    if ctrl & CTRL_RESERVED != 0 {
        return Parsed::Bad(HciError::ReservedBit(ctrl));
    }
    let endpoint = ctrl & ENDPOINT_MASK;
    if let Err(e) = message_known(endpoint, msg_id) {
        return Parsed::Bad(e);
    }
    let payload_end = 4 + usize::from(len);
    let ts_len = if ctrl & CTRL_TIMESTAMP != 0 { 4 } else { 0 };
    let rssi_len = usize::from(ctrl & CTRL_RSSI != 0);
    let crc_len = if ctrl & CTRL_CRC != 0 { 2 } else { 0 };
    let total = payload_end + ts_len + rssi_len + crc_len;
    let Some(frame) = bytes.get(..total) else {
        return Parsed::NeedMore;
    };
    if crc_len > 0 {
        let body_end = total - crc_len;
        let computed = crc16_x25(frame.get(1..body_end).unwrap_or_default());
        let received = match frame.get(body_end..total) {
            Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
            _ => return Parsed::NeedMore,
        };
        if computed != received {
            return Parsed::Bad(HciError::BadCrc { received, computed });
        }
    }
    let payload = frame.get(4..payload_end).unwrap_or_default().to_vec();
    let timestamp = if ts_len > 0 {
        match frame.get(payload_end..payload_end + 4) {
            Some(&[a, b, c, d]) => Some(u32::from_le_bytes([a, b, c, d])),
            _ => return Parsed::NeedMore,
        }
    } else {
        None
    };
    let rssi_raw = if rssi_len > 0 {
        read_u8(frame, payload_end + ts_len)
    } else {
        None
    };
    Parsed::Frame(
        HciFrame {
            endpoint,
            msg_id,
            payload,
            timestamp,
            rssi_raw,
        },
        total,
    )
}

/// Decodes exactly one HCI frame (the content of one SLIP frame).
pub fn decode_frame(bytes: &[u8]) -> Result<HciFrame, HciError> {
    if bytes.first() != Some(&SOF) {
        return Err(HciError::WrongLength {
            expected: 4,
            got: bytes.len(),
        });
    }
    match parse_frame(bytes) {
        Parsed::Frame(frame, used) if used == bytes.len() => Ok(frame),
        Parsed::Frame(_, used) => Err(HciError::WrongLength {
            expected: used,
            got: bytes.len(),
        }),
        Parsed::NeedMore => Err(HciError::WrongLength {
            expected: bytes.len() + 1,
            got: bytes.len(),
        }),
        Parsed::Bad(e) => Err(e),
    }
}

/// Incremental HCI decoder for the iM871A's byte stream.
///
/// A bad frame (CRC, reserved bit, unknown endpoint or message) costs only its start byte: the
/// search for the next [`SOF`] begins right after it, so a frame whose length byte was hit by
/// noise does not take the following good frame with it.
#[derive(Debug, Default)]
pub struct HciDecoder {
    buf: Vec<u8>,
    skipped: u64,
}

impl HciDecoder {
    pub fn new() -> HciDecoder {
        HciDecoder::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes thrown away so far while looking for a frame start.
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped
    }

    /// Bytes held for a frame that has not completed yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next frame or error, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Option<Result<HciFrame, HciError>> {
        self.next_frame_with_raw()
            .map(|r| r.map(|(frame, _raw)| frame))
    }

    /// Like [`next_frame`](Self::next_frame), with the frame's bytes as they arrived.
    pub fn next_frame_with_raw(&mut self) -> Option<Result<(HciFrame, Vec<u8>), HciError>> {
        self.skip_to_sof();
        if self.buf.is_empty() {
            return None;
        }
        match parse_frame(&self.buf) {
            Parsed::NeedMore => None,
            Parsed::Frame(frame, used) => {
                let raw: Vec<u8> = self.buf.drain(..used.min(self.buf.len())).collect();
                Some(Ok((frame, raw)))
            }
            Parsed::Bad(e) => {
                // The start byte is what made this look like a frame; the rest may hold the
                // next real one.
                self.buf.remove(0);
                Some(Err(e))
            }
        }
    }

    /// Gives up on a partial frame (after a silence): its start byte is dropped and the rest
    /// is searched again. Returns whether there was one.
    pub fn abandon_partial(&mut self) -> bool {
        self.skip_to_sof();
        if self.buf.is_empty() {
            return false;
        }
        self.buf.remove(0);
        true
    }

    fn skip_to_sof(&mut self) {
        let start = self
            .buf
            .iter()
            .position(|&b| b == SOF)
            .unwrap_or(self.buf.len());
        if start > 0 {
            self.skipped += start as u64;
            self.buf.drain(..start);
        }
    }
}

/// Wraps one frame in SLIP: END, the bytes with END and ESC escaped, END. The leading END
/// flushes any noise the receiver collected before.
pub fn slip_encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 4);
    out.push(SLIP_END);
    for &b in data {
        match b {
            SLIP_END => out.extend_from_slice(&[SLIP_ESC, SLIP_ESC_END]),
            SLIP_ESC => out.extend_from_slice(&[SLIP_ESC, SLIP_ESC_ESC]),
            other => out.push(other),
        }
    }
    out.push(SLIP_END);
    out
}

/// One SLIP frame: its content, and the bytes that carried it (END, escaped content, END).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlipFrame {
    pub data: Vec<u8>,
    pub raw: Vec<u8>,
}

/// Incremental SLIP (RFC 1055) decoder; empty frames (back-to-back ENDs) are skipped.
#[derive(Debug, Default)]
pub struct SlipDecoder {
    data: Vec<u8>,
    raw: Vec<u8>,
    escaped: bool,
    error: Option<HciError>,
    ready: VecDeque<Result<SlipFrame, HciError>>,
}

impl SlipDecoder {
    pub fn new() -> SlipDecoder {
        SlipDecoder::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == SLIP_END {
                self.finish_frame();
                continue;
            }
            if self.error.is_some() {
                continue;
            }
            self.raw.push(b);
            if self.escaped {
                self.escaped = false;
                match b {
                    SLIP_ESC_END => self.data.push(SLIP_END),
                    SLIP_ESC_ESC => self.data.push(SLIP_ESC),
                    other => self.error = Some(HciError::SlipBadEscape(other)),
                }
            } else if b == SLIP_ESC {
                self.escaped = true;
            } else {
                self.data.push(b);
            }
            if self.data.len() > SLIP_MAX_FRAME {
                self.error = Some(HciError::SlipOverflow);
            }
        }
    }

    fn finish_frame(&mut self) {
        let data = std::mem::take(&mut self.data);
        let mut raw = std::mem::take(&mut self.raw);
        if std::mem::take(&mut self.escaped) && self.error.is_none() {
            // ESC END: the byte after the escape was lost, so the content is one byte short
            // and may still pass as a shorter HCI frame.
            self.error = Some(HciError::SlipBadEscape(SLIP_END));
        }
        if let Some(e) = self.error.take() {
            self.ready.push_back(Err(e));
        } else if !raw.is_empty() {
            raw.insert(0, SLIP_END);
            raw.push(SLIP_END);
            self.ready.push_back(Ok(SlipFrame { data, raw }));
        }
    }

    pub fn next_frame(&mut self) -> Option<Result<SlipFrame, HciError>> {
        self.ready.pop_front()
    }

    /// Bytes held for a frame whose END has not arrived yet.
    pub fn pending(&self) -> usize {
        self.raw.len()
    }
}

/// The byte-level decoder for either stick: plain HCI for the iM871A, HCI in SLIP for the
/// iU891A.
#[derive(Debug)]
pub enum ImstDecoder {
    Hci(HciDecoder),
    Slip(SlipDecoder),
}

impl ImstDecoder {
    pub fn new(kind: StickKind) -> ImstDecoder {
        match kind {
            StickKind::Iu891a => ImstDecoder::Slip(SlipDecoder::new()),
            _ => ImstDecoder::Hci(HciDecoder::new()),
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        match self {
            ImstDecoder::Hci(d) => d.push(bytes),
            ImstDecoder::Slip(d) => d.push(bytes),
        }
    }

    pub fn next_frame(&mut self) -> Option<Result<HciFrame, HciError>> {
        self.next_frame_with_raw()
            .map(|r| r.map(|(frame, _raw)| frame))
    }

    /// The next frame with the bytes that carried it (for SLIP, including the END bytes).
    pub fn next_frame_with_raw(&mut self) -> Option<Result<(HciFrame, Vec<u8>), HciError>> {
        match self {
            ImstDecoder::Hci(d) => d.next_frame_with_raw(),
            ImstDecoder::Slip(d) => d
                .next_frame()
                .map(|r| r.and_then(|s| decode_frame(&s.data).map(|f| (f, s.raw)))),
        }
    }

    pub fn skipped_bytes(&self) -> u64 {
        match self {
            ImstDecoder::Hci(d) => d.skipped_bytes(),
            // SLIP has no bytes outside frames: noise becomes a malformed frame instead.
            ImstDecoder::Slip(_) => 0,
        }
    }

    pub fn pending(&self) -> usize {
        match self {
            ImstDecoder::Hci(d) => d.pending(),
            ImstDecoder::Slip(d) => d.pending(),
        }
    }

    /// Whether plain HCI bytes wait for the rest of a frame (SLIP frames end at their END).
    fn partial_hci(&self) -> bool {
        matches!(self, ImstDecoder::Hci(d) if d.pending() > 0)
    }

    /// See [`HciDecoder::abandon_partial`]; SLIP frames end at the next END anyway.
    pub fn abandon_partial(&mut self) -> bool {
        match self {
            ImstDecoder::Hci(d) => d.abandon_partial(),
            ImstDecoder::Slip(_) => false,
        }
    }
}

/// Why a DEVICEINFO or CONFIG answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ImstParseError {
    #[error("{what} ends after {got} bytes; {needed} needed")]
    Short {
        what: &'static str,
        needed: usize,
        got: usize,
    },
}

/// GET_DEVICEINFO_RSP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo {
    pub module_type: u8,
    /// 0 collector ("other"), 1 meter.
    pub device_mode: u8,
    pub firmware: u8,
    pub hci_version: u8,
    pub uid: u32,
}

impl DeviceInfo {
    /// Reads the 8-byte answer; anything after it is ignored.
    pub fn parse(payload: &[u8]) -> Result<DeviceInfo, ImstParseError> {
        match payload {
            &[module_type, device_mode, firmware, hci_version, a, b, c, d, ..] => Ok(DeviceInfo {
                module_type,
                device_mode,
                firmware,
                hci_version,
                uid: u32::from_le_bytes([a, b, c, d]),
            }),
            _ => Err(ImstParseError::Short {
                what: "GET_DEVICEINFO answer",
                needed: 8,
                got: payload.len(),
            }),
        }
    }

    /// The product name for the module type; the iU891A does not tell itself apart here.
    pub fn model(&self, kind: StickKind) -> String {
        match (kind, self.module_type) {
            (StickKind::Iu891a, _) => "iU891A".to_string(),
            (_, MODULE_IM871A) => "iM871A".to_string(),
            (_, MODULE_IM170A) => "iM170A".to_string(),
            (_, other) => format!("IMST module 0x{other:02X}"),
        }
    }
}

/// GET_CONFIG_RSP: each field is present only when the stick's flag bytes say so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RadioConfig {
    pub device_mode: Option<u8>,
    pub link_mode: Option<u8>,
    pub c_field: Option<u8>,
    pub m_field: Option<u16>,
    pub id: Option<u32>,
    pub version: Option<u8>,
    pub device_type: Option<u8>,
    pub channel: Option<u8>,
    pub power_level: Option<u8>,
    pub data_rate: Option<u8>,
    pub rx_window: Option<u8>,
    pub auto_power_saving: Option<u8>,
    pub rssi_attached: Option<bool>,
    pub timestamp_attached: Option<bool>,
    pub led_control: Option<u8>,
    pub rtc_control: Option<u8>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], ImstParseError> {
        let got = self
            .bytes
            .get(self.at..self.at + N)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .ok_or(ImstParseError::Short {
                what: "GET_CONFIG answer",
                needed: self.at + N,
                got: self.bytes.len(),
            })?;
        self.at += N;
        Ok(got)
    }

    fn u8_if(&mut self, present: bool) -> Result<Option<u8>, ImstParseError> {
        if present {
            Ok(Some(self.take::<1>()?[0]))
        } else {
            Ok(None)
        }
    }
}

impl RadioConfig {
    /// Reads the flagged fields; bytes after the last one are ignored (the iM871A sends one).
    /// A missing second flag byte means none of its fields.
    pub fn parse(payload: &[u8]) -> Result<RadioConfig, ImstParseError> {
        let mut c = Cursor {
            bytes: payload,
            at: 0,
        };
        let [flags1] = c.take::<1>()?;
        let mut cfg = RadioConfig {
            device_mode: c.u8_if(flags1 & 0x01 != 0)?,
            link_mode: c.u8_if(flags1 & 0x02 != 0)?,
            c_field: c.u8_if(flags1 & 0x04 != 0)?,
            ..RadioConfig::default()
        };
        if flags1 & 0x08 != 0 {
            cfg.m_field = Some(u16::from_le_bytes(c.take::<2>()?));
        }
        if flags1 & 0x10 != 0 {
            cfg.id = Some(u32::from_le_bytes(c.take::<4>()?));
        }
        cfg.version = c.u8_if(flags1 & 0x20 != 0)?;
        cfg.device_type = c.u8_if(flags1 & 0x40 != 0)?;
        cfg.channel = c.u8_if(flags1 & 0x80 != 0)?;
        let flags2 = match payload.get(c.at) {
            Some(&f) => {
                c.at += 1;
                f
            }
            None => 0,
        };
        cfg.power_level = c.u8_if(flags2 & 0x01 != 0)?;
        cfg.data_rate = c.u8_if(flags2 & 0x02 != 0)?;
        cfg.rx_window = c.u8_if(flags2 & 0x04 != 0)?;
        cfg.auto_power_saving = c.u8_if(flags2 & 0x08 != 0)?;
        cfg.rssi_attached = c.u8_if(flags2 & 0x10 != 0)?.map(|v| v != 0);
        cfg.timestamp_attached = c.u8_if(flags2 & 0x20 != 0)?.map(|v| v != 0);
        cfg.led_control = c.u8_if(flags2 & 0x40 != 0)?;
        cfg.rtc_control = c.u8_if(flags2 & 0x80 != 0)?;
        Ok(cfg)
    }
}

/// The link-mode byte the stick listens with for `mode`.
pub fn link_mode_byte(mode: LinkMode) -> u8 {
    match mode {
        LinkMode::S1 => 0x00,
        LinkMode::T1 => 0x03,
        // TF-B: C1 meters send format B as well as A, and TF-B receives both.
        LinkMode::C1 => 0x07,
        LinkMode::C1T1 => 0x0A,
    }
}

/// The receive mode a link-mode byte stands for, where it is one of ours.
pub fn link_mode_from_byte(byte: u8) -> Option<LinkMode> {
    match byte {
        0x00 | 0x01 => Some(LinkMode::S1),
        0x03 => Some(LinkMode::T1),
        0x06 | 0x07 => Some(LinkMode::C1),
        0x0A => Some(LinkMode::C1T1),
        _ => None,
    }
}

fn link_mode_name(byte: u8) -> &'static str {
    match byte {
        0x00 => "S1",
        0x01 => "S1-m",
        0x02 => "S2",
        0x03 => "T1",
        0x04 => "T2",
        0x05 => "R2",
        0x06 => "C1 TF-A",
        0x07 => "C1 TF-B",
        0x08 => "C2 TF-A",
        0x09 => "C2 TF-B",
        0x0A => "C1+T1",
        _ => "other",
    }
}

/// SET_CONFIG payload: not saved to flash (temporary), the link mode, RSSI attached to every
/// telegram, no timestamp.
pub fn set_config_payload(mode: LinkMode) -> [u8; 6] {
    [0x00, 0x02, link_mode_byte(mode), 0x30, 0x01, 0x00]
}

/// An IMST stick after start-up, yielding the telegrams it hears.
pub struct ImstSession<S> {
    stream: S,
    kind: StickKind,
    mode: LinkMode,
    decoder: ImstDecoder,
    queued: VecDeque<Heard>,
    info: StickInfo,
    malformed: u64,
    telegrams: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> ImstSession<S> {
    /// Reads the device information and configuration, then sets the receive mode (not saved
    /// to the stick's flash) with RSSI attached.
    pub async fn start(stream: S, kind: StickKind, mode: LinkMode) -> Result<Self, StickError> {
        let mut session = ImstSession {
            stream,
            kind,
            mode,
            decoder: ImstDecoder::new(kind),
            queued: VecDeque::new(),
            info: StickInfo::default(),
            malformed: 0,
            telegrams: 0,
        };
        let answer = session
            .command(
                "GET_DEVICEINFO",
                MSG_GET_DEVICEINFO_REQ,
                MSG_GET_DEVICEINFO_RSP,
                &[],
            )
            .await?;
        let device = DeviceInfo::parse(&answer).map_err(|e| StickError::Protocol {
            stick: kind,
            request: "GET_DEVICEINFO",
            detail: e.to_string(),
        })?;
        let answer = session
            .command("GET_CONFIG", MSG_GET_CONFIG_REQ, MSG_GET_CONFIG_RSP, &[])
            .await?;
        let config = RadioConfig::parse(&answer).map_err(|e| StickError::Protocol {
            stick: kind,
            request: "GET_CONFIG",
            detail: e.to_string(),
        })?;
        session.check_mode(&device)?;
        let answer = session
            .command(
                "SET_CONFIG",
                MSG_SET_CONFIG_REQ,
                MSG_SET_CONFIG_RSP,
                &set_config_payload(mode),
            )
            .await?;
        // The observed answer is empty; a status byte, if a firmware sends one, is 0 on success.
        if let Some(&status) = answer.first() {
            if status != 0 {
                return Err(StickError::Refused {
                    stick: kind,
                    request: "SET_CONFIG",
                    status,
                });
            }
        }
        session.info = describe(kind, mode, &device, &config);
        Ok(session)
    }

    fn check_mode(&self, device: &DeviceInfo) -> Result<(), StickError> {
        let refuse = |reason: String| StickError::ModeUnsupported {
            stick: self.kind,
            mode: self.mode,
            reason,
        };
        if self.kind == StickKind::Im871a && device.module_type == MODULE_IM170A {
            return Err(refuse(
                "this is an iM170A, a 169 MHz N-mode stick; T1, C1 and S1 need an 868 MHz stick such as the iM871A".to_string(),
            ));
        }
        if self.mode == LinkMode::C1T1 && device.firmware <= FIRMWARE_WITHOUT_C1T1 {
            return Err(refuse(format!(
                "firmware 0x{:02X} listens to C1 or T1 but not both at once (that needs 0x14 or later); use c1 or t1",
                device.firmware
            )));
        }
        Ok(())
    }

    pub fn info(&self) -> &StickInfo {
        &self.info
    }

    pub fn stats(&self) -> StickStats {
        StickStats {
            telegrams: self.telegrams,
            malformed: self.malformed,
            skipped_bytes: self.decoder.skipped_bytes(),
        }
    }

    /// The next telegram. Malformed frames are counted and skipped; cancel-safe (the only
    /// await that can be dropped is a `read`, and its bytes go into the decoder at once).
    pub async fn next(&mut self) -> Result<Heard, StickError> {
        loop {
            self.drain_decoder(None);
            if let Some(heard) = self.queued.pop_front() {
                return Ok(heard);
            }
            self.read_more(None).await?;
        }
    }

    /// Sends one request and waits for its answer; telegrams arriving meanwhile are queued.
    async fn command(
        &mut self,
        name: &'static str,
        request: u8,
        response: u8,
        payload: &[u8],
    ) -> Result<Vec<u8>, StickError> {
        let frame = encode_request(ENDPOINT_DEVMGMT, request, payload).map_err(|e| {
            StickError::Protocol {
                stick: self.kind,
                request: name,
                detail: e.to_string(),
            }
        })?;
        let bytes = match self.kind {
            StickKind::Iu891a => slip_encode(&frame),
            _ => frame,
        };
        self.stream
            .write_all(&bytes)
            .await
            .map_err(|e| self.io_error(e))?;
        self.stream.flush().await.map_err(|e| self.io_error(e))?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            if let Some(answer) = self.drain_decoder(Some(response)) {
                return Ok(answer);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StickError::Timeout {
                    stick: self.kind,
                    request: name,
                    waited: COMMAND_TIMEOUT,
                });
            }
            self.read_more(Some(deadline - now)).await?;
        }
    }

    /// Takes every complete frame out of the decoder: telegrams are queued, errors counted,
    /// and the payload of the first DEVMGMT answer `wanted` returned (later frames stay put).
    fn drain_decoder(&mut self, wanted: Option<u8>) -> Option<Vec<u8>> {
        while let Some(item) = self.decoder.next_frame() {
            let frame = match item {
                Ok(frame) => frame,
                Err(_) => {
                    self.malformed += 1;
                    continue;
                }
            };
            match (frame.endpoint, frame.msg_id) {
                (ENDPOINT_RADIOLINK, MSG_WMBUS_IND) => self.telegram(frame),
                (ENDPOINT_DEVMGMT, id) if Some(id) == wanted => return Some(frame.payload),
                // Late answers and other indications carry nothing a listener needs.
                _ => {}
            }
        }
        None
    }

    fn telegram(&mut self, frame: HciFrame) {
        // C, M and A make the 9 bytes every wM-Bus frame has after L.
        let Ok(len) = u8::try_from(frame.payload.len()) else {
            self.malformed += 1;
            return;
        };
        if frame.payload.len() < 9 {
            self.malformed += 1;
            return;
        }
        let mut bytes = Vec::with_capacity(frame.payload.len() + 1);
        bytes.push(len);
        bytes.extend_from_slice(&frame.payload);
        let mut heard = Heard::new(bytes, frame.rssi_raw.map(rssi_dbm));
        heard.mode = match self.mode {
            LinkMode::C1T1 => None,
            single => Some(single),
        };
        self.telegrams += 1;
        self.queued.push_back(heard);
    }

    /// Reads what the stream has (waiting at most `limit`, if given) into the decoder. A
    /// partial HCI frame followed by silence is given up, so a false start byte cannot hold
    /// later frames back.
    async fn read_more(&mut self, limit: Option<std::time::Duration>) -> Result<(), StickError> {
        let mut buf = [0u8; 512];
        let partial = self.decoder.partial_hci();
        let stale_wait = partial && limit.is_none_or(|l| l >= STALE_PARTIAL);
        let wait = if stale_wait {
            Some(STALE_PARTIAL)
        } else {
            limit
        };
        let read = match wait {
            Some(w) => match tokio::time::timeout(w, self.stream.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => {
                    if stale_wait && self.decoder.abandon_partial() {
                        self.malformed += 1;
                    }
                    return Ok(());
                }
            },
            None => self.stream.read(&mut buf).await,
        };
        match read {
            Ok(0) => Err(StickError::Closed { stick: self.kind }),
            Ok(n) => {
                self.decoder.push(buf.get(..n).unwrap_or_default());
                Ok(())
            }
            Err(e) => Err(self.io_error(e)),
        }
    }

    fn io_error(&self, source: std::io::Error) -> StickError {
        StickError::Io {
            stick: self.kind,
            source,
        }
    }
}

fn describe(
    kind: StickKind,
    mode: LinkMode,
    device: &DeviceInfo,
    config: &RadioConfig,
) -> StickInfo {
    let id = config.id.unwrap_or(device.uid);
    let mode_byte = link_mode_byte(mode);
    let mut details = vec![
        (
            "link mode".to_string(),
            format!(
                "{} (0x{mode_byte:02X}, {})",
                mode,
                link_mode_name(mode_byte)
            ),
        ),
        ("rssi attached".to_string(), "yes".to_string()),
        (
            "device mode".to_string(),
            match device.device_mode {
                0 => "other (collector)".to_string(),
                1 => "meter".to_string(),
                m => format!("0x{m:02X}"),
            },
        ),
        (
            "hci version".to_string(),
            format!("0x{:02X}", device.hci_version),
        ),
        ("uid".to_string(), format!("{:08X}", device.uid)),
    ];
    if let Some(previous) = config.link_mode {
        details.push((
            "link mode before".to_string(),
            format!("0x{previous:02X} ({})", link_mode_name(previous)),
        ));
    }
    if let Some(channel) = config.channel {
        details.push(("radio channel".to_string(), channel.to_string()));
    }
    StickInfo {
        model: device.model(kind),
        firmware: format!("0x{:02X}", device.firmware),
        id: format!("{id:08X}"),
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    const PING_RSP: &str = "A58102004CA3";
    const SET_CONFIG_RSP: &str = "A58104009CF7";
    const DEVICEINFO_RSP: &str = "A581100833001301F13A000053D9";
    const CONFIG_RSP: &str = "A5810617FF000700B32512351000010001FF07023200010000000063C9";
    const IND: &str = "A5C2032A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F6167134C0CBA";
    const IND_TELEGRAM: &str =
        "2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713";

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn all(d: &mut HciDecoder) -> Vec<Result<HciFrame, HciError>> {
        std::iter::from_fn(|| d.next_frame()).collect()
    }

    #[test]
    fn crc_check_value() {
        assert_eq!(crc16_x25(&[0x81, 0x02, 0x00]), 0xA34C);
        assert_eq!(crc16_x25(b"123456789"), 0x906E);
    }

    #[test]
    fn requests_encode_without_optional_fields() {
        assert_eq!(encode_request(1, MSG_PING_REQ, &[]).unwrap(), h("A5010100"));
        assert_eq!(
            encode_request(1, MSG_GET_DEVICEINFO_REQ, &[]).unwrap(),
            h("A5010F00")
        );
        assert_eq!(
            encode_request(1, MSG_SET_CONFIG_REQ, &set_config_payload(LinkMode::T1)).unwrap(),
            h("A5010306000203300100")
        );
        for (mode, expected) in [
            (LinkMode::C1, "A5010306000207300100"),
            (LinkMode::C1T1, "A501030600020A300100"),
            (LinkMode::S1, "A5010306000200300100"),
        ] {
            assert_eq!(
                encode_request(1, MSG_SET_CONFIG_REQ, &set_config_payload(mode)).unwrap(),
                h(expected)
            );
        }
        assert_eq!(
            encode_request(1, 1, &[0; 256]),
            Err(HciError::PayloadTooLong(256))
        );
    }

    #[test]
    fn stick_answers_decode_and_reencode() {
        for (text, msg, payload_len) in [
            (PING_RSP, MSG_PING_RSP, 0),
            (SET_CONFIG_RSP, MSG_SET_CONFIG_RSP, 0),
            (DEVICEINFO_RSP, MSG_GET_DEVICEINFO_RSP, 8),
            (CONFIG_RSP, MSG_GET_CONFIG_RSP, 0x17),
        ] {
            let mut d = HciDecoder::new();
            d.push(&h(text));
            let frame = d.next_frame().unwrap().unwrap();
            assert_eq!(frame.endpoint, ENDPOINT_DEVMGMT);
            assert_eq!(frame.msg_id, msg);
            assert_eq!(frame.payload.len(), payload_len);
            assert_eq!(frame.rssi_raw, None);
            assert_eq!(frame.encode(true).unwrap(), h(text));
            assert!(d.next_frame().is_none());
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn device_info_and_config_parse() {
        let frame = decode_frame(&h(DEVICEINFO_RSP)).unwrap();
        let info = DeviceInfo::parse(&frame.payload).unwrap();
        assert_eq!(
            info,
            DeviceInfo {
                module_type: MODULE_IM871A,
                device_mode: 0,
                firmware: 0x13,
                hci_version: 0x01,
                uid: 0x0000_3AF1,
            }
        );
        assert_eq!(info.model(StickKind::Im871a), "iM871A");
        assert_eq!(info.model(StickKind::Iu891a), "iU891A");
        assert!(DeviceInfo::parse(&frame.payload[..7]).is_err());

        let frame = decode_frame(&h(CONFIG_RSP)).unwrap();
        let cfg = RadioConfig::parse(&frame.payload).unwrap();
        assert_eq!(cfg.device_mode, Some(0));
        assert_eq!(cfg.link_mode, Some(0x07));
        assert_eq!(cfg.c_field, Some(0));
        assert_eq!(cfg.m_field, Some(0x25B3));
        assert_eq!(cfg.id, Some(0x0010_3512));
        assert_eq!(cfg.version, Some(1));
        assert_eq!(cfg.device_type, Some(0));
        assert_eq!(cfg.channel, Some(1));
        assert_eq!(cfg.power_level, Some(7));
        assert_eq!(cfg.data_rate, Some(2));
        assert_eq!(cfg.rx_window, Some(0x32));
        assert_eq!(cfg.auto_power_saving, Some(0));
        assert_eq!(cfg.rssi_attached, Some(true));
        assert_eq!(cfg.timestamp_attached, Some(false));
        assert_eq!(cfg.led_control, Some(0));
        assert_eq!(cfg.rtc_control, Some(0));
        // Cut inside the flagged fields: an error, not a panic. (A cut right before the second
        // flag byte reads as "no second group".)
        assert!(RadioConfig::parse(&frame.payload[..13]).is_ok());
        assert!(RadioConfig::parse(&frame.payload[..22]).is_ok());
        for cut in (0..13).chain(14..22) {
            assert!(RadioConfig::parse(&frame.payload[..cut]).is_err(), "{cut}");
        }
        // Only the first flag byte: the second group is simply absent.
        let short = RadioConfig::parse(&[0x02, 0x03]).unwrap();
        assert_eq!(short.link_mode, Some(0x03));
        assert_eq!(short.rssi_attached, None);
    }

    #[test]
    fn indication_gives_the_telegram_and_rssi() {
        let mut d = HciDecoder::new();
        d.push(&h(IND));
        let frame = d.next_frame().unwrap().unwrap();
        assert_eq!(frame.endpoint, ENDPOINT_RADIOLINK);
        assert_eq!(frame.msg_id, MSG_WMBUS_IND);
        assert_eq!(frame.rssi_raw, Some(0x4C));
        assert_eq!(frame.timestamp, None);
        assert_eq!(rssi_dbm(0x4C), -84);
        let mut telegram = vec![frame.payload.len() as u8];
        telegram.extend_from_slice(&frame.payload);
        assert_eq!(telegram, h(IND_TELEGRAM));
        // The short capture from a user's log checks out as well.
        let short = decode_frame(&h("A5C20309472D2C57277971340C4C6807")).unwrap();
        assert_eq!(short.payload, h("472D2C57277971340C"));
        assert_eq!(short.rssi_raw, Some(0x4C));
    }

    #[test]
    fn timestamps_round_trip() {
        let frame = HciFrame {
            endpoint: ENDPOINT_RADIOLINK,
            msg_id: MSG_WMBUS_IND,
            payload: h(IND_TELEGRAM)[1..].to_vec(),
            timestamp: Some(0x1234_5678),
            rssi_raw: Some(0x99),
        };
        let bytes = frame.encode(true).unwrap();
        assert_eq!(bytes[1], 0xE2);
        assert_eq!(decode_frame(&bytes).unwrap(), frame);
    }

    #[test]
    fn split_reads_one_byte_at_a_time() {
        let stream: Vec<u8> = [h(DEVICEINFO_RSP), h(IND), h(CONFIG_RSP)].concat();
        let mut d = HciDecoder::new();
        let mut frames = Vec::new();
        for b in &stream {
            d.push(std::slice::from_ref(b));
            while let Some(f) = d.next_frame() {
                frames.push(f.unwrap());
            }
        }
        let ids: Vec<_> = frames.iter().map(|f| (f.endpoint, f.msg_id)).collect();
        assert_eq!(
            ids,
            vec![
                (ENDPOINT_DEVMGMT, MSG_GET_DEVICEINFO_RSP),
                (ENDPOINT_RADIOLINK, MSG_WMBUS_IND),
                (ENDPOINT_DEVMGMT, MSG_GET_CONFIG_RSP),
            ]
        );
        assert_eq!(d.skipped_bytes(), 0);
    }

    #[test]
    fn garbage_before_and_between_frames_is_skipped() {
        let mut d = HciDecoder::new();
        d.push(&[0x00, 0x13, 0xFF]);
        d.push(&h(PING_RSP));
        d.push(&[0x42, 0x42]);
        d.push(&h(IND));
        let got = all(&mut d);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap().msg_id, MSG_PING_RSP);
        assert_eq!(got[1].as_ref().unwrap().rssi_raw, Some(0x4C));
        assert_eq!(d.skipped_bytes(), 5);
    }

    #[test]
    fn garbage_start_byte_inside_noise_resyncs() {
        // A stray A5 with a reserved-bit control byte, then one with an unknown endpoint, then
        // one with an unknown message: each is an error and the real frame still comes out.
        let mut d = HciDecoder::new();
        d.push(&h("A5 91 A5 0B A5 01 7F 00"));
        d.push(&h(IND));
        let got = all(&mut d);
        assert_eq!(
            got[..3],
            [
                Err(HciError::ReservedBit(0x91)),
                Err(HciError::UnknownEndpoint(0x0B)),
                Err(HciError::UnknownMessage {
                    endpoint: 1,
                    msg_id: 0x7F
                }),
            ]
        );
        assert_eq!(got.len(), 4);
        assert_eq!(got[3].as_ref().unwrap().msg_id, MSG_WMBUS_IND);
    }

    #[test]
    fn bad_crc_is_dropped_and_the_next_frame_survives() {
        let mut bad = h(IND);
        let n = bad.len();
        bad[n - 1] ^= 0x01;
        let mut d = HciDecoder::new();
        d.push(&bad);
        d.push(&h(PING_RSP));
        let got = all(&mut d);
        assert!(matches!(
            got[0],
            Err(HciError::BadCrc {
                computed: 0xBA0C,
                ..
            })
        ));
        let frames: Vec<_> = got.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].msg_id, MSG_PING_RSP);
        assert_eq!(got.iter().filter(|r| r.is_err()).count(), 1);
        // The bad frame's bytes after its start byte were searched, then thrown away.
        assert_eq!(d.skipped_bytes(), (n - 1) as u64);

        // A lost byte makes the frame look longer; it takes bytes of the next frame, fails
        // its CRC, and the next frame is found again behind its start byte.
        let mut lost = h(IND);
        lost.remove(10);
        let mut d = HciDecoder::new();
        d.push(&lost);
        d.push(&h(IND));
        let got = all(&mut d);
        assert_eq!(got.iter().filter(|r| r.is_ok()).count(), 1);
        assert!(got.last().unwrap().is_ok());
    }

    #[test]
    fn abandoning_a_stale_partial_frame_frees_what_follows() {
        let mut d = HciDecoder::new();
        // A start byte with a plausible header and a long length, then a real frame.
        d.push(&h("A5 82 03 FF"));
        d.push(&h(PING_RSP));
        assert!(d.next_frame().is_none());
        assert!(d.abandon_partial());
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(f.msg_id, MSG_PING_RSP);
        assert!(!d.abandon_partial());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed: u32 = 0x1234_5678;
        let mut d = HciDecoder::new();
        let mut s = SlipDecoder::new();
        for _ in 0..20_000 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let b = match seed >> 29 {
                0 => SOF,
                1 => SLIP_END,
                2 => SLIP_ESC,
                _ => (seed >> 16) as u8,
            };
            d.push(&[b]);
            s.push(&[b]);
            while d.next_frame().is_some() {}
            while let Some(f) = s.next_frame() {
                if let Ok(f) = f {
                    let _ = decode_frame(&f.data);
                }
            }
            let _ = RadioConfig::parse(&d.buf);
            let _ = DeviceInfo::parse(&d.buf);
        }
        assert!(d.pending() <= 4 + 255 + 7);
    }

    #[test]
    fn rssi_mapping_and_its_inverse() {
        assert_eq!(rssi_dbm(0x4C), -84);
        assert_eq!(rssi_dbm(45), -100);
        assert_eq!(rssi_dbm(229), -8);
        assert_eq!(rssi_dbm(230), 0);
        assert_eq!(rssi_dbm(255), 0);
        assert_eq!(rssi_dbm(0), -122);
        for dbm in -122..=-8 {
            assert_eq!(rssi_dbm(rssi_raw_for_dbm(dbm)), dbm);
        }
        for dbm in -7..=5 {
            assert!(
                (rssi_dbm(rssi_raw_for_dbm(dbm)) - dbm.min(0)).abs() <= 4,
                "{dbm}"
            );
        }
        assert_eq!(rssi_dbm(rssi_raw_for_dbm(-200)), -122);
    }

    #[test]
    fn slip_escaping_round_trip() {
        let data = h("A5 C2 03 05 C0 DB DC DD C0 DB 01 02");
        let wire = slip_encode(&data);
        assert_eq!(
            wire,
            h("C0 A5 C2 03 05 DB DC DB DD DC DD DB DC DB DD 01 02 C0")
        );
        let mut s = SlipDecoder::new();
        for b in &wire {
            s.push(std::slice::from_ref(b));
        }
        let f = s.next_frame().unwrap().unwrap();
        assert_eq!(f.data, data);
        assert_eq!(f.raw, wire);
        assert!(s.next_frame().is_none());
    }

    #[test]
    fn slip_layer_feeds_the_hci_decoder() {
        let mut d = ImstDecoder::new(StickKind::Iu891a);
        // Empty frames (END END) are ignored; a bad escape is one error; noise between frames
        // is a malformed frame; a SLIP frame holding a broken HCI frame is one error.
        let mut wire = vec![SLIP_END, SLIP_END];
        wire.extend(slip_encode(&h(IND)));
        wire.extend([0x11, SLIP_ESC, 0x22, SLIP_END]);
        wire.extend([0x33, 0x44, SLIP_END]);
        wire.extend(slip_encode(&h("A58102004CA4")));
        wire.extend(slip_encode(&h(PING_RSP)));
        let mut got = Vec::new();
        for chunk in wire.chunks(3) {
            d.push(chunk);
            while let Some(f) = d.next_frame() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0].as_ref().unwrap().rssi_raw, Some(0x4C));
        assert_eq!(got[1], Err(HciError::SlipBadEscape(0x22)));
        assert!(got[2].is_err());
        assert!(matches!(got[3], Err(HciError::BadCrc { .. })));
        assert_eq!(got[4].as_ref().unwrap().msg_id, MSG_PING_RSP);
    }

    #[test]
    fn slip_frame_ending_in_an_escape_is_rejected() {
        // Found by the imst_stream fuzz target: `A5 03 03 03 01 00 59` is a whole HCI frame,
        // and the ESC after it used to vanish at the END.
        let frame = h("A5 03 03 03 01 00 59");
        assert!(decode_frame(&frame).is_ok());
        let mut wire = slip_encode(&frame);
        wire.insert(wire.len() - 1, SLIP_ESC);
        wire.extend(slip_encode(&frame));
        let mut d = ImstDecoder::new(StickKind::Iu891a);
        d.push(&wire);
        assert_eq!(d.next_frame(), Some(Err(HciError::SlipBadEscape(SLIP_END))));
        // The escape does not leak into the next frame.
        let next = d.next_frame().unwrap().unwrap();
        assert_eq!(
            (next.endpoint, next.msg_id, next.payload),
            (3, 3, h("01 00 59"))
        );
        assert!(d.next_frame().is_none());
    }

    #[test]
    fn slip_frame_with_trailing_bytes_is_rejected() {
        let mut data = h(PING_RSP);
        data.push(0x00);
        assert_eq!(
            decode_frame(&data),
            Err(HciError::WrongLength {
                expected: 6,
                got: 7
            })
        );
    }

    mod session {
        use super::*;
        use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

        /// A hand-made stick: answers the start-up commands with the golden answers and sends
        /// an indication before each of them.
        async fn fake_stick(mut peer: DuplexStream, deviceinfo: &'static str) -> Vec<Vec<u8>> {
            let mut d = HciDecoder::new();
            let mut seen = Vec::new();
            let mut buf = [0u8; 64];
            loop {
                let n = match peer.read(&mut buf).await {
                    Ok(0) | Err(_) => return seen,
                    Ok(n) => n,
                };
                d.push(&buf[..n]);
                while let Some(Ok((frame, raw))) = d.next_frame_with_raw() {
                    seen.push(raw);
                    let answer = match frame.msg_id {
                        MSG_GET_DEVICEINFO_REQ => deviceinfo,
                        MSG_GET_CONFIG_REQ => CONFIG_RSP,
                        MSG_SET_CONFIG_REQ => SET_CONFIG_RSP,
                        _ => PING_RSP,
                    };
                    // The indication arrives split around noise, right before the answer.
                    let ind = h(IND);
                    let _ = peer.write_all(&ind[..7]).await;
                    let _ = peer.write_all(&ind[7..]).await;
                    let _ = peer.write_all(&[0x00]).await;
                    let _ = peer.write_all(&h(answer)).await;
                }
            }
        }

        /// A session started against a stick that answers the three start-up commands and
        /// nothing else, with the stick's end of the stream for the test to write to.
        async fn started() -> (ImstSession<DuplexStream>, DuplexStream) {
            let (host, mut stick) = duplex(1024);
            let answering = async move {
                let mut d = HciDecoder::new();
                let mut buf = [0u8; 64];
                let mut answered = 0;
                while answered < 3 {
                    let n = stick.read(&mut buf).await.unwrap();
                    d.push(&buf[..n]);
                    while let Some(Ok(frame)) = d.next_frame() {
                        let answer = match frame.msg_id {
                            MSG_GET_DEVICEINFO_REQ => "A581100833001501F13A0000A9C1",
                            MSG_GET_CONFIG_REQ => CONFIG_RSP,
                            _ => SET_CONFIG_RSP,
                        };
                        stick.write_all(&h(answer)).await.unwrap();
                        answered += 1;
                    }
                }
                stick
            };
            let (session, stick) = tokio::join!(
                ImstSession::start(host, StickKind::Im871a, LinkMode::C1),
                answering
            );
            (session.unwrap(), stick)
        }

        #[tokio::test]
        async fn next_is_cancel_safe_in_the_middle_of_a_frame() {
            let (mut s, mut stick) = started().await;
            let ind = h(IND);
            stick.write_all(&ind[..20]).await.unwrap();
            let cancelled =
                tokio::time::timeout(std::time::Duration::from_millis(50), s.next()).await;
            assert!(cancelled.is_err());
            stick.write_all(&ind[20..]).await.unwrap();
            let heard = s.next().await.unwrap();
            assert_eq!(heard.frame, h(IND_TELEGRAM));
            assert_eq!(heard.mode, Some(LinkMode::C1));
            assert_eq!(s.stats().malformed, 0);
        }

        #[tokio::test]
        async fn a_false_start_followed_by_silence_does_not_hold_back_the_next_frame() {
            let (mut s, mut stick) = started().await;
            // A header claiming 255 payload bytes, then quiet, then a real indication: the
            // decoder gives the false start up after the silence and finds the indication.
            stick.write_all(&h("A5 82 03 FF 01 02")).await.unwrap();
            tokio::time::sleep(STALE_PARTIAL * 2).await;
            stick.write_all(&h(IND)).await.unwrap();
            let heard = s.next().await.unwrap();
            assert_eq!(heard.frame, h(IND_TELEGRAM));
            assert_eq!(s.stats().malformed, 1);
            assert_eq!(s.stats().skipped_bytes, 5);
        }

        #[tokio::test]
        async fn bad_frames_between_telegrams_are_counted() {
            let (mut s, mut stick) = started().await;
            let mut bad = h(IND);
            bad[20] ^= 0xFF;
            stick.write_all(&bad).await.unwrap();
            // An indication too short to hold a link-layer header.
            let short = HciFrame {
                endpoint: ENDPOINT_RADIOLINK,
                msg_id: MSG_WMBUS_IND,
                payload: vec![0x44, 0x2D],
                timestamp: None,
                rssi_raw: Some(0x50),
            };
            stick.write_all(&short.encode(true).unwrap()).await.unwrap();
            stick.write_all(&h(IND)).await.unwrap();
            let heard = s.next().await.unwrap();
            assert_eq!(heard.frame, h(IND_TELEGRAM));
            assert_eq!(s.stats().malformed, 2);
            assert_eq!(s.stats().telegrams, 1);
            drop(stick);
            assert!(matches!(s.next().await, Err(StickError::Closed { .. })));
        }

        #[tokio::test]
        async fn indications_during_start_up_are_queued() {
            let (host, stick) = duplex(1024);
            let fake = tokio::spawn(fake_stick(stick, "A581100833001501F13A0000A9C1"));
            let mut s = ImstSession::start(host, StickKind::Im871a, LinkMode::T1)
                .await
                .unwrap();
            assert_eq!(s.info().model, "iM871A");
            assert_eq!(s.info().firmware, "0x15");
            assert_eq!(s.info().id, "00103512");
            for _ in 0..3 {
                let heard = s.next().await.unwrap();
                assert_eq!(heard.frame, h(IND_TELEGRAM));
                assert_eq!(heard.rssi_dbm, Some(-84));
                assert_eq!(heard.mode, Some(LinkMode::T1));
            }
            assert_eq!(s.stats().telegrams, 3);
            assert_eq!(s.stats().skipped_bytes, 3);
            drop(s);
            let seen = fake.await.unwrap();
            assert_eq!(
                seen,
                vec![h("A5010F00"), h("A5010500"), h("A5010306000203300100")]
            );
        }

        #[tokio::test]
        async fn c1t1_is_refused_on_firmware_0x13() {
            let (host, stick) = duplex(1024);
            let fake = tokio::spawn(fake_stick(stick, DEVICEINFO_RSP));
            let err = ImstSession::start(host, StickKind::Im871a, LinkMode::C1T1)
                .await
                .err()
                .unwrap();
            match &err {
                StickError::ModeUnsupported { mode, reason, .. } => {
                    assert_eq!(*mode, LinkMode::C1T1);
                    assert!(reason.contains("0x13"), "{reason}");
                }
                other => panic!("{other}"),
            }
            let seen = fake.await.unwrap();
            assert_eq!(seen, vec![h("A5010F00"), h("A5010500")]);
        }

        #[tokio::test]
        async fn silence_times_out_and_eof_closes() {
            let (host, mut stick) = duplex(1024);
            let err = ImstSession::start(host, StickKind::Im871a, LinkMode::T1)
                .await
                .err()
                .unwrap();
            assert!(
                matches!(
                    err,
                    StickError::Timeout {
                        request: "GET_DEVICEINFO",
                        ..
                    }
                ),
                "{err}"
            );
            let mut buf = [0u8; 8];
            let n = stick.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &h("A5010F00")[..]);

            let (host, stick) = duplex(1024);
            drop(stick);
            let err = ImstSession::start(host, StickKind::Iu891a, LinkMode::T1)
                .await
                .err()
                .unwrap();
            assert!(
                matches!(err, StickError::Io { .. } | StickError::Closed { .. }),
                "{err}"
            );
        }
    }
}
