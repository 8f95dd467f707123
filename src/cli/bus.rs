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
    // Ctrl-C and SIGTERM (`kill`, `timeout`, systemd) both stop the scan and print what was
    // found so far; a scan of a large bus can take an hour.
    let ctrl_c = {
        let stop = stop.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            #[cfg(unix)]
            let terminate = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let terminate = std::future::pending::<()>();
            tokio::select! {
                r = tokio::signal::ctrl_c() => {
                    if r.is_ok() {
                        stop.store(true, Ordering::SeqCst);
                    }
                }
                _ = terminate => stop.store(true, Ordering::SeqCst),
            }
        })
    };
    // What to scan, checked before the bus is touched.
    let plan = match a.kind {
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
            ScanPlan::Primary(first, last)
        }
        ScanKind::Secondary => ScanPlan::Secondary(
            a.mask
                .parse::<SecondaryMask>()
                .map_err(|e| usage(format!("--mask {:?}: {e}", a.mask)))?,
        ),
    };
    let mut master = connect(&a.connection, Some(stop))
        .await
        .map_err(|e| (EXIT_FAILED, e))?;
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let mut view = ScanView::new(plan, terminal);
    let mut progress = move |p: ScanProgress| {
        let text = view.show(&p, started.elapsed());
        if !text.is_empty() {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    };
    let result = match plan {
        ScanPlan::Primary(first, last) => master.scan_primary(first..=last, &mut progress).await,
        ScanPlan::Secondary(mask) => master.scan_secondary(mask, &mut progress).await,
    };
    ctrl_c.abort();
    if terminal {
        eprintln!();
    }
    let found = match result {
        Ok(f) => f,
        Err(MasterError::Cancelled { found, probes }) => {
            eprintln!(
                "stopped after {probes} probes; the bus is deselected. Found so far (a scan \
                 started again finds these and the rest):"
            );
            found
        }
        Err(e) => return Err(failed(e)),
    };
    out!("{}", found_table(&found));
    eprintln!(
        "{} meter(s) found in {:.1} s",
        found.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What a scan covers.
#[derive(Debug, Clone, Copy)]
enum ScanPlan {
    /// First and last primary address.
    Primary(u8, u8),
    Secondary(SecondaryMask),
}

/// The scan's progress as a person reads it: on a terminal one line rewritten in place
/// (probes, meters found, time left) with each finding on a line of its own; into a pipe or
/// file the findings, and a progress line every [`PIPE_PROGRESS_EVERY`] probes.
struct ScanView {
    plan: ScanPlan,
    terminal: bool,
}

const PIPE_PROGRESS_EVERY: u32 = 100;

impl ScanView {
    fn new(plan: ScanPlan, terminal: bool) -> ScanView {
        ScanView { plan, terminal }
    }

    /// Probes a primary scan sends: one per address but the reserved 251-255.
    fn total_probes(&self) -> Option<u32> {
        match self.plan {
            ScanPlan::Primary(first, last) => Some(
                (u32::from(first)..=u32::from(last))
                    .filter(|a| *a <= 250)
                    .count() as u32,
            ),
            ScanPlan::Secondary(_) => None,
        }
    }

    /// The share of the scan done, from 0 to 1, if it can be told yet.
    fn done_share(&self, p: &ScanProgress) -> Option<f64> {
        match (self.plan, self.total_probes()) {
            (_, Some(total)) if total > 0 => Some(f64::from(p.probes) / f64::from(total)),
            (ScanPlan::Secondary(root), _) => p
                .current_mask
                .and_then(|m| crate::master::scan::secondary_share_done(&root, &m)),
            _ => None,
        }
    }

    fn time_left(&self, p: &ScanProgress, elapsed: Duration) -> String {
        match self.done_share(p) {
            Some(share) if share >= 1.0 => "finishing".into(),
            // Too early for the rate to mean much.
            Some(share) if share > 0.02 && elapsed >= Duration::from_secs(2) => {
                let left = elapsed.as_secs_f64() * (1.0 - share) / share;
                let approx = matches!(self.plan, ScanPlan::Secondary(_));
                format!(
                    "{}{} left",
                    if approx { "about " } else { "" },
                    human_duration(Duration::from_secs_f64(left))
                )
            }
            _ => "time left not known yet".into(),
        }
    }

    /// The text to write to standard error for one progress report.
    fn show(&mut self, p: &ScanProgress, elapsed: Duration) -> String {
        let what = match (&p.current_mask, p.address) {
            (Some(m), _) => format!("mask {m}"),
            (None, Some(a)) => format!("address {a}"),
            (None, None) => String::new(),
        };
        let finding = match &p.event {
            ScanEvent::Silent => None,
            ScanEvent::Collision { bytes } => Some(format!(
                "{what}: several meters answered at once ({} bytes); narrowing down",
                bytes.len()
            )),
            ScanEvent::InferredCollision => Some(format!(
                "{what}: the remaining meters must be here; narrowing down"
            )),
            ScanEvent::Unresolved => Some(format!(
                "{what}: meters with this same secondary address answer together and cannot be \
                 told apart; give them different primary addresses and scan by primary address"
            )),
            ScanEvent::Found(f) => Some(format!(
                "found {} {} {} version {}{}",
                f.secondary,
                f.manufacturer,
                f.medium.name(),
                f.version,
                f.primary
                    .map(|a| format!(" at primary address {a}"))
                    .unwrap_or_default()
            )),
            ScanEvent::ReadFailed { error } => Some(format!(
                "{what}: a meter answered but its data could not be read: {error}"
            )),
        };
        let total = self
            .total_probes()
            .map(|t| format!("/{t}"))
            .unwrap_or_default();
        let status = format!(
            "probe {}{total}, {} found, {} elapsed, {}",
            p.probes,
            p.found,
            human_duration(elapsed),
            self.time_left(p, elapsed)
        );
        let mut out = String::new();
        if self.terminal {
            out.push_str("\r\x1b[K");
            if let Some(f) = finding {
                out.push_str(&f);
                out.push('\n');
            }
            out.push_str(&status);
        } else {
            if let Some(f) = finding {
                out.push_str(&f);
                out.push('\n');
            }
            if p.probes.is_multiple_of(PIPE_PROGRESS_EVERY) && matches!(p.event, ScanEvent::Silent)
            {
                out.push_str(&status);
                out.push('\n');
            }
        }
        out
    }
}

/// `1 h 02 min`, `3 min 05 s`, `12 s`.
fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

/// The meters found, one row each under a header.
fn found_table(found: &[crate::master::Found]) -> String {
    let mut out = format!(
        "{:<8} {:<17} {:<13} {:<22} {}\n",
        "primary", "secondary", "manufacturer", "medium", "version"
    );
    for f in found {
        out.push_str(&format!(
            "{:<8} {:<17} {:<13} {:<22} {}\n",
            f.primary
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            f.secondary,
            f.manufacturer.to_string(),
            f.medium.name(),
            f.version
        ));
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::Found;

    fn progress(probes: u32, address: u8, found: usize, event: ScanEvent) -> ScanProgress {
        ScanProgress {
            probes,
            current_mask: None,
            address: Some(address),
            found,
            event,
        }
    }

    #[test]
    fn scan_progress_reads_as_sentences_with_the_time_left() {
        let mut view = ScanView::new(ScanPlan::Primary(0, 250), false);
        let meter = Found {
            primary: Some(5),
            secondary: "123456782D2C0107".into(),
            manufacturer: crate::wire::manufacturer::Manufacturer::from_letters("KAM").unwrap(),
            medium: crate::wire::medium::Medium::from_code(7),
            version: 1,
        };
        let shown = view.show(
            &progress(6, 5, 1, ScanEvent::Found(meter.clone())),
            Duration::from_secs(1),
        );
        assert_eq!(
            shown,
            "found 123456782D2C0107 KAM water version 1 at primary address 5\n"
        );
        let failed = view.show(
            &progress(
                7,
                6,
                1,
                ScanEvent::ReadFailed {
                    error: "no answer".into(),
                },
            ),
            Duration::from_secs(1),
        );
        assert_eq!(
            failed,
            "address 6: a meter answered but its data could not be read: no answer\n"
        );
        // Every 100th silent probe into a pipe: probes of the total, found, elapsed, left.
        // 100 of 251 probes in 50 s: 151 more at the same pace.
        let status = view.show(
            &progress(100, 99, 1, ScanEvent::Silent),
            Duration::from_secs(50),
        );
        assert_eq!(
            status,
            "probe 100/251, 1 found, 50 s elapsed, 1 min 15 s left\n"
        );
        assert_eq!(
            view.show(
                &progress(101, 100, 1, ScanEvent::Silent),
                Duration::from_secs(50)
            ),
            ""
        );
        let table = found_table(&[meter]);
        assert_eq!(
            table
                .lines()
                .nth(1)
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["5", "123456782D2C0107", "KAM", "water", "1"]
        );
    }

    #[test]
    fn a_secondary_scan_estimates_its_time_from_the_branches_behind_it() {
        let view = ScanView::new(ScanPlan::Secondary(SecondaryMask::ANY), true);
        // The last ID digit is split first: at branch 4 of 16, a quarter is done.
        let p = ScanProgress {
            probes: 40,
            current_mask: Some("FFFFFFF4FFFFFFFF".parse().unwrap()),
            address: None,
            found: 2,
            event: ScanEvent::Silent,
        };
        assert_eq!(view.done_share(&p), Some(0.25));
        assert_eq!(
            view.time_left(&p, Duration::from_secs(60)),
            "about 3 min 00 s left"
        );
        let at_root = ScanProgress {
            current_mask: Some(SecondaryMask::ANY),
            ..p
        };
        assert_eq!(
            view.time_left(&at_root, Duration::from_secs(60)),
            "time left not known yet"
        );
    }
}
