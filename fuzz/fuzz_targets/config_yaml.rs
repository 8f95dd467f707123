//! Arbitrary text (lossy UTF-8, at most 16 KiB) through the configuration parser and
//! validator. It must return the configuration or errors, never panic or hang; libFuzzer's
//! `-timeout` (10 s in `bench/fuzz.sh`) catches a hang.
//!
//! The first byte picks the validation options: driver names unchecked, or checked against
//! the built-in drivers. Errors and warnings are rendered, as the daemon prints them.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meterbridge::config::{parse_with, ValidateOptions};

const MAX_TEXT: usize = 16 * 1024;

fn with_drivers() -> &'static ValidateOptions {
    static OPTIONS: OnceLock<ValidateOptions> = OnceLock::new();
    OPTIONS.get_or_init(ValidateOptions::with_built_in_drivers)
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, text)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(&text[..text.len().min(MAX_TEXT)]);
    let default = ValidateOptions::default();
    let options = if choice & 1 == 0 {
        &default
    } else {
        with_drivers()
    };
    match parse_with(&text, "f.yaml", options) {
        Ok((config, warnings)) => {
            let _ = format!("{config:?}");
            for w in warnings {
                let _ = format!("{w:?}");
            }
        }
        Err(errors) => {
            assert!(!errors.errors.is_empty(), "an error result without errors");
            let _ = errors.to_string();
        }
    }
});
