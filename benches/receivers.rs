//! Receivers under load: a simulated stick on a pseudo-terminal delivers telegrams at 200 per
//! second (far more than a radio channel carries); every telegram must arrive, and the time
//! from its last byte leaving the simulator to its decoded reading is measured.
//!
//! `cargo bench --bench receivers` (MB_BENCH_QUICK=1 for a short run).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meterbridge::drivers::run::DriverRun;
use meterbridge::drivers::Registry;
use meterbridge::receivers::input::StickSession;
use meterbridge::receivers::{LinkMode, StickKind};
use meterbridge::security::KeyStore;
use meterbridge::sim::amber::AmberSimOptions;
use meterbridge::sim::stick::{builtin_corpus, lock_log, StickSimConfig, StickSimLog};
use tokio_serial::{SerialPort, SerialStream};

fn decodable_corpus() -> Vec<Vec<u8>> {
    let mut run = DriverRun::new(Registry::built_in_static(), KeyStore::default());
    builtin_corpus()
        .into_iter()
        .filter(|t| run.process(t, "auto", "m", "ts").is_ok())
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run_kind(kind: StickKind, telegrams: Vec<Vec<u8>>, rate: f64) {
    let count = telegrams.len();
    let (master, slave) = SerialStream::pair().expect("pty");
    let path = slave.name().expect("pty name");
    let log = Arc::new(Mutex::new(StickSimLog {
        sent_at: Some(Vec::with_capacity(count)),
        ..StickSimLog::default()
    }));
    let cfg = StickSimConfig {
        telegrams,
        interval: Duration::from_secs_f64(1.0 / rate),
        rssi_dbm: -70,
        repeat: false,
        reply_delay: Duration::from_millis(2),
        log: false,
        ..StickSimConfig::default()
    };
    let sim_log = log.clone();
    let server = tokio::spawn(async move {
        match kind {
            StickKind::Im871a | StickKind::Iu891a => {
                meterbridge::sim::imst::serve(master, kind, cfg, sim_log).await
            }
            StickKind::Amb8465 => {
                meterbridge::sim::amber::serve(master, AmberSimOptions::default(), cfg, sim_log)
                    .await
            }
            StickKind::Cul => meterbridge::sim::cul::serve(master, cfg, sim_log).await,
        }
    });
    let port = meterbridge::receivers::input::open_stick(&path, kind.default_baud()).expect("open");
    let mut session = StickSession::start(port, kind, LinkMode::T1)
        .await
        .expect("start-up");
    let mut run = DriverRun::new(Registry::built_in_static(), KeyStore::default());
    let mut decoded_at = Vec::with_capacity(count);
    let started = Instant::now();
    let mut failed = 0;
    while decoded_at.len() < count {
        let heard = match tokio::time::timeout(Duration::from_secs(5), session.next()).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => panic!("{kind}: {e}"),
            Err(_) => break,
        };
        if run.process(&heard.frame, "auto", "m", "ts").is_err() {
            failed += 1;
        }
        decoded_at.push(Instant::now());
    }
    let elapsed = started.elapsed();
    let sent_at = lock_log(&log).sent_at.clone().unwrap_or_default();
    let emitted = lock_log(&log).emitted;
    let received = decoded_at.len();
    let mut latencies: Vec<Duration> = decoded_at
        .iter()
        .zip(&sent_at)
        .map(|(d, s)| d.saturating_duration_since(*s))
        .collect();
    latencies.sort();
    println!(
        "{:<8} sent {emitted:>5}  received {received:>5}  lost {:>3}  undecodable {failed}  {:.0}/s  latency median {:>6.3} ms  p99 {:>6.3} ms  max {:>6.3} ms",
        kind.name(),
        emitted.saturating_sub(received as u64),
        received as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    drop(session);
    drop(slave);
    server.abort();
}

fn main() {
    let quick = std::env::var_os("MB_BENCH_QUICK").is_some();
    let mut telegrams = decodable_corpus();
    let wanted = if quick { 200 } else { 2000 };
    while telegrams.len() < wanted {
        let again = telegrams.clone();
        telegrams.extend(again);
    }
    telegrams.truncate(wanted);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "{} telegrams per stick at 200/s over a pseudo-terminal (decode + auto driver included)",
        telegrams.len()
    );
    for kind in StickKind::ALL {
        runtime.block_on(run_kind(kind, telegrams.clone(), 200.0));
    }
}
