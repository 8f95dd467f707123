//! The Amber session against the simulated stick over a pseudo-terminal at 9600 baud, in all
//! four output formats the stick's NVM can select (command/transparent × RSSI on/off).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meterbridge::drivers::run::DriverRun;
use meterbridge::drivers::Registry;
use meterbridge::receivers::amber::{encode_frame, factory_default_nvm, AmberModel, AmberSession};
use meterbridge::receivers::{LinkMode, StickError};
use meterbridge::security::{Key, KeyStore};
use meterbridge::sim::amber::{serve, AmberSimOptions};
use meterbridge::sim::stick::{builtin_corpus, lock_log, SharedStickLog, StickSimConfig};
use meterbridge::wire::hex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_serial::{SerialPortBuilderExt, SerialStream};

const BAUD: u32 = 9600;
const WAIT: Duration = Duration::from_secs(10);
const KAMSTRUP: &str =
    "2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713";

struct Rig {
    started: Result<AmberSession<SerialStream>, StickError>,
    log: SharedStickLog,
    server: JoinHandle<std::io::Result<()>>,
    _slave: SerialStream,
}

async fn start_against_sim(opts: AmberSimOptions, cfg: StickSimConfig, mode: LinkMode) -> Rig {
    use tokio_serial::SerialPort;
    let (master, slave) = SerialStream::pair().unwrap();
    let path = slave.name().unwrap();
    let log: SharedStickLog = Arc::new(Mutex::new(Default::default()));
    let server = tokio::spawn(serve(master, opts, cfg, Arc::clone(&log)));
    let port = tokio_serial::new(&path, BAUD).open_native_async().unwrap();
    let started = timeout(WAIT, AmberSession::start(port, mode))
        .await
        .expect("start-up finishes");
    Rig {
        started,
        log,
        server,
        _slave: slave,
    }
}

/// The key the driver test cases give for a telegram (none means the case needs none).
fn keys_for(telegram_hex: &str) -> KeyStore {
    let mut keys = KeyStore::new();
    let case = Registry::built_in_static()
        .iter()
        .flat_map(|d| d.tests().into_owned())
        .find(|case| {
            case.telegrams
                .iter()
                .any(|t| t.eq_ignore_ascii_case(telegram_hex))
        })
        .expect("the telegram is a driver test case");
    if let Some(k) = &case.key {
        keys.set_default(Key::from_hex(k).unwrap());
    }
    keys
}

fn decode(frame: &[u8], keys: KeyStore) -> Result<serde_json::Value, String> {
    let mut run = DriverRun::new(Registry::built_in_static(), keys);
    let line = run.process(frame, "auto", "m", "ts")?;
    Ok(serde_json::from_str(&line).unwrap())
}

/// The meter id as drivers print it: the A field's 4 BCD bytes, most significant first.
fn id_of(telegram: &[u8]) -> String {
    telegram[4..8]
        .iter()
        .rev()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The Kamstrup telegram plus two short corpus telegrams that decode without a key.
fn telegrams_to_send() -> Vec<Vec<u8>> {
    let kamstrup = hex::decode(KAMSTRUP).unwrap();
    let mut out = vec![kamstrup.clone()];
    out.extend(
        builtin_corpus()
            .into_iter()
            .filter(|t| *t != kamstrup && t.len() < 60)
            .filter(|t| decode(t, KeyStore::new()).is_ok())
            .take(2),
    );
    assert_eq!(out.len(), 3);
    out
}

fn sim_config(telegrams: Vec<Vec<u8>>, rssi_dbm: i16) -> StickSimConfig {
    StickSimConfig {
        telegrams,
        interval: Duration::from_millis(10),
        rssi_dbm,
        repeat: false,
        reply_delay: Duration::from_millis(5),
        log: false,
        ..StickSimConfig::default()
    }
}

fn set_mode_bytes(mode: LinkMode) -> &'static str {
    // sticks.md §2.3, as observed from wmbusmeters.
    match mode {
        LinkMode::T1 => "FF040108F2",
        LinkMode::C1 => "FF04010EF4",
        LinkMode::C1T1 => "FF040109F3",
        LinkMode::S1 => "FF040103F9",
    }
}

fn detail<'a>(session: &'a AmberSession<SerialStream>, key: &str) -> Option<&'a str> {
    session
        .info()
        .details
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

async fn one_combination(cmd_out: bool, rssi_enabled: bool, mode: LinkMode, rssi_dbm: i16) {
    let sent = telegrams_to_send();
    let opts = AmberSimOptions {
        cmd_out,
        rssi_enabled,
        serial: 0x00A1_B2C3,
        firmware: [2, 5, 1],
        ..Default::default()
    };
    let rig = start_against_sim(opts, sim_config(sent.clone(), rssi_dbm), mode).await;
    let mut session = rig.started.unwrap();

    let requests: Vec<String> = lock_log(&rig.log)
        .requests
        .iter()
        .map(|r| hex::encode_upper(r))
        .collect();
    assert_eq!(
        requests,
        ["FF0A02008077", set_mode_bytes(mode), "FF0B00F4", "FF0C00F3"]
    );
    assert_eq!(lock_log(&rig.log).mode, Some(mode));

    let info = session.info();
    assert_eq!(info.model, "AMB8465");
    assert_eq!(info.firmware, "2.5.1");
    assert_eq!(info.id, "00A1B2C3");
    let uart = if cmd_out { "command" } else { "transparent" };
    assert_eq!(detail(&session, "uart"), Some(uart));
    let rssi = if rssi_enabled { "attached" } else { "off" };
    assert_eq!(detail(&session, "rssi"), Some(rssi));
    assert_eq!(detail(&session, "auto_sleep"), None);

    for telegram in &sent {
        let heard = timeout(WAIT, session.next()).await.unwrap().unwrap();
        assert_eq!(hex::encode_upper(&heard.frame), hex::encode_upper(telegram));
        assert_eq!(heard.rssi_dbm, rssi_enabled.then_some(rssi_dbm));
        let hex_text = hex::encode_upper(&heard.frame);
        let keys = if hex_text == KAMSTRUP {
            keys_for(KAMSTRUP)
        } else {
            KeyStore::new()
        };
        let json = decode(&heard.frame, keys).unwrap();
        assert_eq!(json["id"].as_str(), Some(id_of(telegram).as_str()));
        if hex_text == KAMSTRUP {
            assert_eq!(json["total_m3"].as_f64(), Some(6.408), "{json}");
        }
    }
    let stats = session.stats();
    assert_eq!((stats.telegrams, stats.malformed), (3, 0));
    assert_eq!(lock_log(&rig.log).emitted, 3);

    drop(session);
    drop(rig._slave);
    timeout(WAIT, rig.server).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn command_output_with_rssi() {
    one_combination(true, true, LinkMode::T1, -47).await;
}

#[tokio::test]
async fn command_output_without_rssi() {
    one_combination(true, false, LinkMode::C1, -60).await;
}

#[tokio::test]
async fn transparent_output_with_rssi() {
    one_combination(false, true, LinkMode::C1T1, -103).await;
}

#[tokio::test]
async fn transparent_output_without_rssi() {
    one_combination(false, false, LinkMode::S1, -80).await;
}

#[tokio::test]
async fn a_stick_silent_to_serial_and_firmware_requests_still_receives() {
    let sent = telegrams_to_send();
    let opts = AmberSimOptions {
        answers_identity: false,
        ..Default::default()
    };
    let rig = start_against_sim(opts, sim_config(sent.clone(), -60), LinkMode::T1).await;
    let mut session = rig
        .started
        .expect("start-up goes on without serial and firmware");
    assert_eq!(detail(&session, "serial"), Some("not answered"));
    assert_eq!(detail(&session, "firmware"), Some("not answered"));
    assert_eq!(session.info().firmware, "");
    assert_eq!(detail(&session, "mode"), Some("t1"));
    for telegram in &sent {
        let heard = timeout(WAIT, session.next()).await.unwrap().unwrap();
        assert_eq!(&heard.frame, telegram);
        assert_eq!(heard.rssi_dbm, Some(-60));
    }
    let first = decode(&sent[0], KeyStore::new()).unwrap();
    assert_eq!(first["total_m3"], 6.408);
}

#[tokio::test]
async fn an_indication_during_start_up_is_not_lost() {
    for cmd_out in [true, false] {
        let sent = telegrams_to_send();
        let opts = AmberSimOptions {
            cmd_out,
            rssi_enabled: true,
            indication_during_startup: true,
            ..Default::default()
        };
        let rig = start_against_sim(opts, sim_config(sent.clone(), -55), LinkMode::T1).await;
        let mut session = rig.started.unwrap();
        // Sent before the parameter answer, i.e. before the session knew the output format.
        assert_eq!(lock_log(&rig.log).requests.len(), 4);
        let first = timeout(WAIT, session.next()).await.unwrap().unwrap();
        assert_eq!(first.frame, sent[0], "cmd_out {cmd_out}");
        assert_eq!(first.rssi_dbm, Some(-55));
        for telegram in &sent {
            let heard = timeout(WAIT, session.next()).await.unwrap().unwrap();
            assert_eq!(&heard.frame, telegram);
        }
        assert_eq!(session.stats().telegrams, 4);
        assert_eq!(lock_log(&rig.log).emitted, 4);
    }
}

#[tokio::test]
async fn the_amb3665_is_recognised_and_868_mhz_modes_are_refused_before_sending() {
    let opts = AmberSimOptions {
        amb3665: true,
        ..Default::default()
    };
    let rig = start_against_sim(opts, sim_config(Vec::new(), -60), LinkMode::T1).await;
    let err = rig
        .started
        .err()
        .expect("no 868 MHz mode on a 169 MHz stick");
    assert!(
        matches!(
            err,
            StickError::ModeUnsupported {
                mode: LinkMode::T1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("AMB3665"), "{err}");
    assert_eq!(
        lock_log(&rig.log).requests.len(),
        1,
        "only the parameter read"
    );
}

/// A stick that answers the parameter read and then refuses the mode with `status`.
async fn refusing_stick(mut master: SerialStream, status: u8) -> std::io::Result<()> {
    let mut pending = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        let n = master.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&buf[..n]);
        while pending.len() >= 4 && pending.len() >= 4 + usize::from(pending[2]) {
            let frame: Vec<u8> = pending.drain(..4 + usize::from(pending[2])).collect();
            let answer = match frame[1] {
                0x0A => {
                    let mut dump = vec![0x00, 0x78];
                    let mut area = factory_default_nvm(AmberModel::Amb8465);
                    area[0x05] = 1;
                    dump.extend(area);
                    encode_frame(0x8A, &dump)
                }
                0x04 => encode_frame(0x84, &[status]),
                _ => continue,
            };
            master.write_all(&answer).await?;
        }
    }
}

#[tokio::test]
async fn a_refused_set_mode_is_reported() {
    use tokio_serial::SerialPort;
    let (master, slave) = SerialStream::pair().unwrap();
    let path = slave.name().unwrap();
    let _fake = tokio::spawn(refusing_stick(master, 0x01));
    let port = tokio_serial::new(&path, BAUD).open_native_async().unwrap();
    let err = timeout(WAIT, AmberSession::start(port, LinkMode::C1))
        .await
        .unwrap()
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            StickError::Refused {
                request: "SET_MODE",
                status: 0x01,
                ..
            }
        ),
        "{err}"
    );
    drop(slave);
}

#[tokio::test]
async fn a_silent_device_times_out_after_three_parameter_reads() {
    use tokio_serial::SerialPort;
    let (master, slave) = SerialStream::pair().unwrap();
    let path = slave.name().unwrap();
    let port = tokio_serial::new(&path, BAUD).open_native_async().unwrap();
    let err = timeout(WAIT, AmberSession::start(port, LinkMode::T1))
        .await
        .unwrap()
        .err()
        .expect("nobody answers");
    assert!(
        matches!(
            err,
            StickError::Timeout {
                request: "GET_REQ",
                ..
            }
        ),
        "{err}"
    );
    let mut master = master;
    let mut sent = Vec::new();
    let mut buf = [0u8; 64];
    while sent.len() < 18 {
        let n = timeout(WAIT, master.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0);
        sent.extend_from_slice(&buf[..n]);
    }
    assert_eq!(hex::encode_upper(&sent), "FF0A02008077".repeat(3));
    drop(slave);
}

#[tokio::test]
async fn next_is_cancel_safe() {
    let sent = telegrams_to_send();
    let opts = AmberSimOptions {
        cmd_out: false,
        rssi_enabled: true,
        ..Default::default()
    };
    let mut cfg = sim_config(sent.clone(), -70);
    cfg.interval = Duration::from_millis(3);
    let rig = start_against_sim(opts, cfg, LinkMode::T1).await;
    let mut session = rig.started.unwrap();
    let mut heard = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while heard.len() < sent.len() && tokio::time::Instant::now() < deadline {
        // Abandoned futures must not take bytes with them.
        if let Ok(h) = timeout(Duration::from_micros(300), session.next()).await {
            heard.push(h.unwrap().frame);
        }
    }
    assert_eq!(heard, sent);
    assert_eq!(session.stats().malformed, 0);
}
