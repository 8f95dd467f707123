//! The meters over MQTT the way zigbee2mqtt tells about its devices: a retained
//! `<base>/bridge/devices` with every configured meter, every wireless meter heard and every
//! wired meter found by a scan on the web page that is not configured, and `<base>/bridge/event`
//! when a meter is heard or found for the first time or added on the web page (docs/mqtt.md).
//! Nothing here is reached without MQTT.
//!
//! The device list changes only with what a meter *is* (its driver, manufacturer, medium,
//! encryption) or with the set of meters, never with a reading, so a gateway hearing hundreds
//! of meters does not republish a large retained document every few seconds; and even then at
//! most once per [`MIN_GAP`].

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::web_wired::names_found;
use super::{timestamp, Gateway, Sink};
use crate::config::schema::MeterAddress;
use crate::master::Found;
use crate::output::wmbusmeters::media_name;
use crate::telegram::wireless::{WirelessError, WirelessFrame};

/// Shortest time between two device lists: a street of meters first heard one after the other
/// gives one list every few seconds, not one per meter.
pub(super) const MIN_GAP: Duration = Duration::from_secs(5);
/// Heard, not configured meters in the list (the least recently heard forgotten first).
const HEARD_LIMIT: usize = 2000;
/// Meters already announced by a `meter_heard` event in this run; beyond it the set starts
/// over (a gateway running for years among passing meters must not grow without bound).
const EVENTED_LIMIT: usize = 10_000;
/// Wired meters found by scans and not configured, in the list; a bus holds at most 250 at
/// primary addresses, but secondary addressing allows more, and a run may scan many times.
const FOUND_LIMIT: usize = 2000;

/// What the list says about a meter that a reading does not change.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Static {
    manufacturer: Option<String>,
    medium: Option<String>,
    driver: Option<String>,
    encryption: Option<&'static str>,
}

#[derive(Debug, Default)]
struct Dynamic {
    rssi: Option<i16>,
    source: Option<Arc<str>>,
    last_seen: Option<SystemTime>,
}

/// A wired meter a scan found that no configured meter names.
#[derive(Debug)]
struct FoundWired {
    found: Found,
    last_seen: SystemTime,
}

#[derive(Default)]
pub(super) struct BridgeDevices {
    /// By configured meter index: what its telegrams showed.
    configured: Vec<(Static, Dynamic)>,
    /// Wireless meters heard that are not configured, by id.
    heard: BTreeMap<String, (Static, Dynamic)>,
    evented: HashSet<String>,
    /// Wired meters found by a scan on the web page that are not configured, by bus name and
    /// secondary address (unique on a bus, unlike a primary address before it is set).
    found: BTreeMap<(String, String), FoundWired>,
    /// Found meters already announced by a `meter_found` event in this run.
    found_evented: HashSet<(String, String)>,
    /// The list must be published again (the set or a meter's static data changed).
    changed: bool,
    last_publish: Option<Instant>,
}

impl BridgeDevices {
    pub(super) fn new() -> BridgeDevices {
        BridgeDevices {
            changed: true,
            ..BridgeDevices::default()
        }
    }

    /// A configured meter's configuration changed (its address): the list goes out again.
    pub(super) fn meter_changed(&mut self) {
        self.changed = true;
    }

    fn configured(&mut self, index: usize) -> &mut (Static, Dynamic) {
        if self.configured.len() <= index {
            self.configured.resize_with(index + 1, Default::default);
        }
        &mut self.configured[index]
    }

    /// Replaces a meter's static data, noting whether it changed.
    fn set_static(&mut self, index: usize, update: impl FnOnce(&mut Static)) {
        let entry = &mut self.configured(index).0;
        let before = entry.clone();
        update(entry);
        if *entry != before {
            self.changed = true;
        }
    }
}

fn entry_json(id: &str, s: &Static, d: &Dynamic) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), id.into());
    m.insert("driver".into(), s.driver.clone().into());
    m.insert("manufacturer".into(), s.manufacturer.clone().into());
    m.insert("medium".into(), s.medium.clone().into());
    m.insert("encryption".into(), s.encryption.into());
    m.insert("last_seen".into(), d.last_seen.map(timestamp).into());
    m.insert("rssi_dbm".into(), d.rssi.into());
    m.insert("source".into(), d.source.as_deref().into());
    m
}

/// A found wired meter as the list and the `meter_found` event show it: the fields of a
/// configured wired meter that a scan can tell, and its secondary address and version.
fn found_json(bus: &str, f: &FoundWired) -> serde_json::Map<String, serde_json::Value> {
    let found = &f.found;
    let fixed = Static {
        manufacturer: Some(found.manufacturer.to_string()),
        medium: Some(media_name(found.medium.code()).to_string()),
        driver: None,
        encryption: None,
    };
    let seen = Dynamic {
        rssi: None,
        source: Some(Arc::from(bus)),
        last_seen: Some(f.last_seen),
    };
    // The identification number: the secondary address's first 8 digits.
    let id = found.secondary.get(..8).unwrap_or(&found.secondary);
    let mut m = entry_json(id, &fixed, &seen);
    m.insert("configured".into(), false.into());
    m.insert("bus".into(), bus.into());
    m.insert("address".into(), found.primary.into());
    m.insert("secondary_address".into(), found.secondary.clone().into());
    m.insert("version".into(), found.version.into());
    m
}

impl Gateway {
    /// A wireless telegram was decoded (or not): what it shows about its meter.
    pub(super) fn bridge_heard(
        &mut self,
        input: &Arc<str>,
        rssi: Option<i16>,
        decoded: &Result<WirelessFrame, WirelessError>,
    ) {
        if self.bridge.is_none() {
            return;
        }
        let head = match decoded {
            Ok(f) => &f.link,
            Err(e) => match e.link.as_deref() {
                Some(l) => l,
                None => return,
            },
        };
        let id = head.meter_id().to_ascii_lowercase();
        let manufacturer = head.manufacturer_letters();
        let medium = media_name(head.dll.device_type.code()).to_string();
        let configured = self.wireless.get(&id).copied();
        let encryption = match decoded {
            Ok(f) => crate::cli::listen::encryption_name(&f.link),
            Err(e) if e.is_key_error() => {
                let has_key = configured.is_some_and(|i| self.meters[i].cfg.key.is_some());
                if has_key {
                    "wrong key"
                } else {
                    "needs a key"
                }
            }
            Err(_) => "cannot be decoded",
        };
        let detected = match configured {
            Some(_) => None,
            None => self
                .registry
                .detect(&manufacturer, head.dll.version, head.dll.device_type.code())
                .map(|d| d.name().to_string()),
        };
        let now = SystemTime::now();
        let Some(bridge) = self.bridge.as_mut() else {
            return;
        };
        let dynamic = Dynamic {
            rssi,
            source: Some(input.clone()),
            last_seen: Some(now),
        };
        if let Some(index) = configured {
            bridge.set_static(index, |s| {
                s.manufacturer = Some(manufacturer);
                s.medium = Some(medium);
                s.encryption = Some(encryption);
            });
            bridge.configured(index).1 = dynamic;
            return;
        }
        let fresh = Static {
            manufacturer: Some(manufacturer),
            medium: Some(medium),
            driver: detected,
            encryption: Some(encryption),
        };
        match bridge.heard.get_mut(&id) {
            Some((s, d)) => {
                if *s != fresh {
                    *s = fresh;
                    bridge.changed = true;
                }
                *d = dynamic;
            }
            None => {
                if bridge.heard.len() >= HEARD_LIMIT {
                    let oldest = bridge
                        .heard
                        .iter()
                        .min_by_key(|(_, (_, d))| d.last_seen)
                        .map(|(k, _)| k.clone());
                    if let Some(k) = oldest {
                        bridge.heard.remove(&k);
                    }
                }
                let mut data = entry_json(&id, &fresh, &dynamic);
                data.insert("configured".into(), false.into());
                bridge.heard.insert(id.clone(), (fresh, dynamic));
                bridge.changed = true;
                if bridge.evented.len() >= EVENTED_LIMIT {
                    bridge.evented.clear();
                }
                if bridge.evented.insert(id) {
                    self.bridge_event("meter_heard", data.into());
                }
            }
        }
    }

    /// A configured meter's telegram was read by its driver.
    pub(super) fn bridge_reading(
        &mut self,
        index: usize,
        output: &crate::drivers::run::MeterOutput,
    ) {
        let wired = self.meters[index].cfg.bus.clone();
        let Some(bridge) = self.bridge.as_mut() else {
            return;
        };
        bridge.set_static(index, |s| {
            s.manufacturer = Some(output.manufacturer.clone());
            s.medium = Some(output.media.clone());
            s.driver = Some(output.driver.clone());
            if wired.is_some() {
                // A wired telegram that reached a driver carried its records in the clear.
                s.encryption = Some("none");
            }
        });
        if let Some(bus) = wired {
            let d = &mut bridge.configured(index).1;
            d.source = Some(Arc::from(bus.as_str()));
            d.last_seen = Some(SystemTime::now());
        }
    }

    /// A meter was added while the gateway runs (on the web page): it joins the list at once
    /// and a `meter_added` event says so.
    pub(super) fn bridge_added(&mut self, index: usize) {
        let cfg = &self.meters[index].cfg;
        let id = match &cfg.address {
            MeterAddress::Wireless(id) => Some(id.to_ascii_lowercase()),
            _ => None,
        };
        let Some(bridge) = self.bridge.as_mut() else {
            return;
        };
        // A wired meter added from a scan is configured now, no longer only found.
        if let Some(bus) = &cfg.bus {
            let before = bridge.found.len();
            bridge
                .found
                .retain(|(b, _), f| !(b == bus && names_found(&cfg.address, &f.found)));
            bridge.changed |= bridge.found.len() != before;
        }
        // It was heard before: what that showed stays true of the configured meter.
        if let Some(heard) = id.as_ref().and_then(|id| bridge.heard.remove(id)) {
            *bridge.configured(index) = heard;
        }
        bridge.changed = true;
        let data = self.bridge_configured_json(index);
        self.bridge_event("meter_added", data);
    }

    /// A scan on the web page found a wired meter: unless a configured meter names it, it
    /// joins the list, and the first time in this run a `meter_found` event says so.
    pub(super) fn bridge_found(&mut self, bus: &str, found: &Found) {
        if self.bridge.is_none() {
            return;
        }
        let configured = self
            .meters
            .iter()
            .any(|m| m.cfg.bus.as_deref() == Some(bus) && names_found(&m.cfg.address, found));
        if configured {
            return;
        }
        let Some(bridge) = self.bridge.as_mut() else {
            return;
        };
        let key = (bus.to_string(), found.secondary.clone());
        let now = SystemTime::now();
        if let Some(known) = bridge.found.get_mut(&key) {
            // Found again: only what the meter is (its primary address may have been set
            // since) republishes the list, not the time.
            if known.found != *found {
                known.found = found.clone();
                bridge.changed = true;
            }
            known.last_seen = now;
            return;
        }
        if bridge.found.len() >= FOUND_LIMIT {
            let oldest = bridge
                .found
                .iter()
                .min_by_key(|(_, f)| f.last_seen)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                bridge.found.remove(&k);
            }
        }
        let entry = FoundWired {
            found: found.clone(),
            last_seen: now,
        };
        let data = found_json(&key.0, &entry);
        bridge.found.insert(key.clone(), entry);
        bridge.changed = true;
        if bridge.found_evented.len() >= EVENTED_LIMIT {
            bridge.found_evented.clear();
        }
        if bridge.found_evented.insert(key) {
            self.bridge_event("meter_found", data.into());
        }
    }

    fn bridge_event(&mut self, kind: &str, data: serde_json::Value) {
        if let Sink::Mqtt { publisher, .. } = &self.sink {
            publisher.publish(
                format!("{}/bridge/event", self.base_topic),
                serde_json::json!({"type": kind, "data": data})
                    .to_string()
                    .into_bytes(),
                false,
            );
            // It shares the outage queue with readings: the shutdown summary counts it.
            self.stats.gateway_states += 1;
        }
    }

    fn bridge_configured_json(&self, index: usize) -> serde_json::Value {
        let meter = &self.meters[index];
        let empty = (Static::default(), Dynamic::default());
        let (s, d) = self
            .bridge
            .as_ref()
            .and_then(|b| b.configured.get(index))
            .unwrap_or(&empty);
        let id = match (&meter.identity, &meter.cfg.address) {
            (Some((_, _, id)), _) => id.clone(),
            (None, MeterAddress::Wireless(id)) => id.to_ascii_lowercase(),
            (None, _) => String::new(),
        };
        let mut s = s.clone();
        if s.driver.is_none() {
            s.driver = Some(meter.cfg.driver.clone());
        }
        let mut m = entry_json(&id, &s, d);
        let entry = self.state.get(&meter.state_key);
        // The state cache also knows readings from before a restart.
        if d.last_seen.is_none() {
            m.insert(
                "last_seen".into(),
                entry.and_then(|e| e.last_seen).map(timestamp).into(),
            );
        }
        if d.rssi.is_none() {
            m.insert("rssi_dbm".into(), entry.and_then(|e| e.rssi_dbm).into());
        }
        m.insert("name".into(), meter.cfg.name.clone().into());
        m.insert("configured".into(), true.into());
        if let Some(bus) = &meter.cfg.bus {
            m.insert("bus".into(), bus.clone().into());
            let address: serde_json::Value = match &meter.cfg.address {
                MeterAddress::Primary(a) => (*a).into(),
                MeterAddress::Secondary(s) | MeterAddress::Wireless(s) => s.clone().into(),
            };
            m.insert("address".into(), address);
            if m.get("source").is_some_and(|s| s.is_null()) {
                m.insert("source".into(), bus.clone().into());
            }
        }
        m.insert(
            "state_topic".into(),
            format!("{}/{}/state", self.base_topic, meter.slug).into(),
        );
        m.into()
    }

    /// Publishes the device list when it changed, at most once per [`MIN_GAP`].
    pub(super) fn bridge_publish(&mut self) {
        let due = self
            .bridge
            .as_ref()
            .is_some_and(|b| b.changed && b.last_publish.is_none_or(|t| t.elapsed() >= MIN_GAP));
        if !due {
            return;
        }
        let mut list: Vec<serde_json::Value> = (0..self.meters.len())
            .map(|i| self.bridge_configured_json(i))
            .collect();
        let Some(bridge) = self.bridge.as_mut() else {
            return;
        };
        bridge.changed = false;
        bridge.last_publish = Some(Instant::now());
        for (id, (s, d)) in &bridge.heard {
            let mut m = entry_json(id, s, d);
            m.insert("configured".into(), false.into());
            list.push(m.into());
        }
        for ((bus, _), f) in &bridge.found {
            list.push(found_json(bus, f).into());
        }
        if let Sink::Mqtt { publisher, .. } = &self.sink {
            // The tree is dropped before the text is queued (and copied to the outage journal).
            let payload = serde_json::Value::Array(list).to_string().into_bytes();
            publisher.publish(format!("{}/bridge/devices", self.base_topic), payload, true);
            self.stats.gateway_states += 1;
        }
    }
}
