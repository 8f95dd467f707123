//! The gateway daemon end to end against a real broker (in-process rumqttd, and mosquitto when
//! installed): a simulated wired bus over TCP and a wireless input over UDP, MQTT with Home
//! Assistant discovery. Asserts on the exact discovery and state payloads, emit on change,
//! periodic re-emit, the re-publish after Home Assistant's birth message, and the removal of
//! a meter's entities when it leaves the configuration.

#[path = "support/broker.rs"]
mod broker;

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meterbridge::config::{parse_with, ValidateOptions};
use meterbridge::daemon::gateway::{self, GatewayStats, PrintFormat, RunOptions};
use meterbridge::sim::{BusSim, ServeOptions, SimMeter};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::watch;
use tracing::instrument::WithSubscriber as _;

const KAMSTRUP: &str =
    "2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713";
const WAIT: Duration = Duration::from_secs(15);

/// A simulated bus with one Kamstrup 403 at primary address 1, behind a TCP "gateway".
async fn start_bus() -> String {
    let frame = support::kamheat_frame();
    let secondary = meterbridge::sim::bus::secondary_of(&frame).unwrap();
    let sim = BusSim::new(vec![SimMeter::new(1, secondary)
        .with_telegrams(vec![frame])
        .unwrap()]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
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

#[derive(Debug, Clone)]
struct Message {
    topic: String,
    payload: Vec<u8>,
}

struct Watcher {
    messages: Arc<Mutex<Vec<Message>>>,
    client: AsyncClient,
}

impl Watcher {
    async fn start(port: u16, filters: &[String]) -> Watcher {
        let id = format!("watcher-{}-{}", std::process::id(), broker::free_port());
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        for f in filters {
            client.subscribe(f.clone(), QoS::AtLeastOnce).await.unwrap();
        }
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        let (subscribed_tx, mut subscribed_rx) = watch::channel(0usize);
        tokio::spawn(async move {
            let mut acks = 0;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        sink.lock().unwrap().push(Message {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                        });
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        acks += 1;
                        let _ = subscribed_tx.send(acks);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let n = filters.len();
        tokio::time::timeout(WAIT, subscribed_rx.wait_for(|a| *a >= n))
            .await
            .expect("subscribed")
            .unwrap();
        Watcher { messages, client }
    }

    /// Publishes `body` on `topic` (QoS 1), as a client asking the gateway something.
    async fn send(&self, topic: String, body: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, body.to_string())
            .await
            .unwrap();
    }

    fn on(&self, topic: &str) -> Vec<Message> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.topic == topic)
            .cloned()
            .collect()
    }

    async fn wait_for(&self, topic: &str, count: usize) -> Vec<Message> {
        let until = Instant::now() + WAIT;
        loop {
            let found = self.on(topic);
            if found.len() >= count {
                return found;
            }
            assert!(
                Instant::now() < until,
                "{count} message(s) on {topic} expected, got {}; all topics: {:?}",
                found.len(),
                self.messages
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|m| m.topic.clone())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn json(m: &Message) -> Value {
    serde_json::from_slice(&m.payload)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&m.payload)))
}

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<GatewayStats, String>>,
}

impl Running {
    async fn finish(self) -> GatewayStats {
        self.stop.send(true).unwrap();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the gateway stops")
            .unwrap()
            .unwrap()
    }
}

fn start_gateway(yaml: &str) -> Running {
    start_gateway_with(yaml, None)
}

/// A gateway that also hands every state document it emits to `emitted`.
fn start_gateway_emitting(
    yaml: &str,
) -> (
    Running,
    tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (start_gateway_with(yaml, Some(tx)), rx)
}

fn start_gateway_with(
    yaml: &str,
    emitted: Option<tokio::sync::mpsc::UnboundedSender<(String, String)>>,
) -> Running {
    let (config, _) = parse_with(yaml, "test.yaml", &ValidateOptions::with_built_in_drivers())
        .unwrap_or_else(|e| panic!("{e}"));
    let (stop, stop_rx) = watch::channel(false);
    let options = RunOptions {
        print: PrintFormat::None,
        stop: Some(stop_rx),
        instance: "test".into(),
        emitted,
        ..RunOptions::default()
    };
    Running {
        stop,
        task: tokio::spawn(gateway::run(config, options)),
    }
}

/// The state key an entity's value template reads (`value_json.<key>`).
fn state_key_of(cmp: &Value) -> String {
    let template = cmp["value_template"].as_str().unwrap_or_default();
    let after = template
        .split("value_json.")
        .nth(1)
        .unwrap_or_else(|| panic!("no value_json in {template}"));
    after
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

fn send_udp(port: u16, text: &str) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(text.as_bytes(), ("127.0.0.1", port)).unwrap();
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "meterbridge-daemon-{tag}-{}-{}",
        std::process::id(),
        broker::free_port()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

struct Setup {
    base: String,
    prefix: String,
    udp: u16,
    state_dir: std::path::PathBuf,
    changes_bus: String,
    interval_bus: String,
}

fn config_yaml(s: &Setup, port: u16, with_garden: bool) -> String {
    let garden = if with_garden {
        "  - name: Garden water\n    address: \"12345699\"\n    driver: iperl\n"
    } else {
        ""
    };
    format!(
        r#"state_dir: "{state}"
buses:
  - name: changes-bus
    tcp: "{changes}"
    polling: 300ms
    emit: changes
  - name: interval-bus
    tcp: "{interval}"
    polling: 1h
    emit: 1s
receivers:
  - name: esp32
    type: udp
    bind: "127.0.0.1:{udp}"
meters:
  - name: Cold water
    address: "76348799"
    driver: auto
{garden}  - name: Heat
    bus: changes-bus
    address: 1
    driver: kamheat
  - name: Heat again
    bus: interval-bus
    address: 1
    driver: kamheat
mqtt:
  url: "mqtt://127.0.0.1:{port}"
  base_topic: "{base}"
  discovery_prefix: "{prefix}"
  client_id: "{base}"
"#,
        state = s.state_dir.display(),
        changes = s.changes_bus,
        interval = s.interval_bus,
        udp = s.udp,
        base = s.base,
        prefix = s.prefix,
    )
}

async fn gateway_against(port: u16, name: &str) {
    let tag = format!("{name}{}", broker::free_port());
    let setup = Setup {
        base: format!("mb{tag}"),
        prefix: format!("ha{tag}"),
        udp: broker::free_port(),
        state_dir: temp_dir(&tag),
        changes_bus: start_bus().await,
        interval_bus: start_bus().await,
    };
    let watcher = Watcher::start(
        port,
        &[format!("{}/#", setup.base), format!("{}/#", setup.prefix)],
    )
    .await;
    let running = start_gateway(&config_yaml(&setup, port, true));
    let base = &setup.base;
    let prefix = &setup.prefix;

    // The gateway is online (retained) and announces itself.
    let status = watcher.wait_for(&format!("{base}/status"), 1).await;
    assert_eq!(status[0].payload, b"online");

    // A wireless telegram over UDP, as an ESP32 receiver sends it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_udp(
        setup.udp,
        &format!("{{\"telegram\":\"{KAMSTRUP}\",\"rssi\":-71}}"),
    );
    let config_topic = format!("{prefix}/device/meterbridge_kam_76348799/config");
    let discovery = json(&watcher.wait_for(&config_topic, 1).await[0]);
    assert_eq!(
        discovery["dev"]["ids"][0], "meterbridge_kam_76348799",
        "{discovery}"
    );
    assert_eq!(discovery["dev"]["name"], "Cold water");
    assert_eq!(discovery["dev"]["mf"], "Kamstrup");
    assert_eq!(discovery["dev"]["mdl"], "Multical 21 / flowIQ water meter");
    assert_eq!(discovery["dev"]["sn"], "76348799");
    assert_eq!(discovery["dev"]["via_device"], "meterbridge_gw_test");
    assert_eq!(discovery["o"]["name"], "meterbridge");
    assert_eq!(discovery["state_topic"], format!("{base}/cold_water/state"));
    assert_eq!(
        discovery["availability"][0]["topic"],
        format!("{base}/status")
    );
    let total = &discovery["cmps"]["total_m3"];
    assert_eq!(total["p"], "sensor");
    assert_eq!(total["unique_id"], "meterbridge_kam_76348799_total_m3");
    assert_eq!(
        total["default_entity_id"],
        "sensor.meterbridge_kam_76348799_total_m3"
    );
    assert_eq!(total["device_class"], "water");
    assert_eq!(total["state_class"], "total_increasing");
    assert_eq!(total["unit_of_measurement"], "m³");
    assert_eq!(
        total["value_template"],
        "{{ value_json.total_m3 | default(None) }}"
    );
    assert_eq!(
        discovery["cmps"]["rssi_dbm"]["entity_category"],
        "diagnostic"
    );
    assert!(discovery.get("object_id").is_none());

    let state_topic = format!("{base}/cold_water/state");
    let state = watcher.wait_for(&state_topic, 1).await;
    let doc = json(&state[0]);
    assert_eq!(doc["_"], "telegram");
    assert_eq!(doc["media"], "cold water");
    assert_eq!(doc["meter"], "kamwater");
    assert_eq!(doc["name"], "Cold water");
    assert_eq!(doc["id"], "76348799");
    assert_eq!(doc["total_m3"], 6.408);
    assert_eq!(doc["target_m3"], 6.408);
    assert_eq!(doc["current_status"], "DRY");
    assert_eq!(doc["rssi_dbm"], -71);
    assert_eq!(doc["telegram_counter"], 1);
    assert!(doc["timestamp"].as_str().unwrap().ends_with('Z'));
    // Every entity reads a key the state holds: nothing is announced that stays unknown.
    for (key, cmp) in discovery["cmps"].as_object().unwrap() {
        let read = state_key_of(cmp);
        assert!(
            doc.get(&read).is_some_and(|v| !v.is_null()),
            "entity {key} reads {read}, which the state does not have: {doc}"
        );
    }
    // The status word DRY is a problem; Kamstrup's leak and burst words have their sensor.
    let problem = &discovery["cmps"]["current_status_problem"];
    assert_eq!(problem["p"], "binary_sensor");
    assert_eq!(problem["device_class"], "problem");
    assert_eq!(
        discovery["cmps"]["current_status_moisture"]["device_class"],
        "moisture"
    );

    // Emit on change: the wired meter is read every 300 ms but its values never change.
    let heat_topic = format!("{base}/heat/state");
    let heat = json(&watcher.wait_for(&heat_topic, 1).await[0]);
    assert_eq!(heat["meter"], "kamheat");
    assert_eq!(heat["id"], "77447744");
    assert_eq!(heat["total_energy_consumption_kwh"], 34510.0);
    assert_eq!(heat["t1_temperature_c"], 64.6);
    // Periodic re-emit: the other bus reads once an hour but re-emits every second.
    let again_topic = format!("{base}/heat_again/state");
    watcher.wait_for(&again_topic, 3).await;
    assert_eq!(
        watcher.on(&heat_topic).len(),
        1,
        "unchanged readings are not re-published"
    );

    // Home Assistant restarts: discovery and states go out again.
    let configs_before = watcher.on(&config_topic).len();
    let states_before = watcher.on(&state_topic).len();
    watcher
        .client
        .publish(
            format!("{prefix}/status"),
            QoS::AtLeastOnce,
            false,
            "online",
        )
        .await
        .unwrap();
    watcher.wait_for(&config_topic, configs_before + 1).await;
    watcher.wait_for(&state_topic, states_before + 1).await;

    let stats = running.finish().await;
    assert!(stats.telegrams >= 4, "{stats:?}");
    assert_eq!(stats.key_errors, 0);

    // The garden meter was configured (never heard, so never announced); the cold water meter
    // is now removed from the configuration: its entities are withdrawn on the next start.
    let yaml = config_yaml(&setup, port, false).replace(
        "  - name: Cold water\n    address: \"76348799\"\n    driver: auto\n",
        "",
    );
    let running = start_gateway(&yaml);
    let cleared = loop {
        let all = watcher.on(&config_topic);
        if let Some(m) = all.iter().find(|m| m.payload.is_empty()) {
            break m.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(cleared.payload.is_empty());
    running.finish().await;
    let _ = std::fs::remove_dir_all(&setup.state_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_publishes_discovery_and_states() {
    for b in broker::brokers() {
        eprintln!("broker: {}", b.name);
        tokio::time::timeout(Duration::from_secs(60), gateway_against(b.port, b.name))
            .await
            .unwrap_or_else(|_| panic!("{}: the scenario took too long", b.name));
    }
}

/// A commissioning tool on the bus's TCP bridge: its request reaches the meter and the answer
/// comes back unchanged, the gateway's polling pauses while it is connected and resumes after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_bridge_pauses_polling() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bus = start_bus().await;
    let bridge_port = broker::free_port();
    let state_dir = temp_dir("bridge");
    let yaml = format!(
        r#"state_dir: "{state}"
buses:
  - name: b
    tcp: "{bus}"
    polling: 200ms
    emit: every
    tcp_server:
      port: {bridge_port}
meters:
  - name: Heat
    bus: b
    address: 1
    driver: kamheat
"#,
        state = state_dir.display()
    );
    let (running, mut emitted) = start_gateway_emitting(&yaml);
    for _ in 0..2 {
        tokio::time::timeout(WAIT, emitted.recv())
            .await
            .unwrap()
            .unwrap();
    }
    // Connect once the bridge listens (a probe connection would count as a client).
    let until = Instant::now() + WAIT;
    let mut client = loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", bridge_port)).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < until, "bridge never listened: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // A read already on the line may still finish; after that, silence.
    tokio::time::sleep(Duration::from_millis(800)).await;
    while emitted.try_recv().is_ok() {}
    // REQ_UD2 to primary address 1, as a commissioning tool sends it.
    client
        .write_all(&[0x10, 0x5B, 0x01, 0x5C, 0x16])
        .await
        .unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    while reply.len() < 6 || reply.len() < usize::from(reply[1]) + 6 {
        let n = tokio::time::timeout(WAIT, client.read(&mut buf))
            .await
            .expect("the meter answers through the bridge")
            .unwrap();
        assert!(n > 0, "bridge closed");
        reply.extend_from_slice(&buf[..n]);
    }
    // The meter's RSP_UD from primary address 1: its records as the simulator holds them.
    let frame = support::kamheat_frame();
    assert_eq!(reply[5], 0x01, "answer from address 1");
    assert_eq!(reply[6..reply.len() - 2], frame[6..frame.len() - 2]);
    assert_eq!(*reply.last().unwrap(), 0x16);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        emitted.try_recv().is_err(),
        "no polling while the bridge is in use"
    );

    drop(client);
    let resumed = Instant::now();
    tokio::time::timeout(WAIT, emitted.recv())
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "polling resumed {} ms after the client left",
        resumed.elapsed().as_millis()
    );

    running.finish().await;
    let _ = std::fs::remove_dir_all(&state_dir);
}

/// The bridge's port is taken when the gateway starts: polling goes on regardless, and once the
/// port is free the bridge opens and serves a commissioning tool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_bridge_port_stops_neither_the_polling_nor_the_bridge() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bus = start_bus().await;
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bridge_port = squatter.local_addr().unwrap().port();
    let state_dir = temp_dir("busy-bridge");
    let yaml = format!(
        r#"state_dir: "{state}"
buses:
  - name: b
    tcp: "{bus}"
    polling: 200ms
    emit: every
    tcp_server:
      port: {bridge_port}
meters:
  - name: Heat
    bus: b
    address: 1
    driver: kamheat
"#,
        state = state_dir.display()
    );
    let (running, mut emitted) = start_gateway_emitting(&yaml);
    // Five readings with the port taken: the bus task did not end with the bridge.
    for _ in 0..5 {
        let (_, doc) = tokio::time::timeout(WAIT, emitted.recv())
            .await
            .expect("polling goes on while the bridge port is taken")
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["total_energy_consumption_kwh"], 34510.0, "{doc}");
    }
    drop(squatter);
    // The bridge is retried and then serves a tool: REQ_UD2 to primary address 1.
    let until = Instant::now() + WAIT;
    let mut client = loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", bridge_port)).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < until, "the bridge never opened: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    client
        .write_all(&[0x10, 0x5B, 0x01, 0x5C, 0x16])
        .await
        .unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    while reply.len() < 6 || reply.len() < usize::from(reply[1]) + 6 {
        let n = tokio::time::timeout(WAIT, client.read(&mut buf))
            .await
            .expect("the meter answers through the bridge")
            .unwrap();
        assert!(n > 0, "bridge closed");
        reply.extend_from_slice(&buf[..n]);
    }
    assert_eq!(reply[5], 0x01, "answer from address 1");
    drop(client);
    while emitted.try_recv().is_ok() {}
    tokio::time::timeout(WAIT, emitted.recv())
        .await
        .expect("polling resumes after the bridge client left")
        .unwrap();
    running.finish().await;
    let _ = std::fs::remove_dir_all(&state_dir);
}

/// The broker never answers and the outage queue holds 3 readings: the shutdown summary
/// accounts for every reading (delivered + dropped + not delivered = made) and says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_summary_accounts_for_every_reading() {
    let bus = start_bus().await;
    let state_dir = temp_dir("summary");
    let yaml = format!(
        r#"state_dir: "{state}"
buses:
  - name: b
    tcp: "{bus}"
    polling: 100ms
    emit: every
meters:
  - name: Heat
    bus: b
    address: 1
    driver: kamheat
"#,
        state = state_dir.display()
    );
    let (config, _) = parse_with(
        &yaml,
        "test.yaml",
        &ValidateOptions::with_built_in_drivers(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // A port nobody listens on.
    let mut mqtt = meterbridge::mqtt::client::MqttSettings::new("127.0.0.1", broker::free_port());
    mqtt.queue_limit = 3;
    let (emitted_tx, mut emitted) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(gateway::run(
        config,
        RunOptions {
            print: PrintFormat::None,
            mqtt: Some(mqtt),
            stop: Some(stop_rx),
            instance: "summary".into(),
            emitted: Some(emitted_tx),
            withdraw_at_exit: false,
            web_bound: None,
        },
    ));
    for _ in 0..6 {
        tokio::time::timeout(WAIT, emitted.recv())
            .await
            .unwrap()
            .unwrap();
    }
    stop.send(true).unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(40), task)
        .await
        .expect("the gateway stops")
        .unwrap()
        .unwrap();
    let m = stats.mqtt.expect("MQTT counters");
    assert!(stats.readings_emitted >= 6, "{stats:?}");
    assert_eq!(m.readings_published, 0, "{stats:?}");
    assert_eq!(m.queued, 3, "{stats:?}");
    assert_eq!(m.restored, 0, "{stats:?}");
    assert_eq!(
        stats.readings_emitted + stats.gateway_states,
        m.readings_published + m.dropped + m.queued as u64,
        "{stats:?}"
    );
    let summary = meterbridge::cli::daemon::shutdown_summary(&stats);
    assert!(
        summary.contains(&format!(
            "{} dropped while the outage queue was full",
            m.dropped
        )),
        "{summary}"
    );
    assert!(summary.contains("3 NOT delivered"), "{summary}");
    assert!(summary.contains("0 delivered to the broker"), "{summary}");
    let _ = std::fs::remove_dir_all(&state_dir);
}

/// The broker is stopped for 30 s and started again: every reading produced meanwhile is
/// delivered afterwards, in order (mosquitto only: it keeps the subscriber's session across the
/// restart, so what the gateway publishes right after reconnecting is not missed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_no_reading() {
    if !broker::mosquitto_available() {
        println!("note: mosquitto is not installed; the outage test needs it");
        return;
    }
    let outage = Duration::from_secs(
        std::env::var("MB_OUTAGE_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    );
    let dir = temp_dir("outage");
    std::fs::create_dir_all(&dir).unwrap();
    // mosquitto started as root runs as the user `mosquitto`; it must be able to save there.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let port = broker::free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\n",
            dir.display()
        ),
    )
    .unwrap();
    let start = || {
        let child = std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        broker::wait_until_listening(port);
        child
    };
    let stop = |child: &mut std::process::Child| {
        // SIGTERM, so mosquitto saves the subscriber's session.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    };
    let mut mosquitto = start();

    // A subscriber with a persistent session at QoS 1.
    let base = format!("outage{}", broker::free_port());
    let received = Arc::new(Mutex::new(Vec::<u64>::new()));
    let sink = received.clone();
    let topic = format!("{base}/cold_water/state");
    let mut options = MqttOptions::new(format!("{base}-sub"), "127.0.0.1", port);
    options.set_clean_session(false);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    client
        .subscribe(topic.clone(), QoS::AtLeastOnce)
        .await
        .unwrap();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Ok(v) = serde_json::from_slice::<Value>(&p.payload) {
                        if let Some(n) = v["telegram_counter"].as_u64() {
                            sink.lock().unwrap().push(n);
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });

    let udp = broker::free_port();
    let yaml = format!(
        r#"state_dir: "{state}"
dedup_window: 0
receivers:
  - name: esp32
    type: udp
    bind: "127.0.0.1:{udp}"
meters:
  - name: Cold water
    address: "76348799"
mqtt:
  url: "mqtt://127.0.0.1:{port}"
  base_topic: "{base}"
  client_id: "{base}-gw"
  discovery: false
"#,
        state = dir.join("state").display()
    );
    let running = start_gateway(&yaml);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut sent = 0u64;
    let send = |n: &mut u64| {
        send_udp(udp, KAMSTRUP);
        *n += 1;
    };
    for _ in 0..5 {
        send(&mut sent);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let until = Instant::now() + WAIT;
    while received.lock().unwrap().len() < 5 {
        assert!(Instant::now() < until, "the first readings never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give mosquitto's autosave a moment to store the session, then stop it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop(&mut mosquitto);
    let down = Instant::now();
    while down.elapsed() < outage {
        send(&mut sent);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    mosquitto = start();
    let back = Instant::now();
    for _ in 0..5 {
        send(&mut sent);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let got: std::collections::BTreeSet<u64> =
            received.lock().unwrap().iter().copied().collect();
        if got.len() as u64 >= sent {
            assert_eq!(
                got,
                (1..=sent).collect(),
                "every reading, each once at least"
            );
            break;
        }
        assert!(
            Instant::now() < until,
            "{} of {sent} readings delivered; missing {:?}",
            got.len(),
            (1..=sent).filter(|n| !got.contains(n)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{sent} readings ({} during a {} s outage) all delivered {} ms after the broker came back",
        sent - 10,
        outage.as_secs(),
        back.elapsed().as_millis()
    );
    let stats = running.finish().await;
    assert_eq!(stats.readings_emitted, sent);
    stop(&mut mosquitto);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Requests over MQTT, as zigbee2mqtt takes them: read a meter now, scan the bus, listen for
/// wireless meters, and a refused write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_mqtt_are_answered() {
    let port = broker::rumqttd_port();
    let bus = start_bus().await;
    let udp = broker::free_port();
    let base = format!("req{}", broker::free_port());
    let state_dir = temp_dir("requests");
    let yaml = format!(
        r#"state_dir: "{state}"
buses:
  - name: b
    tcp: "{bus}"
    polling: 1h
receivers:
  - name: esp32
    type: udp
    bind: "127.0.0.1:{udp}"
meters:
  - name: Heat
    bus: b
    address: 1
    driver: kamheat
mqtt:
  url: "mqtt://127.0.0.1:{port}"
  base_topic: "{base}"
  client_id: "{base}"
  discovery: false
"#,
        state = state_dir.display()
    );
    let watcher = Watcher::start(port, &[format!("{base}/response/#")]).await;
    let running = start_gateway(&yaml);
    let ask = |name: &str, body: &'static str| watcher.send(format!("{base}/request/{name}"), body);
    tokio::time::sleep(Duration::from_millis(800)).await;

    ask("read", r#"{"meter": "Heat"}"#).await;
    let read = json(&watcher.wait_for(&format!("{base}/response/read"), 1).await[0]);
    assert_eq!(read["ok"], true, "{read}");
    assert_eq!(read["meter"], "Heat");
    assert_eq!(read["fields"]["total_energy_consumption_kwh"], 34510.0);

    ask("scan", r#"{"bus": "b", "type": "secondary"}"#).await;
    let scan = json(&watcher.wait_for(&format!("{base}/response/scan"), 1).await[0]);
    assert_eq!(scan["ok"], true, "{scan}");
    assert_eq!(scan["meters"][0]["secondary"], "774477442D2C3404");
    assert_eq!(scan["meters"][0]["manufacturer"], "KAM");

    ask("scan", r#"{"type": "wireless", "seconds": 2}"#).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_udp(udp, KAMSTRUP);
    let scans = watcher.wait_for(&format!("{base}/response/scan"), 2).await;
    let heard = json(&scans[1]);
    assert_eq!(heard["type"], "wireless", "{heard}");
    assert_eq!(heard["meters"][0]["id"], "76348799");
    assert_eq!(heard["meters"][0]["driver"], "kamwater");
    assert_eq!(heard["meters"][0]["configured"], false);

    ask(
        "set_address",
        r#"{"bus": "b", "address": 1, "new_address": 7}"#,
    )
    .await;
    let refused = json(
        &watcher
            .wait_for(&format!("{base}/response/set_address"), 1)
            .await[0],
    );
    assert_eq!(refused["ok"], false);
    assert!(refused["error"]
        .as_str()
        .unwrap()
        .contains("allow_bus_writes"));

    running.finish().await;
    let _ = std::fs::remove_dir_all(&state_dir);
}

/// `set_address` over MQTT goes the web page's way: never onto a configured meter's address,
/// and the answer says that a meter from the configuration file must be moved there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_address_over_mqtt_checks_like_the_page() {
    let port = broker::rumqttd_port();
    let bus = start_bus().await;
    let base = format!("addr{}", broker::free_port());
    let state_dir = temp_dir("set-address-mqtt");
    let yaml = format!(
        r#"state_dir: "{state}"
allow_bus_writes: true
buses:
  - name: b
    tcp: "{bus}"
    polling: 1h
meters:
  - name: Heat
    bus: b
    address: 1
    driver: kamheat
  - name: Cold
    bus: b
    address: 2
    driver: kamheat
mqtt:
  url: "mqtt://127.0.0.1:{port}"
  base_topic: "{base}"
  client_id: "{base}"
  discovery: false
"#,
        state = state_dir.display()
    );
    let watcher = Watcher::start(port, &[format!("{base}/response/#")]).await;
    let running = start_gateway(&yaml);
    let ask = |body: &'static str| watcher.send(format!("{base}/request/set_address"), body);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let topic = format!("{base}/response/set_address");

    ask(r#"{"bus": "b", "address": 1, "new_address": 2}"#).await;
    let taken = json(&watcher.wait_for(&topic, 1).await[0]);
    assert_eq!(taken["ok"], false, "{taken}");
    assert!(
        taken["error"]
            .as_str()
            .unwrap()
            .starts_with("Cold is configured at primary address 2 on bus b"),
        "{taken}"
    );

    ask(r#"{"bus": "b", "address": 1, "new_address": 7}"#).await;
    let moved = json(&watcher.wait_for(&topic, 2).await[1]);
    assert_eq!(moved["ok"], true, "{moved}");
    assert_eq!(moved["new_address"], 7);
    let message = moved["message"].as_str().unwrap();
    assert!(
        message.starts_with("the meter at primary address 1 now answers at primary address 7. Heat is configured at primary address 1 in the configuration file"),
        "{message}"
    );

    running.finish().await;
    let _ = std::fs::remove_dir_all(&state_dir);
}

/// `only_values`: the state document carries the readings and the time, no header fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_values_leaves_out_the_header_fields() {
    let bus = start_bus().await;
    let state_dir = temp_dir("only-values");
    let yaml = format!(
        "state_dir: \"{}\"\nbuses:\n  - name: b\n    tcp: \"{bus}\"\n    only_values: true\nmeters:\n  - name: Heat\n    bus: b\n    address: 1\n    driver: kamheat\n",
        state_dir.display()
    );
    let (running, mut emitted) = start_gateway_emitting(&yaml);
    let (slug, doc) = tokio::time::timeout(WAIT, emitted.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(slug, "heat");
    let v: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(v["total_energy_consumption_kwh"], 34510.0);
    assert!(v.get("timestamp").is_some());
    for header in ["_", "media", "meter", "name", "id", "telegram_counter"] {
        assert!(v.get(header).is_none(), "{header} in {doc}");
    }
    // The running gateway shows it is alive; a directory no gateway used does not.
    let health = |dir: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_meterbridge"))
            .args(["health", "--state-dir"])
            .arg(dir)
            .output()
            .unwrap()
    };
    let alive = health(&state_dir);
    assert!(alive.status.success(), "{alive:?}");
    assert!(String::from_utf8_lossy(&alive.stdout).starts_with("alive"));
    assert_eq!(health(&state_dir.join("nothing")).status.code(), Some(1));
    running.finish().await;
    let _ = std::fs::remove_dir_all(&state_dir);
}

/// The daemon (the real binary) makes 10 readings while the broker is down and is killed with
/// SIGKILL: after the broker and the daemon are back, each of the 10 arrives, once and in order,
/// from the outage queue on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_queued_during_an_outage_survive_kill_9() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    if !broker::mosquitto_available() {
        println!("note: mosquitto is not installed; the kill -9 test needs it");
        return;
    }
    let dir = temp_dir("kill9");
    std::fs::create_dir_all(&dir).unwrap();
    let state_dir = dir.join("state");
    let port = broker::free_port();
    let udp = broker::free_port();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"state_dir: "{state}"
dedup_window: 0
receivers:
  - name: esp
    type: udp
    bind: "127.0.0.1:{udp}"
meters:
  - name: Cold water
    address: "76348799"
    driver: kamwater
mqtt:
  url: mqtt://127.0.0.1:{port}
  discovery: false
"#,
            state = state_dir.display()
        ),
    )
    .unwrap();
    let start = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meterbridge"))
            .args(["run", "--print", "json", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the daemon starts");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("daemon: {line}");
                sink.lock().unwrap().push(line);
            }
        });
        (child, rx, log)
    };

    // Broker down: 10 readings, each seen on standard output.
    let (mut daemon, printed, _) = start();
    let mut before = Vec::new();
    while before.len() < 10 {
        send_udp(udp, KAMSTRUP);
        // The first datagram may come before the socket is bound.
        if let Ok(line) = printed.recv_timeout(Duration::from_secs(2)) {
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["total_m3"], 6.408, "{line}");
            before.push(v["telegram_counter"].as_u64().unwrap());
        }
    }
    // On disk before the kill: the queue's writer flushes each batch to the device.
    let until = Instant::now() + WAIT;
    loop {
        let kept = meterbridge::mqtt::outbox::load(&state_dir).unwrap();
        let readings = kept
            .queued
            .iter()
            // Meter states only: the bridge's device list and events share the queue.
            .filter(|m| m.topic.ends_with("/state") && !m.topic.ends_with("gateway/state"))
            .count();
        if readings >= 10 {
            break;
        }
        assert!(Instant::now() < until, "only {readings} readings on disk");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.kill().unwrap(); // SIGKILL
    daemon.wait().unwrap();

    let _mosquitto = broker::start_mosquitto(port);
    let watcher = Watcher::start(port, &["meterbridge/+/state".to_string()]).await;
    let (mut daemon, _printed, log) = start();
    let topic = "meterbridge/cold_water/state";
    watcher.wait_for(topic, 10).await;
    // Time for any duplicate to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let arrived: Vec<u64> = watcher
        .on(topic)
        .iter()
        .map(|m| json(m)["telegram_counter"].as_u64().unwrap())
        .collect();
    eprintln!("before the kill: {before:?}; after the restart: {arrived:?}");
    // Nothing was acknowledged before the kill, so nothing is sent twice.
    assert_eq!(arrived, before, "every reading once, in order");
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    daemon.wait().unwrap();
    // The summary says where the readings came from (the stderr thread may lag the exit).
    let until = Instant::now() + WAIT;
    while !log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("kept on disk from before the restart"))
    {
        assert!(Instant::now() < until, "{:?}", log.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Delivered readings leave the journal.
    let kept = meterbridge::mqtt::outbox::load(&state_dir).unwrap();
    assert!(
        kept.queued
            .iter()
            .all(|m| m.topic.ends_with("gateway/state")),
        "{:?}",
        kept.queued
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Random bytes on a UDP input: one warning, short and without control characters, whatever
/// the datagram held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_an_input_is_reported_briefly() {
    let udp = broker::free_port();
    let state_dir = temp_dir("garbage");
    let yaml = format!(
        "state_dir: \"{}\"\nreceivers:\n  - name: esp\n    type: udp\n    bind: \"127.0.0.1:{udp}\"\n",
        state_dir.display()
    );
    let (config, _) = parse_with(
        &yaml,
        "test.yaml",
        &ValidateOptions::with_built_in_drivers(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let log = support::LogCapture::default();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(
        gateway::run(
            config,
            RunOptions {
                print: PrintFormat::None,
                stop: Some(stop_rx),
                instance: "garbage".into(),
                ..RunOptions::default()
            },
        )
        .with_subscriber(log.dispatch()),
    );
    let mut rng = support::Rng::new(15);
    // A whole telegram, then 400 random bytes read as its RSSI field after the `;`.
    let mut datagram = b"2E44A5119870659930037A060020052F2F0C933E842784060A3B00000A5A5901C4016D3B37DF2CCC01933E24032606;".to_vec();
    let mut garbage = Vec::new();
    rng.push_bytes(&mut garbage, 400);
    // Line ends would split it, `=` and `;` make fields that are skipped.
    for b in &mut garbage {
        if matches!(*b, b'\n' | b'\r' | b'=' | b';') {
            *b = b'.';
        }
    }
    datagram.extend_from_slice(&garbage);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let until = Instant::now() + WAIT;
    let warning = loop {
        socket.send_to(&datagram, ("127.0.0.1", udp)).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(w) = log.events().into_iter().find(|e| {
            e.level == tracing::Level::WARN
                && e.message.starts_with("esp:")
                && e.fields.iter().any(|(k, v)| k == "receiver" && v == "esp")
        }) {
            break w.message;
        }
        assert!(Instant::now() < until, "{:?}", log.events());
    };
    eprintln!("{warning}");
    assert!(
        warning.chars().count() <= 260,
        "{} characters: {warning}",
        warning.chars().count()
    );
    assert!(!warning.chars().any(char::is_control), "{warning:?}");
    stop.send(true).unwrap();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&state_dir);
}

/// A part that goes down or comes back is published on the gateway's state at once, by name
/// (`parts_down`), for the Home Assistant gateway device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_state_names_the_parts_that_are_down() {
    let port = broker::rumqttd_port();
    let base = format!("parts-{}", std::process::id());
    let watcher = Watcher::start(port, &[format!("{base}/gateway/state")]).await;
    let squatter = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp = squatter.local_addr().unwrap().port();
    let state_dir = temp_dir("parts");
    let yaml = format!(
        r#"state_dir: "{state}"
receivers:
  - name: esp
    type: udp
    bind: "127.0.0.1:{udp}"
buses:
  - name: b
    tcp: "127.0.0.1:{closed}"
    polling: 1s
meters:
  - name: Heat
    bus: b
    address: 1
    driver: kamheat
mqtt:
  url: mqtt://127.0.0.1:{port}
  base_topic: {base}
  discovery: false
"#,
        state = state_dir.display(),
        closed = broker::free_port(),
    );
    let running = start_gateway(&yaml);
    let topic = format!("{base}/gateway/state");
    let wait_for_down = |expected: &'static str| {
        let watcher = &watcher;
        let topic = topic.clone();
        async move {
            let until = Instant::now() + WAIT;
            loop {
                if watcher
                    .on(&topic)
                    .iter()
                    .any(|m| json(m)["parts_down"] == expected)
                {
                    return;
                }
                assert!(
                    Instant::now() < until,
                    "no state with parts_down {expected:?}: {:?}",
                    watcher
                        .on(&topic)
                        .iter()
                        .map(|m| json(m)["parts_down"].clone())
                        .collect::<Vec<_>>()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for_down("bus b, receiver esp").await;
    drop(squatter);
    wait_for_down("bus b").await;
    running.finish().await;
    let _ = std::fs::remove_dir_all(&state_dir);
}

/// The gateway device's "Visit" link (`configuration_url`, `cu`) leads to the web page: the
/// address the page listens on, or `web.public_url` (the add-on's ingress link) when given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_device_links_to_the_web_page() {
    let port = broker::rumqttd_port();
    let web_port = broker::free_port();
    let cases = [
        (
            format!("  bind: \"127.0.0.1:{web_port}\""),
            format!("http://127.0.0.1:{web_port}/"),
        ),
        (
            format!("  bind: \"0.0.0.0:{web_port}\"\n  allow_from: [127.0.0.1]\n  public_url: \"homeassistant://hassio/ingress/local_meterbridge\""),
            "homeassistant://hassio/ingress/local_meterbridge".to_string(),
        ),
    ];
    for (i, (web, expected)) in cases.iter().enumerate() {
        let tag = format!("cu{i}-{}", std::process::id());
        let state_dir = temp_dir(&tag);
        let watcher = Watcher::start(port, &[format!("ha{tag}/#")]).await;
        let yaml = format!(
            "state_dir: \"{state}\"\nmqtt:\n  url: mqtt://127.0.0.1:{port}\n  base_topic: mb{tag}\n  discovery_prefix: ha{tag}\n  client_id: mb{tag}\nweb:\n{web}\n",
            state = state_dir.display(),
        );
        let running = start_gateway(&yaml);
        let doc = json(
            &watcher
                .wait_for(&format!("ha{tag}/device/meterbridge_gw_test/config"), 1)
                .await[0],
        );
        assert_eq!(doc["dev"]["cu"], expected.as_str(), "{doc}");
        running.finish().await;
        let _ = std::fs::remove_dir_all(&state_dir);
    }
}

/// Qundis Q water 5.5 (wmbusmeters' test telegrams): the first telegram has no value for
/// `due_17_date`, the third has one. The discovery document grows when it comes, and keeps it
/// after a restart even though the first telegram heard then does not carry it.
const QWATER: [&str; 3] = [
    "39449344153119611D067A870000200C13370000004C1300000000426CFFFFCC081300000000C2086CFFFF02BB560000326CFFFF046D320D5E31",
    "49449344153119611D06780DFF5F3500826E0000F00007C113FFFF66000000FFFF00000000FFFF000000000080008000800080008000800080008000800080008000802F046D33125F31",
    "49449344153119611D06780DFF5F350082EC0000F10007C113FFFF69000000FFFF000000005F31680000000080008000800080008000800080008000800080008006002F046D1C0A4132",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_heard_later_is_announced_and_kept_after_a_restart() {
    let port = broker::brokers()[0].port;
    let tag = format!("late{}", broker::free_port());
    let (base, prefix, udp) = (format!("mb{tag}"), format!("ha{tag}"), broker::free_port());
    let state_dir = temp_dir(&tag);
    let yaml = format!(
        r#"state_dir: "{state}"
receivers:
  - name: udp
    type: udp
    bind: "127.0.0.1:{udp}"
meters:
  - name: Warm water
    address: "61193115"
    driver: qwater
mqtt:
  url: "mqtt://127.0.0.1:{port}"
  base_topic: "{base}"
  discovery_prefix: "{prefix}"
  client_id: "{base}"
"#,
        state = state_dir.display()
    );
    let watcher = Watcher::start(port, &[format!("{base}/#"), format!("{prefix}/#")]).await;
    let config_topic = format!("{prefix}/device/meterbridge_qds_61193115/config");
    let state_topic = format!("{base}/warm_water/state");
    let entities = |m: &Message| -> Vec<String> {
        let mut keys: Vec<String> = json(m)["cmps"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    };

    let running = start_gateway(&yaml);
    watcher.wait_for(&format!("{base}/status"), 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_udp(udp, QWATER[0]);
    let first = entities(&watcher.wait_for(&config_topic, 1).await[0]);
    assert!(first.contains(&"total_m3".to_string()), "{first:?}");
    assert!(!first.contains(&"due_17_date".to_string()), "{first:?}");
    // Not sent with a value: no entity that would stay unknown.
    assert!(!first.contains(&"error_date".to_string()), "{first:?}");
    let state = json(&watcher.wait_for(&state_topic, 1).await[0]);
    assert_eq!(state["total_m3"], 0.037);

    // The second telegram brings new fields (the third brings due_17_date): a document per
    // growth, never one without a change.
    send_udp(udp, QWATER[1]);
    watcher.wait_for(&state_topic, 2).await;
    send_udp(udp, QWATER[2]);
    let states = watcher.wait_for(&state_topic, 3).await;
    assert_eq!(json(&states[2])["due_17_date"], "2026-01-31");
    let configs = watcher.on(&config_topic);
    let last = entities(configs.last().unwrap());
    assert!(last.contains(&"due_17_date".to_string()), "{last:?}");
    assert!(last.contains(&"due_17_date_m3".to_string()), "{last:?}");
    assert!(configs.len() <= 3, "{} discovery documents", configs.len());
    let date = &json(configs.last().unwrap())["cmps"]["due_17_date"];
    assert_eq!(date["device_class"], "date");
    running.finish().await;

    // After a restart the first telegram again: the document still has every entity.
    let before = watcher.on(&config_topic).len();
    let running = start_gateway(&yaml);
    tokio::time::sleep(Duration::from_millis(500)).await;
    send_udp(udp, QWATER[0]);
    let after = watcher.wait_for(&config_topic, before + 1).await;
    assert_eq!(entities(after.last().unwrap()), last);
    running.finish().await;
    let _ = std::fs::remove_dir_all(&state_dir);
}

/// A DES meter (ActisLink, security mode 2) configured with its 8-byte key: decrypted and
/// published like an AES one (wmbusmeters' test telegram and key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_des_meter_is_configured_with_its_eight_byte_key() {
    let udp = broker::free_port();
    let state_dir = temp_dir("des");
    let yaml = format!(
        r#"state_dir: "{state}"
receivers:
  - name: udp
    type: udp
    bind: "127.0.0.1:{udp}"
meters:
  - name: Gurka
    address: "00000001"
    driver: actislink
    key: "0102030405060708"
"#,
        state = state_dir.display()
    );
    let (running, mut emitted) = start_gateway_emitting(&yaml);
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_udp(
        udp,
        "1E468B050100000004077A01001002BBD1EAFD0222F871CB70DA16C78AE098",
    );
    let (slug, doc) = tokio::time::timeout(WAIT, emitted.recv())
        .await
        .expect("a reading")
        .unwrap();
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(slug, "gurka");
    assert_eq!(doc["total_m3"], 1.0, "{doc}");
    let stats = running.finish().await;
    assert_eq!(stats.key_errors, 0);
    let _ = std::fs::remove_dir_all(&state_dir);
}
