//! BMeters RFM-TX1 radio modules: after the (unscrambled, see `security::bmeters`) volume
//! record, DIF 0x0F opens the module's own block, which carries the meter's clock as five BCD
//! bytes — minute, hour, day, month, two-digit year — at offset 7 of the block.

use super::{Hook, HookValues};
use crate::telegram::Telegram;
use crate::wire::records::RecordKind;

pub const HOOKS: &[Hook] = &[Hook {
    name: "rfmtx1",
    values: &["meter_datetime"],
    decode: decode_rfmtx1,
}];

/// Where the clock starts in the block after DIF 0x0F.
const CLOCK_AT: usize = 7;

fn bcd(b: u8) -> Option<u32> {
    let (hi, lo) = (b >> 4, b & 0x0F);
    (hi < 10 && lo < 10).then(|| u32::from(hi) * 10 + u32::from(lo))
}

fn decode_rfmtx1(t: &Telegram<'_>, out: &mut HookValues) {
    let Some(block) = t
        .records
        .iter()
        .find(|r| r.kind == RecordKind::ManufacturerData)
        .map(|r| r.data)
    else {
        return;
    };
    let Some(clock) = block.get(CLOCK_AT..CLOCK_AT + 5) else {
        return;
    };
    let Some([minute, hour, day, month, year]) = clock
        .iter()
        .map(|&b| bcd(b))
        .collect::<Option<Vec<u32>>>()
        .and_then(|v| <[u32; 5]>::try_from(v).ok())
    else {
        return;
    };
    // A clock that is not a time of day is left out rather than shown wrong.
    if minute > 59 || hour > 23 || !(1..=31).contains(&day) || !(1..=12).contains(&month) {
        return;
    }
    out.text(
        "meter_datetime",
        format!(
            "{:04}-{month:02}-{day:02} {hour:02}:{minute:02}",
            2000 + year
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run_with_driver, text};
    use super::*;

    #[test]
    fn rfmtx1_clock() {
        // wmbusmeters' rfmtx1 test telegram: 2020-03-31 10:04 (its expected output).
        let v = run_with_driver(
            decode_rfmtx1,
            "rfmtx1",
            "4644B4097172737405077AA50006101115F78184AB0F1D1E200000005904103103208047004A4800E73C00193E00453F003E4000E64000E74100F442000144001545005B460000",
        );
        assert_eq!(text(&v, "meter_datetime"), "2020-03-31 10:04");
    }

    #[test]
    fn impossible_clocks_are_left_out() {
        // Month 13: the same telegram with one clock byte changed gives no date.
        let v = run_with_driver(
            decode_rfmtx1,
            "rfmtx1",
            "4644B4097172737405077AA50006101115F78184AB0F1D1E200000005904103113208047004A4800E73C00193E00453F003E4000E64000E74100F442000144001545005B460000",
        );
        assert!(v.get("meter_datetime").is_none());
    }
}
