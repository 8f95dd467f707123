//! What a record's output looks like apart from its value, cached per record shape.
//!
//! A record's DIF, DIFEs, VIF and VIFEs fix most of what the writers print for it: function,
//! storage number, tariff, subunit, quantity, unit, the VIFE descriptions, and the scale its
//! value is multiplied by. A meter sends the same few shapes in every telegram, so the writers
//! build that text once per shape and copy it whole afterwards: a record then costs a lookup
//! and a few large copies instead of a dozen table lookups and small writes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::wire::records::Record;

/// The bytes that fix a record's shape: lengths of the DIB, plain-text unit and VIFEs, the
/// VIF (if any), then the DIB, VIFE and plain-text bytes, packed into 128 bits so a key
/// compares and hashes in a few instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ShapeKey(u128);

/// DIB, VIFE and plain-text bytes that fit next to the three bytes of lengths and VIF.
const KEY_BYTES: usize = 13;

impl ShapeKey {
    /// `None` for records whose DIB, VIFEs and plain-text unit together are longer than
    /// [`KEY_BYTES`] (a long unit text, mostly); the writers render those without the cache.
    #[inline]
    pub(crate) fn of(r: &Record<'_>) -> Option<Self> {
        if r.dib.len() + r.vifes.len() + r.plain_text.len() > KEY_BYTES {
            return None;
        }
        // Lengths first, so that the position of every byte is fixed by the key itself (each
        // is at most 13: four bits do).
        let mut key = [0u8; 16];
        key[0] = (r.dib.len() | r.plain_text.len() << 4) as u8;
        key[1] = r.vifes.len() as u8 | u8::from(r.vif.is_some()) << 7;
        key[2] = r.vif.unwrap_or(0);
        let mut at = 3;
        for part in [r.dib, r.vifes, r.plain_text] {
            for &b in part {
                // Always in range (checked above); `get_mut` keeps the code free of panics.
                if let Some(slot) = key.get_mut(at) {
                    *slot = b;
                }
                at += 1;
            }
        }
        Some(ShapeKey(u128::from_le_bytes(key)))
    }
}

/// Shapes kept before the cache starts over: the 76 frames of the libmbus corpus have 431,
/// a meter a dozen. The bound keeps a stream of random records from growing it for ever
/// (an entry is a few hundred bytes).
const CAPACITY: usize = 1024;

/// Values made once per record shape (by the writer that owns the cache).
pub(crate) struct ShapeCache<T> {
    map: HashMap<ShapeKey, T, BuildHasherDefault<KeyHasher>>,
}

impl<T> ShapeCache<T> {
    pub(crate) const fn new() -> Self {
        ShapeCache {
            map: HashMap::with_hasher(BuildHasherDefault::new()),
        }
    }

    /// The value for `key`, made by `make` the first time the key is seen.
    #[inline]
    pub(crate) fn get_or_make(&mut self, key: ShapeKey, make: impl FnOnce() -> T) -> &T {
        if self.map.len() >= CAPACITY && !self.map.contains_key(&key) {
            self.map.clear();
        }
        self.map.entry(key).or_insert_with(make)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// A multiplicative hash of the key. SipHash would cost more than the lookup it serves; its
/// protection is not needed here: keys come from telegrams, so a sender could craft colliding
/// ones, but with at most [`CAPACITY`] entries the worst a lookup can cost is a scan of those.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u128(&mut self, n: u128) {
        let folded = (n as u64) ^ ((n >> 64) as u64).rotate_left(32);
        self.0 = (self.0 ^ folded).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        // The product's high bits depend on every key bit; the table indexes by the low ones.
        self.0.rotate_left(24)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telegram::decode_wired;
    use crate::wire::hex;

    /// Corpus frame `EDC`: 23 records, several of them of the same shape.
    const EDC: &str = "68 AE AE 68 28 01 72 95 08 12 11 83 14 02 04 17 00 00 00 84 00 86 3B 23 00 00 00 84 00 86 3C D1 01 00 00 84 40 86 3B 00 00 00 00 84 40 86 3C 00 00 00 00 85 00 5B 2B 4B AC 41 85 00 5F 20 D7 AC 41 85 40 5B 00 00 B8 42 85 40 5F 00 00 B8 42 85 00 3B 84 00 35 3F 85 40 3B 00 00 00 00 95 00 3B 95 CF B2 43 95 40 3B 00 00 00 00 85 00 2B 00 00 00 00 85 40 2B 00 00 00 00 95 00 2B D3 9F 90 46 95 40 2B 00 00 00 00 04 6D 19 0F 8A 17 84 00 7C 01 43 F3 0D 00 00 84 40 7C 01 43 9D 01 00 00 84 00 7C 01 63 01 00 00 00 84 40 7C 01 63 01 00 00 00 0F 2F 16";

    #[test]
    fn records_share_a_key_exactly_when_their_dib_and_vib_are_the_same() {
        let bytes = hex::decode(EDC).unwrap();
        let t = decode_wired(&bytes).unwrap();
        let records = &t.records;
        for a in records {
            for b in records {
                let same_bytes = a.dib == b.dib
                    && a.vif == b.vif
                    && a.vifes == b.vifes
                    && a.plain_text == b.plain_text;
                let (ka, kb) = (ShapeKey::of(a).unwrap(), ShapeKey::of(b).unwrap());
                assert_eq!(ka == kb, same_bytes, "{a:?} {b:?}");
            }
        }
        // `84 00 7C 01 43` and `84 00 7C 01 63`: the same bytes but for the unit text.
        let texts: Vec<_> = records
            .iter()
            .filter(|r| !r.plain_text.is_empty())
            .collect();
        assert_eq!(texts.len(), 4);
        assert_ne!(ShapeKey::of(texts[0]), ShapeKey::of(texts[2]));
        // A unit text too long for a key: rendered without the cache.
        let mut long = *texts[0];
        long.plain_text = b"abcdefghijklm";
        assert_eq!(ShapeKey::of(&long), None);
        // 84 00 86 3B and 84 40 86 3B differ in the DIFE only.
        assert_ne!(ShapeKey::of(&records[0]), ShapeKey::of(&records[2]));
        assert_eq!(ShapeKey::of(&records[0]), ShapeKey::of(&records[0]));
    }

    #[test]
    fn a_full_cache_starts_over_instead_of_growing() {
        let mut cache = ShapeCache::new();
        for i in 0..(CAPACITY as u128 + 10) {
            let made = *cache.get_or_make(ShapeKey(i), || i * 2);
            assert_eq!(made, i * 2);
            assert!(cache.len() <= CAPACITY);
        }
        // The key seen last is kept and not made again.
        let last = CAPACITY as u128 + 9;
        assert_eq!(*cache.get_or_make(ShapeKey(last), || 0), last * 2);
    }
}
