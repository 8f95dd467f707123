//! OMS security mode 7: per-message keys derived with AES-CMAC (KDF-A) from the meter's
//! master key, an AFL MAC over the telegram, and AES-128-CBC with a zero IV.

use aes::Aes128;
use cmac::{Cmac, KeyInit, Mac};
use zeroize::Zeroize;

use super::mode5::decrypt_cbc_checked;
use super::{Key, SecurityError};

/// Derivation constants for the meter-to-gateway direction; the gateway-to-meter pair
/// (0x10/0x11) is not needed by a receiver.
const DC_ENC_FROM_METER: u8 = 0x00;
const DC_MAC_FROM_METER: u8 = 0x01;

fn cmac_key(key: &Key) -> Cmac<Aes128> {
    <Cmac<Aes128> as KeyInit>::new(key.as_bytes().into())
}

/// KDF-A: `CMAC(K, DC || MCR || ID || 07 × 7)`; the 07 bytes are the padding the OMS
/// specification fixes for a 9-byte input.
fn derive(master: &Key, dc: u8, mcr: [u8; 4], id: [u8; 4]) -> Key {
    let mut input = [0x07u8; 16];
    input[0] = dc;
    let (_, rest) = input.split_at_mut(1);
    let (mcr_part, rest) = rest.split_at_mut(4);
    let (id_part, _) = rest.split_at_mut(4);
    mcr_part.copy_from_slice(&mcr);
    id_part.copy_from_slice(&id);

    let mut mac = cmac_key(master);
    mac.update(&input);
    let mut bytes: [u8; 16] = mac.finalize().into_bytes().into();
    let key = Key::from_bytes(bytes);
    bytes.zeroize();
    key
}

/// Returns `(Kenc, Kmac)`. `mcr` is the AFL message counter and `id` the meter id, both as on
/// the wire; `id` comes from the TPL long header when there is one, else from the DLL.
pub fn derive_keys(master: &Key, mcr: [u8; 4], id: [u8; 4]) -> (Key, Key) {
    (
        derive(master, DC_ENC_FROM_METER, mcr, id),
        derive(master, DC_MAC_FROM_METER, mcr, id),
    )
}

/// Checks the AFL MAC. `mac_input` is `MCL || MCR || [ML] ||` the telegram from the TPL CI to
/// its last byte (DLL CRCs removed); `received` is the AFL MAC field, whose length (2 to 16
/// bytes by the AT code) is the truncation. Comparison is constant-time.
///
/// Call this before [`decrypt_mode7`]: a mismatch means either a wrong key or a forged or
/// damaged telegram, and neither should be decrypted.
pub fn verify_mac(kmac: &Key, mac_input: &[u8], received: &[u8]) -> Result<(), SecurityError> {
    if received.is_empty() || received.len() > 16 {
        return Err(SecurityError::MacLength {
            len: received.len(),
        });
    }
    let mut mac = cmac_key(kmac);
    mac.update(mac_input);
    mac.verify_truncated_left(received)
        .map_err(|_| SecurityError::MacMismatch)
}

/// Decrypts the first `blocks * 16` bytes of `data` in place with `Kenc` and a zero IV and
/// checks for `2F 2F`; same contract as [`super::decrypt_mode5`] (`blocks` literal, buffer
/// unchanged on error).
pub fn decrypt_mode7(kenc: &Key, data: &mut [u8], blocks: usize) -> Result<usize, SecurityError> {
    decrypt_cbc_checked(kenc, &[0u8; 16], data, blocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex::decode;

    /// V4 after removing the frame-format-B CRCs.
    const V4_STRIPPED: &str = "BE44C5140443054300048C200E900F002C25895E02003B0877D31DA840B17A0E009007100F8FAD4C4E61400DA4F3B1F7E273CC4C5C07F93CD20B237345DB39F9A98F8415E1C4B7A25C86E4C22D05C3352FA7E2E5627031F14643063F1DC8FE2C32459B6F02E4234B447B18E4BFDA8C4DA9B1EDE6CF29D0B2122A3E8B9DEEE6DBE6617B4E709EC6B595179CB01C2C0BDE6723A345B708652880C114A58DA07C73AD9EB8ACB17FA0A88F19BC84CB1FC56672DE8A9603FD0C05010002FD0B2111";

    const V4_MASTER: &str = "622b9656991ff0c1574c0950cf9278d1";

    // Offsets from the V4 layout table.
    const ID: std::ops::Range<usize> = 4..8;
    const MCL: usize = 17;
    const MCR: std::ops::Range<usize> = 18..22;
    const AFL_MAC: std::ops::Range<usize> = 22..30;
    const TPL_CI: usize = 30;
    const CFG: std::ops::Range<usize> = 33..35;
    const CIPHERTEXT: usize = 36;

    fn v4() -> Vec<u8> {
        let frame = decode(V4_STRIPPED).unwrap();
        assert_eq!(frame.len(), 191);
        assert_eq!(frame[13], 0x90);
        assert_eq!(frame[TPL_CI], 0x7A);
        frame
    }

    fn v4_keys(frame: &[u8]) -> (Key, Key) {
        let master = Key::from_hex(V4_MASTER).unwrap();
        derive_keys(
            &master,
            frame[MCR].try_into().unwrap(),
            frame[ID].try_into().unwrap(),
        )
    }

    fn v4_mac_input(frame: &[u8]) -> Vec<u8> {
        let mut input = vec![frame[MCL]];
        input.extend_from_slice(&frame[MCR]);
        input.extend_from_slice(&frame[TPL_CI..]);
        input
    }

    #[test]
    fn v4_kdf_a_keys() {
        let frame = v4();
        assert_eq!(frame[MCR], [0x89, 0x5E, 0x02, 0x00]);
        let (kenc, kmac) = v4_keys(&frame);
        assert_eq!(
            kenc.as_bytes().to_vec(),
            decode("BB13AB0FBBC1F043BDAA104CC8D2D428").unwrap()
        );
        assert_eq!(
            kmac.as_bytes().to_vec(),
            decode("A69BD3F061C0C21E90D55D3F34117650").unwrap()
        );
    }

    #[test]
    fn v4_mac_verifies_at_any_truncation() {
        let frame = v4();
        let (_, kmac) = v4_keys(&frame);
        let input = v4_mac_input(&frame);
        assert_eq!(input.len(), 166);
        assert_eq!(verify_mac(&kmac, &input, &frame[AFL_MAC]), Ok(()));

        let full = decode("3B0877D31DA840B166321ADF3F4FA305").unwrap();
        for len in 1..=16 {
            assert_eq!(verify_mac(&kmac, &input, &full[..len]), Ok(()), "{len}");
        }
    }

    #[test]
    fn v4_mac_mismatch() {
        let frame = v4();
        let (kenc, kmac) = v4_keys(&frame);
        let mut input = v4_mac_input(&frame);
        assert_eq!(
            verify_mac(&kenc, &input, &frame[AFL_MAC]),
            Err(SecurityError::MacMismatch)
        );
        input[40] ^= 0x01;
        assert_eq!(
            verify_mac(&kmac, &input, &frame[AFL_MAC]),
            Err(SecurityError::MacMismatch)
        );
    }

    #[test]
    fn mac_length_out_of_range() {
        let kmac = Key::from_bytes([0; 16]);
        assert_eq!(
            verify_mac(&kmac, b"", &[]),
            Err(SecurityError::MacLength { len: 0 })
        );
        assert_eq!(
            verify_mac(&kmac, b"", &[0; 17]),
            Err(SecurityError::MacLength { len: 17 })
        );
    }

    #[test]
    fn v4_decrypts_144_bytes() {
        let frame = v4();
        let (kenc, _) = v4_keys(&frame);
        let cfg = u16::from_le_bytes(frame[CFG].try_into().unwrap());
        assert_eq!((cfg >> 8) & 0x1F, 7);
        let blocks = usize::from((cfg >> 4) & 0xF);
        assert_eq!(blocks, 9);
        assert_eq!((frame[CFG.end] >> 4) & 0x3, 1, "KDF-A");

        let mut data = frame[CIPHERTEXT..].to_vec();
        assert_eq!(decrypt_mode7(&kenc, &mut data, blocks), Ok(144));
        let expected = decode(
            "2F2F046D3A2A283C04067D24000004131794140001FD1700426C1F3C4406250B0000840106532300008402064E1F00008403063E1D00008404063E1D00008405063E1D00008406063E1D00008407063E1D0000840806081D0000840906ED1A0000840A0685160000840B064F110000840C06250B0000840D066E050000840E0609010000840F06000000002F2F2F2F2F \
             03FD0C05010002FD0B2111",
        )
        .unwrap();
        assert_eq!(data, expected);
    }

    #[test]
    fn v4_wrong_key_keeps_buffer() {
        let frame = v4();
        let (_, kmac) = v4_keys(&frame);
        let mut data = frame[CIPHERTEXT..].to_vec();
        assert_eq!(
            decrypt_mode7(&kmac, &mut data, 9),
            Err(SecurityError::WrongKey)
        );
        assert_eq!(data, frame[CIPHERTEXT..]);
    }

    #[test]
    fn v4_truncated_ciphertext() {
        let frame = v4();
        let (kenc, _) = v4_keys(&frame);
        let mut data = frame[CIPHERTEXT..CIPHERTEXT + 100].to_vec();
        assert_eq!(
            decrypt_mode7(&kenc, &mut data, 9),
            Err(SecurityError::Truncated {
                needed: 144,
                available: 100
            })
        );
    }
}
