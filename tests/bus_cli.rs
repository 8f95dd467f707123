//! The bus commands as a user runs them, against the simulator both as an M-Bus/TCP gateway
//! and on a pseudo-terminal (a serial converter): scans, reads (incl. a multi-telegram meter
//! and a secondary address), set address, set baud, reset, echo, late, noisy and stale meters,
//! gateways that drop the connection. The simulator runs in this process; the commands are
//! the real binary.

use std::process::Command;
use std::sync::{Arc, Mutex};

use meterbridge::sim::bus::BusSim;
use meterbridge::sim::{serve_tcp, ServeOptions};

/// Runs `serve` on its own runtime thread with the segment from `yaml`; returns the address
/// or device path it reports once it is ready.
fn serve_in_background<F, Fut>(yaml: &str, serve: F) -> String
where
    F: FnOnce(Arc<Mutex<BusSim>>, ServeOptions, std::sync::mpsc::Sender<String>) -> Fut
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let sim = Arc::new(Mutex::new(
        BusSim::from_yaml_str(yaml).expect("simulator config"),
    ));
    let opts = ServeOptions {
        baud: 9600,
        log: false,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(serve(sim, opts, tx));
    });
    rx.recv().expect("simulator address")
}

/// Starts a simulated segment on a free local port; returns its address.
fn start_bus(yaml: &str) -> String {
    serve_in_background(yaml, |sim, opts, tx| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        tx.send(listener.local_addr().expect("addr").to_string())
            .expect("send");
        let _ = serve_tcp(listener, sim, opts).await;
    })
}

fn meterbridge(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meterbridge"))
        .args(args)
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BUS: &str = "baud: 9600
meters:
  - {primary: 5, secondary: \"12345678\", manufacturer: KAM, version: 1, medium: 7}
  - {primary: 7, secondary: \"12345699\", manufacturer: KAM, version: 1, medium: 7}
  - {primary: 9, secondary: \"87654321\", manufacturer: LUG, version: 4, medium: 4}
";

#[test]
fn secondary_and_primary_scans_find_every_meter() {
    for (flag, addr) in both_transports(BUS) {
        let (code, out, err) = meterbridge(&["scan", "secondary", flag, &addr, "--baud", "9600"]);
        assert_eq!(code, 0, "{err}");
        for line in ["123456782D2C0107", "123456992D2C0107", "87654321A7320404"] {
            assert!(out.contains(line), "{line} missing: {out}");
        }
        assert!(err.contains("3 meter(s) found"), "{err}");
        let (code, out, err) = meterbridge(&[
            "scan", "primary", "--range", "0-12", flag, &addr, "--baud", "9600",
        ]);
        assert_eq!(code, 0, "{err}");
        let rows: Vec<&str> = out.lines().skip(1).collect();
        assert_eq!(rows.len(), 3, "{out}");
        assert!(
            rows[0].starts_with("5 ") && rows[2].starts_with("9 "),
            "{out}"
        );
    }
}

#[test]
fn read_by_primary_and_secondary_address() {
    for (flag, addr) in both_transports(BUS) {
        let (code, out, err) = meterbridge(&["read", "9", flag, &addr, "--baud", "9600"]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap_or("")).unwrap();
        assert_eq!(v["header"]["id"], "87654321");
        assert_eq!(v["header"]["manufacturer"], "LUG");
        let (code, out, err) = meterbridge(&[
            "read",
            "12345699FFFFFFFF",
            flag,
            &addr,
            "--baud",
            "9600",
            "--format",
            "xml",
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("<Id>12345699</Id>"), "{out}");
        // Nobody at 42: a clear error naming the address.
        let (code, _, err) = meterbridge(&["read", "42", flag, &addr, "--baud", "9600"]);
        assert_eq!(code, 1);
        assert!(err.contains("42"), "{err}");
    }
}

#[test]
fn multi_telegram_meter_is_read_to_the_end() {
    // Two telegrams: the first ends with DIF 1F (more records follow).
    let first = meterbridge::wire::wired::Frame::Long {
        control: 0x08,
        address: 3,
        ci: 0x72,
        data: &[
            0x78, 0x56, 0x34, 0x12, 0x2D, 0x2C, 0x01, 0x07, 0x01, 0x00, 0x00, 0x00, 0x04, 0x13,
            0x10, 0x27, 0x00, 0x00, 0x1F,
        ],
    }
    .to_bytes();
    let second = meterbridge::wire::wired::Frame::Long {
        control: 0x08,
        address: 3,
        ci: 0x72,
        data: &[
            0x78, 0x56, 0x34, 0x12, 0x2D, 0x2C, 0x01, 0x07, 0x02, 0x00, 0x00, 0x00, 0x44, 0x13,
            0x20, 0x4E, 0x00, 0x00,
        ],
    }
    .to_bytes();
    let hex = meterbridge::wire::hex::encode_upper;
    let yaml = format!(
        "baud: 9600\nmeters:\n  - {{primary: 3, telegrams: [\"{}\", \"{}\"]}}\n",
        hex(&first),
        hex(&second)
    );
    for (flag, addr) in both_transports(&yaml) {
        let (code, out, err) = meterbridge(&["read", "3", flag, &addr, "--baud", "9600"]);
        assert_eq!(code, 0, "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(
            lines[0].contains("\"more_records_follow\":true"),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("\"value\":20"), "{}", lines[1]);
    }
}

#[test]
fn set_address_then_reset() {
    for (flag, addr) in both_transports(BUS) {
        let (code, out, err) =
            meterbridge(&["set-address", "5", "20", flag, &addr, "--baud", "9600"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("now answers at primary address 20"), "{out}");
        // The address is taken: refused with a reason.
        let (code, _, err) =
            meterbridge(&["set-address", "20", "7", flag, &addr, "--baud", "9600"]);
        assert_eq!(code, 1);
        assert!(err.contains('7'), "{err}");
        let (code, out, err) = meterbridge(&["reset", "20", flag, &addr, "--baud", "9600"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("application reset"), "{out}");
    }
}

#[test]
fn usage_errors_say_what_is_wrong() {
    let (code, _, err) = meterbridge(&["read", "300", "--tcp", "127.0.0.1:1"]);
    assert_eq!(code, 2);
    assert!(err.contains("neither a primary address"), "{err}");
    let (code, _, err) = meterbridge(&["read", "5", "--device", "/dev/does-not-exist-mb"]);
    assert_eq!(code, 1);
    assert!(err.contains("/dev/does-not-exist-mb"), "{err}");
}

/// The same segment behind a TCP gateway and on a serial device (a pseudo-terminal): the
/// connection flag and its value for each, so a test runs every command over both.
fn both_transports(yaml: &str) -> [(&'static str, String); 2] {
    [
        ("--tcp", start_bus(yaml)),
        ("--device", start_pty_bus(yaml)),
    ]
}

/// Starts a simulated segment on a pseudo-terminal; returns the device path.
fn start_pty_bus(yaml: &str) -> String {
    serve_in_background(yaml, |sim, opts, tx| async move {
        let pty = meterbridge::sim::open_pty().expect("pty");
        tx.send(pty.path().to_string()).expect("send");
        let _ = pty.serve(sim, opts).await;
    })
}

#[test]
fn commands_work_over_a_serial_device() {
    let dev = start_pty_bus(BUS);
    let (code, out, err) = meterbridge(&["read", "5", "--device", &dev, "--baud", "9600"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"id\":\"12345678\""), "{out}");
    let (code, out, err) = meterbridge(&["scan", "secondary", "--device", &dev, "--baud", "9600"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("87654321A7320404"), "{out}");
    let (code, out, err) =
        meterbridge(&["set-address", "7", "30", "--device", &dev, "--baud", "9600"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("30"), "{out}");
}

#[test]
fn echoing_converter_slow_meter_and_a_meter_that_needs_a_reset() {
    // The converter echoes every request; meter 5 answers 120 ms late; meter 7 sends its
    // stale first telegram until it has seen SND_NKE (read resets it first).
    let yaml = "baud: 9600
echo: true
meters:
  - {primary: 5, secondary: \"12345678\", manufacturer: KAM, version: 1, medium: 7, reply_delay_ms: 120}
  - {primary: 7, secondary: \"12345699\", manufacturer: KAM, version: 1, medium: 7, needs_snd_nke: true}
";
    for (flag, addr) in both_transports(yaml) {
        for a in ["5", "7"] {
            let (code, out, err) = meterbridge(&[
                "read",
                a,
                flag,
                &addr,
                "--baud",
                "9600",
                "--echo",
                "--latency",
                "200",
            ]);
            assert_eq!(code, 0, "{a}: {err}");
            assert!(out.contains("\"kind\":\"wired\""), "{a}: {out}");
        }
    }
}

/// Serves one connection as a failing gateway: acknowledges SND_NKE, answers REQ_UD2 with
/// half a frame and closes.
fn drop_mid_answer(listener: &std::net::TcpListener) {
    use std::io::{Read, Write};
    if let Ok((mut s, _)) = listener.accept() {
        let mut buf = [0u8; 5];
        let _ = s.read_exact(&mut buf); // SND_NKE
        let _ = s.write_all(&[0xE5]);
        let _ = s.read_exact(&mut buf); // REQ_UD2
        let _ = s.write_all(&[0x68, 0x1F, 0x1F, 0x68, 0x08, 0x05, 0x72]);
    }
}

#[test]
fn a_gateway_that_drops_and_stays_gone_is_an_error_not_a_hang() {
    // A gateway that acknowledges SND_NKE, then sends half an answer and closes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || drop_mid_answer(&listener));
    let started = std::time::Instant::now();
    let (code, _, err) = meterbridge(&["read", "5", "--tcp", &addr, "--baud", "9600"]);
    assert_eq!(code, 1, "{err}");
    // The gateway is gone for good: the reconnect attempts fail and the error names it.
    assert!(err.contains("error:") && err.contains(&addr), "{err}");
    assert!(err.contains("could not be reopened"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// Copies bytes both ways between two sockets until either side closes.
fn relay(client: std::net::TcpStream, upstream: std::net::TcpStream) {
    let pairs = [
        (client.try_clone(), upstream.try_clone()),
        (upstream.try_clone(), client.try_clone()),
    ];
    for pair in pairs {
        if let (Ok(mut from), Ok(mut to)) = pair {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(std::net::Shutdown::Both);
            });
        }
    }
}

#[test]
fn a_dropped_gateway_connection_is_reopened_and_the_read_completes() {
    let bus = start_bus(BUS);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        // The first connection fails as a gateway does when its own link hiccups.
        drop_mid_answer(&listener);
        // Every later connection reaches the simulated segment.
        for conn in listener.incoming() {
            let Ok(client) = conn else { break };
            let Ok(upstream) = std::net::TcpStream::connect(&bus) else {
                break;
            };
            relay(client, upstream);
        }
    });
    let (code, out, err) = meterbridge(&["read", "5", "--tcp", &addr, "--baud", "9600"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("reconnected"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["header"]["id"], "12345678");
    assert_eq!(v["header"]["manufacturer"], "KAM");
}

#[test]
fn noisy_answers_are_retried_and_a_hopeless_meter_is_named() {
    // Meter 5's first two answers arrive with a broken checksum; meter 7's never arrive intact.
    let yaml = "baud: 9600
meters:
  - {primary: 5, secondary: \"12345678\", manufacturer: KAM, version: 1, medium: 7, garbled_replies: 2}
  - {primary: 7, secondary: \"12345699\", manufacturer: KAM, version: 1, medium: 7, garbled_replies: 100}
";
    for dev in [
        vec!["--tcp".to_string(), start_bus(yaml)],
        vec!["--device".to_string(), start_pty_bus(yaml)],
    ] {
        let connection: Vec<&str> = dev.iter().map(String::as_str).collect();
        let args = |a: &'static str| {
            let mut v = vec!["read", a, "--baud", "9600"];
            v.extend_from_slice(&connection);
            v
        };
        let (code, out, err) = meterbridge(&args("5"));
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap_or("")).unwrap();
        // The repeats (same FCB) got the meter's first telegram, not a later one: access
        // number 1, and the volume it carries, 1010 litres.
        assert_eq!(v["header"]["access_number"], 1, "{out}");
        assert_eq!(v["records"][0]["raw"], 1010, "{out}");
        assert_eq!(v["records"][0]["unit"], "m³", "{out}");

        let (code, _, err) = meterbridge(&args("7"));
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("primary address 7"), "{err}");
        assert!(err.contains("4 attempt(s)"), "{err}");
        assert!(err.contains("garbled 68"), "{err}");
    }
}

#[test]
fn set_baud_over_a_serial_device_then_the_meter_answers_only_at_the_new_rate() {
    let dev = start_pty_bus(BUS);
    let (code, out, err) =
        meterbridge(&["set-baud", "9", "2400", "--device", &dev, "--baud", "9600"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("primary address 9 now talks at 2400 baud"),
        "{out}"
    );
    let (code, out, err) = meterbridge(&["read", "9", "--device", &dev, "--baud", "2400"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap_or("")).unwrap();
    assert_eq!(v["header"]["id"], "87654321");
    // At the old rate the meter no longer hears us; the other meters still do.
    let (code, _, err) = meterbridge(&[
        "read",
        "9",
        "--device",
        &dev,
        "--baud",
        "9600",
        "--retries",
        "0",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("did not answer"), "{err}");
    let (code, _, err) = meterbridge(&["read", "5", "--device", &dev, "--baud", "9600"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn set_baud_through_a_gateway_says_to_reconfigure_the_gateway() {
    let addr = start_bus(BUS);
    let (code, out, err) =
        meterbridge(&["set-baud", "9", "2400", "--tcp", &addr, "--baud", "9600"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("primary address 9 acknowledged the switch to 2400 baud"),
        "{out}"
    );
    assert!(err.contains("set its serial side to 2400 baud"), "{err}");
    // The simulated gateway stays at 9600: meter 9 is out of reach, the others are not.
    let (code, _, err) = meterbridge(&[
        "read",
        "9",
        "--tcp",
        &addr,
        "--baud",
        "9600",
        "--retries",
        "0",
    ]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = meterbridge(&["read", "5", "--tcp", &addr, "--baud", "9600"]);
    assert_eq!(code, 0, "{err}");
}

/// SIGTERM stops a scan like Ctrl-C does: the meters found so far are printed as the table,
/// the bus is deselected, and the exit status is 0.
#[test]
fn sigterm_stops_a_scan_and_prints_what_was_found() {
    use std::io::BufRead;
    use std::process::Stdio;
    let addr = start_bus(
        "baud: 9600
meters:
  - {primary: 1, secondary: \"12345678\", manufacturer: KAM, version: 1, medium: 7}
  - {primary: 2, secondary: \"12345699\", manufacturer: KAM, version: 1, medium: 7}
  - {primary: 200, secondary: \"87654321\", manufacturer: LUG, version: 4, medium: 4}
",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_meterbridge"))
        .args(["scan", "primary", "--tcp", &addr, "--baud", "9600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the scan reports its findings");
        let second = line.starts_with("found 123456992D2C0107 KAM water version 1");
        seen.push(line);
        if second {
            break;
        }
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    seen.extend(rx.iter());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{seen:?}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["1", "123456782D2C0107", "KAM", "water", "1"],
            ["2", "123456992D2C0107", "KAM", "water", "1"],
        ],
        "{stdout}"
    );
    assert!(
        seen.iter().any(|l| l.starts_with("stopped after")),
        "{seen:?}"
    );
    assert!(seen.iter().all(|l| !l.contains('{')), "{seen:?}");
}
