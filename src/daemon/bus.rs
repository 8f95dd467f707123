//! One task per wired bus. M-Bus is half duplex and sequential: the task owns the bus master,
//! so a bus never has two requests in flight, and a polling cycle that runs long delays the
//! next one instead of overlapping it. Each meter has its own next-due time (the bus's
//! schedule, or the meter's own); cron schedules are evaluated in local time.

use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};

use crate::config::schema::{BusConfig, BusEndpoint, MeterAddress, Polling};
use crate::master::{
    Found, Master, MasterError, MasterOptions, ReadOptions, SecondaryMask, Target,
};
use crate::transport::open::{default_latency, open_port, Endpoint};
use crate::transport::PortConfig;

/// How often cron schedules are evaluated again against the wall clock.
const CRON_RECHECK: Duration = Duration::from_secs(60);

/// A meter the bus task reads.
#[derive(Debug, Clone)]
pub struct PolledMeter {
    /// Index of the meter in the configuration.
    pub index: usize,
    pub target: Target,
    pub read: ReadOptions,
    pub polling: Polling,
}

/// What a bus task reports.
#[derive(Debug)]
pub enum BusEvent {
    /// A meter's telegrams (raw long frames), or why it could not be read. `forced` reads
    /// were asked for (a request over MQTT): their state goes out even if unchanged.
    Read {
        meter: usize,
        result: Result<Vec<Vec<u8>>, String>,
        forced: bool,
    },
    /// A scan started from the web page made progress (sent after every probe; dropped
    /// rather than waited for when the gateway lags, so the scan never slows down for it).
    ScanProgress {
        bus: usize,
        progress: crate::master::ScanProgress,
    },
    /// A scan started from the web page ended: the meters found (also when it was
    /// cancelled: `cancelled` says so), or why it failed.
    ScanDone {
        bus: usize,
        result: Result<Vec<Found>, String>,
        cancelled: bool,
    },
    /// The bus connection came up (`true`) or failed (`false`, with why).
    Link {
        bus: usize,
        up: bool,
        message: String,
    },
}

/// The target of a configured wired address.
pub fn target_of(address: &MeterAddress) -> Option<Target> {
    match address {
        MeterAddress::Primary(a) => Some(Target::Primary(*a)),
        MeterAddress::Secondary(s) => {
            // 8 digits name the identification number; manufacturer, version and medium are
            // then wildcards.
            let full = if s.len() == 8 {
                format!("{s}FFFFFFFF")
            } else {
                s.clone()
            };
            SecondaryMask::from_str(&full).ok().map(Target::Secondary)
        }
        MeterAddress::Wireless(_) => None,
    }
}

/// When a meter is read next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextRead {
    /// At this monotonic instant (interval schedules), so a wall clock that is set does not
    /// move it.
    At(Instant),
    /// Once the wall clock shows this time or later (cron schedules).
    AtWall(DateTime<Local>),
    /// Never again: cron expressions without a further occurrence.
    Never,
}

#[derive(Debug, Clone)]
enum Rule {
    Every(Duration),
    Cron(Vec<croner::Cron>),
}

/// One meter's polling schedule. It never reads a clock itself: the bus task passes both the
/// monotonic time and the wall time, so the decisions can be tested with a simulated clock
/// that jumps.
///
/// Cron schedules wait for a wall-clock occurrence rather than for an instant computed from
/// it: a clock set forward past occurrences makes the meter due once (not once per missed
/// occurrence), a clock set back makes it wait until the wall clock reaches the occurrence
/// again, so no occurrence is read twice.
#[derive(Debug, Clone)]
pub struct Schedule {
    rule: Rule,
    next: NextRead,
}

impl Schedule {
    /// The schedule of a meter whose bus task starts now. Interval schedules are due at once,
    /// so readings appear without waiting a whole period; cron schedules wait for their time.
    pub fn new(polling: &Polling, now: Instant, wall: DateTime<Local>) -> Self {
        match polling {
            Polling::Every(every) => Schedule {
                rule: Rule::Every((*every).max(Duration::from_millis(100))),
                next: NextRead::At(now),
            },
            Polling::Cron(expressions) => {
                let crons: Vec<croner::Cron> = expressions
                    .iter()
                    .filter_map(|e| croner::Cron::from_str(e).ok())
                    .collect();
                let next = next_occurrence(&crons, wall);
                Schedule {
                    rule: Rule::Cron(crons),
                    next,
                }
            }
        }
    }

    /// What the schedule waits for.
    pub fn next(&self) -> NextRead {
        self.next
    }

    pub fn is_due(&self, now: Instant, wall: DateTime<Local>) -> bool {
        match self.next {
            NextRead::At(at) => at <= now,
            NextRead::AtWall(at) => at <= wall,
            NextRead::Never => false,
        }
    }

    /// How long the bus task may sleep as far as this meter is concerned; `None` if the
    /// meter is never due again. A cron schedule never allows more than [`CRON_RECHECK`]:
    /// a sleep is monotonic time, and the wall clock may be set meanwhile.
    pub fn wait(&self, now: Instant, wall: DateTime<Local>) -> Option<Duration> {
        match self.next {
            NextRead::At(at) => Some(at.saturating_duration_since(now)),
            NextRead::AtWall(at) => Some(
                (at - wall)
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(CRON_RECHECK),
            ),
            NextRead::Never => None,
        }
    }

    /// Records that a read of the meter starts at `now` / `wall`.
    pub fn after_read(&mut self, now: Instant, wall: DateTime<Local>) {
        self.next = match &self.rule {
            Rule::Every(every) => match self.next {
                // A fixed rhythm, but a cycle that overran starts the next one at once, never
                // several in a row to catch up.
                NextRead::At(last) if last + *every > now => NextRead::At(last + *every),
                _ => NextRead::At(now),
            },
            // Strictly after the read, whatever the occurrence it was due for: after a clock
            // jumped forward this skips every missed occurrence.
            Rule::Cron(crons) => next_occurrence(crons, wall),
        };
    }
}

/// The earliest occurrence of any of `crons` strictly after `wall`.
fn next_occurrence(crons: &[croner::Cron], wall: DateTime<Local>) -> NextRead {
    crons
        .iter()
        // Exclusive: croner then starts from the second after `wall`, so the occurrence just
        // read (whose second `wall` is in) is not found again.
        .filter_map(|c| c.find_next_occurrence(&wall, false).ok())
        .min()
        .map_or(NextRead::Never, NextRead::AtWall)
}

/// Work asked of a bus from outside its schedule (requests over MQTT).
#[derive(Debug)]
pub enum BusCommand {
    /// Read this meter now; the result comes as a forced [`BusEvent::Read`].
    ReadNow { meter: usize },
    /// Scan the bus for meters. With `reply` (a request over MQTT) the result is the answer;
    /// with `cancel` (the web page) progress and the result come as [`BusEvent::ScanProgress`]
    /// and [`BusEvent::ScanDone`], and setting `cancel` stops the scan after its current probe.
    Scan {
        secondary: bool,
        reply: Option<oneshot::Sender<Result<Vec<Found>, String>>>,
        cancel: Option<Arc<AtomicBool>>,
    },
    /// Poll one more meter from now on (added on the web page).
    AddMeter(PolledMeter),
    /// Give a meter a new primary address (only sent when bus writes are allowed). With
    /// `follow` (a meter index), that polled meter is read at the new address from then on,
    /// once the meter has taken it.
    SetAddress {
        target: Target,
        new: u8,
        follow: Option<usize>,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// The connection of a bus task: opened on first use, reopened with backoff after a failure.
struct Link<'a> {
    bus_index: usize,
    bus: &'a BusConfig,
    endpoint: Endpoint,
    config: PortConfig,
    master: Option<Master>,
    backoff: Duration,
    reported_down: bool,
}

impl Link<'_> {
    /// The master, opening the port if needed; `None` (reported once) if it cannot be opened.
    async fn master(&mut self, tx: &mpsc::Sender<BusEvent>) -> Option<&mut Master> {
        if self.master.is_none() {
            match open_port(&self.endpoint, self.config).await {
                Ok(port) => {
                    self.master = Some(Master::new(
                        port,
                        MasterOptions {
                            retries: self.bus.retry,
                            idle_gap: self.bus.idle_timeout.unwrap_or(Duration::ZERO),
                            ..MasterOptions::default()
                        },
                    ));
                    self.backoff = Duration::from_millis(500);
                    self.reported_down = false;
                    let _ = tx
                        .send(BusEvent::Link {
                            bus: self.bus_index,
                            up: true,
                            message: format!("bus {} connected", self.bus.name),
                        })
                        .await;
                }
                Err(e) => {
                    if !self.reported_down {
                        self.reported_down = true;
                        let _ = tx
                            .send(BusEvent::Link {
                                bus: self.bus_index,
                                up: false,
                                message: format!("bus {}: {e}; retrying", self.bus.name),
                            })
                            .await;
                    }
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
                    return None;
                }
            }
        }
        self.master.as_mut()
    }

    /// Drops a connection whose port failed, so the next use reopens it.
    async fn failed(&mut self, tx: &mpsc::Sender<BusEvent>) {
        self.master = None;
        self.reported_down = true;
        let _ = tx
            .send(BusEvent::Link {
                bus: self.bus_index,
                up: false,
                message: format!("bus {}: the connection failed; reopening", self.bus.name),
            })
            .await;
    }
}

fn port_failed<T>(r: &Result<T, MasterError>) -> bool {
    matches!(r, Err(MasterError::Io { .. }))
}

/// Runs the bus until `tx` is closed. While `pause` holds `true` (a commissioning tool is
/// connected through the TCP bridge) no request is sent and the port is closed (`released`
/// says so); polling resumes when it goes back, or when the sender of `pause` is dropped.
pub async fn run_bus(
    bus_index: usize,
    bus: BusConfig,
    mut meters: Vec<PolledMeter>,
    tx: mpsc::Sender<BusEvent>,
    mut pause: watch::Receiver<bool>,
    released: watch::Sender<bool>,
    mut commands: mpsc::Receiver<BusCommand>,
) {
    let endpoint = match &bus.endpoint {
        BusEndpoint::Serial { device, .. } => Endpoint::Serial(device.clone()),
        BusEndpoint::Tcp { address } => Endpoint::Tcp(address.clone()),
    };
    let baud = match &bus.endpoint {
        BusEndpoint::Serial { baud, .. } => *baud,
        BusEndpoint::Tcp { .. } => crate::config::schema::DEFAULT_BAUD,
    };
    let config = PortConfig {
        baud,
        extra_latency: bus
            .request_timeout
            .unwrap_or_else(|| default_latency(&endpoint)),
        echo: false,
    };
    let (start, wall) = (Instant::now(), Local::now());
    let mut schedules: Vec<Schedule> = meters
        .iter()
        .map(|m| Schedule::new(&m.polling, start, wall))
        .collect();
    let mut link = Link {
        bus_index,
        bus: &bus,
        endpoint,
        config,
        master: None,
        backoff: Duration::from_millis(500),
        reported_down: false,
    };
    let mut commands_open = true;
    // False once the pause switch's sender is gone: the bus then polls on, unpaused.
    let mut pause_open = true;
    loop {
        if tx.is_closed() {
            return;
        }
        while pause_open && *pause.borrow() {
            // Let go of the port so the bridge can open it.
            link.master = None;
            released.send_replace(true);
            if pause.changed().await.is_err() {
                // The bridge is gone: nothing can pause the bus any more.
                pause_open = false;
            }
        }
        released.send_replace(false);
        let (now, wall) = (Instant::now(), Local::now());
        let wait = schedules.iter().filter_map(|s| s.wait(now, wall)).min();
        tokio::select! {
            _ = async {
                match wait {
                    Some(wait) => sleep_until(now + wait).await,
                    // Nothing will ever be due (no meters, or cron expressions that never fire).
                    None => std::future::pending().await,
                }
            } => {}
            changed = pause.changed(), if pause_open => {
                // A bridge that ended must not end the polling with it.
                pause_open = changed.is_ok();
                continue;
            }
            command = commands.recv(), if commands_open => {
                match command {
                    Some(BusCommand::AddMeter(m)) => {
                        // Due at once, like every meter when the bus starts.
                        schedules.push(Schedule::new(&m.polling, Instant::now(), Local::now()));
                        meters.push(m);
                    }
                    Some(c) => run_command(&mut link, &mut meters, c, &tx).await,
                    None => commands_open = false,
                }
                continue;
            }
        }
        let (now, wall) = (Instant::now(), Local::now());
        for (m, schedule) in meters.iter().zip(schedules.iter_mut()) {
            if pause_open && *pause.borrow() {
                break;
            }
            if !schedule.is_due(now, wall) {
                continue;
            }
            let Some(bus_master) = link.master(&tx).await else {
                break;
            };
            schedule.after_read(Instant::now(), Local::now());
            let result = bus_master.read(m.target, m.read).await;
            let failed = port_failed(&result);
            let event = BusEvent::Read {
                meter: m.index,
                result: result.map_err(|e| e.to_string()),
                forced: false,
            };
            if tx.send(event).await.is_err() {
                return;
            }
            if failed {
                link.failed(&tx).await;
                break;
            }
        }
    }
}

async fn run_command(
    link: &mut Link<'_>,
    meters: &mut [PolledMeter],
    command: BusCommand,
    tx: &mpsc::Sender<BusEvent>,
) {
    match command {
        BusCommand::ReadNow { meter } => {
            let Some(m) = meters.iter().find(|m| m.index == meter) else {
                return;
            };
            let result = match link.master(tx).await {
                Some(master) => {
                    let r = master.read(m.target, m.read).await;
                    if port_failed(&r) {
                        link.failed(tx).await;
                    }
                    r.map_err(|e| e.to_string())
                }
                None => Err(format!("bus {} is not reachable", link.bus.name)),
            };
            let _ = tx
                .send(BusEvent::Read {
                    meter,
                    result,
                    forced: true,
                })
                .await;
        }
        BusCommand::Scan {
            secondary,
            reply,
            cancel,
        } => {
            let bus = link.bus_index;
            let watched = cancel.is_some();
            let mut cancelled = false;
            let result = match link.master(tx).await {
                Some(master) => {
                    master.set_stop(cancel);
                    let progress_tx = tx.clone();
                    let mut progress = move |p: crate::master::ScanProgress| {
                        if watched {
                            let _ =
                                progress_tx.try_send(BusEvent::ScanProgress { bus, progress: p });
                        }
                    };
                    let r = if secondary {
                        master
                            .scan_secondary(SecondaryMask::ANY, &mut progress)
                            .await
                    } else {
                        master.scan_primary(0..=250, &mut progress).await
                    };
                    master.set_stop(None);
                    if port_failed(&r) {
                        link.failed(tx).await;
                    }
                    match r {
                        Err(MasterError::Cancelled { found, .. }) => {
                            cancelled = true;
                            Ok(found)
                        }
                        r => r.map_err(|e| e.to_string()),
                    }
                }
                None => Err(format!("bus {} is not reachable", link.bus.name)),
            };
            if watched {
                let _ = tx
                    .send(BusEvent::ScanDone {
                        bus,
                        result: result.clone(),
                        cancelled,
                    })
                    .await;
            }
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        }
        // Handled by the bus loop itself, which owns the list of meters.
        BusCommand::AddMeter(_) => {}
        BusCommand::SetAddress {
            target,
            new,
            follow,
            reply,
        } => {
            let result = match link.master(tx).await {
                Some(master) => {
                    let r = master.set_primary_address(target, new).await;
                    if port_failed(&r) {
                        link.failed(tx).await;
                    }
                    r.map_err(|e| e.to_string())
                }
                None => Err(format!("bus {} is not reachable", link.bus.name)),
            };
            if result.is_ok() {
                if let Some(m) = meters.iter_mut().find(|m| Some(m.index) == follow) {
                    m.target = Target::Primary(new);
                }
            }
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::TimeZone;

    fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Local> {
        Local.with_ymd_and_hms(y, mo, d, h, mi, s).single().unwrap()
    }

    fn hourly() -> Polling {
        Polling::Cron(vec!["0 * * * *".into()])
    }

    const MIN: Duration = Duration::from_secs(60);

    /// A read in a simulated run: monotonic time since the start, and the wall time.
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct SimRead {
        elapsed: Duration,
        wall: DateTime<Local>,
    }

    /// Drives a schedule the way `run_bus` does, with simulated clocks: the monotonic clock
    /// advances by the wait the schedule asks for; the wall clock is `wall_start` + elapsed +
    /// an offset that each `(at elapsed, by)` jump changes, while the task sleeps. Runs until
    /// `until` of monotonic time (a check at exactly `until` included) and returns the reads.
    fn simulate(
        polling: &Polling,
        wall_start: DateTime<Local>,
        until: Duration,
        jumps: &[(Duration, chrono::TimeDelta)],
    ) -> Vec<SimRead> {
        let mono_start = Instant::now();
        let wall_at = |elapsed: Duration| {
            let offset: chrono::TimeDelta = jumps
                .iter()
                .filter(|(at, _)| *at <= elapsed)
                .map(|(_, by)| *by)
                .sum();
            wall_start + chrono::TimeDelta::from_std(elapsed).unwrap() + offset
        };
        let mut schedule = Schedule::new(polling, mono_start, wall_start);
        let cron = matches!(polling, Polling::Cron(_));
        let mut elapsed = Duration::ZERO;
        let mut reads = Vec::new();
        for _ in 0..1_000_000 {
            let wait = schedule.wait(mono_start + elapsed, wall_at(elapsed));
            if cron {
                // The jump is only noticed when the task wakes up.
                assert!(wait.is_none_or(|w| w <= CRON_RECHECK), "{wait:?}");
            }
            elapsed += wait.unwrap_or(until).min(until.saturating_sub(elapsed));
            let (now, wall) = (mono_start + elapsed, wall_at(elapsed));
            if schedule.is_due(now, wall) {
                reads.push(SimRead { elapsed, wall });
                schedule.after_read(now, wall);
                // A due schedule is no longer due after its read: no burst.
                assert!(!schedule.is_due(now, wall), "{:?}", schedule.next());
            } else if elapsed >= until {
                return reads;
            }
        }
        panic!("the schedule never let time advance: {reads:?}");
    }

    fn walls(reads: &[SimRead]) -> Vec<DateTime<Local>> {
        reads.iter().map(|r| r.wall).collect()
    }

    #[test]
    fn interval_schedules_keep_their_rhythm_without_catching_up() {
        let t0 = Instant::now();
        let wall = local(2026, 3, 1, 10, 58, 0);
        let mut s = Schedule::new(&Polling::Every(MIN), t0, wall);
        assert!(s.is_due(t0, wall));
        s.after_read(t0, wall);
        let later = t0 + Duration::from_secs(5);
        assert!(!s.is_due(later, wall));
        assert_eq!(s.wait(later, wall), Some(Duration::from_secs(55)));
        assert_eq!(s.next(), NextRead::At(t0 + MIN));
        // A cycle that overran: the next starts now, not at a backlog of missed times.
        let late = t0 + Duration::from_secs(200);
        assert!(s.is_due(late, wall));
        s.after_read(late, wall);
        assert_eq!(s.next(), NextRead::At(late));
        // On time again: the rhythm continues from there.
        s.after_read(late + Duration::from_secs(1), wall);
        assert_eq!(s.next(), NextRead::At(late + MIN));
    }

    #[test]
    fn cron_schedules_fire_within_their_period() {
        let now = Instant::now();
        let wall = local(2026, 3, 1, 10, 58, 30);
        let every_minute = Schedule::new(&Polling::Cron(vec!["* * * * *".into()]), now, wall);
        assert_eq!(
            every_minute.next(),
            NextRead::AtWall(local(2026, 3, 1, 10, 59, 0))
        );
        assert_eq!(every_minute.wait(now, wall), Some(Duration::from_secs(30)));
        // Of two expressions the earlier wins.
        let two = Schedule::new(
            &Polling::Cron(vec!["0 0 1 1 *".into(), "* * * * *".into()]),
            now,
            wall,
        );
        assert_eq!(two.next(), every_minute.next());
        // A far occurrence is still looked at again within a minute.
        let yearly = Schedule::new(&Polling::Cron(vec!["0 0 1 1 *".into()]), now, wall);
        assert_eq!(yearly.next(), NextRead::AtWall(local(2027, 1, 1, 0, 0, 0)));
        assert_eq!(yearly.wait(now, wall), Some(CRON_RECHECK));
        // An expression that never matches.
        let never = Schedule::new(&Polling::Cron(vec!["0 0 30 2 *".into()]), now, wall);
        assert_eq!(never.next(), NextRead::Never);
        assert_eq!(never.wait(now, wall), None);
        assert!(!never.is_due(now, wall));
    }

    #[test]
    fn cron_reads_on_the_hour_without_a_jump() {
        // 10:58 to 13:03.
        let reads = simulate(
            &hourly(),
            local(2026, 3, 1, 10, 58, 0),
            2 * 60 * MIN + 5 * MIN,
            &[],
        );
        assert_eq!(
            walls(&reads),
            [
                local(2026, 3, 1, 11, 0, 0),
                local(2026, 3, 1, 12, 0, 0),
                local(2026, 3, 1, 13, 0, 0),
            ]
        );
    }

    #[test]
    fn cron_catches_up_once_after_the_clock_jumps_forward() {
        // At 11:10:20, after the 11:00 read, the clock jumps to 13:40:20: the 12:00 and 13:00
        // occurrences were missed.
        let jump_at = 12 * MIN + Duration::from_secs(20);
        let reads = simulate(
            &hourly(),
            local(2026, 3, 1, 10, 58, 0),
            3 * 60 * MIN + 5 * MIN,
            &[(jump_at, chrono::TimeDelta::minutes(150))],
        );
        // Ends at 16:33 of the new wall time.
        assert_eq!(reads.len(), 5, "{reads:?}");
        assert_eq!(reads[0].wall, local(2026, 3, 1, 11, 0, 0));
        let catch_up = reads[1];
        assert!(catch_up.elapsed >= jump_at, "{catch_up:?}");
        assert!(catch_up.elapsed - jump_at <= CRON_RECHECK, "{catch_up:?}");
        assert_eq!(catch_up.wall.format("%H").to_string(), "13");
        assert_eq!(
            walls(&reads[2..]),
            [
                local(2026, 3, 1, 14, 0, 0),
                local(2026, 3, 1, 15, 0, 0),
                local(2026, 3, 1, 16, 0, 0),
            ]
        );
    }

    #[test]
    fn cron_waits_for_its_occurrence_after_the_clock_jumps_back() {
        // At 11:10:20, after the 11:00 read, the clock goes back to 9:10:20. The meter waits
        // for 12:00 (2 h 49 min 40 s later), and reads neither 10:00 nor 11:00 again.
        let jump_at = 12 * MIN + Duration::from_secs(20);
        let reads = simulate(
            &hourly(),
            local(2026, 3, 1, 10, 58, 0),
            3 * 60 * MIN + 30 * MIN,
            &[(jump_at, chrono::TimeDelta::minutes(-120))],
        );
        assert_eq!(
            reads,
            [
                SimRead {
                    elapsed: 2 * MIN,
                    wall: local(2026, 3, 1, 11, 0, 0)
                },
                SimRead {
                    elapsed: 3 * 60 * MIN + 2 * MIN,
                    wall: local(2026, 3, 1, 12, 0, 0)
                },
            ]
        );
        assert_eq!(
            reads[1].elapsed - jump_at,
            2 * 60 * MIN + 49 * MIN + Duration::from_secs(40)
        );
    }

    #[test]
    fn cron_reads_once_when_a_clock_from_1970_is_set() {
        // A Raspberry Pi without an RTC boots at 1970-01-01 00:00; NTP sets the clock to
        // 2026-03-01 10:20:20 five minutes later: decades of hourly occurrences were missed.
        let boot = local(1970, 1, 1, 0, 0, 0);
        let jump_at = 5 * MIN;
        let by = local(2026, 3, 1, 10, 20, 20) - (boot + chrono::TimeDelta::minutes(5));
        let reads = simulate(&hourly(), boot, 60 * MIN + 10 * MIN, &[(jump_at, by)]);
        assert_eq!(reads.len(), 2, "{reads:?}");
        assert!(reads[0].elapsed - jump_at <= CRON_RECHECK, "{reads:?}");
        assert_eq!(
            reads[0].wall.format("%Y-%m-%d %H").to_string(),
            "2026-03-01 10"
        );
        assert_eq!(reads[1].wall, local(2026, 3, 1, 11, 0, 0));
    }

    #[test]
    fn interval_schedules_ignore_the_wall_clock() {
        let every = Polling::Every(15 * MIN);
        let start = local(2026, 3, 1, 10, 58, 0);
        let steady = simulate(&every, start, 60 * MIN, &[]);
        // At 0, 15, 30, 45 and 60 minutes.
        assert_eq!(steady.len(), 5, "{steady:?}");
        let elapsed = |reads: &[SimRead]| reads.iter().map(|r| r.elapsed).collect::<Vec<_>>();
        for by in [chrono::TimeDelta::hours(1), chrono::TimeDelta::hours(-1)] {
            let jumped = simulate(&every, start, 60 * MIN, &[(20 * MIN, by)]);
            assert_eq!(elapsed(&jumped), elapsed(&steady), "jump by {by}");
        }
    }

    #[test]
    fn configured_addresses_become_targets() {
        assert_eq!(
            target_of(&MeterAddress::Primary(5)),
            Some(Target::Primary(5))
        );
        let Some(Target::Secondary(m)) = target_of(&MeterAddress::Secondary("12345678".into()))
        else {
            panic!()
        };
        assert_eq!(m.to_string(), "12345678FFFFFFFF");
        assert_eq!(target_of(&MeterAddress::Wireless("12345678".into())), None);
    }
}
