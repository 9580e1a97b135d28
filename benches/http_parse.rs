//! Hot paths of the HTTP layer: parsing the heads the API sees most, decoding a chunked body,
//! and serializing a typical response. `cargo bench --bench http_parse`; under `cargo test` each
//! benchmark runs once, which keeps this file compiling and working.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use marconi::config::HttpLimits;
use marconi::http::{ChunkedDecoder, ConnectionHeader, HeadParser, Response};

/// A message post as python-zaqarclient sends it (headers in its order, body not included).
const POST_HEAD: &[u8] = b"POST /v2/queues/fizbit/messages HTTP/1.1\r\n\
Host: zaqar.example.com:8888\r\n\
User-Agent: python-zaqarclient/2.7.0\r\n\
Accept-Encoding: gzip, deflate\r\n\
Accept: application/json\r\n\
Connection: keep-alive\r\n\
Content-Type: application/json\r\n\
Client-ID: 3381af92-2b9e-11e3-b191-71861300734c\r\n\
X-Project-ID: 518b51ea133c4facadae42c328d6b77b\r\n\
X-Auth-Token: gAAAAABl9f3kqJc8r1xkR5b2aW1pTQ9zY3hT0m8r2v6pQwEr\r\n\
Content-Length: 92\r\n\r\n";

/// A claim-less message listing with the usual query.
const GET_HEAD: &[u8] = b"GET /v2/queues/fizbit/messages?echo=true&include_claimed=false&limit=10 HTTP/1.1\r\n\
Host: zaqar.example.com:8888\r\n\
User-Agent: python-zaqarclient/2.7.0\r\n\
Accept: application/json\r\n\
Client-ID: 3381af92-2b9e-11e3-b191-71861300734c\r\n\
X-Project-ID: 518b51ea133c4facadae42c328d6b77b\r\n\r\n";

fn parse_heads(c: &mut Criterion) {
    let limits = HttpLimits::default();
    let mut group = c.benchmark_group("http_parse");
    for (name, head) in [("post_head", POST_HEAD), ("get_head", GET_HEAD)] {
        group.throughput(Throughput::Bytes(head.len() as u64));
        let mut parser = HeadParser::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                parser.reset();
                let len = parser.parse(black_box(head), &limits).ok().flatten();
                let view = parser.head(head);
                // What the API reads of every request.
                black_box((len, view.method(), view.path(), view.query(), view.header("client-id")));
                black_box(view.header("x-project-id"));
            })
        });
    }
    // The same head arriving 64 bytes per read: the cost of the incremental scan.
    group.throughput(Throughput::Bytes(POST_HEAD.len() as u64));
    let mut parser = HeadParser::new();
    group.bench_function("post_head_in_64_byte_reads", |b| {
        b.iter(|| {
            parser.reset();
            let mut end = 0;
            loop {
                end = (end + 64).min(POST_HEAD.len());
                if let Ok(Some(len)) = parser.parse(black_box(&POST_HEAD[..end]), &limits) {
                    break black_box(len);
                }
            }
        })
    });
    group.finish();
}

fn decode_chunked(c: &mut Criterion) {
    let mut body = Vec::new();
    for _ in 0..16 {
        body.extend_from_slice(b"400;ext=1\r\n");
        body.extend(std::iter::repeat_n(b'm', 0x400));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let mut group = c.benchmark_group("http_chunked");
    group.throughput(Throughput::Bytes(body.len() as u64));
    let mut out = Vec::with_capacity(body.len());
    group.bench_function("16k_in_1k_chunks", |b| {
        b.iter(|| {
            out.clear();
            let mut decoder = ChunkedDecoder::new(1 << 20);
            black_box(decoder.decode(black_box(&body), &mut out).ok())
        })
    });
    group.finish();
}

fn serialize_response(c: &mut Criterion) {
    let mut resp = Response::new();
    let mut out = Vec::with_capacity(4096);
    c.bench_function("http_response/json_201", |b| {
        b.iter(|| {
            resp.reset();
            resp.body.extend_from_slice(br#"{"resources": ["/v2/queues/fizbit/messages/51db6f78c508f17ddc924357"]}"#);
            resp.json(201);
            resp.header("Location", "/v2/queues/fizbit/messages?ids=51db6f78c508f17ddc924357");
            out.clear();
            resp.write_to(&mut out, false, ConnectionHeader::Default);
            black_box(out.len())
        })
    });
}

criterion_group!(benches, parse_heads, decode_chunked, serialize_response);
criterion_main!(benches);
