//! `meterbridge listen` and `meterbridge simulate stick` as users run them.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KAMSTRUP: &str =
    "2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713";
/// Mode 5, key A004EB23329A477F1DD2D7820B56EB3D; `total_m3` 466.472 in the driver corpus.
const AVENTIES: &str = "76442104710007612507727100076121042507B5006005E2E95A3C2A1279A5415E6732679B43369FD5FDDDD783EEEBB48236D34E7C94AF0A18A5FDA5F7D64111EB42D4D891622139F2952F9D12A20088DFA4CF8123871123EE1F6C1DCEA414879DDB4E05E508F1826D7EFBA6964DF804C9261EA23BBF03";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meterbridge"))
}

fn listen_stdin(args: &[&str], input: &str) -> (Vec<serde_json::Value>, String) {
    let mut child = bin()
        .arg("listen")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (lines, String::from_utf8(out.stderr).unwrap())
}

#[test]
fn listen_shows_meters_and_suppresses_repeats() {
    let input = format!("{KAMSTRUP}\n{KAMSTRUP}\n# a comment\n\n{AVENTIES}\n");
    let (lines, _) = listen_stdin(&["--hex-stdin", "--format", "json"], &input);
    assert_eq!(lines.len(), 2, "the repeat is suppressed: {lines:?}");
    let kam = &lines[0];
    assert_eq!(kam["manufacturer"], "KAM");
    assert_eq!(kam["id"], "76348799");
    assert_eq!(kam["driver"], "kamwater");
    assert_eq!(kam["fields"]["total_m3"], 6.408);
    // Encrypted and no key: identified, the driver named, no readings, the fix said.
    let enc = &lines[1];
    assert_eq!(enc["id"], "61070071");
    assert_eq!(enc["encryption"], "mode 5 (AES-CBC)");
    assert_eq!(enc["driver"], "aventieswm");
    assert!(enc.get("fields").is_none());
    assert!(enc["error"].as_str().unwrap().contains("key"), "{enc}");
}

/// A repeater's copy differs in bytes the meter did not write: it is the same telegram, as
/// for the daemon (src/receivers/merge.rs), while the meter's next telegram is not.
#[test]
fn listen_takes_a_repeater_s_copy_for_a_repeat() {
    use meterbridge::wire::hex;
    let t = hex::decode(KAMSTRUP).unwrap();
    // Another C field (0x46) and the ELL's hop-counter bit H (CC at offset 11) set.
    let mut repeated = t.clone();
    repeated[1] = 0x46;
    repeated[11] |= 0x10;
    // The next telegram: another access number (offset 12).
    let mut next = t.clone();
    next[12] ^= 0x01;
    let input = format!(
        "{KAMSTRUP}\n{}\n{}\n",
        hex::encode_upper(&repeated),
        hex::encode_upper(&next)
    );
    let (lines, _) = listen_stdin(&["--hex-stdin", "--format", "json"], &input);
    assert_eq!(
        lines.len(),
        2,
        "the repeater's copy is suppressed: {lines:?}"
    );
    assert_eq!(lines[0]["id"], "76348799");
    assert_eq!(lines[0]["fields"]["total_m3"], 6.408);
    assert_eq!(lines[1]["id"], "76348799");
    assert_eq!(lines[1]["telegram"], hex::encode_upper(&next));
}

#[test]
fn listen_decodes_with_a_key_and_can_print_every_copy() {
    let input = format!("{AVENTIES}\n{AVENTIES}\n");
    let (lines, _) = listen_stdin(
        &[
            "--hex-stdin",
            "--format",
            "json",
            "--dedup-window",
            "0",
            "--key",
            "61070071=A004EB23329A477F1DD2D7820B56EB3D",
        ],
        &input,
    );
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert_eq!(l["fields"]["total_m3"], 466.472);
        assert_eq!(l["fields"]["consumption_at_set_date_14_m3"], 357.84);
    }
}

#[test]
fn listen_without_an_input_says_what_to_give() {
    let out = bin().arg("listen").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--stick KIND --device PATH"), "{err}");
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The simulated stick as a separate process on a pty behind a link, and `listen` reading it
/// like a real stick: start-up, mode, telegrams and RSSI.
#[test]
fn listen_to_a_simulated_stick_of_each_kind() {
    let dir = std::env::temp_dir().join(format!("meterbridge-listen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let telegrams = dir.join("telegrams.hex");
    std::fs::write(&telegrams, format!("# test\n{KAMSTRUP}\n")).unwrap();
    for kind in ["im871a", "iu891a", "amb8465", "cul"] {
        let link = dir.join(format!("tty-{kind}"));
        let _ = std::fs::remove_file(&link);
        let mut sim = bin()
            .args([
                "simulate", "stick", "--kind", kind, "--rate", "20", "--repeat",
            ])
            .args(["--rssi", "-67", "--telegrams"])
            .arg(&telegrams)
            .arg("--link")
            .arg(&link)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut first = String::new();
        // Kept open: the simulator prints more and must not hit a closed pipe.
        let mut sim_out = BufReader::new(sim.stdout.take().unwrap());
        sim_out.read_line(&mut first).unwrap();
        assert!(
            first.contains(&format!("simulated {kind} on /dev/pts/")),
            "{first}"
        );
        let _sim = Killed(sim);
        let started = Instant::now();
        while !link.exists() {
            assert!(started.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = bin()
            .args(["listen", "--stick", kind, "--device"])
            .arg(&link)
            .args(["--mode", "t1", "--format", "json", "--count", "1"])
            .args(["--dedup-window", "0", "--duration", "20"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{kind}: {stderr}");
        let line: serde_json::Value = serde_json::from_str(
            stdout
                .lines()
                .next()
                .unwrap_or_else(|| panic!("{kind}: nothing heard; {stderr}")),
        )
        .unwrap();
        assert_eq!(line["id"], "76348799", "{kind}");
        assert_eq!(line["fields"]["total_m3"], 6.408, "{kind}");
        let rssi = line["rssi_dbm"]
            .as_i64()
            .unwrap_or_else(|| panic!("{kind}: no rssi {line}"));
        assert!((rssi + 67).abs() <= 1, "{kind}: rssi {rssi}");
        assert!(stderr.contains("ready"), "{kind}: {stderr}");
        drop(sim_out);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// rtl_wmbus output read from a command the listener runs (restarted when it ends).
#[test]
fn listen_reads_rtl_wmbus_lines_from_a_command() {
    let dir = std::env::temp_dir().join(format!("meterbridge-rtl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rtl.txt");
    std::fs::write(
        &file,
        format!("T1;1;1;2026-11-21 07:14:18.000;117;102;76348799;0x{KAMSTRUP}\n"),
    )
    .unwrap();
    let out = bin()
        .args([
            "listen",
            "--format",
            "json",
            "--count",
            "1",
            "--duration",
            "20",
        ])
        .arg("--rtlwmbus")
        .arg(format!("cat {}", file.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line: serde_json::Value = serde_json::from_str(
        stdout
            .lines()
            .next()
            .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&out.stderr))),
    )
    .unwrap();
    assert_eq!(line["mode"], "t1");
    assert_eq!(line["fields"]["total_m3"], 6.408);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `listen` on a path that is no stick, one that does not exist, and a stick of another kind
/// than the one given: each ends with one clear error and status 1 instead of retrying for ever.
#[test]
fn listen_gives_up_on_a_wrong_device_or_stick_kind() {
    let run = |args: &[&str]| {
        let started = Instant::now();
        let out = bin()
            .arg("listen")
            .args(args)
            .args(["--duration", "120"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            started.elapsed(),
        )
    };
    let (code, err, took) = run(&["--stick", "amb8465", "--device", "/etc/passwd"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("error: amb8465 on /etc/passwd (t1): cannot use /etc/passwd: it is a file, not a serial device"),
        "{err}"
    );
    assert!(took < Duration::from_secs(60), "{took:?}");

    let missing = format!("/dev/ttyNOPE{}", std::process::id());
    let (code, err, took) = run(&["--stick", "im871a", "--device", &missing]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("gave up after 5 attempts"), "{err}");
    assert!(err.contains(&format!("cannot open {missing}")), "{err}");
    // Reported once while it retried, then the error.
    assert_eq!(err.matches("retrying").count(), 1, "{err}");
    assert!(took < Duration::from_secs(60), "{took:?}");

    // An iM871A simulated on a pty, opened as an AMB8465.
    let dir = std::env::temp_dir().join(format!("meterbridge-wrong-kind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("tty-im871a");
    let mut sim = bin()
        .args(["simulate", "stick", "--kind", "im871a", "--rate", "1"])
        .arg("--link")
        .arg(&link)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut sim_out = BufReader::new(sim.stdout.take().unwrap());
    let mut first = String::new();
    sim_out.read_line(&mut first).unwrap();
    let _sim = Killed(sim);
    let started = Instant::now();
    while !link.exists() {
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    let device = link.display().to_string();
    let (code, err, took) = run(&["--stick", "amb8465", "--device", &device]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "gave up after 5 attempts: {device} does not answer as a amb8465"
        )),
        "{err}"
    );
    eprintln!("wrong stick kind given up after {took:?}");
    assert!(took < Duration::from_secs(100), "{took:?}");
    drop(sim_out);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Keys and passwords off the command line: `--key-file`, METERBRIDGE_KEYS and `listen
/// --config` decrypt without a warning; a key or password on the command line still works but
/// is warned about.
#[test]
fn secrets_can_stay_off_the_command_line() {
    let dir = std::env::temp_dir().join(format!("meterbridge-keyfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("keys");
    std::fs::write(
        &key_file,
        "# hot water\n61070071=A004EB23329A477F1DD2D7820B56EB3D\n",
    )
    .unwrap();
    let decode = |args: &[&str], env: Option<&str>| {
        let mut c = bin();
        c.args(["decode", "--driver", "auto"])
            .args(args)
            .arg(AVENTIES);
        c.env_remove("METERBRIDGE_KEYS");
        if let Some(keys) = env {
            c.env("METERBRIDGE_KEYS", keys);
        }
        let out = c.output().unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (v, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let key_file_arg = key_file.display().to_string();
    let (v, err) = decode(&["--key-file", &key_file_arg], None);
    assert_eq!(v["fields"]["total_m3"], 466.472, "{err}");
    assert!(!err.contains("warning"), "{err}");
    let (v, err) = decode(&[], Some("61070071=A004EB23329A477F1DD2D7820B56EB3D"));
    assert_eq!(v["fields"]["total_m3"], 466.472, "{err}");
    assert!(!err.contains("warning"), "{err}");
    let (v, err) = decode(
        &["--key", "61070071=A004EB23329A477F1DD2D7820B56EB3D"],
        None,
    );
    assert_eq!(v["fields"]["total_m3"], 466.472, "{err}");
    assert!(
        err.contains("warning: --key puts the key on the command line"),
        "{err}"
    );
    // A bad line in a key file is named by its line, without the key.
    std::fs::write(dir.join("bad"), "# x\n61070071=A004EB23\n").unwrap();
    let bad = dir.join("bad").display().to_string();
    let (_, err) = decode(&["--key-file", &bad], None);
    assert!(err.contains(&format!("--key-file {bad} line 2")), "{err}");
    assert!(!err.contains("A004EB23"), "{err}");

    // listen with the daemon's configuration: its receivers and its meters' key files.
    let meter_key = dir.join("hot-water.key");
    std::fs::write(&meter_key, "A004EB23329A477F1DD2D7820B56EB3D\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&meter_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:\n  - name: piped\n    type: hex_stdin\nmeters:\n  - name: Hot water\n    address: \"61070071\"\n    key_file: {}\n",
            meter_key.display()
        ),
    )
    .unwrap();
    let (lines, err) = listen_stdin(
        &[
            "--config",
            &config.display().to_string(),
            "--format",
            "json",
        ],
        &format!("{AVENTIES}\n"),
    );
    assert_eq!(lines.len(), 1, "{err}");
    assert_eq!(lines[0]["fields"]["total_m3"], 466.472, "{err}");
    assert!(
        err.contains("listening to piped: hex lines on standard input"),
        "{err}"
    );
    assert!(!err.contains("warning"), "{err}");

    // A password in the --mqtt URL is warned about.
    let out = bin()
        .args([
            "listen",
            "--mqtt",
            "mqtt://u:S3cr3t@127.0.0.1:1/t",
            "--duration",
            "0.2",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: the --mqtt URL holds a password"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `simulate stick --link` removes its link when stopped with SIGTERM.
#[test]
fn a_simulated_stick_stopped_with_sigterm_leaves_no_link() {
    let dir = std::env::temp_dir().join(format!("meterbridge-simlink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("tty-sim");
    let mut sim = bin()
        .args(["simulate", "stick", "--kind", "cul", "--rate", "1"])
        .arg("--link")
        .arg(&link)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(sim.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let started = Instant::now();
    while std::fs::symlink_metadata(&link).is_err() {
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = Command::new("kill")
        .args(["-TERM", &sim.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = sim.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "the link to the pty is left behind"
    );
    drop(out);
    let _ = std::fs::remove_dir_all(&dir);
}
