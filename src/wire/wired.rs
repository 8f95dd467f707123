//! EN 13757-2 wired M-Bus link layer: parsing, building and stream resynchronisation.
//!
//! Four frame formats share the bus:
//!
//! | kind    | bytes                            | length |
//! |---------|----------------------------------|--------|
//! | ACK     | `E5`                             | 1      |
//! | short   | `10 C A CS 16`                   | 5      |
//! | control | `68 03 03 68 C A CI CS 16`       | 9      |
//! | long    | `68 L L 68 C A CI data… CS 16`   | L + 6  |
//!
//! CS is the 8-bit arithmetic sum of every byte from C up to the last data byte.
//!
//! Parsing is strict about framing (start, L fields, checksum, stop) but
//! deliberately lenient about the C field: meters in the field send values the
//! standard does not list, and rejecting them here would throw away telegrams
//! the application layer can still decode. [`ControlFunction`] classifies the
//! known values for callers that care.

use thiserror::Error;

/// Single-character acknowledgement, sent by a slave after SND_NKE / SND_UD.
pub const ACK: u8 = 0xE5;
/// Start byte of a short frame.
pub const SHORT_START: u8 = 0x10;
/// Start byte (twice) of a control or long frame.
pub const LONG_START: u8 = 0x68;
/// Stop byte of short, control and long frames.
pub const STOP: u8 = 0x16;

/// Most user-data bytes a long frame can carry: L is one byte and also counts C, A and CI.
pub const MAX_DATA_LEN: usize = u8::MAX as usize - 3;

/// Address of a slave that has not been given a primary address yet.
pub const ADDRESS_UNCONFIGURED: u8 = 0;
/// Highest primary address a slave can be given.
pub const ADDRESS_MAX_PRIMARY: u8 = 250;
/// Network-layer address: reaches the slave picked by a secondary-address selection.
pub const ADDRESS_NETWORK_LAYER: u8 = 0xFD;
/// Broadcast that every slave answers (only safe with a single slave on the bus).
pub const ADDRESS_BROADCAST_REPLY: u8 = 0xFE;
/// Broadcast that no slave answers.
pub const ADDRESS_BROADCAST_NO_REPLY: u8 = 0xFF;

/// C field: SND_NKE, link reset (the slave's FCB expectation is reset too).
pub const C_SND_NKE: u8 = 0x40;
/// C field: SND_UD, send user data to a slave (FCV set, FCB clear).
pub const C_SND_UD: u8 = 0x53;
/// C field: REQ_UD1, request class-1 (alarm) data (FCV set, FCB clear).
pub const C_REQ_UD1: u8 = 0x5A;
/// C field: REQ_UD2, request class-2 (meter) data (FCV set, FCB clear).
pub const C_REQ_UD2: u8 = 0x5B;
/// C field: RSP_UD, user data from a slave (ACD and DFC clear).
pub const C_RSP_UD: u8 = 0x08;

/// CI field: application reset.
pub const CI_APPLICATION_RESET: u8 = 0x50;
/// CI field: data send (master to slave), e.g. writing a new primary address.
pub const CI_DATA_SEND: u8 = 0x51;
/// CI field: select a slave by secondary address.
pub const CI_SELECT_SECONDARY: u8 = 0x52;
/// CI field of the baud-rate switch for 300 baud; faster rates follow consecutively.
const CI_BAUD_BASE: u8 = 0xB8;

/// Baud rates a slave can be switched to, in CI-code order starting at 0xB8.
pub const BAUD_RATES: [u32; 8] = [300, 600, 1200, 2400, 4800, 9600, 19200, 38400];

const PRM_BIT: u8 = 0x40;
const FCB_BIT: u8 = 0x20;
const FCV_BIT: u8 = 0x10;
const FUNCTION_MASK: u8 = 0x0F;

const SHORT_LEN: usize = 5;
/// `68 L L 68`: enough to know how long the rest of the frame is.
const LONG_HEADER_LEN: usize = 4;
/// Bytes of a long frame not counted by L: both starts, both L fields, CS and stop.
const LONG_OVERHEAD: usize = 6;
/// L counts C, A and CI, so anything smaller cannot be a frame.
const MIN_L: u8 = 3;

/// 8-bit arithmetic sum used as the link-layer checksum.
fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |sum, &b| sum.wrapping_add(b))
}

fn is_start_byte(byte: u8) -> bool {
    matches!(byte, ACK | SHORT_START | LONG_START)
}

/// Why a byte sequence is not a valid link-layer frame.
///
/// Offsets count from the first byte of the frame (its start byte is offset 0).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// No bytes at all.
    #[error("empty input: no frame bytes")]
    Empty,
    /// The first byte is not one of the three start bytes.
    #[error("invalid frame start 0x{byte:02X} at byte {offset} (expected 0xE5, 0x10 or 0x68)")]
    InvalidStart { offset: usize, byte: u8 },
    /// Fewer bytes than the frame needs. `needed` is the total length known so
    /// far: the header length while the L fields are still missing.
    #[error("frame is truncated: {needed} bytes needed, {have} present")]
    Truncated { needed: usize, have: usize },
    /// The two copies of L disagree; `offset` is that of the second copy.
    #[error(
        "L fields differ at byte {}/{offset}: 0x{first:02X} vs 0x{second:02X}",
        .offset.saturating_sub(1)
    )]
    LengthMismatch {
        offset: usize,
        first: u8,
        second: u8,
    },
    /// L is below 3, too small to hold C, A and CI.
    #[error("L field 0x{l:02X} at byte {offset} is too short (at least 0x03 for C, A and CI)")]
    LengthTooShort { offset: usize, l: u8 },
    /// The byte after the two L fields is not the second 0x68.
    #[error("wrong second start byte at byte {offset}: 0x{byte:02X} (expected 0x68)")]
    BadSecondStart { offset: usize, byte: u8 },
    /// `expected` is the checksum computed over the received bytes, `found` the CS byte the frame carries.
    #[error(
        "checksum mismatch at byte {offset}: frame says 0x{found:02X}, computed 0x{expected:02X}"
    )]
    Checksum {
        offset: usize,
        expected: u8,
        found: u8,
    },
    /// The last byte of the frame is not 0x16.
    #[error("wrong stop byte at offset {offset}: 0x{byte:02X} (expected 0x16)")]
    BadStop { offset: usize, byte: u8 },
    /// A valid frame ends at `offset` but `count` more bytes follow it.
    #[error("{count} unexpected byte(s) after the end of the frame at byte {offset}")]
    TrailingBytes { offset: usize, count: usize },
}

impl FrameError {
    /// Offset of the offending byte; for truncation that is the first missing byte.
    pub fn offset(&self) -> Option<usize> {
        match *self {
            FrameError::Empty => None,
            FrameError::Truncated { have, .. } => Some(have),
            FrameError::InvalidStart { offset, .. }
            | FrameError::LengthMismatch { offset, .. }
            | FrameError::LengthTooShort { offset, .. }
            | FrameError::BadSecondStart { offset, .. }
            | FrameError::Checksum { offset, .. }
            | FrameError::BadStop { offset, .. }
            | FrameError::TrailingBytes { offset, .. } => Some(offset),
        }
    }
}

/// A validated, borrowed view of one link-layer frame.
///
/// A `Long` frame with empty `data` encodes exactly like a `Control` frame;
/// parsing always reports such bytes as `Control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Frame<'a> {
    Ack,
    Short {
        control: u8,
        address: u8,
    },
    Control {
        control: u8,
        address: u8,
        ci: u8,
    },
    Long {
        control: u8,
        address: u8,
        ci: u8,
        data: &'a [u8],
    },
}

impl<'a> Frame<'a> {
    /// Parses exactly one whole frame; anything after it is an error, so a
    /// caller cannot silently lose bytes. Use [`scan`] to split a stream.
    pub fn parse(bytes: &'a [u8]) -> Result<Frame<'a>, FrameError> {
        let frame = match probe(bytes) {
            Probe::Found(frame) => frame,
            Probe::Bad(error) => return Err(error),
            Probe::NeedTotal(_) if bytes.is_empty() => return Err(FrameError::Empty),
            Probe::NeedTotal(needed) => {
                return Err(FrameError::Truncated {
                    needed,
                    have: bytes.len(),
                })
            }
        };
        let len = frame.encoded_len();
        if len < bytes.len() {
            return Err(FrameError::TrailingBytes {
                offset: len,
                count: bytes.len() - len,
            });
        }
        Ok(frame)
    }

    pub fn control(&self) -> Option<u8> {
        match *self {
            Frame::Ack => None,
            Frame::Short { control, .. }
            | Frame::Control { control, .. }
            | Frame::Long { control, .. } => Some(control),
        }
    }

    /// The C field with its bit accessors.
    pub fn control_field(&self) -> Option<ControlField> {
        self.control().map(ControlField)
    }

    pub fn address(&self) -> Option<u8> {
        match *self {
            Frame::Ack => None,
            Frame::Short { address, .. }
            | Frame::Control { address, .. }
            | Frame::Long { address, .. } => Some(address),
        }
    }

    pub fn ci(&self) -> Option<u8> {
        match *self {
            Frame::Ack | Frame::Short { .. } => None,
            Frame::Control { ci, .. } | Frame::Long { ci, .. } => Some(ci),
        }
    }

    /// User data after CI; empty for frames that carry none.
    pub fn data(&self) -> &'a [u8] {
        match *self {
            Frame::Long { data, .. } => data,
            _ => &[],
        }
    }

    /// Whether the PRM bit marks this as a request from the master.
    /// An ACK has no C field but only ever comes from a slave.
    pub fn is_master_to_slave(&self) -> bool {
        self.control_field().is_some_and(|c| c.prm())
    }

    pub fn encoded_len(&self) -> usize {
        match self {
            Frame::Ack => 1,
            Frame::Short { .. } => SHORT_LEN,
            Frame::Control { .. } => LONG_OVERHEAD + usize::from(MIN_L),
            Frame::Long { data, .. } => LONG_OVERHEAD + usize::from(MIN_L) + data.len(),
        }
    }

    /// Appends the encoded frame, computing L and the checksum.
    ///
    /// # Panics
    ///
    /// If a `Long` frame carries more than [`MAX_DATA_LEN`] bytes: such a frame
    /// cannot be expressed on the wire, and sending a silently shortened
    /// request would be worse than failing loudly on the programming error.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match *self {
            Frame::Ack => out.push(ACK),
            Frame::Short { control, address } => {
                out.extend_from_slice(&short_frame(control, address));
            }
            Frame::Control {
                control,
                address,
                ci,
            } => write_long(out, control, address, ci, &[]),
            Frame::Long {
                control,
                address,
                ci,
                data,
            } => {
                write_long(out, control, address, ci, data);
            }
        }
    }

    /// The encoded frame; see [`Frame::write_to`] for when this panics.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut out);
        out
    }
}

fn short_frame(control: u8, address: u8) -> [u8; SHORT_LEN] {
    [
        SHORT_START,
        control,
        address,
        control.wrapping_add(address),
        STOP,
    ]
}

fn write_long(out: &mut Vec<u8>, control: u8, address: u8, ci: u8, data: &[u8]) {
    let Some(l) = u8::try_from(data.len())
        .ok()
        .and_then(|n| n.checked_add(MIN_L))
    else {
        panic!(
            "long frame data is {} bytes, at most {MAX_DATA_LEN} fit",
            data.len()
        );
    };
    let header = [LONG_START, l, l, LONG_START, control, address, ci];
    let sum = checksum(&[control, address, ci]).wrapping_add(checksum(data));
    out.reserve(header.len() + data.len() + 2);
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out.extend_from_slice(&[sum, STOP]);
}

/// The C field, with accessors for its flag bits.
///
/// FCB/ACD and FCV/DFC share bits; which name applies depends on the direction
/// ([`ControlField::prm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ControlField(pub u8);

impl ControlField {
    /// Primary-message bit: set on master-to-slave frames.
    pub fn prm(self) -> bool {
        self.0 & PRM_BIT != 0
    }

    /// Frame count bit (master to slave); toggled per successful REQ_UD2/SND_UD.
    pub fn fcb(self) -> bool {
        self.0 & FCB_BIT != 0
    }

    /// Frame count bit valid (master to slave): whether the slave should honour FCB.
    pub fn fcv(self) -> bool {
        self.0 & FCV_BIT != 0
    }

    /// Access demand (slave to master): the slave has class-1 data waiting.
    pub fn acd(self) -> bool {
        self.0 & FCB_BIT != 0
    }

    /// Data flow control (slave to master): the slave cannot accept more data.
    pub fn dfc(self) -> bool {
        self.0 & FCV_BIT != 0
    }

    /// The function code in bits 3..0.
    pub fn function_code(self) -> u8 {
        self.0 & FUNCTION_MASK
    }

    pub fn function(self) -> ControlFunction {
        ControlFunction::from_control(self.0)
    }
}

/// Classification of the C-field values EN 13757-2 defines for wired M-Bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlFunction {
    SndNke,
    SndUd,
    ReqUd1,
    ReqUd2,
    RspUd,
    /// Any other value; kept rather than rejected (see the module docs).
    Unknown(u8),
}

impl ControlFunction {
    pub fn from_control(control: u8) -> ControlFunction {
        match control {
            0x40 => ControlFunction::SndNke,
            0x53 | 0x73 => ControlFunction::SndUd,
            0x5A | 0x7A => ControlFunction::ReqUd1,
            0x5B | 0x7B => ControlFunction::ReqUd2,
            0x08 | 0x18 | 0x28 | 0x38 => ControlFunction::RspUd,
            other => ControlFunction::Unknown(other),
        }
    }
}

/// SND_NKE: resets the link of the slave at `address`, which answers with an ACK.
pub fn snd_nke(address: u8) -> [u8; 5] {
    short_frame(C_SND_NKE, address)
}

/// REQ_UD2: asks the slave at `address` for its meter data.
///
/// FCV is always set; the caller toggles `fcb` after each answered request so a
/// slave can tell a repeat (lost answer) from a request for the next telegram.
pub fn req_ud2(address: u8, fcb: bool) -> [u8; 5] {
    let control = if fcb { C_REQ_UD2 | FCB_BIT } else { C_REQ_UD2 };
    short_frame(control, address)
}

/// Selects the slave whose secondary address matches `mask`
/// (ID as 4 BCD bytes LSB first, manufacturer 2 bytes, version, medium;
/// 0xF nibbles / 0xFF bytes are wildcards). The selected slave then answers
/// on [`ADDRESS_NETWORK_LAYER`].
pub fn select_secondary(mask: &[u8; 8]) -> Vec<u8> {
    Frame::Long {
        control: C_SND_UD | FCB_BIT,
        address: ADDRESS_NETWORK_LAYER,
        ci: CI_SELECT_SECONDARY,
        data: mask,
    }
    .to_bytes()
}

/// Writes a new primary address into the slave at `address`.
pub fn set_primary_address(address: u8, new_address: u8) -> Vec<u8> {
    // DIF 0x01 (8-bit integer), VIF 0x7A (bus address).
    let data = [0x01, 0x7A, new_address];
    Frame::Long {
        control: C_SND_UD,
        address,
        ci: CI_DATA_SEND,
        data: &data,
    }
    .to_bytes()
}

/// Switches the slave at `address` to `baud`; `None` if M-Bus has no code for that rate.
pub fn switch_baud(address: u8, baud: u32) -> Option<Vec<u8>> {
    let index = BAUD_RATES.iter().position(|&rate| rate == baud)?;
    let ci = CI_BAUD_BASE.checked_add(u8::try_from(index).ok()?)?;
    Some(
        Frame::Control {
            control: C_SND_UD,
            address,
            ci,
        }
        .to_bytes(),
    )
}

/// Application reset of the slave at `address`, optionally with a subcode
/// choosing what the slave should reset or send next.
pub fn application_reset(address: u8, subcode: Option<u8>) -> Vec<u8> {
    let (control, ci) = (C_SND_UD, CI_APPLICATION_RESET);
    match subcode {
        Some(code) => Frame::Long {
            control,
            address,
            ci,
            data: &[code],
        }
        .to_bytes(),
        None => Frame::Control {
            control,
            address,
            ci,
        }
        .to_bytes(),
    }
}

/// What [`scan`] found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// The buffer is a valid prefix; at least this many more bytes are needed (always ≥ 1).
    NeedMore(usize),
    /// A whole valid frame of this many bytes starts the buffer (always ≥ 1).
    Complete(usize),
    /// The start of the buffer is not a valid frame. Drop `skip` bytes (always
    /// ≥ 1): up to the next possible start byte after position 0, or all of it.
    Invalid { skip: usize, error: FrameError },
}

/// Looks for a frame at the start of `buf`, for callers reading a byte stream.
///
/// Header errors are reported as soon as the offending byte is present, so
/// line noise that happens to begin with 0x68 does not stall the reader
/// until a bogus L's worth of bytes has arrived.
pub fn scan(buf: &[u8]) -> Scan {
    match probe(buf) {
        Probe::NeedTotal(total) => Scan::NeedMore(total.saturating_sub(buf.len()).max(1)),
        Probe::Found(frame) => Scan::Complete(frame.encoded_len()),
        Probe::Bad(error) => Scan::Invalid {
            skip: resync_point(buf),
            error,
        },
    }
}

/// Index of the next byte after position 0 that could start a frame.
fn resync_point(buf: &[u8]) -> usize {
    buf.iter()
        .skip(1)
        .position(|&b| is_start_byte(b))
        .map_or(buf.len(), |p| p + 1)
        .max(1)
}

/// Outcome of examining a buffer prefix; shared by [`Frame::parse`] and [`scan`]
/// so that both apply exactly the same rules.
enum Probe<'a> {
    /// Valid so far; the frame is at least this many bytes in total.
    NeedTotal(usize),
    Found(Frame<'a>),
    Bad(FrameError),
}

fn probe(buf: &[u8]) -> Probe<'_> {
    match buf.first() {
        None => Probe::NeedTotal(1),
        Some(&ACK) => Probe::Found(Frame::Ack),
        Some(&SHORT_START) => probe_short(buf),
        Some(&LONG_START) => probe_long(buf),
        Some(&byte) => Probe::Bad(FrameError::InvalidStart { offset: 0, byte }),
    }
}

fn probe_short(buf: &[u8]) -> Probe<'_> {
    let &[_, control, address, cs, stop, ..] = buf else {
        return Probe::NeedTotal(SHORT_LEN);
    };
    let sum = control.wrapping_add(address);
    match check_trailer(sum, SHORT_LEN - 2, cs, stop) {
        Ok(()) => Probe::Found(Frame::Short { control, address }),
        Err(error) => Probe::Bad(error),
    }
}

fn probe_long(buf: &[u8]) -> Probe<'_> {
    let Some(&l) = buf.get(1) else {
        return Probe::NeedTotal(LONG_HEADER_LEN);
    };
    if l < MIN_L {
        return Probe::Bad(FrameError::LengthTooShort { offset: 1, l });
    }
    let Some(&second) = buf.get(2) else {
        return Probe::NeedTotal(LONG_HEADER_LEN);
    };
    if second != l {
        return Probe::Bad(FrameError::LengthMismatch {
            offset: 2,
            first: l,
            second,
        });
    }
    let Some(&start) = buf.get(3) else {
        return Probe::NeedTotal(LONG_HEADER_LEN);
    };
    if start != LONG_START {
        return Probe::Bad(FrameError::BadSecondStart {
            offset: 3,
            byte: start,
        });
    }

    let total = usize::from(l) + LONG_OVERHEAD;
    // The pattern cannot fail once `total` bytes are there (total ≥ 9), but
    // falling back to "need more" keeps this free of panicking paths.
    let Some(&[_, _, _, _, control, address, ci, ref data @ .., cs, stop]) = buf.get(..total)
    else {
        return Probe::NeedTotal(total);
    };
    let sum = checksum(&[control, address, ci]).wrapping_add(checksum(data));
    if let Err(error) = check_trailer(sum, total - 2, cs, stop) {
        return Probe::Bad(error);
    }
    Probe::Found(if data.is_empty() {
        Frame::Control {
            control,
            address,
            ci,
        }
    } else {
        Frame::Long {
            control,
            address,
            ci,
            data,
        }
    })
}

/// Checks the stop byte before the checksum: a wrong stop byte usually means
/// the frame boundaries are wrong, which also explains any checksum mismatch
/// and is the more useful thing to report.
fn check_trailer(sum: u8, cs_offset: usize, cs: u8, stop: u8) -> Result<(), FrameError> {
    if stop != STOP {
        return Err(FrameError::BadStop {
            offset: cs_offset + 1,
            byte: stop,
        });
    }
    if cs != sum {
        return Err(FrameError::Checksum {
            offset: cs_offset,
            expected: sum,
            found: cs,
        });
    }
    Ok(())
}

/// Reassembles frames from bytes arriving in arbitrary pieces.
///
/// Partial frames stay buffered across [`FrameReader::push`] calls; garbage
/// and broken frames are dropped up to the next possible start byte and
/// reported once each, in stream order.
#[derive(Debug, Clone, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame or error, or `None` if more bytes are needed.
    ///
    /// Call repeatedly until `None`: one push may complete several frames.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        match scan(&self.buf) {
            Scan::NeedMore(_) => None,
            Scan::Complete(len) => Some(Ok(self.take(len))),
            Scan::Invalid { skip, error } => {
                self.take(skip);
                Some(Err(error))
            }
        }
    }

    /// Bytes buffered but not yet returned (a partial frame, usually).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Drops buffered bytes, e.g. after a bus timeout makes a partial frame stale.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    fn take(&mut self, len: usize) -> Vec<u8> {
        let len = len.min(self.buf.len());
        self.buf.drain(..len).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).expect("test vector is hex"))
            .collect()
    }

    /// Real RSP_UD from the libmbus test corpus.
    const LIBMBUS_RSP_UD: &str = "68 1F 1F 68 08 00 72 31 77 67 17 2D 2C 01 02 00 00 00 00 \
        2F 2F 04 83 3B 88 13 00 00 2F 2F 2F 2F 2F 2F 2F 00 16";

    const SELECT_MASK: [u8; 8] = [0x0F, 0x57, 0x02, 0x00, 0xFF, 0xFF, 0xFF, 0xFF];

    #[test]
    fn snd_nke_vector() {
        assert_eq!(snd_nke(0xFD).to_vec(), hex("10 40 FD 3D 16"));
    }

    #[test]
    fn req_ud2_vectors() {
        assert_eq!(req_ud2(5, false).to_vec(), hex("10 5B 05 60 16"));
        assert_eq!(req_ud2(5, true).to_vec(), hex("10 7B 05 80 16"));
    }

    #[test]
    fn set_primary_address_vector() {
        assert_eq!(
            set_primary_address(5, 7),
            hex("68 06 06 68 53 05 51 01 7A 07 2B 16")
        );
    }

    #[test]
    fn switch_baud_vector_and_all_rates() {
        assert_eq!(
            switch_baud(5, 9600),
            Some(hex("68 03 03 68 53 05 BD 15 16"))
        );
        for (code, &rate) in (0xB8u8..).zip(BAUD_RATES.iter()) {
            let bytes = switch_baud(5, rate).expect("standard rate");
            let frame = Frame::parse(&bytes).expect("builder output parses");
            assert_eq!(
                frame,
                Frame::Control {
                    control: 0x53,
                    address: 5,
                    ci: code
                }
            );
        }
    }

    #[test]
    fn switch_baud_rejects_nonstandard_rates() {
        for rate in [0, 110, 2399, 14400, 57600, 115_200] {
            assert_eq!(switch_baud(5, rate), None, "{rate} baud");
        }
    }

    #[test]
    fn select_secondary_vector() {
        assert_eq!(
            select_secondary(&SELECT_MASK),
            hex("68 0B 0B 68 73 FD 52 0F 57 02 00 FF FF FF FF 26 16")
        );
    }

    #[test]
    fn application_reset_vectors() {
        assert_eq!(
            application_reset(5, None),
            hex("68 03 03 68 53 05 50 A8 16")
        );
        assert_eq!(
            application_reset(5, Some(0x10)),
            hex("68 04 04 68 53 05 50 10 B8 16")
        );
    }

    #[test]
    fn builders_round_trip_through_parse() {
        let frames: Vec<Vec<u8>> = vec![
            snd_nke(1).to_vec(),
            req_ud2(250, true).to_vec(),
            select_secondary(&SELECT_MASK),
            set_primary_address(0, 42),
            application_reset(3, Some(0)),
        ];
        for bytes in frames {
            let frame = Frame::parse(&bytes).expect("builder output parses");
            assert!(frame.is_master_to_slave(), "{bytes:02X?}");
            assert_eq!(frame.to_bytes(), bytes);
            assert_eq!(scan(&bytes), Scan::Complete(bytes.len()));
        }
    }

    #[test]
    fn parse_ack() {
        let frame = Frame::parse(&[0xE5]).expect("valid");
        assert_eq!(frame, Frame::Ack);
        assert_eq!(
            (frame.control(), frame.address(), frame.ci()),
            (None, None, None)
        );
        assert!(!frame.is_master_to_slave());
        assert_eq!(frame.encoded_len(), 1);
        assert_eq!(frame.to_bytes(), vec![0xE5]);
    }

    #[test]
    fn parse_short() {
        let bytes = hex("10 7B 05 80 16");
        let frame = Frame::parse(&bytes).expect("valid");
        assert_eq!(
            frame,
            Frame::Short {
                control: 0x7B,
                address: 5
            }
        );
        assert_eq!(
            (frame.control(), frame.address(), frame.ci()),
            (Some(0x7B), Some(5), None)
        );
        assert!(frame.is_master_to_slave());
        assert_eq!(frame.encoded_len(), 5);
    }

    #[test]
    fn parse_control() {
        let bytes = hex("68 03 03 68 53 05 BD 15 16");
        let frame = Frame::parse(&bytes).expect("valid");
        assert_eq!(
            frame,
            Frame::Control {
                control: 0x53,
                address: 5,
                ci: 0xBD
            }
        );
        assert_eq!(frame.ci(), Some(0xBD));
        assert!(frame.data().is_empty());
        assert_eq!(frame.encoded_len(), 9);
    }

    #[test]
    fn parse_long_from_libmbus_corpus() {
        let bytes = hex(LIBMBUS_RSP_UD);
        let frame = Frame::parse(&bytes).expect("valid");
        let Frame::Long {
            control,
            address,
            ci,
            data,
        } = frame
        else {
            panic!("expected a long frame, got {frame:?}");
        };
        assert_eq!((control, address, ci), (0x08, 0x00, 0x72));
        assert_eq!(data.len(), 28);
        assert_eq!(data.first(), Some(&0x31));
        assert_eq!(data.last(), Some(&0x2F));
        assert!(!frame.is_master_to_slave());
        assert_eq!(
            ControlFunction::from_control(control),
            ControlFunction::RspUd
        );
        assert_eq!(frame.encoded_len(), bytes.len());
        assert_eq!(frame.to_bytes(), bytes);
    }

    #[test]
    fn unknown_control_values_are_accepted() {
        // 0x44 is SND_NR in wireless M-Bus, not a wired function; still parse it.
        let bytes = Frame::Short {
            control: 0x44,
            address: 1,
        }
        .to_bytes();
        let frame = Frame::parse(&bytes).expect("lenient about C");
        assert_eq!(
            frame.control_field().map(ControlField::function),
            Some(ControlFunction::Unknown(0x44))
        );
    }

    #[test]
    fn control_function_table() {
        let cases = [
            (0x40, ControlFunction::SndNke),
            (0x53, ControlFunction::SndUd),
            (0x73, ControlFunction::SndUd),
            (0x5A, ControlFunction::ReqUd1),
            (0x7A, ControlFunction::ReqUd1),
            (0x5B, ControlFunction::ReqUd2),
            (0x7B, ControlFunction::ReqUd2),
            (0x08, ControlFunction::RspUd),
            (0x18, ControlFunction::RspUd),
            (0x28, ControlFunction::RspUd),
            (0x38, ControlFunction::RspUd),
            (0x00, ControlFunction::Unknown(0x00)),
            (0x4B, ControlFunction::Unknown(0x4B)),
        ];
        for (c, expected) in cases {
            assert_eq!(ControlFunction::from_control(c), expected, "C = {c:#04x}");
        }
    }

    #[test]
    fn control_field_bits() {
        let req = ControlField(0x7B);
        assert!(req.prm() && req.fcb() && req.fcv());
        assert_eq!(req.function_code(), 0x0B);
        assert!(!ControlField(0x5B).fcb());

        let rsp = ControlField(0x38);
        assert!(!rsp.prm() && rsp.acd() && rsp.dfc());
        assert_eq!(rsp.function(), ControlFunction::RspUd);
        let quiet = ControlField(0x08);
        assert!(!quiet.acd() && !quiet.dfc());
    }

    /// Parses `bytes`, checks the error and its offset, and returns its message.
    fn parse_error(bytes: &[u8], expected: FrameError, offset: Option<usize>) -> String {
        let error = Frame::parse(bytes).expect_err("must be rejected");
        assert_eq!(error, expected);
        assert_eq!(error.offset(), offset);
        error.to_string()
    }

    #[test]
    fn error_empty() {
        let msg = parse_error(&[], FrameError::Empty, None);
        assert_eq!(msg, "empty input: no frame bytes");
    }

    #[test]
    fn error_invalid_start() {
        let msg = parse_error(
            &[0x55, 0xE5],
            FrameError::InvalidStart {
                offset: 0,
                byte: 0x55,
            },
            Some(0),
        );
        assert_eq!(
            msg,
            "invalid frame start 0x55 at byte 0 (expected 0xE5, 0x10 or 0x68)"
        );
    }

    #[test]
    fn error_truncated() {
        let full = hex(LIBMBUS_RSP_UD);
        let msg = parse_error(
            full.get(..20).expect("long enough"),
            FrameError::Truncated {
                needed: 37,
                have: 20,
            },
            Some(20),
        );
        assert_eq!(msg, "frame is truncated: 37 bytes needed, 20 present");

        parse_error(
            &[0x10, 0x5B],
            FrameError::Truncated { needed: 5, have: 2 },
            Some(2),
        );
        // Until both L fields and the second start are in, only the header length is known.
        parse_error(
            &[0x68, 0x1F],
            FrameError::Truncated { needed: 4, have: 2 },
            Some(2),
        );
    }

    #[test]
    fn error_length_mismatch() {
        let msg = parse_error(
            &hex("68 1F 20 68"),
            FrameError::LengthMismatch {
                offset: 2,
                first: 0x1F,
                second: 0x20,
            },
            Some(2),
        );
        assert_eq!(msg, "L fields differ at byte 1/2: 0x1F vs 0x20");
    }

    #[test]
    fn error_length_too_short() {
        let msg = parse_error(
            &hex("68 02 02 68 53 05 16"),
            FrameError::LengthTooShort { offset: 1, l: 0x02 },
            Some(1),
        );
        assert_eq!(
            msg,
            "L field 0x02 at byte 1 is too short (at least 0x03 for C, A and CI)"
        );
    }

    #[test]
    fn error_bad_second_start() {
        let msg = parse_error(
            &hex("68 03 03 69 53 05 BD 15 16"),
            FrameError::BadSecondStart {
                offset: 3,
                byte: 0x69,
            },
            Some(3),
        );
        assert_eq!(
            msg,
            "wrong second start byte at byte 3: 0x69 (expected 0x68)"
        );
    }

    #[test]
    fn error_checksum() {
        // A data byte (0x01) was added without updating CS at byte 11.
        let msg = parse_error(
            &hex("68 07 07 68 53 05 51 01 7A 07 01 3D 16"),
            FrameError::Checksum {
                offset: 11,
                expected: 0x2C,
                found: 0x3D,
            },
            Some(11),
        );
        assert_eq!(
            msg,
            "checksum mismatch at byte 11: frame says 0x3D, computed 0x2C"
        );

        parse_error(
            &hex("10 5B 05 61 16"),
            FrameError::Checksum {
                offset: 3,
                expected: 0x60,
                found: 0x61,
            },
            Some(3),
        );
    }

    #[test]
    fn error_bad_stop() {
        let mut bytes = hex(LIBMBUS_RSP_UD);
        if let Some(last) = bytes.last_mut() {
            *last = 0x17;
        }
        let msg = parse_error(
            &bytes,
            FrameError::BadStop {
                offset: 36,
                byte: 0x17,
            },
            Some(36),
        );
        assert_eq!(msg, "wrong stop byte at offset 36: 0x17 (expected 0x16)");

        parse_error(
            &hex("10 5B 05 60 00"),
            FrameError::BadStop {
                offset: 4,
                byte: 0x00,
            },
            Some(4),
        );
    }

    #[test]
    fn error_trailing_bytes() {
        let msg = parse_error(
            &hex("10 5B 05 60 16 E5 E5"),
            FrameError::TrailingBytes {
                offset: 5,
                count: 2,
            },
            Some(5),
        );
        assert_eq!(
            msg,
            "2 unexpected byte(s) after the end of the frame at byte 5"
        );
    }

    #[test]
    fn scan_reports_progress_per_byte() {
        assert_eq!(scan(&[]), Scan::NeedMore(1));
        assert_eq!(scan(&[0xE5, 0x00]), Scan::Complete(1));
        assert_eq!(scan(&[0x10]), Scan::NeedMore(4));
        assert_eq!(scan(&hex("10 5B 05 60")), Scan::NeedMore(1));
        assert_eq!(scan(&[0x68]), Scan::NeedMore(3));
        assert_eq!(scan(&hex("68 1F 1F")), Scan::NeedMore(1));
        assert_eq!(scan(&hex("68 1F 1F 68")), Scan::NeedMore(33));
        assert_eq!(
            scan(&hex("68 01")),
            Scan::Invalid {
                skip: 2,
                error: FrameError::LengthTooShort { offset: 1, l: 1 }
            }
        );
    }

    #[test]
    fn scan_skips_to_next_candidate_start() {
        assert_eq!(
            scan(&hex("00 01 02 10 5B")),
            Scan::Invalid {
                skip: 3,
                error: FrameError::InvalidStart { offset: 0, byte: 0 }
            }
        );
        assert_eq!(
            scan(&hex("00 01 02")),
            Scan::Invalid {
                skip: 3,
                error: FrameError::InvalidStart { offset: 0, byte: 0 }
            }
        );
        // A broken frame is dropped only up to the next start byte inside it, so
        // a real frame hiding behind a corrupted start is not lost.
        assert_eq!(
            scan(&hex("10 5B 05 E5 16")),
            Scan::Invalid {
                skip: 3,
                error: FrameError::Checksum {
                    offset: 3,
                    expected: 0x60,
                    found: 0xE5
                }
            }
        );
    }

    /// What [`FrameReader::next_frame`] yields.
    type ReadItem = Result<Vec<u8>, FrameError>;

    /// Bytes fed to the reader in the stream test, and what it must produce.
    fn stream_fixture() -> (Vec<Vec<u8>>, Vec<ReadItem>) {
        let garbage = hex("00 FF 42");
        let ack = vec![ACK];
        let short = req_ud2(5, false).to_vec();
        let long = hex(LIBMBUS_RSP_UD);
        let bad = hex("68 06 06 68 53 05 51 01 7A 07 2C 16");
        let other = select_secondary(&SELECT_MASK);
        let expected = vec![
            Err(FrameError::InvalidStart {
                offset: 0,
                byte: 0x00,
            }),
            Ok(ack.clone()),
            Ok(short.clone()),
            Ok(long.clone()),
            Err(FrameError::Checksum {
                offset: 10,
                expected: 0x2B,
                found: 0x2C,
            }),
            // Resync lands on the broken frame's second 0x68, whose "L fields"
            // (C and A) disagree; that costs one more error before the next frame.
            Err(FrameError::LengthMismatch {
                offset: 2,
                first: 0x53,
                second: 0x05,
            }),
            Ok(other.clone()),
        ];
        (vec![garbage, ack, short, long, bad, other], expected)
    }

    fn drain(reader: &mut FrameReader, out: &mut Vec<ReadItem>) {
        while let Some(item) = reader.next_frame() {
            out.push(item);
        }
    }

    #[test]
    fn reader_handles_mixed_stream() {
        let (parts, expected) = stream_fixture();
        let [garbage, ack, short, long, bad, other] = parts.as_slice() else {
            panic!("fixture has six parts");
        };
        let mut reader = FrameReader::new();
        let mut got = Vec::new();

        reader.push(&[garbage.as_slice(), ack, short].concat());
        drain(&mut reader, &mut got);
        assert_eq!(reader.pending(), 0);

        for (i, byte) in long.iter().enumerate() {
            reader.push(&[*byte]);
            let item = reader.next_frame();
            if i + 1 < long.len() {
                assert_eq!(item, None, "frame must not complete at byte {i}");
                assert_eq!(reader.pending(), i + 1);
            } else {
                got.extend(item);
            }
        }

        reader.push(&[bad.as_slice(), other].concat());
        drain(&mut reader, &mut got);

        assert_eq!(got, expected);
        assert_eq!(reader.pending(), 0);
        assert_eq!(reader.next_frame(), None);
    }

    #[test]
    fn reader_frames_do_not_depend_on_chunking() {
        let (parts, expected) = stream_fixture();
        let stream = parts.concat();
        let want: Vec<_> = expected.into_iter().filter_map(Result::ok).collect();
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        for _ in 0..200 {
            let mut reader = FrameReader::new();
            let mut got = Vec::new();
            let mut rest = stream.as_slice();
            while !rest.is_empty() {
                let n = (rng.below(8) + 1).min(rest.len());
                let (chunk, tail) = rest.split_at(n);
                reader.push(chunk);
                drain(&mut reader, &mut got);
                rest = tail;
            }
            let frames: Vec<_> = got.into_iter().filter_map(Result::ok).collect();
            assert_eq!(frames, want);
            assert_eq!(reader.pending(), 0);
        }
    }

    #[test]
    fn reader_clear_drops_partial_frame() {
        let mut reader = FrameReader::new();
        reader.push(&hex("68 1F 1F 68 08"));
        assert_eq!(reader.next_frame(), None);
        assert_eq!(reader.pending(), 5);
        reader.clear();
        assert_eq!(reader.pending(), 0);
        reader.push(&[ACK]);
        assert_eq!(reader.next_frame(), Some(Ok(vec![ACK])));
    }

    #[test]
    #[should_panic(expected = "at most 252 fit")]
    fn oversized_long_frame_panics_when_encoded() {
        let data = [0u8; MAX_DATA_LEN + 1];
        let _ = Frame::Long {
            control: 0x53,
            address: 1,
            ci: 0x51,
            data: &data,
        }
        .to_bytes();
    }

    #[test]
    fn largest_long_frame_round_trips() {
        let data: Vec<u8> = (0..=u8::MAX).take(MAX_DATA_LEN).collect();
        let bytes = Frame::Long {
            control: 0x08,
            address: 1,
            ci: 0x72,
            data: &data,
        }
        .to_bytes();
        assert_eq!(bytes.len(), 255 + 6);
        assert_eq!(bytes.get(1..3), Some(&[0xFF, 0xFF][..]));
        assert_eq!(Frame::parse(&bytes).map(|f| f.data()), Ok(&data[..]));
    }

    /// Marsaglia xorshift64: deterministic, dependency-free noise for the fuzz-style tests.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn byte(&mut self) -> u8 {
            self.next().to_le_bytes()[0]
        }
    }

    /// The contract of [`scan`], and its agreement with [`Frame::parse`], for one buffer.
    fn check_invariants(buf: &[u8]) -> Scan {
        let scanned = scan(buf);
        let parsed = Frame::parse(buf);
        if let Err(error) = &parsed {
            assert!(!error.to_string().is_empty());
        }
        match &scanned {
            Scan::NeedMore(n) => {
                assert!(*n >= 1, "{buf:02X?}");
                assert!(buf.len() + n <= 255 + LONG_OVERHEAD, "{buf:02X?}");
                let expected_kind = if buf.is_empty() {
                    matches!(parsed, Err(FrameError::Empty))
                } else {
                    matches!(parsed, Err(FrameError::Truncated { .. }))
                };
                assert!(expected_kind, "{buf:02X?}: {parsed:?}");
            }
            Scan::Complete(n) => {
                assert!((1..=buf.len()).contains(n), "{buf:02X?}");
                let (head, tail) = buf.split_at(*n);
                let frame = Frame::parse(head).expect("Complete means parseable");
                assert_eq!(frame.encoded_len(), *n);
                assert_eq!(frame.to_bytes(), head);
                if tail.is_empty() {
                    assert_eq!(parsed, Ok(frame));
                } else {
                    let trailing = FrameError::TrailingBytes {
                        offset: *n,
                        count: tail.len(),
                    };
                    assert_eq!(parsed, Err(trailing));
                }
            }
            Scan::Invalid { skip, error } => {
                assert!((1..=buf.len()).contains(skip), "{buf:02X?}");
                let skipped = &buf[1..*skip];
                assert!(!skipped.iter().any(|&b| is_start_byte(b)), "{buf:02X?}");
                if let Some(&next) = buf.get(*skip) {
                    assert!(is_start_byte(next), "{buf:02X?}");
                }
                assert_eq!(parsed.as_ref(), Err(error), "{buf:02X?}");
            }
        }
        scanned
    }

    /// Stable name of a scan outcome, to check the random inputs reach every branch.
    fn outcome_kind(scan: &Scan) -> &'static str {
        match scan {
            Scan::NeedMore(_) => "need more",
            Scan::Complete(_) => "complete",
            Scan::Invalid { error, .. } => match error {
                FrameError::Empty => "empty",
                FrameError::InvalidStart { .. } => "invalid start",
                FrameError::Truncated { .. } => "truncated",
                FrameError::LengthMismatch { .. } => "length mismatch",
                FrameError::LengthTooShort { .. } => "length too short",
                FrameError::BadSecondStart { .. } => "bad second start",
                FrameError::Checksum { .. } => "checksum",
                FrameError::BadStop { .. } => "bad stop",
                FrameError::TrailingBytes { .. } => "trailing bytes",
            },
        }
    }

    /// Feeds `buf` in random pieces and checks the reader always makes progress.
    fn check_reader(buf: &[u8], rng: &mut XorShift) {
        let mut reader = FrameReader::new();
        let mut rest = buf;
        let mut frame_bytes = 0;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at((rng.below(16) + 1).min(rest.len()));
            reader.push(chunk);
            let before = reader.pending();
            while let Some(item) = reader.next_frame() {
                if let Ok(frame) = item {
                    assert!(Frame::parse(&frame).is_ok());
                    frame_bytes += frame.len();
                }
            }
            assert!(reader.pending() <= before);
            rest = tail;
        }
        assert!(frame_bytes + reader.pending() <= buf.len());
    }

    #[test]
    fn brute_force_small_alphabet() {
        const ALPHABET: [u8; 6] = [0x00, 0x03, 0x10, 0x16, 0x68, 0xE5];
        let mut buf = Vec::with_capacity(6);
        for len in 0..=6u32 {
            for mut code in 0..ALPHABET.len().pow(len) {
                buf.clear();
                for _ in 0..len {
                    buf.extend(ALPHABET.get(code % ALPHABET.len()));
                    code /= ALPHABET.len();
                }
                check_invariants(&buf);
            }
        }
    }

    #[test]
    fn brute_force_random_buffers() {
        const ALPHABET: [u8; 6] = [0x00, 0x03, 0x10, 0x16, 0x68, 0xE5];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20_000 {
            let buf: Vec<u8> = match rng.below(3) {
                0 => (0..rng.below(64)).map(|_| rng.byte()).collect(),
                1 => (0..rng.below(64))
                    .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                    .collect(),
                // Valid frames with a few corrupted bytes reach the checksum and stop checks.
                _ => {
                    let data: Vec<u8> = (0..rng.below(40)).map(|_| rng.byte()).collect();
                    let frame = match rng.below(4) {
                        0 => Frame::Ack,
                        1 => Frame::Short {
                            control: rng.byte(),
                            address: rng.byte(),
                        },
                        2 => Frame::Control {
                            control: rng.byte(),
                            address: rng.byte(),
                            ci: rng.byte(),
                        },
                        _ => Frame::Long {
                            control: rng.byte(),
                            address: rng.byte(),
                            ci: rng.byte(),
                            data: &data,
                        },
                    };
                    let mut bytes = frame.to_bytes();
                    for _ in 0..rng.below(3) {
                        let i = rng.below(bytes.len());
                        bytes[i] = rng.byte();
                    }
                    match rng.below(4) {
                        0 => bytes.truncate(rng.below(bytes.len())),
                        1 => bytes.push(rng.byte()),
                        _ => {}
                    }
                    bytes
                }
            };
            seen.insert(outcome_kind(&check_invariants(&buf)));
            check_reader(&buf, &mut rng);
        }
        // scan never reports Empty, Truncated or TrailingBytes; everything else must occur.
        let want = [
            "need more",
            "complete",
            "invalid start",
            "length mismatch",
            "length too short",
            "bad second start",
            "checksum",
            "bad stop",
        ];
        for kind in want {
            assert!(seen.contains(kind), "random inputs never produced {kind}");
        }
    }
}
