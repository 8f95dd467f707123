//! The Home Assistant add-on and the other packaging files: the add-on's option schema must be
//! fully handled by `meterbridge addon-config`, its output must pass `check-config`, secrets
//! must stay off command lines and out of world-readable files.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use meterbridge::config::node::{self, Node, Value as Yaml};
use serde_json::{json, Value as Json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Node {
    node::parse(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e:?}"))
}

fn entries(node: &Node) -> &[(String, node::Pos, Node)] {
    match &node.value {
        Yaml::Map(e) => e,
        other => panic!("expected a mapping, found {other:?}"),
    }
}

/// The schema as (section, option, type) for every option, where section is "" for top-level
/// scalars and the list or mapping name otherwise.
fn schema_options(config: &Node) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (key, _, value) in entries(config.get("schema").unwrap()) {
        match &value.value {
            Yaml::Str(t) => out.push((String::new(), key.clone(), t.clone())),
            Yaml::List(items) => {
                assert_eq!(items.len(), 1, "schema.{key}: one item schema");
                for (k, _, v) in entries(&items[0]) {
                    let Yaml::Str(t) = &v.value else {
                        panic!("{key}.{k}")
                    };
                    out.push((key.clone(), k.clone(), t.clone()));
                }
            }
            Yaml::Map(m) => {
                for (k, _, v) in m {
                    let Yaml::Str(t) = &v.value else {
                        panic!("{key}.{k}")
                    };
                    out.push((key.clone(), k.clone(), t.clone()));
                }
            }
            other => panic!("schema.{key}: unexpected {other:?}"),
        }
    }
    out
}

/// Whether a JSON option value is one the Supervisor would accept for this schema type.
fn fits(ty: &str, value: &Json) -> bool {
    let ty = ty.strip_suffix('?').unwrap_or(ty);
    let int_range = |spec: &str, v: &Json| -> bool {
        let Some(n) = v.as_i64() else { return false };
        match spec.strip_prefix('(').and_then(|s| s.strip_suffix(')')) {
            None => true,
            Some(r) => {
                let (lo, hi) = r.split_once(',').unwrap();
                let lo = lo.parse::<i64>().unwrap_or(i64::MIN);
                let hi = hi.parse::<i64>().unwrap_or(i64::MAX);
                (lo..=hi).contains(&n)
            }
        }
    };
    if let Some(choices) = ty.strip_prefix("list(").and_then(|s| s.strip_suffix(')')) {
        return value
            .as_str()
            .is_some_and(|v| choices.split('|').any(|c| c == v));
    }
    if let Some(spec) = ty.strip_prefix("int") {
        return int_range(spec, value);
    }
    match ty {
        "str" | "password" | "device(subsystem=tty)" => value.is_string(),
        "bool" => value.is_boolean(),
        "port" => int_range("(1,65535)", value),
        other => panic!("schema type {other} not known to this test"),
    }
}

/// Checks an options document against the schema: every option is in the schema with a fitting
/// value, and every required option is present.
fn check_against_schema(schema: &[(String, String, String)], options: &Json) {
    let root = options.as_object().unwrap();
    for (section, key, ty) in schema {
        let required = !ty.ends_with('?');
        if section.is_empty() {
            match root.get(key) {
                Some(v) => assert!(fits(ty, v), "{key}: {v} is not {ty}"),
                None => assert!(!required, "{key} is required"),
            }
            continue;
        }
        let items: Vec<&Json> = match root.get(section) {
            Some(Json::Array(items)) => items.iter().collect(),
            Some(m @ Json::Object(_)) => vec![m],
            other => panic!("{section}: {other:?}"),
        };
        for (i, item) in items.iter().enumerate() {
            match item.get(key) {
                Some(v) => assert!(fits(ty, v), "{section}[{i}].{key}: {v} is not {ty}"),
                None => assert!(!required, "{section}[{i}].{key} is required"),
            }
        }
    }
    for (key, value) in root {
        let known = |sec: &str, k: &str| schema.iter().any(|(s, o, _)| s == sec && o == k);
        match value {
            Json::Array(items) => {
                for item in items {
                    for k in item.as_object().unwrap().keys() {
                        assert!(known(key, k), "{key}.{k} is not in the schema");
                    }
                }
            }
            Json::Object(m) => {
                for k in m.keys() {
                    assert!(known(key, k), "{key}.{k} is not in the schema");
                }
            }
            _ => assert!(known("", key), "{key} is not in the schema"),
        }
    }
}

const METER_KEY: &str = "00112233445566778899AABBCCDDEEFF";
const MQTT_PASSWORD: &str = "p\"a#s: w\\ord 'x'";
const SERVICE_PASSWORD: &str = "Supervisor-Generated-Secret-42";

/// Options that set every option of the schema somewhere (checked by the test that uses it).
fn every_option() -> Json {
    json!({
        "log_level": "debug",
        "dedup_window": "20s",
        "settle_time": "2s",
        "silent_after": "1h",
        "allow_bus_writes": true,
        "buses": [
            {"name": "cellar", "device": "/dev/ttyUSB0", "baud": 9600,
             "polling": "*/15 * * * *; 2 0 * * *", "request_timeout": "500",
             "idle_timeout": "50ms", "retry": 3, "apply_unit_factor": false,
             "only_values": true, "emit": "1h", "force_reset": true, "max_frames": 8,
             "bridge_port": 8222},
            {"name": "heating", "tcp": "192.168.1.50:10001", "polling": "15m"}
        ],
        "receivers": [
            {"name": "stick", "type": "im871a", "device": "/dev/ttyACM0", "mode": "c1",
             "baud": 57600, "dedup": false},
            {"name": "remote", "type": "tcp_client", "address": "192.168.1.60:7000",
             "silent_after": "6h"},
            {"name": "esp32", "type": "udp", "bind": "0.0.0.0:7001"},
            {"name": "from-broker", "type": "mqtt", "topic": "wmbus/raw"},
            {"name": "sdr", "type": "rtlwmbus", "command": "nc 192.168.1.70 7373"}
        ],
        "meters": [
            {"name": "Heat meter", "bus": "cellar", "address": "5", "driver": "kamheat",
             "polling": "1h", "max_records": 50, "expire_after": "3h"},
            {"name": "Cold water", "address": "12345678", "driver": "iperl", "key": METER_KEY}
        ],
        "mqtt": {"url": "mqtt://broker.lan:1884", "username": "meters",
                 "password": MQTT_PASSWORD, "base_topic": "home/meters",
                 "discovery_prefix": "ha"}
    })
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("mb-addon-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `meterbridge addon-config` the way addon/run.sh does and returns its output and its
/// arguments.
fn convert(dir: &Scratch, options: &Json, service: Option<&Json>) -> (Output, Vec<String>) {
    std::fs::write(dir.path("options.json"), options.to_string()).unwrap();
    let mut args = vec![
        "addon-config".to_string(),
        "--options".into(),
        dir.path("options.json").display().to_string(),
        "--output".into(),
        dir.path("meterbridge.yaml").display().to_string(),
        "--state-dir".into(),
        dir.0.display().to_string(),
    ];
    if let Some(service) = service {
        std::fs::write(dir.path("service.json"), service.to_string()).unwrap();
        args.push("--mqtt-service".into());
        args.push(dir.path("service.json").display().to_string());
    }
    let out = Command::new(env!("CARGO_BIN_EXE_meterbridge"))
        .args(&args)
        .output()
        .unwrap();
    (out, args)
}

fn check_config(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meterbridge"))
        .arg("check-config")
        .arg(path)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A scalar as text, for comparing a YAML value with the JSON option it came from.
fn yaml_scalar(node: &Node) -> String {
    match &node.value {
        Yaml::Str(s) => s.clone(),
        Yaml::Int(i) => i.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn json_scalar(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn every_schema_option_is_converted_and_the_result_passes_check_config() {
    let config = yaml("addon/config.yaml");
    let schema = schema_options(&config);
    let options = every_option();
    check_against_schema(&schema, &options);

    // The sample must really set every option, so a schema option added without a
    // conversion fails here.
    let set: BTreeSet<(String, String)> = options
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(key, value)| match value {
            Json::Array(items) => items
                .iter()
                .flat_map(|i| i.as_object().unwrap().keys())
                .map(|k| (key.clone(), k.clone()))
                .collect::<Vec<_>>(),
            Json::Object(m) => m.keys().map(|k| (key.clone(), k.clone())).collect(),
            _ => vec![(String::new(), key.clone())],
        })
        .collect();
    let in_schema: BTreeSet<(String, String)> = schema
        .iter()
        .map(|(s, k, _)| (s.clone(), k.clone()))
        .collect();
    assert_eq!(
        set, in_schema,
        "the sample options must set every schema option"
    );

    let dir = Scratch::new("every");
    let (out, _) = convert(&dir, &options, None);
    assert!(out.status.success(), "{}", text(&out));
    let output = dir.path("meterbridge.yaml");
    let checked = check_config(&output);
    assert!(checked.status.success(), "{}", text(&checked));
    assert!(
        String::from_utf8_lossy(&checked.stdout)
            .contains("valid (2 buses, 5 receivers, 2 meters, publishing to MQTT)"),
        "{}",
        text(&checked)
    );

    // Every value given is in the configuration, under the option it belongs to.
    let written = node::parse(&std::fs::read_to_string(&output).unwrap()).unwrap();
    for (key, value) in options.as_object().unwrap() {
        match value {
            Json::Array(items) => {
                let Yaml::List(out_items) = &written.get(key).unwrap().value else {
                    panic!("{key}")
                };
                assert_eq!(out_items.len(), items.len(), "{key}");
                for (item, out_item) in items.iter().zip(out_items) {
                    for (k, v) in item.as_object().unwrap() {
                        let got = if k == "bridge_port" {
                            out_item.get("tcp_server").and_then(|t| t.get("port"))
                        } else {
                            out_item.get(k)
                        };
                        let got = got.unwrap_or_else(|| panic!("{key}.{k} missing"));
                        assert_eq!(yaml_scalar(got), json_scalar(v), "{key}.{k}");
                    }
                }
            }
            Json::Object(m) => {
                for (k, v) in m {
                    let got = written.get(key).and_then(|s| s.get(k)).unwrap();
                    assert_eq!(yaml_scalar(got), json_scalar(v), "{key}.{k}");
                }
            }
            v => assert_eq!(
                yaml_scalar(written.get(key).unwrap()),
                json_scalar(v),
                "{key}"
            ),
        }
    }
    // Types survive: a wired primary address and a millisecond timeout are numbers.
    let meters = written.get("meters").unwrap();
    let Yaml::List(meters) = &meters.value else {
        panic!()
    };
    assert_eq!(meters[0].get("address").unwrap().value, Yaml::Int(5));
    assert_eq!(
        meters[1].get("address").unwrap().value,
        Yaml::Str("12345678".into())
    );
    assert_eq!(
        written.get("state_dir").unwrap().value,
        Yaml::Str(dir.0.display().to_string())
    );
}

/// The run script passes the add-on's slug (from the container's host name); the gateway
/// device then links to the page through ingress.
#[test]
fn the_ingress_slug_gives_the_gateway_device_its_link() {
    let dir = Scratch::new("ingress");
    std::fs::write(dir.path("options.json"), "{}").unwrap();
    let run = |slug: &str| {
        Command::new(env!("CARGO_BIN_EXE_meterbridge"))
            .args(["addon-config", "--options"])
            .arg(dir.path("options.json"))
            .arg("--output")
            .arg(dir.path("meterbridge.yaml"))
            .arg("--state-dir")
            .arg(&dir.0)
            .args(["--ingress-slug", slug])
            .output()
            .unwrap()
    };
    let out = run("a0d7b954_meterbridge");
    assert!(out.status.success(), "{}", text(&out));
    let (config, _) = meterbridge::config::load_with(
        &dir.path("meterbridge.yaml"),
        &meterbridge::config::ValidateOptions::with_built_in_drivers(),
    )
    .unwrap();
    let web = config.web.unwrap();
    assert_eq!(
        web.configuration_url(None).as_deref(),
        Some("homeassistant://hassio/ingress/a0d7b954_meterbridge")
    );
    assert_eq!(web.bind, meterbridge::cli::addon::ADDON_WEB_BIND);
    let bad = run("x\"y");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("is not an add-on slug"),
        "{}",
        text(&bad)
    );
    assert!(read("addon/run.sh").contains("--ingress-slug \"${HOSTNAME//-/_}\""));
}

#[test]
fn the_default_options_fit_the_schema_and_convert() {
    let config = yaml("addon/config.yaml");
    let schema = schema_options(&config);
    let defaults = node_to_json(config.get("options").unwrap());
    check_against_schema(&schema, &defaults);

    let dir = Scratch::new("defaults");
    let (out, _) = convert(&dir, &defaults, None);
    assert!(out.status.success(), "{}", text(&out));
    let checked = check_config(&dir.path("meterbridge.yaml"));
    assert!(checked.status.success(), "{}", text(&checked));
    assert!(
        String::from_utf8_lossy(&checked.stdout)
            .contains("0 buses, 0 receivers, 0 meters, printing readings on standard output"),
        "{}",
        text(&checked)
    );
}

fn node_to_json(node: &Node) -> Json {
    match &node.value {
        Yaml::Null => Json::Null,
        Yaml::Bool(b) => json!(b),
        Yaml::Int(i) => json!(i),
        Yaml::Float(f) => json!(f),
        Yaml::Str(s) => json!(s),
        Yaml::List(items) => Json::Array(items.iter().map(node_to_json).collect()),
        Yaml::Map(e) => Json::Object(
            e.iter()
                .map(|(k, _, v)| (k.clone(), node_to_json(v)))
                .collect(),
        ),
    }
}

#[test]
fn the_supervisor_service_is_used_and_secrets_stay_private() {
    let mut options = every_option();
    // Without its own url the add-on takes the Supervisor's broker; its username replaces the
    // service's, the service's password stays.
    let mqtt = options.get_mut("mqtt").unwrap().as_object_mut().unwrap();
    mqtt.remove("url");
    mqtt.remove("password");
    let service = json!({"host": "core-mosquitto", "port": 1883, "ssl": false,
                          "protocol": "3.1.1", "username": "addons",
                          "password": SERVICE_PASSWORD});
    let dir = Scratch::new("service");
    // A readable file from an earlier version is replaced, not reused with its mode.
    std::fs::write(dir.path("meterbridge.yaml"), "old: true\n").unwrap();
    std::fs::set_permissions(
        dir.path("meterbridge.yaml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (out, args) = convert(&dir, &options, Some(&service));
    assert!(out.status.success(), "{}", text(&out));

    let output = dir.path("meterbridge.yaml");
    let mode = std::fs::metadata(&output).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the configuration holds secrets");
    let written = std::fs::read_to_string(&output).unwrap();
    assert!(written.contains(SERVICE_PASSWORD) && written.contains(METER_KEY));
    let cfg = meterbridge::config::parse(&written, "meterbridge.yaml")
        .unwrap()
        .0;
    let broker = cfg.mqtt.unwrap();
    assert_eq!(
        (
            broker.host.as_str(),
            broker.port,
            broker.username.as_deref()
        ),
        ("core-mosquitto", 1883, Some("meters"))
    );
    // No file but the configuration is left behind next to it.
    let mut names: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["meterbridge.yaml", "options.json", "service.json"]);

    // Neither the arguments nor the messages carry a secret.
    let secrets = [METER_KEY, SERVICE_PASSWORD, MQTT_PASSWORD];
    let printed = text(&out);
    for secret in secrets {
        assert!(
            !args.iter().any(|a| a.contains(secret)),
            "{secret} in {args:?}"
        );
        assert!(!printed.contains(secret), "{secret} in {printed}");
    }
    let checked = check_config(&output);
    assert!(checked.status.success(), "{}", text(&checked));
    for secret in secrets {
        assert!(!text(&checked).contains(secret));
    }
}

#[test]
fn the_run_script_passes_only_file_names_to_the_binary() {
    let script = read("addon/run.sh");
    assert!(script.starts_with("#!/usr/bin/with-contenv bashio\n"));
    // Every argument of the conversion is a path or a flag: the same ones this test passes.
    let args_line = script
        .lines()
        .find(|l| l.trim_start().starts_with("args=(addon-config"))
        .expect("the conversion's arguments");
    for word in args_line
        .trim_start()
        .trim_start_matches("args=(")
        .trim_end_matches(')')
        .split_whitespace()
    {
        assert!(
            word.starts_with("--")
                || word.starts_with('/')
                || word.starts_with("\"${")
                || word == "addon-config",
            "unexpected argument {word}"
        );
    }
    // Nothing reads an option into a variable that could end up on a command line.
    assert!(
        !script.contains("bashio::config"),
        "options are read by the binary"
    );
    assert!(!script.contains("services mqtt password"));
    assert!(
        script.contains("exec s6-setuidgid \"${RUN_USER}\" meterbridge run --config \"${CONFIG}\"")
    );
    assert!(script.contains("--mqtt-service \"${service_file}\""));
}

#[test]
fn invalid_options_stop_the_start_with_the_option_named() {
    let options = json!({
        "log_level": "info",
        "allow_bus_writes": false,
        "meters": [{"name": "water", "address": "1234567"}]
    });
    let dir = Scratch::new("invalid");
    let (out, _) = convert(&dir, &options, None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("meters[0].address: a wireless meter's address is its id, 8 hex digits"),
        "{err}"
    );
    assert!(err.contains("1 error in the add-on's options"), "{err}");

    let (out, _) = convert(
        &dir,
        &json!({"buses": [{"name": "b", "baud": "fast"}]}),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: buses[0].baud: expected a whole number"
    );
}

/// The receivers' timing options of the configuration file are add-on options too, and
/// leaving them out gives the configuration file's defaults.
#[test]
fn the_receiver_timing_options_reach_the_configuration() {
    let dir = Scratch::new("timing");
    let receivers = json!([
        {"name": "stick", "type": "im871a", "device": "/dev/ttyACM0"},
        {"name": "esp32", "type": "udp", "bind": "0.0.0.0:7001", "silent_after": "0"},
        {"name": "attic", "type": "tcp_client", "address": "192.168.1.60:7000",
         "silent_after": "4h"}
    ]);
    let load = |options: &Json| {
        let (out, _) = convert(&dir, options, None);
        assert!(out.status.success(), "{}", text(&out));
        meterbridge::config::load(&dir.path("meterbridge.yaml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .0
    };

    let config = load(&json!({"receivers": receivers}));
    assert_eq!(config.settle_time, Duration::from_millis(500));
    assert_eq!(config.silent_after, Duration::from_secs(30 * 60));
    assert_eq!(config.receivers[0].silent_after, None);

    let config = load(&json!({
        "dedup_window": "0",
        "settle_time": "0",
        "silent_after": "45m",
        "receivers": receivers
    }));
    // A bare 0 (what the UI hands over for "off") reads as zero, not as a duration without unit.
    assert_eq!(config.dedup_window, Duration::ZERO);
    assert_eq!(config.settle_time, Duration::ZERO);
    assert_eq!(config.silent_after, Duration::from_secs(45 * 60));
    assert_eq!(config.receivers[0].silent_after, None);
    assert_eq!(config.receivers[1].silent_after, Some(Duration::ZERO));
    assert_eq!(
        config.receivers[2].silent_after,
        Some(Duration::from_secs(4 * 3600))
    );

    // Out of range: named as the add-on option, and the gateway is not started.
    let (out, _) = convert(
        &dir,
        &json!({"settle_time": "10s", "receivers": receivers}),
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("settle_time"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_add_on_metadata_follows_the_conventions() {
    let config = yaml("addon/config.yaml");
    let cargo = read("Cargo.toml");
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap();
    let s = |k: &str| match &config.get(k).unwrap().value {
        Yaml::Str(s) => s.clone(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(s("version"), version);
    assert_eq!(s("slug"), "meterbridge");
    assert_eq!(s("image"), "ghcr.io/meterbridge/meterbridge-addon");
    let Yaml::List(arch) = &config.get("arch").unwrap().value else {
        panic!()
    };
    let arch: Vec<String> = arch.iter().map(yaml_scalar).collect();
    assert_eq!(arch, ["aarch64", "amd64"]);
    assert_eq!(config.get("init").unwrap().value, Yaml::Bool(false));
    assert_eq!(config.get("uart").unwrap().value, Yaml::Bool(true));
    let Yaml::List(services) = &config.get("services").unwrap().value else {
        panic!()
    };
    assert_eq!(yaml_scalar(&services[0]), "mqtt:want");
    let ports = config.get("ports").unwrap();
    assert_eq!(
        ports.get("8222/tcp").unwrap().value,
        Yaml::Null,
        "off by default"
    );
    for (port, _, value) in entries(ports) {
        assert_eq!(value.value, Yaml::Null, "{port} must be off by default");
    }
    // The web page through ingress, on the port `addon-config` makes it listen on.
    assert_eq!(config.get("ingress").unwrap().value, Yaml::Bool(true));
    assert_eq!(
        config.get("ingress_port").unwrap().value,
        Yaml::Int(
            meterbridge::cli::addon::ADDON_WEB_BIND
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        )
    );
    assert!(ports.get("8099/tcp").is_none(), "no host port for the page");
    for forbidden in ["full_access", "privileged", "host_network", "docker_api"] {
        assert!(config.get(forbidden).is_none(), "{forbidden}");
    }

    let dockerfile = read("addon/Dockerfile");
    assert!(dockerfile.contains("FROM ghcr.io/home-assistant/base:3."));
    assert!(!dockerfile.contains("BUILD_FROM"));
    assert!(dockerfile.contains("cargo build --release --locked"));
    for label in [
        "io.hass.version=",
        "io.hass.type=\"app\"",
        "io.hass.arch=",
        "io.hass.name=",
        "io.hass.description=",
        "io.hass.url=",
    ] {
        assert!(dockerfile.contains(label), "{label}");
    }
    assert!(dockerfile.contains(&format!("BUILD_VERSION={version}")));

    for (png, w, h) in [("addon/icon.png", 128, 128), ("addon/logo.png", 250, 100)] {
        let bytes = std::fs::read(Path::new(ROOT).join(png)).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{png}");
        let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((width, height), (w, h), "{png}");
    }
    let apparmor = read("addon/apparmor.txt");
    for rule in [
        "/dev/ttyUSB* rw",
        "/dev/ttyACM* rw",
        "/dev/serial/by-id/* r",
        "/data/** rwk",
    ] {
        assert!(apparmor.contains(rule), "{rule}");
    }
}

#[test]
fn the_translations_name_every_schema_option() {
    let config = yaml("addon/config.yaml");
    let en = yaml("addon/translations/en.yaml");
    let tr = en.get("configuration").unwrap();
    for (section, key, _) in schema_options(&config) {
        let entry = if section.is_empty() {
            tr.get(&key)
        } else {
            let sec = tr.get(&section).unwrap_or_else(|| panic!("{section}"));
            assert!(sec.get("name").is_some() && sec.get("description").is_some());
            sec.get("fields").and_then(|f| f.get(&key))
        };
        let entry = entry.unwrap_or_else(|| panic!("no translation for {section}.{key}"));
        for part in ["name", "description"] {
            assert!(
                matches!(&entry.get(part).map(|n| &n.value), Some(Yaml::Str(s)) if !s.is_empty()),
                "{section}.{key}.{part}"
            );
        }
    }
    for (port, _, _) in entries(config.get("ports").unwrap()) {
        assert!(
            en.get("network").and_then(|n| n.get(port)).is_some(),
            "{port}"
        );
    }
}

#[test]
fn the_docker_image_and_systemd_unit_are_hardened() {
    let dockerfile = read("Dockerfile");
    for line in [
        "cargo build --release --locked",
        "USER 10001",
        "VOLUME /data",
        "HEALTHCHECK",
        "ENTRYPOINT [\"meterbridge\"]",
        "CMD [\"run\", \"--config\", \"/data/meterbridge.yaml\"]",
    ] {
        assert!(dockerfile.contains(line), "Dockerfile: {line}");
    }
    // Everything the build reads is copied into the build stage.
    for path in [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "src",
        "drivers",
        "benches",
    ] {
        assert!(Path::new(ROOT).join(path).exists());
        assert!(
            dockerfile
                .lines()
                .any(|l| l.starts_with("COPY ") && l.split_whitespace().any(|w| w == path)),
            "Dockerfile does not copy {path}"
        );
    }
    let ignore = read(".dockerignore");
    for entry in ["target/", "target-ci/", "fuzz/target", ".git"] {
        assert!(ignore.lines().any(|l| l == entry), ".dockerignore: {entry}");
    }

    let unit = read("contrib/meterbridge.service");
    for line in [
        "DynamicUser=yes",
        "SupplementaryGroups=dialout",
        "StateDirectory=meterbridge",
        "ConfigurationDirectory=meterbridge",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "DeviceAllow=char-ttyUSB rw",
        "DeviceAllow=char-ttyACM rw",
        "Restart=on-failure",
        "ExecStartPre=/usr/local/bin/meterbridge check-config /etc/meterbridge/meterbridge.yaml",
        "ExecStart=/usr/local/bin/meterbridge run --config /etc/meterbridge/meterbridge.yaml",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit: {line}");
    }
}
