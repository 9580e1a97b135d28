//! The `marconi queue|message|claim` client against the real server: a whole produce/claim/ack
//! round, bodies from an argument, a file and stdin, `--json` output, and the exit codes that
//! tell client errors (4), server errors (5) and transport failures (6) apart.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

use common::Server;
use serde_json::Value;

struct Cli {
    url: String,
}

impl Cli {
    fn new(server: &Server) -> Self {
        Cli { url: format!("http://{}", server.addr) }
    }

    fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_marconi"));
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("MARCONI_")) {
            cmd.env_remove(key);
        }
        cmd.args(args)
            .env("MARCONI_URL", &self.url)
            .env("MARCONI_PROJECT", "cli-project")
            .env("MARCONI_CLIENT_ID", common::CLIENT_ID)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run marconi");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.unwrap_or("").as_bytes()).expect("write stdin");
        drop(input);
        child.wait_with_output().expect("wait for marconi")
    }

    /// Runs and insists on success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run_with_stdin(args, None);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {text:?}"))
    }
}

#[test]
fn queues_messages_and_claims_round_trip() {
    let server = Server::start();
    let cli = Cli::new(&server);
    assert_eq!(cli.ok(&["queue", "create", "jobs"]).trim(), "created queue jobs");
    assert_eq!(cli.ok(&["queue", "create", "jobs"]).trim(), "queue jobs exists");
    cli.ok(&["queue", "create", "other", "--metadata", r#"{"_default_message_ttl": 600}"#]);
    let list = cli.ok(&["queue", "list"]);
    assert_eq!(list.lines().collect::<Vec<_>>(), ["jobs", "other"]);
    assert_eq!(cli.json(&["queue", "get", "other"])["_default_message_ttl"], 600);

    // Bodies: JSON argument, plain text, stdin, file.
    let id1 = cli.ok(&["message", "post", "jobs", r#"{"task": "resize", "n": 7}"#]).trim().to_owned();
    let id2 = cli.ok(&["message", "post", "jobs", "plain words", "--ttl", "120"]).trim().to_owned();
    let out = cli.run_with_stdin(&["message", "post", "jobs", "-"], Some("[1, 2, 3]\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, r#"{"from": "file"}"#).unwrap();
    let posted = cli.json(&["message", "post", "jobs", "--file", file.to_str().unwrap()]);
    assert_eq!(posted["resources"].as_array().map(Vec::len), Some(1));

    let listed = cli.json(&["message", "list", "jobs", "--echo"]);
    let bodies: Vec<&Value> = listed["messages"].as_array().unwrap().iter().map(|m| &m["body"]).collect();
    assert_eq!(
        bodies,
        [
            &serde_json::json!({"task": "resize", "n": 7}),
            &serde_json::json!("plain words"),
            &serde_json::json!([1, 2, 3]),
            &serde_json::json!({"from": "file"})
        ]
    );
    let shown = cli.ok(&["message", "get", "jobs", &id2]);
    assert!(shown.contains(&id2) && shown.contains("ttl 120s") && shown.contains("\"plain words\""), "{shown}");
    let both = cli.json(&["message", "get", "jobs", &id1, &id2]);
    assert_eq!(both["messages"].as_array().map(Vec::len), Some(2));

    // Claim two, renew, read the claim, delete one under the claim, release the rest.
    let claimed = cli.json(&["claim", "create", "jobs", "--limit", "2", "--ttl", "60"]);
    assert_eq!(claimed["status"], 201);
    let claim_id = claimed["claim_id"].as_str().expect("claim id").to_owned();
    assert_eq!(claimed["messages"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        cli.ok(&["claim", "renew", "jobs", &claim_id, "--ttl", "120"]).trim(),
        format!("renewed claim {claim_id}")
    );
    let view = cli.json(&["claim", "get", "jobs", &claim_id]);
    assert_eq!(view["ttl"], 120);
    let stats = cli.ok(&["queue", "stats", "jobs"]);
    assert!(stats.starts_with("messages: 4 total, 2 free, 2 claimed"), "{stats}");
    cli.ok(&["message", "delete", "jobs", &id1, "--claim", &claim_id]);
    assert_eq!(cli.ok(&["claim", "release", "jobs", &claim_id]).trim(), format!("released claim {claim_id}"));

    let popped = cli.json(&["message", "pop", "jobs", "--count", "2"]);
    assert_eq!(popped["messages"].as_array().map(Vec::len), Some(2));
    let none = cli.ok(&["claim", "create", "other"]);
    assert_eq!(none.trim(), "no messages to claim");
    cli.ok(&["queue", "purge", "jobs"]);
    assert!(cli.ok(&["queue", "stats", "jobs"]).starts_with("messages: 0 total"));
    cli.ok(&["queue", "delete", "jobs"]);
    assert_eq!(cli.ok(&["queue", "list"]).trim(), "other");
}

#[test]
fn exit_codes_tell_client_server_and_transport_failures_apart() {
    let server = Server::start();
    let cli = Cli::new(&server);
    cli.ok(&["queue", "create", "q"]);

    let out = cli.run_with_stdin(&["claim", "get", "q", "5f0c3e1d0000000000000001", "--json"], None);
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HTTP 404") && stderr.contains("Claim does not exist"), "{stderr}");
    let body: Value = serde_json::from_slice(&out.stdout).expect("the error body as JSON");
    assert_eq!(body["title"], "Not found");

    let out = cli.run_with_stdin(&["message", "post", "q", "x", "--ttl", "5"], None);
    assert_eq!(out.status.code(), Some(4), "a TTL under 60 s is the client's mistake");

    let out = cli.run_with_stdin(&["queue", "create", "q", "--metadata", "not json"], None);
    assert_eq!(out.status.code(), Some(2));

    // A server that answers 503 to everything.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf);
        let body = r#"{"title": "Service temporarily unavailable", "description": "Try later."}"#;
        let answer = format!("HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        conn.write_all(answer.as_bytes()).unwrap();
    });
    let out = Cli { url: format!("http://{addr}") }.run_with_stdin(&["queue", "list"], None);
    fake.join().unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Try later."));

    // Nothing listens here any more.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let out = Cli { url: format!("http://{closed}") }.run_with_stdin(&["queue", "list"], None);
    assert_eq!(out.status.code(), Some(6));
    let out = Cli { url: "https://example.invalid".into() }.run_with_stdin(&["queue", "list"], None);
    assert_eq!(out.status.code(), Some(2), "a URL the client cannot use is a usage error");
}
