//! Deletes stay deleted across restarts: single, bulk, with a claim, popped and purged messages.

mod common;
use common::*;

#[test]
fn deleted_messages_stay_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &[]);
    let mut c = server.client();
    let (a, b) = queues_on_each_shard(&c.project.clone(), "del");
    let mut kept = Vec::new();
    for q in [&a, &b] {
        let ids = c.post_messages(q, &["1", "2", "3", "4", "5", "6", "7"]);
        assert_eq!(c.delete(&format!("/v2/queues/{q}/messages/{}", ids[0])).status, 204);
        assert_eq!(c.delete(&format!("/v2/queues/{q}/messages?ids={},{}", ids[1], ids[2])).status, 204);
        let claim = c.post(&format!("/v2/queues/{q}/claims?limit=1"), "{}");
        assert_eq!(claim.status, 201);
        let href = claim.json()["messages"][0]["href"].as_str().unwrap().to_owned();
        assert_eq!(c.delete(&href).status, 204, "delete {href} with its claim");
        let popped = c.delete(&format!("/v2/queues/{q}/messages?pop=1"));
        assert_eq!(popped.status, 200, "{}", popped.text());
        kept.push(ids[5..].to_vec());
    }
    server.kill();

    let server = Server::start_in(dir.path(), &[]);
    let mut c = server.client();
    for (q, ids) in [&a, &b].iter().zip(&kept) {
        let left: Vec<String> = c.all_messages(q).iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(&left, ids, "{q}");
    }
    server.kill();

    // A second restart replays the same log (and whatever compaction made of it) the same way.
    let server = Server::start_in(dir.path(), &[]);
    let mut c = server.client();
    for (q, ids) in [&a, &b].iter().zip(&kept) {
        assert_eq!(c.all_messages(q).len(), ids.len());
    }
}
