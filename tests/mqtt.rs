//! The MQTT publisher against real brokers: an in-process rumqttd always, and mosquitto when it
//! is installed. A test subscriber (a plain rumqttc client, independent of the publisher's
//! queue) watches what arrives; a TCP proxy in front of the broker simulates outages.

use std::collections::{BTreeSet, VecDeque};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meterbridge::drivers::run::DriverRun;
use meterbridge::drivers::Registry;
use meterbridge::mqtt::discovery::{discovery_topic, gateway_descriptor, object_id, slug};
use meterbridge::mqtt::entities::{components_for_driver, meter_components_extra};
use meterbridge::mqtt::{DeviceDescriptor, Incoming, MqttSettings, Publisher};
use meterbridge::security::KeyStore;
use meterbridge::wire::hex;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, SubscribeFilter};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{sleep, timeout, Instant};

const WAIT: Duration = Duration::from_secs(10);
/// A Multical 21 telegram (C1, unencrypted compact frame) from the project's CLI tests.
const MULTICAL21: &str =
    "2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713";

#[path = "support/broker.rs"]
mod broker;
mod support;

use broker::{brokers, free_port, wait_until_listening, Mosquitto};

/// Topics unique to one test run against one broker.
fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Starts a client with the test process's log subscriber already in place: `tracing` decides
/// once per call site whether anyone listens, and a subscriber installed while other tests'
/// clients already log can miss call sites registered at that moment.
fn start(
    s: MqttSettings,
) -> Result<(Publisher, tokio::sync::mpsc::Receiver<Incoming>), meterbridge::mqtt::MqttError> {
    support::global_log();
    meterbridge::mqtt::start(s)
}

fn settings(port: u16, base: &str) -> MqttSettings {
    let mut s = MqttSettings::new("127.0.0.1", port);
    s.client_id = format!("{base}-gw");
    s.base_topic = base.to_string();
    s.discovery_prefix = format!("{base}-ha");
    s
}

/// What the subscriber received.
#[derive(Debug)]
struct Publish {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

/// A minimal subscriber: a rumqttc client of its own, polled only by the test.
struct Subscriber {
    client: AsyncClient,
    events: EventLoop,
    /// Publishes that arrived while waiting for something else (a SUBACK, our own send).
    received: VecDeque<Publish>,
}

impl Subscriber {
    async fn connect(port: u16, filters: &[&str]) -> Subscriber {
        let mut options = MqttOptions::new(unique("sub"), "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(60))
            .set_max_packet_size(4 << 20, 4 << 20);
        let (client, events) = AsyncClient::new(options, 16);
        let mut s = Subscriber {
            client,
            events,
            received: VecDeque::new(),
        };
        match s.event().await {
            Event::Incoming(Packet::ConnAck(_)) => {}
            other => panic!("no CONNACK: {other:?}"),
        }
        if !filters.is_empty() {
            let with_qos = filters
                .iter()
                .map(|f| SubscribeFilter::new(f.to_string(), QoS::AtLeastOnce));
            s.client.subscribe_many(with_qos).await.unwrap();
            // In place before the test goes on; retained messages may arrive before the SUBACK.
            loop {
                if let Event::Incoming(Packet::SubAck(_)) = s.event().await {
                    break;
                }
            }
        }
        s
    }

    /// The next event; incoming publishes are also kept for `next_within`.
    async fn event(&mut self) -> Event {
        let event = timeout(WAIT, self.events.poll())
            .await
            .expect("broker answers within 10 s")
            .expect("subscriber connection");
        if let Event::Incoming(Packet::Publish(p)) = &event {
            self.received.push_back(Publish {
                topic: p.topic.clone(),
                payload: p.payload.to_vec(),
                retain: p.retain,
            });
        }
        event
    }

    /// The next PUBLISH within `within`, or None.
    async fn next_within(&mut self, within: Duration) -> Option<Publish> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(p) = self.received.pop_front() {
                return Some(p);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    return Some(Publish {
                        topic: p.topic,
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                    })
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("subscriber connection: {e}"),
                Err(_) => return None,
            }
        }
    }

    /// The first message on `topic` (others are skipped).
    async fn expect(&mut self, topic: &str) -> Publish {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_within(left).await {
                Some(p) if p.topic == topic => return p,
                Some(_) => {}
                None => panic!("nothing on {topic} within {WAIT:?}"),
            }
        }
    }

    /// Publishes at QoS 0 and returns once it is written to the broker.
    async fn send(&mut self, topic: &str, payload: &[u8], retain: bool) {
        self.client
            .publish(topic, QoS::AtMostOnce, retain, payload.to_vec())
            .await
            .unwrap();
        loop {
            if let Event::Outgoing(Outgoing::Publish(_)) = self.event().await {
                return;
            }
        }
    }
}

/// The retained message on `topic`, as a subscriber connecting now sees it.
async fn retained(port: u16, topic: &str) -> Option<Publish> {
    let mut s = Subscriber::connect(port, &[topic]).await;
    loop {
        match s.next_within(Duration::from_millis(700)).await {
            Some(p) if p.topic == topic => return Some(p),
            Some(_) => {}
            None => return None,
        }
    }
}

fn multical21_device(base: &str) -> DeviceDescriptor {
    let driver = Registry::built_in_static().get("multical21").unwrap();
    let mut components = components_for_driver(driver, "water", Some(7200));
    components.extend(meter_components_extra(true));
    DeviceDescriptor {
        object_id: object_id("KAM", "76348799"),
        name: "Water 76348799".into(),
        manufacturer: Some("Kamstrup".into()),
        model: Some("Multical 21".into()),
        serial: Some("76348799".into()),
        hw_version: Some("1b".into()),
        via_device: Some(gateway_descriptor("main", base, "0").object_id),
        configuration_url: None,
        state_topic: format!("{base}/{}/state", slug("Kitchen Water")),
        components,
    }
}

fn decoded_multical21() -> String {
    let mut run = DriverRun::new(Registry::built_in_static(), KeyStore::new());
    run.process(
        &hex::decode(MULTICAL21).unwrap(),
        "auto",
        "Kitchen Water",
        "2026-11-21T10:00:00Z",
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_states_status_and_withdraw() {
    for broker in brokers() {
        let base = unique("mbA");
        let s = settings(broker.port, &base);
        let prefix = s.discovery_prefix.clone();
        let mut watch =
            Subscriber::connect(broker.port, &[&format!("{base}/#"), &format!("{prefix}/#")]).await;
        let (publisher, _incoming) = start(s).unwrap();
        let device = multical21_device(&base);
        let config_topic = discovery_topic(&prefix, &device.object_id);
        publisher.announce(device.clone());

        // `online` proves the watcher's subscription is routed (rumqttd acknowledges a
        // subscription before its router applies it, so messages published at once can miss it).
        let status = watch.expect(&format!("{base}/status")).await;
        assert_eq!(status.payload, b"online", "{}", broker.name);
        let state = decoded_multical21();
        publisher.state("kitchen_water", state.clone());
        for seq in 0..50 {
            publisher.state("kitchen_water", format!("{{\"seq\":{seq}}}"));
        }

        let config = watch.expect(&config_topic).await;
        let doc: Value = serde_json::from_slice(&config.payload).unwrap();
        println!("{} discovery: {doc}", broker.name);
        assert_eq!(
            doc["dev"],
            json!({"ids": ["meterbridge_kam_76348799"], "name": "Water 76348799", "mf": "Kamstrup",
                   "mdl": "Multical 21", "sn": "76348799", "hw": "1b", "via_device": "meterbridge_gw_main"})
        );
        assert_eq!(doc["o"]["name"], "meterbridge");
        assert_eq!(doc["o"]["sw"], env!("CARGO_PKG_VERSION"));
        assert_eq!(
            doc["availability"],
            json!([{"topic": format!("{base}/status")}])
        );
        assert_eq!(doc["state_topic"], format!("{base}/kitchen_water/state"));
        assert_eq!(doc["qos"], 1);
        assert_eq!(
            doc["cmps"]["total_m3"],
            json!({"p": "sensor", "name": "Total",
                   "unique_id": "meterbridge_kam_76348799_total_m3",
                   "default_entity_id": "sensor.meterbridge_kam_76348799_total_m3",
                   "device_class": "water", "unit_of_measurement": "m³",
                   "state_class": "total_increasing", "expire_after": 7200,
                   "suggested_display_precision": 3,
                   "value_template": "{{ value_json.total_m3 | default(None) }}"})
        );
        assert_eq!(doc["cmps"]["rssi_dbm"]["enabled_by_default"], false);
        assert_eq!(doc["cmps"]["rssi_dbm"]["entity_category"], "diagnostic");
        assert_eq!(doc["cmps"]["status"]["entity_category"], "diagnostic");
        assert!(doc["cmps"]["status"].get("unit_of_measurement").is_none());
        assert!(doc["cmps"].get("object_id").is_none());

        // The decoded reading first, then the sequence, in order.
        let state_topic = format!("{base}/kitchen_water/state");
        let first = watch.expect(&state_topic).await;
        let reading: Value = serde_json::from_slice(&first.payload).unwrap();
        println!("{} state: {reading}", broker.name);
        assert_eq!(reading["total_m3"], 6.408);
        assert_eq!(reading["id"], "76348799");
        for seq in 0..50 {
            let p = watch.expect(&state_topic).await;
            let v: Value = serde_json::from_slice(&p.payload).unwrap();
            assert_eq!(v["seq"], seq, "{}", broker.name);
        }

        // Retained for whoever subscribes later.
        let status = retained(broker.port, &format!("{base}/status"))
            .await
            .unwrap();
        assert!(
            status.retain && status.payload == b"online",
            "{}",
            broker.name
        );
        let doc = retained(broker.port, &config_topic)
            .await
            .expect("retained discovery");
        assert!(doc.retain && !doc.payload.is_empty());
        let last = retained(broker.port, &state_topic).await.unwrap();
        assert_eq!(last.payload, b"{\"seq\":49}");

        publisher.withdraw(&device.object_id);
        let cleared = watch.expect(&config_topic).await;
        assert!(cleared.payload.is_empty(), "{}", broker.name);
        assert!(
            retained(broker.port, &config_topic).await.is_none(),
            "{}: the config is still retained",
            broker.name
        );

        let stats = publisher.shutdown().await;
        assert_eq!((stats.queued, stats.dropped), (0, 0));
        // online + discovery + 51 states + withdrawal + offline
        assert_eq!(stats.published, 55, "{}", broker.name);
        let offline = watch.expect(&format!("{base}/status")).await;
        assert_eq!(offline.payload, b"offline");
        let status = retained(broker.port, &format!("{base}/status"))
            .await
            .unwrap();
        assert_eq!(status.payload, b"offline", "{}", broker.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_birth_requests_and_extra_subscriptions() {
    for broker in brokers() {
        let base = unique("mbB");
        let mut s = settings(broker.port, &base);
        let extra = format!("{base}-raw/telegrams");
        s.extra_subscriptions = vec![extra.clone()];
        let prefix = s.discovery_prefix.clone();
        let mut watch = Subscriber::connect(
            broker.port,
            &[&format!("{prefix}/device/#"), &format!("{base}/status")],
        )
        .await;
        let (publisher, mut incoming) = start(s).unwrap();
        let device = multical21_device(&base);
        let config_topic = discovery_topic(&prefix, &device.object_id);
        publisher.announce(device);
        let gateway = gateway_descriptor("main", &base, "0.1.0");
        let gateway_topic = discovery_topic(&prefix, &gateway.object_id);
        publisher.announce(gateway);
        // `online` goes out after the subscriptions, so they are in place once it is seen.
        watch.expect(&format!("{base}/status")).await;
        let first = watch.both(&config_topic, &gateway_topic).await;

        // Home Assistant's birth message: live, QoS 0, not retained.
        watch
            .send(&format!("{prefix}/status"), b"online", false)
            .await;
        let again = watch.both(&config_topic, &gateway_topic).await;
        assert_eq!(again, first, "{}", broker.name);
        let gw: Value = serde_json::from_slice(&again.1).unwrap();
        println!("{} gateway discovery: {gw}", broker.name);
        assert_eq!(gw["cmps"]["receiver_connected"]["p"], "binary_sensor");
        assert_eq!(
            gw["cmps"]["receiver_connected"]["device_class"],
            "connectivity"
        );
        assert_eq!(gw["state_topic"], format!("{base}/gateway/state"));
        let event = timeout(WAIT, incoming.recv()).await.unwrap();
        assert_eq!(event, Some(Incoming::HomeAssistantOnline));

        // `offline` from Home Assistant changes nothing.
        watch
            .send(&format!("{prefix}/status"), b"offline", false)
            .await;
        watch
            .send(&format!("{base}/request/scan"), b"{\"seconds\":5}", false)
            .await;
        let event = timeout(WAIT, incoming.recv()).await.unwrap();
        assert_eq!(
            event,
            Some(Incoming::Request {
                name: "scan".into(),
                payload: b"{\"seconds\":5}".to_vec()
            })
        );
        watch.send(&extra, b"2A44", false).await;
        let event = timeout(WAIT, incoming.recv()).await.unwrap();
        assert_eq!(
            event,
            Some(Incoming::Message {
                topic: extra.clone(),
                payload: b"2A44".to_vec()
            })
        );
        assert!(
            watch
                .next_within(Duration::from_millis(300))
                .await
                .is_none(),
            "{}: HA going offline must not re-publish",
            broker.name
        );
        // Clean up the retained documents of this test.
        publisher.withdraw("meterbridge_kam_76348799");
        publisher.withdraw("meterbridge_gw_main");
        let stats = publisher.shutdown().await;
        assert_eq!(stats.queued, 0);
    }
}

/// A TCP relay that can be cut (every connection closed, new ones closed right away) and
/// restored, or turned into a black hole: nothing passes any more, yet no socket is closed,
/// as when Wi-Fi drops, a NAT entry expires or the broker's machine freezes.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    hole: watch::Sender<bool>,
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let (hole, _) = watch::channel(false);
        let accept_up = up.clone();
        let accept_generation = generation.clone();
        let accept_hole = hole.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accept_up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut = accept_generation.subscribe();
                let mut hole = accept_hole.subscribe();
                tokio::spawn(async move {
                    // Accepted during the silence: like a SYN answered only once the link is
                    // back, it goes through afterwards, if the client is still waiting.
                    tokio::select! {
                        _ = hole.wait_for(|on| !*on) => {}
                        _ = cut.changed() => return,
                    }
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    // Checked before each forwarding step: once the hole is on, not one more
                    // byte may pass, whichever side the task was woken for.
                    tokio::select! {
                        biased;
                        _ = hole.wait_for(|on| *on) => {}
                        _ = cut.changed() => return,
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
                    }
                    // Bytes already dropped cannot be taken back: this connection stays dead
                    // after the silence too, as a NAT entry once expired does.
                    swallow(client, server, cut).await;
                });
            }
        });
        Proxy {
            port,
            up,
            generation,
            hole,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    fn black_hole(&self, on: bool) {
        self.hole.send_replace(on);
    }
}

/// Reads and drops whatever either side sends, keeping both sockets open, until the client
/// closes its end: no FIN or RST may tell it the connection is gone.
async fn swallow(mut client: TcpStream, mut server: TcpStream, mut cut: watch::Receiver<u64>) {
    let (mut from_client, mut from_server) = ([0u8; 4096], [0u8; 4096]);
    let mut server_open = true;
    loop {
        tokio::select! {
            r = client.read(&mut from_client) => {
                if !matches!(r, Ok(n) if n > 0) {
                    return;
                }
            }
            // The broker may give up on its side first (keep-alive); the client must not learn
            // of it from us.
            r = server.read(&mut from_server), if server_open => {
                server_open = matches!(r, Ok(n) if n > 0);
            }
            _ = cut.changed() => return,
        }
    }
}

fn seqs_of(p: &Publish) -> u64 {
    let v: Value = serde_json::from_slice(&p.payload).unwrap();
    v["seq"].as_u64().unwrap()
}

async fn wait_for_stats(
    publisher: &Publisher,
    what: &str,
    ok: impl Fn(&meterbridge::mqtt::MqttStats) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = publisher.stats();
        if ok(&stats) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {stats:?}");
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_loses_no_reading_and_fires_the_last_will() {
    for broker in brokers() {
        let base = unique("mbC");
        let proxy = Proxy::start(broker.port).await;
        let status_topic = format!("{base}/status");
        let state_topic = format!("{base}/m/state");
        let mut watch = Subscriber::connect(broker.port, &[&status_topic, &state_topic]).await;
        let log = support::global_log();
        let (publisher, _incoming) = start(settings(proxy.port, &base)).unwrap();
        assert_eq!(watch.expect(&status_topic).await.payload, b"online");

        let mut seen = BTreeSet::new();
        // Every state message, repeats included: QoS 1 delivers at least once, and a reading
        // whose PUBACK was lost in the cut is sent again.
        let mut received = 0usize;
        for seq in 0..100u64 {
            publisher.state("m", format!("{{\"seq\":{seq}}}"));
        }
        // Cut while some of the first hundred are still in flight.
        proxy.cut();
        // The broker saw the connection die without DISCONNECT: the will says offline.
        loop {
            let p = watch.expect_any(&[&status_topic, &state_topic]).await;
            if p.topic == status_topic {
                assert_eq!(p.payload, b"offline", "{}: last will", broker.name);
                break;
            }
            seen.insert(seqs_of(&p));
            received += 1;
        }
        for seq in 100..200u64 {
            publisher.state("m", format!("{{\"seq\":{seq}}}"));
            if seq % 25 == 0 {
                sleep(Duration::from_millis(100)).await;
            }
        }
        wait_for_stats(&publisher, "disconnected", |s| !s.connected).await;
        assert!(publisher.stats().queued >= 100, "{:?}", publisher.stats());
        sleep(Duration::from_secs(1)).await;
        proxy.restore();

        // On the new connection the unacknowledged readings come first and everything in
        // order: nothing replayed by the MQTT library itself jumps the queue.
        let mut last_after_reconnect: Option<u64> = None;
        let mut reconnected = false;
        loop {
            let p = watch.expect_any(&[&status_topic, &state_topic]).await;
            if p.topic == status_topic {
                assert_eq!(p.payload, b"online");
                reconnected = true;
                continue;
            }
            let seq = seqs_of(&p);
            if reconnected {
                assert!(
                    last_after_reconnect.is_none_or(|last| seq > last),
                    "{}: {seq} after {last_after_reconnect:?}",
                    broker.name
                );
                last_after_reconnect = Some(seq);
            }
            seen.insert(seq);
            received += 1;
            if seen.len() == 200 {
                break;
            }
        }
        assert!(reconnected, "{}", broker.name);
        assert_eq!(seen, (0..200).collect::<BTreeSet<u64>>(), "{}", broker.name);
        // The log tells the story: connected, lost, and delivery resumed with what was queued.
        let address = format!("127.0.0.1:{}", proxy.port);
        let events = log.events();
        let said = |start: &str| {
            events
                .iter()
                .find(|e| e.message.starts_with(start))
                .unwrap_or_else(|| panic!("{}: no {start:?} in {events:#?}", broker.name))
                .clone()
        };
        let connected = said(&format!("mqtt: connected to broker {address}"));
        assert_eq!(connected.level, tracing::Level::INFO);
        let lost = said(&format!("mqtt: connection to broker {address} lost: "));
        assert_eq!(lost.level, tracing::Level::WARN);
        assert!(lost.message.contains("retrying in"), "{lost:?}");
        let back = said(&format!("mqtt: reconnected to broker {address} after "));
        assert_eq!(back.level, tracing::Level::INFO);
        assert!(
            back.fields
                .iter()
                .any(|(k, v)| k == "broker" && *v == address),
            "{back:?}"
        );
        // At least the 100 readings published during the outage were waiting.
        let queued: usize = back
            .message
            .split(", ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{back:?}"));
        assert!(queued >= 100, "{back:?}");
        eprintln!(
            "{}: 200 readings, {received} state messages received ({} sent again after the cut \
             because their acknowledgement was lost)",
            broker.name,
            received - 200
        );
        wait_for_stats(&publisher, "drained", |s| s.queued == 0 && s.connected).await;
        let stats = publisher.shutdown().await;
        assert_eq!(stats.dropped, 0);
        assert!(stats.published >= 200 + 2, "{stats:?}");
    }
}

/// The connection stays open but nothing passes any more (issue 9): only the keep-alive can
/// tell. Readings published meanwhile wait in our queue and arrive after it, each once, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_noticed_by_the_keep_alive_and_loses_nothing() {
    const BEFORE: u64 = 20;
    const DURING: u64 = 20;
    const AFTER: u64 = 20;
    const TOTAL: u64 = BEFORE + DURING + AFTER;
    const HOLE: Duration = Duration::from_secs(5);
    /// Far beyond any expected recovery: only "never" fails.
    const NEVER: Duration = Duration::from_secs(30);
    const POLL: Duration = Duration::from_millis(50);
    let reading = |seq: u64| format!("{{\"seq\":{seq}}}");
    for broker in brokers() {
        let base = unique("mbH");
        let proxy = Proxy::start(broker.port).await;
        let status_topic = format!("{base}/status");
        let state_topic = format!("{base}/m/state");
        let topics = [status_topic.as_str(), state_topic.as_str()];
        let mut watch = Subscriber::connect(broker.port, &topics).await;
        let mut s = settings(proxy.port, &base);
        s.keep_alive = Duration::from_secs(1);
        let (publisher, _incoming) = start(s).unwrap();
        assert_eq!(watch.expect(&status_topic).await.payload, b"online");

        let mut arrived = Vec::new();
        for seq in 0..BEFORE {
            publisher.state("m", reading(seq));
        }
        while arrived.len() < BEFORE as usize {
            let p = watch.expect_any(&topics).await;
            assert_eq!(p.topic, state_topic, "{}: {:?}", broker.name, p.payload);
            arrived.push(seqs_of(&p));
        }
        // Nothing in flight when the silence begins: whatever the broker got was acknowledged.
        wait_for_stats(&publisher, "acknowledged", |s| s.queued == 0 && s.connected).await;

        proxy.black_hole(true);
        let hole_start = Instant::now();
        let mut noticed: Option<Duration> = None;
        let mut will: Option<Duration> = None;
        let observe = |p: &Publish, will: &mut Option<Duration>, arrived: &mut Vec<u64>| {
            if p.topic == status_topic {
                if p.payload == b"offline" && will.is_none() {
                    *will = Some(hole_start.elapsed());
                }
            } else {
                arrived.push(seqs_of(p));
            }
        };
        // Spread over the silence: the first go into the dead connection, the rest queue up
        // once the client has noticed.
        for seq in BEFORE..BEFORE + DURING {
            publisher.state("m", reading(seq));
            let slice_end = hole_start + HOLE.mul_f64((seq - BEFORE + 1) as f64 / DURING as f64);
            while Instant::now() < slice_end {
                if noticed.is_none() && !publisher.stats().connected {
                    noticed = Some(hole_start.elapsed());
                }
                if let Some(p) = watch.next_within(POLL).await {
                    observe(&p, &mut will, &mut arrived);
                }
            }
        }
        assert_eq!(
            arrived.len(),
            BEFORE as usize,
            "{}: something passed the black hole: {arrived:?}",
            broker.name
        );
        let stats = publisher.stats();
        eprintln!(
            "{}: during the black hole: {stats:?}, client noticed after {noticed:?}, \
             broker's will after {will:?}",
            broker.name
        );

        proxy.black_hole(false);
        let hole_end = Instant::now();
        for seq in BEFORE + DURING..TOTAL {
            publisher.state("m", reading(seq));
        }
        let mut first_held: Option<Duration> = None;
        let mut online_again: Option<Duration> = None;
        while (0..TOTAL).any(|seq| !arrived.contains(&seq)) {
            assert!(
                hole_end.elapsed() < NEVER,
                "{}: never recovered: {:?}, got {arrived:?}",
                broker.name,
                publisher.stats()
            );
            if noticed.is_none() && !publisher.stats().connected {
                noticed = Some(hole_start.elapsed());
            }
            let Some(p) = watch.next_within(POLL).await else {
                continue;
            };
            if p.topic == status_topic && p.payload == b"online" {
                online_again.get_or_insert(hole_end.elapsed());
            }
            observe(&p, &mut will, &mut arrived);
            if first_held.is_none()
                && arrived
                    .iter()
                    .any(|seq| (BEFORE..BEFORE + DURING).contains(seq))
            {
                first_held = Some(hole_end.elapsed());
            }
        }
        let all = hole_end.elapsed();
        wait_for_stats(&publisher, "drained", |s| s.queued == 0 && s.connected).await;
        // A late duplicate would come right behind the rest.
        while let Some(p) = watch.next_within(Duration::from_millis(300)).await {
            observe(&p, &mut will, &mut arrived);
        }
        let duplicates = arrived.len() - (0..TOTAL).filter(|seq| arrived.contains(seq)).count();
        eprintln!(
            "{}: keep_alive 1s, black hole {HOLE:?}: client noticed after {noticed:?}, \
             broker's will after {will:?}; after the hole: online again after {online_again:?}, \
             first held reading after {first_held:?}, all {TOTAL} after {all:?}; \
             {duplicates} duplicates",
            broker.name
        );
        // QoS 1 allows duplicates, but none can happen here: nothing reached the broker
        // during the silence, so nothing it had was left unacknowledged, and what the dead
        // connection swallowed went to the front of the queue once, in its order.
        assert_eq!(arrived, (0..TOTAL).collect::<Vec<u64>>(), "{}", broker.name);
        let stats = publisher.shutdown().await;
        assert_eq!((stats.queued, stats.dropped), (0, 0), "{}", broker.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_the_oldest_and_counts_them() {
    for broker in brokers() {
        let base = unique("mbD");
        let proxy = Proxy::start(broker.port).await;
        proxy.cut();
        let state_topic = format!("{base}/m/state");
        let mut watch = Subscriber::connect(broker.port, &[&state_topic]).await;
        let mut s = settings(proxy.port, &base);
        s.queue_limit = 50;
        let (publisher, _incoming) = start(s).unwrap();
        for seq in 0..80u64 {
            publisher.state("m", format!("{{\"seq\":{seq}}}"));
        }
        let stats = publisher.stats();
        assert_eq!(
            (stats.connected, stats.queued, stats.dropped),
            (false, 50, 30)
        );
        proxy.restore();
        let mut seen = BTreeSet::new();
        while seen.len() < 50 {
            seen.insert(seqs_of(&watch.expect(&state_topic).await));
        }
        assert_eq!(seen, (30..80).collect::<BTreeSet<u64>>(), "{}", broker.name);
        assert!(watch
            .next_within(Duration::from_millis(300))
            .await
            .is_none());
        let stats = publisher.shutdown().await;
        assert_eq!((stats.queued, stats.dropped), (0, 30));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_without_a_broker_reports_what_was_not_delivered() {
    let port = free_port();
    let (publisher, mut incoming) = start(settings(port, &unique("mbE"))).unwrap();
    for seq in 0..5 {
        publisher.state("m", format!("{{\"seq\":{seq}}}"));
    }
    let started = Instant::now();
    let stats = publisher.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(
        (stats.connected, stats.queued, stats.published),
        (false, 5, 0)
    );
    // The task has ended: the incoming channel is closed.
    assert_eq!(timeout(WAIT, incoming.recv()).await.unwrap(), None);
}

impl Subscriber {
    /// The payloads of the next messages on two topics, in whatever order they come.
    async fn both(&mut self, a: &str, b: &str) -> (Vec<u8>, Vec<u8>) {
        let (mut pa, mut pb) = (None, None);
        while pa.is_none() || pb.is_none() {
            let p = self.expect_any(&[a, b]).await;
            if p.topic == a {
                pa = Some(p.payload);
            } else {
                pb = Some(p.payload);
            }
        }
        (pa.unwrap(), pb.unwrap())
    }

    /// The next message on any of `topics`.
    async fn expect_any(&mut self, topics: &[&str]) -> Publish {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_within(left).await {
                Some(p) if topics.contains(&p.topic.as_str()) => return p,
                Some(_) => {}
                None => panic!("nothing on {topics:?} within {WAIT:?}"),
            }
        }
    }
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with the openssl
/// command line (no certificate-generating crate in the tree).
fn make_certificates(dir: &std::path::Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=meterbridge test CA",
    ]);
    openssl(dir, &ca);
    let mut other_ca = vec!["req", "-x509"];
    other_ca.extend(ec);
    other_ca.extend([
        "-keyout",
        "other.key",
        "-out",
        "other.pem",
        "-days",
        "2",
        "-subj",
        "/CN=other CA",
    ]);
    openssl(dir, &other_ca);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, ext) in [("server", "server.ext"), ("client", "client.ext")] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                ext,
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_file_and_a_client_certificate() {
    let tools = ["mosquitto", "openssl"].iter().all(|t| {
        Command::new("which")
            .arg(t)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !tools {
        println!("note: mosquitto or openssl is not installed; TLS test skipped");
        return;
    }
    let dir = std::env::temp_dir().join(unique("meterbridge-mqtt-tls-"));
    std::fs::create_dir_all(&dir).unwrap();
    make_certificates(&dir);
    // mosquitto started as root drops to its own user, which must still read the key.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (plain, secure) = (free_port(), free_port());
    let conf = format!(
        "allow_anonymous true\nlistener {plain} 127.0.0.1\nlistener {secure} 127.0.0.1\n\
         cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
         require_certificate true\n",
        d = dir.display()
    );
    std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(dir.join("mosquitto.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _mosquitto = Mosquitto(child);
    wait_until_listening(plain);
    wait_until_listening(secure);

    let base = unique("mbT");
    let state_topic = format!("{base}/m/state");
    let mut watch = Subscriber::connect(plain, &[&state_topic]).await;
    let tls_settings = |ca: &str, client: bool| {
        let mut s = MqttSettings::from_url(&format!("mqtts://127.0.0.1:{secure}")).unwrap();
        s.client_id = unique("tls");
        s.base_topic = base.clone();
        s.ca_file = Some(dir.join(ca));
        if client {
            s.client_cert = Some(dir.join("client.pem"));
            s.client_key = Some(dir.join("client.key"));
        }
        s
    };

    let (publisher, _incoming) = start(tls_settings("ca.pem", true)).unwrap();
    publisher.state("m", "{\"seq\":1}".into());
    assert_eq!(watch.expect(&state_topic).await.payload, b"{\"seq\":1}");
    assert!(publisher.stats().connected);
    publisher.shutdown().await;

    // A broker certificate from another CA, and no client certificate: neither connects.
    for (ca, client) in [("other.pem", true), ("ca.pem", false)] {
        let (publisher, _incoming) = start(tls_settings(ca, client)).unwrap();
        publisher.state("m", "{\"seq\":2}".into());
        sleep(Duration::from_millis(1500)).await;
        let stats = publisher.stats();
        assert!(
            !stats.connected && stats.published == 0,
            "{ca} {client}: {stats:?}"
        );
        drop(publisher);
    }
    assert!(watch
        .next_within(Duration::from_millis(300))
        .await
        .is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}
