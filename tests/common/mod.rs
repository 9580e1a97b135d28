//! Starts the real server binary on an ephemeral port with 2 shards and talks HTTP to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const CLIENT_ID: &str = "3381af92-2b9e-11e3-b191-71861300734c";
pub const OTHER_CLIENT_ID: &str = "4d6f2a7c-0f2b-4e8a-9b1d-2f7a0c9b8e11";
pub const SECRET: &str = "test-secret";

/// Segment size the tests run with: small, so rotation and compaction happen within a test.
pub const TEST_SEGMENT_BYTES: &str = "1048576";

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// The TLS address, when TLS listens beside plain HTTP (`tls on ADDR` ends the ready line).
    pub tls_addr: Option<SocketAddr>,
    pub data_dir: PathBuf,
    _data: Option<tempfile::TempDir>,
}

/// The server's command line for a data directory (durable, small segments, unless `extra` says
/// otherwise).
pub fn server_command(dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_marconi"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
        .args(if extra.contains(&"--shards") { vec![] } else { vec!["--shards", "2"] })
        .args(if extra.contains(&"--signed-url-secret-key") { vec![] } else { vec!["--signed-url-secret-key", SECRET] })
        .args(if extra.contains(&"--segment-size-bytes") {
            vec![]
        } else {
            vec!["--segment-size-bytes", TEST_SEGMENT_BYTES]
        })
        .arg("--data-dir")
        .arg(dir)
        .args(extra);
    cmd
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        let data = tempfile::tempdir().expect("temp dir");
        let mut server = Self::start_in(data.path(), extra);
        server._data = Some(data);
        server
    }

    /// Starts on a data directory the caller keeps (restart tests).
    pub fn start_in(dir: &Path, extra: &[&str]) -> Self {
        let mut child =
            server_command(dir, extra).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start marconi");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read ready line");
        let addr = line
            .split_whitespace()
            .nth(3)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected ready line: {line:?}"));
        let tls_addr = line.rsplit_once(", tls on ").and_then(|(_, a)| a.trim().parse().ok());
        Server { child, addr, tls_addr, data_dir: dir.to_owned(), _data: None }
    }

    /// SIGKILL: the process ends at once (the kernel keeps what it had written).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("wait for server")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response as the tests see it: wire's, plus JSON and text views.
#[derive(Debug)]
pub struct Resp(pub wire::OwnedResponse);

impl std::ops::Deref for Resp {
    type Target = wire::OwnedResponse;
    fn deref(&self) -> &wire::OwnedResponse {
        &self.0
    }
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct Client {
    pub stream: TcpStream,
    incoming: wire::ReadBuf,
    pub project: String,
    pub client_id: String,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        Self::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// A client on a stream connected some other way (from a chosen source address, say).
    pub fn from_stream(stream: TcpStream) -> Self {
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client { stream, incoming: wire::ReadBuf::new(), project: "test-project".into(), client_id: CLIENT_ID.into() }
    }

    pub fn with_project(mut self, project: &str) -> Self {
        self.project = project.into();
        self
    }

    /// A request with the usual Zaqar headers plus `extra`.
    pub fn request(&mut self, method: &str, path: &str, body: Option<&str>, extra: &[(&str, &str)]) -> Resp {
        let raw = self.build(method, path, body, extra);
        self.send_raw(&raw);
        self.read_response(method == "HEAD")
    }

    pub fn build(&self, method: &str, path: &str, body: Option<&str>, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut req = wire::Request::new(&mut out, method, path);
        req.header("Host", "localhost");
        if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("client-id")) {
            req.header("Client-ID", &self.client_id);
        }
        if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("x-project-id")) {
            req.header("X-Project-ID", &self.project);
        }
        for (k, v) in extra {
            // An empty Client-ID means "send none"; every other header is sent as given.
            if !v.is_empty() || !k.eq_ignore_ascii_case("client-id") {
                req.header(k, v);
            }
        }
        match body {
            Some(b) => req.body(b.as_bytes()),
            None => req.end(),
        }
        out
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write request");
    }

    pub fn get(&mut self, path: &str) -> Resp {
        self.request("GET", path, None, &[])
    }
    pub fn head(&mut self, path: &str) -> Resp {
        self.request("HEAD", path, None, &[])
    }
    pub fn delete(&mut self, path: &str) -> Resp {
        self.request("DELETE", path, None, &[])
    }
    pub fn post(&mut self, path: &str, body: &str) -> Resp {
        self.request("POST", path, Some(body), &[])
    }
    pub fn put(&mut self, path: &str, body: Option<&str>) -> Resp {
        self.request("PUT", path, body, &[])
    }
    pub fn patch(&mut self, path: &str, body: &str) -> Resp {
        self.request("PATCH", path, Some(body), &[("Content-Type", "application/openstack-messaging-v2.0-json-patch")])
    }

    /// Posts messages with the given JSON bodies and returns their ids.
    pub fn post_messages(&mut self, queue: &str, bodies: &[&str]) -> Vec<String> {
        let items: Vec<String> = bodies.iter().map(|b| format!("{{\"ttl\": 300, \"body\": {b}}}")).collect();
        let resp =
            self.post(&format!("/v2/queues/{queue}/messages"), &format!("{{\"messages\": [{}]}}", items.join(",")));
        assert_eq!(resp.status, 201, "{}", resp.text());
        resp.json()["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .map(|h| h.as_str().expect("href").rsplit('/').next().expect("id").to_owned())
            .collect()
    }

    /// Reads one response (interim ones included); `head_only` for responses to HEAD (no body
    /// whatever the length).
    pub fn read_response(&mut self, head_only: bool) -> Resp {
        match self.next_response(head_only) {
            Ok(r) => r,
            Err(e) => panic!("no response ({e}); buffered: {:?}", String::from_utf8_lossy(self.incoming.data())),
        }
    }

    /// A request that may get no answer (the server was killed): `None` then.
    pub fn try_request(&mut self, method: &str, path: &str, body: Option<&str>) -> Option<Resp> {
        let raw = self.build(method, path, body, &[]);
        self.stream.write_all(&raw).ok()?;
        self.try_read_response(method == "HEAD")
    }

    /// Reads one response, or `None` when the connection ends first.
    pub fn try_read_response(&mut self, head_only: bool) -> Option<Resp> {
        self.next_response(head_only).ok()
    }

    fn next_response(&mut self, head_only: bool) -> Result<Resp, wire::ReadError> {
        let parser = wire::Parser::new(wire::Limits::DEFAULT).head_request(head_only).report_interim(true);
        wire::read_response(&mut self.stream, &mut self.incoming, parser).map(Resp)
    }

    /// True once the server has closed the connection (reads EOF).
    pub fn is_closed(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        matches!(self.stream.read(&mut chunk), Ok(0) | Err(_))
    }
}

/// Queue names owned by shard 0 and shard 1 of 2, so a test touching both always crosses shards.
pub fn queues_on_each_shard(project: &str, prefix: &str) -> (String, String) {
    let mut found: [Option<String>; 2] = [None, None];
    for i in 0.. {
        let name = format!("{prefix}{i}");
        let owner = marconi::shard::placement::owner(project, &name, 2);
        if found[owner].is_none() {
            found[owner] = Some(name);
        }
        if let [Some(a), Some(b)] = &found {
            return (a.clone(), b.clone());
        }
    }
    unreachable!()
}

impl Client {
    /// Every message of a queue (claimed, delayed and own ones included), following the pages.
    pub fn all_messages(&mut self, queue: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut path =
            format!("/v2/queues/{queue}/messages?echo=true&include_claimed=true&include_delayed=true&limit=20");
        loop {
            let page = self.get(&path);
            assert_eq!(page.status, 200, "{}", page.text());
            let page = page.json();
            let msgs = page["messages"].as_array().cloned().unwrap_or_default();
            if msgs.is_empty() {
                return out;
            }
            out.extend(msgs);
            match page["links"][0]["href"].as_str() {
                Some(next) => path = next.to_owned(),
                None => return out,
            }
        }
    }
}

/// The id at the end of a message's or claim's href.
pub fn id_of(href: &Value) -> String {
    href.as_str().and_then(|h| h.split('?').next()).and_then(|h| h.rsplit('/').next()).unwrap_or_default().to_owned()
}

/// Runs the server expecting it to refuse to start; returns its stderr.
pub fn start_fails(dir: &Path, extra: &[&str]) -> String {
    let out = server_command(dir, extra).stdin(Stdio::null()).output().expect("run marconi");
    assert!(!out.status.success(), "the server started: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Segment files of one shard, oldest first.
pub fn segment_files(dir: &Path, shard: usize) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(format!("shard-{shard:03}")))
        .map(|rd| {
            rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "seg")).collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// A record found on disk: its offset, padded length, and whether it appends a message.
#[derive(Debug, Clone, Copy)]
pub struct OnDisk {
    pub offset: usize,
    pub len: usize,
    pub message: bool,
}

/// The active (newest linked) segment of a shard and the records in it, read while the server is
/// stopped.
pub fn active_segment(dir: &Path, shard: usize) -> (PathBuf, Vec<OnDisk>) {
    use marconi::storage::{codec, segment::Segment, Record};
    let mut found = None;
    for path in segment_files(dir, shard) {
        let seg = Segment::open(&path).expect("open segment");
        if seg.link().is_some() && seg.header.kind == marconi::storage::segment::SegmentKind::Log {
            found = Some(path);
        }
    }
    let path = found.expect("an active segment");
    let seg = Segment::open(&path).unwrap();
    let mut records = Vec::new();
    let mut off = marconi::storage::segment::SEGMENT_HEADER_BYTES;
    let mut seqs = Vec::new();
    while let Some(buf) = seg.bytes(off, seg.capacity() - off) {
        match codec::decode(buf, &mut seqs, true) {
            Ok(Some(d)) => {
                let message = matches!(d.record, Record::MessageAppend { .. });
                records.push(OnDisk { offset: off, len: d.padded_len, message });
                off += d.padded_len;
            }
            _ => break,
        }
    }
    (path, records)
}

/// Overwrites bytes of a file in place.
pub fn write_at(path: &Path, offset: usize, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset as u64).unwrap();
    f.sync_all().unwrap();
}

pub fn read_at(path: &Path, offset: usize, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    std::fs::File::open(path).unwrap().read_exact_at(&mut buf, offset as u64).unwrap();
    buf
}

/// The server's `/metrics` samples by full name with labels, e.g. `marconi_queues{shard="all"}`.
pub fn metrics(addr: SocketAddr) -> std::collections::HashMap<String, f64> {
    let r = Client::connect(addr).get("/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l:?}"));
            (name.to_owned(), value.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")))
        })
        .collect()
}

/// One sample of [`metrics`]; panics naming it when it is absent.
pub fn metric(addr: SocketAddr, name: &str) -> f64 {
    *metrics(addr).get(name).unwrap_or_else(|| panic!("no sample {name}"))
}

/// Polls `/metrics` until `done` holds (the server's own evidence that something happened),
/// panicking with `what` after many tries. Waits on a fact, never on a duration.
pub fn until_metrics(addr: SocketAddr, what: &str, done: impl Fn(&std::collections::HashMap<String, f64>) -> bool) {
    for _ in 0..2000 {
        if done(&metrics(addr)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the server never reported: {what}");
}

/// `marconi_long_polls_total{shard="all",ended=…}`.
pub fn polls_ended(addr: SocketAddr, how: &str) -> f64 {
    metric(addr, &format!("marconi_long_polls_total{{shard=\"all\",ended=\"{how}\"}}"))
}
