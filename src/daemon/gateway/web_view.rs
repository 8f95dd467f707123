//! What the gateway tells the web page (`crate::web`): a JSON view of the meters, links and
//! meters heard nearby, rebuilt at most once a second on the gateway task, and the page's
//! commands (try a key, add a meter) carried out there. Nothing here is reached when the
//! configuration has no `web` section.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::{state_key, Gateway, Meter};
use crate::config::schema::{Emit, KeySource, MeterAddress, MeterConfig, Secret};
use crate::drivers::run::DriverRun;
use crate::drivers::ReadingValue;
use crate::output::wmbusmeters::{media_name, push_value};
use crate::security::KeyStore;
use crate::telegram::wireless::{parse_key_argument, WirelessError, WirelessFrame};
use crate::web::{Command, View};

mod edit;
mod meter_detail;

/// Meters heard but not configured that are remembered (oldest forgotten first): a gateway in
/// a block of flats hears hundreds, and a memory bound matters more than completeness.
const HEARD_LIMIT: usize = 2000;
/// Readings shown per meter on the overview.
const MAIN_READINGS: usize = 4;
/// Telegrams kept per meter for its page.
const RECENT: usize = 10;

/// A telegram as it arrived (wireless: without data-link CRCs), for the meter's page.
#[derive(Clone)]
struct Recent {
    at: SystemTime,
    bytes: Vec<u8>,
    rssi: Option<i16>,
    via: Arc<str>,
}

#[derive(Default)]
struct MeterSeen {
    via: Option<Arc<str>>,
    last: Option<Instant>,
    /// Smoothed time between telegrams: what "late" is measured against.
    usual: Option<Duration>,
    errors: u64,
    last_error: Option<String>,
    /// Its last telegram failed the key check: the configured key is not this meter's.
    key_wrong: bool,
    recent: VecDeque<Recent>,
}

struct HeardMeter {
    manufacturer: String,
    medium: &'static str,
    encryption: &'static str,
    driver: Option<String>,
    rssi: Option<i16>,
    via: Arc<str>,
    times: u64,
    last_seen: SystemTime,
    /// The last telegram (CRCs stripped), on which a key is tried before the meter is added.
    frame: Vec<u8>,
    readings: Vec<(String, String)>,
    /// A key tried on the page failed on its telegram, so "key wrong" rather than "needs a
    /// key" until a telegram decodes.
    key_tried_wrong: bool,
}

#[derive(Default)]
struct LinkSeen {
    connected: Option<bool>,
    telegrams: u64,
    errors: u64,
    /// (time, telegrams) once a second for the last minute: the per-minute rate.
    history: VecDeque<(Instant, u64)>,
}

impl LinkSeen {
    fn per_minute(&mut self, now: Instant) -> u64 {
        self.history.push_back((now, self.telegrams));
        while self
            .history
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(60))
        {
            self.history.pop_front();
        }
        self.telegrams - self.history.front().map_or(self.telegrams, |(_, n)| *n)
    }
}

pub(super) struct WebState {
    tx: watch::Sender<View>,
    dirty: bool,
    last_publish: Option<Instant>,
    meters: Vec<MeterSeen>,
    heard: HashMap<String, HeardMeter>,
    receivers: BTreeMap<Arc<str>, LinkSeen>,
    buses: Vec<(String, LinkSeen)>,
    gateway: LinkSeen,
    state_dir: std::path::PathBuf,
    /// Names of the meters added on the page (saved in the state directory), which the page
    /// may change; the others come from the configuration file.
    pub(super) page_meters: HashSet<String>,
}

impl WebState {
    pub(super) fn new(
        tx: watch::Sender<View>,
        buses: Vec<String>,
        receivers: Vec<Arc<str>>,
        state_dir: std::path::PathBuf,
    ) -> WebState {
        WebState {
            tx,
            dirty: true,
            last_publish: None,
            meters: Vec::new(),
            heard: HashMap::new(),
            receivers: receivers
                .into_iter()
                .map(|r| (r, LinkSeen::default()))
                .collect(),
            buses: buses
                .into_iter()
                .map(|b| (b, LinkSeen::default()))
                .collect(),
            gateway: LinkSeen::default(),
            state_dir,
            page_meters: HashSet::new(),
        }
    }

    fn meter(&mut self, index: usize) -> &mut MeterSeen {
        if self.meters.len() <= index {
            self.meters.resize_with(index + 1, MeterSeen::default);
        }
        &mut self.meters[index]
    }

    fn seen(&mut self, index: usize, via: Arc<str>) {
        let now = Instant::now();
        let m = self.meter(index);
        if let Some(last) = m.last {
            let gap = now.duration_since(last);
            m.usual = Some(match m.usual {
                Some(u) => (u * 3 + gap) / 4,
                None => gap,
            });
        }
        m.last = Some(now);
        m.via = Some(via);
        self.dirty = true;
    }
}

/// The readings the overview shows: totals first, then the other numbers, each with its value
/// as the MQTT state prints it.
fn main_readings<K: AsRef<str>>(fields: &[(K, ReadingValue)]) -> Vec<(String, String)> {
    let mut numbers: Vec<&(K, ReadingValue)> = fields
        .iter()
        .filter(|(_, v)| matches!(v, ReadingValue::Number(n) if n.is_finite()))
        .collect();
    numbers.sort_by_key(|(k, _)| !k.as_ref().starts_with("total"));
    numbers
        .into_iter()
        .take(MAIN_READINGS)
        .map(|(k, v)| {
            let mut text = String::new();
            push_value(&mut text, v);
            (k.as_ref().to_string(), text)
        })
        .collect()
}

fn address_text(address: &MeterAddress) -> String {
    match address {
        MeterAddress::Wireless(id) => id.clone(),
        MeterAddress::Primary(a) => a.to_string(),
        MeterAddress::Secondary(s) => s.clone(),
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Refuses any key text that is not 16 or 32 hex digits, without repeating it.
fn key_store_for(id: &str, key: &str) -> Result<KeyStore, String> {
    let digits: String = key.chars().filter(|c| !c.is_whitespace()).collect();
    if !(digits.len() == 32 || digits.len() == 16) || !digits.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err("a key is 32 hex digits (16 for Diehl PRIOS)".into());
    }
    let mut keys = KeyStore::default();
    parse_key_argument(&mut keys, &format!("{id}={digits}"))
        .map_err(|_| "the key is not usable for this meter".to_string())?;
    Ok(keys)
}

impl Gateway {
    /// A wireless telegram was decoded (or not): counts for its receiver, and when its meter
    /// is not configured, what the "heard nearby" list shows.
    pub(super) fn web_heard(
        &mut self,
        input: &Arc<str>,
        rssi: Option<i16>,
        decoded: &Result<WirelessFrame, WirelessError>,
        stripped: &[u8],
    ) {
        let Some(web) = self.web.as_mut() else {
            return;
        };
        web.dirty = true;
        let link = web.receivers.entry(input.clone()).or_default();
        link.telegrams += 1;
        let head = match decoded {
            Ok(f) => Some(&f.link),
            Err(e) => e.link.as_deref(),
        };
        let Some(head) = head else {
            link.errors += 1;
            return;
        };
        let id = head.meter_id().to_ascii_lowercase();
        if let Some(&index) = self.wireless.get(&id) {
            let m = web.meter(index);
            m.key_wrong = matches!(decoded, Err(e) if e.is_key_error());
            if let Err(e) = decoded {
                m.errors += 1;
                m.last_error = Some(e.to_string());
            }
            web.seen(index, input.clone());
            self.web_recent(index, stripped, rssi, input.clone());
            return;
        }
        let driver = self
            .registry
            .detect(
                &head.manufacturer_letters(),
                head.dll.version,
                head.dll.device_type.code(),
            )
            .map(|d| d.name().to_string());
        // A key failed when one was there to try: the gateway's (a default key, or one for
        // this id) or one tried on the page.
        let tried_wrong = web.heard.get(&id).is_some_and(|h| h.key_tried_wrong);
        let key_known = self.run.decoder().keys.get(&id).is_some();
        let key_error = matches!(decoded, Err(e) if e.is_key_error());
        let encryption = match decoded {
            Err(e) if e.is_key_error() && (key_known || tried_wrong) => "key wrong",
            Err(e) if e.is_key_error() => "needs a key",
            Err(_) => "cannot be decoded",
            Ok(f) => crate::cli::listen::encryption_name(&f.link),
        };
        let manufacturer = head.manufacturer_letters();
        let medium = media_name(head.dll.device_type.code());
        // An unencrypted meter shows what it measures, read with the driver detection chose.
        let readings = match (decoded, &driver) {
            (Ok(frame), Some(d)) => match frame.telegram() {
                Ok(t) => self
                    .run
                    .apply(&t, d)
                    .map(|out| {
                        let fields: Vec<(String, ReadingValue)> = out
                            .readings
                            .into_iter()
                            .map(|r| (r.key.to_string(), r.value))
                            .collect();
                        main_readings(&fields)
                    })
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            },
            _ => Vec::new(),
        };
        let Some(web) = self.web.as_mut() else {
            return;
        };
        if web.heard.len() >= HEARD_LIMIT && !web.heard.contains_key(&id) {
            if let Some(oldest) = web
                .heard
                .iter()
                .min_by_key(|(_, h)| h.last_seen)
                .map(|(k, _)| k.clone())
            {
                web.heard.remove(&oldest);
            }
        }
        let times = web.heard.get(&id).map_or(0, |h| h.times) + 1;
        web.heard.insert(
            id,
            HeardMeter {
                manufacturer,
                medium,
                encryption,
                driver,
                rssi,
                via: input.clone(),
                times,
                last_seen: SystemTime::now(),
                frame: stripped.to_vec(),
                readings,
                key_tried_wrong: key_error && tried_wrong,
            },
        );
    }

    /// A configured meter's telegram or read failed.
    pub(super) fn web_error(&mut self, index: usize, error: &str) {
        if let Some(web) = self.web.as_mut() {
            let m = web.meter(index);
            m.errors += 1;
            m.last_error = Some(error.to_string());
            web.dirty = true;
        }
    }

    /// A wired meter answered a read.
    pub(super) fn web_wired(&mut self, index: usize) {
        let bus = self.meters.get(index).and_then(|m| m.cfg.bus.clone());
        if let (Some(web), Some(bus)) = (self.web.as_mut(), bus) {
            if let Some((_, link)) = web.buses.iter_mut().find(|(n, _)| *n == bus) {
                link.telegrams += 1;
            }
            web.seen(index, Arc::from(bus.as_str()));
        }
    }

    /// A bus connected or lost its connection.
    pub(super) fn web_bus_link(&mut self, bus: usize, up: bool) {
        if let Some((_, link)) = self.web.as_mut().and_then(|w| w.buses.get_mut(bus)) {
            link.connected = Some(up);
            if !up {
                link.errors += 1;
            }
        }
        if let Some(web) = self.web.as_mut() {
            web.dirty = true;
        }
    }

    /// Publishes the view if something changed (and every 10 s, so "late" stays true).
    pub(super) fn web_publish(&mut self) {
        let Some(web) = self.web.as_mut() else {
            return;
        };
        let now = Instant::now();
        let stale = web
            .last_publish
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10));
        if !web.dirty && !stale {
            return;
        }
        web.dirty = false;
        web.last_publish = Some(now);
        web.gateway.telegrams = self.stats.telegrams;
        let per_minute = web.gateway.per_minute(now);
        let mut links = Vec::new();
        for (name, link) in web.receivers.iter_mut() {
            let connected = self.receivers_up.get(name).copied();
            links.push(serde_json::json!({
                "name": &**name, "kind": "receiver", "connected": connected,
                "telegrams": link.telegrams, "per_minute": link.per_minute(now), "errors": link.errors,
            }));
        }
        for (name, link) in web.buses.iter_mut() {
            links.push(serde_json::json!({
                "name": name, "kind": "bus", "connected": link.connected,
                "telegrams": link.telegrams, "per_minute": link.per_minute(now), "errors": link.errors,
            }));
        }
        let mut meters = Vec::with_capacity(self.meters.len());
        for (i, m) in self.meters.iter().enumerate() {
            let seen = web.meters.get(i);
            let entry = self.state.get(&m.state_key);
            let late = seen.is_some_and(|s| match (s.last, s.usual) {
                (Some(last), Some(usual)) => {
                    now.duration_since(last) > (usual * 3).max(Duration::from_secs(90))
                }
                _ => false,
            });
            let driver = m
                .identity
                .as_ref()
                .map_or(m.cfg.driver.clone(), |(d, _, _)| d.clone());
            let id = address_text(&m.cfg.address);
            meters.push(serde_json::json!({
                "name": m.cfg.name,
                "slug": m.slug,
                "driver": driver,
                "id": id,
                "via": seen.and_then(|s| s.via.as_deref()).or(m.cfg.bus.as_deref()),
                "last_seen": entry.and_then(|e| e.last_seen).map(unix),
                "late": late,
                "rssi": entry.and_then(|e| e.rssi_dbm),
                "telegrams": entry.map_or(0, |e| e.telegrams),
                "readings": entry.map(|e| main_readings(&e.fields)).unwrap_or_default(),
                "errors": seen.map_or(0, |s| s.errors),
                "key_wrong": seen.is_some_and(|s| s.key_wrong),
                "last_error": seen.and_then(|s| s.last_error.as_deref()),
            }));
        }
        self.web_reception(&mut links, &mut meters);
        let Some(web) = self.web.as_mut() else {
            return;
        };
        let mut heard: Vec<(&String, &HeardMeter)> = web.heard.iter().collect();
        heard.sort_by(|a, b| b.1.rssi.cmp(&a.1.rssi).then(a.0.cmp(b.0)));
        let heard: Vec<serde_json::Value> = heard
            .into_iter()
            .map(|(id, h)| {
                serde_json::json!({
                    "id": id, "manufacturer": h.manufacturer, "medium": h.medium,
                    "rssi": h.rssi, "times": h.times, "last_seen": unix(h.last_seen),
                    "encryption": h.encryption, "driver": h.driver, "via": &*h.via,
                    "readings": h.readings,
                })
            })
            .collect();
        let s = &self.stats;
        let view = serde_json::json!({
            "now": unix(SystemTime::now()),
            "gateway": {
                "version": env!("CARGO_PKG_VERSION"),
                "telegrams": s.telegrams, "per_minute": per_minute,
                "decode_errors": s.decode_errors, "key_errors": s.key_errors,
                "bus_errors": s.bus_errors, "unknown_meters": s.unknown_meters,
            },
            "links": links,
            "meters": meters,
            "heard": heard,
        });
        web.tx.send_replace(View {
            json: Arc::from(view.to_string()),
        });
    }

    /// Decodes a heard meter's last telegram with `key` and the driver: what the page shows
    /// after "Try key", and the check before a meter is added.
    fn web_try(&self, id: &str, key: Option<&str>, driver: &str) -> Result<String, String> {
        let web = self.web.as_ref().ok_or("the web page is off")?;
        let heard = web
            .heard
            .get(id)
            .ok_or_else(|| format!("meter {id} has not been heard (yet)"))?;
        let keys = match key {
            Some(k) => key_store_for(id, k)?,
            None => KeyStore::default(),
        };
        let mut run = DriverRun::new(self.registry, keys);
        let frame = run.decoder().decode(&heard.frame).map_err(|e| {
            if e.is_key_error() {
                match key {
                    Some(_) => format!("wrong key: {e}"),
                    None => "the meter is encrypted: it needs its key".to_string(),
                }
            } else {
                format!("the telegram cannot be decoded: {e}")
            }
        })?;
        let telegram = frame
            .telegram()
            .map_err(|e| format!("the telegram cannot be decoded: {e}"))?;
        let out = run
            .apply(&telegram, driver)
            .map_err(|e| format!("driver {driver}: {e}"))?;
        let fields: Vec<(String, ReadingValue)> = out
            .readings
            .into_iter()
            .map(|r| (r.key.to_string(), r.value))
            .collect();
        let shown: Vec<String> = main_readings(&fields)
            .into_iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        Ok(match key {
            Some(_) => format!("key works: {}", shown.join(", ")),
            None => format!("readable: {}", shown.join(", ")),
        })
    }

    pub(super) fn web_command(&mut self, command: Command) {
        match command {
            Command::CheckKey { id, key, reply } => {
                let id = id.to_ascii_lowercase();
                let driver = self
                    .web
                    .as_ref()
                    .and_then(|w| w.heard.get(&id))
                    .and_then(|h| h.driver.clone())
                    .unwrap_or_else(|| "auto".into());
                let answer = self.web_try(&id, Some(&key), &driver);
                self.web_note_wrong_key(&id, &answer);
                let _ = reply.send(answer);
            }
            Command::AddMeter {
                id,
                name,
                driver,
                key,
                reply,
            } => {
                let id = id.to_ascii_lowercase();
                let answer = self.web_add(id.clone(), name, driver, key);
                self.web_note_wrong_key(&id, &answer);
                let _ = reply.send(answer);
            }
            Command::MeterDetail { which, reply } => {
                let _ = reply.send(self.web_meter_detail(&which));
            }
            Command::EditMeter {
                slug,
                name,
                driver,
                key,
                reply,
            } => {
                let _ = reply.send(self.web_edit(&slug, name, driver, key));
            }
            Command::RemoveMeter { slug, reply } => {
                let _ = reply.send(self.web_remove(&slug));
            }
            Command::Wired(command) => self.web_wired_command(command),
        }
    }

    /// Marks a heard encrypted meter "key wrong" when a key tried on the page did not open
    /// it, and "needs a key" again once one did.
    fn web_note_wrong_key(&mut self, id: &str, answer: &Result<String, String>) {
        let wrong = match answer {
            Err(e) if e.starts_with("wrong key") => true,
            Ok(_) => false,
            Err(_) => return,
        };
        if let Some(web) = self.web.as_mut() {
            if let Some(h) = web.heard.get_mut(id) {
                if h.encryption == "key wrong" || h.encryption == "needs a key" {
                    h.key_tried_wrong = wrong;
                    h.encryption = if wrong { "key wrong" } else { "needs a key" };
                    web.dirty = true;
                }
            }
        }
    }

    /// Adds a heard meter: checked on its last telegram, live at once, saved for restarts.
    fn web_add(
        &mut self,
        id: String,
        name: String,
        driver: String,
        key: Option<String>,
    ) -> Result<String, String> {
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err("give a name of 1 to 100 characters".into());
        }
        if self.meters.iter().any(|m| m.cfg.name == name) {
            return Err(format!("there is already a meter named {name:?}"));
        }
        if self.wireless.contains_key(&id) {
            return Err(format!("meter {id} is already configured"));
        }
        if driver != "auto" && self.registry.get(&driver).is_none() {
            return Err(format!("no driver is named {driver:?}"));
        }
        let checked = self.web_try(&id, key.as_deref(), &driver)?;
        let cfg = MeterConfig {
            key: key
                .as_ref()
                .map(|k| KeySource::Inline(Secret::new(k.clone()))),
            ..MeterConfig::new(
                name.clone(),
                MeterAddress::Wireless(id.clone()),
                driver.clone(),
            )
        };
        let entry = crate::web::added::entry(&cfg)?;
        let state_dir = self.web.as_ref().map(|w| w.state_dir.clone());
        if let Some(dir) = &state_dir {
            crate::web::added::append(dir, &entry).map_err(|e| format!("not added: {e}"))?;
        }
        if let Some(k) = &key {
            let digits: String = k.chars().filter(|c| !c.is_whitespace()).collect();
            parse_key_argument(&mut self.run.decoder().keys, &format!("{id}={digits}"))
                .map_err(|_| "the key is not usable for this meter".to_string())?;
        }
        let index = self.meters.len();
        self.meters.push(Meter {
            state_key: state_key(&cfg),
            slug: cfg.slug(),
            cfg,
            emit: Emit::Every,
            expire_after: None,
            announced: None,
            announced_keys: Default::default(),
            only_values: false,
            identity: None,
            reception: Default::default(),
        });
        self.wireless.insert(id.clone(), index);
        self.bridge_added(index);
        // Its last telegram gives the overview a reading at once.
        let heard = self.web.as_mut().and_then(|w| w.heard.remove(&id));
        if let Some(h) = heard {
            if let Ok(frame) = self.run.decoder().decode(&h.frame) {
                if let Ok(t) = frame.telegram() {
                    if let Ok(out) = self.run.apply(&t, &driver) {
                        self.reading(index, out, h.rssi);
                    }
                }
            }
            if let Some(web) = self.web.as_mut() {
                web.seen(index, h.via.clone());
            }
            self.web_recent(index, &h.frame, h.rssi, h.via);
        }
        if let Some(web) = self.web.as_mut() {
            web.page_meters.insert(name.clone());
        }
        tracing::info!(meter = %name, "meter {name} ({id}) added on the web page");
        Ok(format!("added {name}; {checked}"))
    }
}
