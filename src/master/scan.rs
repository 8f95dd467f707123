//! Finding meters: a primary scan (SND_NKE per address) and the secondary scan of wired.md §8.
//!
//! The secondary scan is a tree walk over selection masks. Every probe is judged inside one
//! response window as NOTHING (silence), SINGLE (exactly one clean E5) or COLLISION (anything
//! else: several E5s, garbage, parity errors). What makes it cheaper than libmbus's walk:
//! - the caller's mask is probed first, so one meter (or none) costs a single probe, and a
//!   mask with wildcards only outside the ID works at all (libmbus #221);
//! - no blind retries: silence is believed. Instead, a collided node whose subtree yields
//!   fewer than two meters is probed again, and searched again if it still collides;
//! - ID digits are split least significant first: meters delivered in one batch share their
//!   leading digits, and for random IDs the order makes no difference on average;
//! - ID digits take all hex values 0-E (decimal first); F is the wildcard itself, so meters
//!   with an F digit are reached through the "remainder" branch, which is also how the
//!   skip-last-child inference works: when every probed child is silent, the collision must be
//!   in the remainder, which is searched without probing it;
//! - once the ID is fixed, meters sharing it (multi-channel devices) are told apart by whole
//!   bytes: medium, then version, then manufacturer, common values first. A byte has 255
//!   probeable values and all must be tried, so two meters sharing an ID cost about 375
//!   probes (≈ 2 min at 2400 baud); libmbus cannot separate them at all.
//!
//! Limit: a meter whose ID has an F digit is only found when the meters next to it do not
//! already account for the collision (the select cannot ask for "digit = F" without also
//! asking for every other digit there). BCD IDs never contain F.

use std::ops::RangeInclusive;

use super::{Master, MasterError, SecondaryMask, Target};
use crate::telegram::decode_wired;
use crate::transport::Reply;
use crate::wire::application::{Application, Header};
use crate::wire::manufacturer::Manufacturer;
use crate::wire::medium::Medium;
use crate::wire::wired::{self, ACK, ADDRESS_NETWORK_LAYER};

use super::mask::{BYTE_FIELDS, ID_DIGITS};

/// A meter a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The address the meter was found at (primary scan), or the A field of its answer
    /// (secondary scan), which meters fill with their primary address.
    pub primary: Option<u8>,
    /// The 16-digit secondary address (see [`SecondaryMask`]).
    pub secondary: String,
    pub manufacturer: Manufacturer,
    pub medium: Medium,
    pub version: u8,
}

impl Found {
    /// The mask that selects exactly this meter.
    pub fn mask(&self) -> Option<SecondaryMask> {
        self.secondary.parse().ok()
    }
}

/// What just happened in a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEvent {
    /// Nobody answered the probe.
    Silent,
    /// Several slaves answered at once (or noise): the bytes as received.
    Collision {
        bytes: Vec<u8>,
    },
    /// Every probed child of a collided node was silent, so the remaining branch (the
    /// wildcard value itself) must hold the meters; it is searched without a probe.
    InferredCollision,
    /// Meters that still collide with every field fixed: they cannot be told apart by
    /// secondary address at all.
    Unresolved,
    Found(Found),
    /// A slave acknowledged but its data could not be read; reported, not fatal.
    ReadFailed {
        error: String,
    },
}

/// Progress report, sent after every probe and every finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanProgress {
    /// Probes sent so far (SND_NKE in a primary scan, selects in a secondary scan; the reads
    /// of found meters are not counted).
    pub probes: u32,
    /// The mask probed (secondary scan).
    pub current_mask: Option<SecondaryMask>,
    /// The address probed (primary scan).
    pub address: Option<u8>,
    /// Meters found so far.
    pub found: usize,
    pub event: ScanEvent,
}

/// Callback for scan progress.
pub type Progress<'a> = &'a mut (dyn FnMut(ScanProgress) + Send);

/// Outcome of one select probe.
enum Probe {
    Nothing,
    Single,
    Collision,
}

/// How much of a secondary scan started at `root` is done when it probes `current`, from 0 to
/// 1: the scan splits the wildcard ID digits from the last to the first, 16 branches each, and
/// walks the branches in order, so the leading split digits of `current` say how many branches
/// are behind it. `None` before the first split. An estimate: branches holding many meters
/// take longer than empty ones.
pub(crate) fn secondary_share_done(root: &SecondaryMask, current: &SecondaryMask) -> Option<f64> {
    let mut share = 0.0;
    let mut scale = 1.0;
    let mut any = false;
    for d in (0..ID_DIGITS).rev() {
        if root.id_digit(d).is_some() {
            continue;
        }
        match current.id_digit(d) {
            Some(v) => {
                scale /= 16.0;
                share += f64::from(v) * scale;
                any = true;
            }
            None => break,
        }
    }
    any.then_some(share)
}

/// A node of the secondary-scan tree: a mask, plus the positions already split whose
/// wildcard is left standing (the remainder branches).
#[derive(Debug, Clone, Copy)]
struct Node {
    mask: SecondaryMask,
    /// Bits 0-7: ID digits, bits 8-11: byte fields, already split.
    done: u16,
}

#[derive(Debug, Clone, Copy)]
enum Split {
    IdDigit(usize),
    Byte(usize),
}

/// Byte fields in the order same-ID meters are separated: multi-channel devices differ in
/// medium first.
const BYTE_FIELD_ORDER: [usize; BYTE_FIELDS] = [3, 2, 0, 1];

/// Media seen most in the field: water, heat, electricity, gas, warm water, cold water, heat
/// inlet, heat/cooling, HCA, hot water, cooling.
const COMMON_MEDIA: [u8; 11] = [
    0x07, 0x04, 0x02, 0x03, 0x06, 0x16, 0x0C, 0x0D, 0x08, 0x15, 0x0A,
];

impl Node {
    fn next_split(&self) -> Option<Split> {
        let open = |bit: usize| self.done & (1 << bit) == 0;
        (0..ID_DIGITS)
            .rev()
            .find(|&d| open(d) && self.mask.id_digit(d).is_none())
            .map(Split::IdDigit)
            .or_else(|| {
                BYTE_FIELD_ORDER
                    .into_iter()
                    .find(|&f| open(ID_DIGITS + f) && self.mask.byte_field(f).is_none())
                    .map(Split::Byte)
            })
    }

    /// The probed children, most likely first.
    fn children(&self, split: Split, found: &[Found]) -> Vec<Node> {
        match split {
            // 0-9 first, then the hex digits; F is the wildcard and stays in the remainder.
            Split::IdDigit(d) => (0..0xF)
                .map(|v| Node {
                    mask: self.mask.with_id_digit(d, v),
                    done: self.done,
                })
                .collect(),
            Split::Byte(field) => {
                let known = found
                    .iter()
                    .filter_map(|f| f.mask())
                    .filter_map(|m| m.byte_field(field));
                let common = if field == 3 { &COMMON_MEDIA[..] } else { &[] };
                let mut seen = [false; 256];
                known
                    .chain(common.iter().copied())
                    .chain(0..0xFF)
                    .filter(|&v| {
                        v != 0xFF
                            && self.mask.byte_field_allows(field, v)
                            && !std::mem::replace(&mut seen[usize::from(v)], true)
                    })
                    .map(|v| Node {
                        mask: self.mask.with_byte_field(field, v),
                        done: self.done,
                    })
                    .collect()
            }
        }
    }

    /// The meters no probed child reaches: those whose value at the split position is the
    /// wildcard value itself (ID digit F, byte 0xFF).
    fn remainder(&self, split: Split) -> Option<Node> {
        let (bit, possible) = match split {
            Split::IdDigit(d) => (d, true),
            Split::Byte(f) => (ID_DIGITS + f, self.mask.byte_field_allows(f, 0xFF)),
        };
        possible.then_some(Node {
            mask: self.mask,
            done: self.done | (1 << bit),
        })
    }
}

/// State of one secondary scan.
struct Walk<'p> {
    progress: Progress<'p>,
    root: SecondaryMask,
    probes: u32,
    found: Vec<Found>,
}

impl Walk<'_> {
    fn report(&mut self, mask: SecondaryMask, event: ScanEvent) {
        (self.progress)(ScanProgress {
            probes: self.probes,
            current_mask: Some(mask),
            address: None,
            found: self.found.len(),
            event,
        });
    }
}

/// The identity of the meter behind an RSP_UD (long header only).
fn identify(telegram: &[u8], primary: Option<u8>) -> Result<(Found, [u8; 8]), String> {
    let decoded = decode_wired(telegram).map_err(|e| e.to_string())?;
    let Application::Variable {
        header: Header::Long(h),
        ..
    } = decoded.application
    else {
        return Err(
            "the answer has no long data header, so it carries no secondary address".into(),
        );
    };
    let id = h.id.0.to_le_bytes();
    let man = h.manufacturer.0.to_le_bytes();
    let bytes = [
        id[0],
        id[1],
        id[2],
        id[3],
        man[0],
        man[1],
        h.version,
        h.medium.code(),
    ];
    let primary = primary.or(decoded.link.wired().map(|l| l.address));
    Ok((
        Found {
            primary,
            secondary: h.secondary_address(),
            manufacturer: h.manufacturer,
            medium: h.medium,
            version: h.version,
        },
        bytes,
    ))
}

impl Master {
    /// SND_NKE to every address in `range` (253-255 are skipped: they are the network layer
    /// and the broadcasts). An E5 is a meter, which is then read once for its identity;
    /// anything else is reported as a collision (two meters sharing the address, or noise).
    /// Nothing is retried: a meter that misses its probe costs less to find in a second scan
    /// than retrying every empty address costs in each.
    pub async fn scan_primary(
        &mut self,
        range: RangeInclusive<u8>,
        progress: Progress<'_>,
    ) -> Result<Vec<Found>, MasterError> {
        let mut found = Vec::new();
        let mut probes = 0u32;
        for address in range {
            if address >= ADDRESS_NETWORK_LAYER {
                continue;
            }
            if self.stop_requested() {
                return Err(MasterError::Cancelled { probes, found });
            }
            probes += 1;
            let reply = self.exchange(&wired::snd_nke(address), "SND_NKE").await?;
            self.fcb.insert(address, true);
            let event = match reply {
                Reply::Silence => ScanEvent::Silent,
                Reply::Frame(b) if b.as_slice() == [ACK] => {
                    match self.poll(Target::Primary(address), address).await {
                        Ok(telegram) => match identify(&telegram, Some(address)) {
                            Ok((meter, _)) => {
                                found.push(meter.clone());
                                ScanEvent::Found(meter)
                            }
                            Err(error) => ScanEvent::ReadFailed { error },
                        },
                        Err(e @ MasterError::Io { .. }) => return Err(e),
                        Err(e) => ScanEvent::ReadFailed {
                            error: e.to_string(),
                        },
                    }
                }
                Reply::Frame(bytes) | Reply::Garbled(bytes) => ScanEvent::Collision { bytes },
            };
            progress(ScanProgress {
                probes,
                current_mask: None,
                address: Some(address),
                found: found.len(),
                event,
            });
        }
        Ok(found)
    }

    /// Finds every meter matching `mask` with the algorithm of wired.md §8 (see the module
    /// documentation). The bus is deselected afterwards, also when the scan fails or is
    /// stopped.
    pub async fn scan_secondary(
        &mut self,
        mask: SecondaryMask,
        progress: Progress<'_>,
    ) -> Result<Vec<Found>, MasterError> {
        let mut walk = Walk {
            progress,
            root: mask,
            probes: 0,
            found: Vec::new(),
        };
        let root = Node { mask, done: 0 };
        let result = match self.probe(&mut walk, mask).await {
            Ok(Probe::Nothing) => Ok(0),
            Ok(Probe::Single) => self.take_single(&mut walk, root).await,
            Ok(Probe::Collision) => self.resolve(&mut walk, root, false).await,
            Err(e) => Err(e),
        };
        let deselected = self.deselect().await;
        match result {
            Ok(_) => deselected.map(|()| walk.found),
            Err(MasterError::Cancelled { .. }) => Err(MasterError::Cancelled {
                probes: walk.probes,
                found: walk.found,
            }),
            Err(e) => Err(e),
        }
    }

    async fn probe(
        &mut self,
        walk: &mut Walk<'_>,
        mask: SecondaryMask,
    ) -> Result<Probe, MasterError> {
        if self.stop_requested() {
            return Err(MasterError::Cancelled {
                probes: walk.probes,
                found: Vec::new(),
            });
        }
        walk.probes += 1;
        let reply = self
            .exchange(
                &wired::select_secondary(&mask.to_select_bytes()),
                "a secondary select",
            )
            .await?;
        let (probe, event) = match reply {
            Reply::Silence => (Probe::Nothing, Some(ScanEvent::Silent)),
            Reply::Frame(b) if b.as_slice() == [ACK] => (Probe::Single, None),
            Reply::Frame(bytes) | Reply::Garbled(bytes) => {
                (Probe::Collision, Some(ScanEvent::Collision { bytes }))
            }
        };
        if let Some(event) = event {
            walk.report(mask, event);
        }
        Ok(probe)
    }

    /// One meter acknowledged `node`'s mask: read it at 0xFD for its identity. Returns how
    /// many meters the node accounts for.
    async fn take_single(&mut self, walk: &mut Walk<'_>, node: Node) -> Result<u32, MasterError> {
        // The meter's FCB state is unknown; any telegram carries the header we need.
        let read = self
            .poll_with(Target::Secondary(node.mask), ADDRESS_NETWORK_LAYER, true)
            .await;
        match read {
            Ok(telegram) => {
                match identify(&telegram, None) {
                    Ok((meter, bytes)) => {
                        let new = !walk.found.iter().any(|f| f.secondary == meter.secondary);
                        // A wildcard byte on the wire is wider than a pattern typed as "…F7".
                        if new && walk.root.matches(&bytes) {
                            walk.found.push(meter.clone());
                            walk.report(node.mask, ScanEvent::Found(meter));
                        }
                    }
                    Err(error) => walk.report(node.mask, ScanEvent::ReadFailed { error }),
                }
                Ok(1)
            }
            // Two acknowledgements can overlap into one clean E5; their data cannot.
            Err(MasterError::InvalidReply { last, .. }) => {
                walk.report(
                    node.mask,
                    ScanEvent::ReadFailed {
                        error: format!("{last}; searching below it as a collision"),
                    },
                );
                Box::pin(self.resolve(walk, node, false)).await
            }
            Err(e @ MasterError::NoAnswer { .. }) => {
                walk.report(
                    node.mask,
                    ScanEvent::ReadFailed {
                        error: e.to_string(),
                    },
                );
                Ok(1)
            }
            Err(e) => Err(e),
        }
    }

    /// Searches below a node known (or inferred) to hold at least two meters. Returns how
    /// many meters were accounted for; two for a collision nothing can split.
    async fn resolve(
        &mut self,
        walk: &mut Walk<'_>,
        node: Node,
        recheck: bool,
    ) -> Result<u32, MasterError> {
        let Some(split) = node.next_split() else {
            walk.report(node.mask, ScanEvent::Unresolved);
            return Ok(2);
        };
        let mut count = 0;
        let mut answered = false;
        for child in node.children(split, &walk.found) {
            match self.probe(walk, child.mask).await? {
                Probe::Nothing => {}
                Probe::Single => {
                    answered = true;
                    count += Box::pin(self.take_single(walk, child)).await?;
                }
                Probe::Collision => {
                    answered = true;
                    count += Box::pin(self.resolve(walk, child, false)).await?;
                }
            }
        }
        if let Some(rest) = node.remainder(split) {
            // On a recheck the node collided twice with too few meters below it: the
            // remainder is the only place left where the missing ones can be.
            if !answered || (recheck && count < 2) {
                walk.report(node.mask, ScanEvent::InferredCollision);
                count += Box::pin(self.resolve(walk, rest, recheck)).await?;
            }
        }
        if count < 2 && !recheck {
            // A collision means two meters at least; fewer below it means an answer got lost.
            match self.probe(walk, node.mask).await? {
                Probe::Nothing => {}
                Probe::Single if count == 0 => {
                    count += Box::pin(self.take_single(walk, node)).await?;
                }
                Probe::Single => {}
                Probe::Collision => return Box::pin(self.resolve(walk, node, true)).await,
            }
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::super::fake_bus::{self, FakeMeter, Faults};
    use super::super::MasterOptions;
    use super::*;

    fn master(meters: Vec<FakeMeter>) -> (Master, fake_bus::Bus) {
        let (port, bus) = fake_bus::start(meters, Faults::default());
        (Master::new(port, MasterOptions::default()), bus)
    }

    async fn scan(meters: &[FakeMeter], mask: &str) -> (Vec<Found>, u32, fake_bus::Bus) {
        let (mut m, bus) = master(meters.to_vec());
        let mut probes = 0;
        let mut progress = |p: ScanProgress| probes = p.probes;
        let found = m
            .scan_secondary(mask.parse().unwrap(), &mut progress)
            .await
            .unwrap();
        assert_eq!(bus.requests().last(), Some(&wired::snd_nke(0xFD).to_vec()));
        // Every select is a counted probe, and the last report carries the total.
        assert_eq!(bus.selects() as u32, probes);
        (found, probes, bus)
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    fn check_all_found(meters: &[FakeMeter], found: &[Found]) {
        assert_eq!(
            sorted(found.iter().map(|f| f.secondary.clone()).collect()),
            sorted(meters.iter().map(|m| m.secondary()).collect())
        );
    }

    /// Deterministic 8-digit BCD ids.
    fn random_ids(n: usize, mut seed: u64) -> Vec<u32> {
        let mut ids = Vec::new();
        while ids.len() < n {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let decimal = (seed % 100_000_000) as u32;
            let bcd = u32::from_str_radix(&format!("{decimal:08}"), 16).unwrap();
            if !ids.contains(&bcd) {
                ids.push(bcd);
            }
        }
        ids
    }

    #[tokio::test]
    async fn primary_scan_finds_three_and_reports_a_collision() {
        let meters = vec![
            FakeMeter::new(1, 0x11111111),
            FakeMeter::new(4, 0x22222222).medium(0x04),
            FakeMeter::new(4, 0x33333333),
            FakeMeter::new(7, 0x44444444).telegrams(2),
            FakeMeter::new(9, 0x55555555),
        ];
        let (mut m, bus) = master(meters.clone());
        let mut events = Vec::new();
        let mut progress = |p: ScanProgress| events.push((p.address, p.event));
        let found = m.scan_primary(0..=10, &mut progress).await.unwrap();
        let primaries: Vec<_> = found.iter().map(|f| f.primary).collect();
        assert_eq!(primaries, [Some(1), Some(7), Some(9)]);
        assert_eq!(found[0].secondary, meters[0].secondary());
        assert_eq!(found[0].manufacturer.to_string(), "KAM");
        assert_eq!(found[0].medium, Medium::Water);
        assert!(events.iter().any(|(a, e)| *a == Some(4)
            && *e
                == ScanEvent::Collision {
                    bytes: vec![ACK, ACK]
                }));
        // 11 SND_NKE, one REQ_UD2 per meter found, no retries.
        assert_eq!(bus.requests().len(), 11 + 3);
    }

    #[tokio::test]
    async fn one_meter_costs_one_probe() {
        let meters = [FakeMeter::new(0, 0x12345678)];
        let (found, probes, bus) = scan(&meters, "FFFFFFFFFFFFFFFF").await;
        check_all_found(&meters, &found);
        assert_eq!(probes, 1);
        // select, REQ_UD2, deselect.
        assert_eq!(bus.requests().len(), 3);

        // libmbus #221: wildcards only outside the ID.
        let (found, probes, _) = scan(&meters, "12345678FFFFFFFF").await;
        check_all_found(&meters, &found);
        assert_eq!(probes, 1);

        let (found, probes, _) = scan(&[], "FFFFFFFFFFFFFFFF").await;
        assert!(found.is_empty());
        assert_eq!(probes, 1);
    }

    #[tokio::test]
    async fn ten_random_ids() {
        let meters: Vec<_> = random_ids(10, 0x9E37_79B9_7F4A_7C15)
            .into_iter()
            .map(|id| FakeMeter::new(0, id))
            .collect();
        let (found, probes, _) = scan(&meters, "FFFFFFFFFFFFFFFF").await;
        check_all_found(&meters, &found);
        eprintln!("10 random ids: {probes} probes");
        assert!(probes <= PROBES_10_RANDOM, "{probes} probes");
    }

    #[tokio::test]
    async fn ten_consecutive_ids() {
        let meters: Vec<_> = (0..10u32)
            .map(|i| FakeMeter::new(0, 0x61234500 + i))
            .collect();
        let (found, probes, _) = scan(&meters, "FFFFFFFFFFFFFFFF").await;
        check_all_found(&meters, &found);
        eprintln!("10 consecutive ids: {probes} probes");
        assert!(probes <= PROBES_10_CONSECUTIVE, "{probes} probes");
    }

    #[tokio::test]
    async fn same_id_different_medium() {
        let meters = [
            FakeMeter::new(0, 0x12345678).medium(0x04),
            FakeMeter::new(0, 0x12345678).medium(0x07),
        ];
        let (found, probes, _) = scan(&meters, "FFFFFFFFFFFFFFFF").await;
        check_all_found(&meters, &found);
        eprintln!("2 meters, same id: {probes} probes");
        assert!(probes <= PROBES_SAME_ID, "{probes} probes");
    }

    #[tokio::test]
    async fn hex_digits_and_wildcard_digits_in_ids() {
        // A and E are probed like any other digit.
        let meters = [
            FakeMeter::new(0, 0x1234567A),
            FakeMeter::new(0, 0x12345671),
            FakeMeter::new(0, 0x123456E1),
        ];
        let (found, probes, _) = scan(&meters, "FFFFFFFFFFFFFFFF").await;
        check_all_found(&meters, &found);
        assert!(probes <= 31, "{probes} probes");

        // An F digit cannot be probed (it is the wildcard): all 15 children of the root are
        // silent, so the collision is inferred to be in the F branch and searched there.
        let meters = [FakeMeter::new(0, 0x1234567F), FakeMeter::new(0, 0x1234568F)];
        let (found, probes, _) = scan(&meters, "FFFFFFFFFFFFFFFF").await;
        check_all_found(&meters, &found);
        assert!(probes <= 31, "{probes} probes");
    }

    #[tokio::test]
    async fn partial_byte_pattern_filters_answers() {
        let meters = [
            FakeMeter::new(0, 0x12345678).medium(0x07),
            FakeMeter::new(0, 0x12345679).medium(0x04),
        ];
        // "…F7": the select says "any medium", the result keeps only media ending in 7.
        let (found, _, _) = scan(&meters, "FFFFFFFFFFFFFFF7").await;
        check_all_found(&meters[..1], &found);
    }

    #[tokio::test]
    async fn stop_flag_cancels_and_deselects() {
        let meters: Vec<_> = (0..3u32).map(|i| FakeMeter::new(0, 0x100 + i)).collect();
        let (port, bus) = fake_bus::start(meters, Faults::default());
        let stop = Arc::new(AtomicBool::new(false));
        let options = MasterOptions {
            stop: Some(stop.clone()),
            ..MasterOptions::default()
        };
        let mut m = Master::new(port, options);
        let mut progress = |p: ScanProgress| {
            if p.probes >= 3 {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        };
        let err = m
            .scan_secondary(SecondaryMask::ANY, &mut progress)
            .await
            .unwrap_err();
        assert!(
            matches!(err, MasterError::Cancelled { probes: 3, .. }),
            "{err}"
        );
        assert_eq!(bus.requests().last(), Some(&wired::snd_nke(0xFD).to_vec()));
    }

    // Upper bounds measured on the fake bus (see the module docs for the algorithm).
    const PROBES_10_RANDOM: u32 = 46;
    const PROBES_10_CONSECUTIVE: u32 = 16;
    const PROBES_SAME_ID: u32 = 376;
}
