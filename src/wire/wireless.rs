//! EN 13757-4 wireless M-Bus data link layer: block CRCs of frame formats A and B, and the
//! 10-byte DLL header `L C M(2) A(6)`.
//!
//! Receivers disagree on what they hand over: most strip the block CRCs in firmware, a few
//! (CUL, raw SDR dumps) pass them through, and rtl-wmbus rewrites L. [`strip_dll_crcs`] takes
//! any of these and returns the one form the rest of the stack works on: `L C M A CI …`
//! without CRCs and with `L == bytes.len() - 1`.
//!
//! | | format A | format B |
//! |---|---|---|
//! | L counts | bytes after L, CRCs excluded | bytes after L, CRCs included |
//! | CRC blocks | 10 bytes, then 16 each, last one shorter | bytes 0..126, then the rest (if any) |
//!
//! Block CRCs are CRC-16/EN-13757, sent most significant byte first.

use std::fmt;

use thiserror::Error;

use crate::wire::application::IdentificationNumber;
use crate::wire::crc::crc16_en13757;
use crate::wire::manufacturer::Manufacturer;
use crate::wire::medium::Medium;

/// `L C M(2) A(6)`: where the CI field of the next layer sits.
pub const HEADER_LEN: usize = 10;

const CRC_LEN: usize = 2;
const FORMAT_A_FIRST_BLOCK: usize = HEADER_LEN;
const FORMAT_A_BLOCK: usize = 16;
/// Format B: one CRC protects blocks 1 and 2 together, which end here.
const FORMAT_B_FIRST_PART: usize = 126;
/// Format B frames up to this length carry a single CRC at the end.
const FORMAT_B_SINGLE_CRC_MAX: usize = FORMAT_B_FIRST_PART + CRC_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameFormat {
    A,
    B,
}

impl fmt::Display for FrameFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameFormat::A => "A",
            FrameFormat::B => "B",
        })
    }
}

/// Why a wireless telegram was rejected at the data link layer. Offsets count from L (offset 0)
/// of the bytes given to the function that failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DllError {
    #[error("telegram too short: {needed} bytes needed, {have} present")]
    TooShort { needed: usize, have: usize },
    /// Neither the CRC-less length (`L + 1`) nor format A's length with CRCs fits.
    #[error(
        "L field says 0x{l:02X} ({l} bytes follow) but {} bytes follow \
         (with or without data-link CRCs)",
        .len.saturating_sub(1)
    )]
    LengthMismatch { l: u8, len: usize },
    /// `block` is 1-based as in EN 13757-4; for format B the first CRC closes block 2 (it
    /// covers blocks 1 and 2) and the second closes block 3.
    #[error(
        "format {format} block {block}: CRC at byte {offset} is 0x{stored:04X}, \
         computed 0x{computed:04X}"
    )]
    BadCrc {
        format: FrameFormat,
        block: usize,
        offset: usize,
        stored: u16,
        computed: u16,
    },
}

impl DllError {
    /// The offending byte; for truncation the first missing one.
    pub fn offset(&self) -> usize {
        match *self {
            DllError::TooShort { have, .. } => have,
            DllError::LengthMismatch { .. } => 0,
            DllError::BadCrc { offset, .. } => offset,
        }
    }
}

/// A telegram with its data-link CRCs removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stripped {
    /// `L C M A CI …`; L always equals `bytes.len() - 1`.
    pub bytes: Vec<u8>,
    /// The layout the CRCs were found in; `None` if the input had none.
    pub crcs: Option<FrameFormat>,
}

/// Checks and removes the block CRCs of a whole telegram (starting at L), whichever frame
/// format it uses, or passes a telegram without CRCs through unchanged.
///
/// Format B and a CRC-less telegram have the same length (`L + 1`), so the length alone
/// cannot tell them apart: such a telegram counts as format B only if its CRCs check out.
/// Telegrams longer than 128 bytes carry two format B CRCs; if exactly one matches, the
/// telegram is taken to be a damaged format B frame ([`DllError::BadCrc`]) because a CRC-less
/// telegram matches one by chance only once in 65536. A damaged short format B frame (one
/// CRC) cannot be told from CRC-less data and is passed through; the layers above then fail.
pub fn strip_dll_crcs(frame: &[u8]) -> Result<Stripped, DllError> {
    let Some(&l) = frame.first() else {
        return Err(DllError::TooShort { needed: 1, have: 0 });
    };
    let len = frame.len();
    let data_len = usize::from(l) + 1;

    if let Some(blocks) = format_a_block_count(l) {
        if len == data_len + CRC_LEN * blocks {
            return strip_format_a(frame, data_len).map(|bytes| Stripped {
                bytes,
                crcs: Some(FrameFormat::A),
            });
        }
    }
    if len != data_len {
        return Err(DllError::LengthMismatch { l, len });
    }
    if let Some(bytes) = strip_format_b(frame)? {
        return Ok(Stripped {
            bytes,
            crcs: Some(FrameFormat::B),
        });
    }
    Ok(Stripped {
        bytes: frame.to_vec(),
        crcs: None,
    })
}

/// The sender's side of [`strip_dll_crcs`]: `data` (`L C M A CI …`, no CRCs) with its block CRCs
/// in `format` and L set to match (format B's L counts its CRCs). `None` if `data` is empty or L
/// would not fit in a byte. Simulators use it to produce what CUL sticks and SDRs hand over.
pub fn add_dll_crcs(data: &[u8], format: FrameFormat) -> Option<Vec<u8>> {
    if data.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() + 40);
    let push_block = |out: &mut Vec<u8>, block: &[u8]| {
        out.extend_from_slice(block);
        out.extend_from_slice(&crc16_en13757(block).to_be_bytes());
    };
    let mut d = data.to_vec();
    match format {
        FrameFormat::A => {
            d[0] = u8::try_from(data.len() - 1).ok()?;
            let (first, rest) = d.split_at(d.len().min(FORMAT_A_FIRST_BLOCK));
            push_block(&mut out, first);
            for block in rest.chunks(FORMAT_A_BLOCK) {
                push_block(&mut out, block);
            }
        }
        FrameFormat::B => {
            let crcs = if data.len() <= FORMAT_B_FIRST_PART {
                1
            } else {
                2
            };
            d[0] = u8::try_from(data.len() + CRC_LEN * crcs - 1).ok()?;
            let (first, rest) = d.split_at(d.len().min(FORMAT_B_FIRST_PART));
            push_block(&mut out, first);
            if !rest.is_empty() {
                push_block(&mut out, rest);
            }
        }
    }
    Some(out)
}

/// Number of CRC blocks a format A telegram with this L has; `None` if L cannot even cover
/// the header (so the telegram cannot be format A).
fn format_a_block_count(l: u8) -> Option<usize> {
    let after_first = (usize::from(l) + 1).checked_sub(FORMAT_A_FIRST_BLOCK)?;
    Some(1 + after_first.div_ceil(FORMAT_A_BLOCK))
}

/// Verifies the CRC after `frame[start..start + data_len]` and returns the data.
fn checked_block(
    frame: &[u8],
    start: usize,
    data_len: usize,
    format: FrameFormat,
    block: usize,
) -> Result<&[u8], DllError> {
    let crc_at = start + data_len;
    let (Some(data), Some(&[hi, lo])) = (
        frame.get(start..crc_at),
        frame.get(crc_at..crc_at + CRC_LEN),
    ) else {
        return Err(DllError::TooShort {
            needed: crc_at + CRC_LEN,
            have: frame.len(),
        });
    };
    let stored = u16::from_be_bytes([hi, lo]);
    let computed = crc16_en13757(data);
    if stored != computed {
        return Err(DllError::BadCrc {
            format,
            block,
            offset: crc_at,
            stored,
            computed,
        });
    }
    Ok(data)
}

/// `data_len` is `L + 1`: the telegram's length once the CRCs are gone.
fn strip_format_a(frame: &[u8], data_len: usize) -> Result<Vec<u8>, DllError> {
    let mut out = Vec::with_capacity(data_len);
    let mut pos = 0;
    let mut block = 1;
    while out.len() < data_len {
        let size = if block == 1 {
            FORMAT_A_FIRST_BLOCK
        } else {
            FORMAT_A_BLOCK
        };
        let size = size.min(data_len - out.len());
        out.extend_from_slice(checked_block(frame, pos, size, FrameFormat::A, block)?);
        pos += size + CRC_LEN;
        block += 1;
    }
    Ok(out)
}

/// `Ok(None)` when the telegram does not look like format B (see [`strip_dll_crcs`]).
fn strip_format_b(frame: &[u8]) -> Result<Option<Vec<u8>>, DllError> {
    let len = frame.len();
    // The smallest format B frame is the header plus its CRC. Lengths 129 and 130 would leave
    // block 3 without data, which no sender produces.
    if len < HEADER_LEN + CRC_LEN
        || (len > FORMAT_B_SINGLE_CRC_MAX && len <= FORMAT_B_SINGLE_CRC_MAX + CRC_LEN)
    {
        return Ok(None);
    }
    let mut out;
    if len <= FORMAT_B_SINGLE_CRC_MAX {
        match checked_block(frame, 0, len - CRC_LEN, FrameFormat::B, 2) {
            Ok(data) => out = data.to_vec(),
            Err(DllError::BadCrc { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
    } else {
        let first = checked_block(frame, 0, FORMAT_B_FIRST_PART, FrameFormat::B, 2);
        let third_len = len - FORMAT_B_SINGLE_CRC_MAX - CRC_LEN;
        let third = checked_block(frame, FORMAT_B_SINGLE_CRC_MAX, third_len, FrameFormat::B, 3);
        match (first, third) {
            (Ok(first), Ok(third)) => {
                out = Vec::with_capacity(first.len() + third.len());
                out.extend_from_slice(first);
                out.extend_from_slice(third);
            }
            (Err(DllError::BadCrc { .. }), Err(DllError::BadCrc { .. })) => return Ok(None),
            (Err(e), _) | (_, Err(e)) => return Err(e),
        }
    }
    // Format B's L counted the CRCs; from here on L has format A's meaning.
    let new_l = out.len() - 1;
    if let Some(l) = out.first_mut() {
        *l = u8::try_from(new_l).unwrap_or(u8::MAX);
    }
    Ok(Some(out))
}

/// The wireless C field. Values are kept exact: bit 0x80 has no meaning this table could use
/// (some stacks read it as "relayed"), so such telegrams show up as [`LinkControl::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkControl {
    /// 0x44: periodic data, no reply expected.
    SndNr,
    /// 0x46: installation request (button press on the meter).
    SndIr,
    /// 0x47: no data; gives the other side a window to reach the meter.
    AccNr,
    /// 0x48: access demand.
    AccDmd,
    /// 0x08: response to a request.
    RspUd,
    /// 0x53: data to the meter.
    SndUd,
    Unknown(u8),
}

impl LinkControl {
    pub fn from_code(code: u8) -> LinkControl {
        match code {
            0x44 => LinkControl::SndNr,
            0x46 => LinkControl::SndIr,
            0x47 => LinkControl::AccNr,
            0x48 => LinkControl::AccDmd,
            0x08 => LinkControl::RspUd,
            0x53 => LinkControl::SndUd,
            other => LinkControl::Unknown(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            LinkControl::SndNr => 0x44,
            LinkControl::SndIr => 0x46,
            LinkControl::AccNr => 0x47,
            LinkControl::AccDmd => 0x48,
            LinkControl::RspUd => 0x08,
            LinkControl::SndUd => 0x53,
            LinkControl::Unknown(code) => code,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LinkControl::SndNr => "SND_NR",
            LinkControl::SndIr => "SND_IR",
            LinkControl::AccNr => "ACC_NR",
            LinkControl::AccDmd => "ACC_DMD",
            LinkControl::RspUd => "RSP_UD",
            LinkControl::SndUd => "SND_UD",
            LinkControl::Unknown(_) => "unknown",
        }
    }
}

/// The wireless DLL header of a CRC-stripped telegram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DllHeader {
    pub l: u8,
    pub c: u8,
    /// Decoded from `raw_m`; its Display ignores bit 15, which some meters set.
    pub manufacturer: Manufacturer,
    pub id: IdentificationNumber,
    pub version: u8,
    pub device_type: Medium,
    /// As on the wire, bit 15 included: IVs and key derivation use these bytes unchanged.
    pub raw_m: [u8; 2],
    /// ID (4, LE), version, device type, as on the wire.
    pub raw_a: [u8; 6],
}

impl DllHeader {
    /// Needs the header and the CI byte after it: a telegram without a CI carries nothing.
    /// The L field is taken as is; [`strip_dll_crcs`] is what checks it against the length.
    pub fn parse(bytes: &[u8]) -> Result<DllHeader, DllError> {
        let too_short = || DllError::TooShort {
            needed: HEADER_LEN + 1,
            have: bytes.len(),
        };
        let header = bytes.get(..HEADER_LEN + 1).ok_or_else(too_short)?;
        let [l, c, m0, m1, a0, a1, a2, a3, version, device_type, _ci] = *header else {
            return Err(too_short());
        };
        Ok(DllHeader {
            l,
            c,
            manufacturer: Manufacturer::from_le_bytes([m0, m1]),
            id: IdentificationNumber(u32::from_le_bytes([a0, a1, a2, a3])),
            version,
            device_type: Medium::from_code(device_type),
            raw_m: [m0, m1],
            raw_a: [a0, a1, a2, a3, version, device_type],
        })
    }

    pub fn link_control(&self) -> LinkControl {
        LinkControl::from_code(self.c)
    }

    /// The 16-hex-digit address in the form wired M-Bus scans print (id, manufacturer bytes
    /// in wire order, version, device type), so one meter reads the same on both buses.
    pub fn secondary_address(&self) -> String {
        format!(
            "{}{:02X}{:02X}{:02X}{:02X}",
            self.id, self.raw_m[0], self.raw_m[1], self.raw_a[4], self.raw_a[5]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    /// security_vectors.md V3 (format A, 132 bytes).
    const V3_IN: &str = "734414867CC30B0003030D58A00EDF0700DC41343CEA390306FF0A0D44EADF07000DDF07000DDF07000DDF07000E44F9DF07000EDF07000EDF07000EDF07000E931EDF07000DDF07000DDF07000DDF0700035A4500000000374F0B20000000000000243412B31C07050C12280000000000002C002302062F19080F2F000000000000DCF5";
    const V3_OUT: &str = "734414867CC30B000303A00EDF0700DC41343CEA390306FF0A0DDF07000DDF07000DDF07000DDF07000EDF07000EDF07000EDF07000EDF07000EDF07000DDF07000DDF07000DDF07000300000000374F0B2000000000000024341C07050C12280000000000002C00230219080F2F000000000000";
    /// security_vectors.md V4 (format B, 195 bytes).
    const V4_IN: &str = "C244C5140443054300048C200E900F002C25895E02003B0877D31DA840B17A0E009007100F8FAD4C4E61400DA4F3B1F7E273CC4C5C07F93CD20B237345DB39F9A98F8415E1C4B7A25C86E4C22D05C3352FA7E2E5627031F14643063F1DC8FE2C32459B6F02E4234B447B18E4BFDA8C4DA9B1EDE6CF29D0B2122A3E8B9DEEBEE3E6DBE6617B4E709EC6B595179CB01C2C0BDE6723A345B708652880C114A58DA07C73AD9EB8ACB17FA0A88F19BC84CB1FC56672DE8A9603FD0C05010002FD0B2111F60B";
    const V4_OUT: &str = "BE44C5140443054300048C200E900F002C25895E02003B0877D31DA840B17A0E009007100F8FAD4C4E61400DA4F3B1F7E273CC4C5C07F93CD20B237345DB39F9A98F8415E1C4B7A25C86E4C22D05C3352FA7E2E5627031F14643063F1DC8FE2C32459B6F02E4234B447B18E4BFDA8C4DA9B1EDE6CF29D0B2122A3E8B9DEEE6DBE6617B4E709EC6B595179CB01C2C0BDE6723A345B708652880C114A58DA07C73AD9EB8ACB17FA0A88F19BC84CB1FC56672DE8A9603FD0C05010002FD0B2111";

    fn bytes(text: &str) -> Vec<u8> {
        hex::decode(text).unwrap()
    }

    fn add_crcs(stripped: &[u8], format: FrameFormat) -> Vec<u8> {
        add_dll_crcs(stripped, format).unwrap()
    }

    #[test]
    fn format_a_vector_v3() {
        let input = bytes(V3_IN);
        assert_eq!(input.len(), 132);
        let stripped = strip_dll_crcs(&input).unwrap();
        assert_eq!(stripped.crcs, Some(FrameFormat::A));
        assert_eq!(stripped.bytes.len(), 116);
        assert_eq!(stripped.bytes, bytes(V3_OUT));
    }

    #[test]
    fn format_b_vector_v4() {
        let input = bytes(V4_IN);
        assert_eq!(input.len(), 195);
        let stripped = strip_dll_crcs(&input).unwrap();
        assert_eq!(stripped.crcs, Some(FrameFormat::B));
        assert_eq!(stripped.bytes.len(), 191);
        assert_eq!(stripped.bytes[0], 0xBE);
        assert_eq!(stripped.bytes, bytes(V4_OUT));
    }

    #[test]
    fn flipped_bit_in_format_a_block_3() {
        let mut input = bytes(V3_IN);
        // Block 1 is 0..10 + CRC, block 2 12..28 + CRC, block 3 30..46 with its CRC at 46.
        input[35] ^= 0x04;
        let Err(DllError::BadCrc {
            format,
            block,
            offset,
            stored,
            computed,
        }) = strip_dll_crcs(&input)
        else {
            panic!("expected a CRC error");
        };
        assert_eq!((format, block, offset), (FrameFormat::A, 3, 46));
        assert_eq!(stored, u16::from_be_bytes([input[46], input[47]]));
        assert_ne!(stored, computed);
    }

    #[test]
    fn damaged_format_b_block_3_is_reported() {
        let mut input = bytes(V4_IN);
        input[150] ^= 0x01;
        let err = strip_dll_crcs(&input).unwrap_err();
        assert!(matches!(
            err,
            DllError::BadCrc {
                format: FrameFormat::B,
                block: 3,
                offset: 193,
                ..
            }
        ));
        assert_eq!(err.offset(), 193);
    }

    #[test]
    fn already_stripped_passes_through() {
        for text in [V3_OUT, V4_OUT] {
            let input = bytes(text);
            let stripped = strip_dll_crcs(&input).unwrap();
            assert_eq!(stripped.crcs, None);
            assert_eq!(stripped.bytes, input);
        }
    }

    #[test]
    fn length_mismatch_message() {
        let mut input = vec![0u8; 41];
        input[0] = 0x2A;
        let err = strip_dll_crcs(&input).unwrap_err();
        assert_eq!(err, DllError::LengthMismatch { l: 0x2A, len: 41 });
        assert_eq!(
            err.to_string(),
            "L field says 0x2A (42 bytes follow) but 40 bytes follow \
             (with or without data-link CRCs)"
        );
    }

    #[test]
    fn empty_input() {
        assert_eq!(
            strip_dll_crcs(&[]),
            Err(DllError::TooShort { needed: 1, have: 0 })
        );
    }

    #[test]
    fn short_format_b_single_crc() {
        let stripped = bytes("1344C5140443054300047A0E0000112233445566");
        let with_crcs = add_crcs(&stripped, FrameFormat::B);
        assert_eq!(with_crcs.len(), stripped.len() + 2);
        let out = strip_dll_crcs(&with_crcs).unwrap();
        assert_eq!(out.crcs, Some(FrameFormat::B));
        assert_eq!(out.bytes, stripped);
    }

    #[test]
    fn round_trip_all_lengths() {
        for data_len in HEADER_LEN + 1..=256 {
            let mut stripped: Vec<u8> = (0..data_len).map(|i| (i * 7 + 3) as u8).collect();
            stripped[0] = (data_len - 1) as u8;
            let a = add_crcs(&stripped, FrameFormat::A);
            let out = strip_dll_crcs(&a).unwrap();
            assert_eq!((out.crcs, &out.bytes), (Some(FrameFormat::A), &stripped));

            // Format B's L (CRCs included) must still fit in one byte.
            let b_crcs = if data_len <= FORMAT_B_FIRST_PART {
                1
            } else {
                2
            };
            if data_len + CRC_LEN * b_crcs <= 256 {
                let b = add_crcs(&stripped, FrameFormat::B);
                let out = strip_dll_crcs(&b).unwrap();
                assert_eq!((out.crcs, &out.bytes), (Some(FrameFormat::B), &stripped));
            }
        }
    }

    #[test]
    fn header_of_v4() {
        let h = DllHeader::parse(&bytes(V4_OUT)).unwrap();
        assert_eq!(h.l, 0xBE);
        assert_eq!(h.link_control(), LinkControl::SndNr);
        assert_eq!(h.manufacturer.to_string(), "EFE");
        assert_eq!(h.id.to_string(), "43054304");
        assert_eq!(h.version, 0x00);
        assert_eq!(h.device_type, Medium::from_code(0x04));
        assert_eq!(h.raw_m, [0xC5, 0x14]);
        assert_eq!(h.raw_a, [0x04, 0x43, 0x05, 0x43, 0x00, 0x04]);
        assert_eq!(h.secondary_address(), "43054304C5140004");
    }

    #[test]
    fn header_of_v3_keeps_manufacturer_bit_15() {
        let h = DllHeader::parse(&bytes(V3_OUT)).unwrap();
        assert_eq!(h.raw_m, [0x14, 0x86]);
        assert_eq!(h.manufacturer, Manufacturer(0x8614));
        assert_eq!(h.manufacturer.to_string(), "APT");
        // Non-BCD id: printed as hex, not rejected.
        assert_eq!(h.id.to_string(), "000BC37C");
        assert_eq!(h.device_type, Medium::from_code(0x03));
        assert_eq!(h.version, 0x03);
        assert_eq!(h.secondary_address(), "000BC37C14860303");
    }

    #[test]
    fn header_too_short() {
        assert_eq!(
            DllHeader::parse(&[0x0A; 10]),
            Err(DllError::TooShort {
                needed: 11,
                have: 10
            })
        );
    }

    #[test]
    fn link_control_table_round_trips() {
        for code in 0..=u8::MAX {
            assert_eq!(LinkControl::from_code(code).code(), code);
        }
        assert_eq!(LinkControl::from_code(0xC4), LinkControl::Unknown(0xC4));
    }

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
    }

    #[test]
    fn brute_force_never_panics() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let valid = [bytes(V3_IN), bytes(V4_IN)];
        for round in 0..20_000 {
            let mut buf: Vec<u8> = match round % 3 {
                // Mutated real telegrams reach the CRC and format B paths.
                0 => {
                    let mut v = valid[rng.below(2)].clone();
                    for _ in 0..=rng.below(3) {
                        let i = rng.below(v.len());
                        v[i] ^= 1 << rng.below(8);
                    }
                    if rng.below(4) == 0 {
                        v.truncate(rng.below(v.len() + 1));
                    }
                    v
                }
                _ => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
            };
            // Make the length arithmetic match often enough to get past the L check.
            if round % 3 == 1 && !buf.is_empty() && buf.len() <= 256 {
                buf[0] = (buf.len() - 1) as u8;
            }
            if let Ok(s) = strip_dll_crcs(&buf) {
                assert_eq!(
                    s.bytes.first().map(|&l| usize::from(l) + 1),
                    Some(s.bytes.len())
                );
            }
            let _ = DllHeader::parse(&buf).map(|h| h.secondary_address());
        }
    }
}
