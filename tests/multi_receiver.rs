//! Many receivers, one meter (issue 19): a simulated iM871A stick, a UDP input (an ESP32 in the
//! garden) and an MQTT input (an ESP32 on the broker) hear the same telegrams, in different
//! orders and with different RSSI. The gateway publishes one reading per telegram, from the
//! copy heard best, naming every receiver that heard it; a copy a repeater changed, heard
//! after the reading went out, publishes nothing.

#[path = "support/broker.rs"]
mod broker;
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meterbridge::config::{parse_with, ValidateOptions};
use meterbridge::daemon::gateway::{self, PrintFormat, RunOptions};
use meterbridge::wire::hex;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

/// Kamstrup Multical 21 (76348799): extended link layer, access number 0x91.
const KAMSTRUP: &str =
    "2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713";
/// Two telegrams of one Qundis water meter (61193115): different telegrams of one meter are
/// never merged.
const QWATER: [&str; 3] = [
    "39449344153119611D067A870000200C13370000004C1300000000426CFFFFCC081300000000C2086CFFFF02BB560000326CFFFF046D320D5E31",
    "49449344153119611D06780DFF5F3500826E0000F00007C113FFFF66000000FFFF00000000FFFF000000000080008000800080008000800080008000800080008000802F046D33125F31",
    "49449344153119611D06780DFF5F350082EC0000F10007C113FFFF69000000FFFF000000005F31680000000080008000800080008000800080008000800080008006002F046D1C0A4132",
];
const WAIT: Duration = Duration::from_secs(30);

fn send_udp(port: u16, text: &str) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(text.as_bytes(), ("127.0.0.1", port)).unwrap();
}

/// An MQTT client that publishes the ESP32's copies and tells when the gateway is online.
async fn esp32(port: u16, status_topic: &str) -> (AsyncClient, watch::Receiver<bool>) {
    let id = format!("esp-{}-{}", std::process::id(), broker::free_port());
    let (client, mut eventloop) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 64);
    client
        .subscribe(status_topic, QoS::AtLeastOnce)
        .await
        .unwrap();
    let (online_tx, online_rx) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) if &p.payload[..] == b"online" => {
                    let _ = online_tx.send(true);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    (client, online_rx)
}

/// Waits until a log line satisfies `wanted`.
async fn wait_for_log(log: &support::LogCapture, wanted: impl Fn(&str) -> bool) {
    let until = Instant::now() + WAIT;
    loop {
        if lines(log).iter().any(|l| wanted(l)) {
            return;
        }
        assert!(
            Instant::now() < until,
            "log line not seen; log: {:?}",
            lines(log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next_reading(rx: &mut mpsc::UnboundedReceiver<(String, String)>) -> (String, Value) {
    let (slug, doc) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a reading within the wait")
        .expect("the gateway runs");
    (slug, serde_json::from_str(&doc).unwrap())
}

/// The web page's overview data (`GET /api/overview`).
async fn overview(web: std::net::SocketAddr) -> Value {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(web).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            s,
            "GET /api/overview HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        let body = reply.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {reply}"))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_receivers_one_reading_per_telegram() {
    let port = broker::rumqttd_port();
    let tag = broker::free_port();
    let base = format!("mr{tag}");
    let udp = broker::free_port();
    let dir = std::env::temp_dir().join(format!("meterbridge-multi-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The stick hears the three telegrams, one a second, then again from the start (repeats
    // within the duplicate window).
    let telegrams = dir.join("stick.txt");
    std::fs::write(
        &telegrams,
        format!("{KAMSTRUP}\n{}\n{}\n", QWATER[0], QWATER[1]),
    )
    .unwrap();
    let yaml = format!(
        r#"state_dir: "{state}"
dedup_window: 10m
settle_time: 5s
receivers:
  - name: stick
    type: simulated
    stick: im871a
    telegrams: "{telegrams}"
    interval: 1s
  - name: garden
    type: udp
    bind: "127.0.0.1:{udp}"
  - name: esp
    type: mqtt
    topic: "{base}-esp/raw"
meters:
  - name: Cold water
    address: "76348799"
    driver: auto
  - name: Warm water
    address: "61193115"
    driver: qwater
mqtt:
  url: "mqtt://127.0.0.1:{port}"
  base_topic: "{base}"
  client_id: "{base}"
  discovery: false
web:
  bind: "127.0.0.1:0"
"#,
        state = dir.join("state").display(),
        telegrams = telegrams.display(),
    );
    let (config, _) = parse_with(
        &yaml,
        "test.yaml",
        &ValidateOptions::with_built_in_drivers(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (esp, mut online) = esp32(port, &format!("{base}/status")).await;
    let log = support::global_log();
    let (stop, stop_rx) = watch::channel(false);
    let (emitted_tx, mut emitted) = mpsc::unbounded_channel();
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(gateway::run(
        config,
        RunOptions {
            print: PrintFormat::None,
            stop: Some(stop_rx),
            instance: format!("multi{tag}"),
            emitted: Some(emitted_tx),
            web_bound: Some(bound_tx),
            ..RunOptions::default()
        },
    ));
    let web = tokio::time::timeout(WAIT, bound_rx)
        .await
        .expect("the web page listens")
        .unwrap();

    // The gateway subscribes before it says `online`; the UDP socket and the stick are up.
    tokio::time::timeout(WAIT, online.wait_for(|o| *o))
        .await
        .expect("the gateway comes online")
        .unwrap();
    wait_for_log(log, |l| {
        l.starts_with("receiver stick:") && l.ends_with("ready")
    })
    .await;
    wait_for_log(log, |l| l == "receiver garden: ready").await;

    // The stick's copies (-67 dBm) come a second or more after it was ready; these come first,
    // in another order per telegram. The settle time (5 s) gathers them all.
    let topic = format!("{base}-esp/raw");
    let mqtt = |hex: &str, rssi: Option<i16>| {
        let body = match rssi {
            Some(r) => format!("{{\"telegram\":\"{hex}\",\"rssi\":{r}}}"),
            None => format!("{{\"telegram\":\"{hex}\"}}"),
        };
        let (esp, topic) = (esp.clone(), topic.clone());
        async move {
            esp.publish(topic, QoS::AtLeastOnce, false, body)
                .await
                .unwrap()
        }
    };
    send_udp(udp, &format!("{KAMSTRUP};rssi=-81"));
    mqtt(KAMSTRUP, Some(-55)).await;
    mqtt(QWATER[0], Some(-90)).await;
    send_udp(udp, &format!("{};rssi=-60", QWATER[0]));
    send_udp(udp, &format!("{};rssi=-95", QWATER[1]));
    mqtt(QWATER[1], None).await;

    let mut readings = Vec::new();
    for _ in 0..3 {
        readings.push(next_reading(&mut emitted).await);
    }
    let find = |slug: &str, key: &str, value: Value| {
        readings
            .iter()
            .find(|(s, d)| s == slug && d[key] == value)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("no {slug} reading with {key} {value}: {readings:?}"))
    };
    // Best: the ESP32 on MQTT.
    let cold = find("cold_water", "total_m3", json!(6.408));
    assert_eq!(cold["rssi_dbm"], -55, "{cold}");
    assert_eq!(cold["best_receiver"], "esp");
    assert_eq!(
        cold["receivers"],
        json!({"garden": -81, "esp": -55, "stick": -67}),
        "{cold}"
    );
    assert_eq!(cold["rssi_garden_dbm"], -81);
    assert_eq!(cold["rssi_esp_dbm"], -55);
    assert_eq!(cold["rssi_stick_dbm"], -67);
    for r in ["garden", "esp", "stick"] {
        assert!(
            cold["last_seen_by"][r]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{cold}"
        );
    }
    // Best: the UDP receiver in the garden; the first copy came over MQTT.
    let warm = find("warm_water", "best_receiver", json!("garden"));
    assert_eq!(warm["total_m3"], 0.037);
    assert_eq!(warm["rssi_dbm"], -60, "{warm}");
    assert_eq!(
        warm["receivers"],
        json!({"esp": -90, "garden": -60, "stick": -67}),
        "{warm}"
    );
    // Best: the stick; the MQTT copy had no RSSI.
    let compact = readings
        .iter()
        .find(|(s, d)| s == "warm_water" && d["best_receiver"] == "stick")
        .map(|(_, d)| d.clone())
        .unwrap_or_else(|| panic!("no reading from the stick's copy: {readings:?}"));
    assert_eq!(compact["rssi_dbm"], -67, "{compact}");
    assert_eq!(
        compact["receivers"],
        json!({"garden": -95, "esp": null, "stick": -67}),
        "{compact}"
    );

    // A repeater's copy of the first telegram: another C field and the hop counter set in the
    // extended link layer. Then a new telegram on the same input: once its reading is out, the
    // repeated copy before it has certainly been handled.
    let mut repeated = hex::decode(KAMSTRUP).unwrap();
    repeated[1] = 0x46;
    repeated[11] |= 0x10;
    send_udp(udp, &format!("{};rssi=-40", hex::encode_upper(&repeated)));
    send_udp(udp, &format!("{};rssi=-70", QWATER[2]));
    let (slug, marker) = next_reading(&mut emitted).await;
    assert_eq!(
        slug, "warm_water",
        "the repeated copy was published: {marker}"
    );
    assert_eq!(marker["receivers"], json!({"garden": -70}), "{marker}");
    assert_eq!(marker["best_receiver"], "garden");
    // Per meter, per receiver: the last RSSI each receiver heard it with stays in the state.
    assert_eq!(marker["rssi_esp_dbm"], -90, "{marker}");
    assert_eq!(marker["rssi_garden_dbm"], -70, "{marker}");

    // The web page's data: per meter the best receiver and each receiver's last RSSI, per
    // receiver the copies it delivered and the meters it hears.
    let until = Instant::now() + WAIT;
    let view = loop {
        let view = overview(web).await;
        let warm = view["meters"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == "Warm water"))
            .cloned()
            .unwrap_or_default();
        if warm["best_receiver"] == "garden"
            && warm["heard_by"].as_array().is_some_and(|h| h.len() == 3)
        {
            break view;
        }
        assert!(Instant::now() < until, "{view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let links = view["links"].as_array().unwrap();
    for name in ["stick", "garden", "esp"] {
        let link = links
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("no link {name}: {view}"));
        assert_eq!(link["meters_heard"], 2, "{link}");
        assert!(link["copies"].as_u64().unwrap() >= 3, "{link}");
        assert_eq!(link["silent"], false);
    }
    let cold = view["meters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "Cold water")
        .unwrap();
    assert_eq!(cold["best_receiver"], "esp", "{cold}");
    let esp = cold["heard_by"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "esp")
        .unwrap();
    assert_eq!(esp["rssi"], -55, "{cold}");

    stop.send(true).unwrap();
    let stats = tokio::time::timeout(WAIT, task)
        .await
        .expect("the gateway stops")
        .unwrap()
        .unwrap();
    // Nothing else was published: the stick's repeats within the window were duplicates.
    assert!(emitted.try_recv().is_err());
    assert_eq!(stats.telegrams, 4, "{stats:?}");
    assert_eq!(stats.readings_emitted, 4, "{stats:?}");
    // Two extra copies of each of the three telegrams, the repeater's copy, and the stick's.
    assert!(stats.duplicates >= 7, "{stats:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A receiver that hears nothing for its `silent_after` is reported once (log and gateway
/// state), and again when it hears a telegram; the gateway device has its entities, and the
/// meter an RSSI sensor per receiver, off by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_receiver_is_reported_once_and_again_when_it_hears() {
    let port = broker::rumqttd_port();
    let tag = broker::free_port();
    let base = format!("sr{tag}");
    let prefix = format!("hasr{tag}");
    let (quiet, loud) = (broker::free_port(), broker::free_port());
    let dir = std::env::temp_dir().join(format!("meterbridge-silent-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let yaml = format!(
        r#"state_dir: "{state}"
settle_time: 200ms
silent_after: 0
receivers:
  - name: Quiet one
    type: udp
    bind: "127.0.0.1:{quiet}"
    silent_after: 1s
  - name: loud
    type: udp
    bind: "127.0.0.1:{loud}"
meters:
  - name: Cold water
    address: "76348799"
    driver: auto
mqtt:
  url: "mqtt://127.0.0.1:{port}"
  base_topic: "{base}"
  discovery_prefix: "{prefix}"
  client_id: "{base}"
"#,
        state = dir.display(),
    );
    let (config, _) = parse_with(
        &yaml,
        "test.yaml",
        &ValidateOptions::with_built_in_drivers(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.silent_after, Duration::ZERO);
    assert_eq!(
        config.receivers[0].silent_after,
        Some(Duration::from_secs(1))
    );
    let messages = Arc::new(Mutex::new(Vec::<(String, Value)>::new()));
    let id = format!("watch-{}-{tag}", std::process::id());
    let (client, mut eventloop) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 64);
    client
        .subscribe(format!("{base}/gateway/state"), QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .subscribe(format!("{prefix}/device/+/config"), QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .subscribe(format!("{base}/cold_water/state"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let sink = messages.clone();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Ok(v) = serde_json::from_slice(&p.payload) {
                        sink.lock().unwrap().push((p.topic.clone(), v));
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let wait_for = |topic: String, wanted: Box<dyn Fn(&Value) -> bool + Send>| {
        let messages = messages.clone();
        async move {
            let until = Instant::now() + WAIT;
            loop {
                if let Some((_, v)) = messages
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(t, v)| *t == topic && wanted(v))
                {
                    return v.clone();
                }
                assert!(
                    Instant::now() < until,
                    "nothing on {topic} as wanted: {:?}",
                    messages.lock().unwrap()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    let log = support::global_log();
    let (stop, stop_rx) = watch::channel(false);
    let instance = format!("silent{tag}");
    let task = tokio::spawn(gateway::run(
        config,
        RunOptions {
            print: PrintFormat::None,
            stop: Some(stop_rx),
            instance: instance.clone(),
            ..RunOptions::default()
        },
    ));

    // The gateway device has each receiver's entities.
    let gateway_config = wait_for(
        format!("{prefix}/device/meterbridge_gw_{instance}/config"),
        Box::new(|_| true),
    )
    .await;
    let cmps = &gateway_config["cmps"];
    assert_eq!(cmps["receiver_quiet_one_silent"]["p"], "binary_sensor");
    assert_eq!(cmps["receiver_quiet_one_silent"]["device_class"], "problem");
    assert_eq!(
        cmps["receiver_loud_per_minute"]["unit_of_measurement"],
        "telegrams/min"
    );
    assert_eq!(cmps["receiver_loud_meters"]["p"], "sensor");

    let state_topic = format!("{base}/gateway/state");
    let silent = wait_for(
        state_topic.clone(),
        Box::new(|v| v["receiver_quiet_one_silent"] == true),
    )
    .await;
    assert_eq!(silent["parts_down"], "receiver Quiet one (silent)");
    // `silent_after: 0` on the other: never reported.
    assert_eq!(silent["receiver_loud_silent"], false);
    // Reported once, however many checks found it silent since.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let silences = |log: &support::LogCapture| {
        lines(log)
            .iter()
            .filter(|l| l.starts_with("warning: receiver Quiet one: silent, no telegram for 1s"))
            .count()
    };
    assert_eq!(silences(log), 1, "{:?}", lines(log));

    // Both receivers hear a telegram: the quiet one is back, each counts it.
    send_udp(quiet, &format!("{KAMSTRUP};rssi=-75"));
    send_udp(loud, &format!("{KAMSTRUP};rssi=-62"));
    let back = wait_for(
        state_topic.clone(),
        Box::new(|v| {
            v["receiver_quiet_one_silent"] == false && v["receiver_quiet_one_per_minute"] == 1
        }),
    )
    .await;
    assert_eq!(back["parts_down"], "", "{back}");
    assert!(lines(log)
        .iter()
        .any(|l| l == "receiver Quiet one: hears telegrams again"));
    let reading = wait_for(format!("{base}/cold_water/state"), Box::new(|_| true)).await;
    assert_eq!(reading["rssi_dbm"], -62, "{reading}");
    assert_eq!(reading["best_receiver"], "loud");
    assert_eq!(reading["rssi_quiet_one_dbm"], -75);
    // The meter's discovery: an RSSI sensor per receiver, disabled by default.
    let meter_config = wait_for(
        format!("{prefix}/device/meterbridge_kam_76348799/config"),
        Box::new(|v| v["cmps"]["rssi_loud_dbm"].is_object()),
    )
    .await;
    let per_receiver = &meter_config["cmps"]["rssi_quiet_one_dbm"];
    assert_eq!(per_receiver["enabled_by_default"], false, "{per_receiver}");
    assert_eq!(per_receiver["device_class"], "signal_strength");
    assert_eq!(
        per_receiver["value_template"],
        "{{ value_json.rssi_quiet_one_dbm | default(None) }}"
    );
    // Once the meter is known to both, the next gateway state counts it for each.
    let counted = wait_for(
        state_topic,
        Box::new(|v| v["receiver_quiet_one_meters"] == 1 && v["receiver_loud_meters"] == 1),
    );
    // Gateway states go out every minute or on a change: the quiet receiver going silent
    // again is one.
    let counted = counted.await;
    assert_eq!(counted["receiver_loud_silent"], false);
    assert!(silences(log) >= 2, "reported again: {:?}", lines(log));

    stop.send(true).unwrap();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the gateway stops")
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The formats of the ESP32 and SDR world, each from its own receiver, make one reading:
/// ESPHome's `frame->as_hex()` over its TCP socket transmitter (one connection per frame, no
/// newline), its `frame->as_rtlwmbus()` line over UDP, and rtl_433's JSON event over MQTT.
/// Text in no known format is reported once per input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esp32_and_rtl_433_formats_make_one_reading() {
    use tokio::io::AsyncWriteExt as _;
    let port = broker::rumqttd_port();
    let tag = broker::free_port();
    let base = format!("fm{tag}");
    let (udp, tcp) = (broker::free_port(), broker::free_port());
    let dir =
        std::env::temp_dir().join(format!("meterbridge-formats-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let yaml = format!(
        r#"state_dir: "{state}"
settle_time: 5s
receivers:
  - name: esp-udp
    type: udp
    bind: "127.0.0.1:{udp}"
  - name: esp-tcp
    type: tcp_server
    bind: "127.0.0.1:{tcp}"
  - name: sdr
    type: mqtt
    topic: "{base}-rtl_433/events"
meters:
  - name: Cold water
    address: "76348799"
    driver: auto
mqtt:
  url: "mqtt://127.0.0.1:{port}"
  base_topic: "{base}"
  client_id: "{base}"
  discovery: false
"#,
        state = dir.display(),
    );
    let (config, _) = parse_with(
        &yaml,
        "test.yaml",
        &ValidateOptions::with_built_in_drivers(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (sdr, mut online) = esp32(port, &format!("{base}/status")).await;
    let log = support::global_log();
    let (stop, stop_rx) = watch::channel(false);
    let (emitted_tx, mut emitted) = mpsc::unbounded_channel();
    let task = tokio::spawn(gateway::run(
        config,
        RunOptions {
            print: PrintFormat::None,
            stop: Some(stop_rx),
            instance: format!("formats{tag}"),
            emitted: Some(emitted_tx),
            ..RunOptions::default()
        },
    ));
    tokio::time::timeout(WAIT, online.wait_for(|o| *o))
        .await
        .expect("the gateway comes online")
        .unwrap();
    wait_for_log(log, |l| l == "receiver esp-udp: ready").await;
    wait_for_log(log, |l| l == "receiver esp-tcp: ready").await;

    let lower = KAMSTRUP.to_lowercase();
    send_udp(
        udp,
        &format!("C1;1;1;2026-12-05 05:40:00.00Z;-70;;;0x{lower}\n"),
    );
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", tcp))
        .await
        .unwrap();
    conn.write_all(lower.as_bytes()).await.unwrap();
    conn.shutdown().await.unwrap();
    drop(conn);
    let topic = format!("{base}-rtl_433/events");
    let weather = r#"{"time" : "2026-12-05 05:40:00", "model" : "Acurite-Tower", "id" : 1234, "temperature_C" : 3.1}"#;
    let event = format!(
        r#"{{"time" : "2026-12-05 05:40:00", "model" : "Wireless-MBus", "mode" : "C", "M" : "KAM", "id" : 76348799, "version" : 27, "type" : 22, "type_string" : "Cold water", "C" : 68, "data" : "{lower}", "rssi" : -0.1, "snr" : 20.2, "noise" : -20.3, "mic" : "CRC"}}"#
    );
    for payload in [
        weather.to_string(),
        event,
        "not a telegram".into(),
        "still not one".into(),
    ] {
        sdr.publish(topic.clone(), QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    for _ in 0..2 {
        send_udp(udp, "GET / HTTP/1.1");
    }

    let (slug, doc) = next_reading(&mut emitted).await;
    assert_eq!(slug, "cold_water");
    assert_eq!(doc["total_m3"], 6.408, "{doc}");
    // rtl_433's `rssi` is dB below full scale, not dBm: only the ESP32's -70 is an RSSI.
    assert_eq!(doc["rssi_dbm"], -70, "{doc}");
    assert_eq!(
        doc["receivers"],
        json!({"esp-udp": -70, "esp-tcp": null, "sdr": null}),
        "{doc}"
    );
    // Once both garbage messages of each input were handled: one warning per input.
    let warned = |input: &str| {
        lines(log)
            .iter()
            .filter(|l| {
                l.starts_with(&format!("warning: {input}:")) && l.contains("unknown format")
            })
            .count()
    };
    let until = Instant::now() + WAIT;
    while warned("sdr") == 0 || warned("esp-udp") == 0 {
        assert!(Instant::now() < until, "{:?}", lines(log));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    let stats = tokio::time::timeout(WAIT, task)
        .await
        .expect("the gateway stops")
        .unwrap()
        .unwrap();
    assert_eq!(warned("sdr"), 1, "{:?}", lines(log));
    assert_eq!(warned("esp-udp"), 1, "{:?}", lines(log));
    assert_eq!(stats.decode_errors, 4, "{stats:?}");
    assert_eq!(stats.readings_emitted, 1, "{stats:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The log as an operator reads it: warnings marked as such.
fn lines(log: &support::LogCapture) -> Vec<String> {
    log.events()
        .into_iter()
        .map(|e| match e.level {
            tracing::Level::WARN => format!("warning: {}", e.message),
            _ => e.message,
        })
        .collect()
}
