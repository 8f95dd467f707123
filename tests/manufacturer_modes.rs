//! Issue 17: security modes beyond AES — DES (modes 2 and 3) and manufacturer-specific modes
//! (16-31) that a driver declares — through the `decode` command, with the right key, a wrong
//! one and none; and refused where nothing vouches for them.

mod support;

use support::{meterbridge, wmbus_corpus_lines};

/// Corpus line 2: ActisLink, security mode 2 (DES-CBC, zero IV), key 0102030405060708.
const ACTISLINK: &str = "1E468B050100000004077A01001002BBD1EAFD0222F871CB70DA16C78AE098";
/// Corpus line 139: Hydrus IZAR RS, mode 29 in the configuration field, records in the clear.
const HYDRUS_29: &str = "1E4424238B07797389607A8F00107D041312170100426CBF23441344100100";
/// Corpus line 140: the same in mode 24.
const HYDRUS_24: &str = "1E4424238B06204790607A2A0010D80413DDC00000426CBF23441382BB0000";

fn wmbusmeters(driver: &str, extra: &[&str], telegram: &str) -> (i32, String, String) {
    let mut args = vec!["decode", "--format", "wmbusmeters", "--driver", driver];
    args.extend_from_slice(extra);
    args.push(telegram);
    meterbridge(&args)
}

#[test]
fn des_decrypts_with_an_8_byte_key_and_refuses_wrong_ones() {
    for key in ["0102030405060708", "00000001=0102030405060708"] {
        let (code, out, err) = wmbusmeters("actislink", &["--key", key], ACTISLINK);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("\"total_m3\":1,"), "{out}");
        assert!(out.contains("\"id\":\"00000001\""), "{out}");
    }
    // DES ignores the low (parity) bit of each key byte: ...09 is the same key as ...08, so
    // the wrong key differs in a higher bit.
    let (code, out, err) = wmbusmeters("auto", &["--key", "0102030405060709"], ACTISLINK);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"total_m3\":1,"), "{out}");
    let (code, out, err) = wmbusmeters("auto", &["--key", "0102030405060718"], ACTISLINK);
    assert_eq!(code, 3, "{out}");
    assert!(out.is_empty());
    assert!(
        err.contains("decryption failed for meter 00000001 (ALK): wrong key?"),
        "{err}"
    );
    let (code, _, err) = wmbusmeters("actislink", &[], ACTISLINK);
    assert_eq!(code, 3);
    assert!(err.contains("security mode 2): add its key"), "{err}");
    // An AES key is not a DES key: said so, not tried.
    let (code, _, err) = wmbusmeters(
        "actislink",
        &["--key", "00000001=0102030405060708090A0B0C0D0E0F10"],
        ACTISLINK,
    );
    assert_eq!(code, 3);
    assert!(
        err.contains("uses DES (security mode 2), which takes an 8-byte key (16 hex digits)"),
        "{err}"
    );
}

#[test]
fn an_8_byte_key_is_refused_for_an_aes_meter() {
    let lines = wmbus_corpus_lines();
    let case = lines
        .iter()
        .find(|c| {
            c["security"]["tpl_security_mode"] == 5
                && c["key"].as_str().is_some_and(|k| k.len() == 32)
        })
        .expect("a keyed mode 5 case");
    let id = case["expected_json"]["id"].as_str().expect("id");
    let telegram = case["telegram"].as_str().expect("telegram");
    let key = format!("{id}=0102030405060708");
    let (code, out, err) = meterbridge(&["decode", "--key", &key, telegram]);
    assert_eq!(code, 3, "{out}");
    assert!(
        err.contains("uses AES-128 (security mode 5), which takes a 16-byte key (32 hex digits)"),
        "{err}"
    );
}

#[test]
fn hydrus_modes_24_and_29_are_read_for_its_driver_only() {
    let (code, out, err) = wmbusmeters("hydrus", &[], HYDRUS_29);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"id\":\"60897379\""), "{out}");
    assert!(out.contains("\"total_m3\":71.442"), "{out}");
    assert!(out.contains("\"total_at_date_m3\":69.7"), "{out}");
    let (code, out, err) = wmbusmeters("auto", &[], HYDRUS_24);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"meter\":\"hydrus\""), "{out}");
    assert!(out.contains("\"total_m3\":49.373"), "{out}");

    // Without a driver nothing says what mode 29 means: refused as before.
    let (code, _, err) = meterbridge(&["decode", HYDRUS_29]);
    assert_eq!(code, 2);
    assert!(
        err.contains("meter 60897379: unsupported security mode 29"),
        "{err}"
    );
}

#[test]
fn a_declared_mode_whose_records_do_not_frame_is_refused() {
    // Cut inside the last record (L lowered to match): its value is missing, so the payload
    // is not the plaintext the driver vouches for.
    let mut bytes = meterbridge::wire::hex::decode(HYDRUS_29).expect("hex");
    bytes.truncate(bytes.len() - 2);
    bytes[0] = (bytes.len() - 1) as u8;
    let cut = meterbridge::wire::hex::encode_upper(&bytes);
    let (code, out, err) = wmbusmeters("hydrus", &[], &cut);
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("unsupported security mode 29"), "{err}");
}
