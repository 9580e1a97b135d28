//! `auth.mode = keystone` against the real server and a fake Keystone v3 written for these
//! tests: validation with a service token or service credentials, the project taken from the
//! token, the per-shard cache, expiry, revocation, and Keystone down (503, never a pass).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use common::{Client, Resp, Server};

const SERVICE_TOKEN: &str = "service-secret";

#[derive(Default)]
struct State {
    /// Subject token → (project id, user id, expires_at).
    tokens: Mutex<HashMap<String, (String, String, String)>>,
    /// Answer every call with 503 (Keystone up but broken) …
    broken: AtomicBool,
    /// … or drop connections without a word.
    down: AtomicBool,
    validations: AtomicU64,
    logins: AtomicU64,
    stop: AtomicBool,
}

/// A Keystone v3 that knows `GET /v3/auth/tokens` and password `POST /v3/auth/tokens`, on a free
/// loopback port; stopped (and its thread joined) on drop.
struct FakeKeystone {
    addr: SocketAddr,
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl FakeKeystone {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(conn) = conn {
                    serve_one(conn, &st);
                }
            }
        });
        FakeKeystone { addr, state, thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("http://{}/v3", self.addr)
    }

    fn grant(&self, token: &str, project: &str, expires_at: &str) {
        let user = format!("user-of-{token}");
        self.state.tokens.lock().unwrap().insert(token.into(), (project.into(), user, expires_at.into()));
    }

    fn revoke(&self, token: &str) {
        self.state.tokens.lock().unwrap().remove(token);
    }

    fn validations(&self) -> u64 {
        self.state.validations.load(Ordering::SeqCst)
    }
}

impl Drop for FakeKeystone {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(mut conn: TcpStream, st: &State) {
    if st.down.load(Ordering::SeqCst) {
        return;
    }
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    let (status, extra, answer) = if st.broken.load(Ordering::SeqCst) {
        (503, String::new(), "{}".to_owned())
    } else if line.starts_with("POST /v3/auth/tokens") {
        st.logins.fetch_add(1, Ordering::SeqCst);
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let user = &doc["auth"]["identity"]["password"]["user"];
        if user["name"] == "marconi" && user["password"] == "pw" {
            let answer = r#"{"token": {"expires_at": "2099-01-01T00:00:00.000000Z", "project": {"id": "service"}}}"#;
            (201, format!("X-Subject-Token: {SERVICE_TOKEN}\r\n"), answer.to_owned())
        } else {
            (401, String::new(), "{}".to_owned())
        }
    } else if line.starts_with("GET /v3/auth/tokens") {
        st.validations.fetch_add(1, Ordering::SeqCst);
        if headers.get("x-auth-token").map(String::as_str) != Some(SERVICE_TOKEN) {
            (401, String::new(), "{}".to_owned())
        } else {
            let subject = headers.get("x-subject-token").cloned().unwrap_or_default();
            match st.tokens.lock().unwrap().get(&subject) {
                Some((project, user, expires)) => (
                    200,
                    format!("X-Subject-Token: {subject}\r\n"),
                    serde_json::json!({"token": {"expires_at": expires, "methods": ["password"],
                        "project": {"id": project, "name": project, "domain": {"id": "default"}},
                        "user": {"id": user, "name": user}}})
                    .to_string(),
                ),
                None => (404, String::new(), r#"{"error": {"code": 404}}"#.to_owned()),
            }
        }
    } else {
        (404, String::new(), "{}".to_owned())
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{answer}",
        answer.len()
    );
}

fn serve(ks: &FakeKeystone, extra: &[&str]) -> Server {
    let url = format!("auth.keystone.url={}", ks.url());
    let mut args = vec!["--auth", "keystone", "--set", &url];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

fn with_service_token(ks: &FakeKeystone, extra: &[&str]) -> Server {
    let token = format!("auth.keystone.service_token={SERVICE_TOKEN}");
    let mut args = vec!["--set", token.as_str()];
    args.extend_from_slice(extra);
    serve(ks, &args)
}

/// A request carrying `token` and, when given, an X-Project-ID.
fn call(c: &mut Client, method: &str, path: &str, body: Option<&str>, token: &str, project: Option<&str>) -> Resp {
    c.request(method, path, body, &[("X-Auth-Token", token), ("X-Project-ID", project.unwrap_or(""))])
}

/// A request without X-Project-ID at all.
fn bare(c: &mut Client, method: &str, path: &str, body: Option<&[u8]>, token: &str) -> Resp {
    let mut out = Vec::new();
    let mut req = wire::Request::new(&mut out, method, path);
    req.header("Host", "localhost").header("Client-ID", common::CLIENT_ID).header("X-Auth-Token", token);
    match body {
        Some(b) => req.body(b),
        None => req.end(),
    }
    c.send_raw(&out);
    c.read_response(method == "HEAD")
}

const LATER: &str = "2099-01-01T00:00:00.000000Z";

#[test]
fn a_keystone_token_names_the_project_and_is_cached() {
    let ks = FakeKeystone::start();
    ks.grant("tok-a", "proj-a", LATER);
    ks.grant("tok-b", "proj-b", LATER);
    let server = with_service_token(&ks, &[]);
    let mut c = server.client();

    assert_eq!(bare(&mut c, "PUT", "/v2/queues/jobs", Some(b"{}"), "tok-a").status, 201);
    let list = bare(&mut c, "GET", "/v2/queues", None, "tok-a").json();
    assert_eq!(list["queues"][0]["name"], "jobs", "{list}");
    assert_eq!(call(&mut c, "GET", "/v2/queues/jobs/stats", None, "tok-a", Some("proj-a")).status, 200);
    // Another project's X-Project-ID beside the token: 403, not a look at proj-b.
    let r = call(&mut c, "GET", "/v2/queues/jobs/stats", None, "tok-a", Some("proj-b"));
    assert_eq!((r.status, r.json()["code"].clone()), (403, "forbidden".into()), "{}", r.text());
    // proj-b's token sees none of proj-a's queues.
    let list = bare(&mut c, "GET", "/v2/queues", None, "tok-b").json();
    assert_eq!(list["queues"].as_array().map(Vec::len), Some(0), "{list}");

    let asked = ks.validations();
    for _ in 0..5 {
        assert_eq!(bare(&mut c, "GET", "/v2/queues/jobs/stats", None, "tok-a").status, 200);
    }
    assert_eq!(ks.validations(), asked, "a cached token costs no call to Keystone");

    let r = bare(&mut c, "GET", "/v2/queues", None, "tok-unknown");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["code"], "auth_invalid");
    assert!(r.header("www-authenticate").unwrap_or_default().starts_with("Keystone uri="), "{:?}", r.headers);
    let r = c.request("GET", "/v2/queues", None, &[("X-Project-ID", "proj-a")]);
    assert_eq!((r.status, r.json()["code"].clone()), (401, "auth_missing".into()));
}

#[test]
fn keystone_down_is_503_for_uncached_tokens_and_never_a_pass() {
    let ks = FakeKeystone::start();
    ks.grant("warm", "proj-a", LATER);
    ks.grant("cold", "proj-a", LATER);
    let server = with_service_token(&ks, &["--set", "auth.keystone.timeout_ms=500"]);
    let mut c = server.client();
    assert_eq!(bare(&mut c, "GET", "/v2/queues", None, "warm").status, 200);
    for (flag, what) in [(&ks.state.broken, "Keystone answers 503"), (&ks.state.down, "Keystone drops connections")] {
        flag.store(true, Ordering::SeqCst);
        let r = bare(&mut c, "GET", "/v2/queues", None, "cold");
        assert_eq!(r.status, 503, "{what}: {}", r.text());
        assert_eq!(r.json()["code"], "auth_unavailable");
        assert!(r.header("retry-after").is_some(), "{what}: 503 needs Retry-After");
        assert_eq!(bare(&mut c, "GET", "/v2/queues", None, "warm").status, 200, "{what}: a cached token still works");
        flag.store(false, Ordering::SeqCst);
    }
    assert_eq!(bare(&mut c, "GET", "/v2/queues", None, "cold").status, 200, "Keystone back");
    let metrics = bare(&mut c, "GET", "/metrics", None, "warm").text();
    let sample = "marconi_auth_failures_total{shard=\"all\",reason=\"keystone_down\"} ";
    let n: f64 = metrics.lines().find_map(|l| l.strip_prefix(sample)).unwrap().parse().unwrap();
    assert!(n >= 2.0, "both outages counted: {n}");
}

#[test]
fn expired_and_revoked_keystone_tokens_are_refused() {
    let ks = FakeKeystone::start();
    ks.grant("old", "proj-a", "2001-01-01T00:00:00Z");
    ks.grant("live", "proj-a", LATER);
    // No cache: each request asks Keystone, so a revocation there is seen at once.
    let server = with_service_token(&ks, &["--set", "auth.keystone.cache_ttl_s=0"]);
    let mut c = server.client();
    let r = bare(&mut c, "GET", "/v2/queues", None, "old");
    assert_eq!((r.status, r.json()["code"].clone()), (401, "auth_invalid".into()), "expired: {}", r.text());
    assert_eq!(bare(&mut c, "GET", "/v2/queues", None, "live").status, 200);
    ks.revoke("live");
    let r = bare(&mut c, "GET", "/v2/queues", None, "live");
    assert_eq!(r.status, 401, "revoked in Keystone: {}", r.text());
}

#[test]
fn service_credentials_log_in_first() {
    let ks = FakeKeystone::start();
    ks.grant("tok", "proj-a", LATER);
    let server = serve(
        &ks,
        &[
            "--set",
            "auth.keystone.username=marconi",
            "--set",
            "auth.keystone.password=pw",
            "--set",
            "auth.keystone.project=service",
        ],
    );
    let mut c = server.client();
    assert_eq!(bare(&mut c, "GET", "/v2/queues", None, "tok").status, 200);
    assert!(ks.state.logins.load(Ordering::SeqCst) >= 1);
    // /metrics needs manage, which a Keystone token of the project has.
    assert_eq!(bare(&mut c, "GET", "/metrics", None, "tok").status, 200);
    assert_eq!(Client::connect(server.addr).get("/metrics").status, 401);
}
