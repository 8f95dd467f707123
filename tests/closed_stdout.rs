//! `meterbridge … | head -1`: a reader that goes away ends the program quietly (status 0, no
//! panic, no error message), for every subcommand that prints to standard output.
//!
//! Standard output is a pipe whose reading end is closed before the program starts, so its
//! first write fails with EPIPE — the same error `head` causes once it has its line, without
//! depending on timing.

use std::io::Write;
use std::process::{Command, Stdio};

const KAMSTRUP: &str =
    "2A442D2C998734761B168D2091D37CAC21576C7802FF207100041308190000441308190000615B7F616713";
const FILLER_FRAME: &str = "68 1F 1F 68 08 00 72 31 77 67 17 2D 2C 01 02 00 00 00 00 2F 2F 04 83 3B 88 13 00 00 2F 2F 2F 2F 2F 2F 2F 00 16";

/// Runs the binary with `args`, `stdin` as input and a closed pipe as standard output; returns
/// the exit status and standard error.
fn into_closed_pipe(args: &[&str], stdin: &str) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut child = Command::new(env!("CARGO_BIN_EXE_meterbridge"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let mut input = child.stdin.take().expect("stdin");
    // The program may end before it reads all of its input: a failed write is expected then.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    let out = child.wait_with_output().expect("exit");
    (
        out.status.code(),
        String::from_utf8(out.stderr).expect("utf-8 stderr"),
    )
}

fn assert_quiet(what: &str, (code, err): (Option<i32>, String)) {
    assert_eq!(code, Some(0), "{what}: exit status; stderr: {err}");
    for word in ["panicked", "Broken pipe", "error"] {
        assert!(!err.contains(word), "{what}: {word:?} on stderr: {err}");
    }
}

#[test]
fn drivers_listing_into_a_closed_pipe() {
    assert_quiet("drivers", into_closed_pipe(&["drivers"], ""));
    assert_quiet(
        "drivers show",
        into_closed_pipe(&["drivers", "show", "kamwater"], ""),
    );
    assert_quiet(
        "drivers decoders",
        into_closed_pipe(&["drivers", "decoders"], ""),
    );
}

#[test]
fn decode_into_a_closed_pipe() {
    assert_quiet(
        "decode arguments",
        into_closed_pipe(&["decode", FILLER_FRAME, FILLER_FRAME], ""),
    );
    let lines = format!("{KAMSTRUP}\n").repeat(2000);
    assert_quiet(
        "decode standard input",
        into_closed_pipe(&["decode", "--format", "wmbusmeters"], &lines),
    );
}

#[test]
fn listen_into_a_closed_pipe() {
    let input = format!("{KAMSTRUP}\n{FILLER_FRAME}\n");
    for format in ["json", "text"] {
        let (code, err) = into_closed_pipe(&["listen", "--hex-stdin", "--format", format], &input);
        assert!(
            err.contains("listening to"),
            "listen {format} started: {err}"
        );
        assert_quiet(&format!("listen --format {format}"), (code, err));
    }
}
