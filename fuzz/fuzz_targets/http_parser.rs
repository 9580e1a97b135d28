//! Feeds arbitrary bytes to the request-head parser and the chunked decoder the way a connection
//! does, in fragments whose size the input picks (nats-server fuzzes its parser with partial
//! deliveries for the same reason).
//!
//! Beyond "never panics", it checks that fragmentation changes nothing: a head that parses when
//! delivered whole parses to the same result when delivered in pieces, and a chunked body decodes
//! to the same bytes.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run http_parser` from the repository root, or `scripts/fuzz.sh`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use marconi::config::HttpLimits;
use marconi::http::{BodyFraming, ChunkedDecoder, HeadParser, RequestHead};

fn limits() -> HttpLimits {
    HttpLimits { max_head_bytes: 1024, max_headers: 8, max_body_bytes: 4096, ..HttpLimits::default() }
}

/// Everything a head exposes, owned, for comparison.
fn summary(head: &RequestHead<'_>) -> String {
    let headers: Vec<(&str, &[u8])> = head.headers().collect();
    format!(
        "{:?} {} {} {} {:?} {:?} ka={} {:?} ex={} len={}",
        head.method(),
        head.method_str(),
        head.path(),
        head.query(),
        head.version(),
        headers,
        head.keep_alive(),
        head.framing(),
        head.expects_continue(),
        head.len(),
    )
}

/// Parses one head from `data` delivered `fragment` bytes at a time.
fn parse_in(data: &[u8], fragment: usize, limits: &HttpLimits) -> Option<(usize, String, BodyFraming)> {
    let mut parser = HeadParser::new();
    let mut end = 0;
    while end < data.len() {
        end = (end + fragment).min(data.len());
        match parser.parse(&data[..end], limits) {
            Ok(Some(len)) => {
                assert!(len <= end && len <= limits.max_head_bytes);
                let head = parser.head(&data[..len]);
                return Some((len, summary(&head), head.framing()));
            }
            Ok(None) => assert!(end < limits.max_head_bytes),
            Err(_) => return None,
        }
    }
    None
}

fn decode_in(data: &[u8], fragment: usize, max: usize) -> Option<(Vec<u8>, usize)> {
    let mut decoder = ChunkedDecoder::new(max);
    let mut body = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let end = (at + fragment).min(data.len());
        let decoded = decoder.decode(&data[at..end], &mut body).ok()?;
        assert!(decoded.consumed <= end - at);
        at += decoded.consumed;
        if decoded.done {
            assert!(body.len() <= max);
            return Some((body, at));
        }
        assert_eq!(at, end, "an unfinished body takes all input");
    }
    None
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, data)) = input.split_first() else { return };
    let fragment = usize::from(first % 64) + 1;
    let limits = limits();

    let whole = parse_in(data, data.len().max(1), &limits);
    let pieces = parse_in(data, fragment, &limits);
    if whole.is_some() {
        assert_eq!(whole, pieces, "fragmentation changed the parse");
    }

    // The body after a head, or the whole input when no head parsed.
    let (rest, chunked) = match &whole {
        Some((len, _, framing)) => (&data[*len..], *framing == BodyFraming::Chunked),
        None => (data, true),
    };
    if chunked {
        let whole = decode_in(rest, rest.len().max(1), limits.max_body_bytes);
        let pieces = decode_in(rest, fragment, limits.max_body_bytes);
        if whole.is_some() {
            assert_eq!(whole, pieces, "fragmentation changed the body");
        }
    }
});
