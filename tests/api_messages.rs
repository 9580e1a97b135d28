//! Messages: post, list with markers/echo/include_claimed/include_delayed, get one and by ids,
//! delete one and in bulk, pop, expiry and delays — across both shards.

mod common;
use common::*;
use serde_json::json;

#[test]
fn post_then_list_with_markers_on_both_shards() {
    let server = Server::start();
    let mut c = server.client();
    let (a, b) = queues_on_each_shard(&c.project.clone(), "m");
    for q in [&a, &b] {
        let body = r#"{"messages": [{"ttl": 300, "body": {"n": 1,  "s": "x"}}, {"body": [1, 2.50]}, {"ttl": 60, "body": null}]}"#;
        let r = c.post(&format!("/v2/queues/{q}/messages"), body);
        assert_eq!(r.status, 201, "{}", r.text());
        let hrefs = r.json()["resources"].as_array().unwrap().clone();
        assert_eq!(hrefs.len(), 3);
        let ids: Vec<&str> = hrefs.iter().map(|h| h.as_str().unwrap().rsplit('/').next().unwrap()).collect();
        assert_eq!(r.header("location").unwrap(), format!("/v2/queues/{q}/messages?ids={}", ids.join(",")));
        // Own messages are hidden without echo.
        let own = c.get(&format!("/v2/queues/{q}/messages")).json();
        assert_eq!(own, json!({"messages": [], "links": []}));
        let page = c.get(&format!("/v2/queues/{q}/messages?echo=true&limit=2"));
        assert_eq!(page.status, 200);
        // Bodies come back byte for byte, whitespace and number spelling included.
        assert!(page.text().contains(r#""body":{"n": 1,  "s": "x"}"#), "{}", page.text());
        assert!(page.text().contains(r#""body":[1, 2.50]"#));
        let page = page.json();
        assert_eq!(page["messages"][0]["ttl"], 300);
        assert_eq!(page["messages"][1]["ttl"], 3600);
        assert!(page["messages"][0]["age"].as_u64().unwrap() <= 1);
        assert_eq!(page["messages"][0]["href"], format!("/v2/queues/{q}/messages/{}", ids[0]));
        let next = page["links"][0]["href"].as_str().unwrap().to_owned();
        assert!(next.contains("echo=true"));
        let rest = c.get(&next).json();
        assert_eq!(rest["messages"].as_array().unwrap().len(), 1);
        assert_eq!(rest["messages"][0]["body"], json!(null));
        let end = c.get(rest["links"][0]["href"].as_str().unwrap()).json();
        assert_eq!(end["messages"], json!([]));
        // Another client sees them without echo.
        let mut other = server.client();
        other.client_id = OTHER_CLIENT_ID.into();
        assert_eq!(other.get(&format!("/v2/queues/{q}/messages")).json()["messages"].as_array().unwrap().len(), 3);
    }
}

#[test]
fn markers_never_skip_after_deletes_and_bad_markers_give_empty_pages() {
    let server = Server::start();
    let mut c = server.client();
    let ids = c.post_messages("mk", &["1", "2", "3", "4"]);
    let page = c.get("/v2/queues/mk/messages?echo=true&limit=2").json();
    let next = page["links"][0]["href"].as_str().unwrap().to_owned();
    // Deleting the marker's own message must not move the cursor.
    assert_eq!(c.delete(&format!("/v2/queues/mk/messages/{}", ids[1])).status, 204);
    let rest = c.get(&next).json();
    let bodies: Vec<i64> = rest["messages"].as_array().unwrap().iter().map(|m| m["body"].as_i64().unwrap()).collect();
    assert_eq!(bodies, vec![3, 4]);
    let bad = c.get("/v2/queues/mk/messages?echo=true&marker=zzz");
    assert_eq!(bad.status, 200);
    assert_eq!(bad.json()["messages"], json!([]));
}

#[test]
fn post_errors() {
    let server = Server::start();
    let mut c = server.client();
    let cases = [
        ("", 400, "Request body can not be empty"),
        ("{", 400, "Request body could not be parsed."),
        (r#"{"nope": []}"#, 400, "No messages were found in the request body."),
        (r#"{"messages": []}"#, 400, "No messages to enqueu."),
        (r#"{"messages": [{"ttl": 30, "body": 1}]}"#, 400, "The TTL for a message"),
        (r#"{"messages": [{"ttl": 1209601, "body": 1}]}"#, 400, "The TTL for a message"),
        (r#"{"messages": [{"delay": 901, "body": 1}]}"#, 400, "Delay"),
        (r#"{"messages": [{"ttl": 60}]}"#, 400, "Missing \"body\" field."),
        (r#"{"messages": [{"ttl": "60", "body": 1}]}"#, 400, "must be a int"),
    ];
    for (body, status, text) in cases {
        let r = c.request("POST", "/v2/queues/e/messages", Some(body), &[]);
        assert_eq!(r.status, status, "{body}");
        assert!(r.json()["description"].as_str().unwrap().contains(text), "{body}: {}", r.text());
    }
    let big = format!(r#"{{"messages": [{{"body": "{}"}}]}}"#, "x".repeat(262_144));
    let r = c.post("/v2/queues/e/messages", &big);
    assert_eq!(r.status, 400);
    assert!(r.json()["description"].as_str().unwrap().contains("too large"));
    // The answer comes from the head alone; unless the whole body was already in, the
    // connection then closes rather than read a body nobody wants.
    if r.header("connection") == Some("close") {
        c = server.client();
    }
    assert_eq!(c.get("/v2/ping").status, 204);
    // Per-queue post size.
    c.put("/v2/queues/small", Some(r#"{"_max_messages_post_size": 100}"#));
    let body = format!(r#"{{"messages": [{{"body": "{}"}}]}}"#, "x".repeat(200));
    assert_eq!(c.post("/v2/queues/small/messages", &body).status, 400);
    assert_eq!(c.post("/v2/queues/small/messages", r#"{"messages": [{"body": 1}]}"#).status, 201);
}

#[test]
fn get_one_get_by_ids_and_deletes() {
    let server = Server::start();
    let mut c = server.client();
    let ids = c.post_messages("g", &[r#"{"a": 1}"#, "2", "3"]);
    let one = c.get(&format!("/v2/queues/g/messages/{}", ids[0]));
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["body"], json!({"a": 1}));
    assert_eq!(one.json()["id"], ids[0]);
    assert_eq!(c.get("/v2/queues/g/messages/nonsense").status, 404);
    assert_eq!(c.get("/v2/queues/g/messages/000000000000000000000000").status, 404);
    assert_eq!(c.get(&format!("/v2/queues/other/messages/{}", ids[0])).status, 404);
    let some = c.get(&format!("/v2/queues/g/messages?ids={},{},bogus", ids[0], ids[2])).json();
    assert_eq!(some["messages"].as_array().unwrap().len(), 2);
    assert!(some.get("links").is_none());
    assert_eq!(c.get("/v2/queues/g/messages?ids=bogus").status, 404);
    let many: Vec<String> = (0..21).map(|_| ids[0].clone()).collect();
    assert_eq!(c.get(&format!("/v2/queues/g/messages?ids={}", many.join(","))).status, 400);
    assert_eq!(c.delete(&format!("/v2/queues/g/messages/{}", ids[0])).status, 204);
    assert_eq!(c.delete(&format!("/v2/queues/g/messages/{}", ids[0])).status, 204);
    assert_eq!(c.delete("/v2/queues/g/messages/bogus").status, 204);
    assert_eq!(c.get(&format!("/v2/queues/g/messages/{}", ids[0])).status, 404);
    assert_eq!(c.delete(&format!("/v2/queues/g/messages?ids={},{}", ids[1], ids[2])).status, 204);
    assert_eq!(c.get("/v2/queues/g/stats").json()["messages"]["total"], 0);
    assert_eq!(c.delete("/v2/queues/g/messages").status, 400);
    assert_eq!(c.delete(&format!("/v2/queues/g/messages?ids={}&pop=1", ids[0])).status, 400);
    assert_eq!(c.delete("/v2/queues/g/messages?pop=21").status, 400);
    assert_eq!(c.delete("/v2/queues/g/messages?pop=0").status, 400);
    // Trailing slash, as python-zaqarclient sends for bulk deletes.
    assert_eq!(c.delete(&format!("/v2/queues/g/messages/?ids={}", ids[0])).status, 204);
}

#[test]
fn pop_takes_unclaimed_messages_once() {
    let server = Server::start();
    let mut c = server.client();
    c.post_messages("pop", &["1", "2", "3"]);
    assert_eq!(c.post("/v2/queues/pop/claims?limit=1", "{}").status, 201);
    let r = c.delete("/v2/queues/pop/messages?pop=5");
    assert_eq!(r.status, 200);
    let popped = r.json();
    let bodies: Vec<i64> = popped["messages"].as_array().unwrap().iter().map(|m| m["body"].as_i64().unwrap()).collect();
    assert_eq!(bodies, vec![2, 3]);
    assert_eq!(popped["messages"][0]["claim_id"], json!(null));
    assert!(popped["messages"][0].get("href").is_none());
    assert_eq!(c.delete("/v2/queues/pop/messages?pop=5").json(), json!({"messages": []}));
    assert_eq!(c.delete("/v2/queues/missing/messages?pop=1").json(), json!({"messages": []}));
}

#[test]
fn delayed_messages_are_hidden_until_due() {
    let server = Server::start();
    let mut c = server.client();
    let r = c.post("/v2/queues/d/messages", r#"{"messages": [{"body": 1, "delay": 2}, {"body": 2}]}"#);
    assert_eq!(r.status, 201);
    let visible = c.get("/v2/queues/d/messages?echo=true").json();
    assert_eq!(visible["messages"].as_array().unwrap().len(), 1);
    assert_eq!(visible["messages"][0]["body"], 2);
    let all = c.get("/v2/queues/d/messages?echo=true&include_delayed=true").json();
    assert_eq!(all["messages"].as_array().unwrap().len(), 2);
    let claim = c.post("/v2/queues/d/claims?limit=5", "{}").json();
    assert_eq!(claim["messages"].as_array().unwrap().len(), 1);
    // A parked claim is woken when the delay ends (by the queue's scheduled change, not a post).
    let later = c.post("/v2/queues/d/claims?limit=5&wait=20", "{}").json();
    assert_eq!(later["messages"][0]["body"], 1);
    assert_eq!(polls_ended(server.addr, "scheduled"), 1.0);
}

#[test]
fn include_claimed_shows_claimed_messages_with_claim_href() {
    let server = Server::start();
    let mut c = server.client();
    c.post_messages("ic", &["1", "2"]);
    let claim = c.post("/v2/queues/ic/claims?limit=1", "{}");
    let cid = claim.header("location").unwrap().rsplit('/').next().unwrap().to_owned();
    let plain = c.get("/v2/queues/ic/messages?echo=true").json();
    assert_eq!(plain["messages"].as_array().unwrap().len(), 1);
    let all = c.get("/v2/queues/ic/messages?echo=true&include_claimed=true").json();
    assert_eq!(all["messages"].as_array().unwrap().len(), 2);
    assert!(all["messages"][0]["href"].as_str().unwrap().ends_with(&format!("?claim_id={cid}")));
}
