//! Durations as people write them in a configuration file: `500ms`, `10s`, `15m`, `2h`, `1d`,
//! or combinations from the largest unit to the smallest such as `1h30m`.

use std::time::Duration;

use thiserror::Error;

/// What a duration is expected to look like, for the end of every error message.
pub const EXPECTED: &str =
    "expected a duration such as `500ms`, `10s`, `15m`, `2h`, `1d` or `1h30m`";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DurationError {
    #[error("empty duration; {EXPECTED}")]
    Empty,
    #[error("`{number}` has no unit; {EXPECTED}")]
    MissingUnit { number: String },
    #[error("unknown unit `{unit}` (use ms, s, m, h or d); {EXPECTED}")]
    UnknownUnit { unit: String },
    #[error("a unit needs a number before it (`{unit}`); {EXPECTED}")]
    MissingNumber { unit: String },
    #[error("unexpected character {found:?}; {EXPECTED}")]
    UnexpectedChar { found: char },
    #[error("units must go from the largest to the smallest, each once (`{unit}` is out of place); {EXPECTED}")]
    UnitOrder { unit: String },
    #[error("duration is too long")]
    Overflow,
}

/// Units from the largest to the smallest, with their length in milliseconds.
const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses `1h30m`, `500ms`, `10s`, … Spaces between the parts are allowed (`1h 30m`).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total_ms: u64 = 0;
    // Index into UNITS of the last unit used; the next one must be strictly smaller.
    let mut last_unit: Option<usize> = None;
    let mut rest = text;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let digits_end = rest
            .char_indices()
            .find(|(_, c)| !c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        let (number, after) = rest.split_at(digits_end);
        let unit_end = after
            .char_indices()
            .find(|(_, c)| !c.is_ascii_alphabetic())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after_unit) = after.split_at(unit_end);
        if number.is_empty() {
            if unit.is_empty() {
                let found = after.chars().next().unwrap_or(' ');
                return Err(DurationError::UnexpectedChar { found });
            }
            return Err(DurationError::MissingNumber {
                unit: unit.to_string(),
            });
        }
        if unit.is_empty() {
            return match after.chars().next() {
                None => Err(DurationError::MissingUnit {
                    number: number.to_string(),
                }),
                Some(c) if c.is_whitespace() => Err(DurationError::MissingUnit {
                    number: number.to_string(),
                }),
                Some(found) => Err(DurationError::UnexpectedChar { found }),
            };
        }
        let lower = unit.to_ascii_lowercase();
        let Some(index) = UNITS.iter().position(|(name, _)| *name == lower) else {
            return Err(DurationError::UnknownUnit {
                unit: unit.to_string(),
            });
        };
        if last_unit.is_some_and(|last| index <= last) {
            return Err(DurationError::UnitOrder {
                unit: unit.to_string(),
            });
        }
        last_unit = Some(index);
        let value: u64 = number.parse().map_err(|_| DurationError::Overflow)?;
        let part = value
            .checked_mul(UNITS[index].1)
            .ok_or(DurationError::Overflow)?;
        total_ms = total_ms.checked_add(part).ok_or(DurationError::Overflow)?;
        rest = after_unit;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Writes a duration the way `parse_duration` reads it, largest units first (`1h30m`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (name, unit_ms) in UNITS {
        let unit_ms = u128::from(unit_ms);
        let count = ms / unit_ms;
        if count > 0 {
            out.push_str(&count.to_string());
            out.push_str(name);
            ms -= count * unit_ms;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn single_units() {
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("10s"), Ok(ms(10_000)));
        assert_eq!(parse_duration("15m"), Ok(ms(900_000)));
        assert_eq!(parse_duration("2h"), Ok(ms(7_200_000)));
        assert_eq!(parse_duration("1d"), Ok(ms(86_400_000)));
        assert_eq!(parse_duration("0s"), Ok(ms(0)));
        assert_eq!(parse_duration(" 10S "), Ok(ms(10_000)));
    }

    #[test]
    fn combinations() {
        assert_eq!(parse_duration("1h30m"), Ok(ms(5_400_000)));
        assert_eq!(parse_duration("1h 30m"), Ok(ms(5_400_000)));
        assert_eq!(parse_duration("1d2h3m4s5ms"), Ok(ms(93_784_005)));
        assert_eq!(parse_duration("1m500ms"), Ok(ms(60_500)));
    }

    #[test]
    fn errors_say_what_was_expected() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("10"),
            Err(DurationError::MissingUnit {
                number: "10".into()
            })
        );
        assert_eq!(
            parse_duration("10 s"),
            Err(DurationError::MissingUnit {
                number: "10".into()
            })
        );
        assert_eq!(
            parse_duration("10sec"),
            Err(DurationError::UnknownUnit { unit: "sec".into() })
        );
        assert_eq!(
            parse_duration("h"),
            Err(DurationError::MissingNumber { unit: "h".into() })
        );
        assert_eq!(
            parse_duration("1.5h"),
            Err(DurationError::UnexpectedChar { found: '.' })
        );
        assert_eq!(
            parse_duration("-5s"),
            Err(DurationError::UnexpectedChar { found: '-' })
        );
        assert_eq!(
            parse_duration("30m1h"),
            Err(DurationError::UnitOrder { unit: "h".into() })
        );
        assert_eq!(
            parse_duration("1m1m"),
            Err(DurationError::UnitOrder { unit: "m".into() })
        );
        assert_eq!(
            parse_duration("99999999999999999999d"),
            Err(DurationError::Overflow)
        );
        assert_eq!(
            parse_duration("999999999999999d"),
            Err(DurationError::Overflow)
        );
        let message = parse_duration("10sec").unwrap_err().to_string();
        assert!(message.contains("`1h30m`"), "{message}");
    }

    #[test]
    fn odd_input_never_panics() {
        for text in [
            "ä", "1ä", "1hä", "ms", "1h30", "1h 30", "\u{0}", "1d1d", "🙂5s",
        ] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
    }

    #[test]
    fn format_round_trips() {
        for text in [
            "0s",
            "500ms",
            "10s",
            "15m",
            "2h",
            "1d",
            "1h30m",
            "1d2h3m4s5ms",
        ] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
        }
    }
}
