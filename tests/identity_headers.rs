//! A request says once who it is for and where it goes, or it is refused: a repeated
//! `X-Project-ID`, `Client-ID` or signature header, a missing, repeated or malformed `Host`
//! (RFC 9112 §3.2), and the queue names `.` and `..` (which dot-segment removal turns into other
//! paths) all get 400.

mod common;
use common::*;
use std::io::{Read, Write};
use std::time::Duration;

const OTHER_PROJECT: &str = "someone-else";

#[test]
fn repeated_identity_headers_are_refused() {
    let server = Server::start();
    let mut c = server.client();
    c.post_messages("mine", &["1"]);
    for (name, first, second) in [
        ("X-Project-ID", "test-project", OTHER_PROJECT),
        ("X-Project-ID", "test-project", "test-project"),
        ("x-project-id", "test-project", OTHER_PROJECT),
        ("Client-ID", CLIENT_ID, OTHER_CLIENT_ID),
        ("client-id", CLIENT_ID, CLIENT_ID),
        ("URL-Signature", "ab", "cd"),
    ] {
        // The request builder adds the usual X-Project-ID and Client-ID unless `extra` has them;
        // both copies go out here in the order given.
        let mut raw = format!("GET /v2/queues/mine/messages?echo=true HTTP/1.1\r\nHost: localhost\r\n{name}: {first}\r\n{name}: {second}\r\n");
        if !name.eq_ignore_ascii_case("x-project-id") {
            raw.push_str("X-Project-ID: test-project\r\n");
        }
        if !name.eq_ignore_ascii_case("client-id") {
            raw.push_str(&format!("Client-ID: {CLIENT_ID}\r\n"));
        }
        raw.push_str("\r\n");
        c.send_raw(raw.as_bytes());
        let r = c.read_response(false);
        assert_eq!(r.status, 400, "{name}: {first} / {second}: {}", r.text());
        let json = r.json();
        assert_eq!(json["code"], "invalid_header");
        assert_eq!(json["title"], "Repeated header");
        assert!(json["description"].as_str().unwrap().contains("only once"), "{json}");
    }
    // The connection is still in step, and a single copy works.
    let page = c.get("/v2/queues/mine/messages?echo=true").json();
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
}

/// Sends `raw` on a fresh connection and returns the status line and whether the server closed.
fn status_of(server: &Server, raw: &str) -> (u16, bool) {
    let mut c = server.client();
    c.send_raw(raw.as_bytes());
    let r = c.read_response(false);
    let closed = r.header("connection") == Some("close");
    (r.status, closed)
}

#[test]
fn host_must_be_present_once_and_well_formed() {
    let server = Server::start();
    let ping = |host_lines: &str| {
        format!("GET /v2/ping HTTP/1.1\r\n{host_lines}Client-ID: {CLIENT_ID}\r\nX-Project-ID: p\r\n\r\n")
    };
    for good in ["localhost", "127.0.0.1:8888", "[::1]:8888", "queue.example.com", ""] {
        assert_eq!(status_of(&server, &ping(&format!("Host: {good}\r\n"))), (204, false), "Host: {good}");
    }
    for (lines, why) in [
        ("", "Missing Host header."),
        ("Host: a\r\nHost: a\r\n", "More than one Host header."),
        ("Host: a\r\nhost: b\r\n", "More than one Host header."),
        ("Host: a b\r\n", "Invalid Host header."),
        ("Host: user@example.com\r\n", "Invalid Host header."),
        ("Host: example.com/v2\r\n", "Invalid Host header."),
        ("Host: example.com:port\r\n", "Invalid Host header."),
    ] {
        let mut c = server.client();
        c.send_raw(ping(lines).as_bytes());
        let r = c.read_response(false);
        assert_eq!(r.status, 400, "{lines:?}");
        assert_eq!(r.json()["description"], why, "{lines:?}");
        assert!(c.is_closed(), "{lines:?}");
    }
    // HTTP/1.0 may leave Host out (RFC 9112 §3.2).
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /v2/ping HTTP/1.0\r\nClient-ID: {CLIENT_ID}\r\nX-Project-ID: p\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("HTTP/1.1 204"), "{all}");
}

#[test]
fn dot_segment_queue_names_are_invalid() {
    let server = Server::start();
    let mut c = server.client();
    for name in [".", "..", "%2e%2e", "%2E"] {
        for (method, path, body) in [
            ("PUT", format!("/v2/queues/{name}"), None),
            ("GET", format!("/v2/queues/{name}"), None),
            ("POST", format!("/v2/queues/{name}/messages"), Some(r#"{"messages": [{"body": 1}]}"#)),
            ("GET", format!("/v2/queues/{name}/stats"), None),
        ] {
            let r = c.request(method, &path, body, &[]);
            assert_eq!(r.status, 400, "{method} {path}: {}", r.text());
            assert_eq!(r.json()["title"], "Invalid queue identification", "{method} {path}");
        }
    }
    // Dots elsewhere stay legal, as in Zaqar.
    for name in ["...", ".hidden", "a..b", "v1.2"] {
        assert_eq!(c.put(&format!("/v2/queues/{name}"), None).status, 201, "{name}");
    }
    let listed = c.get("/v2/queues?limit=20").json();
    let names: Vec<&str> = listed["queues"].as_array().unwrap().iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["...", ".hidden", "a..b", "v1.2"]);
    // Nor can a dead-letter queue be named so.
    let r = c.put("/v2/queues/with-dlq", Some(r#"{"_dead_letter_queue": "..", "_max_claim_count": 2}"#));
    assert_eq!(r.status, 400, "{}", r.text());
}
