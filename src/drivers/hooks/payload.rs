//! Small readers the manufacturer decoders share: the manufacturer block after DIF 0x0F,
//! the record area, little-endian integers, BCD bytes, dates, and the transport header's
//! status bits as words.

use crate::telegram::{Link, Telegram};
use crate::wire::application::{Application, Header};
use crate::wire::records::RecordKind;

/// The data after the first DIF 0x0F record, if the telegram has one.
pub(super) fn manufacturer_data<'a>(t: &Telegram<'a>) -> Option<&'a [u8]> {
    t.records
        .iter()
        .find(|r| r.kind == RecordKind::ManufacturerData)
        .map(|r| r.data)
}

/// The record area of a variable data telegram, fillers included.
pub(super) fn record_area<'a>(t: &Telegram<'a>) -> Option<&'a [u8]> {
    match &t.application {
        Application::Variable { records, .. } => Some(records),
        _ => None,
    }
}

pub(super) fn u16_le(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(super) fn u24_le(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 3)?;
    Some(u32::from(s[0]) | u32::from(s[1]) << 8 | u32::from(s[2]) << 16)
}

pub(super) fn u32_le(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A BCD byte as a number, `None` when a nibble is not a decimal digit.
pub(super) fn bcd(b: u8) -> Option<u32> {
    let (hi, lo) = (b >> 4, b & 0x0F);
    (hi < 10 && lo < 10).then(|| u32::from(hi) * 10 + u32::from(lo))
}

/// `YYYY-MM-DD` for a year in 2000-2099, or `None` when month or day is out of range.
pub(super) fn date_text(year2: u32, month: u32, day: u32) -> Option<String> {
    ((1..=12).contains(&month) && (1..=31).contains(&day))
        .then(|| format!("{:04}-{month:02}-{day:02}", 2000 + year2))
}

/// The status byte of the transport header (short or long, also behind an ELL).
pub(super) fn tpl_status(t: &Telegram<'_>) -> Option<u8> {
    let header = match &t.application {
        Application::Variable { header, .. } => *header,
        _ => match &t.link {
            Link::Wireless(l) => l.tpl.map(|tpl| tpl.header)?,
            Link::Wired(_) => return None,
        },
    };
    match header {
        Header::Long(h) => Some(h.status.0),
        Header::Short(h) => Some(h.status.0),
        Header::None => None,
    }
}

/// The names wmbusmeters gives the transport header's status bits (no manufacturer names:
/// bits 5-7 print as `UNKNOWN_<hex>`).
pub(super) fn tpl_status_texts(status: u8, out: &mut Vec<String>) {
    match status & 0x03 {
        1 => out.push("BUSY".into()),
        2 => out.push("ERROR".into()),
        3 => out.push("ALARM".into()),
        _ => {}
    }
    for (bit, name) in [
        (0x04u8, "POWER_LOW"),
        (0x08, "PERMANENT_ERROR"),
        (0x10, "TEMPORARY_ERROR"),
    ] {
        if status & bit != 0 {
            out.push(name.into());
        }
    }
    if status & 0xE0 != 0 {
        out.push(format!("UNKNOWN_{:02X}", status & 0xE0));
    }
}

/// Status texts joined in alphabetical order, `OK` when there are none.
pub(super) fn status_text(mut texts: Vec<String>) -> String {
    texts.sort();
    texts.dedup();
    if texts.is_empty() {
        "OK".into()
    } else {
        texts.join(" ")
    }
}
