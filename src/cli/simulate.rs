//! `meterbridge simulate bus`: a virtual wired M-Bus segment to point a master at.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::{Args, Subcommand};

use crate::receivers::StickKind;
use crate::sim::stick::{StickSimConfig, StickSimLog};
use crate::sim::{self, BusSim, ServeOptions};
use crate::wire::wired::BAUD_RATES;

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(subcommand)]
    pub command: SimulateCommand,
}

#[derive(Debug, Subcommand)]
pub enum SimulateCommand {
    /// Serve simulated wired meters over TCP and/or a pseudo-terminal until Ctrl-C.
    Bus(BusArgs),
    /// A wireless M-Bus USB stick on a pseudo-terminal: answers the start-up commands like the
    /// real one and sends telegrams once a mode is set.
    Stick(StickArgs),
}

#[derive(Debug, Args)]
pub struct StickArgs {
    /// im871a, iu891a, amb8465 or cul.
    #[arg(long)]
    pub kind: StickKind,
    /// Telegrams to send, one hex telegram per line (with or without data-link CRCs); the
    /// built-in drivers' test telegrams when absent.
    #[arg(long, value_name = "FILE")]
    pub telegrams: Option<PathBuf>,
    /// Telegrams per second.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Signal strength reported with each telegram.
    #[arg(long, default_value_t = -60, allow_hyphen_values = true)]
    pub rssi: i16,
    /// Start over after the last telegram.
    #[arg(long)]
    pub repeat: bool,
    /// Also create this symbolic link to the pseudo-terminal (a stable path, like
    /// /dev/serial/by-id/ gives a real stick).
    #[arg(long, value_name = "PATH")]
    pub link: Option<PathBuf>,
    /// AMB8465 only: the stick's UART_CMD_Out_Enable is off (transparent output).
    #[arg(long)]
    pub amber_transparent: bool,
    /// AMB8465 only: the stick's RSSI_Enable is off (no RSSI byte).
    #[arg(long)]
    pub amber_no_rssi: bool,
}

#[derive(Debug, Args)]
pub struct BusArgs {
    /// YAML file describing the meters.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "corpus",
        required_unless_present = "corpus"
    )]
    pub config: Option<PathBuf>,
    /// A folder of *.hex frames: one meter per file, at primary addresses 1, 2, ….
    #[arg(long, value_name = "DIR")]
    pub corpus: Option<PathBuf>,
    /// TCP address to listen on (the default when --pty is not given: 127.0.0.1:0).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Also (or only) serve on a pseudo-terminal; its device path is printed.
    #[arg(long)]
    pub pty: bool,
    /// The converter echoes every request before the answer.
    #[arg(long)]
    pub echo: bool,
    /// Line rate the master uses; meters without their own rate follow it.
    #[arg(long, value_name = "B")]
    pub baud: Option<u32>,
}

pub fn run(args: &SimulateArgs) -> i32 {
    match &args.command {
        SimulateCommand::Bus(bus) => run_bus(bus),
        SimulateCommand::Stick(stick) => run_stick(stick),
    }
}

fn build(args: &BusArgs) -> Result<BusSim, String> {
    if let Some(b) = args.baud {
        if !BAUD_RATES.contains(&b) {
            return Err(format!("--baud {b} is not an M-Bus rate ({BAUD_RATES:?})"));
        }
    }
    let sim = match (&args.config, &args.corpus) {
        (Some(path), _) => {
            let mut config = sim::load_config(path).map_err(|e| e.to_string())?;
            if let Some(b) = args.baud {
                config.baud = b;
            }
            config.build().map_err(|e| e.to_string())?
        }
        (None, Some(dir)) => {
            let sim = BusSim::from_corpus_dir(dir).map_err(|e| e.to_string())?;
            match args.baud {
                Some(b) => sim.with_baud(b),
                None => sim,
            }
        }
        (None, None) => return Err("give --config FILE or --corpus DIR".into()),
    };
    let echo = sim.echo || args.echo;
    Ok(sim.with_echo(echo))
}

fn run_bus(args: &BusArgs) -> i32 {
    let sim = match build(args) {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    // One thread serves every connection: the simulator waits on sockets and timers only.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(serve(args, sim)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn serve(args: &BusArgs, sim: BusSim) -> Result<(), String> {
    let opts = ServeOptions {
        baud: sim.baud,
        log: true,
    };
    eprintln!(
        "{} meter(s) at {} baud{}",
        sim.meters().len(),
        opts.baud,
        if sim.echo { ", echoing requests" } else { "" }
    );
    for m in sim.meters() {
        eprintln!(
            "  primary {:3}  secondary {}  {} baud, {} telegram(s)",
            m.primary,
            m.secondary,
            m.baud,
            m.telegram_count()
        );
    }
    let sim = Arc::new(Mutex::new(sim));
    let mut tasks = tokio::task::JoinSet::new();

    let listen = match (&args.listen, args.pty) {
        (Some(addr), _) => Some(addr.clone()),
        (None, false) => Some("127.0.0.1:0".to_owned()),
        (None, true) => None,
    };
    if let Some(addr) = listen {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        outln!("listening on tcp {local}");
        tasks.spawn(sim::serve_tcp(listener, Arc::clone(&sim), opts));
    }
    if args.pty {
        let pty = sim::open_pty().map_err(|e| format!("cannot open a pseudo-terminal: {e}"))?;
        outln!("serving on pty {}", pty.path());
        tasks.spawn(pty.serve(Arc::clone(&sim), opts));
    }

    tokio::select! {
        signal = tokio::signal::ctrl_c() => {
            signal.map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
            eprintln!("stopped");
            Ok(())
        }
        Some(ended) = tasks.join_next() => match ended {
            Ok(Ok(())) => Err("a server stopped".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("a server task failed: {e}")),
        }
    }
}

/// Reads a telegram file: hex per line, `#` comments and blank lines skipped, CRCs removed.
pub fn load_telegrams(path: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bytes = crate::wire::hex::decode(line)
            .map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
        let stripped = crate::wire::wireless::strip_dll_crcs(&bytes)
            .map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
        out.push(stripped.bytes);
    }
    if out.is_empty() {
        return Err(format!("{} holds no telegrams", path.display()));
    }
    Ok(out)
}

fn run_stick(args: &StickArgs) -> i32 {
    let telegrams = match &args.telegrams {
        Some(p) => match load_telegrams(p) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        },
        None => sim::stick::builtin_corpus(),
    };
    if !(args.rate > 0.0 && args.rate <= 10_000.0) {
        eprintln!("error: --rate must be between 0 and 10000 telegrams per second");
        return 2;
    }
    let cfg = StickSimConfig {
        telegrams,
        interval: std::time::Duration::from_secs_f64(1.0 / args.rate),
        rssi_dbm: args.rssi,
        repeat: args.repeat,
        log: true,
        ..StickSimConfig::default()
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(serve_stick(args, cfg)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn serve_stick(args: &StickArgs, cfg: StickSimConfig) -> Result<(), String> {
    let amber = sim::amber::AmberSimOptions {
        cmd_out: !args.amber_transparent,
        rssi_enabled: !args.amber_no_rssi,
        ..sim::amber::AmberSimOptions::default()
    };
    eprintln!(
        "{} telegram(s), {} per second, RSSI {} dBm{}",
        cfg.telegrams.len(),
        args.rate,
        cfg.rssi_dbm,
        if cfg.repeat { ", repeating" } else { "" }
    );
    let log = std::sync::Arc::new(std::sync::Mutex::new(StickSimLog::default()));
    let kind = args.kind;
    // The link points to a pseudo-terminal that goes away with us: removed however we stop
    // (Ctrl-C, SIGTERM, an error), so no dangling link is left for the next program to open.
    let _link = RemoveLink(args.link.clone());
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot wait for SIGTERM: {e}"))?;
    #[cfg(unix)]
    let terminate = term.recv();
    #[cfg(not(unix))]
    let terminate = std::future::pending::<Option<()>>();
    tokio::select! {
        r = sim::stick::serve_on_pty(kind, amber, cfg, log, args.link.as_deref(), |path| {
            outln!("simulated {kind} on {path}");
            if let Some(l) = &args.link {
                outln!("linked as {}", l.display());
            }
        }) => r,
        signal = tokio::signal::ctrl_c() => {
            signal.map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
            eprintln!("stopped");
            Ok(())
        }
        _ = terminate => {
            eprintln!("stopped");
            Ok(())
        }
    }
}

/// Removes the link to the simulated stick when dropped (only if it is still a link).
struct RemoveLink(Option<std::path::PathBuf>);

impl Drop for RemoveLink {
    fn drop(&mut self) {
        if let Some(link) = &self.0 {
            if std::fs::symlink_metadata(link).is_ok_and(|m| m.file_type().is_symlink()) {
                let _ = std::fs::remove_file(link);
            }
        }
    }
}
