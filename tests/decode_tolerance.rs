//! Issue 17: what real receivers hand over and wmbusmeters reads, read here too — an L field
//! shorter than the bytes received, and hex text that ends in a half byte — with a warning,
//! never silently, and never at the cost of refusing what is really broken.

mod support;

use meterbridge::security::KeyStore;
use meterbridge::telegram::wireless::LengthRepair;
use meterbridge::telegram::WirelessDecoder;
use meterbridge::wire::hex;
use meterbridge::wire::records::RecordKind;
use meterbridge::wire::wireless::{add_dll_crcs, FrameFormat};
use support::meterbridge;

/// wmbusmeters corpus line 386 (Qundis Q water 5.5): L says 0x37 (55 bytes follow), 59 do;
/// the date-and-time record straddles the announced end.
const SHORT_L: &str = "374493444836351218067AC70000200C13911900004C1391170000426CBF2CCC081391170000C2086CBF2C02BB560000326CFFFF046D1E02DE21FED0";
/// The same meter model with a correct L (corpus line 303 without its stray hex digit).
const GOOD: &str = "3C449344333333333537723333333393443506B80000200C13350000004C1300000000426CBF2CCC081300000000C2086CDF25326CFFFF046D0516CE26";

#[test]
fn a_short_l_field_decodes_every_byte_received_and_says_so() {
    let bytes = hex::decode(SHORT_L).expect("hex");
    let frame = WirelessDecoder::new(KeyStore::new())
        .decode(&bytes)
        .expect("decodes");
    assert_eq!(
        frame.link.length_repair,
        Some(LengthRepair::Corrected { announced: 0x37 })
    );
    assert_eq!(usize::from(frame.link.dll.l), bytes.len() - 1);
    let telegram = frame.telegram().expect("records");
    // The record cut in half by the announced end: 6D, date and time 2022-01-30 02:30.
    let datetime = telegram
        .records
        .iter()
        .find(|r| r.kind == RecordKind::Data && r.vif == Some(0x6D))
        .expect("date-time record");
    assert_eq!(datetime.data, [0x1E, 0x02, 0xDE, 0x21]);
}

#[test]
fn bytes_after_a_crc_checked_frame_are_ignored() {
    let plain = hex::decode(GOOD).expect("hex");
    let mut with_crcs = add_dll_crcs(&plain, FrameFormat::A).expect("fits");
    with_crcs.extend_from_slice(&[0xAB, 0xCD, 0xEF]);
    let frame = WirelessDecoder::new(KeyStore::new())
        .decode(&with_crcs)
        .expect("decodes");
    assert_eq!(frame.link.crcs, Some(FrameFormat::A));
    assert_eq!(
        frame.link.length_repair,
        Some(LengthRepair::TrailingIgnored(3))
    );
    assert_eq!(frame.bytes, plain);
}

#[test]
fn a_telegram_shorter_than_its_l_field_is_still_refused() {
    let plain = hex::decode(GOOD).expect("hex");
    let cut = &plain[..plain.len() - 3];
    let err = WirelessDecoder::new(KeyStore::new())
        .decode(cut)
        .expect_err("end missing");
    assert!(err.to_string().contains("L field says 0x3C"), "{err}");
}

#[test]
fn the_cli_reads_a_short_l_field_and_a_half_byte_with_warnings() {
    let (code, out, err) = meterbridge(&[
        "decode",
        "--format",
        "wmbusmeters",
        "--driver",
        "qwater",
        SHORT_L,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"meter_datetime\":\"2022-01-30 02:30\""),
        "{out}"
    );
    assert!(out.contains("\"total_m3\":1.991"), "{out}");
    assert!(
        err.contains("warning: telegram 1: meter 12353648: L field 0x37"),
        "{err}"
    );

    let odd = format!("{GOOD}2");
    let (code, out, err) = meterbridge(&[
        "decode",
        "--format",
        "wmbusmeters",
        "--driver",
        "qwaterv2",
        &odd,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"meter_datetime\":\"2022-06-14 22:05\""),
        "{out}"
    );
    assert!(err.contains("trailing half byte was ignored"), "{err}");

    // One digit alone is not a telegram.
    let (code, _, err) = meterbridge(&["decode", "7"]);
    assert_eq!(code, 2);
    assert!(err.contains("odd number of hex digits (1)"), "{err}");
}
