//! Helpers shared by the integration tests (included with `mod support;`): a seeded random
//! generator, a harness that turns panics and endless loops into reports, the record accessor
//! walk, the reader of wmbusmeters' driver-test corpus and a wired test frame.

// Every test crate that includes this module uses a different subset of it.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use meterbridge::wire::hex;
use meterbridge::wire::records::{Record, Value};

// ---------------------------------------------------------------------------------------------
// Random numbers

/// xorshift64* (Vigna): tiny, fast and good enough to pick bytes, lengths and keys. A fixed
/// seed makes a failure reproduce on every machine without a property-testing dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // The state must never be zero, or the generator only ever returns zero.
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n` > 0), using the high bits, which are the better ones.
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    pub fn range(&mut self, lo: usize, hi_inclusive: usize) -> usize {
        lo + self.below(hi_inclusive - lo + 1)
    }

    pub fn byte(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }

    /// True with probability 1/n.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    pub fn push_bytes(&mut self, out: &mut Vec<u8>, n: usize) {
        out.extend((0..n).map(|_| self.byte()));
    }

    pub fn key(&mut self) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        k[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        k
    }
}

// ---------------------------------------------------------------------------------------------
// Harness: panics become reports with the input, and a stuck case fails the test instead of
// hanging it.

/// A case that runs this long is taken for an endless loop. Cases take microseconds even in a
/// debug build, so this leaves room for a machine busy with other builds.
pub const STALL_LIMIT: Duration = Duration::from_secs(10);
/// Panics listed in a failure report; the rest are only counted.
pub const MAX_REPORTED: usize = 5;

#[derive(Default)]
struct Progress {
    cases: AtomicU64,
    current: Mutex<Vec<u8>>,
}

pub struct Cases {
    progress: Arc<Progress>,
    panicked: u64,
    reports: Vec<String>,
    slowest: Duration,
    slowest_input: Vec<u8>,
}

impl Cases {
    /// Runs one case; `input` is what a report shows if `f` panics or never returns.
    pub fn check(&mut self, input: &[u8], f: impl FnOnce()) {
        {
            let mut current = self
                .progress
                .current
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            current.clear();
            current.extend_from_slice(input);
        }
        // Counted only once `current` holds this input, so the watchdog blames the right one.
        self.progress.cases.fetch_add(1, Ordering::Release);
        let started = Instant::now();
        let result = panic::catch_unwind(AssertUnwindSafe(f));
        let took = started.elapsed();
        if took > self.slowest {
            self.slowest = took;
            self.slowest_input = input.to_vec();
        }
        if let Err(payload) = result {
            self.panicked += 1;
            if self.reports.len() < MAX_REPORTED {
                self.reports.push(format!(
                    "  input {}\n  panic: {}",
                    hex::encode_upper(input),
                    panic_message(payload.as_ref())
                ));
            }
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Runs `body` on a worker thread while this thread checks that cases keep finishing; fails
/// the test if any case panicked, and returns what `body` returned.
pub fn run_cases<T: Send + 'static>(
    name: &str,
    body: impl FnOnce(&mut Cases) -> T + Send + 'static,
) -> T {
    let progress = Arc::new(Progress::default());
    let worker_progress = Arc::clone(&progress);
    let started = Instant::now();
    let worker = thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let mut cases = Cases {
                progress: worker_progress,
                panicked: 0,
                reports: Vec::new(),
                slowest: Duration::ZERO,
                slowest_input: Vec::new(),
            };
            let result = body(&mut cases);
            let slowest = (cases.slowest, cases.slowest_input);
            (result, cases.panicked, cases.reports, slowest)
        })
        .expect("spawn worker thread");

    let mut seen = 0;
    let mut last_change = Instant::now();
    while !worker.is_finished() {
        thread::sleep(Duration::from_millis(10));
        let done = progress.cases.load(Ordering::Acquire);
        if done != seen {
            seen = done;
            last_change = Instant::now();
        } else if last_change.elapsed() > STALL_LIMIT {
            let input = progress.current.lock().unwrap_or_else(|e| e.into_inner());
            // The stuck worker cannot be stopped; it dies with the test process.
            panic!(
                "{name}: case {done} has not finished after {STALL_LIMIT:?} (endless loop?) \
                 on input {}",
                hex::encode_upper(&input)
            );
        }
    }
    let (result, panicked, reports, (slowest, slowest_input)) = match worker.join() {
        Ok(r) => r,
        Err(payload) => panic::resume_unwind(payload),
    };
    let cases = progress.cases.load(Ordering::Acquire);
    let elapsed = started.elapsed();
    eprintln!(
        "{name}: {cases} cases in {:.2} s ({:.0} cases/s, slowest {} µs on {})",
        elapsed.as_secs_f64(),
        cases as f64 / elapsed.as_secs_f64().max(1e-9),
        slowest.as_micros(),
        hex::encode_upper(&slowest_input)
    );
    assert!(
        panicked == 0,
        "{name}: {panicked} of {cases} cases panicked; the first ones:\n{}",
        reports.join("\n")
    );
    result
}

// ---------------------------------------------------------------------------------------------
// Records

/// Calls every accessor of a decoded record and formats what it returns, so a panic or an
/// inconsistent view anywhere in the record API shows up under random input.
pub fn exercise_record(r: &Record<'_>, out: &mut String) {
    out.clear();
    let _ = write!(out, "{:?} {:?}", r.raw_value(), r.value_information());
    match r.value() {
        Value::Decimal(d) => {
            let _ = write!(out, " {d} {}", d.to_f64());
        }
        Value::InvalidBcd(digits) => {
            let _ = write!(out, " {digits}");
        }
        Value::DateTime(time) => {
            let _ = write!(out, " {time}");
        }
        other => {
            let _ = write!(out, " {other:?}");
        }
    }
    if let Some(scale) = r.scale() {
        let _ = write!(out, " {} {scale:?}", scale.unit);
    }
    for c in r.combinables() {
        out.push_str(&c.describe());
    }
    let _ = (r.dif(), r.difes(), r.vib_bytes().count(), r.is_time_point());
    out.extend(r.plain_text_unit());
}

// ---------------------------------------------------------------------------------------------
// wmbusmeters' driver-test corpus

/// Every line of `tests/fixtures/wmbus/wmbusmeters_driver_tests.jsonl`, parsed; line `n` of the
/// file is element `n - 1`.
pub fn wmbus_corpus_lines() -> Vec<serde_json::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/wmbus/wmbusmeters_driver_tests.jsonl");
    let text = std::fs::read_to_string(path).expect("corpus");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("json line"))
        .collect()
}

/// The hex strings of a corpus line's `preceding_telegrams` (none when the field is missing).
pub fn preceding_telegrams(line: &serde_json::Value) -> Vec<&str> {
    line["preceding_telegrams"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t.as_str()).collect())
        .unwrap_or_default()
}

/// The first wired frame among the kamheat driver's test telegrams (a Kamstrup 403 RSP_UD), for
/// simulated buses.
pub fn kamheat_frame() -> Vec<u8> {
    let d = meterbridge::drivers::Registry::built_in_static()
        .get("kamheat")
        .unwrap();
    d.tests()
        .iter()
        .flat_map(|t| t.telegrams.iter())
        .filter_map(|t| meterbridge::wire::hex::decode(t).ok())
        .find(|f| f[0] == 0x68)
        .unwrap()
}

/// Runs the `meterbridge` binary: (exit status, standard output, standard error).
pub fn meterbridge(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meterbridge"))
        .args(args)
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// Log capture

/// One log event as the gateway emitted it: level, message and the structured fields.
#[derive(Debug, Clone)]
pub struct Logged {
    pub level: tracing::Level,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

/// Collects the log events of whatever runs under [`LogCapture::dispatch`] (a gateway started
/// with `.with_subscriber(capture.dispatch())`): tests read what an operator would see without
/// a process-wide subscriber, so parallel tests do not mix their logs.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<Logged>>>);

impl LogCapture {
    pub fn dispatch(&self) -> tracing::Dispatch {
        use tracing_subscriber::layer::SubscriberExt as _;
        tracing::Dispatch::new(tracing_subscriber::registry().with(CaptureLayer(self.clone())))
    }

    pub fn events(&self) -> Vec<Logged> {
        self.0.lock().unwrap().clone()
    }

    /// How many messages contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.message.contains(needle))
            .count()
    }
}

/// One capture for the whole test process, installed as the global subscriber on first use
/// (before the first client or gateway starts). `tracing` decides once per call site whether
/// anyone listens, so a capture scoped to one test can miss events while parallel tests log;
/// tests that read the log look for lines naming their own broker port, bus or receivers.
pub fn global_log() -> &'static LogCapture {
    static LOG: std::sync::OnceLock<LogCapture> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = LogCapture::default();
        tracing::dispatcher::set_global_default(log.dispatch())
            .expect("no other global subscriber in this test process");
        log
    })
}

struct CaptureLayer(LogCapture);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CaptureLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(String, Vec<(String, String)>);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                } else {
                    self.1
                        .push((field.name().to_string(), format!("{value:?}")));
                }
            }
        }
        let mut fields = Fields(String::new(), Vec::new());
        event.record(&mut fields);
        (self.0).0.lock().unwrap().push(Logged {
            level: *event.metadata().level(),
            message: fields.0,
            fields: fields.1,
        });
    }
}

/// A gateway running in this process with its web page on a free port, as the web and
/// bridge tests start it.
pub struct WebGateway {
    /// Set to `true` to stop the gateway.
    pub stop: tokio::sync::watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<Result<meterbridge::daemon::gateway::GatewayStats, String>>,
    /// Where the web page listens.
    pub web: std::net::SocketAddr,
}

/// Starts `config` (its `web:` section binding port 0) and waits, up to 30 s, until the web
/// page listens.
pub async fn start_with_web(config: meterbridge::config::Config) -> WebGateway {
    use meterbridge::daemon::gateway::{self, PrintFormat, RunOptions};
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let options = RunOptions {
        print: PrintFormat::None,
        stop: Some(stop_rx),
        instance: "test".into(),
        web_bound: Some(bound_tx),
        ..RunOptions::default()
    };
    let task = tokio::spawn(gateway::run(config, options));
    let web = tokio::time::timeout(Duration::from_secs(30), bound_rx)
        .await
        .expect("the web page did not start")
        .expect("the gateway stopped before the web page listened");
    WebGateway { stop, task, web }
}
