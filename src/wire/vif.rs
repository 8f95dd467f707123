//! Value information: the primary VIF table, the extension tables 0xFB and 0xFD, and the
//! combinable (orthogonal) VIFEs of EN 13757-3. Tables are `match` arms over the 7-bit code so
//! the compiler turns them into jump tables and nothing is allocated.
//!
//! A description says what the raw number means: value in `unit` = raw × `factor` × 10^`exponent`.
//! Units are the base units we publish (Wh, J, m³, kg, s, W, J/h, m³/h, kg/h, °C, K, bar, V, A):
//! kWh becomes 10^3 Wh, m³/min becomes 60 m³/h, hours become 3600 s.

use std::fmt;

/// The unit a scaled value is expressed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    None,
    Wh,
    J,
    CubicMetre,
    Kilogram,
    Second,
    Month,
    Year,
    Watt,
    JoulePerHour,
    CubicMetrePerHour,
    KilogramPerHour,
    Celsius,
    Kelvin,
    Fahrenheit,
    Bar,
    Volt,
    Ampere,
    Currency,
    Hertz,
    Degree,
    Percent,
    VarHour,
    VoltAmpereHour,
    Var,
    VoltAmpere,
    CubicFeet,
    UsGallon,
    UsGallonPerMinute,
    UsGallonPerHour,
    Baud,
    BitTimes,
    Dbm,
    Day,
    HcaUnits,
}

impl Unit {
    pub fn symbol(self) -> &'static str {
        use Unit::*;
        match self {
            None => "",
            Wh => "Wh",
            J => "J",
            CubicMetre => "m³",
            Kilogram => "kg",
            Second => "s",
            Month => "month",
            Year => "year",
            Watt => "W",
            JoulePerHour => "J/h",
            CubicMetrePerHour => "m³/h",
            KilogramPerHour => "kg/h",
            Celsius => "°C",
            Kelvin => "K",
            Fahrenheit => "°F",
            Bar => "bar",
            Volt => "V",
            Ampere => "A",
            Currency => "currency",
            Hertz => "Hz",
            Degree => "°",
            Percent => "%",
            VarHour => "varh",
            VoltAmpereHour => "VAh",
            Var => "var",
            VoltAmpere => "VA",
            CubicFeet => "ft³",
            UsGallon => "US gal",
            UsGallonPerMinute => "US gal/min",
            UsGallonPerHour => "US gal/h",
            Baud => "Bd",
            BitTimes => "bit times",
            Dbm => "dBm",
            Day => "d",
            HcaUnits => "HCA",
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// How the data of a record is to be read, beyond its DIF coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A number with a unit (possibly [`Unit::None`]).
    Number,
    /// A point in time: date (type G), date and time (F, I) or time (J), chosen by data size.
    TimePoint,
    /// An identifier or code shown as is (fabrication number, versions, bus address).
    Identifier,
    /// Bit flags, best shown in hex.
    Flags,
}

/// Which table a VIF came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VifTable {
    Primary,
    /// 0xFB: first extension table.
    Fb,
    /// 0xFD: second extension table.
    Fd,
    /// 0x7C / 0xFC: the unit is given as text in the record.
    PlainText,
    /// 0x7F / 0xFF: manufacturer specific.
    Manufacturer,
    /// 0x7E / 0xFE: any VIF (readout selection).
    Any,
}

/// What a VIF (with its FB/FD extension) says about a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VifDescription {
    pub table: VifTable,
    /// The 7-bit code in its table (for FB/FD: the first VIFE's code).
    pub code: u8,
    /// Stable snake_case name of the quantity, e.g. `energy`, `flow_temperature`.
    pub quantity: &'static str,
    pub unit: Unit,
    pub factor: u32,
    pub exponent: i8,
    pub kind: ValueKind,
}

const fn desc(
    table: VifTable,
    code: u8,
    quantity: &'static str,
    unit: Unit,
    exponent: i8,
) -> VifDescription {
    VifDescription {
        table,
        code,
        quantity,
        unit,
        factor: 1,
        exponent,
        kind: ValueKind::Number,
    }
}

impl VifDescription {
    const fn with_factor(mut self, factor: u32) -> Self {
        self.factor = factor;
        self
    }

    const fn kind(mut self, kind: ValueKind) -> Self {
        self.kind = kind;
        self
    }

    /// True when the table marks this code as reserved: the record is kept with its raw value.
    pub fn is_reserved(&self) -> bool {
        self.quantity == "reserved"
    }
}

/// Seconds, minutes, hours, days: the common 2-bit duration unit field.
const fn duration_factor(nn: u8) -> u32 {
    match nn & 3 {
        0 => 1,
        1 => 60,
        2 => 3600,
        _ => 86400,
    }
}

fn duration(table: VifTable, code: u8, quantity: &'static str) -> VifDescription {
    desc(table, code, quantity, Unit::Second, 0).with_factor(duration_factor(code))
}

fn plain(table: VifTable, code: u8, quantity: &'static str) -> VifDescription {
    desc(table, code, quantity, Unit::None, 0)
}

fn ident(table: VifTable, code: u8, quantity: &'static str) -> VifDescription {
    plain(table, code, quantity).kind(ValueKind::Identifier)
}

/// Primary VIF table (the code without its extension bit).
pub fn primary(code: u8) -> VifDescription {
    use VifTable::Primary as P;
    let code = code & 0x7F;
    let n = (code & 0x07) as i8;
    let nn = (code & 0x03) as i8;
    match code {
        0x00..=0x07 => desc(P, code, "energy", Unit::Wh, n - 3),
        0x08..=0x0F => desc(P, code, "energy", Unit::J, n),
        0x10..=0x17 => desc(P, code, "volume", Unit::CubicMetre, n - 6),
        0x18..=0x1F => desc(P, code, "mass", Unit::Kilogram, n - 3),
        0x20..=0x23 => duration(P, code, "on_time"),
        0x24..=0x27 => duration(P, code, "operating_time"),
        0x28..=0x2F => desc(P, code, "power", Unit::Watt, n - 3),
        0x30..=0x37 => desc(P, code, "power", Unit::JoulePerHour, n),
        0x38..=0x3F => desc(P, code, "volume_flow", Unit::CubicMetrePerHour, n - 6),
        // m³/min and m³/s, converted to m³/h.
        0x40..=0x47 => desc(P, code, "volume_flow", Unit::CubicMetrePerHour, n - 7).with_factor(60),
        0x48..=0x4F => {
            desc(P, code, "volume_flow", Unit::CubicMetrePerHour, n - 9).with_factor(3600)
        }
        0x50..=0x57 => desc(P, code, "mass_flow", Unit::KilogramPerHour, n - 3),
        0x58..=0x5B => desc(P, code, "flow_temperature", Unit::Celsius, nn - 3),
        0x5C..=0x5F => desc(P, code, "return_temperature", Unit::Celsius, nn - 3),
        0x60..=0x63 => desc(P, code, "temperature_difference", Unit::Kelvin, nn - 3),
        0x64..=0x67 => desc(P, code, "external_temperature", Unit::Celsius, nn - 3),
        0x68..=0x6B => desc(P, code, "pressure", Unit::Bar, nn - 3),
        0x6C => plain(P, code, "date").kind(ValueKind::TimePoint),
        0x6D => plain(P, code, "date_time").kind(ValueKind::TimePoint),
        0x6E => desc(P, code, "hca_units", Unit::HcaUnits, 0),
        0x6F => plain(P, code, "reserved"),
        0x70..=0x73 => duration(P, code, "averaging_duration"),
        0x74..=0x77 => duration(P, code, "actuality_duration"),
        0x78 => ident(P, code, "fabrication_number"),
        0x79 => ident(P, code, "enhanced_identification"),
        0x7A => ident(P, code, "bus_address"),
        // 0x7B and 0x7D are the extension markers; reaching here means the extension bit was
        // missing, which the standard does not allow. Keep the record, flag the VIF.
        0x7B | 0x7D => plain(P, code, "reserved"),
        0x7C => plain(VifTable::PlainText, code, "plain_text_unit"),
        0x7E => plain(VifTable::Any, code, "any"),
        _ => plain(VifTable::Manufacturer, code, "manufacturer_specific"),
    }
}

/// Extension table 0xFB (code = first VIFE without its extension bit).
pub fn table_fb(code: u8) -> VifDescription {
    use VifTable::Fb as T;
    let code = code & 0x7F;
    let n = (code & 0x01) as i8;
    let nn = (code & 0x03) as i8;
    match code {
        0x00..=0x01 => desc(T, code, "energy", Unit::Wh, n + 5),
        0x02..=0x03 => desc(T, code, "reactive_energy", Unit::VarHour, n + 3),
        0x04..=0x05 => desc(T, code, "apparent_energy", Unit::VoltAmpereHour, n + 3),
        0x08..=0x09 => desc(T, code, "energy", Unit::J, n + 8),
        // 0x0C-0x0F (MCal) fall through to reserved: a calorie is 4.1868 J, which the exact
        // decimal scale cannot express; the raw value is still reported.
        0x10..=0x11 => desc(T, code, "volume", Unit::CubicMetre, n + 2),
        0x14..=0x17 => desc(T, code, "reactive_power", Unit::Var, nn),
        0x18..=0x19 => desc(T, code, "mass", Unit::Kilogram, n + 5),
        0x1A..=0x1B => desc(T, code, "relative_humidity", Unit::Percent, n - 1),
        0x20 => desc(T, code, "volume", Unit::CubicFeet, 0),
        0x21 => desc(T, code, "volume", Unit::CubicFeet, -1),
        // Older editions (MBDOC 4.8) used 0x22..0x26 for US gallons; later ones reserve them.
        0x22 => desc(T, code, "volume", Unit::UsGallon, -1),
        0x23 => desc(T, code, "volume", Unit::UsGallon, 0),
        0x24 => desc(T, code, "volume_flow", Unit::UsGallonPerMinute, -3),
        0x25 => desc(T, code, "volume_flow", Unit::UsGallonPerMinute, 0),
        0x26 => desc(T, code, "volume_flow", Unit::UsGallonPerHour, 0),
        0x28..=0x29 => desc(T, code, "power", Unit::Watt, n + 5),
        0x2A => desc(T, code, "phase_voltage_voltage", Unit::Degree, -1),
        0x2B => desc(T, code, "phase_voltage_current", Unit::Degree, -1),
        0x2C..=0x2F => desc(T, code, "frequency", Unit::Hertz, nn - 3),
        0x30..=0x31 => desc(T, code, "power", Unit::JoulePerHour, n + 8),
        0x34..=0x37 => desc(T, code, "apparent_power", Unit::VoltAmpere, nn),
        0x58..=0x5B => desc(T, code, "flow_temperature", Unit::Fahrenheit, nn - 3),
        0x5C..=0x5F => desc(T, code, "return_temperature", Unit::Fahrenheit, nn - 3),
        0x60..=0x63 => desc(T, code, "temperature_difference", Unit::Fahrenheit, nn - 3),
        0x64..=0x67 => desc(T, code, "external_temperature", Unit::Fahrenheit, nn - 3),
        0x70..=0x73 => desc(T, code, "temperature_limit", Unit::Fahrenheit, nn - 3),
        0x74..=0x77 => desc(T, code, "temperature_limit", Unit::Celsius, nn - 3),
        0x78..=0x7F => desc(
            T,
            code,
            "cumulative_max_power",
            Unit::Watt,
            (code & 7) as i8 - 3,
        ),
        _ => plain(T, code, "reserved"),
    }
}

/// Extension table 0xFD (code = first VIFE without its extension bit).
pub fn table_fd(code: u8) -> VifDescription {
    use VifTable::Fd as T;
    let code = code & 0x7F;
    let nn = (code & 0x03) as i8;
    match code {
        0x00..=0x03 => desc(T, code, "credit", Unit::Currency, nn - 3),
        0x04..=0x07 => desc(T, code, "debit", Unit::Currency, nn - 3),
        0x08 => ident(T, code, "access_number"),
        0x09 => ident(T, code, "medium"),
        0x0A => ident(T, code, "manufacturer"),
        0x0B => ident(T, code, "parameter_set_id"),
        0x0C => ident(T, code, "model_version"),
        0x0D => ident(T, code, "hardware_version"),
        0x0E => ident(T, code, "firmware_version"),
        0x0F => ident(T, code, "software_version"),
        0x10 => ident(T, code, "customer_location"),
        0x11 => ident(T, code, "customer"),
        0x12 => ident(T, code, "access_code_user"),
        0x13 => ident(T, code, "access_code_operator"),
        0x14 => ident(T, code, "access_code_system_operator"),
        0x15 => ident(T, code, "access_code_developer"),
        0x16 => ident(T, code, "password"),
        0x17 => plain(T, code, "error_flags").kind(ValueKind::Flags),
        0x18 => plain(T, code, "error_mask").kind(ValueKind::Flags),
        0x19 => ident(T, code, "security_key"),
        0x1A => plain(T, code, "digital_output").kind(ValueKind::Flags),
        0x1B => plain(T, code, "digital_input").kind(ValueKind::Flags),
        0x1C => desc(T, code, "baud_rate", Unit::Baud, 0),
        0x1D => desc(T, code, "response_delay", Unit::BitTimes, 0),
        0x1E => plain(T, code, "retry"),
        0x1F => plain(T, code, "remote_control").kind(ValueKind::Flags),
        0x20 => plain(T, code, "first_storage_number"),
        0x21 => plain(T, code, "last_storage_number"),
        0x22 => plain(T, code, "storage_block_size"),
        0x23 => plain(T, code, "tariff_subunit_descriptor"),
        0x24..=0x27 => duration(T, code, "storage_interval"),
        0x28 => desc(T, code, "storage_interval", Unit::Month, 0),
        0x29 => desc(T, code, "storage_interval", Unit::Year, 0),
        0x2A => ident(T, code, "operator_specific_data"),
        0x2B => desc(T, code, "time_point_second", Unit::Second, 0),
        0x2C..=0x2F => duration(T, code, "duration_since_last_readout"),
        0x30 => plain(T, code, "tariff_start").kind(ValueKind::TimePoint),
        0x31..=0x33 => duration(T, code, "tariff_duration"),
        0x34..=0x37 => duration(T, code, "tariff_period"),
        0x38 => desc(T, code, "tariff_period", Unit::Month, 0),
        0x39 => desc(T, code, "tariff_period", Unit::Year, 0),
        0x3A => plain(T, code, "dimensionless"),
        0x3B => ident(T, code, "wireless_container"),
        0x3C..=0x3F => duration(T, code, "transmission_period"),
        0x40..=0x4F => desc(T, code, "voltage", Unit::Volt, (code & 0x0F) as i8 - 9),
        0x50..=0x5F => desc(T, code, "current", Unit::Ampere, (code & 0x0F) as i8 - 12),
        0x60 => plain(T, code, "reset_counter"),
        0x61 => plain(T, code, "cumulation_counter"),
        0x62 => plain(T, code, "control_signal"),
        0x63 => plain(T, code, "day_of_week"),
        0x64 => plain(T, code, "week_number"),
        0x65 => plain(T, code, "day_change_time_point"),
        0x66 => plain(T, code, "parameter_activation_state"),
        0x67 => ident(T, code, "special_supplier_information"),
        0x68 => duration(T, 0x02, "duration_since_last_cumulation").with_code(code),
        0x69 => duration(T, 0x03, "duration_since_last_cumulation").with_code(code),
        0x6A => desc(T, code, "duration_since_last_cumulation", Unit::Month, 0),
        0x6B => desc(T, code, "duration_since_last_cumulation", Unit::Year, 0),
        0x6C => duration(T, 0x02, "battery_operating_time").with_code(code),
        0x6D => duration(T, 0x03, "battery_operating_time").with_code(code),
        0x6E => desc(T, code, "battery_operating_time", Unit::Month, 0),
        0x6F => desc(T, code, "battery_operating_time", Unit::Year, 0),
        0x70 => plain(T, code, "battery_change").kind(ValueKind::TimePoint),
        0x71 => desc(T, code, "rf_level", Unit::Dbm, 0),
        0x72 => plain(T, code, "daylight_saving"),
        0x73 => plain(T, code, "listening_window"),
        0x74 => desc(T, code, "remaining_battery_life", Unit::Day, 0),
        0x75 => plain(T, code, "meter_stop_count"),
        0x76 => ident(T, code, "manufacturer_container"),
        _ => plain(T, code, "reserved"),
    }
}

impl VifDescription {
    fn with_code(mut self, code: u8) -> Self {
        self.code = code;
        self
    }
}

/// One combinable (orthogonal) VIFE, as the standard's table reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combinable {
    /// 0x00-0x1F: the meter reports an error for this record instead of (or with) a value.
    RecordError(RecordErrorCode),
    /// 0x20-0x27: per second ... per year, per revolution/measurement.
    PerTime(TimeUnit),
    /// 0x28-0x2B: increment per input (0x28, 0x29) or output (0x2A, 0x2B) pulse on channel 0/1.
    PerPulse {
        output: bool,
        channel: u8,
    },
    /// 0x2C-0x35: per litre, m³, kg, K, kWh, GJ, kW, K·l, V, A.
    PerUnit(&'static str),
    /// 0x36-0x38: multiplied by s, s/V, s/A.
    MultipliedBy(&'static str),
    /// 0x39: the value is the start date/time of the quantity.
    StartDateTimeOf,
    /// 0x3A: the VIF's unit is uncorrected (e.g. gas volume at meter conditions).
    Uncorrected,
    /// 0x3B: accumulated only when positive.
    AccumulationPositive,
    /// 0x3C: absolute value accumulated only when negative.
    AccumulationNegative,
    /// 0x3D: non-metric units.
    NonMetric,
    /// 0x40 / 0x48.
    LimitValue {
        upper: bool,
    },
    /// 0x41 / 0x49.
    LimitExceedCount {
        upper: bool,
    },
    /// 0x42-0x4F less the above: date(/time) of begin or end of the first or last exceedance.
    LimitExceedTime {
        upper: bool,
        last: bool,
        end: bool,
    },
    /// 0x50-0x5F: duration of the first or last limit exceedance.
    LimitExceedDuration {
        upper: bool,
        last: bool,
        unit: TimeUnit,
    },
    /// 0x60-0x67: duration of the first or last ...
    DurationOf {
        last: bool,
        unit: TimeUnit,
    },
    /// 0x6A, 0x6B, 0x6E, 0x6F: date(/time) of begin or end of the first or last ...
    TimeOf {
        last: bool,
        end: bool,
    },
    /// 0x70-0x77, 0x7D: the value is multiplied by 10^exponent.
    MultiplicativeCorrection {
        exponent: i8,
    },
    /// 0x78-0x7B: the value is an additive correction constant, in 10^exponent × VIF unit.
    AdditiveCorrection {
        exponent: i8,
    },
    /// 0x7E: a future value.
    FutureValue,
    /// 0x7F: this and every further VIFE and the data are manufacturer specific.
    ManufacturerSpecific,
    /// 0x7C: the next byte is from the combinable extension table (2018 edition).
    Extension(u8),
    Reserved(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
    Measurement,
}

impl TimeUnit {
    fn from_nn(nn: u8) -> TimeUnit {
        match nn & 3 {
            0 => TimeUnit::Second,
            1 => TimeUnit::Minute,
            2 => TimeUnit::Hour,
            _ => TimeUnit::Day,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TimeUnit::Second => "second",
            TimeUnit::Minute => "minute",
            TimeUnit::Hour => "hour",
            TimeUnit::Day => "day",
            TimeUnit::Week => "week",
            TimeUnit::Month => "month",
            TimeUnit::Year => "year",
            TimeUnit::Measurement => "measurement",
        }
    }
}

/// Record error codes carried in a combinable VIFE (EN 13757-3, table "VIFE codes for reports
/// of record errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordErrorCode {
    None,
    TooManyDifes,
    StorageNotImplemented,
    UnitNotImplemented,
    TariffNotImplemented,
    FunctionNotImplemented,
    DataClassNotImplemented,
    DataSizeNotImplemented,
    TooManyVifes,
    IllegalVifGroup,
    IllegalVifExponent,
    VifDifMismatch,
    UnimplementedAction,
    NoDataAvailable,
    DataOverflow,
    DataUnderflow,
    DataError,
    PrematureEndOfRecord,
    Reserved(u8),
}

impl RecordErrorCode {
    pub fn from_code(code: u8) -> Self {
        use RecordErrorCode::*;
        match code & 0x1F {
            0x00 => None,
            0x01 => TooManyDifes,
            0x02 => StorageNotImplemented,
            0x03 => UnitNotImplemented,
            0x04 => TariffNotImplemented,
            0x05 => FunctionNotImplemented,
            0x06 => DataClassNotImplemented,
            0x07 => DataSizeNotImplemented,
            0x0B => TooManyVifes,
            0x0C => IllegalVifGroup,
            0x0D => IllegalVifExponent,
            0x0E => VifDifMismatch,
            0x0F => UnimplementedAction,
            0x15 => NoDataAvailable,
            0x16 => DataOverflow,
            0x17 => DataUnderflow,
            0x18 => DataError,
            0x1C => PrematureEndOfRecord,
            other => Reserved(other),
        }
    }

    pub fn text(self) -> &'static str {
        use RecordErrorCode::*;
        match self {
            None => "no error",
            TooManyDifes => "too many DIFEs",
            StorageNotImplemented => "storage number not implemented",
            UnitNotImplemented => "unit number not implemented",
            TariffNotImplemented => "tariff number not implemented",
            FunctionNotImplemented => "function not implemented",
            DataClassNotImplemented => "data class not implemented",
            DataSizeNotImplemented => "data size not implemented",
            TooManyVifes => "too many VIFEs",
            IllegalVifGroup => "illegal VIF group",
            IllegalVifExponent => "illegal VIF exponent",
            VifDifMismatch => "VIF/DIF mismatch",
            UnimplementedAction => "unimplemented action",
            NoDataAvailable => "no data available",
            DataOverflow => "data overflow",
            DataUnderflow => "data underflow",
            DataError => "data error",
            PrematureEndOfRecord => "premature end of record",
            Reserved(_) => "reserved error code",
        }
    }
}

impl Combinable {
    pub fn from_code(code: u8) -> Self {
        use Combinable::*;
        let code = code & 0x7F;
        match code {
            0x00..=0x1F => RecordError(RecordErrorCode::from_code(code)),
            0x20 => PerTime(TimeUnit::Second),
            0x21 => PerTime(TimeUnit::Minute),
            0x22 => PerTime(TimeUnit::Hour),
            0x23 => PerTime(TimeUnit::Day),
            0x24 => PerTime(TimeUnit::Week),
            0x25 => PerTime(TimeUnit::Month),
            0x26 => PerTime(TimeUnit::Year),
            0x27 => PerTime(TimeUnit::Measurement),
            0x28..=0x2B => PerPulse {
                output: code & 0x02 != 0,
                channel: code & 0x01,
            },
            0x2C => PerUnit("l"),
            0x2D => PerUnit("m³"),
            0x2E => PerUnit("kg"),
            0x2F => PerUnit("K"),
            0x30 => PerUnit("kWh"),
            0x31 => PerUnit("GJ"),
            0x32 => PerUnit("kW"),
            0x33 => PerUnit("K·l"),
            0x34 => PerUnit("V"),
            0x35 => PerUnit("A"),
            0x36 => MultipliedBy("s"),
            0x37 => MultipliedBy("s/V"),
            0x38 => MultipliedBy("s/A"),
            0x39 => StartDateTimeOf,
            0x3A => Uncorrected,
            0x3B => AccumulationPositive,
            0x3C => AccumulationNegative,
            0x3D => NonMetric,
            0x40 | 0x48 => LimitValue {
                upper: code & 0x08 != 0,
            },
            0x41 | 0x49 => LimitExceedCount {
                upper: code & 0x08 != 0,
            },
            0x42..=0x4F if code & 0x02 != 0 => LimitExceedTime {
                upper: code & 0x08 != 0,
                last: code & 0x04 != 0,
                end: code & 0x01 != 0,
            },
            0x50..=0x5F => LimitExceedDuration {
                upper: code & 0x08 != 0,
                last: code & 0x04 != 0,
                unit: TimeUnit::from_nn(code),
            },
            0x60..=0x67 => DurationOf {
                last: code & 0x04 != 0,
                unit: TimeUnit::from_nn(code),
            },
            0x6A | 0x6B | 0x6E | 0x6F => TimeOf {
                last: code & 0x04 != 0,
                end: code & 0x01 != 0,
            },
            0x70..=0x77 => MultiplicativeCorrection {
                exponent: (code & 0x07) as i8 - 6,
            },
            0x78..=0x7B => AdditiveCorrection {
                exponent: (code & 0x03) as i8 - 3,
            },
            0x7C => Extension(0),
            0x7D => MultiplicativeCorrection { exponent: 3 },
            0x7E => FutureValue,
            0x7F => ManufacturerSpecific,
            other => Reserved(other),
        }
    }

    /// True when the VIFE turns the record into a point in time (its data is a date).
    pub fn is_time_point(self) -> bool {
        matches!(
            self,
            Combinable::StartDateTimeOf
                | Combinable::LimitExceedTime { .. }
                | Combinable::TimeOf { .. }
        )
    }

    /// Short English text for reports and JSON (`annotations`).
    pub fn describe(self) -> String {
        use Combinable::*;
        match self {
            RecordError(e) => format!("error: {}", e.text()),
            PerTime(u) => format!("per {}", u.name()),
            PerPulse { output, channel } => format!(
                "increment per {} pulse on channel {channel}",
                if output { "output" } else { "input" }
            ),
            PerUnit(u) => format!("per {u}"),
            MultipliedBy(u) => format!("multiplied by {u}"),
            StartDateTimeOf => "start date/time of".into(),
            Uncorrected => "uncorrected unit".into(),
            AccumulationPositive => "accumulation only if positive".into(),
            AccumulationNegative => "accumulation of absolute value only if negative".into(),
            NonMetric => "non-metric unit".into(),
            LimitValue { upper } => format!("{} limit value", upper_lower(upper)),
            LimitExceedCount { upper } => {
                format!("number of exceedances of {} limit", upper_lower(upper))
            }
            LimitExceedTime { upper, last, end } => format!(
                "date/time of {} of {} exceedance of {} limit",
                if end { "end" } else { "begin" },
                if last { "last" } else { "first" },
                upper_lower(upper)
            ),
            LimitExceedDuration { upper, last, unit } => format!(
                "duration ({}s) of {} exceedance of {} limit",
                unit.name(),
                if last { "last" } else { "first" },
                upper_lower(upper)
            ),
            DurationOf { last, unit } => format!(
                "duration ({}s) of {}",
                unit.name(),
                if last { "last" } else { "first" }
            ),
            TimeOf { last, end } => format!(
                "date/time of {} of {}",
                if end { "end" } else { "begin" },
                if last { "last" } else { "first" }
            ),
            MultiplicativeCorrection { exponent } => {
                format!("multiplicative correction factor 1e{exponent}")
            }
            AdditiveCorrection { exponent } => {
                format!("additive correction constant, 1e{exponent} × unit")
            }
            FutureValue => "future value".into(),
            ManufacturerSpecific => "manufacturer specific".into(),
            Extension(b) => format!("combinable extension 0x{b:02X}"),
            Reserved(c) => format!("reserved VIFE 0x{c:02X}"),
        }
    }
}

fn upper_lower(upper: bool) -> &'static str {
    if upper {
        "upper"
    } else {
        "lower"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_scaling() {
        let d = primary(0x06); // kWh
        assert_eq!((d.quantity, d.unit, d.exponent), ("energy", Unit::Wh, 3));
        let d = primary(0x13); // litres
        assert_eq!((d.unit, d.exponent), (Unit::CubicMetre, -3));
        let d = primary(0x22); // on time in hours
        assert_eq!((d.unit, d.factor, d.exponent), (Unit::Second, 3600, 0));
        let d = primary(0x43); // 10^-4 m³/min -> m³/h
        assert_eq!((d.factor, d.exponent), (60, -4));
        let d = primary(0x59);
        assert_eq!((d.quantity, d.exponent), ("flow_temperature", -2));
        assert_eq!(primary(0xFF).table, VifTable::Manufacturer);
        assert_eq!(primary(0xFC).table, VifTable::PlainText);
    }

    #[test]
    fn extension_tables() {
        let d = table_fb(0x01);
        assert_eq!((d.unit, d.exponent), (Unit::Wh, 6)); // 1 MWh
        let d = table_fd(0x48);
        assert_eq!((d.quantity, d.exponent), ("voltage", -1));
        let d = table_fd(0x59);
        assert_eq!((d.quantity, d.exponent), ("current", -3));
        assert_eq!(table_fd(0x17).kind, ValueKind::Flags);
        assert!(table_fd(0x7F).is_reserved());
    }

    #[test]
    fn combinables() {
        assert_eq!(
            Combinable::from_code(0x73),
            Combinable::MultiplicativeCorrection { exponent: -3 }
        );
        assert_eq!(
            Combinable::from_code(0xFD),
            Combinable::MultiplicativeCorrection { exponent: 3 }
        );
        assert_eq!(
            Combinable::from_code(0x22),
            Combinable::PerTime(TimeUnit::Hour)
        );
        assert_eq!(
            Combinable::from_code(0x4A),
            Combinable::LimitExceedTime {
                upper: true,
                last: false,
                end: false
            }
        );
        assert!(Combinable::from_code(0x39).is_time_point());
        assert_eq!(
            Combinable::from_code(0x15),
            Combinable::RecordError(RecordErrorCode::NoDataAvailable)
        );
    }
}
