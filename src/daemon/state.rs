//! The state cache: per meter, the merged last-known value of every field (short and compact
//! telegrams omit some), what was last emitted and when, and the counters users see. It is
//! persisted in the state directory together with the learned compact-frame layouts, so a restart
//! neither re-emits unchanged readings nor forgets a Kamstrup meter's format.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};
use serde_json::Value;
use thiserror::Error;

use crate::config::schema::{Emit, FieldAdjust};
use crate::drivers::{Reading, ReadingValue};
use crate::telegram::compact::CompactFormats;
use crate::wire::hex;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("state directory: cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state directory {path} cannot be used ({source}); readings are still published, but last values and learned compact formats are kept only in memory until it can be written")]
    Unusable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is damaged ({message}); it was moved aside to {moved_to} and the state starts empty")]
    Damaged {
        path: PathBuf,
        message: String,
        moved_to: PathBuf,
    },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeterEntry {
    /// Merged last-known fields in the order the driver declares them. The keys are the
    /// driver's own (`Reading::key`), shared rather than copied per meter.
    pub fields: Vec<(Arc<str>, ReadingValue)>,
    /// The fields as last emitted, for change detection.
    emitted: Vec<(Arc<str>, ReadingValue)>,
    pub emitted_at: Option<SystemTime>,
    pub last_seen: Option<SystemTime>,
    pub telegrams: u64,
    pub rssi_dbm: Option<i16>,
}

/// What an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    pub changed: bool,
    pub emit: bool,
}

#[derive(Debug, Default)]
pub struct StateCache {
    meters: HashMap<String, MeterEntry>,
    file: Option<PathBuf>,
    dirty: bool,
    /// Length of the last snapshot's text, to size the next one.
    last_snapshot_len: usize,
}

/// The state file as written: borrowed from the cache and serialized straight to text.
/// (Building a `serde_json::Value` tree first made every save hold the state three times
/// over: the cache, the tree of small allocations, and the text; with 100 meters the save was
/// the daemon's peak of memory.) Fields are in the order of their names, as a JSON object
/// read into `serde_json::Map` and written back would have them.
#[derive(Serialize)]
struct StateFile<'a> {
    compact_formats: Vec<LayoutView>,
    meters: MetersView<'a>,
    version: u32,
}

#[derive(Serialize)]
struct LayoutView {
    layout: String,
    manufacturer: u16,
}

/// Meters by key, sorted.
struct MetersView<'a>(&'a [(&'a String, &'a MeterEntry)]);

impl Serialize for MetersView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, e)| (*k, MeterView::of(e))))
    }
}

#[derive(Serialize)]
struct MeterView<'a> {
    emitted: FieldsView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    emitted_at: Option<u64>,
    fields: FieldsView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rssi_dbm: Option<i16>,
    telegrams: u64,
}

impl<'a> MeterView<'a> {
    fn of(e: &'a MeterEntry) -> MeterView<'a> {
        MeterView {
            emitted: FieldsView(&e.emitted),
            emitted_at: e.emitted_at.map(millis),
            fields: FieldsView(&e.fields),
            last_seen: e.last_seen.map(millis),
            rssi_dbm: e.rssi_dbm,
            telegrams: e.telegrams,
        }
    }
}

/// Fields as `[[key, value], …]`.
struct FieldsView<'a>(&'a [(Arc<str>, ReadingValue)]);

impl Serialize for FieldsView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(k, v)| (&**k, ValueView(v))))
    }
}

/// A number (`null` when not finite, as JSON has no NaN), a text or `null`.
struct ValueView<'a>(&'a ReadingValue);

impl Serialize for ValueView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            ReadingValue::Number(n) if n.is_finite() => s.serialize_f64(*n),
            ReadingValue::Text(t) => s.serialize_str(t),
            ReadingValue::Number(_) | ReadingValue::Null => s.serialize_unit(),
        }
    }
}

const FILE_NAME: &str = "state.json";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn from_json(v: &Value) -> ReadingValue {
    match v {
        Value::Number(n) => n.as_f64().map_or(ReadingValue::Null, ReadingValue::Number),
        Value::String(s) => ReadingValue::Text(s.clone()),
        _ => ReadingValue::Null,
    }
}

fn fields_from_json(v: Option<&Value>) -> Vec<(Arc<str>, ReadingValue)> {
    let Some(Value::Array(items)) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| match item {
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(k), v] => Some((Arc::from(k.as_str()), from_json(v))),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Whether `every` has passed since `at`. A wall clock set back (NTP after a boot without an RTC,
/// a user) makes `at` lie in the future; that counts as due, so a re-emit never stalls until the
/// clock catches up again.
pub fn is_due(at: SystemTime, every: Duration, now: SystemTime) -> bool {
    match now.duration_since(at) {
        Ok(passed) => passed >= every,
        Err(_) => true,
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_millis(v: Option<&Value>) -> Option<SystemTime> {
    v.and_then(Value::as_u64)
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}

impl StateCache {
    /// An in-memory cache (nothing persisted).
    pub fn in_memory() -> StateCache {
        StateCache::default()
    }

    /// Loads the cache from `dir` (created if missing) and teaches `compact` the layouts learned
    /// before. Nothing here is fatal — a damaged file is moved aside, a directory that cannot be
    /// created or read leaves the cache in memory — because readings matter more than the cache:
    /// the returned warning says what happened, and every later [`StateCache::save`] tries again.
    pub fn load(dir: &Path, compact: &mut CompactFormats) -> (StateCache, Option<StateError>) {
        let file = dir.join(FILE_NAME);
        let mut cache = StateCache {
            file: Some(file.clone()),
            ..StateCache::default()
        };
        let unusable = |source| StateError::Unusable {
            path: dir.to_path_buf(),
            source,
        };
        if let Err(e) = std::fs::create_dir_all(dir) {
            return (cache, Some(unusable(e)));
        }
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (cache, None),
            Err(e) => return (cache, Some(unusable(e))),
        };
        let root: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                let moved_to = file.with_extension("json.damaged");
                if let Err(source) = std::fs::rename(&file, &moved_to) {
                    return (cache, Some(unusable(source)));
                }
                let warning = StateError::Damaged {
                    path: file,
                    message: e.to_string(),
                    moved_to,
                };
                return (cache, Some(warning));
            }
        };
        if let Some(Value::Object(meters)) = root.get("meters") {
            for (key, m) in meters {
                let entry = MeterEntry {
                    fields: fields_from_json(m.get("fields")),
                    emitted: fields_from_json(m.get("emitted")),
                    emitted_at: from_millis(m.get("emitted_at")),
                    last_seen: from_millis(m.get("last_seen")),
                    telegrams: m.get("telegrams").and_then(Value::as_u64).unwrap_or(0),
                    rssi_dbm: m
                        .get("rssi_dbm")
                        .and_then(Value::as_i64)
                        .and_then(|v| i16::try_from(v).ok()),
                };
                cache.meters.insert(key.clone(), entry);
            }
        }
        if let Some(Value::Array(layouts)) = root.get("compact_formats") {
            for l in layouts {
                let (Some(m), Some(Value::String(bytes))) = (
                    l.get("manufacturer").and_then(Value::as_u64),
                    l.get("layout"),
                ) else {
                    continue;
                };
                if let (Ok(m), Ok(layout)) = (u16::try_from(m), hex::decode(bytes)) {
                    compact.insert(m, layout);
                }
            }
        }
        (cache, None)
    }

    pub fn get(&self, meter: &str) -> Option<&MeterEntry> {
        self.meters.get(meter)
    }

    /// Merges a telegram's readings into the meter's state, applies the corrections and decides
    /// whether to emit under `policy`.
    pub fn update(
        &mut self,
        meter: &str,
        readings: &[Reading],
        adjust: &[FieldAdjust],
        rssi_dbm: Option<i16>,
        policy: Emit,
        now: SystemTime,
    ) -> Update {
        let entry = self.meters.entry(meter.to_string()).or_default();
        if entry.fields.is_empty() {
            // A meter's first readings: its fields, without the slack of growing one by one.
            entry.fields.reserve_exact(readings.len());
        }
        for r in readings {
            let mut value = r.value.clone();
            if let (ReadingValue::Number(n), Some(a)) =
                (&value, adjust.iter().find(|a| *a.field == *r.key))
            {
                value = ReadingValue::Number(n * a.scale + a.offset);
            }
            // A field the telegram left empty keeps its last known value.
            if value == ReadingValue::Null {
                if let Some(slot) = entry.fields.iter().find(|(k, _)| **k == *r.key) {
                    if slot.1 != ReadingValue::Null {
                        continue;
                    }
                }
            }
            match entry.fields.iter_mut().find(|(k, _)| **k == *r.key) {
                Some(slot) => slot.1 = value,
                None => entry.fields.push((r.key.clone(), value)),
            }
        }
        entry.telegrams += 1;
        entry.last_seen = Some(now);
        if rssi_dbm.is_some() {
            entry.rssi_dbm = rssi_dbm;
        }
        let changed = entry.fields != entry.emitted;
        let emit = match policy {
            Emit::Every => true,
            Emit::Changes => changed,
            Emit::Interval(every) => {
                changed || entry.emitted_at.is_none_or(|at| is_due(at, every, now))
            }
        };
        self.dirty = true;
        Update { changed, emit }
    }

    /// Records that the meter's current state went out.
    pub fn mark_emitted(&mut self, meter: &str, now: SystemTime) {
        if let Some(e) = self.meters.get_mut(meter) {
            e.emitted = e.fields.clone();
            e.emitted_at = Some(now);
            self.dirty = true;
        }
    }

    /// Meters whose periodic re-emit is due (for `Emit::Interval` without new telegrams).
    pub fn due_for_reemit(&self, every: Duration, now: SystemTime) -> Vec<String> {
        self.meters
            .iter()
            .filter(|(_, e)| {
                !e.fields.is_empty() && e.emitted_at.is_some_and(|at| is_due(at, every, now))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Forgets meters not in `keep` (removed from the configuration); returns the removed keys.
    pub fn retain_meters(&mut self, keep: &dyn Fn(&str) -> bool) -> Vec<String> {
        let gone: Vec<String> = self.meters.keys().filter(|k| !keep(k)).cloned().collect();
        for k in &gone {
            self.meters.remove(k);
        }
        if !gone.is_empty() {
            self.dirty = true;
        }
        gone
    }

    /// Writes the state if it changed since the last save: to a temporary file, then renamed
    /// over the old one, so a crash or a full disk never leaves half a file behind.
    pub fn save(&mut self, compact: &CompactFormats) -> Result<(), StateError> {
        match self.snapshot(compact) {
            Some(snapshot) => snapshot.write().inspect_err(|_| self.dirty = true),
            None => Ok(()),
        }
    }

    /// The state to write, if it changed since the last snapshot, so the writing (and its
    /// flush to the device, slow on an SD card) can happen away from the event loop. A
    /// snapshot that could not be written must be reported with [`StateCache::write_failed`].
    pub fn snapshot(&mut self, compact: &CompactFormats) -> Option<Snapshot> {
        let file = self.file.clone()?;
        if !self.dirty {
            return None;
        }
        let mut meters: Vec<(&String, &MeterEntry)> = self.meters.iter().collect();
        meters.sort_by(|a, b| a.0.cmp(b.0));
        let mut layouts: Vec<(u16, String)> = compact
            .learned()
            .map(|(k, l)| (k.manufacturer, hex::encode_upper(l)))
            .collect();
        layouts.sort();
        let file_view = StateFile {
            compact_formats: layouts
                .into_iter()
                .map(|(manufacturer, layout)| LayoutView {
                    layout,
                    manufacturer,
                })
                .collect(),
            meters: MetersView(&meters),
            version: 1,
        };
        // Sized like the last one: growing by doubling would hold up to twice the text.
        let mut text = Vec::with_capacity(self.last_snapshot_len + self.last_snapshot_len / 8);
        // Writing into a Vec cannot fail, and every value here serializes.
        if serde_json::to_writer(&mut text, &file_view).is_err() {
            return None;
        }
        self.last_snapshot_len = text.len();
        Some(Snapshot { file, text })
    }

    /// A snapshot was not written: the next one writes everything again.
    pub fn write_failed(&mut self) {
        self.dirty = true;
    }
}

/// The serialized state, ready to be written (see [`StateCache::snapshot`]).
#[derive(Debug)]
pub struct Snapshot {
    file: PathBuf,
    text: Vec<u8>,
}

impl Snapshot {
    pub fn write(&self) -> Result<(), StateError> {
        if let Some(dir) = self.file.parent() {
            // The directory may have been missing at start (a mount not there yet).
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        write_atomically(&self.file, &self.text)
    }
}

/// Replaces `file` with `bytes` so that a crash, a power cut or a full disk leaves either the old
/// or the new content, never a truncated file: written to a temporary file beside it, flushed
/// to the device, then renamed over it.
pub fn write_atomically(file: &Path, bytes: &[u8]) -> Result<(), StateError> {
    use std::io::Write as _;
    let mut tmp_name = file.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    written.map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, file).map_err(io_err(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(key: &str, v: f64) -> Reading {
        Reading {
            key: key.into(),
            value: ReadingValue::Number(v),
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "meterbridge-state-{tag}-{}-{}",
            std::process::id(),
            millis(SystemTime::now())
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn merges_fields_and_emits_on_change_only() {
        let t0 = SystemTime::now();
        let mut c = StateCache::in_memory();
        let u = c.update(
            "m",
            &[num("total_m3", 1.5), num("flow_m3h", 0.1)],
            &[],
            Some(-70),
            Emit::Changes,
            t0,
        );
        assert_eq!(
            u,
            Update {
                changed: true,
                emit: true
            }
        );
        c.mark_emitted("m", t0);
        // A short telegram carries only the total: the flow stays known, nothing changed.
        let u = c.update("m", &[num("total_m3", 1.5)], &[], None, Emit::Changes, t0);
        assert_eq!(
            u,
            Update {
                changed: false,
                emit: false
            }
        );
        let e = c.get("m").unwrap();
        assert_eq!(e.fields.len(), 2);
        assert_eq!(e.rssi_dbm, Some(-70));
        assert_eq!(e.telegrams, 2);
        let u = c.update("m", &[num("total_m3", 1.6)], &[], None, Emit::Changes, t0);
        assert!(u.emit);
    }

    #[test]
    fn every_and_interval_policies() {
        let t0 = SystemTime::now();
        let mut c = StateCache::in_memory();
        let r = [num("total_m3", 1.0)];
        c.update("m", &r, &[], None, Emit::Every, t0);
        c.mark_emitted("m", t0);
        assert!(c.update("m", &r, &[], None, Emit::Every, t0).emit);
        let every = Duration::from_secs(900);
        assert!(
            !c.update(
                "m",
                &r,
                &[],
                None,
                Emit::Interval(every),
                t0 + Duration::from_secs(60)
            )
            .emit
        );
        assert!(
            c.update(
                "m",
                &r,
                &[],
                None,
                Emit::Interval(every),
                t0 + Duration::from_secs(901)
            )
            .emit
        );
        assert_eq!(
            c.due_for_reemit(every, t0 + Duration::from_secs(1000)),
            vec!["m".to_string()]
        );
        assert!(c
            .due_for_reemit(every, t0 + Duration::from_secs(10))
            .is_empty());
    }

    #[test]
    fn a_clock_set_back_does_not_stall_re_emits() {
        let t0 = SystemTime::now();
        let every = Duration::from_secs(900);
        let mut c = StateCache::in_memory();
        let r = [num("total_m3", 1.0)];
        c.update("m", &r, &[], None, Emit::Interval(every), t0);
        c.mark_emitted("m", t0);
        // The clock jumps back a day: due at once, not in 24 hours.
        let earlier = t0 - Duration::from_secs(86_400);
        assert!(
            c.update("m", &r, &[], None, Emit::Interval(every), earlier)
                .emit
        );
        assert_eq!(c.due_for_reemit(every, earlier), vec!["m".to_string()]);
        // And forward again: normal rules.
        c.mark_emitted("m", earlier);
        assert!(
            !c.update(
                "m",
                &r,
                &[],
                None,
                Emit::Interval(every),
                earlier + Duration::from_secs(60)
            )
            .emit
        );
    }

    #[test]
    fn scale_and_offset() {
        let mut c = StateCache::in_memory();
        let adjust = [FieldAdjust {
            field: "total_m3".into(),
            scale: 0.001,
            offset: 100.0,
        }];
        c.update(
            "m",
            &[num("total_m3", 2500.0), num("other", 3.0)],
            &adjust,
            None,
            Emit::Every,
            SystemTime::now(),
        );
        let e = c.get("m").unwrap();
        assert_eq!(e.fields[0].1, ReadingValue::Number(102.5));
        assert_eq!(e.fields[1].1, ReadingValue::Number(3.0));
    }

    #[test]
    fn persisted_state_survives_a_restart_without_re_emitting() {
        let dir = temp_dir("restart");
        let t0 = SystemTime::now();
        let mut compact = CompactFormats::new();
        let layout = vec![0x04, 0x13, 0x44, 0x13];
        let sig = compact.insert(0x2C2D, layout.clone());
        {
            let (mut c, warn) = StateCache::load(&dir, &mut CompactFormats::new());
            assert!(warn.is_none());
            c.update(
                "kam_1",
                &[
                    num("total_m3", 6.408),
                    Reading {
                        key: "status".into(),
                        value: ReadingValue::Text("OK".into()),
                    },
                ],
                &[],
                Some(-84),
                Emit::Changes,
                t0,
            );
            c.mark_emitted("kam_1", t0);
            c.save(&compact).unwrap();
        }
        let mut learned = CompactFormats::new();
        let (mut c, warn) = StateCache::load(&dir, &mut learned);
        assert!(warn.is_none());
        assert!(learned.lookup(0x2C2D, sig).is_some());
        let e = c.get("kam_1").unwrap();
        assert_eq!(
            e.fields[0],
            (Arc::from("total_m3"), ReadingValue::Number(6.408))
        );
        assert_eq!(e.telegrams, 1);
        assert_eq!(e.rssi_dbm, Some(-84));
        // The same reading after the restart is not a change.
        let u = c.update(
            "kam_1",
            &[num("total_m3", 6.408)],
            &[],
            None,
            Emit::Changes,
            t0,
        );
        assert!(!u.emit);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The file's layout is what earlier releases wrote and read (`version` 1): keys in name
    /// order, fields as `[key, value]` pairs, a value that is not a finite number as `null`.
    #[test]
    fn the_state_file_keeps_its_layout() {
        let dir = temp_dir("layout");
        let t0 = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let mut compact = CompactFormats::new();
        compact.insert(0x2C2D, vec![0x04, 0x13]);
        let (mut c, _) = StateCache::load(&dir, &mut CompactFormats::new());
        c.update(
            "b_meter",
            &[
                num("total_m3", 6.5),
                num("flow_m3h", f64::NAN),
                Reading {
                    key: "status".into(),
                    value: ReadingValue::Text("LEAK \"now\"".into()),
                },
            ],
            &[],
            None,
            Emit::Changes,
            t0,
        );
        c.update(
            "a_meter",
            &[num("total_kwh", 12.0)],
            &[],
            Some(-70),
            Emit::Changes,
            t0,
        );
        c.mark_emitted("a_meter", t0);
        c.save(&compact).unwrap();
        let text = std::fs::read_to_string(dir.join(FILE_NAME)).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"compact_formats":[{"layout":"0413","manufacturer":11309}],"meters":{"#,
                r#""a_meter":{"emitted":[["total_kwh",12.0]],"emitted_at":1700000000123,"#,
                r#""fields":[["total_kwh",12.0]],"last_seen":1700000000123,"rssi_dbm":-70,"#,
                r#""telegrams":1},"#,
                r#""b_meter":{"emitted":[],"fields":[["total_m3",6.5],["flow_m3h",null],"#,
                r#"["status","LEAK \"now\""]],"last_seen":1700000000123,"telegrams":1}},"#,
                r#""version":1}"#
            )
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn damaged_file_is_moved_aside() {
        let dir = temp_dir("damaged");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(FILE_NAME), "{not json").unwrap();
        let (c, warn) = StateCache::load(&dir, &mut CompactFormats::new());
        assert!(matches!(warn, Some(StateError::Damaged { .. })), "{warn:?}");
        assert!(c.get("x").is_none());
        assert!(dir.join("state.json.damaged").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_save_keeps_the_old_file_and_writes_everything_next_time() {
        let dir = temp_dir("failed-save");
        let (mut c, warn) = StateCache::load(&dir, &mut CompactFormats::new());
        assert!(warn.is_none());
        let t0 = SystemTime::now();
        c.update("m", &[num("total_m3", 1.0)], &[], None, Emit::Every, t0);
        c.save(&CompactFormats::new()).unwrap();
        let before = std::fs::read_to_string(dir.join(FILE_NAME)).unwrap();

        // A directory where the temporary file goes makes the write fail even for root.
        let tmp = dir.join("state.json.tmp");
        std::fs::create_dir(&tmp).unwrap();
        c.update("m", &[num("total_m3", 2.0)], &[], None, Emit::Every, t0);
        let err = c.save(&CompactFormats::new()).unwrap_err();
        assert!(err.to_string().contains("state.json.tmp"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.join(FILE_NAME)).unwrap(),
            before
        );

        std::fs::remove_dir(&tmp).unwrap();
        c.save(&CompactFormats::new()).unwrap();
        let (again, _) = StateCache::load(&dir, &mut CompactFormats::new());
        let e = again.get("m").unwrap();
        assert_eq!(e.fields[0].1, ReadingValue::Number(2.0));
        assert_eq!(e.telegrams, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unusable_directory_is_a_warning_and_saving_retries() {
        let parent = temp_dir("unusable");
        std::fs::create_dir_all(&parent).unwrap();
        // A regular file where a directory should be: neither root nor anyone can create it.
        let blocker = parent.join("blocker");
        std::fs::write(&blocker, "").unwrap();
        let dir = blocker.join("state");
        let (mut c, warn) = StateCache::load(&dir, &mut CompactFormats::new());
        assert!(
            matches!(warn, Some(StateError::Unusable { .. })),
            "{warn:?}"
        );
        c.update(
            "m",
            &[num("total_m3", 3.0)],
            &[],
            None,
            Emit::Every,
            SystemTime::now(),
        );
        assert_eq!(c.get("m").unwrap().telegrams, 1);
        assert!(c.save(&CompactFormats::new()).is_err());

        std::fs::remove_file(&blocker).unwrap();
        c.save(&CompactFormats::new()).unwrap();
        let (again, warn) = StateCache::load(&dir, &mut CompactFormats::new());
        assert!(warn.is_none());
        assert_eq!(
            again.get("m").unwrap().fields[0].1,
            ReadingValue::Number(3.0)
        );
        let _ = std::fs::remove_dir_all(&parent);
    }

    #[test]
    fn removed_meters_are_forgotten() {
        let mut c = StateCache::in_memory();
        c.update(
            "a",
            &[num("x", 1.0)],
            &[],
            None,
            Emit::Every,
            SystemTime::now(),
        );
        c.update(
            "b",
            &[num("x", 1.0)],
            &[],
            None,
            Emit::Every,
            SystemTime::now(),
        );
        let gone = c.retain_meters(&|k| k == "a");
        assert_eq!(gone, vec!["b".to_string()]);
        assert!(c.get("a").is_some() && c.get("b").is_none());
    }
}
