//! `meterbridge decode`: telegrams from arguments or standard input, one result per telegram.

use std::io::{self, BufRead, Write};

use clap::{Args, ValueEnum};

use crate::drivers::run::DriverRun;
use crate::drivers::Registry;
use crate::output::{json, libmbus_xml};
use crate::security::KeyStore;
use crate::telegram::wireless::{parse_key_argument, LengthRepair};
use crate::telegram::{decode_wired, Telegram, WirelessDecoder};
use crate::wire::hex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per line (schema: docs/json.md).
    Json,
    /// What libmbus's mbus_frame_data_xml prints.
    Xml,
    /// What libmbus's mbus_frame_data_xml_normalized prints.
    XmlNormalized,
    /// The flat object wmbusmeters prints (driver fields; `--driver auto` by default).
    Wmbusmeters,
}

#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// AES key for wireless telegrams: `HEX` (32 hex digits) for every meter of the run, or
    /// `ID=HEX` for one meter (repeatable; 16 hex digits give a Diehl PRIOS key). On the command
    /// line every user can see it with `ps`: prefer --key-file or METERBRIDGE_KEYS.
    #[arg(long = "key", value_name = "[ID=]HEX")]
    pub keys: Vec<String>,
    /// A file of keys, one `ID=HEX` (or `HEX` for every meter) per line; `#` starts a comment
    /// (repeatable). The environment variable METERBRIDGE_KEYS may hold keys the same way,
    /// separated by spaces.
    #[arg(long = "key-file", value_name = "PATH")]
    pub key_files: Vec<std::path::PathBuf>,
    /// Driver for named readings: a driver name or alias, or `auto` to detect it from the
    /// manufacturer, version and device type. Adds `driver` and `fields` to the JSON.
    #[arg(long)]
    pub driver: Option<String>,
    /// Meter name for `--format wmbusmeters` (wmbusmeters' `name`).
    #[arg(long, default_value = "meter")]
    pub name: String,
    /// A folder of driver files (`*.yaml`) loaded after the built-in ones; a file whose driver
    /// name exists replaces that driver.
    #[arg(long, value_name = "DIR")]
    pub drivers_dir: Option<std::path::PathBuf>,
    /// Telegrams as hex, wired (`68 L L 68 …`) or wireless (from the L field, with or without
    /// data-link CRCs); spaces and `|` `_` `:` `-` separators are ignored. Without any, one
    /// telegram per line is read from standard input (empty lines and lines starting with `#`
    /// are skipped). Telegrams of one run share per-meter state: compact-frame layouts learned
    /// from a full frame apply to later compact frames.
    pub hex: Vec<String>,
}

/// Exit status when at least one telegram could not be decoded.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit status when a wireless telegram could not be decrypted (no key, wrong key, bad MAC).
pub const EXIT_KEY: i32 = 3;

/// The environment variable `decode` and `listen` read keys from (`[ID=]HEX`, separated by
/// spaces or newlines), so they stay off the command line.
pub const KEYS_ENV: &str = "METERBRIDGE_KEYS";

/// Keys from `--key` (with a warning: the command line is visible to every user), `--key-file`
/// and [`KEYS_ENV`]. Messages never show a key.
pub fn gather_keys(
    keys: &mut KeyStore,
    on_command_line: &[String],
    files: &[std::path::PathBuf],
) -> Result<(), String> {
    if !on_command_line.is_empty() {
        eprintln!(
            "warning: --key puts the key on the command line, where `ps` shows it to every user \
             of this machine; use --key-file or {KEYS_ENV} instead"
        );
    }
    for k in on_command_line {
        parse_key_argument(keys, k)?;
    }
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("--key-file {}: {e}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            parse_key_argument(keys, line).map_err(|e| {
                format!(
                    "--key-file {} line {}: {}",
                    file.display(),
                    n + 1,
                    e.replace("--key ", "key ")
                )
            })?;
        }
    }
    if let Some(value) = std::env::var_os(KEYS_ENV) {
        let value = value
            .into_string()
            .map_err(|_| format!("{KEYS_ENV} is not text"))?;
        for k in value.split_whitespace() {
            parse_key_argument(keys, k)
                .map_err(|e| format!("{KEYS_ENV}: {}", e.replace("--key ", "key ")))?;
        }
    }
    Ok(())
}

pub fn run(args: &DecodeArgs) -> i32 {
    let stderr = io::stderr();
    let mut err = stderr.lock();
    let mut keys = KeyStore::new();
    if let Err(message) = gather_keys(&mut keys, &args.keys, &args.key_files) {
        let _ = writeln!(err, "error: {message}");
        return EXIT_BAD_INPUT;
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut decoder = Decoder::with_keys(args.format, keys);
    let driver = match (&args.driver, args.format) {
        (Some(d), _) => Some(d.clone()),
        (None, Format::Wmbusmeters) => Some("auto".to_string()),
        (None, _) => None,
    };
    let registry = match crate::cli::drivers::registry(args.drivers_dir.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    if let Some(d) = driver {
        if d != "auto" && registry.get(&d).is_none() {
            let _ = writeln!(
                err,
                "error: no driver named {d:?} (`meterbridge drivers` lists them)"
            );
            return EXIT_BAD_INPUT;
        }
        decoder.use_driver(registry, &d, &args.name);
    }
    let mut status = 0;
    // `text` is the telegram, or why the line holds none (reported, and the run goes on).
    let mut report = |label: Source, text: Result<&str, String>, decoder: &mut Decoder| -> bool {
        let text = match text {
            Ok(t) => t,
            Err(problem) => {
                status = status.max(EXIT_BAD_INPUT);
                let _ = writeln!(err, "error: {label}: {problem}");
                return true;
            }
        };
        let written = match decoder.decode_line(text) {
            // A closed pipe (`| head`) ends the run quietly.
            Ok(rendered) => out.write_all(rendered.as_bytes()).is_ok(),
            Err(failure) => {
                status = status.max(failure.exit_status);
                let _ = writeln!(err, "error: {label}: {}", failure.message);
                match failure.header_json {
                    Some(header) => out.write_all(header.as_bytes()).is_ok(),
                    None => true,
                }
            }
        };
        for warning in decoder.warnings.drain(..) {
            let _ = writeln!(err, "warning: {label}: {warning}");
        }
        written
    };
    if args.hex.is_empty() {
        let stdin = io::stdin();
        let mut input = stdin.lock();
        let mut line = Vec::new();
        let mut n = 0usize;
        loop {
            n += 1;
            let label = Source::Line(n);
            let kept = match read_bounded_line(&mut input, &mut line, MAX_LINE) {
                Ok(None) => break,
                Ok(Some(kept)) => kept,
                Err(e) => {
                    report(
                        label,
                        Err(format!("standard input failed: {e}")),
                        &mut decoder,
                    );
                    break;
                }
            };
            let text = if kept {
                std::str::from_utf8(&line).map_err(|e| {
                    format!(
                        "not text (byte {} is not UTF-8); skipped",
                        e.valid_up_to() + 1
                    )
                })
            } else {
                Err(format!(
                    "longer than {MAX_LINE} bytes (no telegram is); skipped"
                ))
            };
            let text = text.map(str::trim);
            if text
                .as_ref()
                .is_ok_and(|t| t.is_empty() || t.starts_with('#'))
            {
                continue;
            }
            if !report(label, text, &mut decoder) {
                break;
            }
        }
    } else {
        for (n, text) in args.hex.iter().enumerate() {
            if !report(Source::Argument(n + 1), Ok(text), &mut decoder) {
                break;
            }
        }
    }
    let _ = out.flush();
    status
}

/// Where a telegram came from, for messages: formatted only when there is one to print.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A line of standard input (from 1).
    Line(usize),
    /// A command-line argument (from 1).
    Argument(usize),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Line(n) => write!(f, "line {n}"),
            Source::Argument(n) => write!(f, "telegram {n}"),
        }
    }
}

/// Longest line `decode` reads from standard input, as the daemon's line inputs: a telegram of
/// 256 bytes is 512 hex digits, and no line of hex with separators comes near this.
pub const MAX_LINE: usize = crate::receivers::input::MAX_LINE;

/// Reads the next line (without its newline) into `line` as bytes: `Ok(None)` at the end of
/// the input, `Ok(Some(false))` for a line longer than `max`, whose bytes are skipped without
/// being kept, so a line of any length costs at most `max` bytes of memory.
pub fn read_bounded_line(
    input: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<bool>> {
    line.clear();
    let mut overlong = false;
    let mut any = false;
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            // End of input: a last line without a newline still counts.
            return Ok(any.then_some(!overlong));
        }
        any = true;
        let newline = buf.iter().position(|&b| b == b'\n');
        let content = &buf[..newline.unwrap_or(buf.len())];
        if !overlong {
            if line.len() + content.len() > max {
                overlong = true;
                line.clear();
            } else {
                line.extend_from_slice(content);
            }
        }
        let used = newline.map_or(buf.len(), |i| i + 1);
        input.consume(used);
        if newline.is_some() {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(!overlong));
        }
    }
}

/// Why a telegram did not decode, and what to print about it.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub exit_status: i32,
    /// For key errors in JSON format: the unencrypted header data, one JSON line.
    pub header_json: Option<String>,
}

impl Failure {
    fn input(message: String) -> Self {
        Failure {
            message,
            exit_status: EXIT_BAD_INPUT,
            header_json: None,
        }
    }
}

/// Decodes and renders telegrams, reusing its buffers and per-meter state between calls.
pub struct Decoder {
    format: Format,
    bytes: Vec<u8>,
    text: String,
    wireless: WirelessDecoder,
    drivers: Option<DriverChoice>,
    /// What the last telegram was accepted despite (printed after it, on standard error).
    pub warnings: Vec<String>,
    /// Meters already warned about bytes after their L field: said once per run.
    warned_length: std::collections::HashSet<String>,
}

struct DriverChoice {
    run: DriverRun<'static>,
    driver: String,
    name: String,
}

/// Wired frames have a shape of their own: `68 L L 68 …`, a 5-byte `10 …` or a lone `E5`.
/// Anything else is a wireless telegram starting at its L field. (A wireless telegram would
/// need L = 0x68, C equal to the manufacturer's first byte and 0x68 as its second to look wired.)
fn looks_wired(bytes: &[u8]) -> bool {
    match bytes {
        [0xE5] => true,
        [0x10, ..] => bytes.len() == 5,
        [0x68, l1, l2, 0x68, ..] => l1 == l2,
        _ => false,
    }
}

impl Decoder {
    pub fn new(format: Format) -> Self {
        Self::with_keys(format, KeyStore::new())
    }

    pub fn with_keys(format: Format, keys: KeyStore) -> Self {
        Decoder {
            format,
            bytes: Vec::with_capacity(256),
            text: String::with_capacity(4096),
            wireless: WirelessDecoder::new(keys),
            drivers: None,
            warnings: Vec::new(),
            warned_length: std::collections::HashSet::new(),
        }
    }

    /// Applies a driver (name, alias or `auto`) to every telegram; the keys move to the
    /// driver run, which decodes from now on.
    pub fn use_driver(&mut self, registry: &'static Registry, driver: &str, name: &str) {
        let keys = std::mem::take(&mut self.wireless.keys);
        self.drivers = Some(DriverChoice {
            run: DriverRun::new(registry, keys),
            driver: driver.to_string(),
            name: name.to_string(),
        });
    }

    /// Renders one telegram given as hex text; the error message is one line that names the
    /// problem and the byte offset.
    pub fn decode_line(&mut self, text: &str) -> Result<&str, Failure> {
        self.bytes.clear();
        self.text.clear();
        self.warnings.clear();
        let half_byte = hex::decode_into_tolerant(text, &mut self.bytes)
            .map_err(|e| Failure::input(format!("not valid hex: {e}")))?;
        if half_byte {
            self.warnings
                .push("odd number of hex digits: the trailing half byte was ignored".into());
        }
        if looks_wired(&self.bytes) {
            // The telegram borrows the bytes while the renderer writes into `self`.
            let bytes = std::mem::take(&mut self.bytes);
            let result = match decode_wired(&bytes) {
                Ok(telegram) => self.render_with_driver(&telegram),
                Err(e) => Err(Failure::input(e.to_string())),
            };
            self.bytes = bytes;
            result?;
            return Ok(&self.text);
        }
        let wireless = match &mut self.drivers {
            Some(d) => d.run.decoder(),
            None => &mut self.wireless,
        };
        let frame = match wireless.decode(&self.bytes) {
            Ok(frame) => frame,
            Err(e) => {
                let key_error = e.is_key_error();
                let header_json = match (&e.link, self.format) {
                    (Some(link), Format::Json) if key_error => {
                        let mut s = String::new();
                        json::render_wireless_link(link, &mut s);
                        s.push_str(",\"error\":");
                        json::push_str(&mut s, &e.to_string());
                        s.push_str("}\n");
                        Some(s)
                    }
                    _ => None,
                };
                return Err(Failure {
                    message: e.to_string(),
                    exit_status: if key_error { EXIT_KEY } else { EXIT_BAD_INPUT },
                    header_json,
                });
            }
        };
        if let Some(repair) = frame.link.length_repair {
            let id = frame.link.meter_id();
            // Once per meter: a meter with a wrong L sends it in every telegram. The set is
            // capped so a stream of random ids cannot grow it without bound.
            if self.warned_length.len() < 4096 && self.warned_length.insert(id.clone()) {
                self.warnings.push(match repair {
                    LengthRepair::TrailingIgnored(n) => format!(
                        "meter {id}: {n} bytes follow the telegram its L field announces (CRCs checked); they were ignored (said once per meter)"
                    ),
                    LengthRepair::Corrected { announced } => format!(
                        "meter {id}: L field 0x{announced:02X} announces {} fewer bytes than were received; all were decoded (said once per meter)",
                        self.bytes.len() - 1 - usize::from(announced)
                    ),
                });
            }
        }
        let telegram = frame
            .telegram()
            .map_err(|e| Failure::input(format!("meter {}: {e}", frame.link.meter_id())))?;
        self.render_with_driver(&telegram)?;
        Ok(&self.text)
    }

    fn render_with_driver(&mut self, telegram: &Telegram<'_>) -> Result<(), Failure> {
        let Some(choice) = &mut self.drivers else {
            return render(self.format, telegram, &mut self.text).map_err(Failure::input);
        };
        let output = match choice.run.apply_checked(telegram, &choice.driver) {
            // Readings from a payload the key does not open would be made up: refused in
            // every format, with the key error's exit status.
            Err(e) if e.key => {
                return Err(Failure {
                    message: e.message,
                    exit_status: EXIT_KEY,
                    header_json: None,
                })
            }
            other => other.map_err(|e| e.message),
        };
        match (self.format, output) {
            (Format::Wmbusmeters, Ok(o)) => {
                o.render_wmbusmeters(&choice.name, &now_utc(), &mut self.text);
                self.text.push('\n');
                Ok(())
            }
            (Format::Wmbusmeters, Err(e)) => Err(Failure::input(e)),
            (Format::Json, result) => {
                json::render_with_driver(
                    telegram,
                    result.as_ref().map_err(String::as_str),
                    &mut self.text,
                );
                self.text.push('\n');
                Ok(())
            }
            (format, _) => render(format, telegram, &mut self.text).map_err(Failure::input),
        }
    }
}

/// The current time as ISO 8601 UTC (`2026-11-21T08:30:00Z`), wmbusmeters' `timestamp`.
fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (year, month, day) = crate::wire::datetime::civil_from_days((secs / 86400) as i64);
    let rem = secs % 86400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn render(format: Format, telegram: &Telegram<'_>, out: &mut String) -> Result<(), String> {
    match format {
        Format::Json => {
            json::render(telegram, out);
            out.push('\n');
        }
        Format::Xml => libmbus_xml::render(telegram, libmbus_xml::XmlStyle::Plain, out)
            .map_err(|e| e.to_string())?,
        Format::XmlNormalized => {
            libmbus_xml::render(telegram, libmbus_xml::XmlStyle::Normalized, out)
                .map_err(|e| e.to_string())?
        }
        // A driver is always set for this format (`auto` by default).
        Format::Wmbusmeters => return Err("--format wmbusmeters needs a driver".into()),
    }
    Ok(())
}
