//! The virtual wired M-Bus segment: meters with link-layer state, answering master requests.
//!
//! Pure and synchronous so that every behaviour can be unit-tested without a clock or a
//! socket; [`super`] puts it on a byte stream and adds the line's timing.
//!
//! Modelling choices, where the standard or the field leaves room:
//! - FCB (wired.md §3.3): after SND_NKE a meter expects FCB=1. A REQ_UD2 whose FCB differs
//!   from the last accepted one is new and gets the meter's next telegram; the same FCB
//!   repeats the previous reply. With no previous reply (power-up, just after SND_NKE) every
//!   request is new. After the last telegram the cycle wraps to the first.
//! - `needs_snd_nke`: until the meter has seen SND_NKE it answers every REQ_UD2 with its
//!   stale first telegram and ignores FCB (libmbus issue #105: such meters return the oldest
//!   telegram rather than nothing, which is what makes the bug hard to notice).
//! - Collisions: slaves modulate current, so overlapping answers act like a wired AND on the
//!   line. If that AND happens to be one valid frame (identical answers), the extra answers
//!   are appended, since a master would see the second transmission as trailing bytes.
//! - A meter at another baud rate than the request's hears noise: no answer, no state change.
//! - SND_UD frames are acknowledged without FCB duplicate detection.

use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::wire::application::{self, Application, Header};
use crate::wire::hex;
use crate::wire::manufacturer::Manufacturer;
use crate::wire::wired::{
    self, scan, ControlFunction, Frame, Scan, ADDRESS_BROADCAST_NO_REPLY, ADDRESS_BROADCAST_REPLY,
    ADDRESS_MAX_PRIMARY, ADDRESS_NETWORK_LAYER, BAUD_RATES, CI_APPLICATION_RESET, CI_DATA_SEND,
    CI_SELECT_SECONDARY,
};

/// The usual rate of wired meters, used where a configuration gives none.
pub const DEFAULT_BAUD: u32 = 2400;

const CI_BAUD_FIRST: u8 = 0xB8;
const CI_RSP_UD_VARIABLE: u8 = 0x72;
/// DIF 0x01 (8-bit integer), VIF 0x7A (bus address): the record that sets a primary address.
const SET_ADDRESS_RECORD: [u8; 2] = [0x01, 0x7A];

/// The fields a secondary select compares (wired.md §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecondaryAddress {
    /// Eight BCD digits, read as hex: `0x12345678` is ID 12345678.
    pub id: u32,
    /// As on the wire (little-endian u16).
    pub manufacturer: u16,
    pub version: u8,
    pub medium: u8,
}

impl SecondaryAddress {
    /// The 8 select bytes this address would be selected by exactly.
    pub fn to_select_bytes(&self) -> [u8; 8] {
        let id = self.id.to_le_bytes();
        let man = self.manufacturer.to_le_bytes();
        [
            id[0],
            id[1],
            id[2],
            id[3],
            man[0],
            man[1],
            self.version,
            self.medium,
        ]
    }

    /// Whether a select mask picks this address: 0xF nibbles in the ID and 0xFF bytes in
    /// manufacturer, version and medium match anything.
    pub fn matches(&self, mask: &[u8; 8]) -> bool {
        let own = self.to_select_bytes();
        let (id_mask, rest_mask) = mask.split_at(4);
        let (id_own, rest_own) = own.split_at(4);
        let nibble_ok = |m: u8, o: u8| m == 0xF || m == o;
        let id_ok = id_mask
            .iter()
            .zip(id_own)
            .all(|(&m, &o)| nibble_ok(m >> 4, o >> 4) && nibble_ok(m & 0x0F, o & 0x0F));
        let rest_ok = rest_mask
            .iter()
            .zip(rest_own)
            .all(|(&m, &o)| m == 0xFF || m == o);
        id_ok && rest_ok
    }
}

/// The libmbus string form: ID digits, manufacturer bytes in frame order, version, medium.
impl std::fmt::Display for SecondaryAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let man = self.manufacturer.to_le_bytes();
        write!(
            f,
            "{:08X}{:02X}{:02X}{:02X}{:02X}",
            self.id, man[0], man[1], self.version, self.medium
        )
    }
}

/// Which telegram a reply was, so a repeat can be rebuilt with the meter's current address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    index: usize,
    access_number: u8,
}

#[derive(Debug, Clone, Default)]
struct LinkState {
    selected: bool,
    reset_seen: bool,
    /// The FCB that marks a new request; `None` until a request has been accepted.
    next_fcb: Option<bool>,
    next_index: usize,
    last: Option<Sent>,
    access_number: u8,
}

/// One slave on the segment.
#[derive(Debug, Clone)]
pub struct SimMeter {
    pub primary: u8,
    pub secondary: SecondaryAddress,
    /// The rate the meter listens and answers at; a baud switch changes it.
    pub baud: u32,
    pub needs_snd_nke: bool,
    /// Added to the line's minimum response delay before the meter answers.
    pub reply_delay: Duration,
    /// How many of its next answers to REQ_UD2 reach the master with a broken checksum, as
    /// line noise does. The meter itself does not know: it moves on to its next telegram as
    /// usual, so the master's repeat (same FCB) must get the same telegram again.
    pub garbled_replies: u32,
    /// Whole RSP_UD frames; empty means one generated telegram.
    telegrams: Vec<Vec<u8>>,
    /// Makes each reading when it is asked for, instead of `telegrams`.
    live: Option<super::LiveTelegram>,
    state: LinkState,
}

impl SimMeter {
    /// A meter at [`DEFAULT_BAUD`] answering with a generated telegram.
    pub fn new(primary: u8, secondary: SecondaryAddress) -> SimMeter {
        SimMeter {
            primary,
            secondary,
            baud: DEFAULT_BAUD,
            needs_snd_nke: false,
            reply_delay: Duration::ZERO,
            garbled_replies: 0,
            telegrams: Vec::new(),
            live: None,
            state: LinkState::default(),
        }
    }

    /// Replaces the generated telegram by these frames, sent in turn as FCB toggles. Each
    /// must be a long or control frame; their A field is rewritten when sent.
    pub fn with_telegrams(mut self, telegrams: Vec<Vec<u8>>) -> Result<SimMeter, SimError> {
        for (i, t) in telegrams.iter().enumerate() {
            match Frame::parse(t) {
                Ok(Frame::Long { .. } | Frame::Control { .. }) => {}
                Ok(_) => {
                    return Err(SimError::Telegram {
                        index: i,
                        message: "not a long frame".into(),
                    })
                }
                Err(e) => {
                    return Err(SimError::Telegram {
                        index: i,
                        message: e.to_string(),
                    })
                }
            }
        }
        self.telegrams = telegrams;
        self.state = LinkState::default();
        Ok(self)
    }

    /// Answers every REQ_UD2 with a frame `live` makes from the reading's access number, so
    /// the values can change from one reading to the next; its A field is rewritten as for
    /// [`SimMeter::with_telegrams`]. A frame that is not a long frame is sent as it is.
    pub fn with_live_telegram(mut self, live: super::LiveTelegram) -> SimMeter {
        self.live = Some(live);
        self
    }

    pub fn with_baud(mut self, baud: u32) -> SimMeter {
        self.baud = baud;
        self
    }

    pub fn with_needs_snd_nke(mut self, needs: bool) -> SimMeter {
        self.needs_snd_nke = needs;
        self
    }

    pub fn with_reply_delay(mut self, delay: Duration) -> SimMeter {
        self.reply_delay = delay;
        self
    }

    pub fn with_garbled_replies(mut self, count: u32) -> SimMeter {
        self.garbled_replies = count;
        self
    }

    pub fn telegram_count(&self) -> usize {
        self.telegrams.len().max(1)
    }

    pub fn is_selected(&self) -> bool {
        self.state.selected
    }

    fn reset_link(&mut self) {
        self.state.reset_seen = true;
        self.state.next_fcb = Some(true);
        self.state.next_index = 0;
        self.state.last = None;
    }

    fn render(&self, sent: Sent) -> Vec<u8> {
        if let Some(live) = &self.live {
            return readdress(&(live.0)(usize::from(sent.access_number)), self.primary);
        }
        match self.telegrams.get(sent.index) {
            Some(t) => readdress(t, self.primary),
            None => self.generated(sent.access_number),
        }
    }

    /// A variable-data RSP_UD whose header carries the secondary address, so a master can
    /// check it read the meter it selected; the volume moves with each new reading.
    fn generated(&self, access_number: u8) -> Vec<u8> {
        let mut data = Vec::with_capacity(24);
        data.extend_from_slice(&self.secondary.id.to_le_bytes());
        data.extend_from_slice(&self.secondary.manufacturer.to_le_bytes());
        data.extend_from_slice(&[
            self.secondary.version,
            self.secondary.medium,
            access_number,
            0x00,
            0x00,
            0x00,
        ]);
        let volume_litres = 1000u32 + 10 * u32::from(access_number);
        // 04 13: 32-bit volume in litres; 02 FD 17: 16-bit error flags, all clear.
        data.extend_from_slice(&[0x04, 0x13]);
        data.extend_from_slice(&volume_litres.to_le_bytes());
        data.extend_from_slice(&[0x02, 0xFD, 0x17, 0x00, 0x00]);
        Frame::Long {
            control: wired::C_RSP_UD,
            address: self.primary,
            ci: CI_RSP_UD_VARIABLE,
            data: &data,
        }
        .to_bytes()
    }

    fn answer_req_ud2(&mut self, fcb: bool) -> Vec<u8> {
        let mut reply = self.next_req_ud2_reply(fcb);
        if self.garbled_replies > 0 {
            self.garbled_replies -= 1;
            // The checksum sits just before the stop byte in every frame but a lone E5.
            if let Some(i) = reply.len().checked_sub(2) {
                reply[i] ^= 0x5A;
            }
        }
        reply
    }

    fn next_req_ud2_reply(&mut self, fcb: bool) -> Vec<u8> {
        if self.needs_snd_nke && !self.state.reset_seen {
            return self.render(Sent {
                index: 0,
                access_number: 0,
            });
        }
        let repeat = self.state.next_fcb.is_some_and(|expected| expected != fcb);
        if let (true, Some(last)) = (repeat, self.state.last) {
            return self.render(last);
        }
        let index = self.state.next_index % self.telegram_count();
        self.state.access_number = self.state.access_number.wrapping_add(1);
        let sent = Sent {
            index,
            access_number: self.state.access_number,
        };
        self.state.next_index = (index + 1) % self.telegram_count();
        self.state.next_fcb = Some(!fcb);
        self.state.last = Some(sent);
        self.render(sent)
    }
}

/// The frame with its A field replaced (and so its checksum recomputed).
fn readdress(frame: &[u8], address: u8) -> Vec<u8> {
    match Frame::parse(frame) {
        Ok(Frame::Long {
            control, ci, data, ..
        }) => Frame::Long {
            control,
            address,
            ci,
            data,
        }
        .to_bytes(),
        Ok(Frame::Control { control, ci, .. }) => Frame::Control {
            control,
            address,
            ci,
        }
        .to_bytes(),
        // Telegrams are checked when the meter is built; keep whatever is there otherwise.
        _ => frame.to_vec(),
    }
}

/// A master request the segment understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    SndNke,
    ReqUd1,
    ReqUd2 {
        fcb: bool,
    },
    /// Secondary select (always to 0xFD), with the 8 mask bytes.
    Select([u8; 8]),
    SetAddress(u8),
    /// SND_UD with CI 0x51 and data other than a set-address record.
    DataSend,
    SwitchBaud(u32),
    ApplicationReset,
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::SndNke => write!(f, "SND_NKE"),
            Request::ReqUd1 => write!(f, "REQ_UD1"),
            Request::ReqUd2 { fcb } => write!(f, "REQ_UD2 FCB={}", u8::from(*fcb)),
            Request::Select(mask) => {
                write!(f, "select ")?;
                let id = u32::from_le_bytes([mask[0], mask[1], mask[2], mask[3]]);
                write!(
                    f,
                    "{id:08X}{:02X}{:02X}{:02X}{:02X}",
                    mask[4], mask[5], mask[6], mask[7]
                )
            }
            Request::SetAddress(a) => write!(f, "set address {a}"),
            Request::DataSend => write!(f, "SND_UD data"),
            Request::SwitchBaud(b) => write!(f, "switch baud {b}"),
            Request::ApplicationReset => write!(f, "application reset"),
        }
    }
}

/// Classifies a whole frame from the master: its address and request, or `None` for
/// anything a slave would not act on.
pub fn classify(frame: &[u8]) -> Option<(u8, Request)> {
    let parsed = Frame::parse(frame).ok()?;
    let address = parsed.address()?;
    let control = parsed.control()?;
    let request = match parsed {
        Frame::Short { .. } => match ControlFunction::from_control(control) {
            ControlFunction::SndNke => Request::SndNke,
            ControlFunction::ReqUd1 => Request::ReqUd1,
            ControlFunction::ReqUd2 => Request::ReqUd2 {
                fcb: wired::ControlField(control).fcb(),
            },
            _ => return None,
        },
        Frame::Control { ci, .. } | Frame::Long { ci, .. } => {
            if ControlFunction::from_control(control) != ControlFunction::SndUd {
                return None;
            }
            let data = parsed.data();
            match ci {
                CI_APPLICATION_RESET if data.len() <= 1 => Request::ApplicationReset,
                CI_DATA_SEND => match data {
                    [d, v, new] if [*d, *v] == SET_ADDRESS_RECORD => Request::SetAddress(*new),
                    _ => Request::DataSend,
                },
                CI_SELECT_SECONDARY if address == ADDRESS_NETWORK_LAYER => {
                    Request::Select(data.try_into().ok()?)
                }
                CI_BAUD_FIRST..=0xBF if data.is_empty() => {
                    let rate = BAUD_RATES.get(usize::from(ci - CI_BAUD_FIRST))?;
                    Request::SwitchBaud(*rate)
                }
                _ => return None,
            }
        }
        Frame::Ack => return None,
    };
    Some((address, request))
}

/// What the line carries after a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReply {
    /// Echo (if any), then the answer; empty for silence.
    pub bytes: Vec<u8>,
    /// How many meters answered; above 1 the answer is a collision.
    pub responders: usize,
    /// Leading bytes of `bytes` that are the echo of the request.
    pub echo: usize,
    /// The slowest responder's extra delay before answering.
    pub delay: Duration,
}

impl SimReply {
    /// The bytes after the echo.
    pub fn answer(&self) -> &[u8] {
        self.bytes.get(self.echo..).unwrap_or_default()
    }
}

/// A wired segment: the meters on it and how the converter behaves.
#[derive(Debug, Clone)]
pub struct BusSim {
    meters: Vec<SimMeter>,
    /// The converter echoes every request before any answer.
    pub echo: bool,
    /// The rate the master is expected to use (the servers' default).
    pub baud: u32,
}

impl BusSim {
    pub fn new(meters: Vec<SimMeter>) -> BusSim {
        BusSim {
            meters,
            echo: false,
            baud: DEFAULT_BAUD,
        }
    }

    pub fn with_echo(mut self, echo: bool) -> BusSim {
        self.echo = echo;
        self
    }

    /// Sets the line rate and moves every meter to it.
    pub fn with_baud(mut self, baud: u32) -> BusSim {
        self.baud = baud;
        for m in &mut self.meters {
            m.baud = baud;
        }
        self
    }

    pub fn meters(&self) -> &[SimMeter] {
        &self.meters
    }

    /// The segment's answer to one request sent at `baud`. Never panics; bytes that are not
    /// a request a slave acts on give silence (plus the echo, if enabled).
    pub fn handle(&mut self, frame: &[u8], baud: u32) -> SimReply {
        let mut reply = SimReply::default();
        if self.echo {
            reply.bytes.extend_from_slice(frame);
            reply.echo = frame.len();
        }
        let Some((address, request)) = classify(frame) else {
            return reply;
        };
        let mut answers: Vec<Vec<u8>> = Vec::new();
        let mut delay = Duration::ZERO;
        let answering = address != ADDRESS_BROADCAST_NO_REPLY;
        for meter in self.meters.iter_mut().filter(|m| m.baud == baud) {
            let addressed = match address {
                ADDRESS_NETWORK_LAYER => meter.state.selected,
                ADDRESS_BROADCAST_REPLY | ADDRESS_BROADCAST_NO_REPLY => true,
                a => meter.primary == a,
            };
            let answer = match request {
                Request::Select(mask) => {
                    meter.state.selected = meter.secondary.matches(&mask);
                    meter.state.selected.then(|| vec![wired::ACK])
                }
                _ if !addressed => None,
                Request::SndNke => {
                    meter.reset_link();
                    if address == ADDRESS_NETWORK_LAYER {
                        meter.state.selected = false;
                    }
                    Some(vec![wired::ACK])
                }
                Request::ReqUd1 => Some(vec![wired::ACK]),
                Request::ReqUd2 { fcb } => Some(meter.answer_req_ud2(fcb)),
                Request::SetAddress(new) => {
                    // The link layer acknowledges; a meter refuses the reserved addresses.
                    if new <= ADDRESS_MAX_PRIMARY {
                        meter.primary = new;
                    }
                    Some(vec![wired::ACK])
                }
                Request::DataSend => Some(vec![wired::ACK]),
                Request::SwitchBaud(rate) => {
                    // The E5 goes out at the old rate: it is computed here, before the
                    // server paces it, and the new rate only affects later requests.
                    meter.baud = rate;
                    Some(vec![wired::ACK])
                }
                Request::ApplicationReset => {
                    meter.state.next_index = 0;
                    Some(vec![wired::ACK])
                }
            };
            if let (Some(answer), true) = (answer, answering) {
                delay = delay.max(meter.reply_delay);
                answers.push(answer);
            }
        }
        reply.responders = answers.len();
        reply.delay = delay;
        match answers.as_slice() {
            [] => {}
            [one] => reply.bytes.extend_from_slice(one),
            many => reply.bytes.extend(collide(many)),
        }
        reply
    }
}

/// What the master receives when several slaves answer at once; never one valid frame.
pub fn collide(answers: &[Vec<u8>]) -> Vec<u8> {
    let len = answers.iter().map(Vec::len).max().unwrap_or(0);
    // An idle slave leaves the line at mark (all ones), so the AND pads with 0xFF.
    let mut mixed = vec![0xFFu8; len];
    for answer in answers {
        for (m, b) in mixed.iter_mut().zip(answer) {
            *m &= b;
        }
    }
    if matches!(scan(&mixed), Scan::Complete(n) if n == mixed.len()) {
        for answer in answers.iter().skip(1) {
            mixed.extend_from_slice(answer);
        }
    }
    mixed
}

/// Why a simulated segment could not be built.
#[derive(Debug, Error)]
pub enum SimError {
    #[error("configuration: {0}")]
    Yaml(String),
    #[error("meter {index} (primary {primary}): {message}")]
    Meter {
        index: usize,
        primary: u8,
        message: String,
    },
    #[error("telegram {index}: {message}")]
    Telegram { index: usize, message: String },
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

/// A segment as written in YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    pub meters: Vec<MeterConfig>,
    #[serde(default)]
    pub echo: bool,
    #[serde(default = "default_baud")]
    pub baud: u32,
}

fn default_baud() -> u32 {
    DEFAULT_BAUD
}

/// An ID written either as a quoted string or, when it has no hex letters, a bare number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IdText {
    Text(String),
    Number(u64),
}

impl IdText {
    fn parse(&self) -> Option<u32> {
        let text = match self {
            IdText::Text(t) => t.trim().to_owned(),
            IdText::Number(n) => format!("{n:08}"),
        };
        if text.len() != 8 {
            return None;
        }
        u32::from_str_radix(&text, 16).ok()
    }
}

/// One meter as written in YAML. Unset secondary fields come from the first telegram's
/// header when telegrams are given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterConfig {
    pub primary: u8,
    #[serde(default)]
    pub secondary: Option<IdText>,
    #[serde(default)]
    pub manufacturer: Option<String>,
    #[serde(default)]
    pub version: Option<u8>,
    #[serde(default)]
    pub medium: Option<u8>,
    /// Defaults to the segment's rate.
    #[serde(default)]
    pub baud: Option<u32>,
    #[serde(default)]
    pub telegrams: Vec<String>,
    #[serde(default)]
    pub needs_snd_nke: bool,
    #[serde(default)]
    pub reply_delay_ms: u64,
    /// The next this many answers to REQ_UD2 arrive with a broken checksum.
    #[serde(default)]
    pub garbled_replies: u32,
}

/// The secondary address a telegram announces in its header, if it has one.
pub fn secondary_of(frame: &[u8]) -> Option<SecondaryAddress> {
    let parsed = Frame::parse(frame).ok()?;
    let ci = parsed.ci()?;
    // Offset 7 is where user data starts after 68 L L 68 C A CI.
    match application::parse(ci, parsed.data(), 7).ok()? {
        Application::Variable {
            header: Header::Long(h),
            ..
        } => Some(SecondaryAddress {
            id: h.id.0,
            manufacturer: h.manufacturer.0,
            version: h.version,
            medium: h.medium.code(),
        }),
        Application::Fixed(f) => Some(SecondaryAddress {
            id: f.id.0,
            manufacturer: 0,
            version: 0,
            medium: f.medium_code,
        }),
        _ => None,
    }
}

fn check_baud(baud: u32) -> Result<u32, String> {
    if BAUD_RATES.contains(&baud) {
        Ok(baud)
    } else {
        Err(format!("baud {baud} is not an M-Bus rate ({BAUD_RATES:?})"))
    }
}

impl MeterConfig {
    fn build(&self, bus_baud: u32) -> Result<SimMeter, String> {
        if self.primary > ADDRESS_MAX_PRIMARY {
            return Err(format!(
                "primary address {} is above {ADDRESS_MAX_PRIMARY}",
                self.primary
            ));
        }
        let telegrams = self
            .telegrams
            .iter()
            .enumerate()
            .map(|(i, t)| hex::decode(t).map_err(|e| format!("telegram {i}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let from_header = telegrams.first().and_then(|t| secondary_of(t));
        let id = match &self.secondary {
            Some(text) => text
                .parse()
                .ok_or_else(|| format!("secondary {text:?} is not 8 hex/BCD digits"))?,
            None => from_header.map_or(u32::from(self.primary), |s| s.id),
        };
        let manufacturer = match &self.manufacturer {
            Some(code) => {
                Manufacturer::from_letters(code)
                    .ok_or_else(|| format!("manufacturer {code:?} is not three letters A-Z"))?
                    .0
            }
            None => from_header.map_or(Manufacturer::from_letters("SIM").map_or(0, |m| m.0), |s| {
                s.manufacturer
            }),
        };
        let secondary = SecondaryAddress {
            id,
            manufacturer,
            version: self.version.or(from_header.map(|s| s.version)).unwrap_or(1),
            medium: self.medium.or(from_header.map(|s| s.medium)).unwrap_or(7),
        };
        let baud = check_baud(self.baud.unwrap_or(bus_baud))?;
        let meter = SimMeter::new(self.primary, secondary)
            .with_baud(baud)
            .with_needs_snd_nke(self.needs_snd_nke)
            .with_reply_delay(Duration::from_millis(self.reply_delay_ms))
            .with_garbled_replies(self.garbled_replies);
        meter.with_telegrams(telegrams).map_err(|e| e.to_string())
    }
}

impl BusConfig {
    pub fn from_yaml_str(text: &str) -> Result<BusConfig, SimError> {
        serde_saphyr::from_str(text).map_err(|e| SimError::Yaml(e.to_string()))
    }

    pub fn build(&self) -> Result<BusSim, SimError> {
        let baud = check_baud(self.baud).map_err(SimError::Yaml)?;
        let meters = self
            .meters
            .iter()
            .enumerate()
            .map(|(index, m)| {
                m.build(baud).map_err(|message| SimError::Meter {
                    index,
                    primary: m.primary,
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BusSim {
            meters,
            echo: self.echo,
            baud,
        })
    }
}

impl BusSim {
    pub fn from_yaml_str(text: &str) -> Result<BusSim, SimError> {
        BusConfig::from_yaml_str(text)?.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telegram::decode_wired;
    use crate::wire::wired::{req_ud2, select_secondary, set_primary_address, snd_nke};

    const B: u32 = 2400;

    fn addr(id: u32) -> SecondaryAddress {
        SecondaryAddress {
            id,
            manufacturer: Manufacturer::from_letters("KAM").map_or(0, |m| m.0),
            version: 1,
            medium: 7,
        }
    }

    fn telegram(address: u8, id: u32, marker: u8) -> Vec<u8> {
        // The access number tells the telegrams apart.
        SimMeter::new(address, addr(id)).generated(marker)
    }

    fn header_id(frame: &[u8]) -> Option<String> {
        let t = decode_wired(frame).ok()?;
        match t.application {
            Application::Variable {
                header: Header::Long(h),
                ..
            } => Some(h.id.to_string()),
            _ => None,
        }
    }

    fn access(frame: &[u8]) -> Option<u8> {
        frame.get(7 + 8).copied()
    }

    #[test]
    fn snd_nke_primary_broadcast_and_silent_broadcast() {
        let mut bus = BusSim::new(vec![
            SimMeter::new(5, addr(0x11111111)),
            SimMeter::new(6, addr(0x22222222)),
        ]);
        let r = bus.handle(&snd_nke(5), B);
        assert_eq!((r.bytes.as_slice(), r.responders), (&[0xE5][..], 1));
        assert_eq!(bus.handle(&snd_nke(7), B), SimReply::default());
        let r = bus.handle(&snd_nke(0xFE), B);
        assert_eq!((r.bytes, r.responders), (vec![0xE5, 0xE5], 2));
        let r = bus.handle(&snd_nke(0xFF), B);
        assert_eq!((r.bytes.len(), r.responders), (0, 0));
        // Wrong baud: the meter hears noise.
        assert_eq!(bus.handle(&snd_nke(5), 9600).responders, 0);
    }

    #[test]
    fn req_ud2_generated_telegram_counts_access_number() {
        let mut bus = BusSim::new(vec![SimMeter::new(5, addr(0x12345678))]);
        bus.handle(&snd_nke(5), B);
        let first = bus.handle(&req_ud2(5, true), B).bytes;
        assert_eq!(header_id(&first).as_deref(), Some("12345678"));
        assert_eq!(first.get(4..7), Some(&[0x08, 5, 0x72][..]));
        let again = bus.handle(&req_ud2(5, true), B).bytes;
        assert_eq!(first, again, "same FCB repeats");
        let next = bus.handle(&req_ud2(5, false), B).bytes;
        assert_eq!(access(&next), access(&first).map(|a| a + 1));
    }

    #[test]
    fn multi_telegram_fcb_cycle_wraps() {
        let t = vec![telegram(9, 1, 0xA0), telegram(9, 1, 0xB0)];
        let meter = SimMeter::new(3, addr(1)).with_telegrams(t);
        let mut bus = BusSim::new(vec![meter.expect("valid telegrams")]);
        bus.handle(&snd_nke(3), B);
        let seq: Vec<_> = [true, false, false, true, true]
            .iter()
            .map(|&fcb| access(&bus.handle(&req_ud2(3, fcb), B).bytes))
            .collect();
        assert_eq!(
            seq,
            [Some(0xA0), Some(0xB0), Some(0xB0), Some(0xA0), Some(0xA0)]
        );
        // The A field follows the meter, not the telegram file.
        let r = bus.handle(&req_ud2(3, false), B).bytes;
        assert_eq!(r.get(5), Some(&3));
        assert!(Frame::parse(&r).is_ok());
    }

    #[test]
    fn needs_snd_nke_returns_stale_first_telegram() {
        let t = vec![telegram(1, 1, 0xA0), telegram(1, 1, 0xB0)];
        let meter = SimMeter::new(1, addr(1))
            .with_telegrams(t)
            .map(|m| m.with_needs_snd_nke(true));
        let mut bus = BusSim::new(vec![meter.expect("valid telegrams")]);
        for fcb in [true, false, true] {
            assert_eq!(access(&bus.handle(&req_ud2(1, fcb), B).bytes), Some(0xA0));
        }
        bus.handle(&snd_nke(1), B);
        assert_eq!(access(&bus.handle(&req_ud2(1, true), B).bytes), Some(0xA0));
        assert_eq!(access(&bus.handle(&req_ud2(1, false), B).bytes), Some(0xB0));
    }

    #[test]
    fn secondary_select_with_wildcards() {
        let mut bus = BusSim::new(vec![
            SimMeter::new(0, addr(0x12345678)),
            SimMeter::new(0, addr(0x12349999)),
        ]);
        let mut mask = addr(0x12345678).to_select_bytes();
        mask[0] = 0xF8; // ID ...F8: only the first meter
        mask[4] = 0xFF;
        mask[5] = 0xFF;
        let r = bus.handle(&select_secondary(&mask), B);
        assert_eq!((r.bytes.as_slice(), r.responders), (&[0xE5][..], 1));
        let rsp = bus.handle(&req_ud2(0xFD, true), B).bytes;
        assert_eq!(header_id(&rsp).as_deref(), Some("12345678"));

        // ID 1234FFFF: both; a REQ_UD2 to 0xFD then collides.
        let wide = [0xFF, 0xFF, 0x34, 0x12, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(bus.handle(&select_secondary(&wide), B).bytes, [0xE5, 0xE5]);
        let r = bus.handle(&req_ud2(0xFD, false), B);
        assert_eq!(r.responders, 2);
        assert!(!matches!(scan(&r.bytes), Scan::Complete(n) if n == r.bytes.len()));

        // A select nobody matches deselects everyone; SND_NKE to 0xFD deselects too.
        let none = [0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(bus.handle(&select_secondary(&none), B).responders, 0);
        assert!(bus.meters().iter().all(|m| !m.is_selected()));
        bus.handle(&select_secondary(&mask), B);
        assert_eq!(bus.handle(&snd_nke(0xFD), B).responders, 1);
        assert_eq!(bus.handle(&req_ud2(0xFD, true), B).responders, 0);
    }

    #[test]
    fn manufacturer_wildcard_is_per_byte() {
        let a = addr(0x12345678);
        let mut mask = a.to_select_bytes();
        assert!(a.matches(&mask));
        mask[4] = 0xF0 | (mask[4] & 0x0F);
        assert!(
            !a.matches(&mask),
            "a nibble F is not a wildcard outside the ID"
        );
    }

    #[test]
    fn set_address_baud_switch_and_application_reset() {
        let mut bus = BusSim::new(vec![SimMeter::new(5, addr(0x12345678))]);
        assert_eq!(bus.handle(&set_primary_address(5, 7), B).bytes, [0xE5]);
        assert_eq!(bus.handle(&req_ud2(5, true), B).responders, 0);
        let rsp = bus.handle(&req_ud2(7, true), B).bytes;
        assert_eq!(rsp.get(5), Some(&7));
        // Reserved addresses are acknowledged but refused.
        assert_eq!(bus.handle(&set_primary_address(7, 0xFE), B).bytes, [0xE5]);
        assert_eq!(bus.meters().first().map(|m| m.primary), Some(7));

        let switch = wired::switch_baud(7, 9600).unwrap_or_default();
        let r = bus.handle(&switch, B);
        assert_eq!(r.bytes, [0xE5], "the ACK comes at the old rate");
        assert_eq!(bus.handle(&snd_nke(7), B).responders, 0);
        assert_eq!(bus.handle(&snd_nke(7), 9600).bytes, [0xE5]);

        let reset = wired::application_reset(7, None);
        assert_eq!(bus.handle(&reset, 9600).bytes, [0xE5]);
        let reset = wired::application_reset(7, Some(0x10));
        assert_eq!(bus.handle(&reset, 9600).bytes, [0xE5]);
    }

    #[test]
    fn echo_comes_first_even_for_silence() {
        let mut bus = BusSim::new(vec![SimMeter::new(5, addr(1))]).with_echo(true);
        let req = snd_nke(5);
        let r = bus.handle(&req, B);
        assert_eq!(r.bytes, [&req[..], &[0xE5]].concat());
        assert_eq!((r.echo, r.answer()), (5, &[0xE5][..]));
        let r = bus.handle(&snd_nke(9), B);
        assert_eq!((r.bytes.len(), r.responders), (5, 0));
    }

    #[test]
    fn identical_answers_still_collide() {
        let t = telegram(1, 1, 1);
        let mixed = collide(&[t.clone(), t.clone()]);
        assert_eq!(mixed, [t.clone(), t].concat());
        assert_eq!(collide(&[vec![0xE5], vec![0xE5]]), [0xE5, 0xE5]);
    }

    #[test]
    fn garbage_and_slave_frames_are_silence() {
        let mut bus = BusSim::new(vec![SimMeter::new(5, addr(1))]);
        let inputs: [&[u8]; 7] = [
            &[],
            &[0xE5],
            &[0x00, 0x01],
            &[0x10, 0x5B, 0x05, 0x61, 0x16],
            &[0x10, 0x08, 0x05, 0x0D, 0x16],
            &[0x68, 0x03, 0x03, 0x68, 0x53, 0x05, 0x99, 0xF1, 0x16],
            &[0x68, 0x04, 0x04, 0x68, 0x53, 0xFD, 0x52, 0x00, 0xA2, 0x16],
        ];
        for input in inputs {
            assert_eq!(bus.handle(input, B), SimReply::default(), "{input:02X?}");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut bus = BusSim::new(vec![SimMeter::new(1, addr(1)), SimMeter::new(2, addr(2))]);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            let len = usize::from(bytes[0] % 9);
            let mut frame = bytes.get(1..1 + len.min(7)).unwrap_or_default().to_vec();
            if bytes[7] & 1 == 0 {
                // Valid-looking frames reach the request handling.
                frame = Frame::Long {
                    control: bytes[1] | 0x40,
                    address: bytes[2] % 4,
                    ci: bytes[3],
                    data: &frame,
                }
                .to_bytes();
            }
            let _ = bus.handle(&frame, B);
        }
    }

    #[test]
    fn yaml_config() {
        let yaml = r#"
echo: true
baud: 9600
meters:
  - primary: 5
    secondary: "12345678"
    manufacturer: KAM
    version: 1
    medium: 7
  - primary: 6
    secondary: 87654321
    baud: 2400
    needs_snd_nke: true
    reply_delay_ms: 20
    telegrams:
      - "68 0F 0F 68 08 01 72 78 56 34 12 2D 2C 02 07 01 00 00 00 F2 16"
"#;
        let bus = BusSim::from_yaml_str(yaml).expect("valid config");
        assert!(bus.echo);
        let [a, b] = bus.meters() else {
            panic!("two meters");
        };
        assert_eq!((a.primary, a.secondary.id, a.baud), (5, 0x12345678, 9600));
        assert_eq!(a.secondary.manufacturer, 0x2C2D);
        assert_eq!(
            (b.secondary.id, b.baud, b.telegram_count()),
            (0x87654321, 2400, 1)
        );
        assert_eq!(b.reply_delay, Duration::from_millis(20));

        assert!(BusSim::from_yaml_str("meters: [{primary: 1, colour: red}]").is_err());
        assert!(BusSim::from_yaml_str("meters: [{primary: 251}]").is_err());
        assert!(BusSim::from_yaml_str("meters: [{primary: 1, baud: 1234}]").is_err());
        assert!(BusSim::from_yaml_str("meters: [{primary: 1, telegrams: [\"E5\"]}]").is_err());
        assert!(BusSim::from_yaml_str("meters: [{primary: 1, manufacturer: kam}]").is_err());
    }

    #[test]
    fn garbled_replies_break_the_checksum_and_the_repeat_is_the_same_telegram() {
        let meter = SimMeter::new(5, addr(0x12345678)).with_garbled_replies(1);
        let mut bus = BusSim::new(vec![meter]);
        let first = bus.handle(&req_ud2(5, true), B).bytes;
        assert!(Frame::parse(&first).is_err(), "checksum must be broken");
        // The master repeats with the same FCB: the same telegram, now intact.
        let again = bus.handle(&req_ud2(5, true), B).bytes;
        assert_eq!(access(&again), Some(1));
        assert_eq!(first.len(), again.len());
        let differing = first.iter().zip(&again).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 1);
        // Later answers are clean.
        let next = bus.handle(&req_ud2(5, false), B).bytes;
        assert_eq!(access(&next), Some(2));
        let yaml = "meters: [{primary: 3, garbled_replies: 4}]";
        let bus = BusSim::from_yaml_str(yaml).expect("valid config");
        assert_eq!(bus.meters().first().map(|m| m.garbled_replies), Some(4));
    }

    #[test]
    fn secondary_defaults_from_telegram_header() {
        let yaml = "meters:\n  - primary: 2\n    telegrams: [\"68 0F 0F 68 08 01 72 78 56 34 12 2D 2C 02 07 01 00 00 00 F2 16\"]\n";
        let bus = BusSim::from_yaml_str(yaml).expect("valid config");
        let m = bus.meters().first().map(|m| m.secondary);
        assert_eq!(
            m,
            Some(SecondaryAddress {
                id: 0x12345678,
                manufacturer: 0x2C2D,
                version: 2,
                medium: 7
            })
        );
    }
}
