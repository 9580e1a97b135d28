//! Long polling (`wait=`): parked requests answer as soon as a message arrives, time out with the
//! normal empty answer, and are released on shutdown. The evidence is what the server reports
//! (`marconi_long_polls_parked`, `marconi_long_polls_total{ended=…}`) and what the client gets,
//! never how long something took: waits are longer than any test could pass by waiting them out.

mod common;
use common::*;

#[test]
fn parked_list_and_claim_wake_on_post_across_shards() {
    let server = Server::start();
    let project = Client::connect(server.addr).project;
    let (a, b) = queues_on_each_shard(&project, "lp");
    for q in [a, b] {
        for path in [format!("/v2/queues/{q}/messages?wait=20"), format!("/v2/queues/{q}/claims?wait=20")] {
            let woken = polls_ended(server.addr, "woken");
            let addr = server.addr;
            let path2 = path.clone();
            let waiter = std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.client_id = OTHER_CLIENT_ID.into();
                if path2.contains("claims") {
                    c.post(&path2, "{}")
                } else {
                    c.get(&path2)
                }
            });
            until_metrics(server.addr, "the poll parked", |m| m[r#"marconi_long_polls_parked{shard="all"}"#] == 1.0);
            let mut c = server.client();
            c.post_messages(&q, &["\"wake\""]);
            let r = waiter.join().unwrap();
            assert!(r.status == 200 || r.status == 201, "{path}: {}", r.status);
            // Had the post not woken it, the poll would have answered empty when its wait ran out.
            assert_eq!(r.json()["messages"][0]["body"], "wake", "{path}");
            assert_eq!(polls_ended(server.addr, "woken"), woken + 1.0, "{path}");
            c.delete(&format!("/v2/queues/{q}"));
        }
    }
    assert_eq!(polls_ended(server.addr, "timeout"), 0.0);
}

#[test]
fn wait_runs_out_with_the_normal_empty_answer() {
    let server = Server::start();
    let mut c = server.client();
    let r = c.get("/v2/queues/quiet/messages?wait=1");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["messages"], serde_json::json!([]));
    let r = c.post("/v2/queues/quiet/claims?wait=1", "{}");
    assert_eq!(r.status, 204);
    assert_eq!(polls_ended(server.addr, "timeout"), 2.0, "both polls ended because their wait ran out");
    assert_eq!(polls_ended(server.addr, "woken"), 0.0);
    assert_eq!(c.get("/v2/queues/quiet/messages?wait=-1").status, 400);
}

#[test]
fn parked_claim_wakes_when_a_delay_ends() {
    let server = Server::start();
    let mut c = server.client();
    c.post("/v2/queues/later/messages", r#"{"messages": [{"body": 1, "delay": 1}]}"#);
    assert_eq!(c.post("/v2/queues/later/claims", "{}").status, 204, "still delayed");
    let r = c.post("/v2/queues/later/claims?wait=20", "{}");
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["messages"][0]["body"], 1);
    assert_eq!(polls_ended(server.addr, "scheduled"), 1.0, "the delay's end woke it, not a post or the deadline");
}

#[test]
fn shutdown_releases_parked_requests_and_exits_zero() {
    // A wait far longer than the client's read timeout (30 s): only the release can answer it.
    let mut server = Server::start_with(&["--set", "api.max_wait_s=600"]);
    let addr = server.addr;
    let waiter = std::thread::spawn(move || Client::connect(addr).get("/v2/queues/idle/messages?wait=600"));
    let mut idle = server.client();
    assert_eq!(idle.get("/v2/ping").status, 204);
    until_metrics(server.addr, "the poll parked", |m| m[r#"marconi_long_polls_parked{shard="all"}"#] == 1.0);
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let r = waiter.join().expect("the parked poll was answered");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["messages"], serde_json::json!([]));
    assert!(idle.is_closed());
}
