//! Faults between the gateway and a wired bus, with the daemon polling: the M-Bus/TCP converter
//! cuts the connection in the middle of an answer, garbles answers, swallows them, and refuses
//! connections for a while. A proxy between the gateway and a simulated bus causes the faults and
//! counts every answer it let through whole. The gateway must emit exactly one reading per whole
//! answer — none from a damaged or cut answer, none twice — with the right value, and read again
//! soon after each fault ends.

mod support;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meterbridge::config::{parse_with, ValidateOptions};
use meterbridge::daemon::gateway::{self, PrintFormat, RunOptions};
use meterbridge::sim::{BusSim, ServeOptions, SimMeter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

const PASS: u8 = 0;
/// Forward half of each answer from the bus, then close both connections.
const CUT_MID_FRAME: u8 = 1;
/// Flip one bit in the middle of each answer (its checksum no longer matches).
const GARBLE: u8 = 2;
/// Swallow every answer: the meter seems silent.
const SWALLOW: u8 = 3;
/// Refuse new connections and close the current one.
const DOWN: u8 = 4;

struct Proxy {
    mode: Arc<AtomicU8>,
    /// Whole RSP_UD frames the gateway received unchanged (found in what was delivered).
    whole_answers: Arc<AtomicU64>,
    address: String,
}

/// A simulated meter at primary address 1 that generates its answers: each new one (a request
/// with the frame count bit toggled) carries the next access number and 10 litres more, a
/// repeated request gets the same answer again. Returns the bus's address and the length of
/// its answers.
async fn start_generated_bus() -> (String, usize) {
    let secondary = meterbridge::sim::bus::secondary_of(&support::kamheat_frame()).unwrap();
    let answer_len = BusSim::new(vec![SimMeter::new(1, secondary)])
        .handle(&meterbridge::wire::wired::req_ud2(1, true), 2400)
        .bytes
        .len();
    (
        serve_bus(BusSim::new(vec![SimMeter::new(1, secondary)])).await,
        answer_len,
    )
}

async fn serve_bus(sim: BusSim) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(meterbridge::sim::serve_tcp(
        listener,
        Arc::new(Mutex::new(sim)),
        ServeOptions {
            baud: 2400,
            log: false,
        },
    ));
    address
}

async fn start_proxy(upstream: String, frame_len: usize) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let mode = Arc::new(AtomicU8::new(PASS));
    let whole_answers = Arc::new(AtomicU64::new(0));
    let (m, w) = (mode.clone(), whole_answers.clone());
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            if m.load(Ordering::SeqCst) == DOWN {
                drop(client);
                continue;
            }
            let Ok(bus) = TcpStream::connect(&upstream).await else {
                continue;
            };
            tokio::spawn(relay(client, bus, m.clone(), w.clone(), frame_len));
        }
    });
    Proxy {
        mode,
        whole_answers,
        address,
    }
}

/// Requests go to the bus unchanged; answers come back through the fault of the moment. Answers
/// may arrive in pieces: the simulator paces its bytes like a serial line at 2400 baud.
async fn relay(
    client: TcpStream,
    bus: TcpStream,
    mode: Arc<AtomicU8>,
    whole: Arc<AtomicU64>,
    frame_len: usize,
) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut bus_rx, mut bus_tx) = bus.into_split();
    let requests = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok(n) = client_rx.read(&mut buf).await {
            if n == 0 || bus_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    // What reached the gateway, searched for whole answers: a frame begun under one fault and
    // finished in PASS counts when (and only when) its bytes arrived intact.
    let mut delivered: Vec<u8> = Vec::new();
    // Position within the current long frame, for GARBLE.
    let mut at = 0usize;
    let mut buf = [0u8; 1024];
    loop {
        let n = tokio::select! {
            r = bus_rx.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            // Notice DOWN even while the bus is quiet.
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                if mode.load(Ordering::SeqCst) == DOWN {
                    break;
                }
                continue;
            }
        };
        let mut chunk = buf[..n].to_vec();
        let now = mode.load(Ordering::SeqCst);
        if now != GARBLE {
            at = 0;
        }
        match now {
            PASS => {}
            CUT_MID_FRAME => {
                let half = chunk.len() / 2;
                let _ = client_tx.write_all(&chunk[..half.max(1)]).await;
                break;
            }
            GARBLE => {
                // One flipped bit per answer, whatever pieces it arrives in (the simulator
                // paces bytes at the baud rate): the checksum, a plain byte sum, catches one
                // flipped bit but not two flips that cancel out.
                for b in chunk.iter_mut() {
                    if at == 0 && *b == 0xE5 {
                        continue;
                    }
                    if at == frame_len / 2 {
                        *b ^= 0x10;
                    }
                    at = (at + 1) % frame_len;
                }
            }
            SWALLOW => {
                // The gap in the delivered bytes: nothing before it completes a frame.
                delivered.clear();
                continue;
            }
            _ => break,
        }
        if client_tx.write_all(&chunk).await.is_err() {
            break;
        }
        delivered.extend_from_slice(&chunk);
        while let Some(i) = delivered.windows(frame_len).position(is_whole_answer) {
            whole.fetch_add(1, Ordering::SeqCst);
            delivered.drain(..i + frame_len);
        }
        let keep = delivered.len().saturating_sub(frame_len - 1);
        delivered.drain(..keep);
    }
    requests.abort();
}

/// A long frame with matching length bytes, checksum and stop byte: what a master accepts. The
/// test's single-bit garbling always breaks the checksum, so "accepted" here means "intact".
fn is_whole_answer(f: &[u8]) -> bool {
    let n = f.len();
    n >= 6
        && f[0] == 0x68
        && f[3] == 0x68
        && f[1] == f[2]
        && usize::from(f[1]) + 6 == n
        && f[n - 1] == 0x16
        && f[4..n - 2].iter().fold(0u8, |a, b| a.wrapping_add(*b)) == f[n - 2]
}

/// Runs the gateway on `yaml` in this process and collects every reading it emits (the meter's
/// `total_volume_m3`, with the time it arrived).
fn start_gateway(
    yaml: &str,
) -> (
    tokio::task::JoinHandle<Result<gateway::GatewayStats, String>>,
    watch::Sender<bool>,
    Observed,
) {
    let (config, _) = parse_with(yaml, "test.yaml", &ValidateOptions::with_built_in_drivers())
        .unwrap_or_else(|e| panic!("{e}"));
    let (emitted_tx, mut emitted_rx) = mpsc::unbounded_channel::<(String, String)>();
    let (stop, stop_rx) = watch::channel(false);
    let options = RunOptions {
        print: PrintFormat::None,
        stop: Some(stop_rx),
        instance: "bus-faults".into(),
        emitted: Some(emitted_tx),
        ..RunOptions::default()
    };
    support::global_log();
    let task = tokio::spawn(gateway::run(config, options));
    let observed = Observed {
        readings: Arc::new(Mutex::new(Vec::new())),
    };
    let sink = observed.readings.clone();
    tokio::spawn(async move {
        while let Some((_, doc)) = emitted_rx.recv().await {
            let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
            let m3 = v["total_volume_m3"].as_f64().unwrap_or(f64::NAN);
            sink.lock().unwrap().push((Instant::now(), m3));
        }
    });
    (task, stop, observed)
}

struct Observed {
    readings: Arc<Mutex<Vec<(Instant, f64)>>>,
}

impl Observed {
    fn count(&self) -> usize {
        self.readings.lock().unwrap().len()
    }

    /// Waits for a reading after `since`; returns how long that took from `since`.
    async fn next_after(&self, since: Instant, limit: Duration) -> Duration {
        let give_up = Instant::now() + limit;
        loop {
            if let Some((at, _)) = self
                .readings
                .lock()
                .unwrap()
                .iter()
                .find(|(at, _)| *at > since)
            {
                return *at - since;
            }
            assert!(Instant::now() < give_up, "no reading within {limit:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_faults_lose_no_reading_and_never_publish_a_damaged_one() {
    let (bus, answer_len) = start_generated_bus().await;
    let proxy = start_proxy(bus, answer_len).await;
    let state_dir =
        std::env::temp_dir().join(format!("meterbridge-bus-faults-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    let yaml = format!(
        r#"state_dir: "{}"
buses:
  - name: plant-room
    tcp: "{}"
    polling: 150ms
    request_timeout: 300ms
    emit: every
meters:
  - name: Heat
    bus: plant-room
    address: 1
    driver: kamheat
"#,
        state_dir.display(),
        proxy.address
    );
    let (task, stop, observed) = start_gateway(&yaml);

    let phase = Duration::from_millis(1500);
    let limit = Duration::from_secs(15);
    let mut recoveries = Vec::new();
    observed.next_after(Instant::now(), limit).await;
    tokio::time::sleep(phase).await;
    for (name, fault) in [
        ("cut mid-frame", CUT_MID_FRAME),
        ("garbled", GARBLE),
        ("swallowed", SWALLOW),
        ("connection refused", DOWN),
    ] {
        proxy.mode.store(fault, Ordering::SeqCst);
        // A reading whose answer was already on its way when the fault began may still land.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let during = observed.count();
        tokio::time::sleep(phase).await;
        assert_eq!(
            observed.count(),
            during,
            "a reading was published while every answer was {name}"
        );
        let cleared = Instant::now();
        proxy.mode.store(PASS, Ordering::SeqCst);
        let recovery = observed.next_after(cleared, limit).await;
        recoveries.push((name, recovery));
        tokio::time::sleep(phase).await;
    }
    // No answer in flight when the gateway stops: one counted here but cut short by the stop
    // would look like a lost reading.
    proxy.mode.store(SWALLOW, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(true).unwrap();
    let stats = tokio::time::timeout(limit, task)
        .await
        .expect("the gateway stops")
        .unwrap()
        .unwrap();
    // Let the emitted-state reader drain.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let readings = observed.readings.lock().unwrap().clone();
    let whole = proxy.whole_answers.load(Ordering::SeqCst);
    // Every whole answer became exactly one reading: none lost, none doubled, none invented.
    assert_eq!(readings.len() as u64, whole, "readings vs whole answers");
    assert!(whole >= 10, "too few reads to mean anything: {whole}");
    // Each reading is a new answer: its volume is above the one before (a reading published
    // twice, or an old answer taken for a new one, would repeat or go back), by whole
    // multiples of 10 litres (a damaged answer that slipped through would not).
    let volumes: Vec<f64> = readings.iter().map(|(_, v)| *v).collect();
    assert!(volumes.iter().all(|v| v.is_finite()), "{volumes:?}");
    for pair in volumes.windows(2) {
        let step_litres = ((pair[1] - pair[0]) * 1000.0).round();
        assert!(
            step_litres >= 10.0 && step_litres % 10.0 == 0.0,
            "volumes {} then {} m³ in {volumes:?}",
            pair[0],
            pair[1]
        );
    }
    assert!(stats.bus_errors > 0, "the faults were not seen: {stats:?}");
    for (name, took) in &recoveries {
        eprintln!(
            "{name}: first reading {} ms after the fault cleared",
            took.as_millis()
        );
    }
    eprintln!(
        "{} whole answers, {} readings, {} bus errors",
        whole,
        readings.len(),
        stats.bus_errors
    );
    let _ = std::fs::remove_dir_all(&state_dir);
}

/// A proxy that can turn slow: while `slow` is set, each answer from the bus is delivered
/// `delay` after it left the bus, longer than the master waits. Order is kept, as in a
/// converter's buffer.
async fn start_delaying_proxy(upstream: String, delay: Duration) -> (String, Arc<AtomicU8>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let slow = Arc::new(AtomicU8::new(0));
    let flag = slow.clone();
    tokio::spawn(async move {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let bus = TcpStream::connect(&upstream).await.unwrap();
        let (mut client_rx, mut client_tx) = client.into_split();
        let (mut bus_rx, mut bus_tx) = bus.into_split();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok(n) = client_rx.read(&mut buf).await {
                if n == 0 || bus_tx.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        let (queue_tx, mut queue_rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
        tokio::spawn(async move {
            while let Some((at, bytes)) = queue_rx.recv().await {
                tokio::time::sleep_until(at.into()).await;
                if client_tx.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let mut buf = [0u8; 512];
        while let Ok(n) = bus_rx.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let at = if flag.load(Ordering::SeqCst) == 1 {
                Instant::now() + delay
            } else {
                Instant::now()
            };
            if queue_tx.send((at, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    (address, slow)
}

/// The access number of a wired RSP_UD with a 12-byte header (CI 0x72).
fn access_number(frame: &[u8]) -> u8 {
    assert_eq!(frame[6], 0x72, "CI");
    frame[15]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_is_never_taken_for_the_next_one() {
    use meterbridge::master::{Master, MasterOptions, ReadOptions, Target};
    use meterbridge::transport::open::{open_port, Endpoint};
    use meterbridge::transport::port::PortConfig;

    // A generated meter: each new answer carries the next access number and a new volume.
    let (bus, _) = start_generated_bus().await;
    let config = PortConfig {
        baud: 2400,
        extra_latency: Duration::from_millis(300),
        echo: false,
    };
    // Long enough that the first attempt gives up and the repeat's window sees the late answer.
    let (address, slow) = start_delaying_proxy(bus, Duration::from_millis(700)).await;
    let port = open_port(&Endpoint::Tcp(address), config).await.unwrap();
    let mut master = Master::new(
        port,
        MasterOptions {
            retries: 2,
            ..MasterOptions::default()
        },
    );
    // As the daemon reads without `force_reset`: no SND_NKE in front that would swallow a
    // stray frame.
    let read = ReadOptions {
        reset_first: false,
        ..ReadOptions::default()
    };
    let mut access = Vec::new();
    for i in 0..4 {
        slow.store(u8::from(i == 1), Ordering::SeqCst);
        let frames = master.read(Target::Primary(1), read).await.unwrap();
        assert_eq!(frames.len(), 1);
        access.push(access_number(&frames[0]));
    }
    // The simulated meter numbers each new answer; a repeated request gets the same number.
    // Read 2's first answer arrives late, inside the window of the repeated request, and is
    // taken; the repeat's own answer arrives after read 2 ended and must not pass for read 3's.
    let expected: Vec<u8> = (0..4).map(|i| access[0].wrapping_add(i)).collect();
    assert_eq!(access, expected, "access numbers of four reads");
}

/// A simulated bus on a fresh pseudo-terminal, reachable through `link` (re-pointed atomically,
/// as udev does for /dev/serial/by-id/ when a USB converter comes back). The meters live in
/// `sim` and keep their state across plugs, as real meters on the bus would.
struct PluggedBus {
    _slave: tokio_serial::SerialStream,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn plug_bus(link: &std::path::Path, sim: Arc<Mutex<BusSim>>) -> PluggedBus {
    use tokio_serial::SerialPort;
    let (master, slave) = tokio_serial::SerialStream::pair().unwrap();
    let path = slave.name().unwrap();
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&path, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
    let server = tokio::spawn(async move {
        meterbridge::sim::serve_stream(
            master,
            &sim,
            ServeOptions {
                baud: 2400,
                log: false,
            },
        )
        .await
    });
    PluggedBus {
        _slave: slave,
        server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_converter_unplugged_and_plugged_back_is_read_again() {
    let secondary = meterbridge::sim::bus::secondary_of(&support::kamheat_frame()).unwrap();
    let sim = Arc::new(Mutex::new(BusSim::new(vec![SimMeter::new(1, secondary)])));
    let dir = std::env::temp_dir().join(format!("meterbridge-unplug-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("ttyMBUS");
    let plugged = plug_bus(&link, sim.clone());
    let yaml = format!(
        r#"state_dir: "{}"
buses:
  - name: cellar
    device: "{}"
    baud: 2400
    polling: 150ms
    emit: every
meters:
  - name: Heat
    bus: cellar
    address: 1
    driver: kamheat
"#,
        dir.join("state").display(),
        link.display()
    );
    let messages = support::global_log();
    let (task, stop, observed) = start_gateway(&yaml);
    let limit = Duration::from_secs(15);
    observed.next_after(Instant::now(), limit).await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Unplugged: the converter's end of the line is gone.
    plugged.server.abort();
    drop(plugged);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = observed.count();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(observed.count(), before, "a reading while unplugged");

    let replugged_at = Instant::now();
    let _plugged = plug_bus(&link, sim.clone());
    let recovery = observed.next_after(replugged_at, limit).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.send(true).unwrap();
    tokio::time::timeout(limit, task)
        .await
        .expect("the gateway stops")
        .unwrap()
        .unwrap();

    // Every reading a new answer (the meter adds 10 litres per answer): none repeated, none
    // from before the unplug published again after it.
    let volumes: Vec<f64> = observed
        .readings
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.1)
        .collect();
    assert!(volumes.len() >= 6, "{volumes:?}");
    for pair in volumes.windows(2) {
        let step_litres = ((pair[1] - pair[0]) * 1000.0).round();
        assert!(
            step_litres >= 10.0 && step_litres % 10.0 == 0.0,
            "volumes {} then {} m³ in {volumes:?}",
            pair[0],
            pair[1]
        );
    }
    let log: Vec<String> = messages.events().into_iter().map(|e| e.message).collect();
    let count = |needle: &str| log.iter().filter(|m| m.contains(needle)).count();
    eprintln!(
        "serial converter: first reading {} ms after it was plugged back; {} readings; log: {log:#?}",
        recovery.as_millis(),
        volumes.len()
    );
    // Reported once when it went, once when it came back; not once per retry.
    assert_eq!(count("bus cellar: the connection failed"), 1, "{log:#?}");
    assert_eq!(count("bus cellar connected"), 2, "{log:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_does_not_get_the_meters_previous_answer_again() {
    use meterbridge::master::{Master, MasterOptions, ReadOptions, Target};
    use meterbridge::transport::open::{open_port, Endpoint};
    use meterbridge::transport::port::PortConfig;

    let (bus, _) = start_generated_bus().await;
    let config = PortConfig {
        baud: 2400,
        extra_latency: Duration::from_millis(300),
        echo: false,
    };
    // As the daemon reads without `force_reset`.
    let read = ReadOptions {
        reset_first: false,
        ..ReadOptions::default()
    };
    let mut access = Vec::new();
    // Each master is a reopened port (the daemon makes a new one after a failure); the meter
    // remembers the frame count bit of the last request it saw.
    for _ in 0..3 {
        let port = open_port(&Endpoint::Tcp(bus.clone()), config)
            .await
            .unwrap();
        let mut master = Master::new(port, MasterOptions::default());
        let frames = master.read(Target::Primary(1), read).await.unwrap();
        access.push(access_number(&frames[0]));
    }
    let expected: Vec<u8> = (0..3).map(|i| access[0].wrapping_add(i)).collect();
    assert_eq!(
        access, expected,
        "access numbers of reads through three connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_reading_by_secondary_address_gets_a_new_answer() {
    use meterbridge::master::{Master, MasterOptions, ReadOptions, SecondaryMask, Target};
    use meterbridge::transport::open::{open_port, Endpoint};
    use meterbridge::transport::port::PortConfig;

    let (bus, _) = start_generated_bus().await;
    let secondary = meterbridge::sim::bus::secondary_of(&support::kamheat_frame()).unwrap();
    let mask: SecondaryMask = format!("{:08X}FFFFFFFF", secondary.id).parse().unwrap();
    let config = PortConfig {
        baud: 2400,
        extra_latency: Duration::from_millis(300),
        echo: false,
    };
    let read = ReadOptions {
        reset_first: false,
        ..ReadOptions::default()
    };
    let mut access = Vec::new();
    for _ in 0..3 {
        let port = open_port(&Endpoint::Tcp(bus.clone()), config)
            .await
            .unwrap();
        let mut master = Master::new(port, MasterOptions::default());
        let frames = master.read(Target::Secondary(mask), read).await.unwrap();
        access.push(access_number(&frames[0]));
    }
    let expected: Vec<u8> = (0..3).map(|i| access[0].wrapping_add(i)).collect();
    assert_eq!(
        access, expected,
        "access numbers of reads through three connections"
    );
}
