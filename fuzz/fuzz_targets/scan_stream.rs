//! A byte stream through `FrameReader` in pieces; the reader must terminate, never hold more
//! than one frame's worth of bytes, and only yield frames that `Frame::parse` accepts.
//!
//! The first input byte picks the chunk sizes, so libFuzzer explores how the stream is split
//! as well as what it contains.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use meterbridge::wire::wired::{Frame, FrameReader};

/// No frame is longer than 255 + 6 bytes, so a reader waiting on more holds less than that.
const MAX_FRAME: usize = 255 + 6;

fuzz_target!(|data: &[u8]| {
    let Some((&pattern, stream)) = data.split_first() else {
        return;
    };
    let chunked = read(stream, pattern);
    // Where frames start and end depends on the bytes, not on how they arrived.
    let whole = read(stream, 0);
    assert_eq!(chunked, whole);
});

/// Frames read from `stream`, pushed in the chunks `pattern` picks (see [`common::chunks`]).
fn read(stream: &[u8], pattern: u8) -> Vec<Vec<u8>> {
    let mut reader = FrameReader::new();
    let mut frames = Vec::new();
    for chunk in common::chunks(stream, pattern) {
        reader.push(chunk.bytes);
        loop {
            let before = reader.pending();
            let Some(item) = reader.next_frame() else {
                break;
            };
            assert!(reader.pending() < before, "an item consumed no input");
            if let Ok(frame) = item {
                assert!(Frame::parse(&frame).is_ok(), "yielded frame does not parse");
                frames.push(frame);
            }
        }
        assert!(
            reader.pending() < MAX_FRAME,
            "reader holds {} bytes",
            reader.pending()
        );
    }
    frames
}
