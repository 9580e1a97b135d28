//! A tiny in-process Zaqar-ish HTTP server for loadgen's tests: enough of the v2 API (messages,
//! claims, listing with markers, queues, ping) to run every workload, with switchable faults
//! that a correct checker must catch. One std thread per connection, keep-alive, state in a
//! mutex: simple beats fast here.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// Server misbehaviours, to check that loadgen notices them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Claims do not mark messages as claimed, so the next claim delivers them again.
    pub duplicate_claims: bool,
    /// `next` links point one message back, so readers re-read and markers go backwards.
    pub marker_back: bool,
    /// Accept connections but never answer.
    pub silent: bool,
    /// (n, ms): the n-th request (counting from 1) is answered after a stall of `ms`.
    pub stall: Option<(u64, u64)>,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub posted: AtomicU64,
    pub claimed: AtomicU64,
    pub deleted: AtomicU64,
    pub pages: AtomicU64,
    pub requests: AtomicU64,
}

struct Msg {
    id: String,
    body: Value,
    claim: Option<String>,
}

#[derive(Default)]
struct Queue {
    /// marker -> message; markers come from a per-queue counter and are never reused.
    msgs: BTreeMap<u64, Msg>,
    next_marker: u64,
}

#[derive(Default)]
struct State {
    queues: HashMap<(String, String), Queue>,
    next_id: u64,
}

pub struct FakeZaqar {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
}

impl FakeZaqar {
    pub fn start(faults: Faults) -> FakeZaqar {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let counters = Arc::new(Counters::default());
        let state = Arc::new(Mutex::new(State::default()));
        let c = counters.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (state, c) = (state.clone(), c.clone());
                std::thread::spawn(move || serve(stream, state, c, faults));
            }
        });
        FakeZaqar { addr, counters }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn serve(mut s: TcpStream, state: Arc<Mutex<State>>, c: Arc<Counters>, faults: Faults) {
    let _ = s.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        // Parse one request from the buffer, reading more as needed.
        let (method, path, headers, body, used) = loop {
            let mut hs = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut hs);
            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                let mut h = HashMap::new();
                for x in req.headers.iter() {
                    h.insert(x.name.to_ascii_lowercase(), String::from_utf8_lossy(x.value).to_string());
                }
                let len: usize = h.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                if buf.len() >= n + len {
                    break (
                        req.method.unwrap_or("").to_string(),
                        req.path.unwrap_or("").to_string(),
                        h,
                        buf[n..n + len].to_vec(),
                        n + len,
                    );
                }
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        };
        buf.drain(..used);
        let n = c.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if faults.silent {
            continue;
        }
        if let Some((at, ms)) = faults.stall {
            if n == at {
                std::thread::sleep(Duration::from_millis(ms));
            }
        }
        let (status, body, chunked) = handle(&method, &path, &headers, &body, &state, &c, faults);
        let reason = match status {
            200 => "OK",
            201 => "Created",
            204 => "No Content",
            400 => "Bad Request",
            403 => "Forbidden",
            _ => "Not Found",
        };
        let mut out = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
        match body {
            None if status == 204 => out.extend_from_slice(b"\r\n"),
            None => out.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
            Some(b) if chunked => {
                // Chunked in two pieces, to exercise loadgen's chunked decoder.
                out.extend_from_slice(b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
                let (first, second) = b.split_at(b.len() / 2);
                wire::chunk(&mut out, first);
                wire::chunk(&mut out, second);
                wire::last_chunk(&mut out);
            }
            Some(b) => {
                out.extend_from_slice(
                    format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n", b.len()).as_bytes(),
                );
                out.extend_from_slice(&b);
            }
        }
        if s.write_all(&out).is_err() {
            return;
        }
    }
}

fn query<'a>(q: &'a str, name: &str) -> Option<&'a str> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

#[allow(clippy::type_complexity)]
fn handle(
    method: &str,
    path: &str,
    headers: &HashMap<String, String>,
    body: &[u8],
    state: &Mutex<State>,
    c: &Counters,
    faults: Faults,
) -> (u16, Option<Vec<u8>>, bool) {
    let err = |s: u16, d: &str| (s, Some(json!({"title": "error", "description": d}).to_string().into_bytes()), false);
    if !headers.contains_key("client-id") {
        return err(400, "The Client-Id header is required.");
    }
    let Some(project) = headers.get("x-project-id").cloned() else {
        return err(400, "Project-Id Missing");
    };
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    let seg: Vec<&str> = p.trim_start_matches('/').split('/').collect();
    let mut st = state.lock().unwrap();
    match (method, seg.as_slice()) {
        ("GET", ["v2", "ping"]) => (204, None, false),
        ("GET", ["v2", "queues"]) => {
            let names: Vec<Value> = st
                .queues
                .keys()
                .filter(|(pr, _)| *pr == project)
                .map(|(_, n)| json!({"name": n, "href": format!("/v2/queues/{n}")}))
                .collect();
            (200, Some(json!({"queues": names, "links": []}).to_string().into_bytes()), false)
        }
        ("PUT", ["v2", "queues", name]) => {
            let key = (project, name.to_string());
            match st.queues.entry(key) {
                std::collections::hash_map::Entry::Occupied(_) => (204, None, false),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(Queue::default());
                    (201, None, false)
                }
            }
        }
        ("DELETE", ["v2", "queues", name]) => {
            st.queues.remove(&(project, name.to_string()));
            (204, None, false)
        }
        ("GET", ["v2", "queues", name, "stats"]) => {
            let n = st.queues.get(&(project, name.to_string())).map_or(0, |q| q.msgs.len());
            (200, Some(json!({"messages": {"free": n, "claimed": 0, "total": n}}).to_string().into_bytes()), false)
        }
        ("POST", ["v2", "queues", name, "messages"]) => {
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return err(400, "Request body could not be parsed.");
            };
            let Some(msgs) = v["messages"].as_array() else {
                return err(400, "No messages were found in the request body.");
            };
            let mut resources = Vec::new();
            let name = name.to_string();
            for m in msgs {
                st.next_id += 1;
                let id = format!("m{:x}", st.next_id);
                let queue = st.queues.entry((project.clone(), name.clone())).or_default();
                queue.next_marker += 1;
                let marker = queue.next_marker;
                queue.msgs.insert(marker, Msg { id: id.clone(), body: m["body"].clone(), claim: None });
                resources.push(format!("/v2/queues/{name}/messages/{id}"));
            }
            c.posted.fetch_add(msgs.len() as u64, Ordering::Relaxed);
            (201, Some(json!({"resources": resources}).to_string().into_bytes()), false)
        }
        ("POST", ["v2", "queues", name, "claims"]) => {
            let limit: usize = query(q, "limit").and_then(|l| l.parse().ok()).unwrap_or(10);
            st.next_id += 1;
            let cid = format!("c{:x}", st.next_id);
            let Some(queue) = st.queues.get_mut(&(project, name.to_string())) else {
                return (204, None, false);
            };
            let mut out = Vec::new();
            for m in queue.msgs.values_mut().filter(|m| m.claim.is_none()).take(limit) {
                if !faults.duplicate_claims {
                    m.claim = Some(cid.clone());
                }
                out.push(json!({"id": m.id, "ttl": 3600, "age": 0, "body": m.body,
                    "href": format!("/v2/queues/{name}/messages/{}?claim_id={cid}", m.id)}));
            }
            if out.is_empty() {
                return (204, None, false);
            }
            c.claimed.fetch_add(out.len() as u64, Ordering::Relaxed);
            (201, Some(json!({"messages": out}).to_string().into_bytes()), false)
        }
        ("DELETE", ["v2", "queues", name, "messages", id]) => {
            let claim = query(q, "claim_id").map(str::to_string);
            let Some(queue) = st.queues.get_mut(&(project, name.to_string())) else {
                return (204, None, false);
            };
            let Some((&marker, m)) = queue.msgs.iter().find(|(_, m)| m.id == *id) else {
                return (204, None, false);
            };
            if m.claim.is_some() && m.claim != claim {
                return err(403, "This message is claimed; it cannot be deleted without a valid claim ID.");
            }
            queue.msgs.remove(&marker);
            c.deleted.fetch_add(1, Ordering::Relaxed);
            (204, None, false)
        }
        ("GET", ["v2", "queues", name, "messages"]) => {
            c.pages.fetch_add(1, Ordering::Relaxed);
            let marker: u64 = query(q, "marker").and_then(|m| m.parse().ok()).unwrap_or(0);
            let limit: usize = query(q, "limit").and_then(|l| l.parse().ok()).unwrap_or(10);
            let include_claimed = query(q, "include_claimed") == Some("true");
            let empty = || (200, Some(json!({"messages": [], "links": []}).to_string().into_bytes()), true);
            let Some(queue) = st.queues.get(&(project, name.to_string())) else {
                return empty();
            };
            let page: Vec<(u64, &Msg)> = queue
                .msgs
                .range(marker + 1..)
                .filter(|(_, m)| include_claimed || m.claim.is_none())
                .take(limit)
                .map(|(k, m)| (*k, m))
                .collect();
            let Some(&(last, _)) = page.last() else {
                return empty();
            };
            let next = if faults.marker_back && page.len() > 1 { last - 1 } else { last };
            let msgs: Vec<Value> = page
                .iter()
                .map(|(_, m)| {
                    json!({"id": m.id, "ttl": 3600, "age": 0, "body": m.body,
                    "href": format!("/v2/queues/{name}/messages/{}", m.id)})
                })
                .collect();
            let href = format!(
                "/v2/queues/{name}/messages?marker={next}&limit={limit}&echo=true&include_claimed={include_claimed}"
            );
            (
                200,
                Some(json!({"messages": msgs, "links": [{"rel": "next", "href": href}]}).to_string().into_bytes()),
                true,
            )
        }
        _ => err(404, "Not found"),
    }
}

/// Runs the loadgen binary with `--json --no-progress` plus `args`; returns the exit code, the
/// parsed summary (Null if stdout was not JSON) and stderr.
pub fn run_loadgen(args: &[&str]) -> (i32, Value, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--json", "--no-progress", "--cpus", "0"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run loadgen");
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    // A hang guard, not a measurement: every run here is bounded by its own --duration-s or
    // --requests, so one still going after this long has failed to stop by itself.
    let mut status = None;
    for _ in 0..(LOADGEN_HANG_GUARD_S * 100) {
        if let Some(s) = child.try_wait().expect("wait for loadgen") {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("loadgen {args:?} did not stop by itself; stderr: {}", stderr.join().unwrap_or_default());
    };
    let stdout = stdout.join().unwrap_or_default();
    let v = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (status.code().unwrap_or(-1), v, stderr.join().unwrap_or_default())
}

/// See [`run_loadgen`].
const LOADGEN_HANG_GUARD_S: u64 = 120;

/// Waits up to `d` for `f` to become true (server counters settle after responses are sent).
pub fn eventually(d: Duration, f: impl Fn() -> bool) -> bool {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}
