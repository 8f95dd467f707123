//! Date and time types of EN 13757-3 Annex A: G (date), F (date + time), I (date + time with
//! seconds), J (time of day). Decoding never fails: flags say what the meter marked invalid.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateTimeKind {
    /// Type G, 16 bits: date.
    Date,
    /// Type F, 32 bits: date and time to the minute.
    DateTime,
    /// Type I, 48 bits: date and time to the second.
    DateTimeSeconds,
    /// Type J, 24 bits: time of day.
    Time,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterDateTime {
    pub kind: DateTimeKind,
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// The IV bit: the meter says the value is not valid (no time set yet, for one).
    pub invalid: bool,
    /// The SU bit: the time is summer (daylight saving) time.
    pub summer_time: bool,
}

/// Year from the 7-bit year field and (type F) the 2-bit hundred-year field.
/// Meters that leave hundred-year at 0 mean 20xx for 00..=80 and 19xx above, as most
/// software (libmbus included) reads them; hundred-year 1 means 20xx. Values 2 and 3 would put
/// the reading in the 22nd century or later, which no meter in service can mean: meters that
/// set bit 6 of the hour byte use it for something else (the corpus has a UIWS water meter
/// reading 2026 that way), so the year is then read as if the field were 0.
fn full_year(year: u8, hundred_year: u8) -> u16 {
    match hundred_year {
        1 => 2000 + u16::from(year),
        _ if year <= 80 => 2000 + u16::from(year),
        _ => 1900 + u16::from(year),
    }
}

fn date_fields(day_year: u8, month_year: u8) -> (u8, u8, u8) {
    let day = day_year & 0x1F;
    let month = month_year & 0x0F;
    let year = (day_year >> 5) | ((month_year >> 4) << 3);
    (year, month, day)
}

impl MeterDateTime {
    /// Type G. `FF FF` (and other out-of-range patterns) is decoded as-is and flagged invalid.
    pub fn type_g(b: [u8; 2]) -> Self {
        let (year, month, day) = date_fields(b[0], b[1]);
        MeterDateTime {
            kind: DateTimeKind::Date,
            // Type G has no century field; meters mean 20xx for the whole 0-127 range
            // (libmbus and wmbusmeters read it so too).
            year: 2000 + u16::from(year),
            month,
            day,
            hour: 0,
            minute: 0,
            second: 0,
            invalid: b == [0xFF, 0xFF] || month == 0 || month > 12 || day == 0,
            summer_time: false,
        }
    }

    /// Type F.
    pub fn type_f(b: [u8; 4]) -> Self {
        let (year, month, day) = date_fields(b[2], b[3]);
        let hundred_year = (b[1] >> 5) & 0x03;
        MeterDateTime {
            kind: DateTimeKind::DateTime,
            year: full_year(year, hundred_year),
            month,
            day,
            hour: b[1] & 0x1F,
            minute: b[0] & 0x3F,
            second: 0,
            invalid: b[0] & 0x80 != 0,
            summer_time: b[1] & 0x80 != 0,
        }
    }

    /// Type I: seconds in byte 0, minute and IV in byte 1, hour in byte 2, date in bytes 3-4.
    /// Byte 0 bit 6 carries the summer-time flag; byte 5 (week, DST offset) is not needed for
    /// the point in time.
    pub fn type_i(b: [u8; 6]) -> Self {
        let (year, month, day) = date_fields(b[3], b[4]);
        MeterDateTime {
            kind: DateTimeKind::DateTimeSeconds,
            year: full_year(year, 0),
            month,
            day,
            hour: b[2] & 0x1F,
            minute: b[1] & 0x3F,
            second: b[0] & 0x3F,
            invalid: b[1] & 0x80 != 0,
            summer_time: b[0] & 0x40 != 0,
        }
    }

    /// Type J: seconds, minutes, hours.
    pub fn type_j(b: [u8; 3]) -> Self {
        MeterDateTime {
            kind: DateTimeKind::Time,
            year: 0,
            month: 0,
            day: 0,
            hour: b[2] & 0x1F,
            minute: b[1] & 0x3F,
            second: b[0] & 0x3F,
            invalid: false,
            summer_time: false,
        }
    }
}

impl fmt::Display for MeterDateTime {
    /// ISO 8601 local time (meters do not send a time zone).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            DateTimeKind::Date => write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day),
            DateTimeKind::DateTime => write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}",
                self.year, self.month, self.day, self.hour, self.minute
            ),
            DateTimeKind::DateTimeSeconds => write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                self.year, self.month, self.day, self.hour, self.minute, self.second
            ),
            DateTimeKind::Time => {
                write!(f, "{:02}:{:02}:{:02}", self.hour, self.minute, self.second)
            }
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (month 1-12; day may run past the
/// month, which rolls over as a calendar does).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01, as (year, month, day).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_f_from_kamstrup_corpus_frame() {
        // `04 6D 1A 2F 65 11` in kamstrup_multical_601: libmbus prints 2011-01-05T15:26:00.
        let t = MeterDateTime::type_f([0x1A, 0x2F, 0x65, 0x11]);
        assert_eq!(t.to_string(), "2011-01-05T15:26");
        assert!(!t.invalid && !t.summer_time);
    }

    #[test]
    fn type_f_century() {
        // year 96, hundred-year 0 -> 1996
        let t = MeterDateTime::type_f([0x00, 0x00, 0x01, (96 >> 3) << 4 | 1]);
        assert_eq!(t.year, 1996);
        // year 5, hundred-year 1 -> 2005
        let t = MeterDateTime::type_f([0x00, 0x20, 0x01 | (5 << 5), 1]);
        assert_eq!(t.year, 2005);
        // hundred-year 1 with year 96 -> 2096
        let t = MeterDateTime::type_f([0x00, 0x20, 0x01, (96 >> 3) << 4 | 1]);
        assert_eq!(t.year, 2096);
        // The UIWS record 04 6D 22 48 41 36: hour byte 0x48 sets hundred-year 2; the meter
        // means 2026-06-01 08:34.
        let t = MeterDateTime::type_f([0x22, 0x48, 0x41, 0x36]);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute),
            (2026, 6, 1, 8, 34)
        );
    }

    #[test]
    fn type_g_and_flags() {
        let t = MeterDateTime::type_g([0x5F, 0x1C]);
        assert_eq!(t.to_string(), "2010-12-31");
        assert!(!t.invalid);
        assert!(MeterDateTime::type_g([0xFF, 0xFF]).invalid);
        let t = MeterDateTime::type_f([0x80, 0x80, 0x21, 0x11]);
        assert!(t.invalid && t.summer_time);
    }

    #[test]
    fn civil_days_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        for d in [-1000, 0, 10_957, 20_000, 50_000] {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, day), d);
        }
    }

    #[test]
    fn type_i_and_j() {
        let t = MeterDateTime::type_i([30, 15, 10, 0x21, 0x21, 0]);
        assert_eq!(t.to_string(), "2017-01-01T10:15:30");
        let t = MeterDateTime::type_j([5, 4, 23]);
        assert_eq!(t.to_string(), "23:04:05");
    }
}
