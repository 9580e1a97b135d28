//! `GET /metrics` on a 2-shard server: Prometheus text without Zaqar headers, per shard and in
//! total, counting what the API did.

mod common;

use std::collections::HashMap;

use common::{queues_on_each_shard, Server};

/// Samples by their full name with labels, e.g. `marconi_queues{shard="all"}`.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l:?}"));
            (name.to_owned(), value.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")))
        })
        .collect()
}

#[test]
fn metrics_count_requests_connections_queues_and_hops() {
    let server = Server::start();
    let mut c = server.client();
    let (a, b) = queues_on_each_shard("test-project", "m");
    assert_eq!(c.put(&format!("/v2/queues/{a}"), None).status, 201);
    assert_eq!(c.put(&format!("/v2/queues/{b}"), None).status, 201);
    c.post_messages(&a, &[r#""hello""#, r#""world""#]);
    c.post_messages(&b, &[r#"{"n": 1}"#]);
    assert_eq!(c.request("POST", &format!("/v2/queues/{a}/claims"), Some("{}"), &[]).status, 201);
    assert_eq!(c.get("/v2/nope").status, 404);

    // No Client-ID or X-Project-ID: scrapers send none.
    let mut raw = std::net::TcpStream::connect(server.addr).unwrap();
    std::io::Write::write_all(&mut raw, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut raw, &mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");

    let s = samples(body);
    let get = |k: &str| *s.get(k).unwrap_or_else(|| panic!("no sample {k} in\n{body}"));
    assert_eq!(get("marconi_shards"), 2.0);
    assert_eq!(get(r#"marconi_queues{shard="all"}"#), 2.0);
    assert_eq!(get(r#"marconi_queues{shard="0"}"#), 1.0);
    assert_eq!(get(r#"marconi_messages{shard="all"}"#), 3.0);
    assert_eq!(get(r#"marconi_claims{shard="all"}"#), 1.0);
    assert!(get(r#"marconi_message_bytes{shard="all"}"#) >= 16.0);
    assert_eq!(get(r#"marconi_http_requests_total{shard="all",route="queue",method="PUT",status="201"}"#), 2.0);
    assert_eq!(get(r#"marconi_http_requests_total{shard="all",route="messages",method="POST",status="201"}"#), 2.0);
    assert_eq!(get(r#"marconi_http_requests_total{shard="all",route="claims",method="POST",status="201"}"#), 1.0);
    assert_eq!(get(r#"marconi_http_requests_total{shard="all",route="unmatched",method="GET",status="404"}"#), 1.0);
    assert_eq!(get(r#"marconi_http_request_duration_seconds_count{shard="all",route="queue"}"#), 2.0);
    assert_eq!(get(r#"marconi_http_request_duration_seconds_bucket{shard="all",route="queue",le="+Inf"}"#), 2.0);
    // One connection made every request, so its shard forwarded the other shard's work.
    assert!(get(r#"marconi_mesh_hops_total{shard="all"}"#) >= 2.0);
    assert!(get(r#"marconi_connections_accepted_total{shard="all"}"#) >= 2.0);
    assert!(get(r#"marconi_connections_open{shard="all"}"#) >= 1.0);
    assert!(s.contains_key(r#"marconi_mesh_depth{shard="0",peer="1"}"#));
    // The durable store (the default) reports its files and its group-commit flushes.
    assert!(get(r#"marconi_storage_segments{shard="all"}"#) >= 2.0);
    assert!(get(r#"marconi_storage_disk_bytes{shard="all"}"#) > 0.0);
    assert!(get(r#"marconi_storage_flushes_total{shard="all"}"#) >= 1.0);
    assert!(get(r#"marconi_storage_flush_duration_seconds_count{shard="all"}"#) >= 1.0);
    // A fresh data directory: recovery had nothing to read.
    assert_eq!(get(r#"marconi_storage_recovered_records{shard="all"}"#), 0.0);
    assert!(s.contains_key(r#"marconi_storage_recovery_seconds{shard="all"}"#));
    // No long poll was made; each way one can end is a family member from the start.
    for ended in ["immediate", "woken", "scheduled", "timeout", "shutdown", "cancelled"] {
        assert_eq!(get(&format!("marconi_long_polls_total{{shard=\"all\",ended=\"{ended}\"}}")), 0.0);
    }
    assert_eq!(get(r#"marconi_long_polls_parked{shard="all"}"#), 0.0);
}
