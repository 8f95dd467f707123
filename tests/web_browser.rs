//! The web page in a real browser: Debian's chromium driven through chromedriver's WebDriver
//! HTTP API. The demo's overview lists its meters, and the neighbour's encrypted meter it
//! hears is added with the key it prints and kept across a restart. On a gateway that hears
//! an encrypted meter it has no key for, the heard page lists it, Add refuses a wrong key and
//! takes the right one, the meter shows on the overview with its reading and is still there
//! after a restart; markup in a meter name stays text. Skipped, with a notice, where chromium
//! or chromedriver is not installed (`.ci/run` installs both).

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
/// An iPERL (id 12345678) with a text record that is markup (VIF FD 11, last character first).
const TEXT_RECORD: &str = "4644AE4C7856341268077A360000002F2F0413181E00000DFD112C3E222764656E7770273D656C7469742E746E656D75636F64223D726F7272656E6F20783D63727320676D693C";
const EVIL_TEXT: &str = "<img src=x onerror=\"document.title='pwned'\">";
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

const NEIGHBOUR: &str = "41235813";
const NEIGHBOUR_KEY: &str = "5A1F0C9E22D84B7391E6A0F43C7B8D15";

/// The first must-show, with the demo as a user runs it: its overview lists its
/// meters; the heard page lists the neighbour's encrypted meter; Add refuses a wrong key and
/// takes the one the demo printed; the meter is on the overview with its reading, and still
/// there after the demo is started again with the same `--state-dir`.
#[test]
fn demo_neighbour_is_added_with_the_printed_key_and_kept_across_a_restart() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("meterbridge-browser-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = dir.join("state");
    let state_arg = state.to_str().unwrap();
    let demo_args = [
        "demo",
        "--duration",
        "300",
        "--web",
        "127.0.0.1:0",
        "--state-dir",
        state_arg,
    ];
    let (demo, url) = start_meterbridge(&demo_args);
    let b = Browser::start(&chromium, &chromedriver, dir.join("profile"));
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
    b.screenshots("overview");
    // The demo's meters count up from their drivers' test telegrams.
    assert!(row("Cold water").contains("6.4"), "{rows:?}");
    assert!(row("Hot water").contains("466.4"), "{rows:?}");
    assert!(row("Heat flat 1").contains("3451"), "{rows:?}");
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

    // Heard nearby: the neighbour's meter, encrypted, with the driver detection suggests.
    b.js("location.hash = '#heard'", json!([]));
    let find_row = format!(
        "Array.from(document.querySelectorAll('#heard-list tbody tr')).find(r => r.innerText.includes('{NEIGHBOUR}'))"
    );
    let heard = b.until(
        "the neighbour's meter on the heard page",
        &format!("const r = {find_row}; return r && !document.getElementById('heard').hidden ? r.innerText : null"),
        json!([]),
    );
    b.screenshots("heard");
    let heard = heard.as_str().unwrap();
    assert!(
        heard.contains("needs a key") && heard.contains("iperl"),
        "{heard}"
    );
    b.js(
        &format!("{find_row}.querySelector('button').click()"),
        json!([]),
    );
    assert_eq!(
        b.js(
            "return document.getElementById('add-form').elements.driver.value",
            json!([])
        ),
        "iperl"
    );
    let fill = "const f = document.getElementById('add-form'); f.elements.name.value = arguments[0]; f.elements.key.value = arguments[1]; document.getElementById('add-result').textContent = '';";
    let submit = "document.querySelector('#add-form button[type=submit]').click()";
    let result = "const p = document.getElementById('add-result'); return p.textContent ? p.textContent : null";
    b.js(&format!("{fill} {submit}"), json!(["Neighbour", WRONG_KEY]));
    let said = b.until("Add with a wrong key refused", result, json!([]));
    assert!(said.as_str().unwrap().starts_with("wrong key"), "{said}");
    b.screenshots("add-wrong-key");
    b.js(
        &format!("{fill} {submit}"),
        json!(["Neighbour", NEIGHBOUR_KEY]),
    );
    let said = b.until("Add with the printed key", result, json!([]));
    let said = said.as_str().unwrap();
    assert!(
        said.starts_with("added Neighbour; key works: total_m3 48.2"),
        "{said}"
    );

    // On the overview with its reading, without a restart.
    b.js("location.hash = '#overview'", json!([]));
    let on_overview = "const r = Array.from(document.querySelectorAll('#meters tbody tr')).find(r => r.innerText.startsWith('Neighbour'));
               return r && /iperl/.test(r.innerText) && /48\\.2\\d\\d/.test(r.innerText) && !document.getElementById('overview').hidden ? r.innerText : null";
    b.until("the added meter on the overview", on_overview, json!([]));
    let saved = std::fs::read_to_string(state.join("web-meters.yaml")).unwrap();
    assert!(saved.contains(NEIGHBOUR), "{saved}");

    // Its page: added here, so it can be changed here; renamed, it is saved under the new name.
    b.js("location.hash = '#meter/neighbour'", json!([]));
    b.until(
        "the edit form on the added meter's page",
        "return !document.getElementById('meter').hidden && document.getElementById('edit-form') && document.querySelector('#meter-telegrams table.records') ? true : null",
        json!([]),
    );
    b.screenshots("meter");
    b.js(
        "const f = document.getElementById('edit-form'); f.elements.name.value = 'Neighbour tap'; f.querySelector('button[type=submit]').click()",
        json!([]),
    );
    b.until(
        "the renamed meter's page",
        "const h = document.querySelector('#meter-page h2'); return location.hash === '#meter/neighbour_tap' && h && h.firstChild.textContent === 'Neighbour tap' ? true : null",
        json!([]),
    );
    let saved = std::fs::read_to_string(state.join("web-meters.yaml")).unwrap();
    assert!(saved.contains("Neighbour tap"), "{saved}");
    // A meter from the configuration has no form: read-only.
    b.js("location.hash = '#meter/cold_water'", json!([]));
    let note = b.until(
        "the configured meter's page",
        "const p = document.querySelector('#meter-page p.hint'); return !document.getElementById('meter').hidden && document.querySelector('#meter-page h2') && document.querySelector('#meter-page h2').firstChild.textContent === 'Cold water' && p ? p.textContent : null",
        json!([]),
    );
    assert!(note.as_str().unwrap().contains("read-only"), "{note}");
    assert_eq!(
        b.js("return document.getElementById('edit-form')", json!([])),
        serde_json::Value::Null
    );
    b.js("location.hash = '#overview'", json!([]));

    // The demo started again with the same state folder: the meter is still configured, read
    // with its saved key, and no longer among the unconfigured ones.
    drop(demo);
    let (_demo, url) = start_meterbridge(&demo_args);
    b.go(&url);
    b.until("the added meter after a restart", on_overview, json!([]));
    let rows = b.js(
        "return document.querySelectorAll('#meters tbody tr').length",
        json!([]),
    );
    assert_eq!(rows, 7);
    b.js("location.hash = '#heard'", json!([]));
    b.until(
        "the heard page without the added meter",
        &format!("return !document.getElementById('heard').hidden && !{find_row} ? true : null"),
        json!([]),
    );
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

fn write_config(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let telegrams = dir.join("telegrams.hex");
    std::fs::write(
        &telegrams,
        format!("{KAMWATER}\n{ENCRYPTED}\n{TEXT_RECORD}\n"),
    )
    .unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: \"{state}\"\nreceivers:\n  - name: stick\n    type: simulated\n    stick: im871a\n    telegrams: \"{t}\"\n    interval: 300ms\nmeters:\n  - name: {name}\n    address: \"76348799\"\n    driver: auto\n  - name: Text meter\n    address: \"12345678\"\n    driver: auto\nweb:\n  bind: \"127.0.0.1:0\"\n",
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

    // A meter's page, opened from its name on the overview: its fields and its telegrams
    // explained; the text record that is markup is shown as text, and nothing in it ran.
    b.js(
        "Array.from(document.querySelectorAll('#meters td.name a')).find(a => a.textContent === 'Text meter').click()",
        json!([]),
    );
    let page = b.until(
        "the text meter's page with its explained telegram",
        "const p = document.getElementById('meter');
         return !p.hidden && location.hash === '#meter/text_meter' && p.querySelector('#meter-telegrams table.records') ? p.innerText : null",
        json!([]),
    );
    let page = page.as_str().unwrap();
    assert!(page.contains(EVIL_TEXT), "{page}");
    assert!(
        page.contains("total_m3") && page.contains("7.704"),
        "{page}"
    );
    assert!(
        page.contains("From the configuration file: read-only here"),
        "{page}"
    );
    let report = b.js(
        "return document.querySelector('#meter-telegrams textarea.report').value",
        json!([]),
    );
    let report = report.as_str().unwrap();
    assert!(
        report.contains(&format!("telegram: {TEXT_RECORD}")),
        "{report}"
    );
    assert!(report.contains("driver: iperl"), "{report}");
    assert_eq!(b.js("return document.title", json!([])), "meterbridge");
    assert_eq!(
        b.js(
            "return document.querySelectorAll('#meter img, #meter script').length",
            json!([])
        ),
        0
    );
    b.screenshots("markup-meter");
    // The markup name's page: its name is text too.
    b.js("location.hash = '#overview'", json!([]));
    b.js(
        "document.querySelector('#meters td.name a').click()",
        json!([]),
    );
    let title = b.until(
        "the markup-named meter's page",
        "const h = document.querySelector('#meter-page h2'); return !document.getElementById('meter').hidden && h ? h.firstChild.textContent : null",
        json!([]),
    );
    assert_eq!(title, EVIL_NAME);
    assert_eq!(b.js("return document.title", json!([])), "meterbridge");
    b.js("location.hash = '#overview'", json!([]));

    // Heard nearby: the encrypted meter, with the driver detection suggests.
    b.js("location.hash = '#heard'", json!([]));
    let row = b.until(
        "the encrypted meter on the heard page",
        "const r = Array.from(document.querySelectorAll('#heard-list tbody tr')).find(r => r.innerText.includes('61070071'));
         return r && !document.getElementById('heard').hidden ? r.innerText : null",
        json!([]),
    );
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
    b.screenshots("markup-overview");
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

/// The first wired frame among a driver's test telegrams, as hex.
fn wired_frame_hex(driver: &str) -> String {
    let d = meterbridge::drivers::Registry::built_in_static()
        .get(driver)
        .unwrap();
    let frame = d
        .tests()
        .iter()
        .flat_map(|t| t.telegrams.iter())
        .filter_map(|t| meterbridge::wire::hex::decode(t).ok())
        .find(|f| f[0] == 0x68)
        .unwrap();
    frame.iter().map(|b| format!("{b:02X}")).collect()
}

#[test]
fn wired_scan_finds_a_meter_that_is_added_in_the_browser() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let dir =
        std::env::temp_dir().join(format!("meterbridge-browser-wired-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // A simulated segment: the Kamstrup 403 at primary address 1, the Ultraheat at 2.
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    std::fs::write(corpus.join("1.hex"), wired_frame_hex("kamheat")).unwrap();
    std::fs::write(corpus.join("2.hex"), wired_frame_hex("ultraheat")).unwrap();
    let bus_port = webdriver::free_port();
    let bus = Proc(
        Command::new(env!("CARGO_BIN_EXE_meterbridge"))
            .args(["simulate", "bus", "--corpus"])
            .arg(&corpus)
            .args(["--listen", &format!("127.0.0.1:{bus_port}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: \"{state}\"\nbuses:\n  - name: cellar\n    tcp: \"127.0.0.1:{bus_port}\"\n    polling: 2s\nmeters:\n  - name: Heat\n    bus: cellar\n    address: 1\n    driver: kamheat\nweb:\n  bind: \"127.0.0.1:0\"\n",
            state = dir.join("state").display(),
        ),
    )
    .unwrap();
    let (_gateway, url) = start_meterbridge(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--print",
        "none",
    ]);
    let b = Browser::start(&chromium, &chromedriver, dir.join("profile"));
    b.go(&format!("{url}#wired"));
    let card = "document.querySelector('.bus[data-bus=\"cellar\"]')";
    b.until(
        "the bus with its meter read",
        &format!("const c = {card}; return c && !document.getElementById('wired').hidden && c.querySelector('.bus-meters') && !c.querySelector('.bus-meters').innerText.includes('never')"),
        json!([]),
    );
    // Writes are not allowed in this configuration: no button for them.
    assert_eq!(
        b.js(
            &format!("return {card}.querySelectorAll('.set-address').length"),
            json!([])
        ),
        0
    );

    // A primary scan: progress and both meters found while it runs.
    b.js(
        &format!("{card}.querySelector('.scan-primary').click()"),
        json!([]),
    );
    let progress = b.until(
        "the scan's progress with both meters and the time left",
        &format!("const c = {card}; const t = c.querySelector('.scan-progress').textContent;
                  return c.querySelectorAll('.found tbody tr').length === 2 && / left$/.test(t) && !/not known/.test(t) ? t : null"),
        json!([]),
    );
    let progress = progress.as_str().unwrap();
    assert!(progress.starts_with("primary scan · "), "{progress}");
    assert!(
        progress.contains(" of 251 probes · 2 found · about "),
        "{progress}"
    );
    let rows = b.js(
        &format!(
            "return Array.from({card}.querySelectorAll('.found tbody tr')).map(r => r.innerText)"
        ),
        json!([]),
    );
    let rows: Vec<String> = serde_json::from_value(rows).unwrap();
    assert!(rows[0].contains("configured: Heat"), "{rows:?}");
    assert!(
        rows[1].contains("LUG") && rows[1].contains("Add"),
        "{rows:?}"
    );
    b.screenshots("wired-scan");
    b.js(
        &format!("{card}.querySelector('.scan-cancel').click()"),
        json!([]),
    );
    let outcome = b.until(
        "the scan cancelled",
        &format!("const o = {card}.querySelector('.scan-outcome'); return o.hidden ? null : o.textContent"),
        json!([]),
    );
    assert!(
        outcome
            .as_str()
            .unwrap()
            .starts_with("primary scan cancelled after"),
        "{outcome}"
    );

    // Add the meter found: read at once, shown on the bus and on the overview.
    b.js(
        &format!("Array.from({card}.querySelectorAll('.found tbody tr'))[1].querySelector('button.add').click()"),
        json!([]),
    );
    assert_eq!(
        b.js(
            "return document.getElementById('wired-add-form').elements.driver.value",
            json!([])
        ),
        "auto"
    );
    b.js(
        "const f = document.getElementById('wired-add-form'); f.elements.name.value = 'Flat 2 heat'; f.querySelector('button[type=submit]').click()",
        json!([]),
    );
    let said = b.until(
        "the meter added",
        "const p = document.getElementById('wired-add-result'); return p.textContent || null",
        json!([]),
    );
    assert!(
        said.as_str().unwrap().starts_with("added Flat 2 heat"),
        "{said}"
    );
    b.until(
        "the added meter read on the bus",
        &format!("const r = Array.from({card}.querySelectorAll('.bus-meters tbody tr')).find(r => r.innerText.startsWith('Flat 2 heat'));
                  return r && r.innerText.includes('ultraheat') && !r.innerText.includes('never')"),
        json!([]),
    );
    assert!(b
        .js(
            &format!("return Array.from({card}.querySelectorAll('.found tbody tr'))[1].innerText"),
            json!([])
        )
        .as_str()
        .unwrap()
        .contains("configured: Flat 2 heat"));
    b.screenshots("wired");

    // Read now: the meter's fields and its records, decoded.
    b.js(
        &format!("Array.from({card}.querySelectorAll('.bus-meters tbody tr')).find(r => r.innerText.startsWith('Heat')).querySelector('.read-now').click()"),
        json!([]),
    );
    let fields = b.until(
        "the read's fields",
        "const t = document.querySelector('#wired-read-fields tbody').innerText; return /\\d/.test(t) ? t : null",
        json!([]),
    );
    assert!(
        fields
            .as_str()
            .unwrap()
            .contains("total_energy_consumption_kwh\t34510"),
        "{fields}"
    );
    let records = b.js(
        "return document.querySelector('#wired-read-records tbody').innerText",
        json!([]),
    );
    assert!(
        records.as_str().unwrap().contains("energy\t34510000\tWh"),
        "{records}"
    );
    assert_eq!(
        b.js(
            "return document.getElementById('wired-read-result').textContent",
            json!([])
        ),
        "1 telegram(s) read"
    );
    b.js(
        "document.getElementById('wired-read').scrollIntoView()",
        json!([]),
    );
    b.screenshots("wired-read");
    b.js("location.hash = '#overview'", json!([]));
    b.until(
        "the added meter on the overview with readings",
        "const r = Array.from(document.querySelectorAll('#meters tbody tr')).find(r => r.innerText.startsWith('Flat 2 heat'));
         return r && !document.getElementById('overview').hidden && document.getElementById('wired').hidden && /\\d/.test(r.querySelector('td.readings').innerText)",
        json!([]),
    );
    drop(b);
    drop(bus);
    let _ = std::fs::remove_dir_all(&dir);
}
