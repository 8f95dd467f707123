//! Rust decoders for what DIF/VIF records cannot express: manufacturer payloads (Diehl PRIOS,
//! Apator, Techem, Qundis blocks, …). A driver file names one with `decoder:`; the decoder
//! computes named values, and the driver's fields take them with `from:`, so the field's name,
//! unit and Home Assistant classes are still declared once, in the YAML.

pub mod apator;
pub mod bfw;
pub mod bmeters;
pub mod diehl;
pub mod gwf;
pub mod hca_profile;
mod payload;
pub mod qundis;
pub mod techem;
pub mod zenner;

use crate::telegram::Telegram;

/// A value a decoder computed. Numbers are already in the unit the field declares.
#[derive(Debug, Clone, PartialEq)]
pub enum HookValue {
    Number(f64),
    Text(String),
    Null,
}

/// Why a decoder of a payload its manufacturer encrypts refused the telegram: the values it
/// would give are not the meter's, so none are shown and the user is told about the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// No key is configured for the meter.
    Missing,
    /// The configured key does not yield a plaintext that passes the format's checks.
    Wrong,
}

/// Values by name, in the order the decoder produced them; also carries the meter's key for
/// the few manufacturers that encrypt their payload their own way (Apator NA-1).
#[derive(Debug, Default, Clone)]
pub struct HookValues {
    values: Vec<(&'static str, HookValue)>,
    key: Option<crate::security::Key>,
    refusal: Option<KeyRefusal>,
    /// Values that hold the format's "no value" marker (printed as wmbusmeters prints them,
    /// left out of the MQTT state).
    no_value: Vec<&'static str>,
}

impl HookValues {
    pub fn with_key(key: Option<crate::security::Key>) -> Self {
        HookValues {
            values: Vec::new(),
            key,
            refusal: None,
            no_value: Vec::new(),
        }
    }

    /// Refuses the telegram for want of the right key; values set so far are dropped.
    pub fn refuse(&mut self, why: KeyRefusal) {
        self.values.clear();
        self.refusal = Some(why);
    }

    /// How many values the decoder produced.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn refusal(&self) -> Option<KeyRefusal> {
        self.refusal
    }

    /// The AES key configured for the meter, if any.
    pub fn meter_key(&self) -> Option<&crate::security::Key> {
        self.key.as_ref()
    }

    pub fn set(&mut self, name: &'static str, value: HookValue) {
        match self.values.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.values.push((name, value)),
        }
    }

    pub fn number(&mut self, name: &'static str, v: f64) {
        self.set(name, HookValue::Number(v));
    }

    pub fn text(&mut self, name: &'static str, v: impl Into<String>) {
        self.set(name, HookValue::Text(v.into()));
    }

    /// Marks a value as the format's "no value" marker (a history slot never filled).
    pub fn mark_no_value(&mut self, name: &'static str) {
        if !self.no_value.contains(&name) {
            self.no_value.push(name);
        }
    }

    pub fn is_no_value(&self, name: &str) -> bool {
        self.no_value.contains(&name)
    }

    pub fn get(&self, name: &str) -> Option<&HookValue> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

/// A decoder: reads the telegram, fills values. It must not panic on any payload; a payload it
/// does not understand simply yields fewer values.
pub type Decoder = fn(&Telegram<'_>, &mut HookValues);

/// A decoder's name, the values it may produce (checked against `from:` when a driver
/// loads), and the function.
pub struct Hook {
    pub name: &'static str,
    pub values: &'static [&'static str],
    pub decode: Decoder,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook").field("name", &self.name).finish()
    }
}

/// Every decoder.
pub fn all() -> impl Iterator<Item = &'static Hook> {
    diehl::HOOKS
        .iter()
        .chain(apator::HOOKS)
        .chain(techem::HOOKS)
        .chain(qundis::HOOKS)
        .chain(bfw::HOOKS)
        .chain(bmeters::HOOKS)
        .chain(gwf::HOOKS)
        .chain(hca_profile::HOOKS)
        .chain(zenner::HOOKS)
}

pub fn find(name: &str) -> Option<&'static Hook> {
    all().find(|h| h.name == name)
}

/// Names of every decoder, for error messages.
pub fn names() -> Vec<&'static str> {
    all().map(|h| h.name).collect()
}

/// The payload after the transport header of a manufacturer-specific CI (0xA0-0xB7), e.g. the
/// descrambled PRIOS bytes.
pub fn manufacturer_payload<'a>(t: &Telegram<'a>) -> Option<&'a [u8]> {
    match &t.application {
        crate::wire::application::Application::Other { data, .. } => Some(data),
        _ => None,
    }
}

/// Helpers for the decoders' unit tests: run a decoder on a corpus telegram and read values.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Decoder, HookValue, HookValues};
    use crate::security::KeyStore;
    use crate::telegram::WirelessDecoder;
    use crate::wire::hex;

    /// Decodes a wireless telegram (no key) and runs `decode` on it.
    pub fn run(decode: Decoder, telegram: &str) -> HookValues {
        let frame = WirelessDecoder::new(KeyStore::new())
            .decode(&hex::decode(telegram).expect("test hex"))
            .expect("test telegram decodes");
        let t = frame.telegram().expect("records frame");
        let mut v = HookValues::default();
        decode(&t, &mut v);
        v
    }

    /// Decodes a wireless telegram with the rules of a built-in driver (for manufacturer
    /// security modes its driver declares) and runs `decode` on it.
    pub fn run_with_driver(decode: Decoder, driver: &str, telegram: &str) -> HookValues {
        let registry = crate::drivers::Registry::built_in();
        let mut run = crate::drivers::run::DriverRun::new(&registry, KeyStore::new());
        assert!(registry.get(driver).is_some(), "driver {driver}");
        let frame = run
            .decoder()
            .decode(&hex::decode(telegram).expect("test hex"))
            .expect("test telegram decodes");
        let t = frame.telegram().expect("records frame");
        let mut v = HookValues::default();
        decode(&t, &mut v);
        v
    }

    pub fn number(v: &HookValues, name: &str) -> f64 {
        match v.get(name) {
            Some(HookValue::Number(n)) => *n,
            other => panic!("{name}: {other:?}"),
        }
    }

    pub fn text(v: &HookValues, name: &str) -> String {
        match v.get(name) {
            Some(HookValue::Text(s)) => s.clone(),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::KeyStore;
    use crate::telegram::WirelessDecoder;
    use crate::wire::hex;

    /// Every decoder on every prefix of telegrams whose blocks they read (BFW, Hydrodigit,
    /// Zenner, GWF, Hydroclima, Qundis, Techem, Apator): a cut payload yields fewer values,
    /// never a panic.
    #[test]
    fn cut_payloads_do_not_panic() {
        let telegrams = [
            "3644D7088877700002087ADBC000002F2F9E1F03C10388152A00000000000000000000000000000204000404000EE2020AC1321D280221",
            "4C44B4096120120317077AB90000000C1330000000046D132E3E360F97FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
            "1E44496A677308500B167AD80010252F2F0F80BF1B0080BF1B0000A6420000",
            "3944E61E46441510020E8C04427250076819E61E3C07B10020452F2F03748B05000413DC690D004413A4630D00426C213C02FD74B5140FFFFFFF",
            "5144B0092110009385088C20FB7AFB4040252F2F036E000000436E000000426C3F350F110001B9604734CE2E2708FD071B088832940766070000000000000000C407260800802DD400000000000000220000",
        ];
        let hooks: Vec<&Hook> = all().collect();
        for full in telegrams {
            for cut in (4..=full.len()).step_by(2) {
                let mut bytes = hex::decode(&full[..cut]).unwrap();
                bytes[0] = (bytes.len() - 1) as u8;
                let Ok(frame) = WirelessDecoder::new(KeyStore::new()).decode(&bytes) else {
                    continue;
                };
                let Ok(t) = frame.telegram() else { continue };
                for h in &hooks {
                    let mut v = HookValues::default();
                    (h.decode)(&t, &mut v);
                }
            }
        }
    }
}
