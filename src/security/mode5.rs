//! OMS security mode 5: AES-128-CBC with a static key and an IV built from the sender's
//! address and the access number.

use aes::cipher::{block_padding::NoPadding, BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use aes::Aes128;
use zeroize::Zeroize;

use super::{Key, SecurityError, BLOCK_LEN};

/// Every OMS plaintext encrypted in mode 5 or 7 starts with two idle fillers; that is the only
/// way to tell a wrong key from a right one.
const PLAINTEXT_MARKER: [u8; 2] = [0x2F, 0x2F];

/// `m` and `a` exactly as on the wire: for a short TPL header (CI 0x7A) the DLL's M and A
/// fields; for a long header (CI 0x72) the TPL's, rebuilt as M, then ID(4) ver type (the TPL
/// sends ID before M).
pub fn mode5_iv(m: [u8; 2], a: [u8; 6], access_number: u8) -> [u8; 16] {
    let mut iv = [access_number; 16];
    let (head, _) = iv.split_at_mut(8);
    let (m_part, a_part) = head.split_at_mut(2);
    m_part.copy_from_slice(&m);
    a_part.copy_from_slice(&a);
    iv
}

/// Decrypts the first `blocks * 16` bytes of `data` in place and returns how many bytes were
/// decrypted; bytes after them are the plaintext tail and stay as they are.
///
/// `blocks` is taken literally. The TPL configuration field's "0 blocks" is ambiguous (all
/// remaining / none), so the caller decides and passes the count, e.g. `data.len() / 16` for
/// "all"; `blocks == 0` is an error because nothing could be checked.
///
/// On error `data` is unchanged: the first block is decrypted and checked for `2F 2F` on a
/// copy before the buffer is touched.
pub fn decrypt_mode5(
    key: &Key,
    iv: &[u8; 16],
    data: &mut [u8],
    blocks: usize,
) -> Result<usize, SecurityError> {
    decrypt_cbc_checked(key, iv, data, blocks)
}

/// Encrypts the first `blocks * 16` bytes of `data` in place, as a meter does: the inverse of
/// [`decrypt_mode5`], for simulated meters (the demo) that must send telegrams a real
/// receiver can only read with the key. The plaintext must start with `2F 2F`, or no receiver
/// could tell a right key from a wrong one; bytes after the blocks stay plain.
pub fn encrypt_mode5(
    key: &Key,
    iv: &[u8; 16],
    data: &mut [u8],
    blocks: usize,
) -> Result<usize, SecurityError> {
    let needed = blocks.saturating_mul(BLOCK_LEN);
    let plain = super::cipher_part(data, needed)?;
    if !plain.starts_with(&PLAINTEXT_MARKER) {
        return Err(SecurityError::PlaintextUnmarked);
    }
    let encryptor = cbc::Encryptor::<Aes128>::new(key.as_bytes().into(), iv.into());
    // Whole blocks by construction, so NoPadding cannot fail.
    let _ = encryptor.encrypt_padded::<NoPadding>(plain, needed);
    Ok(needed)
}

/// CBC decryption followed by the `2F 2F` check, shared by modes 5 and 7 (which differ only
/// in key and IV).
pub(super) fn decrypt_cbc_checked(
    key: &Key,
    iv: &[u8; 16],
    data: &mut [u8],
    blocks: usize,
) -> Result<usize, SecurityError> {
    let needed = blocks.saturating_mul(BLOCK_LEN);
    let encrypted = super::cipher_part(data, needed)?;

    // CBC's first plaintext block depends only on the IV and the first ciphertext block, so a
    // wrong key is detected without destroying the caller's ciphertext.
    let mut first = [0u8; BLOCK_LEN];
    if let Some(block) = encrypted.first_chunk::<BLOCK_LEN>() {
        first = *block;
    }
    cbc_decrypt(key, iv, &mut first);
    let marker_ok = first.starts_with(&PLAINTEXT_MARKER);
    first.zeroize();
    if !marker_ok {
        return Err(SecurityError::WrongKey);
    }

    cbc_decrypt(key, iv, encrypted);
    Ok(needed)
}

/// `buf.len()` must be a multiple of the block size; callers guarantee it.
fn cbc_decrypt(key: &Key, iv: &[u8; 16], buf: &mut [u8]) {
    let decryptor = cbc::Decryptor::<Aes128>::new(key.as_bytes().into(), iv.into());
    // NoPadding only fails on a partial block, which the callers rule out by construction;
    // ignoring the result keeps this path panic-free either way.
    let _ = decryptor.decrypt_padded::<NoPadding>(buf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex::decode;

    /// Splits a short-header (CI 0x7A) wireless telegram with CRCs removed into the IV inputs
    /// and the part after CFG: L C M(2) A(6) CI ACC STS CFG(2) data...
    fn short_header(telegram: &[u8]) -> ([u8; 2], [u8; 6], u8, u16, Vec<u8>) {
        assert_eq!(telegram[10], 0x7A);
        let m = telegram[2..4].try_into().unwrap();
        let a = telegram[4..10].try_into().unwrap();
        let acc = telegram[11];
        let cfg = u16::from_le_bytes([telegram[13], telegram[14]]);
        (m, a, acc, cfg, telegram[15..].to_vec())
    }

    fn cfg_blocks(cfg: u16) -> usize {
        usize::from((cfg >> 4) & 0xF)
    }

    const V5A_TELEGRAM: &str = "6e4401068888888805077a85006085bc2630713819512eb4cd87fba554fb43f67cf9654a68ee8e194088160df752e716238292e8af1ac20986202ee561d743602466915e42f1105d9c6782a54504e4f099e65a7656b930c73a30775122d2fdf074b5035cfaa7e0050bf32faae03a77";

    #[test]
    fn v5a_short_header_zero_key() {
        let telegram = decode(V5A_TELEGRAM).unwrap();
        let (m, a, acc, cfg, mut data) = short_header(&telegram);
        assert_eq!(cfg, 0x8560);
        assert_eq!((cfg >> 8) & 0x1F, 5);
        assert_eq!(cfg_blocks(cfg), 6);
        let iv = mode5_iv(m, a, acc);
        assert_eq!(
            iv.to_vec(),
            decode("01068888888805078585858585858585").unwrap()
        );
        let key = Key::from_bytes([0; 16]);
        assert_eq!(decrypt_mode5(&key, &iv, &mut data, 6), Ok(96));
        assert_eq!(
            data,
            decode("2F2F80C84AFD9308020043820183000A5415586302FCA91510F01200007B01F0120000C91200006D110000D20E0000F5090000B30400006D0000002B0000002B0000002B0000002B0000002B000000A085D9A103FFFFFFFFFFFFFFFFFFFF0A8D").unwrap()
        );
    }

    #[test]
    fn v5a_wrong_key_is_reported_and_buffer_kept() {
        let telegram = decode(V5A_TELEGRAM).unwrap();
        let (m, a, acc, _, mut data) = short_header(&telegram);
        let original = data.clone();
        let mut key_bytes = [0u8; 16];
        key_bytes[15] = 1;
        let key = Key::from_bytes(key_bytes);
        let iv = mode5_iv(m, a, acc);
        assert_eq!(
            decrypt_mode5(&key, &iv, &mut data, 6),
            Err(SecurityError::WrongKey)
        );
        assert_eq!(data, original);

        let mut first: [u8; 16] = original[..16].try_into().unwrap();
        cbc_decrypt(&key, &iv, &mut first);
        assert_eq!(first[..2], [0xB3, 0xEA]);
    }

    #[test]
    fn v5b_partial_encryption_keeps_plain_tail() {
        let telegram = decode("3944FA122162092002067A3600202567C94D48D00DC47B11213E23383DB51968A705AAFA60C60E263D50CD259D7C9A03FD0C08000002FD0B0011").unwrap();
        let (m, a, acc, cfg, mut data) = short_header(&telegram);
        assert_eq!(cfg, 0x2520);
        assert_eq!(cfg_blocks(cfg), 2);
        let iv = mode5_iv(m, a, acc);
        assert_eq!(
            iv.to_vec(),
            decode("FA122162092002063636363636363636").unwrap()
        );
        let key = Key::from_hex("BEDB81B52C29B5C143388CBB0D15A051").unwrap();
        assert_eq!(decrypt_mode5(&key, &iv, &mut data, 2), Ok(32));
        let expected = decode(
            "2F2F046D282A9E2704136A00000002FD17000004933C000000002F2F2F2F2F2F \
             03FD0C08000002FD0B0011",
        )
        .unwrap();
        assert_eq!(data, expected);
    }

    #[test]
    fn v5c_long_header_iv_from_tpl() {
        let telegram = decode("76442104710007612507727100076121042507B5006005E2E95A3C2A1279A5415E6732679B43369FD5FDDDD783EEEBB48236D34E7C94AF0A18A5FDA5F7D64111EB42D4D891622139F2952F9D12A20088DFA4CF8123871123EE1F6C1DCEA414879DDB4E05E508F1826D7EFBA6964DF804C9261EA23BBF03").unwrap();
        // L C M(2) A(6) | CI=72 ID(4) M(2) ver type ACC STS CFG(2) | data
        assert_eq!(telegram[10], 0x72);
        let id = &telegram[11..15];
        let m: [u8; 2] = telegram[15..17].try_into().unwrap();
        let mut a = [0u8; 6];
        a[..4].copy_from_slice(id);
        a[4..].copy_from_slice(&telegram[17..19]);
        let acc = telegram[19];
        let cfg = u16::from_le_bytes([telegram[21], telegram[22]]);
        assert_eq!(cfg, 0x0560);
        let iv = mode5_iv(m, a, acc);
        assert_eq!(
            iv.to_vec(),
            decode("2104710007612507B5B5B5B5B5B5B5B5").unwrap()
        );
        let mut data = telegram[23..].to_vec();
        let key = Key::from_hex("A004EB23329A477F1DD2D7820B56EB3D").unwrap();
        assert_eq!(decrypt_mode5(&key, &iv, &mut data, cfg_blocks(cfg)), Ok(96));
        assert_eq!(
            data,
            decode("2F2F0413281E0700431404B60083011440B300C30114A5AF00830214CBAC00C3021463A8008303149EA500C3031433A200830414C79F00C304148F9C00830514989900C30514CF9700830614269400C30614069100830714C88B0002FD170000").unwrap()
        );
        assert_eq!(u32::from_le_bytes(data[4..8].try_into().unwrap()), 466_472);
    }

    #[test]
    fn encryption_gives_back_the_meters_own_ciphertext() {
        // The Aventies telegram of v5c_long_header_iv_from_tpl, decrypted and encrypted again
        // with the same key and IV, must be the bytes the meter sent.
        let telegram = decode("76442104710007612507727100076121042507B5006005E2E95A3C2A1279A5415E6732679B43369FD5FDDDD783EEEBB48236D34E7C94AF0A18A5FDA5F7D64111EB42D4D891622139F2952F9D12A20088DFA4CF8123871123EE1F6C1DCEA414879DDB4E05E508F1826D7EFBA6964DF804C9261EA23BBF03").unwrap();
        let iv = decode("2104710007612507B5B5B5B5B5B5B5B5").unwrap();
        let iv: [u8; 16] = iv.try_into().unwrap();
        let key = Key::from_hex("A004EB23329A477F1DD2D7820B56EB3D").unwrap();
        let mut data = telegram[23..].to_vec();
        assert_eq!(decrypt_mode5(&key, &iv, &mut data, 6), Ok(96));
        assert_eq!(encrypt_mode5(&key, &iv, &mut data, 6), Ok(96));
        assert_eq!(data, telegram[23..]);
        // A plaintext without the 2F 2F marker is refused and left alone.
        let mut unmarked = vec![0u8; 32];
        assert_eq!(
            encrypt_mode5(&key, &iv, &mut unmarked, 2),
            Err(SecurityError::PlaintextUnmarked)
        );
        assert_eq!(unmarked, vec![0u8; 32]);
        assert_eq!(
            encrypt_mode5(&key, &iv, &mut [0x2F; 20], 2),
            Err(SecurityError::Truncated {
                needed: 32,
                available: 20
            })
        );
    }

    #[test]
    fn truncated_data_says_how_much_is_missing() {
        let telegram = decode(V5A_TELEGRAM).unwrap();
        let (m, a, acc, _, data) = short_header(&telegram);
        let mut short = data[..90].to_vec();
        let key = Key::from_bytes([0; 16]);
        let err = decrypt_mode5(&key, &mode5_iv(m, a, acc), &mut short, 6).unwrap_err();
        assert_eq!(
            err,
            SecurityError::Truncated {
                needed: 96,
                available: 90
            }
        );
        assert!(err.to_string().contains("6 missing"));
        assert_eq!(short, data[..90]);
    }

    #[test]
    fn degenerate_inputs_return_errors() {
        let key = Key::from_bytes([0; 16]);
        let iv = [0u8; 16];
        let mut empty: [u8; 0] = [];
        assert_eq!(
            decrypt_mode5(&key, &iv, &mut empty, 0),
            Err(SecurityError::NoEncryptedBlocks)
        );
        assert!(matches!(
            decrypt_mode5(&key, &iv, &mut empty, 1),
            Err(SecurityError::Truncated {
                needed: 16,
                available: 0
            })
        ));
        let mut some = [0u8; 20];
        assert!(matches!(
            decrypt_mode5(&key, &iv, &mut some, usize::MAX),
            Err(SecurityError::Truncated {
                needed: usize::MAX,
                available: 20
            })
        ));
    }
}
