//! The request path above HTTP: validating a message post (simd-json plus the body-span scan),
//! routing, the queue index (post, claim, delete) and the storage record codec. `cargo bench --bench engine`; under
//! `cargo test` each benchmark runs once, which keeps this file compiling and working.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use marconi::api::json::parse_post;
use marconi::api::router::route;
use marconi::config::ApiLimits;
use marconi::http::Method;
use marconi::queue::{ClaimParams, Engine, ListMessages, NewMessage};
use marconi::storage::{MemoryStore, QueueRef};

const POST_BODY: &[u8] =
    br#"{"messages": [{"ttl": 300, "body": {"event": "BackupStarted", "host": "db-7", "bytes": 1048576}}]}"#;

fn json(c: &mut Criterion) {
    let mut g = c.benchmark_group("json");
    let limits = ApiLimits::default();
    g.throughput(Throughput::Bytes(POST_BODY.len() as u64));
    g.bench_function("parse_post_1_message", |b| b.iter(|| parse_post(black_box(POST_BODY), &limits)));
    let ten = format!(
        "{{\"messages\": [{}]}}",
        [r#"{"ttl": 300, "body": {"event": "BackupStarted", "n": 7}}"#; 10].join(",")
    );
    g.throughput(Throughput::Bytes(ten.len() as u64));
    g.bench_function("parse_post_10_messages", |b| b.iter(|| parse_post(black_box(ten.as_bytes()), &limits)));
    g.finish();
}

fn routing(c: &mut Criterion) {
    c.bench_function("route/message_item", |b| {
        b.iter(|| route(black_box(Method::Delete), black_box("/v2/queues/fizbit/messages/0123456789abcdef01234567")))
    });
}

const Q: QueueRef<'static> = QueueRef { project: "518b51ea133c4facadae42c328d6b77b", name: "fizbit" };

fn engine_with(messages: usize) -> Engine<MemoryStore> {
    let mut e = Engine::new(MemoryStore::new(), ApiLimits::default(), 7);
    let body = br#"{"event": "x"}"#;
    let one = [NewMessage { ttl_s: Some(3600), delay_s: None, body: 0..body.len() as u32 }];
    for _ in 0..messages {
        e.post_messages(Q, 1, &one, body, body.len(), 1_000).expect("post");
    }
    e
}

fn index(c: &mut Criterion) {
    let body = br#"{"event": "BackupStarted", "n": 7}"#;
    let one = [NewMessage { ttl_s: Some(3600), delay_s: None, body: 0..body.len() as u32 }];
    let mut g = c.benchmark_group("index");
    g.bench_function("post_1", |b| {
        let mut e = engine_with(0);
        b.iter(|| e.post_messages(Q, 1, &one, body, body.len(), 1_000))
    });
    g.bench_function("claim_10_then_delete_10", |b| {
        b.iter_batched_ref(
            || engine_with(1000),
            |e| {
                let out =
                    e.claim(Q, ClaimParams { ttl_s: 60, grace_s: 60, limit: 10, secret: 7 }, 2_000).expect("claim");
                if let Some((cid, page)) = out.claim {
                    for m in page.messages {
                        e.delete_message(Q, m.id, Some(cid), 2_000).expect("delete");
                    }
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("list_10_of_1000", |b| {
        let e = engine_with(1000);
        let opts = ListMessages {
            after_seq: 500,
            limit: 10,
            client_hash: 2,
            echo: false,
            include_claimed: false,
            include_delayed: false,
        };
        b.iter(|| e.list_messages(Q, black_box(&opts), 2_000))
    });
    g.finish();
}

/// Encoding a message-append record (header, CRC32C, body) into a segment-sized buffer, and
/// verifying and decoding it back as recovery does.
fn record(c: &mut Criterion) {
    use marconi::storage::{codec, Record};
    let body = [b'x'; 256];
    let rec = Record::MessageAppend {
        queue: Q,
        seq: 42,
        created_ms: 1_700_000_000_000,
        ttl_s: 3600,
        delay_ms: 0,
        client_hash: 7,
    };
    let len = codec::padded(codec::encoded_len(&rec, body.len()));
    let mut buf = vec![0u8; len];
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Bytes(len as u64));
    g.bench_function("encode_message_256", |b| b.iter(|| codec::encode_into(black_box(&mut buf), &rec, &body)));
    codec::encode_into(&mut buf, &rec, &body);
    let mut seqs = Vec::new();
    g.bench_function("decode_message_256_with_crc", |b| {
        b.iter(|| codec::decode(black_box(&buf), &mut seqs, true).map(|d| d.is_some()))
    });
    g.finish();
}

criterion_group!(benches, json, routing, index, record);
criterion_main!(benches);
