//! Routing, the per-node flushers (group WAIT), retries and topology refreshes.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use super::conn::{self, Conn, ConnError};
use super::pubsub::Registry;
use super::resp::{self, Value};
use super::slots::{self, Topology};
use super::{Ack, ClusterStats, Kind, Options, RedisError};
use crate::metrics::Histogram;
use crate::sync::{oneshot, Notify, Sender};

/// Least time between two topology refreshes: failures and MOVED storms ask for many.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(100);
/// Longest wait for one node's `CLUSTER SLOTS` during a refresh (before the next is asked).
const REFRESH_NODE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Reconnect backoff after a failed connect: doubles from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(25);
const BACKOFF_MAX: Duration = Duration::from_millis(1000);
/// Sleep before a retry after a refusal: doubles from the first to the last, within the deadline.
const RETRY_FIRST: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_millis(200);
/// Redirects followed without a pause (a stale map converges in one or two).
const FREE_REDIRECTS: u32 = 3;

/// What a queued command is, for the round's fence and WAIT.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Class {
    Read,
    Write,
    /// Admin commands (`FUNCTION LOAD`, `INFO`): never fenced, never waited for.
    Raw,
}

/// Whether the round of a reply was acknowledged as the ack mode asks.
#[derive(Debug, Clone)]
pub(crate) enum Acked {
    Yes,
    /// WAIT answered too few replicas (or an error): the message says so.
    Short(String),
    /// The fence write failed (its slot moved): reads of the round may be retried.
    Fence(String),
}

/// How a queued command ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Reply(Value, Acked),
    /// Never written to a socket: safe to retry anywhere.
    NotSent(String),
    /// Written, and then the connection failed or timed out: it may have run.
    Lost(String),
    Protocol(String),
}

/// A command in RESP, shared by the retries of one call.
type Encoded = Rc<[u8]>;

struct Pending {
    cmd: Encoded,
    class: Class,
    asking: bool,
    deadline: Instant,
    tx: Sender<Outcome>,
}

pub(crate) struct Settings {
    pub ack_replicas: u32,
    pub ack_timeout: Duration,
    pub read_fence: bool,
    pub command_timeout: Duration,
    pub max_batch: usize,
    /// `WAIT n t` or `WAITAOF 1 n t`, encoded once; `None` with `Ack::Async`.
    pub wait: Option<Vec<u8>>,
    pub waitaof: bool,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub calls: Cell<u64>,
    pub replies: Cell<u64>,
    pub function_errors: Cell<u64>,
    pub unavailable: Cell<u64>,
    pub protocol_errors: Cell<u64>,
    pub batches: Cell<u64>,
    pub batched_commands: Cell<u64>,
    pub wait_ok: Cell<u64>,
    pub wait_short: Cell<u64>,
    pub wait_timeout: Cell<u64>,
    pub moved: Cell<u64>,
    pub ask: Cell<u64>,
    pub retries: Cell<u64>,
    pub library_loads: Cell<u64>,
    pub topology_refreshes: Cell<u64>,
    pub topology_refresh_failures: Cell<u64>,
    pub masters_changed: Cell<u64>,
    pub connects: Cell<u64>,
    pub connect_failures: Cell<u64>,
    pub connections_lost: Cell<u64>,
    pub pubsub_messages: Cell<u64>,
    pub latency: Histogram,
}

pub(crate) fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// What the background tasks share with the client: settings, counters, the stop flag and the
/// refresh request.
pub(crate) struct Core {
    pub settings: Settings,
    pub stats: Counters,
    pub closed: Cell<bool>,
    refresh_wanted: Cell<bool>,
    refresh_wake: Notify,
    last_refresh: Cell<Option<Instant>>,
}

impl Core {
    /// Asks the refresher task for a topology refresh (at most one per MIN_REFRESH_INTERVAL).
    pub fn want_refresh(&self) {
        if !self.refresh_wanted.replace(true) {
            self.refresh_wake.notify_all();
        }
    }
}

/// One node's data connection: the queue of commands for its next round and its flusher.
pub(crate) struct Node {
    addr: Rc<str>,
    socket: Option<SocketAddr>,
    queue: RefCell<VecDeque<Pending>>,
    wake: Notify,
    running: Cell<bool>,
    /// `INCR` of a key in a slot this master serves, encoded; `None` when it serves none.
    fence: RefCell<Option<Rc<[u8]>>>,
    /// Calls fail fast (NotSent) until then, after a failed connect.
    down_until: Cell<Option<Instant>>,
    backoff: Cell<Duration>,
}

impl Node {
    fn submit(self: &Rc<Self>, core: &Rc<Core>, pending: Pending) {
        if core.closed.get() {
            pending.tx.send(Outcome::NotSent("the client is closed".into()));
            return;
        }
        if let Some(until) = self.down_until.get() {
            if Instant::now() < until {
                pending.tx.send(Outcome::NotSent(format!("{}: not reachable, reconnecting", self.addr)));
                return;
            }
        }
        self.queue.borrow_mut().push_back(pending);
        if !self.running.replace(true) {
            glommio::spawn_local(flush_loop(self.clone(), core.clone())).detach();
        } else if self.wake.waiters() > 0 {
            self.wake.notify_all();
        }
    }

    fn fail_queued(&self, outcome: impl Fn() -> Outcome) {
        let queued: Vec<Pending> = self.queue.borrow_mut().drain(..).collect();
        for p in queued {
            p.tx.send(outcome());
        }
    }

    /// The next round: up to `max` commands whose callers still wait (an expired one was
    /// answered Unavailable by its caller's timer and is not sent).
    fn take_round(&self, max: usize) -> Vec<Pending> {
        let now = Instant::now();
        let mut queue = self.queue.borrow_mut();
        let mut round = Vec::with_capacity(queue.len().min(max));
        while round.len() < max {
            match queue.pop_front() {
                Some(p) if p.deadline > now => round.push(p),
                Some(_) => {}
                None => break,
            }
        }
        round
    }

    async fn open(&self, core: &Core) -> Result<Conn, String> {
        let Some(socket) = self.socket else {
            return Err(format!("{}: not an IP address and port", self.addr));
        };
        match Conn::open(socket, core.settings.command_timeout).await {
            Ok(c) => {
                bump(&core.stats.connects);
                self.backoff.set(Duration::ZERO);
                self.down_until.set(None);
                Ok(c)
            }
            Err(e) => {
                bump(&core.stats.connect_failures);
                let backoff = (self.backoff.get() * 2).clamp(BACKOFF_FIRST, BACKOFF_MAX);
                self.backoff.set(backoff);
                self.down_until.set(Some(Instant::now() + backoff));
                core.want_refresh();
                Err(format!("{}: {e}", self.addr))
            }
        }
    }
}

/// The flusher of one node: waits for queued commands, sends them as one round, delivers the
/// replies, and reconnects after a failure.
async fn flush_loop(node: Rc<Node>, core: Rc<Core>) {
    let mut conn: Option<Conn> = None;
    loop {
        loop {
            let wake = node.wake.notified();
            if core.closed.get() {
                node.fail_queued(|| Outcome::NotSent("the client is closed".into()));
                node.running.set(false);
                return;
            }
            if !node.queue.borrow().is_empty() {
                break;
            }
            wake.await;
        }
        let c = match &mut conn {
            Some(c) => c,
            None => match node.open(&core).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    node.fail_queued(|| Outcome::NotSent(e.clone()));
                    continue;
                }
            },
        };
        let round = node.take_round(core.settings.max_batch);
        if round.is_empty() {
            continue;
        }
        if run_round(c, &node, &core, round).await.is_err() {
            conn = None;
        }
    }
}

const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

/// Sends one round and answers its calls; `Err` when the connection is no longer usable (its
/// calls were answered with the failure).
async fn run_round(c: &mut Conn, node: &Node, core: &Core, round: Vec<Pending>) -> Result<(), ()> {
    let s = &core.settings;
    c.out.clear();
    let (mut has_read, mut has_write, mut expected) = (false, false, 0);
    for p in &round {
        if p.asking {
            c.out.extend_from_slice(ASKING);
            expected += 1;
        }
        c.out.extend_from_slice(&p.cmd);
        expected += 1;
        has_read |= p.class == Class::Read;
        has_write |= p.class == Class::Write;
    }
    // The fence goes last, after every read of the round: its WAIT then covers whatever any
    // read saw, even if another client's write landed between the reads.
    let fenced = s.wait.is_some() && s.read_fence && has_read;
    let fence = if fenced { node.fence.borrow().clone() } else { None };
    if let Some(f) = &fence {
        c.out.extend_from_slice(f);
        expected += 1;
    }
    let wait = if has_write || fence.is_some() { s.wait.as_deref() } else { None };
    if let Some(w) = wait {
        c.out.extend_from_slice(w);
        expected += 1;
    }
    bump(&core.stats.batches);
    core.stats.batched_commands.set(core.stats.batched_commands.get() + round.len() as u64);

    let limit = s.command_timeout + if wait.is_some() { s.ack_timeout } else { Duration::ZERO };
    let exchange = async {
        c.flush_out().await?;
        let mut replies = Vec::with_capacity(expected);
        for _ in 0..expected {
            replies.push(c.read_value().await?);
        }
        Ok::<_, ConnError>(replies)
    };
    let failure = match within(limit, exchange).await {
        Some(Ok(replies)) => Ok(replies),
        None => {
            if wait.is_some() {
                bump(&core.stats.wait_timeout);
            }
            Err((false, format!("no answer from {} within {} ms", node.addr, limit.as_millis())))
        }
        Some(Err(ConnError::Protocol(e))) => Err((true, format!("{}: {e}", node.addr))),
        Some(Err(e)) => Err((false, format!("{}: {e}", node.addr))),
    };
    let replies = match failure {
        Ok(replies) => replies,
        Err((protocol, m)) => {
            bump(&core.stats.connections_lost);
            core.want_refresh();
            for p in round {
                p.tx.send(if protocol { Outcome::Protocol(m.clone()) } else { Outcome::Lost(m.clone()) });
            }
            return Err(());
        }
    };

    let mut replies = replies.into_iter();
    let mut answers = Vec::with_capacity(round.len());
    for p in &round {
        if p.asking {
            replies.next();
        }
        answers.push(replies.next().unwrap_or(Value::Nil));
    }
    let fence_reply = fence.as_ref().and_then(|_| replies.next());
    let written = match wait.map(|_| replies.next().unwrap_or(Value::Nil)) {
        None => Acked::Yes,
        Some(reply) => judge_wait(&reply, s, &node.addr, &core.stats),
    };
    let read = if !fenced {
        Acked::Yes
    } else {
        match (&fence, &fence_reply) {
            (None, _) => {
                core.want_refresh();
                Acked::Fence(format!("{} serves no slot for a fence (stale slot map)", node.addr))
            }
            (Some(_), Some(Value::Error(e))) => {
                core.want_refresh();
                Acked::Fence(format!("the fence on {} failed: {e}", node.addr))
            }
            _ => written.clone(),
        }
    };
    for (p, answer) in round.into_iter().zip(answers) {
        let acked = match p.class {
            Class::Write => written.clone(),
            Class::Read => read.clone(),
            Class::Raw => Acked::Yes,
        };
        p.tx.send(Outcome::Reply(answer, acked));
    }
    Ok(())
}

fn judge_wait(reply: &Value, s: &Settings, addr: &str, stats: &Counters) -> Acked {
    let n = i64::from(s.ack_replicas);
    let (ok, got) = match reply {
        Value::Int(got) => (*got >= n, format!("{got} did")),
        Value::Array(counts) if s.waitaof => {
            match (counts.first().and_then(Value::as_int), counts.get(1).and_then(Value::as_int)) {
                (Some(local), Some(replicas)) => {
                    (local >= 1 && replicas >= n, format!("local fsync {local}, {replicas} replicas did"))
                }
                _ => (false, format!("WAITAOF answered {reply}")),
            }
        }
        other => (false, format!("WAIT answered {other}")),
    };
    if ok {
        bump(&stats.wait_ok);
        Acked::Yes
    } else {
        bump(&stats.wait_short);
        let what = if s.waitaof { "fsynced on the master and" } else { "received by" };
        Acked::Short(format!(
            "not acknowledged by {n} replicas within {} ms on {addr} ({got}; must be {what} {n}); it may or may not have \
             taken effect",
            s.ack_timeout.as_millis()
        ))
    }
}

/// `fut`'s output, or `None` once `limit` has passed.
pub(crate) async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

async fn until<T>(deadline: Instant, fut: impl Future<Output = T>) -> Option<T> {
    within(deadline.saturating_duration_since(Instant::now()), fut).await
}

/// How the client reads an error reply.
#[derive(Debug, PartialEq, Eq)]
enum Refusal<'a> {
    Moved(u16, &'a str),
    Ask(&'a str),
    /// Not run; try again after a pause (and a refresh when `refresh`).
    Retry {
        refresh: bool,
    },
    /// The function library is missing on that master.
    NoLibrary,
    /// Not run, and no retry will help within a call: Unavailable now.
    Refused,
    /// The function's own error.
    Function,
}

fn refusal(error: &str) -> Refusal<'_> {
    let mut words = error.split(' ');
    match words.next().unwrap_or("") {
        "MOVED" => match (words.next().and_then(|s| s.parse().ok()), words.next()) {
            (Some(slot), Some(to)) => Refusal::Moved(slot, to),
            _ => Refusal::Function,
        },
        "ASK" => match (words.next(), words.next()) {
            (Some(_), Some(to)) => Refusal::Ask(to),
            _ => Refusal::Function,
        },
        "TRYAGAIN" | "LOADING" | "BUSY" => Refusal::Retry { refresh: false },
        "CLUSTERDOWN" | "MASTERDOWN" | "READONLY" => Refusal::Retry { refresh: true },
        "NOSCRIPT" => Refusal::NoLibrary,
        "ERR" if error.starts_with("ERR Function not found") => Refusal::NoLibrary,
        "NOREPLICAS" | "OOM" | "MISCONF" => Refusal::Refused,
        _ => Refusal::Function,
    }
}

/// `host:port` of a redirect; an empty host means the host of the node that answered.
fn redirect_target(to: &str, from: &str) -> Rc<str> {
    match to.strip_prefix(':') {
        Some(port) => format!("{}:{port}", bracket(slots::host_of(from))).into(),
        None => to.into(),
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// One master as the slot map has it, for `marconi check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterInfo {
    pub addr: String,
    pub replicas: Vec<String>,
    pub slots: usize,
}

/// A Redis Cluster as one shard sees it. See the module documentation.
pub struct Cluster {
    pub(crate) core: Rc<Core>,
    me: Weak<Cluster>,
    seeds: Vec<Rc<str>>,
    /// Host names of seeds, resolved once at connect time.
    resolved: HashMap<Rc<str>, SocketAddr>,
    pub(crate) topology: RefCell<Topology>,
    nodes: RefCell<HashMap<Rc<str>, Rc<Node>>>,
    refreshing: Cell<bool>,
    refreshed: Notify,
    rotation: Cell<usize>,
    load_library: Option<Rc<[u8]>>,
    pub(crate) pubsub: Registry,
}

impl Cluster {
    /// Discovers the slots from the seeds and loads the function library on every master
    /// (`FUNCTION LOAD REPLACE`; replicas get it by replication). Connections open lazily.
    pub async fn connect(options: Options) -> Result<Rc<Cluster>, RedisError> {
        if options.nodes.is_empty() {
            return Err(RedisError::Setup("no seed nodes".into()));
        }
        if options.max_batch == 0 || options.command_timeout_ms == 0 {
            return Err(RedisError::Setup("max_batch and command_timeout_ms must be at least 1".into()));
        }
        if options.ack != Ack::Async && options.ack_replicas == 0 {
            return Err(RedisError::Setup("ack_replicas must be at least 1 unless ack is async".into()));
        }
        let (n, t) = (options.ack_replicas.to_string(), options.ack_timeout_ms.to_string());
        let wait = match options.ack {
            Ack::Async => None,
            Ack::Replicas => Some(resp::command(&[b"WAIT", n.as_bytes(), t.as_bytes()])),
            Ack::Fsync => Some(resp::command(&[b"WAITAOF", b"1", n.as_bytes(), t.as_bytes()])),
        };
        let settings = Settings {
            ack_replicas: options.ack_replicas,
            ack_timeout: Duration::from_millis(options.ack_timeout_ms),
            read_fence: options.read_fence,
            command_timeout: Duration::from_millis(options.command_timeout_ms),
            max_batch: options.max_batch,
            wait,
            waitaof: options.ack == Ack::Fsync,
        };
        let mut resolved = HashMap::new();
        let mut seeds = Vec::new();
        for seed in &options.nodes {
            let seed: Rc<str> = seed.trim().into();
            match conn::resolve_blocking(&seed) {
                Some(socket) => {
                    resolved.insert(seed.clone(), socket);
                    seeds.push(seed);
                }
                None => return Err(RedisError::Setup(format!("seed {seed:?} is not host:port or does not resolve"))),
            }
        }
        let load_library = (!options.library.is_empty())
            .then(|| Rc::from(resp::command(&[b"FUNCTION", b"LOAD", b"REPLACE", options.library.as_bytes()])));
        let core = Rc::new(Core {
            settings,
            stats: Counters::default(),
            closed: Cell::new(false),
            refresh_wanted: Cell::new(false),
            refresh_wake: Notify::new(),
            last_refresh: Cell::new(None),
        });
        let cluster = Rc::new_cyclic(|me| Cluster {
            core: core.clone(),
            me: me.clone(),
            seeds,
            resolved,
            topology: RefCell::new(Topology::default()),
            nodes: RefCell::new(HashMap::new()),
            refreshing: Cell::new(false),
            refreshed: Notify::new(),
            rotation: Cell::new(0),
            load_library,
            pubsub: Registry::default(),
        });
        cluster.refresh().await?;
        if cluster.load_library.is_some() {
            let deadline = Instant::now() + cluster.core.settings.command_timeout.max(Duration::from_secs(5));
            let masters: Vec<Rc<str>> = cluster.topology.borrow().shards.iter().map(|s| s.master.clone()).collect();
            for master in masters {
                let node = cluster.node(&master);
                cluster.load_on(&node, deadline).await.map_err(|e| {
                    RedisError::Setup(format!("loading the function library {:?}: {e}", options.library_name))
                })?;
            }
        }
        glommio::spawn_local(refresher(Rc::downgrade(&cluster), core)).detach();
        Ok(cluster)
    }

    /// `FCALL function numkeys keys.. args..` on the master of `keys[0]`'s slot (all keys share
    /// one hash tag; no keys: the first master). `Ok(Value::Error(..))` is the function's own
    /// error reply; `Err` only for the [`RedisError`] cases.
    pub async fn fcall(&self, function: &str, keys: &[&[u8]], args: &[&[u8]], kind: Kind) -> Result<Value, RedisError> {
        let started = Instant::now();
        let stats = &self.core.stats;
        bump(&stats.calls);
        let numkeys = itoa::Buffer::new().format(keys.len()).to_owned();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(3 + keys.len() + args.len());
        parts.extend([b"FCALL".as_slice(), function.as_bytes(), numkeys.as_bytes()]);
        parts.extend_from_slice(keys);
        parts.extend_from_slice(args);
        let cmd: Rc<[u8]> = resp::command(&parts).into();
        let slot = keys.first().map(|k| slots::key_slot(k));
        let class = match kind {
            Kind::Read => Class::Read,
            Kind::Write => Class::Write,
        };
        let result = self.call(cmd, slot, class, started + self.core.settings.command_timeout).await;
        stats.latency.record(started.elapsed());
        match &result {
            Ok(Value::Error(_)) => bump(&stats.function_errors),
            Ok(_) => bump(&stats.replies),
            Err(RedisError::Protocol(_)) => bump(&stats.protocol_errors),
            Err(_) => bump(&stats.unavailable),
        }
        result
    }

    /// One command routed by slot, with redirects and the retries that are safe for its class.
    async fn call(
        &self,
        cmd: Rc<[u8]>,
        slot: Option<u16>,
        class: Class,
        deadline: Instant,
    ) -> Result<Value, RedisError> {
        let stats = &self.core.stats;
        let (mut ask, mut attempt, mut loaded, mut redirects) = (None::<Rc<str>>, 0u32, false, 0u32);
        let mut last = String::from("no attempt finished");
        loop {
            if Instant::now() >= deadline {
                return Err(self.expired(&last));
            }
            let asking = ask.is_some();
            let addr = match ask.take().or_else(|| self.route(slot)) {
                Some(addr) => addr,
                None => {
                    self.core.want_refresh();
                    last = format!("no master known for slot {}", slot.unwrap_or(0));
                    attempt += 1;
                    self.pause(attempt, deadline).await;
                    continue;
                }
            };
            let node = self.node(&addr);
            let (tx, rx) = oneshot();
            node.submit(&self.core, Pending { cmd: cmd.clone(), class, asking, deadline, tx });
            let outcome = match until(deadline, rx).await {
                None => return Err(self.expired(&last)),
                Some(None) => Outcome::NotSent(format!("{addr}: the request was dropped")),
                Some(Some(outcome)) => outcome,
            };
            match outcome {
                Outcome::Reply(Value::Error(e), acked) => match refusal(&e) {
                    Refusal::Moved(moved, to) => {
                        bump(&stats.moved);
                        let to = redirect_target(to, &addr);
                        self.topology.borrow_mut().set_slot(moved, &to);
                        self.core.want_refresh();
                        redirects += 1;
                        if redirects > FREE_REDIRECTS {
                            attempt += 1;
                            self.pause(attempt, deadline).await;
                        }
                        last = format!("{addr}: {e}");
                    }
                    Refusal::Ask(to) => {
                        bump(&stats.ask);
                        ask = Some(redirect_target(to, &addr));
                        redirects += 1;
                        if redirects > FREE_REDIRECTS {
                            attempt += 1;
                            self.pause(attempt, deadline).await;
                        }
                        last = format!("{addr}: {e}");
                    }
                    Refusal::Retry { refresh } => {
                        bump(&stats.retries);
                        if refresh {
                            self.core.want_refresh();
                        }
                        last = format!("{addr}: {e}");
                        attempt += 1;
                        self.pause(attempt, deadline).await;
                    }
                    Refusal::NoLibrary if !loaded && self.load_library.is_some() => {
                        loaded = true;
                        self.load_on(&node, deadline).await?;
                    }
                    Refusal::Refused => return Err(RedisError::Unavailable(format!("{addr}: {e}; it did not run"))),
                    Refusal::NoLibrary | Refusal::Function => match acked {
                        Acked::Yes => return Ok(Value::Error(e)),
                        Acked::Short(m) => return Err(RedisError::Unavailable(m)),
                        Acked::Fence(m) => {
                            bump(&stats.retries);
                            last = m;
                            attempt += 1;
                            self.pause(attempt, deadline).await;
                        }
                    },
                },
                Outcome::Reply(value, Acked::Yes) => return Ok(value),
                Outcome::Reply(_, Acked::Short(m)) => return Err(RedisError::Unavailable(m)),
                Outcome::Reply(_, Acked::Fence(m)) | Outcome::NotSent(m) => {
                    bump(&stats.retries);
                    self.core.want_refresh();
                    last = m;
                    attempt += 1;
                    self.pause(attempt, deadline).await;
                }
                Outcome::Lost(m) if class == Class::Read => {
                    bump(&stats.retries);
                    last = m;
                    attempt += 1;
                    self.pause(attempt, deadline).await;
                }
                Outcome::Lost(m) => {
                    return Err(RedisError::Unavailable(format!("{m}; it may or may not have taken effect")));
                }
                Outcome::Protocol(m) => return Err(RedisError::Protocol(m)),
            }
        }
    }

    fn expired(&self, last: &str) -> RedisError {
        RedisError::Unavailable(format!(
            "no answer within {} ms (last: {last})",
            self.core.settings.command_timeout.as_millis()
        ))
    }

    async fn pause(&self, attempt: u32, deadline: Instant) {
        let step = RETRY_FIRST.saturating_mul(1 << attempt.saturating_sub(1).min(8)).min(RETRY_MAX);
        let left = deadline.saturating_duration_since(Instant::now());
        glommio::timer::sleep(step.min(left)).await;
    }

    fn route(&self, slot: Option<u16>) -> Option<Rc<str>> {
        let topology = self.topology.borrow();
        match slot {
            Some(slot) => topology.master_of(slot).cloned(),
            None => topology.shards.first().map(|s| s.master.clone()),
        }
    }

    pub(crate) fn socket_of(&self, addr: &str) -> Option<SocketAddr> {
        conn::parse_addr(addr).or_else(|| self.resolved.get(addr).copied())
    }

    fn node(&self, addr: &Rc<str>) -> Rc<Node> {
        if let Some(node) = self.nodes.borrow().get(addr) {
            return node.clone();
        }
        let node = Rc::new(Node {
            addr: addr.clone(),
            socket: self.socket_of(addr),
            queue: RefCell::new(VecDeque::new()),
            wake: Notify::new(),
            running: Cell::new(false),
            fence: RefCell::new(None),
            down_until: Cell::new(None),
            backoff: Cell::new(Duration::ZERO),
        });
        self.nodes.borrow_mut().insert(addr.clone(), node.clone());
        node
    }

    /// One command on one node, unrouted and unretried, its reply as it came.
    async fn raw(&self, node: &Rc<Node>, cmd: Rc<[u8]>, deadline: Instant) -> Result<Value, RedisError> {
        let (tx, rx) = oneshot();
        node.submit(&self.core, Pending { cmd, class: Class::Raw, asking: false, deadline, tx });
        self.raw_answer(&node.addr, rx, deadline).await
    }

    async fn raw_answer(
        &self,
        addr: &str,
        rx: crate::sync::Receiver<Outcome>,
        deadline: Instant,
    ) -> Result<Value, RedisError> {
        match until(deadline, rx).await {
            Some(Some(Outcome::Reply(value, _))) => Ok(value),
            Some(Some(Outcome::Protocol(m))) => Err(RedisError::Protocol(m)),
            Some(Some(Outcome::NotSent(m) | Outcome::Lost(m))) => Err(RedisError::Unavailable(m)),
            Some(None) => Err(RedisError::Unavailable(format!("{addr}: the request was dropped"))),
            None => Err(RedisError::Unavailable(format!(
                "{addr}: no answer within {} ms",
                self.core.settings.command_timeout.as_millis()
            ))),
        }
    }

    async fn load_on(&self, node: &Rc<Node>, deadline: Instant) -> Result<(), RedisError> {
        let Some(cmd) = self.load_library.clone() else { return Ok(()) };
        bump(&self.core.stats.library_loads);
        match self.raw(node, cmd, deadline).await? {
            Value::Error(e) => Err(RedisError::Unavailable(format!("FUNCTION LOAD on {}: {e}", node.addr))),
            _ => Ok(()),
        }
    }

    /// One command on every master, each answer with the master's address. Fails whole (naming
    /// the node) when one does not answer.
    pub async fn on_every_master(&self, args: &[&[u8]]) -> Result<Vec<(String, Value)>, RedisError> {
        let masters: Vec<Rc<str>> = self.topology.borrow().shards.iter().map(|s| s.master.clone()).collect();
        self.on_each(&masters, args).await
    }

    /// One command on every node, masters and replicas.
    pub async fn on_every_node(&self, args: &[&[u8]]) -> Result<Vec<(String, Value)>, RedisError> {
        let nodes = self.topology.borrow().nodes();
        self.on_each(&nodes, args).await
    }

    /// One command on the node at `addr` (any node, known or not).
    pub async fn on_node(&self, addr: &str, args: &[&[u8]]) -> Result<Value, RedisError> {
        let deadline = Instant::now() + self.core.settings.command_timeout;
        let node = self.node(&Rc::from(addr));
        self.raw(&node, resp::command(args).into(), deadline).await
    }

    async fn on_each(&self, addrs: &[Rc<str>], args: &[&[u8]]) -> Result<Vec<(String, Value)>, RedisError> {
        let deadline = Instant::now() + self.core.settings.command_timeout;
        let cmd: Rc<[u8]> = resp::command(args).into();
        // All queued before any is awaited, so the nodes answer in parallel.
        let waits: Vec<_> = addrs
            .iter()
            .map(|addr| {
                let (tx, rx) = oneshot();
                self.node(addr)
                    .submit(&self.core, Pending { cmd: cmd.clone(), class: Class::Raw, asking: false, deadline, tx });
                (addr, rx)
            })
            .collect();
        let mut answers = Vec::with_capacity(waits.len());
        for (addr, rx) in waits {
            answers.push((addr.to_string(), self.raw_answer(addr, rx, deadline).await?));
        }
        Ok(answers)
    }

    /// The masters, their replicas and slot counts, as last discovered.
    pub fn masters(&self) -> Vec<MasterInfo> {
        let topology = self.topology.borrow();
        topology
            .shards
            .iter()
            .zip(topology.slot_counts())
            .map(|(s, slots)| MasterInfo {
                addr: s.master.to_string(),
                replicas: s.replicas.iter().map(|r| r.to_string()).collect(),
                slots,
            })
            .collect()
    }

    /// The master the slot map routes `key` to now.
    pub fn master_of_key(&self, key: &[u8]) -> Option<String> {
        self.topology.borrow().master_of(slots::key_slot(key)).map(|m| m.to_string())
    }

    /// Asks the nodes for the slot map (`CLUSTER SHARDS`, or `CLUSTER SLOTS` where that is
    /// unknown; masters first, then seeds, then replicas; the first answer wins). Concurrent callers share one refresh.
    pub async fn refresh(&self) -> Result<(), RedisError> {
        if self.refreshing.get() {
            loop {
                let done = self.refreshed.notified();
                if !self.refreshing.get() {
                    return Ok(());
                }
                done.await;
            }
        }
        self.refreshing.set(true);
        let _guard = Refreshing(self);
        let limit = self.core.settings.command_timeout.min(REFRESH_NODE_TIMEOUT);
        let mut errors = Vec::new();
        for addr in self.candidates() {
            match self.fetch_slots(&addr, limit).await {
                Ok(topology) => {
                    bump(&self.core.stats.topology_refreshes);
                    self.apply(topology);
                    return Ok(());
                }
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        bump(&self.core.stats.topology_refresh_failures);
        Err(RedisError::Setup(format!("no node answered CLUSTER SLOTS: {}", errors.join("; "))))
    }

    fn candidates(&self) -> Vec<Rc<str>> {
        let topology = self.topology.borrow();
        let mut masters: Vec<Rc<str>> = topology.shards.iter().map(|s| s.master.clone()).collect();
        if !masters.is_empty() {
            // Start at a different master each time, so a stale or hung one does not always answer first.
            let turn = self.rotation.get();
            self.rotation.set(turn.wrapping_add(1));
            let len = masters.len();
            masters.rotate_left(turn % len);
        }
        let mut all = masters;
        for addr in self.seeds.iter().chain(topology.nodes().iter()) {
            if !all.contains(addr) {
                all.push(addr.clone());
            }
        }
        all
    }

    async fn fetch_slots(&self, addr: &str, limit: Duration) -> Result<Topology, String> {
        let socket = self.socket_of(addr).ok_or("not an IP address and port")?;
        let host = slots::host_of(addr);
        let exchange = async {
            let mut c = Conn::open(socket, limit).await.map_err(|e| e.to_string())?;
            // CLUSTER SHARDS (7.0+) lists every replica; CLUSTER SLOTS leaves out those that have
            // not replicated anything yet, but is all that older servers know.
            match c.call(&[b"CLUSTER", b"SHARDS"]).await.map_err(|e| e.to_string())? {
                Value::Error(e) if e.contains("nknown") => {
                    let reply = c.call(&[b"CLUSTER", b"SLOTS"]).await.map_err(|e| e.to_string())?;
                    Topology::from_cluster_slots(&reply, host)
                }
                reply => Topology::from_cluster_shards(&reply, host),
            }
        };
        within(limit, exchange).await.ok_or_else(|| format!("no answer within {} ms", limit.as_millis()))?
    }

    fn apply(&self, topology: Topology) {
        let fences: Vec<(Rc<str>, Option<Encoded>)> = topology
            .shards
            .iter()
            .zip(topology.first_slots())
            .map(|(s, first)| {
                let fence = first.map(|slot| Rc::from(resp::command(&[b"INCR", &slots::fence_key(slot)])));
                (s.master.clone(), fence)
            })
            .collect();
        {
            // A master not in the last map took slots over: a failover (or new capacity) seen.
            let before = self.topology.borrow();
            if !before.shards.is_empty() {
                let new = topology.shards.iter().filter(|s| before.shards.iter().all(|b| b.master != s.master)).count();
                let seen = &self.core.stats.masters_changed;
                seen.set(seen.get() + new as u64);
            }
        }
        *self.topology.borrow_mut() = topology;
        for node in self.nodes.borrow().values() {
            node.fence.replace(None);
        }
        for (master, fence) in fences {
            self.node(&master).fence.replace(fence);
        }
        if let Some(me) = self.me.upgrade() {
            self.pubsub.place_all(&me);
        }
    }

    /// The client's counters.
    pub fn stats(&self) -> ClusterStats {
        let s = &self.core.stats;
        ClusterStats {
            calls: s.calls.get(),
            replies: s.replies.get(),
            function_errors: s.function_errors.get(),
            unavailable: s.unavailable.get(),
            protocol_errors: s.protocol_errors.get(),
            batches: s.batches.get(),
            batched_commands: s.batched_commands.get(),
            wait_ok: s.wait_ok.get(),
            wait_short: s.wait_short.get(),
            wait_timeout: s.wait_timeout.get(),
            moved: s.moved.get(),
            ask: s.ask.get(),
            retries: s.retries.get(),
            library_loads: s.library_loads.get(),
            topology_refreshes: s.topology_refreshes.get(),
            topology_refresh_failures: s.topology_refresh_failures.get(),
            masters_changed: s.masters_changed.get(),
            connects: s.connects.get(),
            connect_failures: s.connect_failures.get(),
            connections_lost: s.connections_lost.get(),
            pubsub_messages: s.pubsub_messages.get(),
            subscriptions: self.pubsub.channels() as u64,
            latency: s.latency.snapshot(),
        }
    }
}

/// Ends a refresh even when its future is dropped half-way.
struct Refreshing<'a>(&'a Cluster);

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.0.refreshing.set(false);
        self.0.core.last_refresh.set(Some(Instant::now()));
        self.0.refreshed.notify_all();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.core.closed.set(true);
        self.core.refresh_wake.notify_all();
        for node in self.nodes.borrow().values() {
            node.wake.notify_all();
        }
        self.pubsub.close();
    }
}

/// Runs the refreshes the flushers and calls ask for, no more often than MIN_REFRESH_INTERVAL.
async fn refresher(cluster: Weak<Cluster>, core: Rc<Core>) {
    loop {
        let wake = core.refresh_wake.notified();
        if core.closed.get() {
            return;
        }
        if !core.refresh_wanted.get() {
            wake.await;
            continue;
        }
        if let Some(last) = core.last_refresh.get() {
            let since = last.elapsed();
            if since < MIN_REFRESH_INTERVAL {
                glommio::timer::sleep(MIN_REFRESH_INTERVAL - since).await;
            }
        }
        core.refresh_wanted.set(false);
        let Some(cluster) = cluster.upgrade() else { return };
        // A failure is counted; the next failure of a call asks again.
        let _ = cluster.refresh().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_read_by_their_first_word() {
        assert_eq!(refusal("MOVED 3999 127.0.0.1:6381"), Refusal::Moved(3999, "127.0.0.1:6381"));
        assert_eq!(refusal("ASK 3999 127.0.0.1:6381"), Refusal::Ask("127.0.0.1:6381"));
        assert_eq!(
            refusal("TRYAGAIN Multiple keys request during rehashing of slot"),
            Refusal::Retry { refresh: false }
        );
        assert_eq!(refusal("CLUSTERDOWN The cluster is down"), Refusal::Retry { refresh: true });
        assert_eq!(refusal("LOADING Redis is loading the dataset in memory"), Refusal::Retry { refresh: false });
        assert_eq!(refusal("ERR Function not found"), Refusal::NoLibrary);
        assert_eq!(refusal("NOSCRIPT No matching script"), Refusal::NoLibrary);
        assert_eq!(refusal("NOREPLICAS Not enough good replicas to write."), Refusal::Refused);
        assert_eq!(refusal("ERR Error running script"), Refusal::Function);
        assert_eq!(refusal("NOTFOUND message"), Refusal::Function);
        assert_eq!(refusal("BUSYKEY Target key name already exists."), Refusal::Function);
        assert_eq!(refusal("MOVED x"), Refusal::Function);
        assert_eq!(refusal(""), Refusal::Function);
    }

    #[test]
    fn redirects_without_a_host_keep_the_answering_one() {
        assert_eq!(&*redirect_target(":7002", "127.0.0.1:7000"), "127.0.0.1:7002");
        assert_eq!(&*redirect_target(":7002", "[::1]:7000"), "[::1]:7002");
        assert_eq!(&*redirect_target("10.0.0.2:7002", "127.0.0.1:7000"), "10.0.0.2:7002");
    }

    fn settings(waitaof: bool) -> Settings {
        Settings {
            ack_replicas: 1,
            ack_timeout: Duration::from_millis(50),
            read_fence: true,
            command_timeout: Duration::from_millis(100),
            max_batch: 8,
            wait: None,
            waitaof,
        }
    }

    #[test]
    fn wait_answers_are_judged_by_the_count() {
        let stats = Counters::default();
        assert!(matches!(judge_wait(&Value::Int(1), &settings(false), "a", &stats), Acked::Yes));
        assert!(matches!(judge_wait(&Value::Int(0), &settings(false), "a", &stats), Acked::Short(_)));
        assert!(matches!(judge_wait(&Value::Error("ERR x".into()), &settings(false), "a", &stats), Acked::Short(_)));
        let aof = |l, r| Value::Array(vec![Value::Int(l), Value::Int(r)]);
        assert!(matches!(judge_wait(&aof(1, 1), &settings(true), "a", &stats), Acked::Yes));
        assert!(matches!(judge_wait(&aof(0, 1), &settings(true), "a", &stats), Acked::Short(_)));
        assert!(matches!(judge_wait(&aof(1, 0), &settings(true), "a", &stats), Acked::Short(_)));
        assert!(matches!(judge_wait(&aof(1, 1), &settings(false), "a", &stats), Acked::Short(_)));
        assert_eq!((stats.wait_ok.get(), stats.wait_short.get()), (2, 5));
        match judge_wait(&Value::Int(0), &settings(false), "h:1", &stats) {
            Acked::Short(m) => assert!(m.contains("may or may not have taken effect") && m.contains("h:1"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
