//! `meterbridge decode` as a user runs it: arguments, standard input, errors and exit status.

use std::io::Write;
use std::process::{Command, Stdio};

const FILLER_FRAME: &str = "68 1F 1F 68 08 00 72 31 77 67 17 2D 2C 01 02 00 00 00 00 2F 2F 04 83 3B 88 13 00 00 2F 2F 2F 2F 2F 2F 2F 00 16";

fn meterbridge(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meterbridge"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().expect("exit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8(out.stderr).expect("utf-8 stderr"),
    )
}

#[test]
fn decodes_an_argument_as_one_json_line() {
    let (code, out, err) = meterbridge(&["decode", FILLER_FRAME], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1);
    assert!(out.contains("\"manufacturer\":\"KAM\""));
    assert!(out.contains("\"value\":5000"));
}

#[test]
fn separators_are_ignored() {
    let squashed = FILLER_FRAME.replace(' ', "|");
    let (code, out, _) = meterbridge(&["decode", &squashed], None);
    assert_eq!(code, 0);
    assert!(out.contains("\"id\":\"17677731\""));
}

#[test]
fn bad_telegrams_are_reported_and_the_rest_still_decode() {
    // Line 2: checksum byte changed (0x00 -> 0x01) at byte 35; line 4: stop byte wrong;
    // line 5: not hex; line 6: L fields differ.
    let bad_checksum = FILLER_FRAME.replace("2F 00 16", "2F 01 16");
    let bad_stop = FILLER_FRAME.replace("2F 00 16", "2F 00 17");
    let input = format!(
        "{FILLER_FRAME}\n{bad_checksum}\n\n{bad_stop}\nxyz\n68 1F 1E 68\n# comment\n{FILLER_FRAME}\n"
    );
    let (code, out, err) = meterbridge(&["decode"], Some(&input));
    assert_eq!(code, 2);
    assert_eq!(out.lines().count(), 2, "two good telegrams: {out}");
    let errors: Vec<&str> = err.lines().collect();
    assert_eq!(errors.len(), 4, "{err}");
    assert!(errors[0].starts_with("error: line 2: checksum"), "{err}");
    assert!(errors[0].contains("35"), "names the byte offset: {err}");
    assert!(
        errors[1].starts_with("error: line 4:") && errors[1].contains("stop"),
        "{err}"
    );
    assert!(
        errors[2].starts_with("error: line 5: not valid hex"),
        "{err}"
    );
    assert!(
        errors[3].starts_with("error: line 6:") && errors[3].contains("L"),
        "{err}"
    );
}

/// Standard input with a line that is not text, and one of 5 MB: each is one error with its
/// line number, and every telegram around them still decodes.
#[test]
fn decode_reads_bytes_and_bounds_its_lines() {
    let mut input = Vec::new();
    input.extend_from_slice(format!("{FILLER_FRAME}\n").as_bytes());
    input.extend_from_slice(b"\xFF\xFE 68 1F\n");
    input.extend_from_slice(format!("{FILLER_FRAME}\n").as_bytes());
    input.extend(std::iter::repeat_n(b'A', 5 * 1024 * 1024));
    input.extend_from_slice(format!("\n{FILLER_FRAME}").as_bytes());
    let mut child = Command::new(env!("CARGO_BIN_EXE_meterbridge"))
        .arg("decode")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            "error: line 2: not text (byte 1 is not UTF-8); skipped",
            "error: line 4: longer than 8192 bytes (no telegram is); skipped",
        ]
    );
    let ids: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("\"id\":\"17677731\""))
        .collect();
    assert_eq!(ids.len(), 3, "{stdout}");
}

#[test]
fn application_error_frame_is_a_report() {
    let (code, out, _) = meterbridge(&["decode", "68 04 04 68 08 01 70 08 81 16"], None);
    assert_eq!(code, 0);
    assert!(
        out.contains("\"application_error\":{\"code\":8,\"text\":\"application busy\"}"),
        "{out}"
    );
}

#[test]
fn unknown_format_is_refused_by_the_parser() {
    let (code, _, err) = meterbridge(&["decode", "--format", "yaml", FILLER_FRAME], None);
    assert_eq!(code, 2);
    assert!(err.contains("yaml"));
}

const V5A: &str = "6e4401068888888805077a85006085bc2630713819512eb4cd87fba554fb43f67cf9654a68ee8e194088160df752e716238292e8af1ac20986202ee561d743602466915e42f1105d9c6782a54504e4f099e65a7656b930c73a30775122d2fdf074b5035cfaa7e0050bf32faae03a77";

#[test]
fn wireless_with_key_decodes() {
    let (code, out, err) = meterbridge(
        &["decode", "--key", "00000000000000000000000000000000", V5A],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"kind\":\"wireless\""), "{out}");
    assert!(
        out.contains("\"security_mode\":5,\"encrypted_blocks\":6,\"protection\":\"decrypted\""),
        "{out}"
    );
    let (code, _, err) = meterbridge(
        &[
            "decode",
            "--key",
            "88888888=00000000000000000000000000000000",
            V5A,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn wrong_and_missing_keys_exit_3_with_the_header() {
    let (code, out, err) = meterbridge(
        &["decode", "--key", "00000000000000000000000000000001", V5A],
        None,
    );
    assert_eq!(code, 3);
    assert_eq!(
        err.lines().last().unwrap_or_default(),
        "error: telegram 1: decryption failed for meter 88888888 (APA): wrong key?"
    );
    // The unencrypted header is printed, never decoded garbage.
    assert!(out.contains("\"id\":\"88888888\""), "{out}");
    assert!(!out.contains("\"records\""), "{out}");
    let (code, _, err) = meterbridge(&["decode", V5A], None);
    assert_eq!(code, 3);
    assert!(err.contains("meter 88888888 sends encrypted telegrams (security mode 5): add its key"));
}

#[test]
fn bad_key_arguments_are_explained_without_echoing_the_key() {
    let (code, _, err) = meterbridge(&["decode", "--key", "0011223344", V5A], None);
    assert_eq!(code, 2);
    assert!(err.contains("32 hex digits"), "{err}");
    assert!(!err.contains("0011223344"), "{err}");
}

#[test]
fn compact_frames_use_layouts_learned_earlier_in_the_run() {
    // The Multical 21 pair from the security vectors: the full frame teaches the layout, and
    // the compact frame is rebuilt from what was learned (not from the built-in layouts).
    let key = "28F64A24988064A079AA2C807D6102AE";
    let input = "2A442D2C998734761B168D2091D37CAC21E1D68CDAFFCD3DC452BD802913FF7B1706CA9E355D6C2701CC24\n23442D2C998734761B168D20983081B2227A6FA1F10E1B79B5EB4B17E81F930E937EE06C\n";
    let (code, out, err) = meterbridge(&["decode", "--key", key], Some(input));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[1].contains("\"compact\":{\"signature\":\"A8ED\""),
        "{}",
        lines[1]
    );
    assert!(lines[1].contains("\"value\":6.409"), "{}", lines[1]);
    assert!(
        lines[1].contains("\"built_in_format\":false"),
        "{}",
        lines[1]
    );
    // Alone, the compact frame still decodes, from the built-in layout.
    let (code, out, _) = meterbridge(
        &["decode", "--key", key],
        Some(input.lines().nth(1).unwrap()),
    );
    assert_eq!(code, 0);
    assert!(out.contains("\"built_in_format\":true"), "{out}");
}

#[test]
fn wmbusmeters_format_with_a_driver_and_auto_detection() {
    let logged =
        "2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713";
    let (code, out, err) = meterbridge(
        &[
            "decode",
            "--format",
            "wmbusmeters",
            "--name",
            "MyTapWater",
            logged,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["meter"], "kamwater");
    assert_eq!(v["name"], "MyTapWater");
    assert_eq!(v["total_m3"], 6.408);
    assert_eq!(v["status"], "DRY");
    assert_eq!(v["time_dry"], "22-31 days");
    let (code, out, _) = meterbridge(&["decode", "--driver", "multical21", logged], None);
    assert_eq!(code, 0);
    assert!(
        out.contains("\"driver\":\"kamwater\",\"fields\":{"),
        "{out}"
    );
    let (code, _, err) = meterbridge(&["decode", "--driver", "nosuch", logged], None);
    assert_eq!(code, 2);
    assert!(err.contains("no driver named \"nosuch\""), "{err}");
}

#[test]
fn unknown_meters_get_generic_readings_and_a_hint() {
    let (code, out, _) = meterbridge(&["decode", "--driver", "auto", FILLER_FRAME], None);
    assert_eq!(code, 0);
    assert!(
        out.contains("\"driver\":\"unknown\",\"fields\":{\"energy_kwh\":5}"),
        "{out}"
    );
    assert!(
        out.contains("\"hint\":\"no driver knows meter 17677731"),
        "{out}"
    );
}

#[test]
fn drivers_are_listed_and_shown() {
    let (code, out, _) = meterbridge(&["drivers"], None);
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l.starts_with("kamwater ")), "{out}");
    let (code, out, _) = meterbridge(&["drivers", "show", "flowiq2200"], None);
    assert_eq!(code, 0);
    assert!(
        out.contains("total_m3") && out.contains("water/total_increasing"),
        "{out}"
    );
}

#[test]
fn a_user_driver_folder_replaces_built_in_drivers_and_reports_bad_files() {
    let dir = std::env::temp_dir().join(format!("meterbridge-drivers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A user's own kamwater: one field, renamed.
    std::fs::write(
        dir.join("kamwater.yaml"),
        "name: kamwater\nmeter_type: water\ndetect: [\"KAM,1b,16\"]\nfields:\n  - name: water_total\n    quantity: volume\n    match: {vif_range: volume}\n    ha: {device_class: water, state_class: total_increasing}\n",
    )
    .unwrap();
    let logged =
        "2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713";
    let dir_arg = dir.to_string_lossy().to_string();
    let (code, out, err) = meterbridge(
        &[
            "decode",
            "--format",
            "wmbusmeters",
            "--drivers-dir",
            &dir_arg,
            logged,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"water_total_m3\":6.408"), "{out}");
    assert!(!out.contains("\"total_m3\""), "{out}");

    // A broken file names the file, the line and the column.
    std::fs::write(dir.join("broken.yaml"), "name: broken\nmeter_type: [oops\n").unwrap();
    let (code, _, err) = meterbridge(
        &[
            "decode",
            "--format",
            "wmbusmeters",
            "--drivers-dir",
            &dir_arg,
            logged,
        ],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("broken.yaml") && err.contains("line"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `run` without a configuration says how to get one; `check-config` prints a warning about
/// the whole file as `FILE: warning: …`, without an empty location.
#[test]
fn run_without_a_configuration_and_file_warnings_say_it_plainly() {
    let dir = std::env::temp_dir().join(format!("meterbridge-noconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meterbridge"))
        .arg("run")
        .current_dir(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(
            "error: there is no configuration file meterbridge.yaml; give one with --config FILE."
        ),
        "{err}"
    );
    assert!(err.contains("config.example.yaml"), "{err}");

    let file = dir.join("empty.yaml");
    std::fs::write(&file, "log_level: info\n").unwrap();
    let (code, out, err) = meterbridge(&["check-config", &file.display().to_string()], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid"), "{out}");
    assert_eq!(
        err.trim_end(),
        format!(
            "{}: warning: there are no buses and no receivers: `run` would start and read nothing (config.example.yaml shows both)",
            file.display()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}
