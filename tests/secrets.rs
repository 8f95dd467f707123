//! Keys and the MQTT password never leave the configuration: the daemon runs with an encrypted
//! meter's key and a broker password, and neither appears in its output, its command line, the
//! MQTT messages it sends or the files it writes — at every log level (`log_level: trace` in
//! the file, or `RUST_LOG=trace`) and in both log formats (text and JSON).

#[path = "support/broker.rs"]
mod broker;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Mode 5, decrypts with KEY to `total_m3` 466.472.
const TELEGRAM: &str = "76442104710007612507727100076121042507B5006005E2E95A3C2A1279A5415E6732679B43369FD5FDDDD783EEEBB48236D34E7C94AF0A18A5FDA5F7D64111EB42D4D891622139F2952F9D12A20088DFA4CF8123871123EE1F6C1DCEA414879DDB4E05E508F1826D7EFBA6964DF804C9261EA23BBF03";
const KEY: &str = "A004EB23329A477F1DD2D7820B56EB3D";
const PASSWORD: &str = "pw-Zq81vX-not-for-eyes";

fn contains_secret(text: &str) -> Option<&'static str> {
    let upper = text.to_ascii_uppercase();
    if upper.contains(KEY) {
        return Some("the key");
    }
    // The key as spaced or lower-case hex would also be a leak.
    if upper.contains("A0 04 EB 23") || upper.contains("A004EB23329A") {
        return Some("part of the key");
    }
    if text.contains(PASSWORD) {
        return Some("the password");
    }
    None
}

/// What one run of the gateway left behind, everywhere a secret could leak to.
struct Run {
    stderr: String,
    /// (place, text) for every output, message and file.
    places: Vec<(&'static str, String)>,
}

/// Runs the gateway with the key and password configured, `log_level` as given, extra
/// arguments and environment; feeds it the encrypted telegram and one for a meter with a wrong
/// key; stops it and collects everything it wrote.
fn run_gateway(case: &str, log_level: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let port = broker::start_rumqttd(Some(("gateway", PASSWORD)));
    let dir =
        std::env::temp_dir().join(format!("meterbridge-secrets-{case}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let password_file = dir.join("mqtt-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let udp = broker::free_port();
    let config = dir.join("meterbridge.yaml");
    std::fs::write(
        &config,
        format!(
            r#"state_dir: "{state}"
log_level: {log_level}
receivers:
  - name: esp32
    type: udp
    bind: "127.0.0.1:{udp}"
meters:
  - name: Hot water
    address: "61070071"
    driver: aventieswm
    key: {KEY}
  - name: Wrong key
    address: "12345678"
    key: 00112233445566778899AABBCCDDEEFF
mqtt:
  url: "mqtt://127.0.0.1:{port}"
  username: gateway
  password_file: "{password}"
  base_topic: secrets
"#,
            state = dir.join("state").display(),
            password = password_file.display(),
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    // Everything the gateway publishes, seen by a second client.
    let seen = Arc::new(Mutex::new(Vec::<(String, Vec<u8>)>::new()));
    let sink = seen.clone();
    let mut options =
        rumqttc::MqttOptions::new(format!("secrets-watcher-{case}"), "127.0.0.1", port);
    options.set_credentials("gateway", PASSWORD);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut connection) = rumqttc::Client::new(options, 64);
    client.subscribe("#", rumqttc::QoS::AtLeastOnce).unwrap();
    std::thread::spawn(move || {
        for event in connection.iter() {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) = event {
                sink.lock()
                    .unwrap()
                    .push((p.topic.clone(), p.payload.to_vec()));
            }
        }
    });

    let mut child = Command::new(env!("CARGO_BIN_EXE_meterbridge"))
        .args(["run", "--print", "json", "--config"])
        .arg(&config)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let until = Instant::now() + Duration::from_secs(15);
    let state_topic = "secrets/hot_water/state";
    loop {
        socket
            .send_to(TELEGRAM.as_bytes(), ("127.0.0.1", udp))
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let got = seen.lock().unwrap().iter().any(|(t, _)| t == state_topic);
        if got {
            break;
        }
        assert!(
            Instant::now() < until,
            "the decrypted reading never reached the broker"
        );
    }
    // A telegram for the meter with the wrong key: its error message must not show a key either.
    let wrong = TELEGRAM.replacen("71000761", "78563412", 2);
    socket
        .send_to(wrong.as_bytes(), ("127.0.0.1", udp))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();

    let state: serde_json::Value = serde_json::from_str(
        &seen
            .lock()
            .unwrap()
            .iter()
            .find(|(t, _)| t == state_topic)
            .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(state["total_m3"], 466.472, "decrypted with the key");

    assert!(
        stderr.contains("meter Wrong key"),
        "the wrong-key telegram was reported: {stderr}"
    );
    let mut places = vec![
        ("standard output", stdout),
        ("standard error", stderr.clone()),
        (
            "command line",
            String::from_utf8_lossy(&cmdline).into_owned(),
        ),
    ];
    for (topic, payload) in seen.lock().unwrap().iter() {
        places.push(("an MQTT topic", topic.clone()));
        places.push((
            "an MQTT payload",
            String::from_utf8_lossy(payload).into_owned(),
        ));
    }
    for entry in walk(&dir.join("state")) {
        let text = String::from_utf8_lossy(&std::fs::read(&entry).unwrap()).into_owned();
        places.push(("a state file", text));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Run { stderr, places }
}

fn assert_no_secret(run: &Run) {
    assert!(run.places.len() > 5);
    for (place, text) in &run.places {
        if let Some(what) = contains_secret(text) {
            panic!("{what} appears in {place}: {text}");
        }
    }
}

#[test]
fn secrets_stay_secret() {
    let run = run_gateway("file", "trace", &[], &[]);
    // Trace level was on: each telegram's size is logged.
    assert!(run.stderr.contains("esp32: telegram of"), "{}", run.stderr);
    assert_no_secret(&run);
}

/// `RUST_LOG=trace` wins over the file's `warn`, and still shows no key or password.
#[test]
fn secrets_stay_secret_with_rust_log_trace() {
    let run = run_gateway("rust-log", "warn", &[], &[("RUST_LOG", "trace")]);
    assert!(
        run.stderr.contains("esp32: telegram of")
            && run.stderr.contains("TRACE")
            && run.stderr.contains("DEBUG"),
        "trace and debug lines shown: {}",
        run.stderr
    );
    // Not a terminal: no colour codes.
    assert!(!run.stderr.contains('\x1b'), "{:?}", run.stderr);
    assert_no_secret(&run);
}

/// `--log-format json`: every line on standard error is one JSON object with level, target and
/// message, the meter a structured field, and no secret anywhere.
#[test]
fn json_log_lines_parse_and_keep_secrets() {
    let run = run_gateway(
        "json",
        "info",
        &["--log-format", "json"],
        &[("RUST_LOG", "meterbridge=trace")],
    );
    let mut levels = std::collections::BTreeSet::new();
    let mut wrong_key = None;
    for line in run.stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        for key in ["level", "target", "message", "timestamp"] {
            assert!(v[key].is_string(), "no {key} in {line}");
        }
        assert!(
            v["target"].as_str().unwrap().starts_with("meterbridge"),
            "{line}"
        );
        levels.insert(v["level"].as_str().unwrap().to_string());
        if v["message"]
            .as_str()
            .unwrap()
            .starts_with("meter Wrong key")
        {
            wrong_key = Some(v.clone());
        }
    }
    let wrong_key = wrong_key.unwrap_or_else(|| panic!("no wrong-key line: {}", run.stderr));
    assert_eq!(wrong_key["level"], "WARN");
    assert_eq!(wrong_key["meter"], "Wrong key");
    for level in ["TRACE", "DEBUG", "INFO", "WARN"] {
        assert!(levels.contains(level), "{level} missing: {levels:?}");
    }
    assert_no_secret(&run);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
