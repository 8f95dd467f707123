//! Wired bus timings at 2400 baud against the simulator over loopback TCP (the simulator
//! emulates the wire time of every byte): secondary scans, a primary scan, reading meters.
//! `cargo bench --bench bus`; `MB_BENCH_250=1` adds the 250-meter secondary scan (minutes),
//! `MB_BENCH_QUICK=1` leaves out the two-minute same-id scan.
//! Figures go to docs/benchmarks.md.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meterbridge::master::{
    Master, MasterOptions, ReadOptions, ScanProgress, SecondaryMask, Target,
};
use meterbridge::sim::bus::{BusSim, SecondaryAddress, SimMeter};
use meterbridge::sim::{serve_tcp, ServeOptions};
use meterbridge::transport::open::{open_port, Endpoint};
use meterbridge::transport::PortConfig;

const BAUD: u32 = 2400;

fn meter(primary: u8, id: u32, medium: u8) -> SimMeter {
    SimMeter::new(
        primary,
        SecondaryAddress {
            id,
            manufacturer: 0x2C2D,
            version: 1,
            medium,
        },
    )
}

/// BCD digits of a number below 10^8, as the id field holds them.
fn bcd(mut n: u32) -> u32 {
    let mut out = 0;
    for i in 0..8 {
        out |= (n % 10) << (4 * i);
        n /= 10;
    }
    out
}

/// The latency allowance on top of the standard's window: `MB_BENCH_LATENCY_MS`, default 20.
/// The simulator has no converter delay, so 0 measures the master against the standard alone.
fn latency_ms() -> u64 {
    std::env::var("MB_BENCH_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

async fn master_for(meters: Vec<SimMeter>) -> Master {
    let sim = BusSim::new(meters).with_baud(BAUD);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(serve_tcp(
        listener,
        Arc::new(Mutex::new(sim)),
        ServeOptions {
            baud: BAUD,
            log: false,
        },
    ));
    let port = open_port(
        &Endpoint::Tcp(addr),
        PortConfig {
            baud: BAUD,
            extra_latency: Duration::from_millis(latency_ms()),
            echo: false,
        },
    )
    .await
    .expect("connect");
    Master::new(port, MasterOptions::default())
}

async fn secondary(name: &str, meters: Vec<SimMeter>) {
    let n = meters.len();
    let mut m = master_for(meters).await;
    let mut probes = 0;
    let start = Instant::now();
    let found = m
        .scan_secondary(SecondaryMask::ANY, &mut |p: ScanProgress| probes = p.probes)
        .await
        .expect("scan");
    println!(
        "{name:<44} {:>3}/{n} found {probes:>4} probes {:>7.1} s",
        found.len(),
        start.elapsed().as_secs_f64()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut random_id = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bcd((seed % 100_000_000) as u32)
        };
        secondary("secondary scan, 1 meter", vec![meter(1, bcd(72861447), 7)]).await;
        secondary(
            "secondary scan, 10 random ids",
            (0..10).map(|i| meter(i + 1, random_id(), 7)).collect(),
        )
        .await;
        secondary(
            "secondary scan, 10 consecutive ids",
            (0..10)
                .map(|i| meter(i as u8 + 1, bcd(61_234_500 + i), 7))
                .collect(),
        )
        .await;
        if std::env::var("MB_BENCH_QUICK").is_err() {
            secondary(
                "secondary scan, 2 meters sharing an id",
                vec![meter(1, bcd(12345678), 4), meter(2, bcd(12345678), 7)],
            )
            .await;
        }
        if std::env::var("MB_BENCH_250").is_ok() {
            secondary(
                "secondary scan, 250 random ids",
                (0..250)
                    .map(|i| meter((i % 250) as u8, random_id(), 7))
                    .collect(),
            )
            .await;
        }

        // Primary scan 0-250 with 3 meters.
        let mut m = master_for(vec![
            meter(5, bcd(1), 7),
            meter(100, bcd(2), 7),
            meter(250, bcd(3), 7),
        ])
        .await;
        let start = Instant::now();
        let found = m
            .scan_primary(0..=250, &mut |_p: ScanProgress| {})
            .await
            .expect("scan");
        let secs = start.elapsed().as_secs_f64();
        // 251 SND_NKE (5 bytes each) plus their response windows, and three E5 and reads.
        let window = meterbridge::transport::timing::response_window(BAUD).as_secs_f64();
        let wire = meterbridge::transport::timing::wire_time(BAUD, 5).as_secs_f64();
        println!(
            "{:<44} {:>3}/3 found {:>7.1} s (251 × (window + SND_NKE) = {:.1} s)",
            "primary scan 0-250, 3 meters",
            found.len(),
            secs,
            251.0 * (window + wire)
        );

        // Read 20 meters, one telegram each.
        let mut m = master_for((1..=20).map(|i| meter(i, bcd(u32::from(i)), 7)).collect()).await;
        let start = Instant::now();
        let mut bytes = 0;
        for a in 1..=20u8 {
            let frames = m
                .read(
                    Target::Primary(a),
                    ReadOptions {
                        reset_first: false,
                        ..ReadOptions::default()
                    },
                )
                .await
                .expect("read");
            bytes += frames.iter().map(Vec::len).sum::<usize>() + 5;
        }
        let secs = start.elapsed().as_secs_f64();
        let wire = meterbridge::transport::timing::wire_time(BAUD, bytes).as_secs_f64();
        println!(
            "{:<44} {secs:>7.1} s (wire time of {bytes} bytes: {wire:.1} s)",
            "read 20 meters (REQ_UD2 + RSP_UD each)"
        );
    });
}
