//! Two promises of the connection loop, checked through the server's own counters:
//! - idle keep-alive connections hold no buffer (the shards' pools have every buffer back), and
//!   closing connections leaves no deadline or buffer behind;
//! - pipelined posts on one connection in `sync` durability share flushes (one settle per
//!   batch), so N posts cost fewer than N `fdatasync`s, and every answer still comes after its
//!   flush.

mod common;
use common::*;
use std::io::Write;

const IDLE_CONNECTIONS: usize = 64;
const PIPELINED: usize = 32;

#[test]
fn idle_connections_hold_no_buffers() {
    let server = Server::start();
    let addr = server.addr;
    let mut idle: Vec<Client> = (0..IDLE_CONNECTIONS).map(|_| Client::connect(addr)).collect();
    for (i, c) in idle.iter_mut().enumerate() {
        let r = c.post_messages(&format!("idle-{}", i % 4), &[r#"{"n": 1}"#]);
        assert_eq!(r.len(), 1);
        assert_eq!(c.get("/v2/ping").status, 204);
    }
    // Every connection is open and idle now; only the scrape's own connection is busy, and it
    // holds its read buffer while its answer is made on the shard that serves it.
    let m = metrics(addr);
    assert!(m[r#"marconi_connections_open{shard="all"}"#] >= IDLE_CONNECTIONS as f64);
    assert!(
        m[r#"marconi_http_buffers_in_use{shard="all"}"#] <= 2.0,
        "idle connections hold buffers: {} in use",
        m[r#"marconi_http_buffers_in_use{shard="all"}"#]
    );
    assert!(m[r#"marconi_http_buffers_free{shard="all"}"#] > 0.0, "buffers went back to the pools");
    drop(idle);
    until_metrics(addr, "the idle connections closed", |m| m[r#"marconi_connections_open{shard="all"}"#] <= 1.0);
    let m = metrics(addr);
    assert!(m[r#"marconi_http_buffers_in_use{shard="all"}"#] <= 2.0);
}

#[test]
fn pipelined_posts_in_sync_mode_share_flushes() {
    let server = Server::start_with(&["--shards", "1", "--durability", "sync"]);
    let addr = server.addr;
    let mut c = server.client();
    assert_eq!(c.put("/v2/queues/piped", None).status, 201);
    let flushes = |addr| metric(addr, r#"marconi_storage_flushes_total{shard="all"}"#);
    let before = flushes(addr);
    let mut burst = Vec::new();
    for i in 0..PIPELINED {
        let body = format!(r#"{{"messages": [{{"ttl": 300, "body": {{"n": {i}}}}}]}}"#);
        burst.extend(c.build("POST", "/v2/queues/piped/messages", Some(&body), &[]));
    }
    c.stream.write_all(&burst).unwrap();
    for i in 0..PIPELINED {
        let r = c.read_response(false);
        assert_eq!(r.status, 201, "post {i}: {}", r.text());
    }
    let used = flushes(addr) - before;
    assert!(used >= 1.0, "sync answers come after a flush");
    assert!(used < PIPELINED as f64, "{PIPELINED} pipelined posts took {used} flushes");
    assert_eq!(c.all_messages("piped").len(), PIPELINED);
}
