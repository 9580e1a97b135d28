//! Quotas (403 `quota_exceeded`) and rate limits (429 with `Retry-After`) per project: each limit
//! refuses with its name and value, other projects go on unaffected, freed capacity is usable
//! again, and overrides come from `PUT /v2/projects/{id}/limits` (kept across a restart) or from
//! the configuration file. Rate limits run at tiny rates and count refusals, never time.

mod common;
use common::*;

/// Asserts a 403 `quota_exceeded` naming `limit` and its `value`.
fn assert_quota(r: &Resp, limit: &str, value: u64) {
    assert_eq!(r.status, 403, "{}", r.text());
    let body = r.json();
    assert_eq!(body["code"], "quota_exceeded", "{body}");
    assert_eq!(body["title"], "Quota exceeded", "{body}");
    let text = body["description"].as_str().unwrap_or_default();
    assert!(text.contains(limit) && text.contains(&format!(" {value} ")), "{text}");
}

fn refusals(server: &Server, limit: &str) -> f64 {
    metric(server.addr, &format!("marconi_limit_refusals_total{{shard=\"all\",limit=\"{limit}\"}}"))
}

fn post(c: &mut Client, queue: &str, bodies: &[&str]) -> Resp {
    let msgs: Vec<String> = bodies.iter().map(|b| format!(r#"{{"ttl": 300, "body": {b}}}"#)).collect();
    c.post(&format!("/v2/queues/{queue}/messages"), &format!(r#"{{"messages": [{}]}}"#, msgs.join(",")))
}

#[test]
fn queues_per_project_counts_every_shard_and_freed_places_are_usable_again() {
    let server = Server::start_with(&["--set", "limits.queues_per_project=2"]);
    let mut c = server.client().with_project("quota-a");
    // One queue on each of the two shards: the count must see both.
    let (q0, q1) = queues_on_each_shard("quota-a", "q");
    assert_eq!(c.put(&format!("/v2/queues/{q0}"), None).status, 201);
    assert_eq!(post(&mut c, &q1, &["1"]).status, 201, "a post makes its queue too");
    assert_quota(&c.put("/v2/queues/third", None), "queues_per_project", 2);
    assert_quota(&post(&mut c, "third", &["1"]), "queues_per_project", 2);
    // What exists stays usable.
    assert_eq!(c.put(&format!("/v2/queues/{q0}"), None).status, 204);
    assert_eq!(post(&mut c, &q0, &["2"]).status, 201);
    // Another project has its own count.
    let mut other = server.client().with_project("quota-b");
    for q in ["x", "y"] {
        assert_eq!(other.put(&format!("/v2/queues/{q}"), None).status, 201);
    }
    // A deleted queue gives its place back.
    assert_eq!(c.delete(&format!("/v2/queues/{q1}")).status, 204);
    assert_eq!(post(&mut c, "third", &["1"]).status, 201);
    assert_eq!(refusals(&server, "queues_per_project"), 2.0);
}

#[test]
fn messages_and_bytes_per_queue_are_exact_and_freed_by_delete_pop_and_purge() {
    // `"xxxxxxxxxx"` is a body of 12 bytes.
    let server = Server::start_with(&["--set", "limits.messages_per_queue=3", "--set", "limits.bytes_per_queue=30"]);
    let mut c = server.client().with_project("mq");
    assert_eq!(post(&mut c, "m", &["1", "2", "3"]).status, 201);
    assert_quota(&post(&mut c, "m", &["4"]), "messages_per_queue", 3);
    assert_eq!(post(&mut c, "other", &["1"]).status, 201, "another queue has its own count");
    // A deleted message frees its place.
    let listed = c.all_messages("m");
    let href = listed[0]["href"].as_str().unwrap().to_owned();
    assert_eq!(c.delete(&href).status, 204);
    assert_eq!(post(&mut c, "m", &["4"]).status, 201);
    assert_quota(&post(&mut c, "m", &["5"]), "messages_per_queue", 3);
    // Popped messages too.
    let popped = c.delete("/v2/queues/m/messages?pop=2");
    assert_eq!(popped.status, 200, "{}", popped.text());
    assert_eq!(post(&mut c, "m", &["5", "6"]).status, 201);
    // And a purge frees them all; a post that would cross the limit is refused whole.
    assert_quota(&post(&mut c, "m", &["7"]), "messages_per_queue", 3);
    assert_eq!(c.post("/v2/queues/m/purge", r#"{"resource_types": ["messages"]}"#).status, 204);
    assert_quota(&post(&mut c, "m", &["1", "2", "3", "4"]), "messages_per_queue", 3);
    assert_eq!(c.all_messages("m").len(), 0, "nothing of a refused post is kept");

    // Bytes: two bodies of 12 fit 30, a third does not.
    let mut b = server.client().with_project("bq");
    let ten = "\"xxxxxxxxxx\"";
    assert_eq!(post(&mut b, "b", &[ten, ten]).status, 201);
    assert_quota(&post(&mut b, "b", &[ten]), "bytes_per_queue", 30);
    assert_eq!(post(&mut b, "b", &["1"]).status, 201, "a small one still fits");
    assert_eq!(refusals(&server, "messages_per_queue"), 4.0);
    assert_eq!(refusals(&server, "bytes_per_queue"), 1.0);
}

#[test]
fn messages_per_project_on_one_shard_is_exact_across_queues() {
    let server = Server::start_with(&["--shards", "1", "--set", "limits.messages_per_project=4"]);
    let mut c = server.client().with_project("mp");
    assert_eq!(post(&mut c, "a", &["1", "2"]).status, 201);
    assert_eq!(post(&mut c, "b", &["1", "2"]).status, 201);
    assert_quota(&post(&mut c, "c", &["1"]), "messages_per_project", 4);
    let mut other = server.client().with_project("mp-other");
    assert_eq!(post(&mut other, "a", &["1", "2", "3", "4"]).status, 201);
    // Deleting a queue frees its messages.
    assert_eq!(c.delete("/v2/queues/a").status, 204);
    assert_eq!(post(&mut c, "c", &["1", "2"]).status, 201);
}

#[test]
fn requests_per_second_per_project_answer_429_with_retry_after() {
    let server = Server::start_with(&["--shards", "1", "--set", "limits.requests_per_second_per_project=1"]);
    let mut c = server.client().with_project("busy");
    let mut refused = 0;
    for _ in 0..20 {
        let r = c.get("/v2/queues");
        match r.status {
            200 => {}
            429 => {
                refused += 1;
                assert_eq!(r.json()["code"], "rate_limited", "{}", r.text());
                assert!(r.text().contains("requests_per_second_per_project"), "{}", r.text());
                let retry: u32 = r.header("Retry-After").expect("Retry-After").parse().unwrap();
                assert!(retry >= 1);
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    assert!(refused >= 1, "a bucket of one token per second let 20 requests through");
    // Another project has its own bucket.
    assert_eq!(server.client().with_project("calm").get("/v2/queues").status, 200);
    assert_eq!(refusals(&server, "requests_per_second_per_project"), f64::from(refused));
}

#[test]
fn requests_per_second_per_credential_count_the_token_however_it_is_sent() {
    let server = Server::start_with(&["--shards", "1", "--set", "limits.requests_per_second_per_credential=1"]);
    let mut c = server.client().with_project("cred");
    let mut refused = 0;
    for i in 0..20 {
        // The same token, as X-Auth-Token and as a bearer token: one bucket.
        let header = if i % 2 == 0 { ("X-Auth-Token", "tok-a") } else { ("Authorization", "Bearer tok-a") };
        let r = c.request("GET", "/v2/queues", None, &[header]);
        if r.status == 429 {
            refused += 1;
            assert!(r.text().contains("requests_per_second_per_credential"), "{}", r.text());
            assert!(r.header("Retry-After").is_some());
        } else {
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    assert!(refused >= 1);
    // Another token, and requests without one, are not affected.
    assert_eq!(c.request("GET", "/v2/queues", None, &[("X-Auth-Token", "tok-b")]).status, 200);
    assert_eq!(c.get("/v2/queues").status, 200);
}

#[test]
fn long_polls_per_project_are_capped_and_given_back() {
    let server = Server::start_with(&["--shards", "1", "--set", "limits.long_polls_per_project=1"]);
    let addr = server.addr;
    let waiter = std::thread::spawn(move || {
        let mut c = Client::connect(addr).with_project("polls");
        c.client_id = OTHER_CLIENT_ID.into();
        c.get("/v2/queues/inbox/messages?wait=20")
    });
    until_metrics(addr, "the poll parked", |m| m[r#"marconi_long_polls_parked{shard="all"}"#] == 1.0);
    let mut c = server.client().with_project("polls");
    assert_quota(&c.get("/v2/queues/inbox/messages?wait=1"), "long_polls_per_project", 1);
    assert_quota(&c.post("/v2/queues/inbox/claims?wait=1", "{}"), "long_polls_per_project", 1);
    // A request without wait is no long poll; another project polls freely.
    assert_eq!(c.get("/v2/queues/inbox/messages").status, 200);
    let mut other = server.client().with_project("polls-other");
    assert_eq!(post(&mut other, "inbox", &["1"]).status, 201);
    assert_eq!(other.get("/v2/queues/inbox/messages?wait=1&echo=true").status, 200);
    // The parked poll ends: its place is free again.
    assert_eq!(post(&mut c, "inbox", &["\"wake\""]).status, 201);
    assert_eq!(waiter.join().unwrap().status, 200);
    assert_eq!(c.get("/v2/queues/inbox/messages?wait=1&echo=true").status, 200);
    assert_eq!(refusals(&server, "long_polls_per_project"), 2.0);
}

#[test]
fn put_limits_overrides_one_project_on_every_shard_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    let mut admin = server.client().with_project("admin");
    let r = admin.get("/v2/projects/tenant/limits");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["limits"]["queues_per_project"], 0, "unlimited by default");
    assert_eq!(r.json()["overrides"], serde_json::json!({}));

    let r = admin.put("/v2/projects/tenant/limits", Some(r#"{"queues_per_project": 1, "messages_per_queue": 2}"#));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["limits"]["queues_per_project"], 1);
    assert_eq!(r.json()["overrides"], serde_json::json!({"queues_per_project": 1, "messages_per_queue": 2}));
    assert!(dir.path().join("limits.json").exists());

    let check = |server: &Server| {
        let mut t = server.client().with_project("tenant");
        let status = t.put("/v2/queues/first", None).status;
        assert!(status == 201 || status == 204, "{status}");
        // Connections land on either shard: every one of them knows the override.
        for _ in 0..6 {
            let mut t = server.client().with_project("tenant");
            assert_quota(&t.put("/v2/queues/second", None), "queues_per_project", 1);
        }
        let status = server.client().with_project("neighbour").put("/v2/queues/second", None).status;
        assert!(status == 201 || status == 204, "another project is not limited: {status}");
    };
    check(&server);
    let mut t = server.client().with_project("tenant");
    assert_eq!(post(&mut t, "first", &["1", "2"]).status, 201);
    assert_quota(&post(&mut t, "first", &["3"]), "messages_per_queue", 2);

    // Bytes held are counted again from the log after the restart.
    assert_eq!(admin.put("/v2/projects/bytes/limits", Some(r#"{"bytes_per_queue": 6}"#)).status, 200);
    let mut b = server.client().with_project("bytes");
    assert_eq!(post(&mut b, "q", &["12345"]).status, 201);

    server.terminate();
    let server = Server::start_in(dir.path(), &[]);
    let mut b = server.client().with_project("bytes");
    assert_quota(&post(&mut b, "q", &["12"]), "bytes_per_queue", 6);
    assert_eq!(post(&mut b, "q", &["1"]).status, 201);
    let r = server.client().get("/v2/projects/tenant/limits");
    assert_eq!(r.json()["overrides"], serde_json::json!({"queues_per_project": 1, "messages_per_queue": 2}));
    check(&server);
    assert_quota(&post(&mut server.client().with_project("tenant"), "first", &["3"]), "messages_per_queue", 2);

    // `{}` removes the overrides.
    let mut admin = server.client();
    assert_eq!(admin.put("/v2/projects/tenant/limits", Some("{}")).status, 200);
    assert_eq!(server.client().with_project("tenant").put("/v2/queues/second", None).status, 201);
}

#[test]
fn put_limits_bodies_are_checked_strictly() {
    let server = Server::start();
    let mut c = server.client();
    let bad = [
        r#"{"queues": 1}"#,
        r#"{"queues_per_project": -1}"#,
        r#"{"queues_per_project": "1"}"#,
        r#"{"queues_per_project": 1.5}"#,
        r#"{"queues_per_project": 1099511627777}"#,
        r#"[]"#,
        "{",
    ];
    for body in bad {
        let r = c.put("/v2/projects/p/limits", Some(body));
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    assert_eq!(c.put("/v2/projects/p/limits", Some(&deep)).status, 400);
    let huge = format!(r#"{{"queues_per_project": 1, "x": "{}"}}"#, "y".repeat(5000));
    let r = c.put("/v2/projects/p/limits", Some(&huge));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("4096"), "{}", r.text());
    assert_eq!(c.request("DELETE", "/v2/projects/p/limits", None, &[]).status, 405);
    assert_eq!(c.get("/v2/projects/p/limits").json()["overrides"], serde_json::json!({}), "nothing was set");
}

#[test]
fn the_configuration_file_overrides_limits_per_project_and_put_wins() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("marconi.toml");
    std::fs::write(
        &config,
        "[limits]\nmessages_per_queue = 10\n\n[limits.projects.small]\nqueues_per_project = 1\n\n\
         [limits.projects.\"big.one\"]\nmessages_per_queue = 0\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let server = Server::start_with(&["--config", config]);
    let mut small = server.client().with_project("small");
    assert_eq!(small.put("/v2/queues/a", None).status, 201);
    assert_quota(&small.put("/v2/queues/b", None), "queues_per_project", 1);
    let limits = small.get("/v2/projects/small/limits").json();
    assert_eq!(limits["limits"]["messages_per_queue"], 10, "the file's default");
    assert_eq!(limits["overrides"], serde_json::json!({}), "the file's overrides are not PUT's");
    let big = server.client().get("/v2/projects/big.one/limits").json();
    assert_eq!(big["limits"]["messages_per_queue"], 0);
    assert_eq!(server.client().with_project("other").put("/v2/queues/b", None).status, 201);
    // A PUT override wins over the file's.
    let r = server.client().put("/v2/projects/small/limits", Some(r#"{"queues_per_project": 2}"#));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(small.put("/v2/queues/b", None).status, 201);

    // A limit the file misnames stops the start, naming it.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[limits.projects.p]\nqueues = 1\n").unwrap();
    let data = tempfile::tempdir().unwrap();
    let err = start_fails(data.path(), &["--config", bad.to_str().unwrap()]);
    assert!(err.contains("limits.projects.p.queues") && err.contains("queues_per_project"), "{err}");
}

#[test]
fn a_damaged_limits_file_stops_the_start_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    drop(Server::start_in(dir.path(), &[]));
    std::fs::write(dir.path().join("limits.json"), "{\"format\": 1, \"projects\": {\"p\": {\"nope\": 1}}}").unwrap();
    let err = start_fails(dir.path(), &[]);
    assert!(err.contains("limits.json") && err.contains("nope"), "{err}");
}
