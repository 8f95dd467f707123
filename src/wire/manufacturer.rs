//! The 2-byte manufacturer field (EN 62056-21 flag association ID): three letters, 5 bits each.

use std::fmt;

/// Manufacturer code as sent on the wire (little-endian u16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Manufacturer(pub u16);

impl Manufacturer {
    pub fn from_le_bytes(bytes: [u8; 2]) -> Self {
        Manufacturer(u16::from_le_bytes(bytes))
    }

    /// The three letters. Each 5-bit group maps 1..=26 to A..=Z; other values still print
    /// (as the character at 64 + n) so an odd code stays visible instead of being dropped.
    /// Bit 15 is masked: some wireless meters set it (hard-coded vs. configured flag).
    pub fn letters(self) -> [u8; 3] {
        let m = self.0 & 0x7FFF;
        [
            ((m >> 10) & 0x1F) as u8 + 64,
            ((m >> 5) & 0x1F) as u8 + 64,
            (m & 0x1F) as u8 + 64,
        ]
    }

    /// Builds the field from three letters (used by simulators and tests).
    pub fn from_letters(code: &str) -> Option<Self> {
        let b = code.as_bytes();
        if b.len() != 3 || !b.iter().all(|c| c.is_ascii_uppercase()) {
            return None;
        }
        let n = |c: u8| u16::from(c - 64);
        Some(Manufacturer(n(b[0]) << 10 | n(b[1]) << 5 | n(b[2])))
    }
}

impl fmt::Display for Manufacturer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.letters() {
            fmt::Write::write_char(f, c as char)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kamstrup() {
        let m = Manufacturer::from_le_bytes([0x2D, 0x2C]);
        assert_eq!(m.to_string(), "KAM");
        assert_eq!(Manufacturer::from_letters("KAM"), Some(m));
    }

    #[test]
    fn high_bit_does_not_break_decoding() {
        // 0xA511 with bit 15 set must read like 0x2511 ("IZA" would be 0x2681; check the mask).
        let m = Manufacturer(0x8000 | Manufacturer::from_letters("DME").unwrap().0);
        assert_eq!(m.to_string(), "DME");
    }

    #[test]
    fn zero_prints_at_signs() {
        assert_eq!(Manufacturer(0).to_string(), "@@@");
    }
}
