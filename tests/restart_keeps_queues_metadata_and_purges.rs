//! Queues, their metadata (created, replaced, patched), deletes, re-creations and purges survive
//! a restart; a re-created queue's old message ids stay dead.

mod common;
use common::*;
use serde_json::json;

#[test]
fn queue_state_survives() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &[]);
    let mut c = server.client();
    let (a, b) = queues_on_each_shard(&c.project.clone(), "qs");
    assert_eq!(c.put(&format!("/v2/queues/{a}"), Some(r#"{"color": "red", "_default_message_ttl": 600}"#)).status, 201);
    let ops = r#"[{"op": "add", "path": "/metadata/size", "value": 3}, {"op": "remove", "path": "/metadata/color"}]"#;
    assert_eq!(c.patch(&format!("/v2/queues/{a}"), ops).status, 200);
    // Deleted, then re-created: ids of the first incarnation must not name messages of the second.
    let old_ids = c.post_messages(&b, &["\"old\""]);
    assert_eq!(c.delete(&format!("/v2/queues/{b}")).status, 204);
    let new_ids = c.post_messages(&b, &["\"new\""]);
    // Purged: empty, but the queue (and its metadata) stays.
    c.post_messages(&a, &["1", "2"]);
    assert_eq!(c.delete(&format!("/v2/queues/{a}/messages?ids=")).status, 400);
    assert_eq!(c.post(&format!("/v2/queues/{a}/purge"), r#"{"resource_types": ["messages"]}"#).status, 204);
    let gone = format!("{a}-gone");
    assert_eq!(c.put(&format!("/v2/queues/{gone}"), None).status, 201);
    assert_eq!(c.delete(&format!("/v2/queues/{gone}")).status, 204);
    server.kill();

    let server = Server::start_in(dir.path(), &[]);
    let mut c = server.client();
    let meta = c.get(&format!("/v2/queues/{a}")).json();
    assert_eq!(meta["size"], json!(3));
    assert!(meta.get("color").is_none(), "{meta}");
    assert_eq!(meta["_default_message_ttl"], json!(600));
    assert_eq!(c.all_messages(&a), Vec::<serde_json::Value>::new());
    let msgs = c.all_messages(&b);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["id"], json!(new_ids[0]));
    assert_eq!(c.get(&format!("/v2/queues/{b}/messages/{}", old_ids[0])).status, 404);
    assert_eq!(c.head(&format!("/v2/queues/{gone}")).status, 404);
    let listed = c.get("/v2/queues?detailed=true").json();
    let names: Vec<&str> = listed["queues"].as_array().unwrap().iter().map(|q| q["name"].as_str().unwrap()).collect();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort();
    assert_eq!(names, want);
    // Messages posted after the restart use the queue's default TTL from its recovered metadata.
    let r = c.post(&format!("/v2/queues/{a}/messages"), r#"{"messages": [{"body": 1}]}"#);
    assert_eq!(r.status, 201);
    assert_eq!(c.all_messages(&a)[0]["ttl"], json!(600));
}
