//! A small in-test bus: meters behind a `tokio::io::duplex` that answer the way EN 13757-2
//! slaves do, including the FCB rule and collisions. Kept here rather than using `src/sim` so
//! the master's tests do not move when the simulator does.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::transport::{Port, PortConfig};
use crate::wire::wired::{Frame, FrameReader, ACK, ADDRESS_BROADCAST_REPLY, ADDRESS_NETWORK_LAYER};

pub const BAUD: u32 = 38400;

#[derive(Debug, Clone)]
pub struct FakeMeter {
    pub primary: u8,
    /// BCD digits as hex, e.g. 0x12345678.
    pub id: u32,
    pub manufacturer: u16,
    pub version: u8,
    pub medium: u8,
    /// Telegrams in one readout; all but the last end in DIF 0x1F.
    pub telegrams: u8,
    pub baud: u32,
    selected: bool,
    /// FCB the meter expects next; `None` until its first reset (it takes anything).
    expect_fcb: Option<bool>,
    next: u8,
    last: Option<u8>,
    access: u8,
}

impl FakeMeter {
    pub fn new(primary: u8, id: u32) -> FakeMeter {
        FakeMeter {
            primary,
            id,
            manufacturer: 0x2C2D, // KAM
            version: 0x01,
            medium: 0x07,
            telegrams: 1,
            baud: BAUD,
            selected: false,
            expect_fcb: None,
            next: 0,
            last: None,
            access: 0,
        }
    }

    pub fn medium(mut self, medium: u8) -> FakeMeter {
        self.medium = medium;
        self
    }

    pub fn telegrams(mut self, n: u8) -> FakeMeter {
        self.telegrams = n.max(1);
        self
    }

    pub fn address_bytes(&self) -> [u8; 8] {
        let id = self.id.to_le_bytes();
        let m = self.manufacturer.to_le_bytes();
        [
            id[0],
            id[1],
            id[2],
            id[3],
            m[0],
            m[1],
            self.version,
            self.medium,
        ]
    }

    pub fn secondary(&self) -> String {
        format!(
            "{:08X}{:02X}{:02X}{:02X}{:02X}",
            self.id,
            self.manufacturer.to_le_bytes()[0],
            self.manufacturer.to_le_bytes()[1],
            self.version,
            self.medium
        )
    }

    fn addressed(&self, address: u8) -> bool {
        address == self.primary
            || address == ADDRESS_BROADCAST_REPLY
            || (address == ADDRESS_NETWORK_LAYER && self.selected)
    }

    fn reset_link(&mut self) {
        self.expect_fcb = Some(true);
        self.next = 0;
        self.last = None;
    }

    /// Telegram `index`: a long header, one record carrying the index (8-bit integer,
    /// volume), and DIF 0x1F unless it is the last.
    pub fn telegram(&mut self, index: u8) -> Vec<u8> {
        self.access = self.access.wrapping_add(1);
        let mut data = self.address_bytes().to_vec();
        data.extend_from_slice(&[self.access, 0x00, 0x00, 0x00]);
        data.extend_from_slice(&[0x01, 0x13, index]);
        if index + 1 < self.telegrams {
            data.push(0x1F);
        }
        Frame::Long {
            control: 0x08,
            address: self.primary,
            ci: 0x72,
            data: &data,
        }
        .to_bytes()
    }

    fn matches_select(&self, mask: &[u8]) -> bool {
        let own = self.address_bytes();
        mask.len() == 8
            && own.iter().zip(mask).enumerate().all(|(i, (&o, &m))| {
                if i < 4 {
                    let nib = |v: u8, shift: u8| (v >> shift) & 0xF;
                    [4u8, 0]
                        .iter()
                        .all(|&s| nib(m, s) == 0xF || nib(m, s) == nib(o, s))
                } else {
                    m == 0xFF || m == o
                }
            })
    }

    /// The meter's answer to one request, if any.
    fn handle(&mut self, frame: &Frame<'_>) -> Option<Vec<u8>> {
        match *frame {
            Frame::Short {
                control: 0x40,
                address,
            } => {
                if address == 0xFF {
                    self.reset_link();
                    return None;
                }
                if !self.addressed(address) {
                    return None;
                }
                self.reset_link();
                if address == ADDRESS_NETWORK_LAYER {
                    self.selected = false;
                }
                Some(vec![ACK])
            }
            Frame::Short { control, address } if control & 0xCF == 0x4B => {
                if !self.addressed(address) {
                    return None;
                }
                let fcb = control & 0x20 != 0;
                let fresh = control & 0x10 == 0 || self.expect_fcb.is_none_or(|e| e == fcb);
                let index = if fresh {
                    let i = self.next;
                    self.last = Some(i);
                    self.next = (i + 1) % self.telegrams;
                    self.expect_fcb = Some(!fcb);
                    i
                } else {
                    self.last.unwrap_or(self.next)
                };
                Some(self.telegram(index))
            }
            Frame::Long {
                ci: 0x52,
                address: ADDRESS_NETWORK_LAYER,
                data,
                ..
            } => {
                self.selected = self.matches_select(data);
                self.selected.then(|| vec![ACK])
            }
            Frame::Long {
                ci: 0x51,
                address,
                data,
                ..
            } if self.addressed(address) => {
                if let [0x01, 0x7A, new] = *data {
                    self.primary = new;
                }
                Some(vec![ACK])
            }
            Frame::Control { ci, address, .. } if self.addressed(address) => match ci {
                0xB8..=0xBF => {
                    // The E5 still goes out at the old rate; the bus applies the new rate after.
                    self.baud = 300 << (ci - 0xB8);
                    Some(vec![ACK])
                }
                0x50 => {
                    self.next = 0;
                    Some(vec![ACK])
                }
                _ => None,
            },
            Frame::Long {
                ci: 0x50, address, ..
            } if self.addressed(address) => {
                self.next = 0;
                Some(vec![ACK])
            }
            _ => None,
        }
    }
}

/// What the bus saw, shared with the test.
#[derive(Default)]
pub struct Log {
    pub requests: Vec<Vec<u8>>,
}

pub struct Bus {
    pub log: Arc<Mutex<Log>>,
    /// The speed the master's side of the line runs at; meters at another speed hear noise.
    pub line_baud: Arc<AtomicU32>,
}

/// Faults to inject, by request number (0-based, counting every frame the master sent).
#[derive(Default, Clone)]
pub struct Faults {
    pub drop_reply: HashSet<usize>,
}

pub fn port(stream: DuplexStream) -> Port {
    Port::new(
        Box::new(stream),
        PortConfig {
            baud: BAUD,
            extra_latency: Duration::from_millis(2),
            echo: false,
        },
    )
}

/// Starts the bus; returns the master's end as a [`Port`] and the shared state.
pub fn start(meters: Vec<FakeMeter>, faults: Faults) -> (Port, Bus) {
    let (master_end, mut bus_end) = tokio::io::duplex(4096);
    let log = Arc::new(Mutex::new(Log::default()));
    let line_baud = Arc::new(AtomicU32::new(BAUD));
    let bus = Bus {
        log: log.clone(),
        line_baud: line_baud.clone(),
    };
    tokio::spawn(async move {
        let mut meters = meters;
        let mut reader = FrameReader::new();
        let mut buf = [0u8; 512];
        let mut count = 0usize;
        loop {
            let n = match bus_end.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            reader.push(&buf[..n]);
            while let Some(item) = reader.next_frame() {
                let Ok(bytes) = item else { continue };
                let Ok(frame) = Frame::parse(&bytes) else {
                    continue;
                };
                if let Ok(mut log) = log.lock() {
                    log.requests.push(bytes.clone());
                }
                let baud = line_baud.load(Ordering::SeqCst);
                let answers: Vec<Vec<u8>> = meters
                    .iter_mut()
                    .filter(|m| m.baud == baud)
                    .filter_map(|m| m.handle(&frame))
                    .collect();
                let dropped = faults.drop_reply.contains(&count);
                count += 1;
                if answers.is_empty() || dropped {
                    continue;
                }
                // Overlapping answers reach the master as one run of bytes that is no single
                // frame, which is what a current-modulated collision looks like to a UART.
                let out = answers.concat();
                if bus_end.write_all(&out).await.is_err() {
                    return;
                }
            }
        }
    });
    (port(master_end), bus)
}

impl Bus {
    pub fn requests(&self) -> Vec<Vec<u8>> {
        self.log
            .lock()
            .map(|l| l.requests.clone())
            .unwrap_or_default()
    }

    /// C fields of the REQ_UD2 frames sent so far.
    pub fn req_ud2_controls(&self) -> Vec<u8> {
        self.requests()
            .iter()
            .filter_map(|r| match Frame::parse(r) {
                Ok(Frame::Short { control, .. }) if control & 0xCF == 0x4B => Some(control),
                _ => None,
            })
            .collect()
    }

    pub fn selects(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| matches!(Frame::parse(r), Ok(Frame::Long { ci: 0x52, .. })))
            .count()
    }
}
