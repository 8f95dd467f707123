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
