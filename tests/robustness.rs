//! Deterministic property tests: the decoder, the renderers, the stream scanner and the hex
//! reader get hostile input and must neither panic nor hang.
//!
//! The generator is a fixed-seed xorshift64* so a failure reproduces on every machine and
//! the crate needs no property-testing dependency. `ROBUSTNESS_SEED` (a number) changes the
//! seeds and `ROBUSTNESS_SCALE` (a factor) the number of cases, for longer exploratory runs;
//! the defaults keep the whole file at a few seconds in a debug build. See `docs/fuzzing.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use meterbridge::cli::decode::{Decoder, Format};
use meterbridge::output::{json, libmbus_xml};
use meterbridge::telegram::{decode_wired, DecodeError, Telegram};
use meterbridge::wire::application::{Application, Header};
use meterbridge::wire::hex::{self, HexError};
use meterbridge::wire::wired::{scan, Frame, FrameReader, Scan};

mod support;
use support::{exercise_record, run_cases, Rng};

// Case counts, tuned so the file runs in well under 15 s in a debug build on two cores.
const RANDOM_BYTES_CASES: usize = 200_000;
const VALID_FRAME_CASES: usize = 60_000;
const MUTATION_CASES: usize = 100_000;
const STREAM_CASES: usize = 10_000;
const HEX_CASES: usize = 100_000;

/// Inputs the task promises to survive; longer ones cannot be a wired frame anyway.
const MAX_INPUT: usize = 300;
/// L is one byte, so a long frame is at most 255 + 6 bytes.
const MAX_FRAME: usize = 255 + 6;
/// User data bytes after CI that still fit in one long frame.
const MAX_DATA: usize = 252;

// ---------------------------------------------------------------------------------------------
// Random numbers

/// The generator for one property, its fixed seed moved by `ROBUSTNESS_SEED` for exploratory
/// runs.
fn seeded_rng(seed: u64) -> Rng {
    let extra = std::env::var("ROBUSTNESS_SEED")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Rng::new(seed ^ extra.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn scaled(cases: usize) -> usize {
    let factor = std::env::var("ROBUSTNESS_SCALE")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f > 0.0)
        .unwrap_or(1.0);
    ((cases as f64 * factor) as usize).max(1)
}

// ---------------------------------------------------------------------------------------------
// What every decoded telegram must survive

#[derive(Default, Debug)]
struct Tally {
    decoded: u64,
    records: u64,
    frame_errors: u64,
    record_errors: u64,
    other_errors: u64,
}

impl Tally {
    fn report(&self, name: &str) {
        eprintln!(
            "{name}: {} decoded ({} records), {} frame errors, {} record errors, {} other errors",
            self.decoded, self.records, self.frame_errors, self.record_errors, self.other_errors
        );
    }
}

/// Decodes `bytes` and, if that succeeds, reads every accessor and renders every format.
fn decode_and_render(bytes: &[u8], out: &mut String, tally: &mut Tally) {
    match decode_wired(bytes) {
        Ok(telegram) => {
            tally.decoded += 1;
            tally.records += telegram.records.len() as u64;
            exercise(&telegram, out);
        }
        Err(DecodeError::Frame(_)) => tally.frame_errors += 1,
        Err(DecodeError::Record(_)) => tally.record_errors += 1,
        Err(e) => {
            tally.other_errors += 1;
            // Error messages are shown to users, so they are part of the surface too.
            out.clear();
            let _ = write!(out, "{e}");
        }
    }
}

fn exercise(t: &Telegram<'_>, out: &mut String) {
    let _ = t.more_records_follow();
    let _ = t.link.master_to_slave();
    match &t.application {
        Application::Variable {
            header,
            records: area,
            records_offset,
            ..
        } => {
            if let Header::Long(h) = header {
                out.clear();
                out.push_str(&h.secondary_address());
            }
            // Every record consumes at least its DIF, so more records than bytes would mean the
            // parser stood still somewhere.
            assert!(
                t.records.len() <= area.len(),
                "{} records from a {}-byte record area",
                t.records.len(),
                area.len()
            );
            let end = records_offset + area.len();
            let mut previous: Option<usize> = None;
            for r in &t.records {
                assert!(
                    (*records_offset..end).contains(&r.offset),
                    "record at byte {} lies outside the record area {records_offset}..{end}",
                    r.offset
                );
                assert!(
                    previous.is_none_or(|p| r.offset > p),
                    "record at byte {} does not come after the one at {previous:?}",
                    r.offset
                );
                previous = Some(r.offset);
                exercise_record(r, out);
            }
        }
        Application::Fixed(f) => {
            assert!(t.records.is_empty(), "fixed data produced variable records");
            let _ = f.counter_value(f.counter1);
            let _ = f.counter_value(f.counter2);
            let _ = (f.binary_counters(), f.stored_values());
        }
        Application::Error(e) => {
            let _ = e.text();
        }
        Application::Alarm { .. } | Application::Other { .. } => {}
    }

    out.clear();
    json::render(t, out);
    assert_valid_json(out);
    for style in [
        libmbus_xml::XmlStyle::Plain,
        libmbus_xml::XmlStyle::Normalized,
    ] {
        out.clear();
        // Refusing a telegram is allowed; panicking is not.
        let _ = libmbus_xml::render(t, style, out);
    }
}

fn assert_valid_json(rendered: &str) {
    if let Err(e) = check_json(rendered) {
        panic!("JSON renderer wrote invalid JSON ({e}): {rendered}");
    }
}

/// A strict JSON syntax check (RFC 8259), so a renderer that forgets an escape is caught by the
/// same random input that would crash it.
fn check_json(text: &str) -> Result<(), String> {
    let mut p = JsonCheck {
        b: text.as_bytes(),
        i: 0,
    };
    p.value(0)?;
    p.ws();
    if p.i != p.b.len() {
        return Err(format!("trailing characters at {}", p.i));
    }
    Ok(())
}

struct JsonCheck<'a> {
    b: &'a [u8],
    i: usize,
}

impl JsonCheck<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn fail<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.i))
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), String> {
        if depth > 64 {
            return self.fail("nesting too deep");
        }
        self.ws();
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                self.ws();
                if self.eat(b'}') {
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.ws();
                    if !self.eat(b':') {
                        return self.fail("expected ':'");
                    }
                    self.value(depth + 1)?;
                    self.ws();
                    if self.eat(b'}') {
                        return Ok(());
                    }
                    if !self.eat(b',') {
                        return self.fail("expected ',' or '}'");
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                self.ws();
                if self.eat(b']') {
                    return Ok(());
                }
                loop {
                    self.value(depth + 1)?;
                    self.ws();
                    if self.eat(b']') {
                        return Ok(());
                    }
                    if !self.eat(b',') {
                        return self.fail("expected ',' or ']'");
                    }
                }
            }
            Some(b'"') => self.string(),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => {
                for word in [&b"true"[..], b"false", b"null"] {
                    if self.b[self.i..].starts_with(word) {
                        self.i += word.len();
                        return Ok(());
                    }
                }
                self.fail("unexpected character")
            }
            None => self.fail("unexpected end"),
        }
    }

    fn string(&mut self) -> Result<(), String> {
        if !self.eat(b'"') {
            return self.fail("expected string");
        }
        loop {
            match self.peek() {
                None => return self.fail("unterminated string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            let digits = self.b.get(self.i + 1..self.i + 5);
                            if !digits.is_some_and(|d| d.iter().all(u8::is_ascii_hexdigit)) {
                                return self.fail("bad \\u escape");
                            }
                            self.i += 5;
                        }
                        _ => return self.fail("bad escape"),
                    }
                }
                Some(c) if c < 0x20 => return self.fail("unescaped control character"),
                Some(_) => self.i += 1,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<(), String> {
        self.eat(b'-');
        if self.eat(b'0') {
            if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return self.fail("leading zero");
            }
        } else if self.digits() == 0 {
            return self.fail("expected digits");
        }
        if self.eat(b'.') && self.digits() == 0 {
            return self.fail("expected fraction digits");
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return self.fail("expected exponent digits");
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Building frames

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, &b| sum.wrapping_add(b))
}

/// `68 L L 68 C A CI data CS 16`; `data` must fit ([`MAX_DATA`]).
fn long_frame(control: u8, address: u8, ci: u8, data: &[u8]) -> Vec<u8> {
    assert!(
        data.len() <= MAX_DATA,
        "test bug: {} data bytes",
        data.len()
    );
    let l = (data.len() + 3) as u8;
    let mut f = vec![0x68, l, l, 0x68, control, address, ci];
    f.extend_from_slice(data);
    f.push(checksum(&f[4..]));
    f.push(0x16);
    f
}

fn short_frame(control: u8, address: u8) -> Vec<u8> {
    vec![0x10, control, address, control.wrapping_add(address), 0x16]
}

/// Rewrites start bytes, L, CS and stop so a mutated long frame passes the link layer and the
/// mutation reaches the application layer and the records.
fn fix_up_long_frame(f: &mut Vec<u8>) {
    if f.len() < 9 {
        return;
    }
    f.truncate(MAX_FRAME);
    let n = f.len();
    let l = (n - 6) as u8;
    f[0] = 0x68;
    f[1] = l;
    f[2] = l;
    f[3] = 0x68;
    f[n - 2] = checksum(&f[4..n - 2]);
    f[n - 1] = 0x16;
}

/// Bytes that mean something to some layer; random replacements favour them.
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x0D, 0x0F, 0x10, 0x16, 0x1F, 0x2F, 0x3F, 0x40, 0x68, 0x6D, 0x7C, 0x7F, 0x80, 0x8F,
    0xBF, 0xC0, 0xC9, 0xD9, 0xE0, 0xE5, 0xEF, 0xF0, 0xF5, 0xF6, 0xF7, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF,
];

fn interesting_byte(rng: &mut Rng) -> u8 {
    if rng.one_in(2) {
        rng.pick(INTERESTING)
    } else {
        rng.byte()
    }
}

/// One record shaped like the real thing: DIF, DIFEs, VIF (sometimes with a plain-text unit or
/// an FB/FD extension table), VIFEs and data of the length the DIF announces. Random bytes alone
/// seldom get past the first record.
fn push_record(rng: &mut Rng, out: &mut Vec<u8>) {
    if rng.one_in(12) {
        out.push(0x2F);
    }
    if rng.one_in(40) {
        // Special functions swallow the rest of the area.
        out.push(rng.pick(&[0x0F, 0x1F, 0x3F, 0x7F]));
        let n = rng.below(12);
        rng.push_bytes(out, n);
        return;
    }
    let mut dif = rng.byte();
    if dif & 0x0F == 0x0F {
        dif &= 0xF0;
    }
    if !rng.one_in(4) {
        dif &= 0x7F;
    }
    out.push(dif);
    if dif & 0x80 != 0 {
        let most = if rng.one_in(20) { 11 } else { 3 };
        let n = rng.range(1, most);
        for i in 0..n {
            let more = if i + 1 < n { 0x80 } else { 0 };
            out.push((rng.byte() & 0x7F) | more);
        }
    }
    let vif = match rng.below(10) {
        0 => 0xFB,
        1 => 0xFD,
        2 => rng.pick(&[0x7C, 0xFC]),
        3 => rng.pick(&[0x6C, 0x6D, 0xEC, 0xED]),
        _ => rng.byte(),
    };
    out.push(vif);
    let plain_text = vif & 0x7F == 0x7C;
    let text_first = rng.one_in(2);
    let push_text = |rng: &mut Rng, out: &mut Vec<u8>| {
        let n = rng.below(8);
        out.push(n as u8);
        out.extend((0..n).map(|_| rng.range(0x20, 0x7E) as u8));
    };
    if plain_text && text_first {
        push_text(rng, out);
    }
    if vif & 0x80 != 0 {
        let most = if rng.one_in(20) { 11 } else { 3 };
        let n = rng.range(1, most);
        for i in 0..n {
            let more = if i + 1 < n { 0x80 } else { 0 };
            out.push((rng.byte() & 0x7F) | more);
        }
    }
    if plain_text && !text_first {
        push_text(rng, out);
    }
    let size = match dif & 0x0F {
        0x0 | 0x8 => 0,
        0x1 | 0x9 => 1,
        0x2 | 0xA => 2,
        0x3 | 0xB => 3,
        0x4 | 0x5 | 0xC => 4,
        0x6 | 0xE => 6,
        0x7 => 8,
        _ => {
            let lvar = match rng.below(6) {
                0 => rng.range(0x00, 0x14),
                1 => rng.range(0xC0, 0xC9),
                2 => rng.range(0xD0, 0xD9),
                3 => rng.range(0xE0, 0xEF),
                4 => rng.range(0xF0, 0xF6),
                _ => rng.byte().into(),
            } as u8;
            out.push(lvar);
            match lvar {
                0x00..=0xBF => lvar.into(),
                0xC0..=0xC9 => usize::from(lvar - 0xC0),
                0xD0..=0xD9 => usize::from(lvar - 0xD0),
                0xE0..=0xEF => usize::from(lvar - 0xE0),
                0xF0..=0xF4 => 4 * usize::from(lvar - 0xEC),
                0xF5 => 48,
                0xF6 => 64,
                _ => rng.below(4),
            }
        }
    };
    // BCD-looking data half the time, so valid and invalid BCD both occur.
    let bcd = rng.one_in(2);
    for _ in 0..size {
        let b = rng.byte();
        out.push(if bcd {
            ((b >> 4) % 10) * 16 + (b & 0x0F) % 10
        } else {
            b
        });
    }
}

/// User data for `ci`: a header of the right size (usually) and a record area that is either
/// record-shaped or plain random.
fn user_data(rng: &mut Rng, ci: u8) -> Vec<u8> {
    let mut data = Vec::new();
    let header = match ci {
        0x72 | 0x76 => 12,
        0x7A => 4,
        0x73 | 0x77 => 16,
        0x70 | 0x71 => rng.below(3),
        _ => 0,
    };
    let header = if rng.one_in(16) {
        rng.below(header + 2)
    } else {
        header
    };
    rng.push_bytes(&mut data, header);
    if matches!(ci, 0x73 | 0x77) && !rng.one_in(8) {
        return data;
    }
    let budget = rng.range(data.len(), MAX_DATA);
    if rng.one_in(3) {
        let n = budget - data.len();
        rng.push_bytes(&mut data, n);
    } else {
        let mut record = Vec::new();
        while data.len() < budget {
            record.clear();
            push_record(rng, &mut record);
            if data.len() + record.len() > MAX_DATA {
                // A record cut short tests the end-of-area errors; usually stop cleanly.
                if rng.one_in(4) {
                    data.extend_from_slice(&record[..MAX_DATA - data.len()]);
                }
                break;
            }
            data.extend_from_slice(&record);
        }
    }
    data
}

fn random_ci(rng: &mut Rng) -> u8 {
    match rng.below(10) {
        0..=7 => rng.pick(&[0x72, 0x76, 0x78, 0x7A, 0x73, 0x77, 0x70, 0x71]),
        _ => rng.byte(),
    }
}

fn random_long_frame(rng: &mut Rng) -> Vec<u8> {
    let ci = random_ci(rng);
    let data = user_data(rng, ci);
    let any = rng.byte();
    let control = rng.pick(&[0x08, 0x18, 0x28, 0x38, 0x53, 0x73, any]);
    long_frame(control, rng.byte(), ci, &data)
}

/// Hex as people paste it: upper or lower case, with or without separators.
fn to_hex_text(rng: &mut Rng, bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    let lower = rng.one_in(2);
    let sep = rng.pick(&["", " ", " ", "|", "_", ":", "-", "\t"]);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push_str(sep);
        }
        if lower {
            let _ = write!(s, "{b:02x}");
        } else {
            let _ = write!(s, "{b:02X}");
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Fixtures

fn fixture_frames() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/libmbus");
    let mut paths = Vec::new();
    collect_hex_files(&root, &mut paths);
    paths.sort();
    let mut frames = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        // libmbus's reader stops at the first character that is not hex or space; one fixture
        // relies on that.
        let end = text
            .find(|c: char| !(c.is_ascii_hexdigit() || c.is_whitespace()))
            .unwrap_or(text.len());
        if let Ok(bytes) = hex::decode(&text[..end]) {
            let name = path
                .strip_prefix(&root)
                .unwrap_or(&path)
                .display()
                .to_string();
            frames.push((name, bytes));
        }
    }
    assert!(
        frames.len() >= 50,
        "only {} fixture frames under {}",
        frames.len(),
        root.display()
    );
    frames
}

fn collect_hex_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect_hex_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "hex") {
            out.push(path);
        }
    }
}

fn mutate(rng: &mut Rng, f: &mut Vec<u8>) {
    let len = f.len();
    match rng.below(7) {
        0 if len > 0 => {
            let i = rng.below(len);
            f[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            f[i] = interesting_byte(rng);
        }
        2 => {
            let at = rng.range(0, len);
            let n = rng.range(1, 8);
            let bytes: Vec<u8> = (0..n).map(|_| interesting_byte(rng)).collect();
            f.splice(at..at, bytes);
        }
        3 if len > 0 => {
            let at = rng.below(len);
            let n = rng.range(1, (len - at).min(16));
            f.drain(at..at + n);
        }
        4 => {
            let keep = rng.range(0, len);
            f.truncate(keep);
        }
        5 if len > 0 => {
            let from = rng.below(len);
            let n = rng.range(1, (len - from).min(32));
            let at = rng.range(0, len);
            let slice = f[from..from + n].to_vec();
            f.splice(at..at, slice);
        }
        _ if len > 0 => {
            // Byte swap: moves a length or DIF onto another field.
            let (a, b) = (rng.below(len), rng.below(len));
            f.swap(a, b);
        }
        _ => f.push(rng.byte()),
    }
}

// ---------------------------------------------------------------------------------------------
// The properties

#[test]
fn random_bytes_decode_without_panic() {
    let n = scaled(RANDOM_BYTES_CASES);
    run_cases("random bytes", move |cases| {
        let mut rng = seeded_rng(0x5EED_0001);
        let mut tally = Tally::default();
        let mut out = String::new();
        let mut input = Vec::with_capacity(MAX_INPUT);
        for _ in 0..n {
            input.clear();
            let len = rng.below(MAX_INPUT);
            rng.push_bytes(&mut input, len);
            // Mostly the first byte is random and decides everything; a start byte here lets the
            // header checks see random L, CS and stop bytes.
            if !input.is_empty() && rng.one_in(4) {
                input[0] = rng.pick(&[0x68, 0x10, 0xE5]);
                if input[0] == 0x68 && input.len() >= 9 && rng.one_in(2) {
                    // Consistent L fields get random bytes as far as the checksum and stop.
                    let l = (input.len().min(MAX_FRAME) - 6) as u8;
                    input[1] = l;
                    input[2] = l;
                    input[3] = 0x68;
                }
            }
            cases.check(&input, || decode_and_render(&input, &mut out, &mut tally));
        }
        tally.report("random bytes");
    });
}

#[test]
fn valid_long_frames_reach_the_records() {
    let n = scaled(VALID_FRAME_CASES);
    run_cases("valid long frames", move |cases| {
        let mut rng = seeded_rng(0x5EED_0002);
        let mut tally = Tally::default();
        let mut out = String::new();
        let mut decoders = [Format::Json, Format::Xml, Format::XmlNormalized].map(Decoder::new);
        for i in 0..n {
            let frame = random_long_frame(&mut rng);
            let text = if i % 8 == 0 {
                Some(to_hex_text(&mut rng, &frame))
            } else {
                None
            };
            cases.check(&frame, || {
                let result = decode_wired(&frame);
                assert!(
                    !matches!(result, Err(DecodeError::Frame(_))),
                    "a well-formed frame was refused by the link layer: {result:?}"
                );
                decode_and_render(&frame, &mut out, &mut tally);
                // The command-line path must agree with the library and not panic on XML.
                if let Some(text) = &text {
                    let [json_decoder, xml, xml_normalized] = &mut decoders;
                    match (json_decoder.decode_line(text), &result) {
                        (Ok(line), Ok(_)) => {
                            let object = line.strip_suffix('\n').expect("JSON line ends in \\n");
                            assert_valid_json(object);
                        }
                        (Ok(_), Err(e)) => panic!("CLI decoded a frame the library refused: {e}"),
                        (Err(failure), Ok(_)) => {
                            panic!(
                                "CLI refused a frame the library decoded: {}",
                                failure.message
                            )
                        }
                        (Err(_), Err(_)) => {}
                    }
                    let _ = xml.decode_line(text);
                    let _ = xml_normalized.decode_line(text);
                }
            });
        }
        tally.report("valid long frames");
        assert!(
            tally.records > n as u64,
            "generator too weak: only {} records in {n} frames",
            tally.records
        );
    });
}

#[test]
fn mutated_fixtures_decode_without_panic() {
    let n = scaled(MUTATION_CASES);
    let frames = fixture_frames();
    run_cases("mutated fixtures", move |cases| {
        let mut rng = seeded_rng(0x5EED_0003);
        let mut tally = Tally::default();
        let mut out = String::new();
        // The unmutated corpus first: the baseline the mutations start from.
        for (_, frame) in &frames {
            cases.check(frame, || decode_and_render(frame, &mut out, &mut tally));
        }
        let mut input = Vec::with_capacity(MAX_INPUT);
        for _ in 0..n {
            let (_, original) = &frames[rng.below(frames.len())];
            input.clear();
            input.extend_from_slice(original);
            for _ in 0..rng.range(1, 4) {
                mutate(&mut rng, &mut input);
            }
            if rng.one_in(2) {
                fix_up_long_frame(&mut input);
            }
            input.truncate(MAX_INPUT);
            cases.check(&input, || decode_and_render(&input, &mut out, &mut tally));
        }
        tally.report("mutated fixtures");
    });
}

/// Feeds `stream` to a [`FrameReader`] in chunks of `chunk()` bytes and checks every item it
/// yields. Returns the frames and the number of errors.
fn read_stream(stream: &[u8], mut chunk: impl FnMut() -> usize) -> (Vec<Vec<u8>>, usize) {
    let mut reader = FrameReader::new();
    let mut frames = Vec::new();
    let mut errors = 0;
    let mut pos = 0;
    while pos < stream.len() {
        let n = chunk().min(stream.len() - pos);
        reader.push(&stream[pos..pos + n]);
        pos += n;
        loop {
            let before = reader.pending();
            let Some(item) = reader.next_frame() else {
                break;
            };
            // Consuming at least one byte per item is what makes this loop finite.
            assert!(
                reader.pending() < before,
                "next_frame returned {item:?} without consuming input"
            );
            match item {
                Ok(frame) => {
                    if let Err(e) = Frame::parse(&frame) {
                        panic!(
                            "reader yielded {} which does not parse: {e}",
                            hex::encode_upper(&frame)
                        );
                    }
                    assert!(matches!(scan(&frame), Scan::Complete(n) if n == frame.len()));
                    frames.push(frame);
                }
                Err(_) => errors += 1,
            }
        }
        // Waiting is only allowed on a frame prefix, and no frame is longer than MAX_FRAME.
        assert!(
            reader.pending() < MAX_FRAME,
            "reader holds {} bytes without yielding anything",
            reader.pending()
        );
    }
    (frames, errors)
}

fn random_chunk(rng: &mut Rng) -> usize {
    match rng.below(8) {
        0 => 0,
        1..=5 => rng.range(1, 8),
        6 => rng.range(1, 64),
        _ => rng.range(1, 400),
    }
}

/// A valid frame of any of the four kinds.
fn random_frame(rng: &mut Rng) -> Vec<u8> {
    match rng.below(8) {
        0 => vec![0xE5],
        1 | 2 => short_frame(rng.byte(), rng.byte()),
        3 => long_frame(rng.byte(), rng.byte(), rng.byte(), &[]),
        4 => random_long_frame(rng),
        _ => {
            let n = rng.below(40);
            let mut data = Vec::new();
            rng.push_bytes(&mut data, n);
            long_frame(rng.byte(), rng.byte(), random_ci(rng), &data)
        }
    }
}

#[test]
fn stream_reader_terminates_and_yields_only_valid_frames() {
    let n = scaled(STREAM_CASES);
    run_cases("stream reader", move |cases| {
        let mut rng = seeded_rng(0x5EED_0004);
        let (mut frames_seen, mut errors_seen) = (0usize, 0usize);
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for i in 0..n {
            stream.clear();
            expected.clear();
            // A third each: pure noise, clean traffic, and traffic with noise and damage.
            let kind = i % 3;
            if kind == 0 {
                let len = rng.below(2000);
                rng.push_bytes(&mut stream, len);
            } else {
                for _ in 0..rng.range(1, 12) {
                    let mut frame = random_frame(&mut rng);
                    if kind == 2 {
                        match rng.below(4) {
                            0 => {
                                let len = rng.below(40);
                                rng.push_bytes(&mut stream, len);
                            }
                            1 => {
                                let at = rng.below(frame.len());
                                frame[at] = rng.byte();
                            }
                            2 => frame.truncate(rng.below(frame.len())),
                            _ => {}
                        }
                    }
                    stream.extend_from_slice(&frame);
                    expected.push(frame);
                }
            }
            let seed = rng.next_u64();
            cases.check(&stream, || {
                let mut chunks = seeded_rng(seed);
                let (chunked, errors) = read_stream(&stream, || random_chunk(&mut chunks));
                let (whole, _) = read_stream(&stream, || usize::MAX);
                // Where a frame starts and ends is a property of the bytes, not of how they
                // arrived.
                assert_eq!(
                    chunked, whole,
                    "frames depend on how the stream was chunked"
                );
                if kind == 1 {
                    assert_eq!(errors, 0, "clean traffic produced errors");
                    assert_eq!(
                        chunked, expected,
                        "clean traffic was not split into its frames"
                    );
                }
                frames_seen += chunked.len();
                errors_seen += errors;
            });
        }
        eprintln!("stream reader: {frames_seen} frames, {errors_seen} errors");
    });
}

#[test]
fn hex_reader_matches_a_model_and_never_panics() {
    let n = scaled(HEX_CASES);
    run_cases("hex reader", move |cases| {
        let mut rng = seeded_rng(0x5EED_0005);
        const ALPHABET: &[char] = &[
            '0', '1', '2', '5', '9', 'a', 'b', 'f', 'A', 'C', 'F', ' ', '\t', '\n', '|', '_', ':',
            '-', 'g', 'G', 'x', '#', '\0', 'é', '\u{3000}', '\u{a0}', '😀', '\u{ff10}',
        ];
        let mut text = String::new();
        for i in 0..n {
            text.clear();
            if i % 2 == 0 {
                for _ in 0..rng.below(60) {
                    text.push(rng.pick(ALPHABET));
                }
            } else {
                let len = rng.below(40);
                let mut bytes = Vec::new();
                rng.push_bytes(&mut bytes, len);
                text.push_str(&to_hex_text(&mut rng, &bytes));
            }
            cases.check(text.as_bytes(), || {
                let got = hex::decode(&text);
                assert_eq!(got, hex_model(&text), "hex::decode({text:?})");
                if let Ok(bytes) = &got {
                    assert_eq!(hex::decode(&hex::encode_upper(bytes)).as_ref(), Ok(bytes));
                }
            });
        }
    });
}

/// What `hex::decode` is documented to do, written the slow and obvious way.
fn hex_model(text: &str) -> Result<Vec<u8>, HexError> {
    let mut digits = Vec::new();
    for (offset, c) in text.char_indices() {
        if c.is_whitespace() || "|_:-".contains(c) {
            continue;
        }
        match c.to_digit(16) {
            Some(d) => digits.push(d as u8),
            None => return Err(HexError::InvalidCharacter { offset, found: c }),
        }
    }
    if digits.is_empty() {
        return Err(HexError::Empty);
    }
    if digits.len() % 2 == 1 {
        return Err(HexError::OddLength {
            digits: digits.len(),
        });
    }
    Ok(digits.chunks(2).map(|p| (p[0] << 4) | p[1]).collect())
}

// ---------------------------------------------------------------------------------------------
// Regressions for bugs these properties found.

#[test]
fn json_escapes_a_backslash_in_the_manufacturer() {
    // CI 0x72 long header with manufacturer 0x7021: letters 28, 1, 1, i.e. "\\AA".
    let frame =
        hex::decode("68 0F 0F 68 08 01 72 78 56 34 12 21 70 01 07 00 00 00 00 28 16").expect("hex");
    let telegram = decode_wired(&frame).expect("frame decodes");
    let mut out = String::new();
    json::render(&telegram, &mut out);
    if let Err(e) = check_json(&out) {
        panic!("invalid JSON ({e}): {out}");
    }
}
