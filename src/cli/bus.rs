//! The wired bus tools libmbus users know: `scan primary|secondary`, `read`, `set-address`,
//! `set-baud`, `reset`, each on a serial converter (`--device`) or an M-Bus/TCP gateway
//! (`--tcp`).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};

use super::decode::{Decoder, Format};
use crate::master::{
    Master, MasterError, MasterOptions, Notice, ReadOptions, ScanEvent, ScanProgress,
    SecondaryMask, Target,
};
use crate::transport::open::{default_latency, open_port, open_serial, Endpoint};
use crate::transport::{Port, PortConfig};
use crate::wire::hex;

#[derive(Debug, Args, Clone)]
pub struct Connection {
    /// Serial level converter, e.g. /dev/serial/by-id/usb-…
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with = "tcp",
        required_unless_present = "tcp"
    )]
    pub device: Option<String>,
    /// M-Bus/TCP gateway as HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub tcp: Option<String>,
    /// Line speed (most meters use 2400).
    #[arg(long, default_value_t = 2400)]
    pub baud: u32,
    /// Extra wait for slow converters or gateways, in milliseconds, on top of the standard's
    /// response window (default 50 for serial converters, 100 for TCP gateways).
    #[arg(long, value_name = "MS")]
    pub latency: Option<u64>,
    /// The converter echoes what we send.
    #[arg(long)]
    pub echo: bool,
    /// Repeats of a request that got no valid answer.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Least quiet time on the line before each request, in milliseconds (meters that need
    /// longer than the standard's 11 bit times to get ready again).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub idle_gap: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScanKind {
    Primary,
    Secondary,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    pub kind: ScanKind,
    /// Secondary scan: start mask, 16 hex digits with F wildcards.
    #[arg(long, default_value = "FFFFFFFFFFFFFFFF")]
    pub mask: String,
    /// Primary scan: first and last address.
    #[arg(long, value_name = "FIRST-LAST", default_value = "0-250")]
    pub range: String,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Primary address (0-250) or 16-hex-digit secondary address.
    pub address: String,
    /// Most telegrams to fetch while the meter says more follow.
    #[arg(long, default_value_t = 16)]
    pub max_frames: usize,
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct SetAddressArgs {
    pub address: String,
    pub new_address: u8,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct SetBaudArgs {
    pub address: String,
    pub new_baud: u32,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    pub address: String,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Subcommand)]
pub enum BusCommand {
    Scan(ScanArgs),
    Read(ReadArgs),
    SetAddress(SetAddressArgs),
    SetBaud(SetBaudArgs),
    Reset(ResetArgs),
}

/// Exit status of a failed bus operation (no meter, port trouble).
const EXIT_FAILED: i32 = 1;
const EXIT_USAGE: i32 = 2;

pub fn parse_target(text: &str) -> Result<Target, String> {
    let t = text.trim();
    if t.len() == 16 {
        return t
            .parse::<SecondaryMask>()
            .map(Target::Secondary)
            .map_err(|e| format!("{t:?}: {e}"));
    }
    match t.parse::<u8>() {
        Ok(a) if a <= 250 => Ok(Target::Primary(a)),
        _ => Err(format!(
            "{t:?} is neither a primary address (0-250) nor a 16-hex-digit secondary address"
        )),
    }
}

fn endpoint(c: &Connection) -> Endpoint {
    match (&c.device, &c.tcp) {
        (_, Some(t)) => Endpoint::Tcp(t.clone()),
        (Some(d), None) => Endpoint::Serial(d.clone()),
        (None, None) => Endpoint::Serial(String::new()),
    }
}

async fn connect(c: &Connection, stop: Option<Arc<AtomicBool>>) -> Result<Master, String> {
    let endpoint = endpoint(c);
    let config = PortConfig {
        baud: c.baud,
        extra_latency: c
            .latency
            .map(Duration::from_millis)
            .unwrap_or_else(|| default_latency(&endpoint)),
        echo: c.echo,
    };
    let port = open_port(&endpoint, config)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Master::new(
        port,
        MasterOptions {
            retries: c.retries,
            idle_gap: Duration::from_millis(c.idle_gap),
            stop,
            notice: Some(Notice(Arc::new(|m: &str| eprintln!("note: {m}")))),
            ..MasterOptions::default()
        },
    ))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

pub fn run(command: &BusCommand) -> i32 {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let result = rt.block_on(async {
        match command {
            BusCommand::Scan(a) => scan(a).await,
            BusCommand::Read(a) => read(a).await,
            BusCommand::SetAddress(a) => set_address(a).await,
            BusCommand::SetBaud(a) => set_baud(a).await,
            BusCommand::Reset(a) => reset(a).await,
        }
    });
    match result {
        Ok(()) => 0,
        Err((code, message)) => {
            eprintln!("error: {message}");
            code
        }
    }
}

type CmdResult = Result<(), (i32, String)>;

fn failed(e: MasterError) -> (i32, String) {
    (EXIT_FAILED, e.to_string())
}

fn usage(e: String) -> (i32, String) {
    (EXIT_USAGE, e)
}

async fn scan(a: &ScanArgs) -> CmdResult {
    let stop = Arc::new(AtomicBool::new(false));
    let ctrl_c = {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::SeqCst);
            }
        })
    };
    let mut master = connect(&a.connection, Some(stop))
        .await
        .map_err(|e| (EXIT_FAILED, e))?;
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let mut progress = move |p: ScanProgress| {
        let what = match (&p.current_mask, p.address) {
            (Some(m), _) => m.to_string(),
            (None, Some(a)) => format!("address {a}"),
            (None, None) => String::new(),
        };
        let event = match &p.event {
            ScanEvent::Silent => "silent".to_string(),
            ScanEvent::Collision { bytes } => format!("collision ({} bytes)", bytes.len()),
            other => format!("{other:?}").to_lowercase(),
        };
        let mut err = std::io::stderr();
        if terminal {
            let _ = write!(
                err,
                "\r\x1b[Kprobe {} {what}: {event} — {} found, {:.1} s",
                p.probes,
                p.found,
                started.elapsed().as_secs_f64()
            );
        } else {
            let _ = writeln!(err, "probe {} {what}: {event}; found {}", p.probes, p.found);
        }
    };
    let result = match a.kind {
        ScanKind::Primary => {
            let (first, last) = a
                .range
                .split_once('-')
                .and_then(|(f, l)| {
                    Some((f.trim().parse::<u8>().ok()?, l.trim().parse::<u8>().ok()?))
                })
                .filter(|(f, l)| f <= l && *l <= 250)
                .ok_or_else(|| {
                    usage(format!(
                        "--range {:?}: give FIRST-LAST within 0-250",
                        a.range
                    ))
                })?;
            master.scan_primary(first..=last, &mut progress).await
        }
        ScanKind::Secondary => {
            let mask = a
                .mask
                .parse::<SecondaryMask>()
                .map_err(|e| usage(format!("--mask {:?}: {e}", a.mask)))?;
            master.scan_secondary(mask, &mut progress).await
        }
    };
    ctrl_c.abort();
    if terminal {
        eprintln!();
    }
    let found = match result {
        Ok(f) => f,
        Err(MasterError::Cancelled { found, probes }) => {
            eprintln!("stopped after {probes} probes; the bus is deselected");
            found
        }
        Err(e) => return Err(failed(e)),
    };
    outln!(
        "{:<8} {:<17} {:<4} {:<22} version",
        "primary",
        "secondary",
        "mfct",
        "medium"
    );
    for f in &found {
        outln!(
            "{:<8} {:<17} {:<4} {:<22} {}",
            f.primary
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            f.secondary,
            f.manufacturer,
            f.medium.name(),
            f.version
        );
    }
    eprintln!(
        "{} meter(s) found in {:.1} s",
        found.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn read(a: &ReadArgs) -> CmdResult {
    let target = parse_target(&a.address).map_err(usage)?;
    let mut master = connect(&a.connection, None)
        .await
        .map_err(|e| (EXIT_FAILED, e))?;
    let frames = master
        .read(
            target,
            ReadOptions {
                max_frames: a.max_frames.max(1),
                ..ReadOptions::default()
            },
        )
        .await
        .map_err(failed)?;
    let mut decoder = Decoder::new(a.format);
    for f in frames {
        match decoder.decode_line(&hex::encode_upper(&f)) {
            Ok(text) => out!("{text}"),
            Err(failure) => eprintln!("error: {}: {}", target, failure.message),
        }
    }
    Ok(())
}

async fn set_address(a: &SetAddressArgs) -> CmdResult {
    let target = parse_target(&a.address).map_err(usage)?;
    let mut master = connect(&a.connection, None)
        .await
        .map_err(|e| (EXIT_FAILED, e))?;
    master
        .set_primary_address(target, a.new_address)
        .await
        .map_err(failed)?;
    outln!("{target} now answers at primary address {}", a.new_address);
    Ok(())
}

async fn set_baud(a: &SetBaudArgs) -> CmdResult {
    let target = parse_target(&a.address).map_err(usage)?;
    let mut master = connect(&a.connection, None)
        .await
        .map_err(|e| (EXIT_FAILED, e))?;
    let device = a.connection.device.clone();
    // A serial converter has to be reopened at the new speed; a TCP gateway sets its own.
    let mut reconfigure = move |port: &mut Port, baud: u32| -> std::io::Result<()> {
        if let Some(path) = &device {
            let config = PortConfig {
                baud,
                ..port.config
            };
            // Close the device before reopening it: it is held exclusively.
            let (closed, _) = tokio::io::duplex(1);
            *port = Port::new(Box::new(closed), config);
            let stream =
                open_serial(path, baud).map_err(|e| std::io::Error::other(e.to_string()))?;
            *port = Port::new(stream, config);
        }
        Ok(())
    };
    match master
        .switch_baud(target, a.new_baud, &mut reconfigure)
        .await
    {
        Ok(()) => outln!("{target} now talks at {} baud", a.new_baud),
        // A gateway talks to the bus at the rate in its own configuration, so the check at
        // the new rate cannot succeed until the user changes that.
        Err(MasterError::BaudNotVerified { .. }) if a.connection.tcp.is_some() => {
            outln!("{target} acknowledged the switch to {} baud", a.new_baud);
            eprintln!(
                "note: an M-Bus/TCP gateway talks to the bus at the rate set in its own \
                 configuration; set its serial side to {} baud, then check with \
                 `meterbridge read {} --tcp {} --baud {}`",
                a.new_baud,
                a.address,
                a.connection.tcp.as_deref().unwrap_or_default(),
                a.new_baud
            );
        }
        Err(e) => return Err(failed(e)),
    }
    Ok(())
}

async fn reset(a: &ResetArgs) -> CmdResult {
    let target = parse_target(&a.address).map_err(usage)?;
    let mut master = connect(&a.connection, None)
        .await
        .map_err(|e| (EXIT_FAILED, e))?;
    master
        .application_reset(target, None)
        .await
        .map_err(failed)?;
    outln!("{target} acknowledged the application reset");
    Ok(())
}
