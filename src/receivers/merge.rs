//! One reading per telegram across all receivers.
//!
//! Several receivers in range of one meter (a stick in the basement, an ESP32 in the garden, a
//! repeater in the stairwell) each deliver a copy of the same telegram, at slightly different
//! times and with different RSSI. [`Merger`] holds the first copy for a short settle time,
//! collects the copies that arrive meanwhile, and then hands over one [`Settled`] telegram: the
//! copy with the best RSSI and the list of every receiver that heard it. Copies that arrive
//! after that, within the duplicate window, are only counted.
//!
//! Which copies are "the same telegram" is decided by [`identity`]: the telegram without its
//! data-link CRCs, with the bits a repeater may change cleared (see there). Everything the
//! meter itself wrote — its address, the access number, the (encrypted) payload — stays in, so
//! two different telegrams of one meter are never merged.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Dedup, Heard};

/// Offset of the CI field after L, C, M (2) and A (6).
const CI_AT: usize = 10;

/// The telegram's identity: `stripped` (from L, data-link CRCs removed) with what a repeater
/// or a retransmission may change cleared:
///
/// - the C field (byte 1): a repeater may send with another function code than the meter;
/// - in an extended link layer (CI 0x8C–0x8F) the communication control field's hop counter
///   (H, 0x10) and repeated-access (R, 0x02) bits, which a repeater sets;
/// - in the transport layer's configuration field of security modes 0 and 5 (short header
///   0x7A, long header 0x72, after an ELL too) the two hop-counter bits (bits 0–1), which a
///   repeater counts up.
///
/// Meter address, access number and payload are kept. Never panics; a telegram too short to
/// have a field simply keeps its bytes.
pub fn identity(stripped: &[u8]) -> Vec<u8> {
    let mut id = stripped.to_vec();
    if let Some(c) = id.get_mut(1) {
        *c = 0;
    }
    let mut ci_at = CI_AT;
    if let Some(&ci) = id.get(ci_at) {
        if (0x8C..=0x8F).contains(&ci) {
            if let Some(cc) = id.get_mut(ci_at + 1) {
                *cc &= !0x12;
            }
            // Only the short ELL (CC, ACC) leaves the transport layer in the clear right after
            // it; the others carry an address or an encrypted payload, where nothing is changed.
            ci_at = match ci {
                0x8C => ci_at + 3,
                0x8E => ci_at + 11,
                _ => return id,
            };
        }
    }
    let config_at = match id.get(ci_at) {
        Some(0x7A) => ci_at + 3,
        Some(0x72) => ci_at + 11,
        _ => return id,
    };
    // Little-endian: the first byte holds bits 0–7, the second the security mode in bits 8–12.
    let mode = id.get(config_at + 1).map(|b| b & 0x1F);
    if matches!(mode, Some(0 | 5)) {
        if let Some(low) = id.get_mut(config_at) {
            *low &= !0x03;
        }
    }
    id
}

/// One receiver's copy of a telegram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeardBy {
    pub input: Arc<str>,
    pub rssi_dbm: Option<i16>,
    pub received: Instant,
}

/// A telegram whose settle time is over (or that was not held): publish it once.
#[derive(Debug, Clone)]
pub struct Settled {
    /// The receiver of the best copy.
    pub input: Arc<str>,
    /// The best copy: highest RSSI, the first one heard among equals (no RSSI ranks last).
    pub heard: Heard,
    /// Its bytes without data-link CRCs.
    pub stripped: Vec<u8>,
    /// Every copy in the order heard, the best one included.
    pub copies: Vec<HeardBy>,
}

impl Settled {
    fn new(input: Arc<str>, heard: Heard, stripped: Vec<u8>) -> Settled {
        let first = HeardBy {
            input: input.clone(),
            rssi_dbm: heard.rssi_dbm,
            received: heard.received,
        };
        Settled {
            input,
            heard,
            stripped,
            copies: vec![first],
        }
    }

    /// A later copy: kept in the list; it becomes the one published if it was heard better.
    fn add(&mut self, input: Arc<str>, heard: Heard, stripped: Vec<u8>) {
        self.copies.push(HeardBy {
            input: input.clone(),
            rssi_dbm: heard.rssi_dbm,
            received: heard.received,
        });
        let better = match (heard.rssi_dbm, self.heard.rssi_dbm) {
            (Some(new), Some(old)) => new > old,
            (Some(_), None) => true,
            _ => false,
        };
        if better {
            self.input = input;
            self.heard = heard;
            self.stripped = stripped;
        }
    }

    /// How long the first copy waited before this was handed over.
    pub fn waited(&self, now: Instant) -> Duration {
        self.copies
            .first()
            .map(|c| now.saturating_duration_since(c.received))
            .unwrap_or_default()
    }
}

/// What [`Merger::offer`] did with a copy.
#[derive(Debug)]
pub enum Offer {
    /// Publish this now (no settle time, or suppression is off for this copy).
    Now(Box<Settled>),
    /// Held with the other copies until [`Merger::take_due`] hands it over.
    Held,
    /// The telegram was already published within the duplicate window: count it, nothing more.
    Duplicate,
}

/// Merges the copies of a telegram heard by several receivers; see the module documentation.
#[derive(Debug)]
pub struct Merger {
    settle: Duration,
    /// Telegrams already handed over, by identity, for the duplicate window.
    published: Dedup,
    /// Telegrams in their settle time, by identity.
    pending: HashMap<Vec<u8>, Settled>,
    /// When each pending telegram is due, in arrival order: with one settle time for all, the
    /// front is always the next one due (up to the few milliseconds receivers disagree on).
    queue: VecDeque<(Instant, Vec<u8>)>,
    /// Handed over early because too many were pending (a flood); returned by `take_due`.
    ready: Vec<Settled>,
}

impl Merger {
    /// Default settle time: long enough for a network receiver's copy to arrive after a local
    /// stick's, short enough that nobody waits for a reading.
    pub const DEFAULT_SETTLE: Duration = Duration::from_millis(500);
    /// Bound on telegrams in their settle time; beyond it the oldest is handed over at once.
    /// 1,000 meters sending every few seconds have a few hundred pending at most.
    pub const MAX_PENDING: usize = 4_096;

    /// `window` is the duplicate window (zero: no suppression, every copy is published);
    /// `settle` how long the first copy waits for the others (zero: published at once).
    pub fn new(window: Duration, settle: Duration) -> Merger {
        Merger {
            settle: if window.is_zero() {
                Duration::ZERO
            } else {
                settle
            },
            published: Dedup::new(window),
            pending: HashMap::new(),
            queue: VecDeque::new(),
            ready: Vec::new(),
        }
    }

    pub fn settle(&self) -> Duration {
        self.settle
    }

    /// A copy heard by `input`; `stripped` is its telegram without data-link CRCs.
    /// `suppress: false` (a receiver with `dedup: false`) publishes every copy at once.
    pub fn offer(
        &mut self,
        input: &Arc<str>,
        heard: Heard,
        stripped: Vec<u8>,
        suppress: bool,
    ) -> Offer {
        if !suppress {
            return Offer::Now(Box::new(Settled::new(input.clone(), heard, stripped)));
        }
        let key = identity(&stripped);
        if let Some(p) = self.pending.get_mut(&key) {
            p.add(input.clone(), heard, stripped);
            return Offer::Held;
        }
        let received = heard.received;
        if self.published.is_repeat(&key, received) {
            return Offer::Duplicate;
        }
        let settled = Settled::new(input.clone(), heard, stripped);
        if self.settle.is_zero() {
            return Offer::Now(Box::new(settled));
        }
        if self.pending.len() >= Self::MAX_PENDING {
            self.hand_over_oldest();
        }
        self.queue.push_back((received + self.settle, key.clone()));
        self.pending.insert(key, settled);
        Offer::Held
    }

    fn hand_over_oldest(&mut self) {
        while let Some((_, key)) = self.queue.pop_front() {
            if let Some(s) = self.pending.remove(&key) {
                self.ready.push(s);
                return;
            }
        }
    }

    /// When the next held telegram is due; `None` when nothing is held.
    pub fn next_due(&self) -> Option<Instant> {
        if !self.ready.is_empty() {
            return Some(Instant::now());
        }
        self.queue.front().map(|(due, _)| *due)
    }

    /// The held telegrams whose settle time is over at `now`, oldest first.
    pub fn take_due(&mut self, now: Instant) -> Vec<Settled> {
        let mut out = std::mem::take(&mut self.ready);
        while let Some((due, _)) = self.queue.front() {
            if *due > now {
                break;
            }
            if let Some((_, key)) = self.queue.pop_front() {
                if let Some(s) = self.pending.remove(&key) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// Telegrams held now (for tests and the memory bound).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    /// A Kamstrup Multical 21 telegram (short TPL header, mode 5), without CRCs.
    const KAMSTRUP: &str =
        "2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713";

    fn heard(frame: &[u8], rssi: Option<i16>, at: Instant) -> Heard {
        let mut h = Heard::new(frame.to_vec(), rssi);
        h.received = at;
        h
    }

    #[test]
    fn a_repeater_s_changes_keep_the_identity() {
        let t = hex::decode(KAMSTRUP).unwrap();
        // ELL: CI 0x8D at offset 10; a repeater sets H in CC and sends with another C field.
        let mut repeated = t.clone();
        repeated[1] = 0x46;
        repeated[11] |= 0x10;
        assert_eq!(identity(&t), identity(&repeated));
        // Another access number is another telegram.
        let mut next = t.clone();
        next[12] ^= 0x01;
        assert_ne!(identity(&t), identity(&next));
        // Another meter too.
        let mut other = t.clone();
        other[4] ^= 0x01;
        assert_ne!(identity(&t), identity(&other));
    }

    #[test]
    fn hop_counter_bits_of_a_short_header_are_ignored() {
        // L C M M A A A A V T CI=7A ACC ST CFG CFG (mode 5) payload…
        let t = hex::decode("1444A511785634120107 7A 21 00 1005 AABBCCDD").unwrap();
        let mut hopped = t.clone();
        hopped[13] |= 0x01;
        assert_eq!(identity(&t), identity(&hopped));
        let mut other_blocks = t.clone();
        other_blocks[13] ^= 0x10;
        assert_ne!(identity(&t), identity(&other_blocks));
        // Mode 7's configuration field has other bits there: left alone.
        let mut mode7 = t.clone();
        mode7[14] = 0x07;
        let mut mode7_changed = mode7.clone();
        mode7_changed[13] |= 0x01;
        assert_ne!(identity(&mode7), identity(&mode7_changed));
    }

    #[test]
    fn short_and_odd_telegrams_do_not_panic() {
        for n in 0..40 {
            let bytes: Vec<u8> = (0..n).map(|i| [0x8C, 0x7A, 0x72, 0x8E][i % 4]).collect();
            let _ = identity(&bytes);
        }
    }

    #[test]
    fn copies_within_the_settle_time_make_one_telegram_with_the_best_rssi() {
        let t = hex::decode(KAMSTRUP).unwrap();
        let t0 = Instant::now();
        let mut m = Merger::new(Duration::from_secs(10), Duration::from_millis(500));
        let (stick, udp, mqtt): (Arc<str>, Arc<str>, Arc<str>) =
            ("stick".into(), "udp".into(), "mqtt".into());
        assert!(matches!(
            m.offer(&udp, heard(&t, Some(-81), t0), t.clone(), true),
            Offer::Held
        ));
        let ms = Duration::from_millis;
        assert!(matches!(
            m.offer(&stick, heard(&t, Some(-67), t0 + ms(20)), t.clone(), true),
            Offer::Held
        ));
        assert!(matches!(
            m.offer(&mqtt, heard(&t, None, t0 + ms(40)), t.clone(), true),
            Offer::Held
        ));
        assert!(m.take_due(t0 + ms(499)).is_empty());
        assert_eq!(m.next_due(), Some(t0 + ms(500)));
        let due = m.take_due(t0 + ms(500));
        assert_eq!(due.len(), 1);
        let s = &due[0];
        assert_eq!(&*s.input, "stick");
        assert_eq!(s.heard.rssi_dbm, Some(-67));
        let names: Vec<(&str, Option<i16>)> =
            s.copies.iter().map(|c| (&*c.input, c.rssi_dbm)).collect();
        assert_eq!(
            names,
            [("udp", Some(-81)), ("stick", Some(-67)), ("mqtt", None)]
        );
        // A late copy inside the window is a duplicate, also one a repeater changed.
        let mut repeated = t.clone();
        repeated[11] |= 0x10;
        assert!(matches!(
            m.offer(
                &udp,
                heard(&repeated, Some(-90), t0 + ms(900)),
                repeated,
                true
            ),
            Offer::Duplicate
        ));
        assert_eq!(m.pending(), 0);
        assert!(m.next_due().is_none());
    }

    #[test]
    fn zero_settle_time_publishes_the_first_copy_at_once() {
        let t = hex::decode(KAMSTRUP).unwrap();
        let t0 = Instant::now();
        let mut m = Merger::new(Duration::from_secs(10), Duration::ZERO);
        let a: Arc<str> = "a".into();
        let Offer::Now(s) = m.offer(&a, heard(&t, Some(-90), t0), t.clone(), true) else {
            panic!("not published at once");
        };
        assert_eq!(s.heard.rssi_dbm, Some(-90));
        assert!(matches!(
            m.offer(&a, heard(&t, Some(-60), t0), t.clone(), true),
            Offer::Duplicate
        ));
        // `dedup: false` on a receiver: every copy.
        assert!(matches!(
            m.offer(&a, heard(&t, Some(-60), t0), t.clone(), false),
            Offer::Now(_)
        ));
        // No window: no merging either.
        let mut off = Merger::new(Duration::ZERO, Duration::from_millis(500));
        assert!(matches!(
            off.offer(&a, heard(&t, None, t0), t.clone(), true),
            Offer::Now(_)
        ));
        assert!(matches!(
            off.offer(&a, heard(&t, None, t0), t, true),
            Offer::Now(_)
        ));
    }

    #[test]
    fn merger_memory_is_bounded() {
        let t0 = Instant::now();
        let mut m = Merger::new(Duration::from_secs(3600), Duration::from_secs(3600));
        let a: Arc<str> = "a".into();
        let mut handed_over = 0;
        for i in 0..20_000u32 {
            // Thousands of meters, each telegram different: nothing merges, nothing is due.
            let mut t = hex::decode(KAMSTRUP).unwrap();
            t[4..8].copy_from_slice(&i.to_le_bytes());
            let at = t0 + Duration::from_millis(u64::from(i));
            m.offer(&a, heard(&t, None, at), t, true);
            handed_over += m.take_due(at).len();
            assert!(m.pending() <= Merger::MAX_PENDING);
            assert!(m.queue.len() <= Merger::MAX_PENDING);
        }
        // Nothing is lost: what no longer fits is handed over early.
        assert_eq!(handed_over + m.pending(), 20_000);
    }
}
