//! The worked vectors of `tests/fixtures/wmbus/security_vectors.md`, end to end through the
//! wireless decoder: data link, ELL, AFL, TPL, security and records, with the readings the
//! vectors give. (Each security primitive also has unit tests next to its code.)

use meterbridge::security::{Key, KeyStore};
use meterbridge::telegram::wireless::{Protection, WirelessErrorKind};
use meterbridge::telegram::{Telegram, WirelessDecoder};
use meterbridge::wire::application::Header;
use meterbridge::wire::hex;
use meterbridge::wire::records::{RawValue, Value};
use meterbridge::wire::wireless::FrameFormat;

fn decoder(key: Option<&str>) -> WirelessDecoder {
    let mut keys = KeyStore::new();
    if let Some(k) = key {
        keys.set_default(Key::from_hex(k).expect("key"));
    }
    WirelessDecoder::new(keys)
}

fn decimals(t: &Telegram<'_>) -> Vec<String> {
    t.records
        .iter()
        .filter_map(|r| match r.value() {
            Value::Decimal(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn v3_format_a_with_crcs_non_bcd_id_and_manufacturer_bit_15() {
    let input = hex::decode("734414867CC30B0003030D58A00EDF0700DC41343CEA390306FF0A0D44EADF07000DDF07000DDF07000DDF07000E44F9DF07000EDF07000EDF07000EDF07000E931EDF07000DDF07000DDF07000DDF0700035A4500000000374F0B20000000000000243412B31C07050C12280000000000002C002302062F19080F2F000000000000DCF5").unwrap();
    let frame = decoder(None).decode(&input).expect("decodes");
    assert_eq!(frame.link.crcs, Some(FrameFormat::A));
    assert_eq!(frame.bytes.len(), 116);
    assert_eq!(frame.link.dll.id.to_string(), "000BC37C");
    assert_eq!(frame.link.dll.manufacturer.to_string(), "APT");
    assert_eq!(frame.link.dll.raw_m, [0x14, 0x86]);
    // Apator's CI 0xA0 payload is manufacturer specific: kept, not framed as records.
    let t = frame.telegram().unwrap();
    assert!(t.records.is_empty());
}

#[test]
fn v4_format_b_mode_7_with_afl_mac() {
    let input = hex::decode("C244C5140443054300048C200E900F002C25895E02003B0877D31DA840B17A0E009007100F8FAD4C4E61400DA4F3B1F7E273CC4C5C07F93CD20B237345DB39F9A98F8415E1C4B7A25C86E4C22D05C3352FA7E2E5627031F14643063F1DC8FE2C32459B6F02E4234B447B18E4BFDA8C4DA9B1EDE6CF29D0B2122A3E8B9DEEBEE3E6DBE6617B4E709EC6B595179CB01C2C0BDE6723A345B708652880C114A58DA07C73AD9EB8ACB17FA0A88F19BC84CB1FC56672DE8A9603FD0C05010002FD0B2111F60B").unwrap();
    let mut d = decoder(Some("622b9656991ff0c1574c0950cf9278d1"));
    let frame = d.decode(&input).expect("decodes");
    assert_eq!(frame.link.crcs, Some(FrameFormat::B));
    assert_eq!(frame.link.security_mode, 7);
    assert_eq!(frame.link.encrypted_blocks, 9);
    assert_eq!(frame.link.protection, Protection::Decrypted);
    assert_eq!(frame.link.afl.and_then(|a| a.mcr_value()), Some(155273));
    let t = frame.telegram().unwrap();
    // 04 06 7D240000: 9341 kWh; 04 13 17941400: 1348.631 m³.
    let energy = t
        .records
        .iter()
        .find(|r| r.dib == [0x04] && r.vif == Some(0x06));
    assert_eq!(energy.map(|r| r.raw_value()), Some(RawValue::Integer(9341)));
    let volume = t
        .records
        .iter()
        .find(|r| r.dib == [0x04] && r.vif == Some(0x13));
    assert_eq!(
        volume.map(|r| r.raw_value()),
        Some(RawValue::Integer(1348631))
    );
    assert!(decimals(&t).contains(&"1348.631".to_string()));

    // One flipped MAC bit: refused before anything is decrypted.
    let mut bad = input.clone();
    bad[25] ^= 0x01;
    // The CRC of block 2 covers the MAC; recompute nothing and expect a CRC error instead.
    let err = decoder(Some("622b9656991ff0c1574c0950cf9278d1"))
        .decode(&bad)
        .unwrap_err();
    assert!(err.to_string().contains("CRC"), "{err}");
    // Wrong key: the MAC does not verify.
    let err = decoder(Some("622b9656991ff0c1574c0950cf9278d2"))
        .decode(&input)
        .unwrap_err();
    assert!(
        matches!(err.kind, WirelessErrorKind::MacMismatch { .. }),
        "{err}"
    );
    assert!(err.is_key_error());
}

#[test]
fn v5a_mode_5_short_header_and_wrong_key() {
    let input = hex::decode("6e4401068888888805077a85006085bc2630713819512eb4cd87fba554fb43f67cf9654a68ee8e194088160df752e716238292e8af1ac20986202ee561d743602466915e42f1105d9c6782a54504e4f099e65a7656b930c73a30775122d2fdf074b5035cfaa7e0050bf32faae03a77").unwrap();
    let frame = decoder(Some("00000000000000000000000000000000"))
        .decode(&input)
        .expect("decodes");
    assert_eq!(frame.link.security_mode, 5);
    assert_eq!(frame.link.encrypted_blocks, 6);
    assert_eq!(&frame.bytes[15..17], &[0x2F, 0x2F]);
    let err = decoder(Some("00000000000000000000000000000001"))
        .decode(&input)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "decryption failed for meter 88888888 (APA): wrong key?"
    );
    let err = decoder(None).decode(&input).unwrap_err();
    assert_eq!(
        err.to_string(),
        "meter 88888888 sends encrypted telegrams (security mode 5): add its key"
    );
    // The header is still reported for the key errors.
    assert_eq!(
        err.link.as_ref().map(|l| l.dll.id.to_string()),
        Some("88888888".into())
    );
}

#[test]
fn v5b_partial_encryption() {
    let input = hex::decode("3944FA122162092002067A3600202567C94D48D00DC47B11213E23383DB51968A705AAFA60C60E263D50CD259D7C9A03FD0C08000002FD0B0011").unwrap();
    let frame = decoder(Some("BEDB81B52C29B5C143388CBB0D15A051"))
        .decode(&input)
        .expect("decodes");
    assert_eq!(frame.link.encrypted_blocks, 2);
    let t = frame.telegram().unwrap();
    // 04 13 6A000000 = 0.106 m³, 04 6D 282A9E27 = 2020-07-30 10:40; the plain tail decodes too.
    assert!(decimals(&t).contains(&"0.106".to_string()));
    let date = t.records.iter().find_map(|r| match r.value() {
        Value::DateTime(d) => Some(d.to_string()),
        _ => None,
    });
    assert_eq!(date.as_deref(), Some("2020-07-30T10:40"));
    assert!(t
        .records
        .iter()
        .any(|r| r.vifes == [0x0C] && r.vif == Some(0xFD)));
}

#[test]
fn v5c_long_header_iv_from_the_transport_layer() {
    let input = hex::decode("76442104710007612507727100076121042507B5006005E2E95A3C2A1279A5415E6732679B43369FD5FDDDD783EEEBB48236D34E7C94AF0A18A5FDA5F7D64111EB42D4D891622139F2952F9D12A20088DFA4CF8123871123EE1F6C1DCEA414879DDB4E05E508F1826D7EFBA6964DF804C9261EA23BBF03").unwrap();
    let frame = decoder(Some("A004EB23329A477F1DD2D7820B56EB3D"))
        .decode(&input)
        .expect("decodes");
    let Some(Header::Long(h)) = frame.link.tpl.map(|t| t.header) else {
        panic!("long header expected")
    };
    assert_eq!(h.id.to_string(), "61070071");
    let t = frame.telegram().unwrap();
    assert!(decimals(&t).contains(&"466.472".to_string()));
}

#[test]
fn v6_ell_ctr_full_then_compact_frame() {
    let key = "28F64A24988064A079AA2C807D6102AE";
    let mut d = decoder(Some(key));
    let full = hex::decode(
        "2A442D2C998734761B168D2091D37CAC21E1D68CDAFFCD3DC452BD802913FF7B1706CA9E355D6C2701CC24",
    )
    .unwrap();
    let frame = d.decode(&full).expect("full frame decodes");
    assert_eq!(frame.link.ell_protection, Some(Protection::Decrypted));
    let t = frame.telegram().unwrap();
    assert!(decimals(&t).contains(&"6.408".to_string()));
    assert!(decimals(&t).contains(&"127".to_string()));

    let compact =
        hex::decode("23442D2C998734761B168D20983081B2227A6FA1F10E1B79B5EB4B17E81F930E937EE06C")
            .unwrap();
    let frame = d.decode(&compact).expect("compact frame decodes");
    let info = frame.link.compact.expect("compact");
    assert_eq!(info.signature, 0xA8ED);
    assert!(info.full_frame_crc_ok);
    let t = frame.telegram().unwrap();
    let values = decimals(&t);
    assert!(values.contains(&"6.409".to_string()), "{values:?}");
    assert!(values.contains(&"22".to_string()), "{values:?}");

    // Wrong key: the payload CRC does not match.
    let err = decoder(Some("28F64A24988064A079AA2C807D6102AF"))
        .decode(&full)
        .unwrap_err();
    assert!(matches!(err.kind, WirelessErrorKind::WrongKey { .. }));
    assert_eq!(
        err.to_string(),
        "decryption failed for meter 76348799 (KAM): wrong key?"
    );
}

#[test]
fn stored_decrypted_telegrams_need_no_key_and_are_refused_with_one() {
    // V6a's plaintext as wmbusmeters logs it: ELL says AES-CTR, the payload CRC matches.
    let logged = hex::decode(
        "2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713",
    )
    .unwrap();
    let frame = decoder(None).decode(&logged).expect("no key: accepted");
    assert_eq!(frame.link.ell_protection, Some(Protection::StoredDecrypted));
    let err = decoder(Some("28F64A24988064A079AA2C807D6102AE"))
        .decode(&logged)
        .unwrap_err();
    assert!(matches!(
        err.kind,
        WirelessErrorKind::StoredDecryptedWithKey { .. }
    ));
}

#[test]
fn v7_prios_descrambled_with_the_default_key() {
    for (telegram, total_l) in [
        (
            "2944A511780729662366A20118001378D3B3DB8CEDD77731F25832AAF3DA8CADF9774EA673172E8C61F2",
            16760u32,
        ),
        (
            "1944304c9c5824210c04a363140013716577ec59e8663ab0d31c",
            38944,
        ),
        (
            "19442423860775035048A251520015BEB6B2E1ED623A18FC74A5",
            521602,
        ),
    ] {
        let frame = decoder(None)
            .decode(&hex::decode(telegram).unwrap())
            .expect("descrambles");
        assert_eq!(frame.link.protection, Protection::Descrambled);
        // The clear alarm/battery bytes (11-14), then the descrambled block.
        let payload = &frame.bytes[frame.app_offset + 4..];
        assert_eq!(payload[0], 0x4B);
        let total = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
        assert_eq!(total, total_l);
    }
}

#[test]
fn fragmented_and_unsupported_modes_are_named() {
    // V5a with the configuration field changed to mode 13 (TLS).
    let mut t = hex::decode("6e4401068888888805077a85006085bc2630713819512eb4cd87fba554fb43f67cf9654a68ee8e194088160df752e716238292e8af1ac20986202ee561d743602466915e42f1105d9c6782a54504e4f099e65a7656b930c73a30775122d2fdf074b5035cfaa7e0050bf32faae03a77").unwrap();
    t[14] = 0x8D;
    let err = decoder(None).decode(&t).unwrap_err();
    assert_eq!(
        err.to_string(),
        "meter 88888888: unsupported security mode 13"
    );
    // An AFL with the more-fragments bit (FCL 0x4000).
    let frag = hex::decode("1344C5140443054300049002004011223344").unwrap();
    let mut frag = frag;
    frag[0] = (frag.len() - 1) as u8;
    let err = decoder(None).decode(&frag).unwrap_err();
    assert!(
        err.to_string()
            .contains("fragmented telegram not supported"),
        "{err}"
    );
}

#[test]
fn prios_with_a_configured_customer_key() {
    use meterbridge::security::{prios_apply, PriosKey};
    // V7's DME header and plaintext, scrambled with a customer key instead of the public one.
    let clear = &hex::decode(
        "2944A511780729662366A20118001378D3B3DB8CEDD77731F25832AAF3DA8CADF9774EA673172E8C61F2",
    )
    .unwrap()[..15];
    let mut plain = clear.to_vec();
    plain.extend_from_slice(
        &hex::decode("4B78410000402E00007E2B0000000000000000000000000000").unwrap(),
    );
    plain[0] = (plain.len() - 1) as u8;
    let custom = PriosKey::from_hex("0123456789ABCDEF").unwrap();
    let mut telegram = plain[..15].to_vec();
    telegram.extend_from_slice(&prios_apply(&plain, &custom).unwrap());

    let err = decoder(None).decode(&telegram).unwrap_err();
    assert!(err.to_string().contains("add its PRIOS key"), "{err}");

    let mut keys = KeyStore::new();
    meterbridge::telegram::wireless::parse_key_argument(&mut keys, "66236629=0123456789ABCDEF")
        .unwrap();
    let frame = WirelessDecoder::new(keys)
        .decode(&telegram)
        .expect("descrambles");
    let payload = &frame.bytes[frame.app_offset + 4..];
    assert_eq!(&payload[..5], &[0x4B, 0x78, 0x41, 0x00, 0x00]);
}
