//! Claims: create, get, renew, release; the delete-with-claim rules; dead-letter queues.

mod common;
use common::*;
use serde_json::json;

fn claim_id(resp: &Resp) -> String {
    resp.header("location").expect("location").rsplit('/').next().unwrap().to_owned()
}

#[test]
fn claim_lifecycle_on_both_shards() {
    let server = Server::start();
    let mut c = server.client();
    let (a, b) = queues_on_each_shard(&c.project.clone(), "c");
    for q in [&a, &b] {
        assert_eq!(c.post(&format!("/v2/queues/{q}/claims"), "{}").status, 204);
        let ids = c.post_messages(q, &["1", "2", "3"]);
        let r = c.post(&format!("/v2/queues/{q}/claims?limit=2"), r#"{"ttl": 120, "grace": 60}"#);
        assert_eq!(r.status, 201, "{}", r.text());
        let cid = claim_id(&r);
        let msgs = r.json()["messages"].as_array().unwrap().clone();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0]["href"], format!("/v2/queues/{q}/messages/{}?claim_id={cid}", ids[0]));
        // Claimed messages are not claimed again.
        let r2 = c.post(&format!("/v2/queues/{q}/claims?limit=5"), "{}");
        assert_eq!(r2.json()["messages"].as_array().unwrap().len(), 1);
        assert_eq!(c.post(&format!("/v2/queues/{q}/claims"), "{}").status, 204);

        let got = c.get(&format!("/v2/queues/{q}/claims/{cid}"));
        assert_eq!(got.status, 200);
        let got = got.json();
        assert_eq!(got["ttl"], 120);
        assert_eq!(got["href"], format!("/v2/queues/{q}/claims/{cid}"));
        assert_eq!(got["messages"].as_array().unwrap().len(), 2);

        assert_eq!(
            c.request("PATCH", &format!("/v2/queues/{q}/claims/{cid}"), Some(r#"{"ttl": 300}"#), &[]).status,
            204
        );
        assert_eq!(c.get(&format!("/v2/queues/{q}/claims/{cid}")).json()["ttl"], 300);
        assert_eq!(c.request("PATCH", &format!("/v2/queues/{q}/claims/{cid}"), None, &[]).status, 400);
        assert_eq!(
            c.request("PATCH", &format!("/v2/queues/{q}/claims/{cid}"), Some(r#"{"ttl": 10}"#), &[]).status,
            400
        );

        // Deleting a claimed message: needs the claim id.
        let m0 = format!("/v2/queues/{q}/messages/{}", ids[0]);
        let r = c.delete(&m0);
        assert_eq!(r.status, 403);
        assert_eq!(r.json()["title"], "Unable to delete");
        assert_eq!(c.delete(&format!("{m0}?claim_id=bogus")).status, 400);
        assert_eq!(c.delete(&format!("{m0}?claim_id={cid}")).status, 204);
        assert_eq!(c.get(&format!("/v2/queues/{q}/claims/{cid}")).json()["messages"].as_array().unwrap().len(), 1);
        // A claim id on an unclaimed message: 400.
        c.delete(&format!("/v2/queues/{q}/claims/{cid}"));
        let m1 = format!("/v2/queues/{q}/messages/{}", ids[1]);
        assert_eq!(c.delete(&format!("{m1}?claim_id={cid}")).status, 400);
        assert_eq!(c.get(&format!("/v2/queues/{q}/claims/{cid}")).status, 404);
        assert_eq!(c.request("PATCH", &format!("/v2/queues/{q}/claims/{cid}"), Some("{}"), &[]).status, 404);
        assert_eq!(c.delete(&format!("/v2/queues/{q}/claims/{cid}")).status, 204);
        // Released: claimable again.
        let again = c.post(&format!("/v2/queues/{q}/claims?limit=5"), "{}");
        assert_eq!(again.json()["messages"][0]["id"], ids[1]);
    }
}

#[test]
fn claim_parameter_errors() {
    let server = Server::start();
    let mut c = server.client();
    c.post_messages("ce", &["1"]);
    for (query, body) in [
        ("?limit=0", "{}"),
        ("?limit=21", "{}"),
        ("?limit=x", "{}"),
        ("", r#"{"ttl": 59}"#),
        ("", r#"{"ttl": 43201}"#),
        ("", r#"{"grace": 30}"#),
        ("", r#"{"ttl": "a"}"#),
        ("", "[1]"),
        ("", "{"),
    ] {
        let r = c.post(&format!("/v2/queues/ce/claims{query}"), body);
        assert_eq!(r.status, 400, "{query} {body}: {}", r.text());
    }
    assert_eq!(c.get("/v2/queues/ce/claims/nonsense").status, 404);
    assert_eq!(c.delete("/v2/queues/ce/claims/nonsense").status, 204);
    assert_eq!(c.post("/v2/queues/missing/claims", "").status, 204);
    assert_eq!(c.head("/v2/queues/missing").status, 404, "claims never create queues");
}

#[test]
fn delivery_counts_move_messages_to_the_dead_letter_queue() {
    let server = Server::start();
    let mut c = server.client();
    let (src, dlq) = queues_on_each_shard(&c.project.clone(), "dl");
    c.put(
        &format!("/v2/queues/{src}"),
        Some(&format!(
            r#"{{"_max_claim_count": 2, "_dead_letter_queue": "{dlq}", "_dead_letter_queue_messages_ttl": 120}}"#
        )),
    );
    c.post_messages(&src, &[r#"{"job": 7}"#]);
    for _ in 0..2 {
        let r = c.post(&format!("/v2/queues/{src}/claims"), "{}");
        assert_eq!(r.status, 201);
        c.delete(&format!("/v2/queues/{src}/claims/{}", claim_id(&r)));
    }
    // Third attempt: the message has been delivered twice, so it moves instead.
    assert_eq!(c.post(&format!("/v2/queues/{src}/claims"), "{}").status, 204);
    // The move happens on the dead-letter queue's shard: a long poll there sees it arrive.
    let moved = c.get(&format!("/v2/queues/{dlq}/messages?echo=true&wait=20")).json()["messages"].clone();
    assert_eq!(moved[0]["body"], json!({"job": 7}));
    assert_eq!(moved[0]["ttl"], 120);
    assert_eq!(c.get(&format!("/v2/queues/{src}/stats")).json()["messages"]["total"], 0);
}

#[test]
fn bulk_delete_respects_live_claims_when_claim_ids_are_given() {
    let server = Server::start();
    let mut c = server.client();
    let ids = c.post_messages("bd", &["1", "2"]);
    let r = c.post("/v2/queues/bd/claims?limit=1", "{}");
    let cid = claim_id(&r);
    // The live claim's sequence number with a guessed secret: names no claim.
    assert_eq!(cid.len(), 32, "{cid}");
    let other = format!("{}{:016x}", &cid[..16], u64::from_str_radix(&cid[16..], 16).unwrap() ^ 1);
    let r = c.delete(&format!("/v2/queues/bd/messages?ids={},{}&claim_ids={other}", ids[0], ids[1]));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(c.get("/v2/queues/bd/stats").json()["messages"]["total"], 2);
    let r = c.delete(&format!("/v2/queues/bd/messages?ids={},{}&claim_ids={cid}", ids[0], ids[1]));
    assert_eq!(r.status, 204);
    assert_eq!(c.get("/v2/queues/bd/stats").json()["messages"]["total"], 0);
}
