//! The web page with 500 meters: how long the page and its data take to load, how large the
//! view is, and how soon a telegram shows in the server-sent events. An in-process gateway
//! (library) with 500 configured iPERL water meters whose telegrams arrive over UDP.
//!
//! `cargo bench --bench web` (MB_BENCH_QUICK=1 for fewer rounds). Figures: docs/web-ui.md.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

#[path = "../tests/support/webdriver.rs"]
mod webdriver;

use meterbridge::config::{parse_with, ValidateOptions};
use meterbridge::daemon::gateway::{self, PrintFormat, RunOptions};
use meterbridge::wire::hex;

const METERS: u32 = 500;
/// Sensus iPERL (id 12345699, 7.704 m³); bytes 4..8 are the id, 19..23 the volume in litres.
const IPERL: &str = "1E44AE4C9956341268077A360010002F2F0413181E0000023B00002F2F2F2F";

fn bcd_le(n: u32) -> [u8; 4] {
    let mut out = [0u8; 4];
    let mut n = n;
    for b in &mut out {
        *b = (((n / 10 % 10) << 4) | (n % 10)) as u8;
        n /= 100;
    }
    out
}

fn telegram(id: u32, litres: u32) -> String {
    let mut t = hex::decode(IPERL).expect("the iPERL test telegram is hex");
    t[4..8].copy_from_slice(&bcd_le(id));
    t[19..23].copy_from_slice(&litres.to_le_bytes());
    t.iter().map(|b| format!("{b:02X}")).collect()
}

fn get(web: SocketAddr, path: &str) -> (u16, usize) {
    let mut s = TcpStream::connect(web).expect("connect to the page");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
    (status, body)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let quick = std::env::var_os("MB_BENCH_QUICK").is_some();
    let rounds = if quick { 10 } else { 100 };
    let udp_port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port();
    let dir = std::env::temp_dir().join(format!("meterbridge-bench-web-{}", std::process::id()));
    let mut yaml = format!(
        "state_dir: \"{}\"\ndedup_window: 0s\nreceivers:\n  - name: udp\n    type: udp\n    bind: \"127.0.0.1:{udp_port}\"\nweb:\n  bind: \"127.0.0.1:0\"\nmeters:\n",
        dir.display()
    );
    for i in 0..METERS {
        let id = 10_000_000 + i;
        yaml.push_str(&format!(
            "  - name: Flat {i} water\n    address: \"{id}\"\n    driver: iperl\n"
        ));
    }
    let (config, _) = parse_with(
        &yaml,
        "bench.yaml",
        &ValidateOptions::with_built_in_drivers(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let options = RunOptions {
        print: PrintFormat::None,
        stop: Some(stop_rx),
        web_bound: Some(bound_tx),
        ..RunOptions::default()
    };
    let task = rt.spawn(gateway::run(config, options));
    let web = rt
        .block_on(bound_rx)
        .expect("the gateway stopped before its page listened");

    let udp = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    // UDP may drop datagrams under load: what was lost is sent again below.
    let send_all = || {
        for i in 0..METERS {
            udp.send_to(
                telegram(10_000_000 + i, 1000 + i).as_bytes(),
                ("127.0.0.1", udp_port),
            )
            .expect("send a telegram");
            if i % 50 == 49 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    send_all();
    // Every meter has a reading on the overview.
    let start = Instant::now();
    loop {
        let mut s = TcpStream::connect(web).expect("connect");
        write!(
            s,
            "GET /api/overview HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read");
        let read = text.matches("\"total_m3\"").count();
        if read >= METERS as usize {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{read} of {METERS} meters got a reading: {}",
            &text[..text.len().min(3000)]
        );
        std::thread::sleep(Duration::from_millis(100));
        if start.elapsed().as_millis() % 3000 < 100 {
            send_all();
        }
    }

    // The page as a browser loads it: the document, its two assets, then the view.
    let mut page = Vec::new();
    let mut view_only = Vec::new();
    let mut view_bytes = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        for path in ["/", "/app.js", "/meter.js", "/style.css", "/api/overview"] {
            let (status, len) = get(web, path);
            assert_eq!(status, 200, "{path}");
            if path == "/api/overview" {
                view_bytes = len;
            }
        }
        page.push(t.elapsed());
        let t = Instant::now();
        get(web, "/api/overview");
        view_only.push(t.elapsed());
    }
    page.sort();
    view_only.sort();

    // Telegram to server-sent event: a new volume for one meter, until an event carries it.
    let mut events = TcpStream::connect(web).expect("connect");
    write!(events, "GET /events HTTP/1.1\r\nHost: {web}\r\n\r\n").expect("send");
    events
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut latencies = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for round in 0..rounds.min(20) as u32 {
        // Ends in 1, so the value prints with all three decimals.
        let litres = 500_001 + round * 10;
        let wanted = format!("{}.{:03}", litres / 1000, litres % 1000);
        let t = Instant::now();
        udp.send_to(
            telegram(10_000_007, litres).as_bytes(),
            ("127.0.0.1", udp_port),
        )
        .expect("send");
        let mut seen = String::new();
        loop {
            let n = events.read(&mut buf).expect("the event stream");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.contains(&wanted) {
                break;
            }
            if seen.len() > 8 << 20 {
                seen.clear();
            }
        }
        latencies.push(t.elapsed());
    }
    latencies.sort();
    // In a real browser, when chromium is installed: from the navigation's start to the first
    // frame painted with all 500 rows (the document, its assets, the event stream's first
    // view, building the rows, style, layout and paint; app.js marks it).
    let mut rendered = Vec::new();
    let mut ready = Vec::new();
    if let Some((chromium, chromedriver)) = webdriver::browser() {
        let profile = dir.join("chromium-profile");
        let b = webdriver::Browser::start(&chromium, &chromedriver, profile);
        for _ in 0..if quick { 3 } else { 10 } {
            b.go(&format!("http://{web}/"));
            let ms = b.js_async(&format!(
                "const done = arguments[arguments.length - 1];
                 (function check() {{
                   const painted = performance.getEntriesByName('meters-painted')[0];
                   if (painted && document.querySelectorAll('#meters tbody tr').length >= {METERS}) {{
                     const n = performance.getEntriesByType('navigation')[0];
                     done([painted.startTime, n.domContentLoadedEventEnd]);
                   }}
                   else requestAnimationFrame(check);
                 }})();"
            ));
            let at = |i: usize| ms[i].as_f64().expect("times from the page");
            rendered.push(at(0));
            ready.push(at(1));
        }
    }
    rendered.sort_by(f64::total_cmp);
    ready.sort_by(f64::total_cmp);
    let _ = stop.send(true);
    let _ = rt.block_on(task);
    let _ = std::fs::remove_dir_all(&dir);

    println!("web page with {METERS} meters ({rounds} rounds):");
    println!(
        "  page load (document + app.js + meter.js + style.css + view): median {:.1} ms, p95 {:.1} ms",
        percentile(&page, 0.5).as_secs_f64() * 1e3,
        percentile(&page, 0.95).as_secs_f64() * 1e3
    );
    println!(
        "  view alone (api/overview, {} KiB): median {:.1} ms, p95 {:.1} ms",
        view_bytes / 1024,
        percentile(&view_only, 0.5).as_secs_f64() * 1e3,
        percentile(&view_only, 0.95).as_secs_f64() * 1e3
    );
    match rendered.as_slice() {
        [] => println!("  in a browser: not measured (chromium or chromedriver not installed)"),
        r => println!(
            "  in chromium, navigation start to the first frame with {METERS} rows painted: median {:.0} ms, max {:.0} ms ({} loads; the document was ready at {:.0} ms)",
            r[r.len() / 2],
            r[r.len() - 1],
            r.len(),
            ready[ready.len() / 2]
        ),
    }
    println!(
        "  telegram to server-sent event: median {:.0} ms, max {:.0} ms ({} telegrams)",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        latencies.len()
    );
}
