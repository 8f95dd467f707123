//! Inputs as the daemon runs them: a stick unplugged and replugged (pty closed and reopened
//! behind a stable link), raw telegrams over UDP, TCP and MQTT, each decoded to its reading.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meterbridge::drivers::run::DriverRun;
use meterbridge::drivers::Registry;
use meterbridge::receivers::input::{self, InputEvent, InputSpec};
use meterbridge::receivers::{LinkMode, StickKind};
use meterbridge::security::KeyStore;
use meterbridge::sim::stick::{SharedStickLog, StickSimConfig, StickSimLog};
use meterbridge::wire::hex;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_serial::{SerialPort, SerialStream};

#[path = "support/broker.rs"]
mod broker;

const WAIT: Duration = Duration::from_secs(10);
/// Kamstrup Multical 21 (stored decrypted), `total_m3` 6.408 in the driver corpus.
const KAMSTRUP: &str =
    "2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713";

fn total_m3(bytes: &[u8]) -> f64 {
    let mut run = DriverRun::new(Registry::built_in_static(), KeyStore::default());
    let line = run
        .process(bytes, "auto", "m", "ts")
        .expect("the telegram decodes");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    v["total_m3"].as_f64().expect("total_m3 present")
}

fn temp_path(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!("meterbridge-{tag}-{}-{nanos}", std::process::id()))
}

/// One simulated stick on a fresh pty, reachable through `link` (re-pointed atomically, as udev
/// does for /dev/serial/by-id/ when a stick comes back).
struct PluggedStick {
    slave: SerialStream,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    log: SharedStickLog,
}

fn plug(link: &std::path::Path, cfg: StickSimConfig) -> PluggedStick {
    let (master, slave) = SerialStream::pair().expect("pty");
    let path = slave.name().expect("pty name");
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&path, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
    let log: SharedStickLog = Arc::new(Mutex::new(StickSimLog::default()));
    let server = tokio::spawn(meterbridge::sim::imst::serve(
        master,
        StickKind::Im871a,
        cfg,
        log.clone(),
    ));
    PluggedStick { slave, server, log }
}

async fn next_telegram(rx: &mut mpsc::Receiver<InputEvent>, events: &mut Vec<String>) -> Vec<u8> {
    loop {
        match timeout(WAIT, rx.recv())
            .await
            .expect("an event in time")
            .expect("input alive")
        {
            InputEvent::Telegram { heard, .. } => return heard.frame,
            InputEvent::Up { .. } => events.push("up".into()),
            InputEvent::Down { reason, .. } => events.push(format!("down: {reason}")),
            other => events.push(format!("{other:?}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stick_unplugged_and_replugged_is_used_again() {
    let link = temp_path("stick-link");
    let cfg = StickSimConfig {
        telegrams: vec![hex::decode(KAMSTRUP).unwrap()],
        interval: Duration::from_millis(20),
        repeat: true,
        rssi_dbm: -71,
        ..StickSimConfig::default()
    };
    let first = plug(&link, cfg.clone());
    let (tx, mut rx) = mpsc::channel(64);
    let spec = InputSpec::Stick {
        kind: StickKind::Im871a,
        device: link.to_string_lossy().into_owned(),
        mode: LinkMode::T1,
        baud: None,
    };
    let task = tokio::spawn(input::run(Arc::from("stick"), spec, tx));
    let mut events = Vec::new();
    let frame = next_telegram(&mut rx, &mut events).await;
    assert_eq!(total_m3(&frame), 6.408);
    assert_eq!(events, vec!["up".to_string()]);

    // Unplug: both ends of the pty go away, so the open device fails.
    drop(first.slave);
    first.server.abort();
    let _ = first.server.await;
    drop(first.log);
    let unplugged = Instant::now();
    let reason = loop {
        match timeout(WAIT, rx.recv())
            .await
            .expect("down reported")
            .expect("alive")
        {
            InputEvent::Down { reason, .. } => break reason,
            InputEvent::Telegram { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(reason.contains("im871a"), "{reason}");
    // Stay unplugged for a while: retries happen, but the outage is reported once.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let second = plug(&link, cfg);
    let replugged = Instant::now();
    let mut events = Vec::new();
    let frame = next_telegram(&mut rx, &mut events).await;
    let recovery = replugged.elapsed();
    assert_eq!(total_m3(&frame), 6.408);
    assert_eq!(events, vec!["up".to_string()], "one outage, one recovery");
    eprintln!(
        "replugged stick delivering again {} ms after it came back ({} ms after unplug)",
        recovery.as_millis(),
        unplugged.elapsed().as_millis()
    );
    // How soon is a property of the backoff (unit-tested in receivers::input); timing here would
    // only make the test flaky on a loaded machine.
    task.abort();
    drop(second.slave);
    second.server.abort();
    let _ = std::fs::remove_file(&link);
}

#[tokio::test]
async fn a_missing_stick_is_reported_once_and_retried() {
    let (tx, mut rx) = mpsc::channel(64);
    let spec = InputSpec::Stick {
        kind: StickKind::Amb8465,
        device: "/dev/serial/by-id/does-not-exist".into(),
        mode: LinkMode::T1,
        baud: None,
    };
    let task = tokio::spawn(input::run(Arc::from("amber"), spec, tx));
    let first = timeout(WAIT, rx.recv()).await.unwrap().unwrap();
    match first {
        InputEvent::Down { reason, .. } => {
            assert!(
                reason.contains("/dev/serial/by-id/does-not-exist"),
                "{reason}"
            );
            assert!(reason.contains("retrying"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // Several retries later, still no second report.
    assert!(timeout(Duration::from_millis(1500), rx.recv())
        .await
        .is_err());
    task.abort();
}

async fn telegram_from(
    spec: InputSpec,
    send: impl FnOnce() + Send + 'static,
) -> (Vec<u8>, Option<i16>) {
    let (tx, mut rx) = mpsc::channel(64);
    let task = tokio::spawn(input::run(Arc::from("net"), spec, tx));
    // Wait until the input is listening before sending.
    loop {
        match timeout(WAIT, rx.recv()).await.unwrap().unwrap() {
            InputEvent::Up { .. } => break,
            InputEvent::Down { reason, .. } => panic!("input failed: {reason}"),
            _ => {}
        }
    }
    tokio::task::spawn_blocking(send);
    let out = loop {
        match timeout(WAIT, rx.recv()).await.unwrap().unwrap() {
            InputEvent::Telegram { heard, .. } => break (heard.frame, heard.rssi_dbm),
            InputEvent::Malformed { reason, .. } => panic!("malformed: {reason}"),
            _ => {}
        }
    };
    task.abort();
    out
}

#[tokio::test]
async fn raw_telegram_over_udp_is_decoded() {
    let port = broker::free_port();
    let spec = InputSpec::Udp {
        bind: format!("127.0.0.1:{port}"),
    };
    let (frame, _) = telegram_from(spec, move || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(KAMSTRUP.as_bytes(), ("127.0.0.1", port)).unwrap();
    })
    .await;
    assert_eq!(total_m3(&frame), 6.408);
}

#[tokio::test]
async fn json_telegram_over_tcp_is_decoded_with_its_rssi() {
    let port = broker::free_port();
    let spec = InputSpec::TcpServer {
        bind: format!("127.0.0.1:{port}"),
    };
    let (frame, rssi) = telegram_from(spec, move || {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        writeln!(s, "{{\"telegram\":\"{KAMSTRUP}\",\"rssi\":-77}}").unwrap();
    })
    .await;
    assert_eq!(total_m3(&frame), 6.408);
    assert_eq!(rssi, Some(-77));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_telegram_published_on_mqtt_is_decoded() {
    let port = broker::rumqttd_port();
    let spec = input::mqtt_input_from_url(&format!("mqtt://127.0.0.1:{port}/wmbus/+/raw")).unwrap();
    let (frame, _) = telegram_from(spec, move || {
        use rumqttc::{Client, MqttOptions, QoS};
        let (client, mut connection) =
            Client::new(MqttOptions::new("esp32-receiver", "127.0.0.1", port), 10);
        client
            .publish(
                "wmbus/esp32/raw",
                QoS::AtLeastOnce,
                false,
                KAMSTRUP.as_bytes(),
            )
            .unwrap();
        for event in connection.iter().take(10) {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) = event {
                break;
            }
        }
    })
    .await;
    assert_eq!(total_m3(&frame), 6.408);
}

#[test]
fn mqtt_input_urls() {
    let spec = input::mqtt_input_from_url("mqtt://user:pw@broker.lan:1884/esp/+/telegram").unwrap();
    assert_eq!(
        spec,
        InputSpec::Mqtt {
            host: "broker.lan".into(),
            port: 1884,
            topic: "esp/+/telegram".into(),
            username: Some("user".into()),
            password: Some("pw".into()),
        }
    );
    assert!(input::mqtt_input_from_url("mqtt://broker")
        .unwrap_err()
        .contains("topic"));
    assert!(input::mqtt_input_from_url("http://x/y").is_err());
}
