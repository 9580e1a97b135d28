//! Queues: create, get, HEAD, list with every option, PATCH, delete, stats, purge, and the
//! request hooks every /v2 request passes.

mod common;
use common::*;
use serde_json::json;

#[test]
fn versions_home_and_ping() {
    let server = Server::start();
    let mut c = server.client();
    let r = c.request("GET", "/", None, &[("Client-ID", ""), ("X-Project-ID", "")]);
    assert_eq!(r.status, 300);
    assert_eq!(r.json()["versions"][0]["id"], "2");
    let r = c.get("/v2/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json-home"));
    assert!(r.json()["resources"]["rel/queues"]["href-template"].is_string());
    assert_eq!(c.get("/v2/ping").status, 204);
    assert_eq!(c.head("/v2/ping").status, 204);
    let h = c.get("/v2/health");
    assert_eq!(h.status, 200, "{}", h.text());
    let h = h.json();
    assert_eq!(h["storage_reachable"], true);
    assert!(h["message_volume"].is_object());
    for (op, status) in h["operation_status"].as_object().unwrap() {
        assert_eq!(status["succeeded"], true, "{op}");
    }
}

#[test]
fn request_hooks_reject_bad_headers() {
    let server = Server::start();
    let mut c = server.client();
    let r = c.request("GET", "/v2/queues", None, &[("Client-ID", "")]);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["title"], "Missing header value");
    let r = c.request("GET", "/v2/queues", None, &[("Client-ID", "not-a-uuid")]);
    assert_eq!((r.status, r.json()["title"].as_str().unwrap()), (400, "Wrong UUID value"));
    let r = c.request("GET", "/v2/queues", None, &[("X-Project-ID", "")]);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["description"], "Empty project header not allowed");
    let r = c.request("GET", "/v2/queues", None, &[("Accept", "application/xml")]);
    assert_eq!(r.status, 406);
    let r = c.request(
        "POST",
        "/v2/queues/q/messages",
        Some("a=b"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
    );
    assert_eq!(r.status, 400);
    let r = c.get("/v2/queues/bad%20name");
    assert_eq!((r.status, r.json()["title"].as_str().unwrap()), (400, "Invalid queue identification"));
    let r = c.get(&format!("/v2/queues/{}", "x".repeat(65)));
    assert_eq!(r.status, 400);
    let r = c.get("/v2/nowhere");
    assert_eq!(r.status, 404);
    assert!(r.json()["code"].is_string());
    let r = c.request("POST", "/v2/queues/q", Some("{}"), &[]);
    assert_eq!(r.status, 405);
    assert!(r.header("allow").unwrap().contains("PUT"));
    let r = c.get("/v2/topics/t");
    assert_eq!(r.status, 501);
    assert!(r.json()["description"].as_str().unwrap().contains("Topics"));
}

#[test]
fn create_get_head_delete() {
    let server = Server::start();
    let mut c = server.client();
    assert_eq!(c.head("/v2/queues/fizbit").status, 404);
    let r = c.put("/v2/queues/fizbit", Some(r#"{"owner": "ops", "_default_message_ttl": 120}"#));
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), Some("/v2/queues/fizbit"));
    assert_eq!(c.head("/v2/queues/fizbit").status, 204);
    let meta = c.get("/v2/queues/fizbit").json();
    assert_eq!(meta["owner"], "ops");
    assert_eq!(meta["_default_message_ttl"], 120);
    assert_eq!(meta["_max_messages_post_size"], 262144);
    assert_eq!(meta["_dead_letter_queue"], json!(null));
    // Existing queue: 204, and an empty body changes nothing.
    assert_eq!(c.put("/v2/queues/fizbit", None).status, 204);
    assert_eq!(c.get("/v2/queues/fizbit").json()["owner"], "ops");
    // Unknown queues answer 200 with the defaults.
    let r = c.get("/v2/queues/nothere");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["_default_message_ttl"], 3600);
    // Other projects do not see it.
    let mut other = server.client().with_project("other");
    assert_eq!(other.head("/v2/queues/fizbit").status, 404);
    assert_eq!(c.delete("/v2/queues/fizbit").status, 204);
    assert_eq!(c.delete("/v2/queues/fizbit").status, 204);
    assert_eq!(c.head("/v2/queues/fizbit").status, 404);
}

#[test]
fn metadata_is_validated() {
    let server = Server::start();
    let mut c = server.client();
    for body in [
        r#"{"_default_message_ttl": "x"}"#,
        r#"{"_default_message_ttl": 30}"#,
        r#"{"_max_messages_post_size": 0}"#,
        "[1]",
        "{",
    ] {
        let r = c.put("/v2/queues/m", Some(body));
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }
    let big = format!("{{\"k\": \"{}\"}}", "a".repeat(70_000));
    let r = c.put("/v2/queues/m", Some(&big));
    assert_eq!(r.status, 400);
    assert!(r.json()["description"].as_str().unwrap().contains("too large"));
}

#[test]
fn patch_follows_json_patch_rules() {
    let server = Server::start();
    let mut c = server.client();
    let r = c.patch("/v2/queues/p", r#"[{"op": "add", "path": "/metadata/a", "value": 1}]"#);
    assert_eq!(r.status, 404);
    c.put("/v2/queues/p", Some(r#"{"a": 1, "b": 2}"#));
    let r = c.request("PATCH", "/v2/queues/p", Some("[]"), &[("Content-Type", "application/json")]);
    assert_eq!(r.status, 415);
    let r = c.patch(
        "/v2/queues/p",
        r#"[{"op": "add", "path": "/metadata/c", "value": 3}, {"op": "replace", "path": "/metadata/a", "value": 10}, {"op": "remove", "path": "/metadata/b"}]"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let meta = r.json();
    assert_eq!((meta["a"].as_i64(), meta["c"].as_i64()), (Some(10), Some(3)));
    assert!(meta.get("b").is_none());
    assert_eq!(meta["_default_message_ttl"], 3600);
    let r = c.patch("/v2/queues/p", r#"[{"op": "replace", "path": "/metadata/zzz", "value": 1}]"#);
    assert_eq!(r.status, 409);
    let r = c.patch("/v2/queues/p", r#"[{"op": "remove", "path": "/metadata/zzz"}]"#);
    assert_eq!(r.status, 409);
    let r = c.patch("/v2/queues/p", r#"[{"op": "add", "path": "/metadata/_default_message_ttl", "value": 10}]"#);
    assert_eq!(r.status, 400);
    let r = c.request(
        "PATCH",
        "/v2/queues/p",
        None,
        &[("Content-Type", "application/openstack-messaging-v2.0-json-patch")],
    );
    assert_eq!(r.status, 400);
}

#[test]
fn listing_pages_filters_and_counts_across_shards() {
    let server = Server::start();
    let mut c = server.client();
    for i in 0..15 {
        let meta = if i % 3 == 0 { r#"{"node": 34}"# } else { r#"{"node": 1}"# };
        assert_eq!(c.put(&format!("/v2/queues/q{i:02}"), Some(meta)).status, 201);
    }
    let first = c.get("/v2/queues?with_count=true").json();
    let names: Vec<&str> = first["queues"].as_array().unwrap().iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(names, (0..10).map(|i| format!("q{i:02}")).collect::<Vec<_>>());
    assert_eq!(first["count"], 15);
    assert!(first["queues"][0].get("metadata").is_none());
    let next = first["links"][0]["href"].as_str().unwrap().to_owned();
    let second = c.get(&next).json();
    assert_eq!(second["queues"].as_array().unwrap().len(), 5);
    assert_eq!(second["queues"][0]["name"], "q10");
    let third = c.get(second["links"][0]["href"].as_str().unwrap()).json();
    assert_eq!(third["queues"], json!([]));
    assert_eq!(third["links"], json!([]));

    let detailed = c.get("/v2/queues?limit=2&detailed=true").json();
    assert_eq!(detailed["queues"][0]["metadata"]["node"], 34);
    let filtered = c.get("/v2/queues?node=34&limit=20").json();
    assert_eq!(filtered["queues"].as_array().unwrap().len(), 5);
    let named = c.get("/v2/queues?name=q1").json();
    assert_eq!(named["queues"].as_array().unwrap().len(), 5);
    assert_eq!(c.get("/v2/queues?limit=21").status, 400);
    assert_eq!(c.get("/v2/queues?limit=0").status, 400);
    assert_eq!(c.get("/v2/queues?limit=x").status, 400);
    assert_eq!(c.get("/v2/queues?detailed=maybe").status, 400);
    let mut other = server.client().with_project("empty-project");
    let empty = other.get("/v2/queues?with_count=true").json();
    assert_eq!(empty, json!({"queues": [], "links": []}));
}

#[test]
fn stats_and_purge() {
    let server = Server::start();
    let mut c = server.client();
    let zero = c.get("/v2/queues/s/stats").json();
    assert_eq!(zero, json!({"messages": {"claimed": 0, "free": 0, "total": 0}}));
    c.post_messages("s", &["1", "2", "3"]);
    let r = c.post("/v2/queues/s/claims?limit=1", "{}");
    assert_eq!(r.status, 201);
    let stats = c.get("/v2/queues/s/stats").json();
    assert_eq!(stats["messages"]["claimed"], 1);
    assert_eq!(stats["messages"]["free"], 2);
    assert_eq!(stats["messages"]["total"], 3);
    assert!(stats["messages"]["oldest"]["href"].as_str().unwrap().starts_with("/v2/queues/s/messages/"));
    assert!(stats["messages"]["newest"]["created"].as_str().unwrap().ends_with('Z'));
    assert_eq!(c.post("/v2/queues/s/purge", r#"{"resource_types": ["bogus"]}"#).status, 400);
    assert_eq!(c.post("/v2/queues/s/purge", r#"{"other": 1}"#).status, 400);
    assert_eq!(c.post("/v2/queues/s/purge", r#"{"resource_types": ["subscriptions"]}"#).status, 204);
    assert_eq!(c.get("/v2/queues/s/stats").json()["messages"]["total"], 3);
    // Purge empties the queue, claimed messages included, and keeps the queue.
    assert_eq!(c.post("/v2/queues/s/purge", r#"{"resource_types": ["messages"]}"#).status, 204);
    assert_eq!(c.get("/v2/queues/s/stats").json()["messages"]["total"], 0);
    assert_eq!(c.head("/v2/queues/s").status, 204);
}
