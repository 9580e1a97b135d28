//! Two marconi nodes on one Redis Cluster serve the same queues: what one node wrote the other
//! reads, claims hold across nodes, a long poll parked on one node wakes for a post through the
//! other (and by its fallback when the wake-up is lost), delays and dead letters work across
//! slots, and `marconi check` judges the cluster.
//!
//! One cluster for the whole file (it takes seconds to form), the scenarios in turn.

mod common;
#[path = "support/redis_cluster.rs"]
mod redis_cluster;

use common::{id_of, polls_ended, until_metrics, Client, Server};
use redis_cluster::RedisCluster;
use serde_json::Value;
use std::process::Command;

fn node(cluster: &RedisCluster, extra: &[&str]) -> Server {
    let seeds = cluster.seeds();
    let mut args = vec!["--backend", "redis-cluster", "--redis-nodes", &seeds];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

fn client(server: &Server, project: &str) -> Client {
    server.client().with_project(project)
}

#[test]
fn two_nodes_share_queues_polls_delays_and_dead_letters() {
    let cluster = RedisCluster::start(3, 1);
    let a = node(&cluster, &[]);
    let b = node(&cluster, &["--set", "redis.poll_fallback_ms=300"]);
    shared_queues_and_claims(&a, &b);
    listings_merge_across_the_cluster(&a, &b);
    long_poll_wakes_across_nodes(&a, &b);
    lost_wake_up_is_covered_by_the_fallback(&cluster, &a, &b);
    delays_end_into_a_parked_poll(&a, &b);
    dead_letters_move_once_across_slots(&a, &b);
    queue_recreated_gets_new_ids(&a, &b);
    check_judges_the_cluster(&cluster);
    metrics_show_the_backend(&a);
}

fn metrics_show_the_backend(a: &Server) {
    let m = common::metrics(a.addr);
    let get = |name: &str| *m.get(name).unwrap_or_else(|| panic!("no sample {name}"));
    assert!(get("marconi_redis_calls_total{shard=\"all\"}") > 0.0);
    assert!(get("marconi_redis_waits_total{shard=\"all\",outcome=\"ok\"}") > 0.0, "writes waited for their replicas");
    let (batches, calls) =
        (get("marconi_redis_batches_total{shard=\"all\"}"), get("marconi_redis_batched_calls_total{shard=\"all\"}"));
    assert!(batches > 0.0 && calls >= batches, "{calls} calls in {batches} rounds");
    assert!(get("marconi_redis_call_duration_seconds_count{shard=\"all\"}") > 0.0);
}

fn shared_queues_and_claims(a: &Server, b: &Server) {
    let (mut ca, mut cb) = (client(a, "shared"), client(b, "shared"));
    assert_eq!(ca.put("/v2/queues/jobs", Some(r#"{"purpose": "work"}"#)).status, 201);
    let meta = cb.get("/v2/queues/jobs");
    assert_eq!(meta.status, 200, "{}", meta.text());
    assert_eq!(meta.json()["purpose"], "work");
    let ids = ca.post_messages("jobs", &["1", "2", "3"]);
    let listed = cb.get("/v2/queues/jobs/messages?echo=true");
    assert_eq!(listed.status, 200, "{}", listed.text());
    let bodies: Vec<Value> = listed.json()["messages"].as_array().unwrap().iter().map(|m| m["body"].clone()).collect();
    assert_eq!(bodies, [1, 2, 3]);
    let got: Vec<String> =
        listed.json()["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(got, ids, "ids are the same through either node");

    // A claim through B holds against A; the claim id deletes through A.
    let claim = cb.post("/v2/queues/jobs/claims?limit=2", r#"{"ttl": 60, "grace": 60}"#);
    assert_eq!(claim.status, 201, "{}", claim.text());
    let taken = claim.json()["messages"].as_array().unwrap().clone();
    assert_eq!(taken.len(), 2);
    let again = ca.post("/v2/queues/jobs/claims?limit=5", r#"{"ttl": 60}"#);
    assert_eq!(again.status, 201, "{}", again.text());
    assert_eq!(again.json()["messages"].as_array().unwrap().len(), 1, "only the unclaimed message is left");
    let href = taken[0]["href"].as_str().unwrap();
    let (path, query) = href.split_once('?').unwrap();
    assert_eq!(ca.delete(path).status, 403, "deleting a claimed message needs its claim id");
    assert_eq!(ca.delete(&format!("{path}?{query}")).status, 204);
    let gone = cb.get(path);
    assert_eq!(gone.status, 404, "{}", gone.text());
    let stats = ca.get("/v2/queues/jobs/stats").json();
    assert_eq!(stats["messages"]["total"], 2, "{stats}");
    assert_eq!(stats["messages"]["claimed"], 2, "{stats}");
    assert_eq!(cb.delete("/v2/queues/jobs").status, 204);
    assert_eq!(ca.get("/v2/queues/jobs/stats").json()["messages"]["total"], 0, "its messages went with it");
    assert_eq!(ca.head("/v2/queues/jobs").status, 404, "the queue is gone for both nodes");
}

fn listings_merge_across_the_cluster(a: &Server, b: &Server) {
    let (mut ca, mut cb) = (client(a, "listing"), client(b, "listing"));
    let names: Vec<String> = (0..25).map(|i| format!("q{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        let via = if i % 2 == 0 { &mut ca } else { &mut cb };
        assert_eq!(via.put(&format!("/v2/queues/{name}"), None).status, 201);
    }
    let mut seen = Vec::new();
    let mut path = "/v2/queues?limit=10&with_count=true".to_owned();
    loop {
        let page = cb.get(&path).json();
        assert_eq!(page["count"], 25, "{page}");
        let queues = page["queues"].as_array().unwrap();
        if queues.is_empty() {
            break;
        }
        seen.extend(queues.iter().map(|q| q["name"].as_str().unwrap().to_owned()));
        let next = page["links"][0]["href"].as_str().unwrap().to_owned();
        path = next;
    }
    assert_eq!(seen, names, "every queue once, in name order, whichever node made it");
    let other = client(a, "someone-else").get("/v2/queues").json();
    assert_eq!(other["queues"].as_array().unwrap().len(), 0, "projects stay apart");
}

fn long_poll_wakes_across_nodes(a: &Server, b: &Server) {
    let mut cb = client(b, "polls");
    assert_eq!(cb.put("/v2/queues/inbox", None).status, 201);
    let woken_before = polls_ended(a.addr, "woken");
    let addr = a.addr;
    let poll = std::thread::spawn(move || {
        let mut ca = Client::connect(addr).with_project("polls");
        ca.get("/v2/queues/inbox/messages?wait=30&echo=true")
    });
    until_metrics(a.addr, "a parked long poll", |m| {
        m.get("marconi_long_polls_parked{shard=\"all\"}").copied().unwrap_or(0.0) >= 1.0
    });
    cb.post_messages("inbox", &[r#""hello""#]);
    let got = poll.join().unwrap();
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["messages"][0]["body"], "hello");
    assert_eq!(polls_ended(a.addr, "woken"), woken_before + 1.0, "the post through B woke the poll on A");
}

fn lost_wake_up_is_covered_by_the_fallback(cluster: &RedisCluster, a: &Server, b: &Server) {
    let mut ca = client(a, "fallback");
    assert_eq!(ca.put("/v2/queues/inbox", None).status, 201);
    let addr = b.addr;
    let poll = std::thread::spawn(move || {
        let mut cb = Client::connect(addr).with_project("fallback");
        cb.get("/v2/queues/inbox/messages?wait=30&echo=true")
    });
    until_metrics(b.addr, "a parked long poll", |m| {
        m.get("marconi_long_polls_parked{shard=\"all\"}").copied().unwrap_or(0.0) >= 1.0
    });
    // Every pub/sub connection of every node goes: the post's wake-up reaches nobody.
    for addr in cluster.addrs() {
        let _ = Command::new("redis-cli")
            .args(["-u", &format!("redis://{addr}"), "CLIENT", "KILL", "TYPE", "pubsub"])
            .output();
    }
    ca.post_messages("inbox", &[r#""late""#]);
    let got = poll.join().unwrap();
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["messages"][0]["body"], "late", "the fallback re-check found it");
}

fn delays_end_into_a_parked_poll(a: &Server, b: &Server) {
    let mut ca = client(a, "delays");
    assert_eq!(ca.put("/v2/queues/later", None).status, 201);
    let posted = ca.post("/v2/queues/later/messages", r#"{"messages": [{"ttl": 300, "delay": 1, "body": "soon"}]}"#);
    assert_eq!(posted.status, 201, "{}", posted.text());
    let mut cb = client(b, "delays");
    let now = cb.get("/v2/queues/later/messages?echo=true").json();
    assert_eq!(now["messages"].as_array().map(Vec::len), Some(0), "a delayed message is not listed yet: {now}");
    let later = cb.get("/v2/queues/later/messages?echo=true&wait=30");
    assert_eq!(later.status, 200, "{}", later.text());
    assert_eq!(later.json()["messages"][0]["body"], "soon");
}

fn dead_letters_move_once_across_slots(a: &Server, b: &Server) {
    let (mut ca, mut cb) = (client(a, "dlq"), client(b, "dlq"));
    assert_eq!(ca.put("/v2/queues/dead", None).status, 201);
    let meta = r#"{"_max_claim_count": 1, "_dead_letter_queue": "dead", "_dead_letter_queue_messages_ttl": 3600}"#;
    assert_eq!(ca.put("/v2/queues/work", Some(meta)).status, 201);
    let ids = ca.post_messages("work", &[r#"{"n": 1}"#, r#"{"n": 2}"#]);
    for _ in 0..2 {
        let claim = cb.post("/v2/queues/work/claims?limit=5", r#"{"ttl": 60}"#);
        if claim.status == 201 {
            let href = claim.json()["messages"][0]["href"].as_str().unwrap().to_owned();
            let claim_path =
                href.split_once("claim_id=").map(|(_, id)| format!("/v2/queues/work/claims/{id}")).unwrap();
            assert_eq!(ca.delete(&claim_path).status, 204, "release");
        }
    }
    let left = ca.get("/v2/queues/work/messages?echo=true&include_claimed=true").json();
    assert_eq!(left["messages"].as_array().map(Vec::len), Some(0), "both messages left the queue: {left}");
    let moved = cb.get("/v2/queues/dead/messages?echo=true&include_claimed=true").json();
    let mut bodies: Vec<i64> =
        moved["messages"].as_array().unwrap().iter().map(|m| m["body"]["n"].as_i64().unwrap()).collect();
    bodies.sort();
    assert_eq!(bodies, [1, 2], "each message moved exactly once ({ids:?})");
}

fn queue_recreated_gets_new_ids(a: &Server, b: &Server) {
    let (mut ca, mut cb) = (client(a, "epochs"), client(b, "epochs"));
    let first = ca.post_messages("q", &["1"]);
    assert_eq!(cb.delete("/v2/queues/q").status, 204);
    let second = cb.post_messages("q", &["2"]);
    assert_ne!(first, second, "a re-created queue never reuses a message id");
    assert_eq!(ca.get(&format!("/v2/queues/q/messages/{}", first[0])).status, 404);
    let got = ca.get(&format!("/v2/queues/q/messages/{}", second[0]));
    assert_eq!(got.status, 200, "{}", got.text());
    let _ = id_of(&got.json()["href"]);
}

fn check_judges_the_cluster(cluster: &RedisCluster) {
    let seeds = cluster.seeds();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_marconi"))
            .args(["check", "--backend", "redis-cluster", "--redis-nodes", &seeds])
            .args(extra)
            .output()
            .expect("run marconi check");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, text) = run(&[]);
    assert!(text.contains("cluster_state:ok"), "{text}");
    assert!(text.contains("ok    replicas"), "{text}");
    assert!(text.contains("ok    library"), "{text}");
    assert_ne!(code, Some(1), "nothing fatal on a healthy cluster: {text}");
    let (code, text) = run(&["--set", "redis.ack_replicas=2"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FAIL  replicas") && text.contains("Fix:"), "{text}");
}
