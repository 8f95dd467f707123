//! One task per wired bus. M-Bus is half duplex and sequential: the task owns the bus master,
//! so a bus never has two requests in flight, and a polling cycle that runs long delays the
//! next one instead of overlapping it. Each meter has its own next-due time (the bus's
//! schedule, or the meter's own); cron schedules are evaluated in local time.

use std::str::FromStr;
use std::time::Duration;

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

/// When a schedule next fires after `after`; `None` for a schedule that never fires again.
pub fn next_due(polling: &Polling, last_due: Option<Instant>, now: Instant) -> Option<Instant> {
    match polling {
        Polling::Every(every) => {
            let every = (*every).max(Duration::from_millis(100));
            Some(match last_due {
                // A fixed rhythm, but a cycle that overran starts the next one at once, never
                // several in a row to catch up.
                Some(last) if last + every > now => last + every,
                Some(_) => now,
                None => now,
            })
        }
        Polling::Cron(expressions) => {
            let local_now = chrono::Local::now();
            expressions
                .iter()
                .filter_map(|e| croner::Cron::from_str(e).ok())
                .filter_map(|c| c.find_next_occurrence(&local_now, false).ok())
                .min()
                .map(|at| {
                    let wait = (at - local_now).to_std().unwrap_or(Duration::ZERO);
                    now + wait
                })
        }
    }
}

/// Work asked of a bus from outside its schedule (requests over MQTT).
#[derive(Debug)]
pub enum BusCommand {
    /// Read this meter now; the result comes as a forced [`BusEvent::Read`].
    ReadNow { meter: usize },
    /// Scan the bus for meters.
    Scan {
        secondary: bool,
        reply: oneshot::Sender<Result<Vec<Found>, String>>,
    },
    /// Give a meter a new primary address (only sent when bus writes are allowed).
    SetAddress {
        target: Target,
        new: u8,
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
/// says so); polling resumes when it goes back.
pub async fn run_bus(
    bus_index: usize,
    bus: BusConfig,
    meters: Vec<PolledMeter>,
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
    let start = Instant::now();
    let mut due: Vec<Option<Instant>> = meters
        .iter()
        .map(|m| match m.polling {
            // Interval schedules read once at start, so readings appear without waiting a
            // whole period; cron schedules wait for their time.
            Polling::Every(_) => Some(start),
            Polling::Cron(_) => next_due(&m.polling, None, start),
        })
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
    loop {
        if tx.is_closed() {
            return;
        }
        while *pause.borrow() {
            // Let go of the port so the bridge can open it.
            link.master = None;
            released.send_replace(true);
            if pause.changed().await.is_err() {
                return;
            }
        }
        released.send_replace(false);
        let next = due.iter().flatten().min().copied();
        let has_cron = meters.iter().any(|m| matches!(m.polling, Polling::Cron(_)));
        tokio::select! {
            _ = async {
                match next {
                    // Cron times are wall-clock times: look again every minute, so a clock that
                    // was set (NTP after a boot without an RTC) moves the schedule with it.
                    Some(at) if has_cron => sleep_until(at.min(Instant::now() + CRON_RECHECK)).await,
                    Some(at) => sleep_until(at).await,
                    // Nothing will ever be due (no meters, or cron expressions that never fire).
                    None if has_cron => tokio::time::sleep(CRON_RECHECK).await,
                    None => std::future::pending().await,
                }
            } => {}
            changed = pause.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            command = commands.recv(), if commands_open => {
                match command {
                    Some(c) => run_command(&mut link, &meters, c, &tx).await,
                    None => commands_open = false,
                }
                continue;
            }
        }
        let now = Instant::now();
        if has_cron && !due.iter().flatten().any(|at| *at <= now) {
            for (i, m) in meters.iter().enumerate() {
                if matches!(m.polling, Polling::Cron(_)) {
                    due[i] = next_due(&m.polling, None, now);
                }
            }
        }
        for (i, m) in meters.iter().enumerate() {
            if *pause.borrow() {
                break;
            }
            let Some(at) = due[i] else { continue };
            if at > now {
                continue;
            }
            let Some(bus_master) = link.master(&tx).await else {
                break;
            };
            due[i] = next_due(&m.polling, Some(at), Instant::now());
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
    meters: &[PolledMeter],
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
        BusCommand::Scan { secondary, reply } => {
            let result = match link.master(tx).await {
                Some(master) => {
                    let mut progress = |_: crate::master::ScanProgress| {};
                    let r = if secondary {
                        master
                            .scan_secondary(SecondaryMask::ANY, &mut progress)
                            .await
                    } else {
                        master.scan_primary(0..=250, &mut progress).await
                    };
                    if port_failed(&r) {
                        link.failed(tx).await;
                    }
                    r.map_err(|e| e.to_string())
                }
                None => Err(format!("bus {} is not reachable", link.bus.name)),
            };
            let _ = reply.send(result);
        }
        BusCommand::SetAddress { target, new, reply } => {
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
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_schedules_keep_their_rhythm_without_catching_up() {
        let t0 = Instant::now();
        let p = Polling::Every(Duration::from_secs(60));
        assert_eq!(next_due(&p, None, t0), Some(t0));
        assert_eq!(
            next_due(&p, Some(t0), t0 + Duration::from_secs(5)),
            Some(t0 + Duration::from_secs(60))
        );
        // A cycle that overran: the next starts now, not at a backlog of missed times.
        let late = t0 + Duration::from_secs(200);
        assert_eq!(next_due(&p, Some(t0), late), Some(late));
    }

    #[test]
    fn cron_schedules_fire_within_their_period() {
        let now = Instant::now();
        let every_minute = Polling::Cron(vec!["* * * * *".into()]);
        let at = next_due(&every_minute, None, now).unwrap();
        assert!(
            at > now && at <= now + Duration::from_secs(60),
            "{:?}",
            at - now
        );
        // Of two expressions the earlier wins.
        let two = Polling::Cron(vec!["0 0 1 1 *".into(), "* * * * *".into()]);
        assert_eq!(
            next_due(&two, None, now).map(|a| a <= now + Duration::from_secs(60)),
            Some(true)
        );
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
