//! Test fixture: a Redis Cluster of M masters × R replicas on free loopback ports in a temp dir,
//! administered with `redis-cli` (blocking: tests only). It kills exactly the processes it
//! started when dropped, also when a test panics.
//!
//! Include it with `#[path = "support/redis_cluster.rs"] mod redis_cluster;`.
//!
//! Nodes are named by their index in start order ([`NodeId`]); roles change with failovers, so
//! [`RedisCluster::masters`], [`RedisCluster::replicas_of`] and [`RedisCluster::master_of_key`]
//! ask the cluster each time.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A node, by its index in start order.
pub type NodeId = usize;

/// How long the fixture waits for the cluster to form or heal before failing the test.
const HEAL_LIMIT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Paused,
    Killed,
}

struct Node {
    port: u16,
    bus_port: u16,
    dir: PathBuf,
    child: Option<Child>,
    state: State,
}

pub struct RedisCluster {
    nodes: Vec<Node>,
    masters: usize,
    replicas: usize,
    /// The server binary every node runs.
    server: String,
    extra: Vec<String>,
    _dir: tempfile::TempDir,
}

/// A master's port and the slot ranges it serves.
type Owner = (u16, Vec<(u16, u16)>);

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct Entry {
    id: String,
    port: u16,
    flags: String,
    master_id: String,
    slots: Vec<(u16, u16)>,
}

impl Entry {
    fn is_master(&self) -> bool {
        self.flags.split(',').any(|f| f == "master")
    }
    fn failing(&self) -> bool {
        self.flags.split(',').any(|f| f == "fail" || f == "fail?" || f == "handshake" || f == "noaddr")
    }
    fn myself(&self) -> bool {
        self.flags.split(',').any(|f| f == "myself")
    }
}

fn parse_nodes(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let addr = fields.get(1)?.split(['@', ',']).next()?;
            let port = addr.rsplit_once(':')?.1.parse().ok()?;
            let slots = fields
                .get(8..)
                .unwrap_or_default()
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(Entry {
                id: fields.first()?.to_string(),
                port,
                flags: fields.get(2)?.to_string(),
                master_id: fields.get(3)?.to_string(),
                slots,
            })
        })
        .collect()
}

/// Free loopback ports, all held until every one is found (so none repeats).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("bound").port()).collect()
}

impl RedisCluster {
    /// Starts and forms a cluster; returns once every node reports `cluster_state:ok`, every
    /// replica's link is up and all nodes agree on who serves which slots.
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        RedisCluster::start_with(masters, replicas, &[])
    }

    /// Same, with extra `redis-server` arguments for every node (e.g. `["--min-replicas-to-write", "1"]`).
    pub fn start_with(masters: usize, replicas: usize, extra: &[&str]) -> RedisCluster {
        RedisCluster::start_server("redis-server", masters, replicas, extra)
    }

    /// Same, with another server binary that speaks the cluster protocol (Valkey's `valkey-server`).
    pub fn start_server(server: &str, masters: usize, replicas: usize, extra: &[&str]) -> RedisCluster {
        assert!(masters >= 3, "Redis Cluster needs at least 3 masters");
        let dir = tempfile::Builder::new().prefix("marconi-redis-cluster.").tempdir().expect("temp dir");
        let count = masters * (1 + replicas);
        let ports = free_ports(2 * count);
        let nodes = (0..count)
            .map(|i| {
                let node_dir = dir.path().join(format!("node-{i}"));
                std::fs::create_dir_all(&node_dir).expect("node dir");
                Node {
                    port: ports[2 * i],
                    bus_port: ports[2 * i + 1],
                    dir: node_dir,
                    child: None,
                    state: State::Killed,
                }
            })
            .collect();
        let mut cluster = RedisCluster {
            nodes,
            masters,
            replicas,
            server: server.to_owned(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            _dir: dir,
        };
        for id in 0..count {
            cluster.spawn(id);
        }
        for id in 0..count {
            cluster.wait_for_ping(id);
        }
        let addrs = cluster.addrs();
        let replicas_arg = replicas.to_string();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", &replicas_arg, "--cluster-yes"]);
        let out = Command::new("redis-cli")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_until_healthy();
        cluster
    }

    fn spawn(&mut self, id: NodeId) {
        let node = &mut self.nodes[id];
        let child = Command::new(&self.server)
            .args(["--bind", "127.0.0.1", "--port", &node.port.to_string()])
            .args(["--cluster-port", &node.bus_port.to_string()])
            .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", "1000", "--cluster-require-full-coverage", "no"])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .args(["--daemonize", "no", "--protected-mode", "no", "--logfile", "redis.log"])
            .arg("--dir")
            .arg(&node.dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {} (apt-get install redis-server): {e}", self.server));
        node.child = Some(child);
        node.state = State::Running;
    }

    fn wait_for_ping(&self, id: NodeId) {
        let start = Instant::now();
        while self.cli(id, &["PING"]).trim() != "PONG" {
            assert!(start.elapsed() < HEAL_LIMIT, "node {id} (port {}) does not answer PING", self.nodes[id].port);
            thread::sleep(POLL);
        }
    }

    /// Every node's `127.0.0.1:port`.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect()
    }

    /// The seed list for marconi's `redis.nodes`: every node, comma-separated.
    pub fn seeds(&self) -> String {
        self.addrs().join(",")
    }

    pub fn seed_list(&self) -> Vec<String> {
        self.addrs()
    }

    pub fn addr(&self, id: NodeId) -> String {
        format!("127.0.0.1:{}", self.nodes[id].port)
    }

    pub fn port(&self, id: NodeId) -> u16 {
        self.nodes[id].port
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn pid(&self, id: NodeId) -> Option<u32> {
        self.nodes[id].child.as_ref().map(Child::id)
    }

    /// `redis-cli -p PORT args…`, its standard output (empty when the node does not answer
    /// within a few seconds, e.g. paused).
    pub fn cli(&self, id: NodeId, args: &[&str]) -> String {
        let out = Command::new("timeout")
            .args(["5", "redis-cli", "-p", &self.nodes[id].port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn signal(&self, id: NodeId, signal: libc::c_int) {
        let pid = self.pid(id).expect("a node this fixture started");
        // SAFETY: kill(2) on a PID this fixture spawned and has not reaped.
        let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(rc, 0, "signal {signal} to node {id} (pid {pid})");
    }

    /// SIGSTOP: the node hangs with its sockets open.
    pub fn pause(&mut self, id: NodeId) {
        self.signal(id, libc::SIGSTOP);
        self.nodes[id].state = State::Paused;
    }

    /// SIGCONT.
    pub fn resume(&mut self, id: NodeId) {
        self.signal(id, libc::SIGCONT);
        self.nodes[id].state = State::Running;
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self, id: NodeId) {
        let node = &mut self.nodes[id];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.state = State::Killed;
    }

    /// Starts a killed node again on its port and directory (it rejoins from nodes.conf and its AOF).
    pub fn restart(&mut self, id: NodeId) {
        self.kill(id);
        self.spawn(id);
        self.wait_for_ping(id);
    }

    /// Kills every node at once, starts them all again and waits until the cluster is healthy.
    pub fn kill_all_and_restart(&mut self) {
        for id in 0..self.nodes.len() {
            self.kill(id);
        }
        for id in 0..self.nodes.len() {
            self.spawn(id);
        }
        for id in 0..self.nodes.len() {
            self.wait_for_ping(id);
        }
        self.wait_until_healthy();
    }

    fn running(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.nodes.len()).filter(|&id| self.nodes[id].state == State::Running)
    }

    fn id_of_port(&self, port: u16) -> Option<NodeId> {
        self.nodes.iter().position(|n| n.port == port)
    }

    /// `CLUSTER NODES` as some running node sees it.
    fn view(&self) -> Vec<Entry> {
        for id in self.running() {
            let entries = parse_nodes(&self.cli(id, &["CLUSTER", "NODES"]));
            if !entries.is_empty() {
                return entries;
            }
        }
        panic!("no running node answers CLUSTER NODES");
    }

    /// The masters serving slots now.
    pub fn masters(&self) -> Vec<NodeId> {
        let mut masters: Vec<NodeId> = self
            .view()
            .iter()
            .filter(|e| e.is_master() && !e.failing() && !e.slots.is_empty())
            .filter_map(|e| self.id_of_port(e.port))
            .collect();
        masters.sort_unstable();
        masters
    }

    /// The replicas of `master` now.
    pub fn replicas_of(&self, master: NodeId) -> Vec<NodeId> {
        let view = self.view();
        let Some(id) = view.iter().find(|e| e.port == self.nodes[master].port).map(|e| e.id.clone()) else {
            return Vec::new();
        };
        let mut replicas: Vec<NodeId> = view
            .iter()
            .filter(|e| e.master_id == id && !e.is_master())
            .filter_map(|e| self.id_of_port(e.port))
            .collect();
        replicas.sort_unstable();
        replicas
    }

    /// The cluster's own node id of a node.
    pub fn node_id(&self, id: NodeId) -> String {
        self.cli(id, &["CLUSTER", "MYID"]).trim().to_owned()
    }

    pub fn keyslot(&self, key: &str) -> u16 {
        let id = self.running().next().expect("a running node");
        self.cli(id, &["CLUSTER", "KEYSLOT", key]).trim().parse().expect("CLUSTER KEYSLOT answers a number")
    }

    /// The master serving `slot` now.
    pub fn master_of_slot(&self, slot: u16) -> NodeId {
        self.view()
            .iter()
            .filter(|e| e.is_master() && !e.failing())
            .find(|e| e.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .and_then(|e| self.id_of_port(e.port))
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// The master serving `key`'s slot now.
    pub fn master_of_key(&self, key: &str) -> NodeId {
        self.master_of_slot(self.keyslot(key))
    }

    /// Waits until `id` is a master serving slots, in its own view, with `cluster_state:ok`.
    pub fn wait_until_master(&self, id: NodeId) {
        let start = Instant::now();
        loop {
            let me = parse_nodes(&self.cli(id, &["CLUSTER", "NODES"])).into_iter().find(Entry::myself);
            let ok = self.cli(id, &["CLUSTER", "INFO"]).contains("cluster_state:ok");
            if ok && me.is_some_and(|e| e.is_master() && !e.slots.is_empty()) {
                return;
            }
            assert!(start.elapsed() < HEAL_LIMIT, "node {id} did not become a master");
            thread::sleep(POLL);
        }
    }

    /// Waits until every running node says `cluster_state:ok`, knows every node and none as
    /// failing, all agree on who serves which slots and every replica's link is up.
    pub fn wait_until_healthy(&self) {
        let start = Instant::now();
        loop {
            match self.unhealthy() {
                None => return,
                Some(why) => assert!(start.elapsed() < HEAL_LIMIT, "the cluster did not become healthy: {why}"),
            }
            thread::sleep(POLL);
        }
    }

    fn unhealthy(&self) -> Option<String> {
        let mut agreed: Option<Vec<Owner>> = None;
        for id in self.running() {
            let info = self.cli(id, &["CLUSTER", "INFO"]);
            if !info.contains("cluster_state:ok") {
                return Some(format!("node {id}: {}", info.lines().next().unwrap_or("no answer")));
            }
            let view = parse_nodes(&self.cli(id, &["CLUSTER", "NODES"]));
            if view.len() != self.nodes.len() {
                return Some(format!("node {id} knows {} of {} nodes", view.len(), self.nodes.len()));
            }
            if let Some(e) = view.iter().find(|e| e.failing()) {
                return Some(format!("node {id} sees port {} as {}", e.port, e.flags));
            }
            let mut owners: Vec<Owner> = view
                .iter()
                .filter(|e| e.is_master() && !e.slots.is_empty())
                .map(|e| (e.port, e.slots.clone()))
                .collect();
            owners.sort();
            let covered: u32 = owners.iter().flat_map(|(_, s)| s).map(|&(a, b)| u32::from(b - a) + 1).sum();
            if covered != 16384 {
                return Some(format!("node {id} sees {covered} slots served"));
            }
            match &agreed {
                None => agreed = Some(owners),
                Some(first) if *first != owners => return Some(format!("node {id} disagrees on the slot map")),
                Some(_) => {}
            }
            if let Some(me) = view.iter().find(|e| e.myself()) {
                if !me.is_master() {
                    let replication = self.cli(id, &["INFO", "replication"]);
                    if !replication.contains("master_link_status:up") {
                        return Some(format!("replica {id}'s link is not up"));
                    }
                }
            }
        }
        None
    }

    /// Moves `slots` slots from the master serving slot 0 to the master serving slot 16383
    /// with `redis-cli --cluster reshard` (it takes the source's lowest slots), and waits until
    /// the cluster is healthy again.
    pub fn reshard(&mut self, slots: u16) {
        let (from, to) = (self.master_of_slot(0), self.master_of_slot(16383));
        self.reshard_between(from, to, slots);
    }

    pub fn reshard_between(&mut self, from: NodeId, to: NodeId, slots: u16) {
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let out = Command::new("redis-cli")
            .args(["--cluster", "reshard", &self.addr(from)])
            .args(["--cluster-from", &from_id, "--cluster-to", &to_id])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster reshard");
        assert!(
            out.status.success(),
            "redis-cli --cluster reshard failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_until_healthy();
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // SIGKILL works on a stopped process too; wait reaps exactly this PID.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
