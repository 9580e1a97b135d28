//! Feeds arbitrary request targets to the router and the query-string parser the way the API
//! reads them: route the path, parse the query, ask it for every parameter the API reads and in
//! every type, and check that what the server percent-encodes into its own links decodes back.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run query_and_route` from the repository root, or
//! `scripts/fuzz.sh`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use marconi::api::query::{decode, encode, Query};
use marconi::api::router::route;
use marconi::http::Method;

const METHODS: [Method; 8] = [
    Method::Get,
    Method::Head,
    Method::Post,
    Method::Put,
    Method::Patch,
    Method::Delete,
    Method::Options,
    Method::Other,
];
const PARAMS: [&str; 12] = [
    "limit",
    "marker",
    "echo",
    "include_claimed",
    "include_delayed",
    "wait",
    "ids",
    "claim_ids",
    "claim_id",
    "pop",
    "detailed",
    "with_count",
];

fuzz_target!(|input: &[u8]| {
    let Some((&selector, rest)) = input.split_first() else { return };
    let target = String::from_utf8_lossy(rest);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let method = METHODS[usize::from(selector) % METHODS.len()];
    if let Ok(r) = route(method, path) {
        if let Some(q) = r.queue() {
            assert!(path.contains(q), "the queue name comes from the path");
        }
    }
    let q = Query::parse(query);
    for name in PARAMS {
        let _ = (q.get(name), q.u64(name), q.i64(name), q.bool(name), q.list(name));
    }
    for (k, v) in q.pairs() {
        assert!(!v.is_empty(), "blank values are dropped");
        let mut encoded = String::new();
        encode(k, &mut encoded);
        assert_eq!(decode(&encoded), k, "encode then decode");
    }
});
