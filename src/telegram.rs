//! The one parse: bytes to a [`Telegram`] (link layer, application layer and records).
//! Everything downstream (output, drivers, MQTT) works on this and never re-reads bytes.

use thiserror::Error;

use crate::wire::application::{self, Application, ApplicationLayerError};
use crate::wire::records::{ByteOrder, PlainTextOrder, Record, RecordError, RecordParser};
use crate::wire::wired::{Frame, FrameError};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Application(#[from] ApplicationLayerError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("frame carries no application data ({kind})")]
    NoUserData { kind: &'static str },
}

/// Link-layer facts of a wired frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WiredLink {
    pub control: u8,
    pub address: u8,
    pub ci: u8,
}

impl WiredLink {
    /// PRM bit: the frame was sent by a master.
    pub fn master_to_slave(&self) -> bool {
        self.control & 0x40 != 0
    }
}

/// A decoded telegram. Records borrow the input bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Telegram<'a> {
    pub link: WiredLink,
    pub application: Application<'a>,
    pub records: Vec<Record<'a>>,
    /// Which plain-text layout made the record stream parse (see [`PlainTextOrder`]).
    pub plain_text_order: PlainTextOrder,
}

impl Telegram<'_> {
    /// A DIF 0x1F record says the meter has another telegram for us.
    pub fn more_records_follow(&self) -> bool {
        self.records
            .iter()
            .any(|r| r.kind == crate::wire::records::RecordKind::MoreRecordsFollow)
    }
}

/// Decodes one whole wired M-Bus frame (`68 L L 68 … 16`).
pub fn decode_wired(bytes: &[u8]) -> Result<Telegram<'_>, DecodeError> {
    // A record takes at least two bytes; a quarter of the frame is a tight upper bound for
    // real telegrams and saves the regrowth copies.
    let mut records = Vec::with_capacity(bytes.len() / 4);
    decode_wired_into(bytes, &mut records).map(|(link, application, plain_text_order)| Telegram {
        link,
        application,
        records,
        plain_text_order,
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

/// Frames the record area. Plain-text units come in two layouts in the field; the one after
/// the VIF (libmbus, Elvaco) is tried first, the standard's if that fails to reach the end.
fn parse_records<'a>(
    area: &'a [u8],
    offset: usize,
    byte_order: ByteOrder,
    out: &mut Vec<Record<'a>>,
) -> Result<PlainTextOrder, RecordError> {
    let first = collect(area, offset, PlainTextOrder::TextAfterVif, byte_order, out);
    let Err(first_error) = first else {
        return Ok(PlainTextOrder::TextAfterVif);
    };
    // Only a 0xFC VIF (plain text with VIFEs) makes the layouts differ; a failure without
    // one fails the same way in the other layout, and the retry is cheap either way.
    if collect(
        area,
        offset,
        PlainTextOrder::TextAfterVifes,
        byte_order,
        out,
    )
    .is_ok()
    {
        return Ok(PlainTextOrder::TextAfterVifes);
    }
    out.clear();
    Err(first_error)
}

fn collect<'a>(
    area: &'a [u8],
    offset: usize,
    order: PlainTextOrder,
    byte_order: ByteOrder,
    out: &mut Vec<Record<'a>>,
) -> Result<(), RecordError> {
    out.clear();
    for r in RecordParser::new(area, offset, order, byte_order) {
        out.push(r?);
    }
    Ok(())
}
