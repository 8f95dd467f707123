//! The gateway's side of the web page's wired buses (`crate::web::wired`): scan state fed by the
//! bus tasks' progress, reads asked for on the page, and meters found and added there. Every
//! bus request goes through the bus's own task, so a scan or a read takes its turn between
//! polling rounds and polling goes on after it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::{info, warn};

use tokio::sync::{mpsc, watch};

use super::super::bus::{target_of, BusCommand, PolledMeter};
use super::{expire_after, state_key, Gateway, Meter};
use crate::config::schema::{BusConfig, MeterAddress, MeterConfig};
use crate::drivers::ReadingValue;
use crate::master::{Found, ReadOptions, ScanEvent, ScanProgress, SecondaryMask};
use crate::output::wmbusmeters::push_value;
use crate::web::wired::{Reply, WiredAddress, WiredCommand, WiredView};

/// Probes of a primary scan: addresses 0 to 250.
const PRIMARY_PROBES: u32 = 251;

#[derive(Default)]
struct ScanState {
    kind: Option<&'static str>,
    running: bool,
    probes: u32,
    /// Share of the scan done (0 to 1), when it can be told.
    share: Option<f64>,
    started: Option<Instant>,
    took: Option<Duration>,
    found: Vec<Found>,
    /// How the last scan ended, in words.
    outcome: Option<String>,
    failed: bool,
    cancel: Option<Arc<AtomicBool>>,
}

pub(super) struct WiredWeb {
    tx: watch::Sender<WiredView>,
    buses: Vec<BusConfig>,
    scans: Vec<ScanState>,
    /// Reads asked for on the page, by meter index, answered when the bus task reports.
    reads: HashMap<usize, Vec<Reply>>,
    dirty: bool,
    last_publish: Option<Instant>,
    /// Where `web-meters.yaml` is kept.
    state_dir: std::path::PathBuf,
    /// The page's command channel, for the gateway to hear back from a task it started (a
    /// primary address set). Weak: the gateway must not keep the channel open by itself.
    loopback: mpsc::WeakSender<crate::web::Command>,
}

impl WiredWeb {
    pub(super) fn new(
        tx: watch::Sender<WiredView>,
        buses: Vec<BusConfig>,
        state_dir: std::path::PathBuf,
        loopback: mpsc::WeakSender<crate::web::Command>,
    ) -> WiredWeb {
        WiredWeb {
            state_dir,
            loopback,
            tx,
            scans: buses.iter().map(|_| ScanState::default()).collect(),
            buses,
            reads: HashMap::new(),
            dirty: true,
            last_publish: None,
        }
    }
}

fn address_text(a: &MeterAddress) -> serde_json::Value {
    match a {
        MeterAddress::Primary(p) => (*p).into(),
        MeterAddress::Secondary(s) | MeterAddress::Wireless(s) => s.clone().into(),
    }
}

/// Whether a configured address names the meter a scan found. `F` digits of a configured
/// secondary address are wildcards, as in a select.
pub(super) fn names_found(address: &MeterAddress, found: &Found) -> bool {
    match address {
        MeterAddress::Primary(a) => found.primary == Some(*a),
        MeterAddress::Secondary(s) => {
            s.len() <= found.secondary.len()
                && s.bytes()
                    .zip(found.secondary.bytes())
                    .all(|(c, f)| c == b'F' || c.eq_ignore_ascii_case(&f))
        }
        MeterAddress::Wireless(_) => false,
    }
}

fn seconds(d: Duration) -> u64 {
    d.as_secs()
}

impl Gateway {
    /// The configuration file's buses, which wired meters saved by the page refer to.
    pub(super) fn bus_names(&self) -> Vec<String> {
        self.wired_web
            .as_ref()
            .map(|w| w.buses.iter().map(|b| b.name.clone()).collect())
            .unwrap_or_default()
    }

    fn wired_bus(&self, name: &str) -> Result<usize, String> {
        let web = self.wired_web.as_ref().ok_or("the web page is off")?;
        web.buses
            .iter()
            .position(|b| b.name == name)
            .ok_or_else(|| format!("there is no bus named {name:?}"))
    }

    fn bus_sender(&self, name: &str) -> Option<tokio::sync::mpsc::Sender<BusCommand>> {
        self.bus_commands
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, tx)| tx.clone())
    }

    /// Refuses a request to a bus while the page's scan runs on it: it would wait for the
    /// whole scan.
    fn bus_free(&self, bus: usize) -> Result<(), String> {
        match self.wired_web.as_ref().and_then(|w| w.scans.get(bus)) {
            Some(s) if s.running => Err(format!(
                "a scan is running on bus {}; wait for it or cancel it",
                self.wired_web
                    .as_ref()
                    .map_or("", |w| w.buses[bus].name.as_str())
            )),
            _ => Ok(()),
        }
    }

    pub(super) fn web_scan_progress(&mut self, bus: usize, p: ScanProgress) {
        let Some(scan) = self.wired_web.as_mut().and_then(|w| w.scans.get_mut(bus)) else {
            return;
        };
        scan.probes = p.probes;
        scan.share = match (scan.kind, p.current_mask) {
            (Some("primary"), _) => Some(f64::from(p.probes) / f64::from(PRIMARY_PROBES)),
            (_, Some(mask)) => {
                crate::master::scan::secondary_share_done(&SecondaryMask::ANY, &mask).or(scan.share)
            }
            _ => scan.share,
        };
        if let ScanEvent::Found(f) = p.event {
            scan.found.push(f.clone());
            let bus_name = self
                .wired_web
                .as_ref()
                .and_then(|w| w.buses.get(bus))
                .map(|b| b.name.clone());
            if let Some(name) = bus_name {
                self.bridge_found(&name, &f);
            }
        }
        if let Some(w) = self.wired_web.as_mut() {
            w.dirty = true;
        }
    }

    pub(super) fn web_scan_done(
        &mut self,
        bus: usize,
        result: Result<Vec<Found>, String>,
        cancelled: bool,
    ) {
        let Some(web) = self.wired_web.as_mut() else {
            return;
        };
        let name = web
            .buses
            .get(bus)
            .map(|b| b.name.clone())
            .unwrap_or_default();
        let Some(scan) = web.scans.get_mut(bus) else {
            return;
        };
        scan.running = false;
        scan.cancel = None;
        scan.took = scan.started.map(|s| s.elapsed());
        let kind = scan.kind.unwrap_or("primary");
        let message = match result {
            Ok(found) => {
                scan.found = found;
                scan.failed = false;
                let n = scan.found.len();
                if cancelled {
                    format!(
                        "{kind} scan cancelled after {} probes; {n} meter(s) found so far",
                        scan.probes
                    )
                } else {
                    format!("{kind} scan done: {n} meter(s) found")
                }
            }
            Err(e) => {
                scan.failed = true;
                format!("{kind} scan failed: {e}")
            }
        };
        scan.outcome = Some(message.clone());
        web.dirty = true;
        // Every meter of the result, also those no progress report named.
        let found = scan.found.clone();
        info!(bus = %name, "bus {name}: {message} (asked on the web page)");
        for f in &found {
            self.bridge_found(&name, f);
        }
    }

    /// A wired meter was read: the page's replies waiting for it, if any (and its "last
    /// read" changes).
    pub(super) fn web_wired_take(&mut self, index: usize) -> Vec<Reply> {
        let Some(web) = self.wired_web.as_mut() else {
            return Vec::new();
        };
        web.dirty = true;
        web.reads.remove(&index).unwrap_or_default()
    }

    /// Answers reads asked on the page: the meter's fields after the read, and every telegram
    /// decoded record by record (as `decode --format json` prints them).
    pub(super) fn web_wired_answer(
        &mut self,
        index: usize,
        result: Result<Vec<Vec<u8>>, String>,
        replies: Vec<Reply>,
    ) {
        let name = self.meters[index].cfg.name.clone();
        let answer = match result {
            Err(e) => Err(format!("meter {name}: {e}")),
            Ok(frames) => {
                let mut telegrams = Vec::new();
                for frame in &frames {
                    let mut text = String::new();
                    match crate::telegram::decode_wired(frame) {
                        Ok(t) => {
                            crate::output::json::render(&t, &mut text);
                            telegrams.push(serde_json::from_str(&text).unwrap_or_default());
                        }
                        Err(e) => telegrams.push(serde_json::json!({"error": e.to_string()})),
                    }
                }
                let fields: Vec<(String, String)> = self
                    .state
                    .get(&self.meters[index].state_key)
                    .map(|e| {
                        e.fields
                            .iter()
                            .map(|(k, v)| {
                                // Texts as they are; numbers as the MQTT state prints them.
                                let text = match v {
                                    ReadingValue::Text(t) => t.clone(),
                                    _ => {
                                        let mut text = String::new();
                                        push_value(&mut text, v);
                                        text
                                    }
                                };
                                (k.to_string(), text)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(serde_json::json!({
                    "meter": name, "fields": fields, "telegrams": telegrams,
                }))
            }
        };
        for reply in replies {
            let _ = reply.send(answer.clone());
        }
    }

    pub(super) fn web_wired_command(&mut self, command: WiredCommand) {
        match command {
            WiredCommand::Scan {
                bus,
                secondary,
                reply,
            } => {
                let _ = reply.send(self.web_scan_start(&bus, secondary));
            }
            WiredCommand::Cancel { bus, reply } => {
                let answer = self.wired_bus(&bus).and_then(|b| {
                    let scan = self
                        .wired_web
                        .as_ref()
                        .and_then(|w| w.scans.get(b))
                        .filter(|s| s.running)
                        .ok_or_else(|| format!("no scan is running on bus {bus}"))?;
                    if let Some(flag) = &scan.cancel {
                        flag.store(true, Ordering::Relaxed);
                    }
                    Ok(serde_json::json!({"message": "stopping after the current probe"}))
                });
                let _ = reply.send(answer);
            }
            WiredCommand::Read { meter, reply } => {
                if let Err(e) = self.web_read_now(&meter) {
                    let _ = reply.send(Err(e));
                } else if let Some(index) = self.meters.iter().position(|m| m.cfg.name == meter) {
                    if let Some(w) = self.wired_web.as_mut() {
                        w.reads.entry(index).or_default().push(reply);
                    }
                }
            }
            WiredCommand::AddressTaken {
                meter,
                old,
                new,
                message,
                reply,
            } => {
                let _ = reply.send(self.web_address_taken(meter, old, new, message));
            }
            WiredCommand::SetAddress {
                bus,
                address,
                new_address,
                reply,
            } => {
                if let Err(e) =
                    self.set_primary_address(&bus, address, new_address, reply, "on the web page")
                {
                    // The reply went with the command only when it was sent.
                    warn!("web page: set address refused: {e}");
                }
            }
            WiredCommand::Add {
                bus,
                address,
                name,
                driver,
                reply,
            } => {
                let _ = reply.send(self.web_add_wired(&bus, address, name, driver));
            }
        }
    }

    fn web_scan_start(&mut self, bus: &str, secondary: bool) -> Result<serde_json::Value, String> {
        let index = self.wired_bus(bus)?;
        self.bus_free(index)?;
        let tx = self.bus_sender(bus).ok_or("the bus is not running")?;
        let cancel = Arc::new(AtomicBool::new(false));
        tx.try_send(BusCommand::Scan {
            secondary,
            reply: None,
            cancel: Some(cancel.clone()),
        })
        .map_err(|_| format!("bus {bus} is busy; try again"))?;
        let kind = if secondary { "secondary" } else { "primary" };
        if let Some(web) = self.wired_web.as_mut() {
            web.scans[index] = ScanState {
                kind: Some(kind),
                running: true,
                started: Some(Instant::now()),
                share: (!secondary).then_some(0.0),
                cancel: Some(cancel),
                ..ScanState::default()
            };
            web.dirty = true;
        }
        info!(bus = %bus, "bus {bus}: {kind} scan started on the web page");
        Ok(serde_json::json!({"message": format!("{kind} scan started")}))
    }

    fn web_read_now(&mut self, meter: &str) -> Result<(), String> {
        let index = self
            .meters
            .iter()
            .position(|m| m.cfg.name == meter)
            .ok_or_else(|| format!("no meter is named {meter:?}"))?;
        let bus = self.meters[index]
            .cfg
            .bus
            .clone()
            .ok_or_else(|| format!("{meter} is a wireless meter: it cannot be asked"))?;
        self.bus_free(self.wired_bus(&bus)?)?;
        let tx = self.bus_sender(&bus).ok_or("the bus is not running")?;
        tx.try_send(BusCommand::ReadNow { meter: index })
            .map_err(|_| format!("bus {bus} is busy; try again"))
    }

    /// Gives the meter at `address` on `bus` a new primary address, asked on the web page or
    /// over MQTT (`asked` says which, for the log): only with `allow_bus_writes`, never onto
    /// another configured meter's address, and a meter configured by the old address follows
    /// when it was added on the page (the answer says what became of it otherwise).
    pub(super) fn set_primary_address(
        &mut self,
        bus: &str,
        address: WiredAddress,
        new: u8,
        reply: Reply,
        asked: &str,
    ) -> Result<(), String> {
        let checked = (|| {
            if !self.allow_bus_writes {
                return Err("writes to meters are off; set allow_bus_writes: true in the configuration to allow them".to_string());
            }
            // Not while the page's scan has the bus (without the page there is none).
            if self.wired_web.is_some() {
                self.bus_free(self.wired_bus(bus)?)?;
            }
            let configured = match &address {
                WiredAddress::Primary(a) => MeterAddress::Primary(*a),
                WiredAddress::Secondary(s) => MeterAddress::Secondary(s.clone()),
            };
            let target = target_of(&configured).ok_or("not a usable address")?;
            let tx = self.bus_sender(bus).ok_or("the bus is not running")?;
            // A meter configured by this primary address loses it: one added on the page
            // follows (polled and saved at the new one); one from the configuration file
            // cannot, since that file is never rewritten.
            let configured_here = self.meters.iter().position(|m| {
                m.cfg.bus.as_deref() == Some(bus)
                    && matches!(configured, MeterAddress::Primary(_))
                    && m.cfg.address == configured
            });
            if let Some(other) = self.meters.iter().find(|m| {
                m.cfg.bus.as_deref() == Some(bus) && m.cfg.address == MeterAddress::Primary(new)
            }) {
                if configured != MeterAddress::Primary(new) {
                    return Err(format!(
                        "{} is configured at primary address {new} on bus {bus}: two meters \
                         answering at one address cannot be read",
                        other.cfg.name
                    ));
                }
            }
            Ok((target, tx, configured, configured_here))
        })();
        let (target, tx, configured, configured_here) = match checked {
            Ok(c) => c,
            Err(e) => {
                let _ = reply.send(Err(e.clone()));
                return Err(e);
            }
        };
        let from_page = configured_here.filter(|&i| {
            self.web
                .as_ref()
                .is_some_and(|w| w.page_meters.contains(&self.meters[i].cfg.name))
        });
        let (bus_reply, answer) = tokio::sync::oneshot::channel();
        if tx
            .try_send(BusCommand::SetAddress {
                target,
                new,
                follow: from_page,
                reply: bus_reply,
            })
            .is_err()
        {
            let e = format!("bus {bus} is busy; try again");
            let _ = reply.send(Err(e.clone()));
            return Err(e);
        }
        let old_primary = match configured {
            MeterAddress::Primary(a) => Some(a),
            _ => None,
        };
        let old = match configured {
            MeterAddress::Primary(a) => format!("primary address {a}"),
            MeterAddress::Secondary(s) | MeterAddress::Wireless(s) => s,
        };
        info!(
            bus = %bus,
            "bus {bus}: setting the meter at {old} to primary address {new} (asked {asked})"
        );
        let done = format!("the meter at {old} now answers at primary address {new}");
        // What becomes of the configured meter, told with the answer.
        let after = match (configured_here, from_page) {
            (Some(i), None) => Some(format!(
                "{name} is configured at {old} in the configuration file: change its address \
                 to {new} there and restart; until then it is not read (the page never \
                 rewrites that file)",
                name = self.meters[i].cfg.name
            )),
            _ => None,
        };
        let loopback = self.wired_web.as_ref().map(|w| w.loopback.clone());
        tokio::spawn(async move {
            let answer = match answer.await {
                Ok(Ok(())) => match (from_page, old_primary, loopback) {
                    // The saved entry follows in the gateway task, which answers then.
                    (Some(meter), Some(old), Some(loopback)) => {
                        let command = WiredCommand::AddressTaken {
                            meter,
                            old,
                            new,
                            message: done,
                            reply,
                        };
                        if let Some(tx) = loopback.upgrade() {
                            let _ = tx.send(crate::web::Command::Wired(command)).await;
                        }
                        return;
                    }
                    _ => Ok(serde_json::json!({
                        "message": match after {
                            Some(a) => format!("{done}. {a}"),
                            None => done,
                        }
                    })),
                },
                Ok(Err(e)) => Err(e),
                Err(_) => Err("the bus task stopped".to_string()),
            };
            let _ = reply.send(answer);
        });
        Ok(())
    }

    /// A meter added on the page took a new primary address (the bus task polls it there
    /// already): its configuration and saved entry follow.
    fn web_address_taken(
        &mut self,
        index: usize,
        old: u8,
        new: u8,
        done: String,
    ) -> Result<serde_json::Value, String> {
        let Some(meter) = self.meters.get_mut(index) else {
            return Ok(serde_json::json!({ "message": done }));
        };
        if meter.cfg.address != MeterAddress::Primary(old) {
            return Ok(serde_json::json!({ "message": done }));
        }
        meter.cfg.address = MeterAddress::Primary(new);
        let name = meter.cfg.name.clone();
        let cfg = meter.cfg.clone();
        if let Some(bridge) = self.bridge.as_mut() {
            bridge.meter_changed();
        }
        if let Some(w) = self.wired_web.as_mut() {
            w.dirty = true;
        }
        let saved = self.rewrite_page_meters(
            |saved| {
                let slot = saved
                    .iter_mut()
                    .find(|m| m.name == name)
                    .ok_or_else(|| format!("{name} is not in {}", crate::web::added::FILE))?;
                slot.address = cfg.address.clone();
                Ok(())
            },
            None,
        );
        match saved {
            Ok(_) => {
                info!(
                    meter = %name,
                    "meter {name}: now polled and saved at primary address {new} (set on the web page)"
                );
                Ok(serde_json::json!({
                    "message": format!("{done}; {name} is read there from now on, also after a restart")
                }))
            }
            Err(e) => {
                warn!(meter = %name, "meter {name}: primary address {new} not saved: {e}");
                Ok(serde_json::json!({
                    "message": format!(
                        "{done}; {name} is read there until the next start, but it was not \
                         saved ({e}): add it again after a restart"
                    )
                }))
            }
        }
    }

    /// Adds a meter a scan found: polled from now on, saved for restarts.
    fn web_add_wired(
        &mut self,
        bus: &str,
        address: WiredAddress,
        name: String,
        driver: String,
    ) -> Result<serde_json::Value, String> {
        let bus_index = self.wired_bus(bus)?;
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err("give a name of 1 to 100 characters".into());
        }
        if self.meters.iter().any(|m| m.cfg.name == name) {
            return Err(format!("there is already a meter named {name:?}"));
        }
        if driver != "auto" && self.registry.get(&driver).is_none() {
            return Err(format!("no driver is named {driver:?}"));
        }
        let address = match address {
            WiredAddress::Primary(a) => MeterAddress::Primary(a),
            WiredAddress::Secondary(s) => MeterAddress::Secondary(s),
        };
        if let Some(m) = self
            .meters
            .iter()
            .find(|m| m.cfg.bus.as_deref() == Some(bus) && m.cfg.address == address)
        {
            return Err(format!(
                "{} already has this address on bus {bus}",
                m.cfg.name
            ));
        }
        let target = target_of(&address).ok_or("not a usable address")?;
        let tx = self.bus_sender(bus).ok_or("the bus is not running")?;
        let Some(bus_cfg) = self
            .wired_web
            .as_ref()
            .and_then(|w| w.buses.get(bus_index))
            .cloned()
        else {
            return Err(format!("there is no bus named {bus:?}"));
        };
        let cfg = MeterConfig {
            bus: Some(bus.to_string()),
            ..MeterConfig::new(name.clone(), address, driver)
        };
        let entry = crate::web::added::entry(&cfg)?;
        let index = self.meters.len();
        let polled = PolledMeter {
            index,
            target,
            read: ReadOptions {
                max_frames: bus_cfg.max_frames.max(1) as usize,
                max_records: None,
                reset_first: bus_cfg.force_reset,
            },
            polling: bus_cfg.polling.clone(),
        };
        // Sent before saving: a bus that cannot take it now leaves nothing half done.
        tx.try_send(BusCommand::AddMeter(polled))
            .map_err(|_| format!("bus {bus} is busy; try again"))?;
        if let Some(dir) = self.wired_web.as_ref().map(|w| w.state_dir.clone()) {
            if let Err(e) = crate::web::added::append(&dir, &entry) {
                // Polled for this run all the same; the page says it will not survive a restart.
                warn!(meter = %name, "meter {name} not saved: {e}");
            }
        }
        self.meters.push(Meter {
            state_key: state_key(&cfg),
            slug: cfg.slug(),
            emit: bus_cfg.emit,
            expire_after: expire_after(&cfg, Some(&bus_cfg.polling)),
            announced: None,
            announced_keys: Default::default(),
            only_values: bus_cfg.only_values,
            identity: None,
            reception: Default::default(),
            cfg,
        });
        self.bridge_added(index);
        if let Some(w) = self.wired_web.as_mut() {
            w.dirty = true;
        }
        // The page may change what it added (its primary address, set on the page).
        if let Some(web) = self.web.as_mut() {
            web.page_meters.insert(name.clone());
        }
        info!(meter = %name, bus = %bus, "meter {name} (bus {bus}) added on the web page");
        Ok(
            serde_json::json!({"message": format!("added {name}; it is read now and then every poll")}),
        )
    }

    /// Publishes the wired view when it changed (a scan in progress changes it every probe;
    /// the caller's tick bounds that to four times a second), and every 5 s for what is not
    /// told here (a bus connecting).
    pub(super) fn web_wired_publish(&mut self) {
        let Some(web) = self.wired_web.as_ref() else {
            return;
        };
        let stale = web
            .last_publish
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5));
        if !web.dirty && !stale && !web.scans.iter().any(|s| s.running) {
            return;
        }
        let mut buses = Vec::new();
        for (b, bus) in web.buses.iter().enumerate() {
            let scan = &web.scans[b];
            let configured: Vec<&Meter> = self
                .meters
                .iter()
                .filter(|m| m.cfg.bus.as_deref() == Some(bus.name.as_str()))
                .collect();
            let found: Vec<serde_json::Value> = scan
                .found
                .iter()
                .map(|f| {
                    let known = configured.iter().find(|m| names_found(&m.cfg.address, f));
                    serde_json::json!({
                        "primary": f.primary, "secondary": f.secondary,
                        "manufacturer": f.manufacturer.to_string(), "medium": f.medium.name(),
                        "version": f.version, "configured": known.map(|m| m.cfg.name.clone()),
                    })
                })
                .collect();
            let elapsed = match (scan.took, scan.started) {
                (Some(t), _) => Some(t),
                (None, Some(s)) => Some(s.elapsed()),
                _ => None,
            };
            // Too early for the rate to mean much before 2 % and 2 s.
            let left = match (scan.running, scan.share, elapsed) {
                (true, Some(share), Some(e)) if share > 0.02 && e >= Duration::from_secs(2) => {
                    Some(seconds(e.mul_f64(((1.0 - share) / share).max(0.0))))
                }
                _ => None,
            };
            let meters: Vec<serde_json::Value> = configured
                .iter()
                .map(|m| {
                    let entry = self.state.get(&m.state_key);
                    serde_json::json!({
                        "name": m.cfg.name, "address": address_text(&m.cfg.address),
                        "driver": m.identity.as_ref().map_or(m.cfg.driver.clone(), |(d, _, _)| d.clone()),
                        "last_seen": entry.and_then(|e| e.last_seen).map(|t| {
                            t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs()
                        }),
                    })
                })
                .collect();
            buses.push(serde_json::json!({
                "name": bus.name,
                "connected": self.buses_up.get(&bus.name),
                "scan": {
                    "kind": scan.kind, "running": scan.running, "probes": scan.probes,
                    "total": (scan.kind == Some("primary")).then_some(PRIMARY_PROBES),
                    "share": scan.share, "elapsed_s": elapsed.map(seconds), "left_s": left,
                    "outcome": scan.outcome, "failed": scan.failed, "found": found,
                },
                "meters": meters,
            }));
        }
        let view = serde_json::json!({
            "now": SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs(),
            "allow_bus_writes": self.allow_bus_writes,
            "buses": buses,
        });
        if let Some(web) = self.wired_web.as_mut() {
            web.dirty = false;
            web.last_publish = Some(Instant::now());
            web.tx.send_replace(WiredView {
                json: Arc::from(view.to_string()),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::manufacturer::Manufacturer;
    use crate::wire::medium::Medium;

    fn found(primary: Option<u8>, secondary: &str) -> Found {
        Found {
            primary,
            secondary: secondary.into(),
            manufacturer: Manufacturer::from_letters("KAM").unwrap(),
            medium: Medium::from_code(4),
            version: 0x34,
        }
    }

    #[test]
    fn configured_addresses_name_what_a_scan_found() {
        let f = found(Some(1), "774477442D2C3404");
        assert!(names_found(&MeterAddress::Primary(1), &f));
        assert!(!names_found(&MeterAddress::Primary(2), &f));
        assert!(names_found(&MeterAddress::Secondary("77447744".into()), &f));
        assert!(names_found(
            &MeterAddress::Secondary("77447744FFFFFFFF".into()),
            &f
        ));
        assert!(!names_found(
            &MeterAddress::Secondary("77447745".into()),
            &f
        ));
        assert!(!names_found(
            &MeterAddress::Primary(1),
            &found(None, "11111111FFFFFFFF")
        ));
    }
}
