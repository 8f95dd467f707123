//! The web page in a real browser: Debian's chromium driven through chromedriver's WebDriver
//! HTTP API. The demo's overview lists its meters; on a gateway that hears an encrypted meter
//! it has no key for, the heard page lists it, Add refuses a wrong key and takes the right one,
//! the meter shows on the overview with its reading and is still there after a restart; markup
//! in a meter name stays text. Skipped, with a notice, where chromium or chromedriver is not
//! installed (`.ci/run` installs both).

#[path = "support/webdriver.rs"]
mod webdriver;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use serde_json::json;
use webdriver::{browser, Browser, Proc, WAIT};

const KAMWATER: &str =
    "2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713";
const ENCRYPTED: &str = "76442104710007612507727100076121042507B5006005E2E95A3C2A1279A5415E6732679B43369FD5FDDDD783EEEBB48236D34E7C94AF0A18A5FDA5F7D64111EB42D4D891622139F2952F9D12A20088DFA4CF8123871123EE1F6C1DCEA414879DDB4E05E508F1826D7EFBA6964DF804C9261EA23BBF03";
const KEY: &str = "A004EB23329A477F1DD2D7820B56EB3D";
const WRONG_KEY: &str = "00112233445566778899AABBCCDDEEFF";
/// If the page ever put this name in as markup, the browser would set the title (the image
/// fails to load and its handler runs; the script element runs as parsed).
const EVIL_NAME: &str =
    "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned' & q";

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
            // A log line: timestamp, level and module come first.
            if let Some((_, url)) = line.split_once("web page: ") {
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
