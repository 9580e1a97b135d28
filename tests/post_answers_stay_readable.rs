//! A post carries at most `api.max_messages_per_post` messages, so the `Location` of its 201
//! (which lists every new id) stays a header every client reads; a larger post is refused whole
//! with a 400, before anything is stored.

mod common;
use common::*;

const PER_POST: usize = 100;

fn tiny_post(n: usize) -> String {
    format!("{{\"messages\":[{}]}}", vec!["{\"body\":0}"; n].join(","))
}

#[test]
fn the_largest_post_gets_a_location_clients_read() {
    let server = Server::start();
    let mut c = server.client();
    let queue = "q".repeat(64);
    let r = c.post(&format!("/v2/queues/{queue}/messages"), &tiny_post(PER_POST));
    assert_eq!(r.status, 201, "{}", r.text());
    let location = r.header("location").unwrap();
    assert_eq!(location.rsplit('=').next().unwrap().split(',').count(), PER_POST);
    // Under a proxy's default 4 KiB header buffer, far under http.client's 64 KiB per line.
    assert!(location.len() < 4096, "{}", location.len());
    assert_eq!(r.json()["resources"].as_array().unwrap().len(), PER_POST);
}

#[test]
fn larger_posts_are_refused_and_store_nothing() {
    let server = Server::start();
    let mut c = server.client();
    // 23,827 messages in 255 KB: under the size limit, once answered with a 581 KB Location.
    for n in [PER_POST + 1, 23_827] {
        let body = tiny_post(n);
        assert!(body.len() < 262_144);
        let r = c.post("/v2/queues/many/messages", &body);
        assert_eq!(r.status, 400, "{n}");
        assert_eq!(r.json()["description"], format!("Too many messages: a post may hold at most {PER_POST}."));
    }
    assert_eq!(c.get("/v2/queues/many/stats").json()["messages"]["total"], 0);
}

#[test]
fn the_limit_is_a_knob() {
    let server = Server::start_with(&["--set", "api.max_messages_per_post=5"]);
    let mut c = server.client();
    assert_eq!(c.post("/v2/queues/k/messages", &tiny_post(5)).status, 201);
    assert_eq!(c.post("/v2/queues/k/messages", &tiny_post(6)).status, 400);
}
