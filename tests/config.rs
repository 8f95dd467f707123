//! The daemon's configuration: the shipped example, every-error-at-once reporting, secrets
//! kept out of output, and the file-permission warning.

use std::path::{Path, PathBuf};
use std::time::Duration;

use meterbridge::config::{
    self, BusEndpoint, ConfigError, ConfigErrors, Emit, KeySource, LogLevel, MeterAddress,
    PasswordSource, Polling, ReceiverKind, ValidateOptions, Warning,
};

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml")
}

fn parse_ok(text: &str) -> (config::Config, Vec<Warning>) {
    match config::parse_with(text, "test.yaml", &ValidateOptions::with_built_in_drivers()) {
        Ok(c) => c,
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

fn parse_err(text: &str) -> Vec<ConfigError> {
    match config::parse_with(text, "test.yaml", &ValidateOptions::with_built_in_drivers()) {
        Ok((c, _)) => panic!("expected errors, got {c:#?}"),
        Err(ConfigErrors { errors }) => errors,
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn the_example_validates_with_the_expected_values() {
    let text = std::fs::read_to_string(example_path()).unwrap();
    let (c, warnings) = parse_ok(&text);
    assert!(warnings.is_empty(), "{warnings:?}");

    assert_eq!(c.state_dir, PathBuf::from("./meterbridge-state"));
    assert_eq!(c.log_level, LogLevel::Info);
    assert_eq!(c.drivers_dir, None);
    assert_eq!(c.dedup_window, secs(10));
    assert!(!c.allow_bus_writes);

    assert_eq!(c.buses.len(), 2);
    let cellar = &c.buses[0];
    assert_eq!(cellar.name, "cellar");
    assert_eq!(
        cellar.endpoint,
        BusEndpoint::Serial {
            device: "/dev/ttyUSB0".into(),
            baud: 2400
        }
    );
    assert_eq!(
        cellar.polling,
        Polling::Cron(vec!["*/15 * * * *".into(), "2 0 * * *".into()])
    );
    assert_eq!(cellar.request_timeout, Some(Duration::from_millis(500)));
    assert_eq!(cellar.idle_timeout, Some(Duration::from_millis(50)));
    assert_eq!(cellar.retry, 2);
    assert!(cellar.apply_unit_factor);
    assert!(!cellar.only_values);
    assert_eq!(cellar.emit, Emit::Changes);
    assert!(!cellar.force_reset);
    assert_eq!(cellar.max_frames, 16);
    let bridge = cellar.tcp_server.as_ref().unwrap();
    assert_eq!(
        (bridge.port, bridge.bind.as_str(), bridge.idle_timeout),
        (8222, "127.0.0.1", secs(600))
    );
    let heating = &c.buses[1];
    assert_eq!(
        heating.endpoint,
        BusEndpoint::Tcp {
            address: "192.168.1.50:10001".into()
        }
    );
    assert_eq!(heating.polling, Polling::Every(secs(900)));
    assert_eq!(heating.emit, Emit::Interval(secs(3600)));
    assert!(heating.tcp_server.is_none());
    assert_eq!(heating.request_timeout, None);

    let kinds: Vec<_> = c.receivers.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(kinds, ["stick", "sdr", "demo"]);
    assert_eq!(
        c.receivers[0].kind,
        ReceiverKind::Stick {
            stick: "im871a".into(),
            device: "/dev/serial/by-id/usb-IMST_GmbH_iM871A-if00-port0".into(),
            mode: "t1".into(),
            baud: None
        }
    );
    assert_eq!(
        c.receivers[0].kind.link_mode(),
        Some(meterbridge::receivers::LinkMode::T1)
    );
    assert_eq!(c.receivers[1].dedup, Some(true));
    assert!(matches!(
        &c.receivers[1].kind,
        ReceiverKind::RtlWmbus { command: Some(cmd) } if cmd.ends_with("| rtl_wmbus")
    ));
    assert_eq!(
        c.receivers[2].kind,
        ReceiverKind::Simulated {
            stick: "im871a".into(),
            telegrams: None,
            interval: secs(5)
        }
    );

    assert_eq!(c.meters.len(), 4);
    let heat = &c.meters[0];
    assert_eq!(heat.address, MeterAddress::Primary(5));
    assert_eq!(heat.bus.as_deref(), Some("cellar"));
    assert_eq!(heat.driver, "kamheat");
    assert_eq!(heat.slug(), "heat_meter");
    assert_eq!(heat.polling, Some(Polling::Every(secs(3600))));
    assert_eq!(
        (heat.max_frames, heat.max_records, heat.expire_after),
        (Some(4), Some(50), Some(secs(3 * 3600)))
    );
    assert_eq!(
        c.meters[1].address,
        MeterAddress::Secondary("12345678".into())
    );
    assert_eq!(c.meters[1].driver, "auto");
    let cold = &c.meters[2];
    assert_eq!(cold.address, MeterAddress::Wireless("12345678".into()));
    assert_eq!(cold.bus, None);
    match &cold.key {
        Some(KeySource::Inline(k)) => assert_eq!(k.expose(), "00112233445566778899AABBCCDDEEFF"),
        other => panic!("{other:?}"),
    }
    assert_eq!(cold.fields.len(), 1);
    assert_eq!(cold.fields[0].field, "total_m3");
    assert_eq!((cold.fields[0].scale, cold.fields[0].offset), (1.0, 12.5));
    assert_eq!(
        c.meters[3].address,
        MeterAddress::Wireless("a1b2c3d4".into())
    );
    assert_eq!(
        c.meters[3].key,
        Some(KeySource::File("/etc/meterbridge/hot-water.key".into()))
    );

    let mqtt = c.mqtt.as_ref().unwrap();
    assert_eq!(
        (mqtt.host.as_str(), mqtt.port, mqtt.tls),
        ("localhost", 1883, false)
    );
    assert_eq!(mqtt.username.as_deref(), Some("meterbridge"));
    assert_eq!(
        mqtt.password,
        Some(PasswordSource::Env("MQTT_PASSWORD".into()))
    );
    assert_eq!(mqtt.client_id, "meterbridge");
    assert_eq!(mqtt.base_topic, "meterbridge");
    assert_eq!((mqtt.qos, mqtt.retain), (1, true));
    assert_eq!(mqtt.discovery_prefix, "homeassistant");
    assert!(mqtt.discovery);
    assert_eq!(mqtt.queue_limit, 10_000);
    assert_eq!(mqtt.keep_alive, secs(15));
    assert_eq!(mqtt.ca_file, None);
}

#[test]
fn the_example_loads_from_its_file() {
    // As shipped it names a key file and an environment variable of the machine it is written
    // for: loading checks both, at their lines.
    let errors =
        config::load_with(&example_path(), &ValidateOptions::with_built_in_drivers()).unwrap_err();
    let at: Vec<(&str, bool)> = errors
        .errors
        .iter()
        .map(|e| (e.path.as_str(), e.pos.line > 0))
        .collect();
    if std::env::var_os("MQTT_PASSWORD").is_some() {
        assert_eq!(at, [("meters[3].key_file", true)], "{errors}");
    } else {
        assert_eq!(
            at,
            [("meters[3].key_file", true), ("mqtt.password_env", true)],
            "{errors}"
        );
    }
    // With both present it loads.
    let dir = std::env::temp_dir().join(format!("meterbridge-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("hot-water.key");
    std::fs::write(&key, "A004EB23329A477F1DD2D7820B56EB3D\n").unwrap();
    let text = std::fs::read_to_string(example_path())
        .unwrap()
        .replace("/etc/meterbridge/hot-water.key", &key.display().to_string())
        // A variable every test environment has.
        .replace("password_env: MQTT_PASSWORD", "password_env: PATH");
    let copy = dir.join("config.yaml");
    std::fs::write(&copy, text).unwrap();
    let (c, _) = config::load_with(&copy, &ValidateOptions::with_built_in_drivers())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.path, Some(copy));
    assert_eq!(c.meters.len(), 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Everything `run` would refuse is found when the configuration is loaded (by `check-config`
/// and by `run`, which share the loader), each at its line and column.
#[test]
fn check_config_finds_what_run_would_refuse() {
    // In the text alone.
    let errors = parse_err(
        "buses:\n\
         \x20 - {name: b, tcp: \"h:1\", tcp_server: 7202}\n\
         receivers:\n\
         \x20 - {name: esp, type: tcp_server, bind: \"0.0.0.0:7202\"}\n\
         \x20 - {name: air, type: udp, bind: 7202}\n\
         \x20 - {name: air2, type: udp, bind: \":7202\"}\n\
         mqtt:\n\
         \x20 url: mqtts://broker.example\n\
         \x20 qos: 2\n",
    );
    let got: Vec<(usize, usize, &str, &str)> = errors
        .iter()
        .map(|e| {
            (
                e.pos.line,
                e.pos.column,
                e.path.as_str(),
                e.message.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                4,
                41,
                "receivers[0].bind",
                "TCP port 7202 is already taken by the bridge of bus `b`"
            ),
            (
                6,
                35,
                "receivers[2].bind",
                "UDP port 7202 is already taken by receiver `air`"
            ),
            (
                8,
                8,
                "mqtt.url",
                "mqtts:// needs `ca_file`: the broker's certificate is checked against the CA certificates in that file only (this build does not read the system's trusted roots)"
            ),
            (9, 8, "mqtt.qos", "2 is out of range; expected 0 to 1"),
        ]
    );

    // Files and the environment, checked when loading a file.
    let dir = std::env::temp_dir().join(format!("meterbridge-outside-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let short_key = dir.join("short.key");
    std::fs::write(&short_key, "C0FFEE\n").unwrap();
    let text = format!(
        "meters:\n\
         \x20 - {{name: a, address: \"00000001\", key_file: {dir}/missing.key}}\n\
         \x20 - {{name: b, address: \"00000002\", key_file: {short}}}\n\
         mqtt:\n\
         \x20 url: mqtts://broker.example\n\
         \x20 username: u\n\
         \x20 password_env: MB_TEST_UNSET_{pid}\n\
         \x20 ca_file: {tls}/test-ca.key\n\
         \x20 client_cert: {tls}/test-ca.pem\n\
         \x20 client_key: {tls}/test-ca.pem\n",
        dir = dir.display(),
        short = short_key.display(),
        tls = tls.display(),
        pid = std::process::id(),
    );
    let file = dir.join("config.yaml");
    std::fs::write(&file, &text).unwrap();
    let errors = config::load_with(&file, &ValidateOptions::with_built_in_drivers())
        .unwrap_err()
        .errors;
    let got: Vec<(usize, &str)> = errors
        .iter()
        .map(|e| (e.pos.line, e.path.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (2, "meters[0].key_file"),
            (3, "meters[1].key_file"),
            (7, "mqtt.password_env"),
            (8, "mqtt.ca_file"),
            (10, "mqtt.client_key"),
        ],
        "{}",
        ConfigErrors {
            errors: errors.clone()
        }
    );
    assert!(errors[0].message.contains("No such file"), "{}", errors[0]);
    assert!(
        errors[1]
            .message
            .contains("expected 32 hex digits (AES-128) or 16 (DES or PRIOS), found 6 characters"),
        "{}",
        errors[1]
    );
    assert!(
        !errors[1].message.contains("C0FFEE"),
        "the key stays secret"
    );
    assert!(
        errors[2]
            .message
            .contains(&format!("MB_TEST_UNSET_{} is not set", std::process::id())),
        "{}",
        errors[2]
    );
    assert!(
        errors[3].message.contains("holds no certificate"),
        "{}",
        errors[3]
    );
    assert!(
        errors[4].message.contains("holds no private key"),
        "{}",
        errors[4]
    );
    // Rendered as file:line:column.
    let shown = ConfigErrors { errors }.to_string();
    assert!(
        shown.contains(&format!("{}:8:12: mqtt.ca_file: ", file.display())),
        "{shown}"
    );

    // The same file with what it names in place loads.
    std::fs::write(&short_key, "A004EB23329A477F1DD2D7820B56EB3D\n").unwrap();
    let fixed = text
        .replace(
            &format!("{}/missing.key", dir.display()),
            &short_key.display().to_string(),
        )
        .replace(&format!("MB_TEST_UNSET_{}", std::process::id()), "PATH")
        .replace("ca_file: ", "ca_file: X")
        .replace(
            &format!("ca_file: X{}/test-ca.key", tls.display()),
            &format!("ca_file: {}/test-ca.pem", tls.display()),
        )
        .replace(
            &format!("client_key: {}/test-ca.pem", tls.display()),
            &format!("client_key: {}/test-ca.key", tls.display()),
        );
    std::fs::write(&file, fixed).unwrap();
    config::load_with(&file, &ValidateOptions::with_built_in_drivers())
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_empty_file_gives_the_defaults() {
    let (c, warnings) = parse_ok("");
    // ...and says that it would do nothing.
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        warnings[0].to_string(),
        "test.yaml: warning: there are no buses and no receivers: `run` would start and read nothing (config.example.yaml shows both)"
    );
    assert_eq!(c.state_dir, PathBuf::from("./meterbridge-state"));
    assert_eq!(c.dedup_window, secs(10));
    assert!(c.buses.is_empty() && c.receivers.is_empty() && c.meters.is_empty());
    assert!(c.mqtt.is_none());
    let (c, _) =
        parse_ok("buses:\n  - name: b\n    device: /dev/ttyS0\nmqtt:\n  url: mqtts://broker\n  ca_file: ca.pem\n");
    assert_eq!(c.buses[0].polling, Polling::Every(secs(60)));
    assert_eq!(
        c.buses[0].endpoint,
        BusEndpoint::Serial {
            device: "/dev/ttyS0".into(),
            baud: 2400
        }
    );
    assert_eq!((c.buses[0].retry, c.buses[0].max_frames), (2, 16));
    assert!(c.buses[0].tcp_server.is_none());
    let mqtt = c.mqtt.unwrap();
    assert_eq!((mqtt.port, mqtt.tls, mqtt.qos), (8883, true, 1));
}

const MANY_MISTAKES: &str = "\
log_level: verbose
stat_dir: /var/lib/mb
dedup_window: 10
buses:
  - name: cellar
    device: /dev/ttyUSB0
    baud: 2401
    pollnig: 60000
    emit: sometimes
  - name: cellar
    tcp: gateway
    polling: \"*/5 * * *\"
receivers:
  - name: stick
    type: im871b
  - name: sdr
    type: rtlwmbus
    device: /dev/ttyUSB1
meters:
  - name: Heat/1
    bus: celar
    address: 300
  - name: water
    address: \"1234567\"
    driver: iperll
    key: \"00112233445566778899AABBCCDDEEF\"
    polling: 1h
  - name: gas
    address: \"12345678\"
  - name: gas2
    address: \"12345678\"
    fields:
      - scale: 0
mqtt:
  url: http://broker
  qos: 3
  base_topic: /meters
  password: \"hunter2secret\"
  client_cert: cert.pem
";

#[test]
fn every_mistake_is_reported_at_once_with_its_position() {
    let errors = parse_err(MANY_MISTAKES);
    let located: Vec<(usize, usize, &str)> = errors
        .iter()
        .map(|e| (e.pos.line, e.pos.column, e.path.as_str()))
        .collect();
    assert_eq!(
        located,
        [
            (1, 12, "log_level"),
            (2, 1, "stat_dir"),
            (3, 15, "dedup_window"),
            (7, 11, "buses[0].baud"),
            (8, 5, "buses[0].pollnig"),
            (9, 11, "buses[0].emit"),
            (10, 11, "buses[1].name"),
            (11, 10, "buses[1].tcp"),
            (12, 14, "buses[1].polling"),
            (15, 11, "receivers[0].type"),
            (18, 5, "receivers[1].device"),
            (20, 11, "meters[0].name"),
            (21, 10, "meters[0].bus"),
            (22, 14, "meters[0].address"),
            (24, 14, "meters[1].address"),
            (25, 13, "meters[1].driver"),
            (26, 10, "meters[1].key"),
            (27, 5, "meters[1].polling"),
            (31, 14, "meters[3].address"),
            (33, 9, "meters[3].fields[0]"),
            (33, 16, "meters[3].fields[0].scale"),
            (35, 8, "mqtt.url"),
            (36, 8, "mqtt.qos"),
            (37, 15, "mqtt.base_topic"),
            (38, 3, "mqtt.password"),
            (39, 3, "mqtt.client_cert"),
        ]
    );
    let at = |path: &str| -> &ConfigError {
        errors
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no error at {path}"))
    };
    let log_level = at("log_level");
    assert!(log_level.message.contains("`verbose`"));
    assert!(log_level.hint.as_deref().unwrap().contains("`debug`"));
    assert_eq!(
        at("stat_dir").hint.as_deref(),
        Some("did you mean `state_dir`?")
    );
    assert_eq!(
        at("buses[0].pollnig").hint.as_deref(),
        Some("did you mean `polling`?")
    );
    assert!(at("dedup_window").message.contains("no unit"));
    assert!(at("buses[0].baud")
        .hint
        .as_deref()
        .unwrap()
        .contains("2400"));
    assert!(at("buses[0].emit").message.contains("`sometimes`"));
    assert!(at("buses[1].name")
        .message
        .contains("already used by buses[0] (line 5)"));
    assert!(at("buses[1].polling")
        .message
        .contains("has 4 fields; expected 5"));
    assert_eq!(
        at("receivers[0].type")
            .hint
            .as_deref()
            .map(|h| h.starts_with("did you mean `im871a`?")),
        Some(true)
    );
    assert!(at("receivers[1].device")
        .message
        .contains("does not apply to a receiver of type rtlwmbus"));
    assert!(at("meters[0].name")
        .message
        .contains("`/` cannot be part of a name"));
    assert_eq!(
        at("meters[0].bus").hint.as_deref(),
        Some("did you mean `cellar`?")
    );
    assert!(at("meters[0].address")
        .message
        .contains("expected 0 to 250"));
    assert!(at("meters[1].address").message.contains("8 hex digits"));
    assert_eq!(
        at("meters[1].driver").hint.as_deref(),
        Some("did you mean `iperl`?")
    );
    assert!(at("meters[1].key").message.contains("found 31 characters"));
    assert!(at("meters[1].polling")
        .message
        .contains("wired meters only"));
    assert!(at("meters[3].address")
        .message
        .contains("already used as a wireless id by meters[2] (line 28)"));
    assert!(at("meters[3].fields[0]")
        .message
        .contains("missing required option `field`"));
    assert!(at("mqtt.url").message.contains("unsupported scheme `http`"));
    assert!(at("mqtt.qos").message.contains("expected 0 to 1"));
    assert!(at("mqtt.password").message.contains("needs a `username`"));
    assert!(at("mqtt.client_cert")
        .message
        .contains("needs `client_key`"));

    // The rendered form people see.
    let rendered = ConfigErrors {
        errors: errors.clone(),
    }
    .to_string();
    let lines: Vec<&str> = rendered.lines().collect();
    assert_eq!(lines.len(), 26);
    assert_eq!(
        lines[4],
        "test.yaml:8:5: buses[0].pollnig: unknown option `pollnig` in a bus; did you mean `polling`?"
    );
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    let errors = parse_err("meters:\n  - name: a\n    address: [1, 2\nmqtt: x\n");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].pos.line >= 3, "{errors:?}");
    assert!(errors[0].message.starts_with("YAML syntax error: "));
    assert!(!errors[0].message.contains('\n'));
    let errors = parse_err("log_level: info\nlog_level: debug\n");
    assert_eq!((errors[0].pos.line, errors[0].pos.column), (2, 1));
    assert!(errors[0]
        .message
        .contains("duplicate mapping key: log_level"));
}

#[test]
fn wrong_types_say_what_was_found() {
    let errors = parse_err(
        "buses: cellar\nallow_bus_writes: yes please\nmeters:\n  - name: m\n    address: \"0011aabb\"\n    fields: {total_m3: 2}\n",
    );
    let messages: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        messages,
        [
            ("buses", "expected a list of buses, found text"),
            ("allow_bus_writes", "expected true or false, found text"),
            (
                "meters[0].fields",
                "expected a list of field adjustments (field, scale, offset), found a mapping"
            ),
        ]
    );
}

#[test]
fn wired_and_wireless_address_rules() {
    let (c, _) = parse_ok(
        "buses:\n  - name: b\n    tcp: \"[fd00::5]:10001\"\nmeters:\n\
         \x20 - {name: p, bus: b, address: 0}\n\
         \x20 - {name: s8, bus: b, address: \"00001234\"}\n\
         \x20 - {name: s16, bus: b, address: \"12345678b4094007\"}\n\
         \x20 - {name: w, address: \"0011AABB\"}\n\
         \x20 - {name: wn, address: 87654321}\n",
    );
    let addresses: Vec<&MeterAddress> = c.meters.iter().map(|m| &m.address).collect();
    assert_eq!(
        addresses,
        [
            &MeterAddress::Primary(0),
            &MeterAddress::Secondary("00001234".into()),
            &MeterAddress::Secondary("12345678B4094007".into()),
            &MeterAddress::Wireless("0011aabb".into()),
            &MeterAddress::Wireless("87654321".into()),
        ]
    );

    let errors = parse_err(
        "buses:\n  - name: b\n    device: /dev/ttyS0\nreceivers:\n  - name: r\n    type: hex_stdin\nmeters:\n\
         \x20 - {name: a, bus: b, address: 12345678}\n\
         \x20 - {name: c, bus: b, address: \"1234\"}\n\
         \x20 - {name: d, address: 00123456}\n\
         \x20 - {name: e, bus: r, address: 1}\n\
         \x20 - {name: f, bus: b, address: 7}\n\
         \x20 - {name: g, bus: b, address: 7}\n",
    );
    let got: Vec<(usize, &str)> = errors
        .iter()
        .map(|e| (e.pos.line, e.path.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (8, "meters[0].address"),
            (9, "meters[1].address"),
            (10, "meters[2].address"),
            (11, "meters[3].bus"),
            (13, "meters[5].address"),
        ]
    );
    assert_eq!(
        errors[0].hint.as_deref(),
        Some("a secondary address is written in quotes: \"12345678\"")
    );
    assert!(errors[2].hint.as_deref().unwrap().contains("leading zeros"));
    assert_eq!(
        errors[3].hint.as_deref(),
        Some("`r` is a receiver; wireless meters have no `bus`")
    );
    assert!(errors[4]
        .message
        .contains("address 7 is already used on bus `b` by meters[4] (line 12)"));
}

#[test]
fn names_must_make_distinct_topic_safe_slugs() {
    let errors = parse_err(
        "meters:\n  - {name: Hot Water, address: \"00000001\"}\n  - {name: hot-water, address: \"00000002\"}\n  - {name: \"###\", address: \"00000003\"}\n  - {name: \"...\", address: \"00000004\"}\n  - {address: \"00000005\"}\n",
    );
    let got: Vec<(usize, &str, &str)> = errors
        .iter()
        .map(|e| (e.pos.line, e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                3,
                "meters[1].name",
                "name `hot-water` gives the topic name `hot_water`, like `Hot Water` of meters[0] (line 2)"
            ),
            (
                4,
                "meters[2].name",
                "`#` cannot be part of a name (it is special in MQTT topics)"
            ),
            (
                5,
                "meters[3].name",
                "name `...` has no ASCII letter or digit, so it gives an empty topic name"
            ),
            (
                6,
                "meters[4]",
                "missing required option `name` (text naming it in topics and logs)"
            ),
        ]
    );
}

#[test]
fn polling_emit_and_bridge_forms() {
    let (c, warnings) = parse_ok(
        "allow_bus_writes: true\nbuses:\n\
         \x20 - {name: a, device: /dev/ttyS0, polling: 30000, emit: every, tcp_server: true}\n\
         \x20 - {name: b, device: /dev/ttyS1, polling: 1h30m, emit: 15m, tcp_server: 9000}\n\
         \x20 - name: c\n    device: /dev/ttyS2\n    polling: \"0 6 * * 1-5;30 12 1,15 * *\"\n    tcp_server:\n      port: 9001\n      bind: 0.0.0.0\n      idle_timeout: 30s\n",
    );
    let polls: Vec<&Polling> = c.buses.iter().map(|b| &b.polling).collect();
    assert_eq!(
        polls,
        [
            &Polling::Every(secs(30)),
            &Polling::Every(secs(5400)),
            &Polling::Cron(vec!["0 6 * * 1-5".into(), "30 12 1,15 * *".into()]),
        ]
    );
    assert_eq!(c.buses[0].emit, Emit::Every);
    assert_eq!(c.buses[1].emit, Emit::Interval(secs(900)));
    let ports: Vec<(u16, &str, Duration)> = c
        .buses
        .iter()
        .map(|b| {
            let t = b.tcp_server.as_ref().unwrap();
            (t.port, t.bind.as_str(), t.idle_timeout)
        })
        .collect();
    assert_eq!(
        ports,
        [
            (8222, "127.0.0.1", secs(600)),
            (9000, "127.0.0.1", secs(600)),
            (9001, "0.0.0.0", secs(30)),
        ]
    );
    let warned: Vec<(usize, &str)> = warnings
        .iter()
        .map(|w| (w.pos.line, w.path.as_str()))
        .collect();
    assert_eq!(
        warned,
        [(1, "allow_bus_writes"), (10, "buses[2].tcp_server.bind")]
    );
    assert!(warnings[1].message.contains("0.0.0.0"));

    let errors = parse_err(
        "buses:\n\
         \x20 - {name: a, device: /dev/ttyS0, polling: 0, tcp_server: 9000}\n\
         \x20 - {name: b, device: /dev/ttyS1, polling: \"61 * * * *\", tcp_server: 9000}\n\
         \x20 - {name: c, device: /dev/ttyS1, tcp: \"h:1\", polling: 5 minutes}\n",
    );
    let got: Vec<(usize, &str, &str)> = errors
        .iter()
        .map(|e| (e.pos.line, e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (2, "buses[0].polling", "expected a duration longer than zero"),
            (
                3,
                "buses[1].polling",
                "cron expression `61 * * * *`: minute `61`: 61 is out of range 0-59"
            ),
            (
                3,
                "buses[1].tcp_server",
                "port 9000 is already taken by the bridge of bus `a`"
            ),
            (
                4,
                "buses[2].tcp",
                "a bus has either `device` (serial converter) or `tcp` (gateway), not both"
            ),
            (
                4,
                "buses[2].polling",
                "cron expression `5 minutes`: has 2 fields; expected 5 (minute hour day-of-month month weekday)"
            ),
        ]
    );
}

#[test]
fn receiver_kinds() {
    let (c, _) = parse_ok(
        "mqtt: {url: \"mqtt://[::1]:1884\"}\nreceivers:\n\
         \x20 - {name: a, type: AMB3665, device: /dev/ttyUSB0, mode: C1T1, baud: 9600}\n\
         \x20 - {name: b, type: rtlwmbus}\n\
         \x20 - {name: c, type: hex_stdin, dedup: false}\n\
         \x20 - {name: d, type: tcp_client, address: \"10.0.0.2:7000\"}\n\
         \x20 - {name: e, type: tcp_server, bind: 7000}\n\
         \x20 - {name: f, type: udp, bind: \"0.0.0.0:7001\"}\n\
         \x20 - {name: g, type: mqtt, topic: wmbus/raw}\n\
         \x20 - {name: h, type: simulated, stick: cul, telegrams: t.txt, interval: 20ms}\n",
    );
    let kinds: Vec<&ReceiverKind> = c.receivers.iter().map(|r| &r.kind).collect();
    assert_eq!(
        kinds,
        [
            &ReceiverKind::Stick {
                stick: "amb8465".into(),
                device: "/dev/ttyUSB0".into(),
                mode: "c1t1".into(),
                baud: Some(9600)
            },
            &ReceiverKind::RtlWmbus { command: None },
            &ReceiverKind::HexStdin,
            &ReceiverKind::TcpClient {
                address: "10.0.0.2:7000".into()
            },
            &ReceiverKind::TcpServer {
                bind: "127.0.0.1:7000".into()
            },
            &ReceiverKind::Udp {
                bind: "0.0.0.0:7001".into()
            },
            &ReceiverKind::Mqtt {
                topic: "wmbus/raw".into()
            },
            &ReceiverKind::Simulated {
                stick: "cul".into(),
                telegrams: Some("t.txt".into()),
                interval: Duration::from_millis(20)
            },
        ]
    );
    assert_eq!(c.receivers[2].dedup, Some(false));
    let mqtt = c.mqtt.unwrap();
    assert_eq!((mqtt.host.as_str(), mqtt.port), ("::1", 1884));

    let errors = parse_err(
        "receivers:\n  - {name: a, type: cul, mode: x1}\n  - {name: b, type: mqtt, topic: raw}\n  - {name: a, type: udp}\n",
    );
    let got: Vec<(usize, &str, &str)> = errors
        .iter()
        .map(|e| (e.pos.line, e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                2,
                "receivers[0]",
                "missing required option `device` (the stick's serial device)"
            ),
            (2, "receivers[0].mode", "unknown link mode `x1`"),
            (
                3,
                "receivers[1].type",
                "an mqtt receiver reads from the broker in the `mqtt` section, which is missing"
            ),
            (
                4,
                "receivers[2]",
                "missing required option `bind` (a port, or HOST:PORT to listen on)"
            ),
            (
                4,
                "receivers[2].name",
                "name `a` is already used by receivers[0] (line 2)"
            ),
        ]
    );
}

#[test]
fn mqtt_rules() {
    let errors = parse_err(
        "mqtt:\n  url: mqtt://broker\n  username: u\n  password: \"p\"\n  password_env: P\n  ca_file: ca.pem\n  discovery_prefix: \"ha/#\"\n  queue_limit: 0\n",
    );
    let got: Vec<(usize, &str)> = errors
        .iter()
        .map(|e| (e.pos.line, e.path.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (5, "mqtt.password_env"),
            (6, "mqtt.ca_file"),
            (7, "mqtt.discovery_prefix"),
            (8, "mqtt.queue_limit"),
        ]
    );
    assert!(errors[0].message.contains("both give the password"));
    assert_eq!(errors[1].hint.as_deref(), Some("use mqtts://"));
    assert!(errors[2].message.contains("wildcards"));

    let errors = parse_err("mqtt:\n  username: u\n");
    assert_eq!(
        (
            errors[0].pos.line,
            errors[0].pos.column,
            errors[0].path.as_str()
        ),
        (1, 1, "mqtt")
    );
    assert!(errors[0].message.contains("missing required option `url`"));

    let (c, _) = parse_ok(
        "mqtt:\n  url: mqtts://broker.example:8884/\n  username: u\n  password_file: /run/secrets/p\n  ca_file: ca.pem\n  client_cert: c.pem\n  client_key: k.pem\n  qos: 0\n  retain: false\n  discovery: false\n  base_topic: home/meters\n",
    );
    let m = c.mqtt.unwrap();
    assert_eq!(
        (m.host.as_str(), m.port, m.tls),
        ("broker.example", 8884, true)
    );
    assert_eq!(
        m.password,
        Some(PasswordSource::File("/run/secrets/p".into()))
    );
    assert_eq!((m.qos, m.retain, m.discovery), (0, false, false));
    assert_eq!(m.base_topic, "home/meters");
    assert_eq!(m.client_key, Some(PathBuf::from("k.pem")));
}

#[test]
fn mqtt_keep_alive() {
    let with = |value: &str| format!("mqtt:\n  url: mqtt://broker\n  keep_alive: {value}\n");
    let (c, _) = parse_ok(&with("2m30s"));
    assert_eq!(c.mqtt.unwrap().keep_alive, secs(150));
    let (c, _) = parse_ok(&with("1s"));
    assert_eq!(c.mqtt.unwrap().keep_alive, secs(1));
    let (c, _) = parse_ok("mqtt:\n  url: mqtt://broker\n");
    assert_eq!(c.mqtt.unwrap().keep_alive, secs(15));

    // rumqttc would panic on anything under a second; the message says why it is refused.
    let errors = parse_err(&with("500ms"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!(
        (e.pos.line, e.pos.column, e.path.as_str()),
        (3, 15, "mqtt.keep_alive")
    );
    assert!(e.message.contains("`500ms`"), "{}", e.message);
    assert!(e.message.contains("at least 1s"), "{}", e.message);

    let errors = parse_err(&with("18h12m16s"));
    assert!(errors[0].message.contains("at most 65535s"), "{errors:?}");
    let errors = parse_err(&with("1500ms"));
    assert!(
        errors[0].message.contains("whole number of seconds"),
        "{errors:?}"
    );
    let errors = parse_err(&with("0"));
    assert!(errors[0].message.contains("longer than zero"), "{errors:?}");
    let errors = parse_err(&with("15"));
    assert!(errors[0].message.contains("has no unit"), "{errors:?}");
}

#[test]
fn driver_names_are_checked_against_the_registry() {
    let text = "meters:\n  - {name: a, address: \"00000001\", driver: kamheat}\n  - {name: b, address: \"00000002\", driver: multical302}\n  - {name: c, address: \"00000003\", driver: mydriver}\n";
    let errors = parse_err(text);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "meters[2].driver");
    assert_eq!(errors[0].message, "unknown driver `mydriver`");
    // Without a driver list the name is not checked; with drivers_dir it may come from there.
    assert!(config::parse(text, "t.yaml").is_ok());
    let (_, warnings) = parse_ok(&format!("drivers_dir: ./drivers\n{text}"));
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].path, "meters[2].driver");
}

const KEY: &str = "A1B2C3D4E5F60718293A4B5C6D7E8F90";
const PASSWORD: &str = "correct-horse-battery";

#[test]
fn secrets_stay_out_of_debug_output_and_messages() {
    let text = format!(
        "meters:\n  - {{name: w, address: \"00000001\", key: \"{KEY}\"}}\nmqtt:\n  url: mqtt://broker\n  username: u\n  password: \"{PASSWORD}\"\n"
    );
    let (c, _) = parse_ok(&text);
    let debug = format!("{c:?} {c:#?}");
    assert!(!debug.contains(KEY) && !debug.contains(PASSWORD), "{debug}");
    assert!(debug.contains("<redacted>"));

    // A key that is almost right, a key with a non-hex character, a password in the url:
    // the messages describe them without repeating them.
    let bad_key = &KEY[..31];
    let odd_key = format!("{}Z", &KEY[..31]);
    let text = format!(
        "meters:\n  - {{name: w, address: \"00000001\", key: \"{bad_key}\"}}\n  - {{name: v, address: \"00000002\", key: \"{odd_key}\"}}\nmqtt:\n  url: \"mqtt://u:{PASSWORD}@broker\"\n"
    );
    let errors = parse_err(&text);
    assert_eq!(errors.len(), 3);
    let all = format!(
        "{} {errors:?}",
        ConfigErrors {
            errors: errors.clone()
        }
    );
    assert!(
        !all.contains(bad_key) && !all.contains(&odd_key) && !all.contains(PASSWORD),
        "{all}"
    );
    assert!(errors[1].message.contains("other characters"));
    assert!(errors[2].message.contains("holds credentials"));
}

/// A fresh folder for one test's files.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "meterbridge-config-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[cfg(unix)]
#[test]
fn a_file_with_secrets_readable_by_others_warns() {
    use std::os::unix::fs::PermissionsExt;

    let dir = temp_dir("mode");
    let write = |name: &str, text: &str, mode: u32| -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let with_key = format!("meters:\n  - {{name: w, address: \"00000001\", key: \"{KEY}\"}}\n");

    let open = write("open.yaml", &with_key, 0o644);
    let (_, warnings) = config::load(&open).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].pos.line, 0);
    assert!(warnings[0].message.contains("mode 0644"), "{}", warnings[0]);
    assert!(!warnings[0].message.contains(KEY));

    let private = write("private.yaml", &with_key, 0o600);
    let (c, warnings) = config::load(&private).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(c.path.as_deref(), Some(private.as_path()));

    // Without secrets, a readable file is fine.
    let plain = write(
        "plain.yaml",
        "log_level: debug\nreceivers:\n  - {name: r, type: hex_stdin}\n",
        0o644,
    );
    assert!(config::load(&plain).unwrap().1.is_empty());

    // A key file readable by others warns at the option that names it.
    let key_file = write("meter.key", KEY, 0o640);
    let text = format!(
        "meters:\n  - name: w\n    address: \"00000001\"\n    key_file: {}\n",
        key_file.display()
    );
    let cfg = write("keyfile.yaml", &text, 0o600);
    let (_, warnings) = config::load(&cfg).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        (warnings[0].pos.line, warnings[0].path.as_str()),
        (4, "meters[0].key_file")
    );
    assert!(warnings[0].message.contains("mode 0640"));

    let missing = config::load(&dir.join("missing.yaml")).unwrap_err();
    assert!(missing.errors[0]
        .message
        .starts_with("cannot read the configuration"));

    std::fs::remove_dir_all(&dir).unwrap();
}

/// The error sample in docs/configuration.md is what validation prints for its YAML.
#[test]
fn the_documented_error_output_is_current() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .unwrap();
    let section = doc.split("## Error output").nth(1).unwrap();
    let block = |fence: &str| -> String {
        let start = section.find(fence).unwrap() + fence.len();
        let end = start + section[start..].find("```").unwrap();
        section[start..end].to_string()
    };
    let yaml = block("```yaml\n");
    let expected = block("```text\n");
    let errors = parse_err(&yaml);
    let rendered = ConfigErrors { errors }.to_string();
    assert_eq!(
        rendered.replace("test.yaml", "config.yaml"),
        expected.trim_end()
    );
}

/// Any prefix of the example, and the example with lines swapped into odd places, gives a
/// result (a config or errors), never a panic.
#[test]
fn damaged_configurations_never_panic() {
    let text = std::fs::read_to_string(example_path()).unwrap();
    let options = ValidateOptions::with_built_in_drivers();
    let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).step_by(5).collect();
    for &end in &boundaries {
        let _ = config::parse_with(&text[..end], "t.yaml", &options);
    }
    let lines: Vec<&str> = text.lines().collect();
    for shift in 1..lines.len() {
        let mut damaged = lines.clone();
        damaged.swap(0, shift);
        let dedented: Vec<String> = damaged.iter().map(|l| l.trim_start().to_string()).collect();
        let _ = config::parse_with(&damaged.join("\n"), "t.yaml", &options);
        let _ = config::parse_with(&dedented[shift..].join("\n"), "t.yaml", &options);
    }
}

#[test]
fn unsupported_and_new_top_level_options() {
    let (c, warnings) = parse_ok(
        "state_save_interval: 5m\nbuses:\n  - name: a\n    device: /dev/ttyS0\n    apply_unit_factor: false\n",
    );
    assert_eq!(c.state_save_interval, secs(300));
    assert!(!c.buses[0].apply_unit_factor);
    let warned: Vec<(usize, &str)> = warnings
        .iter()
        .map(|w| (w.pos.line, w.path.as_str()))
        .collect();
    assert_eq!(warned, [(5, "buses[0].apply_unit_factor")]);
    assert!(
        warnings[0].message.contains("not supported"),
        "{warnings:?}"
    );

    let (c, _) = parse_ok("");
    assert_eq!(c.state_save_interval, secs(30));
    let errors = parse_err("state_save_interval: 0\n");
    assert_eq!(errors[0].path, "state_save_interval");
}

/// The small things a new user trips over get a message written for a person.
#[test]
fn small_mistakes_get_clear_messages() {
    // A name with nothing usable in it: a hint with an example, not "use e.g. ``".
    let errors = parse_err("buses:\n  - {name: \"###\", tcp: \"h:1\"}\n");
    let shown = ConfigErrors { errors }.to_string();
    assert!(
        shown.contains("use letters and digits, e.g. `cellar`"),
        "{shown}"
    );
    assert!(!shown.contains("``"), "{shown}");

    // The parser's size limit, not Rust debug text.
    let huge = format!("x: [{}]\n", vec!["0"; 260_000].join(","));
    let errors = parse_err(&huge);
    assert_eq!(errors.len(), 1);
    let m = &errors[0].message;
    assert!(m.contains("far larger than any configuration"), "{m}");
    assert!(!m.contains('{') && !m.contains("budget"), "{m}");

    // Inputs listening on every address are warned about, as the bridge is.
    let (_, warnings) = parse_ok(
        "receivers:\n  - {name: a, type: udp, bind: \"0.0.0.0:7001\"}\n  - {name: b, type: tcp_server, bind: 7002}\n",
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        (warnings[0].pos.line, warnings[0].path.as_str()),
        (2, "receivers[0].bind")
    );
    assert!(
        warnings[0]
            .message
            .contains("0.0.0.0:7001, reachable from the network"),
        "{}",
        warnings[0]
    );
}

#[test]
fn settle_time_and_silent_receivers() {
    let (c, _) = parse_ok("receivers:\n  - {name: a, type: udp, bind: 7001}\n");
    assert_eq!(c.settle_time, Duration::from_millis(500));
    assert_eq!(c.silent_after, Duration::from_secs(30 * 60));
    assert_eq!(c.receivers[0].silent_after, None);
    let (c, _) = parse_ok(
        "settle_time: 0\nsilent_after: 2h\nreceivers:\n  - {name: a, type: udp, bind: 7001, silent_after: 10m}\n  - {name: b, type: udp, bind: 7002, silent_after: 0}\n",
    );
    assert_eq!(c.settle_time, Duration::ZERO);
    assert_eq!(c.silent_after, Duration::from_secs(7200));
    assert_eq!(c.receivers[0].silent_after, Some(Duration::from_secs(600)));
    assert_eq!(c.receivers[1].silent_after, Some(Duration::ZERO));
    let (_, warnings) = parse_ok(
        "dedup_window: 2s\nsettle_time: 3s\nreceivers:\n  - {name: a, type: udp, bind: 7001}\n",
    );
    let paths: Vec<(usize, &str)> = warnings
        .iter()
        .map(|w| (w.pos.line, w.path.as_str()))
        .collect();
    assert_eq!(paths, [(2, "settle_time")], "{warnings:?}");
    assert!(
        warnings[0]
            .message
            .contains("not shorter than dedup_window (2s)"),
        "{}",
        warnings[0].message
    );
    let errors = parse_err("settle_time: 1m\nsilent_after: 5\n");
    let got: Vec<(usize, &str)> = errors
        .iter()
        .map(|e| (e.pos.line, e.path.as_str()))
        .collect();
    assert_eq!(got, [(1, "settle_time"), (2, "silent_after")], "{errors:?}");
    assert!(
        errors[0].message.contains("60000 ms"),
        "{}",
        errors[0].message
    );
    assert!(
        errors[1].message.contains("has no unit"),
        "{}",
        errors[1].message
    );
}

/// `log_level` takes a level or `RUST_LOG`-style directives; `log_format` text or json.
#[test]
fn log_level_takes_directives_and_log_format_a_format() {
    let (c, _) = parse_ok("log_level: debug\n");
    assert_eq!(
        (c.log_level, c.log_filter.as_str()),
        (LogLevel::Debug, "debug")
    );
    assert_eq!(c.log_format, meterbridge::logging::LogFormat::Text);

    let (c, _) = parse_ok("log_level: \"meterbridge::mqtt=trace,warn\"\nlog_format: json\n");
    assert_eq!(
        c.log_level,
        LogLevel::Warn,
        "the bare level is everyone else's"
    );
    assert_eq!(c.log_filter, "meterbridge::mqtt=trace,warn");
    assert_eq!(c.log_format, meterbridge::logging::LogFormat::Json);

    let errors = parse_err("log_level: \"meterbridge::mqtt=loud,info\"\nlog_format: xml\n");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!((errors[0].pos.line, errors[0].pos.column), (1, 12));
    assert!(
        errors[0].message.contains("`loud` is not a level"),
        "{errors:?}"
    );
    assert_eq!(errors[1].pos.line, 2);
    assert!(
        errors[1].message.contains("unknown log format `xml`"),
        "{errors:?}"
    );
}
