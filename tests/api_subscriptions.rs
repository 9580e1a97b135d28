//! Subscriptions: marconi forwards no notifications, so none can exist, but unchanged Zaqar
//! clients must not break on the routes: a listing is Zaqar's empty page, a subscription is never
//! found, deleting one is done, and creating one is a clear 400.

mod common;
use common::*;
use serde_json::json;

#[test]
fn listing_is_zaqars_empty_page_whether_or_not_the_queue_exists() {
    let server = Server::start();
    let mut c = server.client();
    for path in ["/v2/queues/nowhere/subscriptions", "/v2/queues/nowhere/subscriptions/?limit=20&marker=x"] {
        let r = c.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.json(), json!({"subscriptions": [], "links": []}));
    }
    assert_eq!(c.head("/v2/queues/nowhere/subscriptions").status, 200);
    // Listing never creates the queue.
    assert_eq!(c.head("/v2/queues/nowhere").status, 404);
    c.post_messages("jobs", &["1"]);
    assert_eq!(c.get("/v2/queues/jobs/subscriptions").json()["subscriptions"], json!([]));
}

#[test]
fn listing_checks_its_limit_and_the_queue_name() {
    let server = Server::start();
    let mut c = server.client();
    for limit in ["0", "21", "-1"] {
        let r = c.get(&format!("/v2/queues/q/subscriptions?limit={limit}"));
        assert_eq!(r.status, 400, "limit={limit}");
        assert_eq!(r.json()["description"], "Limit must be at least 1 and may not be greater than 20.");
    }
    let r = c.get("/v2/queues/q/subscriptions?limit=many");
    assert_eq!((r.status, r.json()["code"].as_str().unwrap()), (400, "invalid_parameter"));
    let r = c.get("/v2/queues/bad%20name/subscriptions");
    assert_eq!((r.status, r.json()["title"].as_str().unwrap()), (400, "Invalid queue identification"));
    let r = c.request("GET", "/v2/queues/q/subscriptions", None, &[("Client-ID", "")]);
    assert_eq!(r.status, 400);
}

#[test]
fn creating_one_is_refused_clearly_and_creates_nothing() {
    let server = Server::start();
    let mut c = server.client();
    for body in [r#"{"subscriber": "http://example.com/hook", "ttl": 3600, "options": {}}"#, "{}", "not json"] {
        let r = c.post("/v2/queues/fresh/subscriptions", body);
        assert_eq!(r.status, 400, "{body}");
        let err = r.json();
        assert_eq!(err["title"], "Invalid API request");
        assert_eq!(err["code"], "invalid_request");
        assert!(err["description"].as_str().unwrap().contains("does not forward messages"), "{err}");
    }
    assert_eq!(c.head("/v2/queues/fresh").status, 404, "a refused subscription creates no queue");
    assert_eq!(c.get("/v2/queues/fresh/subscriptions").json()["subscriptions"], json!([]));
}

#[test]
fn a_subscription_is_never_found_and_deleting_one_is_done() {
    let server = Server::start();
    let mut c = server.client();
    c.post_messages("jobs", &["1"]);
    for queue in ["jobs", "nowhere"] {
        let path = format!("/v2/queues/{queue}/subscriptions/57692ab13990b48c644bb7e6");
        let r = c.get(&path);
        assert_eq!(r.status, 404);
        assert_eq!(r.json()["description"], "Subscription 57692ab13990b48c644bb7e6 does not exist.");
        assert_eq!(c.head(&path).status, 404);
        assert_eq!(c.request("PATCH", &path, Some(r#"{"ttl": 300}"#), &[]).status, 404);
        let r = c.request("PUT", &format!("{path}/confirm"), Some(r#"{"confirmed": true}"#), &[]);
        assert_eq!(r.status, 404);
        assert_eq!(c.delete(&path).status, 204);
    }
    let r = c.get("/v2/queues/jobs/subscriptions/x/confirm");
    assert_eq!((r.status, r.header("allow")), (405, Some("PUT")));
    let r = c.post("/v2/queues/jobs/subscriptions/x", "{}");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD, PATCH, DELETE")));
    assert_eq!(c.get("/v2/queues/jobs/subscriptions/x/confirm/more").status, 404);
    // The queue and its messages are untouched.
    assert_eq!(c.get("/v2/queues/jobs/stats").json()["messages"]["total"], 1);
}
