//! Logging for the long-running subcommands (`run`, `demo`, `listen`, `simulate`, the bus
//! commands): `tracing` events, filtered by level and module, written to standard error as text
//! (for people and journald) or as one JSON object per line (for log shippers).
//!
//! Only those subcommands call [`init`]; `decode`, `drivers` and `--version` never do, so they
//! pay nothing for logging at start-up (no subscriber, every call site is disabled at once).

use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, with `timestamp`, `level`, `target`, `message` and the
    /// structured fields (`meter`, `bus`, `receiver`, …) at the top level.
    Json,
}

impl LogFormat {
    pub const NAMES: &'static [&'static str] = &["text", "json"];

    pub fn parse(name: &str) -> Option<LogFormat> {
        match name.to_ascii_lowercase().as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// Checks a filter: a level (`debug`) or comma-separated directives in the `RUST_LOG` style
/// (`meterbridge::daemon=debug,info`). The error names the part that is wrong.
pub fn parse_filter(spec: &str) -> Result<Targets, String> {
    // `Targets` accepts any word as a target name, so a misspelt bare level (`verbose`) would
    // silently become a filter for a module of that name; a bare word must be a level here.
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let level = match part.rsplit_once('=') {
            Some((_, level)) => level,
            // A module alone (`meterbridge::mqtt`) means all of its levels.
            None if part.contains("::") || part.starts_with("meterbridge") => continue,
            None => part,
        };
        if tracing::level_filters::LevelFilter::from_str(level).is_err() {
            return Err(format!(
                "`{part}`: `{level}` is not a level (error, warn, info, debug, trace or off)"
            ));
        }
    }
    Targets::from_str(spec).map_err(|e| format!("`{spec}`: {e}"))
}

/// Where the filter came from, for the message when `RUST_LOG` cannot be used.
const ENV: &str = "RUST_LOG";

/// Installs the process-wide subscriber. `RUST_LOG`, when set and valid, wins over `config`
/// (the configuration's `log_level`, already validated); an invalid `RUST_LOG` is reported and
/// ignored rather than silencing the program. Calling it twice keeps the first subscriber.
pub fn init(config: Option<&str>, format: LogFormat) {
    let mut complaint = None;
    let filter = match std::env::var(ENV) {
        Ok(spec) if !spec.trim().is_empty() => match parse_filter(&spec) {
            Ok(t) => Some(t),
            Err(e) => {
                complaint = Some(format!("{ENV} ignored: {e}"));
                None
            }
        },
        _ => None,
    };
    let filter = filter
        .or_else(|| config.and_then(|c| parse_filter(c).ok()))
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    // journald stamps every line itself and shows no colours; a pipe or file gets no escape
    // codes either.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = !journald && std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let result = match (format, journald) {
        (LogFormat::Json, _) => tracing_subscriber::registry()
            .with(fmt.json().flatten_event(true).with_filter(filter))
            .try_init(),
        (LogFormat::Text, true) => tracing_subscriber::registry()
            .with(fmt.without_time().with_ansi(false).with_filter(filter))
            .try_init(),
        (LogFormat::Text, false) => tracing_subscriber::registry()
            .with(fmt.with_ansi(ansi).with_filter(filter))
            .try_init(),
    };
    if result.is_ok() {
        if let Some(c) = complaint {
            tracing::warn!("{c}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn filters_take_levels_and_directives() {
        let t = parse_filter("debug").unwrap();
        assert!(t.would_enable("meterbridge::mqtt::client", &Level::DEBUG));
        assert!(!t.would_enable("meterbridge::mqtt::client", &Level::TRACE));

        let t = parse_filter("meterbridge::daemon=trace,warn").unwrap();
        assert!(t.would_enable("meterbridge::daemon::gateway", &Level::TRACE));
        assert!(!t.would_enable("meterbridge::mqtt::client", &Level::INFO));
        assert!(t.would_enable("meterbridge::mqtt::client", &Level::WARN));

        // A module alone: everything it says.
        let t = parse_filter("meterbridge::sim").unwrap();
        assert!(t.would_enable("meterbridge::sim::imst", &Level::TRACE));
        assert!(!t.would_enable("meterbridge::daemon", &Level::ERROR));
    }

    #[test]
    fn misspelt_levels_are_refused() {
        let e = parse_filter("verbose").unwrap_err();
        assert!(e.contains("`verbose` is not a level"), "{e}");
        let e = parse_filter("meterbridge::mqtt=loud").unwrap_err();
        assert!(e.contains("`loud` is not a level"), "{e}");
        assert_eq!(LogFormat::parse("JSON"), Some(LogFormat::Json));
        assert_eq!(LogFormat::parse("xml"), None);
    }
}
