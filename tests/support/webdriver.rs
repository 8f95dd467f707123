//! A small WebDriver client for chromedriver over plain HTTP/1.1, for the browser test and the
//! web benchmark: Debian's chromium, headless, with a fresh profile.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const WAIT: Duration = Duration::from_secs(20);

pub fn find(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// chromium and chromedriver, or `None` with a notice.
pub fn browser() -> Option<(PathBuf, PathBuf)> {
    match (find("chromium"), find("chromedriver")) {
        (Some(c), Some(d)) => Some((c, d)),
        _ => {
            eprintln!("notice: chromium or chromedriver not installed; the browser test is skipped (apt-get install chromium chromium-driver)");
            None
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Ends the child when dropped, so a failed assertion leaves no process behind.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain HTTP/1.1 exchange with chromedriver (one connection per command).
pub fn http_json(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
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

pub struct Browser {
    port: u16,
    session: String,
    _driver: Proc,
    profile: PathBuf,
}

impl Browser {
    pub fn start(chromium: &Path, chromedriver: &Path, profile: PathBuf) -> Browser {
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

    pub fn go(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        http_json(self.port, "POST", &path, Some(&json!({"url": url})));
    }

    /// Runs a script in the page and returns its value.
    pub fn js(&self, script: &str, args: Value) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        let answer = http_json(
            self.port,
            "POST",
            &path,
            Some(&json!({"script": script, "args": args})),
        );
        answer["value"].clone()
    }

    /// Runs an asynchronous script (its last argument is the callback) and returns what it
    /// passed to the callback.
    pub fn js_async(&self, script: &str) -> Value {
        let path = format!("/session/{}/execute/async", self.session);
        let answer = http_json(
            self.port,
            "POST",
            &path,
            Some(&json!({"script": script, "args": []})),
        );
        answer["value"].clone()
    }

    /// With `MB_SCREENSHOTS=DIR` set, saves the page at phone and desktop size as
    /// `DIR/<name>-phone.png` and `DIR/<name>-desktop.png` (the pictures in docs/web-ui.md).
    pub fn screenshots(&self, name: &str) {
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
    pub fn until(&self, what: &str, script: &str, args: Value) -> Value {
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

pub fn base64(text: &str) -> Vec<u8> {
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
