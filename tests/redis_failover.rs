//! Nothing acknowledged is lost when a node dies, on the redis-cluster backend.
//!
//! Producers post messages carrying a unique token through both marconi nodes, alternating;
//! consumers claim and delete through both. Meanwhile: rounds of "pause a replica, kill its master,
//! resume the replica" (the master ran ahead of its replica, as behind a slow link), resharding
//! under load, a marconi node killed, and at the end the whole cluster killed and restarted from
//! its AOF. Then every queue is read back and compared **by content** (an id-only check hides
//! losses: a lossy failover hands the same sequence numbers to new messages):
//! no acknowledged post lost, no acknowledged delete undone, no id acknowledged for two tokens, no
//! token stored twice, 503 only on the queues of the failed master, writes back within 15 s.
//!
//! The same harness with `redis.ack = async` must report losses, or it proves nothing.

mod common;
#[path = "support/redis_cluster.rs"]
mod redis_cluster;

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Resp, Server};
use redis_cluster::RedisCluster;
use serde_json::Value;

const PROJECT: &str = "failover";
const QUEUES: usize = 12;
const PRODUCERS: usize = 4;
const CONSUMERS: usize = 2;
/// How long a paused replica lets its master run ahead.
const AHEAD: Duration = Duration::from_millis(2500);
/// Padding of every message: a paused replica's socket buffers (megabytes) must fill while its
/// master runs ahead, or the replica catches up on resume and even `async` loses nothing.
const PADDING: usize = 64 * 1024;
/// Writes to the failed shard must work again this soon after the old master is back.
const WRITES_BACK_WITHIN: Duration = Duration::from_secs(15);

fn queue(i: usize) -> String {
    format!("q{i}")
}

/// The hash tag of a queue's keys (docs/storage.md): its slot is the queue's master.
fn tag(queue: &str) -> String {
    format!("{PROJECT}/{queue}")
}

/// What the load saw, shared by its threads.
#[derive(Default)]
struct Ledger {
    /// token → (queue, id) of every acknowledged post.
    posted: HashMap<String, (String, String)>,
    /// Tokens whose delete was acknowledged, with the phase of the run and the href used.
    deleted: HashMap<String, (&'static str, String)>,
    /// What the run is doing now (failover round, reshard, …), for the report of a problem.
    phase: &'static str,
    /// Tokens whose delete got 503 or no answer: they may or may not be gone.
    maybe_deleted: HashSet<String>,
    /// Queues whose requests may answer 503 now (those of a master being failed).
    failing: HashSet<String>,
    /// Nodes whose requests may go unanswered now (a marconi node killed).
    dead_nodes: HashSet<SocketAddr>,
    /// Anything a healthy system never does.
    problems: Vec<String>,
    unavailable: u64,
}

impl Ledger {
    fn judge(&mut self, node: SocketAddr, queue: &str, what: &str, resp: Option<&Resp>) {
        match resp {
            Some(r) if r.status == 503 && r.header("retry-after").is_none() => {
                self.problems.push(format!("{what} on {queue} answered 503 without Retry-After: {}", r.text()))
            }
            Some(r) if r.status == 503 && self.failing.contains(queue) => self.unavailable += 1,
            Some(r) if r.status == 503 => {
                self.problems.push(format!("{what} on {queue} (healthy master) answered 503: {}", r.text()))
            }
            Some(r) => self.problems.push(format!("{what} on {queue} answered {}: {}", r.status, r.text())),
            None if self.dead_nodes.contains(&node) => {}
            None => self.problems.push(format!("{what} on {queue} through {node} got no answer")),
        }
    }
}

/// A keep-alive connection to each node, used in turn; a broken one is made again on next use.
struct Nodes {
    addrs: Vec<SocketAddr>,
    clients: Vec<Option<Client>>,
    turn: usize,
}

impl Nodes {
    fn new(addrs: &[SocketAddr]) -> Self {
        Nodes { addrs: addrs.to_vec(), clients: addrs.iter().map(|_| None).collect(), turn: 0 }
    }

    fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> (SocketAddr, Option<Resp>) {
        self.turn = (self.turn + 1) % self.addrs.len();
        let (addr, slot) = (self.addrs[self.turn], &mut self.clients[self.turn]);
        if slot.is_none() {
            *slot = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .ok()
                .map(|s| Client::from_stream(s).with_project(PROJECT));
        }
        let answer = slot.as_mut().and_then(|c| c.try_request(method, path, body));
        if answer.is_none() {
            *slot = None;
        }
        (addr, answer)
    }
}

fn produce(id: usize, addrs: Vec<SocketAddr>, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>) {
    let mut nodes = Nodes::new(&addrs);
    let pad = "x".repeat(PADDING);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let token = format!("p{id}-{n}");
        let q = queue(n % QUEUES);
        let body = format!(r#"{{"messages": [{{"ttl": 3600, "body": {{"t": "{token}", "pad": "{pad}"}}}}]}}"#);
        let (addr, resp) = nodes.request("POST", &format!("/v2/queues/{q}/messages"), Some(&body));
        let mut ledger = ledger.lock().unwrap();
        match resp {
            Some(r) if r.status == 201 => {
                let href = r.json()["resources"][0].as_str().unwrap_or_default().to_owned();
                let msg_id = href.rsplit('/').next().unwrap_or_default().to_owned();
                ledger.posted.insert(token, (q, msg_id));
            }
            other => ledger.judge(addr, &q, "a post", other.as_ref()),
        }
    }
}

fn consume(id: usize, addrs: Vec<SocketAddr>, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>) {
    let mut nodes = Nodes::new(&addrs);
    let mut n = id;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let q = queue(n % QUEUES);
        let (addr, resp) = nodes.request("POST", &format!("/v2/queues/{q}/claims?limit=5"), Some(r#"{"ttl": 60}"#));
        let messages: Vec<Value> = match resp {
            Some(r) if r.status == 201 => r.json()["messages"].as_array().cloned().unwrap_or_default(),
            Some(r) if r.status == 204 => continue,
            other => {
                ledger.lock().unwrap().judge(addr, &q, "a claim", other.as_ref());
                continue;
            }
        };
        for m in messages {
            let token = m["body"]["t"].as_str().unwrap_or_default().to_owned();
            let href = m["href"].as_str().unwrap_or_default().to_owned();
            let (addr, resp) = nodes.request("DELETE", &href, None);
            let mut ledger = ledger.lock().unwrap();
            match resp {
                Some(r) if r.status == 204 => {
                    let phase = ledger.phase;
                    ledger.deleted.insert(token, (phase, href.clone()));
                }
                other => {
                    ledger.maybe_deleted.insert(token);
                    ledger.judge(addr, &q, "a delete", other.as_ref());
                }
            }
        }
    }
}

/// Every message of every queue, read through `addr`: token → ids (more than one is a duplicate).
fn read_back(addr: SocketAddr) -> HashMap<String, Vec<(String, String)>> {
    let mut c = Client::connect(addr).with_project(PROJECT);
    let mut found: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for i in 0..QUEUES {
        let q = queue(i);
        let mut path = format!("/v2/queues/{q}/messages?echo=true&include_claimed=true&limit=20");
        loop {
            let r = c.get(&path);
            if r.status == 204 {
                break;
            }
            assert_eq!(r.status, 200, "reading {q} back: {}", r.text());
            let page = r.json();
            let messages = page["messages"].as_array().cloned().unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for m in messages {
                let token = m["body"]["t"].as_str().unwrap_or_default().to_owned();
                found.entry(token).or_default().push((q.clone(), m["id"].as_str().unwrap_or_default().to_owned()));
            }
            path = page["links"][0]["href"].as_str().expect("next page").to_owned();
        }
    }
    found
}

struct Verdict {
    acked: usize,
    lost: usize,
    undone: Vec<String>,
    reused_ids: usize,
    duplicates: usize,
    problems: Vec<String>,
}

fn verdict(ledger: &Ledger, found: &HashMap<String, Vec<(String, String)>>) -> Verdict {
    let lost = ledger
        .posted
        .keys()
        .filter(|t| !found.contains_key(*t) && !ledger.deleted.contains_key(*t) && !ledger.maybe_deleted.contains(*t))
        .count();
    let undone: Vec<String> = ledger
        .deleted
        .iter()
        .filter_map(|(t, (phase, href))| {
            found.get(t).map(|at| format!("{t} deleted during {phase} by {href}, still at {at:?}"))
        })
        .collect();
    let mut by_id: HashMap<&(String, String), &str> = HashMap::new();
    let mut reused_ids = 0;
    for (token, at) in &ledger.posted {
        if by_id.insert(at, token).is_some() {
            reused_ids += 1;
        }
    }
    // A stored message under an id acknowledged for another token is a reuse too.
    for (token, ats) in found {
        for at in ats {
            if by_id.get(at).is_some_and(|t| t != token) {
                reused_ids += 1;
            }
        }
    }
    let duplicates = found.values().filter(|ats| ats.len() > 1).count();
    Verdict { acked: ledger.posted.len(), lost, undone, reused_ids, duplicates, problems: ledger.problems.clone() }
}

/// Probe posts made so far: each carries its own token.
static PROBES: AtomicU64 = AtomicU64::new(0);

/// Writes to `q` (on the failed master) answer 201 again within [`WRITES_BACK_WITHIN`].
fn writes_come_back(addr: SocketAddr, q: &str) -> Duration {
    let started = Instant::now();
    while started.elapsed() < WRITES_BACK_WITHIN {
        let r = TcpStream::connect(addr).ok().and_then(|s| {
            Client::from_stream(s).with_project(PROJECT).try_request(
                "POST",
                &format!("/v2/queues/{q}/messages"),
                Some(&format!(
                    r#"{{"messages": [{{"ttl": 60, "body": {{"t": "probe-{}"}}}}]}}"#,
                    PROBES.fetch_add(1, Ordering::Relaxed)
                )),
            )
        });
        if r.is_some_and(|r| r.status == 201) {
            return started.elapsed();
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("writes to {q} did not come back within {WRITES_BACK_WITHIN:?} of the old master's return");
}

struct Load {
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(addrs: &[SocketAddr]) -> Load {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for id in 0..PRODUCERS {
            let (addrs, ledger, stop) = (addrs.to_vec(), ledger.clone(), stop.clone());
            threads.push(thread::spawn(move || produce(id, addrs, ledger, stop)));
        }
        for id in 0..CONSUMERS {
            let (addrs, ledger, stop) = (addrs.to_vec(), ledger.clone(), stop.clone());
            threads.push(thread::spawn(move || consume(id, addrs, ledger, stop)));
        }
        Load { ledger, stop, threads }
    }

    fn finish(self) -> Ledger {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("a load thread panicked");
        }
        Arc::try_unwrap(self.ledger).ok().expect("load threads are done").into_inner().unwrap()
    }
}

/// One round: pause the replica of the master that serves queue q0, let the master run ahead,
/// kill it, resume the replica, wait for its promotion, bring the old master back as a replica.
fn fail_over_once(cluster: &mut RedisCluster, load: &Load, probe_via: SocketAddr) -> Duration {
    let master = cluster.master_of_key(&tag(&queue(0)));
    let replica = cluster.replicas_of(master)[0];
    let failing: HashSet<String> =
        (0..QUEUES).map(queue).filter(|q| cluster.master_of_key(&tag(q)) == master).collect();
    {
        let mut ledger = load.ledger.lock().unwrap();
        ledger.failing = failing;
        ledger.phase = "failover";
    }
    cluster.pause(replica);
    thread::sleep(AHEAD);
    cluster.kill(master);
    cluster.resume(replica);
    cluster.wait_until_master(replica);
    cluster.restart(master);
    cluster.wait_until_healthy();
    let back = writes_come_back(probe_via, &queue(0));
    load.ledger.lock().unwrap().phase = "load";
    load.ledger.lock().unwrap().failing.clear();
    back
}

fn nodes_on(cluster: &RedisCluster, extra: &[&str]) -> (Server, Server) {
    let seeds = cluster.seeds();
    let mut args = vec!["--backend", "redis-cluster", "--redis-nodes", &seeds, "--shards", "2"];
    args.extend_from_slice(extra);
    (Server::start_with(&args), Server::start_with(&args))
}

/// Creates the queues before any load, retrying what a cluster still settling (a replica
/// finishing its first sync) answers 503 with Retry-After, as a client would.
fn create_queues(addr: SocketAddr) {
    let mut c = Client::connect(addr).with_project(PROJECT);
    for i in 0..QUEUES {
        let path = format!("/v2/queues/{}", queue(i));
        let mut r = c.put(&path, None);
        for _ in 0..50 {
            if r.status != 503 {
                break;
            }
            assert!(r.header("retry-after").is_some(), "503 without Retry-After: {}", r.text());
            thread::sleep(Duration::from_millis(200));
            r = c.put(&path, None);
        }
        // 204: an earlier try that answered 503 did create it.
        assert!(matches!(r.status, 201 | 204), "{} {}", r.status, r.text());
    }
}

#[test]
fn failover_reshard_node_loss_and_cluster_restart_lose_nothing_acknowledged() {
    let mut cluster = RedisCluster::start(3, 1);
    let (a, b) = nodes_on(&cluster, &[]);
    create_queues(a.addr);
    let load = Load::start(&[a.addr, b.addr]);
    thread::sleep(Duration::from_secs(1));
    for round in 0..2 {
        let back = fail_over_once(&mut cluster, &load, if round % 2 == 0 { a.addr } else { b.addr });
        eprintln!("round {round}: writes back {back:?} after the old master returned");
    }
    let seen = common::metric(a.addr, "marconi_redis_masters_changed_total{shard=\"all\"}");
    assert!(seen >= 2.0, "node A's shards saw the failovers in their slot maps: {seen}");
    // Slots move under load: calls on a migrating slot are redirected or retried, never split.
    load.ledger.lock().unwrap().phase = "reshard";
    cluster.reshard(300);
    load.ledger.lock().unwrap().phase = "node kill";
    // A marconi node dies: the other carries on; what it acknowledged is in the cluster.
    load.ledger.lock().unwrap().dead_nodes.insert(b.addr);
    b.kill();
    thread::sleep(Duration::from_secs(1));
    let mut ledger = load.finish();
    // The whole cluster dies at once and comes back from its AOF.
    cluster.kill_all_and_restart();
    let found = read_back(a.addr);
    let v = verdict(&ledger, &found);
    eprintln!(
        "acked {} lost {} undone {} reused ids {} duplicates {} (503s on the failing shard: {})",
        v.acked,
        v.lost,
        v.undone.len(),
        v.reused_ids,
        v.duplicates,
        ledger.unavailable
    );
    ledger.problems.truncate(20);
    assert!(v.problems.is_empty(), "unexpected answers: {:#?}", ledger.problems);
    assert!(v.acked > 100, "the load made too little to judge: {} posts acknowledged", v.acked);
    assert!(v.undone.is_empty(), "acknowledged deletes undone: {:#?}", v.undone);
    assert_eq!((v.lost, v.reused_ids, v.duplicates), (0, 0, 0), "lost, reused ids, duplicates");
}

#[test]
fn without_wait_the_same_harness_reports_losses() {
    let mut cluster = RedisCluster::start(3, 1);
    let (a, b) = nodes_on(&cluster, &["--redis-ack", "async", "--set", "redis.read_fence=false"]);
    create_queues(a.addr);
    let load = Load::start(&[a.addr, b.addr]);
    thread::sleep(Duration::from_secs(1));
    fail_over_once(&mut cluster, &load, a.addr);
    let ledger = load.finish();
    let v = verdict(&ledger, &read_back(a.addr));
    eprintln!("async: acked {} lost {} reused ids {}", v.acked, v.lost, v.reused_ids);
    assert!(v.lost > 0, "with ack = async a failover must lose acknowledged posts, or the harness cannot see losses");
    drop(b);
}
