//! Arbitrary text (bytes read as lossy UTF-8) through the line parsers of the text inputs:
//! `parse_hex_line` (hex, `telegram=|…|`, `;rssi=`, small JSON objects) and
//! `parse_rtlwmbus_line`, line by line and as one line. Any panic is a bug.
//!
//! Checks: an accepted telegram has L equal to its length − 1, and a rejected line's error
//! column lies within the line.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use meterbridge::receivers::lines::{parse_hex_line, parse_rtlwmbus_line, LineError, MAX_LINE};
use meterbridge::receivers::Heard;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check(&text, parse_hex_line(&text));
    check(&text, parse_rtlwmbus_line(&text));
    for line in text.lines() {
        check(line, parse_hex_line(line));
        check(line, parse_rtlwmbus_line(line));
    }
});

fn check(line: &str, result: Result<Option<Heard>, LineError>) {
    match result {
        Ok(Some(heard)) => common::assert_l_field(&heard.frame),
        Ok(None) => {}
        Err(e) => {
            let _ = e.to_string();
            assert!(
                e.column <= line.len().max(MAX_LINE),
                "error column {} beyond the line",
                e.column
            );
        }
    }
}
