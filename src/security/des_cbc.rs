//! EN 13757-3 security modes 2 and 3: DES-CBC with an 8-byte key. OMS deprecated them long
//! ago, but radio modules such as Actaris' ActisLink still send them. Mode 2 runs CBC from a
//! zero IV; mode 3 starts from the sender's M and A fields (8 bytes, one DES block).
//!
//! The check is the one modes 5 and 7 have: the plaintext starts with `2F 2F`, so about one
//! wrong key in 65,536 passes it.

use cbc::cipher::{block_padding::NoPadding, BlockModeDecrypt, KeyIvInit};
use des::Des;
use zeroize::Zeroize;

use super::{PriosKey, SecurityError};

/// DES block size.
pub const DES_BLOCK_LEN: usize = 8;

const PLAINTEXT_MARKER: [u8; 2] = [0x2F, 0x2F];

/// The IV of mode 2 (zeros) or 3 (`M(2) A(6)` as on the wire); `None` for other modes.
pub fn des_iv(mode: u8, m: [u8; 2], a: [u8; 6]) -> Option<[u8; 8]> {
    match mode {
        2 => Some([0; 8]),
        3 => {
            let [m0, m1] = m;
            let [a0, a1, a2, a3, a4, a5] = a;
            Some([m0, m1, a0, a1, a2, a3, a4, a5])
        }
        _ => None,
    }
}

/// Decrypts the first `len` bytes of `data` in place (`len` a non-zero multiple of 8) after
/// checking, on a copy of the first block, that the key yields `2F 2F`. On error `data` is
/// unchanged.
pub fn decrypt_des(
    key: &PriosKey,
    iv: &[u8; 8],
    data: &mut [u8],
    len: usize,
) -> Result<usize, SecurityError> {
    if !len.is_multiple_of(DES_BLOCK_LEN) {
        return Err(SecurityError::NoEncryptedBlocks);
    }
    let encrypted = super::cipher_part(data, len)?;
    let mut first = [0u8; DES_BLOCK_LEN];
    if let Some(block) = encrypted.first_chunk::<DES_BLOCK_LEN>() {
        first = *block;
    }
    cbc_decrypt(key, iv, &mut first);
    let marker_ok = first.starts_with(&PLAINTEXT_MARKER);
    first.zeroize();
    if !marker_ok {
        return Err(SecurityError::WrongKey);
    }
    cbc_decrypt(key, iv, encrypted);
    Ok(len)
}

/// `buf.len()` is a multiple of 8; the callers guarantee it.
fn cbc_decrypt(key: &PriosKey, iv: &[u8; 8], buf: &mut [u8]) {
    let decryptor = cbc::Decryptor::<Des>::new(key.as_bytes().into(), iv.into());
    // NoPadding fails only on a partial block, which the callers rule out.
    let _ = decryptor.decrypt_padded::<NoPadding>(buf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbc::cipher::BlockModeEncrypt;

    /// wmbusmeters' actislink test telegram (mode 2, key 0102030405060708): after CFG, two
    /// DES blocks that decrypt to `2F 2F 04 13 E8 03 00 00` (1 m3) and fillers.
    const ACTISLINK: &str = "1E468B050100000004077A01001002BBD1EAFD0222F871CB70DA16C78AE098";

    fn key() -> PriosKey {
        PriosKey::from_bytes([1, 2, 3, 4, 5, 6, 7, 8])
    }

    #[test]
    fn mode_2_decrypts_the_corpus_telegram() {
        let bytes = crate::wire::hex::decode(ACTISLINK).expect("hex");
        let mut data = bytes[15..].to_vec();
        let iv = des_iv(2, [0x8B, 0x05], [1, 0, 0, 0, 4, 7]).expect("mode 2");
        assert_eq!(decrypt_des(&key(), &iv, &mut data, 16), Ok(16));
        assert_eq!(
            data,
            [
                0x2F, 0x2F, 0x04, 0x13, 0xE8, 0x03, 0, 0, 0x2F, 0x2F, 0x2F, 0x2F, 0x2F, 0x2F, 0x2F,
                0x2F
            ]
        );
    }

    #[test]
    fn a_wrong_key_leaves_the_data_alone() {
        let bytes = crate::wire::hex::decode(ACTISLINK).expect("hex");
        let mut data = bytes[15..].to_vec();
        let wrong = PriosKey::from_bytes([1, 2, 3, 4, 5, 6, 7, 9 ^ 0x80]);
        assert_eq!(
            decrypt_des(&wrong, &[0; 8], &mut data, 16),
            Err(SecurityError::WrongKey)
        );
        assert_eq!(data, bytes[15..]);
        assert_eq!(
            decrypt_des(&key(), &[0; 8], &mut data, 12),
            Err(SecurityError::NoEncryptedBlocks)
        );
        assert!(matches!(
            decrypt_des(&key(), &[0; 8], &mut data, 24),
            Err(SecurityError::Truncated { needed: 24, .. })
        ));
    }

    #[test]
    fn mode_3_chains_from_the_address() {
        // No mode 3 telegram is public; this checks that the IV is M then A and that a
        // plaintext encrypted with it (by the `des` crate) comes back.
        let (m, a) = ([0x8B, 0x05], [1, 0, 0, 0, 4, 7]);
        let iv = des_iv(3, m, a).expect("mode 3");
        assert_eq!(iv, [0x8B, 0x05, 1, 0, 0, 0, 4, 7]);
        let plain = [0x2F, 0x2F, 0x04, 0x13, 0x2A, 0, 0, 0];
        let mut data = plain;
        let enc = cbc::Encryptor::<Des>::new(key().as_bytes().into(), (&iv).into());
        enc.encrypt_padded::<NoPadding>(&mut data, 8)
            .expect("one block");
        assert_ne!(data, plain);
        assert_eq!(decrypt_des(&key(), &iv, &mut data, 8), Ok(8));
        assert_eq!(data, plain);
        assert_eq!(des_iv(5, m, a), None);
    }
}
