//! EN 13757-7 Authentication and Fragmentation Layer (CI 0x90).
//!
//! `90 AFL.L FCL(2) [MCL(1)] [KI(2)] [MCR(4)] [ML(2)] [MAC(n)]`: AFL.L counts the bytes after
//! itself, the FCL says which optional fields follow (in this order), and the MCL's
//! authentication type fixes the MAC length. Multi-byte values are little-endian.
//!
//! This module only locates the fields and builds the MAC input; verifying the MAC needs keys
//! and lives with the rest of the security code. Fragmented messages are parsed but not
//! reassembled: callers check [`Afl::more_fragments`] and give up.

use std::fmt;

use thiserror::Error;

pub const CI_AFL: u8 = 0x90;

/// FCL bits 0–7.
pub const FCL_FRAGMENT_ID_MASK: u16 = 0x00FF;
pub const FCL_KEY_INFO_PRESENT: u16 = 0x0200;
pub const FCL_MAC_PRESENT: u16 = 0x0400;
pub const FCL_MCR_PRESENT: u16 = 0x0800;
pub const FCL_ML_PRESENT: u16 = 0x1000;
pub const FCL_MCL_PRESENT: u16 = 0x2000;
pub const FCL_MORE_FRAGMENTS: u16 = 0x4000;

/// MCL bits 0–3.
pub const MCL_AT_MASK: u8 = 0x0F;
/// MCL flags: the field is part of the message (possibly in another fragment).
pub const MCL_KEY_INFO: u8 = 0x10;
pub const MCL_MCR: u8 = 0x20;
pub const MCL_ML: u8 = 0x40;

/// CI and AFL.L.
const PREFIX_LEN: usize = 2;

/// The AFL fields, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AflField {
    Fcl,
    Mcl,
    KeyInfo,
    Mcr,
    MessageLength,
    Mac,
}

impl fmt::Display for AflField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AflField::Fcl => "FCL",
            AflField::Mcl => "MCL",
            AflField::KeyInfo => "KI",
            AflField::Mcr => "MCR",
            AflField::MessageLength => "ML",
            AflField::Mac => "MAC",
        })
    }
}

/// Why bytes starting at a CI field are not a well-formed AFL. Offsets count from the CI
/// (offset 0); add the CI's position in the telegram for telegram offsets.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AflError {
    #[error("CI 0x{ci:02X} at byte 0 is not an AFL (0x90)")]
    NotAfl { ci: u8 },
    /// The input ends before the CI, AFL.L, or the bytes AFL.L announces.
    #[error("AFL truncated: {needed} bytes needed from the CI, {have} present")]
    Truncated { needed: usize, have: usize },
    /// A field the FCL announces does not fit in AFL.L.
    #[error(
        "AFL.{field} at byte {offset} ({size} bytes) runs past the end of the AFL at byte {end} \
         (AFL.L too small for the fields the FCL announces)"
    )]
    FieldOutsideAfl {
        field: AflField,
        offset: usize,
        size: usize,
        end: usize,
    },
    #[error("AFL announces a MAC at byte {offset} but AFL.L leaves no bytes for it")]
    EmptyMac { offset: usize },
    /// AFL.L is longer than the fields the FCL announces.
    #[error("{count} byte(s) at byte {offset} inside AFL.L that the FCL does not announce")]
    TrailingBytes { offset: usize, count: usize },
}

impl AflError {
    /// The offending byte; for truncation the first missing one.
    pub fn offset(&self) -> usize {
        match *self {
            AflError::NotAfl { .. } => 0,
            AflError::Truncated { have, .. } => have,
            AflError::FieldOutsideAfl { offset, .. }
            | AflError::EmptyMac { offset }
            | AflError::TrailingBytes { offset, .. } => offset,
        }
    }
}

/// Authentication type, MCL bits 0–3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthenticationType {
    /// 3: AES-CMAC-128 truncated to 2 bytes.
    Cmac2,
    /// 4: AES-CMAC-128 truncated to 4 bytes.
    Cmac4,
    /// 5: AES-CMAC-128 truncated to 8 bytes (OMS security profile B).
    Cmac8,
    /// 6: AES-CMAC-128 truncated to 12 bytes.
    Cmac12,
    /// 7: full AES-CMAC-128.
    Cmac16,
    /// 8: AES-GMAC-128, 12 bytes.
    Gmac12,
    Unknown(u8),
}

impl AuthenticationType {
    /// Reads the low nibble; the MCL flags above it are ignored.
    pub fn from_mcl(mcl: u8) -> AuthenticationType {
        match mcl & MCL_AT_MASK {
            3 => AuthenticationType::Cmac2,
            4 => AuthenticationType::Cmac4,
            5 => AuthenticationType::Cmac8,
            6 => AuthenticationType::Cmac12,
            7 => AuthenticationType::Cmac16,
            8 => AuthenticationType::Gmac12,
            other => AuthenticationType::Unknown(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            AuthenticationType::Cmac2 => 3,
            AuthenticationType::Cmac4 => 4,
            AuthenticationType::Cmac8 => 5,
            AuthenticationType::Cmac12 => 6,
            AuthenticationType::Cmac16 => 7,
            AuthenticationType::Gmac12 => 8,
            AuthenticationType::Unknown(code) => code,
        }
    }

    pub fn mac_len(self) -> Option<usize> {
        match self {
            AuthenticationType::Cmac2 => Some(2),
            AuthenticationType::Cmac4 => Some(4),
            AuthenticationType::Cmac8 => Some(8),
            AuthenticationType::Cmac12 | AuthenticationType::Gmac12 => Some(12),
            AuthenticationType::Cmac16 => Some(16),
            AuthenticationType::Unknown(_) => None,
        }
    }
}

/// A parsed AFL header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Afl {
    /// Fragmentation control (value); see the `FCL_*` bits.
    pub fcl: u16,
    /// Message control; see [`AuthenticationType`] and the `MCL_*` flags.
    pub mcl: Option<u8>,
    pub key_info: Option<u16>,
    /// Message counter as on the wire (little-endian): key derivation uses these bytes.
    pub mcr: Option<[u8; 4]>,
    pub message_length: Option<u16>,
    /// (offset from the CI, length) of the MAC.
    pub mac: Option<(usize, usize)>,
    /// Total AFL bytes including CI and AFL.L: the next layer's CI is at this offset.
    pub len: usize,
}

/// `N` bytes at `at`, if there are that many.
fn take<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

impl Afl {
    /// Parses the AFL and checks that AFL.L holds exactly the fields the FCL announces.
    ///
    /// A MAC whose length the MCL does not give (no MCL in this fragment, or an unknown
    /// authentication type) takes the rest of the AFL, so the layers above still start at
    /// the right byte.
    pub fn parse(bytes_from_ci: &[u8]) -> Result<Afl, AflError> {
        let have = bytes_from_ci.len();
        let (ci, afl_l) = match *bytes_from_ci {
            [] => return Err(AflError::Truncated { needed: 1, have }),
            [_] => return Err(AflError::Truncated { needed: 2, have }),
            [ci, afl_l, ..] => (ci, afl_l),
        };
        if ci != CI_AFL {
            return Err(AflError::NotAfl { ci });
        }
        let len = PREFIX_LEN + usize::from(afl_l);
        let afl = bytes_from_ci
            .get(..len)
            .ok_or(AflError::Truncated { needed: len, have })?;

        let mut pos = PREFIX_LEN;
        let outside = |field, offset, size| AflError::FieldOutsideAfl {
            field,
            offset,
            size,
            end: len,
        };
        let fcl = u16::from_le_bytes(take(afl, pos).ok_or(outside(AflField::Fcl, pos, 2))?);
        pos += 2;

        let mut field =
            |flag: u16, which: AflField, size: usize| -> Result<Option<usize>, AflError> {
                if fcl & flag == 0 {
                    return Ok(None);
                }
                if pos + size > len {
                    return Err(outside(which, pos, size));
                }
                let at = pos;
                pos += size;
                Ok(Some(at))
            };
        let mcl_at = field(FCL_MCL_PRESENT, AflField::Mcl, 1)?;
        let ki_at = field(FCL_KEY_INFO_PRESENT, AflField::KeyInfo, 2)?;
        let mcr_at = field(FCL_MCR_PRESENT, AflField::Mcr, 4)?;
        let ml_at = field(FCL_ML_PRESENT, AflField::MessageLength, 2)?;

        // `field` checked each position against `len`, so these reads cannot fail.
        let mcl = mcl_at.and_then(|at| afl.get(at).copied());
        let key_info = ki_at.and_then(|at| take(afl, at)).map(u16::from_le_bytes);
        let mcr = mcr_at.and_then(|at| take(afl, at));
        let message_length = ml_at.and_then(|at| take(afl, at)).map(u16::from_le_bytes);

        let rest = len - pos;
        let mac = if fcl & FCL_MAC_PRESENT == 0 {
            None
        } else {
            match mcl.and_then(|m| AuthenticationType::from_mcl(m).mac_len()) {
                Some(size) if size > rest => return Err(outside(AflField::Mac, pos, size)),
                Some(size) => Some((pos, size)),
                None if rest == 0 => return Err(AflError::EmptyMac { offset: pos }),
                None => Some((pos, rest)),
            }
        };
        let end = mac.map_or(pos, |(at, size)| at + size);
        if end < len {
            return Err(AflError::TrailingBytes {
                offset: end,
                count: len - end,
            });
        }
        Ok(Afl {
            fcl,
            mcl,
            key_info,
            mcr,
            message_length,
            mac,
            len,
        })
    }

    /// More fragments of this message follow; reassembly is not supported.
    pub fn more_fragments(&self) -> bool {
        self.fcl & FCL_MORE_FRAGMENTS != 0
    }

    pub fn fragment_id(&self) -> u8 {
        (self.fcl & FCL_FRAGMENT_ID_MASK) as u8
    }

    pub fn authentication_type(&self) -> Option<AuthenticationType> {
        self.mcl.map(AuthenticationType::from_mcl)
    }

    /// MAC length the authentication type prescribes.
    pub fn mac_len(&self) -> Option<usize> {
        self.authentication_type()?.mac_len()
    }

    pub fn mcr_value(&self) -> Option<u32> {
        self.mcr.map(u32::from_le_bytes)
    }

    /// The received MAC; `bytes_from_ci` must be the slice this AFL was parsed from.
    pub fn mac<'a>(&self, bytes_from_ci: &'a [u8]) -> Option<&'a [u8]> {
        let (at, size) = self.mac?;
        bytes_from_ci.get(at..at.checked_add(size)?)
    }
}

/// The bytes the AFL MAC is computed over: MCL ‖ MCR ‖ ML (each if present, as on the wire)
/// ‖ everything after the AFL (the next layer's CI to the end of the CRC-stripped telegram).
pub fn mac_input(afl: &Afl, bytes_from_ci: &[u8]) -> Vec<u8> {
    let payload = bytes_from_ci.get(afl.len..).unwrap_or_default();
    let mut out = Vec::with_capacity(1 + 4 + 2 + payload.len());
    out.extend(afl.mcl);
    out.extend(afl.mcr.iter().flatten());
    out.extend(afl.message_length.map(u16::to_le_bytes).iter().flatten());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    /// security_vectors.md V4 after CRC stripping; the AFL starts at byte 13.
    const V4: &str = "BE44C5140443054300048C200E900F002C25895E02003B0877D31DA840B17A0E009007100F8FAD4C4E61400DA4F3B1F7E273CC4C5C07F93CD20B237345DB39F9A98F8415E1C4B7A25C86E4C22D05C3352FA7E2E5627031F14643063F1DC8FE2C32459B6F02E4234B447B18E4BFDA8C4DA9B1EDE6CF29D0B2122A3E8B9DEEE6DBE6617B4E709EC6B595179CB01C2C0BDE6723A345B708652880C114A58DA07C73AD9EB8ACB17FA0A88F19BC84CB1FC56672DE8A9603FD0C05010002FD0B2111";
    const V4_AFL_AT: usize = 13;

    fn bytes(text: &str) -> Vec<u8> {
        hex::decode(text).unwrap()
    }

    #[test]
    fn afl_of_v4() {
        let telegram = bytes(V4);
        let from_ci = &telegram[V4_AFL_AT..];
        let afl = Afl::parse(from_ci).unwrap();
        assert_eq!(
            afl,
            Afl {
                fcl: 0x2C00,
                mcl: Some(0x25),
                key_info: None,
                mcr: Some([0x89, 0x5E, 0x02, 0x00]),
                message_length: None,
                mac: Some((9, 8)),
                len: 17,
            }
        );
        assert_eq!(afl.fragment_id(), 0);
        assert!(!afl.more_fragments());
        assert_eq!(afl.authentication_type(), Some(AuthenticationType::Cmac8));
        assert_eq!(afl.mac_len(), Some(8));
        assert_eq!(afl.mcr_value(), Some(155_273));
        assert_eq!(afl.mac(from_ci), Some(&bytes("3B0877D31DA840B1")[..]));
        // The TPL follows: CI 0x7A at byte 30 of the telegram.
        assert_eq!(from_ci[afl.len], 0x7A);
    }

    #[test]
    fn mac_input_of_v4() {
        let telegram = bytes(V4);
        let from_ci = &telegram[V4_AFL_AT..];
        let afl = Afl::parse(from_ci).unwrap();
        let input = mac_input(&afl, from_ci);
        assert_eq!(input.len(), 166);
        assert_eq!(input[..5], [0x25, 0x89, 0x5E, 0x02, 0x00]);
        assert_eq!(input[5..], telegram[30..]);
    }

    #[test]
    fn message_length_goes_into_mac_input() {
        // FCL: MCL, MCR, ML, MAC present; AT=4 (4-byte MAC).
        let from_ci = bytes("900D003C2401000000340012345678 7A0000");
        let afl = Afl::parse(&from_ci).unwrap();
        assert_eq!(afl.message_length, Some(0x0034));
        assert_eq!(afl.mac(&from_ci), Some(&[0x12, 0x34, 0x56, 0x78][..]));
        assert_eq!(mac_input(&afl, &from_ci), bytes("24 01000000 3400 7A0000"));
    }

    #[test]
    fn key_info_is_read() {
        // FCL: KI and MCL present, no MAC.
        let from_ci = bytes("9005002223ABCD");
        let afl = Afl::parse(&from_ci).unwrap();
        assert_eq!(afl.key_info, Some(0xCDAB));
        assert_eq!(afl.mac, None);
        assert_eq!(afl.fragment_id(), 0);
        assert_eq!(afl.len, 7);
    }

    #[test]
    fn fragmented_telegram_is_detectable() {
        // Fragment 1 of several: MF set, MCL + MCR present, MAC only in the last fragment.
        let from_ci = bytes("900701 6825 01000000 7A");
        let afl = Afl::parse(&from_ci).unwrap();
        assert!(afl.more_fragments());
        assert_eq!(afl.fragment_id(), 1);
        assert_eq!(afl.mac, None);
    }

    #[test]
    fn mac_without_mcl_takes_the_rest() {
        // Last fragment: MAC present but its length is not in this fragment.
        let from_ci = bytes("900602 04 AABBCCDD 7A");
        let afl = Afl::parse(&from_ci).unwrap();
        assert_eq!(afl.mac_len(), None);
        assert_eq!(afl.mac, Some((4, 4)));
    }

    #[test]
    fn errors_carry_offsets() {
        assert_eq!(
            Afl::parse(&[]),
            Err(AflError::Truncated { needed: 1, have: 0 })
        );
        assert_eq!(Afl::parse(&[0x7A, 0]), Err(AflError::NotAfl { ci: 0x7A }));
        assert_eq!(
            Afl::parse(&bytes("900F002C25")),
            Err(AflError::Truncated {
                needed: 17,
                have: 5
            })
        );
        // V4's AFL with AFL.L one short: the 8-byte MAC no longer fits.
        let err = Afl::parse(&bytes("900E002C25895E02003B0877D31DA840B1")).unwrap_err();
        assert_eq!(
            err,
            AflError::FieldOutsideAfl {
                field: AflField::Mac,
                offset: 9,
                size: 8,
                end: 16
            }
        );
        assert_eq!(err.offset(), 9);
        // MCR announced, AFL.L only covers FCL + MCL.
        assert!(matches!(
            Afl::parse(&bytes("9003002C25895E0200")),
            Err(AflError::FieldOutsideAfl {
                field: AflField::Mcr,
                offset: 5,
                ..
            })
        ));
        // AFL.L one too long for V4's fields.
        assert_eq!(
            Afl::parse(&bytes("9010002C25895E02003B0877D31DA840B17A")),
            Err(AflError::TrailingBytes {
                offset: 17,
                count: 1
            })
        );
        assert_eq!(
            Afl::parse(&bytes("900200047A")),
            Err(AflError::EmptyMac { offset: 4 })
        );
        assert!(matches!(
            Afl::parse(&bytes("900100")),
            Err(AflError::FieldOutsideAfl {
                field: AflField::Fcl,
                ..
            })
        ));
    }

    #[test]
    fn authentication_type_table() {
        for code in 0..16 {
            assert_eq!(AuthenticationType::from_mcl(code | 0x70).code(), code);
        }
        assert_eq!(AuthenticationType::from_mcl(0x28).mac_len(), Some(12));
        assert_eq!(AuthenticationType::from_mcl(0x01).mac_len(), None);
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
    }

    #[test]
    fn brute_force_never_panics() {
        let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
        for _ in 0..20_000 {
            let len = (rng.next() % 40) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Plausible CI and AFL.L most of the time, so the field checks are what runs.
            if buf.len() >= 2 && !rng.next().is_multiple_of(8) {
                buf[0] = CI_AFL;
                buf[1] = (rng.next() % (buf.len() as u64 - 1)) as u8;
            }
            if let Ok(afl) = Afl::parse(&buf) {
                assert!(afl.len <= buf.len());
                if let Some((at, size)) = afl.mac {
                    assert!(at + size <= afl.len);
                    assert_eq!(afl.mac(&buf).map(<[u8]>::len), Some(size));
                }
                let _ = mac_input(&afl, &buf);
                let _ = (afl.mac_len(), afl.fragment_id(), afl.more_fragments());
            }
        }
    }
}
