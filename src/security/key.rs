//! Key material. Keys are secrets: they never appear in `Debug`/`Display` output or in error
//! messages (a config error that echoes the key would put it in logs and bug reports), and
//! their bytes are wiped when the value is dropped.

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Why a key or meter id from the configuration was rejected. Messages describe the shape of
/// the input only (lengths, positions), never its text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("{what} must be {expected} hex digits, got {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error(
        "not a hex digit at position {position} (counting characters from 1, spaces included)"
    )]
    NotHex { position: usize },
    #[error("a meter id must be 8 hex digits (as printed in listen mode, e.g. 12345678), got {got} characters")]
    MeterIdLength { got: usize },
    #[error("a meter id must be 8 hex digits; character {position} is not a hex digit")]
    MeterIdNotHex { position: usize },
}

/// Parses `N` bytes from `2 * N` hex digits, ignoring whitespace so that keys can be pasted in
/// the grouped form meter vendors print on delivery notes.
fn parse_hex<const N: usize>(text: &str, what: &'static str) -> Result<[u8; N], KeyError> {
    let mut out = [0u8; N];
    let mut digits = 0usize;
    for (index, c) in text.chars().enumerate() {
        if c.is_whitespace() {
            continue;
        }
        let Some(nibble) = c.to_digit(16) else {
            out.zeroize();
            return Err(KeyError::NotHex {
                position: index + 1,
            });
        };
        // Digits beyond the expected count are only counted, so the length error can say how
        // many were given.
        if let Some(byte) = out.get_mut(digits / 2) {
            let nibble = nibble as u8;
            *byte = if digits.is_multiple_of(2) {
                nibble << 4
            } else {
                *byte | nibble
            };
        }
        digits += 1;
    }
    if digits != 2 * N {
        out.zeroize();
        return Err(KeyError::Length {
            what,
            expected: 2 * N,
            got: digits,
        });
    }
    Ok(out)
}

/// An AES-128 key (security modes 5 and 7, ELL AES-CTR).
#[derive(Clone)]
pub struct Key([u8; 16]);

impl Key {
    /// Accepts exactly 32 hex digits; whitespace anywhere is ignored.
    pub fn from_hex(text: &str) -> Result<Key, KeyError> {
        parse_hex::<16>(text, "an AES key").map(Key)
    }

    pub const fn from_bytes(bytes: [u8; 16]) -> Key {
        Key(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Zeroize for Key {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for Key {}

/// The 8-byte "manufacturer key" of Diehl PRIOS scrambling (not AES).
#[derive(Clone)]
pub struct PriosKey([u8; 8]);

/// The two PRIOS keys that are public knowledge and used by most IZAR meters in the field.
pub const PRIOS_DEFAULT_KEY_BYTES: [[u8; 8]; 2] = [
    [0x39, 0xBC, 0x8A, 0x10, 0xE6, 0x6D, 0x83, 0xF8],
    [0x51, 0x72, 0x89, 0x10, 0xE6, 0x6D, 0x83, 0xF8],
];

impl PriosKey {
    /// Accepts exactly 16 hex digits; whitespace anywhere is ignored.
    pub fn from_hex(text: &str) -> Result<PriosKey, KeyError> {
        parse_hex::<8>(text, "a PRIOS key").map(PriosKey)
    }

    pub const fn from_bytes(bytes: [u8; 8]) -> PriosKey {
        PriosKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }

    /// Public default key `39BC8A10E66D83F8`.
    pub const fn default_first() -> PriosKey {
        PriosKey(PRIOS_DEFAULT_KEY_BYTES[0])
    }

    /// Public default key `51728910E66D83F8`.
    pub const fn default_second() -> PriosKey {
        PriosKey(PRIOS_DEFAULT_KEY_BYTES[1])
    }

    /// Both public default keys, in the order worth trying.
    pub const fn defaults() -> [PriosKey; 2] {
        [Self::default_first(), Self::default_second()]
    }
}

/// OMS-compliant Diehl meters (mode 5) that were delivered without an individual key use the
/// second public PRIOS key repeated to 16 bytes.
pub fn diehl_oms_default_key() -> Key {
    let [a, b, c, d, e, f, g, h] = PRIOS_DEFAULT_KEY_BYTES[1];
    Key([a, b, c, d, e, f, g, h, a, b, c, d, e, f, g, h])
}

impl fmt::Debug for PriosKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PriosKey(<redacted>)")
    }
}

impl fmt::Display for PriosKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PriosKey(<redacted>)")
    }
}

impl Zeroize for PriosKey {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl Drop for PriosKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for PriosKey {}

/// Meter ids normalised to upper-case ASCII so lookups need no allocation and `1a2b3c4d`
/// finds a key configured as `1A2B3C4D`.
type MeterId = [u8; 8];

fn meter_id(text: &str) -> Result<MeterId, KeyError> {
    let mut id = [0u8; 8];
    let mut count = 0usize;
    for (index, c) in text.trim().chars().enumerate() {
        if let Some(slot) = id.get_mut(index) {
            if !c.is_ascii_hexdigit() {
                return Err(KeyError::MeterIdNotHex {
                    position: index + 1,
                });
            }
            *slot = c.to_ascii_uppercase() as u8;
        }
        count += 1;
    }
    if count != id.len() {
        return Err(KeyError::MeterIdLength { got: count });
    }
    Ok(id)
}

/// AES keys by meter: a per-meter key wins over the default key. 8-byte keys have their own
/// table: Diehl PRIOS customer keys and DES keys (security modes 2 and 3) — the meter's
/// telegram says which of the two it is.
#[derive(Clone, Default)]
pub struct KeyStore {
    default: Option<Key>,
    meters: BTreeMap<MeterId, Key>,
    prios: BTreeMap<MeterId, PriosKey>,
    /// An 8-byte key for every meter (`--key` with 16 hex digits): used for DES only, PRIOS
    /// meters fall back on their public keys.
    short_default: Option<PriosKey>,
}

impl KeyStore {
    pub fn new() -> KeyStore {
        KeyStore::default()
    }

    pub fn set_default(&mut self, key: Key) {
        self.default = Some(key);
    }

    /// `id` is the meter id as 8 hex digits (the DLL/TPL id bytes reversed, as in listen mode);
    /// case does not matter. Replaces an earlier key for the same meter.
    pub fn insert(&mut self, id: &str, key: Key) -> Result<(), KeyError> {
        self.meters.insert(meter_id(id)?, key);
        Ok(())
    }

    /// The key for `id`, else the default key. An id that is not 8 hex digits matches no
    /// per-meter key but still gets the default.
    pub fn get(&self, id: &str) -> Option<&Key> {
        meter_id(id)
            .ok()
            .and_then(|id| self.meters.get(&id))
            .or(self.default.as_ref())
    }

    /// Forgets the key of one meter (a meter removed on the web page); the default stays.
    pub fn remove(&mut self, id: &str) {
        if let Ok(id) = meter_id(id) {
            self.meters.remove(&id);
        }
    }

    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }

    /// A PRIOS key (16 hex digits) for one meter; tried before the public default keys.
    pub fn insert_prios(&mut self, id: &str, key: PriosKey) -> Result<(), KeyError> {
        self.prios.insert(meter_id(id)?, key);
        Ok(())
    }

    pub fn get_prios(&self, id: &str) -> Option<&PriosKey> {
        meter_id(id).ok().and_then(|id| self.prios.get(&id))
    }

    /// An 8-byte key for every meter that uses DES.
    pub fn set_default_des(&mut self, key: PriosKey) {
        self.short_default = Some(key);
    }

    /// The DES key for `id`: its 8-byte key, else the 8-byte default.
    pub fn get_des(&self, id: &str) -> Option<&PriosKey> {
        self.get_prios(id).or(self.short_default.as_ref())
    }

    /// Number of per-meter keys (the default key is not counted).
    pub fn len(&self) -> usize {
        self.meters.len()
    }

    /// No default and no per-meter key: every encrypted telegram will be undecryptable.
    pub fn is_empty(&self) -> bool {
        self.default.is_none()
            && self.meters.is_empty()
            && self.prios.is_empty()
            && self.short_default.is_none()
    }
}

/// Shows which meters have keys (ids are not secret, and knowing them helps when a key seems
/// to be ignored) but no key material.
impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self
            .meters
            .keys()
            .map(|id| std::str::from_utf8(id).unwrap_or("?"))
            .collect();
        f.debug_struct("KeyStore")
            .field("default", &self.default.as_ref().map(|_| "<redacted>"))
            .field(
                "default_des",
                &self.short_default.as_ref().map(|_| "<redacted>"),
            )
            .field("meters", &ids)
            .field(
                "prios_meters",
                &self
                    .prios
                    .keys()
                    .map(|id| std::str::from_utf8(id).unwrap_or("?"))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_HEX: &str = "622b9656991ff0c1574c0950cf9278d1";

    #[test]
    fn from_hex_parses_and_ignores_spaces() {
        let key = Key::from_hex(" 622B9656 991ff0c1\t574c0950 cf9278d1 ").unwrap();
        assert_eq!(
            key.as_bytes(),
            &[
                0x62, 0x2b, 0x96, 0x56, 0x99, 0x1f, 0xf0, 0xc1, 0x57, 0x4c, 0x09, 0x50, 0xcf, 0x92,
                0x78, 0xd1
            ]
        );
    }

    #[test]
    fn from_hex_rejects_wrong_length() {
        let err = Key::from_hex(&KEY_HEX[..31]).unwrap_err();
        assert_eq!(
            err,
            KeyError::Length {
                what: "an AES key",
                expected: 32,
                got: 31
            }
        );
        assert_eq!(err.to_string(), "an AES key must be 32 hex digits, got 31");
        let long = format!("{KEY_HEX}00");
        assert!(matches!(
            Key::from_hex(&long),
            Err(KeyError::Length { got: 34, .. })
        ));
        assert!(matches!(
            Key::from_hex(""),
            Err(KeyError::Length { got: 0, .. })
        ));
    }

    #[test]
    fn from_hex_rejects_non_hex_with_position() {
        let err = Key::from_hex("622b96g6991ff0c1574c0950cf9278d1").unwrap_err();
        assert_eq!(err, KeyError::NotHex { position: 7 });
        assert!(Key::from_hex("0x2b9656991ff0c1574c0950cf9278d1").is_err());
        assert!(Key::from_hex("622b9656991ff0c1574c0950cf9278dé").is_err());
    }

    #[test]
    fn key_error_messages_never_contain_input() {
        let inputs = [
            &KEY_HEX[..31],
            "622b9656991ff0c1574c0950cf9278d1ab",
            "622b9656991ff0c1574c0950cf9278zz",
            "secret-passphrase-622b9656991ff0c1",
        ];
        for input in inputs {
            let err = Key::from_hex(input).unwrap_err();
            let shown = format!("{err} {err:?}");
            // Any run of 4 input characters showing up would be a leak.
            for window in input.as_bytes().windows(4) {
                let piece = std::str::from_utf8(window).unwrap();
                assert!(!shown.contains(piece), "{shown:?} leaks {piece:?}");
            }
        }
        let err = PriosKey::from_hex("39BC8A10E66D83F").unwrap_err();
        assert_eq!(err.to_string(), "a PRIOS key must be 16 hex digits, got 15");
        assert!(!format!("{err:?}").contains("39BC"));
    }

    #[test]
    fn key_formatting_is_redacted() {
        let key = Key::from_hex(KEY_HEX).unwrap();
        for shown in [
            format!("{key:?}"),
            format!("{key}"),
            format!("{key:#?}"),
            format!("{:?}", Some(key.clone())),
        ] {
            assert!(shown.contains("Key(<redacted>)"), "{shown}");
            let lower = shown.to_ascii_lowercase();
            assert!(!lower.contains("622b"), "{shown}");
            assert!(!lower.contains("78d1"), "{shown}");
            assert!(!shown.contains("98"), "decimal bytes leaked: {shown}");
        }
        let prios = PriosKey::default_first();
        assert_eq!(format!("{prios:?}"), "PriosKey(<redacted>)");
        assert_eq!(format!("{prios}"), "PriosKey(<redacted>)");
    }

    #[test]
    fn zeroize_wipes_key_bytes() {
        let mut key = Key::from_hex(KEY_HEX).unwrap();
        key.zeroize();
        assert_eq!(key.as_bytes(), &[0u8; 16]);
        let mut prios = PriosKey::default_second();
        prios.zeroize();
        assert_eq!(prios.as_bytes(), &[0u8; 8]);
    }

    #[test]
    fn prios_defaults_match_published_hex() {
        assert_eq!(
            PriosKey::from_hex("39BC8A10E66D83F8").unwrap().as_bytes(),
            PriosKey::default_first().as_bytes()
        );
        assert_eq!(
            PriosKey::from_hex("5172 8910 E66D 83F8")
                .unwrap()
                .as_bytes(),
            PriosKey::default_second().as_bytes()
        );
        assert_eq!(
            diehl_oms_default_key().as_bytes(),
            Key::from_hex("51728910E66D83F851728910E66D83F8")
                .unwrap()
                .as_bytes()
        );
    }

    #[test]
    fn key_store_prefers_meter_key_over_default() {
        let mut store = KeyStore::new();
        assert!(store.is_empty());
        assert!(store.get("12345678").is_none());

        store.set_default(Key::from_bytes([1; 16]));
        assert!(!store.is_empty());
        assert_eq!(store.get("12345678").unwrap().as_bytes(), &[1; 16]);

        store.insert("000bc37c", Key::from_bytes([2; 16])).unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(store.get("000BC37C").unwrap().as_bytes(), &[2; 16]);
        assert_eq!(store.get("000bc37c").unwrap().as_bytes(), &[2; 16]);
        assert_eq!(store.get("12345678").unwrap().as_bytes(), &[1; 16]);
        assert_eq!(store.get("not an id").unwrap().as_bytes(), &[1; 16]);

        store.insert("000BC37C", Key::from_bytes([3; 16])).unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(store.get("000bc37c").unwrap().as_bytes(), &[3; 16]);
    }

    #[test]
    fn key_store_without_default_only_knows_its_meters() {
        let mut store = KeyStore::new();
        store.insert("76348799", Key::from_bytes([4; 16])).unwrap();
        assert!(!store.is_empty());
        assert!(!store.has_default());
        assert!(store.get("76348799").is_some());
        assert!(store.get("76348798").is_none());
    }

    #[test]
    fn key_store_rejects_malformed_ids() {
        let mut store = KeyStore::new();
        assert_eq!(
            store.insert("1234567", Key::from_bytes([0; 16])),
            Err(KeyError::MeterIdLength { got: 7 })
        );
        assert_eq!(
            store.insert("1234567G", Key::from_bytes([0; 16])),
            Err(KeyError::MeterIdNotHex { position: 8 })
        );
        assert_eq!(
            store.insert("12345é7", Key::from_bytes([0; 16])),
            Err(KeyError::MeterIdNotHex { position: 6 })
        );
        assert!(store.is_empty());
    }

    #[test]
    fn key_store_debug_is_redacted() {
        let mut store = KeyStore::new();
        store.set_default(Key::from_hex(KEY_HEX).unwrap());
        store
            .insert(
                "76348799",
                Key::from_hex("28F64A24988064A079AA2C807D6102AE").unwrap(),
            )
            .unwrap();
        let shown = format!("{store:?}");
        assert!(shown.contains("76348799"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let lower = shown.to_ascii_lowercase();
        assert!(
            !lower.contains("622b") && !lower.contains("28f6"),
            "{shown}"
        );
    }
}
