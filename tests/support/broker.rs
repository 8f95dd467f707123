//! MQTT brokers for integration tests: one in-process rumqttd per test process, and a fresh
//! mosquitto on a free port when it is installed (`.ci/run` installs it). Included with
//! `#[path = "support/broker.rs"] mod broker;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_until_listening(port: u16) {
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "broker on {port} never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The port of this process's rumqttd, started on first use.
pub fn rumqttd_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| start_rumqttd(None))
}

/// Starts an in-process rumqttd on a free port, optionally accepting only one user.
pub fn start_rumqttd(user: Option<(&str, &str)>) -> u16 {
    use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
    let port = free_port();
    let server = ServerSettings {
        name: "v4".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 5000,
            // Discovery documents exceed the sample configuration's 20 KiB.
            max_payload_size: 1 << 20,
            max_inflight_count: 100,
            auth: user.map(|(u, p)| HashMap::from([(u.to_string(), p.to_string())])),
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 100,
            max_outgoing_packet_count: 200,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        ..Default::default()
    };
    std::thread::spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        if let Err(e) = broker.start() {
            eprintln!("rumqttd stopped: {e}");
        }
    });
    wait_until_listening(port);
    port
}

/// A mosquitto child process, killed when dropped.
pub struct Mosquitto(pub Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Broker {
    pub name: &'static str,
    pub port: u16,
    pub process: Option<Mosquitto>,
}

pub fn mosquitto_available() -> bool {
    Command::new("which")
        .arg("mosquitto")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Starts mosquitto on `port` (a fixed port, so a test can stop it and start it again there).
pub fn start_mosquitto(port: u16) -> Mosquitto {
    let child = Command::new("mosquitto")
        .args(["-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto starts");
    let guard = Mosquitto(child);
    wait_until_listening(port);
    guard
}

/// rumqttd, plus a fresh mosquitto when it is installed.
pub fn brokers() -> Vec<Broker> {
    let mut list = vec![Broker {
        name: "rumqttd",
        port: rumqttd_port(),
        process: None,
    }];
    if mosquitto_available() {
        let port = free_port();
        list.push(Broker {
            name: "mosquitto",
            port,
            process: Some(start_mosquitto(port)),
        });
    } else {
        println!("note: mosquitto is not installed; testing against rumqttd only");
    }
    list
}
