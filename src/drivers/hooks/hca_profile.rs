//! The monthly heat cost allocator series in a compact profile record (`8D04 EE13`,
//! `8D04 EE1F`) of Zenner Caltos E and Techem FHKV data IV allocators.

use super::payload::bcd;
use super::{Hook, HookValues};
use crate::telegram::Telegram;

pub const HOOKS: &[Hook] = &[Hook {
    name: "compact_profile_hca",
    values: PROFILE_VALUES,
    decode: decode_compact_profile_hca,
}];

const PROFILE_VALUES: &[&str] = &[
    "profile_1_hca",
    "profile_2_hca",
    "profile_3_hca",
    "profile_4_hca",
    "profile_5_hca",
    "profile_6_hca",
    "profile_7_hca",
    "profile_8_hca",
    "profile_9_hca",
    "profile_10_hca",
    "profile_11_hca",
    "profile_12_hca",
    "profile_13_hca",
    "profile_14_hca",
    "profile_15_hca",
    "profile_16_hca",
    "profile_17_hca",
    "profile_18_hca",
    "profile_19_hca",
    "profile_20_hca",
    "profile_21_hca",
    "profile_22_hca",
    "profile_23_hca",
    "profile_24_hca",
];

/// One element of a compact profile as a number: `size` bytes, least significant first, binary
/// (two's complement) or BCD (a top nibble 0xF is a minus sign). `None` for an unused slot
/// (every byte 0xFF) and for BCD with a non-decimal digit.
fn profile_element(bytes: &[u8], is_bcd: bool) -> Option<f64> {
    if bytes.is_empty() || bytes.iter().all(|&b| b == 0xFF) {
        return None;
    }
    if !is_bcd {
        let mut v: i64 = 0;
        for (i, &b) in bytes.iter().enumerate() {
            v |= i64::from(b) << (8 * i);
        }
        let bits = 8 * bytes.len() as u32;
        if bits < 64 && v & (1 << (bits - 1)) != 0 {
            v -= 1 << bits;
        }
        return Some(v as f64);
    }
    let mut v: i64 = 0;
    let mut negative = false;
    for (i, &b) in bytes.iter().enumerate().rev() {
        let digits = if i + 1 == bytes.len() && b >> 4 == 0x0F {
            negative = true;
            bcd(b & 0x0F)?
        } else {
            bcd(b)?
        };
        v = v * 100 + i64::from(digits);
    }
    Some(if negative { -(v as f64) } else { v as f64 })
}

/// A compact profile (EN 13757-3): one LVAR record (DIF 0x8D here, storage 8) whose VIF is
/// HCA units (0xEE: 0x6E with the extension bit) and whose VIFE says which kind of profile it
/// is, 0x13 (inverse profile) or 0x1F (profile). Its data starts with two bytes:
///
/// - the spacing control byte: bits 0-3 give every element's size and coding, with the codes
///   of a DIF's data field (0x2 a 16-bit integer, 0xB six BCD digits, …); bits 4-5 the spacing
///   unit and bits 6-7 whether the elements are absolute values or increments;
/// - the spacing value (0xFE in the corpus: one month).
///
/// The elements follow back to back. A slot of all 0xFF bytes is unused and gives no value.
///
/// The values are printed as sent (increments are not summed), numbered as wmbusmeters
/// numbers them: in an inverse profile (Caltos E, absolute BCD values, newest first)
/// `profile_1_hca` is the first element, the month before the base date; in a plain profile
/// (FHKV data IV, 16-bit increments) it is the last element.
fn decode_compact_profile_hca(t: &Telegram<'_>, out: &mut HookValues) {
    let Some((record, inverse)) = t.records.iter().find_map(|r| {
        if r.lvar.is_none() || r.vif != Some(0xEE) {
            return None;
        }
        match r.vifes.first().map(|v| v & 0x7F) {
            Some(0x13) => Some((r, true)),
            Some(0x1F) => Some((r, false)),
            _ => None,
        }
    }) else {
        return;
    };
    let Some((&control, elements)) = record.data.split_first() else {
        return;
    };
    // Skip the spacing value byte.
    let Some(elements) = elements.get(1..) else {
        return;
    };
    let (size, is_bcd) = match control & 0x0F {
        0x1 => (1, false),
        0x2 => (2, false),
        0x3 => (3, false),
        0x4 => (4, false),
        0x6 => (6, false),
        0x7 => (8, false),
        0x9 => (1, true),
        0xA => (2, true),
        0xB => (3, true),
        0xC => (4, true),
        0xE => (6, true),
        _ => return,
    };
    let slots: Vec<&[u8]> = elements.chunks_exact(size).collect();
    let ordered: Box<dyn Iterator<Item = &&[u8]>> = if inverse {
        Box::new(slots.iter())
    } else {
        Box::new(slots.iter().rev())
    };
    for (name, slot) in PROFILE_VALUES.iter().zip(ordered) {
        if let Some(v) = profile_element(slot, is_bcd) {
            out.number(name, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::HookValue;
    use super::*;
    use crate::security::{Key, KeyStore};
    use crate::telegram::WirelessDecoder;
    use crate::wire::hex;

    fn profile(key: &str, telegram: &str) -> HookValues {
        let mut keys = KeyStore::new();
        keys.set_default(Key::from_hex(key).unwrap());
        let frame = WirelessDecoder::new(keys)
            .decode(&hex::decode(telegram).unwrap())
            .unwrap();
        let t = frame.telegram().unwrap();
        let mut v = HookValues::default();
        decode_compact_profile_hca(&t, &mut v);
        v
    }

    fn nums(v: &HookValues, n: usize) -> Vec<Option<f64>> {
        (1..=n)
            .map(|i| match v.get(&format!("profile_{i}_hca")) {
                Some(HookValue::Number(x)) => Some(*x),
                None => None,
                other => panic!("profile_{i}_hca: {other:?}"),
            })
            .collect()
    }

    const CALTOS_1: (&str, &str) = (
        "6B6B5EB80884328A7B1E45043D39FAAD",
        "5E44496A91190880FC087A744050052F05BF0C6BAF613A078098E048AE47FFB93083B455065E03DE9B7878C8B3BB063637EA5693160E831CC3D4E0470FABBCD4FEDB09D289A0025CA7960D5C7B8064B1093037E7A0A57908EDB554D17AD587",
    );
    const FHKV_IV: (&str, &str) = (
        "FCF41938F63432975B52505F547FCEDF",
        "4E4468507620541494087AAD004005089D86B62A329B3439873999738F82461ABDE3C7AC78692B363F3B41EB68607F9C9160F550769B065B6EA00A2E44346E29FF5DC5CB86283C69324AD33D137F6F",
    );

    #[test]
    fn caltose_inverse_bcd_profile() {
        // Corpus line 61: 8D04 EE13, 3B FE, then 99, 52, 10, 0 and ten unused FFFFFF slots.
        let v = profile(CALTOS_1.0, CALTOS_1.1);
        assert_eq!(
            nums(&v, 5),
            [Some(99.0), Some(52.0), Some(10.0), Some(0.0), None]
        );
        assert!(v.get("profile_14_hca").is_none());
        // Corpus line 63: values above 99 (BCD 270600 is 627).
        let v = profile(
            "DC7C9EF16126348CDFD52CE6567A9FFD",
            "5E44496A12180880FC087A7040500584A63344B5AF071A23539C6020CBBA81FA6ADCFE738682A0924D4F6F7D89D165C9144E4918CDC2D5F86BE7B5BD8143528273ACCC131A13D0B100F2540DC1F2C379DDE4984236D3BCA424113CF0EE1BBD",
        );
        assert_eq!(
            nums(&v, 5),
            [Some(627.0), Some(395.0), Some(176.0), Some(7.0), None]
        );
        // Corpus line 64.
        let v = profile(
            "750381240D0A7E371D4CB8D1869D8F9B",
            "5E44496A07190880FC087A714050058922C9598BDDDFBB5BBF44B9D54830830EB6BE3BA8117DFC88AE1B251837DFECB04E071554125366EF9D72DCE87C9A099AD0CD9BF70F4A2E9C4C58D780444219C3F546C887FBC2D93C272E314F925473",
        );
        assert_eq!(nums(&v, 4), [Some(2.0), Some(0.0), Some(0.0), Some(0.0)]);
    }

    #[test]
    fn fhkvdataiv_profile_counts_from_the_end() {
        // Corpus line 108: 8D04 EE1F, 72 FE, fourteen 16-bit increments 0 … 0, 3, 22.
        let v = profile(FHKV_IV.0, FHKV_IV.1);
        let mut want = vec![Some(22.0), Some(3.0)];
        want.extend([Some(0.0); 12]);
        want.push(None);
        assert_eq!(nums(&v, 15), want);
    }

    #[test]
    fn elements() {
        assert_eq!(profile_element(&[0xFE, 0xFF], false), Some(-2.0));
        assert_eq!(profile_element(&[0x27, 0x06, 0x00], true), Some(627.0));
        assert_eq!(profile_element(&[0x27, 0xF6], true), Some(-627.0));
        assert_eq!(profile_element(&[0x2A, 0x00], true), None);
        assert_eq!(profile_element(&[0xFF, 0xFF, 0xFF], true), None);
        assert_eq!(profile_element(&[], false), None);
        assert_eq!(profile_element(&[0xFF; 8], false), None);
        assert_eq!(
            profile_element(&[0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], false),
            Some(-2.0)
        );
    }

    #[test]
    fn cut_profiles_do_not_panic() {
        for (key, full) in [CALTOS_1, FHKV_IV] {
            let bytes = hex::decode(full).unwrap();
            let mut keys = KeyStore::new();
            keys.set_default(Key::from_hex(key).unwrap());
            // Decrypt once, then cut the plain frame (no CRCs, no encryption).
            let frame = WirelessDecoder::new(keys).decode(&bytes).unwrap();
            let t = frame.telegram().unwrap();
            for r in &t.records {
                for cut in 0..=r.data.len() {
                    let mut rec = *r;
                    rec.data = &r.data[..cut];
                    let mut t2 = t.clone();
                    t2.records = vec![rec];
                    let mut v = HookValues::default();
                    decode_compact_profile_hca(&t2, &mut v);
                }
            }
        }
    }
}
