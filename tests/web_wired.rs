//! The web page's wired buses over HTTP, against a gateway polling a simulated M-Bus segment
//! (a Kamstrup 403 at primary address 1, configured, and a Landis+Gyr Ultraheat at 5, not):
//! a primary scan with live progress (probes, found so far, time left) cancelled halfway, with
//! polling going on afterwards; a secondary scan that finds both; "read now" with the decoded
//! records; the Ultraheat added from the scan, polled without a restart and saved for the next
//! start; set-address refused without `allow_bus_writes` and carried out with it; CSRF.

mod support;

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meterbridge::config::{parse_with, ValidateOptions};
use meterbridge::daemon::gateway;
use meterbridge::sim::{BusSim, ServeOptions, SimMeter};
use serde_json::{json, Value};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(30);

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

struct Segment {
    address: String,
    sim: Arc<Mutex<BusSim>>,
    /// The Ultraheat's secondary address, as scans print it.
    ultraheat: String,
}

async fn start_segment() -> Segment {
    let heat = support::kamheat_frame();
    let ultra = wired_frame("ultraheat");
    let ultra_secondary = meterbridge::sim::bus::secondary_of(&ultra).unwrap();
    let sim = Arc::new(Mutex::new(BusSim::new(vec![
        SimMeter::new(1, meterbridge::sim::bus::secondary_of(&heat).unwrap())
            .with_telegrams(vec![heat])
            .unwrap(),
        SimMeter::new(5, ultra_secondary)
            .with_telegrams(vec![ultra])
            .unwrap(),
    ])));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(meterbridge::sim::serve_tcp(
        listener,
        sim.clone(),
        ServeOptions {
            baud: 2400,
            log: false,
        },
    ));
    let ultraheat = hex(&ultra_secondary.to_select_bytes());
    Segment {
        address,
        sim,
        ultraheat,
    }
}

/// A secondary address as scans print it: the id digits, then manufacturer, version and
/// medium, from the select bytes (id little-endian BCD first).
fn hex(select: &[u8; 8]) -> String {
    let id: String = select[..4]
        .iter()
        .rev()
        .map(|b| format!("{b:02X}"))
        .collect();
    let rest: String = select[4..].iter().map(|b| format!("{b:02X}")).collect();
    id + &rest
}

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<gateway::GatewayStats, String>>,
    web: SocketAddr,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(WAIT, self.task).await;
    }
}

fn config_yaml(state: &std::path::Path, bus: &str, writes: bool) -> String {
    format!(
        r#"state_dir: "{state}"
allow_bus_writes: {writes}
buses:
  - name: cellar
    tcp: "{bus}"
    polling: 1s
meters:
  - name: Heat
    bus: cellar
    address: 1
    driver: kamheat
web:
  bind: "127.0.0.1:0"
"#,
        state = state.display()
    )
}

async fn start(yaml: &str) -> Running {
    let options = ValidateOptions::with_built_in_drivers();
    let (mut config, _) = parse_with(yaml, "test.yaml", &options).unwrap_or_else(|e| panic!("{e}"));
    // As `run` does: the meters added on the page join the configuration.
    meterbridge::web::added::merge(&mut config, &options).unwrap();
    let support::WebGateway { stop, task, web } = support::start_with_web(config).await;
    Running { stop, task, web }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "meterbridge-web-wired-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One HTTP/1.1 exchange on its own connection: status and body.
async fn http(
    web: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        request.push_str(&format!("X-CSRF-Token: {t}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(web).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
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

async fn csrf(web: SocketAddr) -> String {
    let page = http(web, "GET", "/", None, "").await.1;
    page.split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|a| a.split('"').next())
        .unwrap()
        .to_string()
}

async fn post(web: SocketAddr, path: &str, token: &str, body: Value) -> (u16, Value) {
    let (status, text) = http(web, "POST", path, Some(token), &body.to_string()).await;
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, v)
}

async fn wired(web: SocketAddr) -> Value {
    let (status, text) = http(web, "GET", "/api/wired", None, "").await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// Polls the wired view until `ready` holds for the bus `cellar`.
async fn bus_until(web: SocketAddr, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let view = wired(web).await;
        let bus = view["buses"][0].clone();
        if ready(&bus) {
            return bus;
        }
        assert!(start.elapsed() < WAIT * 3, "never {what}: {bus}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn last_read(bus: &Value, meter: &str) -> Option<u64> {
    bus["meters"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == meter)?["last_seen"]
        .as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_reads_and_adds_on_a_wired_bus() {
    let segment = start_segment().await;
    let dir = temp_dir("scan");
    let yaml = config_yaml(&dir.join("state"), &segment.address, false);
    let gw = start(&yaml).await;
    let token = csrf(gw.web).await;

    // The script has no markup sink either.
    let (_, js) = http(gw.web, "GET", "/wired.js", None, "").await;
    assert!(js.contains("wired-events"));
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!js.contains(sink), "wired.js uses {sink}");
    }

    let bus = bus_until(gw.web, "polled Heat", |b| last_read(b, "Heat").is_some()).await;
    assert_eq!(bus["name"], "cellar");
    assert_eq!(bus["connected"], true);
    assert_eq!(bus["meters"][0]["address"], 1);
    assert_eq!(bus["meters"][0]["driver"], "kamheat");
    assert_eq!(bus["scan"]["kind"], Value::Null);

    // Changes need the page's token.
    let (status, _) = http(
        gw.web,
        "POST",
        "/api/wired/scan",
        None,
        &json!({"bus": "cellar"}).to_string(),
    )
    .await;
    assert_eq!(status, 403);

    // A primary scan: both meters found as it goes, progress and time left, then cancelled.
    let (status, answer) = post(
        gw.web,
        "/api/wired/scan",
        &token,
        json!({"bus": "cellar", "type": "primary"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ok"], true);
    let (status, again) = post(
        gw.web,
        "/api/wired/scan",
        &token,
        json!({"bus": "cellar", "type": "primary"}),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        again["error"]
            .as_str()
            .unwrap()
            .contains("a scan is running"),
        "{again}"
    );
    let bus = bus_until(gw.web, "two found with the time left", |b| {
        b["scan"]["found"].as_array().is_some_and(|f| f.len() == 2) && b["scan"]["left_s"].is_u64()
    })
    .await;
    let scan = &bus["scan"];
    assert_eq!(scan["running"], true);
    assert_eq!(scan["kind"], "primary");
    assert_eq!(scan["total"], 251);
    let probes = scan["probes"].as_u64().unwrap();
    assert!((6..251).contains(&probes), "{scan}");
    let share = scan["share"].as_f64().unwrap();
    assert!((share - probes as f64 / 251.0).abs() < 1e-9, "{scan}");
    assert!(scan["left_s"].as_u64().unwrap() > 0, "{scan}");
    let found = scan["found"].as_array().unwrap();
    assert_eq!(found[0]["primary"], 1);
    assert_eq!(found[0]["manufacturer"], "KAM");
    assert_eq!(found[0]["medium"], "heat");
    assert_eq!(found[0]["configured"], "Heat");
    assert_eq!(found[1]["primary"], 5);
    assert_eq!(found[1]["secondary"], segment.ultraheat);
    assert_eq!(found[1]["configured"], Value::Null);
    // The bus is busy with the scan: no read beside it.
    let (status, busy) = post(gw.web, "/api/wired/read", &token, json!({"meter": "Heat"})).await;
    assert_eq!(status, 422);
    assert!(
        busy["error"]
            .as_str()
            .unwrap()
            .contains("a scan is running"),
        "{busy}"
    );
    let before_cancel = last_read(&bus, "Heat").unwrap();

    let (status, answer) = post(
        gw.web,
        "/api/wired/cancel",
        &token,
        json!({"bus": "cellar"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let bus = bus_until(gw.web, "cancelled", |b| b["scan"]["running"] == false).await;
    let outcome = bus["scan"]["outcome"].as_str().unwrap();
    assert!(
        outcome.starts_with("primary scan cancelled after"),
        "{outcome}"
    );
    assert!(outcome.ends_with("2 meter(s) found so far"), "{outcome}");
    assert_eq!(bus["scan"]["found"].as_array().unwrap().len(), 2);
    // Polling goes on after the scan.
    bus_until(gw.web, "Heat polled again", |b| {
        last_read(b, "Heat").is_some_and(|t| t > before_cancel)
    })
    .await;

    // A secondary scan runs to its end.
    let (status, _) = post(
        gw.web,
        "/api/wired/scan",
        &token,
        json!({"bus": "cellar", "type": "secondary"}),
    )
    .await;
    assert_eq!(status, 200);
    let bus = bus_until(gw.web, "secondary scan done", |b| {
        b["scan"]["kind"] == "secondary" && b["scan"]["running"] == false
    })
    .await;
    assert_eq!(
        bus["scan"]["outcome"], "secondary scan done: 2 meter(s) found",
        "{bus}"
    );
    let secondaries: Vec<&str> = bus["scan"]["found"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["secondary"].as_str().unwrap())
        .collect();
    assert!(
        secondaries.contains(&segment.ultraheat.as_str()),
        "{secondaries:?}"
    );

    // Read now: the fields and every record.
    let (status, read) = post(gw.web, "/api/wired/read", &token, json!({"meter": "Heat"})).await;
    assert_eq!(status, 200, "{read}");
    let fields: Vec<(String, String)> = serde_json::from_value(read["fields"].clone()).unwrap();
    assert!(
        fields.contains(&(
            "total_energy_consumption_kwh".to_string(),
            "34510".to_string()
        )),
        "{fields:?}"
    );
    assert!(
        fields.contains(&("status".to_string(), "OK".to_string())),
        "{fields:?}"
    );
    let telegram = &read["telegrams"][0];
    assert_eq!(telegram["header"]["manufacturer"], "KAM");
    let energy = telegram["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["quantity"] == "energy" && r["storage"] == 0)
        .unwrap();
    assert_eq!(energy["unit"], "Wh");
    assert_eq!(energy["value"], 34_510_000);
    let (status, wireless) = post(
        gw.web,
        "/api/wired/read",
        &token,
        json!({"meter": "nobody"}),
    )
    .await;
    assert_eq!(status, 422);
    assert!(wireless["error"]
        .as_str()
        .unwrap()
        .contains("no meter is named"));

    // Writes are off: refused, and the page is told not to offer them.
    assert_eq!(wired(gw.web).await["allow_bus_writes"], false);
    let (status, refused) = post(
        gw.web,
        "/api/wired/address",
        &token,
        json!({"bus": "cellar", "address": 5, "new_address": 9}),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("allow_bus_writes: true"),
        "{refused}"
    );

    // Added by its secondary address: polled at once, without a restart.
    let (status, added) = post(
        gw.web,
        "/api/wired/meters",
        &token,
        json!({"bus": "cellar", "address": segment.ultraheat, "name": "Flat 2 heat", "driver": "auto"}),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    let bus = bus_until(gw.web, "the new meter read", |b| {
        last_read(b, "Flat 2 heat").is_some()
    })
    .await;
    let new = bus["meters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "Flat 2 heat")
        .unwrap();
    assert_eq!(new["driver"], "ultraheat");
    assert_eq!(new["address"], segment.ultraheat);
    let overview: Value =
        serde_json::from_str(&http(gw.web, "GET", "/api/overview", None, "").await.1).unwrap();
    let row = overview["meters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "Flat 2 heat")
        .unwrap();
    assert_eq!(row["via"], "cellar");
    assert!(!row["readings"].as_array().unwrap().is_empty(), "{row}");
    // The scan's list now says it is configured.
    let bus = wired(gw.web).await["buses"][0].clone();
    assert!(bus["scan"]["found"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["secondary"] == segment.ultraheat.as_str() && f["configured"] == "Flat 2 heat"));
    // Added twice: refused.
    let (status, twice) = post(
        gw.web,
        "/api/wired/meters",
        &token,
        json!({"bus": "cellar", "address": segment.ultraheat, "name": "Again", "driver": "auto"}),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        twice["error"]
            .as_str()
            .unwrap()
            .contains("already has this address"),
        "{twice}"
    );
    gw.stop().await;

    // Saved for the next start, owner-only, and polled again then.
    let saved = std::fs::read_to_string(dir.join("state/web-meters.yaml")).unwrap();
    assert!(saved.contains("bus: \"cellar\""), "{saved}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("state/web-meters.yaml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let gw = start(&yaml).await;
    bus_until(gw.web, "the added meter read after a restart", |b| {
        last_read(b, "Flat 2 heat").is_some()
    })
    .await;
    gw.stop().await;
    drop(segment.sim);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_address_with_bus_writes_allowed() {
    let segment = start_segment().await;
    let dir = temp_dir("address");
    let gw = start(&config_yaml(&dir.join("state"), &segment.address, true)).await;
    let token = csrf(gw.web).await;
    assert_eq!(wired(gw.web).await["allow_bus_writes"], true);
    let (status, answer) = post(
        gw.web,
        "/api/wired/address",
        &token,
        json!({"bus": "cellar", "address": segment.ultraheat, "new_address": 9}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.ends_with("now answers at primary address 9"),
        "{message}"
    );
    let primaries: Vec<u8> = segment
        .sim
        .lock()
        .unwrap()
        .meters()
        .iter()
        .map(|m| m.primary)
        .collect();
    assert_eq!(primaries, [1, 9]);
    let (status, bad) = post(
        gw.web,
        "/api/wired/address",
        &token,
        json!({"bus": "cellar", "address": 1, "new_address": 300}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(bad["error"].as_str().unwrap().contains("0 to 250"), "{bad}");
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Setting the primary address of a meter configured by that address: one added on the page
/// follows (polled at the new address at once, and saved so), one from the configuration file
/// does not, and the answer says that file must be changed; a new address another configured
/// meter uses is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_address_of_a_configured_meter() {
    let segment = start_segment().await;
    let dir = temp_dir("follow");
    let state = dir.join("state");
    let gw = start(&config_yaml(&state, &segment.address, true)).await;
    let token = csrf(gw.web).await;

    // The Ultraheat added on the page by its primary address 5, and read there.
    let (status, added) = post(
        gw.web,
        "/api/wired/meters",
        &token,
        json!({"bus": "cellar", "address": 5, "name": "Flat 2", "driver": "auto"}),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    bus_until(gw.web, "Flat 2 read", |b| last_read(b, "Flat 2").is_some()).await;

    // Not onto the address of the configured Kamstrup.
    let (status, taken) = post(
        gw.web,
        "/api/wired/address",
        &token,
        json!({"bus": "cellar", "address": 5, "new_address": 1}),
    )
    .await;
    assert_eq!(status, 422, "{taken}");
    assert!(
        taken["error"]
            .as_str()
            .unwrap()
            .starts_with("Heat is configured at primary address 1 on bus cellar"),
        "{taken}"
    );

    let (status, answer) = post(
        gw.web,
        "/api/wired/address",
        &token,
        json!({"bus": "cellar", "address": 5, "new_address": 9}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["message"],
        "the meter at primary address 5 now answers at primary address 9; Flat 2 is read there \
         from now on, also after a restart"
    );
    let changed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Saved at the new address, and read there (the meter no longer answers at 5).
    let saved = meterbridge::web::added::load(&state, &["cellar".to_string()]).unwrap();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].name, "Flat 2");
    assert_eq!(
        saved[0].address,
        meterbridge::config::schema::MeterAddress::Primary(9)
    );
    let bus = bus_until(gw.web, "Flat 2 read at 9", |b| {
        last_read(b, "Flat 2").is_some_and(|t| t > changed_at)
    })
    .await;
    let flat = bus["meters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "Flat 2")
        .unwrap();
    assert_eq!(flat["address"], 9);

    // The Kamstrup comes from the configuration file: set all the same, and the answer says
    // the file must follow; nothing is saved for it, and it stays configured at 1.
    let (status, answer) = post(
        gw.web,
        "/api/wired/address",
        &token,
        json!({"bus": "cellar", "address": 1, "new_address": 7}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["message"],
        "the meter at primary address 1 now answers at primary address 7. Heat is configured at \
         primary address 1 in the configuration file: change its address to 7 there and \
         restart; until then it is not read (the page never rewrites that file)"
    );
    let primaries: Vec<u8> = segment
        .sim
        .lock()
        .unwrap()
        .meters()
        .iter()
        .map(|m| m.primary)
        .collect();
    assert_eq!(primaries, [7, 9]);
    let saved = meterbridge::web::added::load(&state, &["cellar".to_string()]).unwrap();
    assert_eq!(saved.len(), 1, "{saved:?}");
    let bus = wired(gw.web).await["buses"][0].clone();
    let heat = bus["meters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "Heat")
        .unwrap();
    assert_eq!(heat["address"], 1);

    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
