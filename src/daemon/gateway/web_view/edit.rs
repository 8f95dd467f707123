//! Changing and removing, on the page, the meters that were added on the page. Those live in
//! `web-meters.yaml` in the state directory (`crate::web::added`), which is rewritten; meters
//! from the user's configuration file are refused (the file is never rewritten). Changes apply
//! at once, as an Add does.

use super::key_store_for;
use crate::config::schema::{KeySource, MeterAddress, Secret};
use crate::daemon::gateway::{Gateway, Sink};
use crate::drivers::run::DriverRun;
use crate::telegram::wireless::parse_key_argument;
use crate::web::added;
use tracing::info;

impl Gateway {
    /// The index of a meter the page may change, by slug.
    fn web_page_meter(&self, slug: &str) -> Result<usize, String> {
        let web = self.web.as_ref().ok_or("the web page is off")?;
        let index = self
            .meters
            .iter()
            .position(|m| m.slug == slug)
            .ok_or_else(|| format!("no configured meter is called {slug}"))?;
        let name = &self.meters[index].cfg.name;
        if !web.page_meters.contains(name) {
            return Err(format!(
                "{name} comes from the configuration file: change it there (the page never \
                 rewrites that file)"
            ));
        }
        Ok(index)
    }

    fn wireless_id(&self, index: usize) -> Result<String, String> {
        match &self.meters[index].cfg.address {
            MeterAddress::Wireless(id) => Ok(id.to_ascii_lowercase()),
            _ => Err("only wireless meters are changed on the page so far".into()),
        }
    }

    /// Clears a meter's retained state document (renamed: its topic changes; removed).
    fn clear_state_topic(&self, slug: &str) {
        if let Sink::Mqtt { publisher, .. } = &self.sink {
            publisher.publish(
                format!("{}/{slug}/state", self.base_topic),
                Vec::new(),
                true,
            );
        }
    }

    pub(super) fn web_edit(
        &mut self,
        slug: &str,
        name: String,
        driver: String,
        key: Option<String>,
    ) -> Result<(String, String), String> {
        let index = self.web_page_meter(slug)?;
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err("give a name of 1 to 100 characters".into());
        }
        if self
            .meters
            .iter()
            .enumerate()
            .any(|(i, m)| i != index && m.cfg.name == name)
        {
            return Err(format!("there is already a meter named {name:?}"));
        }
        if driver != "auto" && self.registry.get(&driver).is_none() {
            return Err(format!("no driver is named {driver:?}"));
        }
        let id = self.wireless_id(index)?;
        // A new key is tried on the meter's last telegram, as Add does.
        if let Some(k) = &key {
            let keys = key_store_for(&id, k)?;
            let last = self
                .web
                .as_ref()
                .and_then(|w| w.meters.get(index))
                .and_then(|s| s.recent.back())
                .map(|r| r.bytes.clone());
            if let Some(bytes) = last {
                let mut run = DriverRun::new(self.registry, keys);
                if let Err(e) = run.decoder().decode(&bytes) {
                    if e.is_key_error() {
                        return Err(format!("wrong key: {e}"));
                    }
                }
            }
        }
        let old = self.meters[index].cfg.clone();
        let mut cfg = old.clone();
        cfg.name = name.clone();
        cfg.driver = driver;
        if let Some(k) = &key {
            let digits: String = k.chars().filter(|c| !c.is_whitespace()).collect();
            cfg.key = Some(KeySource::Inline(Secret::new(digits)));
        }
        // Checked as the next start will check it, then saved, then applied.
        added::entry(&cfg)?;
        self.rewrite_page_meters(
            |saved| {
                let slot = saved
                    .iter_mut()
                    .find(|m| m.name == old.name)
                    .ok_or_else(|| format!("{} is not in {}", old.name, added::FILE))?;
                *slot = cfg.clone();
                Ok(())
            },
            Some("not saved"),
        )?;

        if let Some(KeySource::Inline(k)) = &cfg.key {
            if key.is_some() {
                parse_key_argument(
                    &mut self.run.decoder().keys,
                    &format!("{id}={}", k.expose()),
                )
                .map_err(|_| "the key is not usable for this meter".to_string())?;
            }
        }
        let renamed = old.name != cfg.name;
        let driver_changed = old.driver != cfg.driver;
        let old_slug = self.meters[index].slug.clone();
        let state_key = self.meters[index].state_key.clone();
        {
            let m = &mut self.meters[index];
            m.cfg = cfg;
            m.slug = m.cfg.slug();
            if renamed || driver_changed {
                // Announced again with the next reading: new name, topic or entities.
                m.announced = None;
            }
            if driver_changed {
                m.identity = None;
                m.announced_keys.clear();
            }
        }
        if driver_changed {
            // The old driver's fields would otherwise stay in the merged state for ever.
            self.state.retain_meters(&|k| k != state_key);
        }
        if renamed {
            self.clear_state_topic(&old_slug);
        }
        let new_slug = self.meters[index].slug.clone();
        if let Some(web) = self.web.as_mut() {
            web.page_meters.remove(&old.name);
            web.page_meters.insert(name.clone());
            web.dirty = true;
        }
        info!(meter = %id, "meter {name} ({id}) changed on the web page");
        Ok((format!("saved {name}"), new_slug))
    }

    pub(super) fn web_remove(&mut self, slug: &str) -> Result<String, String> {
        let index = self.web_page_meter(slug)?;
        let id = self.wireless_id(index)?;
        let name = self.meters[index].cfg.name.clone();
        self.rewrite_page_meters(
            |saved| {
                saved.retain(|m| m.name != name);
                Ok(())
            },
            Some("not removed"),
        )?;
        if self.meters[index + 1..].iter().any(|m| m.cfg.bus.is_some()) {
            // Bus tasks know their meters by position; removing this one now would shift
            // theirs. Rare (meters added on the page come after the file's), so: at restart.
            if let Some(web) = self.web.as_mut() {
                web.page_meters.remove(&name);
            }
            return Ok(format!("removed {name}; it stops at the next start"));
        }
        let m = self.meters.remove(index);
        if let (Some(object_id), Sink::Mqtt { publisher, .. }) = (&m.announced, &self.sink) {
            publisher.withdraw(object_id);
        }
        self.clear_state_topic(&m.slug);
        self.state.retain_meters(&|k| k != m.state_key);
        self.run.decoder().keys.remove(&id);
        self.wireless = self
            .meters
            .iter()
            .enumerate()
            .filter_map(|(i, m)| match &m.cfg.address {
                MeterAddress::Wireless(id) => Some((id.to_ascii_lowercase(), i)),
                _ => None,
            })
            .collect();
        if let Some(web) = self.web.as_mut() {
            if index < web.meters.len() {
                web.meters.remove(index);
            }
            web.page_meters.remove(&name);
            web.dirty = true;
        }
        info!(meter = %id, "meter {name} ({id}) removed on the web page");
        Ok(format!("removed {name}"))
    }

    /// Rewrites the page's meter file (`web-meters.yaml`, owner-only): loads it, lets `change`
    /// edit the list, saves it. The one place that reads and writes the file after start. A
    /// failed save is reported as `{not_saved}: {error}`, or as the error alone.
    pub(in crate::daemon::gateway) fn rewrite_page_meters(
        &self,
        change: impl FnOnce(&mut Vec<crate::config::MeterConfig>) -> Result<(), String>,
        not_saved: Option<&str>,
    ) -> Result<(), String> {
        let dir = self
            .web
            .as_ref()
            .map(|w| w.state_dir.clone())
            .ok_or("the web page is off")?;
        let mut saved = added::load(&dir, &self.bus_names())?;
        change(&mut saved)?;
        added::save(&dir, &saved)
            .map(|_| ())
            .map_err(|e| match not_saved {
                Some(what) => format!("{what}: {e}"),
                None => e,
            })
    }
}
