//! A meter's page (`crate::web::MeterRef`): its fields and its last telegrams, each explained
//! with the renderer of `decode --format json` (every layer and record, and the driver's
//! fields). Built on the gateway task, which holds the telegrams and the keys: the answer
//! carries decrypted records but never a key.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::{unix, Recent, RECENT};
use crate::daemon::gateway::Gateway;
use crate::drivers::run::DriverRun;
use crate::drivers::ReadingValue;
use crate::output::json;
use crate::output::wmbusmeters::push_value;
use crate::security::KeyStore;
use crate::telegram::decode_wired;
use crate::web::MeterRef;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn field_texts(fields: &[(std::sync::Arc<str>, ReadingValue)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(k, v)| {
            let mut text = String::new();
            push_value(&mut text, v);
            (k.to_string(), text)
        })
        .collect()
}

impl Gateway {
    /// Keeps a configured meter's telegram for its page (the last [`RECENT`]).
    pub(in crate::daemon::gateway) fn web_recent(
        &mut self,
        index: usize,
        bytes: &[u8],
        rssi: Option<i16>,
        via: Arc<str>,
    ) {
        let Some(web) = self.web.as_mut() else {
            return;
        };
        let recent = &mut web.meter(index).recent;
        if recent.len() >= RECENT {
            recent.pop_front();
        }
        recent.push_back(Recent {
            at: SystemTime::now(),
            bytes: bytes.to_vec(),
            rssi,
            via,
        });
    }

    /// One telegram as `decode --format json --driver DRIVER` shows it; a telegram that does
    /// not decode shows what could be read of it and why.
    fn web_explain(&mut self, bytes: &[u8], driver: &str) -> Value {
        let registry = self.registry;
        // A run of its own: applying an old telegram must not change the meter's live state.
        let apply = |t: &crate::telegram::Telegram<'_>| {
            DriverRun::new(registry, KeyStore::default()).apply(t, driver)
        };
        let mut out = String::new();
        if bytes.first() == Some(&0x68) {
            match decode_wired(bytes) {
                Ok(t) => {
                    let r = apply(&t);
                    json::render_with_driver(&t, r.as_ref().map_err(String::as_str), &mut out);
                }
                Err(e) => return json!({"error": e.to_string()}),
            }
        } else {
            // The gateway's own decoder: it holds the keys and the learned compact layouts.
            match self.run.decoder().decode(bytes) {
                Ok(frame) => match frame.telegram() {
                    Ok(t) => {
                        let r = apply(&t);
                        json::render_with_driver(&t, r.as_ref().map_err(String::as_str), &mut out);
                    }
                    Err(e) => return json!({"error": e.to_string()}),
                },
                Err(e) => {
                    let Some(link) = &e.link else {
                        return json!({"error": e.to_string()});
                    };
                    json::render_wireless_link(link, &mut out);
                    out.push_str(",\"error\":");
                    json::push_str(&mut out, &e.to_string());
                    out.push('}');
                }
            }
        }
        serde_json::from_str(&out)
            .unwrap_or_else(|e| json!({"error": format!("the explanation is not JSON: {e}")}))
    }

    pub(super) fn web_meter_detail(&mut self, which: &MeterRef) -> Result<String, String> {
        let web = self.web.as_ref().ok_or("the web page is off")?;
        let now = unix(SystemTime::now());
        match which {
            MeterRef::Configured(slug) => {
                let index = self
                    .meters
                    .iter()
                    .position(|m| &m.slug == slug)
                    .ok_or_else(|| format!("no configured meter is called {slug}"))?;
                let m = &self.meters[index];
                let seen = web.meters.get(index);
                let recent: Vec<Recent> = seen
                    .map(|s| s.recent.iter().rev().cloned().collect())
                    .unwrap_or_default();
                let entry = self.state.get(&m.state_key);
                let driver = m
                    .identity
                    .as_ref()
                    .map_or(m.cfg.driver.clone(), |(d, _, _)| d.clone());
                let from_page = web.page_meters.contains(&m.cfg.name);
                let mut detail = json!({
                    "kind": "configured",
                    "now": now,
                    "name": m.cfg.name,
                    "slug": m.slug,
                    "id": super::address_text(&m.cfg.address),
                    "driver": driver,
                    "configured_driver": m.cfg.driver,
                    "key": if m.cfg.key.is_some() { "set" } else { "none" },
                    "source": if from_page { "page" } else { "configuration" },
                    "via": seen.and_then(|s| s.via.as_deref()).or(m.cfg.bus.as_deref()),
                    "last_seen": entry.and_then(|e| e.last_seen).map(unix),
                    "rssi": entry.and_then(|e| e.rssi_dbm),
                    "telegrams_total": entry.map_or(0, |e| e.telegrams),
                    "errors": seen.map_or(0, |s| s.errors),
                    "last_error": seen.and_then(|s| s.last_error.as_deref()),
                    "key_wrong": seen.is_some_and(|s| s.key_wrong),
                    "fields": entry.map(|e| field_texts(&e.fields)).unwrap_or_default(),
                });
                let telegrams: Vec<Value> = recent
                    .into_iter()
                    .map(|r| {
                        json!({
                            "at": unix(r.at), "rssi": r.rssi, "via": &*r.via, "hex": hex(&r.bytes),
                            "explained": self.web_explain(&r.bytes, &driver),
                        })
                    })
                    .collect();
                detail["telegrams"] = Value::Array(telegrams);
                Ok(detail.to_string())
            }
            MeterRef::Heard(id) => {
                let h = web
                    .heard
                    .get(id)
                    .ok_or_else(|| format!("meter {id} has not been heard (yet)"))?;
                let driver = h.driver.clone().unwrap_or_else(|| "auto".into());
                let mut detail = json!({
                    "kind": "heard",
                    "now": now,
                    "id": id,
                    "manufacturer": h.manufacturer,
                    "medium": h.medium,
                    "encryption": h.encryption,
                    "driver": h.driver,
                    "rssi": h.rssi,
                    "via": &*h.via,
                    "times": h.times,
                    "last_seen": unix(h.last_seen),
                    "fields": h.readings,
                });
                let (bytes, rssi, via, at) = (h.frame.clone(), h.rssi, h.via.clone(), h.last_seen);
                let explained = self.web_explain(&bytes, &driver);
                detail["telegrams"] = json!([{
                    "at": unix(at), "rssi": rssi, "via": &*via, "hex": hex(&bytes),
                    "explained": explained,
                }]);
                Ok(detail.to_string())
            }
        }
    }
}
