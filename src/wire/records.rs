//! Application records (EN 13757-3 §6): DIF, DIFEs, VIF, VIFEs and the data field.
//!
//! [`RecordParser`] splits a record stream into [`Record`]s that borrow the telegram bytes; a
//! record's meaning (scale, unit, value) is computed from those bytes on demand, so framing a
//! record allocates nothing.

use std::fmt;

use thiserror::Error;

use super::datetime::MeterDateTime;
use super::vif::{self, Combinable, Unit, ValueKind, VifDescription, VifTable};

/// At most ten DIFEs and ten VIFEs per record (EN 13757-3).
pub const MAX_DIFE: usize = 10;
pub const MAX_VIFE: usize = 10;

/// The function field of the DIF (bits 4-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Instantaneous,
    Maximum,
    Minimum,
    DuringError,
}

impl Function {
    pub fn from_dif(dif: u8) -> Self {
        match (dif >> 4) & 0x03 {
            0 => Function::Instantaneous,
            1 => Function::Maximum,
            2 => Function::Minimum,
            _ => Function::DuringError,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Function::Instantaneous => "instantaneous",
            Function::Maximum => "maximum",
            Function::Minimum => "minimum",
            Function::DuringError => "error",
        }
    }
}

/// The data field of the DIF (bits 0-3): how many bytes follow and how to read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataField {
    NoData,
    Int8,
    Int16,
    Int24,
    Int32,
    Real32,
    Int48,
    Int64,
    SelectionForReadout,
    Bcd2,
    Bcd4,
    Bcd6,
    Bcd8,
    VariableLength,
    Bcd12,
    Special,
}

impl DataField {
    pub fn from_dif(dif: u8) -> Self {
        use DataField::*;
        match dif & 0x0F {
            0x0 => NoData,
            0x1 => Int8,
            0x2 => Int16,
            0x3 => Int24,
            0x4 => Int32,
            0x5 => Real32,
            0x6 => Int48,
            0x7 => Int64,
            0x8 => SelectionForReadout,
            0x9 => Bcd2,
            0xA => Bcd4,
            0xB => Bcd6,
            0xC => Bcd8,
            0xD => VariableLength,
            0xE => Bcd12,
            _ => Special,
        }
    }

    /// Fixed size in bytes; `None` for variable length and special functions.
    pub fn size(self) -> Option<usize> {
        use DataField::*;
        Some(match self {
            NoData | SelectionForReadout => 0,
            Int8 | Bcd2 => 1,
            Int16 | Bcd4 => 2,
            Int24 | Bcd6 => 3,
            Int32 | Real32 | Bcd8 => 4,
            Int48 | Bcd12 => 6,
            Int64 => 8,
            VariableLength | Special => return None,
        })
    }

    pub fn is_bcd(self) -> bool {
        matches!(
            self,
            DataField::Bcd2
                | DataField::Bcd4
                | DataField::Bcd6
                | DataField::Bcd8
                | DataField::Bcd12
        )
    }
}

/// What kind of record the DIF announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// An ordinary data record.
    Data,
    /// DIF 0x0F: manufacturer-specific data up to the end of the telegram.
    ManufacturerData,
    /// DIF 0x1F: manufacturer-specific data, and more records follow in the next telegram.
    MoreRecordsFollow,
    /// DIF 0x3F-0x6F (reserved) or 0x7F (global readout request): the rest is kept raw.
    SpecialFunction(u8),
}

/// How the content of an LVAR (data field 0xD) is coded, from its length byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lvar {
    Text,
    PositiveBcd,
    NegativeBcd,
    Binary,
}

/// Where a plain-text unit sits relative to the VIFEs.
///
/// The standard puts the length and text after the last VIFE; libmbus and real devices (Elvaco
/// CMa10) put it right after the VIF. The telegram decoder tries the latter and falls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainTextOrder {
    TextAfterVif,
    TextAfterVifes,
}

/// Multi-byte numbers are least significant byte first (CI 0x72) or most significant byte
/// first (CI 0x76).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    LsbFirst,
    MsbFirst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RecordErrorKind {
    #[error("premature end of record at DIFE")]
    EndInDife,
    #[error("more than 10 DIFEs")]
    TooManyDifes,
    #[error("premature end of record at VIF")]
    EndInVif,
    #[error("more than 10 VIFEs")]
    TooManyVifes,
    #[error("premature end of record in plain-text unit")]
    EndInPlainText,
    #[error("plain-text unit longer than the record ({0} bytes)")]
    PlainTextTooLong(u8),
    #[error("premature end of record at data ({needed} bytes needed, {have} present)")]
    EndInData { needed: usize, have: usize },
    #[error("premature end of record at variable-length byte")]
    EndInLvar,
    #[error("reserved variable-length code 0x{0:02X}")]
    ReservedLvar(u8),
}

/// A record that cannot be framed; the telegram is rejected because later records cannot be
/// located.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("record {index} at byte {offset}: {kind}")]
pub struct RecordError {
    pub index: usize,
    /// Offset of the offending byte, counted in the same frame as [`Record::offset`].
    pub offset: usize,
    pub kind: RecordErrorKind,
}

/// One framed record, borrowing the telegram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Record<'a> {
    /// Byte offset of the DIF (in the whole frame, see [`RecordParser::new`]).
    pub offset: usize,
    pub kind: RecordKind,
    /// DIF and DIFEs.
    pub dib: &'a [u8],
    /// The VIF; `None` for special-function records, which have none.
    pub vif: Option<u8>,
    /// The VIFEs. Kept apart from the VIF because a plain-text unit may sit between them.
    pub vifes: &'a [u8],
    /// Plain-text unit as sent (the standard sends it last character first).
    pub plain_text: &'a [u8],
    /// The data field; for LVAR without the length byte.
    pub data: &'a [u8],
    /// The LVAR byte, for data field 0xD.
    pub lvar: Option<u8>,
    pub field: DataField,
    pub function: Function,
    pub storage: u64,
    pub tariff: u32,
    pub subunit: u16,
    pub byte_order: ByteOrder,
}

/// A decoded value before scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RawValue<'a> {
    None,
    /// Binary integer (signed, two's complement) or valid BCD.
    Integer(i64),
    /// BCD containing hex digits A-F, which meters use to signal error states; the digits are
    /// kept, most significant first.
    InvalidBcd(BcdDigits),
    Real(f32),
    DateTime(MeterDateTime),
    /// LVAR text, in reading order.
    Text(&'a [u8]),
    /// LVAR binary, manufacturer data: bytes as transmitted.
    Bytes(&'a [u8]),
}

/// Up to 24 BCD digits as hex characters (no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BcdDigits {
    len: u8,
    digits: [u8; 24],
}

impl BcdDigits {
    pub fn as_str(&self) -> &str {
        // Digits are always ASCII hex.
        std::str::from_utf8(&self.digits[..self.len as usize]).unwrap_or("")
    }
}

impl fmt::Debug for BcdDigits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for BcdDigits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Splits the record part of a telegram into records.
pub struct RecordParser<'a> {
    data: &'a [u8],
    pos: usize,
    base: usize,
    index: usize,
    order: PlainTextOrder,
    byte_order: ByteOrder,
    done: bool,
}

impl<'a> RecordParser<'a> {
    /// `base` is the offset of `data[0]` in the frame, so offsets in records and errors point
    /// into what the user pasted.
    pub fn new(data: &'a [u8], base: usize, order: PlainTextOrder, byte_order: ByteOrder) -> Self {
        RecordParser {
            data,
            pos: 0,
            base,
            index: 0,
            order,
            byte_order,
            done: false,
        }
    }

    fn err(&self, at: usize, kind: RecordErrorKind) -> RecordError {
        RecordError {
            index: self.index,
            offset: self.base + at,
            kind,
        }
    }

    fn parse_one(&mut self) -> Result<Option<Record<'a>>, RecordError> {
        let d = self.data;
        // Fillers (0x2F) separate records and pad telegrams.
        while d.get(self.pos) == Some(&0x2F) {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(&dif) = d.get(start) else {
            return Ok(None);
        };
        if dif & 0x0F == 0x0F {
            // Special functions: everything after the DIF is opaque. The standard defines no
            // DIFEs for them, so a set extension bit (0x8F, seen only in corrupted frames)
            // gets the same treatment instead of being read as a variable-length field.
            let kind = match dif {
                0x0F => RecordKind::ManufacturerData,
                0x1F => RecordKind::MoreRecordsFollow,
                other => RecordKind::SpecialFunction(other),
            };
            self.pos = d.len();
            return Ok(Some(Record {
                offset: self.base + start,
                kind,
                dib: &d[start..start + 1],
                vif: None,
                vifes: &[],
                plain_text: &[],
                data: &d[start + 1..],
                lvar: None,
                field: DataField::Special,
                function: Function::Instantaneous,
                storage: 0,
                tariff: 0,
                subunit: 0,
                byte_order: self.byte_order,
            }));
        }

        let mut storage = u64::from((dif >> 6) & 1);
        let mut tariff = 0u32;
        let mut subunit = 0u16;
        let mut p = start + 1;
        let mut ext = dif & 0x80 != 0;
        let mut n = 0usize;
        while ext {
            let Some(&dife) = d.get(p) else {
                return Err(self.err(p, RecordErrorKind::EndInDife));
            };
            if n == MAX_DIFE {
                return Err(self.err(p, RecordErrorKind::TooManyDifes));
            }
            storage |= u64::from(dife & 0x0F) << (1 + 4 * n);
            tariff |= u32::from((dife >> 4) & 0x03) << (2 * n);
            subunit |= u16::from((dife >> 6) & 0x01) << n;
            ext = dife & 0x80 != 0;
            n += 1;
            p += 1;
        }
        let dib = &d[start..p];

        // VIB: the VIF, its VIFEs and, for a plain-text VIF, the unit text.
        let Some(&vif) = d.get(p) else {
            return Err(self.err(p, RecordErrorKind::EndInVif));
        };
        p += 1;
        let mut plain_text: &'a [u8] = &[];
        let is_plain = vif & 0x7F == 0x7C;
        if is_plain && self.order == PlainTextOrder::TextAfterVif {
            plain_text = self.read_plain_text(&mut p)?;
        }
        let vifes_start = p;
        self.read_vifes(&mut p, vif & 0x80 != 0)?;
        let vifes = &d[vifes_start..p];
        if is_plain && self.order == PlainTextOrder::TextAfterVifes {
            plain_text = self.read_plain_text(&mut p)?;
        }

        // Data
        let field = DataField::from_dif(dif);
        let mut lvar = None;
        let len = match field.size() {
            Some(n) => n,
            None => {
                let Some(&l) = d.get(p) else {
                    return Err(self.err(p, RecordErrorKind::EndInLvar));
                };
                lvar = Some(l);
                p += 1;
                match lvar_len(l) {
                    Some((_, n)) => n,
                    None => return Err(self.err(p - 1, RecordErrorKind::ReservedLvar(l))),
                }
            }
        };
        let have = d.len().saturating_sub(p);
        if have < len {
            return Err(self.err(p, RecordErrorKind::EndInData { needed: len, have }));
        }
        let data = &d[p..p + len];
        p += len;
        self.pos = p;
        Ok(Some(Record {
            offset: self.base + start,
            kind: RecordKind::Data,
            dib,
            vif: Some(vif),
            vifes,
            plain_text,
            data,
            lvar,
            field,
            function: Function::from_dif(dif),
            storage,
            tariff,
            subunit,
            byte_order: self.byte_order,
        }))
    }

    fn read_plain_text(&self, p: &mut usize) -> Result<&'a [u8], RecordError> {
        let d = self.data;
        let Some(&len) = d.get(*p) else {
            return Err(self.err(*p, RecordErrorKind::EndInPlainText));
        };
        let len = usize::from(len);
        let text_start = *p + 1;
        if d.len() < text_start + len {
            return Err(self.err(*p, RecordErrorKind::PlainTextTooLong(len as u8)));
        }
        *p = text_start + len;
        Ok(&d[text_start..text_start + len])
    }

    fn read_vifes(&self, p: &mut usize, mut ext: bool) -> Result<usize, RecordError> {
        let d = self.data;
        let mut n = 0;
        while ext {
            let Some(&vife) = d.get(*p) else {
                return Err(self.err(*p, RecordErrorKind::EndInVif));
            };
            if n == MAX_VIFE {
                return Err(self.err(*p, RecordErrorKind::TooManyVifes));
            }
            ext = vife & 0x80 != 0;
            n += 1;
            *p += 1;
        }
        Ok(n)
    }
}

/// Coding and byte count of an LVAR content, `None` for reserved codes.
pub fn lvar_len(l: u8) -> Option<(Lvar, usize)> {
    let l = usize::from(l);
    Some(match l {
        0x00..=0xBF => (Lvar::Text, l),
        0xC0..=0xC9 => (Lvar::PositiveBcd, l - 0xC0),
        0xD0..=0xD9 => (Lvar::NegativeBcd, l - 0xD0),
        0xE0..=0xEF => (Lvar::Binary, l - 0xE0),
        0xF0..=0xF4 => (Lvar::Binary, 4 * (l - 0xEC)),
        0xF5 => (Lvar::Binary, 48),
        0xF6 => (Lvar::Binary, 64),
        _ => return None,
    })
}

impl<'a> Iterator for RecordParser<'a> {
    type Item = Result<Record<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.parse_one() {
            Ok(Some(r)) => {
                self.index += 1;
                Some(Ok(r))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// The VIB split into its parts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValueInformation<'a> {
    pub description: VifDescription,
    /// Combinable VIFEs (after the FB/FD code byte, if any), up to and including a 0x7F.
    pub combinable: &'a [u8],
    /// VIFEs after a 0x7F combinable VIFE or after a manufacturer VIF: opaque.
    pub manufacturer_vifes: &'a [u8],
}

impl<'a> Record<'a> {
    pub fn dif(&self) -> u8 {
        self.dib.first().copied().unwrap_or(0)
    }

    pub fn difes(&self) -> &'a [u8] {
        self.dib.get(1..).unwrap_or(&[])
    }

    /// VIF and VIFEs as one hex string's worth of bytes (without any plain text).
    pub fn vib_bytes(&self) -> impl Iterator<Item = u8> + 'a {
        self.vif.into_iter().chain(self.vifes.iter().copied())
    }

    /// Splits the VIB and looks up the VIF tables. `None` for special-function records.
    pub fn value_information(&self) -> Option<ValueInformation<'a>> {
        let vif = self.vif?;
        let rest = self.vifes;
        let (description, vifes) = match vif {
            0xFB | 0xFD => {
                let (&code, rest) = rest.split_first().unwrap_or((&0x7F, &[]));
                let d = if vif == 0xFB {
                    vif::table_fb(code)
                } else {
                    vif::table_fd(code)
                };
                if code & 0x80 != 0 {
                    (d, rest)
                } else {
                    (d, &[][..])
                }
            }
            _ => (vif::primary(vif), rest),
        };
        if description.table == VifTable::Manufacturer {
            return Some(ValueInformation {
                description,
                combinable: &[],
                manufacturer_vifes: vifes,
            });
        }
        let split = vifes
            .iter()
            .position(|&b| b & 0x7F == 0x7F)
            .map(|i| i + 1)
            .unwrap_or(vifes.len());
        Some(ValueInformation {
            description,
            combinable: &vifes[..split],
            manufacturer_vifes: &vifes[split..],
        })
    }

    /// The combinable VIFEs, decoded.
    pub fn combinables(&self) -> impl Iterator<Item = Combinable> + 'a {
        self.value_information()
            .map(|v| v.combinable)
            .unwrap_or(&[])
            .iter()
            .map(|&b| Combinable::from_code(b))
    }

    /// Plain-text unit in reading order (it is transmitted last character first).
    pub fn plain_text_unit(&self) -> impl Iterator<Item = char> + 'a {
        self.plain_text.iter().rev().map(|&b| b as char)
    }

    /// Bytes of the data field in most-significant-first order for numbers.
    fn number_bytes(&self) -> NumberBytes {
        let mut buf = [0u8; 8];
        let n = self.data.len().min(8);
        match self.byte_order {
            ByteOrder::LsbFirst => buf[..n].copy_from_slice(&self.data[..n]),
            ByteOrder::MsbFirst => {
                for (i, b) in self.data[..n].iter().rev().enumerate() {
                    buf[i] = *b;
                }
            }
        }
        NumberBytes {
            lsb_first: buf,
            len: n,
        }
    }

    /// True when the VIF (or a combinable VIFE) says the data is a point in time.
    pub fn is_time_point(&self) -> bool {
        self.value_information().is_some_and(|v| v.is_time_point())
    }

    /// Decodes the data field according to the DIF, reading dates where the VIF asks for them.
    pub fn raw_value(&self) -> RawValue<'a> {
        self.raw_value_with(self.value_information().as_ref())
    }

    /// [`Self::raw_value`] for callers that already looked up the value information (it is
    /// needed for the unit too, and renderers should look it up once per record).
    pub fn raw_value_with(&self, vi: Option<&ValueInformation<'a>>) -> RawValue<'a> {
        self.decode_raw(vi.is_some_and(|v| v.is_time_point()))
    }

    /// [`Self::raw_value`] with the value information's one input, whether the data is a point
    /// in time, already known (writers cache it per record shape).
    pub fn raw_value_as(&self, time_point: bool) -> RawValue<'a> {
        self.decode_raw(time_point)
    }

    // One body for both entry points, compiled into each: with one calling the other, decoding
    // the libmbus corpus with scaled values took about 30 more instructions per frame.
    #[inline(always)]
    fn decode_raw(&self, time_point: bool) -> RawValue<'a> {
        match self.kind {
            RecordKind::Data => {}
            _ => return RawValue::Bytes(self.data),
        }
        let nb = self.number_bytes();
        let b = &nb.lsb_first;
        use DataField::*;
        match self.field {
            NoData | SelectionForReadout | Special => RawValue::None,
            Int16 if time_point => RawValue::DateTime(MeterDateTime::type_g([b[0], b[1]])),
            Int24 if time_point => RawValue::DateTime(MeterDateTime::type_j([b[0], b[1], b[2]])),
            Int32 if time_point => {
                RawValue::DateTime(MeterDateTime::type_f([b[0], b[1], b[2], b[3]]))
            }
            Int48 if time_point => {
                RawValue::DateTime(MeterDateTime::type_i([b[0], b[1], b[2], b[3], b[4], b[5]]))
            }
            Int8 | Int16 | Int24 | Int32 | Int48 | Int64 => RawValue::Integer(nb.signed()),
            Real32 => RawValue::Real(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            Bcd2 | Bcd4 | Bcd6 | Bcd8 | Bcd12 => bcd(&b[..nb.len], false),
            VariableLength => match self.lvar.and_then(lvar_len) {
                Some((Lvar::Text, _)) => RawValue::Text(self.data),
                Some((Lvar::PositiveBcd, _)) => bcd_slice(self.data, self.byte_order, false),
                Some((Lvar::NegativeBcd, _)) => bcd_slice(self.data, self.byte_order, true),
                _ => RawValue::Bytes(self.data),
            },
        }
    }

    /// The value in base units: raw × factor × 10^exponent, with multiplicative corrections
    /// from combinable VIFEs applied. Dates, text and bytes are returned unscaled.
    pub fn value(&self) -> Value<'a> {
        let vi = self.value_information();
        self.value_from(self.raw_value_with(vi.as_ref()), vi.as_ref())
    }

    /// Scales an already decoded raw value (see [`Self::raw_value_with`]).
    pub fn value_from(&self, raw: RawValue<'a>, vi: Option<&ValueInformation<'a>>) -> Value<'a> {
        Self::scale_raw(raw, vi.map(|v| v.scale()))
    }

    /// Scales a raw value by an already known scale ([`ValueInformation::scale`]; `None` for
    /// special-function records).
    pub fn value_scaled(raw: RawValue<'a>, scale: Option<Scale>) -> Value<'a> {
        Self::scale_raw(raw, scale)
    }

    // Compiled into both entry points, like `decode_raw`.
    #[inline(always)]
    fn scale_raw(raw: RawValue<'a>, scale: Option<Scale>) -> Value<'a> {
        match raw {
            RawValue::Integer(i) => match scale {
                Some(s) => Value::Decimal(Decimal::new(
                    i128::from(i) * i128::from(s.factor),
                    s.exponent,
                )),
                None => Value::Decimal(Decimal::new(i128::from(i), 0)),
            },
            RawValue::Real(f) => {
                let (factor, exponent) = scale.map(|s| (s.factor, s.exponent)).unwrap_or((1, 0));
                Value::Float(f64::from(f) * f64::from(factor) * 10f64.powi(i32::from(exponent)))
            }
            RawValue::None => Value::None,
            RawValue::InvalidBcd(d) => Value::InvalidBcd(d),
            RawValue::DateTime(t) => Value::DateTime(t),
            RawValue::Text(t) => Value::Text(t),
            RawValue::Bytes(b) => Value::Bytes(b),
        }
    }

    /// Unit and scale of the record's numeric value, `None` for special-function records
    /// (identifiers, plain-text or manufacturer VIFs get factor 1 and no unit).
    pub fn scale(&self) -> Option<Scale> {
        self.value_information().map(|v| v.scale())
    }
}

impl ValueInformation<'_> {
    /// True when the VIF (or a combinable VIFE) says the data is a point in time.
    pub fn is_time_point(&self) -> bool {
        self.description.kind == ValueKind::TimePoint
            || self
                .combinable
                .iter()
                .any(|&b| Combinable::from_code(b).is_time_point())
    }

    /// The VIF's scale with multiplicative and additive correction VIFEs applied.
    pub fn scale(&self) -> Scale {
        let d = self.description;
        let mut exponent = i16::from(d.exponent);
        for c in self.combinable.iter().map(|&b| Combinable::from_code(b)) {
            match c {
                Combinable::MultiplicativeCorrection { exponent: e }
                | Combinable::AdditiveCorrection { exponent: e } => exponent += i16::from(e),
                _ => {}
            }
        }
        Scale {
            unit: d.unit,
            factor: d.factor,
            exponent,
        }
    }
}

/// Scale of a numeric value: value in `unit` = raw × factor × 10^exponent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    pub unit: Unit,
    pub factor: u32,
    pub exponent: i16,
}

/// An exact decimal: mantissa × 10^exponent. Meter readings are decimal; printing them through
/// a float would turn 561.08 into 561.0799999.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    pub mantissa: i128,
    pub exponent: i16,
}

impl Decimal {
    pub fn new(mantissa: i128, exponent: i16) -> Self {
        Decimal { mantissa, exponent }
    }

    pub fn to_f64(self) -> f64 {
        if self.exponent >= 0 {
            self.mantissa as f64 * 10f64.powi(i32::from(self.exponent))
        } else {
            // Division by an exact power of ten rounds once, so 56108 / 100 prints as 561.08.
            self.mantissa as f64 / 10f64.powi(-i32::from(self.exponent))
        }
    }
}

impl Decimal {
    /// Writes plain decimal notation (no exponent, no trailing zeros after the point) into
    /// `buf` and returns the text. Exponents come from VIF tables and correction VIFEs and stay
    /// within ±100; anything beyond falls back to `<mantissa>e<exponent>`.
    pub fn format<'b>(&self, buf: &'b mut [u8; 256]) -> &'b str {
        let mut digits = [0u8; 40];
        let mut dl = 0;
        // Nearly every value fits 64 bits, where division by 10 is a multiplication; 128-bit
        // division is a library call per digit.
        match u64::try_from(self.mantissa.unsigned_abs()) {
            Ok(mut n) => loop {
                digits[dl] = b'0' + (n % 10) as u8;
                dl += 1;
                n /= 10;
                if n == 0 {
                    break;
                }
            },
            Err(_) => {
                let mut n = self.mantissa.unsigned_abs();
                loop {
                    digits[dl] = b'0' + (n % 10) as u8;
                    dl += 1;
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
            }
        }
        digits[..dl].reverse();
        let digits = &digits[..dl];
        let mut len = 0;
        let mut push = |buf: &mut [u8; 256], b: u8| {
            buf[len] = b;
            len += 1;
        };
        if self.mantissa < 0 {
            push(buf, b'-');
        }
        let exp = self.exponent;
        if !(-100..=100).contains(&exp) {
            for &d in digits {
                push(buf, d);
            }
            push(buf, b'e');
            let e = exp.to_string();
            for &b in e.as_bytes() {
                push(buf, b);
            }
        } else if exp >= 0 {
            for &d in digits {
                push(buf, d);
            }
            if self.mantissa != 0 {
                for _ in 0..exp {
                    push(buf, b'0');
                }
            }
        } else {
            let frac = usize::from(exp.unsigned_abs());
            let (int_part, frac_digits, lead_zeros) = if dl > frac {
                (&digits[..dl - frac], &digits[dl - frac..], 0)
            } else {
                (&b"0"[..], digits, frac - dl)
            };
            for &d in int_part {
                push(buf, d);
            }
            // Trailing zeros of the fraction carry no information.
            let significant =
                frac_digits.len() - frac_digits.iter().rev().take_while(|&&d| d == b'0').count();
            if significant > 0 {
                push(buf, b'.');
                for _ in 0..lead_zeros {
                    push(buf, b'0');
                }
                for &d in &frac_digits[..significant] {
                    push(buf, d);
                }
            }
        }
        // Only ASCII digits, '-', '.', 'e' were written.
        std::str::from_utf8(&buf[..len]).unwrap_or("")
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 256];
        f.write_str(self.format(&mut buf))
    }
}

/// A value ready for output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    None,
    Decimal(Decimal),
    Float(f64),
    InvalidBcd(BcdDigits),
    DateTime(MeterDateTime),
    Text(&'a [u8]),
    Bytes(&'a [u8]),
}

struct NumberBytes {
    /// Little-endian view (least significant byte first), zero padded.
    lsb_first: [u8; 8],
    len: usize,
}

impl NumberBytes {
    fn signed(&self) -> i64 {
        if self.len == 0 {
            return 0;
        }
        let v = u64::from_le_bytes(self.lsb_first);
        let bits = 8 * self.len as u32;
        if bits >= 64 {
            v as i64
        } else {
            let shift = 64 - bits;
            ((v << shift) as i64) >> shift
        }
    }
}

/// BCD from least-significant-first bytes. A top nibble of 0xF marks a negative value; any
/// other nibble above 9 makes the whole value an error-state BCD kept as digits.
fn bcd(lsb_first: &[u8], negative: bool) -> RawValue<'static> {
    let mut value: i64 = 0;
    let mut neg = negative;
    let mut valid = true;
    let n = lsb_first.len();
    for (i, &byte) in lsb_first.iter().rev().enumerate() {
        let hi = byte >> 4;
        let lo = byte & 0x0F;
        let hi_digit = if i == 0 && hi == 0xF && n > 0 {
            neg = true;
            0
        } else {
            hi
        };
        if hi_digit > 9 || lo > 9 {
            valid = false;
        }
        value = value.wrapping_mul(100) + i64::from(hi_digit) * 10 + i64::from(lo);
    }
    if valid {
        RawValue::Integer(if neg { -value } else { value })
    } else {
        let mut digits = BcdDigits {
            len: 0,
            digits: [0; 24],
        };
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        for &byte in lsb_first.iter().rev().take(12) {
            digits.digits[digits.len as usize] = HEX[usize::from(byte >> 4)];
            digits.digits[digits.len as usize + 1] = HEX[usize::from(byte & 0xF)];
            digits.len += 2;
        }
        RawValue::InvalidBcd(digits)
    }
}

fn bcd_slice(data: &[u8], order: ByteOrder, negative: bool) -> RawValue<'static> {
    // At most 9 bytes (18 digits) fit an i64; the LVAR codes allow at most 9 (0xC9).
    let mut buf = [0u8; 12];
    let n = data.len().min(12);
    match order {
        ByteOrder::LsbFirst => buf[..n].copy_from_slice(&data[..n]),
        ByteOrder::MsbFirst => {
            for (i, b) in data[..n].iter().rev().enumerate() {
                buf[i] = *b;
            }
        }
    }
    bcd(&buf[..n], negative)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(data: &[u8]) -> Vec<Record<'_>> {
        RecordParser::new(data, 0, PlainTextOrder::TextAfterVif, ByteOrder::LsbFirst)
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    #[test]
    fn energy_in_kwh_scaled_to_wh() {
        let r = records(&[0x04, 0x06, 0xE7, 0x91, 0x00, 0x00]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].raw_value(), RawValue::Integer(37351));
        assert_eq!(r[0].value(), Value::Decimal(Decimal::new(37351, 3)));
        assert_eq!(Decimal::new(37351, 3).to_string(), "37351000");
        assert_eq!(r[0].scale().unwrap().unit, Unit::Wh);
    }

    #[test]
    fn volume_keeps_exact_decimals() {
        let r = records(&[0x04, 0x14, 0x2C, 0xDB, 0x00, 0x00]);
        let Value::Decimal(d) = r[0].value() else {
            panic!("not a decimal")
        };
        assert_eq!(d.to_string(), "561.08");
        assert_eq!(d.to_f64(), 561.08);
    }

    #[test]
    fn difes_give_storage_tariff_subunit() {
        // DIF 0x84 (storage bit 0), DIFE 0x80 | 0x40 (subunit 1) | 0x10 (tariff 1) | 0x02,
        // DIFE 0x01 (storage +1 << 5)
        let r = records(&[0xC4, 0xD2, 0x01, 0x03, 1, 0, 0, 0]);
        assert_eq!(r[0].storage, 1 | (2 << 1) | (1 << 5));
        assert_eq!(r[0].tariff, 1);
        assert_eq!(r[0].subunit, 1);
    }

    #[test]
    fn negative_and_error_bcd() {
        let r = records(&[0x0A, 0x5A, 0x34, 0xF2]); // -234 * 0.1 °C
        assert_eq!(r[0].raw_value(), RawValue::Integer(-234));
        let r = records(&[0x3A, 0x5A, 0x34, 0xA2]);
        match r[0].raw_value() {
            RawValue::InvalidBcd(d) => assert_eq!(d.as_str(), "A234"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn variable_length_bcd_uses_the_standard_byte_count() {
        // LVAR 0xC3: 3 bytes of positive BCD (6 digits), then another record.
        let r = records(&[0x0D, 0x13, 0xC3, 0x56, 0x34, 0x12, 0x01, 0xFD, 0x1B, 0x05]);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].raw_value(), RawValue::Integer(123456));
        let r = records(&[0x0D, 0x13, 0xD2, 0x56, 0x34]);
        assert_eq!(r[0].raw_value(), RawValue::Integer(-3456));
    }

    #[test]
    fn combinable_vifes_change_scale_and_are_reported() {
        // Volume in litres (0x13) with VIFE 0x72 (x 10^-4 correction): raw 5 -> 5e-3 * 1e-4
        let r = records(&[0x01, 0x93, 0x72, 5]);
        assert_eq!(r[0].value(), Value::Decimal(Decimal::new(5, -7)));
        // Volume flow with "per hour" annotation and upper limit.
        let r = records(&[0x02, 0xBB, 0xC8, 0x22, 0x10, 0x00]);
        let c: Vec<_> = r[0].combinables().collect();
        assert_eq!(
            c,
            vec![
                Combinable::LimitValue { upper: true },
                Combinable::PerTime(vif::TimeUnit::Hour)
            ]
        );
    }

    #[test]
    fn plain_text_in_both_orders() {
        // libmbus order: FC, len, text, VIFE
        let d = [0x02, 0xFC, 0x03, b'H', b'R', b'%', 0x74, 0xD0, 0x08];
        let r = records(&d);
        assert_eq!(r[0].plain_text_unit().collect::<String>(), "%RH");
        assert_eq!(r[0].data, &[0xD0, 0x08]);
        // Standard order: FC, VIFE, len, text
        let d = [0x02, 0xFC, 0x74, 0x03, b'H', b'R', b'%', 0xD0, 0x08];
        let r: Vec<_> =
            RecordParser::new(&d, 0, PlainTextOrder::TextAfterVifes, ByteOrder::LsbFirst)
                .collect::<Result<_, _>>()
                .unwrap();
        assert_eq!(r[0].plain_text_unit().collect::<String>(), "%RH");
        assert_eq!((r[0].vif, r[0].vifes), (Some(0xFC), &[0x74][..]));
    }

    #[test]
    fn truncation_is_an_error_with_offset() {
        let err = RecordParser::new(
            &[0x04, 0x13, 0x01],
            19,
            PlainTextOrder::TextAfterVif,
            ByteOrder::LsbFirst,
        )
        .collect::<Result<Vec<_>, _>>()
        .unwrap_err();
        assert_eq!(err.offset, 21);
        assert_eq!(err.kind, RecordErrorKind::EndInData { needed: 4, have: 1 });
    }

    #[test]
    fn special_functions_take_the_rest() {
        let r = records(&[0x01, 0x13, 0x01, 0x2F, 0x1F, 0xAA, 0xBB]);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].kind, RecordKind::MoreRecordsFollow);
        assert_eq!(r[1].data, &[0xAA, 0xBB]);
    }

    #[test]
    fn msb_first_integers() {
        let r: Vec<_> = RecordParser::new(
            &[0x04, 0x13, 0x00, 0x00, 0x01, 0x02],
            0,
            PlainTextOrder::TextAfterVif,
            ByteOrder::MsbFirst,
        )
        .collect::<Result<_, _>>()
        .unwrap();
        assert_eq!(r[0].raw_value(), RawValue::Integer(0x0102));
    }

    #[test]
    fn decimal_formatting() {
        assert_eq!(Decimal::new(5, -7).to_string(), "0.0000005");
        assert_eq!(Decimal::new(-1234, -2).to_string(), "-12.34");
        assert_eq!(Decimal::new(1200, -2).to_string(), "12");
        assert_eq!(Decimal::new(0, 3).to_string(), "0");
        assert_eq!(Decimal::new(0, -3).to_string(), "0");
        assert_eq!(Decimal::new(-5, -1).to_string(), "-0.5");
        assert_eq!(Decimal::new(100, -3).to_string(), "0.1");
        assert_eq!(Decimal::new(i128::MIN, -60).to_string().len(), 63);
        assert_eq!(Decimal::new(7, 120).to_string(), "7e120");
    }
}
