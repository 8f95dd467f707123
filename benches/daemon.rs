//! The gateway daemon as people run it: the release binary (`meterbridge run --config FILE`) as a
//! child process with 100 meters — 50 wired on a simulated M-Bus/TCP segment served by this
//! process, 50 wireless whose telegrams arrive over UDP — publishing to a broker (a mosquitto
//! child when installed, else rumqttd in this process) with Home Assistant discovery on.
//!
//! Measured from outside, as an operator would see it:
//! - memory: `/proc/<pid>/status` VmHWM (peak) and VmRSS, with `/proc/<pid>/smaps_rollup`
//!   to show what the resident memory is;
//! - idle CPU: `/proc/<pid>/stat` utime + stime over a quiet stretch (wired polling at 60 s,
//!   no radio traffic);
//! - telegram-to-publish latency: from the UDP datagram leaving this process to the meter's
//!   state message arriving at an MQTT subscriber in this process, so the broker hop is in it.
//!
//! `cargo bench --bench daemon` (MB_BENCH_QUICK=1 for a short run; MB_BENCH_BIN=PATH runs another
//! build of the binary, e.g. to compare release profiles, with the same bench).

#[path = "../tests/support/broker.rs"]
mod broker;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meterbridge::drivers::run::DriverRun;
use meterbridge::drivers::Registry;
use meterbridge::security::KeyStore;
use meterbridge::sim::stick::builtin_corpus;
use meterbridge::sim::{BusSim, ServeOptions, SimMeter};
use meterbridge::telegram::decode_wired;
use meterbridge::wire::hex;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

const METERS_PER_KIND: usize = 50;
const BASE_TOPIC: &str = "mbbench";
/// How long the daemon may take to get every meter published once (50 wired reads at
/// 2400 baud take about half a minute).
const FIRST_PUBLISH_LIMIT: Duration = Duration::from_secs(180);

struct Plan {
    quick: bool,
    /// The simulated segment's rate. 2400 baud is what most installed buses run at; the quick
    /// run uses a fast rate so the initial wired cycle fits in a few seconds.
    bus_baud: u32,
    idle: Duration,
    latency_samples: usize,
    spacing: Duration,
    /// `MB_SOAK_SECONDS`: a soak phase at 50× normal rates (wired polling every 1.2 s instead of
    /// 60 s, each wireless meter every 0.4 s instead of about 20 s) before shutdown.
    soak: Option<Duration>,
}

impl Plan {
    fn from_env() -> Plan {
        let quick = std::env::var_os("MB_BENCH_QUICK").is_some();
        Plan {
            quick,
            bus_baud: if quick { 38_400 } else { 2_400 },
            idle: Duration::from_secs(if quick { 2 } else { 10 }),
            latency_samples: if quick { 50 } else { 500 },
            spacing: Duration::from_millis(15),
            soak: std::env::var("MB_SOAK_SECONDS")
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .map(Duration::from_secs),
        }
    }
}

/// Wired frames from the drivers' own test cases that a driver turns into readings, with a
/// variable-data long header (CI 72) whose identification number can be rewritten. Frames
/// that announce more records are left out: the simulated meter answers every REQ_UD2 with
/// its one frame, so the master would read it `max_frames` (16) times over, which no real
/// meter makes it do.
fn wired_templates() -> Vec<Vec<u8>> {
    let registry = Registry::built_in_static();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for driver in registry.iter() {
        for case in driver.tests().iter() {
            for text in &case.telegrams {
                let Ok(bytes) = hex::decode(text) else {
                    continue;
                };
                if bytes.first() != Some(&0x68) || bytes.get(6) != Some(&0x72) {
                    continue;
                }
                if !seen.insert(bytes.clone()) {
                    continue;
                }
                if decode_wired(&bytes).map_or(true, |t| t.more_records_follow()) {
                    continue;
                }
                let mut run = DriverRun::new(registry, KeyStore::default());
                if run.process(&bytes, "auto", "m", "ts").is_ok() {
                    out.push(bytes);
                }
            }
        }
    }
    out
}

/// The frame with identification number `id` (8 decimal digits) and its checksum redone, so
/// every simulated meter is a distinct device downstream (discovery ids, state topics).
fn with_id(frame: &[u8], id: u32) -> Vec<u8> {
    let mut f = frame.to_vec();
    let mut rest = id;
    for byte in &mut f[7..11] {
        let low = (rest % 10) as u8;
        rest /= 10;
        let high = (rest % 10) as u8;
        rest /= 10;
        *byte = (high << 4) | low;
    }
    let end = f.len() - 2;
    f[end] = f[4..end].iter().fold(0u8, |sum, b| sum.wrapping_add(*b));
    f
}

/// 50 wired meters at primary addresses 1..=50, cycling over the driver frames; also says
/// how many distinct frames there were.
fn wired_meters() -> (Vec<SimMeter>, usize) {
    let templates = wired_templates();
    assert!(!templates.is_empty(), "no wired driver test frame decodes");
    let registry = Registry::built_in_static();
    let meters = (0..METERS_PER_KIND)
        .map(|i| {
            let frame = with_id(&templates[i % templates.len()], 90_000_001 + i as u32);
            let mut run = DriverRun::new(registry, KeyStore::default());
            assert!(
                run.process(&frame, "auto", "m", "ts").is_ok(),
                "a wired frame with its id rewritten no longer decodes"
            );
            let secondary = meterbridge::sim::bus::secondary_of(&frame).expect("secondary");
            SimMeter::new(i as u8 + 1, secondary)
                .with_telegrams(vec![frame])
                .expect("a long frame")
        })
        .collect();
    (meters, templates.len())
}

/// 50 wireless telegrams from 50 distinct meters that decode without a key, with each meter's
/// id as the daemon computes it.
fn wireless_meters() -> Vec<(String, Vec<u8>)> {
    let registry = Registry::built_in_static();
    let mut ids = HashSet::new();
    let mut out = Vec::new();
    for telegram in builtin_corpus() {
        // A fresh decoder per telegram: a compact frame that only decodes after its meter's
        // full frame was seen would not decode on its own in the daemon either.
        let mut run = DriverRun::new(registry, KeyStore::default());
        let Ok(frame) = run.decoder().decode(&telegram) else {
            continue;
        };
        let id = frame.link.meter_id().to_ascii_lowercase();
        if id.len() != 8 || !id.chars().all(|c| c.is_ascii_hexdigit()) || ids.contains(&id) {
            continue;
        }
        let mut run = DriverRun::new(registry, KeyStore::default());
        if run.process(&telegram, "auto", "m", "ts").is_err() {
            continue;
        }
        ids.insert(id.clone());
        out.push((id, telegram));
        if out.len() == METERS_PER_KIND {
            break;
        }
    }
    assert_eq!(
        out.len(),
        METERS_PER_KIND,
        "the corpus has too few distinct keyless wireless meters"
    );
    out
}

fn wired_name(i: usize) -> String {
    format!("Wired {:02}", i + 1)
}

fn wireless_name(i: usize) -> String {
    format!("Wireless {:02}", i + 1)
}

/// The state topic of a meter named like the two functions above (`Wired 01` → `wired_01`).
fn state_topic(name: &str) -> String {
    format!(
        "{BASE_TOPIC}/{}/state",
        name.to_ascii_lowercase().replace(' ', "_")
    )
}

/// The simulated stick's gap between telegrams in the soak: 50 meters, each once a second.
const STICK_INTERVAL_MS: u64 = 20;

fn config_yaml(
    state_dir: &Path,
    bus: &str,
    udp: u16,
    mqtt: u16,
    wireless: &[(String, Vec<u8>)],
    polling: &str,
    stick_telegrams: Option<&Path>,
) -> String {
    let mut y = format!(
        r#"state_dir: "{state}"
# Every latency sample is its meter's same telegram again; without this the daemon would
# drop it as a radio repeat.
dedup_window: 0
buses:
  - name: bench-bus
    tcp: "{bus}"
    polling: {polling}
receivers:
  - name: udp-in
    type: udp
    bind: "127.0.0.1:{udp}"
{stick}mqtt:
  url: "mqtt://127.0.0.1:{mqtt}"
  base_topic: "{BASE_TOPIC}"
  client_id: "mbbench-daemon"
  discovery: true
meters:
"#,
        state = state_dir.display(),
        // The soak also runs a simulated iM871A on a pseudo-terminal inside the daemon: the
        // same stick session, HCI codec and CRC checks as a real stick.
        stick = stick_telegrams.map_or(String::new(), |file| format!(
            "  - name: sim-stick\n    type: simulated\n    stick: im871a\n    telegrams: \"{}\"\n    interval: {STICK_INTERVAL_MS}ms\n",
            file.display()
        )),
    );
    for i in 0..METERS_PER_KIND {
        let _ = writeln!(
            y,
            "  - name: {}\n    bus: bench-bus\n    address: {}\n    driver: auto",
            wired_name(i),
            i + 1
        );
    }
    for (i, (id, _)) in wireless.iter().enumerate() {
        let _ = writeln!(
            y,
            "  - name: {}\n    address: \"{id}\"\n    driver: auto",
            wireless_name(i)
        );
    }
    y
}

/// Kills the daemon if the bench panics half way.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn proc_status(pid: u32) -> HashMap<String, u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let kb = v.split_whitespace().next()?.parse().ok()?;
            Some((k.to_string(), kb))
        })
        .collect()
}

fn smaps_rollup(pid: u32) -> HashMap<String, u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let kb = v.split_whitespace().next()?.parse().ok()?;
            Some((k.trim().to_string(), kb))
        })
        .collect()
}

/// Resident memory by what is mapped: the executable, shared libraries, the heap, and
/// anonymous mappings (thread stacks, allocator arenas), in kB, largest first.
fn rss_by_mapping(pid: u32) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut sums: HashMap<String, u64> = HashMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping header: address range, perms, offset, device, inode, then the path.
            let path = words.nth(4).unwrap_or("");
            current = if path.is_empty() {
                "anonymous".into()
            } else if path == exe {
                "the executable".into()
            } else if path.starts_with('[') {
                path.to_string()
            } else {
                "shared libraries and other files".into()
            };
        } else if first == "Rss:" {
            let kb: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            *sums.entry(current.clone()).or_default() += kb;
        }
    }
    let mut list: Vec<(String, u64)> = sums.into_iter().filter(|(_, kb)| *kb > 0).collect();
    list.sort_by_key(|e| std::cmp::Reverse(e.1));
    list
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of the process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name is in parentheses and may hold spaces; the fields after it start at
    // field 3 (state), so utime (14) and stime (15) are the 12th and 13th.
    let after = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let at = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    at(11) + at(12)
}

/// Time on a CPU of all the process's threads, in nanoseconds (`schedstat` is exact, where
/// utime and stime count whole clock ticks).
fn cpu_nanos(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// State messages as they arrive at the subscriber: (topic, arrival time).
/// State messages of meters (not the gateway's) the subscriber received, over the whole run.
static METER_STATES_RECEIVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn subscribe(port: u16) -> mpsc::UnboundedReceiver<(String, Instant)> {
    let mut options = MqttOptions::new(
        format!("mbbench-watch-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    client
        .subscribe(format!("{BASE_TOPIC}/+/state"), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let (tx, rx) = mpsc::unbounded_channel();
    let (acked_tx, acked_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        let mut acked_tx = Some(acked_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let at = Instant::now();
                    if p.topic != format!("{BASE_TOPIC}/gateway/state") {
                        METER_STATES_RECEIVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    if tx.send((p.topic.to_string(), at)).is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(t) = acked_tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), acked_rx)
        .await
        .expect("the subscription is acknowledged")
        .expect("the subscriber runs");
    rx
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

struct Memory {
    hwm_kb: u64,
    rss_kb: u64,
    anon_kb: u64,
    file_kb: u64,
    threads: usize,
}

fn memory(pid: u32) -> Memory {
    let status = proc_status(pid);
    let rollup = smaps_rollup(pid);
    let get = |m: &HashMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    let rss = get(&rollup, "Rss");
    let anon = get(&rollup, "Anonymous");
    Memory {
        hwm_kb: get(&status, "VmHWM"),
        rss_kb: get(&status, "VmRSS"),
        anon_kb: anon,
        file_kb: rss.saturating_sub(anon),
        threads: thread_count(pid),
    }
}

fn print_memory(label: &str, m: &Memory) {
    println!(
        "{label:<34} peak (VmHWM) {:>6.2} MB  now (VmRSS) {:>6.2} MB  = anonymous {:>5.2} MB + file-backed {:>5.2} MB  threads {}",
        mb(m.hwm_kb),
        mb(m.rss_kb),
        mb(m.anon_kb),
        mb(m.file_kb),
        m.threads
    );
}

async fn bench(plan: Plan, broker_port: u16, broker_name: &str) {
    let work =
        std::env::temp_dir().join(format!("meterbridge-bench-daemon-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work directory");

    let (wired, wired_frames) = wired_meters();
    let sim = BusSim::new(wired).with_baud(plan.bus_baud);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bus listener");
    let bus_address = listener.local_addr().expect("bus address").to_string();
    let bus_task = tokio::spawn(meterbridge::sim::serve_tcp(
        listener,
        Arc::new(Mutex::new(sim)),
        ServeOptions {
            baud: plan.bus_baud,
            log: false,
        },
    ));

    let wireless = wireless_meters();
    let udp_port = free_udp_port();
    let stick_file = work.join("stick-telegrams.hex");
    if plan.soak.is_some() {
        let lines: String = wireless
            .iter()
            .map(|(_, t)| format!("{}\n", hex::encode_upper(t)))
            .collect();
        std::fs::write(&stick_file, lines).expect("write the stick's telegrams");
    }
    let config = work.join("bench.yaml");
    std::fs::write(
        &config,
        config_yaml(
            &work.join("state"),
            &bus_address,
            udp_port,
            broker_port,
            &wireless,
            if plan.soak.is_some() { "1200ms" } else { "60s" },
            plan.soak.is_some().then_some(stick_file.as_path()),
        ),
    )
    .expect("write config");

    let mut messages = subscribe(broker_port).await;
    let stderr_path = work.join("daemon.log");
    let started = Instant::now();
    let binary = std::env::var_os("MB_BENCH_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_meterbridge").into());
    println!("binary: {}", binary.display());
    let daemon = Daemon(
        Command::new(&binary)
            .args(["run", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).expect("log file"))
            .spawn()
            .expect("start the daemon"),
    );
    let pid = daemon.0.id();
    println!(
        "daemon pid {pid}: {} wired meters ({wired_frames} distinct driver frames) on a simulated bus at {} baud (polling {}), {} wireless meters over UDP, broker {broker_name}, discovery on",
        METERS_PER_KIND,
        plan.bus_baud,
        if plan.soak.is_some() { "1.2 s" } else { "60 s" },
        METERS_PER_KIND
    );

    // Phase 1: every meter publishes once. Wireless telegrams are re-sent every two seconds
    // for meters not heard yet, since the UDP input may not be bound when the first go out.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("UDP socket");
    let lines: Vec<String> = wireless
        .iter()
        .map(|(_, t)| format!("{}\n", hex::encode_upper(t)))
        .collect();
    let wireless_topics: Vec<String> = (0..METERS_PER_KIND)
        .map(|i| state_topic(&wireless_name(i)))
        .collect();
    let wanted: HashSet<String> = (0..METERS_PER_KIND)
        .map(|i| state_topic(&wired_name(i)))
        .chain(wireless_topics.iter().cloned())
        .collect();
    let mut seen: HashSet<String> = HashSet::new();
    let mut last_resend = None::<Instant>;
    let mut wired_done = Duration::ZERO;
    let mut wireless_done = Duration::ZERO;
    while seen.len() < wanted.len() {
        assert!(
            started.elapsed() < FIRST_PUBLISH_LIMIT,
            "only {} of {} meters published within {:?}; daemon log in {}",
            seen.len(),
            wanted.len(),
            FIRST_PUBLISH_LIMIT,
            stderr_path.display()
        );
        if last_resend.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
            last_resend = Some(Instant::now());
            for (topic, line) in wireless_topics.iter().zip(&lines) {
                if !seen.contains(topic) {
                    let _ = udp.send_to(line.as_bytes(), ("127.0.0.1", udp_port)).await;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
        if let Ok(Some((topic, at))) =
            tokio::time::timeout(Duration::from_millis(200), messages.recv()).await
        {
            if wanted.contains(&topic) && seen.insert(topic.clone()) {
                let last = if topic.starts_with(&format!("{BASE_TOPIC}/wired")) {
                    &mut wired_done
                } else {
                    &mut wireless_done
                };
                *last = at.saturating_duration_since(started);
                if std::env::var_os("MB_BENCH_TRACE").is_some() {
                    eprintln!("{:>8.3} s {topic}", last.as_secs_f64());
                }
            }
        }
    }
    let first_publish = started.elapsed();
    let after_first = memory(pid);

    // Phase 2: idle. The next wired cycle is due 60 s after start and no radio traffic comes
    // (except in a soak run, whose simulated stick sends from the start: see the table).
    // A short settle lets the last MQTT acknowledgements and the state save finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ticks_per_second = clock_ticks_per_second();
    let cpu_before = cpu_ticks(pid);
    let nanos_before = cpu_nanos(pid);
    let idle_started = Instant::now();
    tokio::time::sleep(plan.idle).await;
    let idle_elapsed = idle_started.elapsed();
    let idle_ticks = cpu_ticks(pid).saturating_sub(cpu_before);
    let idle_nanos = cpu_nanos(pid).saturating_sub(nanos_before);
    let idle_cpu_seconds = idle_nanos as f64 / 1e9;
    let idle_percent = 100.0 * idle_cpu_seconds / idle_elapsed.as_secs_f64();
    while messages.try_recv().is_ok() {}

    // Phase 3: latency, one telegram at a time, cycling over the wireless meters.
    let cpu_before_latency = cpu_ticks(pid);
    let latency_started = Instant::now();
    let mut latencies = Vec::with_capacity(plan.latency_samples);
    let mut lost = 0usize;
    for n in 0..plan.latency_samples {
        let meter = n % METERS_PER_KIND;
        let topic = &wireless_topics[meter];
        let sent_at = Instant::now();
        udp.send_to(lines[meter].as_bytes(), ("127.0.0.1", udp_port))
            .await
            .expect("send");
        let deadline = sent_at + Duration::from_secs(2);
        let arrived = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, messages.recv()).await {
                Ok(Some((t, at))) if &t == topic => break Some(at),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break None,
            }
        };
        match arrived {
            Some(at) => latencies.push(at.saturating_duration_since(sent_at)),
            None => lost += 1,
        }
        tokio::time::sleep_until((sent_at + plan.spacing).into()).await;
    }
    let latency_elapsed = latency_started.elapsed();
    let latency_cpu = cpu_ticks(pid).saturating_sub(cpu_before_latency) as f64 / ticks_per_second;
    latencies.sort();
    let at_end = memory(pid);
    let by_mapping = rss_by_mapping(pid);

    // Phase 4 (optional): soak at 50× normal rates; memory sampled as it goes.
    let mut soak_report = None;
    if let Some(length) = plan.soak {
        let rss_start = memory(pid);
        let soak_started = Instant::now();
        let mut next_sample = soak_started + Duration::from_secs(30);
        let mut sent = 0u64;
        println!(
            "soak: {} s, 50 wireless meters every 0.4 s over UDP ({} telegrams/s) and each once a second from a simulated iM871A ({} telegrams/s), wired polling every 1.2 s; RSS at start {:.2} MB",
            length.as_secs(),
            METERS_PER_KIND as f64 / 0.4,
            1000 / STICK_INTERVAL_MS,
            mb(rss_start.rss_kb)
        );
        while soak_started.elapsed() < length {
            let round = Instant::now();
            for line in &lines {
                let _ = udp.send_to(line.as_bytes(), ("127.0.0.1", udp_port)).await;
                sent += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            while messages.try_recv().is_ok() {}
            if Instant::now() >= next_sample {
                next_sample += Duration::from_secs(30);
                let m = memory(pid);
                println!(
                    "soak {:>5.0} s: RSS {:.2} MB (peak {:.2} MB), {} telegrams sent, {} meter states received",
                    soak_started.elapsed().as_secs_f64(),
                    mb(m.rss_kb),
                    mb(m.hwm_kb),
                    sent,
                    METER_STATES_RECEIVED.load(std::sync::atomic::Ordering::Relaxed)
                );
            }
            tokio::time::sleep_until((round + Duration::from_millis(400)).into()).await;
        }
        // Let the last publications arrive before comparing counts.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss_end = memory(pid);
        soak_report = Some((rss_start, rss_end, sent, soak_started.elapsed()));
    }

    // Shut down as systemd would, and check the daemon leaves cleanly.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let mut daemon = daemon;
    let stop_started = Instant::now();
    let mut exit = None;
    while stop_started.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(status)) = daemon.0.try_wait() {
            exit = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bus_task.abort();

    println!();
    println!(
        "all 100 meters published once after {:.1} s: the last wireless one at {:.1} s, the last wired one at {:.1} s (one cycle of 50 reads at {} baud)",
        first_publish.as_secs_f64(),
        wireless_done.as_secs_f64(),
        wired_done.as_secs_f64(),
        plan.bus_baud
    );
    print_memory("after every meter published once:", &after_first);
    print_memory("after the latency run:", &at_end);
    let parts: Vec<String> = by_mapping
        .iter()
        .map(|(what, kb)| format!("{what} {:.2} MB", mb(*kb)))
        .collect();
    println!("resident at the end, by mapping: {}", parts.join(", "));
    println!(
        "idle: {:.3} ms on a CPU (schedstat; {idle_ticks} ticks of {:.0} ms in utime+stime) over {:.1} s = {idle_percent:.4} % of one core",
        idle_cpu_seconds * 1e3,
        1000.0 / ticks_per_second,
        idle_elapsed.as_secs_f64(),
    );
    if latencies.is_empty() {
        println!("latency: no state message arrived ({lost} lost)");
    } else {
        println!(
            "latency UDP send -> MQTT state at the subscriber: {} samples, {lost} lost, median {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms, min {:.3} ms",
            latencies.len(),
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.9)),
            ms(percentile(&latencies, 0.99)),
            ms(*latencies.last().unwrap_or(&Duration::ZERO)),
            ms(latencies[0]),
        );
    }
    println!(
        "daemon CPU during the latency run: {latency_cpu:.2} s over {:.1} s ({:.1} % of one core, {:.2} ms per telegram)",
        latency_elapsed.as_secs_f64(),
        100.0 * latency_cpu / latency_elapsed.as_secs_f64(),
        1e3 * latency_cpu / plan.latency_samples.max(1) as f64
    );
    match exit {
        Some(status) => println!(
            "SIGTERM: the daemon exited with {status} after {:.2} s",
            stop_started.elapsed().as_secs_f64()
        ),
        None => println!("SIGTERM: the daemon did not exit within 10 s (killed)"),
    }

    if let Some((start, end, sent, took)) = &soak_report {
        // The daemon prints its counters when it stops (`cli::daemon::shutdown_summary`):
        // "readings: 56114 made (56102 of meters, 12 of the gateway) ...". The subscriber
        // counts the meters' state documents, so the meters' share is what it must equal.
        let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let produced = log.lines().find_map(|l| {
            // The line is logged, so it has the log's time and level in front.
            let rest = l.split("readings: ").nth(1)?.split("made (").nth(1)?;
            rest.split(' ').next()?.parse::<u64>().ok()
        });
        let published = METER_STATES_RECEIVED.load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "soak over {:.0} s: {sent} telegrams sent; readings produced {} (the daemon's count), published and received {published}: {}",
            took.as_secs_f64(),
            produced.map_or("unknown".to_string(), |p| p.to_string()),
            match produced {
                Some(p) if p == published => "equal".to_string(),
                Some(p) => format!("DIFFERENT by {}", published as i64 - p as i64),
                None => "no count in the daemon's log".to_string(),
            }
        );
        println!(
            "soak RSS: {:.2} MB at start, {:.2} MB at end ({:+.2} MB), peak {:.2} MB",
            mb(start.rss_kb),
            mb(end.rss_kb),
            mb(end.rss_kb) - mb(start.rss_kb),
            mb(end.hwm_kb)
        );
    }
    let median = latencies.get(latencies.len() / 2).copied();
    println!();
    println!("| figure | measured | target | |");
    println!("| --- | ---: | ---: | --- |");
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let peak = at_end.hwm_kb.max(after_first.hwm_kb);
    println!(
        "| peak RSS, 100 meters | {:.2} MB | ≤ 15 MB | {} |",
        mb(peak),
        verdict(mb(peak) <= 15.0)
    );
    println!("| RSS at the end | {:.2} MB | | |", mb(at_end.rss_kb));
    if plan.soak.is_some() {
        // The soak's simulated stick sends from the daemon's start, so nothing is idle here;
        // the idle figure comes from a run without MB_SOAK_SECONDS.
        println!("| idle CPU | not measured (the soak's simulated stick is sending) | ≈ 0 | — |");
    } else {
        println!(
            "| idle CPU | {idle_percent:.4} % of one core | ≈ 0 | {} |",
            verdict(idle_percent < 0.5)
        );
    }
    match median {
        Some(m) => println!(
            "| latency median (p99) | {:.2} ms ({:.2} ms) | ≤ 5 ms | {} |",
            ms(m),
            ms(percentile(&latencies, 0.99)),
            verdict(ms(m) <= 5.0 && lost == 0)
        ),
        None => println!("| latency median | none arrived | ≤ 5 ms | MISSED |"),
    }
    if plan.quick {
        println!("(quick run: MB_BENCH_QUICK is set; the idle and latency phases are short)");
    }
    if std::env::var_os("MB_BENCH_KEEP").is_some() {
        println!("work directory kept: {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
}

fn main() {
    let plan = Plan::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (port, name, _mosquitto) = if broker::mosquitto_available() {
        let port = broker::free_port();
        (port, "mosquitto", Some(broker::start_mosquitto(port)))
    } else {
        (broker::rumqttd_port(), "rumqttd (in this process)", None)
    };
    runtime.block_on(bench(plan, port, name));
}
