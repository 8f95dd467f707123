//! Hand-built frames for what libmbus cannot decode (docs/conformance.md lists them): CI 0x76,
//! 0x78 and 0x7A, non-BCD identification numbers, variable-length BCD, combinable VIFEs, type I
//! and J times, alarms and unknown CIs. Each test asserts the decoded values.

use meterbridge::telegram::{decode_wired, DecodeError};
use meterbridge::wire::application::{Application, Header};
use meterbridge::wire::records::{Decimal, RawValue, RecordErrorKind, RecordKind, Value};
use meterbridge::wire::vif::{Combinable, RecordErrorCode, TimeUnit, Unit};
use meterbridge::wire::wired::Frame;

/// RSP_UD long frame from address 5 with the given CI and user data.
fn rsp_ud(ci: u8, data: &[u8]) -> Vec<u8> {
    Frame::Long {
        control: 0x08,
        address: 5,
        ci,
        data,
    }
    .to_bytes()
}

/// A long header: id 12345678 (BCD), manufacturer KAM, version 1, medium water.
const LONG_HEADER: [u8; 12] = [
    0x78, 0x56, 0x34, 0x12, 0x2D, 0x2C, 0x01, 0x07, 0x2A, 0x00, 0x00, 0x00,
];

fn decimal(v: Value<'_>) -> String {
    match v {
        Value::Decimal(d) => d.to_string(),
        other => panic!("not a decimal: {other:?}"),
    }
}

#[test]
fn short_header_ci_7a() {
    // access 0x11, status 0x04 (power low), signature 0x0000, then volume 1234.567 m³ in litres.
    let frame = rsp_ud(
        0x7A,
        &[0x11, 0x04, 0x00, 0x00, 0x04, 0x13, 0x87, 0xD6, 0x12, 0x00],
    );
    let t = decode_wired(&frame).unwrap();
    let Application::Variable {
        header: Header::Short(h),
        ..
    } = t.application
    else {
        panic!("{:?}", t.application)
    };
    assert_eq!(h.access_number, 0x11);
    assert!(h.status.power_low());
    assert_eq!(t.records.len(), 1);
    assert_eq!(decimal(t.records[0].value()), "1234.567");
    assert_eq!(t.records[0].scale().unwrap().unit, Unit::CubicMetre);
}

#[test]
fn no_header_ci_78() {
    // Siemens-style: records right after the CI. Energy 12 kWh (VIF 0x06), flow temp 45.6 °C.
    let frame = rsp_ud(0x78, &[0x02, 0x06, 0x0C, 0x00, 0x02, 0x5A, 0xC8, 0x01]);
    let t = decode_wired(&frame).unwrap();
    assert!(matches!(
        t.application,
        Application::Variable {
            header: Header::None,
            ..
        }
    ));
    assert_eq!(decimal(t.records[0].value()), "12000");
    assert_eq!(decimal(t.records[1].value()), "45.6");
    assert_eq!(t.records[1].scale().unwrap().unit, Unit::Celsius);
    // Offsets count from the start of the frame: 68 L L 68 C A CI = 7 bytes.
    assert_eq!(t.records[0].offset, 7);
    assert_eq!(t.records[1].offset, 11);
}

#[test]
fn msb_first_ci_76() {
    // Same header as LONG_HEADER but every multi-byte field most significant byte first.
    let mut data = vec![
        0x12, 0x34, 0x56, 0x78, 0x2C, 0x2D, 0x01, 0x07, 0x2A, 0x00, 0x00, 0x00,
    ];
    data.extend_from_slice(&[0x04, 0x13, 0x00, 0x12, 0xD6, 0x87]); // 1234.567 m³
    let frame = rsp_ud(0x76, &data);
    let t = decode_wired(&frame).unwrap();
    let Application::Variable {
        header: Header::Long(h),
        ..
    } = t.application
    else {
        panic!()
    };
    assert_eq!(h.id.to_string(), "12345678");
    assert_eq!(h.manufacturer.to_string(), "KAM");
    assert_eq!(decimal(t.records[0].value()), "1234.567");
}

#[test]
fn non_bcd_identification_number() {
    let mut data = vec![
        0xEF, 0xCD, 0xAB, 0x10, 0x2D, 0x2C, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00,
    ];
    data.extend_from_slice(&[0x01, 0xFD, 0x17, 0x00]);
    let frame = rsp_ud(0x72, &data);
    let t = decode_wired(&frame).unwrap();
    let Application::Variable {
        header: Header::Long(h),
        ..
    } = t.application
    else {
        panic!()
    };
    assert_eq!(h.id.to_string(), "10ABCDEF");
    assert_eq!(h.secondary_address(), "10ABCDEF2D2C0102");
}

#[test]
fn variable_length_bcd_is_read_with_the_standard_length() {
    // LVAR 0xC2: two bytes of positive BCD. libmbus reads four, and loses the next record.
    let mut data = LONG_HEADER.to_vec();
    data.extend_from_slice(&[0x0D, 0x13, 0xC2, 0x34, 0x12]); // 1234 l
    data.extend_from_slice(&[0x0D, 0x13, 0xD3, 0x56, 0x34, 0x12]); // -123456 l
    data.extend_from_slice(&[0x01, 0x5B, 0x2D]); // 45 °C
    let frame = rsp_ud(0x72, &data);
    let t = decode_wired(&frame).unwrap();
    assert_eq!(t.records.len(), 3);
    assert_eq!(t.records[0].raw_value(), RawValue::Integer(1234));
    assert_eq!(decimal(t.records[0].value()), "1.234");
    assert_eq!(decimal(t.records[1].value()), "-123.456");
    assert_eq!(decimal(t.records[2].value()), "45");
}

#[test]
fn variable_length_text_and_binary() {
    let mut data = LONG_HEADER.to_vec();
    // Text is sent last character first: "ABC" arrives as "CBA".
    data.extend_from_slice(&[0x0D, 0xFD, 0x11, 0x03, b'C', b'B', b'A']);
    data.extend_from_slice(&[0x0D, 0xFD, 0x17, 0xE2, 0x01, 0x80]);
    let frame = rsp_ud(0x72, &data);
    let t = decode_wired(&frame).unwrap();
    match t.records[0].value() {
        Value::Text(s) => assert_eq!(
            s.iter().rev().map(|&b| b as char).collect::<String>(),
            "ABC"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.records[1].value(), Value::Bytes(&[0x01, 0x80]));
}

#[test]
fn combinable_vifes_scale_and_annotate() {
    let mut data = LONG_HEADER.to_vec();
    // Volume (VIF 0x16, 10^0 m³) x correction 10^-3 (VIFE 0x73): raw 12345 -> 12.345 m³.
    data.extend_from_slice(&[0x04, 0x96, 0x73, 0x39, 0x30, 0x00, 0x00]);
    // Power 10^3 W (VIF 0x2E) with correction 10^3 (0x7D): raw 2 -> 2 MW.
    data.extend_from_slice(&[0x02, 0xAE, 0x7D, 0x02, 0x00]);
    // Volume flow upper limit value, per hour: m³/h VIF 0x3B, VIFE 0xC8 (upper limit), 0x22.
    data.extend_from_slice(&[0x02, 0xBB, 0xC8, 0x22, 0xE8, 0x03]);
    // Energy with record error "no data available" (VIFE 0x15).
    data.extend_from_slice(&[0x04, 0x86, 0x15, 0x00, 0x00, 0x00, 0x00]);
    // Manufacturer-specific from VIFE 0x7F on: the following VIFE is not interpreted.
    data.extend_from_slice(&[0x01, 0x93, 0xFF, 0x22, 0x07]);
    let frame = rsp_ud(0x72, &data);
    let t = decode_wired(&frame).unwrap();
    let r = &t.records;
    assert_eq!(decimal(r[0].value()), "12.345");
    assert_eq!(
        r[0].combinables().collect::<Vec<_>>(),
        vec![Combinable::MultiplicativeCorrection { exponent: -3 }]
    );
    assert_eq!(decimal(r[1].value()), "2000000");
    assert_eq!(r[1].scale().unwrap().unit, Unit::Watt);
    assert_eq!(
        r[2].combinables().collect::<Vec<_>>(),
        vec![
            Combinable::LimitValue { upper: true },
            Combinable::PerTime(TimeUnit::Hour)
        ]
    );
    assert_eq!(decimal(r[2].value()), "1"); // 1000 x 10^-3 m³/h
    assert_eq!(
        r[3].combinables().collect::<Vec<_>>(),
        vec![Combinable::RecordError(RecordErrorCode::NoDataAvailable)]
    );
    let vi = r[4].value_information().unwrap();
    assert_eq!(vi.combinable, &[0xFF]);
    assert_eq!(vi.manufacturer_vifes, &[0x22]);
    assert_eq!(decimal(r[4].value()), "0.007");
}

#[test]
fn time_types_i_and_j() {
    let mut data = LONG_HEADER.to_vec();
    // Type I (6 bytes): 2017-01-01 10:15:30.
    data.extend_from_slice(&[0x06, 0x6D, 30, 15, 10, 0x21, 0x21, 0x00]);
    // Type J (3 bytes): 23:04:05.
    data.extend_from_slice(&[0x03, 0x6D, 5, 4, 23]);
    // Type F with the IV bit set.
    data.extend_from_slice(&[0x04, 0x6D, 0x80, 0x00, 0x21, 0x11]);
    let frame = rsp_ud(0x72, &data);
    let t = decode_wired(&frame).unwrap();
    let texts: Vec<String> = t
        .records
        .iter()
        .map(|r| match r.value() {
            Value::DateTime(d) => d.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(texts[0], "2017-01-01T10:15:30");
    assert_eq!(texts[1], "23:04:05");
    assert!(matches!(t.records[2].value(), Value::DateTime(d) if d.invalid));
}

#[test]
fn error_state_bcd_keeps_hex_digits() {
    let mut data = LONG_HEADER.to_vec();
    data.extend_from_slice(&[0x3C, 0x13, 0xEE, 0xEE, 0xEE, 0xEE]);
    let frame = rsp_ud(0x72, &data);
    let t = decode_wired(&frame).unwrap();
    match t.records[0].value() {
        Value::InvalidBcd(d) => assert_eq!(d.as_str(), "EEEEEEEE"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn alarm_and_unknown_ci_are_reports_not_failures() {
    let frame = rsp_ud(0x71, &[0x02]);
    let t = decode_wired(&frame).unwrap();
    assert_eq!(t.application, Application::Alarm { status: Some(2) });
    // Sontex answers some requests with CI 0xB7 (manufacturer specific).
    let frame = rsp_ud(0xB7, &[0x01, 0x02, 0x03]);
    let t = decode_wired(&frame).unwrap();
    assert_eq!(
        t.application,
        Application::Other {
            ci: 0xB7,
            data: &[0x01, 0x02, 0x03]
        }
    );
}

#[test]
fn master_set_address_frame_decodes_as_a_record() {
    // libmbus corpus unsupported-frames/manual_frame4: SND_UD to 0xFE, CI 0x51, 01 7A 08.
    let frame = meterbridge::wire::hex::decode("68 06 06 68 53 FE 51 01 7A 08 25 16").unwrap();
    let t = decode_wired(&frame).unwrap();
    assert!(t.link.master_to_slave());
    assert_eq!(t.records.len(), 1);
    assert_eq!(
        t.records[0]
            .value_information()
            .unwrap()
            .description
            .quantity,
        "bus_address"
    );
    assert_eq!(t.records[0].raw_value(), RawValue::Integer(8));
}

#[test]
fn fixed_data_structure() {
    // libmbus corpus unsupported-frames/invalid_length2 has a 17-byte fixed structure.
    let frame = meterbridge::wire::hex::decode(
        "68 12 12 68 08 01 73 93 92 91 90 10 00 05 69 31 65 00 00 69 00 00 3F 16",
    )
    .unwrap();
    let err = decode_wired(&frame).unwrap_err();
    assert_eq!(
        err.to_string(),
        "fixed data structure must be 16 bytes, found 15 (from byte 7)"
    );
    // A correct one: id 90919293, counters BCD, 1234 l and 56 kWh... unit codes 0x29 (l), 0x05.
    let data = [
        0x93, 0x92, 0x91, 0x90, 0x10, 0x00, 0x29, 0x05, 0x34, 0x12, 0x00, 0x00, 0x56, 0x00, 0x00,
        0x00,
    ];
    let frame = rsp_ud(0x73, &data);
    let t = decode_wired(&frame).unwrap();
    let Application::Fixed(f) = t.application else {
        panic!()
    };
    assert_eq!(f.id.to_string(), "90919293");
    assert_eq!(f.counter_value(f.counter1), Some(1234));
    assert_eq!(f.counter_value(f.counter2), Some(56));
}

#[test]
fn truncated_record_names_the_offset() {
    let mut data = LONG_HEADER.to_vec();
    data.extend_from_slice(&[0x04, 0x13, 0x01, 0x02]);
    let frame = rsp_ud(0x72, &data);
    let err = decode_wired(&frame).unwrap_err();
    match err {
        DecodeError::Record(e) => {
            assert_eq!(e.kind, RecordErrorKind::EndInData { needed: 4, have: 2 });
            assert_eq!(e.offset, 7 + 12 + 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn manufacturer_data_is_kept() {
    let mut data = LONG_HEADER.to_vec();
    data.extend_from_slice(&[0x01, 0x13, 0x05, 0x0F, 0xDE, 0xAD]);
    let frame = rsp_ud(0x72, &data);
    let t = decode_wired(&frame).unwrap();
    assert_eq!(t.records[1].kind, RecordKind::ManufacturerData);
    assert_eq!(t.records[1].data, &[0xDE, 0xAD]);
    assert!(!t.more_records_follow());
    let _ = Decimal::new(0, 0);
}
