//! The application layer behind the CI field (EN 13757-3 §5-§7): data headers, the fixed data
//! structure, application errors and alarms. Records are framed by [`super::records`].

use thiserror::Error;

use super::manufacturer::Manufacturer;
use super::medium::Medium;
use super::records::ByteOrder;

/// The CI field values the application layer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiField {
    ApplicationReset,
    DataSend,
    SelectSlave,
    SynchronizeAction,
    DataSendMsbFirst,
    SelectSlaveMsbFirst,
    SetBaudRate(u32),
    ApplicationError,
    Alarm,
    VariableLong,
    FixedLsbFirst,
    VariableMsbFirst,
    FixedMsbFirst,
    VariableNoHeader,
    VariableShort,
    Unknown(u8),
}

impl CiField {
    pub fn from_byte(ci: u8) -> Self {
        use CiField::*;
        match ci {
            0x50 => ApplicationReset,
            0x51 => DataSend,
            0x52 => SelectSlave,
            0x54 => SynchronizeAction,
            0x55 => DataSendMsbFirst,
            0x56 => SelectSlaveMsbFirst,
            0xB8..=0xBF => SetBaudRate(300 << (ci - 0xB8)),
            0x70 => ApplicationError,
            0x71 => Alarm,
            0x72 => VariableLong,
            0x73 => FixedLsbFirst,
            0x76 => VariableMsbFirst,
            0x77 => FixedMsbFirst,
            0x78 => VariableNoHeader,
            0x7A => VariableShort,
            other => Unknown(other),
        }
    }

    pub fn name(self) -> &'static str {
        use CiField::*;
        match self {
            ApplicationReset => "application reset",
            DataSend => "data send",
            SelectSlave => "select slave",
            SynchronizeAction => "synchronize action",
            DataSendMsbFirst => "data send (MSB first)",
            SelectSlaveMsbFirst => "select slave (MSB first)",
            SetBaudRate(_) => "set baud rate",
            ApplicationError => "application error",
            Alarm => "alarm",
            VariableLong => "variable data, long header",
            FixedLsbFirst => "fixed data",
            VariableMsbFirst => "variable data, long header, MSB first",
            FixedMsbFirst => "fixed data, MSB first",
            VariableNoHeader => "variable data, no header",
            VariableShort => "variable data, short header",
            Unknown(_) => "unknown",
        }
    }
}

/// The status byte of a data header (EN 13757-3 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u8);

impl Status {
    /// Bits 0-1.
    pub fn application(self) -> &'static str {
        match self.0 & 0x03 {
            0 => "no error",
            1 => "application busy",
            2 => "any application error",
            _ => "abnormal condition / alarm",
        }
    }
    pub fn power_low(self) -> bool {
        self.0 & 0x04 != 0
    }
    pub fn permanent_error(self) -> bool {
        self.0 & 0x08 != 0
    }
    pub fn temporary_error(self) -> bool {
        self.0 & 0x10 != 0
    }
    /// Bits 5-7, whose meaning the manufacturer defines.
    pub fn manufacturer_bits(self) -> u8 {
        self.0 >> 5
    }

    /// Names of the bits that are set (empty when the meter reports no problem).
    pub fn flags(self) -> impl Iterator<Item = &'static str> {
        let app = match self.0 & 0x03 {
            1 => Some("busy"),
            2 => Some("application_error"),
            3 => Some("alarm"),
            _ => None,
        };
        let s = self.0;
        app.into_iter().chain(
            [
                (0x04, "power_low"),
                (0x08, "permanent_error"),
                (0x10, "temporary_error"),
                (0x20, "manufacturer_1"),
                (0x40, "manufacturer_2"),
                (0x80, "manufacturer_3"),
            ]
            .into_iter()
            .filter(move |(bit, _)| s & bit != 0)
            .map(|(_, name)| name),
        )
    }
}

/// Identification number: 4 bytes, meant to be BCD but printed as hex digits so non-BCD ids
/// (seen in the field) survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentificationNumber(pub u32);

impl std::fmt::Display for IdentificationNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08X}", self.0)
    }
}

/// The 12-byte long header (CI 0x72 / 0x76).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongHeader {
    pub id: IdentificationNumber,
    pub manufacturer: Manufacturer,
    pub version: u8,
    pub medium: Medium,
    pub access_number: u8,
    pub status: Status,
    /// Signature / configuration word (little-endian value).
    pub signature: u16,
}

impl LongHeader {
    /// The 16-hex-digit secondary address (id, manufacturer bytes in frame order, version,
    /// medium) used by scans and selection.
    pub fn secondary_address(&self) -> String {
        let m = self.manufacturer.0.to_le_bytes();
        format!(
            "{}{:02X}{:02X}{:02X}{:02X}",
            self.id,
            m[0],
            m[1],
            self.version,
            self.medium.code()
        )
    }
}

/// The 4-byte short header (CI 0x7A).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortHeader {
    pub access_number: u8,
    pub status: Status,
    pub signature: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    Long(LongHeader),
    Short(ShortHeader),
    None,
}

/// Fixed data structure (CI 0x73 / 0x77): 16 bytes, two counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedData<'a> {
    pub id: IdentificationNumber,
    pub access_number: u8,
    pub status: u8,
    /// Medium from the top two bits of both type bytes.
    pub medium_code: u8,
    pub unit1: u8,
    pub unit2: u8,
    /// The raw counters (4 bytes each, LSB first in CI 0x73).
    pub counter1: &'a [u8],
    pub counter2: &'a [u8],
    pub byte_order: ByteOrder,
}

impl FixedData<'_> {
    /// Status bit 7: counters are binary (else BCD).
    pub fn binary_counters(&self) -> bool {
        self.status & 0x80 != 0
    }
    /// Status bit 6: the counters hold stored (historic) values.
    pub fn stored_values(&self) -> bool {
        self.status & 0x40 != 0
    }

    pub fn counter_value(&self, counter: &[u8]) -> Option<u64> {
        let mut b = [0u8; 4];
        b.copy_from_slice(counter.get(..4)?);
        if self.byte_order == ByteOrder::MsbFirst {
            b.reverse();
        }
        if self.binary_counters() {
            return Some(u64::from(u32::from_le_bytes(b)));
        }
        let mut v = 0u64;
        for byte in b.iter().rev() {
            let (hi, lo) = (byte >> 4, byte & 0x0F);
            if hi > 9 || lo > 9 {
                return None;
            }
            v = v * 100 + u64::from(hi) * 10 + u64::from(lo);
        }
        Some(v)
    }
}

/// CI 0x70: application error reported by the slave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplicationError<'a> {
    pub code: Option<u8>,
    /// Bytes after the error code (some meters add details).
    pub extra: &'a [u8],
}

impl ApplicationError<'_> {
    pub fn text(&self) -> &'static str {
        match self.code {
            None => "unspecified error (no error code)",
            Some(c) => application_error_text(c),
        }
    }
}

pub fn application_error_text(code: u8) -> &'static str {
    match code {
        0 => "unspecified error",
        1 => "unimplemented CI field",
        2 => "buffer too long, truncated",
        3 => "too many records",
        4 => "premature end of record",
        5 => "more than 10 DIFEs",
        6 => "more than 10 VIFEs",
        7 => "reserved",
        8 => "application busy",
        9 => "too many readouts",
        _ => "reserved error code",
    }
}

/// The application layer of one telegram, with the record area still undecoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Application<'a> {
    Variable {
        header: Header,
        /// The record area.
        records: &'a [u8],
        /// Offset of `records[0]` in the frame.
        records_offset: usize,
        byte_order: ByteOrder,
    },
    Fixed(FixedData<'a>),
    Error(ApplicationError<'a>),
    Alarm {
        status: Option<u8>,
    },
    /// A CI we do not interpret (manufacturer specific, master-to-slave commands without data,
    /// baud-rate switches): kept raw.
    Other {
        ci: u8,
        data: &'a [u8],
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ApplicationLayerError {
    #[error(
        "variable data header too short at byte {offset}: {needed} bytes needed, {have} present"
    )]
    HeaderTooShort {
        offset: usize,
        needed: usize,
        have: usize,
    },
    #[error("fixed data structure must be 16 bytes, found {len} (from byte {offset})")]
    FixedLength { offset: usize, len: usize },
}

fn u32_in(b: &[u8], order: ByteOrder) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    match order {
        ByteOrder::LsbFirst => u32::from_le_bytes(a),
        ByteOrder::MsbFirst => u32::from_be_bytes(a),
    }
}

fn u16_in(b: &[u8], order: ByteOrder) -> u16 {
    let a = [b[0], b[1]];
    match order {
        ByteOrder::LsbFirst => u16::from_le_bytes(a),
        ByteOrder::MsbFirst => u16::from_be_bytes(a),
    }
}

/// Parses a 12-byte long header. `b` must hold at least 12 bytes.
pub fn parse_long_header(b: &[u8], order: ByteOrder) -> Option<LongHeader> {
    let b = b.get(..12)?;
    Some(LongHeader {
        id: IdentificationNumber(u32_in(&b[0..4], order)),
        manufacturer: Manufacturer(u16_in(&b[4..6], order)),
        version: b[6],
        medium: Medium::from_code(b[7]),
        access_number: b[8],
        status: Status(b[9]),
        signature: u16_in(&b[10..12], order),
    })
}

/// Interprets the bytes after the CI field. `offset` is the position of `data[0]` in the frame.
pub fn parse(ci: u8, data: &[u8], offset: usize) -> Result<Application<'_>, ApplicationLayerError> {
    let too_short = |needed: usize| ApplicationLayerError::HeaderTooShort {
        offset: offset + data.len(),
        needed,
        have: data.len(),
    };
    Ok(match CiField::from_byte(ci) {
        CiField::VariableLong | CiField::VariableMsbFirst => {
            let order = if ci == 0x76 {
                ByteOrder::MsbFirst
            } else {
                ByteOrder::LsbFirst
            };
            let header = parse_long_header(data, order).ok_or_else(|| too_short(12))?;
            Application::Variable {
                header: Header::Long(header),
                records: &data[12..],
                records_offset: offset + 12,
                byte_order: order,
            }
        }
        CiField::VariableShort => {
            let b = data.get(..4).ok_or_else(|| too_short(4))?;
            Application::Variable {
                header: Header::Short(ShortHeader {
                    access_number: b[0],
                    status: Status(b[1]),
                    signature: u16::from_le_bytes([b[2], b[3]]),
                }),
                records: &data[4..],
                records_offset: offset + 4,
                byte_order: ByteOrder::LsbFirst,
            }
        }
        CiField::VariableNoHeader => Application::Variable {
            header: Header::None,
            records: data,
            records_offset: offset,
            byte_order: ByteOrder::LsbFirst,
        },
        // SND_UD data (CI 0x51) carries records too: decoding it lets users read what a master
        // sent (set address, for one).
        CiField::DataSend => Application::Variable {
            header: Header::None,
            records: data,
            records_offset: offset,
            byte_order: ByteOrder::LsbFirst,
        },
        CiField::FixedLsbFirst | CiField::FixedMsbFirst => {
            if data.len() != 16 {
                return Err(ApplicationLayerError::FixedLength {
                    offset,
                    len: data.len(),
                });
            }
            let order = if ci == 0x77 {
                ByteOrder::MsbFirst
            } else {
                ByteOrder::LsbFirst
            };
            let (t1, t2) = (data[6], data[7]);
            Application::Fixed(FixedData {
                id: IdentificationNumber(u32_in(&data[0..4], order)),
                access_number: data[4],
                status: data[5],
                medium_code: (t1 >> 6) | ((t2 >> 6) << 2),
                unit1: t1 & 0x3F,
                unit2: t2 & 0x3F,
                counter1: &data[8..12],
                counter2: &data[12..16],
                byte_order: order,
            })
        }
        CiField::ApplicationError => Application::Error(ApplicationError {
            code: data.first().copied(),
            extra: data.get(1..).unwrap_or(&[]),
        }),
        CiField::Alarm => Application::Alarm {
            status: data.first().copied(),
        },
        _ => Application::Other { ci, data },
    })
}

/// Unit of a fixed-data counter (the low 6 bits of a type byte): quantity, unit and exponent,
/// `None` for codes without a unit (reserved, "no unit", historic marker).
pub fn fixed_unit(code: u8) -> Option<(&'static str, crate::wire::vif::Unit, i8)> {
    use crate::wire::vif::Unit;
    let c = code & 0x3F;
    let step = |base: u8| (c - base) as i8;
    Some(match c {
        0x02..=0x0A => ("energy", Unit::Wh, step(0x02)),
        0x0B..=0x13 => ("energy", Unit::J, 3 + step(0x0B)),
        0x14..=0x1C => ("power", Unit::Watt, step(0x14)),
        0x1D..=0x25 => ("power", Unit::JoulePerHour, 3 + step(0x1D)),
        0x26..=0x2E => ("volume", Unit::CubicMetre, step(0x26) - 6),
        0x2F..=0x37 => ("volume_flow", Unit::CubicMetrePerHour, step(0x2F) - 6),
        0x38 => ("temperature", Unit::Celsius, -3),
        0x39 => ("hca_units", Unit::HcaUnits, 0),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_header_of_kamstrup_601() {
        let data = [
            0x17, 0x58, 0x85, 0x06, 0x2D, 0x2C, 0x08, 0x04, 0x04, 0x00, 0x00, 0x00,
        ];
        let Application::Variable { header, .. } = parse(0x72, &data, 7).unwrap() else {
            panic!()
        };
        let Header::Long(h) = header else { panic!() };
        assert_eq!(h.id.to_string(), "06855817");
        assert_eq!(h.manufacturer.to_string(), "KAM");
        assert_eq!(h.medium, Medium::HeatOutlet);
        assert_eq!(h.secondary_address(), "068558172D2C0804");
    }

    #[test]
    fn non_bcd_id_is_kept() {
        let data = [0xAB, 0x00, 0x00, 0x10, 0x2D, 0x2C, 0x01, 0x02, 0, 0, 0, 0];
        let Ok(Application::Variable {
            header: Header::Long(h),
            ..
        }) = parse(0x72, &data, 0)
        else {
            panic!()
        };
        assert_eq!(h.id.to_string(), "100000AB");
    }

    #[test]
    fn short_header_and_errors() {
        assert!(matches!(
            parse(0x7A, &[1, 2, 3, 4, 0x01, 0x13, 5], 0),
            Ok(Application::Variable {
                header: Header::Short(ShortHeader {
                    access_number: 1,
                    ..
                }),
                ..
            })
        ));
        assert_eq!(
            parse(0x72, &[1, 2, 3], 7),
            Err(ApplicationLayerError::HeaderTooShort {
                offset: 10,
                needed: 12,
                have: 3
            })
        );
        let Ok(Application::Error(e)) = parse(0x70, &[8], 7) else {
            panic!()
        };
        assert_eq!(e.text(), "application busy");
    }

    #[test]
    fn status_flags_are_named() {
        let flags: Vec<_> = Status(0x15).flags().collect();
        assert_eq!(flags, vec!["busy", "power_low", "temporary_error"]);
        assert_eq!(Status(0).flags().count(), 0);
    }
}
