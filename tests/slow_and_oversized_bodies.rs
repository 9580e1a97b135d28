//! Bodies that trickle in are cut off at `http.body_read_timeout_ms` with a 408 and a closed
//! connection, however steadily the bytes come; a declared length over a route's limit (or over
//! `http.max_body_bytes`) is answered as soon as the head is in, without waiting for the body.

mod common;
use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The head of a request whose body is left to the caller.
fn head(method: &str, path: &str, extra: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nClient-ID: {CLIENT_ID}\r\nX-Project-ID: slow\r\nContent-Type: application/json\r\n{extra}\r\n")
}

/// Writes a byte to each stream every few milliseconds until told to stop (or every stream is
/// gone): far more often than the idle timeout, so only the body deadline can end them.
fn trickle(streams: Vec<TcpStream>) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut streams = streams;
        while !flag.load(Ordering::Relaxed) && !streams.is_empty() {
            streams.retain_mut(|s| s.write_all(b" ").is_ok());
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    (stop, handle)
}

fn assert_timed_out(c: &mut Client, what: &str) {
    let r = c.read_response(false);
    assert_eq!(r.status, 408, "{what}: {}", r.text());
    assert_eq!(r.json()["description"], "The request body did not arrive in time.", "{what}");
    assert_eq!(r.header("connection"), Some("close"), "{what}");
    assert!(c.is_closed(), "{what}");
}

#[test]
fn a_hundred_trickling_bodies_all_get_408_and_are_closed() {
    let server = Server::start_with(&["--set", "http.body_read_timeout_ms=300"]);
    let requests = [
        head("POST", "/v2/queues/slow/messages", "Content-Length: 200000\r\n"),
        head("POST", "/v2/queues/slow/claims", "Content-Length: 1000000\r\n"),
        head("PUT", "/v2/queues/slow", "Content-Length: 60000\r\n"),
        head("POST", "/v2/queues/slow/messages", "Transfer-Encoding: chunked\r\n") + "10000\r\n",
        head("POST", "/v2/queues/slow/claims", "Expect: 100-continue\r\nContent-Length: 1000\r\n"),
    ];
    let mut clients: Vec<(Client, usize)> = (0..100)
        .map(|i| {
            let mut c = server.client();
            let kind = i % requests.len();
            c.send_raw(requests[kind].as_bytes());
            (c, kind)
        })
        .collect();
    // The 100-continue clients get their interim answer first.
    for (c, kind) in &mut clients {
        if *kind == 4 {
            assert_eq!(c.read_response(false).status, 100);
        }
    }
    let (stop, trickler) = trickle(clients.iter().map(|(c, _)| c.stream.try_clone().unwrap()).collect());
    for (c, kind) in &mut clients {
        assert_timed_out(c, &requests[*kind]);
    }
    stop.store(true, Ordering::Relaxed);
    trickler.join().unwrap();
    // Nothing was half-stored, and the server serves on.
    let mut c = server.client().with_project("slow");
    assert_eq!(c.get("/v2/queues/slow/stats").json()["messages"]["total"], 0);
    assert_eq!(c.get("/v2/ping").status, 204);
}

#[test]
fn oversized_declared_bodies_are_answered_from_the_head_alone() {
    // The body deadline is far longer than the client waits: a 408 would mean the server had
    // waited for the body.
    let server = Server::start();
    let cases = [
        (head("POST", "/v2/queues/big/messages", "Content-Length: 300000\r\n"), 400, "too large"),
        (
            head("POST", "/v2/queues/big/messages", "Expect: 100-continue\r\nContent-Length: 300000\r\n"),
            400,
            "too large",
        ),
        (head("PUT", "/v2/queues/big", "Content-Length: 70000\r\n"), 400, "too large"),
        (head("PATCH", "/v2/queues/big", "Content-Length: 70000\r\n"), 400, "too large"),
        (head("POST", "/v2/queues/big/claims", "Content-Length: 9000000\r\n"), 413, "larger than"),
        (
            head("POST", "/v2/queues/big/claims", "Expect: 100-continue\r\nContent-Length: 9000000\r\n"),
            413,
            "larger than",
        ),
    ];
    for (raw, status, text) in cases {
        let mut c = server.client();
        c.send_raw(raw.as_bytes());
        let r = c.read_response(false);
        assert_eq!(r.status, status, "{raw}: {}", r.text());
        assert!(r.text().contains(text), "{raw}: {}", r.text());
        assert_eq!(r.header("connection"), Some("close"), "{raw}");
        assert!(c.is_closed(), "{raw}");
    }
    assert_eq!(server.client().get("/v2/ping").status, 204);
}
