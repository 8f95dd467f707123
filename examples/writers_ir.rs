//! Instruction counts of the writers, for figures that do not depend on how busy the machine
//! is: decodes the libmbus corpus (76 frames) a fixed number of times and renders each frame
//! with one writer. Run under callgrind and compare the totals of the modes (see
//! bench/writers_ir.sh, which subtracts the start-up and corpus loading):
//!
//!   valgrind --tool=callgrind target/release/examples/writers_ir json 200

use std::hint::black_box;
use std::path::Path;

use meterbridge::output::{json, libmbus_xml};
use meterbridge::telegram::{decode_wired, decode_wired_into};
use meterbridge::wire::hex;
use meterbridge::wire::records::Value;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "scaled".into());
    let rounds: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/libmbus/test-frames");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "hex"))
        .collect();
    names.sort();
    let frames: Vec<Vec<u8>> = names
        .iter()
        .map(|p| hex::decode(&std::fs::read_to_string(p).expect("readable")).expect("hex"))
        .collect();
    let mut records = Vec::with_capacity(64);
    let mut text = String::with_capacity(16 * 1024);
    let mut n = 0usize;
    for _ in 0..rounds {
        for f in &frames {
            let f = black_box(f.as_slice());
            match mode.as_str() {
                // Loading only: the baseline the other modes are compared against.
                "none" => {}
                "scaled" => {
                    if decode_wired_into(f, &mut records).is_ok() {
                        for r in &records {
                            if let Value::Decimal(d) = r.value() {
                                black_box(d);
                            }
                            black_box(r.value_information());
                        }
                        n += records.len();
                    }
                }
                "json" => {
                    if let Ok(t) = decode_wired(f) {
                        text.clear();
                        json::render(&t, &mut text);
                        n += black_box(&text).len();
                    }
                }
                "xml" | "xml-normalized" => {
                    if let Ok(t) = decode_wired(f) {
                        let style = if mode == "xml" {
                            libmbus_xml::XmlStyle::Plain
                        } else {
                            libmbus_xml::XmlStyle::Normalized
                        };
                        text.clear();
                        let _ = libmbus_xml::render(&t, style, &mut text);
                        n += black_box(&text).len();
                    }
                }
                other => panic!("unknown mode {other}: none, scaled, json, xml, xml-normalized"),
            }
        }
    }
    println!("{mode}: {rounds} rounds of {} frames, {n}", frames.len());
}
