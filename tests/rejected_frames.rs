//! Issue 2, point 2: every corpus frame that is not a valid telegram is refused with a message
//! that names the problem and the byte offset, and nothing panics.

use std::path::Path;

use meterbridge::telegram::decode_wired;
use meterbridge::wire::hex;

const REJECTED: &[(&str, &str)] = &[
    (
        "error-frames/premature_end_of_data1",
        "record 2 at byte 32: premature end of record at data (3 bytes needed, 0 present)",
    ),
    (
        "error-frames/premature_end_of_data2",
        "record 2 at byte 32: premature end of record at data (3 bytes needed, 2 present)",
    ),
    (
        "error-frames/premature_end_of_dif1",
        "record 2 at byte 30: premature end of record at DIFE",
    ),
    (
        "error-frames/premature_end_of_dif2",
        "record 2 at byte 31: premature end of record at DIFE",
    ),
    (
        "error-frames/premature_end_of_var_vif1",
        "record 3 at byte 43: plain-text unit longer than the record (19 bytes)",
    ),
    (
        "error-frames/premature_end_of_vif1",
        "record 2 at byte 31: premature end of record at VIF",
    ),
    (
        "error-frames/too_long_var_vif",
        "record 3 at byte 43: plain-text unit longer than the record (243 bytes)",
    ),
    (
        "error-frames/too_many_dife",
        "record 2 at byte 40: more than 10 DIFEs",
    ),
    (
        "error-frames/too_many_vife",
        "record 2 at byte 42: more than 10 VIFEs",
    ),
    (
        "error-frames/too_short_header",
        "variable data header too short at byte 12: 12 bytes needed, 5 present",
    ),
    (
        "unsupported-frames/invalid_length",
        "L field 0x00 at byte 1 is too short (at least 0x03 for C, A and CI)",
    ),
    (
        "unsupported-frames/invalid_length2",
        "fixed data structure must be 16 bytes, found 15 (from byte 7)",
    ),
    (
        "unsupported-frames/manual_frame1",
        "not valid hex: odd number of hex digits (19): the last byte is missing a digit",
    ),
];

fn message(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/libmbus")
        .join(format!("{name}.hex"));
    let text = std::fs::read_to_string(&path).expect("fixture");
    match hex::decode(&text) {
        Err(e) => format!("not valid hex: {e}"),
        Ok(bytes) => match decode_wired(&bytes) {
            Ok(t) => panic!("{name} decoded: {t:?}"),
            Err(e) => e.to_string(),
        },
    }
}

#[test]
fn malformed_frames_get_specific_messages() {
    for (name, expected) in REJECTED {
        assert_eq!(&message(name), expected, "{name}");
    }
}

#[test]
fn application_errors_are_reports() {
    use meterbridge::wire::application::Application;
    for (name, code) in [
        ("application_busy", Some(8)),
        ("buffer_too_long", Some(2)),
        ("error", None),
        ("premature_end_of_record", Some(4)),
        ("too_many_difes", Some(5)),
        ("too_many_readouts", Some(9)),
        ("too_many_records", Some(3)),
        ("too_many_vifes", Some(6)),
        ("unimplemented_ci", Some(1)),
        ("unspecified_error", Some(0)),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/fixtures/libmbus/error-frames/{name}.hex"));
        let bytes = hex::decode(&std::fs::read_to_string(path).expect("fixture")).expect("hex");
        let t = decode_wired(&bytes).expect(name);
        match t.application {
            Application::Error(e) => assert_eq!(e.code, code, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}
