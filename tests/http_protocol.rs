//! The HTTP layer against the real server: keep-alive, pipelining, chunked bodies,
//! 100-continue, HEAD, HTTP/1.0, limits, malformed input, and requests split at every
//! fragment size.

mod common;
use common::*;
use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn pipelined_requests_answer_in_order() {
    let server = Server::start();
    let mut c = server.client();
    let mut batch = Vec::new();
    for i in 0..5 {
        let body = format!(r#"{{"messages": [{{"body": {i}}}]}}"#);
        batch.extend(c.build("POST", "/v2/queues/pipe/messages", Some(&body), &[]));
        batch.extend(c.build("GET", "/v2/ping", None, &[]));
    }
    batch.extend(c.build("GET", "/v2/queues/pipe/messages?echo=true&limit=20", None, &[]));
    c.send_raw(&batch);
    for _ in 0..5 {
        assert_eq!(c.read_response(false).status, 201);
        assert_eq!(c.read_response(false).status, 204);
    }
    let list = c.read_response(false).json();
    let bodies: Vec<i64> = list["messages"].as_array().unwrap().iter().map(|m| m["body"].as_i64().unwrap()).collect();
    assert_eq!(bodies, vec![0, 1, 2, 3, 4]);
}

#[test]
fn chunked_bodies_and_expect_continue() {
    let server = Server::start();
    let mut c = server.client();
    let body = r#"{"messages": [{"body": "chunked"}]}"#;
    let (a, b) = body.split_at(10);
    let raw = format!(
        "POST /v2/queues/ch/messages HTTP/1.1\r\nHost: x\r\nClient-ID: {CLIENT_ID}\r\nX-Project-ID: p\r\nTransfer-Encoding: chunked\r\n\r\n{:x};ext=1\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nTrailer: x\r\n\r\n",
        a.len(),
        b.len()
    );
    c.send_raw(raw.as_bytes());
    assert_eq!(c.read_response(false).status, 201);

    let raw = format!(
        "POST /v2/queues/ch/messages HTTP/1.1\r\nHost: x\r\nClient-ID: {CLIENT_ID}\r\nX-Project-ID: p\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.send_raw(raw.as_bytes());
    let interim = c.read_response(false);
    assert_eq!(interim.status, 100);
    c.send_raw(body.as_bytes());
    assert_eq!(c.read_response(false).status, 201);
    let list = c.request("GET", "/v2/queues/ch/messages?echo=true", None, &[("X-Project-ID", "p")]).json();
    assert_eq!(list["messages"].as_array().unwrap().len(), 2);
}

#[test]
fn chunked_bodies_meet_the_same_size_limits_as_declared_ones() {
    let server = Server::start();
    let mut c = server.client();
    let body = format!(r#"{{"messages": [{{"body": "{}"}}]}}"#, "x".repeat(300_000));
    let mut raw = format!(
        "POST /v2/queues/big/messages HTTP/1.1\r\nHost: x\r\nClient-ID: {CLIENT_ID}\r\nX-Project-ID: p\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    for chunk in body.as_bytes().chunks(65_536) {
        raw.push_str(&format!("{:x}\r\n{}\r\n", chunk.len(), String::from_utf8_lossy(chunk)));
    }
    raw.push_str("0\r\n\r\n");
    c.send_raw(raw.as_bytes());
    let r = c.read_response(false);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("too large"));
    let stats = c.request("GET", "/v2/queues/big/stats", None, &[("X-Project-ID", "p")]).json();
    assert_eq!(stats["messages"]["total"], 0);
}

#[test]
fn expect_continue_with_an_oversized_body_is_refused_before_sending_it() {
    let server = Server::start();
    let mut c = server.client();
    let raw = format!(
        "POST /v2/queues/big/messages HTTP/1.1\r\nHost: x\r\nClient-ID: {CLIENT_ID}\r\nX-Project-ID: p\r\nExpect: 100-continue\r\nContent-Length: 10000000\r\n\r\n"
    );
    c.send_raw(raw.as_bytes());
    let r = c.read_response(false);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("too large"));
}

#[test]
fn head_has_no_body_and_http10_closes() {
    let server = Server::start();
    let mut c = server.client();
    c.put("/v2/queues/h", None);
    let r = c.head("/v2/queues/h/stats");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(c.get("/v2/ping").status, 204, "connection still in sync after HEAD");

    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /v2/queues/h/stats HTTP/1.0\r\nClient-ID: {CLIENT_ID}\r\nX-Project-ID: test-project\r\n\r\n")
        .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("HTTP/1.") && all.contains(" 200 "), "{all}");
    assert!(all.contains("\"messages\""));
}

#[test]
fn limits_and_malformed_requests() {
    let server = Server::start();
    let mut c = server.client();
    let huge = "x".repeat(20_000);
    let raw = format!(
        "GET /v2/ping HTTP/1.1\r\nHost: x\r\nClient-ID: {CLIENT_ID}\r\nX-Project-ID: p\r\nX-Big: {huge}\r\n\r\n"
    );
    c.send_raw(raw.as_bytes());
    let r = c.read_response(false);
    assert_eq!(r.status, 431);
    assert!(r.json()["title"].is_string());

    let mut c = server.client();
    c.send_raw(b"this is not http\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 400);
    assert!(c.is_closed());

    let mut c = server.client();
    let raw = format!(
        "PUT /v2/queues/x HTTP/1.1\r\nHost: x\r\nClient-ID: {CLIENT_ID}\r\nX-Project-ID: p\r\nContent-Length: 999999999999\r\n\r\n"
    );
    c.send_raw(raw.as_bytes());
    let r = c.read_response(false);
    assert!(r.status == 413 || r.status == 400, "{}", r.status);
    assert!(c.is_closed());

    let mut c = server.client();
    c.send_raw(b"GET /v2/ping HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(c.read_response(false).status, 400);
}

#[test]
fn requests_split_at_every_fragment_size() {
    let server = Server::start();
    for size in [100_000, 1000, 100, 10, 5, 2, 1] {
        let mut c = server.client();
        let body = format!(r#"{{"messages": [{{"body": {{"size": {size}}}}}]}}"#);
        let mut raw = c.build("POST", "/v2/queues/frag/messages", Some(&body), &[]);
        raw.extend(c.build("GET", "/v2/queues/frag/stats", None, &[]));
        for piece in raw.chunks(size) {
            c.send_raw(piece);
            c.stream.flush().unwrap();
            if size <= 5 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        assert_eq!(c.read_response(false).status, 201, "fragment size {size}");
        let stats = c.read_response(false);
        assert_eq!(stats.status, 200, "fragment size {size}");
    }
    let mut c = server.client();
    assert_eq!(c.get("/v2/queues/frag/stats").json()["messages"]["total"], 7);
}

#[test]
fn every_response_carries_a_request_id_and_date() {
    let server = Server::start();
    let mut c = server.client();
    let r = c.get("/v2/queues");
    assert!(r.header("x-openstack-request-id").unwrap().starts_with("req-"));
    assert!(r.header("date").is_some());
    assert_eq!(r.header("content-type"), Some("application/json"));
}
