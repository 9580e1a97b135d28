use std::io::Read;

use proptest::prelude::*;

use super::*;
use crate::{chunk, last_chunk, read_response, ReadBuf, ReadError};

/// How a connection might deliver bytes: all at once down to one at a time.
const FRAGMENTS: [usize; 7] = [100_000, 1000, 100, 10, 5, 2, 1];

/// A reader handing out `data` in pieces of the given sizes (the last size repeats).
struct Pieces<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    at: usize,
}

impl<'a> Pieces<'a> {
    fn new(data: &'a [u8], sizes: Vec<usize>) -> Self {
        Pieces { data, sizes, at: 0 }
    }
}

impl Read for Pieces<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let size = self.sizes.get(self.at).or(self.sizes.last()).copied().unwrap_or(1).max(1);
        self.at += 1;
        let n = size.min(out.len()).min(self.data.len());
        let (now, later) = self.data.split_at(n);
        out[..n].copy_from_slice(now);
        self.data = later;
        Ok(n)
    }
}

fn limits() -> Limits {
    Limits { head_bytes: 1024, body_bytes: 4096 }
}

/// Reads responses from `input` delivered in pieces of `sizes`, until the input is used up or a
/// read fails; returns them and the error that ended it, if any.
fn read_all(input: &[u8], sizes: Vec<usize>, parser: &Parser) -> (Vec<OwnedResponse>, Option<Error>) {
    let mut reader = Pieces::new(input, sizes);
    let mut rb = ReadBuf::new();
    let mut out = Vec::new();
    loop {
        if reader.data.is_empty() && rb.data().is_empty() && !out.is_empty() {
            return (out, None);
        }
        match read_response(&mut reader, &mut rb, parser.clone()) {
            Ok(r) => out.push(r),
            Err(ReadError::Http(e)) => return (out, Some(e)),
            Err(ReadError::Io(e)) => panic!("{e}"),
        }
    }
}

/// One response from `input` at every fragment size: all must agree. Returns it and the bytes
/// left after it.
fn one(input: &[u8], parser: Parser) -> Result<(OwnedResponse, Vec<u8>), Error> {
    let mut first = None;
    for fragment in FRAGMENTS {
        let mut reader = Pieces::new(input, vec![fragment]);
        let mut rb = ReadBuf::new();
        let result = match read_response(&mut reader, &mut rb, parser.clone()) {
            Ok(r) => Ok((r, [rb.data(), reader.data].concat())),
            Err(ReadError::Http(e)) => Err(e),
            Err(ReadError::Io(e)) => panic!("{e}"),
        };
        match &first {
            None => first = Some(result),
            Some(expected) => assert_eq!(&result, expected, "fragment size {fragment} parsed differently"),
        }
    }
    first.unwrap_or(Err(Error::Closed))
}

fn ok(input: &[u8]) -> (OwnedResponse, Vec<u8>) {
    one(input, Parser::new(limits())).unwrap()
}

fn err(input: &[u8]) -> Error {
    one(input, Parser::new(limits())).unwrap_err()
}

#[test]
fn content_length() {
    let (r, rest) = ok(
        b"HTTP/1.1 201 Created\r\nLocation: /v2/queues/q/claims/abc\r\nContent-Length: 15\r\n\r\n{\"resources\":1}NEXT",
    );
    assert_eq!((r.status, r.body.as_slice(), r.close), (201, &b"{\"resources\":1}"[..], false));
    assert_eq!(r.header("location"), Some("/v2/queues/q/claims/abc"));
    assert_eq!(r.headers, [("Location", "/v2/queues/q/claims/abc"), ("Content-Length", "15")].map(owned));
    assert_eq!(rest, b"NEXT");
}

fn owned((n, v): (&str, &str)) -> (String, String) {
    (n.to_owned(), v.to_owned())
}

#[test]
fn chunked_with_extensions_and_trailers() {
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;ext=1;q=\"a b\"\r\nhello\r\n6 ; x\r\n world\r\nA\r\n, and more\r\n000\r\nX-Trailer: 1\r\nOther:\r\n\r\nNEXT";
    let (r, rest) = ok(raw);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello world, and more"[..]));
    assert_eq!(rest, b"NEXT");
    let (r, _) = ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert!(r.body.is_empty());
}

#[test]
fn chunked_bodies_decode_in_place_and_the_buffer_shrinks() {
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
    let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".len();
    let mut buf = raw[..head + 11].to_vec(); // through the second size line
    let mut p = Parser::new(limits());
    let Status::Incomplete { len } = p.parse(&mut buf).unwrap() else { panic!("complete too early") };
    assert_eq!((len, &buf[head..len]), (head + 3, &b"abc"[..]), "framing gone, the decoded body stays");
    buf.truncate(len);
    buf.extend_from_slice(&raw[head + 11..]);
    buf.extend_from_slice(b"NEXT");
    let Status::Complete(done) = p.parse(&mut buf).unwrap() else { panic!("incomplete") };
    assert_eq!(done.response(&buf).body, b"abcdef");
    assert_eq!(&buf[done.consumed()..], b"NEXT");
    assert_eq!(p.parse(&mut buf).unwrap(), Status::Complete(done), "a finished parser repeats itself");
}

#[test]
fn bodies_until_close() {
    let (r, rest) = ok(b"HTTP/1.0 200 OK\r\n\r\nall of it");
    assert_eq!((r.body.as_slice(), r.close, rest.as_slice()), (&b"all of it"[..], true, &b""[..]));
    let (r, _) = ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzipped");
    assert_eq!((r.body.as_slice(), r.close), (&b"zipped"[..], true));
    let mut p = Parser::new(limits());
    let mut buf = b"HTTP/1.1 200 OK\r\n\r\nabc".to_vec();
    assert_eq!(p.parse(&mut buf).unwrap(), Status::Incomplete { len: buf.len() }, "only the close ends it");
    assert_eq!(p.finish(&mut buf).unwrap().response(&buf).body, b"abc");
}

#[test]
fn responses_without_a_body() {
    for status in ["204 No Content", "304 Not Modified", "101 Switching Protocols"] {
        let (r, rest) = ok(format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\n\r\nNEXT").as_bytes());
        assert!(r.body.is_empty(), "{status}");
        assert_eq!(rest, b"NEXT", "{status}");
    }
    let (r, rest) =
        one(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nNEXT", Parser::new(limits()).head_request(true)).unwrap();
    assert_eq!((r.status, r.body.len(), rest.as_slice()), (200, 0, &b"NEXT"[..]));
    assert!(ok(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n").0.close);
}

#[test]
fn interim_responses_are_skipped_or_reported() {
    let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
    let (r, rest) = ok(raw);
    assert_eq!((r.status, r.body.as_slice(), rest.is_empty()), (201, &b"ok"[..], true));
    assert_eq!(r.headers, [owned(("Content-Length", "2"))], "the final head's fields only");
    let (all, end) = read_all(raw, vec![3], &Parser::new(limits()).report_interim(true));
    assert_eq!(end, None);
    assert_eq!(all.iter().map(|r| r.status).collect::<Vec<_>>(), [100, 103, 201]);
    assert_eq!(all[1].header("link"), Some("</a>"));
}

#[test]
fn pipelined_responses_in_one_buffer() {
    let mut raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec();
    raw.extend_from_slice(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n");
    raw.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
    raw.extend_from_slice(b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 1\r\n\r\n!");
    for fragment in FRAGMENTS {
        let (all, end) = read_all(&raw, vec![fragment], &Parser::new(limits()));
        assert_eq!(end, None, "fragment {fragment}");
        let seen: Vec<_> = all.iter().map(|r| (r.status, r.body.as_slice(), r.close)).collect();
        assert_eq!(seen, [(200, &b"ok"[..], false), (200, b"ab", false), (204, b"", false), (404, b"!", true)]);
    }
}

#[test]
fn connection_reuse() {
    assert!(ok(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").0.close, "HTTP/1.0 closes by default");
    assert!(!ok(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n").0.close);
    assert!(ok(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n").0.close);
    assert!(!ok(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").0.close);
}

#[test]
fn framing_headers_are_strict() {
    let bad_length = Error::Framing("bad Content-Length");
    for value in ["x", "-1", "+1", "1 2", "", "99999999999999999999", "0x10"] {
        assert_eq!(
            err(format!("HTTP/1.1 200 OK\r\nContent-Length: {value}\r\n\r\n").as_bytes()),
            bad_length,
            "{value:?}"
        );
    }
    assert_eq!(ok(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nab").0.body, b"ab");
    assert_eq!(err(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: \r\n\r\nab"), bad_length);
    assert_eq!(
        err(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
        Error::Framing("Content-Length values differ")
    );
    assert_eq!(
        err(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Error::Framing("both Transfer-Encoding and Content-Length")
    );
    assert_eq!(
        err(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        Error::Framing("Transfer-Encoding in an HTTP/1.0 response")
    );
}

#[test]
fn malformed_heads() {
    assert!(matches!(err(b"SMTP ready\r\n\r\n"), Error::Head(_)));
    assert!(matches!(err(b"HTTP/1.1 2000 OK\r\n\r\n"), Error::Head(_)));
    assert!(matches!(err(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n"), Error::Head(_)));
    assert!(matches!(err(b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n"), Error::Head(_)));
    assert_eq!(err(b"HTTP/1.1 099 Odd\r\n\r\n"), Error::Status(99));
    // Junk is refused at its first bytes, not after a whole head's worth.
    assert!(matches!(Parser::new(limits()).parse(&mut b"\x16\x03\x01".to_vec()), Err(Error::Head(_))));
}

#[test]
fn malformed_chunks() {
    let chunked = |body: &str| err(format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{body}").as_bytes());
    let cases: [(&[&str], Error); 7] = [
        (&["zz\r\n", "\r\n", ";x\r\n"], Error::Chunked("missing chunk size")),
        (&["2x\r\nab\r\n", "2;a\u{1}\r\nab\r\n"], Error::Chunked("invalid chunk size line")),
        (&["00000000000000001\r\n"], Error::Chunked("chunk size too long")),
        (&["2\nab\r\n", "0\r\nX: 1\n\r\n"], Error::Chunked("lines must end in CRLF")),
        (&["2\r\nabXY", "2\r\nab\n"], Error::Chunked("chunk data must end in CRLF")),
        (&["0\r\nno colon\r\n\r\n", "0\r\nX: a\u{7f}\r\n\r\n"], Error::Chunked("malformed trailer field")),
        (&["ffffffffffffffff\r\n"], Error::BodyTooLarge { limit: 4096 }),
    ];
    for (bodies, expected) in cases {
        for body in bodies {
            assert_eq!(chunked(body), expected, "{body:?}");
        }
    }
}

#[test]
fn early_close() {
    assert_eq!(err(b""), Error::Closed);
    assert_eq!(err(b"HTTP/1.1 200 OK\r\nContent-"), Error::Truncated);
    assert_eq!(err(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"), Error::Truncated);
    assert_eq!(err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"), Error::Truncated);
    assert_eq!(err(b"HTTP/1.1 100 Continue\r\n\r\n"), Error::Truncated, "an interim answer is not the answer");
}

#[test]
fn limits_are_enforced() {
    let big = "x".repeat(1100);
    assert_eq!(err(format!("HTTP/1.1 200 OK\r\nX: {big}\r\n\r\n").as_bytes()), Error::HeadTooLarge { limit: 1024 });
    assert_eq!(err(format!("HTTP/1.1 200 OK\r\nX: {big}").as_bytes()), Error::HeadTooLarge { limit: 1024 });
    let interims = "HTTP/1.1 100 Continue\r\n\r\n".repeat(50);
    assert_eq!(err(interims.as_bytes()), Error::HeadTooLarge { limit: 1024 }, "interim heads count");
    let many: String = (0..=MAX_HEADERS).map(|i| format!("H{i}: v\r\n")).collect();
    assert_eq!(err(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_bytes()), Error::TooManyHeaders);
    let few: String = (1..MAX_HEADERS).map(|i| format!("H{i}: v\r\n")).collect();
    let head = format!("HTTP/1.1 200 OK\r\n{few}Content-Length: 0\r\n\r\n");
    assert_eq!(ok(head.as_bytes()).0.headers.len(), MAX_HEADERS);

    let too_large = Error::BodyTooLarge { limit: 4096 };
    assert_eq!(err(b"HTTP/1.1 200 OK\r\nContent-Length: 4097\r\n\r\n"), too_large, "refused before it is read");
    assert_eq!(
        ok(format!("HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n{}", "b".repeat(4096)).as_bytes()).0.body.len(),
        4096
    );
    assert_eq!(err(format!("HTTP/1.1 200 OK\r\n\r\n{}", "b".repeat(4097)).as_bytes()), too_large);
    let mut chunks = Vec::new();
    for _ in 0..5 {
        chunk(&mut chunks, &[b'c'; 1000]);
    }
    last_chunk(&mut chunks);
    let raw = [&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..], &chunks].concat();
    assert_eq!(err(&raw), too_large, "chunks add up");

    let metadata = Error::MetadataTooLarge { limit: 1024 };
    let chunked = |body: String| err(format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{body}").as_bytes());
    assert_eq!(chunked(format!("1;{big}\r\nx\r\n0\r\n\r\n")), metadata);
    assert_eq!(chunked(format!("1;{big}")), metadata, "refused before its end arrives");
    assert_eq!(chunked(format!("0\r\nX: {big}\r\n\r\n")), metadata);
    let ext = "e".repeat(600);
    assert_eq!(chunked(format!("1;{ext}\r\nx\r\n1;{ext}\r\ny\r\n0\r\n\r\n")), metadata, "extensions add up");
}

/// A response as a generator describes it, with the bytes it serializes to.
#[derive(Debug, Clone)]
struct Sample {
    raw: Vec<u8>,
    expect: OwnedResponse,
    head_request: bool,
}

#[derive(Debug, Clone)]
enum Body {
    Length,
    Chunked { sizes: Vec<usize>, extensions: bool, trailers: Vec<(String, String)> },
    UntilClose,
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,11}".prop_filter("not a framing field", |n| {
        !["content-length", "transfer-encoding", "connection"].contains(&n.to_ascii_lowercase().as_str())
    })
}

fn sample() -> impl Strategy<Value = Sample> {
    let status = prop::sample::select(vec![200u16, 201, 204, 304, 404, 503]);
    let fields = prop::collection::vec((token(), "[ -~]{0,20}"), 0..6);
    let body = prop::collection::vec(any::<u8>(), 0..600);
    let framing = prop_oneof![
        Just(Body::Length),
        (
            prop::collection::vec(1usize..200, 1..8),
            any::<bool>(),
            prop::collection::vec((token(), "[!-~]{0,10}"), 0..3)
        )
            .prop_map(|(sizes, extensions, trailers)| Body::Chunked { sizes, extensions, trailers }),
        Just(Body::UntilClose),
    ];
    (status, fields, body, framing, any::<bool>(), any::<bool>()).prop_map(
        |(status, fields, body, framing, interim, head_request)| {
            serialize(status, fields, body, framing, interim, head_request)
        },
    )
}

fn serialize(
    status: u16,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
    framing: Body,
    interim: bool,
    head_request: bool,
) -> Sample {
    let mut raw = Vec::new();
    if interim {
        raw.extend_from_slice(b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n");
    }
    raw.extend_from_slice(format!("HTTP/1.1 {status} Whatever\r\n").as_bytes());
    let mut headers: Vec<(String, String)> = fields.iter().map(|(n, v)| (n.clone(), v.trim().to_owned())).collect();
    for (n, v) in &fields {
        raw.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    let no_body = head_request || matches!(status, 204 | 304);
    let framing_field = match &framing {
        Body::Length => Some(("Content-Length", body.len().to_string())),
        Body::Chunked { .. } => Some(("Transfer-Encoding", "chunked".to_owned())),
        Body::UntilClose => None,
    };
    if let Some((n, v)) = framing_field {
        raw.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        headers.push((n.to_owned(), v));
    }
    let close = matches!(framing, Body::UntilClose) && !no_body;
    raw.extend_from_slice(b"\r\n");
    if !no_body {
        match framing {
            Body::Length | Body::UntilClose => raw.extend_from_slice(&body),
            Body::Chunked { sizes, extensions, trailers } => {
                let mut rest = body.as_slice();
                for size in sizes.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let (now, later) = rest.split_at((*size).min(rest.len()));
                    if extensions {
                        raw.extend_from_slice(format!("{:X} ; name=\"v\";x\r\n", now.len()).as_bytes());
                        raw.extend_from_slice(now);
                        raw.extend_from_slice(b"\r\n");
                    } else {
                        chunk(&mut raw, now);
                    }
                    rest = later;
                }
                raw.extend_from_slice(b"0\r\n");
                for (n, v) in trailers {
                    raw.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
                }
                raw.extend_from_slice(b"\r\n");
            }
        }
    }
    let body = if no_body { Vec::new() } else { body };
    Sample { raw, expect: OwnedResponse { status, headers, body, close }, head_request }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_response_split_anywhere_parses_the_same(
        s in sample(),
        sizes in prop::collection::vec(1usize..64, 1..16),
        next in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let parser = Parser::new(Limits { head_bytes: 4096, body_bytes: 4096 }).head_request(s.head_request);
        let mut input = s.raw.clone();
        if !s.expect.close {
            input.extend_from_slice(&next);
        }
        let mut reader = Pieces::new(&input, sizes);
        let mut rb = ReadBuf::new();
        let got = read_response(&mut reader, &mut rb, parser).map_err(|e| e.to_string());
        prop_assert_eq!(got, Ok(s.expect.clone()));
        let rest = [rb.data(), reader.data].concat();
        prop_assert_eq!(rest, if s.expect.close { Vec::new() } else { next });
    }

    #[test]
    fn random_bytes_never_panic(
        junk in prop::collection::vec(any::<u8>(), 0..400),
        prefix in prop::sample::select(vec![
            &b""[..],
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n",
        ]),
        sizes in prop::collection::vec(1usize..32, 1..8),
        head_request in any::<bool>(),
        report_interim in any::<bool>(),
        head_bytes in 0usize..300,
        body_bytes in 0usize..300,
    ) {
        let input = [prefix, &junk].concat();
        let parser = Parser::new(Limits { head_bytes, body_bytes }).head_request(head_request).report_interim(report_interim);
        let (all, _) = read_all(&input, sizes, &parser);
        for r in all {
            prop_assert!(r.body.len() <= body_bytes);
        }
    }
}
