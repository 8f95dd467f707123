//! EN 13757-4 Extended Link Layer (CI 0x8C–0x8F): communication control, access number,
//! optional second address and optional session number with payload CRC.
//!
//! | CI | layout after CI | |
//! |---|---|---|
//! | 0x8C | CC ACC | ELL-I |
//! | 0x8D | CC ACC SN(4) PLCRC(2) | ELL-II |
//! | 0x8E | CC ACC M2(2) A2(6) | ELL-III |
//! | 0x8F | CC ACC M2(2) A2(6) SN(4) PLCRC(2) | ELL-IV |
//!
//! With a session number the ELL can encrypt (AES-128-CTR) everything from the payload CRC to
//! the end of the telegram, so the payload CRC is only meaningful on plaintext: this module
//! locates it, decryption happens elsewhere.

use thiserror::Error;

use crate::wire::crc::crc16_en13757;

pub const CI_ELL_I: u8 = 0x8C;
pub const CI_ELL_II: u8 = 0x8D;
pub const CI_ELL_III: u8 = 0x8E;
pub const CI_ELL_IV: u8 = 0x8F;

pub const CC_BIDIRECTIONAL: u8 = 0x80;
pub const CC_RESPONSE_DELAY: u8 = 0x40;
pub const CC_SYNCHRONIZED: u8 = 0x20;
pub const CC_HOP: u8 = 0x10;
pub const CC_PRIORITY: u8 = 0x08;
pub const CC_ACCESSIBILITY: u8 = 0x04;
pub const CC_REPEATED_ACCESS: u8 = 0x02;

const PAYLOAD_CRC_LEN: usize = 2;
const SN_ENC_SHIFT: u32 = 29;

/// Why bytes starting at a CI field are not a complete ELL header. Offsets count from the CI
/// (offset 0); add the CI's position in the telegram for telegram offsets.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EllError {
    #[error("CI 0x{ci:02X} at byte 0 is not an extended link layer (0x8C..=0x8F)")]
    NotEll { ci: u8 },
    /// `needed` includes the payload CRC for CI 0x8D / 0x8F.
    #[error("extended link layer truncated: {needed} bytes needed from the CI, {have} present")]
    Truncated { needed: usize, have: usize },
    #[error("ELL payload CRC at byte {offset} is 0x{stored:04X}, computed 0x{computed:04X}")]
    PayloadCrc {
        offset: usize,
        stored: u16,
        computed: u16,
    },
}

impl EllError {
    /// The offending byte; for truncation the first missing one.
    pub fn offset(&self) -> usize {
        match *self {
            EllError::NotEll { .. } => 0,
            EllError::Truncated { have, .. } => have,
            EllError::PayloadCrc { offset, .. } => offset,
        }
    }
}

/// Encryption announced in the session number (bits 29–31).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EllEncryption {
    None,
    AesCtr,
    Reserved(u8),
}

/// A parsed ELL header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ell {
    pub ci: u8,
    /// Communication control; see the `CC_*` flags.
    pub cc: u8,
    pub access_number: u8,
    /// Second manufacturer (wire order), CI 0x8E / 0x8F only.
    pub m2: Option<[u8; 2]>,
    /// Second address (wire order), CI 0x8E / 0x8F only.
    pub a2: Option<[u8; 6]>,
    /// Session number as on the wire (little-endian), CI 0x8D / 0x8F only.
    pub session_number: Option<[u8; 4]>,
    /// Bytes from the CI up to the payload CRC (CI 0x8D / 0x8F, where AES-CTR encryption
    /// starts) or up to the next layer's CI (0x8C / 0x8E).
    pub header_len: usize,
}

/// `N` bytes at `at`, if there are that many.
fn take<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

impl Ell {
    /// Parses the header; for CI 0x8D / 0x8F the payload CRC must be present too.
    pub fn parse(bytes_from_ci: &[u8]) -> Result<Ell, EllError> {
        let Some(&ci) = bytes_from_ci.first() else {
            return Err(EllError::Truncated { needed: 1, have: 0 });
        };
        let (has_address, has_session) = match ci {
            CI_ELL_I => (false, false),
            CI_ELL_II => (false, true),
            CI_ELL_III => (true, false),
            CI_ELL_IV => (true, true),
            _ => return Err(EllError::NotEll { ci }),
        };
        let header_len = 3 + if has_address { 8 } else { 0 } + if has_session { 4 } else { 0 };
        let needed = header_len + if has_session { PAYLOAD_CRC_LEN } else { 0 };
        let truncated = || EllError::Truncated {
            needed,
            have: bytes_from_ci.len(),
        };
        let b = bytes_from_ci.get(..needed).ok_or_else(truncated)?;

        let (m2, a2) = if has_address {
            (
                Some(take(b, 3).ok_or_else(truncated)?),
                Some(take(b, 5).ok_or_else(truncated)?),
            )
        } else {
            (None, None)
        };
        let session_number = if has_session {
            Some(take(b, if has_address { 11 } else { 3 }).ok_or_else(truncated)?)
        } else {
            None
        };
        let [_, cc, access_number] = take(b, 0).ok_or_else(truncated)?;
        Ok(Ell {
            ci,
            cc,
            access_number,
            m2,
            a2,
            session_number,
            header_len,
        })
    }

    /// Whether a payload CRC (and the possibility of encryption) follows the header.
    pub fn has_payload_crc(&self) -> bool {
        self.session_number.is_some()
    }

    /// Offset (from the CI) of the next layer's CI, which for an encrypted ELL is only
    /// readable after decryption.
    pub fn next_ci_offset(&self) -> usize {
        self.header_len
            + if self.has_payload_crc() {
                PAYLOAD_CRC_LEN
            } else {
                0
            }
    }

    /// Session number as a value (bits 0–3 session, 4–28 time, 29–31 encryption).
    pub fn session_number_value(&self) -> Option<u32> {
        self.session_number.map(u32::from_le_bytes)
    }

    /// Without a session number there is nowhere to announce encryption, so `None`.
    pub fn encryption(&self) -> EllEncryption {
        match self
            .session_number_value()
            .map(|sn| (sn >> SN_ENC_SHIFT) as u8)
        {
            None | Some(0) => EllEncryption::None,
            Some(1) => EllEncryption::AesCtr,
            Some(other) => EllEncryption::Reserved(other),
        }
    }

    /// Checks the payload CRC (little-endian, over everything after it to the end of the
    /// telegram). Give it plaintext: decrypt first when [`Ell::encryption`] says so, since the
    /// CRC is inside the encrypted region and a wrong key shows up only here. ELL variants
    /// without a payload CRC have nothing to check and pass.
    pub fn check_payload_crc(&self, bytes_from_ci: &[u8]) -> Result<(), EllError> {
        if !self.has_payload_crc() {
            return Ok(());
        }
        let at = self.header_len;
        let (Some(&[c0, c1]), Some(payload)) = (
            bytes_from_ci.get(at..at + PAYLOAD_CRC_LEN),
            bytes_from_ci.get(at + PAYLOAD_CRC_LEN..),
        ) else {
            return Err(EllError::Truncated {
                needed: at + PAYLOAD_CRC_LEN,
                have: bytes_from_ci.len(),
            });
        };
        let stored = u16::from_le_bytes([c0, c1]);
        let computed = crc16_en13757(payload);
        if stored != computed {
            return Err(EllError::PayloadCrc {
                offset: at,
                stored,
                computed,
            });
        }
        Ok(())
    }

    pub fn bidirectional(&self) -> bool {
        self.cc & CC_BIDIRECTIONAL != 0
    }

    pub fn response_delay(&self) -> bool {
        self.cc & CC_RESPONSE_DELAY != 0
    }

    pub fn synchronized(&self) -> bool {
        self.cc & CC_SYNCHRONIZED != 0
    }

    /// Set once a repeater has forwarded the telegram.
    pub fn hop(&self) -> bool {
        self.cc & CC_HOP != 0
    }

    pub fn priority(&self) -> bool {
        self.cc & CC_PRIORITY != 0
    }

    pub fn accessibility(&self) -> bool {
        self.cc & CC_ACCESSIBILITY != 0
    }

    pub fn repeated_access(&self) -> bool {
        self.cc & CC_REPEATED_ACCESS != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    /// security_vectors.md V6a (Kamstrup Multical 21, CRCs already removed).
    const V6A: &str =
        "2A442D2C998734761B168D2091D37CAC21E1D68CDAFFCD3DC452BD802913FF7B1706CA9E355D6C2701CC24";
    /// V6a's plaintext from the payload CRC on, as the vector file gives it.
    const V6A_DECRYPTED: &str = "576C7802FF207100041308190000441308190000615B7F616713";
    /// security_vectors.md V4 after CRC stripping, from the ELL CI on (first bytes only).
    const V4_FROM_CI: &str = "8C200E900F002C25895E0200";

    fn bytes(text: &str) -> Vec<u8> {
        hex::decode(text).unwrap()
    }

    #[test]
    fn ell_ii_of_v6a() {
        let telegram = bytes(V6A);
        let from_ci = &telegram[10..];
        let ell = Ell::parse(from_ci).unwrap();
        assert_eq!(ell.ci, CI_ELL_II);
        assert_eq!(ell.cc, 0x20);
        assert!(ell.synchronized());
        assert!(!ell.bidirectional() && !ell.hop() && !ell.repeated_access());
        assert_eq!(ell.access_number, 0x91);
        assert_eq!(ell.session_number, Some([0xD3, 0x7C, 0xAC, 0x21]));
        assert_eq!(ell.session_number_value(), Some(0x21AC_7CD3));
        assert_eq!(ell.encryption(), EllEncryption::AesCtr);
        assert!(ell.has_payload_crc());
        assert_eq!(ell.header_len, 7);
        assert_eq!(ell.next_ci_offset(), 9);
        assert_eq!((ell.m2, ell.a2), (None, None));
    }

    #[test]
    fn payload_crc_of_v6a() {
        let telegram = bytes(V6A);
        let ell = Ell::parse(&telegram[10..]).unwrap();

        // Ciphertext: the CRC cannot match (that is how a wrong key is detected).
        assert!(matches!(
            ell.check_payload_crc(&telegram[10..]),
            Err(EllError::PayloadCrc { offset: 7, .. })
        ));

        let mut plain = telegram[10..17].to_vec();
        plain.extend_from_slice(&bytes(V6A_DECRYPTED));
        assert_eq!(ell.check_payload_crc(&plain), Ok(()));
        assert_eq!(plain[ell.next_ci_offset()], 0x78);
    }

    #[test]
    fn ell_i_of_v4() {
        let ell = Ell::parse(&bytes(V4_FROM_CI)).unwrap();
        assert_eq!(
            ell,
            Ell {
                ci: CI_ELL_I,
                cc: 0x20,
                access_number: 0x0E,
                m2: None,
                a2: None,
                session_number: None,
                header_len: 3,
            }
        );
        assert_eq!(ell.encryption(), EllEncryption::None);
        assert!(!ell.has_payload_crc());
        assert_eq!(ell.next_ci_offset(), 3);
        assert_eq!(ell.check_payload_crc(&bytes(V4_FROM_CI)), Ok(()));
    }

    #[test]
    fn ell_iii_and_iv_layouts() {
        let iii = bytes("8E8001C5140443054300047A");
        let ell = Ell::parse(&iii).unwrap();
        assert_eq!(ell.header_len, 11);
        assert_eq!(ell.m2, Some([0xC5, 0x14]));
        assert_eq!(ell.a2, Some([0x04, 0x43, 0x05, 0x43, 0x00, 0x04]));
        assert!(ell.bidirectional());
        assert_eq!(ell.next_ci_offset(), 11);

        let iv = bytes("8F0001C514044305430004000000E0AABB78");
        let ell = Ell::parse(&iv).unwrap();
        assert_eq!(ell.header_len, 15);
        assert_eq!(ell.session_number, Some([0x00, 0x00, 0x00, 0xE0]));
        assert_eq!(ell.encryption(), EllEncryption::Reserved(7));
        assert_eq!(ell.next_ci_offset(), 17);
    }

    #[test]
    fn truncation_and_wrong_ci() {
        assert_eq!(
            Ell::parse(&[]),
            Err(EllError::Truncated { needed: 1, have: 0 })
        );
        assert_eq!(
            Ell::parse(&[0x7A, 0, 0]),
            Err(EllError::NotEll { ci: 0x7A })
        );
        // ELL-II without its payload CRC.
        let err = Ell::parse(&bytes("8D2091D37CAC21")).unwrap_err();
        assert_eq!(err, EllError::Truncated { needed: 9, have: 7 });
        assert_eq!(err.offset(), 7);
        assert_eq!(
            Ell::parse(&bytes("8E20910102")),
            Err(EllError::Truncated {
                needed: 11,
                have: 5
            })
        );
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
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        for _ in 0..20_000 {
            let len = (rng.next() % 24) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Mostly valid CIs, so the layouts are exercised rather than rejected up front.
            if let Some(ci) = buf.first_mut() {
                if !rng.next().is_multiple_of(8) {
                    *ci = 0x8C + (rng.next() % 4) as u8;
                }
            }
            if let Ok(ell) = Ell::parse(&buf) {
                assert!(ell.next_ci_offset() <= buf.len());
                let _ = ell.encryption();
                let _ = ell.check_payload_crc(&buf);
            }
        }
    }
}
