//! Telegrams through drivers for one run: decode, pick the driver (given or detected), keep
//! each meter's readings across telegrams, render them like wmbusmeters does.

use std::collections::HashMap;

use super::hooks::KeyRefusal;
use super::{Driver, MeterState, Registry};
use crate::output::wmbusmeters::{self, MeterLine};
use crate::security::KeyStore;
use crate::telegram::wireless::{PlainModeRule, Scrambling};
use crate::telegram::{decode_wired, Link, Telegram, WirelessDecoder};
use crate::wire::application::{Application, Header, IdentificationNumber};
use crate::wire::manufacturer::Manufacturer;
use crate::wire::records::RecordKind;

/// Meters whose detected driver a run remembers; past this (noise, or a very busy street)
/// new meters are detected on every telegram, which is slower but as correct.
const MAX_DETECTED: usize = 100_000;

/// Placeholder timestamp used when the caller has no clock to offer (tests, golden files).
pub const FIXED_TIMESTAMP: &str = "1111-11-11T11:11:11Z";

/// A run over several telegrams: per-meter state is keyed by meter id.
pub struct DriverRun<'r> {
    registry: &'r Registry,
    decoder: WirelessDecoder,
    meters: HashMap<String, MeterState>,
    /// The driver auto-detection chose for each meter id, kept while it still matches the
    /// meter's triple so a meter does not switch drivers (and field names) between telegrams.
    detected: HashMap<String, String>,
}

/// What a telegram identifies itself as.
struct Identity {
    id: String,
    manufacturer: String,
    version: u8,
    device_type: u8,
    /// The data-link triple of a wireless telegram whose identity came from its long header:
    /// detection tries it second.
    sender: Option<(String, u8, u8)>,
}

/// A long transport header names the meter (behind a radio converter, or when the data link
/// carries the radio module's own address), as wmbusmeters reads it; else the data link or,
/// for wired M-Bus, the header.
fn identity(t: &Telegram<'_>) -> Option<Identity> {
    let long = match &t.application {
        Application::Variable {
            header: Header::Long(h),
            ..
        } => Some(*h),
        _ => None,
    };
    let sender = match &t.link {
        Link::Wireless(l) => Some((
            l.dll.manufacturer.to_string(),
            l.dll.version,
            l.dll.device_type.code(),
        )),
        Link::Wired(_) => None,
    };
    match (long, &t.link) {
        (Some(h), _) => Some(Identity {
            id: h.id.to_string(),
            manufacturer: h.manufacturer.to_string(),
            version: h.version,
            device_type: h.medium.code(),
            sender,
        }),
        (None, Link::Wireless(l)) => Some(Identity {
            id: l.dll.id.to_string(),
            manufacturer: l.dll.manufacturer.to_string(),
            version: l.dll.version,
            device_type: l.dll.device_type.code(),
            sender: None,
        }),
        (None, Link::Wired(_)) => None,
    }
}

/// The meter named by an enhanced identification record (DIF 07, VIF 79: id, manufacturer,
/// version, device type, as in a long header), for drivers of meters behind a radio converter.
fn enhanced_identity(t: &Telegram<'_>, sender: Option<(String, u8, u8)>) -> Option<Identity> {
    let r = t.records.iter().find(|r| {
        r.kind == RecordKind::Data && r.dib == [0x07] && r.vif == Some(0x79) && r.vifes.is_empty()
    })?;
    let &[i0, i1, i2, i3, m0, m1, version, device_type] = r.data else {
        return None;
    };
    Some(Identity {
        id: IdentificationNumber(u32::from_le_bytes([i0, i1, i2, i3])).to_string(),
        manufacturer: Manufacturer::from_le_bytes([m0, m1]).to_string(),
        version,
        device_type,
        sender,
    })
}

/// Why a driver gave no readings for a telegram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyError {
    pub message: String,
    /// The meter's payload needs a (right) key: the `decode` command exits with status 3.
    pub key: bool,
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for ApplyError {
    fn from(message: String) -> Self {
        ApplyError {
            message,
            key: false,
        }
    }
}

/// A meter's readings after a telegram.
#[derive(Debug, Clone)]
pub struct MeterOutput {
    pub driver: String,
    pub media: String,
    /// Lowercase hex, as wmbusmeters prints it.
    pub id: String,
    /// Three-letter manufacturer code of the meter (from the same header as `id`).
    pub manufacturer: String,
    pub version: u8,
    pub device_type: u8,
    pub readings: Vec<super::Reading>,
    /// Keys of readings that hold the standard's "no value" marker (kept in `readings`, as
    /// wmbusmeters prints them; left out of the MQTT state).
    pub no_value: Vec<String>,
    /// The driver was chosen by auto-detection.
    pub detected: bool,
    /// Set when no driver knows the meter: the readings are generic, named from the records.
    pub hint: Option<String>,
}

impl MeterOutput {
    pub fn render_wmbusmeters(&self, name: &str, timestamp: &str, out: &mut String) {
        wmbusmeters::render(
            &MeterLine {
                media: &self.media,
                driver: &self.driver,
                name,
                id: &self.id,
                readings: &self.readings,
                timestamp,
            },
            out,
        );
    }
}

impl<'r> DriverRun<'r> {
    pub fn new(registry: &'r Registry, keys: KeyStore) -> Self {
        let mut decoder = WirelessDecoder::new(keys);
        // Manufacturer-specific modes are read only for the meters of the drivers that
        // declare them.
        for d in registry.with_manufacturer_security_modes() {
            let scrambled = d.file.scrambling.as_deref().and_then(Scrambling::from_name);
            let plain = d
                .file
                .plain_security_modes
                .iter()
                .map(|&m| (m, Scrambling::None));
            let hidden = scrambled
                .into_iter()
                .flat_map(|s| d.file.scrambled_security_modes.iter().map(move |&m| (m, s)));
            for (mode, scrambling) in plain.chain(hidden) {
                for m in &d.detect {
                    decoder.plain_modes.push(PlainModeRule {
                        manufacturer: m.manufacturer.clone(),
                        version: m.version,
                        device_type: m.device_type,
                        mode,
                        scrambling,
                        driver: d.name().to_string(),
                    });
                }
            }
        }
        DriverRun {
            registry,
            decoder,
            meters: HashMap::new(),
            detected: HashMap::new(),
        }
    }

    /// The wireless decoder of the run (keys and compact layouts live there).
    pub fn decoder(&mut self) -> &mut WirelessDecoder {
        &mut self.decoder
    }

    /// Applies `driver` (a name or alias, or `auto`) to a decoded telegram, updating the
    /// meter's state.
    pub fn apply(&mut self, telegram: &Telegram<'_>, driver: &str) -> Result<MeterOutput, String> {
        self.apply_checked(telegram, driver).map_err(|e| e.message)
    }

    /// [`Self::apply`], telling key refusals (a manufacturer's own encryption that the
    /// configured key does not open) from other errors.
    pub fn apply_checked(
        &mut self,
        telegram: &Telegram<'_>,
        driver: &str,
    ) -> Result<MeterOutput, ApplyError> {
        let who =
            identity(telegram).ok_or("the telegram does not identify its meter".to_string())?;
        let detected = driver == "auto";
        let found = if detected {
            self.detect(telegram, &who)
        } else {
            Some(self.registry.get(driver).ok_or_else(|| {
                format!("no driver named {driver:?} (`meterbridge drivers` lists them)")
            })?)
        };
        let Some(d) = found else {
            return Ok(MeterOutput {
                driver: "unknown".to_string(),
                media: wmbusmeters::media_name(who.device_type).to_string(),
                id: who.id.to_ascii_lowercase(),
                manufacturer: who.manufacturer.clone(),
                version: who.version,
                device_type: who.device_type,
                readings: super::engine::generic_readings(telegram),
                no_value: Vec::new(),
                detected: true,
                hint: Some(format!(
                    "no driver knows meter {} ({}, version 0x{:02x}, type 0x{:02x}); the readings are named from its records — a driver file in drivers_dir can name them properly",
                    who.id, who.manufacturer, who.version, who.device_type
                )),
            });
        };
        let d: &Driver = d;
        let who = if d.file.enhanced_identity {
            enhanced_identity(telegram, who.sender.clone()).unwrap_or(who)
        } else {
            who
        };
        let key = self.decoder.keys.get(&who.id);
        let state = self.meters.entry(who.id.clone()).or_default();
        if let Err(refusal) = d.apply_with_key(telegram, state, key) {
            let message = match refusal {
                KeyRefusal::Missing => format!(
                    "meter {} sends a payload its manufacturer encrypts (driver {}): add its key",
                    who.id,
                    d.name()
                ),
                KeyRefusal::Wrong => format!(
                    "decryption failed for meter {} ({}): wrong key? (driver {}: the plaintext fails its checks)",
                    who.id,
                    who.manufacturer,
                    d.name()
                ),
            };
            return Err(ApplyError { message, key: true });
        }
        Ok(MeterOutput {
            driver: d.name().to_string(),
            media: d
                .file
                .media
                .clone()
                .unwrap_or_else(|| wmbusmeters::media_name(who.device_type).to_string()),
            id: who.id.to_ascii_lowercase(),
            manufacturer: who.manufacturer.clone(),
            version: who.version,
            device_type: who.device_type,
            readings: d.readings(state),
            no_value: d.no_value_keys(state),
            detected,
            hint: None,
        })
    }

    /// Auto-detection: the drivers whose detection matches the meter's triple or the sending
    /// radio converter's. When several do, the telegram decides: the driver that reads the
    /// most of its records ([`Driver::records_read`]) wins; among equals the meter's own
    /// triple before the converter's, the more specific detection entry, then the name that
    /// sorts first (so `qwater` before `qwaterv2` when both read the same records). The choice
    /// is kept for the meter while it still matches. docs/drivers.md describes it.
    fn detect(&mut self, telegram: &Telegram<'_>, who: &Identity) -> Option<&'r Driver> {
        let registry = self.registry;
        // A radio converter's own triple (the data link's, when a long header names the
        // meter) can be what a driver detects: both count, the meter's first.
        let mut found = registry.candidates(&who.manufacturer, who.version, who.device_type);
        if let Some((m, v, t)) = &who.sender {
            for c in registry.candidates(m, *v, *t) {
                if !found.iter().any(|(_, d)| d.name() == c.1.name()) {
                    found.push(c);
                }
            }
        }
        if let Some(name) = self.detected.get(&who.id) {
            if let Some((_, d)) = found.iter().find(|(_, d)| d.name() == name) {
                return Some(*d);
            }
        }
        let chosen = if found.len() > 1 {
            let key = self.decoder.keys.get(&who.id);
            let mut best: Option<(usize, &'r Driver)> = None;
            // The meter's own triple sorts before the converter's, and within each the more
            // specific entry, then the name; a stable sort keeps that for equal scores.
            // `found` is sorted by specificity then name, so the first of equal scores stays.
            for (_, d) in found {
                let score = d.records_read(telegram, key).unwrap_or(0);
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, d));
                }
            }
            best.map(|(_, d)| d)
        } else {
            found.first().map(|(_, d)| *d)
        }?;
        if self.detected.len() < MAX_DETECTED {
            self.detected
                .insert(who.id.clone(), chosen.name().to_string());
        }
        Some(chosen)
    }

    /// Decodes one telegram, applies `driver` and returns the meter's line in wmbusmeters'
    /// format.
    pub fn process(
        &mut self,
        bytes: &[u8],
        driver: &str,
        name: &str,
        timestamp: &str,
    ) -> Result<String, String> {
        let frame;
        let telegram = if matches!(bytes, [0x68, a, b, 0x68, ..] if a == b) {
            decode_wired(bytes).map_err(|e| e.to_string())?
        } else {
            frame = self.decoder.decode(bytes).map_err(|e| e.to_string())?;
            frame.telegram().map_err(|e| e.to_string())?
        };
        let output = self.apply(&telegram, driver)?;
        let mut out = String::new();
        output.render_wmbusmeters(name, timestamp, &mut out);
        Ok(out)
    }
}
