//! GWF water meters: a type byte, status bits and a battery byte after DIF 0x0F.

use super::payload::{manufacturer_data, status_text, tpl_status, tpl_status_texts};
use super::{Hook, HookValue, HookValues};
use crate::telegram::Telegram;

pub const HOOKS: &[Hook] = &[Hook {
    name: "gwfwater",
    values: &["status", "power_mode", "battery_y"],
    decode: decode_gwfwater,
}];

/// After DIF 0x0F: a type byte, 0x01 for the layout we know: status bits (0x02 continuous flow,
/// 0x08 broken pipe, 0x20 battery low, 0x40 backflow), then a byte whose bit 0 is the saving
/// power mode and whose upper five bits count half years of battery life. Another type byte
/// is reported in the status as `UNKNOWN_MFCT_STATUS_<hex>`. The status also carries the
/// transport header's status bits.
fn decode_gwfwater(t: &Telegram<'_>, out: &mut HookValues) {
    let mut texts = Vec::new();
    let tpl = tpl_status(t);
    if let Some(s) = tpl {
        tpl_status_texts(s, &mut texts);
    }
    let mfct = manufacturer_data(t);
    match mfct.and_then(|b| b.first()) {
        Some(0x01) => {
            let b = mfct.unwrap_or_default();
            if let Some(&flags) = b.get(1) {
                let mut unnamed = flags;
                for (bit, name) in [
                    (0x02u8, "CONTINUOUS_FLOW"),
                    (0x08, "BROKEN_PIPE"),
                    (0x20, "BATTERY_LOW"),
                    (0x40, "BACKFLOW"),
                ] {
                    if flags & bit != 0 {
                        texts.push(name.into());
                        unnamed &= !bit;
                    }
                }
                if unnamed != 0 {
                    texts.push(format!("MFCT_FLAGS_{unnamed:X}"));
                }
            }
            if let Some(&power) = b.get(2) {
                out.text(
                    "power_mode",
                    if power & 0x01 != 0 {
                        "SAVING"
                    } else {
                        "NORMAL"
                    },
                );
                out.number("battery_y", f64::from(power >> 3) * 0.5);
            }
        }
        Some(&other) => {
            texts.push(format!("UNKNOWN_MFCT_STATUS_{other:X}"));
            out.set("battery_y", HookValue::Null);
        }
        None => {}
    }
    if tpl.is_some() || mfct.is_some_and(|b| !b.is_empty()) {
        out.text("status", status_text(texts));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::hooks::testing::{number as num, run as values, text};

    #[test]
    fn gwfwater_status_and_battery() {
        // Corpus line 113: battery low bit, power low in the transport header.
        let v = values(
            decode_gwfwater,
            "3144E61E31102220010E8C04F47ABE0420452F2F037410000004133E0000004413FFFFFFFF426CFFFF0F0120012F2F2F2F2F",
        );
        assert_eq!(text(&v, "status"), "BATTERY_LOW POWER_LOW");
        assert_eq!(text(&v, "power_mode"), "SAVING");
        assert_eq!(num(&v, "battery_y"), 0.0);
        // Corpus line 114.
        let v = values(
            decode_gwfwater,
            "3944E61E46441510020E8C04427250076819E61E3C07B10020452F2F03748B05000413DC690D004413A4630D00426C213C02FD74B5140F0100E3",
        );
        assert_eq!(text(&v, "status"), "OK");
        assert_eq!(num(&v, "battery_y"), 14.0);
        // Corpus line 115: an unknown type byte.
        let v = values(
            decode_gwfwater,
            "3944E61E46441510020E8C04427250076819E61E3C07B10020452F2F03748B05000413DC690D004413A4630D00426C213C02FD74B5140F0200E3",
        );
        assert_eq!(text(&v, "status"), "UNKNOWN_MFCT_STATUS_2");
        assert_eq!(v.get("battery_y"), Some(&HookValue::Null));
        assert!(v.get("power_mode").is_none());
    }
}
