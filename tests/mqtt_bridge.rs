//! `<base>/bridge/devices` and `<base>/bridge/event` (docs/mqtt.md) against the in-process
//! broker: a gateway with one configured wireless meter hears it and an encrypted meter that
//! is not configured, over UDP; the encrypted one is then added on the web page. Asserts on
//! the real payloads, the once-per-meter event, that readings do not republish the list, and
//! that no key is ever in a message.

#[path = "support/broker.rs"]
mod broker;

mod support;

use std::io::{Read as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meterbridge::config::{parse_with, ValidateOptions};
use meterbridge::sim::{BusSim, ServeOptions, SimMeter};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::watch;

/// Kamstrup Multical 21, id 76348799: total_m3 6.408.
const KAMWATER: &str =
    "2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713";
/// A mode 5 encrypted water meter, id 61070071: total_m3 466.472 with its key.
const ENCRYPTED: &str = "76442104710007612507727100076121042507B5006005E2E95A3C2A1279A5415E6732679B43369FD5FDDDD783EEEBB48236D34E7C94AF0A18A5FDA5F7D64111EB42D4D891622139F2952F9D12A20088DFA4CF8123871123EE1F6C1DCEA414879DDB4E05E508F1826D7EFBA6964DF804C9261EA23BBF03";
const KEY: &str = "A004EB23329A477F1DD2D7820B56EB3D";
const WAIT: Duration = Duration::from_secs(20);

#[derive(Clone)]
struct Message {
    topic: String,
    payload: Vec<u8>,
    retained: bool,
}

/// A subscriber that keeps every message it gets.
async fn watch_topics(port: u16, filter: &str) -> Arc<Mutex<Vec<Message>>> {
    let id = format!(
        "bridge-watch-{}-{}",
        std::process::id(),
        broker::free_port()
    );
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    client
        .subscribe(filter.to_string(), QoS::AtLeastOnce)
        .await
        .unwrap();
    let messages = Arc::new(Mutex::new(Vec::new()));
    let sink = messages.clone();
    let (acked_tx, mut acked_rx) = watch::channel(false);
    tokio::spawn(async move {
        // Owning the client keeps the connection open as long as the loop runs.
        let _client = client;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => sink.lock().unwrap().push(Message {
                    topic: p.topic.clone(),
                    payload: p.payload.to_vec(),
                    retained: p.retain,
                }),
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = acked_tx.send(true);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(WAIT, acked_rx.wait_for(|a| *a))
        .await
        .expect("subscribed")
        .unwrap();
    messages
}

fn on(messages: &Mutex<Vec<Message>>, topic: &str) -> Vec<Message> {
    messages
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.topic == topic)
        .cloned()
        .collect()
}

fn json(m: &Message) -> Value {
    serde_json::from_slice(&m.payload)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&m.payload)))
}

/// Waits until the last message on `topic` satisfies `ready`, and returns it.
async fn until(
    messages: &Mutex<Vec<Message>>,
    topic: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        if let Some(last) = on(messages, topic).last() {
            let v = json(last);
            if ready(&v) {
                return v;
            }
        }
        assert!(
            start.elapsed() < WAIT,
            "nothing on {topic} got there; last: {:?}",
            on(messages, topic)
                .last()
                .map(|m| String::from_utf8_lossy(&m.payload).to_string())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn device<'v>(list: &'v Value, id: &str) -> Option<&'v Value> {
    list.as_array()?.iter().find(|d| d["id"] == id)
}

fn send_udp(port: u16, telegram: &str, rssi: i32) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let line = format!("{{\"telegram\":\"{telegram}\",\"rssi\":{rssi}}}");
    s.send_to(line.as_bytes(), ("127.0.0.1", port)).unwrap();
}

/// A simulated wired bus with one Kamstrup 403 at primary address 1, behind a TCP gateway.
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

/// One HTTP request to the web page (on a blocking thread): status and body.
async fn http(
    web: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, String) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\nContent-Type: application/json\r\nX-CSRF-Token: {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(web).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut raw = String::new();
        let _ = s.read_to_string(&mut raw);
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, body.to_string())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_and_events_follow_the_meters() {
    let port = broker::rumqttd_port();
    let udp = broker::free_port();
    let base = format!("bridge{}", broker::free_port());
    let state_dir =
        std::env::temp_dir().join(format!("meterbridge-bridge-{}-{udp}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    let bus = start_bus().await;
    let yaml = format!(
        r#"state_dir: "{state}"
buses:
  - name: cellar
    tcp: "{bus}"
    polling: 1h
receivers:
  - name: esp32
    type: udp
    bind: "127.0.0.1:{udp}"
    dedup: false
meters:
  - name: Kitchen water
    address: "76348799"
    driver: auto
  - name: Heat
    bus: cellar
    address: 1
    driver: kamheat
mqtt:
  url: "mqtt://127.0.0.1:{port}"
  base_topic: "{base}"
  client_id: "{base}"
  discovery: false
web:
  bind: "127.0.0.1:0"
"#,
        state = state_dir.display()
    );
    let messages = watch_topics(port, &format!("{base}/bridge/#")).await;
    let devices_topic = format!("{base}/bridge/devices");
    let event_topic = format!("{base}/bridge/event");
    let (config, _) = parse_with(
        &yaml,
        "test.yaml",
        &ValidateOptions::with_built_in_drivers(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let support::WebGateway { stop, task, web } = support::start_with_web(config).await;

    // At start: the configured meter, not heard yet.
    let list = until(&messages, &devices_topic, |v| {
        device(v, "76348799").is_some()
    })
    .await;
    let kitchen = device(&list, "76348799").unwrap();
    assert_eq!(kitchen["name"], "Kitchen water");
    assert_eq!(kitchen["configured"], true);
    assert_eq!(kitchen["driver"], "auto");
    assert_eq!(kitchen["last_seen"], Value::Null);
    assert_eq!(
        kitchen["state_topic"],
        format!("{base}/kitchen_water/state")
    );

    // Heard: the configured meter's static data, and the unconfigured encrypted one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_udp(udp, KAMWATER, -71);
    send_udp(udp, ENCRYPTED, -80);
    send_udp(udp, ENCRYPTED, -79);
    let list = until(&messages, &devices_topic, |v| {
        device(v, "61070071").is_some()
            && device(v, "76348799").is_some_and(|k| k["driver"] == "kamwater")
    })
    .await;
    let kitchen = device(&list, "76348799").unwrap();
    assert_eq!(kitchen["manufacturer"], "KAM");
    assert_eq!(kitchen["medium"], "cold water");
    assert_eq!(kitchen["encryption"], "ELL AES-CTR");
    assert_eq!(kitchen["source"], "esp32");
    assert_eq!(kitchen["rssi_dbm"], -71);
    assert!(
        kitchen["last_seen"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{kitchen}"
    );
    let stranger = device(&list, "61070071").unwrap();
    assert_eq!(stranger["configured"], false);
    assert_eq!(stranger["encryption"], "needs a key");
    assert_eq!(stranger["manufacturer"], "AAA");
    assert_eq!(stranger["medium"], "water");
    assert_eq!(stranger["driver"], "aventieswm");
    assert_eq!(stranger["source"], "esp32");
    assert!(stranger.get("name").is_none());

    // One meter_heard for it, however often it is heard; none for the configured meter.
    let heard: Vec<Value> = on(&messages, &event_topic).iter().map(json).collect();
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert_eq!(heard[0]["type"], "meter_heard");
    assert_eq!(heard[0]["data"]["id"], "61070071");
    assert_eq!(heard[0]["data"]["encryption"], "needs a key");
    assert!(on(&messages, &event_topic).iter().all(|m| !m.retained));

    // More telegrams from known meters do not republish the list.
    let published = on(&messages, &devices_topic).len();
    for rssi in [-70, -69, -68] {
        send_udp(udp, KAMWATER, rssi);
        send_udp(udp, ENCRYPTED, rssi);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(on(&messages, &devices_topic).len(), published);
    assert_eq!(on(&messages, &event_topic).len(), 1);

    // Added on the web page: a meter_added event, and the list shows it configured.
    let page = http(web, "GET", "/", "", "").await.1;
    let token = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|a| a.split('"').next())
        .unwrap()
        .to_string();
    let body = serde_json::json!({"id": "61070071", "name": "Garden", "driver": "", "key": KEY});
    let (status, answer) = http(web, "POST", "/api/meters", &token, &body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let added = until(&messages, &event_topic, |v| v["type"] == "meter_added").await;
    assert_eq!(added["data"]["id"], "61070071");
    assert_eq!(added["data"]["name"], "Garden");
    assert_eq!(added["data"]["configured"], true);
    assert_eq!(added["data"]["manufacturer"], "AAA");
    let list = until(&messages, &devices_topic, |v| {
        device(v, "61070071").is_some_and(|g| g["configured"] == true)
    })
    .await;
    let garden = device(&list, "61070071").unwrap();
    assert_eq!(garden["name"], "Garden");
    assert_eq!(garden["state_topic"], format!("{base}/garden/state"));
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    // The wired meter, read once at start.
    let heat = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "Heat")
        .unwrap();
    assert_eq!(heat["bus"], "cellar");
    assert_eq!(heat["address"], 1);
    assert_eq!(heat["source"], "cellar");
    assert_eq!(heat["driver"], "kamheat");
    assert_eq!(heat["manufacturer"], "KAM");
    assert_eq!(heat["encryption"], "none");
    assert_eq!(heat["medium"], "heat");
    assert_eq!(heat["configured"], true);
    assert!(heat["last_seen"].is_string(), "{heat}");

    // A newcomer gets the list retained.
    let late = watch_topics(port, &devices_topic).await;
    let retained = until(&late, &devices_topic, |_| true).await;
    assert_eq!(retained, list);
    assert!(on(&late, &devices_topic)[0].retained);

    // The key is in no message.
    for m in messages.lock().unwrap().iter() {
        let text = String::from_utf8_lossy(&m.payload).to_ascii_uppercase();
        assert!(!text.contains(KEY), "key in {}", m.topic);
    }

    stop.send(true).unwrap();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&state_dir);
}

/// The first wired frame among a driver's test telegrams.
fn wired_frame(driver: &str) -> Vec<u8> {
    let d = meterbridge::drivers::Registry::built_in_static()
        .get(driver)
        .unwrap();
    d.tests()
        .iter()
        .flat_map(|t| t.telegrams.iter())
        .filter_map(|t| meterbridge::wire::hex::decode(t).ok())
        .find(|f| f[0] == 0x68)
        .unwrap()
}

/// A secondary address as scans print it: the id digits, then manufacturer, version and
/// medium, from the select bytes (id little-endian BCD first).
fn secondary_text(select: &[u8; 8]) -> String {
    let id: String = select[..4]
        .iter()
        .rev()
        .map(|b| format!("{b:02X}"))
        .collect();
    let rest: String = select[4..].iter().map(|b| format!("{b:02X}")).collect();
    id + &rest
}

/// Meters a scan on the web page finds on a wired bus join the list when they are not
/// configured (bus, addresses, manufacturer, medium, version), with one `meter_found` event per
/// meter however often it is found, none for the configured one; added from the scan, the
/// meter is listed once, as configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meters_found_by_a_wired_scan_join_the_list() {
    let port = broker::rumqttd_port();
    let base = format!("found{}", broker::free_port());
    let state_dir = std::env::temp_dir().join(format!(
        "meterbridge-bridge-found-{}-{}",
        std::process::id(),
        broker::free_port()
    ));
    let _ = std::fs::remove_dir_all(&state_dir);
    // A Kamstrup 403 at primary address 1 (configured) and a Landis+Gyr Ultraheat at 5 (not).
    let heat = support::kamheat_frame();
    let ultra = wired_frame("ultraheat");
    let ultra_secondary = meterbridge::sim::bus::secondary_of(&ultra).unwrap();
    let ultra_text = secondary_text(&ultra_secondary.to_select_bytes());
    let sim = BusSim::new(vec![
        SimMeter::new(1, meterbridge::sim::bus::secondary_of(&heat).unwrap())
            .with_telegrams(vec![heat])
            .unwrap(),
        SimMeter::new(5, ultra_secondary)
            .with_telegrams(vec![ultra])
            .unwrap(),
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bus = listener.local_addr().unwrap().to_string();
    tokio::spawn(meterbridge::sim::serve_tcp(
        listener,
        Arc::new(Mutex::new(sim)),
        ServeOptions {
            baud: 2400,
            log: false,
        },
    ));
    let yaml = format!(
        r#"state_dir: "{state}"
buses:
  - name: cellar
    tcp: "{bus}"
    polling: 1h
meters:
  - name: Heat
    bus: cellar
    address: 1
    driver: kamheat
mqtt:
  url: "mqtt://127.0.0.1:{port}"
  base_topic: "{base}"
  client_id: "{base}"
  discovery: false
web:
  bind: "127.0.0.1:0"
"#,
        state = state_dir.display()
    );
    let messages = watch_topics(port, &format!("{base}/bridge/#")).await;
    let devices_topic = format!("{base}/bridge/devices");
    let event_topic = format!("{base}/bridge/event");
    let (config, _) = parse_with(
        &yaml,
        "test.yaml",
        &ValidateOptions::with_built_in_drivers(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let support::WebGateway { stop, task, web } = support::start_with_web(config).await;
    let page = http(web, "GET", "/", "", "").await.1;
    let token = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|a| a.split('"').next())
        .unwrap()
        .to_string();
    let is_ultra = |d: &Value| d["secondary_address"] == ultra_text.as_str();
    let scan_done = |wanted: usize| async move {
        let start = Instant::now();
        loop {
            let (_, text) = http(web, "GET", "/api/wired", "", "").await;
            let view: Value = serde_json::from_str(&text).unwrap();
            let outcome = view["buses"][0]["scan"]["outcome"]
                .as_str()
                .map(String::from);
            if view["buses"][0]["scan"]["running"] == false
                && outcome.as_deref()
                    == Some(&*format!("secondary scan done: {wanted} meter(s) found"))
            {
                return;
            }
            assert!(start.elapsed() < WAIT * 3, "scan not done: {view}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let scan = || async {
        let body = serde_json::json!({"bus": "cellar", "type": "secondary"}).to_string();
        let (status, answer) = http(web, "POST", "/api/wired/scan", &token, &body).await;
        assert_eq!(status, 200, "{answer}");
    };

    // Before a scan: the configured meter alone.
    let list = until(&messages, &devices_topic, |v| {
        v.as_array().is_some_and(|l| l.len() == 1)
    })
    .await;
    assert_eq!(list[0]["name"], "Heat");

    scan().await;
    scan_done(2).await;
    let list = until(&messages, &devices_topic, |v| {
        v.as_array().is_some_and(|l| l.iter().any(is_ultra))
    })
    .await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let found = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| is_ultra(d))
        .unwrap();
    assert_eq!(found["configured"], false);
    assert_eq!(found["bus"], "cellar");
    assert_eq!(found["source"], "cellar");
    assert_eq!(found["address"], 5);
    assert_eq!(found["id"], &ultra_text[..8]);
    assert_eq!(found["manufacturer"], "LUG");
    assert_eq!(found["medium"], "heat");
    assert_eq!(
        found["version"],
        u64::from_str_radix(&ultra_text[12..14], 16).unwrap()
    );
    assert!(found["last_seen"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert!(found.get("name").is_none());
    // The configured Kamstrup, found too, is not listed twice.
    assert_eq!(
        list.as_array()
            .unwrap()
            .iter()
            .filter(|d| d["address"] == 1)
            .count(),
        1,
        "{list}"
    );

    // Found again: no second event.
    scan().await;
    scan_done(2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events: Vec<Value> = on(&messages, &event_topic).iter().map(json).collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "meter_found");
    assert_eq!(events[0]["data"]["secondary_address"], ultra_text.as_str());
    assert_eq!(events[0]["data"]["address"], 5);
    assert_eq!(events[0]["data"]["manufacturer"], "LUG");

    // Added from the scan: listed once, configured.
    let body =
        serde_json::json!({"bus": "cellar", "address": 5, "name": "Flat 2", "driver": "auto"});
    let (status, answer) = http(web, "POST", "/api/wired/meters", &token, &body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let list = until(&messages, &devices_topic, |v| {
        v.as_array()
            .is_some_and(|l| l.iter().any(|d| d["name"] == "Flat 2"))
    })
    .await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert!(!list.as_array().unwrap().iter().any(is_ultra), "{list}");

    stop.send(true).unwrap();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&state_dir);
}
