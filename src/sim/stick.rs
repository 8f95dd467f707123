//! What the stick simulators share: which telegrams to send and how fast, and a log of what the
//! host sent so tests can check the start-up bytes. Each stick's protocol side lives next to it
//! (`imst.rs`, `amber.rs`, `cul.rs` in this folder).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::drivers::Registry;
use crate::receivers::{LinkMode, StickKind};
use crate::wire::hex;
use crate::wire::wireless::strip_dll_crcs;

/// How a simulated stick behaves once the host has configured it.
#[derive(Debug, Clone)]
pub struct StickSimConfig {
    /// Telegrams to deliver, each `L C M A CI …` without data-link CRCs (the simulator adds
    /// them where the real stick passes them through, as a CUL does).
    pub telegrams: Vec<Vec<u8>>,
    /// Pause between two telegrams.
    pub interval: Duration,
    /// Signal strength reported with every telegram.
    pub rssi_dbm: i16,
    /// Start again from the first telegram after the last one.
    pub repeat: bool,
    /// Delay before answering a command; real sticks take 10–20 ms.
    pub reply_delay: Duration,
    /// Print each command and telegram on standard error.
    pub log: bool,
    /// Makes each telegram when it is sent, from its index in `telegrams`.
    pub live: Option<super::LiveTelegram>,
}

impl Default for StickSimConfig {
    fn default() -> Self {
        StickSimConfig {
            telegrams: Vec::new(),
            interval: Duration::from_secs(1),
            rssi_dbm: -60,
            repeat: false,
            reply_delay: Duration::from_millis(15),
            log: false,
            live: None,
        }
    }
}

impl StickSimConfig {
    /// The telegram to send at `index` of `telegrams`: the configured one, or what `live`
    /// makes in its place.
    pub fn telegram_at(&self, index: usize) -> Option<Vec<u8>> {
        let configured = self.telegrams.get(index)?;
        Some(match &self.live {
            Some(live) => (live.0)(index),
            None => configured.clone(),
        })
    }
}

/// What the host did to a simulated stick, for tests to inspect.
#[derive(Debug, Clone, Default)]
pub struct StickSimLog {
    /// Every complete command frame the host sent, in order, as raw bytes.
    pub requests: Vec<Vec<u8>>,
    /// The listening mode the host set last.
    pub mode: Option<LinkMode>,
    /// Telegrams delivered so far.
    pub emitted: u64,
    /// When each telegram's last byte was handed to the line; only kept when a benchmark or
    /// test sets this to `Some` (a long-running simulator would grow it without end).
    pub sent_at: Option<Vec<std::time::Instant>>,
}

pub type SharedStickLog = Arc<Mutex<StickSimLog>>;

/// Locks the log; a panic elsewhere must not stop the simulator.
pub fn lock_log(log: &SharedStickLog) -> std::sync::MutexGuard<'_, StickSimLog> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// When the telegram after one due at `previous` is due: on a fixed schedule, so the rate holds
/// however long sending took, but without a burst of catch-up telegrams after a stall.
pub fn next_on_schedule(
    previous: tokio::time::Instant,
    interval: Duration,
) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    let next = previous + interval;
    if next + interval < now {
        now + interval
    } else {
        next
    }
}

/// Records that one more telegram went out, now.
pub fn note_emitted(log: &SharedStickLog) {
    let now = std::time::Instant::now();
    let mut log = lock_log(log);
    log.emitted += 1;
    if let Some(times) = &mut log.sent_at {
        times.push(now);
    }
}

/// Telegrams from the built-in drivers' own test cases that a stick could have heard: wireless
/// ones (wired frames start with 0x68), CRCs removed, each once.
pub fn builtin_corpus() -> Vec<Vec<u8>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for driver in Registry::built_in_static().iter() {
        for case in driver.tests().iter() {
            for text in &case.telegrams {
                let Ok(bytes) = hex::decode(text) else {
                    continue;
                };
                if bytes.first() == Some(&0x68) {
                    continue;
                }
                let Ok(stripped) = strip_dll_crcs(&bytes) else {
                    continue;
                };
                if seen.insert(stripped.bytes.clone()) {
                    out.push(stripped.bytes);
                }
            }
        }
    }
    out
}

/// Serves one simulated stick on a fresh pseudo-terminal until the host side fails. `announce`
/// gets the device path as soon as it exists (and `link`, if given, points to it).
pub async fn serve_on_pty(
    kind: StickKind,
    amber: super::amber::AmberSimOptions,
    cfg: StickSimConfig,
    log: SharedStickLog,
    link: Option<&std::path::Path>,
    announce: impl FnOnce(&str),
) -> Result<(), String> {
    use tokio_serial::SerialPort;
    let (master, slave) = tokio_serial::SerialStream::pair()
        .map_err(|e| format!("cannot open a pseudo-terminal: {e}"))?;
    let path = slave
        .name()
        .ok_or("the pseudo-terminal has no device name")?;
    if let Some(link) = link {
        let tmp = link.with_extension("new-link");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&path, &tmp)
            .and_then(|()| std::fs::rename(&tmp, link))
            .map_err(|e| format!("cannot create the link {}: {e}", link.display()))?;
    }
    announce(&path);
    let result = match kind {
        StickKind::Im871a | StickKind::Iu891a => super::imst::serve(master, kind, cfg, log).await,
        StickKind::Amb8465 => super::amber::serve(master, amber, cfg, log).await,
        StickKind::Cul => super::cul::serve(master, cfg, log).await,
    };
    drop(slave);
    result.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_corpus_has_wireless_telegrams_without_crcs() {
        let corpus = builtin_corpus();
        assert!(corpus.len() > 300, "{}", corpus.len());
        for t in &corpus {
            assert_eq!(usize::from(t[0]) + 1, t.len());
            assert_ne!(t[0], 0x68);
        }
    }
}
