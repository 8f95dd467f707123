//! The wired M-Bus master: reads meters, changes their link settings and scans the bus, over
//! one half-duplex [`Port`].
//!
//! Where it departs from libmbus (wired.md §4, §7) on purpose:
//! - SND_NKE goes to the meter's own address, so its frame-count state really is reset;
//! - the FCB is tracked per address: FCB=1 after a reset, toggled after every good answer,
//!   kept on a retry (wired.md §3.3), so multi-telegram meters step forward exactly once per
//!   telegram;
//! - replies are judged inside the standard's response window, with no purge reads;
//! - the secondary scan is the one of wired.md §8 (see [`scan`]).

mod mask;
pub mod scan;

#[cfg(test)]
mod fake_bus;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::time::Instant;

use crate::telegram::decode_wired;
use crate::transport::{timing, Port, Reply};
use crate::wire::wired::{self, ControlFunction, Frame, ACK, ADDRESS_NETWORK_LAYER};

pub use mask::{MaskParseError, SecondaryMask};
pub use scan::{Found, ScanEvent, ScanProgress};

/// Which meter a command is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Primary(u8),
    /// Selected first (the mask should match exactly one meter), then addressed at 0xFD.
    Secondary(SecondaryMask),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Primary(a) => write!(f, "the meter at primary address {a}"),
            Target::Secondary(m) => write!(f, "the meter with secondary address {m}"),
        }
    }
}

#[derive(Debug, Error)]
pub enum MasterError {
    #[error(
        "M-Bus port failed while {action}: {source}; check the converter or gateway connection"
    )]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{target} did not answer {request} ({attempts} attempt(s)); check the address, the baud \
         rate ({baud}) and the wiring"
    )]
    NoAnswer {
        target: Target,
        request: &'static str,
        attempts: u32,
        baud: u32,
    },
    #[error(
        "{target} sent no valid RSP_UD to {request} in {attempts} attempt(s), last reply {last}; \
         two meters may share the address, or the line is noisy"
    )]
    InvalidReply {
        target: Target,
        request: &'static str,
        attempts: u32,
        last: String,
    },
    #[error(
        "no meter acknowledged the selection of secondary address {mask}; check the mask or run \
         a secondary scan"
    )]
    NotSelected { mask: SecondaryMask },
    #[error(
        "several meters answered the selection of {mask} ({bytes}); give a mask that matches \
         exactly one meter"
    )]
    SelectCollision { mask: SecondaryMask, bytes: String },
    #[error(
        "{target} did not acknowledge {command} (reply: {reply}); the meter may not support it"
    )]
    NotAcknowledged {
        target: Target,
        command: &'static str,
        reply: String,
    },
    #[error(
        "{new} cannot be a primary address: 253-255 are the network layer and the broadcasts; \
         use 0-250"
    )]
    ReservedAddress { new: u8 },
    #[error(
        "primary address {new} is already answered by another meter ({reply}); choose a free \
         address for {target}"
    )]
    AddressInUse {
        target: Target,
        new: u8,
        reply: String,
    },
    #[error(
        "{target} acknowledged the new primary address {new} but does not answer there; read it \
         back at its old address or by secondary address"
    )]
    AddressNotVerified { target: Target, new: u8 },
    #[error(
        "M-Bus has no baud rate {baud}; use one of 300, 600, 1200, 2400, 4800, 9600, 19200, 38400"
    )]
    UnsupportedBaud { baud: u32 },
    #[error(
        "{target} acknowledged the switch from {old} to {new} baud but does not answer at {new}; \
         it may still run at {old}, try both rates"
    )]
    BaudNotVerified { target: Target, old: u32, new: u32 },
    #[error(
        "reconfiguring the port to {baud} baud failed: {source}; the meter already runs at {baud}"
    )]
    Reconfigure {
        baud: u32,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the connection to the gateway {address} dropped during {action} and could not be \
         reopened ({attempts} attempt(s)): {source}"
    )]
    Reconnect {
        address: String,
        action: String,
        attempts: u32,
        #[source]
        source: crate::transport::open::OpenError,
    },
    #[error("scan stopped on request after {probes} probe(s); the bus was deselected")]
    Cancelled { probes: u32, found: Vec<Found> },
}

impl MasterError {
    fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> MasterError {
        let action = action.into();
        move |source| MasterError::Io { action, source }
    }
}

/// Settings for a [`Master`] that do not come from the standard.
#[derive(Debug, Clone)]
pub struct MasterOptions {
    /// Repeats of a request whose answer was missing or broken (so `retries + 1` attempts).
    pub retries: u32,
    /// Least idle line before each request; the standard's 11 bit times are always kept.
    pub idle_gap: Duration,
    /// Set from elsewhere (a Ctrl-C handler) to stop a scan between two probes; the master
    /// then deselects the bus before it returns.
    pub stop: Option<Arc<AtomicBool>>,
    /// Told about events the user should see but that do not stop the work (a gateway
    /// connection reopened).
    pub notice: Option<Notice>,
    /// Waits before each attempt to reopen a dropped gateway connection; one attempt per entry.
    pub reconnect_backoff: Vec<Duration>,
}

/// A callback for [`MasterOptions::notice`].
#[derive(Clone)]
pub struct Notice(pub Arc<dyn Fn(&str) + Send + Sync>);

impl fmt::Debug for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Notice(..)")
    }
}

impl Default for MasterOptions {
    fn default() -> Self {
        MasterOptions {
            retries: 3,
            idle_gap: Duration::ZERO,
            stop: None,
            notice: None,
            // Gateways refuse a new connection for a moment after dropping the old one.
            reconnect_backoff: vec![
                Duration::from_millis(200),
                Duration::from_secs(1),
                Duration::from_secs(3),
            ],
        }
    }
}

/// How much of a meter to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// Most telegrams fetched while the meter says more follow (DIF 0x1F).
    pub max_frames: usize,
    /// Stop asking for further telegrams once this many records arrived.
    pub max_records: Option<usize>,
    /// Reset the meter's link (SND_NKE) before reading, so it starts at its first telegram
    /// and cannot answer with a stale one (wired.md §9, problem 1).
    pub reset_first: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_frames: 16,
            max_records: None,
            reset_first: true,
        }
    }
}

/// Bus master over one port. Not shareable: M-Bus is half duplex and a meter's FCB state
/// only means something if every request to it goes through the same master.
pub struct Master {
    port: Port,
    /// FCB for the next REQ_UD2 per primary address.
    fcb: HashMap<u8, bool>,
    /// The same per selected secondary address (the meter keeps one FCB whichever way it is
    /// addressed, but the master only knows it by the mask it selected it with).
    secondary_fcb: HashMap<[u8; 8], bool>,
    retries: u32,
    idle_gap: Duration,
    stop: Option<Arc<AtomicBool>>,
    /// When the line last went quiet; the next request waits for the idle gap after it.
    quiet_since: Option<Instant>,
    notice: Option<Notice>,
    reconnect_backoff: Vec<Duration>,
    reconnects: u32,
}

/// Readable hex for error messages.
pub(crate) fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "nothing".into();
    }
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

fn describe(reply: &Reply) -> String {
    match reply {
        Reply::Silence => "silence".into(),
        Reply::Frame(b) => hex(b),
        Reply::Garbled(b) => format!("garbled {}", hex(b)),
    }
}

/// What a REQ_UD2 exchange produced.
enum Poll {
    Telegram(Vec<u8>),
    Silent,
    Invalid(String),
}

impl Master {
    pub fn new(port: Port, options: MasterOptions) -> Master {
        Master {
            port,
            fcb: HashMap::new(),
            secondary_fcb: HashMap::new(),
            retries: options.retries,
            idle_gap: options.idle_gap,
            stop: options.stop,
            quiet_since: None,
            notice: options.notice,
            reconnect_backoff: options.reconnect_backoff,
            reconnects: 0,
        }
    }

    /// Replaces the switch that stops a scan (a daemon's bus master lives longer than one
    /// scan, and each scan started from the web page has its own cancel switch).
    pub fn set_stop(&mut self, stop: Option<Arc<AtomicBool>>) {
        self.stop = stop;
    }

    /// How often a dropped gateway connection was reopened.
    pub fn reconnects(&self) -> u32 {
        self.reconnects
    }

    pub fn port(&self) -> &Port {
        &self.port
    }

    /// The port back, e.g. to reopen a serial device.
    pub fn into_port(self) -> Port {
        self.port
    }

    fn stop_requested(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }

    /// One request and whatever comes back within the response window. A gateway connection
    /// that dropped is reopened and the request sent again, once: the meters behind it keep
    /// their state (FCB, selection), so repeating the request is what the master would do
    /// after any lost answer.
    async fn exchange(&mut self, frame: &[u8], action: &str) -> Result<Reply, MasterError> {
        if self.port.is_closed() && self.port.reconnect_address().is_some() {
            self.reopen(action).await?;
        }
        match self.exchange_once(frame, action).await {
            Err(MasterError::Io { .. }) if self.port.reconnect_address().is_some() => {
                self.reopen(action).await?;
                self.exchange_once(frame, action).await
            }
            other => other,
        }
    }

    async fn reopen(&mut self, action: &str) -> Result<(), MasterError> {
        let address = self
            .port
            .reconnect_address()
            .unwrap_or_default()
            .to_string();
        let mut last = None;
        let mut attempts = 0;
        for wait in self.reconnect_backoff.clone() {
            tokio::time::sleep(wait).await;
            attempts += 1;
            match self.port.reconnect(Duration::from_secs(5)).await {
                Ok(()) => {
                    self.reconnects += 1;
                    self.quiet_since = None;
                    if let Some(Notice(notice)) = &self.notice {
                        notice(&format!(
                            "the gateway {address} dropped the connection; reconnected"
                        ));
                    }
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(MasterError::Reconnect {
            address,
            action: action.to_string(),
            attempts,
            source: last.unwrap_or(crate::transport::open::OpenError::NotReconnectable),
        })
    }

    async fn exchange_once(&mut self, frame: &[u8], action: &str) -> Result<Reply, MasterError> {
        let baud = self.port.config.baud;
        if let Some(quiet) = self.quiet_since {
            let gap = self.idle_gap.max(timing::idle_gap(baud));
            tokio::time::sleep_until(quiet + gap).await;
        }
        self.port
            .send(frame)
            .await
            .map_err(MasterError::io(format!("sending {action}")))?;
        // A serial write returns before the bytes are on the line, so the window only starts
        // once our frame has gone out.
        let request_end = Instant::now() + timing::wire_time(baud, frame.len());
        let reply = self
            .port
            .receive(timing::wire_time(baud, frame.len()))
            .await
            .map_err(MasterError::io(format!(
                "waiting for the answer to {action}"
            )));
        // After silence the line has been idle since our request ended, a whole response
        // window longer than the standard's idle gap, so the next request may go at once
        // (251 idle gaps, 1.1 s at 2400 baud, off a primary scan). After an answer the gap
        // counts from its end.
        self.quiet_since = match reply {
            Ok(Reply::Silence) => Some(request_end),
            _ => Some(Instant::now()),
        };
        reply
    }

    /// SND_NKE to `address`; true if it was acknowledged. Whatever the answer, the next
    /// REQ_UD2 to that address uses FCB=1: a meter that heard the reset expects exactly that.
    pub async fn snd_nke(&mut self, address: u8) -> Result<bool, MasterError> {
        let reply = self.exchange(&wired::snd_nke(address), "SND_NKE").await?;
        if address == ADDRESS_NETWORK_LAYER {
            self.secondary_fcb.clear();
        } else {
            self.fcb.insert(address, true);
        }
        Ok(matches!(reply, Reply::Frame(ref b) if b.as_slice() == [ACK]))
    }

    /// Deselects whatever meter is selected, so it stops answering at 0xFD.
    async fn deselect(&mut self) -> Result<(), MasterError> {
        self.snd_nke(ADDRESS_NETWORK_LAYER).await.map(|_| ())
    }

    /// Selects by secondary address; exactly one clean E5 counts as selected.
    async fn select(&mut self, mask: SecondaryMask) -> Result<(), MasterError> {
        match self
            .exchange(
                &wired::select_secondary(&mask.to_select_bytes()),
                "a secondary select",
            )
            .await?
        {
            Reply::Frame(b) if b.as_slice() == [ACK] => Ok(()),
            Reply::Silence => Err(MasterError::NotSelected { mask }),
            Reply::Frame(b) | Reply::Garbled(b) => Err(MasterError::SelectCollision {
                mask,
                bytes: hex(&b),
            }),
        }
    }

    /// Makes `target` reachable and returns the address to talk to it at.
    async fn open(&mut self, target: Target) -> Result<u8, MasterError> {
        match target {
            Target::Primary(a) => Ok(a),
            Target::Secondary(mask) => {
                self.select(mask).await?;
                Ok(ADDRESS_NETWORK_LAYER)
            }
        }
    }

    /// Undoes [`Master::open`]. The command's own error wins over a failed deselect, since it
    /// is what the caller needs to act on.
    async fn close<T>(
        &mut self,
        target: Target,
        result: Result<T, MasterError>,
    ) -> Result<T, MasterError> {
        if matches!(target, Target::Secondary(_)) {
            let deselected = self.deselect().await;
            return match (result, deselected) {
                (Ok(v), Ok(())) => Ok(v),
                (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            };
        }
        result
    }

    /// Reads `target`: its RSP_UD telegrams, raw, in the order the meter sent them.
    pub async fn read(
        &mut self,
        target: Target,
        opts: ReadOptions,
    ) -> Result<Vec<Vec<u8>>, MasterError> {
        match target {
            Target::Primary(address) => {
                // Also on first contact since this master was created (a reopened port): the
                // meter still expects the frame count bit of the master before, and half the
                // time it would take our first request for a repeat and send its previous
                // answer again — a stale reading published as new.
                if opts.reset_first || !self.fcb.contains_key(&address) {
                    // An unacknowledged reset is no reason to give up: some meters only answer
                    // REQ_UD2, and the read below reports a meter that is really missing.
                    self.snd_nke(address).await?;
                }
                self.read_frames(target, address, opts).await
            }
            Target::Secondary(mask) => {
                if opts.reset_first {
                    // A meter can only be reset at 0xFD by deselecting it, so this resets
                    // whichever meter was left selected; ours then starts at FCB=1.
                    self.deselect().await?;
                }
                if let Err(e) = self.select(mask).await {
                    return self.close(target, Err(e)).await;
                }
                let result = self.read_frames(target, ADDRESS_NETWORK_LAYER, opts).await;
                self.close(target, result).await
            }
        }
    }

    fn next_fcb(&self, target: Target) -> bool {
        match target {
            Target::Primary(a) => self.fcb.get(&a).copied(),
            Target::Secondary(m) => self.secondary_fcb.get(&m.to_select_bytes()).copied(),
        }
        .unwrap_or(true)
    }

    fn set_fcb(&mut self, target: Target, fcb: bool) {
        match target {
            Target::Primary(a) => {
                self.fcb.insert(a, fcb);
            }
            Target::Secondary(m) => {
                self.secondary_fcb.insert(m.to_select_bytes(), fcb);
            }
        }
    }

    /// REQ_UD2 until the meter has nothing more to say, `max_frames` or `max_records`.
    async fn read_frames(
        &mut self,
        target: Target,
        address: u8,
        opts: ReadOptions,
    ) -> Result<Vec<Vec<u8>>, MasterError> {
        let mut frames = Vec::new();
        let mut records = 0usize;
        while frames.len() < opts.max_frames.max(1) {
            let telegram = self.poll(target, address).await?;
            // Parsed twice (here and by the caller) so the raw bytes can be handed out
            // without borrowing; telegrams are small.
            let (more, count) = match decode_wired(&telegram) {
                Ok(t) => (t.more_records_follow(), t.records.len()),
                Err(_) => (false, 0),
            };
            frames.push(telegram);
            records += count;
            if !more || opts.max_records.is_some_and(|max| records >= max) {
                break;
            }
        }
        Ok(frames)
    }

    /// One REQ_UD2 with retries. Every retry repeats the FCB, so a meter whose answer got
    /// lost sends the same telegram again instead of skipping to the next.
    async fn poll(&mut self, target: Target, address: u8) -> Result<Vec<u8>, MasterError> {
        let fcb = self.next_fcb(target);
        let telegram = self.poll_with(target, address, fcb).await?;
        self.set_fcb(target, !fcb);
        Ok(telegram)
    }

    /// [`Master::poll`] with the FCB given, for reads outside the per-address bookkeeping
    /// (scan reads of meters known only by a probe mask).
    async fn poll_with(
        &mut self,
        target: Target,
        address: u8,
        fcb: bool,
    ) -> Result<Vec<u8>, MasterError> {
        let request = wired::req_ud2(address, fcb);
        let attempts = self.retries + 1;
        let mut last = None;
        for _ in 0..attempts {
            match Self::judge(self.exchange(&request, "REQ_UD2").await?) {
                Poll::Telegram(t) => return Ok(t),
                Poll::Silent => {}
                Poll::Invalid(what) => last = Some(what),
            }
        }
        Err(match last {
            None => MasterError::NoAnswer {
                target,
                request: "REQ_UD2",
                attempts,
                baud: self.port.config.baud,
            },
            Some(last) => MasterError::InvalidReply {
                target,
                request: "REQ_UD2",
                attempts,
                last,
            },
        })
    }

    /// A valid RSP_UD is a long frame from a slave that decodes; anything else is retried.
    fn judge(reply: Reply) -> Poll {
        let bytes = match reply {
            Reply::Silence => return Poll::Silent,
            Reply::Garbled(b) => return Poll::Invalid(format!("garbled {}", hex(&b))),
            Reply::Frame(b) => b,
        };
        let rsp_ud = match Frame::parse(&bytes) {
            Ok(f @ Frame::Long { .. }) => f
                .control_field()
                .is_some_and(|c| c.function() == ControlFunction::RspUd),
            _ => false,
        };
        if !rsp_ud {
            return Poll::Invalid(format!("{} (not an RSP_UD)", hex(&bytes)));
        }
        match decode_wired(&bytes) {
            Ok(_) => Poll::Telegram(bytes),
            Err(e) => Poll::Invalid(format!("RSP_UD that does not decode: {e}")),
        }
    }

    /// Sends a command that a meter acknowledges with E5; retried while nothing comes back.
    async fn command(
        &mut self,
        target: Target,
        frame: &[u8],
        command: &'static str,
    ) -> Result<(), MasterError> {
        let mut reply = Reply::Silence;
        for _ in 0..=self.retries {
            reply = self.exchange(frame, command).await?;
            match &reply {
                Reply::Frame(b) if b.as_slice() == [ACK] => return Ok(()),
                Reply::Silence => continue,
                // A broken answer may mean the command was carried out; repeating a set
                // address or a baud switch blindly could then hit another meter.
                _ => break,
            }
        }
        Err(MasterError::NotAcknowledged {
            target,
            command,
            reply: describe(&reply),
        })
    }

    /// Gives `target` the primary address `new`, after checking nobody answers there, and
    /// checks afterwards that the meter does.
    pub async fn set_primary_address(
        &mut self,
        target: Target,
        new: u8,
    ) -> Result<(), MasterError> {
        if new >= ADDRESS_NETWORK_LAYER {
            return Err(MasterError::ReservedAddress { new });
        }
        if target == Target::Primary(new) {
            return Ok(());
        }
        let probe = self.exchange(&wired::snd_nke(new), "SND_NKE").await?;
        if probe != Reply::Silence {
            return Err(MasterError::AddressInUse {
                target,
                new,
                reply: describe(&probe),
            });
        }
        let address = self.open(target).await?;
        let result = self
            .command(
                target,
                &wired::set_primary_address(address, new),
                "set primary address",
            )
            .await;
        self.close(target, result).await?;
        if let Target::Primary(old) = target {
            self.fcb.remove(&old);
        }
        if !self.snd_nke(new).await? {
            return Err(MasterError::AddressNotVerified { target, new });
        }
        Ok(())
    }

    /// Switches `target` to `baud`. The meter acknowledges at the old rate and then changes;
    /// the master then sets `port.config.baud` and calls `reconfigure` with the port and the
    /// new rate. That hook is where a serial device is reopened (`*port = Port::new(..)`) —
    /// `Port` cannot change a device's speed itself; for a transparent transport (a TCP
    /// gateway fixed to the bus side, a test stream) it can do nothing. Afterwards the meter
    /// must answer at the new rate (SND_NKE, or a fresh select for a secondary target).
    pub async fn switch_baud(
        &mut self,
        target: Target,
        baud: u32,
        reconfigure: &mut (dyn FnMut(&mut Port, u32) -> std::io::Result<()> + Send),
    ) -> Result<(), MasterError> {
        if wired::switch_baud(0, baud).is_none() {
            return Err(MasterError::UnsupportedBaud { baud });
        }
        let old = self.port.config.baud;
        let address = self.open(target).await?;
        let sent = match wired::switch_baud(address, baud) {
            Some(frame) => self.command(target, &frame, "baud rate switch").await,
            None => Err(MasterError::UnsupportedBaud { baud }),
        };
        if let Err(e) = sent {
            return self.close(target, Err(e)).await;
        }
        self.port.config.baud = baud;
        reconfigure(&mut self.port, baud)
            .map_err(|source| MasterError::Reconfigure { baud, source })?;
        // The meter needs a moment to change its UART after its E5.
        tokio::time::sleep(timing::response_window(baud)).await;
        let verified = match target {
            Target::Primary(a) => self.snd_nke(a).await?,
            Target::Secondary(mask) => {
                let selected = self.select(mask).await.is_ok();
                self.deselect().await?;
                selected
            }
        };
        if !verified {
            return Err(MasterError::BaudNotVerified {
                target,
                old,
                new: baud,
            });
        }
        Ok(())
    }

    /// Application reset (CI 0x50), with the optional subcode that picks what the meter
    /// resets or which data set it sends next.
    pub async fn application_reset(
        &mut self,
        target: Target,
        subcode: Option<u8>,
    ) -> Result<(), MasterError> {
        let address = self.open(target).await?;
        let result = self
            .command(
                target,
                &wired::application_reset(address, subcode),
                "application reset",
            )
            .await;
        self.close(target, result).await
    }
}

#[cfg(test)]
mod tests {
    use super::fake_bus::{self, FakeMeter, Faults};
    use super::*;
    use crate::wire::wired::Frame;

    fn master(meters: Vec<FakeMeter>, faults: Faults) -> (Master, fake_bus::Bus) {
        let (port, bus) = fake_bus::start(meters, faults);
        (Master::new(port, MasterOptions::default()), bus)
    }

    /// The telegram index the fake meter put in its one data record.
    fn index_of(frame: &[u8]) -> u8 {
        let t = decode_wired(frame).expect("fake telegrams decode");
        match Frame::parse(frame) {
            Ok(Frame::Long { data, .. }) => data[14],
            _ => panic!("not a long frame: {t:?}"),
        }
    }

    #[tokio::test]
    async fn multi_telegram_read_toggles_fcb_from_one() {
        let (mut m, bus) = master(
            vec![FakeMeter::new(5, 0x12345678).telegrams(3)],
            Faults::default(),
        );
        let frames = m
            .read(Target::Primary(5), ReadOptions::default())
            .await
            .unwrap();
        assert_eq!(
            frames.iter().map(|f| index_of(f)).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(bus.req_ud2_controls(), [0x7B, 0x5B, 0x7B]);
        assert_eq!(bus.requests()[0], wired::snd_nke(5));
        // A second read resets again and starts at FCB=1 once more.
        let again = m
            .read(Target::Primary(5), ReadOptions::default())
            .await
            .unwrap();
        assert_eq!(again.len(), 3);
        assert_eq!(bus.req_ud2_controls(), [0x7B, 0x5B, 0x7B, 0x7B, 0x5B, 0x7B]);
    }

    #[tokio::test]
    async fn max_frames_and_max_records_cap_the_read() {
        let (mut m, _bus) = master(
            vec![FakeMeter::new(5, 0x12345678).telegrams(3)],
            Faults::default(),
        );
        let opts = ReadOptions {
            max_frames: 2,
            ..ReadOptions::default()
        };
        assert_eq!(m.read(Target::Primary(5), opts).await.unwrap().len(), 2);
        let opts = ReadOptions {
            max_records: Some(1),
            ..ReadOptions::default()
        };
        assert_eq!(m.read(Target::Primary(5), opts).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn retry_keeps_the_fcb_and_gets_the_same_telegram() {
        // Requests: 0 SND_NKE, 1 REQ_UD2 (answered), 2 REQ_UD2 (answer lost), 3 its retry.
        let faults = Faults {
            drop_reply: [2].into_iter().collect(),
        };
        let (mut m, bus) = master(vec![FakeMeter::new(7, 0x11111111).telegrams(3)], faults);
        let frames = m
            .read(Target::Primary(7), ReadOptions::default())
            .await
            .unwrap();
        assert_eq!(
            frames.iter().map(|f| index_of(f)).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(bus.req_ud2_controls(), [0x7B, 0x5B, 0x5B, 0x7B]);
    }

    #[tokio::test]
    async fn missing_meter_is_named_in_the_error() {
        let (mut m, bus) = master(vec![], Faults::default());
        let err = m
            .read(Target::Primary(9), ReadOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, MasterError::NoAnswer { attempts: 4, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("primary address 9"), "{err}");
        assert_eq!(bus.req_ud2_controls(), [0x7B; 4]);
    }

    #[tokio::test]
    async fn two_meters_on_one_address_give_an_invalid_reply_error() {
        let (mut m, _bus) = master(
            vec![FakeMeter::new(3, 0x1), FakeMeter::new(3, 0x2)],
            Faults::default(),
        );
        let opts = ReadOptions {
            reset_first: false,
            ..ReadOptions::default()
        };
        let err = m.read(Target::Primary(3), opts).await.unwrap_err();
        assert!(matches!(err, MasterError::InvalidReply { .. }), "{err}");
    }

    #[tokio::test]
    async fn secondary_read_selects_reads_at_fd_and_deselects() {
        let meter = FakeMeter::new(0, 0x12345678).telegrams(2);
        let mask: SecondaryMask = meter.secondary().parse().unwrap();
        let (mut m, bus) = master(
            vec![meter, FakeMeter::new(0, 0x87654321)],
            Faults::default(),
        );
        let frames = m
            .read(Target::Secondary(mask), ReadOptions::default())
            .await
            .unwrap();
        assert_eq!(frames.len(), 2);
        let reqs = bus.requests();
        assert_eq!(reqs.first(), Some(&wired::snd_nke(0xFD).to_vec()));
        assert_eq!(reqs[1], wired::select_secondary(&mask.to_select_bytes()));
        assert_eq!(reqs[2], wired::req_ud2(0xFD, true));
        assert_eq!(reqs[3], wired::req_ud2(0xFD, false));
        assert_eq!(reqs.last(), Some(&wired::snd_nke(0xFD).to_vec()));

        // Deselected even when the read fails: a mask nobody matches.
        let nobody: SecondaryMask = "99999999FFFFFFFF".parse().unwrap();
        let err = m
            .read(Target::Secondary(nobody), ReadOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, MasterError::NotSelected { .. }), "{err}");
        assert!(err.to_string().contains("99999999FFFFFFFF"), "{err}");
        assert_eq!(bus.requests().last(), Some(&wired::snd_nke(0xFD).to_vec()));
    }

    #[tokio::test]
    async fn set_primary_address_checks_before_and_after() {
        let (mut m, bus) = master(
            vec![FakeMeter::new(5, 0x1), FakeMeter::new(6, 0x2)],
            Faults::default(),
        );
        let err = m
            .set_primary_address(Target::Primary(5), 0xFE)
            .await
            .unwrap_err();
        assert!(matches!(err, MasterError::ReservedAddress { new: 0xFE }));
        let err = m
            .set_primary_address(Target::Primary(5), 6)
            .await
            .unwrap_err();
        assert!(
            matches!(err, MasterError::AddressInUse { new: 6, .. }),
            "{err}"
        );
        m.set_primary_address(Target::Primary(5), 20).await.unwrap();
        assert_eq!(bus.requests().last(), Some(&wired::snd_nke(20).to_vec()));
        assert!(m.snd_nke(20).await.unwrap());
        assert!(!m.snd_nke(5).await.unwrap());

        let mask: SecondaryMask = "00000002FFFFFFFF".parse().unwrap();
        m.set_primary_address(Target::Secondary(mask), 30)
            .await
            .unwrap();
        assert!(m.snd_nke(30).await.unwrap());
        assert!(!m.snd_nke(6).await.unwrap());
    }

    #[tokio::test]
    async fn switch_baud_moves_the_port_and_verifies() {
        let (mut m, bus) = master(vec![FakeMeter::new(5, 0x1)], Faults::default());
        let line = bus.line_baud.clone();
        let mut hook = move |port: &mut Port, baud: u32| {
            line.store(baud, std::sync::atomic::Ordering::SeqCst);
            assert_eq!(port.config.baud, baud);
            Ok(())
        };
        m.switch_baud(Target::Primary(5), 19200, &mut hook)
            .await
            .unwrap();
        assert_eq!(m.port().config.baud, 19200);
        let err = m
            .switch_baud(Target::Primary(5), 1234, &mut hook)
            .await
            .unwrap_err();
        assert!(matches!(err, MasterError::UnsupportedBaud { baud: 1234 }));

        // A hook that does not really move the line: the meter is lost at the new speed.
        let mut stuck = |_: &mut Port, _| Ok(());
        let err = m
            .switch_baud(Target::Primary(5), 9600, &mut stuck)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                MasterError::BaudNotVerified {
                    old: 19200,
                    new: 9600,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn application_reset_is_acknowledged() {
        let (mut m, bus) = master(vec![FakeMeter::new(5, 0x1)], Faults::default());
        m.application_reset(Target::Primary(5), None).await.unwrap();
        m.application_reset(Target::Primary(5), Some(0x10))
            .await
            .unwrap();
        assert_eq!(bus.requests()[1], wired::application_reset(5, Some(0x10)));
        let err = m
            .application_reset(Target::Primary(6), None)
            .await
            .unwrap_err();
        assert!(matches!(err, MasterError::NotAcknowledged { .. }), "{err}");
    }

    #[tokio::test]
    async fn idle_gap_is_kept_after_an_answer() {
        let (port, _bus) = fake_bus::start(vec![FakeMeter::new(5, 0x1)], Faults::default());
        let gap = Duration::from_millis(150);
        let mut m = Master::new(
            port,
            MasterOptions {
                idle_gap: gap,
                ..MasterOptions::default()
            },
        );
        assert!(m.snd_nke(5).await.unwrap());
        let answered = Instant::now();
        assert!(m.snd_nke(5).await.unwrap());
        // A sleep never ends early, so this lower bound cannot flake.
        assert!(answered.elapsed() >= gap, "{:?}", answered.elapsed());
    }
}
