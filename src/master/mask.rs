//! Secondary addresses and selection masks in the 16-hex-digit form libmbus, node-mbus and
//! ioBroker print (wired.md §4.5): 8 ID digits (most significant first), then the two
//! manufacturer bytes in frame order, the version and the medium, e.g. `000257762D480307`.
//!
//! Wildcards follow EN 13757-3: in the ID every *nibble* may be `F` ("any digit"); the
//! manufacturer, version and medium fields only know a whole wildcard *byte* (0xFF). A mask
//! typed with an `F` in just one nibble of such a byte (`"…F7"`) therefore selects with 0xFF
//! on the wire, and the scan narrows the answers back down to the typed pattern by itself.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Digits in the text form.
const DIGITS: usize = 16;
/// Digits of the identification number (the rest are the four byte fields).
pub(crate) const ID_DIGITS: usize = 8;
/// Manufacturer (2 bytes), version, medium: each wildcarded only as a whole byte.
pub(crate) const BYTE_FIELDS: usize = 4;
const WILD: u8 = 0xF;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MaskParseError {
    #[error(
        "secondary address mask {input:?} has {len} characters; it needs exactly 16 hex digits \
         (8 ID digits, manufacturer, version, medium), e.g. 12345678FFFFFFFF"
    )]
    Length { input: String, len: usize },
    #[error(
        "secondary address mask {input:?} has {found:?} at position {position}; only hex \
         digits 0-9 and A-F are allowed (F is the wildcard)"
    )]
    NotHex {
        input: String,
        position: usize,
        found: char,
    },
}

/// A secondary address with optional wildcards.
///
/// `nibbles` are the 16 digits of the text form; 0xF is a wildcard unless the byte field it
/// belongs to is marked `exact`. Exact byte fields exist because real manufacturer, version
/// and medium bytes can contain an F nibble (medium 0x0F "unknown"), and the scan must be able
/// to probe them as concrete values, which the text form cannot say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecondaryMask {
    nibbles: [u8; DIGITS],
    /// Bit `j` set: byte field `j` (0 = MAN0, 1 = MAN1, 2 = version, 3 = medium) is a
    /// concrete value even where a nibble reads F.
    exact: u8,
}

impl SecondaryMask {
    /// Matches every meter.
    pub const ANY: SecondaryMask = SecondaryMask {
        nibbles: [WILD; DIGITS],
        exact: 0,
    };

    /// The exact address of one meter, from the 8 bytes in select/frame order
    /// (ID LSB first, MAN0, MAN1, version, medium).
    pub fn from_address_bytes(bytes: [u8; 8]) -> SecondaryMask {
        let mut nibbles = [0u8; DIGITS];
        for (i, byte) in bytes.iter().enumerate() {
            let (hi, lo) = nibble_positions(i);
            nibbles[hi] = byte >> 4;
            nibbles[lo] = byte & 0x0F;
        }
        SecondaryMask {
            nibbles,
            exact: (1 << BYTE_FIELDS) - 1,
        }
    }

    /// The 8 data bytes of the select telegram. ID nibbles pass through (F stays a wildcard
    /// digit); a manufacturer, version or medium byte with an F in either nibble becomes the
    /// wildcard byte 0xFF, because EN 13757-3 only allows byte-wise wildcards there.
    pub fn to_select_bytes(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        for (i, byte) in out.iter_mut().enumerate() {
            let (hi, lo) = nibble_positions(i);
            let value = (self.nibbles[hi] << 4) | self.nibbles[lo];
            *byte = match i.checked_sub(4) {
                Some(field)
                    if !self.is_exact(field)
                        && (self.nibbles[hi] == WILD || self.nibbles[lo] == WILD) =>
                {
                    0xFF
                }
                _ => value,
            };
        }
        out
    }

    /// Whether a meter with these address bytes (frame order) falls under the mask as typed,
    /// nibble by nibble; stricter than what the select telegram can express.
    pub fn matches(&self, address: &[u8; 8]) -> bool {
        address.iter().enumerate().all(|(i, &byte)| {
            let (hi, lo) = nibble_positions(i);
            let exact = i.checked_sub(4).is_some_and(|field| self.is_exact(field));
            let ok = |pos: usize, value: u8| {
                self.nibbles[pos] == value || (!exact && self.nibbles[pos] == WILD)
            };
            ok(hi, byte >> 4) && ok(lo, byte & 0x0F)
        })
    }

    /// True when nothing in the mask is a wildcard.
    pub fn is_complete(&self) -> bool {
        (0..ID_DIGITS).all(|d| self.id_digit(d).is_some())
            && (0..BYTE_FIELDS).all(|f| self.byte_field(f).is_some())
    }

    /// ID digit `d` (0 = most significant), `None` for a wildcard.
    pub(crate) fn id_digit(&self, d: usize) -> Option<u8> {
        self.nibbles.get(d).copied().filter(|&n| n != WILD)
    }

    pub(crate) fn with_id_digit(mut self, d: usize, value: u8) -> SecondaryMask {
        if let Some(n) = self.nibbles.get_mut(d) {
            *n = value & 0x0F;
        }
        self
    }

    /// Byte field `field` as a concrete value, `None` if it selects as a wildcard.
    pub(crate) fn byte_field(&self, field: usize) -> Option<u8> {
        let (hi, lo) = (ID_DIGITS + 2 * field, ID_DIGITS + 2 * field + 1);
        let (h, l) = (*self.nibbles.get(hi)?, *self.nibbles.get(lo)?);
        (self.is_exact(field) || (h != WILD && l != WILD)).then_some((h << 4) | l)
    }

    /// Whether `value` fits the (possibly partly wild) pattern typed for byte field `field`.
    pub(crate) fn byte_field_allows(&self, field: usize, value: u8) -> bool {
        let (hi, lo) = (ID_DIGITS + 2 * field, ID_DIGITS + 2 * field + 1);
        let (Some(&h), Some(&l)) = (self.nibbles.get(hi), self.nibbles.get(lo)) else {
            return false;
        };
        if self.is_exact(field) {
            return value == (h << 4) | l;
        }
        (h == WILD || h == value >> 4) && (l == WILD || l == value & 0x0F)
    }

    pub(crate) fn with_byte_field(mut self, field: usize, value: u8) -> SecondaryMask {
        let hi = ID_DIGITS + 2 * field;
        if let (Some(h), true) = (self.nibbles.get_mut(hi), field < BYTE_FIELDS) {
            *h = value >> 4;
            self.nibbles[hi + 1] = value & 0x0F;
            self.exact |= 1 << field;
        }
        self
    }

    fn is_exact(&self, field: usize) -> bool {
        self.exact & (1 << field) != 0
    }
}

/// Text positions (high, low nibble) of select byte `i`: the ID is sent LSB first while the
/// text puts the most significant digit first; the byte fields keep their order.
fn nibble_positions(i: usize) -> (usize, usize) {
    if i < 4 {
        let hi = 2 * (3 - i);
        (hi, hi + 1)
    } else {
        (2 * i, 2 * i + 1)
    }
}

impl Default for SecondaryMask {
    fn default() -> Self {
        SecondaryMask::ANY
    }
}

impl fmt::Display for SecondaryMask {
    /// The 16-digit text form. An exact byte field that contains an F nibble prints the same as
    /// a wildcard; the text form has no way to tell them apart.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for n in self.nibbles {
            write!(f, "{n:X}")?;
        }
        Ok(())
    }
}

impl FromStr for SecondaryMask {
    type Err = MaskParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let len = s.chars().count();
        if len != DIGITS {
            return Err(MaskParseError::Length {
                input: s.to_owned(),
                len,
            });
        }
        let mut nibbles = [0u8; DIGITS];
        for (position, (slot, c)) in nibbles.iter_mut().zip(s.chars()).enumerate() {
            let digit = c.to_digit(16).ok_or_else(|| MaskParseError::NotHex {
                input: s.to_owned(),
                position,
                found: c,
            })?;
            *slot = digit as u8;
        }
        Ok(SecondaryMask { nibbles, exact: 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(s: &str) -> SecondaryMask {
        s.parse().expect("valid mask")
    }

    #[test]
    fn text_round_trip_and_select_bytes() {
        let m = mask("000257762D480307");
        assert_eq!(m.to_string(), "000257762D480307");
        assert_eq!(
            m.to_select_bytes(),
            [0x76, 0x57, 0x02, 0x00, 0x2D, 0x48, 0x03, 0x07]
        );
        assert!(m.is_complete());
        // libmbus #61: the example select telegram's data bytes.
        assert_eq!(
            mask("0002570FFFFFFFFF").to_select_bytes(),
            [0x0F, 0x57, 0x02, 0x00, 0xFF, 0xFF, 0xFF, 0xFF]
        );
        assert_eq!(mask("ffffffffffffffff"), SecondaryMask::ANY);
    }

    #[test]
    fn partial_byte_wildcards_select_the_whole_byte() {
        let m = mask("123456782DF001F7");
        assert_eq!(
            m.to_select_bytes(),
            [0x78, 0x56, 0x34, 0x12, 0x2D, 0xFF, 0x01, 0xFF]
        );
        assert!(m.matches(&[0x78, 0x56, 0x34, 0x12, 0x2D, 0x30, 0x01, 0x07]));
        assert!(!m.matches(&[0x78, 0x56, 0x34, 0x12, 0x2D, 0x31, 0x01, 0x07]));
        assert!(!m.matches(&[0x78, 0x56, 0x34, 0x12, 0x2D, 0x30, 0x01, 0x06]));
        assert!(m.byte_field_allows(3, 0x17));
        assert!(!m.byte_field_allows(3, 0x18));
    }

    #[test]
    fn exact_bytes_with_f_nibbles_stay_concrete() {
        let m = SecondaryMask::ANY.with_byte_field(3, 0x0F);
        assert_eq!(m.to_select_bytes()[7], 0x0F);
        assert_eq!(m.byte_field(3), Some(0x0F));
        let full = SecondaryMask::from_address_bytes([1, 2, 3, 4, 0xFF, 0x2F, 0x0F, 0xF0]);
        assert_eq!(full.to_select_bytes(), [1, 2, 3, 4, 0xFF, 0x2F, 0x0F, 0xF0]);
        assert_eq!(full.to_string(), "04030201FF2F0FF0");
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let e = "1234".parse::<SecondaryMask>().unwrap_err();
        assert!(e.to_string().contains("16 hex digits"), "{e}");
        let e = "12345678FFFFFFFG".parse::<SecondaryMask>().unwrap_err();
        assert_eq!(
            e,
            MaskParseError::NotHex {
                input: "12345678FFFFFFFG".into(),
                position: 15,
                found: 'G'
            }
        );
    }
}
