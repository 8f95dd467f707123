//! The IMST session against the simulated stick over a pseudo-terminal, as with a real USB
//! stick: iM871A (HCI at 57600 baud) and iU891A (HCI in SLIP at 115200 baud).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meterbridge::drivers::run::DriverRun;
use meterbridge::drivers::Registry;
use meterbridge::receivers::imst::{slip_encode, ImstSession};
use meterbridge::receivers::{LinkMode, StickError, StickKind};
use meterbridge::security::{Key, KeyStore};
use meterbridge::sim::imst::{serve, serve_with_options, ImstSimOptions};
use meterbridge::sim::stick::{
    builtin_corpus, lock_log, SharedStickLog, StickSimConfig, StickSimLog,
};
use meterbridge::wire::hex;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

const WAIT: Duration = Duration::from_secs(10);
const KAMSTRUP: &str =
    "2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713";

struct Rig {
    session: Result<ImstSession<SerialStream>, StickError>,
    log: SharedStickLog,
    server: JoinHandle<std::io::Result<()>>,
    slave: SerialStream,
}

impl Rig {
    async fn start(
        kind: StickKind,
        mode: LinkMode,
        options: ImstSimOptions,
        cfg: StickSimConfig,
    ) -> Rig {
        let (master, slave) = SerialStream::pair().expect("pty");
        let path = slave.name().expect("pty name");
        let log: SharedStickLog = Arc::new(Mutex::new(StickSimLog::default()));
        let server = tokio::spawn(serve_with_options(master, kind, options, cfg, log.clone()));
        let port = tokio_serial::new(&path, kind.default_baud())
            .open_native_async()
            .expect("open the pty like a stick");
        let session = timeout(WAIT, ImstSession::start(port, kind, mode))
            .await
            .expect("start-up finishes");
        Rig {
            session,
            log,
            server,
            slave,
        }
    }

    /// Closes the host side and checks that the simulator ended cleanly.
    async fn finish(self) {
        drop(self.session);
        drop(self.slave);
        let ended = timeout(WAIT, self.server).await.expect("simulator ends");
        ended
            .expect("simulator task")
            .expect("simulator ends without error");
    }
}

fn quick(telegrams: Vec<Vec<u8>>, rssi_dbm: i16) -> StickSimConfig {
    StickSimConfig {
        telegrams,
        interval: Duration::from_millis(5),
        rssi_dbm,
        repeat: false,
        reply_delay: Duration::from_millis(2),
        log: false,
        ..StickSimConfig::default()
    }
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// The bytes the session should put on the line for one request.
fn on_wire(kind: StickKind, hci: &str) -> Vec<u8> {
    match kind {
        StickKind::Iu891a => slip_encode(&h(hci)),
        _ => h(hci),
    }
}

fn set_config(mode: LinkMode) -> &'static str {
    match mode {
        LinkMode::T1 => "A5010306000203300100",
        LinkMode::C1 => "A5010306000207300100",
        LinkMode::C1T1 => "A501030600020A300100",
        LinkMode::S1 => "A5010306000200300100",
    }
}

const KINDS: [StickKind; 2] = [StickKind::Im871a, StickKind::Iu891a];

#[tokio::test]
async fn start_up_bytes_and_mode_for_every_mode_on_both_sticks() {
    for kind in KINDS {
        for mode in LinkMode::ALL {
            let rig = Rig::start(kind, mode, ImstSimOptions::default(), quick(vec![], -60)).await;
            let session = rig.session.as_ref().expect("starts");
            let info = session.info();
            assert_eq!(
                info.model,
                if kind == StickKind::Iu891a {
                    "iU891A"
                } else {
                    "iM871A"
                }
            );
            assert_eq!(info.firmware, "0x15");
            assert_eq!(info.id, "00103512");
            let link = info
                .details
                .iter()
                .find(|(k, _)| k == "link mode")
                .map(|(_, v)| v.clone());
            assert!(link.is_some_and(|v| v.starts_with(mode.name())), "{info:?}");
            {
                let log = lock_log(&rig.log);
                assert_eq!(
                    log.requests,
                    vec![
                        on_wire(kind, "A5010F00"),
                        on_wire(kind, "A5010500"),
                        on_wire(kind, set_config(mode)),
                    ],
                    "{kind} {mode}"
                );
                assert_eq!(log.mode, Some(mode), "{kind} {mode}");
            }
            rig.finish().await;
        }
    }
}

/// The Kamstrup telegram, a few from the driver corpus, and ones holding the bytes each
/// framing has to handle (SOF, SLIP END and ESC).
fn telegram_mix() -> Vec<Vec<u8>> {
    let corpus: Vec<Vec<u8>> = builtin_corpus()
        .into_iter()
        .filter(|t| (11..=256).contains(&t.len()))
        .collect();
    let mut mix = vec![h(KAMSTRUP)];
    mix.extend(corpus.iter().take(4).cloned());
    for special in [0xA5u8, 0xC0, 0xDB] {
        let with = corpus
            .iter()
            .find(|t| t[1..].contains(&special) && !mix.contains(t))
            .expect("a corpus telegram holding the byte");
        mix.push(with.clone());
    }
    mix
}

fn kamstrup_total_m3(frame: &[u8]) -> f64 {
    let registry = Registry::built_in_static();
    let mut keys = KeyStore::new();
    let case = registry
        .iter()
        .flat_map(|d| d.tests().into_owned())
        .find(|c| c.telegrams.iter().any(|t| t.eq_ignore_ascii_case(KAMSTRUP)))
        .expect("the driver test case with the Kamstrup telegram");
    if let Some(k) = &case.key {
        keys.set_default(Key::from_hex(k).expect("test key"));
    }
    let line = DriverRun::new(registry, keys)
        .process(frame, "auto", "MyTapWater", "ts")
        .expect("decodes");
    let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    v["total_m3"].as_f64().expect("total_m3")
}

#[tokio::test]
async fn telegrams_arrive_intact_with_their_rssi_on_both_sticks() {
    for (kind, rssi) in [(StickKind::Im871a, -71), (StickKind::Iu891a, -93)] {
        let telegrams = telegram_mix();
        let mut rig = Rig::start(
            kind,
            LinkMode::T1,
            ImstSimOptions::default(),
            quick(telegrams.clone(), rssi),
        )
        .await;
        let session = rig.session.as_mut().expect("starts");
        for expected in &telegrams {
            let heard = timeout(WAIT, session.next())
                .await
                .expect("a telegram in time")
                .expect("a telegram");
            assert_eq!(
                hex::encode_upper(&heard.frame),
                hex::encode_upper(expected),
                "{kind}"
            );
            let dbm = heard.rssi_dbm.expect("RSSI attached");
            assert!((dbm - rssi).abs() <= 1, "{kind}: {dbm} dBm for {rssi}");
            assert_eq!(heard.mode, Some(LinkMode::T1));
        }
        let stats = session.stats();
        assert_eq!(stats.telegrams, telegrams.len() as u64);
        assert_eq!(stats.malformed, 0);
        assert_eq!(stats.skipped_bytes, 0);
        assert_eq!(lock_log(&rig.log).emitted, telegrams.len() as u64);
        rig.finish().await;
    }
}

#[tokio::test]
async fn the_kamstrup_indication_decodes_to_its_reading() {
    for kind in KINDS {
        let mut rig = Rig::start(
            kind,
            LinkMode::C1,
            ImstSimOptions::default(),
            quick(vec![h(KAMSTRUP)], -84),
        )
        .await;
        let session = rig.session.as_mut().expect("starts");
        let heard = timeout(WAIT, session.next()).await.unwrap().unwrap();
        assert_eq!(heard.rssi_dbm, Some(-84));
        assert!((kamstrup_total_m3(&heard.frame) - 6.408).abs() < 1e-9);
        rig.finish().await;
    }
}

#[tokio::test]
async fn c1t1_is_refused_on_firmware_0x13_and_accepted_on_0x14() {
    for kind in KINDS {
        let old = ImstSimOptions {
            firmware: 0x13,
            ..ImstSimOptions::default()
        };
        let rig = Rig::start(kind, LinkMode::C1T1, old, quick(vec![], -60)).await;
        match &rig.session {
            Err(StickError::ModeUnsupported { mode, reason, .. }) => {
                assert_eq!(*mode, LinkMode::C1T1);
                assert!(reason.contains("0x13"), "{reason}");
                assert!(reason.contains("c1 or t1"), "{reason}");
            }
            Err(other) => panic!("{kind}: {other}"),
            Ok(_) => panic!("{kind}: c1t1 accepted on firmware 0x13"),
        }
        {
            let log = lock_log(&rig.log);
            assert_eq!(
                log.requests,
                vec![on_wire(kind, "A5010F00"), on_wire(kind, "A5010500")]
            );
            assert_eq!(log.mode, None);
        }
        rig.finish().await;

        let newer = ImstSimOptions {
            firmware: 0x14,
            ..ImstSimOptions::default()
        };
        let rig = Rig::start(kind, LinkMode::C1T1, newer, quick(vec![], -60)).await;
        assert_eq!(
            rig.session.as_ref().expect("starts").info().firmware,
            "0x14"
        );
        assert_eq!(lock_log(&rig.log).mode, Some(LinkMode::C1T1));
        rig.finish().await;
    }
}

#[tokio::test]
async fn a_telegram_arriving_during_start_up_is_not_lost() {
    let later = builtin_corpus()
        .into_iter()
        .find(|t| t.len() > 20 && t != &h(KAMSTRUP))
        .unwrap();
    for kind in KINDS {
        let options = ImstSimOptions {
            telegram_before_set_config: Some(h(KAMSTRUP)),
            ..ImstSimOptions::default()
        };
        let mut rig = Rig::start(
            kind,
            LinkMode::C1T1,
            options,
            quick(vec![later.clone()], -60),
        )
        .await;
        let session = rig.session.as_mut().expect("starts");
        let first = timeout(WAIT, session.next()).await.unwrap().unwrap();
        assert_eq!(first.frame, h(KAMSTRUP), "{kind}");
        // Listening to both modes, the stick does not say which one a telegram came in.
        assert_eq!(first.mode, None);
        let second = timeout(WAIT, session.next()).await.unwrap().unwrap();
        assert_eq!(second.frame, later, "{kind}");
        assert_eq!(lock_log(&rig.log).emitted, 2);
        rig.finish().await;
    }
}

#[tokio::test]
async fn the_default_simulator_answers_a_ping_and_ends_at_eof() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut host, stick) = tokio::io::duplex(256);
    let log: SharedStickLog = Arc::new(Mutex::new(StickSimLog::default()));
    let server = tokio::spawn(serve(
        stick,
        StickKind::Iu891a,
        quick(vec![], -60),
        log.clone(),
    ));
    host.write_all(&slip_encode(&h("A5010100"))).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 64];
    while answer.len() < 8 {
        let n = timeout(WAIT, host.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0);
        answer.extend_from_slice(&buf[..n]);
    }
    assert_eq!(answer, slip_encode(&h("A58102004CA3")));
    drop(host);
    timeout(WAIT, server).await.unwrap().unwrap().unwrap();
    assert_eq!(lock_log(&log).requests, vec![slip_encode(&h("A5010100"))]);
}
