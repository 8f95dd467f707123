//! The web page's HTTP API against a running gateway (simulated iM871A stick): what it shows,
//! that names are data and never markup, that keys never reach a response, CSRF refusal,
//! the body limit, the Home Assistant ingress prefix and allowed addresses, passwords, and the
//! Add flow with its key check, live without a restart and saved owner-only.

mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use meterbridge::config::{parse_with, ValidateOptions};
use meterbridge::daemon::gateway;
use serde_json::Value;
use tokio::sync::watch;

/// Kamstrup Multical 21 (ELL, stored decrypted), id 76348799: total_m3 6.408.
const KAMWATER: &str =
    "2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713";
/// A mode 5 encrypted water meter, id 61070071 (the demo's): total_m3 466.472 with its key.
const ENCRYPTED: &str = "76442104710007612507727100076121042507B5006005E2E95A3C2A1279A5415E6732679B43369FD5FDDDD783EEEBB48236D34E7C94AF0A18A5FDA5F7D64111EB42D4D891622139F2952F9D12A20088DFA4CF8123871123EE1F6C1DCEA414879DDB4E05E508F1826D7EFBA6964DF804C9261EA23BBF03";
const KEY: &str = "A004EB23329A477F1DD2D7820B56EB3D";
const WRONG_KEY: &str = "00112233445566778899AABBCCDDEEFF";
/// Markup in a meter name (a name cannot hold `/`, so the script element is left open: a
/// browser still runs it when the text is parsed as markup).
const EVIL_NAME: &str =
    "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned' & q";
const WAIT: Duration = Duration::from_secs(15);

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<gateway::GatewayStats, String>>,
    web: SocketAddr,
    dir: PathBuf,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(WAIT, self.task).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meterbridge-web-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A gateway whose simulated stick sends `telegrams`, with `meters` and `web` as YAML text.
async fn start(tag: &str, telegrams: &[&str], meters: &str, web: &str) -> Running {
    let dir = temp_dir(tag);
    let file = dir.join("telegrams.hex");
    std::fs::write(&file, telegrams.join("\n") + "\n").unwrap();
    let yaml = format!(
        "state_dir: \"{state}\"\nreceivers:\n  - name: stick\n    type: simulated\n    stick: im871a\n    telegrams: \"{file}\"\n    interval: 200ms\n{meters}\n{web}\n",
        state = dir.join("state").display(),
        file = file.display(),
    );
    let (config, _) = parse_with(
        &yaml,
        "test.yaml",
        &ValidateOptions::with_built_in_drivers(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let support::WebGateway { stop, task, web } = support::start_with_web(config).await;
    Running {
        stop,
        task,
        web,
        dir,
    }
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`), on a blocking thread.
async fn http(
    web: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {web}\r\n"));
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(web).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        // The server may answer (413) and close before it read all of a large body.
        let _ = s.write_all(&bytes);
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
        Reply {
            status,
            head: head.to_string(),
            body: body.to_string(),
        }
    })
    .await
    .unwrap()
}

async fn get(web: SocketAddr, path: &str) -> Reply {
    http(web, "GET", path, &[], b"").await
}

/// The page's CSRF token, as its script reads it.
async fn csrf(web: SocketAddr) -> String {
    let page = get(web, "/").await.body;
    let after = page.split("name=\"csrf-token\" content=\"").nth(1).unwrap();
    after.split('"').next().unwrap().to_string()
}

async fn post(web: SocketAddr, path: &str, token: &str, body: &Value) -> Reply {
    http(
        web,
        "POST",
        path,
        &[
            ("Content-Type", "application/json"),
            ("X-CSRF-Token", token),
        ],
        body.to_string().as_bytes(),
    )
    .await
}

/// Polls the overview until `ready` holds.
async fn overview_until(web: SocketAddr, ready: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let view = get(web, "/api/overview").await.json();
        if ready(&view) {
            return view;
        }
        assert!(
            start.elapsed() < WAIT,
            "the overview never got there: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn meter<'v>(view: &'v Value, name: &str) -> Option<&'v Value> {
    view["meters"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
}

fn reading(m: &Value, key: &str) -> Option<String> {
    m["readings"]
        .as_array()?
        .iter()
        .find(|r| r[0] == key)
        .and_then(|r| r[1].as_str())
        .map(str::to_string)
}

#[tokio::test]
async fn overview_shows_the_meters_and_names_stay_data() {
    let meters = format!(
        "meters:\n  - name: {}\n    address: \"76348799\"\n    driver: auto\n",
        serde_json::to_string(EVIL_NAME).unwrap()
    );
    let gw = start(
        "overview",
        &[KAMWATER],
        &meters,
        "web:\n  bind: \"127.0.0.1:0\"",
    )
    .await;
    let view = overview_until(gw.web, |v| {
        meter(v, EVIL_NAME).is_some_and(|m| reading(m, "total_m3").is_some())
    })
    .await;
    let m = meter(&view, EVIL_NAME).unwrap();
    assert_eq!(reading(m, "total_m3").as_deref(), Some("6.408"));
    assert_eq!(m["driver"], "kamwater");
    assert_eq!(m["via"], "stick");
    assert_eq!(m["id"], "76348799");
    assert_eq!(m["late"], false);
    assert!(m["last_seen"].as_u64().is_some());
    let stick = view["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "stick")
        .unwrap();
    assert_eq!(stick["kind"], "receiver");
    assert_eq!(stick["connected"], true);
    assert!(stick["telegrams"].as_u64().unwrap() >= 1);

    // The page itself never carries data: it is fetched by the script and put in as text.
    let page = get(gw.web, "/").await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("pwned"), "{}", page.body);
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let api = get(gw.web, "/api/overview").await;
    assert_eq!(
        api.header("content-type").as_deref(),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        api.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    // The scripts render with textContent only: no markup sink anywhere in them.
    for script in ["/app.js", "/meter.js"] {
        let js = get(gw.web, script).await;
        assert_eq!(
            js.header("content-type").as_deref(),
            Some("text/javascript; charset=utf-8")
        );
        assert!(js.body.len() > 1000, "{script}");
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!js.body.contains(sink), "{script} uses {sink}");
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn state_changes_need_the_pages_token_and_bodies_are_bounded() {
    let gw = start("csrf", &[KAMWATER], "", "web:\n  bind: \"127.0.0.1:0\"").await;
    let token = csrf(gw.web).await;
    assert_eq!(token.len(), 32);
    let body = serde_json::json!({"id": "61070071", "name": "x"});
    let no_token = http(
        gw.web,
        "POST",
        "/api/meters",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(no_token.status, 403, "{}", no_token.body);
    assert!(no_token.body.contains("CSRF"));
    let wrong = post(
        gw.web,
        "/api/meters",
        "0123456789abcdef0123456789abcdef",
        &body,
    )
    .await;
    assert_eq!(wrong.status, 403);
    let cross_site = http(
        gw.web,
        "POST",
        "/api/meters",
        &[("X-CSRF-Token", &token), ("Sec-Fetch-Site", "cross-site")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(cross_site.status, 403);
    // With the token the request reaches the gateway, which answers about the meter.
    let right = post(gw.web, "/api/meters", &token, &body).await;
    assert_eq!(right.status, 422, "{}", right.body);
    assert_eq!(
        right.json()["error"],
        "meter 61070071 has not been heard (yet)"
    );

    let big = vec![b' '; 64 * 1024];
    let too_big = http(
        gw.web,
        "POST",
        "/api/check-key",
        &[("X-CSRF-Token", &token)],
        &big,
    )
    .await;
    assert_eq!(too_big.status, 413);
    gw.stop().await;
}

#[tokio::test]
async fn heard_meter_is_added_with_a_checked_key_live_and_saved_owner_only() {
    let meters = "meters:\n  - name: Cold water\n    address: \"76348799\"\n    driver: auto\n";
    let gw = start(
        "add",
        &[KAMWATER, ENCRYPTED],
        meters,
        "web:\n  bind: \"127.0.0.1:0\"",
    )
    .await;
    let view = overview_until(gw.web, |v| {
        v["heard"]
            .as_array()
            .is_some_and(|h| h.iter().any(|m| m["id"] == "61070071"))
    })
    .await;
    let heard = view["heard"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "61070071")
        .unwrap();
    assert_eq!(heard["encryption"], "needs a key");
    assert_eq!(heard["manufacturer"], "AAA");
    assert_eq!(heard["medium"], "water");
    assert_eq!(heard["driver"], "aventieswm");
    assert!(heard["times"].as_u64().unwrap() >= 1);
    assert_eq!(heard["readings"], serde_json::json!([]));
    // The configured meter is not "heard nearby".
    assert!(!view["heard"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "76348799"));

    let token = csrf(gw.web).await;
    let wrong = post(
        gw.web,
        "/api/check-key",
        &token,
        &serde_json::json!({"id": "61070071", "key": WRONG_KEY}),
    )
    .await;
    assert_eq!(wrong.status, 422);
    let error = wrong.json()["error"].as_str().unwrap().to_string();
    assert!(error.starts_with("wrong key"), "{error}");
    let not_hex = post(
        gw.web,
        "/api/check-key",
        &token,
        &serde_json::json!({"id": "61070071", "key": "secret"}),
    )
    .await;
    assert_eq!(
        not_hex.json()["error"],
        "a key is 32 hex digits (16 for Diehl PRIOS)"
    );
    let works = post(
        gw.web,
        "/api/check-key",
        &token,
        &serde_json::json!({"id": "61070071", "key": KEY}),
    )
    .await;
    assert_eq!(works.status, 200, "{}", works.body);
    assert!(
        works.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("key works: total_m3 466.472"),
        "{}",
        works.body
    );

    let add = |key: &'static str| serde_json::json!({"id": "61070071", "name": "Hot water", "driver": "aventieswm", "key": key});
    // A name the configuration would refuse at the next start is refused now.
    let slash = serde_json::json!({"id": "61070071", "name": "Flat 1/2", "driver": "aventieswm", "key": KEY});
    let slash = post(gw.web, "/api/meters", &token, &slash).await;
    assert_eq!(slash.status, 422);
    assert!(
        slash.json()["error"]
            .as_str()
            .unwrap()
            .contains("`/` cannot be part of a name"),
        "{}",
        slash.body
    );
    let refused = post(gw.web, "/api/meters", &token, &add(WRONG_KEY)).await;
    assert_eq!(refused.status, 422);
    let added = post(gw.web, "/api/meters", &token, &add(KEY)).await;
    assert_eq!(added.status, 200, "{}", added.body);
    // Live: its reading is on the overview without a restart.
    let view = overview_until(gw.web, |v| meter(v, "Hot water").is_some()).await;
    let hot = meter(&view, "Hot water").unwrap();
    assert_eq!(reading(hot, "total_m3").as_deref(), Some("466.472"));
    assert_eq!(hot["driver"], "aventieswm");
    assert!(!view["heard"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "61070071"));
    let again = post(gw.web, "/api/meters", &token, &add(KEY)).await;
    assert_eq!(again.status, 422);

    // Saved owner-only, and merged into the configuration at the next start.
    let saved = gw.dir.join("state").join(meterbridge::web::added::FILE);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let mut config = parse_with(
        &format!("state_dir: \"{}\"\n", gw.dir.join("state").display()),
        "again.yaml",
        &ValidateOptions::with_built_in_drivers(),
    )
    .unwrap()
    .0;
    let n = meterbridge::web::added::merge(&mut config, &ValidateOptions::with_built_in_drivers())
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(config.meters[0].name, "Hot water");
    assert_eq!(config.meters[0].driver, "aventieswm");

    // The key went in, and never comes out: not in the page, the view, the events or errors.
    for path in ["/", "/api/overview", "/app.js"] {
        let r = get(gw.web, path).await;
        assert!(
            !r.body.to_ascii_uppercase().contains(KEY),
            "{path} shows the key"
        );
    }
    let events = first_event(gw.web).await;
    assert!(events.contains("Hot water") && !events.to_ascii_uppercase().contains(KEY));
    assert!(!refused.body.to_ascii_uppercase().contains(WRONG_KEY));
    gw.stop().await;
}

/// An iPERL (id 12345678) whose telegram carries a text record (VIF FD 11, customer) that
/// is markup: `<img src=x onerror="document.title='pwned'">`, sent last character first.
const TEXT_RECORD: &str = "4644AE4C7856341268077A360000002F2F0413181E00000DFD112C3E222764656E7770273D656C7469742E746E656D75636F64223D726F7272656E6F20783D63727320676D693C";

#[tokio::test]
async fn meter_page_explains_its_last_telegrams_and_shows_no_key() {
    let meters = "meters:\n  - name: Cold water\n    address: \"76348799\"\n    driver: auto\n  - name: Text meter\n    address: \"12345678\"\n    driver: auto\n";
    let gw = start(
        "meterpage",
        &[KAMWATER, ENCRYPTED, TEXT_RECORD],
        meters,
        "web:\n  bind: \"127.0.0.1:0\"",
    )
    .await;
    overview_until(gw.web, |v| {
        heard(v, "61070071").is_some()
            && meter(v, "Text meter").is_some_and(|m| m["last_seen"].is_u64())
            && meter(v, "Cold water").is_some_and(|m| m["last_seen"].is_u64())
    })
    .await;

    let cold = get(gw.web, "/api/meter?slug=cold_water").await;
    assert_eq!(cold.status, 200, "{}", cold.body);
    let cold = cold.json();
    assert_eq!(cold["name"], "Cold water");
    assert_eq!(cold["source"], "configuration");
    assert_eq!(cold["driver"], "kamwater");
    assert!(cold["fields"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f[0] == "total_m3" && f[1] == "6.408"));
    let t = &cold["telegrams"][0];
    assert_eq!(t["hex"], KAMWATER);
    assert_eq!(t["via"], "stick");
    // The explanation is what `decode --format json --driver auto` prints.
    let expected: Value = {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_meterbridge"))
            .args([
                "decode", "--format", "json", "--driver", "kamwater", KAMWATER,
            ])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(t["explained"], expected);
    assert_eq!(t["explained"]["ell"]["ci"], "8D", "{}", t["explained"]);
    assert_eq!(t["explained"]["fields"]["total_m3"], 6.408);

    // The text record comes back as data, exactly as sent.
    let text = get(gw.web, "/api/meter?slug=text_meter").await.json();
    let records = text["telegrams"][0]["explained"]["records"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        records
            .iter()
            .any(|r| r["value"] == "<img src=x onerror=\"document.title='pwned'\">"),
        "{records:?}"
    );

    // A heard encrypted meter: its header and why the rest is not readable.
    let heard_page = get(gw.web, "/api/meter?heard=61070071").await.json();
    assert_eq!(heard_page["kind"], "heard");
    assert_eq!(heard_page["encryption"], "needs a key");
    let explained = &heard_page["telegrams"][0]["explained"];
    assert_eq!(explained["link"]["id"], "61070071");
    assert!(
        explained["error"].as_str().unwrap().contains("key"),
        "{explained}"
    );
    assert!(explained.get("records").is_none());

    // Added with its key: its page decrypts its telegrams and still never shows the key.
    let token = csrf(gw.web).await;
    let added = post(
        gw.web,
        "/api/meters",
        &token,
        &serde_json::json!({"id": "61070071", "name": "Hot water", "driver": "aventieswm", "key": KEY}),
    )
    .await;
    assert_eq!(added.status, 200, "{}", added.body);
    let start = Instant::now();
    let hot = loop {
        let hot = get(gw.web, "/api/meter?slug=hot_water").await;
        assert_eq!(hot.status, 200, "{}", hot.body);
        assert!(
            !hot.body.to_ascii_uppercase().contains(KEY),
            "the key shows"
        );
        let hot = hot.json();
        if hot["telegrams"].as_array().is_some_and(|t| !t.is_empty()) {
            break hot;
        }
        assert!(start.elapsed() < WAIT, "no telegram on the page: {hot}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(hot["source"], "page");
    assert_eq!(hot["key"], "set");
    let explained = &hot["telegrams"][0]["explained"];
    assert_eq!(explained["tpl"]["protection"], "decrypted", "{explained}");
    assert_eq!(explained["fields"]["total_m3"], 466.472);

    for bad in ["/api/meter?slug=nobody", "/api/meter?heard=99999999"] {
        let r = get(gw.web, bad).await;
        assert_eq!(r.status, 404, "{bad}: {}", r.body);
    }
    assert_eq!(get(gw.web, "/api/meter?slug=a%3Cb").await.status, 400);
    gw.stop().await;
}

#[tokio::test]
async fn meters_added_on_the_page_are_changed_and_removed_there_and_others_are_not() {
    let meters = "meters:\n  - name: Cold water\n    address: \"76348799\"\n    driver: auto\n";
    let gw = start(
        "edit",
        &[KAMWATER, ENCRYPTED],
        meters,
        "web:\n  bind: \"127.0.0.1:0\"",
    )
    .await;
    overview_until(gw.web, |v| heard(v, "61070071").is_some()).await;
    let token = csrf(gw.web).await;
    let added = post(
        gw.web,
        "/api/meters",
        &token,
        &serde_json::json!({"id": "61070071", "name": "Hot water", "driver": "aventieswm", "key": KEY}),
    )
    .await;
    assert_eq!(added.status, 200, "{}", added.body);
    let saved = gw.dir.join("state").join(meterbridge::web::added::FILE);
    let saved_text = || std::fs::read_to_string(&saved).unwrap();

    // The configuration file's meters are read-only here.
    let edit = |slug: &str, name: &str, key: &str| serde_json::json!({"slug": slug, "name": name, "driver": "auto", "key": key});
    let refused = post(
        gw.web,
        "/api/meter/edit",
        &token,
        &edit("cold_water", "Cold", ""),
    )
    .await;
    assert_eq!(refused.status, 422);
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("comes from the configuration file"),
        "{}",
        refused.body
    );
    let refused = post(
        gw.web,
        "/api/meter/remove",
        &token,
        &serde_json::json!({"slug": "cold_water"}),
    )
    .await;
    assert_eq!(refused.status, 422);
    assert_eq!(
        get(gw.web, "/api/meter?slug=cold_water").await.json()["source"],
        "configuration"
    );

    // A wrong key is tried on its last telegram and refused; nothing is saved.
    let before = saved_text();
    let wrong = post(
        gw.web,
        "/api/meter/edit",
        &token,
        &edit("hot_water", "Hot water", WRONG_KEY),
    )
    .await;
    assert_eq!(wrong.status, 422);
    assert!(wrong.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("wrong key"));
    assert_eq!(saved_text(), before);

    // Renamed, driver named, key kept: live at once and saved (owner-only) for restarts.
    let renamed = post(
        gw.web,
        "/api/meter/edit",
        &token,
        &serde_json::json!({"slug": "hot_water", "name": "Hot tap", "driver": "aventieswm", "key": ""}),
    )
    .await;
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    assert_eq!(renamed.json()["slug"], "hot_tap");
    let view = overview_until(gw.web, |v| {
        meter(v, "Hot tap").is_some_and(|m| reading(m, "total_m3").is_some())
    })
    .await;
    assert!(meter(&view, "Hot water").is_none());
    assert_eq!(
        reading(meter(&view, "Hot tap").unwrap(), "total_m3").as_deref(),
        Some("466.472")
    );
    let text = saved_text();
    assert!(
        text.contains("\"Hot tap\"") && !text.contains("Hot water"),
        "{text}"
    );
    assert!(text.contains(KEY), "the key is kept");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let page = get(gw.web, "/api/meter?slug=hot_tap").await;
    assert!(!page.body.to_ascii_uppercase().contains(KEY));
    assert_eq!(page.json()["source"], "page");
    assert!(!renamed.body.to_ascii_uppercase().contains(KEY));

    // Removed: gone from the overview and the file; heard again, needing its key again.
    let removed = post(
        gw.web,
        "/api/meter/remove",
        &token,
        &serde_json::json!({"slug": "hot_tap"}),
    )
    .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    let view = overview_until(gw.web, |v| {
        meter(v, "Hot tap").is_none()
            && heard(v, "61070071").is_some_and(|h| h["encryption"] == "needs a key")
    })
    .await;
    assert!(meter(&view, "Cold water").is_some());
    assert!(!saved_text().contains("Hot tap"));
    let mut config = parse_with(
        &format!("state_dir: \"{}\"\n", gw.dir.join("state").display()),
        "again.yaml",
        &ValidateOptions::with_built_in_drivers(),
    )
    .unwrap()
    .0;
    let n = meterbridge::web::added::merge(&mut config, &ValidateOptions::with_built_in_drivers())
        .unwrap();
    assert_eq!(n, 0);
    gw.stop().await;
}

/// The demo's neighbour meter (mode 5, made and encrypted by `sim::demo`): `count` of its
/// telegrams a minute apart, as hex (all different, so none is dropped as a repeat).
fn neighbour_telegrams(count: u8) -> Vec<String> {
    let world = meterbridge::sim::demo::DemoWorld::new().unwrap();
    let meter = world.wireless.last().unwrap();
    (1..=count)
        .map(|acc| {
            let bytes = meter
                .telegram(Duration::from_secs(60 * u64::from(acc)), acc)
                .unwrap();
            bytes.iter().map(|b| format!("{b:02X}")).collect()
        })
        .collect()
}

fn heard<'v>(view: &'v Value, id: &str) -> Option<&'v Value> {
    view["heard"].as_array()?.iter().find(|m| m["id"] == id)
}

#[tokio::test]
async fn key_wrong_is_shown_for_heard_and_configured_meters() {
    let neighbour = neighbour_telegrams(12);
    let mut telegrams = vec![ENCRYPTED];
    telegrams.extend(neighbour.iter().map(String::as_str));
    let id = format!("{:08}", meterbridge::sim::demo::NEIGHBOUR_ID);
    // Hot water is configured with a key that is not its own.
    let meters = format!(
        "meters:\n  - name: Hot water\n    address: \"61070071\"\n    driver: aventieswm\n    key: {WRONG_KEY}\n"
    );
    let gw = start(
        "keywrong",
        &telegrams,
        &meters,
        "web:\n  bind: \"127.0.0.1:0\"",
    )
    .await;
    let view = overview_until(gw.web, |v| {
        heard(v, &id).is_some() && meter(v, "Hot water").is_some_and(|m| m["errors"] != 0)
    })
    .await;
    assert_eq!(heard(&view, &id).unwrap()["encryption"], "needs a key");
    assert_eq!(heard(&view, &id).unwrap()["driver"], "iperl");
    let hot = meter(&view, "Hot water").unwrap();
    assert_eq!(hot["key_wrong"], true, "{hot}");
    assert!(hot["last_error"].as_str().unwrap().contains("key"), "{hot}");

    // A key tried on the page that does not open the heard meter: "key wrong", also after its
    // next telegrams; the right key tried: back to "needs a key".
    let token = csrf(gw.web).await;
    let tried = post(
        gw.web,
        "/api/check-key",
        &token,
        &serde_json::json!({"id": id, "key": KEY}),
    )
    .await;
    assert_eq!(tried.status, 422);
    let times = heard(&view, &id).unwrap()["times"].as_u64().unwrap();
    let view = overview_until(gw.web, |v| {
        heard(v, &id).is_some_and(|h| h["times"].as_u64().unwrap() > times + 1)
    })
    .await;
    assert_eq!(heard(&view, &id).unwrap()["encryption"], "key wrong");
    let right = post(
        gw.web,
        "/api/check-key",
        &token,
        &serde_json::json!({"id": id, "key": meterbridge::sim::demo::NEIGHBOUR_KEY}),
    )
    .await;
    assert_eq!(right.status, 200, "{}", right.body);
    assert!(
        right.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("key works: total_m3 48.2"),
        "{}",
        right.body
    );
    let view = overview_until(gw.web, |v| {
        heard(v, &id).is_some_and(|h| h["encryption"] == "needs a key")
    })
    .await;
    assert_eq!(meter(&view, "Hot water").unwrap()["key_wrong"], true);
    gw.stop().await;
}

/// The first server-sent event of `/events`.
async fn first_event(web: SocketAddr) -> String {
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(web).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            s,
            "GET /events HTTP/1.1\r\nHost: {web}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 8192];
        while !String::from_utf8_lossy(&seen).contains("\n\n")
            || !String::from_utf8_lossy(&seen).contains("data:")
        {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the event stream closed");
            seen.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&seen).to_string();
        assert!(text.contains("content-type: text/event-stream"), "{text}");
        assert!(text.contains("event: view"), "{text}");
        text
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn ingress_prefix_allowed_addresses_and_passwords() {
    let gw = start("ingress", &[KAMWATER], "", "web:\n  bind: \"127.0.0.1:0\"").await;
    let page = http(
        gw.web,
        "GET",
        "/",
        &[("X-Ingress-Path", "/api/hassio_ingress/Tok3n_x")],
        b"",
    )
    .await;
    assert!(
        page.body
            .contains("<base href=\"/api/hassio_ingress/Tok3n_x/\">"),
        "{}",
        page.body
    );
    // Everything the page loads is relative, so it works under the prefix.
    for asset in ["href=\"style.css\"", "src=\"app.js\""] {
        assert!(page.body.contains(asset));
    }
    let js = get(gw.web, "/app.js").await.body;
    for url in ["\"events\"", "\"api/check-key\"", "\"api/meters\""] {
        assert!(js.contains(url), "{url}");
    }
    assert!(!js.contains("\"/"), "app.js has an absolute URL");
    let bad = http(
        gw.web,
        "GET",
        "/",
        &[("X-Ingress-Path", "/x\"><script>alert(1)</script>")],
        b"",
    )
    .await;
    assert!(!bad.body.contains("<base") && !bad.body.contains("alert"));
    // Without a password, only an address or localhost as Host: a rebinding name is refused.
    let port = gw.web.port().to_string();
    let rebound = format!("evil.example:{port}");
    let by_name = http(gw.web, "GET", "/api/overview", &[("Host", &rebound)], b"").await;
    assert_eq!(by_name.status, 403, "{}", by_name.body);
    let localhost = format!("localhost:{port}");
    let by_localhost = http(gw.web, "GET", "/api/overview", &[("Host", &localhost)], b"").await;
    assert_eq!(by_localhost.status, 200);
    gw.stop().await;

    // Only the ingress proxy's address: a request from anywhere else is refused.
    let gw = start(
        "allow",
        &[KAMWATER],
        "",
        "web:\n  bind: \"127.0.0.1:0\"\n  allow_from: [\"172.30.32.2\"]",
    )
    .await;
    assert_eq!(get(gw.web, "/").await.status, 403);
    assert_eq!(get(gw.web, "/api/overview").await.status, 403);
    gw.stop().await;

    let gw = start(
        "password",
        &[KAMWATER],
        "",
        "web:\n  bind: \"127.0.0.1:0\"\n  password: \"s3cret\"\n  token: \"0123456789abcdef0123\"",
    )
    .await;
    let none = get(gw.web, "/api/overview").await;
    assert_eq!(none.status, 401);
    assert!(none
        .header("www-authenticate")
        .unwrap()
        .starts_with("Basic"));
    // "user:wrong" and "anyone:s3cret" in base64.
    let wrong = http(
        gw.web,
        "GET",
        "/api/overview",
        &[("Authorization", "Basic dXNlcjp3cm9uZw==")],
        b"",
    )
    .await;
    assert_eq!(wrong.status, 401);
    let right = http(
        gw.web,
        "GET",
        "/api/overview",
        &[("Authorization", "Basic YW55b25lOnMzY3JldA==")],
        b"",
    )
    .await;
    assert_eq!(right.status, 200);
    let bearer = http(
        gw.web,
        "GET",
        "/api/overview",
        &[("Authorization", "Bearer 0123456789abcdef0123")],
        b"",
    )
    .await;
    assert_eq!(bearer.status, 200);
    for r in [&none, &wrong, &right, &bearer] {
        assert!(!r.body.contains("s3cret") && !r.body.contains("0123456789abcdef0123"));
    }
    gw.stop().await;
}

fn config_error(yaml: &str) -> String {
    match parse_with(yaml, "web.yaml", &ValidateOptions::with_built_in_drivers()) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_gateway_devices_link_is_the_public_url_or_a_bind_a_browser_can_open() {
    let web = |yaml: &str| {
        parse_with(yaml, "web.yaml", &ValidateOptions::with_built_in_drivers())
            .unwrap_or_else(|e| panic!("{e}"))
            .0
            .web
            .unwrap()
    };
    let loopback = web("web:\n  bind: \"127.0.0.1:8099\"\n");
    assert_eq!(
        loopback.configuration_url(None).as_deref(),
        Some("http://127.0.0.1:8099/")
    );
    // Any free port: the one the listener got.
    let any = web("web:\n  bind: \"127.0.0.1:0\"\n");
    assert_eq!(any.configuration_url(None), None);
    assert_eq!(
        any.configuration_url(Some("127.0.0.1:40123".parse().unwrap()))
            .as_deref(),
        Some("http://127.0.0.1:40123/")
    );
    // A wildcard names no host; the add-on gives its ingress link instead.
    let wildcard = web("web:\n  bind: \"0.0.0.0:8099\"\n  allow_from: [\"172.30.32.2\"]\n");
    assert_eq!(
        wildcard.configuration_url(Some("0.0.0.0:8099".parse().unwrap())),
        None
    );
    let ingress = web("web:\n  bind: \"0.0.0.0:8099\"\n  allow_from: [\"172.30.32.2\"]\n  public_url: \"homeassistant://hassio/ingress/local_meterbridge\"\n");
    assert_eq!(
        ingress.configuration_url(None).as_deref(),
        Some("homeassistant://hassio/ingress/local_meterbridge")
    );
    let e = config_error("web:\n  public_url: \"javascript:alert(1)\"\n");
    assert!(e.contains("web.yaml:2:15"), "{e}");
    assert!(
        e.contains("is not an http://, https:// or homeassistant:// address"),
        "{e}"
    );
}

#[test]
fn a_page_open_to_the_network_needs_a_password() {
    let e = config_error("web:\n  bind: \"0.0.0.0:8099\"\n");
    assert!(e.contains("web.yaml:2:9"), "{e}");
    assert!(
        e.contains("would be open to the network without a password"),
        "{e}"
    );
    for ok in [
        "web:\n  bind: \"0.0.0.0:8099\"\n  password: \"pw\"\n",
        "web:\n  bind: \"0.0.0.0:8099\"\n  allow_from: [\"172.30.32.2\"]\n",
        "web:\n  bind: 8099\n",
        "web: true\n",
    ] {
        let (c, _) = parse_with(ok, "web.yaml", &ValidateOptions::with_built_in_drivers())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.web.is_some());
    }
    let (c, _) = parse_with(
        "web: true\n",
        "w.yaml",
        &ValidateOptions::with_built_in_drivers(),
    )
    .unwrap();
    assert_eq!(c.web.unwrap().bind, "127.0.0.1:8099");
    let (c, _) = parse_with(
        "state_dir: x\n",
        "w.yaml",
        &ValidateOptions::with_built_in_drivers(),
    )
    .unwrap();
    assert!(c.web.is_none(), "no port is opened unasked");
    let e = config_error("web:\n  bind: \"nowhere\"\n");
    assert!(
        e.contains("web.yaml:2:9") && e.contains("is not an IP address and port"),
        "{e}"
    );
    let e = config_error("web:\n  token: \"short\"\n");
    assert!(e.contains("shorter than 16"), "{e}");
    let e = config_error("web:\n  allow_from: [\"proxy\"]\n");
    assert!(e.contains("web.allow_from[0]"), "{e}");
    let e = config_error("web:\n  bnid: 1\n");
    assert!(e.contains("bind"), "{e}");
}
