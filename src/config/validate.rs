//! Turns the positioned YAML tree into a [`Config`], collecting every problem on the way so
//! that one run of `check-config` shows them all, each with its line, column and option path.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

use super::duration::{format_duration, parse_duration};
use super::node::{self, Node, Pos, Value};
use super::schema::*;
use crate::logging::LogFormat;
use crate::receivers::{LinkMode, StickKind};

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// Line 0 when the problem is with the file as a whole.
    pub pos: Pos,
    /// The option, e.g. `meters[2].driver`; empty for the document itself.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
    /// "did you mean …?", or the valid choices.
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_located(f, &self.file, self.pos, &self.path)?;
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

fn write_located(f: &mut fmt::Formatter<'_>, file: &str, pos: Pos, path: &str) -> fmt::Result {
    if pos.line > 0 {
        write!(f, "{file}:{}:{}: ", pos.line, pos.column)?;
    } else {
        write!(f, "{file}: ")?;
    }
    if !path.is_empty() {
        write!(f, "{path}: ")?;
    }
    Ok(())
}

/// Every problem found in a configuration, in the order they appear in the file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Something that works but is probably not what the user wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: String,
    pub pos: Pos,
    pub path: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_located(f, &self.file, self.pos, &self.path)?;
        write!(f, "warning: {}", self.message)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ValidateOptions {
    /// Driver names and aliases a meter's `driver` may name (besides `auto`); `None` skips
    /// the check.
    pub known_drivers: Option<Vec<String>>,
}

impl ValidateOptions {
    /// Checks driver names against the drivers built into the binary.
    pub fn with_built_in_drivers() -> ValidateOptions {
        // From the build-time index: checking a name must not build every driver.
        let names = crate::drivers::Registry::built_in_static()
            .names()
            .map(str::to_string)
            .collect();
        ValidateOptions {
            known_drivers: Some(names),
        }
    }
}

/// Parses and validates configuration text; `file_name` is what messages call the file.
pub fn parse_with(
    text: &str,
    file_name: &str,
    options: &ValidateOptions,
) -> Result<(Config, Vec<Warning>), ConfigErrors> {
    check(text, file_name, options).map(|checked| (checked.config, checked.warnings))
}

/// Reads, parses and validates a configuration file, and warns when a file holding secrets
/// can be read by other users.
pub fn load_with(
    path: &Path,
    options: &ValidateOptions,
) -> Result<(Config, Vec<Warning>), ConfigErrors> {
    let file_name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        errors: vec![ConfigError {
            file: file_name.clone(),
            pos: Pos::default(),
            path: String::new(),
            message: format!("cannot read the configuration: {e}"),
            hint: None,
        }],
    })?;
    let mut checked = check(&text, &file_name, options)?;
    checked.config.path = Some(path.to_path_buf());
    let mut errors: Vec<ConfigError> = checked
        .outside
        .iter()
        .filter_map(|o| {
            o.problem().map(|(message, hint)| ConfigError {
                file: file_name.clone(),
                pos: o.pos,
                path: o.path.clone(),
                message,
                hint,
            })
        })
        .collect();
    if !errors.is_empty() {
        errors.sort_by_key(|e| (e.pos.line, e.pos.column));
        return Err(ConfigErrors { errors });
    }
    if checked.holds_inline_secret {
        if let Some(mode) = group_or_other_access(path) {
            checked.warnings.push(Warning {
                file: file_name.clone(),
                pos: Pos::default(),
                path: String::new(),
                message: format!(
                    "the file holds a meter key or password but others can read it (mode {mode:04o}); \
                     run `chmod 600 {file_name}`, or move secrets to key_file/password_file"
                ),
            });
        }
    }
    for secret in &checked.secret_files {
        if let Some(mode) = group_or_other_access(&secret.file) {
            checked.warnings.push(Warning {
                file: file_name.clone(),
                pos: secret.pos,
                path: secret.path.clone(),
                message: format!(
                    "{} can be read by others (mode {mode:04o}); run `chmod 600` on it",
                    secret.file.display()
                ),
            });
        }
    }
    Ok((checked.config, checked.warnings))
}

/// The permission bits for group and others when any is set (unix); `None` otherwise or when
/// the file cannot be inspected.
fn group_or_other_access(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

struct SecretFile {
    file: PathBuf,
    pos: Pos,
    path: String,
}

struct Checked {
    config: Config,
    warnings: Vec<Warning>,
    holds_inline_secret: bool,
    secret_files: Vec<SecretFile>,
    outside: Vec<Outside>,
}

/// Something a configuration names outside itself (a file, an environment variable) that `run`
/// reads when it starts. Checked by [`load_with`], the validation `check-config` and `run` share,
/// so a configuration `check-config` calls valid is one `run` starts with; [`parse_with`] checks
/// the text alone (tests, configurations written for another machine).
struct Outside {
    pos: Pos,
    path: String,
    what: OutsideKind,
}

enum OutsideKind {
    /// A meter key: 32 hex digits (or 16 for PRIOS) in a file.
    KeyFile(PathBuf),
    PasswordFile(PathBuf),
    PasswordEnv(String),
    /// PEM with at least one certificate.
    Certificates(PathBuf),
    /// PEM with a private key.
    PrivateKey(PathBuf),
    DriversDir(PathBuf),
}

impl Outside {
    /// What is wrong with it, if anything.
    fn problem(&self) -> Option<(String, Option<String>)> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let unreadable = |f: &Path, e: std::io::Error| {
            Some((
                format!("cannot read {}: {e}", f.display()),
                Some(
                    "`run` reads it as the user the daemon runs as, from its working directory"
                        .into(),
                ),
            ))
        };
        match &self.what {
            OutsideKind::KeyFile(f) => {
                let text = match std::fs::read_to_string(f) {
                    Ok(t) => t,
                    Err(e) => return unreadable(f, e),
                };
                let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
                let hex = digits.chars().all(|c| c.is_ascii_hexdigit());
                // The key itself never appears in a message.
                (!(hex && (digits.len() == 32 || digits.len() == 16))).then(|| {
                    (
                        format!(
                            "{} does not hold a key: expected 32 hex digits (AES-128) or 16 (DES or PRIOS), found {} characters{}",
                            f.display(),
                            digits.chars().count(),
                            if hex { "" } else { " that are not all hex digits" }
                        ),
                        None,
                    )
                })
            }
            OutsideKind::PasswordFile(f) => match std::fs::read_to_string(f) {
                Ok(_) => None,
                Err(e) => unreadable(f, e),
            },
            OutsideKind::PasswordEnv(var) => std::env::var_os(var).is_none().then(|| {
                (
                    format!("the environment variable {var} is not set"),
                    Some("`run` needs it in its environment (systemd: Environment= or EnvironmentFile=)".into()),
                )
            }),
            OutsideKind::Certificates(f) => {
                if let Err(e) = std::fs::metadata(f) {
                    return unreadable(f, e);
                }
                match CertificateDer::pem_file_iter(f) {
                    Err(e) => Some((format!("{}: {e}", f.display()), None)),
                    Ok(certs) => match certs.collect::<Result<Vec<_>, _>>() {
                        Err(e) => Some((format!("{}: {e}", f.display()), None)),
                        Ok(c) if c.is_empty() => Some((
                            format!("{} holds no certificate (no PEM CERTIFICATE section)", f.display()),
                            Some("a private key or a DER file is not a PEM certificate".into()),
                        )),
                        Ok(_) => None,
                    },
                }
            }
            OutsideKind::PrivateKey(f) => {
                if let Err(e) = std::fs::metadata(f) {
                    return unreadable(f, e);
                }
                PrivateKeyDer::from_pem_file(f)
                    .err()
                    .map(|e| (format!("{} holds no private key: {e}", f.display()), None))
            }
            OutsideKind::DriversDir(d) => {
                let mut r = crate::drivers::Registry::built_in();
                r.load_dir(d).err().map(|e| (e.to_string(), None))
            }
        }
    }
}

fn check(text: &str, file_name: &str, options: &ValidateOptions) -> Result<Checked, ConfigErrors> {
    let root = node::parse(text).map_err(|e| ConfigErrors {
        errors: vec![ConfigError {
            file: file_name.to_string(),
            pos: e.pos,
            path: String::new(),
            message: format!("YAML syntax error: {}", syntax_message(&e.message)),
            hint: None,
        }],
    })?;
    let mut checker = Checker {
        file: file_name.to_string(),
        options,
        errors: Vec::new(),
        warnings: Vec::new(),
        holds_inline_secret: false,
        secret_files: Vec::new(),
        outside: Vec::new(),
    };
    let config = checker.config(&root);
    if checker.errors.is_empty() {
        checker.warnings.sort_by_key(|w| (w.pos.line, w.pos.column));
        Ok(Checked {
            config,
            warnings: checker.warnings,
            holds_inline_secret: checker.holds_inline_secret,
            secret_files: checker.secret_files,
            outside: checker.outside,
        })
    } else {
        let mut errors = checker.errors;
        errors.sort_by_key(|e| (e.pos.line, e.pos.column));
        Err(ConfigErrors { errors })
    }
}

/// The parser's one-line message without its own location prefix and source excerpt (we
/// print the location ourselves).
fn syntax_message(raw: &str) -> String {
    let first = raw.lines().next().unwrap_or(raw);
    // The parser's resource limits (a hostile or wrong file) come as Rust debug text, e.g.
    // `budget breached: Nodes { nodes: 250001 }`.
    if let Some(rest) = first.split("budget breached:").nth(1) {
        let what = rest
            .trim()
            .split([' ', '{'])
            .next()
            .unwrap_or("size")
            .to_lowercase();
        let count: String = rest.chars().filter(char::is_ascii_digit).collect();
        return format!(
            "the file is far larger than any configuration: it goes over the parser's limit on \
             {what}{}; is this the right file?",
            if count.is_empty() {
                String::new()
            } else {
                format!(" ({count})")
            }
        );
    }
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let first = match first.strip_prefix("line ") {
        Some(rest) => rest.split_once(": ").map_or(first, |(_, m)| m),
        None => first,
    };
    match first.split_once(", set DuplicateKeyPolicy") {
        Some((head, _)) => head.to_string(),
        None => first.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Option names per section: the unknown-key check and the did-you-mean both read these.

const TOP_KEYS: &[&str] = &[
    "state_dir",
    "state_save_interval",
    "log_level",
    "log_format",
    "drivers_dir",
    "dedup_window",
    "settle_time",
    "silent_after",
    "allow_bus_writes",
    "buses",
    "receivers",
    "meters",
    "mqtt",
    "web",
];
const WEB_KEYS: &[&str] = &[
    "bind",
    "password",
    "password_file",
    "token",
    "allow_from",
    "public_url",
];
const BUS_KEYS: &[&str] = &[
    "name",
    "device",
    "baud",
    "tcp",
    "polling",
    "request_timeout",
    "idle_timeout",
    "retry",
    "apply_unit_factor",
    "only_values",
    "emit",
    "force_reset",
    "max_frames",
    "tcp_server",
];
const BRIDGE_KEYS: &[&str] = &["port", "bind", "idle_timeout"];
const RECEIVER_COMMON_KEYS: &[&str] = &["name", "type", "dedup", "silent_after"];
const RECEIVER_TYPES: &[&str] = &[
    "im871a",
    "iu891a",
    "amb8465",
    "cul",
    "rtlwmbus",
    "hex_stdin",
    "tcp_client",
    "tcp_server",
    "udp",
    "mqtt",
    "simulated",
];
const METER_KEYS: &[&str] = &[
    "name",
    "address",
    "bus",
    "driver",
    "key",
    "key_file",
    "fields",
    "polling",
    "max_frames",
    "max_records",
    "expire_after",
];
const FIELD_KEYS: &[&str] = &["field", "scale", "offset"];
const MQTT_KEYS: &[&str] = &[
    "url",
    "username",
    "password",
    "password_file",
    "password_env",
    "client_id",
    "base_topic",
    "qos",
    "retain",
    "ca_file",
    "client_cert",
    "client_key",
    "discovery_prefix",
    "discovery",
    "queue_limit",
    "keep_alive",
];
const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];
const SERIAL_BAUDS: &[u32] = &[300, 600, 1200, 2400, 4800, 9600, 19200, 38400];

/// Options that only some receiver types take.
fn receiver_type_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "im871a" | "iu891a" | "amb8465" | "cul" => &["device", "mode", "baud"],
        "rtlwmbus" => &["command"],
        "tcp_client" => &["address"],
        "tcp_server" | "udp" => &["bind"],
        "mqtt" => &["topic"],
        "simulated" => &["stick", "telegrams", "interval"],
        _ => &[],
    }
}

const ALL_RECEIVER_KEYS: &[&str] = &[
    "name",
    "type",
    "dedup",
    "silent_after",
    "device",
    "mode",
    "baud",
    "command",
    "address",
    "bind",
    "topic",
    "stick",
    "telegrams",
    "interval",
];

// ---------------------------------------------------------------------------------------------

/// A mapping being read, with where it is for "missing option" messages.
struct Section<'n> {
    path: String,
    pos: Pos,
    entries: &'n [(String, Pos, Node)],
}

impl<'n> Section<'n> {
    /// The value of `key`, unless absent or written empty (`key:`), with the key's position.
    fn get(&self, key: &str) -> Option<(&'n Node, Pos)> {
        self.entries
            .iter()
            .find(|(k, _, n)| k == key && n.value != Value::Null)
            .map(|(_, p, n)| (n, *p))
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn key_pos(&self, key: &str) -> Pos {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map_or(self.pos, |(_, p, _)| *p)
    }

    fn child(&self, key: &str) -> String {
        child_path(&self.path, key)
    }
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// How a bare YAML integer is read where a duration is expected.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bare {
    /// Milliseconds, as commercial M-Bus gateways write polling and timeouts.
    Millis,
    /// Only `0` is accepted; anything else needs a unit so `10` cannot mean 10 ms to one
    /// reader and 10 s to another.
    ZeroOnly,
}

/// A socket the gateway listens on.
struct Listener {
    udp: bool,
    host: String,
    port: u16,
    /// What it belongs to, for messages.
    owner: String,
}

impl Listener {
    fn clashes(&self, other: &Listener) -> bool {
        let any = |h: &str| {
            h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_unspecified())
        };
        self.udp == other.udp
            && self.port == other.port
            && (self.host.eq_ignore_ascii_case(&other.host) || any(&self.host) || any(&other.host))
    }
}

struct NameUse {
    path: String,
    pos: Pos,
    name: String,
}

struct Checker<'o> {
    file: String,
    options: &'o ValidateOptions,
    errors: Vec<ConfigError>,
    warnings: Vec<Warning>,
    holds_inline_secret: bool,
    secret_files: Vec<SecretFile>,
    outside: Vec<Outside>,
}

impl Checker<'_> {
    fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>, hint: Option<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            pos,
            path: path.to_string(),
            message: message.into(),
            hint,
        });
    }

    fn warn(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.warnings.push(Warning {
            file: self.file.clone(),
            pos,
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn wrong_type(&mut self, node: &Node, path: &str, expected: &str) {
        let hint = match (&node.value, expected) {
            (Value::Int(_) | Value::Float(_) | Value::Bool(_), e) if e.contains("text") => {
                Some("put the value in quotes".to_string())
            }
            _ => None,
        };
        self.error(
            node.pos,
            path,
            format!("expected {expected}, found {}", node.kind()),
            hint,
        );
    }

    /// Opens a mapping and reports keys not in `allowed`. An empty value counts as an empty
    /// mapping so `mqtt:` alone reports the missing `url` rather than a type error.
    fn section<'n>(
        &mut self,
        node: &'n Node,
        pos: Pos,
        path: &str,
        what: &str,
        allowed: &[&str],
    ) -> Option<Section<'n>> {
        let entries: &'n [(String, Pos, Node)] = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => &[],
            _ => {
                self.wrong_type(node, path, &format!("a mapping ({what})"));
                return None;
            }
        };
        for (key, key_pos, _) in entries {
            if !allowed.contains(&key.as_str()) {
                self.unknown_key(*key_pos, path, key, what, allowed);
            }
        }
        Some(Section {
            path: path.to_string(),
            pos,
            entries,
        })
    }

    fn unknown_key(&mut self, pos: Pos, path: &str, key: &str, what: &str, allowed: &[&str]) {
        let hint = match suggest(key, allowed) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("{what} takes: {}", allowed.join(", ")),
        };
        self.error(
            pos,
            &child_path(path, key),
            format!("unknown option `{key}` in {what}"),
            Some(hint),
        );
    }

    fn list<'n>(&mut self, node: &'n Node, path: &str, what: &str) -> &'n [Node] {
        match &node.value {
            Value::List(items) => items,
            Value::Null => &[],
            _ => {
                self.wrong_type(node, path, &format!("a list of {what}"));
                &[]
            }
        }
    }

    /// Reports a required option that is absent; true when it is there.
    fn require(&mut self, s: &Section, key: &str, what: &str) -> bool {
        if s.has(key) {
            return true;
        }
        let written_empty = s.entries.iter().any(|(k, _, _)| k == key);
        let message = if written_empty {
            format!("`{key}` has no value; expected {what}")
        } else {
            format!("missing required option `{key}` ({what})")
        };
        let path = if written_empty {
            s.child(key)
        } else {
            s.path.clone()
        };
        self.error(s.key_pos(key), &path, message, None);
        false
    }

    fn text(&mut self, s: &Section, key: &str) -> Option<String> {
        let (node, _) = s.get(key)?;
        match &node.value {
            Value::Str(t) if t.trim().is_empty() => {
                self.error(
                    node.pos,
                    &s.child(key),
                    "expected text, found an empty string",
                    None,
                );
                None
            }
            Value::Str(t) => Some(t.clone()),
            _ => {
                self.wrong_type(node, &s.child(key), "text");
                None
            }
        }
    }

    /// Records something outside the file that `load_with` checks.
    fn outside(&mut self, pos: Pos, path: String, what: OutsideKind) {
        self.outside.push(Outside { pos, path, what });
    }

    /// Text already checked (and reported) by another call; no second message.
    fn text_quiet(&self, s: &Section, key: &str) -> Option<String> {
        match s.get(key) {
            Some((
                Node {
                    value: Value::Str(t),
                    ..
                },
                _,
            )) if !t.trim().is_empty() => Some(t.clone()),
            _ => None,
        }
    }

    fn path_buf(&mut self, s: &Section, key: &str) -> Option<PathBuf> {
        self.text(s, key).map(PathBuf::from)
    }

    fn boolean(&mut self, s: &Section, key: &str) -> Option<bool> {
        let (node, _) = s.get(key)?;
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.wrong_type(node, &s.child(key), "true or false");
                None
            }
        }
    }

    fn integer(&mut self, s: &Section, key: &str, min: i64, max: i64) -> Option<i64> {
        let (node, _) = s.get(key)?;
        match node.value {
            Value::Int(i) if (min..=max).contains(&i) => Some(i),
            Value::Int(i) => {
                self.error(
                    node.pos,
                    &s.child(key),
                    format!("{i} is out of range; expected {min} to {max}"),
                    None,
                );
                None
            }
            _ => {
                self.wrong_type(
                    node,
                    &s.child(key),
                    &format!("a whole number from {min} to {max}"),
                );
                None
            }
        }
    }

    fn u32_in(&mut self, s: &Section, key: &str, min: u32, max: u32) -> Option<u32> {
        self.integer(s, key, i64::from(min), i64::from(max))
            .and_then(|i| u32::try_from(i).ok())
    }

    fn number(&mut self, s: &Section, key: &str) -> Option<f64> {
        let (node, _) = s.get(key)?;
        match node.value {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) if f.is_finite() => Some(f),
            _ => {
                self.wrong_type(node, &s.child(key), "a number");
                None
            }
        }
    }

    /// One of `choices`; the message lists them and suggests the closest.
    /// `log_level`: a level, as always, or `RUST_LOG`-style directives when it names modules.
    fn log_level(&mut self, top: &Section, config: &mut Config) {
        let Some((node, _)) = top.get("log_level") else {
            return;
        };
        let directives = matches!(&node.value, Value::Str(t) if t.contains(['=', ',', ':']));
        if !directives {
            if let Some(level) = self.choice(top, "log_level", "log level", LOG_LEVELS) {
                config.log_level = LogLevel::ALL
                    .into_iter()
                    .find(|l| l.name() == level)
                    .unwrap_or_default();
                config.log_filter = level.to_string();
            }
            return;
        }
        let Value::Str(t) = &node.value else {
            return;
        };
        match crate::logging::parse_filter(t) {
            Ok(targets) => {
                // The bare level among the directives is what every other module logs at.
                config.log_level = match targets.default_level() {
                    Some(l) if l == tracing::level_filters::LevelFilter::OFF => LogLevel::Error,
                    Some(l) => LogLevel::ALL
                        .into_iter()
                        .find(|x| x.name() == l.to_string().to_ascii_lowercase())
                        .unwrap_or_default(),
                    None => LogLevel::Error,
                };
                config.log_filter = t.clone();
            }
            Err(e) => self.error(
                node.pos,
                &top.child("log_level"),
                format!("invalid log directives {e}"),
                Some(
                    "a level (`debug`) or directives such as `meterbridge::mqtt=debug,info`".into(),
                ),
            ),
        }
    }

    fn choice(
        &mut self,
        s: &Section,
        key: &str,
        what: &str,
        choices: &[&'static str],
    ) -> Option<&'static str> {
        let (node, _) = s.get(key)?;
        let Value::Str(t) = &node.value else {
            self.wrong_type(
                node,
                &s.child(key),
                &format!("one of {}", choices.join(", ")),
            );
            return None;
        };
        let lower = t.to_ascii_lowercase();
        if let Some(c) = choices.iter().find(|c| **c == lower) {
            return Some(c);
        }
        let hint = enum_hint(t, choices);
        self.error(
            node.pos,
            &s.child(key),
            format!("unknown {what} `{t}`"),
            Some(hint),
        );
        None
    }

    fn duration(
        &mut self,
        s: &Section,
        key: &str,
        bare: Bare,
        allow_zero: bool,
    ) -> Option<Duration> {
        let (node, _) = s.get(key)?;
        self.duration_node(node, &s.child(key), bare, allow_zero)
    }

    fn duration_node(
        &mut self,
        node: &Node,
        path: &str,
        bare: Bare,
        allow_zero: bool,
    ) -> Option<Duration> {
        let d = match (&node.value, bare) {
            (Value::Int(i), Bare::Millis) if *i >= 0 => Duration::from_millis(i.unsigned_abs()),
            (Value::Int(0), Bare::ZeroOnly) => Duration::ZERO,
            (Value::Int(i), Bare::ZeroOnly) if *i > 0 => {
                self.error(
                    node.pos,
                    path,
                    format!("`{i}` has no unit; expected a duration such as `{i}s` or `{i}m`"),
                    Some(
                        "only polling and the bus timeouts read plain numbers (as milliseconds)"
                            .into(),
                    ),
                );
                return None;
            }
            (Value::Int(i), _) => {
                self.error(
                    node.pos,
                    path,
                    format!("{i} is negative; expected a duration"),
                    None,
                );
                return None;
            }
            (Value::Str(t), _) => match parse_duration(t) {
                Ok(d) => d,
                Err(e) => {
                    self.error(node.pos, path, e.to_string(), None);
                    return None;
                }
            },
            _ => {
                let expected = match bare {
                    Bare::Millis => "milliseconds or a duration such as `10s`",
                    Bare::ZeroOnly => "a duration such as `10s`",
                };
                self.wrong_type(node, path, expected);
                return None;
            }
        };
        if d.is_zero() && !allow_zero {
            self.error(node.pos, path, "expected a duration longer than zero", None);
            return None;
        }
        Some(d)
    }

    // -----------------------------------------------------------------------------------------

    fn config(&mut self, root: &Node) -> Config {
        let mut config = Config {
            path: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            state_save_interval: DEFAULT_STATE_SAVE_INTERVAL,
            log_level: LogLevel::Info,
            log_filter: "info".into(),
            log_format: crate::logging::LogFormat::Text,
            drivers_dir: None,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            settle_time: DEFAULT_SETTLE_TIME,
            silent_after: DEFAULT_SILENT_AFTER,
            allow_bus_writes: false,
            buses: Vec::new(),
            receivers: Vec::new(),
            meters: Vec::new(),
            mqtt: None,
            web: None,
            page_meters: Vec::new(),
        };
        let Some(top) = self.section(root, root.pos, "", "the configuration", TOP_KEYS) else {
            return config;
        };
        if let Some(p) = self.path_buf(&top, "state_dir") {
            config.state_dir = p;
        }
        if let Some(d) = self.duration(&top, "state_save_interval", Bare::ZeroOnly, false) {
            config.state_save_interval = d;
        }
        self.log_level(&top, &mut config);
        if let Some(f) = self.choice(&top, "log_format", "log format", LogFormat::NAMES) {
            config.log_format = LogFormat::parse(f).unwrap_or_default();
        }
        config.drivers_dir = self.path_buf(&top, "drivers_dir");
        if let (Some(d), Some((n, _))) = (&config.drivers_dir, top.get("drivers_dir")) {
            self.outside(
                n.pos,
                "drivers_dir".into(),
                OutsideKind::DriversDir(d.clone()),
            );
        }
        if let Some(d) = self.duration(&top, "dedup_window", Bare::ZeroOnly, true) {
            config.dedup_window = d;
        }
        if let Some(d) = self.duration(&top, "settle_time", Bare::ZeroOnly, true) {
            if d > MAX_SETTLE_TIME {
                self.error(
                    top.key_pos("settle_time"),
                    "settle_time",
                    format!(
                        "{} ms is longer than any receiver needs; readings would wait that long",
                        d.as_millis()
                    ),
                    Some("use at most 5s; 500ms covers network receivers".into()),
                );
            } else {
                config.settle_time = d;
            }
        }
        if let Some(d) = self.duration(&top, "silent_after", Bare::ZeroOnly, true) {
            config.silent_after = d;
        }
        // Copies still arriving after the window (counted from the first copy) are taken for a
        // new telegram: merging needs the window to outlast the settle time.
        if !config.dedup_window.is_zero()
            && !config.settle_time.is_zero()
            && config.settle_time >= config.dedup_window
        {
            self.warn(
                top.key_pos("settle_time"),
                "settle_time",
                format!(
                    "settle_time ({}) is not shorter than dedup_window ({}): a copy heard after the window would be published again",
                    format_duration(config.settle_time),
                    format_duration(config.dedup_window)
                ),
            );
        }
        if let Some(b) = self.boolean(&top, "allow_bus_writes") {
            config.allow_bus_writes = b;
            if b {
                self.warn(
                    top.key_pos("allow_bus_writes"),
                    "allow_bus_writes",
                    "MQTT requests may change meter addresses and baud rates on the buses",
                );
            }
        }

        let mut names: Vec<NameUse> = Vec::new();
        // Sockets the gateway listens on: two on one port, one of them for all addresses,
        // cannot both be opened (`run` would retry one of them for ever).
        let mut listeners: Vec<Listener> = Vec::new();
        if let Some((node, _)) = top.get("buses") {
            let items = self.list(node, "buses", "buses");
            let mut bridge_ports: HashMap<u16, String> = HashMap::new();
            for (i, item) in items.iter().enumerate() {
                let path = format!("buses[{i}]");
                let Some(bus) = self.bus(item, &path, &mut names) else {
                    continue;
                };
                if let Some(bridge) = &bus.tcp_server {
                    if let Some(other) = bridge_ports.get(&bridge.port) {
                        let pos = item.get("tcp_server").map_or(item.pos, |n| n.pos);
                        self.error(
                            pos,
                            &format!("{path}.tcp_server"),
                            format!(
                                "port {} is already taken by the bridge of bus `{other}`",
                                bridge.port
                            ),
                            None,
                        );
                    } else {
                        bridge_ports.insert(bridge.port, bus.name.clone());
                        listeners.push(Listener {
                            udp: false,
                            host: bridge.bind.clone(),
                            port: bridge.port,
                            owner: format!("the bridge of bus `{}`", bus.name),
                        });
                    }
                }
                config.buses.push(bus);
            }
        }

        let mut mqtt_receivers: Vec<(Pos, String)> = Vec::new();
        if let Some((node, _)) = top.get("receivers") {
            let items = self.list(node, "receivers", "receivers");
            for (i, item) in items.iter().enumerate() {
                let path = format!("receivers[{i}]");
                if let Some(r) = self.receiver(item, &path, &mut names) {
                    let listening = match &r.kind {
                        ReceiverKind::TcpServer { bind } => Some((false, bind)),
                        ReceiverKind::Udp { bind } => Some((true, bind)),
                        _ => None,
                    };
                    if let Some((Some((host, port)), udp)) =
                        listening.map(|(udp, bind)| (split_host_port(bind), udp))
                    {
                        let me = Listener {
                            udp,
                            host: host.to_string(),
                            port,
                            owner: format!("receiver `{}`", r.name),
                        };
                        let pos = item.get("bind").map_or(item.pos, |n| n.pos);
                        if let Some(other) = listeners.iter().find(|l| l.clashes(&me)) {
                            self.error(
                                pos,
                                &format!("{path}.bind"),
                                format!(
                                    "{} port {port} is already taken by {}",
                                    if udp { "UDP" } else { "TCP" },
                                    other.owner
                                ),
                                None,
                            );
                        } else {
                            listeners.push(me);
                        }
                    }
                    if matches!(r.kind, ReceiverKind::Mqtt { .. }) {
                        let pos = item.get("type").map_or(item.pos, |n| n.pos);
                        mqtt_receivers.push((pos, format!("{path}.type")));
                    }
                    config.receivers.push(r);
                }
            }
        }

        if let Some((node, pos)) = top.get("mqtt") {
            config.mqtt = self.mqtt(node, pos);
        }
        if let Some((node, pos)) = top.get("web") {
            config.web = self.web(node, pos);
        }
        let mqtt_written = top.entries.iter().any(|(k, _, _)| k == "mqtt");
        if !mqtt_written {
            for (pos, path) in mqtt_receivers {
                self.error(
                    pos,
                    &path,
                    "an mqtt receiver reads from the broker in the `mqtt` section, which is missing",
                    None,
                );
            }
        }

        // An empty file (or one with only general options) is valid but does nothing at all.
        if !top.has("buses") && !top.has("receivers") && !top.has("meters") {
            self.warn(
                Pos::default(),
                "",
                "there are no buses and no receivers: `run` would start and read nothing (config.example.yaml shows both)",
            );
        }
        if let Some((node, _)) = top.get("meters") {
            let items = self.list(node, "meters", "meters");
            let mut meter_names: Vec<NameUse> = Vec::new();
            let mut wired: HashMap<(String, MeterAddress), (String, Pos)> = HashMap::new();
            let mut wireless: HashMap<String, (String, Pos)> = HashMap::new();
            // Names as written, so a bus with a mistake of its own does not also make every
            // meter on it an error.
            let bus_names = written_names(top.get("buses").map(|(n, _)| n));
            let receiver_names = written_names(top.get("receivers").map(|(n, _)| n));
            for (i, item) in items.iter().enumerate() {
                let path = format!("meters[{i}]");
                let Some(meter) = self.meter(
                    item,
                    &path,
                    &mut meter_names,
                    &bus_names,
                    &receiver_names,
                    config.drivers_dir.is_some(),
                ) else {
                    continue;
                };
                let address_pos = item.get("address").map_or(item.pos, |n| n.pos);
                let address_path = format!("{path}.address");
                let earlier = match (&meter.bus, &meter.address) {
                    (Some(bus), address) => {
                        let k = (bus.clone(), address.clone());
                        let e = wired.get(&k).cloned();
                        wired.entry(k).or_insert((path.clone(), item.pos));
                        e.map(|e| (e, format!("on bus `{bus}`")))
                    }
                    (None, MeterAddress::Wireless(id)) => {
                        let e = wireless.get(id).cloned();
                        wireless
                            .entry(id.clone())
                            .or_insert((path.clone(), item.pos));
                        e.map(|e| (e, "as a wireless id".to_string()))
                    }
                    (None, _) => None,
                };
                if let Some(((other, other_pos), context)) = earlier {
                    self.error(
                        address_pos,
                        &address_path,
                        format!(
                            "address {} is already used {context} by {other} (line {})",
                            describe_address(&meter.address),
                            other_pos.line
                        ),
                        None,
                    );
                }
                config.meters.push(meter);
            }
        }
        config
    }

    /// A bus or receiver name: required, topic-safe, unique among buses and receivers.
    fn name(&mut self, s: &Section, names: &mut Vec<NameUse>) -> Option<String> {
        if !self.require(s, "name", "text naming it in topics and logs") {
            return None;
        }
        let name = self.text(s, "name")?;
        let pos = s.get("name").map_or(s.pos, |(n, _)| n.pos);
        let path = s.child("name");
        if let Some(c) = name.chars().find(|c| matches!(c, '/' | '#' | '+')) {
            self.error(
                pos,
                &path,
                format!("`{c}` cannot be part of a name (it is special in MQTT topics)"),
                match topic_slug(&name) {
                    s if s.is_empty() => Some("use letters and digits, e.g. `cellar`".into()),
                    s => Some(format!("use e.g. `{s}`")),
                },
            );
            return Some(name);
        }
        let slug = topic_slug(&name);
        if slug.is_empty() {
            self.error(
                pos,
                &path,
                format!(
                    "name `{name}` has no ASCII letter or digit, so it gives an empty topic name"
                ),
                None,
            );
            return Some(name);
        }
        if let Some(other) = names.iter().find(|u| topic_slug(&u.name) == slug) {
            let message = if other.name == name {
                format!(
                    "name `{name}` is already used by {} (line {})",
                    other.path, other.pos.line
                )
            } else {
                format!(
                    "name `{name}` gives the topic name `{slug}`, like `{}` of {} (line {})",
                    other.name, other.path, other.pos.line
                )
            };
            self.error(pos, &path, message, None);
        } else {
            names.push(NameUse {
                path: s.path.clone(),
                pos,
                name: name.clone(),
            });
        }
        Some(name)
    }

    fn bus(&mut self, node: &Node, path: &str, names: &mut Vec<NameUse>) -> Option<BusConfig> {
        let s = self.section(node, node.pos, path, "a bus", BUS_KEYS)?;
        let name = self.name(&s, names);
        let endpoint = match (s.get("device"), s.get("tcp")) {
            (Some(_), Some((_, tcp_pos))) => {
                self.error(
                    tcp_pos,
                    &s.child("tcp"),
                    "a bus has either `device` (serial converter) or `tcp` (gateway), not both",
                    None,
                );
                None
            }
            (Some(_), None) => {
                let device = self.text(&s, "device");
                let baud = match s.get("baud") {
                    Some((n, _)) => match n.value {
                        Value::Int(b)
                            if u32::try_from(b).is_ok_and(|b| SERIAL_BAUDS.contains(&b)) =>
                        {
                            u32::try_from(b).ok()
                        }
                        _ => {
                            let choices: Vec<String> =
                                SERIAL_BAUDS.iter().map(u32::to_string).collect();
                            self.error(
                                n.pos,
                                &s.child("baud"),
                                "expected an M-Bus line speed",
                                Some(format!("one of {}", choices.join(", "))),
                            );
                            None
                        }
                    },
                    None => Some(DEFAULT_BAUD),
                };
                device
                    .zip(baud)
                    .map(|(device, baud)| BusEndpoint::Serial { device, baud })
            }
            (None, Some((tcp, _))) => {
                if let Some((_, baud_pos)) = s.get("baud") {
                    self.error(
                        baud_pos,
                        &s.child("baud"),
                        "`baud` applies to serial buses only; a TCP gateway sets the line speed itself",
                        None,
                    );
                }
                self.host_port(tcp, &s.child("tcp"))
                    .map(|address| BusEndpoint::Tcp { address })
            }
            (None, None) => {
                self.error(
                    s.pos,
                    path,
                    "missing `device` (serial converter, e.g. /dev/ttyUSB0) or `tcp` (gateway as HOST:PORT)",
                    None,
                );
                None
            }
        };
        let polling = s
            .get("polling")
            .and_then(|(n, _)| self.polling(n, &s.child("polling")))
            .unwrap_or(Polling::Every(DEFAULT_POLLING));
        let request_timeout = self.duration(&s, "request_timeout", Bare::Millis, false);
        let idle_timeout = self.duration(&s, "idle_timeout", Bare::Millis, false);
        let retry = self.u32_in(&s, "retry", 0, 100).unwrap_or(DEFAULT_RETRY);
        let apply_unit_factor = self.boolean(&s, "apply_unit_factor").unwrap_or(true);
        if !apply_unit_factor {
            // Accepted so configurations from commercial gateways load, but said out loud:
            // silently publishing scaled values to someone who asked for raw ones is worse.
            self.warn(
                s.key_pos("apply_unit_factor"),
                &s.child("apply_unit_factor"),
                "`false` is not supported yet: readings are published in the unit their driver \
                 names (e.g. `_kwh`), scaled by the record's unit factor",
            );
        }
        let only_values = self.boolean(&s, "only_values").unwrap_or(false);
        let emit = s
            .get("emit")
            .and_then(|(n, _)| self.emit(n, &s.child("emit")))
            .unwrap_or(Emit::Changes);
        let force_reset = self.boolean(&s, "force_reset").unwrap_or(false);
        let max_frames = self
            .u32_in(&s, "max_frames", 1, 255)
            .unwrap_or(DEFAULT_MAX_FRAMES);
        let tcp_server = s
            .get("tcp_server")
            .and_then(|(n, p)| self.bridge(n, p, &s.child("tcp_server")));
        Some(BusConfig {
            name: name?,
            endpoint: endpoint?,
            polling,
            request_timeout,
            idle_timeout,
            retry,
            apply_unit_factor,
            only_values,
            emit,
            force_reset,
            max_frames,
            tcp_server,
        })
    }

    /// `tcp_server: true` (defaults), a port number, or a mapping; `false` turns it off.
    fn bridge(&mut self, node: &Node, pos: Pos, path: &str) -> Option<TcpBridgeConfig> {
        let default = TcpBridgeConfig {
            port: DEFAULT_BRIDGE_PORT,
            bind: DEFAULT_BRIDGE_BIND.to_string(),
            idle_timeout: DEFAULT_BRIDGE_IDLE_TIMEOUT,
        };
        let bridge = match &node.value {
            Value::Bool(false) => return None,
            Value::Bool(true) => default,
            Value::Int(_) => {
                let port = self.port_node(node, path)?;
                TcpBridgeConfig { port, ..default }
            }
            Value::Map(_) => {
                let s = self.section(node, pos, path, "the TCP bridge", BRIDGE_KEYS)?;
                let port = match s.get("port") {
                    Some((n, _)) => self.port_node(n, &s.child("port"))?,
                    None => DEFAULT_BRIDGE_PORT,
                };
                let bind = match self.text(&s, "bind") {
                    Some(b) if valid_host(&b) => b,
                    Some(b) => {
                        let p = s.get("bind").map_or(s.pos, |(n, _)| n.pos);
                        self.error(
                            p,
                            &s.child("bind"),
                            format!("`{b}` is not an IP address or host name"),
                            None,
                        );
                        return None;
                    }
                    None => DEFAULT_BRIDGE_BIND.to_string(),
                };
                let idle_timeout = self
                    .duration(&s, "idle_timeout", Bare::ZeroOnly, false)
                    .unwrap_or(DEFAULT_BRIDGE_IDLE_TIMEOUT);
                TcpBridgeConfig {
                    port,
                    bind,
                    idle_timeout,
                }
            }
            _ => {
                self.wrong_type(
                    node,
                    path,
                    "true, a port number, or a mapping with port, bind and idle_timeout",
                );
                return None;
            }
        };
        if !is_loopback(&bridge.bind) {
            let bind_pos = node.get("bind").map_or(pos, |n| n.pos);
            self.warn(
                bind_pos,
                &child_path(path, "bind"),
                format!(
                    "the TCP bridge listens on {}, reachable from the network; anyone who can connect can talk to the bus",
                    bridge.bind
                ),
            );
        }
        Some(bridge)
    }

    fn port_node(&mut self, node: &Node, path: &str) -> Option<u16> {
        match node.value {
            Value::Int(p) => match u16::try_from(p) {
                Ok(p) if p > 0 => Some(p),
                _ => {
                    self.error(
                        node.pos,
                        path,
                        format!("{p} is not a port; expected 1 to 65535"),
                        None,
                    );
                    None
                }
            },
            _ => {
                self.wrong_type(node, path, "a port number from 1 to 65535");
                None
            }
        }
    }

    /// `HOST:PORT` (IPv6 in brackets).
    fn host_port(&mut self, node: &Node, path: &str) -> Option<String> {
        let Value::Str(t) = &node.value else {
            self.wrong_type(node, path, "text HOST:PORT");
            return None;
        };
        match split_host_port(t) {
            Some((host, _)) if valid_host(host) => Some(t.clone()),
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("`{t}` is not HOST:PORT"),
                    Some("e.g. `192.168.1.20:10001` or `[fd00::5]:10001`".into()),
                );
                None
            }
        }
    }

    /// A listening address: `host:port`, or just a port (number or text) on 127.0.0.1.
    fn bind_address(&mut self, node: &Node, path: &str) -> Option<String> {
        let text = match &node.value {
            Value::Int(_) => {
                let port = self.port_node(node, path)?;
                return Some(format!("{DEFAULT_BRIDGE_BIND}:{port}"));
            }
            Value::Str(t) => t.trim(),
            _ => {
                self.wrong_type(node, path, "a port or HOST:PORT");
                return None;
            }
        };
        let with_host = if let Some(port) = text.strip_prefix(':') {
            format!("{DEFAULT_BRIDGE_BIND}:{port}")
        } else if text.chars().all(|c| c.is_ascii_digit()) {
            format!("{DEFAULT_BRIDGE_BIND}:{text}")
        } else {
            text.to_string()
        };
        match split_host_port(&with_host) {
            Some((host, _)) if valid_host(host) => Some(with_host),
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("`{text}` is not a port or HOST:PORT"),
                    Some("e.g. `9000` or `0.0.0.0:9000`".into()),
                );
                None
            }
        }
    }

    /// Milliseconds (YAML integer), a duration, or cron expressions joined with `;`.
    fn polling(&mut self, node: &Node, path: &str) -> Option<Polling> {
        match &node.value {
            Value::Int(_) => self
                .duration_node(node, path, Bare::Millis, false)
                .map(Polling::Every),
            Value::Str(t) if t.trim().contains(char::is_whitespace) => {
                let mut exprs = Vec::new();
                let mut ok = true;
                for expr in t.split(';').map(str::trim).filter(|e| !e.is_empty()) {
                    match check_cron(expr) {
                        Ok(normal) => exprs.push(normal),
                        Err(message) => {
                            ok = false;
                            self.error(
                                node.pos,
                                path,
                                format!("cron expression `{expr}`: {message}"),
                                None,
                            );
                        }
                    }
                }
                ok.then_some(Polling::Cron(exprs))
            }
            Value::Str(_) => self
                .duration_node(node, path, Bare::Millis, false)
                .map(Polling::Every),
            _ => {
                self.wrong_type(
                    node,
                    path,
                    "milliseconds, a duration such as `15m`, or cron expressions such as `*/15 * * * *`",
                );
                None
            }
        }
    }

    fn emit(&mut self, node: &Node, path: &str) -> Option<Emit> {
        match &node.value {
            Value::Str(t) if t.eq_ignore_ascii_case("changes") => Some(Emit::Changes),
            Value::Str(t) if t.eq_ignore_ascii_case("every") => Some(Emit::Every),
            Value::Str(t) => match parse_duration(t) {
                Ok(d) if !d.is_zero() => Some(Emit::Interval(d)),
                _ => {
                    self.error(
                        node.pos,
                        path,
                        format!("unknown emit mode `{t}`"),
                        Some(
                            enum_hint(t, &["changes", "every", "15m"])
                                .replace("`15m`", "a re-emit interval such as `15m`"),
                        ),
                    );
                    None
                }
            },
            _ => {
                self.wrong_type(
                    node,
                    path,
                    "`changes`, `every` or a re-emit interval such as `15m`",
                );
                None
            }
        }
    }

    fn receiver(
        &mut self,
        node: &Node,
        path: &str,
        names: &mut Vec<NameUse>,
    ) -> Option<ReceiverConfig> {
        // The type decides which options are valid, so read it before checking the keys.
        let type_node = node.get("type");
        let kind_name: Option<&'static str> = match type_node.map(|n| &n.value) {
            Some(Value::Str(t)) => {
                let lower = t.to_ascii_lowercase();
                RECEIVER_TYPES
                    .iter()
                    .copied()
                    .find(|k| **k == lower)
                    .or_else(|| StickKind::from_str(&lower).ok().map(StickKind::name))
            }
            _ => None,
        };
        let allowed: Vec<&str> = match kind_name {
            Some(k) => RECEIVER_COMMON_KEYS
                .iter()
                .chain(receiver_type_keys(k))
                .copied()
                .collect(),
            None => ALL_RECEIVER_KEYS.to_vec(),
        };
        let entries: &[(String, Pos, Node)] = match &node.value {
            Value::Map(e) => e,
            _ => {
                self.wrong_type(node, path, "a mapping (a receiver)");
                return None;
            }
        };
        for (key, key_pos, _) in entries {
            if allowed.contains(&key.as_str()) {
                continue;
            }
            if let (true, Some(k)) = (ALL_RECEIVER_KEYS.contains(&key.as_str()), kind_name) {
                self.error(
                    *key_pos,
                    &child_path(path, key),
                    format!("`{key}` does not apply to a receiver of type {k}"),
                    Some(format!("type {k} takes: {}", allowed.join(", "))),
                );
            } else {
                self.unknown_key(*key_pos, path, key, "a receiver", &allowed);
            }
        }
        let s = Section {
            path: path.to_string(),
            pos: node.pos,
            entries,
        };
        let name = self.name(&s, names);
        let dedup = self.boolean(&s, "dedup");
        let silent_after = self.duration(&s, "silent_after", Bare::ZeroOnly, true);
        if !self.require(&s, "type", "the kind of receiver") {
            return None;
        }
        let Some(kind_name) = kind_name else {
            let (t, _) = s.get("type")?;
            match &t.value {
                Value::Str(text) => {
                    let hint = enum_hint(text, RECEIVER_TYPES);
                    self.error(
                        t.pos,
                        &s.child("type"),
                        format!("unknown receiver type `{text}`"),
                        Some(hint),
                    );
                }
                _ => self.wrong_type(t, &s.child("type"), "a receiver type"),
            }
            return None;
        };
        let kind = match kind_name {
            "im871a" | "iu891a" | "amb8465" | "cul" => {
                let device = if self.require(&s, "device", "the stick's serial device") {
                    self.text(&s, "device")
                } else {
                    None
                };
                let mode = match s.get("mode") {
                    Some((n, _)) => match &n.value {
                        Value::Str(t) => match LinkMode::from_str(t) {
                            Ok(m) => Some(m.name().to_string()),
                            Err(_) => {
                                let names: Vec<&str> =
                                    LinkMode::ALL.iter().map(|m| m.name()).collect();
                                self.error(
                                    n.pos,
                                    &s.child("mode"),
                                    format!("unknown link mode `{t}`"),
                                    Some(enum_hint(t, &names)),
                                );
                                None
                            }
                        },
                        _ => {
                            self.wrong_type(
                                n,
                                &s.child("mode"),
                                "a link mode (t1, c1, s1 or c1t1)",
                            );
                            None
                        }
                    },
                    None => Some(DEFAULT_LINK_MODE.to_string()),
                };
                let baud = self.u32_in(&s, "baud", 1200, 1_000_000);
                if s.has("baud") && baud.is_none() {
                    return None;
                }
                ReceiverKind::Stick {
                    stick: kind_name.to_string(),
                    device: device?,
                    mode: mode?,
                    baud,
                }
            }
            "rtlwmbus" => ReceiverKind::RtlWmbus {
                command: self.text(&s, "command"),
            },
            "hex_stdin" => ReceiverKind::HexStdin,
            "tcp_client" => {
                if !self.require(&s, "address", "HOST:PORT to connect to") {
                    return None;
                }
                let (n, _) = s.get("address")?;
                ReceiverKind::TcpClient {
                    address: self.host_port(n, &s.child("address"))?,
                }
            }
            "tcp_server" | "udp" => {
                if !self.require(&s, "bind", "a port, or HOST:PORT to listen on") {
                    return None;
                }
                let (n, _) = s.get("bind")?;
                let bind = self.bind_address(n, &s.child("bind"))?;
                if split_host_port(&bind).is_some_and(|(h, _)| !is_loopback(h)) {
                    self.warn(
                        n.pos,
                        &s.child("bind"),
                        format!(
                            "this input listens on {bind}, reachable from the network; anyone who can reach it can feed the gateway telegrams"
                        ),
                    );
                }
                if kind_name == "udp" {
                    ReceiverKind::Udp { bind }
                } else {
                    ReceiverKind::TcpServer { bind }
                }
            }
            "mqtt" => {
                if !self.require(&s, "topic", "the topic raw telegrams arrive on") {
                    return None;
                }
                ReceiverKind::Mqtt {
                    topic: self.text(&s, "topic")?,
                }
            }
            "simulated" => {
                let stick = match s.get("stick") {
                    Some((n, _)) => match &n.value {
                        Value::Str(t) => match StickKind::from_str(t) {
                            Ok(k) => Some(k.name().to_string()),
                            Err(_) => {
                                let names: Vec<&str> =
                                    StickKind::ALL.iter().map(|k| k.name()).collect();
                                self.error(
                                    n.pos,
                                    &s.child("stick"),
                                    format!("unknown stick `{t}`"),
                                    Some(enum_hint(t, &names)),
                                );
                                None
                            }
                        },
                        _ => {
                            self.wrong_type(n, &s.child("stick"), "a stick type");
                            None
                        }
                    },
                    None => Some(StickKind::Im871a.name().to_string()),
                };
                let telegrams = self.path_buf(&s, "telegrams");
                let interval = self
                    .duration(&s, "interval", Bare::ZeroOnly, false)
                    .unwrap_or(DEFAULT_SIM_INTERVAL);
                ReceiverKind::Simulated {
                    stick: stick?,
                    telegrams,
                    interval,
                }
            }
            _ => return None,
        };
        Some(ReceiverConfig {
            name: name?,
            kind,
            dedup,
            silent_after,
        })
    }

    fn meter(
        &mut self,
        node: &Node,
        path: &str,
        names: &mut Vec<NameUse>,
        bus_names: &[String],
        receiver_names: &[String],
        has_drivers_dir: bool,
    ) -> Option<MeterConfig> {
        let s = self.section(node, node.pos, path, "a meter", METER_KEYS)?;
        let name = self.name(&s, names);

        let bus = match s.get("bus") {
            Some((n, _)) => match &n.value {
                Value::Str(b) if bus_names.contains(b) => Some(Some(b.clone())),
                Value::Str(b) => {
                    let hint = if receiver_names.contains(b) {
                        Some(format!(
                            "`{b}` is a receiver; wireless meters have no `bus`"
                        ))
                    } else {
                        let names: Vec<&str> = bus_names.iter().map(String::as_str).collect();
                        match suggest(b, &names) {
                            Some(s) => Some(format!("did you mean `{s}`?")),
                            None if names.is_empty() => Some("no buses are configured".into()),
                            None => Some(format!("configured buses: {}", names.join(", "))),
                        }
                    };
                    self.error(
                        n.pos,
                        &s.child("bus"),
                        format!("there is no bus named `{b}`"),
                        hint,
                    );
                    None
                }
                _ => {
                    self.wrong_type(n, &s.child("bus"), "text naming a bus");
                    None
                }
            },
            None => Some(None),
        };
        let wired = s.has("bus");

        let address = if self.require(
            &s,
            "address",
            "primary or secondary address, or wireless id",
        ) {
            s.get("address")
                .and_then(|(n, _)| self.address(n, &s.child("address"), wired))
        } else {
            None
        };

        let driver = match s.get("driver") {
            Some((n, _)) => match &n.value {
                Value::Str(d) => {
                    self.check_driver(n.pos, &s.child("driver"), d, has_drivers_dir);
                    d.clone()
                }
                _ => {
                    self.wrong_type(n, &s.child("driver"), "a driver name or `auto`");
                    DEFAULT_DRIVER.to_string()
                }
            },
            None => DEFAULT_DRIVER.to_string(),
        };

        let key = match (s.get("key"), s.get("key_file")) {
            (Some(_), Some((_, p))) => {
                self.error(
                    p,
                    &s.child("key_file"),
                    "give either `key` or `key_file`, not both",
                    None,
                );
                None
            }
            (Some((n, _)), None) => self.key(n, &s.child("key")),
            (None, Some((n, _))) => {
                let file = self.path_buf(&s, "key_file");
                if let Some(f) = &file {
                    self.secret_files.push(SecretFile {
                        file: f.clone(),
                        pos: n.pos,
                        path: s.child("key_file"),
                    });
                    self.outside(n.pos, s.child("key_file"), OutsideKind::KeyFile(f.clone()));
                }
                file.map(KeySource::File)
            }
            (None, None) => None,
        };

        let fields = match s.get("fields") {
            Some((n, _)) => self.fields(n, &s.child("fields")),
            None => Vec::new(),
        };

        let polling = s
            .get("polling")
            .and_then(|(n, _)| self.polling(n, &s.child("polling")));
        let max_frames = self.u32_in(&s, "max_frames", 1, 255);
        if !wired {
            for key in ["polling", "max_frames"] {
                if let Some((_, p)) = s.get(key) {
                    self.error(
                        p,
                        &s.child(key),
                        format!("`{key}` applies to wired meters only (those with `bus`); wireless meters send on their own"),
                        None,
                    );
                }
            }
        }
        let max_records = self.u32_in(&s, "max_records", 1, 10_000);
        let expire_after = self.duration(&s, "expire_after", Bare::ZeroOnly, true);

        Some(MeterConfig {
            name: name?,
            address: address?,
            bus: bus?,
            driver,
            key,
            fields,
            polling,
            max_frames,
            max_records,
            expire_after,
        })
    }

    fn address(&mut self, node: &Node, path: &str, wired: bool) -> Option<MeterAddress> {
        if wired {
            match &node.value {
                Value::Int(a) if (0..=250).contains(a) => {
                    u8::try_from(*a).ok().map(MeterAddress::Primary)
                }
                Value::Int(a) => {
                    let hint = (a.to_string().len() == 8)
                        .then(|| format!("a secondary address is written in quotes: \"{a}\""));
                    self.error(
                        node.pos,
                        path,
                        format!("primary address {a} is out of range; expected 0 to 250"),
                        hint,
                    );
                    None
                }
                Value::Str(t) if t.len() == 8 && t.chars().all(|c| c.is_ascii_digit()) => {
                    Some(MeterAddress::Secondary(t.clone()))
                }
                Value::Str(t) if t.len() == 16 && t.chars().all(|c| c.is_ascii_hexdigit()) => {
                    Some(MeterAddress::Secondary(t.to_ascii_uppercase()))
                }
                _ => {
                    self.error(
                        node.pos,
                        path,
                        format!(
                            "expected a primary address (0 to 250) or a secondary address (8 digits, or 16 hex digits), found {}",
                            describe_scalar(node)
                        ),
                        None,
                    );
                    None
                }
            }
        } else {
            match &node.value {
                Value::Str(t) if t.len() == 8 && t.chars().all(|c| c.is_ascii_hexdigit()) => {
                    Some(MeterAddress::Wireless(t.to_ascii_lowercase()))
                }
                // `12345678` unquoted reads as a number; any 8-digit number is an unambiguous id.
                Value::Int(i) if (10_000_000..=99_999_999).contains(i) => {
                    Some(MeterAddress::Wireless(i.to_string()))
                }
                _ => {
                    let hint = match &node.value {
                        Value::Int(_) | Value::Float(_) => Some(
                            "YAML drops leading zeros of unquoted numbers; write the id in quotes, e.g. \"00123456\""
                                .to_string(),
                        ),
                        _ => Some("a wired meter needs `bus:` naming its bus".to_string()),
                    };
                    self.error(
                        node.pos,
                        path,
                        format!(
                            "a wireless meter's address is its id, 8 hex digits; found {}",
                            describe_scalar(node)
                        ),
                        hint,
                    );
                    None
                }
            }
        }
    }

    fn check_driver(&mut self, pos: Pos, path: &str, driver: &str, has_drivers_dir: bool) {
        if driver == DEFAULT_DRIVER {
            return;
        }
        let Some(known) = &self.options.known_drivers else {
            return;
        };
        if known.iter().any(|k| k == driver) {
            return;
        }
        if has_drivers_dir {
            self.warn(
                pos,
                path,
                format!("`{driver}` is not a built-in driver; it must come from drivers_dir"),
            );
            return;
        }
        let names: Vec<&str> = known.iter().map(String::as_str).collect();
        let hint = match suggest(driver, &names) {
            Some(s) => format!("did you mean `{s}`?"),
            None => "use `auto`, or see `meterbridge drivers list`".to_string(),
        };
        self.error(pos, path, format!("unknown driver `{driver}`"), Some(hint));
    }

    /// 32 hex digits (AES-128), or 16 (the DES key of a meter in security mode 2 or 3, or a
    /// Diehl PRIOS customer key). The key never appears in a message, not even in part.
    fn key(&mut self, node: &Node, path: &str) -> Option<KeySource> {
        const EXPECTED: &str = "32 hex digits (an AES-128 key) or 16 (a DES or PRIOS key)";
        let Value::Str(t) = &node.value else {
            self.error(
                node.pos,
                path,
                format!(
                    "expected the key as {EXPECTED} in quotes, found {}",
                    node.kind()
                ),
                None,
            );
            return None;
        };
        self.holds_inline_secret = true;
        let count = t.chars().count();
        if count != 32 && count != 16 {
            self.error(
                node.pos,
                path,
                format!("expected {EXPECTED}, found {count} characters"),
                None,
            );
            return None;
        }
        if !t.chars().all(|c| c.is_ascii_hexdigit()) {
            self.error(
                node.pos,
                path,
                format!("expected {EXPECTED}, found other characters"),
                None,
            );
            return None;
        }
        Some(KeySource::Inline(Secret::new(t.clone())))
    }

    fn fields(&mut self, node: &Node, path: &str) -> Vec<FieldAdjust> {
        let items = self.list(node, path, "field adjustments (field, scale, offset)");
        let mut out: Vec<FieldAdjust> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let Some(s) =
                self.section(item, item.pos, &item_path, "a field adjustment", FIELD_KEYS)
            else {
                continue;
            };
            let field = if self.require(&s, "field", "the field's JSON name, e.g. total_m3") {
                self.text(&s, "field")
            } else {
                None
            };
            let scale = self.number(&s, "scale").unwrap_or(1.0);
            if scale == 0.0 {
                let p = s.get("scale").map_or(s.pos, |(n, _)| n.pos);
                self.error(
                    p,
                    &s.child("scale"),
                    "a scale of 0 would make every value 0",
                    None,
                );
            }
            let offset = self.number(&s, "offset").unwrap_or(0.0);
            let Some(field) = field else { continue };
            if out.iter().any(|f| f.field == field) {
                let p = s.get("field").map_or(s.pos, |(n, _)| n.pos);
                self.error(
                    p,
                    &s.child("field"),
                    format!("field `{field}` is adjusted twice"),
                    None,
                );
                continue;
            }
            out.push(FieldAdjust {
                field,
                scale,
                offset,
            });
        }
        out
    }

    /// The `web` section: `true` or a mapping. A listener reachable from other machines needs
    /// a password, a token or a list of allowed hosts, so a page that can add meters is never
    /// open to a whole network.
    fn web(&mut self, node: &Node, pos: Pos) -> Option<WebConfig> {
        let mut web = WebConfig {
            bind: DEFAULT_WEB_BIND.to_string(),
            password: None,
            token: None,
            allow_from: Vec::new(),
            public_url: None,
        };
        match &node.value {
            Value::Bool(false) => return None,
            Value::Bool(true) | Value::Null => return Some(web),
            _ => {}
        }
        let s = self.section(node, pos, "web", "the web section", WEB_KEYS)?;
        let mut bind_pos = s.pos;
        if let Some((n, _)) = s.get("bind") {
            bind_pos = n.pos;
            let text = match &n.value {
                Value::Int(p) => format!("{DEFAULT_BRIDGE_BIND}:{p}"),
                Value::Str(t) if t.trim().chars().all(|c| c.is_ascii_digit()) => {
                    format!("{DEFAULT_BRIDGE_BIND}:{}", t.trim())
                }
                Value::Str(t) => t.trim().to_string(),
                _ => {
                    self.wrong_type(n, "web.bind", "IP:PORT or a port");
                    return None;
                }
            };
            if text.parse::<std::net::SocketAddr>().is_err() {
                self.error(
                    n.pos,
                    "web.bind",
                    format!("`{text}` is not an IP address and port"),
                    Some("e.g. `127.0.0.1:8099` or `0.0.0.0:8099` (port 0: any free one)".into()),
                );
                return None;
            }
            web.bind = text;
        }
        for key in ["password", "password_file"] {
            let Some((n, key_pos)) = s.get(key) else {
                continue;
            };
            if web.password.is_some() {
                self.error(
                    key_pos,
                    &s.child(key),
                    "`password` and `password_file` both give the password; keep one",
                    None,
                );
                continue;
            }
            match (&n.value, key) {
                (Value::Str(p), "password") if !p.is_empty() => {
                    self.holds_inline_secret = true;
                    web.password = Some(PasswordSource::Inline(Secret::new(p.clone())));
                }
                (Value::Str(p), _) if !p.is_empty() => {
                    web.password = Some(PasswordSource::File(PathBuf::from(p)));
                }
                _ => self.wrong_type(n, &s.child(key), "text that is not empty"),
            }
        }
        if let Some((n, _)) = s.get("token") {
            match &n.value {
                Value::Str(t) if t.len() >= 16 => {
                    self.holds_inline_secret = true;
                    web.token = Some(Secret::new(t.clone()));
                }
                Value::Str(_) => self.error(
                    n.pos,
                    "web.token",
                    "the token is shorter than 16 characters",
                    Some("anyone who reaches the port may guess a short one; use a long random token".into()),
                ),
                _ => self.wrong_type(n, "web.token", "text"),
            }
        }
        if let Some((n, _)) = s.get("allow_from") {
            for (i, item) in self
                .list(n, "web.allow_from", "addresses")
                .iter()
                .enumerate()
            {
                let path = format!("web.allow_from[{i}]");
                match &item.value {
                    Value::Str(t) => match t.trim().parse::<std::net::IpAddr>() {
                        Ok(ip) => web.allow_from.push(ip),
                        Err(_) => self.error(
                            item.pos,
                            &path,
                            format!("`{t}` is not an IP address"),
                            Some("Home Assistant's ingress proxy is 172.30.32.2".into()),
                        ),
                    },
                    _ => self.wrong_type(item, &path, "an IP address"),
                }
            }
        }
        if let Some((n, _)) = s.get("public_url") {
            match &n.value {
                Value::Str(u)
                    if ["http://", "https://", "homeassistant://"]
                        .iter()
                        .any(|p| u.starts_with(p) && u.len() > p.len())
                        && !u.chars().any(|c| c.is_whitespace() || c.is_control()) =>
                {
                    web.public_url = Some(u.clone());
                }
                Value::Str(u) => self.error(
                    n.pos,
                    "web.public_url",
                    format!("`{u}` is not an http://, https:// or homeassistant:// address"),
                    Some("e.g. `http://gateway.local:8099/`; Home Assistant shows it as the gateway device's link".into()),
                ),
                _ => self.wrong_type(n, "web.public_url", "an address"),
            }
        }
        let loopback = web
            .bind
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback());
        // `allow_from` limits a listener on the network to named hosts: the add-on's case, where
        // Home Assistant's ingress proxy has already logged the user in.
        if !loopback && web.password.is_none() && web.token.is_none() && web.allow_from.is_empty() {
            self.error(
                bind_pos,
                "web.bind",
                format!(
                    "the web page on {} would be open to the network without a password",
                    web.bind
                ),
                Some("set `web.password` (or `web.token`, or `web.allow_from`), or bind to 127.0.0.1".into()),
            );
            return None;
        }
        Some(web)
    }

    fn mqtt(&mut self, node: &Node, pos: Pos) -> Option<MqttConfig> {
        let s = self.section(node, pos, "mqtt", "the mqtt section", MQTT_KEYS)?;
        let url = if self.require(&s, "url", "mqtt://host[:1883] or mqtts://host[:8883]") {
            s.get("url")
                .and_then(|(n, _)| self.mqtt_url(n, &s.child("url")))
        } else {
            None
        };
        let username = self.text(&s, "username");
        let mut password = None;
        let mut password_key: Option<&str> = None;
        for key in ["password", "password_file", "password_env"] {
            let Some((n, key_pos)) = s.get(key) else {
                continue;
            };
            if let Some(first) = password_key {
                self.error(
                    key_pos,
                    &s.child(key),
                    format!("`{key}` and `{first}` both give the password; keep one"),
                    None,
                );
                continue;
            }
            password_key = Some(key);
            password = match key {
                "password" => match &n.value {
                    Value::Str(p) => {
                        self.holds_inline_secret = true;
                        Some(PasswordSource::Inline(Secret::new(p.clone())))
                    }
                    _ => {
                        self.error(
                            n.pos,
                            &s.child(key),
                            format!("expected text, found {}", n.kind()),
                            Some("put the password in quotes".into()),
                        );
                        None
                    }
                },
                "password_file" => {
                    let f = self.path_buf(&s, key);
                    if let Some(f) = &f {
                        self.secret_files.push(SecretFile {
                            file: f.clone(),
                            pos: n.pos,
                            path: s.child(key),
                        });
                        self.outside(n.pos, s.child(key), OutsideKind::PasswordFile(f.clone()));
                    }
                    f.map(PasswordSource::File)
                }
                _ => {
                    match self.text(&s, key) {
                        Some(v) if v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                            self.outside(n.pos, s.child(key), OutsideKind::PasswordEnv(v.clone()));
                            Some(PasswordSource::Env(v))
                        }
                        Some(v) => {
                            self.error(n.pos, &s.child(key), format!("`{v}` is not an environment variable name (letters, digits, _)"), None);
                            None
                        }
                        None => None,
                    }
                }
            };
            if username.is_none() && !s.has("username") {
                self.error(
                    key_pos,
                    &s.child(key),
                    "a password needs a `username`",
                    None,
                );
            }
        }
        let client_id = self
            .text(&s, "client_id")
            .unwrap_or_else(|| DEFAULT_CLIENT_ID.to_string());
        if client_id.len() > 23 {
            let p = s.get("client_id").map_or(s.pos, |(n, _)| n.pos);
            self.warn(
                p,
                &s.child("client_id"),
                "some brokers reject client ids longer than 23 characters",
            );
        }
        let base_topic = self
            .topic(&s, "base_topic")
            .unwrap_or_else(|| DEFAULT_BASE_TOPIC.to_string());
        // QoS 2 is not offered: the publisher's outage queue and the broker's de-duplication
        // of QoS 1 already give each reading at least once, and receivers are idempotent.
        let qos = self
            .integer(&s, "qos", 0, 1)
            .and_then(|q| u8::try_from(q).ok())
            .unwrap_or(DEFAULT_QOS);
        let retain = self.boolean(&s, "retain").unwrap_or(true);
        let ca_file = self.path_buf(&s, "ca_file");
        let client_cert = self.path_buf(&s, "client_cert");
        let client_key = self.path_buf(&s, "client_key");
        if let Some((n, _)) = s.get("client_key") {
            if let Some(f) = &client_key {
                self.secret_files.push(SecretFile {
                    file: f.clone(),
                    pos: n.pos,
                    path: s.child("client_key"),
                });
            }
        }
        match (s.get("client_cert"), s.get("client_key")) {
            (Some((_, p)), None) => self.error(
                p,
                &s.child("client_cert"),
                "`client_cert` needs `client_key` too",
                None,
            ),
            (None, Some((_, p))) => self.error(
                p,
                &s.child("client_key"),
                "`client_key` needs `client_cert` too",
                None,
            ),
            _ => {}
        }
        for (key, what) in [
            (
                "ca_file",
                OutsideKind::Certificates as fn(PathBuf) -> OutsideKind,
            ),
            ("client_cert", OutsideKind::Certificates),
            ("client_key", OutsideKind::PrivateKey),
        ] {
            if let (Some((n, _)), Some(f)) = (s.get(key), self.text_quiet(&s, key)) {
                self.outside(n.pos, s.child(key), what(PathBuf::from(f)));
            }
        }
        if let (Some((_, _, true)), None) = (&url, &ca_file) {
            let p = s.get("url").map_or(s.pos, |(n, _)| n.pos);
            self.error(
                p,
                &s.child("url"),
                "mqtts:// needs `ca_file`: the broker's certificate is checked against the CA certificates in that file only (this build does not read the system's trusted roots)",
                Some("for a broker with a public certificate, the system bundle works: `ca_file: /etc/ssl/certs/ca-certificates.crt`".into()),
            );
        }
        if let Some((_, _, false)) = url {
            for key in ["ca_file", "client_cert", "client_key"] {
                if let Some((_, p)) = s.get(key) {
                    self.error(
                        p,
                        &s.child(key),
                        format!("`{key}` is for TLS, but the url is mqtt:// (no TLS)"),
                        Some("use mqtts://".into()),
                    );
                }
            }
        }
        let discovery_prefix = self
            .topic(&s, "discovery_prefix")
            .unwrap_or_else(|| DEFAULT_DISCOVERY_PREFIX.to_string());
        let discovery = self.boolean(&s, "discovery").unwrap_or(true);
        let queue_limit = self
            .integer(&s, "queue_limit", 1, 10_000_000)
            .and_then(|q| usize::try_from(q).ok())
            .unwrap_or(DEFAULT_QUEUE_LIMIT);
        let keep_alive = self.mqtt_keep_alive(&s).unwrap_or(DEFAULT_MQTT_KEEP_ALIVE);
        let (host, port, tls) = url?;
        let url_text = match s.get("url") {
            Some((
                Node {
                    value: Value::Str(u),
                    ..
                },
                _,
            )) => u.clone(),
            _ => return None,
        };
        Some(MqttConfig {
            url: url_text,
            host,
            port,
            tls,
            username,
            password,
            client_id,
            base_topic,
            qos,
            retain,
            ca_file,
            client_cert,
            client_key,
            discovery_prefix,
            discovery,
            queue_limit,
            keep_alive,
        })
    }

    /// Whole seconds from 1s to 65535s. The MQTT library panics below one second, and the
    /// CONNECT packet tells the broker a 16-bit number of seconds: with a fraction our pings
    /// and the broker's own timeout would be computed from different values.
    fn mqtt_keep_alive(&mut self, s: &Section) -> Option<Duration> {
        let d = self.duration(s, "keep_alive", Bare::ZeroOnly, false)?;
        let pos = s.get("keep_alive").map_or(s.pos, |(n, _)| n.pos);
        let path = s.child("keep_alive");
        let text = format_duration(d);
        if d < Duration::from_secs(1) {
            self.error(
                pos,
                &path,
                format!("`{text}` is too short; the keep-alive must be at least 1s"),
                None,
            );
            return None;
        }
        if d > MAX_MQTT_KEEP_ALIVE {
            self.error(
                pos,
                &path,
                format!(
                    "`{text}` is too long; the keep-alive can be at most 65535s ({})",
                    format_duration(MAX_MQTT_KEEP_ALIVE)
                ),
                None,
            );
            return None;
        }
        if d.subsec_nanos() != 0 {
            self.error(
                pos,
                &path,
                format!("`{text}` is not a whole number of seconds"),
                Some("MQTT gives the keep-alive to the broker in whole seconds".into()),
            );
            return None;
        }
        Some(d)
    }

    /// Host, port and TLS from `mqtt[s]://host[:port]`. Messages never repeat the url: it may
    /// hold a password.
    fn mqtt_url(&mut self, node: &Node, path: &str) -> Option<(String, u16, bool)> {
        let Value::Str(url) = &node.value else {
            self.wrong_type(node, path, "text mqtt://host[:port]");
            return None;
        };
        let expected = "expected mqtt://host[:1883] or mqtts://host[:8883]";
        let Some((scheme, rest)) = url.split_once("://") else {
            self.error(node.pos, path, format!("no scheme; {expected}"), None);
            return None;
        };
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "mqtt" => false,
            "mqtts" => true,
            other => {
                let hint = match other {
                    "tcp" => Some("use mqtt://".to_string()),
                    "ssl" | "tls" => Some("use mqtts://".to_string()),
                    _ => None,
                };
                self.error(
                    node.pos,
                    path,
                    format!("unsupported scheme `{other}`; {expected}"),
                    hint,
                );
                return None;
            }
        };
        if rest.contains('@') {
            self.error(
                node.pos,
                path,
                "the url holds credentials; give them as `username` and `password` (or password_file/password_env)",
                None,
            );
            return None;
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            self.error(
                node.pos,
                path,
                format!("the url has a path or query; {expected}"),
                None,
            );
            return None;
        }
        let default_port = if tls {
            DEFAULT_MQTTS_PORT
        } else {
            DEFAULT_MQTT_PORT
        };
        let parsed = if rest.contains("]:") || (!rest.starts_with('[') && rest.contains(':')) {
            split_host_port(rest).map(|(h, p)| (h.to_string(), p))
        } else {
            let host = rest
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(rest);
            Some((host.to_string(), default_port))
        };
        match parsed {
            Some((host, port)) if valid_host(&host) => Some((host, port, tls)),
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("bad host or port; {expected}"),
                    None,
                );
                None
            }
        }
    }

    /// A topic prefix: no wildcards, no empty levels, no `/` at either end.
    fn topic(&mut self, s: &Section, key: &str) -> Option<String> {
        let t = self.text(s, key)?;
        let pos = s.get(key).map_or(s.pos, |(n, _)| n.pos);
        let problem = if t.contains(['+', '#']) {
            Some("MQTT wildcards `+` and `#` cannot be part of it")
        } else if t.starts_with('/') || t.ends_with('/') {
            Some("it cannot start or end with `/`")
        } else if t.contains("//") {
            Some("it cannot have empty levels (`//`)")
        } else if t.contains('\0') {
            Some("it cannot hold a NUL character")
        } else {
            None
        };
        match problem {
            Some(p) => {
                self.error(
                    pos,
                    &s.child(key),
                    format!("`{t}` is not a usable topic prefix: {p}"),
                    None,
                );
                None
            }
            None => Some(t),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Checks one 5-field cron expression and returns it with single spaces.
fn check_cron(expr: &str) -> Result<String, String> {
    const FIELDS: [(&str, u32, u32); 5] = [
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day of month", 1, 31),
        ("month", 1, 12),
        ("weekday", 0, 7),
    ];
    let parts: Vec<&str> = expr.split_whitespace().collect();
    if parts.len() != FIELDS.len() {
        let extra = if parts.len() == 6 {
            " (a seconds field is not supported)"
        } else {
            ""
        };
        return Err(format!(
            "has {} fields; expected 5 (minute hour day-of-month month weekday){extra}",
            parts.len()
        ));
    }
    for (part, (what, min, max)) in parts.iter().zip(FIELDS) {
        for item in part.split(',') {
            check_cron_item(item, min, max).map_err(|m| format!("{what} `{part}`: {m}"))?;
        }
    }
    Ok(parts.join(" "))
}

/// `*`, `n`, `a-b`, each optionally followed by `/step`.
fn check_cron_item(item: &str, min: u32, max: u32) -> Result<(), String> {
    let number = |t: &str| -> Result<u32, String> {
        if t.is_empty() || !t.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("`{t}` is not a number (use *, */n, a-b, a,b)"));
        }
        let n: u32 = t.parse().map_err(|_| format!("`{t}` is too large"))?;
        if n < min || n > max {
            return Err(format!("{n} is out of range {min}-{max}"));
        }
        Ok(n)
    };
    let (base, step) = match item.split_once('/') {
        Some((b, s)) => (b, Some(s)),
        None => (item, None),
    };
    if let Some(step) = step {
        let ok = !step.is_empty() && step.chars().all(|c| c.is_ascii_digit());
        let n: u32 = if ok { step.parse().unwrap_or(0) } else { 0 };
        if n == 0 || n > max {
            return Err(format!("step `{step}` must be a number from 1 to {max}"));
        }
    }
    if base == "*" {
        return Ok(());
    }
    match base.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (number(a)?, number(b)?);
            if a > b {
                return Err(format!("range {a}-{b} runs backwards"));
            }
            Ok(())
        }
        None => number(base).map(|_| ()),
    }
}

/// Splits `host:port` / `[v6]:port`; the port must be 1-65535.
fn split_host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    let port: u16 = port.parse().ok()?;
    (port > 0 && !host.is_empty()).then_some((host, port))
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && (host.parse::<std::net::IpAddr>().is_ok()
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'))
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn written_names(list: Option<&Node>) -> Vec<String> {
    let Some(Node {
        value: Value::List(items),
        ..
    }) = list
    else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| match item.get("name") {
            Some(Node {
                value: Value::Str(name),
                ..
            }) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn describe_scalar(node: &Node) -> String {
    match &node.value {
        Value::Str(t) => format!("`{t}`"),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("the number {f}"),
        _ => node.kind().to_string(),
    }
}

fn describe_address(a: &MeterAddress) -> String {
    match a {
        MeterAddress::Primary(p) => p.to_string(),
        MeterAddress::Secondary(s) | MeterAddress::Wireless(s) => s.clone(),
    }
}

/// "did you mean …?" when one choice is close, and the full list.
fn enum_hint(word: &str, choices: &[&str]) -> String {
    let list = choices
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match suggest(word, choices) {
        Some(s) => format!("did you mean `{s}`? (expected one of {list})"),
        None => format!("expected one of {list}"),
    }
}

/// The candidate closest to `word`: within edit distance 2 (less than the word's length, so
/// short words do not match everything), or sharing a prefix of at least 3 letters.
pub(crate) fn suggest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let lower = word.to_ascii_lowercase();
    let by_distance = candidates
        .iter()
        .map(|c| (edit_distance(&lower, &c.to_ascii_lowercase()), *c))
        .filter(|(d, _)| *d <= 2 && *d < lower.chars().count())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c);
    by_distance.or_else(|| {
        candidates.iter().copied().find(|c| {
            let c = c.to_ascii_lowercase();
            (lower.len() >= 3 && c.starts_with(&lower)) || (c.len() >= 3 && lower.starts_with(&c))
        })
    })
}

/// Levenshtein distance with adjacent transpositions counted as one edit (`pollnig`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggest("pollnig", BUS_KEYS), Some("polling"));
        assert_eq!(suggest("Polling", BUS_KEYS), Some("polling"));
        assert_eq!(suggest("max_frame", BUS_KEYS), Some("max_frames"));
        assert_eq!(suggest("request", BUS_KEYS), Some("request_timeout"));
        assert_eq!(suggest("xyz", BUS_KEYS), None);
        assert_eq!(suggest("a", &["qos"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn cron_expressions() {
        assert_eq!(check_cron("*/15  * * * *"), Ok("*/15 * * * *".to_string()));
        assert!(check_cron("0 6,18 1-15 * 1-5").is_ok());
        assert!(check_cron("5/10 0-23/2 * 12 7").is_ok());
        assert!(check_cron("0 24 * * *")
            .unwrap_err()
            .contains("hour `24`: 24 is out of range 0-23"));
        assert!(check_cron("0 0 0 * *")
            .unwrap_err()
            .contains("day of month"));
        assert!(check_cron("0 0 * 13 *").unwrap_err().contains("month `13`"));
        assert!(check_cron("0 0 * * 8").unwrap_err().contains("weekday"));
        assert!(check_cron("*/0 * * * *").unwrap_err().contains("step"));
        assert!(check_cron("5-1 * * * *").unwrap_err().contains("backwards"));
        assert!(check_cron("0 0 * * MON")
            .unwrap_err()
            .contains("not a number"));
        assert!(check_cron("0 0 * *").unwrap_err().contains("has 4 fields"));
        assert!(check_cron("0 0 0 * * *").unwrap_err().contains("seconds"));
        assert!(check_cron("1,,2 * * * *").is_err());
        assert!(check_cron("99999999999 * * * *").is_err());
    }

    #[test]
    fn host_ports() {
        assert_eq!(split_host_port("gw.local:10001"), Some(("gw.local", 10001)));
        assert_eq!(split_host_port("[fd00::5]:10001"), Some(("fd00::5", 10001)));
        assert_eq!(split_host_port("fd00::5:10001"), None);
        assert_eq!(split_host_port("host:0"), None);
        assert_eq!(split_host_port("host:70000"), None);
        assert_eq!(split_host_port(":80"), None);
        assert!(is_loopback("127.0.0.1") && is_loopback("::1") && is_loopback("localhost"));
        assert!(!is_loopback("0.0.0.0") && !is_loopback("192.168.1.2"));
    }

    #[test]
    fn syntax_messages_lose_their_location_prefix() {
        assert_eq!(
            syntax_message("error: line 2 column 1: duplicate mapping key: a, set DuplicateKeyPolicy in Options if acceptable\n --> x"),
            "duplicate mapping key: a"
        );
    }
}
