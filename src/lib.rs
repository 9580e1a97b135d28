//! marconi: a thread-per-core message queue service speaking the Zaqar v2 REST API.
//!
//! # Layout
//! Dependencies point one way: `http` → `api` → `shard` → `queue` → `storage`.
//!
//! - [`config`]: every knob with its unit and default, and the Zaqar limits of the API.
//! - [`error`]: the one table from internal errors to HTTP statuses and Zaqar error bodies.
//! - [`http`]: the connection loop, the hand-written HTTP/1.1 parser on httparse, the response writer.
//! - [`auth`]: who a request is from and what it may do: `none`, `keystone` and `token` modes.
//! - [`api`]: routing and one file per resource (queues, messages, claims, health, share).
//! - [`shard`]: placement of queues on shards, the cross-shard command mesh, long-poll parking.
//! - [`queue`]: the per-shard queue engine: queues, messages, claims, expiry, dead letters.
//! - [`storage`]: the store interface under the engine and its implementations.
//! - [`redis`]: the Redis Cluster client of the `redis-cluster` backend (slots, batches, group WAIT).
//! - [`server`]: starts one pinned executor per shard and wires the rest together.
//! - [`settings`]: the configuration model: defaults < TOML file < `MARCONI_…` env < flags, the
//!   one table of knobs with their ranges, `--print-config`.
//! - [`preflight`]: start-up checks of the machine (io_uring, limits, CPUs, data directory).
//! - [`random`]: unguessable values (claim secrets, token ids, keys) from the OS CSPRNG.
//! - [`sync`]: the single-thread one-shot and `Notify` every layer waits with (waiters deregister).
//! - [`tls`]: rustls configuration from PEM files, client certificates, reload on SIGHUP.
//! - [`limits`]: the names of the quotas and rate limits per project, their values, token buckets.
//! - [`metrics`]: per-shard counters (plain `Cell`s) and the Prometheus text of `GET /metrics`.
//! - [`client`]: the `marconi queue|message|claim` commands, a small blocking Zaqar client.

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod http;
pub mod limits;
pub mod machine;
pub mod metrics;
pub mod preflight;
pub mod queue;
pub mod random;
pub mod redis;
pub mod server;
pub mod settings;
pub mod shard;
pub mod storage;
pub mod sync;
pub mod time;
pub mod tls;
