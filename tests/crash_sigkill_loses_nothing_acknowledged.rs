//! The crash test: a real server in `sync` mode under a produce/claim/delete load is killed with
//! SIGKILL at random moments, again and again, sometimes with a torn tail written on purpose
//! while it is down. After every restart: the server starts, every acknowledged message that was
//! not deleted is there exactly once with its body, and nothing acknowledged as deleted is back.
//!
//! Bounded for CI (about 20 s); `MARCONI_CRASH_ROUNDS=200 cargo test --release --test
//! crash_sigkill_loses_nothing_acknowledged` runs longer. `MARCONI_CRASH_SEED` replays a run.

mod common;
use common::*;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const QUEUES: [&str; 4] = ["crash-a", "crash-b", "crash-c", "crash-d"];

#[derive(Default)]
struct Ledger {
    /// Acknowledged posts: id → (queue, body tag).
    posted: HashMap<String, (String, String)>,
    /// Deletes acknowledged (204).
    deleted: HashSet<String>,
    /// Deletes sent without an answer: may or may not have happened.
    maybe_deleted: HashSet<String>,
}

fn producer(
    addr: std::net::SocketAddr,
    worker: usize,
    round: usize,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
) {
    let mut c = Client::connect(addr);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let q = QUEUES[(worker + n) % QUEUES.len()];
        let tags: Vec<String> = (0..1 + n % 3).map(|i| format!("r{round}-w{worker}-{n}-{i}")).collect();
        let items: Vec<String> = tags.iter().map(|t| format!(r#"{{"ttl": 3600, "body": {{"tag": "{t}"}}}}"#)).collect();
        let body = format!(r#"{{"messages": [{}]}}"#, items.join(","));
        n += 1;
        let Some(r) = c.try_request("POST", &format!("/v2/queues/{q}/messages"), Some(&body)) else { return };
        if r.status != 201 {
            continue;
        }
        let hrefs = r.json()["resources"].as_array().cloned().unwrap_or_default();
        let mut l = ledger.lock().unwrap();
        for (href, tag) in hrefs.iter().zip(tags) {
            l.posted.insert(id_of(href), (q.to_owned(), tag));
        }
    }
}

fn consumer(addr: std::net::SocketAddr, worker: usize, stop: Arc<AtomicBool>, ledger: Arc<Mutex<Ledger>>) {
    let mut c = Client::connect(addr);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let q = QUEUES[(worker + n) % QUEUES.len()];
        n += 1;
        let Some(r) =
            c.try_request("POST", &format!("/v2/queues/{q}/claims?limit=4"), Some(r#"{"ttl": 60, "grace": 60}"#))
        else {
            return;
        };
        if r.status != 201 {
            continue;
        }
        for m in r.json()["messages"].as_array().cloned().unwrap_or_default() {
            let href = m["href"].as_str().unwrap_or_default().to_owned();
            let id = id_of(&m["href"]);
            ledger.lock().unwrap().maybe_deleted.insert(id.clone());
            let Some(r) = c.try_request("DELETE", &href, None) else { return };
            let mut l = ledger.lock().unwrap();
            if r.status == 204 {
                l.maybe_deleted.remove(&id);
                l.deleted.insert(id);
            }
        }
    }
}

fn check(server: &Server, ledger: &Ledger, round: usize) {
    let mut c = server.client();
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut tags = HashSet::new();
    for q in QUEUES {
        for m in c.all_messages(q) {
            let id = m["id"].as_str().unwrap().to_owned();
            let tag = m["body"]["tag"].as_str().unwrap_or_default().to_owned();
            assert!(seen.insert(id.clone(), tag.clone()).is_none(), "round {round}: {id} listed twice");
            assert!(tags.insert(tag.clone()), "round {round}: body {tag} stored twice");
            assert!(!ledger.deleted.contains(&id), "round {round}: {id} was deleted and came back");
        }
    }
    for (id, (q, tag)) in &ledger.posted {
        if ledger.deleted.contains(id) || ledger.maybe_deleted.contains(id) {
            continue;
        }
        match seen.get(id) {
            Some(t) => assert_eq!(t, tag, "round {round}: {id} in {q} has another body"),
            None => panic!("round {round}: acknowledged message {id} ({tag}) in {q} is lost"),
        }
    }
}

/// Writes a torn record (the first bytes of the last one) after the end of shard 0's log.
fn tear_tail(dir: &std::path::Path) {
    let (path, records) = active_segment(dir, 0);
    if let Some(last) = records.last() {
        let bytes = read_at(&path, last.offset, last.len);
        write_at(&path, last.offset + last.len, &bytes[..bytes.len().min(24)]);
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let rounds: usize = std::env::var("MARCONI_CRASH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let seed: u64 =
        std::env::var("MARCONI_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    println!("crash test: {rounds} rounds, seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let started = Instant::now();
    let mut server = Server::start_in(dir.path(), &[]);
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for w in 0..3 {
            let (stop, ledger, addr) = (stop.clone(), ledger.clone(), server.addr);
            workers.push(std::thread::spawn(move || producer(addr, w, round, stop, ledger)));
        }
        for w in 0..2 {
            let (stop, ledger, addr) = (stop.clone(), ledger.clone(), server.addr);
            workers.push(std::thread::spawn(move || consumer(addr, w, stop, ledger)));
        }
        std::thread::sleep(Duration::from_millis(rng.u64(200..1200)));
        // The kill lands while requests are in flight; then the workers see their sockets close.
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        if round % 3 == 2 {
            tear_tail(dir.path());
        }
        server = Server::start_in(dir.path(), &[]);
        check(&server, &ledger.lock().unwrap(), round);
    }
    let l = ledger.lock().unwrap();
    println!(
        "crash test: {rounds} kills in {:.1} s, {} messages acknowledged, {} deletes acknowledged",
        started.elapsed().as_secs_f64(),
        l.posted.len(),
        l.deleted.len()
    );
    assert!(l.posted.len() > 50, "the load barely ran");
}
