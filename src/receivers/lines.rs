//! Text inputs that carry one telegram per line: rtl_wmbus output (`--rtlwmbus`, and ESP32
//! receivers that imitate it) and raw hex (`--hex-stdin`, TCP, UDP, MQTT). Pure parsing: the
//! callers own the I/O and count the errors.
//!
//! rtl_wmbus (github.com/xaelsouth/rtl-wmbus, `README.md` and `t1_c1_packet_decoder.h`) prints
//! `MODE;CRC_OK;3OUTOF6OK;TIMESTAMP;PACKET_RSSI;CURRENT_RSSI;LINK_LAYER_IDENT_NO;0x<datagram>`
//! with the data-link CRCs already removed and, for C1 format B, L rewritten to count the
//! bytes without CRCs. With `-v` a field naming the algorithm (`rla`, `t2a`) comes first.
//! Its two RSSI fields are unsigned magnitudes of the SDR's I/Q samples (a smoothed
//! amplitude, not calibrated), so they cannot be given in dBm and are dropped. ESPHome's
//! `wmbus_radio` writes the same format with `PACKET_RSSI` in dBm (`T1;1;1;…;-60;;;0x…`): a
//! negative value there is taken as dBm.
//!
//! ESP32 receivers publishing JSON send objects like `{"telegram":"2A44…","rssi":-71}`
//! (keys `telegram`, `frame` or `data`; `rssi` or `rssi_dbm`).

use thiserror::Error;

use super::{Heard, LinkMode};
use crate::wire::hex::{self, HexError};
use crate::wire::wireless::strip_dll_crcs;

/// Longest line looked at; a telegram is at most 290 bytes (580 hex digits), so anything
/// longer is not one of ours.
pub const MAX_LINE: usize = 4096;

/// Why a line was rejected. `column` counts characters from the start of the line (0-based).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("column {column}: {message}")]
pub struct LineError {
    pub column: usize,
    pub message: String,
}

fn err(column: usize, message: impl Into<String>) -> LineError {
    LineError {
        column,
        message: message.into(),
    }
}

fn hex_error(column: usize, e: HexError) -> LineError {
    match e {
        HexError::InvalidCharacter { offset, found } => {
            err(column + offset, format!("not a hex digit: {found:?}"))
        }
        other => err(column, other.to_string()),
    }
}

/// Common checks of both parsers: length bound, blank lines and `#` comments.
fn content(line: &str) -> Result<Option<(&str, usize)>, LineError> {
    if line.len() > MAX_LINE {
        return Err(err(
            MAX_LINE,
            format!(
                "line of {} characters is longer than any telegram ({MAX_LINE} at most)",
                line.len()
            ),
        ));
    }
    let start = line.len() - line.trim_start().len();
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    Ok(Some((trimmed, start)))
}

/// Parses one line of rtl_wmbus output. Blank lines and `#` comments give `Ok(None)`; a
/// line rtl_wmbus marks as failed (CRC_OK 0, or a 3-out-of-6 error in T1) is an error.
pub fn parse_rtlwmbus_line(line: &str) -> Result<Option<Heard>, LineError> {
    let Some((text, start)) = content(line)? else {
        return Ok(None);
    };
    let mut fields: Vec<(usize, &str)> = Vec::new();
    let mut column = start;
    for field in text.split(';') {
        fields.push((column, field.trim()));
        column += field.len() + 1;
    }
    // rtl_wmbus -v puts the algorithm's name first.
    if fields
        .first()
        .is_some_and(|(_, f)| mode_of(f).is_none() && matches!(*f, "rla" | "t2a"))
    {
        fields.remove(0);
    }
    let field = |i: usize, name: &str| {
        fields.get(i).copied().ok_or_else(|| {
            err(
                column.saturating_sub(1),
                format!(
                    "only {} field(s); rtl_wmbus lines have 8 (MODE;CRC_OK;3OUTOF6OK;TIMESTAMP;\
                     PACKET_RSSI;CURRENT_RSSI;LINK_LAYER_IDENT_NO;DATAGRAM), {name} is missing",
                    fields.len()
                ),
            )
        })
    };

    let (mode_col, mode_text) = field(0, "MODE")?;
    let mode = mode_of(mode_text).ok_or_else(|| {
        err(
            mode_col,
            format!("unknown mode {mode_text:?}; rtl_wmbus writes T1, C1 or S1"),
        )
    })?;
    let (crc_col, crc_ok) = field(1, "CRC_OK")?;
    match crc_ok {
        "1" => {}
        "0" => {
            return Err(err(
                crc_col,
                "CRC_OK is 0: the receiver found a data-link CRC error",
            ))
        }
        other => return Err(err(crc_col, format!("CRC_OK is {other:?}, not 0 or 1"))),
    }
    let (coding_col, coding_ok) = field(2, "3OUTOF6OK")?;
    if mode == LinkMode::T1 && coding_ok == "0" {
        return Err(err(
            coding_col,
            "3OUTOF6OK is 0: the T1 frame had 3-out-of-6 coding errors",
        ));
    }
    let (rssi_col, rssi_text) = field(4, "PACKET_RSSI")?;
    let rssi_dbm = if rssi_text.is_empty() {
        None
    } else {
        let value: f64 = rssi_text.parse().map_err(|_| {
            err(
                rssi_col,
                format!("PACKET_RSSI {rssi_text:?} is not a number"),
            )
        })?;
        // Only a negative value can be dBm; rtl_wmbus's own values are amplitudes.
        (value < 0.0 && value > -200.0).then(|| value.round() as i16)
    };
    let (data_col, data_text) = field(7, "DATAGRAM")?;
    let digits = data_text
        .strip_prefix("0x")
        .or_else(|| data_text.strip_prefix("0X"))
        .unwrap_or(data_text);
    let prefix_len = data_text.len() - digits.len();
    let bytes = hex::decode(digits).map_err(|e| hex_error(data_col + prefix_len, e))?;
    let frame = normalise_rtl_datagram(bytes, mode).map_err(|m| err(data_col, m))?;
    let mut heard = Heard::new(frame, rssi_dbm);
    heard.mode = Some(mode);
    Ok(Some(heard))
}

fn mode_of(text: &str) -> Option<LinkMode> {
    match text {
        "T1" => Some(LinkMode::T1),
        "C1" => Some(LinkMode::C1),
        "S1" => Some(LinkMode::S1),
        _ => None,
    }
}

/// rtl_wmbus datagrams come without CRCs. Current versions set L to the CRC-less length;
/// older ones (and some imitators) left a C1 format B frame's L counting its CRCs, which is
/// repaired here. Anything else that does not fit L is given to [`strip_dll_crcs`] in case
/// the CRCs are still there.
fn normalise_rtl_datagram(mut bytes: Vec<u8>, mode: LinkMode) -> Result<Vec<u8>, String> {
    let Some(&l) = bytes.first() else {
        return Err("empty datagram".to_string());
    };
    let len = bytes.len();
    let data_len = usize::from(l) + 1;
    if data_len == len {
        return Ok(bytes);
    }
    if mode == LinkMode::C1 {
        // Format B: one CRC up to 128 bytes with CRCs, two beyond.
        let crc_bytes = if data_len <= 128 { 2 } else { 4 };
        if data_len.checked_sub(len) == Some(crc_bytes) {
            if let (Ok(new_l), Some(first)) = (u8::try_from(len - 1), bytes.first_mut()) {
                *first = new_l;
                return Ok(bytes);
            }
        }
    }
    match strip_dll_crcs(&bytes) {
        Ok(stripped) => Ok(stripped.bytes),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses one line holding a raw telegram as hex, with or without data-link CRCs: plain
/// hex with optional separators (spaces, `|`, `_`, `:`, `-`, `,`) and `0x` prefixes,
/// wmbusmeters' `telegram=|2A44…|` form, an optional `;rssi=-71` after it, or a small JSON
/// object `{"telegram":"…","rssi":-71}`. CRCs, when present, must check out.
pub fn parse_hex_line(line: &str) -> Result<Option<Heard>, LineError> {
    let Some((text, start)) = content(line)? else {
        return Ok(None);
    };
    let (hex_col, hex_text, rssi_dbm) = if text.starts_with('{') {
        let object = parse_json_object(text, start)?;
        let mut telegram = None;
        let mut rssi = None;
        for (key, value) in &object {
            match (key.as_str(), value) {
                ("telegram" | "frame" | "data", JsonValue::Str(col, s)) => {
                    telegram = Some((*col, s.clone()))
                }
                ("telegram" | "frame" | "data", _) => {
                    return Err(err(start, format!("\"{key}\" must be a hex string")))
                }
                ("rssi" | "rssi_dbm", JsonValue::Num(n)) => rssi = Some(*n),
                _ => {}
            }
        }
        let (col, s) = telegram.ok_or_else(|| {
            err(
                start,
                "JSON object without a \"telegram\", \"frame\" or \"data\" string",
            )
        })?;
        (col, s, rssi.and_then(dbm))
    } else {
        let (body_col, body) = match text.split_once("telegram=") {
            Some((before, after)) => (start + before.len() + "telegram=".len(), after),
            None => (start, text),
        };
        let (hex_part, rest) = match body.split_once(';') {
            Some((hex_part, rest)) => (hex_part, Some((body_col + hex_part.len() + 1, rest))),
            None => (body, None),
        };
        let rssi = match rest {
            Some((col, rest)) => parse_rssi_suffix(rest, col)?,
            None => None,
        };
        (body_col, hex_part.to_string(), rssi)
    };
    let bytes = decode_loose_hex(&hex_text, hex_col)?;
    let stripped = strip_dll_crcs(&bytes)
        .map_err(|e| err(hex_col, format!("not a valid wireless M-Bus telegram: {e}")))?;
    Ok(Some(Heard::new(stripped.bytes, rssi_dbm)))
}

/// What a network input (TCP, UDP, MQTT) or standard input may carry, told apart line by
/// line, so one receiver can mix them:
///
/// - an rtl_wmbus line (`T1;1;1;…;0x…`), as ESPHome's wM-Bus components send with
///   `frame->as_rtlwmbus()` over their socket transmitter or MQTT;
/// - rtl_433 JSON (`-F json`, or its MQTT events): objects with `"model"`; only
///   `"Wireless-MBus"` ones carry a telegram (`"data"`, from L, CRCs removed, `"mode"` T, C
///   or S), any other model is another kind of device and is skipped without complaint. Its
///   `rssi` is in dB below the SDR's full scale, not dBm, so it is not taken;
/// - everything [`parse_hex_line`] reads: plain hex (ESPHome's `frame->as_hex()`), `telegram=`,
///   `;rssi=`, JSON `{"telegram":…}`.
///
/// Text that is none of these is refused with [`UNKNOWN_FORMAT`] in the message, so an input
/// fed the wrong thing says so once, clearly.
pub fn parse_any_line(line: &str) -> Result<Option<Heard>, LineError> {
    let Some((text, start)) = content(line)? else {
        return Ok(None);
    };
    if text.starts_with('{') {
        let object = parse_json_object(text, start)?;
        if object.iter().any(|(k, _)| k == "model") {
            return rtl433_object(&object, start);
        }
        return parse_hex_line(line);
    }
    let first = text.split(';').next().unwrap_or("").trim();
    if text.contains(';') && (mode_of(first).is_some() || matches!(first, "rla" | "t2a")) {
        return parse_rtlwmbus_line(line);
    }
    let hexlike = text.starts_with("telegram=")
        || text
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_hexdigit() || c == '|');
    match parse_hex_line(line) {
        Err(e) if !hexlike => Err(err(start, format!("{UNKNOWN_FORMAT} ({})", e.message))),
        other => other,
    }
}

/// The start of the message for text no parser recognises.
pub const UNKNOWN_FORMAT: &str = "unknown format: expected hex, an rtl_wmbus line \
     (MODE;CRC_OK;…;0x…), JSON with \"telegram\" or rtl_433 JSON";

/// An rtl_433 event object (see [`parse_any_line`]).
fn rtl433_object(object: &[(String, JsonValue)], start: usize) -> Result<Option<Heard>, LineError> {
    let text = |key: &str| {
        object.iter().find_map(|(k, v)| match v {
            JsonValue::Str(col, s) if k == key => Some((*col, s.as_str())),
            _ => None,
        })
    };
    match text("model") {
        Some((_, "Wireless-MBus")) => {}
        // Weather stations, tyre sensors, KNX-RF…: not ours.
        _ => return Ok(None),
    }
    let mode = match text("mode").map(|(_, m)| m) {
        Some("C") => LinkMode::C1,
        Some("S") => LinkMode::S1,
        // rtl_433 names mode T "T"; without a mode nothing needs repairing.
        _ => LinkMode::T1,
    };
    let (col, data) = text("data").ok_or_else(|| {
        err(
            start,
            "rtl_433 Wireless-MBus object without a \"data\" string (the telegram)",
        )
    })?;
    let bytes = hex::decode(data).map_err(|e| hex_error(col, e))?;
    let frame = normalise_rtl_datagram(bytes, mode).map_err(|m| err(col, m))?;
    let mut heard = Heard::new(frame, None);
    heard.mode = Some(mode);
    Ok(Some(heard))
}

fn dbm(value: f64) -> Option<i16> {
    (value > -200.0 && value < 50.0).then(|| value.round() as i16)
}

/// `0x` markers and commas only separate; [`hex::decode`] handles the other separators.
fn decode_loose_hex(text: &str, column: usize) -> Result<Vec<u8>, LineError> {
    let raw = text.as_bytes();
    let byte_at = |i: Option<usize>| i.and_then(|i| raw.get(i)).copied();
    let cleaned: String = text
        .char_indices()
        .map(|(i, c)| {
            let before = byte_at(i.checked_sub(1));
            let after = byte_at(i.checked_add(1));
            // A `0` that starts a `0x` marker: not preceded by a hex digit of a byte.
            let marker_zero = c == '0'
                && matches!(after, Some(b'x' | b'X'))
                && !before.is_some_and(|b| b.is_ascii_hexdigit());
            let marker_x = matches!(c, 'x' | 'X') && before == Some(b'0');
            if marker_zero || marker_x || c == ',' {
                ' '
            } else {
                c
            }
        })
        .collect();
    hex::decode(&cleaned).map_err(|e| hex_error(column, e))
}

/// `rssi=-71`, `rssi_dbm=-71 dBm` or a bare `-71`; other `key=value` fields are ignored.
fn parse_rssi_suffix(text: &str, column: usize) -> Result<Option<i16>, LineError> {
    let mut found = None;
    let mut col = column;
    for part in text.split(';') {
        let item = part.trim();
        let value = match item.split_once('=') {
            Some((key, value)) if matches!(key.trim(), "rssi" | "rssi_dbm") => Some(value),
            Some(_) => None,
            None if !item.is_empty() => Some(item),
            None => None,
        };
        if let Some(value) = value {
            let number = value.trim().trim_end_matches("dBm").trim();
            let parsed: f64 = number.parse().map_err(|_| {
                // Quoted in part only: the rest of a line of garbage says nothing more.
                let shown: String = value.chars().take(24).collect();
                let more = if value.chars().count() > 24 {
                    "…"
                } else {
                    ""
                };
                err(col, format!("RSSI {shown:?}{more} is not a number"))
            })?;
            found = dbm(parsed);
        }
        col += part.len() + 1;
    }
    Ok(found)
}

#[derive(Debug, Clone, PartialEq)]
enum JsonValue {
    /// Column of the string's first character, and the string.
    Str(usize, String),
    Num(f64),
    Other,
}

/// A small JSON object reader for one line: string keys; string, number, boolean and null
/// values are read, nested objects and arrays are skipped (bounded by [`MAX_LINE`] and a
/// nesting limit).
fn parse_json_object(text: &str, start: usize) -> Result<Vec<(String, JsonValue)>, LineError> {
    let bytes = text.as_bytes();
    let mut p = JsonCursor {
        bytes,
        pos: 0,
        start,
    };
    let mut out = Vec::new();
    p.expect(b'{')?;
    p.skip_ws();
    if p.peek() == Some(b'}') {
        p.pos += 1;
        return p.finish(out);
    }
    loop {
        p.skip_ws();
        let (_, key) = p.string()?;
        p.skip_ws();
        p.expect(b':')?;
        p.skip_ws();
        let value = p.value()?;
        out.push((key, value));
        p.skip_ws();
        match p.peek() {
            Some(b',') => p.pos += 1,
            Some(b'}') => {
                p.pos += 1;
                return p.finish(out);
            }
            _ => return Err(p.error("expected ',' or '}' in the JSON object")),
        }
    }
}

struct JsonCursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    start: usize,
}

const JSON_MAX_DEPTH: usize = 16;

impl JsonCursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn error(&self, message: &str) -> LineError {
        err(self.start + self.pos, message)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), LineError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected '{}' in the JSON object", b as char)))
        }
    }

    fn finish<T>(&mut self, out: T) -> Result<T, LineError> {
        self.skip_ws();
        if self.pos == self.bytes.len() {
            Ok(out)
        } else {
            Err(self.error("text after the end of the JSON object"))
        }
    }

    /// A JSON string; escapes other than `\"`, `\\` and `\/` are kept as written (telegram
    /// strings are plain hex).
    fn string(&mut self) -> Result<(usize, String), LineError> {
        self.expect(b'"')?;
        let first = self.pos;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated string in the JSON object")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok((
                        self.start + first,
                        String::from_utf8_lossy(&out).into_owned(),
                    ));
                }
                Some(b'\\') => {
                    let escaped = self.bytes.get(self.pos + 1).copied();
                    match escaped {
                        Some(c @ (b'"' | b'\\' | b'/')) => out.push(c),
                        Some(c) => out.extend_from_slice(&[b'\\', c]),
                        None => return Err(self.error("unterminated string in the JSON object")),
                    }
                    self.pos += 2;
                }
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }

    fn value(&mut self) -> Result<JsonValue, LineError> {
        match self.peek() {
            Some(b'"') => {
                let (col, s) = self.string()?;
                Ok(JsonValue::Str(col, s))
            }
            Some(b'{' | b'[') => {
                self.skip_nested()?;
                Ok(JsonValue::Other)
            }
            Some(b'-' | b'0'..=b'9') => {
                let first = self.pos;
                while self.peek().is_some_and(|b| {
                    b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')
                }) {
                    self.pos += 1;
                }
                let text = std::str::from_utf8(self.bytes.get(first..self.pos).unwrap_or_default())
                    .unwrap_or_default();
                text.parse()
                    .map(JsonValue::Num)
                    .map_err(|_| err(self.start + first, format!("bad JSON number {text:?}")))
            }
            _ => {
                for word in ["true", "false", "null"] {
                    if self
                        .bytes
                        .get(self.pos..)
                        .is_some_and(|r| r.starts_with(word.as_bytes()))
                    {
                        self.pos += word.len();
                        return Ok(JsonValue::Other);
                    }
                }
                Err(self.error("expected a JSON value"))
            }
        }
    }

    fn skip_nested(&mut self) -> Result<(), LineError> {
        let mut depth = 0usize;
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated object or array in the JSON")),
                Some(b'"') => {
                    self.string()?;
                    continue;
                }
                Some(b'{' | b'[') => {
                    depth += 1;
                    if depth > JSON_MAX_DEPTH {
                        return Err(self.error("JSON nested too deeply"));
                    }
                }
                Some(b'}' | b']') => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        self.pos += 1;
                        return Ok(());
                    }
                }
                Some(_) => {}
            }
            self.pos += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::stick::builtin_corpus;
    use crate::wire::wireless::{add_dll_crcs, FrameFormat};

    /// Hydrodigit water meter, drivers/hydrodigit.yaml.
    const WATER: &str = "4644B4092143658713077A9C0000000C1364390400046D212F16350F152A0F000000440F00C00F00511000D51000B20B00180C007C0C00E60C00560D00D10D00400E00C60E0000";
    /// Aerius gas meter, drivers/aerius.yaml.
    const GAS: &str = "2E44A5119870659930037A060020052F2F0C933E842784060A3B00000A5A5901C4016D3B37DF2CCC01933E24032606";

    fn bytes(h: &str) -> Vec<u8> {
        hex::decode(h).unwrap()
    }

    #[test]
    fn rtlwmbus_t1_line() {
        let line = format!(
            "T1;1;1;2019-02-09 07:14:18.000;117;102;94740459;0x{}",
            WATER.to_lowercase()
        );
        let heard = parse_rtlwmbus_line(&line).unwrap().unwrap();
        assert_eq!(heard.frame, bytes(WATER));
        assert_eq!(heard.mode, Some(LinkMode::T1));
        // rtl_wmbus's 117 is an amplitude, not dBm.
        assert_eq!(heard.rssi_dbm, None);
    }

    #[test]
    fn rtlwmbus_from_esphome_with_dbm_and_algorithm_prefix() {
        let line = format!("T1;1;1;2024-05-01 10:00:00.00Z;-71;;;0x{GAS}\n");
        let heard = parse_rtlwmbus_line(&line).unwrap().unwrap();
        assert_eq!(heard.rssi_dbm, Some(-71));
        assert_eq!(heard.frame, bytes(GAS));
        let line = format!("t2a;S1;1;1;2024-05-01 10:00:00.000;33;30;99706598;0x{GAS}");
        let heard = parse_rtlwmbus_line(&line).unwrap().unwrap();
        assert_eq!(heard.mode, Some(LinkMode::S1));
    }

    #[test]
    fn rtlwmbus_c1_format_b_l_normalised_or_not() {
        let data = bytes(WATER);
        // What current rtl_wmbus prints: L already counts the bytes without CRCs.
        let line = format!("C1;1;1;2024-05-01 10:00:00.000;90;80;87654321;0x{WATER}");
        let heard = parse_rtlwmbus_line(&line).unwrap().unwrap();
        assert_eq!(heard.frame, data);
        assert_eq!(heard.mode, Some(LinkMode::C1));
        // Older output: CRCs removed but L still format B's (counting one CRC).
        let b = add_dll_crcs(&data, FrameFormat::B).unwrap();
        let mut without = data.clone();
        without[0] = b[0];
        assert_eq!(usize::from(without[0]), without.len() + 1);
        let line = format!(
            "C1;1;1;2024-05-01 10:00:00.000;90;80;87654321;0x{}",
            hex::encode_upper(&without)
        );
        let heard = parse_rtlwmbus_line(&line).unwrap().unwrap();
        assert_eq!(heard.frame, data);
        assert_eq!(usize::from(heard.frame[0]), heard.frame.len() - 1);
    }

    #[test]
    fn rtlwmbus_long_c1_format_b_with_two_crcs() {
        let long = builtin_corpus()
            .into_iter()
            .find(|t| t.len() > 130 && t.len() < 250)
            .expect("a long telegram in the corpus");
        let b = add_dll_crcs(&long, FrameFormat::B).unwrap();
        let mut without = long.clone();
        without[0] = b[0];
        let line = format!("C1;1;1;ts;90;80;0;0x{}", hex::encode_upper(&without));
        assert_eq!(parse_rtlwmbus_line(&line).unwrap().unwrap().frame, long);
    }

    #[test]
    fn rtlwmbus_rejections_name_the_problem() {
        let bad_crc = format!("T1;0;1;2019-02-09 07:14:18.000;117;102;94740459;0x{WATER}");
        let e = parse_rtlwmbus_line(&bad_crc).unwrap_err();
        assert_eq!(e.column, 3);
        assert!(e.message.contains("CRC_OK is 0"), "{e}");
        let bad_coding = format!("T1;1;0;2019-02-09 07:14:18.000;117;102;94740459;0x{WATER}");
        assert!(parse_rtlwmbus_line(&bad_coding)
            .unwrap_err()
            .message
            .contains("3-out-of-6"));
        let e = parse_rtlwmbus_line("X9;1;1;t;1;1;1;0x00").unwrap_err();
        assert_eq!(e.column, 0);
        let e = parse_rtlwmbus_line("T1;1;1;t;1;1").unwrap_err();
        assert!(e.message.contains("DATAGRAM is missing"), "{e}");
        let e = parse_rtlwmbus_line("T1;1;1;t;1;1;1;0x4644zz").unwrap_err();
        assert_eq!(e.column, "T1;1;1;t;1;1;1;0x4644".len());
        let short = &WATER[..WATER.len() - 4];
        let e = parse_rtlwmbus_line(&format!("T1;1;1;t;1;1;1;0x{short}")).unwrap_err();
        assert!(e.message.contains("L field"), "{e}");
        assert_eq!(parse_rtlwmbus_line("  ").unwrap(), None);
        assert_eq!(parse_rtlwmbus_line("# comment").unwrap(), None);
    }

    #[test]
    fn hex_lines_with_and_without_crcs() {
        let data = bytes(WATER);
        for text in [
            WATER.to_string(),
            format!("0x{WATER}"),
            format!("telegram=|{}|", WATER),
            hex::encode_upper(&add_dll_crcs(&data, FrameFormat::A).unwrap()),
            hex::encode_upper(&add_dll_crcs(&data, FrameFormat::B).unwrap()),
            data.iter()
                .map(|b| format!("0x{b:02X}"))
                .collect::<Vec<_>>()
                .join(", "),
            data.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" "),
        ] {
            let heard = parse_hex_line(&text).unwrap().unwrap();
            assert_eq!(heard.frame, data, "{text}");
            assert_eq!(heard.rssi_dbm, None);
        }
        let heard = parse_hex_line(&format!("{GAS};rssi=-71")).unwrap().unwrap();
        assert_eq!((heard.frame, heard.rssi_dbm), (bytes(GAS), Some(-71)));
        let heard = parse_hex_line(&format!("telegram=|{GAS}|;rssi_dbm=-80 dBm;x=1"))
            .unwrap()
            .unwrap();
        assert_eq!(heard.rssi_dbm, Some(-80));
    }

    #[test]
    fn hex_lines_whole_corpus_with_crcs() {
        for data in builtin_corpus() {
            for format in [FrameFormat::A, FrameFormat::B] {
                let Some(with) = add_dll_crcs(&data, format) else {
                    continue;
                };
                let heard = parse_hex_line(&hex::encode_upper(&with)).unwrap().unwrap();
                assert_eq!(heard.frame, data);
            }
        }
    }

    #[test]
    fn json_objects() {
        let data = bytes(GAS);
        for (text, rssi) in [
            (format!(r#"{{"telegram":"{GAS}","rssi":-71}}"#), Some(-71)),
            (
                format!(r#"{{ "rssi_dbm": -64.6, "frame": "{GAS}" }}"#),
                Some(-65),
            ),
            (
                format!(
                    r#"{{"id":"x","meta":{{"a":[1,{{"b":"}}"}}]}},"data":"{GAS}","ok":true,"n":null}}"#
                ),
                None,
            ),
        ] {
            let heard = parse_hex_line(&text).unwrap().unwrap();
            assert_eq!(heard.frame, data, "{text}");
            assert_eq!(heard.rssi_dbm, rssi, "{text}");
        }
        let e = parse_hex_line(r#"{"rssi":-71}"#).unwrap_err();
        assert!(e.message.contains("\"telegram\""), "{e}");
        let e = parse_hex_line(r#"{"telegram":"2E44zz"}"#).unwrap_err();
        assert_eq!(e.column, r#"{"telegram":"2E44"#.len());
        assert!(parse_hex_line(r#"{"telegram":"2E44"#).is_err());
        assert!(parse_hex_line(r#"{"telegram":5}"#).is_err());
        assert!(parse_hex_line(r#"{"telegram":"00"} trailing"#).is_err());
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(40), "]".repeat(40));
        assert!(parse_hex_line(&deep)
            .unwrap_err()
            .message
            .contains("deeply"));
    }

    #[test]
    fn bad_crc_in_hex_line_is_an_error() {
        let data = bytes(WATER);
        let mut with = add_dll_crcs(&data, FrameFormat::A).unwrap();
        with[30] ^= 0x10;
        let e = parse_hex_line(&hex::encode_upper(&with)).unwrap_err();
        assert!(e.message.contains("CRC"), "{e}");
        let e = parse_hex_line("4644B409zz").unwrap_err();
        assert_eq!(e.column, 8);
        assert!(parse_hex_line(&"A".repeat(MAX_LINE + 1)).is_err());
    }

    #[test]
    fn parsers_never_panic_on_noise() {
        let alphabet = b"0123456789abcdefxX;{}[]\":,=| -.rssitelgram\\";
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..5_000 {
            let mut s = String::new();
            for _ in 0..(x % 64) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.push(alphabet[(x % alphabet.len() as u64) as usize] as char);
            }
            let _ = parse_hex_line(&s);
            let _ = parse_rtlwmbus_line(&s);
            let _ = parse_hex_line(&format!("{{{s}"));
            let _ = parse_rtlwmbus_line(&format!("C1;1;1;t;-5;0;0;0x{s}"));
            let _ = parse_any_line(&s);
            let _ = parse_any_line(&format!("{{\"model\":\"Wireless-MBus\",\"data\":\"{s}\"}}"));
        }
    }

    /// A Diehl Hydrus water meter as rtl_433 printed it (`-F json`): the recorded capture of
    /// merbanan/rtl_433 issue 3393 (rtl_433_tests, `-Y minmax`), its decoded fields shortened.
    const RTL433_HYDRUS: &str = r#"{"time" : "@0.037023s", "model" : "Wireless-MBus", "mode" : "T", "M" : "DME", "id" : 84850129, "version" : 118, "type" : 7, "type_string" : "Water", "C" : 68, "data" : "5344a5112901858476078c00ae900f002c25f00c2f005d8c2c1dac2ca7c07a3a80310710a7f26ca73e8a384744684fe6a79dd0844ebe8c89debb0615906f9f9581b60dbf73e59f525cbc0182172ac76923f254d4", "CI" : 140, "AC" : 0, "ST" : 0, "CW" : 0, "mic" : "CRC"}"#;

    #[test]
    fn rtl433_json_lines() {
        let heard = parse_any_line(RTL433_HYDRUS).unwrap().unwrap();
        let link = crate::wire::wireless::DllHeader::parse(&heard.frame).unwrap();
        assert_eq!(link.id.to_string(), "84850129");
        assert_eq!(link.manufacturer.to_string(), "DME");
        assert_eq!(link.version, 118);
        assert_eq!(heard.frame.len(), 84);
        assert_eq!(heard.mode, Some(LinkMode::T1));
        assert_eq!(heard.rssi_dbm, None);
        // Another device on the same rtl_433 stream is not a telegram, and not an error.
        let weather = r#"{"time" : "2026-12-05 05:40:00", "model" : "Acurite-Tower", "id" : 1234, "temperature_C" : 3.1, "data" : "abcd"}"#;
        assert_eq!(parse_any_line(weather), Ok(None));
        let e = parse_any_line(r#"{"model":"Wireless-MBus","mode":"T"}"#).unwrap_err();
        assert!(e.message.contains("\"data\""), "{e}");
    }

    /// What ESPHome's wM-Bus components send: `frame->as_hex()` (lower-case hex, CRCs removed,
    /// no newline when one TCP connection carries one frame) and `frame->as_rtlwmbus()`
    /// (an rtl_wmbus line with the RSSI in dBm, `YYYY-MM-DD HH:MM:SS.00Z` time).
    #[test]
    fn esphome_hex_and_rtlwmbus_lines() {
        let water = WATER.to_lowercase();
        let heard = parse_any_line(&water).unwrap().unwrap();
        assert_eq!(heard.frame, bytes(WATER));
        let link = crate::wire::wireless::DllHeader::parse(&heard.frame).unwrap();
        assert_eq!(link.id.to_string(), "87654321");
        assert_eq!(link.manufacturer.to_string(), "BMT");
        let line = format!("T1;1;1;2026-12-05 05:40:00.00Z;-44;;;0x{water}\n");
        let heard = parse_any_line(&line).unwrap().unwrap();
        assert_eq!(heard.rssi_dbm, Some(-44));
        assert_eq!(heard.mode, Some(LinkMode::T1));
        assert_eq!(heard.frame, bytes(WATER));
    }

    #[test]
    fn unknown_formats_say_what_was_expected() {
        for garbage in ["hello world", "<xml/>", "GET / HTTP/1.1"] {
            let e = parse_any_line(garbage).unwrap_err();
            assert!(e.message.starts_with(UNKNOWN_FORMAT), "{garbage}: {e}");
        }
        // Hex with a typo keeps the precise complaint.
        let e = parse_any_line("4644B409zz").unwrap_err();
        assert_eq!(e.column, 8);
        assert!(!e.message.starts_with(UNKNOWN_FORMAT));
    }
}
