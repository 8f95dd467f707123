//! The outage queue on disk: readings the broker has not acknowledged yet survive a crash, a
//! `kill -9` or a power cut, and are delivered first, in their order, after the restart.
//!
//! The file is a journal of JSON lines in the state directory: `{"seq":…,"topic":…,…}` when a
//! reading is queued, `{"done":…}` when the broker acknowledged it or it was dropped (queue
//! full, undeliverable). What is queued and not done is what is kept. The journal is written by
//! one thread of its own, fed through a channel, so the event loop and the MQTT task never wait
//! for the disk; every batch is flushed to the device (`fdatasync`) before the thread waits for
//! more. When the file holds many more records than live readings it is rewritten with only the
//! live ones (written to a temporary file, flushed, renamed into place), so it stays bounded by
//! the queue's own limit.
//!
//! A reading the broker acknowledged just before a crash, whose `done` was not yet written, is
//! sent again after the restart: delivery is at least once, as QoS 1 is.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

/// The journal's file name in the state directory.
pub const OUTBOX_FILE: &str = "mqtt-outbox.jsonl";
/// Most records written in one batch before it is flushed to the device.
const BATCH: usize = 512;
/// The journal is rewritten once it holds this many records more than twice the live ones.
const COMPACT_SLACK: usize = 1024;

/// A queued reading as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub seq: u64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    done: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
    /// The payload when it is UTF-8 text (state documents always are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    /// The payload as hex otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retain: Option<bool>,
}

fn queued_line(m: &Stored) -> String {
    let (text, hex) = match std::str::from_utf8(&m.payload) {
        Ok(t) => (Some(t.to_string()), None),
        Err(_) => (None, Some(crate::wire::hex::encode_upper(&m.payload))),
    };
    let record = Record {
        seq: Some(m.seq),
        done: None,
        topic: Some(m.topic.clone()),
        text,
        hex,
        retain: Some(m.retain),
    };
    // A struct of strings, numbers and booleans always serializes.
    serde_json::to_string(&record).unwrap_or_default()
}

fn done_line(seq: u64) -> String {
    format!("{{\"done\":{seq}}}")
}

/// What a journal holds: the readings still queued, oldest first, and how many lines could not
/// be read (a line cut short by a crash while it was written).
#[derive(Debug, Default)]
pub struct Loaded {
    pub queued: Vec<Stored>,
    pub unreadable_lines: usize,
    /// The next sequence number to use.
    pub next_seq: u64,
}

/// Reads the journal in `dir`; a missing file is an empty queue.
pub fn load(dir: &Path) -> std::io::Result<Loaded> {
    let text = match std::fs::read(dir.join(OUTBOX_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(e) => return Err(e),
    };
    let mut live: BTreeMap<u64, Stored> = BTreeMap::new();
    let mut unreadable = 0;
    let mut max_seq = None;
    for line in text.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(record) = serde_json::from_slice::<Record>(line) else {
            unreadable += 1;
            continue;
        };
        match record {
            Record {
                done: Some(seq), ..
            } => {
                live.remove(&seq);
                max_seq = max_seq.max(Some(seq));
            }
            Record {
                seq: Some(seq),
                topic: Some(topic),
                text,
                hex,
                retain,
                ..
            } => {
                let payload = match (text, hex) {
                    (Some(t), _) => t.into_bytes(),
                    (None, Some(h)) => match crate::wire::hex::decode(&h) {
                        Ok(p) => p,
                        Err(_) => {
                            unreadable += 1;
                            continue;
                        }
                    },
                    (None, None) => Vec::new(),
                };
                max_seq = max_seq.max(Some(seq));
                live.insert(
                    seq,
                    Stored {
                        seq,
                        topic,
                        payload,
                        retain: retain.unwrap_or(true),
                    },
                );
            }
            _ => unreadable += 1,
        }
    }
    Ok(Loaded {
        queued: live.into_values().collect(),
        unreadable_lines: unreadable,
        next_seq: max_seq.map_or(0, |s| s + 1),
    })
}

enum Op {
    Queued(Stored),
    Done(u64),
}

/// The writer thread's handle. Dropping it (or [`Outbox::close`]) lets the thread write what
/// it was sent and end.
pub struct Outbox {
    tx: Option<mpsc::Sender<Op>>,
    thread: Option<JoinHandle<()>>,
}

impl Outbox {
    /// Starts the writer for the journal in `dir`, holding `live` (what [`load`] found and the
    /// caller queued again). The file is rewritten with them first, which also drops what a
    /// crash cut short.
    pub fn start(dir: PathBuf, live: &[Stored]) -> std::io::Result<Outbox> {
        std::fs::create_dir_all(&dir)?;
        let mut writer = Writer {
            path: dir.join(OUTBOX_FILE),
            dir,
            live: live.iter().map(|m| (m.seq, queued_line(m))).collect(),
            records: 0,
            file: None,
            failing: false,
        };
        writer.compact()?;
        let (tx, rx) = mpsc::channel();
        // The thread logs to whoever the caller logs to (tests capture one gateway's log).
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let thread = std::thread::Builder::new()
            .name("mqtt-outbox".into())
            .spawn(move || tracing::dispatcher::with_default(&dispatch, || writer.run(rx)))?;
        Ok(Outbox {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Records a queued reading. Never blocks.
    pub fn queued(&self, m: Stored) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Op::Queued(m));
        }
    }

    /// Records that a reading left the queue (acknowledged or dropped). Never blocks.
    pub fn done(&self, seq: u64) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Op::Done(seq));
        }
    }

    /// Lets the writer finish what it was sent and waits for it. Blocks: call it off the
    /// event loop.
    pub fn close(mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // Closing the channel ends the thread after its last batch; not joined here, a drop
        // must not block.
        self.tx = None;
    }
}

struct Writer {
    dir: PathBuf,
    path: PathBuf,
    /// Live readings by sequence number, as their journal lines.
    live: BTreeMap<u64, String>,
    /// Records in the file now.
    records: usize,
    file: Option<BufWriter<File>>,
    /// A write failed and was reported; reported again once writing works.
    failing: bool,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Op>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let result = self.write(batch);
            match (result, self.failing) {
                (Err(e), false) => {
                    self.failing = true;
                    self.file = None;
                    tracing::warn!(
                        "mqtt: cannot write the outage queue to {}: {e}; queued readings \
                         are kept in memory only until it works again",
                        self.path.display()
                    );
                }
                (Err(_), true) => self.file = None,
                (Ok(()), true) => {
                    self.failing = false;
                    tracing::info!(
                        "mqtt: the outage queue is written to {} again",
                        self.path.display()
                    );
                }
                (Ok(()), false) => {}
            }
        }
    }

    fn write(&mut self, batch: Vec<Op>) -> std::io::Result<()> {
        let mut lines = String::new();
        for op in batch {
            let line = match op {
                Op::Queued(m) => {
                    let line = queued_line(&m);
                    self.live.insert(m.seq, line.clone());
                    line
                }
                Op::Done(seq) => {
                    self.live.remove(&seq);
                    done_line(seq)
                }
            };
            lines.push_str(&line);
            lines.push('\n');
            self.records += 1;
        }
        if self.file.is_none() || self.records > 2 * self.live.len() + COMPACT_SLACK {
            // After a failure the file may miss records: rewriting it from `live` mends it.
            return self.compact();
        }
        let file = match self.file.as_mut() {
            Some(f) => f,
            None => return self.compact(),
        };
        file.write_all(lines.as_bytes())?;
        file.flush()?;
        file.get_ref().sync_data()
    }

    /// Rewrites the journal with the live readings only, then appends to it.
    fn compact(&mut self) -> std::io::Result<()> {
        self.file = None;
        let tmp = self.dir.join(format!("{OUTBOX_FILE}.tmp"));
        {
            let mut out = BufWriter::new(File::create(&tmp)?);
            for line in self.live.values() {
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            out.get_ref().sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        // The rename itself must reach the device too.
        #[cfg(unix)]
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.records = self.live.len();
        self.file = Some(BufWriter::new(
            OpenOptions::new().append(true).open(&self.path)?,
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("meterbridge-outbox-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn reading(seq: u64) -> Stored {
        Stored {
            seq,
            topic: format!("mb/m{seq}/state"),
            payload: format!("{{\"n\":{seq}}}").into_bytes(),
            retain: seq.is_multiple_of(2),
        }
    }

    #[test]
    fn what_is_not_done_survives_in_order_and_a_torn_last_line_is_skipped() {
        let d = dir("order");
        let outbox = Outbox::start(d.clone(), &[]).unwrap();
        for seq in 0..10 {
            outbox.queued(reading(seq));
        }
        for seq in [0, 3, 4] {
            outbox.done(seq);
        }
        let mut binary = reading(10);
        binary.payload = vec![0xFF, 0x00, 0x41];
        outbox.queued(binary.clone());
        outbox.close();
        // A crash in the middle of a line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.join(OUTBOX_FILE))
            .unwrap();
        f.write_all(b"{\"seq\":11,\"topic\":\"mb/x\",\"te").unwrap();
        drop(f);
        let loaded = load(&d).unwrap();
        let seqs: Vec<u64> = loaded.queued.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [1, 2, 5, 6, 7, 8, 9, 10]);
        assert_eq!(loaded.queued[0], reading(1));
        assert_eq!(loaded.queued[7], binary);
        assert_eq!(loaded.unreadable_lines, 1);
        assert_eq!(loaded.next_seq, 11);
        // Started again with what was found: the torn line is gone, the rest is kept.
        Outbox::start(d.clone(), &loaded.queued).unwrap().close();
        let again = load(&d).unwrap();
        assert_eq!(again.queued, loaded.queued);
        assert_eq!(again.unreadable_lines, 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_journal_stays_bounded_by_the_live_readings() {
        let d = dir("bounded");
        let outbox = Outbox::start(d.clone(), &[]).unwrap();
        for seq in 0..20_000 {
            outbox.queued(reading(seq));
            if seq >= 5 {
                outbox.done(seq - 5);
            }
        }
        outbox.close();
        let lines = std::fs::read_to_string(d.join(OUTBOX_FILE))
            .unwrap()
            .lines()
            .count();
        // 5 live readings: at most twice that plus the slack, plus one batch.
        assert!(lines <= 2 * 5 + COMPACT_SLACK + BATCH, "{lines} lines");
        let loaded = load(&d).unwrap();
        let seqs: Vec<u64> = loaded.queued.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [19_995, 19_996, 19_997, 19_998, 19_999]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
