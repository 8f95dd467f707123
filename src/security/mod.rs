//! Decryption and authentication of wireless M-Bus telegrams: OMS security modes 5 and 7
//! (AES-128-CBC, CMAC), modes 2 and 3 (DES-CBC), ELL AES-128-CTR (CI 0x8D) and Diehl PRIOS
//! descrambling, and the BMeters RFM-TX1 mask (mode 16).
//!
//! Everything here works on byte slices the telegram pipeline has already located; it does not
//! parse headers. Errors do not know which meter they belong to (the caller adds the id) and
//! never carry key material.
//!
//! Functions that decrypt in place leave the buffer unchanged when they return an error, so a
//! telegram that fails with one key can be retried with another.

mod bmeters;
mod des_cbc;
mod ell_ctr;
mod key;
mod mode5;
mod mode7;
mod prios;

pub use bmeters::{bmeters_scramble, bmeters_unscramble, BMETERS_SCRAMBLED_LEN};
pub use des_cbc::{decrypt_des, des_iv, DES_BLOCK_LEN};
pub use ell_ctr::{decrypt_ell, ell_iv, payload_crc_ok};
pub use key::{diehl_oms_default_key, Key, KeyError, KeyStore, PriosKey, PRIOS_DEFAULT_KEY_BYTES};
pub use mode5::{decrypt_mode5, encrypt_mode5, mode5_iv};
pub use mode7::{decrypt_mode7, derive_keys, verify_mac};
pub use prios::{prios_apply, prios_descramble, prios_try_default_keys};

use thiserror::Error;

/// AES block size; modes 5 and 7 count their encrypted part in these.
pub const BLOCK_LEN: usize = 16;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SecurityError {
    #[error(
        "the telegram ends inside its encrypted part: {needed} bytes are needed but only \
         {available} are present ({} missing); the telegram was cut off or its block count \
         is wrong",
        missing(*.needed, *.available)
    )]
    Truncated { needed: usize, available: usize },
    #[error(
        "the encrypted block count is 0, so there is nothing to decrypt or check; if the \
         configuration field says 0 blocks, pass the number of whole blocks in the telegram"
    )]
    NoEncryptedBlocks,
    #[error(
        "decryption did not yield 2F 2F: the AES key is wrong for this meter; check the \
         configured key"
    )]
    WrongKey,
    #[error(
        "the message authentication code does not match: the AES key is wrong for this meter \
         or the telegram was altered; check the configured key"
    )]
    MacMismatch,
    #[error(
        "a truncated MAC must be 1 to 16 bytes long, the telegram carries {len}; its AFL \
         header is malformed"
    )]
    MacLength { len: usize },
    #[error(
        "ELL payload CRC mismatch after decryption (stored {stored:#06X}, computed \
         {computed:#06X}): the AES key is wrong for this meter; check the configured key"
    )]
    PayloadCrc { stored: u16, computed: u16 },
    #[error(
        "the ELL encrypted part is {len} bytes, shorter than its 2-byte payload CRC; the \
         telegram was cut off"
    )]
    EllTooShort { len: usize },
    #[error(
        "PRIOS descrambling did not yield 0x4B (got {found:#04X}): the PRIOS key is wrong for \
         this meter; check the configured 16-hex-digit key"
    )]
    PriosCheckFailed { found: u8 },
    #[error(
        "PRIOS descrambling failed with both public default keys: this meter uses its own \
         key; configure its 16-hex-digit PRIOS key"
    )]
    PriosDefaultKeysFailed,
    #[error(
        "a PRIOS frame needs at least 16 bytes (15 header bytes and 1 data byte), got {len}; \
         the telegram was cut off"
    )]
    PriosTooShort { len: usize },
    #[error(
        "the BMeters mask did not uncover the volume record 0C 13 (got {:02X} {:02X}): the \
         payload is not in the RFM-TX1 layout",
        found[0], found[1]
    )]
    BmetersCheckFailed { found: [u8; 2] },
    #[error(
        "a BMeters scrambled payload needs at least 6 bytes, got {len}; the telegram was cut off"
    )]
    BmetersTooShort { len: usize },
    #[error(
        "the plaintext to encrypt does not start with 2F 2F, so a receiver could not tell a \
         right key from a wrong one; start the record area with two fillers"
    )]
    PlaintextUnmarked,
}

/// The first `len` bytes of `data`, the part a cipher works on: `NoEncryptedBlocks` when the
/// header announces none, `Truncated` when the telegram ends before the part does.
fn cipher_part(data: &mut [u8], len: usize) -> Result<&mut [u8], SecurityError> {
    if len == 0 {
        return Err(SecurityError::NoEncryptedBlocks);
    }
    let available = data.len();
    data.get_mut(..len).ok_or(SecurityError::Truncated {
        needed: len,
        available,
    })
}

fn missing(needed: usize, available: usize) -> usize {
    needed.saturating_sub(available)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_actionable() {
        let err = SecurityError::Truncated {
            needed: 96,
            available: 90,
        };
        assert!(err.to_string().contains("(6 missing)"), "{err}");
        let err = SecurityError::WrongKey;
        assert!(err.to_string().contains("2F 2F"), "{err}");
        let err = SecurityError::PayloadCrc {
            stored: 0x9F97,
            computed: 0x3134,
        };
        assert!(
            err.to_string().contains("stored 0x9F97, computed 0x3134"),
            "{err}"
        );
        let err = SecurityError::PriosCheckFailed { found: 0x0B };
        assert!(err.to_string().contains("got 0x0B"), "{err}");
    }
}
