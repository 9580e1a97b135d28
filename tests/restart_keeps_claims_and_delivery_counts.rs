//! Claims survive a restart (same id, same messages, still enforced), renewals and releases
//! too, and so do delivery counts: a message delivered once before the restart moves to its
//! dead-letter queue on its next delivery after it.

mod common;
use common::*;
use serde_json::json;

#[test]
fn claims_and_delivery_counts_survive() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &[]);
    let mut c = server.client();
    let (work, other) = queues_on_each_shard(&c.project.clone(), "cl");
    let ids = c.post_messages(&work, &["\"a\"", "\"b\"", "\"c\""]);
    let claim = c.post(&format!("/v2/queues/{work}/claims?limit=2"), r#"{"ttl": 300, "grace": 60}"#);
    assert_eq!(claim.status, 201);
    let claim_href = claim.header("location").unwrap().to_owned();
    let claimed: Vec<String> = claim.json()["messages"].as_array().unwrap().iter().map(|m| id_of(&m["href"])).collect();
    assert_eq!(claimed, ids[..2]);
    assert_eq!(c.request("PATCH", &claim_href, Some(r#"{"ttl": 600, "grace": 60}"#), &[]).status, 204);
    // A released claim stays released.
    let released = c.post(&format!("/v2/queues/{work}/claims?limit=1"), "{}");
    let released_href = released.header("location").unwrap().to_owned();
    assert_eq!(c.delete(&released_href).status, 204);

    // Delivery counts: a dead-letter setup on the other shard, one delivery before the restart.
    let dlq = format!("{other}-dlq");
    let meta = format!(r#"{{"_max_claim_count": 1, "_dead_letter_queue": "{dlq}"}}"#);
    assert_eq!(c.put(&format!("/v2/queues/{other}"), Some(&meta)).status, 201);
    c.post_messages(&other, &[r#"{"job": 1}"#]);
    let first = c.post(&format!("/v2/queues/{other}/claims"), "{}");
    assert_eq!(first.status, 201);
    assert_eq!(c.delete(first.header("location").unwrap()).status, 204);
    server.kill();

    let server = Server::start_in(dir.path(), &[]);
    let mut c = server.client();
    let view = c.get(&claim_href);
    assert_eq!(view.status, 200, "{}", view.text());
    let view = view.json();
    assert_eq!(view["ttl"], 600);
    let held: Vec<String> = view["messages"].as_array().unwrap().iter().map(|m| id_of(&m["href"])).collect();
    assert_eq!(held, ids[..2]);
    // Still enforced: deleting a claimed message without its claim is refused.
    assert_eq!(c.delete(&format!("/v2/queues/{work}/messages/{}", ids[0])).status, 403);
    assert_eq!(c.get(&released_href).status, 404);
    // The free one is claimable; the claimed ones are not.
    let next = c.post(&format!("/v2/queues/{work}/claims?limit=5"), "{}");
    let took: Vec<String> = next.json()["messages"].as_array().unwrap().iter().map(|m| id_of(&m["href"])).collect();
    assert_eq!(took, ids[2..]);
    // New claims get new ids.
    assert_ne!(next.header("location").unwrap(), claim_href);

    // The message was delivered once already: its next delivery moves it instead.
    assert_eq!(c.post(&format!("/v2/queues/{other}/claims"), "{}").status, 204);
    // The move happens on the dead-letter queue's shard: a long poll there sees it arrive.
    let moved = c.get(&format!("/v2/queues/{dlq}/messages?echo=true&wait=20")).json()["messages"].clone();
    assert_eq!(moved[0]["body"], json!({"job": 1}));
}
