//! `auth.mode = token` against the real server: tokens made by `marconi token keygen|issue`,
//! 401 versus 403, a queue-glob token that cannot touch its neighbour, every route's operation,
//! revocation on every shard and across a restart, key rotation, expiry, and the refusal to
//! serve beyond loopback without authentication.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{queues_on_each_shard, Client, Resp, Server};
use marconi::auth::token::{self, Claims, TokenId};
use marconi::auth::{Keyring, Ops};

const PROJECT: &str = "tenant-a";

fn marconi(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_marconi")).args(args).stdin(Stdio::null()).output().expect("run marconi")
}

fn keygen(keys: &Path, id: &str) {
    let out = marconi(&["token", "keygen", "--keys-file", keys.to_str().unwrap(), "--id", id]);
    assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
}

/// `marconi token issue` with `args`; returns the token it prints.
fn issue(keys: &Path, args: &[&str]) -> String {
    let mut all = vec!["token", "issue", "--keys-file", keys.to_str().unwrap(), "--project", PROJECT];
    all.extend_from_slice(args);
    let out = marconi(&all);
    assert!(out.status.success(), "issue: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(text.starts_with(token::PREFIX), "{text}");
    text
}

struct Setup {
    _dir: tempfile::TempDir,
    keys: PathBuf,
    data: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    keygen(&keys, "k1");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    Setup { keys, data, _dir: dir }
}

fn serve(s: &Setup) -> Server {
    Server::start_in(&s.data, &["--auth", "token", "--auth-keys-file", s.keys.to_str().unwrap()])
}

/// A client that sends `token` and no X-Project-ID (the token names the project).
fn with_token(server: &Server, token: &str) -> Tokened {
    Tokened { client: server.client(), token: token.to_owned() }
}

struct Tokened {
    client: Client,
    token: String,
}

impl Tokened {
    fn call(&mut self, method: &str, path: &str, body: Option<&str>) -> Resp {
        let token = self.token.clone();
        self.client.request(method, path, body, &[("X-Auth-Token", &token), ("X-Project-ID", PROJECT)])
    }
}

fn assert_refused(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let body = r.json();
    assert_eq!(body["code"], code, "{body}");
    assert!(body["title"].is_string() && body["description"].is_string(), "{body}");
    if status == 401 {
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "401 needs WWW-Authenticate: {challenge:?}");
    }
}

fn failures(server: &Server, admin: &str, reason: &str) -> f64 {
    let r = with_token(server, admin).call("GET", "/metrics", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let sample = format!("marconi_auth_failures_total{{shard=\"all\",reason=\"{reason}\"}} ");
    r.text().lines().find_map(|l| l.strip_prefix(&sample)).unwrap_or_else(|| panic!("no {sample}")).parse().unwrap()
}

#[test]
fn missing_and_bad_credentials_are_401_and_a_scoped_token_gets_403_outside_its_scope() {
    let s = setup();
    let server = serve(&s);
    let admin = issue(&s.keys, &[]);
    let agent = issue(&s.keys, &["--queues", "agent-42-*", "--ops", "read,claim,delete", "--name", "agent-42"]);

    let mut anon = server.client().with_project(PROJECT);
    assert_refused(&anon.get("/v2/queues"), 401, "auth_missing");
    assert_refused(&anon.request("GET", "/v2/queues", None, &[("X-Auth-Token", "mrc1.AAAA")]), 401, "auth_invalid");
    let mut forged = admin.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_refused(&anon.request("GET", "/v2/queues", None, &[("X-Auth-Token", &forged)]), 401, "auth_invalid");
    assert_eq!(anon.get("/").status, 300, "the versions document is public");
    assert_refused(&Client::connect(server.addr).get("/metrics"), 401, "auth_missing");

    let mut root = with_token(&server, &admin);
    for q in ["agent-42-inbox", "agent-43-inbox"] {
        assert_eq!(root.call("PUT", &format!("/v2/queues/{q}"), Some("{}")).status, 201);
        let post =
            root.call("POST", &format!("/v2/queues/{q}/messages"), Some(r#"{"messages":[{"ttl":300,"body":1}]}"#));
        assert_eq!(post.status, 201, "{}", post.text());
    }
    // Authorization: Bearer works as X-Auth-Token does.
    let bearer = format!("Bearer {agent}");
    let r = server.client().with_project(PROJECT).request(
        "GET",
        "/v2/queues/agent-42-inbox/stats",
        None,
        &[("Authorization", &bearer)],
    );
    assert_eq!(r.status, 200, "{}", r.text());

    let mut me = with_token(&server, &agent);
    assert_eq!(me.call("GET", "/v2/queues/agent-42-inbox/messages?echo=true", None).status, 200);
    let claim = me.call("POST", "/v2/queues/agent-42-inbox/claims", Some(r#"{"ttl":60,"grace":60}"#));
    assert_eq!(claim.status, 201, "{}", claim.text());
    let href = claim.json()["messages"][0]["href"].as_str().unwrap().to_owned();
    assert_eq!(me.call("DELETE", &href, None).status, 204, "its own message, under its claim");

    // The neighbour's queue, existing or not, and operations it lacks: 403, one body.
    let existing = me.call("GET", "/v2/queues/agent-43-inbox/messages?echo=true", None);
    let absent = me.call("GET", "/v2/queues/agent-43-nothing/messages?echo=true", None);
    assert_refused(&existing, 403, "forbidden");
    assert_eq!(existing.body, absent.body, "a 403 must not tell whether the queue exists");
    assert_refused(
        &me.call("POST", "/v2/queues/agent-42-inbox/messages", Some(r#"{"messages":[{"body":1}]}"#)),
        403,
        "forbidden",
    );
    assert_refused(&me.call("DELETE", "/v2/queues/agent-42-inbox", None), 403, "forbidden");
    assert_refused(&me.call("DELETE", "/v2/queues/agent-43-inbox/messages?pop=1", None), 403, "forbidden");
    assert_refused(&me.call("GET", "/metrics", None), 403, "forbidden");
    // Another project named beside the token: 403, whatever that project holds.
    let r = me.client.request("GET", "/v2/queues", None, &[("X-Auth-Token", &agent), ("X-Project-ID", "tenant-b")]);
    assert_refused(&r, 403, "forbidden");
    // No X-Project-ID at all: the token's project.
    let r = me.client.request(
        "GET",
        "/v2/queues/agent-42-inbox/stats",
        None,
        &[("X-Auth-Token", &agent), ("X-Project-ID", "")],
    );
    assert_eq!(r.status, 400, "an empty X-Project-ID stays a 400, as in Zaqar: {}", r.text());

    // Listings show only what the glob matches, counts included.
    let list = me.call("GET", "/v2/queues?with_count=true", None).json();
    let names: Vec<&str> = list["queues"].as_array().unwrap().iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["agent-42-inbox"], "{list}");
    assert_eq!(list["count"], 1);
    let all = root.call("GET", "/v2/queues", None).json();
    assert_eq!(all["queues"].as_array().unwrap().len(), 2);

    for reason in ["missing", "invalid", "forbidden"] {
        assert!(failures(&server, &admin, reason) >= 1.0, "{reason} counted");
    }
}

#[test]
fn a_request_with_only_a_token_lands_in_its_project() {
    let s = setup();
    let server = serve(&s);
    let admin = issue(&s.keys, &[]);
    let mut c = server.client();
    let raw = {
        let mut out = Vec::new();
        let mut req = wire::Request::new(&mut out, "PUT", "/v2/queues/mine");
        req.header("Host", "localhost");
        req.header("Client-ID", common::CLIENT_ID);
        req.header("X-Auth-Token", &admin);
        req.body(b"{}");
        out
    };
    c.send_raw(&raw);
    assert_eq!(c.read_response(false).status, 201);
    let list = with_token(&server, &admin).call("GET", "/v2/queues", None).json();
    assert_eq!(list["queues"][0]["name"], "mine", "{list}");
}

/// Every route against a token allowed one operation: 403 exactly when the route needs another.
#[test]
fn every_route_needs_its_operation() {
    let s = setup();
    let server = serve(&s);
    let admin = issue(&s.keys, &[]);
    let mut root = with_token(&server, &admin);
    assert_eq!(root.call("PUT", "/v2/queues/q", Some("{}")).status, 201);
    let limits = format!("/v2/projects/{PROJECT}/limits");
    // Even a manage token may not touch another project's limits.
    assert_refused(&root.call("PUT", "/v2/projects/neighbour/limits", Some("{}")), 403, "forbidden");
    assert_refused(&root.call("GET", "/v2/projects/neighbour/limits", None), 403, "forbidden");
    // (method, path, body, the operations it needs)
    let table: &[(&str, &str, Option<&str>, &str)] = &[
        ("GET", "/v2/queues", None, "read"),
        ("GET", "/v2/queues/q", None, "read"),
        ("GET", "/v2/queues/q/stats", None, "read"),
        ("PUT", "/v2/queues/q2", Some("{}"), "manage"),
        ("PATCH", "/v2/queues/q", Some("[]"), "manage"),
        ("POST", "/v2/queues/q/purge", Some(r#"{"resource_types":["messages"]}"#), "manage"),
        ("POST", "/v2/queues/q/share", Some(r#"{"methods":["GET"],"paths":["messages"]}"#), "manage"),
        ("POST", "/v2/queues/q/messages", Some(r#"{"messages":[{"body":1}]}"#), "post"),
        ("GET", "/v2/queues/q/messages?echo=true", None, "read"),
        ("GET", "/v2/queues/q/messages/0000000000000000", None, "read"),
        ("DELETE", "/v2/queues/q/messages/0000000000000000", None, "delete"),
        ("DELETE", "/v2/queues/q/messages?ids=0000000000000000", None, "delete"),
        ("DELETE", "/v2/queues/q/messages?pop=1", None, "read,delete"),
        ("POST", "/v2/queues/q/claims", Some(r#"{"ttl":60,"grace":60}"#), "claim"),
        ("GET", "/v2/queues/q/claims/0000000000000000", None, "claim"),
        ("PATCH", "/v2/queues/q/claims/0000000000000000", Some(r#"{"ttl":60}"#), "claim"),
        ("DELETE", "/v2/queues/q/claims/0000000000000000", None, "claim"),
        ("GET", "/v2/queues/q/subscriptions", None, "read"),
        ("POST", "/v2/queues/q/subscriptions", Some(r#"{"subscriber":"http://x","ttl":60}"#), "manage"),
        ("DELETE", "/v2/tokens/nobody", None, "manage"),
        ("GET", &limits, None, "manage"),
        ("PUT", &limits, Some(r#"{"queues_per_project": 100}"#), "manage"),
        ("GET", "/v2/health", None, "manage"),
        ("GET", "/metrics", None, "manage"),
        ("DELETE", "/v2/queues/q2", None, "manage"),
    ];
    for op in ["post", "read", "claim", "delete", "manage"] {
        let tok = issue(&s.keys, &["--ops", op]);
        let mut c = with_token(&server, &tok);
        for (method, path, body, needs) in table {
            let allowed = Ops::parse(op).unwrap().contains(Ops::parse(needs).unwrap());
            let r = c.call(method, path, *body);
            if allowed {
                assert!(r.status != 403 && r.status != 401, "{op} token, {method} {path}: {} {}", r.status, r.text());
            } else {
                assert_refused(&r, 403, "forbidden");
            }
        }
    }
    // Pings and the home document need a credential, any credential.
    assert_refused(&server.client().with_project(PROJECT).get("/v2/ping"), 401, "auth_missing");
    let reader = issue(&s.keys, &["--ops", "read"]);
    assert_eq!(with_token(&server, &reader).call("GET", "/v2/ping", None).status, 204);
}

#[test]
fn revocation_holds_on_every_shard_and_across_a_restart() {
    let s = setup();
    let admin = issue(&s.keys, &["--name", "admin"]);
    let named = issue(&s.keys, &["--name", "agent-7", "--ops", "read"]);
    let by_id = issue(&s.keys, &["--ops", "read"]);
    let id = {
        let mut buf = marconi::auth::token_buf();
        token::parse(&by_id, &mut buf).unwrap().0.id.to_string()
    };
    let (q0, q1) = queues_on_each_shard(PROJECT, "r-");
    {
        let server = serve(&s);
        let mut root = with_token(&server, &admin);
        for q in [&q0, &q1] {
            assert_eq!(root.call("PUT", &format!("/v2/queues/{q}"), Some("{}")).status, 201);
        }
        for q in [&q0, &q1] {
            assert_eq!(with_token(&server, &named).call("GET", &format!("/v2/queues/{q}/stats"), None).status, 200);
        }
        // Through the CLI, by name.
        let url = format!("http://{}", server.addr);
        let out = marconi(&["token", "--url", &url, "--token", &admin, "revoke", "agent-7"]);
        assert!(out.status.success(), "revoke: {}", String::from_utf8_lossy(&out.stderr));
        // Through the API, by id.
        assert_eq!(root.call("DELETE", &format!("/v2/tokens/{id}"), None).status, 204);
        // In force at once on both shards, whichever shard a connection lands on.
        for _ in 0..8 {
            for q in [&q0, &q1] {
                for tok in [&named, &by_id] {
                    let r = with_token(&server, tok).call("GET", &format!("/v2/queues/{q}/stats"), None);
                    assert_refused(&r, 401, "auth_revoked");
                }
            }
        }
        assert_eq!(root.call("GET", &format!("/v2/queues/{q1}/stats"), None).status, 200, "others still work");
        assert!(failures(&server, &admin, "revoked") >= 1.0);
        let bad = root.call("DELETE", "/v2/tokens/not%20a%20name", None);
        assert_eq!(bad.status, 400, "{}", bad.text());
    }
    // The revocations are records in the store: a restart keeps them.
    let server = serve(&s);
    for tok in [&named, &by_id] {
        assert_refused(
            &with_token(&server, tok).call("GET", &format!("/v2/queues/{q0}/stats"), None),
            401,
            "auth_revoked",
        );
    }
    // A token issued under the revoked name later is a new one: it works.
    let again = issue(&s.keys, &["--name", "agent-7-b", "--ops", "read"]);
    assert_eq!(with_token(&server, &again).call("GET", &format!("/v2/queues/{q0}/stats"), None).status, 200);
    assert_eq!(with_token(&server, &admin).call("GET", &format!("/v2/queues/{q0}/stats"), None).status, 200);
}

#[test]
fn keys_rotate_across_a_restart_and_a_retired_key_verifies_nothing() {
    let s = setup();
    let old = issue(&s.keys, &["--ops", "read"]);
    {
        let server = serve(&s);
        assert_eq!(with_token(&server, &old).call("GET", "/v2/queues", None).status, 200);
    }
    keygen(&s.keys, "k2");
    let new = issue(&s.keys, &["--ops", "read"]);
    let mut buf = marconi::auth::token_buf();
    assert_eq!(token::parse(&new, &mut buf).unwrap().0.key_id, "k2", "the newest key signs");
    {
        let server = serve(&s);
        for tok in [&old, &new] {
            assert_eq!(with_token(&server, tok).call("GET", "/v2/queues", None).status, 200, "every key verifies");
        }
    }
    // Retire k1: keep only k2's entry.
    let text = std::fs::read_to_string(&s.keys).unwrap();
    let k2 = text.find("[[key]]\nid = \"k2\"").or_else(|| text.rfind("[[key]]")).unwrap();
    std::fs::write(&s.keys, &text[k2..]).unwrap();
    assert_eq!(Keyring::load(&s.keys).unwrap().ids().collect::<Vec<_>>(), ["k2"]);
    let server = serve(&s);
    assert_refused(&with_token(&server, &old).call("GET", "/v2/queues", None), 401, "auth_invalid");
    assert_eq!(with_token(&server, &new).call("GET", "/v2/queues", None).status, 200);
}

#[test]
fn an_expired_token_is_401_expired() {
    let s = setup();
    let server = serve(&s);
    let keys = Keyring::load(&s.keys).unwrap();
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = Claims {
        key_id: "k1",
        id: TokenId([9; 16]),
        issued_s: now_s - 120,
        expires_s: now_s - 60,
        ops: Ops::ALL,
        project: PROJECT,
        queues: "*",
        name: "",
    };
    let expired = token::issue(&claims, keys.newest()).unwrap();
    assert_refused(&with_token(&server, &expired).call("GET", "/v2/queues", None), 401, "auth_expired");
    // A lifetime longer than auth.max_token_ttl_s is refused even when signed.
    let long = Claims { issued_s: now_s, expires_s: now_s + 3651 * 86_400, ..claims };
    let long = token::issue(&long, keys.newest()).unwrap();
    assert_refused(&with_token(&server, &long).call("GET", "/v2/queues", None), 401, "auth_invalid");
}

#[test]
fn signed_urls_work_with_token_auth_on() {
    let s = setup();
    let server = serve(&s);
    let admin = issue(&s.keys, &[]);
    let mut root = with_token(&server, &admin);
    assert_eq!(root.call("PUT", "/v2/queues/shared", Some("{}")).status, 201);
    let share = root.call("POST", "/v2/queues/shared/share", Some(r#"{"methods":["GET"],"paths":["messages"]}"#));
    assert_eq!(share.status, 200, "{}", share.text());
    let sig = share.json();
    let headers = [
        ("URL-Signature", sig["signature"].as_str().unwrap().to_owned()),
        ("URL-Expires", sig["expires"].as_str().unwrap().to_owned()),
        ("URL-Methods", "GET".to_owned()),
        ("URL-Paths", sig["paths"][0].as_str().unwrap().to_owned()),
    ];
    let extra: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut anon = server.client().with_project(PROJECT);
    let r = anon.request("GET", "/v2/queues/shared/messages", None, &extra);
    assert!(r.status == 200 || r.status == 204, "{} {}", r.status, r.text());
}

#[test]
fn serve_refuses_a_public_address_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_marconi"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without authentication") && err.contains("--insecure-no-auth"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line with the fix: {err}");
}
