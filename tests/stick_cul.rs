//! The CUL session against the simulated culfw over a pseudo-terminal at 38400 baud: the
//! start-up commands, telegrams in formats A and B with their RSSI, a damaged line skipped,
//! and the firmware refusals.

use std::sync::Arc;
use std::time::Duration;

use meterbridge::drivers::run::DriverRun;
use meterbridge::drivers::Registry;
use meterbridge::receivers::cul::CulSession;
use meterbridge::receivers::{Heard, LinkMode, StickError, StickKind};
use meterbridge::security::KeyStore;
use meterbridge::sim::cul::{serve_firmware, CulFirmware};
use meterbridge::sim::stick::{lock_log, SharedStickLog, StickSimConfig};
use meterbridge::wire::hex;
use tokio::time::timeout;
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

/// Hydrodigit water meter (drivers/hydrodigit.yaml, "Hydro3"): total 43.964 m³.
const WATER: &str = "4644B4092143658713077A9C0000000C1364390400046D212F16350F152A0F000000440F00C00F00511000D51000B20B00180C007C0C00E60C00560D00D10D00400E00C60E0000";
/// Aerius gas meter (drivers/aerius.yaml).
const GAS: &str = "2E44A5119870659930037A060020052F2F0C933E842784060A3B00000A5A5901C4016D3B37DF2CCC01933E24032606";
/// Hydrodigit (drivers/hydrodigit.yaml, "HydrodigitWaterrr").
const SMALL: &str = "2144B4099163742315077A400000000C1399999999046D092A30340F050B01000000";

const WAIT: Duration = Duration::from_secs(10);

struct Rig {
    port: SerialStream,
    log: SharedStickLog,
    _slave: SerialStream,
}

fn rig(cfg: StickSimConfig, firmware: CulFirmware) -> Rig {
    let (master, slave) = SerialStream::pair().expect("pseudo-terminal");
    let path = slave.name().expect("pty name");
    let log = SharedStickLog::default();
    tokio::spawn(serve_firmware(master, firmware, cfg, Arc::clone(&log)));
    let port = tokio_serial::new(&path, StickKind::Cul.default_baud())
        .open_native_async()
        .expect("open the slave side");
    Rig {
        port,
        log,
        _slave: slave,
    }
}

fn config(telegrams: &[&str], rssi_dbm: i16) -> StickSimConfig {
    StickSimConfig {
        telegrams: telegrams.iter().map(|t| hex::decode(t).unwrap()).collect(),
        interval: Duration::from_millis(10),
        rssi_dbm,
        repeat: false,
        reply_delay: Duration::from_millis(5),
        log: false,
        ..StickSimConfig::default()
    }
}

async fn receive(session: &mut CulSession<SerialStream>, n: usize) -> Vec<Heard> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            timeout(WAIT, session.next())
                .await
                .expect("a telegram in time")
                .expect("stream alive"),
        );
    }
    out
}

#[tokio::test]
async fn start_up_bytes_and_mode_for_each_link_mode() {
    for (mode, command, logged) in [
        (LinkMode::T1, "brt", LinkMode::T1),
        (LinkMode::S1, "brs", LinkMode::S1),
        (LinkMode::C1, "brc", LinkMode::C1T1),
        (LinkMode::C1T1, "brc", LinkMode::C1T1),
    ] {
        let r = rig(config(&[], -60), CulFirmware::default());
        let session = timeout(WAIT, CulSession::start(r.port, mode))
            .await
            .expect("start in time")
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        let log = lock_log(&r.log).clone();
        let expected: Vec<Vec<u8>> = ["V", "X21", "X", command]
            .iter()
            .map(|c| c.as_bytes().to_vec())
            .collect();
        assert_eq!(log.requests, expected, "{mode}");
        assert_eq!(log.mode, Some(logged), "{mode}");
        assert_eq!(session.info().model, "nanoCUL868");
        assert_eq!(session.info().firmware, "1.67");
        assert!(session
            .info()
            .details
            .iter()
            .any(|(k, v)| k == "report flags" && v.starts_with("21")));
    }
}

#[tokio::test]
async fn t1_telegrams_arrive_decoded_with_rssi() {
    let r = rig(config(&[WATER, GAS, SMALL], -67), CulFirmware::default());
    let mut session = timeout(WAIT, CulSession::start(r.port, LinkMode::T1))
        .await
        .unwrap()
        .unwrap();
    let heard = receive(&mut session, 3).await;
    for (h, sent) in heard.iter().zip([WATER, GAS, SMALL]) {
        assert_eq!(h.frame, hex::decode(sent).unwrap());
        assert_eq!(h.mode, Some(LinkMode::T1));
        let rssi = h.rssi_dbm.expect("culfw reports RSSI after X21");
        assert!((rssi - -67).abs() <= 1, "{rssi}");
    }
    assert_eq!(lock_log(&r.log).emitted, 3);
    let stats = session.stats();
    assert_eq!((stats.telegrams, stats.malformed), (3, 0));

    let mut run = DriverRun::new(Registry::built_in_static(), KeyStore::new());
    let line = run
        .process(&heard[0].frame, "auto", "water", "2024-01-01 00:00:00")
        .expect("decodes");
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["meter"], "hydrodigit");
    assert_eq!(json["id"], "87654321");
    assert_eq!(json["total_m3"].as_f64(), Some(43.964));
}

#[tokio::test]
async fn c_mode_delivers_format_b_and_format_a_lines() {
    let r = rig(
        config(&[WATER, GAS, SMALL, WATER], -95),
        CulFirmware::default(),
    );
    let mut session = timeout(WAIT, CulSession::start(r.port, LinkMode::C1))
        .await
        .unwrap()
        .unwrap();
    let heard = receive(&mut session, 4).await;
    for (i, (h, sent)) in heard.iter().zip([WATER, GAS, SMALL, WATER]).enumerate() {
        assert_eq!(h.frame, hex::decode(sent).unwrap(), "telegram {i}");
        assert_eq!(usize::from(h.frame[0]) + 1, h.frame.len());
        // The simulator sends even-numbered telegrams as `bY` (format B): surely C1. Format A
        // lines in C mode may be C1 or T1.
        let mode = if i % 2 == 0 { Some(LinkMode::C1) } else { None };
        assert_eq!(h.mode, mode, "telegram {i}");
        let rssi = h.rssi_dbm.unwrap();
        assert!((rssi - -95).abs() <= 1, "{rssi}");
    }
}

#[tokio::test]
async fn damaged_line_is_counted_and_the_next_telegram_still_arrives() {
    let firmware = CulFirmware {
        damaged: vec![1],
        ..CulFirmware::default()
    };
    let r = rig(config(&[WATER, GAS, SMALL], -70), firmware);
    let mut session = timeout(WAIT, CulSession::start(r.port, LinkMode::T1))
        .await
        .unwrap()
        .unwrap();
    let heard = receive(&mut session, 2).await;
    assert_eq!(heard[0].frame, hex::decode(WATER).unwrap());
    assert_eq!(heard[1].frame, hex::decode(SMALL).unwrap());
    let stats = session.stats();
    assert_eq!(stats.telegrams, 2);
    assert_eq!(stats.malformed, 1);
}

#[tokio::test]
async fn next_is_cancel_safe() {
    let mut cfg = config(&[WATER, GAS, SMALL], -60);
    cfg.interval = Duration::from_millis(5);
    let r = rig(cfg, CulFirmware::default());
    let mut session = timeout(WAIT, CulSession::start(r.port, LinkMode::S1))
        .await
        .unwrap()
        .unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < 3 && tokio::time::Instant::now() < deadline {
        // Very short waits drop many next() futures half-way through a line.
        if let Ok(h) = timeout(Duration::from_micros(200), session.next()).await {
            got.push(h.unwrap().frame);
        }
    }
    let sent: Vec<Vec<u8>> = [WATER, GAS, SMALL]
        .iter()
        .map(|t| hex::decode(t).unwrap())
        .collect();
    assert_eq!(got, sent);
    assert_eq!(session.stats().malformed, 0);
}

#[tokio::test]
async fn firmware_without_c_mode_or_wmbus_is_refused() {
    let old = CulFirmware {
        version_line: "V 1.61 CUL868".to_string(),
        c_mode: false,
        ..CulFirmware::default()
    };
    let r = rig(config(&[], -60), old.clone());
    match timeout(WAIT, CulSession::start(r.port, LinkMode::C1T1))
        .await
        .unwrap()
    {
        Err(StickError::ModeUnsupported { mode, reason, .. }) => {
            assert_eq!(mode, LinkMode::C1T1);
            assert!(reason.contains("OFF"), "{reason}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("accepted c1t1 on firmware without C mode"),
    }
    // The same firmware still does T1.
    let r = rig(config(&[GAS], -60), old);
    let mut session = timeout(WAIT, CulSession::start(r.port, LinkMode::T1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.info().model, "CUL868");
    assert_eq!(
        receive(&mut session, 1).await[0].frame,
        hex::decode(GAS).unwrap()
    );

    let no_wmbus = CulFirmware {
        wmbus: false,
        ..CulFirmware::default()
    };
    let r = rig(config(&[], -60), no_wmbus);
    match timeout(WAIT, CulSession::start(r.port, LinkMode::T1))
        .await
        .unwrap()
    {
        Err(StickError::ModeUnsupported { reason, .. }) => {
            assert!(reason.contains("unknown"), "{reason}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("accepted a firmware without wireless M-Bus"),
    }
}

#[tokio::test]
async fn silent_device_times_out_and_closed_stream_is_reported() {
    let (ours, theirs) = tokio::io::duplex(1024);
    let err = match CulSession::start(ours, LinkMode::T1).await {
        Err(e) => e,
        Ok(_) => panic!("started without answers"),
    };
    assert!(
        matches!(err, StickError::Timeout { request, .. } if request.starts_with('V')),
        "{err}"
    );
    drop(theirs);

    let (ours, theirs) = tokio::io::duplex(1024);
    drop(theirs);
    let err = match CulSession::start(ours, LinkMode::T1).await {
        Err(e) => e,
        Ok(_) => panic!("started on a closed stream"),
    };
    assert!(
        matches!(err, StickError::Io { .. } | StickError::Closed { .. }),
        "{err}"
    );
}
