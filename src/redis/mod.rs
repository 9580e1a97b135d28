//! The Redis Cluster client of the `redis-cluster` backend: a RESP codec, the slot map and one
//! connection per master per shard on glommio sockets, with a group `WAIT` per master per batch.
//! It knows nothing of queues: `shard::redis` maps commands onto its function calls.
//!
//! # Shape
//! Every shard (executor) builds its own [`Cluster`]: `Rc`/`RefCell`/`Cell` only, no locks and
//! nothing `Send`. Per node there is one data connection driven by one flusher task, which sends
//! everything queued since its last round as one pipeline, `[FCALL × k, (fence), WAIT n t]`,
//! and releases the replies only once `WAIT` says the writes reached `n` replicas (group WAIT,
//! the counterpart of the local store's group commit). Sharded pub/sub uses one more
//! connection per node, shared by every subscription of the shard ([`Subscription`]).
//!
//! # What an answer means
//! - `Ok(value)`: the command ran, and under `Ack::Replicas`/`Ack::Fsync` its round was
//!   acknowledged (reads too, behind the fence, when `read_fence` is on).
//! - `Err(RedisError::Unavailable)`: the outcome is unknown or not acknowledged as promised. A
//!   write is never retried after it may have run (an I/O error or a timeout after sending):
//!   callers dedupe their own retries with request ids. Redirects (`MOVED`, `ASK`) and refusals
//!   that prove the command did not run (`TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, `MASTERDOWN`,
//!   `BUSY`, `READONLY`, a missing function library) are retried inside the call's deadline.
//!
//! # Functions' own errors
//! An error reply of a function comes back as `Ok(Value::Error(..))`, unless its first word is
//! one of the refusals above, which the client takes for Redis's own: a library must not start
//! its error replies with them.

mod cluster;
mod conn;
mod pubsub;
pub mod resp;
pub mod slots;

pub use cluster::{Cluster, MasterInfo};
pub use pubsub::Subscription;
pub use resp::Value;
pub use slots::key_slot;

/// How the client connects and what an acknowledgement waits for.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seed `host:port`s; the topology is discovered with `CLUSTER SHARDS` (`CLUSTER SLOTS`
    /// before Redis 7).
    pub nodes: Vec<String>,
    pub ack: Ack,
    /// n of `WAIT n` / `WAITAOF 1 n`.
    pub ack_replicas: u32,
    /// The `WAIT` timeout: a short count or a timeout fails every write of the round Unavailable.
    pub ack_timeout_ms: u64,
    /// Reads wait behind a replication fence, so a read never shows a change a failover can undo:
    /// a round with reads ends in `INCR` of a key in a slot of that master, then the WAIT. The
    /// fence goes after the reads, not before, so its WAIT covers whatever any of them saw. No
    /// effect with `Ack::Async`, whose writes a failover can undo anyway.
    pub read_fence: bool,
    /// Per-call deadline: past it the call answers Unavailable, even when the node hangs.
    pub command_timeout_ms: u64,
    /// Commands per pipeline round per master.
    pub max_batch: usize,
    /// Lua source of a Redis 7 function library (`#!lua name=...`), loaded on every master;
    /// empty for none.
    pub library: &'static str,
    pub library_name: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: Vec::new(),
            ack: Ack::Replicas,
            ack_replicas: 1,
            ack_timeout_ms: 500,
            read_fence: true,
            command_timeout_ms: 2000,
            max_batch: 1024,
            library: "",
            library_name: "",
        }
    }
}

/// What a write's acknowledgement waits for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ack {
    /// The master's reply (no `WAIT`).
    Async,
    /// `WAIT n`: received by n replicas.
    Replicas,
    /// `WAITAOF 1 n` (Redis/Valkey ≥ 7.2): fsynced on the master and on n replicas.
    Fsync,
}

/// Whether a call changes data: writes are never retried once they may have run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Read,
    Write,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    /// The outcome is unknown or the change is not acknowledged as the ack mode promises
    /// (connection lost, timed out, WAIT short, cluster down): the API answers 503 with
    /// Retry-After.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// A reply that breaks the protocol or exceeds a bound.
    #[error("redis protocol error: {0}")]
    Protocol(String),
    /// Configuration or topology problems at connect time (no seed reachable, ...).
    #[error("redis setup: {0}")]
    Setup(String),
}

/// The client's counters since it connected (defined with the other metrics, which render them).
pub use crate::metrics::RedisStats as ClusterStats;
