//! The typed configuration: one field per knob, its unit in its name. Each knob's default, range
//! and doc line are written once, in the knob table of `settings`; `Config`'s `Default` is built
//! from that table (and implemented there, so this module stays at the bottom of the dependency
//! order), so the two cannot disagree: a field without a row makes every `default()` panic.
//!
//! The API limits mirror Zaqar's `[transport]` options (reference §8) so that Zaqar clients and
//! Zaqar's own tests see the numbers they expect; each is enforced in `api` with Zaqar's status
//! codes and error bodies.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::limits::{LimitSet, Overrides};

/// Smallest message TTL Zaqar accepts (hard-coded there too).
pub const MIN_MESSAGE_TTL_S: u32 = 60;
/// Smallest claim TTL and grace Zaqar accepts (hard-coded there too).
pub const MIN_CLAIM_TTL_S: u32 = 60;
pub const MIN_CLAIM_GRACE_S: u32 = 60;
/// Page size used when a listing names no `limit` (Zaqar's code default).
pub const DEFAULT_PAGE_SIZE: usize = 10;
/// Claim size used when a claim names no `limit` (Zaqar's code default).
pub const DEFAULT_CLAIM_LIMIT: usize = 10;
/// Queue names: 1..=64 of `[A-Za-z0-9_.-]`.
pub const MAX_QUEUE_NAME_BYTES: usize = 64;
/// Project ids: at most 256 bytes.
pub const MAX_PROJECT_ID_BYTES: usize = 256;
/// Client ids when `client_id_uuid_safe = off`: 10..=36 characters.
pub const MIN_CLIENT_ID_BYTES: usize = 10;
pub const MAX_CLIENT_ID_BYTES: usize = 36;
/// Lifetime of a pre-signed URL whose request names no `expires`.
pub const DEFAULT_SIGNED_URL_LIFETIME_S: u64 = 24 * 3600;
/// Ceiling of `api.max_json_depth`. Stored queue metadata is read back at start-up by serde_json,
/// whose own recursion limit refuses documents 128 levels deep: a configurable depth must stay
/// below it, or metadata accepted today would be unreadable after a restart.
pub const MAX_JSON_DEPTH_CEILING: usize = 100;
/// Ceiling of `api.max_messages_per_post`: the 201 of a post lists every new id in `Location`
/// (25 bytes each), and this many keep that header under
/// [`MAX_RESPONSE_HEAD_BYTES`](crate::http::MAX_RESPONSE_HEAD_BYTES).
pub const MAX_MESSAGES_PER_POST_CEILING: usize = 1000;

/// How strictly the `Client-ID` header is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientIdCheck {
    /// Must parse as a UUID (Zaqar's default).
    Strict,
    /// Any string of 10..=36 characters.
    Off,
}

/// Zaqar API limits and defaults (reference §8).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiLimits {
    pub default_message_ttl_s: u32,
    pub max_message_ttl_s: u32,
    pub max_message_delay_s: u32,
    pub default_claim_ttl_s: u32,
    pub max_claim_ttl_s: u32,
    pub default_claim_grace_s: u32,
    pub max_claim_grace_s: u32,
    pub max_queues_per_page: usize,
    pub max_messages_per_page: usize,
    pub max_messages_per_claim_or_pop: usize,
    pub max_queue_metadata_bytes: usize,
    pub max_messages_post_size_bytes: usize,
    pub client_id_uuid_safe: ClientIdCheck,
    /// When true, bulk delete by `ids` also needs matching `claim_ids`.
    pub message_delete_with_claim_id: bool,
    /// Cap on the `wait` of a long poll (divergence: Zaqar has no long polling over HTTP).
    pub max_wait_s: u32,
    /// Serve `GET /v2/health` (Zaqar serves it only in admin mode; the conformance tests need it).
    pub admin_mode: bool,
    /// Deepest nesting of arrays and objects in any JSON body (`{}` is 1 level), checked before
    /// anything recursive reads the body (divergence: Zaqar has none and its parser recurses).
    pub max_json_depth: usize,
    /// Most messages in one post (divergence: Zaqar bounds posts by size only, but the 201's
    /// `Location` lists every id, and clients refuse a header of hundreds of kilobytes).
    pub max_messages_per_post: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Config::default().api
    }
}

/// Limits of the HTTP layer: each one turns abuse into a clear error instead of unbounded memory.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLimits {
    /// Request line plus headers; larger heads get 431.
    pub max_head_bytes: usize,
    /// Most headers in one request; more get 431.
    pub max_headers: usize,
    /// Largest body read at all; a larger declared body gets 413 and the connection closes.
    /// Smaller bodies over a route's own Zaqar limit get that route's error (usually 400).
    pub max_body_bytes: usize,
    /// Time allowed to receive a whole request head once its first byte arrived.
    pub header_read_timeout_ms: u64,
    /// Time allowed to receive a whole request body once its head arrived (Content-Length or
    /// chunked); a slower body gets 408 and the connection closes.
    pub body_read_timeout_ms: u64,
    /// Time a keep-alive connection may sit idle between requests.
    pub idle_timeout_ms: u64,
    /// Most open connections per shard; further accepts are closed at once.
    pub max_connections_per_shard: usize,
    /// Most open connections from one client IP address on one shard; more are closed at once.
    pub max_connections_per_address: usize,
    /// New connections one shard accepts per second (a token bucket holding a second's worth):
    /// a reconnect storm beyond it is closed at accept, so connections already open keep being
    /// served.
    pub max_new_connections_per_second: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Config::default().http
    }
}

/// Pre-signed URLs (`POST /v2/queues/{q}/share`).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SignedUrlConfig {
    /// HMAC-SHA256 key; without it the share endpoint answers 400, as Zaqar does.
    pub secret_key: Option<String>,
}

/// Quotas and rate limits per project (docs/api.md, "Quotas and rate limits"); 0 is unlimited.
/// Each field is the default of the [`Limit`](crate::limits::Limit) of its name.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub queues_per_project: u64,
    pub messages_per_queue: u64,
    pub bytes_per_queue: u64,
    pub messages_per_project: u64,
    pub bytes_per_project: u64,
    pub requests_per_second_per_project: u64,
    pub requests_per_second_per_credential: u64,
    pub long_polls_per_project: u64,
    /// Overrides per project from the configuration file's `[limits.projects.<id>]` tables (not
    /// knobs: `settings` reads them apart and checks each value against its knob).
    #[serde(skip)]
    pub projects: BTreeMap<String, Overrides>,
}

impl LimitsConfig {
    /// The defaults as a [`LimitSet`], in [`Limit`](crate::limits::Limit) order.
    pub fn defaults(&self) -> LimitSet {
        LimitSet::new([
            self.queues_per_project,
            self.messages_per_queue,
            self.bytes_per_queue,
            self.messages_per_project,
            self.bytes_per_project,
            self.requests_per_second_per_project,
            self.requests_per_second_per_credential,
            self.long_polls_per_project,
        ])
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Config::default().limits
    }
}

/// Whether TLS clients must show a certificate signed by `tls.client_ca_file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificates are asked for.
    Off,
    /// Asked for and checked when shown; clients without one still connect (and use tokens).
    Optional,
    /// A connection without a valid client certificate fails its handshake.
    Required,
}

/// TLS built in (docs/security.md): with a certificate and key, `listen` speaks TLS, or, when
/// `tls.listen` is set too, plain HTTP stays on `listen` and TLS listens there.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub listen: Option<SocketAddr>,
    /// PEM: the server's certificate, then its chain.
    pub cert_file: Option<PathBuf>,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// PEM: the CA (or CAs) client certificates must chain to.
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Config::default().tls
    }
}

impl Default for SignedUrlConfig {
    fn default() -> Self {
        Config::default().signed_url
    }
}

/// How far an acknowledgement goes toward the disk (docs/storage.md states each promise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Acknowledge only after the change is on stable storage (fdatasync); concurrent requests
    /// share one flush (group commit). The default: an acknowledged message survives a power cut.
    Sync,
    /// Acknowledge at once; flush every `flush_interval_ms`. A power cut loses at most that window.
    Interval,
    /// Acknowledge at once; the OS writes back when it likes (a segment is flushed when it fills).
    /// Survives a crash of the process, not of the machine.
    None,
    /// Keep everything in memory: nothing survives a restart. For tests and cache-like use.
    Memory,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Interval => "interval",
            Durability::None => "none",
            Durability::Memory => "memory",
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sync" => Ok(Durability::Sync),
            "interval" => Ok(Durability::Interval),
            "none" => Ok(Durability::None),
            "memory" => Ok(Durability::Memory),
            _ => Err(format!("`{s}` is not a durability mode: use sync, interval, none or memory")),
        }
    }
}

/// Where queues live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// The embedded segment store of each shard (the default): no other process needed.
    Local,
    /// A Redis Cluster that any number of marconi nodes share; nodes hold no data
    /// (docs/storage.md, "On Redis Cluster").
    RedisCluster,
}

/// What a reply waits for in the `redis-cluster` backend (docs/storage.md states what each
/// survives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisAck {
    /// `WAIT ack_replicas`: the change reached that many replicas.
    Replicas,
    /// `WAITAOF 1 ack_replicas`: the change is on the master's disk and that many replicas'.
    Fsync,
    /// The master's reply alone: a failover can undo acknowledged changes.
    Async,
}

/// The `redis-cluster` backend: where the cluster is and what an acknowledgement waits for.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Seeds, `host:port`; the rest of the cluster is discovered from them.
    pub nodes: Option<Vec<String>>,
    pub ack: RedisAck,
    pub ack_replicas: u32,
    /// Longest a batch waits for its replicas; past it its changes answer 503 (they may or may
    /// not have taken effect).
    pub ack_timeout_ms: u64,
    /// Reads wait behind a replication fence, so no reply shows a change a failover can undo.
    pub read_fence: bool,
    /// Longest one call may take, so a dying master answers 503 quickly instead of stalling.
    pub command_timeout_ms: u64,
    /// How often a parked long poll re-checks its queue: pub/sub wake-ups are at most once.
    pub poll_fallback_ms: u64,
    pub max_batch: usize,
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Config::default().redis
    }
}

/// Where the default data directory is, relative to the working directory, when durable storage
/// is on and no `data_dir` is given: refusing to start would surprise more than a visible folder.
pub const DEFAULT_DATA_DIR: &str = "marconi-data";

/// The embedded segment store (docs/storage.md).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub backend: Backend,
    pub durability: Durability,
    /// Flush period of `interval` durability.
    pub flush_interval_ms: u64,
    /// Size of each preallocated segment file (rounded up to whole pages). Large enough that
    /// rotation is rare and small enough that compaction rewrites little at a time; it must hold
    /// the largest post and metadata (a start-up rule, see `settings::RELATIONS`).
    pub segment_size_bytes: u64,
    /// Start even when a segment is damaged: keep every record that passes its CRC, move the
    /// damaged files aside (`*.damaged`). Off by default: damage stops start-up with its place.
    pub repair: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Config::default().storage
    }
}

/// Who a request is from (docs/security.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Believe the `X-Project-ID` a client sends (Zaqar without Keystone). Only on a loopback
    /// address, unless `auth.insecure_no_auth` says something in front authenticates.
    None,
    /// Validate `X-Auth-Token` against Keystone v3; the project is the token's.
    Keystone,
    /// marconi's own signed tokens (`marconi token issue`), scoped to queues and operations.
    Token,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::Keystone => "keystone",
            AuthMode::Token => "token",
        }
    }
}

/// Authentication and authorization (docs/security.md).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// Serve a non-loopback address with `mode = none` anyway.
    pub insecure_no_auth: bool,
    /// The signing keys of `token` mode (`marconi token keygen` makes and extends it).
    pub keys_file: Option<PathBuf>,
    /// Client-certificate subjects that stand for a credential in `token` mode.
    pub subjects_file: Option<PathBuf>,
    /// Tokens whose lifetime (expiry − issue) is longer are refused: this bounds how long a
    /// revocation must be kept.
    pub max_token_ttl_s: u64,
    /// Revoked subjects the server keeps; past this, a new revocation is refused (409).
    pub max_revocations: usize,
    /// Validated credentials each shard remembers (verified tokens, Keystone tokens).
    pub cache_entries: usize,
    /// Serve `/metrics` and `/v2/health` without a credential when auth is on; otherwise they
    /// need one allowed to `manage`.
    pub public_metrics: bool,
    pub keystone: KeystoneConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Config::default().auth
    }
}

/// The Keystone v3 endpoint of `keystone` mode and how marconi authenticates to it.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoneConfig {
    /// `http://host:port[/prefix]` of the identity service (the part before `/v3`).
    pub url: Option<String>,
    /// A token that may validate other tokens; or service credentials below.
    pub service_token: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub user_domain: String,
    /// The project the service user scopes its token to.
    pub project: Option<String>,
    pub project_domain: String,
    /// Longest a call to Keystone may take (connect, send, answer).
    pub timeout_ms: u64,
    /// Longest a validated token is trusted without asking Keystone again (its own expiry, if
    /// sooner, wins): how long a token revoked in Keystone may still work here. 0: ask every time.
    pub cache_ttl_s: u64,
    /// How long a token Keystone refused is refused without asking again.
    pub negative_cache_ms: u64,
}

impl Default for KeystoneConfig {
    fn default() -> Self {
        Config::default().auth.keystone
    }
}

impl KeystoneConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// The whole server configuration.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    /// Log filter (`info`, `marconi=debug`, …): start-up steps and errors, never requests.
    pub log: String,
    /// One `info` line per request (target `marconi::access`); off by default, as it costs a
    /// formatted line per request.
    pub access_log: bool,
    /// Submission queue entries of each io_uring ring (glommio has three per shard): deeper rings
    /// batch more I/O per syscall and pin more kernel memory.
    pub io_ring_depth: usize,
    /// Number of shards (one pinned executor each); `None` means one per online CPU.
    pub shards: Option<usize>,
    /// CPUs to pin shards to, in order; `None` means the online CPUs in order.
    pub cpus: Option<Vec<usize>>,
    /// Where shards keep their data; `None` means [`DEFAULT_DATA_DIR`] (unused with `memory`
    /// durability).
    pub data_dir: Option<PathBuf>,
    /// Capacity of each cross-shard channel; small channels cost more per message (design notes).
    pub mesh_channel_capacity: usize,
    /// io_uring registered buffer per executor; sized down when the memlock limit is small.
    pub io_memory_bytes: usize,
    pub api: ApiLimits,
    pub http: HttpLimits,
    pub limits: LimitsConfig,
    pub signed_url: SignedUrlConfig,
    pub storage: StorageConfig,
    pub redis: RedisConfig,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
}

impl HttpLimits {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}
