//! Transport layer (EN 13757-7 / OMS): the CI field after the link layers, its long, short or
//! missing header, and the configuration field that announces the security mode.

use thiserror::Error;

use super::application::{parse_long_header, Header, ShortHeader, Status};
use super::records::ByteOrder;

/// What a wireless CI field announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TplKind {
    /// CI 0x72: long header, records follow.
    Long,
    /// CI 0x7A: short header, records follow.
    Short,
    /// CI 0x78: no header, records follow.
    None,
    /// CI 0x79: compact frame without header.
    CompactNone,
    /// CI 0x7B: compact frame with short header.
    CompactShort,
    /// CI 0x73 (wireless): compact frame with long header.
    CompactLong,
    /// CI 0x70: application error, reported as such.
    Error,
    /// CI 0x71 / 0x74 / 0x75: alarm.
    Alarm,
    /// CI 0xA0-0xB7: manufacturer specific (Diehl PRIOS among them).
    ManufacturerSpecific,
    Unknown(u8),
}

impl TplKind {
    pub fn from_ci(ci: u8) -> TplKind {
        match ci {
            0x72 => TplKind::Long,
            0x7A => TplKind::Short,
            0x78 => TplKind::None,
            0x79 => TplKind::CompactNone,
            0x7B => TplKind::CompactShort,
            0x73 => TplKind::CompactLong,
            0x70 => TplKind::Error,
            0x71 | 0x74 | 0x75 => TplKind::Alarm,
            0xA0..=0xB7 => TplKind::ManufacturerSpecific,
            other => TplKind::Unknown(other),
        }
    }

    pub fn is_compact(self) -> bool {
        matches!(
            self,
            TplKind::CompactNone | TplKind::CompactShort | TplKind::CompactLong
        )
    }

    fn header_len(self) -> usize {
        match self {
            TplKind::Long | TplKind::CompactLong => 12,
            TplKind::Short | TplKind::CompactShort => 4,
            _ => 0,
        }
    }
}

/// The 16-bit configuration field of a short or long TPL header (the "signature" of wired
/// M-Bus): security mode and how much of the payload is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigField(pub u16);

impl ConfigField {
    /// Bits 8-12.
    pub fn security_mode(self) -> u8 {
        ((self.0 >> 8) & 0x1F) as u8
    }

    /// Bits 4-7 in modes 5 and 7: number of encrypted 16-byte blocks.
    pub fn encrypted_blocks(self) -> usize {
        usize::from((self.0 >> 4) & 0x0F)
    }

    pub fn bidirectional(self) -> bool {
        self.0 & 0x8000 != 0
    }

    pub fn accessibility(self) -> bool {
        self.0 & 0x4000 != 0
    }

    pub fn synchronous(self) -> bool {
        self.0 & 0x2000 != 0
    }
}

/// A parsed transport layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tpl {
    pub ci: u8,
    pub kind: TplKind,
    pub header: Header,
    pub config: Option<ConfigField>,
    /// Mode 7 adds one byte after the configuration field (KDF selection and more).
    pub config_ext: Option<u8>,
    /// Bytes from the CI (inclusive) to the first byte of the (possibly encrypted) payload.
    pub len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TplError {
    #[error("transport header truncated at byte {offset}: CI 0x{ci:02X} needs {needed} header bytes, {have} present")]
    Truncated {
        offset: usize,
        ci: u8,
        needed: usize,
        have: usize,
    },
    #[error("no transport layer: the telegram ends at byte {offset}")]
    Missing { offset: usize },
}

impl Tpl {
    /// Parses the TPL starting at its CI. `offset` is where `bytes[0]` sits in the telegram.
    pub fn parse(bytes: &[u8], offset: usize) -> Result<Tpl, TplError> {
        let Some(&ci) = bytes.first() else {
            return Err(TplError::Missing { offset });
        };
        let kind = TplKind::from_ci(ci);
        let needed = kind.header_len();
        let header_bytes = bytes.get(1..1 + needed).ok_or(TplError::Truncated {
            offset: offset + bytes.len(),
            ci,
            needed,
            have: bytes.len().saturating_sub(1),
        })?;
        let (header, config) = match kind {
            TplKind::Long | TplKind::CompactLong => {
                let h = parse_long_header(header_bytes, ByteOrder::LsbFirst).ok_or(
                    TplError::Truncated {
                        offset,
                        ci,
                        needed,
                        have: header_bytes.len(),
                    },
                )?;
                let cfg = ConfigField(h.signature);
                (Header::Long(h), Some(cfg))
            }
            TplKind::Short | TplKind::CompactShort => {
                let cfg = u16::from_le_bytes([header_bytes[2], header_bytes[3]]);
                (
                    Header::Short(ShortHeader {
                        access_number: header_bytes[0],
                        status: Status(header_bytes[1]),
                        signature: cfg,
                    }),
                    Some(ConfigField(cfg)),
                )
            }
            _ => (Header::None, None),
        };
        let mut len = 1 + needed;
        let mut config_ext = None;
        if config.is_some_and(|c| c.security_mode() == 7) {
            let Some(&ext) = bytes.get(len) else {
                return Err(TplError::Truncated {
                    offset: offset + bytes.len(),
                    ci,
                    needed: needed + 1,
                    have: bytes.len().saturating_sub(1),
                });
            };
            config_ext = Some(ext);
            len += 1;
        }
        Ok(Tpl {
            ci,
            kind,
            header,
            config,
            config_ext,
            len,
        })
    }

    pub fn security_mode(&self) -> u8 {
        self.config.map(|c| c.security_mode()).unwrap_or(0)
    }

    pub fn access_number(&self) -> Option<u8> {
        match self.header {
            Header::Long(h) => Some(h.access_number),
            Header::Short(h) => Some(h.access_number),
            Header::None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_header_mode_5() {
        // security_vectors.md V5a: 7A 85 00 60 85 -> ACC 0x85, CFG 0x8560 (mode 5, 6 blocks).
        let t = Tpl::parse(&[0x7A, 0x85, 0x00, 0x60, 0x85, 0xBC], 10).unwrap();
        assert_eq!(t.kind, TplKind::Short);
        assert_eq!(t.security_mode(), 5);
        assert_eq!(t.config.unwrap().encrypted_blocks(), 6);
        assert!(t.config.unwrap().bidirectional());
        assert_eq!(t.access_number(), Some(0x85));
        assert_eq!(t.len, 5);
    }

    #[test]
    fn mode_7_has_a_config_extension() {
        // V4: 7A 0E 00 90 07 10
        let t = Tpl::parse(&[0x7A, 0x0E, 0x00, 0x90, 0x07, 0x10, 0x0F], 30).unwrap();
        assert_eq!(t.security_mode(), 7);
        assert_eq!(t.config.unwrap().encrypted_blocks(), 9);
        assert_eq!(t.config_ext, Some(0x10));
        assert_eq!(t.len, 6);
    }

    #[test]
    fn long_header() {
        // V5c: 72 71000761 2104 25 07 B5 00 6005
        let b = [
            0x72, 0x71, 0x00, 0x07, 0x61, 0x21, 0x04, 0x25, 0x07, 0xB5, 0x00, 0x60, 0x05,
        ];
        let t = Tpl::parse(&b, 10).unwrap();
        let Header::Long(h) = t.header else { panic!() };
        assert_eq!(h.id.to_string(), "61070071");
        assert_eq!(t.security_mode(), 5);
        assert_eq!(t.config.unwrap().encrypted_blocks(), 6);
        assert_eq!(t.len, 13);
    }

    #[test]
    fn truncation_is_reported() {
        assert_eq!(
            Tpl::parse(&[0x7A, 0x01], 10),
            Err(TplError::Truncated {
                offset: 12,
                ci: 0x7A,
                needed: 4,
                have: 1
            })
        );
        assert_eq!(Tpl::parse(&[], 10), Err(TplError::Missing { offset: 10 }));
    }
}
