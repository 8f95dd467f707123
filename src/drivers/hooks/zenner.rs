//! Zenner water meters (version 0x0B): three 32-bit words after DIF 0x0F.

use super::payload::{manufacturer_data, u32_le};
use super::{Hook, HookValues};
use crate::telegram::Telegram;

pub const HOOKS: &[Hook] = &[Hook {
    name: "zenner0b",
    values: &["status", "target_m3", "total_m3"],
    decode: decode_zenner0b,
}];

/// After DIF 0x0F: a status word, this month's and the total volume, each u32 LE, volumes in
/// 1/256000 m³. A status of 0 is `OK`, any other prints as `STATUS_<hex>`.
fn decode_zenner0b(t: &Telegram<'_>, out: &mut HookValues) {
    let Some(b) = manufacturer_data(t) else {
        return;
    };
    if let Some(s) = u32_le(b, 0) {
        out.text(
            "status",
            if s == 0 {
                "OK".to_string()
            } else {
                format!("STATUS_{s:X}")
            },
        );
    }
    if let Some(v) = u32_le(b, 4) {
        out.number("target_m3", f64::from(v) / 256_000.0);
    }
    if let Some(v) = u32_le(b, 8) {
        out.number("total_m3", f64::from(v) / 256_000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::hooks::testing::{number as num, run as values, text};

    #[test]
    fn zenner0b_words() {
        // Corpus line 371.
        let v = values(
            decode_zenner0b,
            "1E44496A677308500B167AD80010252F2F0F80BF1B0080BF1B0000A6420000",
        );
        assert_eq!(text(&v, "status"), "STATUS_1BBF80");
        assert_eq!(num(&v, "target_m3"), 7.1035);
        assert_eq!(num(&v, "total_m3"), 17.062);
        // Corpus line 370.
        let v = values(
            decode_zenner0b,
            "1E44496A677308500B167AD80010252F2F0F0000000080BF1B0000A6420000",
        );
        assert_eq!(text(&v, "status"), "OK");
    }
}
