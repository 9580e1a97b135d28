//! Under a steady produce/consume load the log keeps a bounded number of segments: compaction
//! retires the dead ones (copying a long-lived message forward, id unchanged), so disk use
//! follows live data, not the total ever written.

mod common;
use common::*;

const SEGMENT: &str = "131072";
const MAX_SEGMENTS: usize = 8;

fn wait_for_bound(dir: &std::path::Path) -> usize {
    let mut n = usize::MAX;
    for _ in 0..100 {
        n = segment_files(dir, 0).len();
        if n <= MAX_SEGMENTS {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    n
}

#[test]
fn steady_produce_and_consume_keeps_the_segment_count_bounded() {
    let dir = tempfile::tempdir().unwrap();
    // Posts a small segment can hold (start-up refuses a post limit larger than a segment).
    let args = ["--shards", "1", "--segment-size-bytes", SEGMENT, "--set", "api.max_messages_post_size_bytes=65536"];
    let server = Server::start_in(dir.path(), &args);
    let mut c = server.client();
    let keeper = c.post_messages("steady", &["\"keep me\""])[0].clone();
    let pad = format!("\"{}\"", "p".repeat(2000));
    let batch: Vec<&str> = vec![pad.as_str(); 10];
    let mut peak = 0;
    // About 60 segments' worth of records in all.
    for round in 0..400 {
        c.post_messages("steady", &batch);
        // The keeper's claim must outlive the whole loop however slow the machine is, or it is
        // claimed again and another message is left behind each time.
        let claim = c.post("/v2/queues/steady/claims?limit=10", r#"{"ttl": 43200, "grace": 60}"#);
        assert_eq!(claim.status, 201, "{}", claim.text());
        let hrefs: Vec<serde_json::Value> =
            claim.json()["messages"].as_array().unwrap().iter().map(|m| m["href"].clone()).collect();
        for href in hrefs {
            if id_of(&href) != keeper {
                let href = href.as_str().unwrap();
                assert_eq!(c.delete(href).status, 204);
            }
        }
        if round % 50 == 49 {
            let n = wait_for_bound(dir.path());
            peak = peak.max(n);
            assert!(n <= MAX_SEGMENTS, "round {round}: {n} segments");
        }
    }
    server.kill();
    let server = Server::start_in(dir.path(), &args);
    let mut c = server.client();
    let left = c.all_messages("steady");
    let ids: Vec<String> = left.iter().map(|m| id_of(&m["href"])).collect();
    // The keeper, and the one message each round leaves for the next (the first claim took the
    // keeper in its ten).
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], keeper);
    assert_eq!(left[0]["id"], serde_json::json!(keeper));
    assert_eq!(left[0]["body"], serde_json::json!("keep me"));
    // Ids after compaction and restart continue, never repeat.
    let next = c.post_messages("steady", &["1"]);
    assert!(next[0] > keeper);
    println!("peak segment files: {peak}");
}
