//! Runs libmbus's own test corpus (tests/fixtures/libmbus, see its README) through our decoder
//! and compares `render` with what libmbus 0.10.0 (commit f09d613) prints, byte for byte.
//!
//! Known divergences are listed below with the exact lines that differ, so that a fix on
//! either side, or a new difference, makes this test fail. `docs/conformance.md` explains each.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use meterbridge::output::libmbus_xml::{render, XmlStyle};
use meterbridge::telegram::decode_wired;
use meterbridge::wire::hex;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/libmbus");

/// A place where we knowingly print something other than libmbus: in `frame`, rendered in
/// `style`, the oracle's line `libmbus` is our line `ours` (in the same position).
struct Divergence {
    frame: &'static str,
    style: XmlStyle,
    libmbus: &'static str,
    ours: &'static str,
}

/// Every entry is explained in docs/conformance.md. Empty: the whole corpus matches.
const DIVERGENCES: &[Divergence] = &[];

/// Frames the decoder currently gets wrong; the decoder's owner fixes them, then they come off.
/// Mark each entry with a `// DECODER:` comment naming the record and the fault.
const DECODER_FAILURES: &[&str] = &[];

fn hex_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(Path::new(ROOT).join(dir))
        .unwrap_or_else(|e| panic!("{ROOT}/{dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "hex"))
        .collect();
    files.sort();
    files
}

fn name_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The expected output: the re-run of libmbus at f09d613 where it exists, else the shipped file.
fn expected(dir: &str, name: &str, suffix: &str) -> Option<String> {
    let head = Path::new(ROOT)
        .join("oracle-head-f09d613")
        .join(dir)
        .join(format!("{name}{suffix}"));
    let shipped = Path::new(ROOT).join(dir).join(format!("{name}{suffix}"));
    fs::read_to_string(&head)
        .or_else(|_| fs::read_to_string(&shipped))
        .ok()
}

fn read_frame(path: &Path) -> Vec<u8> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    hex::decode(&text).unwrap_or_else(|e| panic!("{}: bad hex: {e}", path.display()))
}

fn render_frame(bytes: &[u8], style: XmlStyle) -> Result<String, String> {
    let t = decode_wired(bytes).map_err(|e| format!("decode error: {e}"))?;
    let mut out = String::new();
    render(&t, style, &mut out).map_err(|e| format!("render error: {e}"))?;
    Ok(out)
}

/// Lines that differ, paired by position (the documents have the same shape when only values
/// or units differ). `None` when the line counts differ.
fn differing_lines<'a>(expected: &'a str, actual: &'a str) -> Option<Vec<(&'a str, &'a str)>> {
    let e: Vec<&str> = expected.split('\n').collect();
    let a: Vec<&str> = actual.split('\n').collect();
    if e.len() != a.len() {
        return None;
    }
    Some(e.into_iter().zip(a).filter(|(x, y)| x != y).collect())
}

/// A readable report of the first difference.
fn first_difference(frame: &str, style: XmlStyle, expected: &str, actual: &str) -> String {
    let e: Vec<&str> = expected.split('\n').collect();
    let a: Vec<&str> = actual.split('\n').collect();
    let i = e
        .iter()
        .zip(&a)
        .position(|(x, y)| x != y)
        .unwrap_or(e.len().min(a.len()));
    let from = i.saturating_sub(3);
    let mut s = format!("{frame} ({style:?}): first difference at line {}\n", i + 1);
    for (n, line) in e.iter().enumerate().take(i).skip(from) {
        s.push_str(&format!("   {:4}  {line}\n", n + 1));
    }
    s.push_str(&format!(
        "  -{:4}  {}\n",
        i + 1,
        e.get(i).copied().unwrap_or("<end of file>")
    ));
    s.push_str(&format!(
        "  +{:4}  {}\n",
        i + 1,
        a.get(i).copied().unwrap_or("<end of file>")
    ));
    s
}

#[derive(Default)]
struct Tally {
    matched: usize,
    diverged: usize,
    failures: Vec<String>,
}

/// Compares one rendering with the oracle, allowing exactly the listed divergences.
fn check(tally: &mut Tally, frame: &str, style: XmlStyle, expected: &str, actual: &str) {
    let allowed: Vec<&Divergence> = DIVERGENCES
        .iter()
        .filter(|d| d.frame == frame && d.style == style)
        .collect();
    if allowed.is_empty() {
        if expected == actual {
            tally.matched += 1;
        } else {
            tally
                .failures
                .push(first_difference(frame, style, expected, actual));
        }
        return;
    }
    let mut want: Vec<(&str, &str)> = allowed.iter().map(|d| (d.libmbus, d.ours)).collect();
    let mut got = differing_lines(expected, actual).unwrap_or_default();
    want.sort_unstable();
    got.sort_unstable();
    if want == got {
        tally.diverged += 1;
    } else {
        tally.failures.push(format!(
            "{frame} ({style:?}): the listed divergence no longer holds as written \
             (fixed, or changed?)\n{}",
            first_difference(frame, style, expected, actual)
        ));
    }
}

#[test]
fn no_frame_makes_the_decoder_or_renderer_panic() {
    for dir in ["test-frames", "error-frames", "unsupported-frames"] {
        for path in hex_files(dir) {
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            let Ok(bytes) = hex::decode(&text) else {
                continue;
            };
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                if let Ok(t) = decode_wired(&bytes) {
                    let mut out = String::new();
                    let _ = render(&t, XmlStyle::Plain, &mut out);
                    let _ = render(&t, XmlStyle::Normalized, &mut out);
                }
            }));
            assert!(outcome.is_ok(), "{} panicked", path.display());
        }
    }
}

/// Corpus frames with single bytes replaced (and the checksum repaired, so the change reaches
/// the record parser): neither the decoder nor the renderer may panic on any of them.
#[test]
fn mutated_frames_do_not_panic() {
    // Bytes that steer parsing: special DIFs, extension bits, plain-text and extension VIFs,
    // date VIFs, LVAR classes, correction VIFEs, and CIs libmbus does not know.
    const PROBES: &[u8] = &[
        0x00, 0x0D, 0x0F, 0x1F, 0x2F, 0x3F, 0x6C, 0x6D, 0x70, 0x77, 0x7B, 0x7C, 0x7D, 0x7F, 0x80,
        0x8F, 0xBF, 0xC5, 0xD9, 0xE3, 0xF4, 0xF6, 0xFB, 0xFC, 0xFD, 0xFF,
    ];
    let mut seed: u32 = 0x2545_F491;
    let mut out = String::new();
    for path in hex_files("test-frames") {
        let original = read_frame(&path);
        let n = original.len();
        if n < 9 || original[0] != 0x68 {
            continue;
        }
        for pos in 4..n - 2 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            // A rotating third of the probes per position keeps the test quick while every
            // probe still lands on every kind of byte somewhere in the corpus.
            let probes = (0..PROBES.len() / 3).map(|k| PROBES[(pos + 3 * k) % PROBES.len()]);
            for value in probes.chain([seed as u8]) {
                let mut bytes = original.clone();
                bytes[pos] = value;
                bytes[n - 2] = bytes[4..n - 2].iter().fold(0u8, |s, &b| s.wrapping_add(b));
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    if let Ok(t) = decode_wired(&bytes) {
                        out.clear();
                        let _ = render(&t, XmlStyle::Plain, &mut out);
                        let _ = render(&t, XmlStyle::Normalized, &mut out);
                    }
                }));
                assert!(
                    outcome.is_ok(),
                    "{}: byte {pos} set to 0x{value:02X} panicked",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn test_frames_match_libmbus() {
    let mut plain = Tally::default();
    let mut norm = Tally::default();
    let mut decoder_failures = Vec::new();
    let frames = hex_files("test-frames");
    assert_eq!(frames.len(), 76, "the corpus has 76 test frames");
    for path in &frames {
        let name = name_of(path);
        let bytes = read_frame(path);
        if DECODER_FAILURES.contains(&name.as_str()) {
            // Keep the list honest: a frame that decodes and matches must come off it.
            let fixed = [XmlStyle::Plain, XmlStyle::Normalized]
                .iter()
                .all(|&style| {
                    let suffix = if style == XmlStyle::Plain {
                        ".xml"
                    } else {
                        ".norm.xml"
                    };
                    render_frame(&bytes, style).ok() == expected("test-frames", &name, suffix)
                });
            assert!(
                !fixed,
                "{name} now matches; remove it from DECODER_FAILURES"
            );
            decoder_failures.push(name);
            continue;
        }
        for (style, suffix, tally) in [
            (XmlStyle::Plain, ".xml", &mut plain),
            (XmlStyle::Normalized, ".norm.xml", &mut norm),
        ] {
            let want = expected("test-frames", &name, suffix)
                .unwrap_or_else(|| panic!("{name}{suffix}: no expected output"));
            match render_frame(&bytes, style) {
                Ok(got) => check(tally, &name, style, &want, &got),
                Err(e) => tally.failures.push(format!("{name} ({style:?}): {e}")),
            }
        }
    }
    eprintln!(
        "libmbus corpus, test-frames: plain XML {}/{} identical, {} with listed divergences; \
         normalized XML {}/{} identical, {} with listed divergences; {} expected decoder failures",
        plain.matched,
        frames.len(),
        plain.diverged,
        norm.matched,
        frames.len(),
        norm.diverged,
        decoder_failures.len(),
    );
    let failures: Vec<String> = plain.failures.into_iter().chain(norm.failures).collect();
    assert!(
        failures.is_empty(),
        "{} renderings differ from libmbus:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
    for d in DIVERGENCES {
        assert!(
            frames.iter().any(|p| name_of(p) == d.frame),
            "divergence listed for unknown frame {}",
            d.frame
        );
    }
}

#[test]
fn error_reports_match_libmbus() {
    let mut matched = 0;
    let mut failures = Vec::new();
    for path in hex_files("error-frames") {
        let name = name_of(&path);
        let Some(want) = expected("error-frames", &name, ".xml") else {
            continue;
        };
        let bytes = read_frame(&path);
        match render_frame(&bytes, XmlStyle::Plain) {
            Ok(got) if got == want => matched += 1,
            Ok(got) => failures.push(first_difference(&name, XmlStyle::Plain, &want, &got)),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
        // libmbus has no normalized form for error reports; we say so instead of guessing.
        if let Ok(t) = decode_wired(&bytes) {
            let mut out = String::new();
            assert!(render(&t, XmlStyle::Normalized, &mut out).is_err());
            assert!(out.is_empty(), "{name}: a failed render must not append");
        }
    }
    eprintln!("libmbus corpus, error-frames: {matched}/10 CI 0x70 reports identical");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(matched, 10);
}

#[test]
fn frames_libmbus_refuses_give_no_xml() {
    // libmbus prints nothing for these (bad framing or master-to-slave telegrams); we must not
    // invent a document either, whether the decoder or the renderer is the one to refuse.
    for dir in ["error-frames", "unsupported-frames"] {
        for path in hex_files(dir) {
            let name = name_of(&path);
            if expected(dir, &name, ".xml").is_some() {
                continue;
            }
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            let Ok(bytes) = hex::decode(&text) else {
                continue;
            };
            if let Ok(out) = render_frame(&bytes, XmlStyle::Plain) {
                panic!("{dir}/{name}: libmbus refuses this frame, but we printed\n{out}");
            }
        }
    }
}

#[test]
fn second_telegram_of_svm_f22_matches_libmbus() {
    let path = Path::new(ROOT).join("unsupported-frames/svm_f22_telegram2.hex");
    let bytes = read_frame(&path);
    for (style, suffix) in [
        (XmlStyle::Plain, ".xml"),
        (XmlStyle::Normalized, ".norm.xml"),
    ] {
        let want = expected("unsupported-frames", "svm_f22_telegram2", suffix)
            .unwrap_or_else(|| panic!("svm_f22_telegram2{suffix}: no expected output"));
        match render_frame(&bytes, style) {
            Ok(got) => assert!(
                got == want,
                "{}",
                first_difference("svm_f22_telegram2", style, &want, &got)
            ),
            Err(e) => panic!("svm_f22_telegram2 ({style:?}): {e}"),
        }
    }
}
