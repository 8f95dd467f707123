//! `meterbridge decode`: telegrams from arguments or standard input, one result per telegram.

use std::io::{self, BufRead, Write};

use clap::{Args, ValueEnum};

use crate::output::{json, libmbus_xml};
use crate::telegram::decode_wired;
use crate::wire::hex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per line (schema: docs/json.md).
    Json,
    /// What libmbus's mbus_frame_data_xml prints.
    Xml,
    /// What libmbus's mbus_frame_data_xml_normalized prints.
    XmlNormalized,
}

#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// Telegrams as hex; spaces and `|` `_` `:` `-` separators are ignored. Without any, one
    /// telegram per line is read from standard input (empty lines and lines starting with `#`
    /// are skipped).
    pub hex: Vec<String>,
}

/// Exit status when at least one telegram could not be decoded.
pub const EXIT_BAD_INPUT: i32 = 2;

pub fn run(args: &DecodeArgs) -> i32 {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let stderr = io::stderr();
    let mut err = stderr.lock();
    let mut decoder = Decoder::new(args.format);
    let mut failed = false;
    let mut report = |label: String, text: &str, decoder: &mut Decoder| -> bool {
        match decoder.decode_line(text) {
            Ok(rendered) => {
                // A closed pipe (`| head`) ends the run quietly.
                out.write_all(rendered.as_bytes()).is_ok()
            }
            Err(message) => {
                failed = true;
                let _ = writeln!(err, "error: {label}: {message}");
                true
            }
        }
    };
    if args.hex.is_empty() {
        let stdin = io::stdin();
        for (n, line) in stdin.lock().lines().enumerate() {
            let Ok(line) = line else {
                let _ = writeln!(err, "error: standard input is not readable text");
                return EXIT_BAD_INPUT;
            };
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if !report(format!("line {}", n + 1), trimmed, &mut decoder) {
                break;
            }
        }
    } else {
        for (n, text) in args.hex.iter().enumerate() {
            if !report(format!("telegram {}", n + 1), text, &mut decoder) {
                break;
            }
        }
    }
    let _ = out.flush();
    if failed {
        EXIT_BAD_INPUT
    } else {
        0
    }
}

/// Decodes and renders telegrams, reusing its buffers between calls.
pub struct Decoder {
    format: Format,
    bytes: Vec<u8>,
    text: String,
}

impl Decoder {
    pub fn new(format: Format) -> Self {
        Decoder {
            format,
            bytes: Vec::with_capacity(256),
            text: String::with_capacity(4096),
        }
    }

    /// Renders one telegram given as hex text; the error is a one-line message that names the
    /// problem and the byte offset.
    pub fn decode_line(&mut self, text: &str) -> Result<&str, String> {
        self.bytes.clear();
        self.text.clear();
        hex::decode_into(text, &mut self.bytes).map_err(|e| format!("not valid hex: {e}"))?;
        let telegram = decode_wired(&self.bytes).map_err(|e| e.to_string())?;
        match self.format {
            Format::Json => {
                json::render(&telegram, &mut self.text);
                self.text.push('\n');
            }
            Format::Xml | Format::XmlNormalized => {
                let style = if self.format == Format::Xml {
                    libmbus_xml::XmlStyle::Plain
                } else {
                    libmbus_xml::XmlStyle::Normalized
                };
                libmbus_xml::render(&telegram, style, &mut self.text).map_err(|e| e.to_string())?;
            }
        }
        Ok(&self.text)
    }
}
