//! `meterbridge listen`: print every telegram a receiver hears, with who sent it, how it is
//! protected, the driver auto-detection picks, and readings where a key and driver are known.
//! This is how users find their meters.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use tokio::sync::mpsc;

use crate::cli::decode::gather_keys;
use crate::drivers::run::DriverRun;
use crate::drivers::Registry;
use crate::output::json::push_str;
use crate::output::wmbusmeters::{media_name, push_value};
use crate::receivers::input::{self, InputEvent, InputSpec};
use crate::receivers::merge::identity;
use crate::receivers::{Dedup, Heard, LinkMode, StickKind};
use crate::security::KeyStore;
use crate::telegram::wireless::WirelessLink;
use crate::wire::wireless::strip_dll_crcs;

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// USB stick kind: im871a, iu891a, amb8465 or cul (with --device).
    #[arg(long, value_name = "KIND", requires = "device")]
    pub stick: Option<StickKind>,
    /// The stick's serial device; prefer /dev/serial/by-id/… (stays the same across replugs).
    #[arg(long, value_name = "PATH")]
    pub device: Option<String>,
    /// Radio mode to listen in.
    #[arg(long, value_name = "MODE", default_value = "t1")]
    pub mode: LinkMode,
    /// Serial speed, if the stick was set to something else than its default.
    #[arg(long, value_name = "BAUD")]
    pub baud: Option<u32>,
    /// Read rtl_wmbus output lines from standard input, or from COMMAND's output
    /// (e.g. "rtl_sdr -f 868.95M -s 1.6e6 - | rtl_wmbus").
    #[arg(long, value_name = "COMMAND", num_args = 0..=1, default_missing_value = "")]
    pub rtlwmbus: Option<String>,
    /// Read raw telegrams as hex, one per line, from standard input.
    #[arg(long)]
    pub hex_stdin: bool,
    /// Read hex lines from a TCP server (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT")]
    pub tcp: Option<String>,
    /// Accept hex lines from TCP clients on this address.
    #[arg(long, value_name = "ADDR")]
    pub tcp_listen: Option<String>,
    /// Receive one telegram per UDP datagram on this address (e.g. 127.0.0.1:9999).
    #[arg(long, value_name = "ADDR")]
    pub udp: Option<String>,
    /// Receive raw telegrams published on an MQTT topic: mqtt://[user@]host[:port]/topic. The
    /// password is read from METERBRIDGE_MQTT_PASSWORD (a password in the URL is visible to
    /// every user with `ps`).
    #[arg(long, value_name = "URL")]
    pub mqtt: Option<String>,
    /// AES key: `ID=HEX` for one meter (repeatable) or `HEX` for all. Visible to every user
    /// with `ps`: prefer --key-file, METERBRIDGE_KEYS or --config.
    #[arg(long = "key", value_name = "[ID=]HEX")]
    pub keys: Vec<String>,
    /// A file of keys, one `ID=HEX` (or `HEX`) per line (repeatable).
    #[arg(long = "key-file", value_name = "PATH")]
    pub key_files: Vec<std::path::PathBuf>,
    /// The daemon's configuration: its meters' keys, its drivers folder, and, unless an input
    /// is given here, its receivers (all of them at once).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Driver for readings: a name or `auto`.
    #[arg(long, default_value = "auto")]
    pub driver: String,
    /// Folder with extra driver files.
    #[arg(long, value_name = "DIR")]
    pub drivers_dir: Option<std::path::PathBuf>,
    /// `text` for people, `json` (one object per line) for programs.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
    /// Seconds within which the same telegram counts as a repeat and is not printed again
    /// (0 prints every copy). A repeater's copy (another C field or hop count) is the same
    /// telegram, as in the daemon.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub dedup_window: u64,
    /// Stop after this many telegrams.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
}

fn spec(args: &ListenArgs) -> Result<InputSpec, String> {
    let mut specs = Vec::new();
    if let Some(kind) = args.stick {
        specs.push(InputSpec::Stick {
            kind,
            device: args.device.clone().unwrap_or_default(),
            mode: args.mode,
            baud: args.baud,
        });
    }
    if let Some(c) = &args.rtlwmbus {
        specs.push(InputSpec::RtlWmbus {
            command: (!c.is_empty()).then(|| c.clone()),
        });
    }
    if args.hex_stdin {
        specs.push(InputSpec::HexStdin);
    }
    if let Some(a) = &args.tcp {
        specs.push(InputSpec::TcpClient { address: a.clone() });
    }
    if let Some(b) = &args.tcp_listen {
        specs.push(InputSpec::TcpServer { bind: b.clone() });
    }
    if let Some(b) = &args.udp {
        specs.push(InputSpec::Udp { bind: b.clone() });
    }
    if let Some(url) = &args.mqtt {
        let mut spec = input::mqtt_input_from_url(url)?;
        if let InputSpec::Mqtt {
            username, password, ..
        } = &mut spec
        {
            if password.is_some() {
                eprintln!(
                    "warning: the --mqtt URL holds a password, which `ps` shows to every user of \
                     this machine; give it in {MQTT_PASSWORD_ENV} instead"
                );
            } else if username.is_some() {
                *password = std::env::var(MQTT_PASSWORD_ENV).ok();
            }
        }
        specs.push(spec);
    }
    match specs.len() {
        1 => Ok(specs.remove(0)),
        0 => Err("say what to listen to: --stick KIND --device PATH, --rtlwmbus, --hex-stdin, --tcp, --tcp-listen, --udp, --mqtt, or --config with receivers".into()),
        _ => Err("give one input per `listen` (the daemon runs several at once)".into()),
    }
}

/// Where `listen --mqtt mqtt://user@host/topic` finds the password.
pub const MQTT_PASSWORD_ENV: &str = "METERBRIDGE_MQTT_PASSWORD";

/// Whether any input is given on the command line.
fn has_input(args: &ListenArgs) -> bool {
    args.stick.is_some()
        || args.rtlwmbus.is_some()
        || args.hex_stdin
        || args.tcp.is_some()
        || args.tcp_listen.is_some()
        || args.udp.is_some()
        || args.mqtt.is_some()
}

/// The inputs of a configuration's receivers; `mqtt` receivers over the configuration's own
/// broker (plain `mqtt://` only: `listen` reads them without TLS).
async fn config_inputs(
    config: &crate::config::Config,
    sims: &mut tokio::task::JoinSet<()>,
) -> Result<Vec<(Arc<str>, InputSpec)>, String> {
    let mut inputs = Vec::new();
    for r in &config.receivers {
        let name: Arc<str> = Arc::from(r.name.as_str());
        if let crate::config::ReceiverKind::Mqtt { topic } = &r.kind {
            let settings = crate::daemon::gateway::mqtt_settings(config)?
                .ok_or("an mqtt receiver needs the mqtt section")?;
            if settings.tls {
                return Err(format!(
                    "receiver {}: `listen` reads mqtt receivers over mqtt:// only, the broker is mqtts://",
                    r.name
                ));
            }
            inputs.push((
                name,
                InputSpec::Mqtt {
                    host: settings.host.clone(),
                    port: settings.port,
                    topic: topic.clone(),
                    username: settings.username.clone(),
                    password: settings.password.clone(),
                },
            ));
            continue;
        }
        if let Some(spec) = crate::daemon::gateway::receiver_spec(&r.kind, sims).await? {
            inputs.push((name, spec));
        }
    }
    if inputs.is_empty() {
        return Err("the configuration has no receivers; give an input here".into());
    }
    Ok(inputs)
}

pub fn run(args: &ListenArgs) -> i32 {
    let config = match &args.config {
        Some(path) => match crate::cli::daemon::load(path) {
            Some(c) => Some(c),
            None => return 2,
        },
        None => None,
    };
    let spec = if config.is_some() && !has_input(args) {
        None
    } else {
        match spec(args) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        }
    };
    let mut keys = match &config {
        Some(c) => match crate::daemon::gateway::key_store(c) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        },
        None => KeyStore::default(),
    };
    if let Err(message) = gather_keys(&mut keys, &args.keys, &args.key_files) {
        eprintln!("error: {message}");
        return 2;
    }
    let drivers_dir = args
        .drivers_dir
        .clone()
        .or_else(|| config.as_ref().and_then(|c| c.drivers_dir.clone()));
    let registry = match crate::cli::drivers::registry(drivers_dir.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return 1;
        }
    };
    runtime.block_on(async {
        let mut sims = tokio::task::JoinSet::new();
        let inputs = match (spec, &config) {
            (Some(spec), _) => vec![(Arc::from(spec.describe()), spec)],
            (None, Some(c)) => match config_inputs(c, &mut sims).await {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("error: {e}");
                    return 2;
                }
            },
            (None, None) => return 2,
        };
        let status = listen(args, inputs, registry, keys).await;
        sims.abort_all();
        status
    })
}

async fn listen(
    args: &ListenArgs,
    inputs: Vec<(Arc<str>, InputSpec)>,
    registry: &'static Registry,
    keys: KeyStore,
) -> i32 {
    let (tx, mut rx) = mpsc::channel(256);
    // A person is waiting: a wrong device or stick kind ends the run with an error instead of
    // being retried for ever as the daemon does.
    let policy = input::RetryPolicy {
        give_up_after: Some(LISTEN_ATTEMPTS),
    };
    let mut input_tasks = tokio::task::JoinSet::new();
    for (name, spec) in inputs {
        let what = spec.describe();
        if *name == *what {
            eprintln!("listening to {name} (Ctrl-C stops)");
        } else {
            eprintln!("listening to {name}: {what} (Ctrl-C stops)");
        }
        input_tasks.spawn(input::run_with(name, spec, tx.clone(), policy));
    }
    drop(tx);
    let mut printer = Printer {
        run: DriverRun::new(registry, keys),
        registry,
        driver: args.driver.clone(),
        json: args.format == "json",
        dedup: Dedup::new(Duration::from_secs(args.dedup_window)),
        printed: 0,
    };
    let deadline = args
        .duration
        .map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let stdin_input = matches!(
        (&args.rtlwmbus, args.hex_stdin),
        (Some(c), _) if c.is_empty()
    ) || args.hex_stdin;
    let mut status = 0;
    loop {
        let event = tokio::select! {
            e = rx.recv() => e,
            _ = tokio::signal::ctrl_c() => break,
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending::<()>().await,
                }
            } => break,
        };
        let Some(event) = event else {
            break;
        };
        match event {
            InputEvent::Telegram { heard, .. } => {
                if printer.telegram(&heard) && args.count.is_some_and(|n| printer.printed >= n) {
                    break;
                }
            }
            InputEvent::Up { input, info } => match info {
                Some(i) => {
                    let details: Vec<String> =
                        i.details.iter().map(|(k, v)| format!("{k} {v}")).collect();
                    eprintln!(
                        "{input}: {} firmware {} id {} ready{}{}",
                        i.model,
                        i.firmware,
                        i.id,
                        if details.is_empty() { "" } else { "; " },
                        details.join(", ")
                    );
                }
                None => eprintln!("{input}: ready"),
            },
            InputEvent::Down { input, reason } => eprintln!("{input}: {reason}"),
            InputEvent::Failed { input, reason } => {
                eprintln!("error: {input}: {reason}");
                status = 1;
                break;
            }
            InputEvent::Malformed { input, reason } => eprintln!("{input}: skipped: {reason}"),
            InputEvent::Stats { input, stats } => eprintln!(
                "{input}: {} malformed frames skipped so far",
                stats.malformed
            ),
        }
    }
    input_tasks.abort_all();
    let _ = stdin_input;
    status
}

/// Attempts `listen` makes to open and start a stick before it gives up: with the input's
/// backoff, about 4 s, enough for a stick that is being plugged in.
const LISTEN_ATTEMPTS: u32 = 5;

struct Printer {
    run: DriverRun<'static>,
    registry: &'static Registry,
    driver: String,
    json: bool,
    dedup: Dedup,
    printed: u64,
}

/// Local time is not known without a time-zone database; UTC keeps lines comparable across
/// machines.
pub fn utc_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// How the telegram is protected, in the words users search for.
pub fn encryption_name(link: &WirelessLink) -> &'static str {
    if link.ell_protection.is_some() {
        return "ELL AES-CTR";
    }
    use crate::telegram::wireless::Protection;
    match (link.security_mode, link.protection) {
        (0, Protection::Descrambled) => "PRIOS",
        (0, _) => "none",
        (2 | 3, _) => "DES-CBC",
        (5, _) => "mode 5 (AES-CBC)",
        (7, _) => "mode 7 (AES-CBC, MAC)",
        (16..=31, Protection::ManufacturerDescrambled) => "manufacturer scrambling",
        (16..=31, Protection::ManufacturerPlain) => "none (manufacturer mode)",
        _ => "other",
    }
}

impl Printer {
    /// Prints one telegram; false if it was a repeat.
    fn telegram(&mut self, heard: &Heard) -> bool {
        let stripped = match strip_dll_crcs(&heard.frame) {
            Ok(s) => s.bytes,
            Err(e) => {
                eprintln!("skipped a telegram with bad data-link CRCs: {e}");
                return false;
            }
        };
        // The daemon's notion of "the same telegram": a repeater's copy (other C field, hop
        // counts) is a repeat too, while another access number or payload is not.
        if self.dedup.is_repeat(&identity(&stripped), heard.received) {
            return false;
        }
        self.printed += 1;
        let time = utc_timestamp(heard.received_at);
        let decoded = self.run.decoder().decode(&stripped);
        let (link, error) = match &decoded {
            Ok(f) => (Some(f.link.clone()), None),
            Err(e) => (e.link.as_deref().cloned(), Some(e.to_string())),
        };
        let guess = link.as_ref().and_then(|l| {
            self.registry
                .detect(
                    &l.manufacturer_letters(),
                    l.dll.version,
                    l.dll.device_type.code(),
                )
                .map(|d| d.name().to_string())
        });
        let mut readings = None;
        let mut error = error;
        if let Ok(frame) = &decoded {
            match frame.telegram() {
                Ok(t) => match self.run.apply(&t, &self.driver) {
                    Ok(out) => readings = Some(out),
                    Err(e) => error = Some(e),
                },
                Err(e) => error = Some(e.to_string()),
            }
        }
        let mut out = String::new();
        if self.json {
            out.push_str("{\"time\":");
            push_str(&mut out, &time);
            if let Some(r) = heard.rssi_dbm {
                out.push_str(&format!(",\"rssi_dbm\":{r}"));
            }
            if let Some(m) = heard.mode {
                out.push_str(",\"mode\":");
                push_str(&mut out, m.name());
            }
            if let Some(l) = &link {
                out.push_str(",\"manufacturer\":");
                push_str(&mut out, &l.manufacturer_letters());
                out.push_str(",\"id\":");
                push_str(&mut out, &l.meter_id());
                out.push_str(",\"media\":");
                push_str(&mut out, media_name(l.dll.device_type.code()));
                out.push_str(&format!(
                    ",\"device_type\":{},\"version\":{},\"encryption\":",
                    l.dll.device_type.code(),
                    l.dll.version
                ));
                push_str(&mut out, encryption_name(l));
            }
            out.push_str(",\"driver\":");
            match &guess {
                Some(g) => push_str(&mut out, g),
                None => out.push_str("null"),
            }
            if let Some(r) = &readings {
                out.push_str(",\"fields\":{");
                for (i, reading) in r.readings.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_str(&mut out, &reading.key);
                    out.push(':');
                    push_value(&mut out, &reading.value);
                }
                out.push('}');
            }
            if let Some(e) = &error {
                out.push_str(",\"error\":");
                push_str(&mut out, e);
            }
            out.push_str(",\"telegram\":");
            push_str(&mut out, &crate::wire::hex::encode_upper(&stripped));
            out.push('}');
        } else {
            out.push_str(&time);
            match heard.rssi_dbm {
                Some(r) => out.push_str(&format!(" {r:>4} dBm")),
                None => out.push_str("         "),
            }
            match &link {
                Some(l) => out.push_str(&format!(
                    "  {} {} {} v{:02x}  {}",
                    l.manufacturer_letters(),
                    l.meter_id(),
                    media_name(l.dll.device_type.code()),
                    l.dll.version,
                    encryption_name(l)
                )),
                None => out.push_str("  (no valid header)"),
            }
            out.push_str(&format!(
                "  driver {}",
                guess.as_deref().unwrap_or("unknown")
            ));
            if let Some(r) = &readings {
                for reading in &r.readings {
                    out.push_str(&format!("  {}=", reading.key));
                    push_value(&mut out, &reading.value);
                }
                if let Some(h) = &r.hint {
                    out.push_str(&format!("\n    hint: {h}"));
                }
            }
            if let Some(e) = &error {
                out.push_str(&format!("\n    {e}"));
            }
        }
        outln!("{out}");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_timestamps() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_258_861);
        assert_eq!(utc_timestamp(t), "2026-11-21T11:01:01Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(utc_timestamp(leap), "2000-02-29T00:00:00Z");
    }
}
