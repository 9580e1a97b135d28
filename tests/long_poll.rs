//! Long polling (`wait=`): parked requests answer as soon as a message arrives, time out with the
//! normal empty answer, and are released on shutdown.

mod common;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn parked_list_and_claim_wake_on_post_across_shards() {
    let server = Server::start();
    let project = Client::connect(server.addr).project;
    let (a, b) = queues_on_each_shard(&project, "lp");
    for q in [a, b] {
        for path in [format!("/v2/queues/{q}/messages?wait=10"), format!("/v2/queues/{q}/claims?wait=10")] {
            let addr = server.addr;
            let path2 = path.clone();
            let waiter = std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.client_id = OTHER_CLIENT_ID.into();
                let started = Instant::now();
                let r = if path2.contains("claims") { c.post(&path2, "{}") } else { c.get(&path2) };
                (r, started.elapsed())
            });
            std::thread::sleep(Duration::from_millis(300));
            let mut c = server.client();
            c.post_messages(&q, &["\"wake\""]);
            let (r, took) = waiter.join().unwrap();
            assert!(r.status == 200 || r.status == 201, "{path}: {}", r.status);
            assert_eq!(r.json()["messages"][0]["body"], "wake", "{path}");
            assert!(took < Duration::from_secs(5), "{path} took {took:?}");
            c.delete(&format!("/v2/queues/{q}"));
        }
    }
}

#[test]
fn wait_runs_out_with_the_normal_empty_answer() {
    let server = Server::start();
    let mut c = server.client();
    let started = Instant::now();
    let r = c.get("/v2/queues/quiet/messages?wait=1");
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["messages"], serde_json::json!([]));
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "{took:?}");
    let r = c.post("/v2/queues/quiet/claims?wait=1", "{}");
    assert_eq!(r.status, 204);
    assert_eq!(c.get("/v2/queues/quiet/messages?wait=-1").status, 400);
}

#[test]
fn parked_claim_wakes_when_a_delay_ends() {
    let server = Server::start();
    let mut c = server.client();
    c.post("/v2/queues/later/messages", r#"{"messages": [{"body": 1, "delay": 1}]}"#);
    let started = Instant::now();
    let r = c.post("/v2/queues/later/claims?wait=10", "{}");
    assert_eq!(r.status, 201);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(800) && took < Duration::from_secs(4), "{took:?}");
}

#[test]
fn shutdown_releases_parked_requests_and_exits_zero() {
    let mut server = Server::start();
    let addr = server.addr;
    let waiter = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.get("/v2/queues/idle/messages?wait=20")
    });
    let mut idle = server.client();
    assert_eq!(idle.get("/v2/ping").status, 204);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let r = waiter.join().unwrap();
    assert_eq!(r.status, 200);
    assert!(idle.is_closed());
}
