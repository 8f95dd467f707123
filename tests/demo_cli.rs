//! `meterbridge demo` — the README's first command — and `check-config` as users run them.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meterbridge"))
}

#[test]
fn demo_prints_readings_of_all_six_meters_counting_up() {
    let out = bin()
        .args(["demo", "--duration", "10", "--format", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // Every reading of a meter, in order.
    let all = |name: &str| -> Vec<&serde_json::Value> {
        let found: Vec<_> = docs.iter().filter(|d| d["name"] == name).collect();
        assert!(
            !found.is_empty(),
            "no reading for {name}: {stdout}\n{stderr}"
        );
        found
    };
    let values = |name: &str, field: &str| -> Vec<f64> {
        all(name)
            .iter()
            .map(|d| d[field].as_f64().unwrap_or_else(|| panic!("{name}: {d}")))
            .collect()
    };
    // The meters start from their drivers' test telegrams and count up from there: within a
    // few seconds by no more than a household's use.
    let starts_near = |name: &str, field: &str, template: f64, most: f64| {
        let v = values(name, field);
        assert!(v[0] >= template && v[0] <= template + most, "{name}: {v:?}");
        assert!(
            v.windows(2).all(|w| w[1] >= w[0]),
            "{name} went down: {v:?}"
        );
        v
    };
    starts_near("Heat flat 1", "total_energy_consumption_kwh", 34510.0, 1.0);
    starts_near("Heat flat 2", "heat_kwh", 8974.4, 1.0);
    starts_near("Heat flat 3", "total_energy_kwh", 3741.5, 1.0);
    assert_eq!(all("Heat flat 2")[0]["meter"], "ultraheat");
    assert_eq!(all("Heat flat 3")[0]["meter"], "elf2");
    starts_near("Cold water", "total_m3", 6.408, 0.01);
    let garden = starts_near("Garden water", "total_m3", 7.704, 0.01);
    assert!(garden.len() >= 2, "{garden:?}");
    assert!(
        garden[garden.len() - 1] > garden[0],
        "the garden hose runs: {garden:?}"
    );
    // The encrypted one: decrypted with the configured key.
    starts_near("Hot water", "total_m3", 466.472, 0.01);
    // A heat meter's flow and temperatures agree with its power (ΔT 20 K, 1.163 kWh/m³K).
    for d in all("Heat flat 2") {
        let (p, f) = (
            d["power_kw"].as_f64().unwrap(),
            d["flow_m3h"].as_f64().unwrap(),
        );
        let dt = d["flow_c"].as_f64().unwrap() - d["return_c"].as_f64().unwrap();
        assert!((dt - 20.0).abs() <= 1.0, "{d}");
        assert!((f - p / (1.163 * 20.0)).abs() < 0.01, "{d}");
    }
    assert!(stderr.contains("0 key errors"), "{stderr}");
    // The neighbour's meter is heard, not configured, and its key is printed for the page.
    assert!(stderr.contains("heard meter 41235813"), "{stderr}");
    assert!(
        stderr.contains("41235813 (encrypted, driver iperl) opens with the key 5A1F0C9E22D84B7391E6A0F43C7B8D15"),
        "{stderr}"
    );
    assert!(!docs.iter().any(|d| d["id"] == "41235813"), "{stdout}");
}

#[test]
fn check_config_accepts_the_example_and_reports_every_mistake() {
    // The example names a key file and an environment variable of the machine it is for;
    // `check-config` checks both, as `run` needs them. Here they are provided.
    let dir = std::env::temp_dir().join(format!("meterbridge-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("hot-water.key");
    std::fs::write(&key, "A004EB23329A477F1DD2D7820B56EB3D\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
            .unwrap()
            .replace("/etc/meterbridge/hot-water.key", &key.display().to_string());
    let copy = dir.join("example.yaml");
    std::fs::write(&copy, example).unwrap();
    let out = bin()
        .arg("check-config")
        .arg(&copy)
        .env("MQTT_PASSWORD", "not-checked-here")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "meters:\n  - name: Water\n    adress: \"12345678\"\n    driver: multicl21\nmqtt:\n  url: http://broker\n",
    )
    .unwrap();
    let out = bin().args(["check-config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:3:5"), "{err}");
    assert!(err.contains("address"), "did-you-mean for adress: {err}");
    assert!(
        err.contains("multical21"),
        "did-you-mean for the driver: {err}"
    );
    assert!(err.contains("mqtt.url"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[path = "support/broker.rs"]
mod broker;

/// The README suggests `demo --mqtt mqtt://localhost:1883`, often against the broker a real
/// gateway uses: the demo must not take over its client id or topics, and must leave no device
/// behind when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_on_a_shared_broker_disturbs_nothing_and_leaves_nothing() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    let b = broker::brokers().pop().expect("a broker");
    let port = b.port;
    // A "real gateway" holding the client id `meterbridge`, recording what it sees.
    type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    let seen: Seen = Arc::default();
    let kicked = Arc::new(Mutex::new(false));
    let mut options = MqttOptions::new("meterbridge", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(options, 64);
    client.subscribe("#", QoS::AtLeastOnce).await.unwrap();
    {
        let (seen, kicked) = (seen.clone(), kicked.clone());
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => seen
                        .lock()
                        .unwrap()
                        .push((p.topic.clone(), p.payload.to_vec())),
                    Ok(_) => {}
                    Err(_) => {
                        *kicked.lock().unwrap() = true;
                        break;
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_meterbridge"))
        .args(["demo", "--duration", "5", "--format", "json", "--mqtt"])
        .arg(format!("mqtt://127.0.0.1:{port}"))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", b.name);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !*kicked.lock().unwrap(),
        "{}: the demo took over the real gateway's client id",
        b.name
    );
    let seen = seen.lock().unwrap().clone();
    let configs: Vec<&(String, Vec<u8>)> = seen
        .iter()
        .filter(|(t, p)| t.starts_with("homeassistant/device/") && !p.is_empty())
        .collect();
    assert!(
        configs.len() >= 7,
        "{}: {} discovery documents",
        b.name,
        configs.len()
    );
    for (topic, payload) in &configs {
        let doc: serde_json::Value = serde_json::from_slice(payload).unwrap();
        let state = doc["state_topic"].as_str().unwrap_or_default();
        assert!(state.starts_with("meterbridge-demo/"), "{topic}: {state}");
    }
    assert!(
        !seen.iter().any(|(t, _)| t.starts_with("meterbridge/")),
        "{}: the demo wrote under the real gateway's base topic",
        b.name
    );
    let demo_states = seen
        .iter()
        .filter(|(t, p)| {
            t.starts_with("meterbridge-demo/") && t.ends_with("/state") && !p.is_empty()
        })
        .count();
    assert!(demo_states >= 6, "{demo_states} demo states");

    // A client connecting now gets no retained demo device or reading.
    let mut options = MqttOptions::new("late-watcher", "127.0.0.1", port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (late, mut events) = AsyncClient::new(options, 64);
    late.subscribe("homeassistant/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    late.subscribe("meterbridge-demo/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut retained = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(Ok(event)) = tokio::time::timeout_at(until, events.poll()).await {
        if let Event::Incoming(Packet::Publish(p)) = event {
            if !p.payload.is_empty() && p.topic != "meterbridge-demo/status" {
                retained.push(p.topic.clone());
            }
        }
    }
    assert!(retained.is_empty(), "{}: left behind: {retained:?}", b.name);
    let _ = client.disconnect().await;
}
