//! The web page in a real browser: Debian's chromium driven through chromedriver's WebDriver
//! HTTP API. The demo's overview lists its meters; on a gateway that hears an encrypted meter
//! it has no key for, the heard page lists it, Add refuses a wrong key and takes the right one,
//! the meter shows on the overview with its reading and is still there after a restart; markup
//! in a meter name stays text. Skipped, with a notice, where chromium or chromedriver is not
//! installed (`.ci/run` installs both).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const KAMWATER: &str =
    "2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713";
const ENCRYPTED: &str = "76442104710007612507727100076121042507B5006005E2E95A3C2A1279A5415E6732679B43369FD5FDDDD783EEEBB48236D34E7C94AF0A18A5FDA5F7D64111EB42D4D891622139F2952F9D12A20088DFA4CF8123871123EE1F6C1DCEA414879DDB4E05E508F1826D7EFBA6964DF804C9261EA23BBF03";
const KEY: &str = "A004EB23329A477F1DD2D7820B56EB3D";
const WRONG_KEY: &str = "00112233445566778899AABBCCDDEEFF";
/// If the page ever put this name in as markup, the browser would set the title (the image
/// fails to load and its handler runs; the script element runs as parsed).
const EVIL_NAME: &str =
    "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned' & q";
const WAIT: Duration = Duration::from_secs(20);

fn find(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// chromium and chromedriver, or `None` with a notice.
fn browser() -> Option<(PathBuf, PathBuf)> {
    match (find("chromium"), find("chromedriver")) {
        (Some(c), Some(d)) => Some((c, d)),
        _ => {
            eprintln!("notice: chromium or chromedriver not installed; the browser test is skipped (apt-get install chromium chromium-driver)");
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Ends the child when dropped, so a failed assertion leaves no process behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain HTTP/1.1 exchange with chromedriver (one connection per command).
fn http_json(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // chromedriver keeps the connection open whatever the request says: read the head, then
    // the body by its length (or its chunks).
    let mut reader = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            reader.read_exact(&mut body).unwrap();
        }
        None if lower.contains("transfer-encoding: chunked") => loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).unwrap();
            body.extend_from_slice(&chunk[..n]);
        },
        None => {
            reader.read_to_end(&mut body).unwrap();
        }
    }
    let rest = String::from_utf8_lossy(&body).to_string();
    let text = format!("{head}\n{rest}");
    serde_json::from_str(&rest).unwrap_or_else(|e| panic!("chromedriver: {e}: {text}"))
}

struct Browser {
    port: u16,
    session: String,
    _driver: Proc,
    profile: PathBuf,
}

impl Browser {
    fn start(chromium: &Path, chromedriver: &Path, profile: PathBuf) -> Browser {
        let port = free_port();
        let driver = Proc(
            Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < WAIT, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&profile);
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": chromium, "args": args,
        }}}});
        let answer = http_json(port, "POST", "/session", Some(&caps));
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_string();
        Browser {
            port,
            session,
            _driver: driver,
            profile,
        }
    }

    fn go(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        http_json(self.port, "POST", &path, Some(&json!({"url": url})));
    }

    /// Runs a script in the page and returns its value.
    fn js(&self, script: &str, args: Value) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        let answer = http_json(
            self.port,
            "POST",
            &path,
            Some(&json!({"script": script, "args": args})),
        );
        answer["value"].clone()
    }

    /// With `MB_SCREENSHOTS=DIR` set, saves the page at phone and desktop size as
    /// `DIR/<name>-phone.png` and `DIR/<name>-desktop.png` (the pictures in docs/web-ui.md).
    fn screenshots(&self, name: &str) {
        let Some(dir) = std::env::var_os("MB_SCREENSHOTS") else {
            return;
        };
        for (size, width, height) in [("phone", 390, 844), ("desktop", 1280, 800)] {
            let rect = format!("/session/{}/window/rect", self.session);
            http_json(
                self.port,
                "POST",
                &rect,
                Some(&json!({"width": width, "height": height})),
            );
            std::thread::sleep(Duration::from_millis(300));
            let path = format!("/session/{}/screenshot", self.session);
            let png = http_json(self.port, "GET", &path, None);
            let png = base64(png["value"].as_str().unwrap());
            std::fs::write(Path::new(&dir).join(format!("{name}-{size}.png")), png).unwrap();
        }
        let rect = format!("/session/{}/window/rect", self.session);
        http_json(
            self.port,
            "POST",
            &rect,
            Some(&json!({"width": 1280, "height": 900})),
        );
    }

    /// Waits until the script returns something other than null/false, and returns it.
    fn until(&self, what: &str, script: &str, args: Value) -> Value {
        let start = Instant::now();
        loop {
            let v = self.js(script, args.clone());
            if !v.is_null() && v != Value::Bool(false) {
                return v;
            }
            assert!(
                start.elapsed() < WAIT,
                "{what}: never true; page: {}",
                self.js("return document.body.innerText", json!([]))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = std::panic::catch_unwind(|| http_json(self.port, "DELETE", &path, None));
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn base64(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Starts a meterbridge command and waits for the page's address in its log.
fn start_meterbridge(args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meterbridge"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("meterbridge: {line}");
            if let Some(url) = line.strip_prefix("web page: ") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(WAIT)
        .expect("meterbridge never printed the web page's address");
    (Proc(child), url)
}

#[test]
fn demo_overview_lists_its_meters() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let (_demo, url) = start_meterbridge(&["demo", "--duration", "40", "--web", "127.0.0.1:0"]);
    let profile =
        std::env::temp_dir().join(format!("meterbridge-chromium-demo-{}", std::process::id()));
    let b = Browser::start(&chromium, &chromedriver, profile);
    b.go(&url);
    let rows = b.until(
        "all six demo meters with readings",
        "const rows = Array.from(document.querySelectorAll('#meters tbody tr')).map(r => r.innerText);
         return rows.length === 6 && rows.every(r => /\\d s ago|min ago/.test(r)) ? rows : null",
        json!([]),
    );
    let rows: Vec<String> = serde_json::from_value(rows).unwrap();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}: {rows:?}"))
            .clone()
    };
    assert!(row("Cold water").contains("6.408"), "{rows:?}");
    assert!(row("Hot water").contains("466.472"), "{rows:?}");
    assert!(row("Heat flat 1").contains("34510"), "{rows:?}");
    let links = b.js(
        "return document.querySelector('#links tbody').innerText",
        json!([]),
    );
    let links = links.as_str().unwrap();
    assert!(
        links.contains("demo-stick") && links.contains("demo-bus"),
        "{links}"
    );
    assert_eq!(
        b.js(
            "return document.getElementById('status').textContent",
            json!([])
        ),
        "live"
    );
}

fn write_config(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let telegrams = dir.join("telegrams.hex");
    std::fs::write(&telegrams, format!("{KAMWATER}\n{ENCRYPTED}\n")).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: \"{state}\"\nreceivers:\n  - name: stick\n    type: simulated\n    stick: im871a\n    telegrams: \"{t}\"\n    interval: 300ms\nmeters:\n  - name: {name}\n    address: \"76348799\"\n    driver: auto\nweb:\n  bind: \"127.0.0.1:0\"\n",
            state = dir.join("state").display(),
            t = telegrams.display(),
            name = serde_json::to_string(EVIL_NAME).unwrap(),
        ),
    )
    .unwrap();
    config
}

#[test]
fn heard_meter_is_added_in_the_browser_and_survives_a_restart() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("meterbridge-browser-add-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = write_config(&dir);
    let config_arg = config.to_str().unwrap();
    let (gateway, url) = start_meterbridge(&["run", "--config", config_arg, "--print", "none"]);
    let b = Browser::start(&chromium, &chromedriver, dir.join("profile"));
    b.go(&url);

    // The name with markup is shown as text, and nothing in it ran.
    b.until(
        "the configured meter's reading",
        "return Array.from(document.querySelectorAll('#meters tbody tr')).some(r => r.innerText.includes('6.408'))",
        json!([]),
    );
    let name = b.js(
        "return document.querySelector('#meters td.name').textContent",
        json!([]),
    );
    assert_eq!(name, EVIL_NAME);
    assert_eq!(b.js("return document.title", json!([])), "meterbridge");
    assert_eq!(
        b.js(
            "return document.querySelectorAll('#meters img, #meters script').length",
            json!([])
        ),
        0
    );

    // Heard nearby: the encrypted meter, with the driver detection suggests.
    b.js("location.hash = '#heard'", json!([]));
    let row = b.until(
        "the encrypted meter on the heard page",
        "const r = Array.from(document.querySelectorAll('#heard-list tbody tr')).find(r => r.innerText.includes('61070071'));
         return r && !document.getElementById('heard').hidden ? r.innerText : null",
        json!([]),
    );
    b.screenshots("heard");
    let row = row.as_str().unwrap();
    assert!(
        row.contains("needs a key") && row.contains("aventieswm"),
        "{row}"
    );
    b.js(
        "Array.from(document.querySelectorAll('#heard-list tbody tr')).find(r => r.innerText.includes('61070071')).querySelector('button').click()",
        json!([]),
    );
    let fill = "const f = document.getElementById('add-form'); f.elements.name.value = arguments[0]; f.elements.key.value = arguments[1];";
    let result = "const p = document.getElementById('add-result'); return p.textContent ? p.textContent : null";
    assert_eq!(
        b.js(
            "return document.getElementById('add-form').elements.driver.value",
            json!([])
        ),
        "aventieswm"
    );
    b.js(
        &format!("{fill} document.getElementById('add-check').click()"),
        json!(["Hot water", WRONG_KEY]),
    );
    let said = b.until("the wrong key refused", result, json!([]));
    assert!(said.as_str().unwrap().starts_with("wrong key"), "{said}");
    b.screenshots("add-wrong-key");
    b.js(&format!("{fill} document.getElementById('add-result').textContent = ''; document.querySelector('#add-form button[type=submit]').click()"), json!(["Hot water", WRONG_KEY]));
    let said = b.until("Add with the wrong key refused", result, json!([]));
    assert!(said.as_str().unwrap().starts_with("wrong key"), "{said}");
    b.js(&format!("{fill} document.getElementById('add-result').textContent = ''; document.querySelector('#add-form button[type=submit]').click()"), json!(["Hot water", KEY]));
    let said = b.until("Add with the right key", result, json!([]));
    assert_eq!(said, "added Hot water; key works: total_m3 466.472, consumption_at_set_date_1_m3 465.96, consumption_at_set_date_2_m3 458.88, consumption_at_set_date_3_m3 449.65");

    // On the overview with its reading, without a restart.
    b.js("location.hash = '#overview'", json!([]));
    let hot = "const r = Array.from(document.querySelectorAll('#meters tbody tr')).find(r => r.innerText.startsWith('Hot water'));
               return r && r.innerText.includes('466.472') && !document.getElementById('overview').hidden ? r.innerText : null";
    b.until("the added meter on the overview", hot, json!([]));
    b.screenshots("overview");
    // The key was typed in, and the page never shows it back.
    let page = b.js("return document.documentElement.outerHTML", json!([]));
    assert!(!page.as_str().unwrap().to_ascii_uppercase().contains(KEY));
    assert!(
        !std::fs::read_to_string(&config)
            .unwrap()
            .contains("Hot water"),
        "the user's file is never rewritten"
    );

    // Restarted: the added meter is still there, read with its saved key.
    drop(gateway);
    let (_gateway, url) = start_meterbridge(&["run", "--config", config_arg, "--print", "none"]);
    b.go(&url);
    b.until("the added meter after a restart", hot, json!([]));
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
