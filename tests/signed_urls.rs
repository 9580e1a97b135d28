//! Pre-signed URLs: creation, use, and every way a signature can fail (always 404).

mod common;
use common::*;

fn share(c: &mut Client, body: &str) -> serde_json::Value {
    let r = c.post("/v2/queues/shared/share", body);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn signed_urls_grant_exactly_what_they_name() {
    let server = Server::start();
    let mut c = server.client();
    c.post_messages("shared", &["1"]);
    let doc = share(&mut c, r#"{"methods": ["GET", "POST"], "paths": ["messages", "claims"]}"#);
    assert_eq!(doc["paths"], serde_json::json!(["/v2/queues/shared/claims", "/v2/queues/shared/messages"]));
    assert_eq!(doc["project"], "test-project");
    assert_eq!(doc["signature"].as_str().unwrap().len(), 64);
    let methods = doc["methods"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect::<Vec<_>>().join(",");
    let paths = doc["paths"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect::<Vec<_>>().join(",");
    let expires = doc["expires"].as_str().unwrap().to_owned();
    let sig = doc["signature"].as_str().unwrap().to_owned();
    let headers = |sig: &str, methods: &str| {
        vec![
            ("URL-Signature", sig.to_owned()),
            ("URL-Expires", expires.clone()),
            ("URL-Methods", methods.to_owned()),
            ("URL-Paths", paths.clone()),
        ]
    };
    let call = |c: &mut Client, method: &str, path: &str, h: Vec<(&str, String)>| {
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        c.request(method, path, None, &h).status
    };
    assert_eq!(call(&mut c, "GET", "/v2/queues/shared/messages?echo=true", headers(&sig, &methods)), 200);
    assert_eq!(call(&mut c, "GET", "/v2/queues/shared/messages", headers(&sig[..63], &methods)), 404);
    assert_eq!(call(&mut c, "GET", "/v2/queues/shared/messages", headers("", &methods)), 404);
    assert_eq!(call(&mut c, "GET", "/v2/queues/shared/messages", headers(&sig, "GET")), 404);
    assert_eq!(call(&mut c, "DELETE", "/v2/queues/shared", headers(&sig, &methods)), 404);
    assert_eq!(call(&mut c, "GET", "/v2/queues/other/messages", headers(&sig, &methods)), 404);
    let mut wrong_project = server.client().with_project("intruder");
    assert_eq!(call(&mut wrong_project, "GET", "/v2/queues/shared/messages", headers(&sig, &methods)), 404);
}

#[test]
fn share_requests_are_validated() {
    let server = Server::start();
    let mut c = server.client();
    for body in [
        "not json",
        r#"{"dummy": "meh"}"#,
        r#"{"expires": "wrong date format"}"#,
        r#"{"methods": "GET"}"#,
        r#"{"paths": ["notallowed"]}"#,
        r#"{"expires": 1234}"#,
        r#"{"expires": "2001-01-01T00:00:00"}"#,
    ] {
        let r = c.post("/v2/queues/shared/share", body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }
    let doc = share(&mut c, "{}");
    assert_eq!(doc["methods"], serde_json::json!(["GET"]));
    assert_eq!(doc["paths"], serde_json::json!(["/v2/queues/shared/messages"]));
}

#[test]
fn share_without_a_secret_is_refused() {
    let server = Server::start_with(&["--signed-url-secret-key", ""]);
    let mut c = server.client();
    let r = c.post("/v2/queues/shared/share", "{}");
    assert_eq!(r.status, 400, "{}", r.text());
}
