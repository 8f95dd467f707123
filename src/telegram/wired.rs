//! Wired M-Bus frames (EN 13757-2) into telegrams.

use super::{parse_records, DecodeError, Link, Telegram, WiredLink};
use crate::wire::application::{self, Application};
use crate::wire::records::{PlainTextOrder, Record};
use crate::wire::wired::Frame;

/// Decodes one whole wired M-Bus frame (`68 L L 68 … 16`).
pub fn decode_wired(bytes: &[u8]) -> Result<Telegram<'_>, DecodeError> {
    // A record takes at least two bytes; a quarter of the frame is a tight upper bound for
    // real telegrams and saves the regrowth copies.
    let mut records = Vec::with_capacity(bytes.len() / 4);
    decode_wired_into(bytes, &mut records).map(|(link, application, plain_text_order)| Telegram {
        link: Link::Wired(link),
        application,
        records,
        plain_text_order,
        record_error: None,
    })
}

type Decoded<'a> = (WiredLink, Application<'a>, PlainTextOrder);

/// Like [`decode_wired`] but fills a caller-owned record vector, so a loop over many telegrams
/// allocates nothing once the vector has grown.
pub fn decode_wired_into<'a>(
    bytes: &'a [u8],
    records: &mut Vec<Record<'a>>,
) -> Result<Decoded<'a>, DecodeError> {
    records.clear();
    let frame = Frame::parse(bytes)?;
    let (control, address, ci, data) = match frame {
        Frame::Long {
            control,
            address,
            ci,
            data,
        } => (control, address, ci, data),
        Frame::Control {
            control,
            address,
            ci,
        } => (control, address, ci, &[][..]),
        Frame::Ack => {
            return Err(DecodeError::NoUserData {
                kind: "single character ACK",
            })
        }
        Frame::Short { .. } => {
            return Err(DecodeError::NoUserData {
                kind: "short frame",
            })
        }
    };
    let link = WiredLink {
        control,
        address,
        ci,
    };
    // User data starts after 68 L L 68 C A CI.
    let application = application::parse(ci, data, 7)?;
    let order = match application {
        Application::Variable {
            records: area,
            records_offset,
            byte_order,
            ..
        } => parse_records(area, records_offset, byte_order, records)?,
        _ => PlainTextOrder::TextAfterVif,
    };
    Ok((link, application, order))
}
