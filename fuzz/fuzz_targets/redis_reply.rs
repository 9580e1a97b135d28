//! Feeds arbitrary bytes to the Redis client's RESP2 reply parser the way its connections do:
//! reply by reply, in fragments whose size the input picks, honouring the parser's "need at
//! least n bytes" hint.
//!
//! Beyond "never panics" and "the bounds hold", it checks that fragmentation changes nothing
//! (the same replies, then the same error or the same leftover bytes as when parsed whole), and
//! that every reply parsed re-encodes to bytes that parse back to the same value.
//!
//! Run: `cargo +nightly fuzz run redis_reply` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use marconi::redis::resp::{parse, Parsed, ProtocolError, Value, MAX_REPLY_BYTES};

/// Replies parsed from `data` delivered `size` bytes at a time, and how parsing ended: the
/// error, or the bytes left unparsed.
fn parse_in(data: &[u8], size: usize) -> (Vec<Value>, Result<Vec<u8>, ProtocolError>) {
    let (mut values, mut start, mut end, mut need) = (Vec::new(), 0, 0, 0);
    while end < data.len() {
        end = (end + size).min(data.len());
        while end - start >= need && start < end {
            match parse(&data[start..end]) {
                Ok(Parsed::Reply(value, used)) => {
                    assert!(used > 0 && used <= end - start, "a reply uses what is there");
                    assert!(used <= MAX_REPLY_BYTES, "the reply bound held");
                    values.push(value);
                    start += used;
                    need = 0;
                }
                Ok(Parsed::Incomplete(n)) => {
                    assert!(n > end - start, "a hint asks for more than is there");
                    need = n;
                }
                Err(e) => return (values, Err(e)),
            }
        }
    }
    (values, Ok(data[start..].to_vec()))
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, data)) = input.split_first() else { return };
    let whole = parse_in(data, data.len().max(1));
    let pieces = parse_in(data, usize::from(first % 64) + 1);
    assert_eq!(whole, pieces, "fragmentation changed the replies");
    for value in &whole.0 {
        let mut bytes = Vec::new();
        value.encode(&mut bytes);
        match parse(&bytes) {
            Ok(Parsed::Reply(again, used)) => {
                assert_eq!(&again, value, "re-encoding round-trips");
                assert_eq!(used, bytes.len());
            }
            // A status line with invalid UTF-8 is read lossily: U+FFFD takes three bytes, so its
            // re-encoding may pass the line bound the original kept.
            Err(ProtocolError::LineTooLong) => {}
            other => panic!("a re-encoded reply does not parse: {other:?}"),
        }
    }
});
