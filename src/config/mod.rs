//! The daemon's configuration file: a YAML tree with positions ([`node`]), validated by hand
//! ([`validate`]) into the typed [`Config`] ([`schema`]) so every mistake is reported at once.

pub mod duration;
pub mod node;
pub mod schema;
pub mod validate;

use std::path::Path;

pub use duration::{format_duration, parse_duration, DurationError};
pub use node::Pos;
pub use schema::*;
pub use validate::{load_with, parse_with, ConfigError, ConfigErrors, ValidateOptions, Warning};

/// Reads and validates a configuration file without checking driver names.
pub fn load(path: &Path) -> Result<(Config, Vec<Warning>), ConfigErrors> {
    load_with(path, &ValidateOptions::default())
}

/// Validates configuration text without checking driver names; `file_name` is what messages
/// call it.
pub fn parse(text: &str, file_name: &str) -> Result<(Config, Vec<Warning>), ConfigErrors> {
    parse_with(text, file_name, &ValidateOptions::default())
}
