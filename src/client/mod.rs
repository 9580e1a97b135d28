//! `marconi queue|message|claim …`: a command-line client for any Zaqar v2 endpoint.
//!
//! Each command is one or two HTTP calls ([`http`]); the answer is printed for people by default
//! and as JSON with `--json` (the server's JSON body, or `{"status": N, …}` for answers without
//! one). The exit code tells the outcome apart, so scripts need not parse anything:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (2xx) |
//! | 2 | bad usage or local input (a `--url` that is not `http://…`, unreadable `--file`, invalid `--metadata` JSON, a `--project` or `--client-id` that cannot be a header) |
//! | 4 | the server refused the request (4xx, e.g. 404 for an unknown claim) |
//! | 5 | the server failed (5xx) |
//! | 6 | transport failure: no connection, timeout, or an answer that is not HTTP |
//!
//! The target comes from `--url`/`MARCONI_URL`, `--project`/`MARCONI_PROJECT`,
//! `--token`/`MARCONI_TOKEN` (sent as `X-Auth-Token`; the project is then the token's unless
//! `--project` names it too) and `--client-id`/`MARCONI_CLIENT_ID` (a fresh UUID per run when
//! unset, which matters for `echo`: a listing hides only the messages of the same client id).
//! `marconi token …` ([`token`]) issues and revokes marconi tokens.

pub mod http;
pub mod token;

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use http::{encode, Endpoint, TransportError};
use wire::OwnedResponse;

/// Exit codes (see the module docs).
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_CLIENT_ERROR: u8 = 4;
pub const EXIT_SERVER_ERROR: u8 = 5;
pub const EXIT_TRANSPORT: u8 = 6;

/// Where and as whom to talk, shared by every client command.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Base URL of the Zaqar v2 endpoint (http only).
    #[arg(long, env = "MARCONI_URL", default_value = "http://127.0.0.1:8888", global = true)]
    pub url: String,
    /// Project (X-Project-ID) the queues belong to [default: the token's with --token, else
    /// `default`].
    #[arg(long, env = "MARCONI_PROJECT", global = true)]
    pub project: Option<String>,
    /// Credential sent as X-Auth-Token (a marconi or Keystone token).
    #[arg(long, env = "MARCONI_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Client-ID header [default: a fresh UUID per run].
    #[arg(long, env = "MARCONI_CLIENT_ID", global = true)]
    pub client_id: Option<String>,
    /// Print JSON for scripts instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for connecting and for each read or write (long polls add their `--wait`).
    #[arg(long, default_value_t = 30, global = true)]
    pub timeout_s: u64,
}

#[derive(Args, Debug)]
pub struct QueueArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: QueueCommand,
}

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// Create a queue (with --metadata: create it or replace its metadata).
    Create {
        name: String,
        /// Metadata as a JSON object, e.g. '{"_default_message_ttl": 600}'.
        #[arg(long)]
        metadata: Option<String>,
    },
    /// List the project's queues (one page).
    List {
        #[arg(long)]
        limit: Option<u32>,
        /// Start after this queue name.
        #[arg(long)]
        marker: Option<String>,
        /// Include each queue's metadata.
        #[arg(long)]
        detailed: bool,
    },
    /// Show a queue's metadata.
    Get { name: String },
    /// Delete a queue and its messages.
    Delete { name: String },
    /// Show message counts (free, claimed, total) and the oldest and newest message.
    Stats { name: String },
    /// Delete every message of a queue, keeping the queue.
    Purge { name: String },
}

#[derive(Args, Debug)]
pub struct MessageArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: MessageCommand,
}

#[derive(Subcommand, Debug)]
pub enum MessageCommand {
    /// Post one message. BODY is JSON (text that is not JSON is sent as a JSON string); `-` reads
    /// it from stdin.
    Post {
        queue: String,
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        body: Option<String>,
        /// Read the body from this file.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Seconds the message lives [server default: 3600].
        #[arg(long)]
        ttl: Option<u32>,
        /// Seconds before the message becomes visible.
        #[arg(long)]
        delay: Option<u32>,
    },
    /// List messages (one page).
    List {
        queue: String,
        #[arg(long)]
        limit: Option<u32>,
        /// Start after this marker (from a previous page's `next` link).
        #[arg(long)]
        marker: Option<String>,
        /// Include this client's own messages.
        #[arg(long)]
        echo: bool,
        /// Include claimed messages.
        #[arg(long)]
        include_claimed: bool,
        /// Wait up to this many seconds for a message (marconi's long poll).
        #[arg(long)]
        wait: Option<u32>,
    },
    /// Show messages by id.
    Get {
        queue: String,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Delete a message (give --claim to delete a claimed one).
    Delete {
        queue: String,
        id: String,
        #[arg(long)]
        claim: Option<String>,
    },
    /// Take up to COUNT messages off the queue and print them.
    Pop {
        queue: String,
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
}

#[derive(Args, Debug)]
pub struct ClaimArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: ClaimCommand,
}

#[derive(Subcommand, Debug)]
pub enum ClaimCommand {
    /// Claim messages; prints the claim id and the messages (none to claim is not an error).
    Create {
        queue: String,
        /// Seconds the claim lasts [server default: 300].
        #[arg(long)]
        ttl: Option<u32>,
        /// Seconds claimed messages outlive the claim [server default: 60].
        #[arg(long)]
        grace: Option<u32>,
        /// Most messages to claim [server default: 10].
        #[arg(long)]
        limit: Option<u32>,
        /// Wait up to this many seconds for a message (marconi's long poll).
        #[arg(long)]
        wait: Option<u32>,
    },
    /// Show a claim and its messages.
    Get { queue: String, claim_id: String },
    /// Extend a claim.
    Renew {
        queue: String,
        claim_id: String,
        #[arg(long)]
        ttl: Option<u32>,
        #[arg(long)]
        grace: Option<u32>,
    },
    /// Release a claim: its messages become claimable again.
    Release { queue: String, claim_id: String },
}

/// What went wrong, mapped to an exit code in one place.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A 4xx or 5xx (or another status no command expects).
    #[error("{method} {path}: HTTP {status}{detail}")]
    Status { method: &'static str, path: String, status: u16, detail: String, body: Option<Value> },
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Usage(_) | ClientError::Transport(TransportError::BadUrl(_) | TransportError::Request(_)) => {
                EXIT_USAGE
            }
            ClientError::Transport(_) => EXIT_TRANSPORT,
            ClientError::Status { status, .. } if (400..500).contains(status) => EXIT_CLIENT_ERROR,
            ClientError::Status { status, .. } if (500..600).contains(status) => EXIT_SERVER_ERROR,
            ClientError::Status { .. } => EXIT_TRANSPORT,
        }
    }
}

/// One connection's worth of context: endpoint, headers, output mode.
pub(crate) struct Session {
    endpoint: Endpoint,
    project: Option<String>,
    token: Option<String>,
    client_id: String,
    json: bool,
    timeout: Duration,
}

/// A successful answer: status, `Location`, parsed body.
pub(crate) struct Answer {
    status: u16,
    location: Option<String>,
    body: Option<Value>,
}

impl Answer {
    /// The JSON printed with `--json`: the server's body, or a small object for bodiless answers.
    fn json(&self) -> Value {
        match &self.body {
            Some(body) => body.clone(),
            None => match &self.location {
                Some(loc) => json!({"status": self.status, "location": loc}),
                None => json!({"status": self.status}),
            },
        }
    }
}

impl Session {
    pub(crate) fn new(target: &Target) -> Result<Self, ClientError> {
        Ok(Session {
            endpoint: Endpoint::parse(&target.url)?,
            project: match (&target.project, &target.token) {
                (Some(p), _) => Some(p.clone()),
                (None, Some(_)) => None,
                (None, None) => Some("default".to_owned()),
            },
            token: target.token.clone(),
            client_id: target.client_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            json: target.json,
            timeout: Duration::from_secs(target.timeout_s.max(1)),
        })
    }

    pub(crate) fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&Value>,
        extra_wait_s: u32,
    ) -> Result<Answer, ClientError> {
        let payload = body.map(|b| b.to_string().into_bytes());
        let mut headers = vec![("Client-ID", self.client_id.as_str()), ("Accept", "application/json")];
        if let Some(project) = &self.project {
            headers.push(("X-Project-ID", project));
        }
        if let Some(token) = &self.token {
            headers.push(("X-Auth-Token", token));
        }
        if payload.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let timeout = self.timeout + Duration::from_secs(u64::from(extra_wait_s));
        let resp = http::send(&self.endpoint, method, path, &headers, payload.as_deref(), timeout)?;
        check(method, path, resp)
    }

    pub(crate) fn print(&self, answer: &Answer, human: impl FnOnce(&Answer) -> String) {
        if self.json {
            println!("{}", answer.json());
        } else {
            let text = human(answer);
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
        }
    }
}

/// Turns a non-2xx answer into a [`ClientError::Status`] carrying Zaqar's title and description.
fn check(method: &'static str, path: &str, resp: OwnedResponse) -> Result<Answer, ClientError> {
    let body: Option<Value> = if resp.body.is_empty() { None } else { serde_json::from_slice(&resp.body).ok() };
    if (200..300).contains(&resp.status) {
        return Ok(Answer { status: resp.status, location: resp.header("location").map(str::to_owned), body });
    }
    let detail = match &body {
        Some(b) => {
            let title = b.get("title").and_then(Value::as_str).unwrap_or("");
            let description = b.get("description").and_then(Value::as_str).unwrap_or("");
            format!(" {title}: {description}")
        }
        None if !resp.body.is_empty() => format!(" {}", String::from_utf8_lossy(&resp.body).trim()),
        None => String::new(),
    };
    Err(ClientError::Status { method, path: path.to_owned(), status: resp.status, detail, body })
}

pub(crate) fn finish(json: bool, result: Result<(), ClientError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let (true, ClientError::Status { body: Some(body), .. }) = (json, &err) {
                println!("{body}");
            }
            eprintln!("marconi: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

pub fn run_queue(args: QueueArgs) -> ExitCode {
    finish(args.target.json, Session::new(&args.target).and_then(|s| queue(&s, args.command)))
}

pub fn run_message(args: MessageArgs) -> ExitCode {
    finish(args.target.json, Session::new(&args.target).and_then(|s| message(&s, args.command)))
}

pub fn run_claim(args: ClaimArgs) -> ExitCode {
    finish(args.target.json, Session::new(&args.target).and_then(|s| claim(&s, args.command)))
}

fn queue_path(name: &str) -> String {
    format!("/v2/queues/{}", encode(name))
}

/// `?a=1&b=x` from the parameters that are set.
fn query(params: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> =
        params.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v)))).collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn flag(on: bool) -> Option<String> {
    on.then(|| "true".to_owned())
}

fn queue(s: &Session, command: QueueCommand) -> Result<(), ClientError> {
    match command {
        QueueCommand::Create { name, metadata } => {
            let body = match metadata {
                Some(text) => Some(
                    serde_json::from_str::<Value>(&text)
                        .ok()
                        .filter(Value::is_object)
                        .ok_or_else(|| ClientError::Usage(format!("--metadata must be a JSON object, not {text:?}")))?,
                ),
                None => None,
            };
            let answer = s.call("PUT", &queue_path(&name), body.as_ref(), 0)?;
            s.print(&answer, |a| match a.status {
                201 => format!("created queue {name}"),
                _ => format!("queue {name} exists"),
            });
        }
        QueueCommand::List { limit, marker, detailed } => {
            let q = query(&[("limit", limit.map(|l| l.to_string())), ("marker", marker), ("detailed", flag(detailed))]);
            let answer = s.call("GET", &format!("/v2/queues{q}"), None, 0)?;
            s.print(&answer, |a| {
                let queues = a.body.as_ref().and_then(|b| b.get("queues")).and_then(Value::as_array);
                let mut out = String::new();
                for q in queues.into_iter().flatten() {
                    out.push_str(q.get("name").and_then(Value::as_str).unwrap_or("?"));
                    if let Some(meta) = q.get("metadata") {
                        out.push_str(&format!("  {meta}"));
                    }
                    out.push('\n');
                }
                out
            });
        }
        QueueCommand::Get { name } => {
            let answer = s.call("GET", &queue_path(&name), None, 0)?;
            s.print(&answer, |a| pretty(a.body.as_ref()));
        }
        QueueCommand::Delete { name } => {
            let answer = s.call("DELETE", &queue_path(&name), None, 0)?;
            s.print(&answer, |_| format!("deleted queue {name}"));
        }
        QueueCommand::Stats { name } => {
            let answer = s.call("GET", &format!("{}/stats", queue_path(&name)), None, 0)?;
            s.print(&answer, |a| {
                let m = a.body.as_ref().and_then(|b| b.get("messages"));
                let n = |k: &str| m.and_then(|m| m.get(k)).and_then(Value::as_u64).unwrap_or(0);
                let mut out = format!("messages: {} total, {} free, {} claimed", n("total"), n("free"), n("claimed"));
                for end in ["oldest", "newest"] {
                    if let Some(e) = m.and_then(|m| m.get(end)) {
                        let age = e.get("age").and_then(Value::as_u64).unwrap_or(0);
                        let href = e.get("href").and_then(Value::as_str).unwrap_or("");
                        out.push_str(&format!("\n{end}: {} (age {age}s)", last_segment(href)));
                    }
                }
                out
            });
        }
        QueueCommand::Purge { name } => {
            let answer = s.call("POST", &format!("{}/purge", queue_path(&name)), None, 0)?;
            s.print(&answer, |_| format!("purged queue {name}"));
        }
    }
    Ok(())
}

/// A message body from the argument, `-` (stdin) or `--file`: JSON if it parses, else a string.
fn read_body(body: Option<String>, file: Option<PathBuf>) -> Result<Value, ClientError> {
    let text = match (body, file) {
        (_, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", path.display())))?,
        (Some(dash), None) if dash == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| ClientError::Usage(format!("cannot read the body from stdin: {e}")))?;
            text
        }
        (Some(text), None) => text,
        (None, None) => return Err(ClientError::Usage("give a BODY, `-` for stdin, or --file".into())),
    };
    Ok(serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.trim_end_matches('\n').to_owned())))
}

fn message(s: &Session, command: MessageCommand) -> Result<(), ClientError> {
    match command {
        MessageCommand::Post { queue, body, file, ttl, delay } => {
            let mut msg = json!({ "body": read_body(body, file)? });
            if let Some(ttl) = ttl {
                msg["ttl"] = json!(ttl);
            }
            if let Some(delay) = delay {
                msg["delay"] = json!(delay);
            }
            let answer =
                s.call("POST", &format!("{}/messages", queue_path(&queue)), Some(&json!({ "messages": [msg] })), 0)?;
            s.print(&answer, |a| {
                let hrefs = a.body.as_ref().and_then(|b| b.get("resources")).and_then(Value::as_array);
                hrefs
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|h| format!("{}\n", last_segment(h)))
                    .collect()
            });
        }
        MessageCommand::List { queue, limit, marker, echo, include_claimed, wait } => {
            let q = query(&[
                ("limit", limit.map(|l| l.to_string())),
                ("marker", marker),
                ("echo", flag(echo)),
                ("include_claimed", flag(include_claimed)),
                ("wait", wait.map(|w| w.to_string())),
            ]);
            let answer = s.call("GET", &format!("{}/messages{q}", queue_path(&queue)), None, wait.unwrap_or(0))?;
            s.print(&answer, |a| {
                let mut out = messages_text(a.body.as_ref().and_then(|b| b.get("messages")));
                let next = a
                    .body
                    .as_ref()
                    .and_then(|b| b.get("links"))
                    .and_then(Value::as_array)
                    .and_then(|links| links.iter().find(|l| l.get("rel").and_then(Value::as_str) == Some("next")));
                if let Some(marker) = next.and_then(|l| l.get("href")).and_then(Value::as_str).and_then(marker_of) {
                    if !out.is_empty() {
                        out.push_str(&format!("(next page: --marker {marker})\n"));
                    }
                }
                out
            });
        }
        MessageCommand::Get { queue, ids } => {
            let path = match ids.as_slice() {
                [one] => format!("{}/messages/{}", queue_path(&queue), encode(one)),
                many => format!("{}/messages?ids={}", queue_path(&queue), encode(&many.join(","))),
            };
            let answer = s.call("GET", &path, None, 0)?;
            s.print(&answer, |a| match a.body.as_ref().and_then(|b| b.get("messages")) {
                Some(list) => messages_text(Some(list)),
                None => messages_text(a.body.as_ref().map(|b| Value::Array(vec![b.clone()])).as_ref()),
            });
        }
        MessageCommand::Delete { queue, id, claim } => {
            let path = format!("{}/messages/{}{}", queue_path(&queue), encode(&id), query(&[("claim_id", claim)]));
            let answer = s.call("DELETE", &path, None, 0)?;
            s.print(&answer, |_| format!("deleted message {id}"));
        }
        MessageCommand::Pop { queue, count } => {
            let answer = s.call("DELETE", &format!("{}/messages?pop={count}", queue_path(&queue)), None, 0)?;
            s.print(&answer, |a| messages_text(a.body.as_ref().and_then(|b| b.get("messages"))));
        }
    }
    Ok(())
}

fn claim(s: &Session, command: ClaimCommand) -> Result<(), ClientError> {
    let ttl_grace = |ttl: Option<u32>, grace: Option<u32>| {
        let mut body = json!({});
        if let Some(ttl) = ttl {
            body["ttl"] = json!(ttl);
        }
        if let Some(grace) = grace {
            body["grace"] = json!(grace);
        }
        body
    };
    match command {
        ClaimCommand::Create { queue, ttl, grace, limit, wait } => {
            let q = query(&[("limit", limit.map(|l| l.to_string())), ("wait", wait.map(|w| w.to_string()))]);
            let path = format!("{}/claims{q}", queue_path(&queue));
            let answer = s.call("POST", &path, Some(&ttl_grace(ttl, grace)), wait.unwrap_or(0))?;
            if s.json {
                // The claim id is only in Location: put it beside the messages for scripts.
                let id = answer.location.as_deref().map(last_segment);
                let messages = answer.body.as_ref().and_then(|b| b.get("messages")).cloned().unwrap_or(json!([]));
                println!("{}", json!({"status": answer.status, "claim_id": id, "messages": messages}));
                return Ok(());
            }
            s.print(&answer, |a| match (&a.location, a.body.as_ref().and_then(|b| b.get("messages"))) {
                (Some(loc), messages) => {
                    let count = messages.and_then(Value::as_array).map_or(0, Vec::len);
                    format!("claim {} ({count} message(s))\n{}", last_segment(loc), messages_text(messages))
                }
                _ => "no messages to claim".to_owned(),
            });
        }
        ClaimCommand::Get { queue, claim_id } => {
            let answer = s.call("GET", &format!("{}/claims/{}", queue_path(&queue), encode(&claim_id)), None, 0)?;
            s.print(&answer, |a| {
                let b = a.body.as_ref();
                let n = |k: &str| b.and_then(|b| b.get(k)).and_then(Value::as_u64).unwrap_or(0);
                let messages = b.and_then(|b| b.get("messages"));
                format!("claim {claim_id}: ttl {}s, age {}s\n{}", n("ttl"), n("age"), messages_text(messages))
            });
        }
        ClaimCommand::Renew { queue, claim_id, ttl, grace } => {
            let path = format!("{}/claims/{}", queue_path(&queue), encode(&claim_id));
            let answer = s.call("PATCH", &path, Some(&ttl_grace(ttl, grace)), 0)?;
            s.print(&answer, |_| format!("renewed claim {claim_id}"));
        }
        ClaimCommand::Release { queue, claim_id } => {
            let path = format!("{}/claims/{}", queue_path(&queue), encode(&claim_id));
            let answer = s.call("DELETE", &path, None, 0)?;
            s.print(&answer, |_| format!("released claim {claim_id}"));
        }
    }
    Ok(())
}

/// The last path segment of an href, without its query: the id it names.
fn last_segment(href: &str) -> &str {
    let path = href.split('?').next().unwrap_or(href);
    path.rsplit('/').next().unwrap_or(path)
}

fn marker_of(href: &str) -> Option<String> {
    let query = href.split_once('?')?.1;
    query.split('&').find_map(|kv| kv.strip_prefix("marker=")).map(str::to_owned)
}

/// One line per message: id, age, ttl, claim (if any), then the body as compact JSON.
fn messages_text(messages: Option<&Value>) -> String {
    let mut out = String::new();
    for m in messages.and_then(Value::as_array).into_iter().flatten() {
        let id = m.get("id").and_then(Value::as_str).unwrap_or("?");
        let n = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0);
        out.push_str(&format!("{id}  age {}s  ttl {}s", n("age"), n("ttl")));
        if let Some(claim) = m.get("claim_id").and_then(Value::as_str) {
            out.push_str(&format!("  claim {claim}"));
        }
        out.push_str(&format!("  {}\n", m.get("body").unwrap_or(&Value::Null)));
    }
    out
}

fn pretty(body: Option<&Value>) -> String {
    body.map_or_else(String::new, |b| serde_json::to_string_pretty(b).unwrap_or_else(|_| b.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_exit_codes() {
        let status =
            |status| ClientError::Status { method: "GET", path: "/".into(), status, detail: String::new(), body: None };
        assert_eq!(status(404).exit_code(), 4);
        assert_eq!(status(503).exit_code(), 5);
        assert_eq!(status(302).exit_code(), 6);
        assert_eq!(ClientError::Usage("x".into()).exit_code(), 2);
    }

    #[test]
    fn bodies_are_json_when_they_parse_and_strings_otherwise() {
        assert_eq!(read_body(Some(r#"{"a": 1}"#.into()), None).unwrap(), json!({"a": 1}));
        assert_eq!(read_body(Some("42".into()), None).unwrap(), json!(42));
        assert_eq!(read_body(Some("hello world".into()), None).unwrap(), json!("hello world"));
    }

    #[test]
    fn hrefs_give_ids_and_markers() {
        assert_eq!(last_segment("/v2/queues/q/messages/abc?claim_id=x"), "abc");
        assert_eq!(marker_of("/v2/queues/q/messages?marker=12&limit=10").as_deref(), Some("12"));
        assert_eq!(query(&[("a", Some("x y".into())), ("b", None)]), "?a=x%20y");
    }
}
