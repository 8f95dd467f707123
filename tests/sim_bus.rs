//! The simulated wired segment served over TCP and a pseudo-terminal, driven by the same
//! `Port` a real master uses.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meterbridge::sim::{self, BusSim, SecondaryAddress, ServeOptions, SimMeter};
use meterbridge::telegram::decode_wired;
use meterbridge::transport::timing;
use meterbridge::transport::{Port, PortConfig, Reply};
use meterbridge::wire::application::{Application, Header};
use meterbridge::wire::manufacturer::Manufacturer;
use meterbridge::wire::wired::{
    self, req_ud2, select_secondary, set_primary_address, snd_nke, Frame,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

fn secondary(id: u32, manufacturer: &str) -> SecondaryAddress {
    SecondaryAddress {
        id,
        manufacturer: Manufacturer::from_letters(manufacturer).map_or(0, |m| m.0),
        version: 1,
        medium: 7,
    }
}

struct Server {
    addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(sim: BusSim, baud: u32) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let opts = ServeOptions { baud, log: false };
    let task = tokio::spawn(sim::serve_tcp(listener, Arc::new(Mutex::new(sim)), opts));
    Server { addr, task }
}

fn config(baud: u32, echo: bool) -> PortConfig {
    PortConfig {
        baud,
        extra_latency: Duration::from_millis(30),
        echo,
    }
}

async fn connect(server: &Server, baud: u32, echo: bool) -> Port {
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    Port::new(Box::new(stream), config(baud, echo))
}

/// One request and its reply; the simulator holds the answer back for the request's wire
/// time, which a non-blocking transport leaves to the caller.
async fn exchange(port: &mut Port, request: &[u8]) -> Reply {
    port.send(request).await.expect("send");
    let wire = timing::wire_time(port.config.baud, request.len());
    port.receive(wire).await.expect("receive")
}

fn frame_of(reply: Reply) -> Vec<u8> {
    match reply {
        Reply::Frame(bytes) => bytes,
        other => panic!("expected one frame, got {other:?}"),
    }
}

fn header_id(frame: &[u8]) -> String {
    let telegram = decode_wired(frame).expect("RSP_UD decodes");
    match telegram.application {
        Application::Variable {
            header: Header::Long(h),
            ..
        } => h.id.to_string(),
        other => panic!("no long header: {other:?}"),
    }
}

/// A variable-data telegram with one volume record; `more` ends it with DIF 0x1F.
fn telegram(id: u32, volume: u8, more: bool) -> Vec<u8> {
    let mut data = id.to_le_bytes().to_vec();
    data.extend_from_slice(&[0x2D, 0x2C, 0x01, 0x07, volume, 0x00, 0x00, 0x00]);
    data.extend_from_slice(&[0x04, 0x13, volume, 0x00, 0x00, 0x00]);
    if more {
        data.push(0x1F);
    }
    Frame::Long {
        control: wired::C_RSP_UD,
        address: 0x99,
        ci: 0x72,
        data: &data,
    }
    .to_bytes()
}

#[tokio::test]
async fn snd_nke_and_req_ud2_over_tcp() {
    let meter = SimMeter::new(5, secondary(0x12345678, "KAM")).with_baud(9600);
    let server = serve(BusSim::new(vec![meter]), 9600).await;
    let mut port = connect(&server, 9600, false).await;

    assert_eq!(
        exchange(&mut port, &snd_nke(5)).await,
        Reply::Frame(vec![0xE5])
    );
    let rsp = frame_of(exchange(&mut port, &req_ud2(5, true)).await);
    assert_eq!(header_id(&rsp), "12345678");
    assert_eq!(rsp.get(4..7), Some(&[0x08, 5, 0x72][..]));
    assert_eq!(exchange(&mut port, &snd_nke(6)).await, Reply::Silence);
}

#[tokio::test]
async fn multi_telegram_follows_fcb() {
    let telegrams = vec![
        telegram(0x11223344, 1, true),
        telegram(0x11223344, 2, false),
    ];
    let meter = SimMeter::new(3, secondary(0x11223344, "KAM"))
        .with_baud(38400)
        .with_telegrams(telegrams)
        .expect("valid telegrams");
    let server = serve(BusSim::new(vec![meter]), 38400).await;
    let mut port = connect(&server, 38400, false).await;

    let volume = |frame: &[u8]| frame.get(7 + 8).copied();
    assert_eq!(
        exchange(&mut port, &snd_nke(3)).await,
        Reply::Frame(vec![0xE5])
    );
    let first = frame_of(exchange(&mut port, &req_ud2(3, true)).await);
    assert_eq!(volume(&first), Some(1));
    assert!(decode_wired(&first).expect("decodes").more_records_follow());
    assert_eq!(
        first.get(5),
        Some(&3),
        "A field rewritten to the meter's address"
    );

    let second = frame_of(exchange(&mut port, &req_ud2(3, false)).await);
    assert_eq!(volume(&second), Some(2));
    assert!(!decode_wired(&second)
        .expect("decodes")
        .more_records_follow());

    // FCB not toggled: the master lost the answer, the meter repeats it.
    let repeat = frame_of(exchange(&mut port, &req_ud2(3, false)).await);
    assert_eq!(repeat, second);
    // Toggled again after the last telegram: the cycle wraps to the first.
    let wrapped = frame_of(exchange(&mut port, &req_ud2(3, true)).await);
    assert_eq!(wrapped, first);
}

#[tokio::test]
async fn secondary_select_with_wildcards_and_collision() {
    let meters = vec![
        SimMeter::new(0, secondary(0x12345678, "KAM")).with_baud(38400),
        SimMeter::new(0, secondary(0x12349999, "ELS")).with_baud(38400),
    ];
    let server = serve(BusSim::new(meters), 38400).await;
    let mut port = connect(&server, 38400, false).await;

    // ID 1234567F, any manufacturer, version 1, any medium: only the first meter.
    let mask = [0x7F, 0x56, 0x34, 0x12, 0xFF, 0xFF, 0x01, 0xFF];
    let r = exchange(&mut port, &select_secondary(&mask)).await;
    assert_eq!(r, Reply::Frame(vec![0xE5]));
    let rsp = frame_of(exchange(&mut port, &req_ud2(0xFD, true)).await);
    assert_eq!(header_id(&rsp), "12345678");

    // Manufacturer ELS, ID wildcarded: only the second.
    let els = Manufacturer::from_letters("ELS").map_or([0, 0], |m| m.0.to_le_bytes());
    let mask = [0xFF, 0xFF, 0xFF, 0xFF, els[0], els[1], 0xFF, 0xFF];
    assert_eq!(
        exchange(&mut port, &select_secondary(&mask)).await,
        Reply::Frame(vec![0xE5])
    );
    let rsp = frame_of(exchange(&mut port, &req_ud2(0xFD, false)).await);
    assert_eq!(header_id(&rsp), "12349999");

    // 1234FFFF selects both: the acknowledgements and the answers collide.
    let both = [0xFF, 0xFF, 0x34, 0x12, 0xFF, 0xFF, 0xFF, 0xFF];
    assert_eq!(
        exchange(&mut port, &select_secondary(&both)).await,
        Reply::Garbled(vec![0xE5, 0xE5])
    );
    assert!(matches!(
        exchange(&mut port, &req_ud2(0xFD, true)).await,
        Reply::Garbled(_)
    ));
}

#[tokio::test]
async fn set_address_then_read_and_baud_switch() {
    let meter = SimMeter::new(5, secondary(0x12345678, "KAM")).with_baud(38400);
    let server = serve(BusSim::new(vec![meter]), 38400).await;
    let mut port = connect(&server, 38400, false).await;

    let r = exchange(&mut port, &set_primary_address(5, 42)).await;
    assert_eq!(r, Reply::Frame(vec![0xE5]));
    assert_eq!(exchange(&mut port, &req_ud2(5, true)).await, Reply::Silence);
    let rsp = frame_of(exchange(&mut port, &req_ud2(42, true)).await);
    assert_eq!(rsp.get(5), Some(&42));
    assert_eq!(header_id(&rsp), "12345678");

    // The meter acknowledges at the old rate, then no longer hears 38400 baud.
    let switch = wired::switch_baud(42, 9600).expect("9600 has a code");
    assert_eq!(exchange(&mut port, &switch).await, Reply::Frame(vec![0xE5]));
    assert_eq!(exchange(&mut port, &snd_nke(42)).await, Reply::Silence);
}

#[tokio::test]
async fn echoing_converter() {
    let meter = SimMeter::new(5, secondary(0x12345678, "KAM")).with_baud(9600);
    let sim = BusSim::new(vec![meter]).with_echo(true);
    let server = serve(sim, 9600).await;
    let mut port = connect(&server, 9600, true).await;

    assert_eq!(
        exchange(&mut port, &snd_nke(5)).await,
        Reply::Frame(vec![0xE5])
    );
    let rsp = frame_of(exchange(&mut port, &req_ud2(5, true)).await);
    assert_eq!(header_id(&rsp), "12345678");
    assert_eq!(exchange(&mut port, &snd_nke(9)).await, Reply::Silence);
}

#[tokio::test]
async fn connections_come_and_go() {
    let meter = SimMeter::new(1, secondary(0x00000001, "KAM")).with_baud(38400);
    let server = serve(BusSim::new(vec![meter]), 38400).await;
    for _ in 0..3 {
        let mut port = connect(&server, 38400, false).await;
        // Noise and a truncated frame first: the simulator drops them and stays in step.
        port.send(&[0x00, 0x42, 0x68, 0x1F]).await.expect("send");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            exchange(&mut port, &snd_nke(1)).await,
            Reply::Frame(vec![0xE5])
        );
        drop(port);
    }
    assert!(!server.task.is_finished());
}

#[tokio::test]
async fn reply_takes_its_wire_time_at_2400() {
    let meter = SimMeter::new(5, secondary(0x12345678, "KAM"));
    let server = serve(BusSim::new(vec![meter]), 2400).await;
    let mut port = connect(&server, 2400, false).await;

    let start = Instant::now();
    let rsp = frame_of(exchange(&mut port, &req_ud2(5, true)).await);
    let elapsed = start.elapsed();
    // Request and answer both cross the line, plus at least the 11-bit response delay.
    let floor = timing::wire_time(2400, 5 + rsp.len() + 1);
    assert!(elapsed >= floor, "{elapsed:?} < {floor:?}");
    assert!(elapsed < floor + Duration::from_millis(250), "{elapsed:?}");
}

#[tokio::test]
async fn pseudo_terminal() {
    let meter = SimMeter::new(5, secondary(0x12345678, "KAM")).with_baud(9600);
    let sim = Arc::new(Mutex::new(BusSim::new(vec![meter])));
    let pty = sim::open_pty().expect("pseudo-terminal");
    let path = pty.path().to_owned();
    let opts = ServeOptions {
        baud: 9600,
        log: false,
    };
    let task = tokio::spawn(pty.serve(sim, opts));

    let stream = tokio_serial::SerialStream::open(&tokio_serial::new(&path, 9600))
        .expect("open the pty like a serial port");
    let mut port = Port::new(Box::new(stream), config(9600, false));
    assert_eq!(
        exchange(&mut port, &snd_nke(5)).await,
        Reply::Frame(vec![0xE5])
    );
    let rsp = frame_of(exchange(&mut port, &req_ud2(5, true)).await);
    assert_eq!(header_id(&rsp), "12345678");
    task.abort();
}

#[test]
fn corpus_directory_becomes_a_segment() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/libmbus/test-frames");
    let mut sim = BusSim::from_corpus_dir(&dir).expect("corpus loads");
    assert_eq!(sim.meters().len(), 76);
    let primaries: Vec<u8> = sim.meters().iter().map(|m| m.primary).collect();
    assert_eq!(primaries, (1..=76).collect::<Vec<u8>>());

    // The first file (sorted) answers at address 1 with its own header.
    let baud = sim.baud;
    let reply = sim.handle(&req_ud2(1, true), baud);
    assert_eq!(reply.responders, 1);
    assert_eq!(reply.bytes.get(5), Some(&1));
    let expected = sim.meters().first().map(|m| m.secondary.id);
    let telegram = decode_wired(&reply.bytes).expect("decodes");
    let Application::Variable {
        header: Header::Long(h),
        ..
    } = telegram.application
    else {
        panic!("first corpus frame has a long header");
    };
    assert_eq!(Some(h.id.0), expected);
}

#[test]
fn yaml_file_config() {
    let dir = std::env::temp_dir().join(format!("meterbridge-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bus.yaml");
    let yaml = "baud: 9600\nmeters:\n  - {primary: 5, secondary: \"12345678\", manufacturer: KAM, version: 1, medium: 7}\n";
    std::fs::write(&path, yaml).expect("write config");
    let sim = BusSim::from_yaml_file(&path);
    let _ = std::fs::remove_dir_all(&dir);
    let sim = sim.expect("config loads");
    let m = sim
        .meters()
        .first()
        .map(|m| (m.primary, m.secondary.to_string(), m.baud));
    assert_eq!(m, Some((5, "123456782D2C0107".to_owned(), 9600)));
}
