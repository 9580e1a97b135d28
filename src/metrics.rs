//! Per-shard counters and the Prometheus text of `GET /metrics`.
//!
//! # Recording
//! Each shard records into its own [`ShardMetrics`]: plain `Cell`s, no atomics or locks, and no
//! allocation per request (routes, methods and statuses index fixed arrays). It lives in a
//! `thread_local!` with a `const` initializer because a shard *is* a thread (one pinned glommio
//! executor each): the thread-local is exactly per shard and costs one TLS offset to reach. The
//! connection and request layers (server, API, shard) record into it; the engine and the store
//! never do: they report their figures as values (the store's `StoreStats`) that the shard copies
//! into a [`Snapshot`] when asked.
//!
//! This module sits at the bottom of the dependency order: it defines the label vocabularies
//! ([`RouteKind`], [`Method`], [`PollEnd`]) that the layers above map their own types to.
//!
//! # Reading
//! `GET /metrics` asks every shard for a [`Snapshot`] (a copy of its counters plus its engine's
//! and store's figures), and [`render`] merges them into one text exposition: every family per
//! shard (`shard="N"`) and in total (`shard="all"`: leave it out when summing yourself).

use std::cell::Cell;
use std::fmt::Write as _;
use std::time::Duration;

use crate::limits::{Limit, LIMITS};

/// Histogram bucket upper bounds in microseconds (the `le` labels, in seconds). Fixed so that
/// recording is a short scan and shards merge bucket by bucket. They span a ping on loopback to
/// the longest long poll.
pub const BUCKETS_US: [u64; 15] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 5_000_000,
    25_000_000,
];
const SLOTS: usize = BUCKETS_US.len() + 1;

/// Largest shard count a snapshot tracks mesh traffic for (the `shards` knob's maximum).
pub const MAX_SHARDS: usize = 1024;

/// What a request was for, as a small index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RouteKind {
    Versions,
    Home,
    Ping,
    Health,
    Metrics,
    Queues,
    Queue,
    QueueStats,
    QueuePurge,
    QueueShare,
    Messages,
    Message,
    Claims,
    Claim,
    Subscriptions,
    OutOfScope,
    Token,
    /// `/v2/projects/{id}/limits`.
    ProjectLimits,
    /// No route: 404, 405, or an error before routing.
    Unmatched,
}

const ROUTES: usize = 19;
pub const ROUTE_NAMES: [&str; ROUTES] = [
    "versions",
    "home",
    "ping",
    "health",
    "metrics",
    "queues",
    "queue",
    "queue_stats",
    "queue_purge",
    "queue_share",
    "messages",
    "message",
    "claims",
    "claim",
    "subscriptions",
    "out_of_scope",
    "token",
    "project_limits",
    "unmatched",
];

const METHODS: usize = 8;
pub const METHOD_NAMES: [&str; METHODS] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER"];

/// The request methods the server routes on, defined here, at the bottom, so that the HTTP
/// parser produces them and the request counters index by them with one definition; anything
/// else is [`Method::Other`] (the parser keeps the name it was sent with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Method {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Other,
}

impl Method {
    /// The method's name, for messages, `Allow` lists and metrics labels.
    pub fn as_str(self) -> &'static str {
        METHOD_NAMES.get(self as usize).copied().unwrap_or("OTHER")
    }
}

/// Every status this server sends has a slot; anything else shares the last one (`other`).
const STATUS_CODES: [u16; 19] =
    [200, 201, 204, 300, 400, 401, 403, 404, 405, 406, 408, 409, 413, 415, 429, 431, 500, 501, 503];
const STATUSES: usize = STATUS_CODES.len() + 1;

fn status_index(status: u16) -> usize {
    STATUS_CODES.iter().position(|&s| s == status).unwrap_or(STATUS_CODES.len())
}

fn status_name(index: usize) -> String {
    STATUS_CODES.get(index).map_or_else(|| "other".to_owned(), u16::to_string)
}

/// Why a long poll (`wait=`) ended: the evidence tests and operators read instead of timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PollEnd {
    /// The first look found something: it never parked.
    Immediate,
    /// A post or a released claim woke it and it found messages.
    Woken,
    /// The queue's next scheduled change (a delay ending, a claim expiring) woke it.
    Scheduled,
    /// Its `wait` ran out: the normal empty answer.
    Timeout,
    /// The server began to stop: released with the empty answer.
    Shutdown,
    /// The client (or the shard that asked) went away first.
    Cancelled,
}

/// Why a request was refused by authentication or authorization
/// (`marconi_auth_failures_total{reason=…}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AuthFailure {
    /// No credential at all.
    Missing,
    /// A credential that does not verify (bad signature, unknown key, malformed, unknown to
    /// Keystone).
    Invalid,
    Expired,
    Revoked,
    /// Valid, but not allowed to do this (project, queue or operation).
    Forbidden,
    /// Keystone could not be asked: 503, never a pass.
    KeystoneDown,
}

const AUTH_FAILURES: usize = 6;
pub const AUTH_FAILURE_NAMES: [&str; AUTH_FAILURES] =
    ["missing", "invalid", "expired", "revoked", "forbidden", "keystone_down"];

const POLL_ENDS: usize = 6;

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusal {
    /// The shard holds `http.max_connections_per_shard`.
    Shard,
    /// Its address holds `http.max_connections_per_address` on the shard.
    Address,
    /// The shard accepted `http.max_new_connections_per_second` this second (a reconnect storm).
    Rate,
}

const REFUSALS: usize = 3;
const REFUSAL_NAMES: [&str; REFUSALS] = ["shard", "address", "rate"];
pub const POLL_END_NAMES: [&str; POLL_ENDS] = ["immediate", "woken", "scheduled", "timeout", "shutdown", "cancelled"];

const REQUEST_CELLS: usize = ROUTES * METHODS * STATUSES;

/// A latency histogram with the fixed [`BUCKETS_US`].
pub struct Histogram {
    buckets: [Cell<u64>; SLOTS],
    sum_us: Cell<u64>,
}

impl Histogram {
    pub const fn new() -> Self {
        Histogram { buckets: [const { Cell::new(0) }; SLOTS], sum_us: Cell::new(0) }
    }

    pub fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let slot = BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(BUCKETS_US.len());
        if let Some(cell) = self.buckets.get(slot) {
            cell.set(cell.get() + 1);
        }
        self.sum_us.set(self.sum_us.get().saturating_add(us));
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot { buckets: self.buckets.each_ref().map(Cell::get), sum_us: self.sum_us.get() }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// The counters of one shard.
pub struct ShardMetrics {
    requests: [Cell<u64>; REQUEST_CELLS],
    latency: [Histogram; ROUTES],
    pub connections_accepted: Cell<u64>,
    pub connections_open: Cell<u64>,
    /// Connections closed at once at accept, by [`Refusal`].
    connections_refused: [Cell<u64>; REFUSALS],
    /// Requests this shard forwarded to the owner of their queue on another shard.
    pub mesh_hops: Cell<u64>,
    /// TLS handshakes completed, and failed or timed out.
    pub tls_handshakes: Cell<u64>,
    pub tls_handshakes_failed: Cell<u64>,
    /// Envelopes sent to / read from each peer; depth of a channel = sent by one − read by other.
    mesh_sent: [Cell<u64>; MAX_SHARDS],
    mesh_received: [Cell<u64>; MAX_SHARDS],
    long_polls: [Cell<u64>; POLL_ENDS],
    /// Long polls parked on this shard right now (its own and other shards').
    pub long_polls_parked: Cell<u64>,
    auth_failures: [Cell<u64>; AUTH_FAILURES],
    /// Credentials found in (or missing from) the shard's cache of validated credentials.
    pub auth_cache_hits: Cell<u64>,
    pub auth_cache_misses: Cell<u64>,
    /// Calls this shard made to Keystone (validations and service logins).
    pub keystone_calls: Cell<u64>,
    /// Connection buffers of the shard's pool (http/pool.rs): handed out now, kept free now, and
    /// made since start.
    pub http_buffers_in_use: Cell<u64>,
    pub http_buffers_free: Cell<u64>,
    pub http_buffers_made: Cell<u64>,
    /// Requests refused by a quota (403) or a rate limit (429), by [`Limit`].
    limit_refusals: [Cell<u64>; LIMITS],
}

impl ShardMetrics {
    pub const fn new() -> Self {
        ShardMetrics {
            requests: [const { Cell::new(0) }; REQUEST_CELLS],
            latency: [const { Histogram::new() }; ROUTES],
            connections_accepted: Cell::new(0),
            connections_open: Cell::new(0),
            connections_refused: [const { Cell::new(0) }; REFUSALS],
            mesh_hops: Cell::new(0),
            tls_handshakes: Cell::new(0),
            tls_handshakes_failed: Cell::new(0),
            mesh_sent: [const { Cell::new(0) }; MAX_SHARDS],
            mesh_received: [const { Cell::new(0) }; MAX_SHARDS],
            long_polls: [const { Cell::new(0) }; POLL_ENDS],
            long_polls_parked: Cell::new(0),
            auth_failures: [const { Cell::new(0) }; AUTH_FAILURES],
            auth_cache_hits: Cell::new(0),
            auth_cache_misses: Cell::new(0),
            keystone_calls: Cell::new(0),
            http_buffers_in_use: Cell::new(0),
            http_buffers_free: Cell::new(0),
            http_buffers_made: Cell::new(0),
            limit_refusals: [const { Cell::new(0) }; LIMITS],
        }
    }

    pub fn auth_failed(&self, why: AuthFailure) {
        if let Some(c) = self.auth_failures.get(why as usize) {
            c.set(c.get() + 1);
        }
    }

    pub fn limit_refused(&self, limit: Limit) {
        if let Some(c) = self.limit_refusals.get(limit as usize) {
            c.set(c.get() + 1);
        }
    }

    pub fn connection_refused(&self, why: Refusal) {
        if let Some(c) = self.connections_refused.get(why as usize) {
            c.set(c.get() + 1);
        }
    }

    pub fn long_poll_ended(&self, how: PollEnd) {
        if let Some(c) = self.long_polls.get(how as usize) {
            c.set(c.get() + 1);
        }
    }

    /// One answered request.
    pub fn record_request(&self, route: RouteKind, method: Method, status: u16, elapsed: Duration) {
        let r = route as usize;
        let index = (r * METHODS + method as usize) * STATUSES + status_index(status);
        if let Some(cell) = self.requests.get(index) {
            cell.set(cell.get() + 1);
        }
        if let Some(h) = self.latency.get(r) {
            h.record(elapsed);
        }
    }

    pub fn mesh_sent(&self, peer: usize) {
        if let Some(c) = self.mesh_sent.get(peer) {
            c.set(c.get() + 1);
        }
    }

    pub fn mesh_received(&self, peer: usize) {
        if let Some(c) = self.mesh_received.get(peer) {
            c.set(c.get() + 1);
        }
    }

    /// A copy of the counters, with the engine's and mesh's gauges left at 0 for the shard to fill.
    pub fn snapshot(&self, shards: usize) -> Snapshot {
        let peers = shards.min(MAX_SHARDS);
        Snapshot {
            requests: self.requests.iter().map(Cell::get).collect(),
            latency: self.latency.iter().map(Histogram::snapshot).collect(),
            connections_accepted: self.connections_accepted.get(),
            connections_open: self.connections_open.get(),
            connections_refused: self.connections_refused.each_ref().map(Cell::get),
            mesh_hops: self.mesh_hops.get(),
            tls_handshakes: self.tls_handshakes.get(),
            tls_handshakes_failed: self.tls_handshakes_failed.get(),
            mesh_sent: self.mesh_sent.iter().take(peers).map(Cell::get).collect(),
            mesh_received: self.mesh_received.iter().take(peers).map(Cell::get).collect(),
            long_polls: self.long_polls.each_ref().map(Cell::get),
            long_polls_parked: self.long_polls_parked.get(),
            auth_failures: self.auth_failures.each_ref().map(Cell::get),
            auth_cache_hits: self.auth_cache_hits.get(),
            auth_cache_misses: self.auth_cache_misses.get(),
            keystone_calls: self.keystone_calls.get(),
            http_buffers_in_use: self.http_buffers_in_use.get(),
            http_buffers_free: self.http_buffers_free.get(),
            http_buffers_made: self.http_buffers_made.get(),
            limit_refusals: self.limit_refusals.each_ref().map(Cell::get),
            ..Snapshot::default()
        }
    }
}

impl Default for ShardMetrics {
    fn default() -> Self {
        Self::new()
    }
}

thread_local! {
    static SHARD: ShardMetrics = const { ShardMetrics::new() };
}

/// Runs `f` with this thread's (this shard's) counters.
pub fn with<R>(f: impl FnOnce(&ShardMetrics) -> R) -> R {
    SHARD.with(f)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub buckets: [u64; SLOTS],
    pub sum_us: u64,
}

impl HistogramSnapshot {
    fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
    fn merge(&mut self, other: &HistogramSnapshot) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum_us += other.sum_us;
    }
}

/// One shard's counters at one moment: plain data that crosses the mesh.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub shard: usize,
    requests: Vec<u64>,
    latency: Vec<HistogramSnapshot>,
    pub connections_accepted: u64,
    pub connections_open: u64,
    pub connections_refused: [u64; REFUSALS],
    pub mesh_hops: u64,
    pub tls_handshakes: u64,
    pub tls_handshakes_failed: u64,
    mesh_sent: Vec<u64>,
    mesh_received: Vec<u64>,
    /// Replies this shard awaits from its peers.
    pub mesh_pending_replies: u64,
    /// Long polls of other shards parked here.
    pub mesh_parked: u64,
    pub queues: u64,
    pub messages: u64,
    pub claims: u64,
    pub body_bytes: u64,
    pub flushes: u64,
    pub flush_latency: HistogramSnapshot,
    pub segments: u64,
    pub disk_bytes: u64,
    pub recovery_ms: u64,
    /// Records the store replayed at start-up (0 on a fresh data directory).
    pub recovered_records: u64,
    pub long_polls: [u64; POLL_ENDS],
    pub long_polls_parked: u64,
    pub http_buffers_in_use: u64,
    pub http_buffers_free: u64,
    pub http_buffers_made: u64,
    pub limit_refusals: [u64; LIMITS],
    pub waiters: Waiters,
    pub auth_failures: [u64; AUTH_FAILURES],
    pub auth_cache_hits: u64,
    pub auth_cache_misses: u64,
    pub keystone_calls: u64,
    /// Revoked token subjects this shard checks against.
    pub revocations: u64,
    /// The Redis Cluster client's counters, on the `redis-cluster` backend.
    pub redis: Option<RedisStats>,
}

/// The Redis Cluster client's counters since it connected (`redis::Cluster::stats`), on the
/// `redis-cluster` backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// `fcall`s made.
    pub calls: u64,
    /// Calls answered `Ok` with a value that is not an error.
    pub replies: u64,
    /// Calls answered `Ok(Value::Error)`: the function's own error.
    pub function_errors: u64,
    pub unavailable: u64,
    pub protocol_errors: u64,
    /// Pipeline rounds sent, and the commands they carried (fences and WAITs not counted).
    pub batches: u64,
    pub batched_commands: u64,
    /// WAIT/WAITAOF answers: enough replicas, too few (or an error reply), none in time.
    pub wait_ok: u64,
    pub wait_short: u64,
    pub wait_timeout: u64,
    pub moved: u64,
    pub ask: u64,
    /// Retries after TRYAGAIN, CLUSTERDOWN, LOADING, a lost fence, or a node not reachable.
    pub retries: u64,
    pub library_loads: u64,
    pub topology_refreshes: u64,
    pub topology_refresh_failures: u64,
    /// Masters that appeared in a new slot map: failovers (or added masters) this client saw.
    pub masters_changed: u64,
    pub connects: u64,
    pub connect_failures: u64,
    /// Connections dropped after an I/O error, a timeout or a protocol error.
    pub connections_lost: u64,
    pub pubsub_messages: u64,
    /// Channels subscribed now.
    pub subscriptions: u64,
    /// Time of each `fcall`, retries included.
    pub latency: HistogramSnapshot,
}

/// Tasks pending on the shard's notifiers, and the per-queue notifiers it holds. All 0 on an idle
/// shard: a wait that ended leaves nothing behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waiters {
    /// On the shard's stop and drain signals.
    pub stop: u64,
    /// On the per-queue notifiers of parked long polls.
    pub queues: u64,
    /// Per-queue notifiers held (one per queue with a parked poll).
    pub queue_notifiers: u64,
    /// On the durable log's flush, room and maintenance signals.
    pub log: u64,
}

impl Snapshot {
    /// Requests counted for (route, method, status), for tests and tools.
    pub fn requests(&self, route: RouteKind, method: Method, status: u16) -> u64 {
        let index = (route as usize * METHODS + method as usize) * STATUSES + status_index(status);
        self.requests.get(index).copied().unwrap_or(0)
    }
}

/// The Prometheus text exposition (format 0.0.4) of every shard's snapshot, in shard order.
pub fn render(shards: &[Snapshot]) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let total = |f: &dyn Fn(&Snapshot) -> u64| shards.iter().map(f).sum::<u64>();
    family(&mut out, "marconi_shards", "gauge", "Shards (pinned executors) of this server.");
    let _ = writeln!(out, "marconi_shards {}", shards.len());

    family(
        &mut out,
        "marconi_http_requests_total",
        "counter",
        "Requests answered by the API, by route, method and status.",
    );
    let cells = ROUTES * METHODS * STATUSES;
    let mut all = vec![0u64; cells];
    for s in shards {
        for (i, &n) in s.requests.iter().enumerate().filter(|(_, &n)| n > 0) {
            if let Some(a) = all.get_mut(i) {
                *a += n;
            }
            request_line(&mut out, &s.shard.to_string(), i, n);
        }
    }
    for (i, &n) in all.iter().enumerate().filter(|(_, &n)| n > 0) {
        request_line(&mut out, "all", i, n);
    }

    family(
        &mut out,
        "marconi_http_request_duration_seconds",
        "histogram",
        "Time from a complete request to its response, by route (long polls included).",
    );
    let mut merged = [HistogramSnapshot::default(); ROUTES];
    for s in shards {
        for (route, h) in s.latency.iter().enumerate() {
            if let Some(m) = merged.get_mut(route) {
                m.merge(h);
            }
            if h.count() > 0 {
                let labels = format!("shard=\"{}\",route=\"{}\"", s.shard, ROUTE_NAMES.get(route).unwrap_or(&"?"));
                histogram(&mut out, "marconi_http_request_duration_seconds", &labels, h);
            }
        }
    }
    for (route, h) in merged.iter().enumerate().filter(|(_, h)| h.count() > 0) {
        let labels = format!("shard=\"all\",route=\"{}\"", ROUTE_NAMES.get(route).unwrap_or(&"?"));
        histogram(&mut out, "marconi_http_request_duration_seconds", &labels, h);
    }

    let simple: &[Row] = &[
        ("marconi_connections_open", "gauge", "Open client connections.", |s| s.connections_open),
        ("marconi_connections_accepted_total", "counter", "Client connections accepted.", |s| s.connections_accepted),
        ("marconi_tls_handshakes_total", "counter", "TLS handshakes completed.", |s| s.tls_handshakes),
        ("marconi_tls_handshake_failures_total", "counter", "TLS handshakes that failed or timed out.", |s| {
            s.tls_handshakes_failed
        }),
        ("marconi_queues", "gauge", "Queues stored.", |s| s.queues),
        ("marconi_messages", "gauge", "Messages stored (expired ones until the sweep collects them).", |s| s.messages),
        ("marconi_message_bytes", "gauge", "Bytes of message bodies stored.", |s| s.body_bytes),
        ("marconi_claims", "gauge", "Claims held (expired ones until the sweep collects them).", |s| s.claims),
        (
            "marconi_mesh_hops_total",
            "counter",
            "Requests forwarded over the mesh to the shard that owns their queue.",
            |s| s.mesh_hops,
        ),
        ("marconi_mesh_pending_replies", "gauge", "Replies this shard awaits from other shards.", |s| {
            s.mesh_pending_replies
        }),
        ("marconi_mesh_parked_long_polls", "gauge", "Long polls of other shards parked on this shard.", |s| {
            s.mesh_parked
        }),
        ("marconi_long_polls_parked", "gauge", "Long polls parked on this shard now.", |s| s.long_polls_parked),
        ("marconi_http_buffers_in_use", "gauge", "Connection buffers held by requests in progress.", |s| {
            s.http_buffers_in_use
        }),
        ("marconi_http_buffers_free", "gauge", "Connection buffers kept free in the shards' pools.", |s| {
            s.http_buffers_free
        }),
        ("marconi_http_buffers_made_total", "counter", "Connection buffers allocated for the pools.", |s| {
            s.http_buffers_made
        }),
        ("marconi_storage_flushes_total", "counter", "Store flushes (write-back and sync).", |s| s.flushes),
        ("marconi_storage_segments", "gauge", "Segment files of the store.", |s| s.segments),
        ("marconi_storage_disk_bytes", "gauge", "Bytes the store holds on disk.", |s| s.disk_bytes),
        ("marconi_storage_recovered_records", "gauge", "Log records the store replayed at start-up.", |s| {
            s.recovered_records
        }),
        (
            "marconi_auth_cache_hits_total",
            "counter",
            "Credentials found in the shard's cache of validated ones (no verification or Keystone call).",
            |s| s.auth_cache_hits,
        ),
        ("marconi_auth_cache_misses_total", "counter", "Credentials not in the cache, verified or validated.", |s| {
            s.auth_cache_misses
        }),
        (
            "marconi_auth_keystone_calls_total",
            "counter",
            "Calls made to Keystone (validations, service logins).",
            |s| s.keystone_calls,
        ),
        ("marconi_auth_revocations", "gauge", "Revoked token ids and names in force.", |s| s.revocations),
    ];
    per_shard(&mut out, shards, simple);
    family(
        &mut out,
        "marconi_connections_refused_total",
        "counter",
        "Connections closed at accept: the shard's cap, the address's cap, or the accept rate.",
    );
    for (i, reason) in REFUSAL_NAMES.iter().enumerate() {
        let n = |s: &Snapshot| s.connections_refused.get(i).copied().unwrap_or(0);
        for s in shards {
            let _ = writeln!(
                out,
                "marconi_connections_refused_total{{shard=\"{}\",reason=\"{reason}\"}} {}",
                s.shard,
                n(s)
            );
        }
        let _ = writeln!(out, "marconi_connections_refused_total{{shard=\"all\",reason=\"{reason}\"}} {}", total(&n));
    }
    family(
        &mut out,
        "marconi_limit_refusals_total",
        "counter",
        "Requests refused by a quota (403 quota_exceeded) or a rate limit (429), by limit.",
    );
    for limit in Limit::ALL {
        let n = |s: &Snapshot| s.limit_refusals.get(limit as usize).copied().unwrap_or(0);
        let name = limit.name();
        for s in shards {
            let _ = writeln!(out, "marconi_limit_refusals_total{{shard=\"{}\",limit=\"{name}\"}} {}", s.shard, n(s));
        }
        let _ = writeln!(out, "marconi_limit_refusals_total{{shard=\"all\",limit=\"{name}\"}} {}", total(&n));
    }
    family(&mut out, "marconi_long_polls_total", "counter", "Long polls (wait=) by how they ended.");
    by_label(&mut out, shards, "marconi_long_polls_total", "ended", &POLL_END_NAMES, |s, i| s.long_polls.get(i));
    family(
        &mut out,
        "marconi_auth_failures_total",
        "counter",
        "Requests refused by authentication (401, 503) or authorization (403), by reason.",
    );
    by_label(&mut out, shards, "marconi_auth_failures_total", "reason", &AUTH_FAILURE_NAMES, |s, i| {
        s.auth_failures.get(i)
    });
    family(&mut out, "marconi_waiters", "gauge", "Tasks waiting on a shard's notifiers, by notifier.");
    let kinds: [(&str, Get); 4] = [
        ("stop", |s| s.waiters.stop),
        ("queue", |s| s.waiters.queues),
        ("queue_notifiers", |s| s.waiters.queue_notifiers),
        ("log", |s| s.waiters.log),
    ];
    for (kind, get) in kinds {
        for s in shards {
            let _ = writeln!(out, "marconi_waiters{{shard=\"{}\",on=\"{kind}\"}} {}", s.shard, get(s));
        }
        let _ = writeln!(out, "marconi_waiters{{shard=\"all\",on=\"{kind}\"}} {}", total(&get));
    }
    render_redis(&mut out, shards);
    // Shards recover side by side, so the server was ready after the slowest one.
    let name = "marconi_storage_recovery_seconds";
    family(&mut out, name, "gauge", "Time the store took to recover at start-up (all: the slowest shard).");
    for s in shards {
        let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, seconds(s.recovery_ms * 1000));
    }
    let slowest = shards.iter().map(|s| s.recovery_ms).max().unwrap_or(0);
    let _ = writeln!(out, "{name}{{shard=\"all\"}} {}", seconds(slowest * 1000));

    family(
        &mut out,
        "marconi_mesh_depth",
        "gauge",
        "Envelopes sent by shard to peer that the peer has not read yet (shard-to-shard channel depth).",
    );
    let mut depth_total = 0u64;
    for s in shards {
        for peer in shards.iter().filter(|p| p.shard != s.shard) {
            let sent = s.mesh_sent.get(peer.shard).copied().unwrap_or(0);
            let read = peer.mesh_received.get(s.shard).copied().unwrap_or(0);
            let depth = sent.saturating_sub(read);
            depth_total += depth;
            let _ = writeln!(out, "marconi_mesh_depth{{shard=\"{}\",peer=\"{}\"}} {depth}", s.shard, peer.shard);
        }
    }
    let _ = writeln!(out, "marconi_mesh_depth{{shard=\"all\",peer=\"all\"}} {depth_total}");

    family(&mut out, "marconi_storage_flush_duration_seconds", "histogram", "Time one store flush took.");
    let mut flushes = HistogramSnapshot::default();
    for s in shards {
        flushes.merge(&s.flush_latency);
        histogram(
            &mut out,
            "marconi_storage_flush_duration_seconds",
            &format!("shard=\"{}\"", s.shard),
            &s.flush_latency,
        );
    }
    histogram(&mut out, "marconi_storage_flush_duration_seconds", "shard=\"all\"", &flushes);
    out
}

/// One sample per shard and in total for each value of `label`; `get(snapshot, i)` is the count of
/// the `i`-th of `names`.
fn by_label(
    out: &mut String,
    shards: &[Snapshot],
    name: &str,
    label: &str,
    names: &[&str],
    get: impl Fn(&Snapshot, usize) -> Option<&u64>,
) {
    for (i, value) in names.iter().enumerate() {
        let n = |s: &Snapshot| get(s, i).copied().unwrap_or(0);
        for s in shards {
            let _ = writeln!(out, "{name}{{shard=\"{}\",{label}=\"{value}\"}} {}", s.shard, n(s));
        }
        let _ = writeln!(out, "{name}{{shard=\"all\",{label}=\"{value}\"}} {}", shards.iter().map(n).sum::<u64>());
    }
}

/// The Redis Cluster client's figures, on the `redis-cluster` backend only.
fn render_redis(out: &mut String, shards: &[Snapshot]) {
    // On that backend every shard has a client; elsewhere none has.
    if shards.iter().all(|s| s.redis.is_none()) {
        return;
    }
    let rows: &[Row] = &[
        ("marconi_redis_calls_total", "counter", "Function calls made to the Redis Cluster.", |s| redis(s).calls),
        (
            "marconi_redis_unavailable_total",
            "counter",
            "Calls answered 503: outcome unknown or not acknowledged.",
            |s| redis(s).unavailable,
        ),
        ("marconi_redis_function_errors_total", "counter", "Calls the library refused (a 4xx to the client).", |s| {
            redis(s).function_errors
        }),
        ("marconi_redis_protocol_errors_total", "counter", "Replies that broke the protocol or a bound.", |s| {
            redis(s).protocol_errors
        }),
        ("marconi_redis_batches_total", "counter", "Pipeline rounds sent to masters (one WAIT each at most).", |s| {
            redis(s).batches
        }),
        (
            "marconi_redis_batched_calls_total",
            "counter",
            "Calls those rounds carried: divided by rounds, the batch size.",
            |s| redis(s).batched_commands,
        ),
        ("marconi_redis_moved_total", "counter", "MOVED redirects followed (slots that moved).", |s| redis(s).moved),
        ("marconi_redis_ask_total", "counter", "ASK redirects followed (slots being migrated).", |s| redis(s).ask),
        ("marconi_redis_retries_total", "counter", "Calls retried because Redis said they did not run.", |s| {
            redis(s).retries
        }),
        ("marconi_redis_masters_changed_total", "counter", "Masters that took slots over: failovers seen.", |s| {
            redis(s).masters_changed
        }),
        ("marconi_redis_topology_refreshes_total", "counter", "Slot maps fetched from the cluster.", |s| {
            redis(s).topology_refreshes
        }),
        ("marconi_redis_connections_lost_total", "counter", "Connections to nodes dropped after an error.", |s| {
            redis(s).connections_lost
        }),
        ("marconi_redis_library_loads_total", "counter", "Times the function library was loaded onto a master.", |s| {
            redis(s).library_loads
        }),
        ("marconi_redis_subscriptions", "gauge", "Queue wake-up channels subscribed for parked long polls.", |s| {
            redis(s).subscriptions
        }),
        ("marconi_redis_wakeups_total", "counter", "Wake-up messages received by pub/sub.", |s| {
            redis(s).pubsub_messages
        }),
    ];
    per_shard(out, shards, rows);
    let name = "marconi_redis_waits_total";
    family(out, name, "counter", "Group WAITs (or WAITAOF) by outcome: ok, short (too few replicas), timeout.");
    by_label(out, shards, name, "outcome", &["ok", "short", "timeout"], |s, i| {
        let r = s.redis.as_ref()?;
        [&r.wait_ok, &r.wait_short, &r.wait_timeout].get(i).copied()
    });
    let name = "marconi_redis_call_duration_seconds";
    family(out, name, "histogram", "Time of each call to the Redis Cluster, its WAIT and retries included.");
    let mut merged = HistogramSnapshot::default();
    for s in shards {
        merged.merge(&redis(s).latency);
        histogram(out, name, &format!("shard=\"{}\"", s.shard), &redis(s).latency);
    }
    histogram(out, name, "shard=\"all\"", &merged);
}

/// A shard's Redis figures (zero on a shard without a client).
fn redis(s: &Snapshot) -> &RedisStats {
    static NONE: std::sync::OnceLock<RedisStats> = std::sync::OnceLock::new();
    s.redis.as_ref().unwrap_or_else(|| NONE.get_or_init(RedisStats::default))
}

/// How a figure is read from a shard's snapshot.
type Get = fn(&Snapshot) -> u64;
/// A counter or gauge of every shard: its name, type, help, and how to read it.
type Row = (&'static str, &'static str, &'static str, Get);

/// One family per row: a sample per shard, then their sum as `shard="all"`.
fn per_shard(out: &mut String, shards: &[Snapshot], rows: &[Row]) {
    for (name, kind, help, get) in rows {
        family(out, name, kind, help);
        for s in shards {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, get(s));
        }
        let _ = writeln!(out, "{name}{{shard=\"all\"}} {}", shards.iter().map(get).sum::<u64>());
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn request_line(out: &mut String, shard: &str, index: usize, n: u64) {
    let status = index % STATUSES;
    let method = (index / STATUSES) % METHODS;
    let route = index / STATUSES / METHODS;
    let _ = writeln!(
        out,
        "marconi_http_requests_total{{shard=\"{shard}\",route=\"{}\",method=\"{}\",status=\"{}\"}} {n}",
        ROUTE_NAMES.get(route).unwrap_or(&"?"),
        METHOD_NAMES.get(method).unwrap_or(&"?"),
        status_name(status)
    );
}

fn seconds(us: u64) -> String {
    format!("{}", us as f64 / 1e6)
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    let mut cumulative = 0;
    for (i, n) in h.buckets.iter().enumerate() {
        cumulative += n;
        let le = BUCKETS_US.get(i).map_or_else(|| "+Inf".to_owned(), |&us| seconds(us));
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", seconds(h.sum_us));
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_method_and_status() {
        let m = ShardMetrics::new();
        m.record_request(RouteKind::Messages, Method::Post, 201, Duration::from_micros(300));
        m.record_request(RouteKind::Messages, Method::Post, 201, Duration::from_millis(30));
        m.record_request(RouteKind::Unmatched, Method::Other, 599, Duration::from_secs(100));
        let s = m.snapshot(1);
        assert_eq!(s.requests(RouteKind::Messages, Method::Post, 201), 2);
        assert_eq!(s.requests(RouteKind::Unmatched, Method::Other, 599), 1);
        let h = &s.latency[RouteKind::Messages as usize];
        assert_eq!(h.count(), 2);
        assert_eq!(h.buckets[2], 1, "300 µs falls in the 500 µs bucket");
        assert_eq!(h.buckets[8], 1, "30 ms falls in the 50 ms bucket");
        assert_eq!(s.latency[RouteKind::Unmatched as usize].buckets[SLOTS - 1], 1);
    }

    #[test]
    fn render_merges_shards_and_computes_mesh_depth() {
        let a = ShardMetrics::new();
        let b = ShardMetrics::new();
        a.record_request(RouteKind::Ping, Method::Get, 204, Duration::from_micros(50));
        b.record_request(RouteKind::Ping, Method::Get, 204, Duration::from_micros(50));
        for _ in 0..5 {
            a.mesh_sent(1);
        }
        for _ in 0..3 {
            b.mesh_received(0);
        }
        let flushed = Histogram::new();
        flushed.record(Duration::from_millis(2));
        let mut sa = a.snapshot(2);
        let mut sb = b.snapshot(2);
        sa.shard = 0;
        sb.shard = 1;
        sa.messages = 4;
        sb.messages = 6;
        (sa.flushes, sa.flush_latency) = (1, flushed.snapshot());
        let text = render(&[sa, sb]);
        assert!(
            text.contains("marconi_http_requests_total{shard=\"all\",route=\"ping\",method=\"GET\",status=\"204\"} 2")
        );
        assert!(
            text.contains("marconi_http_requests_total{shard=\"0\",route=\"ping\",method=\"GET\",status=\"204\"} 1")
        );
        assert!(text.contains("marconi_messages{shard=\"all\"} 10"), "{text}");
        assert!(text.contains("marconi_mesh_depth{shard=\"0\",peer=\"1\"} 2"), "{text}");
        assert!(text.contains("marconi_storage_flushes_total{shard=\"0\"} 1"), "{text}");
        assert!(
            text.contains("marconi_http_request_duration_seconds_bucket{shard=\"all\",route=\"ping\",le=\"0.0001\"} 2")
        );
        assert!(text.contains("marconi_storage_flush_duration_seconds_count{shard=\"all\"} 1"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
    }
}
