//! Hex text as people paste it: `68 1F 1F 68`, `681f1f68`, `68|1F_1F`, with line noise around it.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HexError {
    #[error("not a hex digit: {found:?} at character {offset}")]
    InvalidCharacter { offset: usize, found: char },
    #[error("odd number of hex digits ({digits}): the last byte is missing a digit")]
    OddLength { digits: usize },
    #[error("no hex digits in input")]
    Empty,
}

/// Characters that only separate bytes for readability.
fn is_separator(c: char) -> bool {
    c.is_whitespace() || c == '|' || c == '_' || c == ':' || c == '-'
}

/// Decodes hex text into bytes, ignoring separators. Separators may also split a byte
/// (`6|8` is `68`), because dumps from some tools group by nibble.
pub fn decode(text: &str) -> Result<Vec<u8>, HexError> {
    let mut out = Vec::with_capacity(text.len() / 2);
    decode_into(text, &mut out)?;
    Ok(out)
}

/// What an ASCII byte is in hex text: a nibble (0-15), [`SEPARATOR`] or [`OTHER`].
const SEPARATOR: u8 = 0x10;
const OTHER: u8 = 0xFF;
const ASCII_CLASS: [u8; 256] = {
    let mut t = [OTHER; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    // The ASCII characters `is_separator` accepts (its whitespace is U+0009-U+000D, U+0020).
    let separators = b"\t\n\x0B\x0C\r |_:-";
    let mut i = 0;
    while i < separators.len() {
        t[separators[i] as usize] = SEPARATOR;
        i += 1;
    }
    t
};

/// Like [`decode`] but appends into a caller-owned buffer (reused across lines).
pub fn decode_into(text: &str, out: &mut Vec<u8>) -> Result<(), HexError> {
    // Byte by byte through a table: `decode --format wmbusmeters` over piped telegrams spent
    // an eighth of its time here when it went character by character.
    out.reserve(text.len() / 2);
    let bytes = text.as_bytes();
    let mut high: Option<u8> = None;
    let mut digits = 0usize;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let nibble = match ASCII_CLASS[usize::from(b)] {
            SEPARATOR => {
                i += 1;
                continue;
            }
            OTHER => {
                // Anything else starts a character (`i` stays on character boundaries): a
                // separator outside ASCII, such as a no-break space, or not a hex digit.
                let Some(c) = text.get(i..).and_then(|rest| rest.chars().next()) else {
                    break;
                };
                if is_separator(c) {
                    i += c.len_utf8();
                    continue;
                }
                return Err(HexError::InvalidCharacter {
                    offset: i,
                    found: c,
                });
            }
            nibble => nibble,
        };
        i += 1;
        digits += 1;
        match high.take() {
            Some(h) => out.push(h << 4 | nibble),
            None => high = Some(nibble),
        }
    }
    if high.is_some() {
        return Err(HexError::OddLength { digits });
    }
    if digits == 0 {
        return Err(HexError::Empty);
    }
    Ok(())
}

/// Like [`decode_into`], but a trailing half byte (an odd digit count, which some receivers'
/// logs end with) is dropped instead of refused; returns whether one was. wmbusmeters reads
/// such text the same way. Any other error stays an error.
pub fn decode_into_tolerant(text: &str, out: &mut Vec<u8>) -> Result<bool, HexError> {
    let start = out.len();
    match decode_into(text, out) {
        Ok(()) => Ok(false),
        Err(HexError::OddLength { digits }) if digits > 1 => {
            out.truncate(start);
            // Drop the last hex digit (separators around it do not matter).
            let cut = text
                .char_indices()
                .rfind(|(_, c)| c.is_ascii_hexdigit())
                .map(|(i, _)| i)
                .unwrap_or(text.len());
            decode_into(&text[..cut], out)?;
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

/// Uppercase hex without separators, the form our JSON uses.
pub fn encode_upper(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_upper(&mut s, bytes);
    s
}

pub fn push_upper(s: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xF) as usize] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table reads every text as the character-by-character definition does: digits,
    /// separators (ASCII and not), and the first character that is neither, at its offset.
    #[test]
    fn the_byte_table_agrees_with_the_character_rules() {
        fn by_characters(text: &str) -> Result<Vec<u8>, HexError> {
            let mut out = Vec::new();
            let mut high: Option<u8> = None;
            let mut digits = 0usize;
            for (offset, c) in text.char_indices() {
                if is_separator(c) {
                    continue;
                }
                let Some(v) = c.to_digit(16) else {
                    return Err(HexError::InvalidCharacter { offset, found: c });
                };
                digits += 1;
                match high.take() {
                    Some(h) => out.push(h << 4 | v as u8),
                    None => high = Some(v as u8),
                }
            }
            match (high, digits) {
                (Some(_), _) => Err(HexError::OddLength { digits }),
                (None, 0) => Err(HexError::Empty),
                _ => Ok(out),
            }
        }
        // Every ASCII character and some others, alone and between digits.
        let mut pieces: Vec<String> = (0u8..128).map(|b| char::from(b).to_string()).collect();
        pieces.extend(["\u{a0}", "\u{3000}", "\u{2028}", "é", "€", "𝟘", "ｆ"].map(String::from));
        for p in &pieces {
            for text in [
                p.clone(),
                format!("6{p}8"),
                format!("68{p}1F"),
                format!("{p}{p}a0"),
            ] {
                assert_eq!(decode(&text), by_characters(&text), "{text:?}");
            }
        }
        assert_eq!(decode("68\u{a0}1f | 2A"), Ok(vec![0x68, 0x1F, 0x2A]));
    }

    #[test]
    fn a_trailing_half_byte_is_dropped_only_when_tolerated() {
        let mut out = Vec::new();
        assert_eq!(decode_into_tolerant("68 1F 6", &mut out), Ok(true));
        assert_eq!(out, vec![0x68, 0x1F]);
        out.clear();
        assert_eq!(decode_into_tolerant("681F", &mut out), Ok(false));
        assert_eq!(out, vec![0x68, 0x1F]);
        out.clear();
        assert_eq!(
            decode_into_tolerant("6", &mut out),
            Err(HexError::OddLength { digits: 1 })
        );
        assert!(matches!(
            decode_into_tolerant("68x1", &mut out),
            Err(HexError::InvalidCharacter { offset: 2, .. })
        ));
        assert!(matches!(
            decode("681"),
            Err(HexError::OddLength { digits: 3 })
        ));
    }

    #[test]
    fn separators_are_ignored() {
        assert_eq!(
            decode("68 1f|1F_68\n").unwrap(),
            vec![0x68, 0x1F, 0x1F, 0x68]
        );
        assert_eq!(decode("E5").unwrap(), vec![0xE5]);
        assert_eq!(decode("0|A").unwrap(), vec![0x0A]);
    }

    #[test]
    fn errors_name_the_position() {
        assert_eq!(
            decode("68 1G"),
            Err(HexError::InvalidCharacter {
                offset: 4,
                found: 'G'
            })
        );
        assert_eq!(decode("681"), Err(HexError::OddLength { digits: 3 }));
        assert_eq!(decode("  "), Err(HexError::Empty));
    }

    #[test]
    fn encode_round_trips() {
        let bytes = [0x00, 0x7F, 0xA5, 0xFF];
        assert_eq!(encode_upper(&bytes), "007FA5FF");
        assert_eq!(decode(&encode_upper(&bytes)).unwrap(), bytes);
    }
}
