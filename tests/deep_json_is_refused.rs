//! Every endpoint that takes a JSON body refuses documents nested deeper than
//! `api.max_json_depth` with a 400 naming the limit, at depths that used to overflow a shard's
//! stack and abort the process; the server answers as before afterwards. Documents within the
//! limit are accepted where they are valid, and stored ones come back after a restart.

mod common;
use common::*;

/// The default of `api.max_json_depth`.
const MAX_DEPTH: usize = 64;
const TOO_DEEP: &str = "JSON nesting is deeper than 64 levels.";
const PATCH_TYPE: (&str, &str) = ("Content-Type", "application/openstack-messaging-v2.0-json-patch");

/// `levels` nested arrays around a number: `levels` levels deep.
fn nested(levels: usize) -> String {
    format!("{}0{}", "[".repeat(levels), "]".repeat(levels))
}

/// One body-taking endpoint: how to build a document `depth` levels deep in total for it, and
/// what it answers to one within the limit.
struct Endpoint {
    name: &'static str,
    method: &'static str,
    path: String,
    doc: fn(usize) -> String,
    extra: &'static [(&'static str, &'static str)],
    /// Status of a document within the limit (where the shape allows a valid one).
    shallow_status: &'static [u16],
}

fn endpoints(claim: &str) -> Vec<Endpoint> {
    vec![
        Endpoint {
            name: "message post",
            method: "POST",
            path: "/v2/queues/deep/messages".into(),
            doc: |d| format!(r#"{{"messages": [{{"ttl": 300, "body": {}}}]}}"#, nested(d - 3)),
            extra: &[],
            shallow_status: &[201],
        },
        Endpoint {
            name: "queue PUT",
            method: "PUT",
            path: "/v2/queues/deep-meta".into(),
            doc: |d| format!(r#"{{"deep": {}}}"#, nested(d - 1)),
            extra: &[],
            shallow_status: &[201, 204],
        },
        Endpoint {
            name: "queue PATCH",
            method: "PATCH",
            path: "/v2/queues/deep-meta".into(),
            doc: |d| format!(r#"[{{"op": "add", "path": "/metadata/patched", "value": {}}}]"#, nested(d - 2)),
            extra: &[PATCH_TYPE],
            shallow_status: &[200],
        },
        Endpoint {
            name: "claim create",
            method: "POST",
            path: "/v2/queues/deep-claims/claims".into(),
            doc: |d| format!(r#"{{"ttl": 60, "extra": {}}}"#, nested(d - 1)),
            extra: &[],
            shallow_status: &[201, 204],
        },
        Endpoint {
            name: "claim renew",
            method: "PATCH",
            path: format!("/v2/queues/deep-claims/claims/{claim}"),
            doc: |d| format!(r#"{{"ttl": 120, "extra": {}}}"#, nested(d - 1)),
            extra: &[],
            shallow_status: &[204],
        },
        // No valid share or purge document nests: deep ones within the limit reach the
        // endpoint's own checks.
        Endpoint {
            name: "share",
            method: "POST",
            path: "/v2/queues/deep/share".into(),
            doc: |d| format!(r#"{{"paths": {}}}"#, nested(d - 1)),
            extra: &[],
            shallow_status: &[400],
        },
        Endpoint {
            name: "purge",
            method: "POST",
            path: "/v2/queues/deep/purge".into(),
            doc: |d| format!(r#"{{"resource_types": {}}}"#, nested(d - 1)),
            extra: &[],
            shallow_status: &[400],
        },
        Endpoint {
            name: "topic PUT (out of scope)",
            method: "PUT",
            path: "/v2/topics/deep".into(),
            doc: |d| format!(r#"{{"deep": {}}}"#, nested(d - 1)),
            extra: &[],
            shallow_status: &[501],
        },
    ]
}

/// A live claim on a queue of its own, for the renewal endpoint.
fn claim_id(c: &mut Client) -> String {
    c.post_messages("deep-claims", &["1", "2"]);
    let r = c.request("POST", "/v2/queues/deep-claims/claims?limit=1", Some(r#"{"ttl": 300}"#), &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    r.header("location").unwrap().rsplit('/').next().unwrap().to_owned()
}

#[test]
fn every_body_is_refused_past_the_depth_limit_and_the_server_lives_on() {
    // Metadata bodies are capped at 64 KiB by default; lift the cap so that 100,000 levels reach
    // the parser instead of the size check (and give segments room for such metadata).
    let server =
        Server::start_with(&["--set", "api.max_queue_metadata_bytes=1048576", "--segment-size-bytes", "4194304"]);
    let mut c = server.client();
    let claim = claim_id(&mut c);
    for e in endpoints(&claim) {
        for depth in [10, MAX_DEPTH, MAX_DEPTH + 1, 1_000, 100_000] {
            let doc = (e.doc)(depth);
            let r = c.request(e.method, &e.path, Some(&doc), e.extra);
            let description = if r.status >= 400 {
                r.json()["description"].as_str().unwrap_or_default().to_owned()
            } else {
                String::new()
            };
            if depth <= MAX_DEPTH {
                assert!(e.shallow_status.contains(&r.status), "{} at {depth}: {} {}", e.name, r.status, r.text());
                assert_ne!(description, TOO_DEEP, "{} at {depth}", e.name);
            } else {
                assert_eq!((r.status, description.as_str()), (400, TOO_DEEP), "{} at {depth}", e.name);
                assert_eq!(r.json()["code"], "invalid_body");
            }
            // Same connection, then a new one: nothing died.
            assert_eq!(c.get("/v2/ping").status, 204, "{} at {depth}", e.name);
        }
    }
    assert_eq!(server.client().get("/v2/ping").status, 204);
}

#[test]
fn accepted_deep_values_come_back_byte_for_byte_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let deepest_meta = nested(MAX_DEPTH - 1);
    let deepest_body = nested(MAX_DEPTH - 3);
    let deepest_patch = nested(MAX_DEPTH - 2);
    {
        let server = Server::start_in(dir.path(), &[]);
        let mut c = server.client();
        let r = c.put("/v2/queues/kept", Some(&format!(r#"{{"deep": {deepest_meta}}}"#)));
        assert_eq!(r.status, 201, "{}", r.text());
        let patch = format!(r#"[{{"op": "add", "path": "/metadata/patched", "value": {deepest_patch}}}]"#);
        assert_eq!(c.patch("/v2/queues/kept", &patch).status, 200);
        c.post_messages("kept", &[&deepest_body]);
    }
    let server = Server::start_in(dir.path(), &[]);
    let mut c = server.client();
    let meta = c.get("/v2/queues/kept").json();
    assert_eq!(meta["deep"], serde_json::from_str::<serde_json::Value>(&deepest_meta).unwrap());
    assert_eq!(meta["patched"], serde_json::from_str::<serde_json::Value>(&deepest_patch).unwrap());
    let page = c.get("/v2/queues/kept/messages?echo=true");
    let text = page.text();
    assert!(text.contains(&format!("\"body\":{deepest_body}")), "{text}");
}
