//! BMeters RFM-TX1 radio modules in manufacturer-specific TPL security mode 16: the first six
//! bytes after the short transport header (the module's volume record) are XORed with the
//! access number and with one of sixteen fixed six-byte masks, chosen by the access number's
//! low nibble. The bytes after them travel as they are. The masks are the same in every
//! module (published in wmbusmeters issue #101), so this is obfuscation, not a key.

use super::SecurityError;

/// How many bytes the scheme scrambles.
pub const BMETERS_SCRAMBLED_LEN: usize = 6;

/// The volume record every module sends first: DIF 0x0C (8 BCD digits), VIF 0x13 (litres).
/// Finding it after unscrambling is the check that the scheme applies to this payload.
const VOLUME_RECORD: [u8; 2] = [0x0C, 0x13];

const MASKS: [[u8; BMETERS_SCRAMBLED_LEN]; 16] = [
    [117, 150, 122, 16, 26, 10],
    [91, 127, 112, 19, 34, 19],
    [179, 24, 185, 11, 142, 153],
    [142, 125, 121, 7, 74, 22],
    [181, 145, 7, 154, 203, 105],
    [184, 163, 50, 161, 57, 14],
    [189, 128, 156, 126, 96, 153],
    [39, 92, 180, 196, 128, 163],
    [48, 208, 10, 206, 25, 3],
    [194, 76, 240, 5, 165, 134],
    [84, 75, 22, 152, 17, 94],
    [75, 238, 12, 201, 125, 162],
    [135, 202, 74, 72, 228, 31],
    [196, 135, 119, 46, 138, 232],
    [227, 48, 189, 120, 87, 140],
    [164, 154, 57, 111, 40, 5],
];

fn apply(access: u8, head: &mut [u8; BMETERS_SCRAMBLED_LEN]) {
    let mask = &MASKS[usize::from(access & 0x0F)];
    for (b, m) in head.iter_mut().zip(mask) {
        *b ^= access ^ m;
    }
}

/// Unscrambles `payload` (the bytes after the transport header) in place. On failure the
/// payload is left as it was.
pub fn bmeters_unscramble(access: u8, payload: &mut [u8]) -> Result<(), SecurityError> {
    let len = payload.len();
    let Some(head) = payload.first_chunk_mut::<BMETERS_SCRAMBLED_LEN>() else {
        return Err(SecurityError::BmetersTooShort { len });
    };
    apply(access, head);
    if head[..2] != VOLUME_RECORD {
        let found = [head[0], head[1]];
        apply(access, head);
        return Err(SecurityError::BmetersCheckFailed { found });
    }
    Ok(())
}

/// Scrambles a payload whose first record is the volume record, as a module does; the stick
/// simulator and the tests use it.
pub fn bmeters_scramble(access: u8, payload: &mut [u8]) -> Result<(), SecurityError> {
    let len = payload.len();
    match payload.first_chunk_mut::<BMETERS_SCRAMBLED_LEN>() {
        Some(head) if head[..2] == VOLUME_RECORD => {
            apply(access, head);
            Ok(())
        }
        Some(head) => Err(SecurityError::BmetersCheckFailed {
            found: [head[0], head[1]],
        }),
        None => Err(SecurityError::BmetersTooShort { len }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex::decode;

    /// wmbusmeters' rfmtx1 test telegram (188.56 m³); the payload starts at byte 15.
    const RFMTX1: &str = "4644B4097172737405077AA50006101115F78184AB0F1D1E200000005904103103208047004A4800E73C00193E00453F003E4000E64000E74100F442000144001545005B460000";

    #[test]
    fn the_volume_record_comes_back() {
        let frame = decode(RFMTX1).unwrap();
        let access = frame[11];
        let mut payload = frame[15..].to_vec();
        bmeters_unscramble(access, &mut payload).unwrap();
        // 0C 13 and BCD 00188560 litres; the rest is untouched.
        assert_eq!(payload[..6], [0x0C, 0x13, 0x60, 0x85, 0x18, 0x00]);
        assert_eq!(payload[6..], frame[21..]);
        bmeters_scramble(access, &mut payload).unwrap();
        assert_eq!(payload[..], frame[15..]);
    }

    #[test]
    fn another_access_number_fails_and_leaves_the_payload() {
        let frame = decode(RFMTX1).unwrap();
        let mut payload = frame[15..].to_vec();
        for access in (0..=255u8).filter(|a| *a != frame[11]) {
            let r = bmeters_unscramble(access, &mut payload);
            assert!(
                matches!(r, Err(SecurityError::BmetersCheckFailed { .. })),
                "access {access:#04x}: {r:?}"
            );
            assert_eq!(payload[..], frame[15..]);
        }
    }

    #[test]
    fn short_payloads_are_errors() {
        for len in 0..BMETERS_SCRAMBLED_LEN {
            let mut p = vec![0u8; len];
            assert_eq!(
                bmeters_unscramble(0, &mut p),
                Err(SecurityError::BmetersTooShort { len })
            );
        }
    }
}
