//! `meterbridge run`, `check-config` and `demo`: the gateway daemon from the command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::config::{self, Config, ValidateOptions};
use crate::daemon::gateway::{self, PrintFormat, RunOptions};
use crate::mqtt::client::MqttSettings;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file (see config.example.yaml).
    #[arg(long, short, value_name = "FILE", default_value = "meterbridge.yaml")]
    pub config: PathBuf,
    /// Also print readings on standard output: `json` (one state document per line) or
    /// `text`. Without an `mqtt` section readings always go to standard output as JSON.
    #[arg(long, value_name = "FORMAT", value_parser = ["json", "text", "none"])]
    pub print: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The configuration file to check.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The gateway's configuration; its `state_dir` is checked.
    #[arg(long, short, value_name = "FILE", conflicts_with = "state_dir")]
    pub config: Option<PathBuf>,
    /// The gateway's state directory, instead of --config.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Most seconds since the gateway last showed it was alive (it does every 30 s).
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub max_age: u64,
}

/// For container health checks: exit 0 if the gateway in `state_dir` is alive.
pub fn health(args: &HealthArgs) -> i32 {
    let dir = match (&args.state_dir, &args.config) {
        (Some(d), _) => d.clone(),
        (None, Some(file)) => match config::load_with(file, &ValidateOptions::default()) {
            Ok((c, _)) => c.state_dir,
            Err(e) => {
                outln!("{e}");
                return 1;
            }
        },
        (None, None) => {
            eprintln!("error: give --config FILE or --state-dir DIR");
            return 2;
        }
    };
    match gateway::heartbeat_age(&dir) {
        Some(age) if age <= Duration::from_secs(args.max_age) => {
            outln!("alive ({} s ago)", age.as_secs());
            0
        }
        Some(age) => {
            outln!(
                "stuck or stopped: last sign of life {} s ago (more than {} s)",
                age.as_secs(),
                args.max_age
            );
            1
        }
        None => {
            outln!("no gateway has run with state directory {}", dir.display());
            1
        }
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Publish the readings to this broker as well (mqtt://host[:port]), with Home Assistant
    /// discovery.
    #[arg(long, value_name = "URL")]
    pub mqtt: Option<String>,
    /// Seconds to run; 0 runs until Ctrl-C.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// `text` for people, `json` for the state documents as they go to MQTT.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
    /// Where the web page listens (IP:PORT); a free port is taken when this one is busy.
    #[arg(long, value_name = "ADDRESS", default_value = "127.0.0.1:8099")]
    pub web: String,
    /// Keep the demo's state here (readings, and the meters added on its page) so the next
    /// `demo --state-dir DIR` starts with them; by default a temporary folder, removed at the
    /// end.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

fn print_format(name: &str) -> PrintFormat {
    match name {
        "text" => PrintFormat::Text,
        "none" => PrintFormat::None,
        _ => PrintFormat::Json,
    }
}

/// Loads and validates a configuration, printing every problem; `None` if it cannot be used.
pub fn load(path: &Path) -> Option<Config> {
    let (config, warnings) = load_keeping_warnings(path)?;
    for w in &warnings {
        eprintln!("{w}");
    }
    Some(config)
}

/// [`load`], but the warnings are returned instead of printed (`run` logs them, in the log
/// format the configuration asks for); errors are printed, since nothing starts.
fn load_keeping_warnings(path: &Path) -> Option<(Config, Vec<String>)> {
    let options = ValidateOptions::with_built_in_drivers();
    match config::load_with(path, &options) {
        Ok((mut config, warnings)) => {
            let warnings = warnings.iter().map(ToString::to_string).collect();
            // Meters added on the web page live in the state directory, not in this file.
            if let Err(e) = crate::web::added::merge(&mut config, &options) {
                eprintln!("{e}");
                eprintln!(
                    "the meters added on the web page could not be read; nothing was started"
                );
                return None;
            }
            Some((config, warnings))
        }
        Err(errors) => {
            eprintln!("{errors}");
            let n = errors.errors.len();
            eprintln!(
                "{n} error{} in {}; nothing was started",
                if n == 1 { "" } else { "s" },
                path.display()
            );
            None
        }
    }
}

pub fn check_config(args: &CheckConfigArgs) -> i32 {
    match load(&args.file) {
        Some(c) => {
            outln!(
                "{}: valid ({} bus{}, {} receiver{}, {} meter{}, {})",
                args.file.display(),
                c.buses.len(),
                if c.buses.len() == 1 { "" } else { "es" },
                c.receivers.len(),
                if c.receivers.len() == 1 { "" } else { "s" },
                c.meters.len(),
                if c.meters.len() == 1 { "" } else { "s" },
                if c.mqtt.is_some() {
                    "publishing to MQTT"
                } else {
                    "printing readings on standard output"
                }
            );
            0
        }
        None => 1,
    }
}

/// What `run` says when it stops: what came in, and what became of every reading. With MQTT,
/// readings made + kept from before a restart = delivered + dropped (queue full) + not
/// delivered, where "readings" also counts the gateway's own state documents, which travel the
/// same queue. Readings not delivered stay in the outage queue on disk for the next start.
pub fn shutdown_summary(stats: &gateway::GatewayStats) -> String {
    let mut out = format!(
        "stopped: {} telegrams, {} duplicates, {} decode errors, {} key errors, {} bus errors, {} unknown meters\n",
        stats.telegrams,
        stats.duplicates,
        stats.decode_errors,
        stats.key_errors,
        stats.bus_errors,
        stats.unknown_meters
    );
    match &stats.mqtt {
        None => out.push_str(&format!(
            "readings: {} made and printed",
            stats.readings_emitted
        )),
        Some(m) => {
            let made = stats.readings_emitted + stats.gateway_states;
            out.push_str(&format!(
                "readings: {made} made ({} of meters, {} of the gateway)",
                stats.readings_emitted, stats.gateway_states
            ));
            if m.restored > 0 {
                out.push_str(&format!(
                    " and {} kept on disk from before the restart",
                    m.restored
                ));
            }
            out.push_str(&format!(
                "; {} delivered to the broker",
                m.readings_published
            ));
            if m.dropped > 0 {
                out.push_str(&format!(
                    ", {} dropped while the outage queue was full (the oldest first; raise mqtt.queue_limit to keep more)",
                    m.dropped
                ));
            }
            if m.queued > 0 {
                out.push_str(&format!(
                    ", {} NOT delivered: the broker could not be reached or refused the connection before shutdown (kept in the state directory, sent at the next start)",
                    m.queued
                ));
            }
        }
    }
    out
}

/// One thread runs every task: the gateway's work is waiting on sockets and serial lines
/// (0.3 ms of CPU per telegram, docs/benchmarks.md), and each worker thread of a multi-thread
/// runtime costs its stack and a malloc arena of its own for as long as the daemon runs.
/// Blocking file work (state snapshots, closing the outage queue) goes to `spawn_blocking`.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

pub fn run(args: &RunArgs, log_format: Option<crate::logging::LogFormat>) -> i32 {
    if !args.config.exists() {
        eprintln!(
            "error: there is no configuration file {}; give one with --config FILE.\n\
             Start from config.example.yaml (every option, commented; docs/configuration.md \
             explains them), check it with `meterbridge check-config FILE`, or try everything \
             on simulated hardware with `meterbridge demo`.",
            args.config.display()
        );
        return 1;
    }
    let Some((config, warnings)) = load_keeping_warnings(&args.config) else {
        return 1;
    };
    crate::logging::init(
        Some(&config.log_filter),
        log_format.unwrap_or(config.log_format),
    );
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let print = match (&args.print, config.mqtt.is_some()) {
        (Some(p), _) => print_format(p),
        (None, true) => PrintFormat::None,
        (None, false) => PrintFormat::Json,
    };
    // From here on the log is the one place messages go, so that a log shipper reading
    // `--log-format json` gets every line as JSON, the shutdown summary included.
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("{e}");
            return 1;
        }
    };
    let options = RunOptions {
        print,
        ..RunOptions::default()
    };
    match rt.block_on(gateway::run(config, options)) {
        Ok(stats) => {
            for line in shutdown_summary(&stats).lines() {
                // Readings that did not reach the broker are worth a warning at any level.
                if line.contains("NOT delivered") {
                    tracing::warn!("{line}");
                } else {
                    tracing::info!("{line}");
                }
            }
            0
        }
        Err(e) => {
            tracing::error!("{e}");
            1
        }
    }
}

fn demo_config(bus_address: &str, stick: &str, state_dir: &Path) -> String {
    format!(
        r#"# The demo: the whole daemon on simulated hardware.
state_dir: "{state}"
buses:
  - name: demo-bus
    tcp: "{bus_address}"
    polling: 10s
    emit: every
receivers:
  - name: demo-stick
    type: im871a
    device: "{stick}"
meters:
  - name: Heat flat 1
    bus: demo-bus
    address: 1
    driver: kamheat
  - name: Heat flat 2
    bus: demo-bus
    address: 2
    driver: ultraheat
  - name: Heat flat 3
    bus: demo-bus
    address: 3
    driver: elf2
  - name: Cold water
    address: "76348799"
    driver: auto
  - name: Garden water
    address: "12345699"
    driver: iperl
  - name: Hot water
    address: "61070071"
    driver: aventieswm
    key: {hot_key}
"#,
        hot_key = crate::sim::demo::HOT_WATER_KEY,
        state = state_dir.display(),
    )
}

/// The demo's MQTT base topic: apart from a real gateway's `meterbridge/`.
pub const DEMO_BASE_TOPIC: &str = "meterbridge-demo";

pub fn demo(args: &DemoArgs) -> i32 {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    match rt.block_on(run_demo(args)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn run_demo(args: &DemoArgs) -> Result<(), String> {
    use crate::sim::{BusSim, ServeOptions, SimMeter};
    // The demo may share a broker with a real gateway: its own client id (one per process, so
    // two demos do not take turns either) and base topic, so it never takes over the real
    // gateway's session or status topic.
    let mqtt = match &args.mqtt {
        Some(url) => {
            let mut s = MqttSettings::from_url(url).map_err(|e| e.to_string())?;
            s.client_id = format!("meterbridge-demo-{}", std::process::id());
            s.base_topic = DEMO_BASE_TOPIC.to_string();
            Some(s)
        }
        None => None,
    };
    let dir = std::env::temp_dir().join(format!("meterbridge-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let state_dir = match &args.state_dir {
        Some(d) => d.clone(),
        None => dir.join("state"),
    };

    // The meters count up from the moment the demo starts (see sim::demo).
    let world = crate::sim::demo::DemoWorld::new().map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();

    // The simulated wired bus behind an M-Bus/TCP "gateway" on a free local port.
    let mut meters = Vec::new();
    for m in &world.wired {
        meters.push(
            SimMeter::new(m.primary, m.secondary)
                .with_live_telegram(Arc::clone(&m.meter).live_on_bus(started)),
        );
    }
    let sim = Arc::new(std::sync::Mutex::new(BusSim::new(meters)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let bus_address = listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .to_string();
    let bus_task = tokio::spawn(crate::sim::serve_tcp(
        listener,
        sim,
        ServeOptions {
            baud: crate::sim::bus::DEFAULT_BAUD,
            log: false,
        },
    ));

    // The simulated iM871A on a pseudo-terminal, one telegram a second, each made when sent.
    let stick_cfg = crate::sim::stick::StickSimConfig {
        telegrams: world.stick_telegrams().map_err(|e| e.to_string())?,
        interval: Duration::from_secs(1),
        rssi_dbm: -67,
        repeat: true,
        live: Some(crate::sim::demo::live_on_stick(
            world.wireless.clone(),
            started,
        )),
        ..crate::sim::stick::StickSimConfig::default()
    };
    let (path_tx, path_rx) = tokio::sync::oneshot::channel();
    let stick_task = tokio::spawn(async move {
        let result = crate::sim::stick::serve_on_pty(
            crate::receivers::StickKind::Im871a,
            crate::sim::amber::AmberSimOptions::default(),
            stick_cfg,
            Arc::new(std::sync::Mutex::new(
                crate::sim::stick::StickSimLog::default(),
            )),
            None,
            |p| {
                let _ = path_tx.send(p.to_string());
            },
        )
        .await;
        if let Err(e) = result {
            eprintln!("simulated iM871A: {e}");
        }
    });
    let stick = path_rx
        .await
        .map_err(|_| "the simulated stick did not start".to_string())?;

    let mut text = demo_config(&bus_address, &stick, &state_dir);
    // The page on the asked-for port, or any free one if that is taken (a second demo).
    let web = match std::net::TcpListener::bind(&args.web) {
        Ok(_) => args.web.clone(),
        Err(_) => "127.0.0.1:0".to_string(),
    };
    text.push_str(&format!("web:\n  bind: \"{web}\"\n"));
    let options = ValidateOptions::with_built_in_drivers();
    let (mut config, _) = config::parse_with(&text, "demo.yaml", &options)
        .map_err(|e| format!("the demo configuration is invalid (a bug):\n{e}"))?;
    // Meters added on the page in an earlier run with the same --state-dir.
    let added = crate::web::added::merge(&mut config, &options)?;
    eprintln!(
        "meterbridge demo: a simulated wired bus at {bus_address} with 3 heat meters, and a \
         simulated iM871A stick with 3 water meters (one encrypted, its key configured) and a \
         neighbour's encrypted water meter that is not configured; their readings count up."
    );
    if added > 0 {
        eprintln!(
            "{added} meter(s) added on the page before, from {}",
            state_dir.join(crate::web::added::FILE).display()
        );
    }
    match &args.mqtt {
        Some(url) => eprintln!(
            "publishing to {url} under {DEMO_BASE_TOPIC}/ with Home Assistant discovery; the \
             demo's devices are removed again when it ends"
        ),
        None => eprintln!(
            "readings are printed below; add --mqtt mqtt://localhost:1883 to publish them"
        ),
    }
    if args.duration > 0.0 {
        eprintln!(
            "running for {} s (--duration 0 runs until Ctrl-C)\n",
            args.duration
        );
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if args.duration > 0.0 {
        let wait = Duration::from_secs_f64(args.duration);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = stop_tx.send(true);
        });
    } else {
        std::mem::forget(stop_tx);
    }
    // Told right after the page's address: what to try on it.
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel::<std::net::SocketAddr>();
    tokio::spawn(async move {
        if bound_rx.await.is_ok() {
            eprintln!(
                "try the page's Add flow: under \"Heard nearby\", the neighbour's water meter \
                 {:08} (encrypted, driver {}) opens with the key {}",
                crate::sim::demo::NEIGHBOUR_ID,
                crate::sim::demo::NEIGHBOUR_DRIVER,
                crate::sim::demo::NEIGHBOUR_KEY
            );
        }
    });
    let options = RunOptions {
        print: print_format(&args.format),
        mqtt,
        stop: Some(stop_rx),
        instance: "demo".into(),
        withdraw_at_exit: true,
        web_bound: Some(bound_tx),
        ..RunOptions::default()
    };
    let stats = gateway::run(config, options).await?;
    bus_task.abort();
    stick_task.abort();
    eprintln!(
        "\n{} telegrams decoded, {} readings published, {} decode errors, {} key errors, {} bus errors",
        stats.telegrams, stats.readings_emitted, stats.decode_errors, stats.key_errors, stats.bus_errors
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
