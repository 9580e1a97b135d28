//! Messages posted before a restart, killed or clean, come back with the same ids, bodies
//! (byte for byte), TTLs and markers, on both shards; new ones never reuse an id.

mod common;
use common::*;

fn post_and_snapshot(c: &mut Client, queues: &[String]) -> Vec<Vec<serde_json::Value>> {
    for q in queues {
        c.post_messages(q, &[r#"{"n": 1,  "s": "x"}"#, "[1, 2.50]", "null"]);
        let big = format!("\"{}\"", "b".repeat(20_000));
        c.post_messages(q, &[&big]);
    }
    queues.iter().map(|q| c.all_messages(q)).collect()
}

fn strip_age(msgs: &[serde_json::Value]) -> Vec<serde_json::Value> {
    msgs.iter()
        .map(|m| {
            let mut m = m.clone();
            m.as_object_mut().unwrap().remove("age");
            m
        })
        .collect()
}

#[test]
fn messages_come_back_with_their_ids_after_a_kill_and_after_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &[]);
    let mut c = server.client();
    let (a, b) = queues_on_each_shard(&c.project.clone(), "keep");
    let queues = vec![a.clone(), b.clone()];
    let before = post_and_snapshot(&mut c, &queues);
    let raw_before = c.get(&format!("/v2/queues/{a}/messages?echo=true&limit=2")).text();
    server.kill();

    let mut server = Server::start_in(dir.path(), &[]);
    // Each shard replayed its queue's creation and its two posts (one record per message).
    for shard in ["0", "1"] {
        let replayed = metric(server.addr, &format!("marconi_storage_recovered_records{{shard=\"{shard}\"}}"));
        assert!(replayed >= 5.0, "shard {shard} replayed {replayed} records");
    }
    let mut c = server.client();
    let after: Vec<_> = queues.iter().map(|q| c.all_messages(q)).collect();
    for (x, y) in before.iter().zip(&after) {
        assert_eq!(x.len(), 4);
        assert_eq!(strip_age(x), strip_age(y));
    }
    // Bodies byte for byte (whitespace, number spelling), and markers (the next link) unchanged.
    let raw_after = c.get(&format!("/v2/queues/{a}/messages?echo=true&limit=2")).text();
    assert!(raw_after.contains(r#""body":{"n": 1,  "s": "x"}"#), "{raw_after}");
    let link = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap()["links"][0]["href"].clone();
    assert_eq!(link(&raw_before), link(&raw_after));

    // New posts continue the sequence.
    let new_ids = c.post_messages(&a, &["\"new\""]);
    let old_ids: Vec<String> = after[0].iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    assert!(!old_ids.contains(&new_ids[0]));
    assert!(new_ids[0] > *old_ids.last().unwrap(), "{new_ids:?} after {old_ids:?}");
    assert_eq!(server.terminate().code(), Some(0));

    let server = Server::start_in(dir.path(), &[]);
    let mut c = server.client();
    assert_eq!(c.all_messages(&a).len(), 5);
    assert_eq!(strip_age(&c.all_messages(&b)), strip_age(&after[1]));
}
