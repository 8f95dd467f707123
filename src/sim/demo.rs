//! The demo's meters: real telegrams (from the drivers' own test cases, or built here) whose
//! current readings are rewritten from a small model of water and heat use each time they are
//! sent, so the values on the page and over MQTT move the way real meters' do.
//!
//! A model gives a rate (flow in m³/h, heat power in kW) that swings slowly around a base
//! value, and the total is the exact integral of that rate, so between two telegrams a total
//! grows by what the rate says. A heat meter's volume and flow follow from its power and the
//! temperature difference (flow = power / (1.163 kWh/m³K × ΔT)), so its fields agree with each
//! other. Only current values are rewritten (storage 0, tariff 0, instantaneous); historic
//! values, dates and status stay as the template has them.
//!
//! Encrypted meters are encrypted again for every telegram with their key (mode 5, our own
//! [`crate::security::encrypt_mode5`]) and a new access number, as a meter does.

use std::f64::consts::TAU;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;

use crate::security::{decrypt_mode5, encrypt_mode5, mode5_iv, Key, SecurityError};
use crate::wire::crc::crc16_en13757;
use crate::wire::records::{
    ByteOrder, DataField, Function, PlainTextOrder, Record, RecordParser, Value,
};
use crate::wire::vif::Unit;
use crate::wire::wired::Frame;

/// Heat carried by water: kWh per cubic metre and kelvin (near 50 °C).
const KWH_PER_M3_K: f64 = 1.163;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DemoError {
    #[error("demo meter {meter}: {message}")]
    Template { meter: String, message: String },
    #[error("demo meter {meter}: record {index} at offset {offset}: {message}")]
    Record {
        meter: String,
        index: usize,
        offset: usize,
        message: String,
    },
    #[error("demo meter {meter}: {source}")]
    Security {
        meter: String,
        source: SecurityError,
    },
}

/// A rate that swings around `base` by ± `swing` (a fraction of it) over `period_s` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Mean rate per hour.
    pub base: f64,
    pub swing: f64,
    pub period_s: f64,
    /// Where in its cycle the rate starts (radians), so meters do not move in step.
    pub phase: f64,
}

impl Usage {
    /// The rate (per hour) `t` seconds after the start.
    pub fn rate(&self, t: f64) -> f64 {
        self.base * (1.0 + self.swing * wave(self.cycles(t)))
    }

    /// The amount used in the first `t` seconds: the exact integral of [`Usage::rate`].
    pub fn total(&self, t: f64) -> f64 {
        let swung =
            self.period_s * (wave_integral(self.cycles(t)) - wave_integral(self.cycles(0.0)));
        self.base / 3600.0 * (t + self.swing * swung)
    }

    /// Cycles of the swing `t` (≥ 0) seconds after the start, phase included.
    fn cycles(&self, t: f64) -> f64 {
        t / self.period_s + self.phase / TAU
    }
}

/// A wave of the shape of a sine, made of two parabolas (up over the first half of each cycle,
/// down over the second; smooth where they meet), for `x` ≥ 0 in cycles. The demo needs no
/// more than the shape, and neither this nor its integral calls the maths library, which a
/// sine would link into every process (docs/benchmarks.md, "One process per telegram").
fn wave(x: f64) -> f64 {
    let f = fraction(x);
    if f < 0.5 {
        16.0 * f * (0.5 - f)
    } else {
        -16.0 * (f - 0.5) * (1.0 - f)
    }
}

/// The integral of [`wave`] from the start of `x`'s cycle to `x` (over a whole cycle it is 0).
fn wave_integral(x: f64) -> f64 {
    let half = |g: f64| 4.0 * g * g - 16.0 * g * g * g / 3.0;
    let f = fraction(x);
    if f < 0.5 {
        half(f)
    } else {
        half(0.5) - half(f - 0.5)
    }
}

/// The fractional part of `x` ≥ 0 (by truncation: `floor` and `%` are calls into libm on the
/// baseline x86-64 target).
fn fraction(x: f64) -> f64 {
    x - (x as u64) as f64
}

/// What a meter measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Model {
    /// Water through a meter: flow in m³/h. `flow_record` says whether the telegram's flow
    /// record is the current flow (some meters send the highest flow of a period there, which
    /// the demo leaves as the template has it).
    Water { flow: Usage, flow_record: bool },
    /// A heat meter: power in kW, flow temperature in °C and the drop to the return.
    Heat {
        power: Usage,
        flow_c: f64,
        delta_k: f64,
    },
}

/// Current values in base units; `None` where the model has nothing to say.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Readings {
    pub energy_wh: Option<f64>,
    pub volume_m3: Option<f64>,
    pub power_w: Option<f64>,
    pub flow_m3h: Option<f64>,
    pub flow_c: Option<f64>,
    pub return_c: Option<f64>,
}

impl Model {
    /// The readings `t` seconds after the start, counting on from `start` (the template's).
    pub fn readings(&self, start: &Readings, t: f64) -> Readings {
        match *self {
            Model::Water { flow, flow_record } => Readings {
                volume_m3: Some(start.volume_m3.unwrap_or(0.0) + flow.total(t)),
                flow_m3h: flow_record.then(|| flow.rate(t)),
                ..Readings::default()
            },
            Model::Heat {
                power,
                flow_c,
                delta_k,
            } => {
                let used_kwh = power.total(t);
                let power_kw = power.rate(t);
                // The supply temperature drifts a little with the load; the drop stays.
                let supply = flow_c + 2.0 * (power_kw / power.base - 1.0);
                Readings {
                    energy_wh: Some(start.energy_wh.unwrap_or(0.0) + used_kwh * 1000.0),
                    volume_m3: Some(
                        start.volume_m3.unwrap_or(0.0) + used_kwh / (KWH_PER_M3_K * delta_k),
                    ),
                    power_w: Some(power_kw * 1000.0),
                    flow_m3h: Some(power_kw / (KWH_PER_M3_K * delta_k)),
                    flow_c: Some(supply),
                    return_c: Some(supply - delta_k),
                }
            }
        }
    }
}

/// Where a template's records are and how it is protected.
#[derive(Debug, Clone)]
enum Layout {
    /// A wired long frame: records after the 12-byte header of CI 0x72.
    Wired,
    /// A wireless telegram (no data-link CRCs) with a plain record area from `records`; the
    /// access number at `access`.
    Plain { records: usize, access: usize },
    /// An ELL telegram (CI 0x8D) sent unencrypted with its payload CRC, which is recomputed.
    EllPlain,
    /// Mode 5: the template holds the plaintext; encrypted with `key` for each telegram.
    Mode5 {
        key: Key,
        records: usize,
        access: usize,
        blocks: usize,
    },
}

/// One simulated meter.
#[derive(Debug)]
pub struct DemoMeter {
    name: String,
    template: Vec<u8>,
    layout: Layout,
    model: Model,
    start: Readings,
    /// The last telegram made, by access number: a wired master that repeats its request
    /// after a lost answer must get the same telegram again.
    last: Mutex<Option<(u8, Vec<u8>)>>,
}

impl DemoMeter {
    /// A wired meter from one of its long frames (CI 0x72).
    pub fn wired(name: &str, frame: &[u8], model: Model) -> Result<DemoMeter, DemoError> {
        let err = |message: String| DemoError::Template {
            meter: name.into(),
            message,
        };
        match Frame::parse(frame) {
            Ok(Frame::Long { ci: 0x72, data, .. }) if data.len() >= 12 => {}
            Ok(_) => return Err(err("not a long frame with CI 0x72".into())),
            Err(e) => return Err(err(e.to_string())),
        }
        DemoMeter::new(name, frame.to_vec(), Layout::Wired, model)
    }

    /// A wireless meter from a telegram without data-link CRCs: short header (CI 0x7A) or
    /// ELL (CI 0x8D) sent plain, or, with `key`, a mode 5 telegram (CI 0x7A or 0x72) whose
    /// encrypted part `key` opens (so the template's readings can be read and changed).
    pub fn wireless(
        name: &str,
        telegram: &[u8],
        key: Option<Key>,
        model: Model,
    ) -> Result<DemoMeter, DemoError> {
        let err = |message: &str| DemoError::Template {
            meter: name.into(),
            message: message.into(),
        };
        let ci = *telegram
            .get(10)
            .ok_or_else(|| err("shorter than a header"))?;
        let (layout, template) = match (ci, key) {
            (0x7A, None) => (
                Layout::Plain {
                    records: 15,
                    access: 11,
                },
                telegram.to_vec(),
            ),
            (0x8D, None) => (Layout::EllPlain, telegram.to_vec()),
            (0x7A | 0x72, Some(key)) => {
                let (access, cfg_at) = if ci == 0x7A { (11, 13) } else { (19, 21) };
                let records = cfg_at + 2;
                let cfg = match telegram.get(cfg_at..records) {
                    Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
                    _ => return Err(err("shorter than its header")),
                };
                if (cfg >> 8) & 0x1F != 5 {
                    return Err(err("not encrypted in security mode 5"));
                }
                let blocks = usize::from((cfg >> 4) & 0x0F);
                let mut plain = telegram.to_vec();
                let iv = iv_of(&plain, ci).ok_or_else(|| err("shorter than its header"))?;
                let body = plain.get_mut(records..).unwrap_or_default();
                decrypt_mode5(&key, &iv, body, blocks).map_err(|source| DemoError::Security {
                    meter: name.into(),
                    source,
                })?;
                if plain.len() != records + blocks * 16 {
                    return Err(err("the encrypted blocks are not the whole record area"));
                }
                (
                    Layout::Mode5 {
                        key,
                        records,
                        access,
                        blocks,
                    },
                    plain,
                )
            }
            _ => return Err(err("a layout the demo does not simulate")),
        };
        DemoMeter::new(name, template, layout, model)
    }

    /// A water meter that encrypts in mode 5 with `key`, built here rather than taken from a
    /// recording: a Sensus iPERL (`SEN`, version 0x68, water) with a short header whose
    /// records are the volume in litres (`04 13`) and the flow in l/h (`02 3B`), starting at
    /// `volume_l`. The driver `iperl` reads it.
    pub fn iperl_mode5(
        name: &str,
        id: u32,
        volume_l: u32,
        key: Key,
        model: Model,
    ) -> Result<DemoMeter, DemoError> {
        // The id is sent as BCD, least significant byte first.
        let digits = format!("{id:08}");
        let mut id_bytes = [0u8; 4];
        for (i, pair) in digits.as_bytes().rchunks(2).enumerate() {
            if let (Some(slot), [hi, lo]) = (id_bytes.get_mut(i), pair) {
                *slot = ((hi - b'0') << 4) | (lo - b'0');
            }
        }
        // SND_NR, M = SEN, A = id ver type, CI 0x7A, ACC, status, CFG = mode 5 with 2 blocks.
        let mut t = vec![0x00, 0x44, 0xAE, 0x4C];
        t.extend_from_slice(&id_bytes);
        t.extend_from_slice(&[0x68, 0x07, 0x7A, 0x00, 0x00, 0x20, 0x05]);
        t.extend_from_slice(&[0x2F, 0x2F, 0x04, 0x13]);
        t.extend_from_slice(&volume_l.to_le_bytes());
        t.extend_from_slice(&[0x02, 0x3B, 0x00, 0x00]);
        t.resize(15 + 32, 0x2F);
        if let (Some(l), Ok(len)) = (t.first_mut(), u8::try_from(15 + 32 - 1)) {
            *l = len;
        }
        let layout = Layout::Mode5 {
            key,
            records: 15,
            access: 11,
            blocks: 2,
        };
        DemoMeter::new(name, t, layout, model)
    }

    fn new(
        name: &str,
        template: Vec<u8>,
        layout: Layout,
        model: Model,
    ) -> Result<DemoMeter, DemoError> {
        let mut meter = DemoMeter {
            name: name.into(),
            template,
            layout,
            model,
            start: Readings::default(),
            last: Mutex::new(None),
        };
        meter.start = meter.read_template()?;
        Ok(meter)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Offset of the record area and of the end of the area to patch.
    fn record_area(&self) -> Option<(usize, ByteOrder)> {
        Some(match &self.layout {
            // 68 L L 68 C A CI | 12-byte header | records … CS 16
            Layout::Wired => (7 + 12, ByteOrder::LsbFirst),
            Layout::Plain { records, .. } | Layout::Mode5 { records, .. } => {
                (*records, ByteOrder::LsbFirst)
            }
            // L C M A | 8D CC ACC SN(4) CRC(2) | CI=78 records
            Layout::EllPlain => {
                if self.template.get(19) != Some(&0x78) {
                    return None;
                }
                (20, ByteOrder::LsbFirst)
            }
        })
    }

    /// The end of the record area: before a wired frame's checksum and stop byte; for mode 5
    /// only the encrypted blocks (the rest may be plain fillers).
    fn record_end(&self) -> usize {
        match &self.layout {
            Layout::Wired => self.template.len().saturating_sub(2),
            _ => self.template.len(),
        }
    }

    /// The current values the template carries, where the model will count on from.
    fn read_template(&self) -> Result<Readings, DemoError> {
        let mut out = Readings::default();
        self.each_current_record(&self.template, |quantity, record| {
            if let Value::Decimal(d) = record.value() {
                let v = d.to_f64() * quantity.to_base;
                let slot = quantity.slot(&mut out);
                slot.get_or_insert(v);
            }
        })?;
        Ok(out)
    }

    fn each_current_record(
        &self,
        bytes: &[u8],
        mut f: impl FnMut(Quantity, &Record<'_>),
    ) -> Result<(), DemoError> {
        let (start, order) = self.record_area().ok_or_else(|| DemoError::Template {
            meter: self.name.clone(),
            message: "no record area".into(),
        })?;
        let area = bytes
            .get(start..self.record_end())
            .ok_or_else(|| DemoError::Template {
                meter: self.name.clone(),
                message: "shorter than its header".into(),
            })?;
        for (index, record) in
            RecordParser::new(area, start, PlainTextOrder::TextAfterVifes, order).enumerate()
        {
            let record = record.map_err(|e| DemoError::Record {
                meter: self.name.clone(),
                index,
                offset: e.offset,
                message: e.kind.to_string(),
            })?;
            let current = record.storage == 0
                && record.tariff == 0
                && record.subunit == 0
                && record.function == Function::Instantaneous;
            if let (true, Some(q)) = (current, Quantity::of(&record)) {
                f(q, &record);
            }
        }
        Ok(())
    }

    /// The meter's telegram `elapsed` after the demo started, with this access number.
    pub fn telegram(&self, elapsed: Duration, access_number: u8) -> Result<Vec<u8>, DemoError> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((acc, bytes)) = last.as_ref() {
            if *acc == access_number {
                return Ok(bytes.clone());
            }
        }
        let now = self.model.readings(&self.start, elapsed.as_secs_f64());
        let mut bytes = self.template.clone();
        // Collect first (the parser borrows the bytes), then write.
        let mut writes = Vec::new();
        self.each_current_record(&self.template, |quantity, record| {
            if let Some(value) = *quantity.slot_ref(&now) {
                writes.push((
                    record.data.as_ptr(),
                    record.field,
                    quantity,
                    value,
                    record.scale(),
                ));
            }
        })?;
        let base = self.template.as_ptr() as usize;
        for (ptr, field, quantity, value, scale) in writes {
            let Some(scale) = scale else { continue };
            let step = f64::from(scale.factor) * 10f64.powi(i32::from(scale.exponent));
            let raw = (value / quantity.to_base / step).round();
            let at = ptr as usize - base;
            if let Some(slot) = field.size().and_then(|n| bytes.get_mut(at..at + n)) {
                encode(field, raw, slot);
            }
        }
        self.finish(&mut bytes, access_number)?;
        *last = Some((access_number, bytes.clone()));
        Ok(bytes)
    }

    /// Access number, checksums and encryption of a patched telegram.
    fn finish(&self, bytes: &mut Vec<u8>, access_number: u8) -> Result<(), DemoError> {
        match &self.layout {
            Layout::Wired => {
                // 68 L L 68 C A CI | ID(4) M(2) ver med ACC …
                if let Some(acc) = bytes.get_mut(7 + 8) {
                    *acc = access_number;
                }
                *bytes = rebuild_long(bytes);
            }
            Layout::Plain { access, .. } => {
                if let Some(acc) = bytes.get_mut(*access) {
                    *acc = access_number;
                }
            }
            Layout::EllPlain => {
                if let Some(acc) = bytes.get_mut(12) {
                    *acc = access_number;
                }
                let crc = crc16_en13757(bytes.get(19..).unwrap_or_default()).to_le_bytes();
                if let Some(slot) = bytes.get_mut(17..19) {
                    slot.copy_from_slice(&crc);
                }
            }
            Layout::Mode5 {
                key,
                records,
                access,
                blocks,
            } => {
                if let Some(acc) = bytes.get_mut(*access) {
                    *acc = access_number;
                }
                let ci = bytes.get(10).copied().unwrap_or_default();
                let iv = iv_of(bytes, ci).ok_or_else(|| DemoError::Template {
                    meter: self.name.clone(),
                    message: "shorter than its header".into(),
                })?;
                let body = bytes.get_mut(*records..).unwrap_or_default();
                encrypt_mode5(key, &iv, body, *blocks).map_err(|source| DemoError::Security {
                    meter: self.name.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// A [`super::LiveTelegram`] for a simulated bus: each reading made at the moment the
    /// master asks for it, counted from `started`.
    pub fn live_on_bus(self: Arc<Self>, started: std::time::Instant) -> super::LiveTelegram {
        super::LiveTelegram(Arc::new(move |access: usize| {
            let access = u8::try_from(access % 256).unwrap_or_default();
            match self.telegram(started.elapsed(), access) {
                Ok(t) => t,
                // Nothing is sent rather than a telegram that is not what the meter would send
                // (a plaintext where it encrypts).
                Err(e) => {
                    tracing::warn!("{e}");
                    Vec::new()
                }
            }
        }))
    }
}

/// A [`super::LiveTelegram`] for a simulated stick configured with one telegram per meter, in
/// the order of `meters`: each made when it is sent, counted from `started`, with the meter's
/// access number going up by one each time.
pub fn live_on_stick(
    meters: Vec<Arc<DemoMeter>>,
    started: std::time::Instant,
) -> super::LiveTelegram {
    let access = Mutex::new(vec![0u8; meters.len()]);
    super::LiveTelegram(Arc::new(move |index: usize| {
        let Some(meter) = meters.get(index) else {
            return Vec::new();
        };
        let acc = {
            let mut access = access.lock().unwrap_or_else(|e| e.into_inner());
            match access.get_mut(index) {
                Some(a) => {
                    *a = a.wrapping_add(1);
                    *a
                }
                None => 0,
            }
        };
        match meter.telegram(started.elapsed(), acc) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("{e}");
                Vec::new()
            }
        }
    }))
}

/// A wired long frame rebuilt from its parts with a fresh checksum (its checksum byte no
/// longer matches after its data changed, so [`Frame::parse`] refuses it).
fn rebuild_long(bytes: &[u8]) -> Vec<u8> {
    match (
        bytes.get(4..6),
        bytes.get(6),
        bytes.get(7..bytes.len().saturating_sub(2)),
    ) {
        (Some(&[control, address]), Some(&ci), Some(data)) => Frame::Long {
            control,
            address,
            ci,
            data,
        }
        .to_bytes(),
        _ => bytes.to_vec(),
    }
}

/// The mode 5 IV of a telegram with a short (0x7A) or long (0x72) TPL header.
fn iv_of(t: &[u8], ci: u8) -> Option<[u8; 16]> {
    let (m, a, acc) = match ci {
        0x7A => (t.get(2..4)?, t.get(4..10)?.to_vec(), *t.get(11)?),
        // The long header sends ID(4) M(2) ver type; the IV wants M, ID, ver, type.
        0x72 => {
            let mut a = t.get(11..15)?.to_vec();
            a.extend_from_slice(t.get(17..19)?);
            (t.get(15..17)?, a, *t.get(19)?)
        }
        _ => return None,
    };
    Some(mode5_iv(
        m.try_into().ok()?,
        a.as_slice().try_into().ok()?,
        acc,
    ))
}

/// Writes `raw` into a record's data field, least significant byte first; a value too large
/// for the field wraps as a meter's counter does.
fn encode(field: DataField, raw: f64, slot: &mut [u8]) {
    let raw = raw.max(0.0) as u64;
    if field.is_bcd() {
        let mut rest = raw;
        for byte in slot.iter_mut() {
            let lo = (rest % 10) as u8;
            rest /= 10;
            let hi = (rest % 10) as u8;
            rest /= 10;
            *byte = (hi << 4) | lo;
        }
    } else if !matches!(field, DataField::Real32) {
        for (byte, value) in slot.iter_mut().zip(raw.to_le_bytes()) {
            *byte = value;
        }
    }
}

/// A quantity the model drives, and the factor from the record's unit to the model's.
#[derive(Debug, Clone, Copy)]
struct Quantity {
    which: Which,
    to_base: f64,
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Energy,
    Volume,
    Power,
    Flow,
    FlowTemperature,
    ReturnTemperature,
}

impl Quantity {
    fn of(record: &Record<'_>) -> Option<Quantity> {
        let vi = record.value_information()?;
        if !vi.combinable.is_empty() || record.field == DataField::Real32 {
            return None;
        }
        let (which, to_base) = match (vi.description.quantity, vi.description.unit) {
            ("energy", Unit::Wh) => (Which::Energy, 1.0),
            ("energy", Unit::J) => (Which::Energy, 1.0 / 3600.0),
            ("volume", Unit::CubicMetre) => (Which::Volume, 1.0),
            ("power", Unit::Watt) => (Which::Power, 1.0),
            ("power", Unit::JoulePerHour) => (Which::Power, 1.0 / 3600.0),
            ("volume_flow", Unit::CubicMetrePerHour) => (Which::Flow, 1.0),
            ("flow_temperature", Unit::Celsius) => (Which::FlowTemperature, 1.0),
            ("return_temperature", Unit::Celsius) => (Which::ReturnTemperature, 1.0),
            _ => return None,
        };
        Some(Quantity { which, to_base })
    }

    fn slot<'r>(&self, r: &'r mut Readings) -> &'r mut Option<f64> {
        match self.which {
            Which::Energy => &mut r.energy_wh,
            Which::Volume => &mut r.volume_m3,
            Which::Power => &mut r.power_w,
            Which::Flow => &mut r.flow_m3h,
            Which::FlowTemperature => &mut r.flow_c,
            Which::ReturnTemperature => &mut r.return_c,
        }
    }

    fn slot_ref<'r>(&self, r: &'r Readings) -> &'r Option<f64> {
        match self.which {
            Which::Energy => &r.energy_wh,
            Which::Volume => &r.volume_m3,
            Which::Power => &r.power_w,
            Which::Flow => &r.flow_m3h,
            Which::FlowTemperature => &r.flow_c,
            Which::ReturnTemperature => &r.return_c,
        }
    }
}

/// The unconfigured encrypted meter the demo's stick hears: an iPERL next door, for trying the
/// page's Add flow with the key the demo prints.
pub const NEIGHBOUR_ID: u32 = 41_235_813;
pub const NEIGHBOUR_KEY: &str = "5A1F0C9E22D84B7391E6A0F43C7B8D15";
pub const NEIGHBOUR_DRIVER: &str = "iperl";

/// The key of the demo's configured encrypted meter (Hot water, from its driver's test case).
pub const HOT_WATER_KEY: &str = "A004EB23329A477F1DD2D7820B56EB3D";

/// The demo's wireless telegrams, in the order the stick sends them (without data-link CRCs).
const KAMWATER: &str =
    "2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713";
const IPERL: &str = "1E44AE4C9956341268077A360010002F2F0413181E0000023B00002F2F2F2F";
const AVENTIES: &str = "76442104710007612507727100076121042507B5006005E2E95A3C2A1279A5415E6732679B43369FD5FDDDD783EEEBB48236D34E7C94AF0A18A5FDA5F7D64111EB42D4D891622139F2952F9D12A20088DFA4CF8123871123EE1F6C1DCEA414879DDB4E05E508F1826D7EFBA6964DF804C9261EA23BBF03";

/// A wired meter of the demo's bus.
#[derive(Debug)]
pub struct DemoWired {
    pub driver: &'static str,
    pub primary: u8,
    pub secondary: super::SecondaryAddress,
    pub meter: Arc<DemoMeter>,
}

/// Every meter of the demo.
#[derive(Debug)]
pub struct DemoWorld {
    pub wired: Vec<DemoWired>,
    /// The stick's meters in the order it sends them; the last is the neighbour's.
    pub wireless: Vec<Arc<DemoMeter>>,
}

fn water(base: f64, period_s: f64, phase: f64, flow_record: bool) -> Model {
    Model::Water {
        flow: Usage {
            base,
            swing: 0.6,
            period_s,
            phase,
        },
        flow_record,
    }
}

fn heat(base_kw: f64, period_s: f64, phase: f64) -> Model {
    Model::Heat {
        power: Usage {
            base: base_kw,
            swing: 0.4,
            period_s,
            phase,
        },
        flow_c: 65.0,
        delta_k: 20.0,
    }
}

/// The first wired frame among a driver's test telegrams.
fn wired_test_frame(driver: &str) -> Option<Vec<u8>> {
    let d = crate::drivers::Registry::built_in_static().get(driver)?;
    d.tests()
        .iter()
        .flat_map(|t| t.telegrams.iter())
        .filter_map(|t| crate::wire::hex::decode(t).ok())
        .find(|f| f.first() == Some(&0x68))
}

fn key(hex: &str) -> Result<Key, DemoError> {
    Key::from_hex(hex).map_err(|e| DemoError::Template {
        meter: "demo".into(),
        message: e.to_string(),
    })
}

fn telegram(name: &str, hex: &str) -> Result<Vec<u8>, DemoError> {
    crate::wire::hex::decode(hex).map_err(|e| DemoError::Template {
        meter: name.into(),
        message: e.to_string(),
    })
}

impl DemoWorld {
    /// Three heat meters on the bus (kamheat, ultraheat, elf2, from their drivers' test
    /// frames), three configured water meters on the stick, and the neighbour's iPERL. Flows
    /// and heat loads are ordinary household ones (a tap, a garden hose, a flat's heating).
    pub fn new() -> Result<DemoWorld, DemoError> {
        let mut wired = Vec::new();
        let loads = [(5.0, 0.0), (3.5, 2.0), (7.0, 4.0)];
        for ((primary, driver), (kw, phase)) in
            (1u8..).zip(["kamheat", "ultraheat", "elf2"]).zip(loads)
        {
            let frame = wired_test_frame(driver).ok_or_else(|| DemoError::Template {
                meter: driver.into(),
                message: "the driver has no wired test frame".into(),
            })?;
            let secondary =
                super::bus::secondary_of(&frame).ok_or_else(|| DemoError::Template {
                    meter: driver.into(),
                    message: "no secondary address in its frame".into(),
                })?;
            let meter = DemoMeter::wired(driver, &frame, heat(kw, 600.0, phase))?;
            wired.push(DemoWired {
                driver,
                primary,
                secondary,
                meter: Arc::new(meter),
            });
        }
        let wireless = vec![
            DemoMeter::wireless(
                "Cold water",
                &telegram("Cold water", KAMWATER)?,
                None,
                water(0.25, 180.0, 0.0, false),
            )?,
            DemoMeter::wireless(
                "Garden water",
                &telegram("Garden water", IPERL)?,
                None,
                water(0.9, 240.0, 1.0, false),
            )?,
            DemoMeter::wireless(
                "Hot water",
                &telegram("Hot water", AVENTIES)?,
                Some(key(HOT_WATER_KEY)?),
                water(0.15, 300.0, 2.0, false),
            )?,
            DemoMeter::iperl_mode5(
                "neighbour",
                NEIGHBOUR_ID,
                48_213,
                key(NEIGHBOUR_KEY)?,
                water(0.4, 200.0, 3.0, true),
            )?,
        ];
        Ok(DemoWorld {
            wired,
            wireless: wireless.into_iter().map(Arc::new).collect(),
        })
    }

    /// The stick's telegrams as sent first (its configured list; [`live_on_stick`] makes the
    /// ones actually sent).
    pub fn stick_telegrams(&self) -> Result<Vec<Vec<u8>>, DemoError> {
        self.wireless
            .iter()
            .map(|m| m.telegram(Duration::ZERO, 0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::run::DriverRun;
    use crate::drivers::Registry;
    use crate::security::KeyStore;
    use serde_json::Value as Json;

    fn decode(bytes: &[u8], driver: &str, keys: &[(&str, &str)]) -> Result<Json, String> {
        let mut store = KeyStore::new();
        for (id, k) in keys {
            store.insert(id, Key::from_hex(k).unwrap()).unwrap();
        }
        let mut run = DriverRun::new(Registry::built_in_static(), store);
        let line = run.process(bytes, driver, "t", "2026-01-01T00:00:00Z")?;
        Ok(serde_json::from_str(&line).unwrap())
    }

    fn num(j: &Json, field: &str) -> f64 {
        j[field]
            .as_f64()
            .unwrap_or_else(|| panic!("no {field} in {j}"))
    }

    #[test]
    fn the_wave_swings_like_a_sine_and_joins_smoothly() {
        assert_eq!(wave(0.0), 0.0);
        assert_eq!(wave(0.25), 1.0);
        assert_eq!(wave(0.5), 0.0);
        assert_eq!(wave(0.75), -1.0);
        assert_eq!(wave(3.25), 1.0);
        // Within a few per cent of a sine everywhere, and continuous across the halves and
        // the cycles (no jump a rate would show).
        for i in 0..=4000 {
            let x = f64::from(i) / 1000.0;
            assert!((wave(x) - (TAU * x).sin()).abs() < 0.06, "{x}");
            assert!((wave(x + 1e-6) - wave(x)).abs() < 1e-4, "{x}");
        }
        assert!(wave_integral(0.999_999).abs() < 1e-9);
    }

    #[test]
    fn usage_total_is_the_integral_of_its_rate() {
        let u = Usage {
            base: 0.9,
            swing: 0.6,
            period_s: 240.0,
            phase: 1.0,
        };
        // Midpoint rule over 1000 s in 0.1 s steps.
        let sum: f64 = (0..10_000)
            .map(|i| u.rate((f64::from(i) + 0.5) * 0.1) * 0.1 / 3600.0)
            .sum();
        assert!(
            (u.total(1000.0) - sum).abs() < 1e-7,
            "{} {sum}",
            u.total(1000.0)
        );
        assert_eq!(u.total(0.0), 0.0);
    }

    #[test]
    fn water_meter_counts_up_from_its_template() {
        let world = DemoWorld::new().unwrap();
        let garden = &world.wireless[1];
        let first = decode(&garden.telegram(Duration::ZERO, 1).unwrap(), "iperl", &[]).unwrap();
        assert_eq!(num(&first, "total_m3"), 7.704);
        let flow = match garden.model {
            Model::Water { flow, .. } => flow,
            Model::Heat { .. } => unreachable!(),
        };
        let mut previous = 7.704;
        for (acc, t) in [(2u8, 60.0), (3, 600.0), (4, 3600.0)] {
            let later = decode(
                &garden.telegram(Duration::from_secs_f64(t), acc).unwrap(),
                "iperl",
                &[],
            )
            .unwrap();
            let expected = ((7.704 + flow.total(t)) * 1000.0).round() / 1000.0;
            assert_eq!(num(&later, "total_m3"), expected, "after {t} s");
            assert!(expected > previous);
            previous = expected;
            // The template's maximum flow record stays as it is.
            assert_eq!(num(&later, "max_flow_m3h"), 0.0);
        }
    }

    #[test]
    fn heat_meter_fields_agree_with_each_other() {
        let world = DemoWorld::new().unwrap();
        let kam = &world.wired[0];
        let first = decode(
            &kam.meter.telegram(Duration::ZERO, 1).unwrap(),
            "kamheat",
            &[],
        )
        .unwrap();
        let e0 = num(&first, "total_energy_consumption_kwh");
        let v0 = num(&first, "total_volume_m3");
        assert_eq!(e0, 34510.0);
        let t = 3600.0;
        let bytes = kam.meter.telegram(Duration::from_secs_f64(t), 2).unwrap();
        // A repeated request (same access number) gets the same frame, even later.
        assert_eq!(
            kam.meter
                .telegram(Duration::from_secs_f64(t + 5.0), 2)
                .unwrap(),
            bytes
        );
        let later = decode(&bytes, "kamheat", &[]).unwrap();
        let used = num(&later, "total_energy_consumption_kwh") - e0;
        let (power, delta) = match kam.meter.model {
            Model::Heat { power, delta_k, .. } => (power, delta_k),
            Model::Water { .. } => unreachable!(),
        };
        // kWh and 0.01 m³ resolution.
        assert!(
            (used - power.total(t)).abs() <= 1.0,
            "{used} {}",
            power.total(t)
        );
        let volume = num(&later, "total_volume_m3") - v0;
        assert!(
            (volume - power.total(t) / (KWH_PER_M3_K * delta)).abs() <= 0.02,
            "{volume}"
        );
        let flow = num(&later, "volume_flow_m3h");
        let supply = num(&later, "t1_temperature_c");
        let ret = num(&later, "t2_temperature_c");
        assert!((supply - ret - delta).abs() < 0.02, "{supply} {ret}");
        assert!(
            (flow - power.rate(t) / (KWH_PER_M3_K * delta)).abs() < 0.002,
            "{flow}"
        );
    }

    #[test]
    fn neighbour_is_really_encrypted_with_its_key() {
        let world = DemoWorld::new().unwrap();
        let neighbour = world.wireless.last().unwrap();
        let id = format!("{NEIGHBOUR_ID:08}");
        let a = neighbour.telegram(Duration::from_secs(10), 1).unwrap();
        let b = neighbour.telegram(Duration::from_secs(20), 2).unwrap();
        // The records are not readable in the air.
        assert!(!a.windows(2).any(|w| w == [0x04, 0x13]), "{a:02X?}");
        assert_ne!(a[15..], b[15..]);
        let err = decode(&a, "auto", &[]).unwrap_err();
        assert!(err.contains("key"), "{err}");
        let err = decode(&a, "auto", &[(&id, HOT_WATER_KEY)]).unwrap_err();
        assert!(err.contains("key"), "{err}");
        let first = decode(&a, "auto", &[(&id, NEIGHBOUR_KEY)]).unwrap();
        assert_eq!(first["meter"], "iperl");
        assert_eq!(first["id"], id);
        let second = decode(&b, "auto", &[(&id, NEIGHBOUR_KEY)]).unwrap();
        assert!(num(&second, "total_m3") > num(&first, "total_m3"));
        assert!(num(&first, "total_m3") >= 48.213);
        assert!(num(&first, "max_flow_m3h") > 0.0);
    }

    #[test]
    fn configured_encrypted_and_ell_meters_count_up() {
        let world = DemoWorld::new().unwrap();
        let hot = &world.wireless[2];
        let t0 = decode(
            &hot.telegram(Duration::ZERO, 7).unwrap(),
            "aventieswm",
            &[("61070071", HOT_WATER_KEY)],
        )
        .unwrap();
        assert_eq!(num(&t0, "total_m3"), 466.472);
        let t1 = decode(
            &hot.telegram(Duration::from_secs(3600), 8).unwrap(),
            "aventieswm",
            &[("61070071", HOT_WATER_KEY)],
        )
        .unwrap();
        assert!(num(&t1, "total_m3") > 466.6, "{t1}");
        // Historic values stay.
        assert_eq!(num(&t1, "consumption_at_set_date_1_m3"), 465.96);

        let cold = &world.wireless[0];
        let c1 = decode(
            &cold.telegram(Duration::from_secs(3600), 3).unwrap(),
            "auto",
            &[],
        )
        .unwrap();
        assert_eq!(c1["meter"], "kamwater");
        assert!(num(&c1, "total_m3") > 6.408 + 0.1, "{c1}");
        assert_eq!(num(&c1, "target_m3"), 6.408);
    }
}
