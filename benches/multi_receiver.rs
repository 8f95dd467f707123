//! Many receivers, one meter, at building scale (issue 19): the release binary
//! (`meterbridge run --config FILE`) as a child process with 1,000 configured wireless meters
//! and 3 UDP receivers. Every telegram reaches all three receivers, in a random order, each copy
//! up to 200 ms after the first, with different RSSI; every third telegram's last copy comes
//! through a repeater (another C field, the hop counter set). 50 telegrams a second in all, so
//! each meter sends every 20 s, each time a new telegram (access number and total change).
//!
//! Measured from outside, as an operator would see it:
//! - duplicates and losses: each telegram carries its send number in the meter's total; every
//!   reading the daemon prints (JSON lines on standard output) is matched to it;
//! - latency: from the first copy leaving this process to the reading's line arriving, which
//!   includes the settle time (500 ms) the merging waits on purpose;
//! - memory: `/proc/<pid>/status` VmRSS every 10 s; flat means the last sample within 1 MB of
//!   the one after the warm-up (a minute, or half a shorter run: every meter's state filled in
//!   the first 20 s, the first state save at 30 s).
//!
//! `cargo bench --bench multi_receiver` runs 60 s; `MB_MULTI_SECONDS=600` (or
//! `bench/multi_receiver.sh 600`) the full 10 minutes.

use std::collections::{BinaryHeap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meterbridge::wire::hex;

const METERS: u32 = 1_000;
const RECEIVERS: usize = 3;
const PER_SECOND: u64 = 50;
const SETTLE: Duration = Duration::from_millis(500);
/// Largest delay of a copy after the first one (receivers on a network, a slow MQTT hop).
const SPREAD_MS: u64 = 200;
/// A Qundis water meter (qwater): short header, no encryption; the id (bytes 4–7), the access
/// number (11) and the total's BCD digits (17–20) are rewritten per send.
const TEMPLATE: &str = "39449344153119611D067A870000200C13370000004C1300000000426CFFFFCC081300000000C2086CFFFF02BB560000326CFFFF046D320D5E31";

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn bcd_le(mut value: u32, out: &mut [u8]) {
    for byte in out {
        let low = (value % 10) as u8;
        value /= 10;
        let high = (value % 10) as u8;
        value /= 10;
        *byte = (high << 4) | low;
    }
}

fn meter_id(m: u32) -> u32 {
    20_000_000 + m
}

/// Meter `m`'s `send`-th telegram (without CRCs).
fn telegram(template: &[u8], m: u32, send: u32) -> Vec<u8> {
    let mut t = template.to_vec();
    bcd_le(meter_id(m), &mut t[4..8]);
    t[11] = (send & 0xFF) as u8;
    bcd_le(send, &mut t[17..21]);
    t
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let seconds: u64 = std::env::var("MB_MULTI_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let template = hex::decode(TEMPLATE).expect("template");
    let dir = std::env::temp_dir().join(format!("meterbridge-multi-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ports: Vec<u16> = (0..RECEIVERS).map(|_| free_udp_port()).collect();
    let mut yaml = format!(
        "state_dir: \"{}\"\nsettle_time: {}ms\nreceivers:\n",
        dir.join("state").display(),
        SETTLE.as_millis()
    );
    for (i, p) in ports.iter().enumerate() {
        yaml.push_str(&format!(
            "  - name: r{i}\n    type: udp\n    bind: \"127.0.0.1:{p}\"\n"
        ));
    }
    yaml.push_str("meters:\n");
    for m in 0..METERS {
        yaml.push_str(&format!(
            "  - name: M{m:04}\n    address: \"{:08}\"\n    driver: qwater\n",
            meter_id(m)
        ));
    }
    let config = dir.join("config.yaml");
    std::fs::write(&config, yaml).expect("config");

    let mut child = Command::new(env!("CARGO_BIN_EXE_meterbridge"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let pid = child.id();
    // (meter, send) -> when the first copy left; readings matched against it.
    let sent: Arc<Mutex<HashMap<(u32, u32), Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let readings: Arc<Mutex<Vec<(u32, u32, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().expect("stdout");
    let sink = readings.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let now = Instant::now();
            let Ok(doc) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let id = doc["id"].as_str().and_then(|s| s.parse::<u32>().ok());
            let total = doc["total_m3"].as_f64();
            if let (Some(id), Some(total)) = (id, total) {
                let send = (total * 1000.0).round() as u32;
                sink.lock().unwrap().push((id - 20_000_000, send, now));
            }
        }
    });
    let stderr = child.stderr.take().expect("stderr");
    let log: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let log_sink = log.clone();
    let log_reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log_sink.lock().unwrap().push(line);
        }
    });

    // The receivers are up when the daemon says so; UDP gives no other sign.
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        let ready = log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.ends_with(": ready"))
            .count();
        if ready >= RECEIVERS {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let started = Instant::now();
    let total = seconds * PER_SECOND;
    let gap = Duration::from_micros(1_000_000 / PER_SECOND);
    // Copies due, earliest first: (due, receiver, payload).
    let mut due: BinaryHeap<std::cmp::Reverse<(Instant, usize, Vec<u8>)>> = BinaryHeap::new();
    let mut rss_samples: Vec<(f64, u64)> = vec![(0.0, rss_kb(pid))];
    let mut next_sample = started + Duration::from_secs(10);
    let mut sends = vec![0u32; METERS as usize];
    println!(
        "multi_receiver: {METERS} meters x {RECEIVERS} receivers, {PER_SECOND} telegrams/s for {seconds} s, settle {} ms, copies spread over {SPREAD_MS} ms",
        SETTLE.as_millis()
    );
    for n in 0..total {
        let at = started + gap * n as u32;
        // Send what is due before this telegram's time.
        loop {
            let now = Instant::now();
            let next_copy = due.peek().map(|r| r.0 .0);
            match next_copy {
                Some(t) if t <= now => {
                    if let Some(std::cmp::Reverse((_, r, payload))) = due.pop() {
                        let _ = socket.send_to(&payload, ("127.0.0.1", ports[r]));
                    }
                }
                _ if now >= at => break,
                Some(t) => std::thread::sleep(t.min(at) - now),
                None => std::thread::sleep(at - now),
            }
        }
        let m = (n % u64::from(METERS)) as u32;
        sends[m as usize] += 1;
        let send = sends[m as usize];
        let t = telegram(&template, m, send);
        // A random order of the receivers; the first copy leaves now.
        let mut order: Vec<usize> = (0..RECEIVERS).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let now = Instant::now();
        sent.lock().unwrap().insert((m, send), now);
        for (k, &r) in order.iter().enumerate() {
            let mut copy = t.clone();
            // Every third telegram's last copy came through a repeater.
            if k == RECEIVERS - 1 && n % 3 == 0 {
                copy[1] = 0x46;
                copy[13] |= 0x01;
            }
            let rssi = -50 - rng.below(50) as i64;
            let payload = format!("{};rssi={rssi}", hex::encode_upper(&copy)).into_bytes();
            let delay = if k == 0 {
                Duration::ZERO
            } else {
                Duration::from_millis(rng.below(SPREAD_MS))
            };
            if delay.is_zero() {
                let _ = socket.send_to(&payload, ("127.0.0.1", ports[r]));
            } else {
                due.push(std::cmp::Reverse((now + delay, r, payload)));
            }
        }
        if Instant::now() >= next_sample {
            rss_samples.push((started.elapsed().as_secs_f64(), rss_kb(pid)));
            next_sample += Duration::from_secs(10);
        }
    }
    while let Some(std::cmp::Reverse((t, r, payload))) = due.pop() {
        let now = Instant::now();
        if t > now {
            std::thread::sleep(t - now);
        }
        let _ = socket.send_to(&payload, ("127.0.0.1", ports[r]));
    }
    let sending = started.elapsed();
    rss_samples.push((sending.as_secs_f64(), rss_kb(pid)));
    // The last telegrams settle, then the daemon is stopped as an operator would.
    std::thread::sleep(SETTLE + Duration::from_secs(2));
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let _ = reader.join();
    let _ = log_reader.join();

    let sent = sent.lock().unwrap();
    let readings = readings.lock().unwrap();
    let mut seen: HashMap<(u32, u32), Instant> = HashMap::new();
    let mut duplicates = 0u64;
    let mut unexpected = 0u64;
    let mut latencies = Vec::with_capacity(readings.len());
    for &(m, send, at) in readings.iter() {
        let Some(first) = sent.get(&(m, send)) else {
            unexpected += 1;
            continue;
        };
        if seen.insert((m, send), at).is_some() {
            duplicates += 1;
            continue;
        }
        latencies.push(at.saturating_duration_since(*first));
    }
    let lost = sent.len() as u64 - seen.len() as u64;
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "telegrams sent: {} ({} copies)",
        sent.len(),
        sent.len() * RECEIVERS
    );
    println!(
        "readings printed: {} ; duplicates {duplicates} ; lost {lost} ; not sent {unexpected}",
        readings.len()
    );
    println!(
        "latency first copy -> reading (settle {} ms included): p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        SETTLE.as_millis(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0)),
    );
    let added_max = percentile(&latencies, 1.0).saturating_sub(SETTLE);
    println!(
        "latency beyond the settle time: p50 {:.1} ms  max {:.1} ms",
        ms(percentile(&latencies, 0.5).saturating_sub(SETTLE)),
        ms(added_max)
    );
    let samples: Vec<String> = rss_samples
        .iter()
        .map(|(t, kb)| format!("{t:.0}s {:.2}", *kb as f64 / 1024.0))
        .collect();
    println!("RSS MB: {}", samples.join(", "));
    // Warm-up: every meter's state is filled after the first round (20 s) and the first state
    // save (30 s) has sized its buffers; a minute in (half of a short run) the size is settled.
    let warm = (seconds as f64 / 2.0).min(60.0);
    let after_warmup = rss_samples
        .iter()
        .find(|(t, _)| *t >= warm)
        .or(rss_samples.first())
        .map_or(0, |(_, kb)| *kb);
    let last = rss_samples.last().map_or(0, |(_, kb)| *kb);
    let growth_mb = (last as f64 - after_warmup as f64) / 1024.0;
    println!("RSS from {warm:.0} s to the end: {growth_mb:+.2} MB");
    let stopped: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("telegram") || l.contains("duplicate"))
        .cloned()
        .collect();
    for l in stopped.iter().rev().take(3).rev() {
        println!("daemon: {l}");
    }
    let ok = duplicates == 0 && lost == 0 && unexpected == 0 && growth_mb.abs() <= 1.0;
    println!(
        "{}: 0 duplicates, 0 lost, RSS flat within 1 MB (max latency beyond settle {:.1} ms)",
        if ok { "met" } else { "NOT MET" },
        ms(added_max)
    );
    let _ = std::fs::remove_dir_all(&dir);
    if !ok {
        std::process::exit(1);
    }
}
