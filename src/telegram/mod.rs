//! The one parse: bytes to a [`Telegram`] (link layers, security, application layer and
//! records). Everything downstream (output, drivers, MQTT) works on this and never re-reads
//! bytes.

pub mod compact;
mod wired;
pub mod wireless;

pub use wired::{decode_wired, decode_wired_into};
pub use wireless::{WirelessDecoder, WirelessError, WirelessFrame, WirelessLink};

use thiserror::Error;

use crate::wire::application::{Application, ApplicationLayerError};
use crate::wire::records::{ByteOrder, PlainTextOrder, Record, RecordError, RecordParser};
use crate::wire::wired::FrameError;

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

/// The link layer a telegram came over.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    Wired(WiredLink),
    Wireless(Box<WirelessLink>),
}

impl Link {
    /// True for frames a master (or a gateway) sent rather than a meter.
    pub fn master_to_slave(&self) -> bool {
        match self {
            Link::Wired(l) => l.master_to_slave(),
            Link::Wireless(l) => l.dll.c & 0x40 != 0 && l.dll.c != 0x44 && l.dll.c != 0x46,
        }
    }

    pub fn wired(&self) -> Option<&WiredLink> {
        match self {
            Link::Wired(l) => Some(l),
            Link::Wireless(_) => None,
        }
    }
}

/// A decoded telegram. Records borrow the input bytes (or, for wireless, the decrypted copy).
#[derive(Debug, Clone, PartialEq)]
pub struct Telegram<'a> {
    pub link: Link,
    pub application: Application<'a>,
    pub records: Vec<Record<'a>>,
    /// Which plain-text layout made the record stream parse (see [`PlainTextOrder`]).
    pub plain_text_order: PlainTextOrder,
    /// Wireless only: the record area did not frame to its end. The records before the
    /// problem are kept (the telegram passed its CRC and security checks; meters such as
    /// Qundis append bytes that are no record), and the problem is reported with them.
    pub record_error: Option<RecordError>,
}

impl Telegram<'_> {
    /// A DIF 0x1F record says the meter has another telegram for us.
    pub fn more_records_follow(&self) -> bool {
        self.records
            .iter()
            .any(|r| r.kind == crate::wire::records::RecordKind::MoreRecordsFollow)
    }
}

/// Frames the record area. Plain-text units come in two layouts in the field; the one after
/// the VIF (libmbus, Elvaco) is tried first, the standard's if that fails to reach the end.
pub(crate) fn parse_records<'a>(
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

/// Like [`parse_records`], but a framing error keeps the records before it and is returned
/// next to them instead of failing the telegram.
pub(crate) fn parse_records_lenient<'a>(
    area: &'a [u8],
    offset: usize,
    byte_order: ByteOrder,
    out: &mut Vec<Record<'a>>,
) -> (PlainTextOrder, Option<RecordError>) {
    match parse_records(area, offset, byte_order, out) {
        Ok(order) => (order, None),
        Err(e) => {
            out.clear();
            for r in RecordParser::new(area, offset, PlainTextOrder::TextAfterVif, byte_order) {
                match r {
                    Ok(r) => out.push(r),
                    Err(_) => break,
                }
            }
            (PlainTextOrder::TextAfterVif, Some(e))
        }
    }
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
