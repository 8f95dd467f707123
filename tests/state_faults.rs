//! The state directory fails under a running gateway: the disk fills up, the directory becomes
//! read-only. Readings must keep flowing (every one printed exactly once), the old state file
//! must stay intact, the failure must be reported once, and the state must be saved again soon
//! after the fault is cleared.
//!
//! Two ways to cause the faults:
//! - on a real filesystem: the gateway runs in its own mount namespace (`unshare -Urm`) with the
//!   state directory on a 128 KiB tmpfs, which the test fills up and remounts read-only. Skipped
//!   with a notice where user namespaces are not allowed.
//! - injected: the temporary file the state is written through is a symlink to `/dev/full`
//!   (every write fails with ENOSPC), and the directory is made immutable (`chattr +i`, which
//!   stops root as well) or, for an unprivileged user, read-only (`chmod 555`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A hydrodigit water meter (id 87654321, no encryption); `total_m3` is the BCD at VOLUME_AT.
const WATER: &str = "4644B4092143658713077A9C0000000C1364390400046D212F16350F152A0F000000440F00C00F00511000D51000B20B00180C007C0C00E60C00560D00D10D00400E00C60E0000";
/// Offset in bytes of the 4-byte BCD volume (in litres) after `0C 13`.
const VOLUME_AT: usize = 17;
const BASE_LITRES: u32 = 43_964;
const PER_PHASE: u32 = 12;

/// Telegram `n`: the water meter's telegram with its volume raised by `n` litres, so every
/// printed reading says which telegram it came from.
fn telegram(n: u32) -> String {
    let mut bytes: Vec<u8> = (0..WATER.len() / 2)
        .map(|i| u8::from_str_radix(&WATER[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut litres = BASE_LITRES + n;
    for b in &mut bytes[VOLUME_AT..VOLUME_AT + 4] {
        *b = (((litres / 10 % 10) << 4) | (litres % 10)) as u8;
        litres /= 100;
    }
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[test]
fn telegram_numbering_changes_only_the_volume() {
    assert_eq!(telegram(0), WATER);
    assert_eq!(&telegram(137)[34..42], "01410400");
}

/// What the test does to the state directory, and how it reads what the gateway wrote there.
trait Faults {
    fn fill_up(&self);
    fn free_space(&self);
    fn make_read_only(&self);
    fn make_writable(&self);
    /// The state directory as the gateway sees it.
    fn state_dir(&self) -> PathBuf;
    fn survives_the_gateway(&self) -> bool;
}

struct Gateway {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    udp_port: u16,
    socket: std::net::UdpSocket,
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &Path, state_dir: &Path, udp_port: u16) -> PathBuf {
    let config = dir.join("meterbridge.yaml");
    std::fs::write(
        &config,
        format!(
            r#"state_dir: "{}"
state_save_interval: 1s
dedup_window: 0
receivers:
  - name: udp
    type: udp
    bind: "127.0.0.1:{udp_port}"
meters:
  - name: Cold water
    address: "87654321"
"#,
            state_dir.display()
        ),
    )
    .unwrap();
    config
}

impl Gateway {
    fn start(mut command: Command, udp_port: u16) -> Gateway {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let gateway = Gateway {
            child,
            stdout,
            stderr,
            udp_port,
            socket: std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        };
        gateway.wait_for("the gateway to start", Duration::from_secs(20), || {
            gateway.stderr_has("receiver udp: ready")
        });
        gateway
    }

    fn send(&self, range: std::ops::Range<u32>) {
        for n in range {
            self.socket
                .send_to(telegram(n).as_bytes(), ("127.0.0.1", self.udp_port))
                .unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn readings(&self) -> Vec<u32> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                let m3 = v.get("total_m3")?.as_f64()?;
                Some((m3 * 1000.0).round() as u32 - BASE_LITRES)
            })
            .collect()
    }

    fn stderr_has(&self, needle: &str) -> bool {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    fn stderr_count(&self, needle: &str) -> usize {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    fn wait_for(&self, what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while !done() {
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {what}; stderr: {:#?}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        start.elapsed()
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the gateway ended with {status:?}");
    }
}

/// Telegrams counted in the state file, `None` while it does not exist or cannot be read.
fn saved_telegrams(state_dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(state_dir.join("state.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["meters"].as_object()?.values().next()?["telegrams"].as_u64()
}

/// The common scenario: normal → disk full → cleared → read-only → cleared, a batch of telegrams
/// in each phase. Returns the two recovery times.
fn run_scenario(gateway: Gateway, faults: &dyn Faults) -> (Duration, Duration) {
    let state = faults.state_dir();
    let limit = Duration::from_secs(20);
    let mut sent = 0;
    let mut send_batch = |g: &Gateway| {
        g.send(sent..sent + PER_PHASE);
        sent += PER_PHASE;
        let expected = sent as usize;
        g.wait_for("the readings to be printed", limit, || {
            g.readings().len() >= expected
        });
        expected as u64
    };

    let n = send_batch(&gateway);
    gateway.wait_for("the first save", limit, || {
        saved_telegrams(&state) == Some(n)
    });

    faults.fill_up();
    let before_fault = n;
    let n = send_batch(&gateway);
    gateway.wait_for("the full disk to be reported", limit, || {
        gateway.stderr_has("No space left on device")
    });
    // Two more failing save intervals: reported once, and the old file is intact.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        gateway.stderr_count("WARN meterbridge::daemon::gateway: state directory"),
        1
    );
    assert_eq!(saved_telegrams(&state), Some(before_fault));

    faults.free_space();
    let full_recovery =
        gateway.wait_for("the state to be saved after the disk full", limit, || {
            saved_telegrams(&state) == Some(n)
        });
    gateway.wait_for("the recovery line", limit, || {
        gateway.stderr_has("again after")
    });

    faults.make_read_only();
    let before_fault = n;
    let n = send_batch(&gateway);
    gateway.wait_for("the read-only directory to be reported", limit, || {
        gateway.stderr_count("WARN meterbridge::daemon::gateway: state directory") == 2
    });
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        gateway.stderr_count("WARN meterbridge::daemon::gateway: state directory"),
        2
    );
    assert_eq!(saved_telegrams(&state), Some(before_fault));

    faults.make_writable();
    let ro_recovery = gateway.wait_for("the state to be saved after read-only", limit, || {
        saved_telegrams(&state) == Some(n)
    });

    // Every telegram printed exactly once, in every phase.
    let mut readings = gateway.readings();
    readings.sort_unstable();
    assert_eq!(readings, (0..sent).collect::<Vec<_>>());
    assert!(
        !gateway.stderr_has("panicked"),
        "{:#?}",
        gateway.stderr.lock().unwrap()
    );
    gateway.stop();
    // The shutdown save (a tmpfs in the gateway's namespace is gone with the gateway).
    if faults.survives_the_gateway() {
        assert_eq!(saved_telegrams(&state), Some(u64::from(sent)));
    }
    eprintln!(
        "recovered {} ms after the disk had room again, {} ms after it was writable again \
         (state saved every 1 s)",
        full_recovery.as_millis(),
        ro_recovery.as_millis()
    );
    (full_recovery, ro_recovery)
}

fn work_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "meterbridge-state-faults-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------------

struct Injected {
    state: PathBuf,
    root: bool,
}

impl Faults for Injected {
    fn fill_up(&self) {
        std::os::unix::fs::symlink("/dev/full", self.state.join("state.json.tmp")).unwrap();
    }
    fn free_space(&self) {
        std::fs::remove_file(self.state.join("state.json.tmp")).unwrap();
    }
    fn make_read_only(&self) {
        if self.root {
            let ok = Command::new("chattr")
                .arg("+i")
                .arg(&self.state)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chattr +i failed on {}", self.state.display());
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.state, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
    }
    fn make_writable(&self) {
        if self.root {
            let _ = Command::new("chattr").arg("-i").arg(&self.state).status();
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.state, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    fn state_dir(&self) -> PathBuf {
        self.state.clone()
    }
    fn survives_the_gateway(&self) -> bool {
        true
    }
}

impl Drop for Injected {
    fn drop(&mut self) {
        // Never leave an immutable directory behind, even when an assertion failed.
        if self.root {
            let _ = Command::new("chattr").arg("-i").arg(&self.state).status();
        }
    }
}

#[test]
fn injected_write_failures_lose_no_reading_and_recover() {
    let dir = work_dir("injected");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")))
        .unwrap_or(false);
    let faults = Injected {
        state: state.clone(),
        root,
    };
    let udp_port = free_udp_port();
    let config = write_config(&dir, &state, udp_port);
    let mut command = Command::new(env!("CARGO_BIN_EXE_meterbridge"));
    command.arg("run").arg("--config").arg(&config);
    let gateway = Gateway::start(command, udp_port);
    run_scenario(gateway, &faults);
    drop(faults);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------

/// The gateway's state directory is a tmpfs in the gateway's own mount namespace; the test
/// reaches it through `/proc/<pid>/root` and changes the mount with `nsenter`.
struct Namespaced {
    pid: u32,
    state: PathBuf,
}

impl Namespaced {
    fn seen_from_outside(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid))
            .join(self.state.strip_prefix("/").unwrap())
    }

    fn remount(&self, how: &str) {
        let ok = Command::new("nsenter")
            .args([
                "-t",
                &self.pid.to_string(),
                "-U",
                "-m",
                "--preserve-credentials",
            ])
            .args(["mount", "-o", how])
            .arg(&self.state)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount {how} failed");
    }
}

impl Faults for Namespaced {
    fn fill_up(&self) {
        use std::io::Write as _;
        let mut filler = std::fs::File::create(self.seen_from_outside().join("filler")).unwrap();
        let block = [0u8; 4096];
        while filler.write_all(&block).is_ok() {}
        // What the page cache took must really be gone from the tmpfs too.
        let _ = filler.sync_all();
    }
    fn free_space(&self) {
        std::fs::remove_file(self.seen_from_outside().join("filler")).unwrap();
    }
    fn make_read_only(&self) {
        self.remount("remount,ro");
    }
    fn make_writable(&self) {
        self.remount("remount,rw");
    }
    fn state_dir(&self) -> PathBuf {
        self.seen_from_outside()
    }
    fn survives_the_gateway(&self) -> bool {
        false
    }
}

fn namespaces_work() -> bool {
    Command::new("unshare")
        .args(["-Urm", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("nsenter")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

#[test]
fn a_really_full_or_read_only_state_directory_loses_no_reading() {
    if !namespaces_work() {
        eprintln!(
            "skipped: `unshare -Urm` is not allowed here; the injected-fault test covers the \
             same code paths"
        );
        return;
    }
    let dir = work_dir("tmpfs");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let udp_port = free_udp_port();
    let config = write_config(&dir, &state, udp_port);
    // `exec` keeps unshare's process id, so the child's id is the gateway's.
    let mut command = Command::new("unshare");
    command
        .args(["-Urm", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=128k tmpfs "$0" && exec "$1" run --config "$2""#)
        .arg(&state)
        .arg(env!("CARGO_BIN_EXE_meterbridge"))
        .arg(&config);
    let gateway = Gateway::start(command, udp_port);
    let faults = Namespaced {
        pid: gateway.child.id(),
        state: state.clone(),
    };
    run_scenario(gateway, &faults);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------

/// Not a state fault, but the same harness: garbage on an input is reported once per kind,
/// counted, and does not disturb the readings around it.
#[test]
fn garbage_on_an_input_is_reported_once_and_readings_go_on() {
    let dir = work_dir("garbage");
    let state = dir.join("state");
    let udp_port = free_udp_port();
    let config = write_config(&dir, &state, udp_port);
    let mut command = Command::new(env!("CARGO_BIN_EXE_meterbridge"));
    command.arg("run").arg("--config").arg(&config);
    let gateway = Gateway::start(command, udp_port);
    gateway.send(0..2);
    for junk in ["hello there", "not hex either", "zz"] {
        gateway
            .socket
            .send_to(junk.as_bytes(), ("127.0.0.1", udp_port))
            .unwrap();
    }
    gateway.send(2..4);
    gateway.wait_for("four readings", Duration::from_secs(20), || {
        gateway.readings().len() >= 4
    });
    gateway.wait_for(
        "the garbage to be reported",
        Duration::from_secs(20),
        || gateway.stderr_has("WARN meterbridge::daemon::gateway: udp: "),
    );
    std::thread::sleep(Duration::from_millis(300));
    let reported = gateway.stderr_count("WARN meterbridge::daemon::gateway: udp: ");
    assert!(
        (1..=2).contains(&reported),
        "reported {reported} times: {:#?}",
        gateway.stderr.lock().unwrap()
    );
    assert_eq!(gateway.readings(), vec![0, 1, 2, 3]);
    gateway.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
