//! Diehl PRIOS (IZAR and relatives): the payload is XORed with the output of a 32-bit LFSR
//! seeded from an 8-byte key and the clear frame header. This is obfuscation, not encryption;
//! the public default keys open most meters.

use super::{PriosKey, SecurityError};

/// Bytes before the scrambled part: L C M(2) A(6) CI and four clear PRIOS header bytes.
const HEADER_LEN: usize = 15;

/// First descrambled byte of every valid PRIOS payload.
const PRIOS_MARKER: u8 = 0x4B;

fn be32(bytes: [u8; 4]) -> u32 {
    u32::from_be_bytes(bytes)
}

/// One output byte: eight shifts with feedback from taps 1, 2, 11 and 31.
fn step_byte(state: &mut u32) -> u8 {
    for _ in 0..8 {
        let s = *state;
        let bit = ((s >> 1) ^ (s >> 2) ^ (s >> 11) ^ (s >> 31)) & 1;
        *state = (s << 1) | bit;
    }
    (*state & 0xFF) as u8
}

/// Descrambles a PRIOS frame. `frame` has its DLL CRCs removed and starts at L; the result is
/// the descrambled bytes from frame offset 15 on (so `out[0]` is 0x4B and the totals start at
/// `out[1]`).
pub fn prios_descramble(frame: &[u8], key: &PriosKey) -> Result<Vec<u8>, SecurityError> {
    let out = prios_apply(frame, key)?;
    match out.first() {
        Some(&PRIOS_MARKER) => Ok(out),
        Some(&found) => Err(SecurityError::PriosCheckFailed { found }),
        None => Err(SecurityError::PriosTooShort { len: frame.len() }),
    }
}

/// XORs everything after the 15-byte clear header with the key stream. Scrambling and
/// descrambling are the same operation; the stick simulator uses this to send PRIOS frames.
pub fn prios_apply(frame: &[u8], key: &PriosKey) -> Result<Vec<u8>, SecurityError> {
    let too_short = SecurityError::PriosTooShort { len: frame.len() };
    let Some((header, scrambled)) = frame.split_first_chunk::<HEADER_LEN>() else {
        return Err(too_short);
    };
    if scrambled.is_empty() {
        return Err(too_short);
    }

    let k = key.as_bytes();
    let seed = be32([k[0], k[1], k[2], k[3]]) ^ be32([k[4], k[5], k[6], k[7]]);
    let h = header;
    let mut state = seed
        ^ be32([h[2], h[3], h[4], h[5]])
        ^ be32([h[6], h[7], h[8], h[9]])
        ^ be32([h[10], h[11], h[12], h[13]]);

    Ok(scrambled
        .iter()
        .map(|&b| b ^ step_byte(&mut state))
        .collect())
}

/// Tries the two public default keys in turn.
pub fn prios_try_default_keys(frame: &[u8]) -> Result<Vec<u8>, SecurityError> {
    for key in PriosKey::defaults() {
        match prios_descramble(frame, &key) {
            Err(SecurityError::PriosCheckFailed { .. }) => continue,
            other => return other,
        }
    }
    Err(SecurityError::PriosDefaultKeysFailed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex::decode;

    const DME: &str =
        "2944A511780729662366A20118001378D3B3DB8CEDD77731F25832AAF3DA8CADF9774EA673172E8C61F2";
    const SAP: &str = "1944304c9c5824210c04a363140013716577ec59e8663ab0d31c";
    const HYD: &str = "19442423860775035048A251520015BEB6B2E1ED623A18FC74A5";

    fn le32(out: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(out[at..at + 4].try_into().unwrap())
    }

    fn check(telegram: &str, ci: u8, prefix: &str, total: u32, last_month: u32) {
        let frame = decode(telegram).unwrap();
        assert_eq!(frame[10], ci);
        let out = prios_descramble(&frame, &PriosKey::default_first()).unwrap();
        assert_eq!(out.len(), frame.len() - 15);
        let prefix = decode(prefix).unwrap();
        assert_eq!(out[..prefix.len()], prefix[..]);
        assert_eq!(le32(&out, 1), total);
        assert_eq!(le32(&out, 5), last_month);

        assert_eq!(
            prios_descramble(&frame, &PriosKey::default_second()),
            Err(SecurityError::PriosCheckFailed { found: 0x0B })
        );
        assert_eq!(prios_try_default_keys(&frame), Ok(out));
    }

    #[test]
    fn v7_dme() {
        check(DME, 0xA2, "4B78410000402E00007E2B", 16760, 11840);
    }

    #[test]
    fn v7_sap() {
        check(SAP, 0xA3, "4B2098000023970000A122", 38944, 38691);
    }

    #[test]
    fn v7_hyd() {
        check(HYD, 0xA2, "4B82F50700EBEB0700AF2B", 521_602, 519_147);
    }

    #[test]
    fn default_key_seeds() {
        let seed = |k: &PriosKey| {
            let b = k.as_bytes();
            be32([b[0], b[1], b[2], b[3]]) ^ be32([b[4], b[5], b[6], b[7]])
        };
        assert_eq!(seed(&PriosKey::default_first()), 0xDFD1_09E8);
        assert_eq!(seed(&PriosKey::default_second()), 0xB71F_0AE8);
    }

    #[test]
    fn unknown_key_fails_with_both_defaults() {
        let mut frame = decode(DME).unwrap();
        // Altering a header byte changes the LFSR start, as a meter-specific key would.
        frame[5] ^= 0x5A;
        assert_eq!(
            prios_try_default_keys(&frame),
            Err(SecurityError::PriosDefaultKeysFailed)
        );
    }

    #[test]
    fn short_frames_are_errors() {
        let frame = decode(HYD).unwrap();
        for len in 0..16 {
            assert_eq!(
                prios_descramble(&frame[..len], &PriosKey::default_first()),
                Err(SecurityError::PriosTooShort { len })
            );
            assert_eq!(
                prios_try_default_keys(&frame[..len]),
                Err(SecurityError::PriosTooShort { len })
            );
        }
        let out = prios_descramble(&frame[..16], &PriosKey::default_first()).unwrap();
        assert_eq!(out, [0x4B]);
    }
}
