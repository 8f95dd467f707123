//! ELL encryption (CI 0x8D/0x8F with ENC = 1): AES-128-CTR over the payload CRC and payload.

use aes::cipher::{KeyIvInit, StreamCipher};
use aes::Aes128;

use super::{Key, SecurityError};
use crate::wire::crc::crc16_en13757;

/// CC bits that change between retransmissions of the same message (hop and repeated
/// access) and are therefore masked out of the IV.
const CC_IV_MASK: u8 = !0x12;

/// `m` and `a` as on the wire (DLL fields), `sn` the ELL session number as on the wire. The
/// frame number and block counter start at 0; the block counter is advanced by the CTR mode.
pub fn ell_iv(m: [u8; 2], a: [u8; 6], cc: u8, sn: [u8; 4]) -> [u8; 16] {
    let mut iv = [0u8; 16];
    let (m_part, rest) = iv.split_at_mut(2);
    let (a_part, rest) = rest.split_at_mut(6);
    let (cc_part, rest) = rest.split_at_mut(1);
    let (sn_part, _) = rest.split_at_mut(4);
    m_part.copy_from_slice(&m);
    a_part.copy_from_slice(&a);
    cc_part.copy_from_slice(&[cc & CC_IV_MASK]);
    sn_part.copy_from_slice(&sn);
    iv
}

fn apply_ctr(key: &Key, iv: &[u8; 16], data: &mut [u8]) {
    ctr::Ctr128BE::<Aes128>::new(key.as_bytes().into(), iv.into()).apply_keystream(data);
}

fn crc_check(data: &[u8]) -> Result<(), SecurityError> {
    let Some((stored, payload)) = data.split_first_chunk::<2>() else {
        return Err(SecurityError::EllTooShort { len: data.len() });
    };
    let stored = u16::from_le_bytes(*stored);
    let computed = crc16_en13757(payload);
    if stored == computed {
        Ok(())
    } else {
        Err(SecurityError::PayloadCrc { stored, computed })
    }
}

/// Decrypts `data` in place: it starts at the 2-byte payload CRC (little-endian) and runs to
/// the end of the frame. CTR mode cannot fail by itself, so the decrypted payload CRC is what
/// tells a wrong key apart; on a mismatch the keystream is applied again, which restores the
/// ciphertext, and `data` is returned unchanged.
pub fn decrypt_ell(key: &Key, iv: &[u8; 16], data: &mut [u8]) -> Result<(), SecurityError> {
    if data.len() < 2 {
        return Err(SecurityError::EllTooShort { len: data.len() });
    }
    apply_ctr(key, iv, data);
    let checked = crc_check(data);
    if checked.is_err() {
        apply_ctr(key, iv, data);
    }
    checked
}

/// For ELL telegrams sent without encryption (ENC = 0) that still carry the payload CRC:
/// `data` starts at the CRC, as for [`decrypt_ell`].
pub fn payload_crc_ok(data: &[u8]) -> bool {
    crc_check(data).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex::decode;

    const KEY: &str = "28F64A24988064A079AA2C807D6102AE";

    /// L C M(2) A(6) CI=8D CC ACC SN(4) | encrypted from byte 17.
    fn split(telegram: &[u8]) -> ([u8; 16], Vec<u8>) {
        assert_eq!(telegram[10], 0x8D);
        let m = telegram[2..4].try_into().unwrap();
        let a = telegram[4..10].try_into().unwrap();
        let cc = telegram[11];
        let sn: [u8; 4] = telegram[13..17].try_into().unwrap();
        assert_eq!(sn[3] >> 5, 1, "ENC = AES-CTR");
        (ell_iv(m, a, cc, sn), telegram[17..].to_vec())
    }

    const V6A: &str =
        "2A442D2C998734761B168D2091D37CAC21E1D68CDAFFCD3DC452BD802913FF7B1706CA9E355D6C2701CC24";

    #[test]
    fn v6a_full_frame() {
        let telegram = decode(V6A).unwrap();
        let (iv, mut data) = split(&telegram);
        assert_eq!(
            iv.to_vec(),
            decode("2D2C998734761B1620D37CAC21000000").unwrap()
        );
        let key = Key::from_hex(KEY).unwrap();
        assert_eq!(decrypt_ell(&key, &iv, &mut data), Ok(()));
        assert_eq!(
            data,
            decode("576C 78 02FF207100 041308190000 441308190000 615B7F 616713").unwrap()
        );
        assert!(payload_crc_ok(&data));
    }

    #[test]
    fn v6a_wrong_key_reports_crc_and_keeps_buffer() {
        let telegram = decode(V6A).unwrap();
        let (iv, mut data) = split(&telegram);
        let original = data.clone();
        let key = Key::from_hex("28F64A24988064A079AA2C807D6102AF").unwrap();
        assert_eq!(
            decrypt_ell(&key, &iv, &mut data),
            Err(SecurityError::PayloadCrc {
                stored: 0x9F97,
                computed: 0x3134
            })
        );
        assert_eq!(data, original);
    }

    #[test]
    fn v6b_compact_frame() {
        let telegram =
            decode("23442D2C998734761B168D20983081B2227A6FA1F10E1B79B5EB4B17E81F930E937EE06C")
                .unwrap();
        let (iv, mut data) = split(&telegram);
        assert_eq!(
            iv.to_vec(),
            decode("2D2C998734761B16203081B222000000").unwrap()
        );
        let key = Key::from_hex(KEY).unwrap();
        assert_eq!(decrypt_ell(&key, &iv, &mut data), Ok(()));
        assert_eq!(
            data,
            decode("C33D 79 EDA8 E475 710009190000091900007F16").unwrap()
        );
    }

    #[test]
    fn iv_masks_hop_and_repeat_bits() {
        let plain = ell_iv([1, 2], [3, 4, 5, 6, 7, 8], 0x20, [9, 10, 11, 12]);
        let relayed = ell_iv([1, 2], [3, 4, 5, 6, 7, 8], 0x32, [9, 10, 11, 12]);
        assert_eq!(plain, relayed);
        assert_eq!(
            plain,
            [1, 2, 3, 4, 5, 6, 7, 8, 0x20, 9, 10, 11, 12, 0, 0, 0]
        );
    }

    #[test]
    fn short_inputs() {
        let key = Key::from_hex(KEY).unwrap();
        let iv = [0u8; 16];
        let mut one = [0xAA];
        assert_eq!(
            decrypt_ell(&key, &iv, &mut one),
            Err(SecurityError::EllTooShort { len: 1 })
        );
        assert_eq!(one, [0xAA]);
        assert!(!payload_crc_ok(&[]));
        assert!(!payload_crc_ok(&[0x57]));
        // The CRC of nothing is 0xFFFF.
        assert!(payload_crc_ok(&[0xFF, 0xFF]));
    }
}
