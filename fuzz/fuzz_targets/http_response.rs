//! Feeds arbitrary bytes to wire's response parser the way a client connection does: read by
//! read, in fragments whose size the input picks, through the same `ReadBuf` the CLI, loadgen
//! and the test harnesses use.
//!
//! Beyond "never panics" and "the limits hold", it checks that fragmentation changes nothing:
//! bytes delivered in pieces give the same response (and the same bytes left for the next one)
//! as when delivered whole, or fail when those fail.
//!
//! Run: `cargo +nightly fuzz run http_response` from the repository root.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use wire::{read_response, Limits, OwnedResponse, Parser, ReadBuf};

const LIMITS: Limits = Limits { head_bytes: 1024, body_bytes: 4096 };

/// Hands out `data` at most `size` bytes per read.
struct Fragments<'a> {
    data: &'a [u8],
    size: usize,
}

impl Read for Fragments<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.size.min(out.len()).min(self.data.len());
        let (now, later) = self.data.split_at(n);
        out[..n].copy_from_slice(now);
        self.data = later;
        Ok(n)
    }
}

/// One response from `data` read `size` bytes at a time, and the bytes after it.
fn parse_in(data: &[u8], size: usize, parser: &Parser) -> Option<(OwnedResponse, Vec<u8>)> {
    let mut reader = Fragments { data, size };
    let mut rb = ReadBuf::new();
    let response = read_response(&mut reader, &mut rb, parser.clone()).ok()?;
    assert!(response.body.len() <= LIMITS.body_bytes, "the body limit held");
    Some((response, [rb.data(), reader.data].concat()))
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, data)) = input.split_first() else { return };
    let fragment = usize::from(first % 64) + 1;
    let parser = Parser::new(LIMITS).head_request(first & 0x40 != 0).report_interim(first & 0x80 != 0);
    let whole = parse_in(data, data.len().max(1), &parser);
    let pieces = parse_in(data, fragment, &parser);
    assert_eq!(whole, pieces, "fragmentation changed the response");
});
