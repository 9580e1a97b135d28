//! The one configuration model: defaults, then a TOML file, then `MARCONI_…` environment
//! variables, then command-line flags, each layer overriding the one before.
//!
//! # One table of knobs
//! [`KNOBS`] defines every knob of [`Config`] once: its dotted TOML key (`api.max_message_ttl_s`),
//! what it takes (kind and range), its default and a line about it. Everything else reads it:
//! - `Config::default()` ([`defaults`]): a field without a row, or a row without a field, fails;
//! - the environment variable: `MARCONI_` + the key in upper case with dots as underscores
//!   (`MARCONI_API_MAX_MESSAGE_TTL_S`), see [`env_name`];
//! - the unit, from the key's suffix (`_bytes`, `_ms`, `_s`), see [`Knob::unit`];
//! - the check of file keys (unknown keys are refused by name, with the known ones of the section);
//! - the parsing of environment and flag values (text) into typed TOML values;
//! - the one validator of values, [`Knob::check`], run on every layer and, in
//!   [`Config::validate`], on the whole configuration;
//! - `marconi serve --print-config`, the `--help` of the flags ([`flag_help`]),
//!   `tuning/default.toml` ([`default_profile`]) and the knob reference in `tuning/README.md`
//!   ([`markdown_reference`]): tests compare those files with the rendering.
//!
//! [`RELATIONS`] lists the rules between knobs (a default not above its maximum, a segment large
//! enough for the largest post, …); [`Config::validate`] enforces them with an error that names
//! both knobs. Rules whose two sides are constants are `const` assertions below the table, and so
//! is the table's own consistency (each default inside its range, keys unique).
//!
//! # Adding a knob
//! 1. a field in its section's struct in `config.rs`, the unit in its name (`_bytes`, `_ms`, `_s`);
//! 2. one row in [`KNOBS`], e.g. `int("http.max_json_depth", 1, 1024, 32, "nesting of a JSON body")`;
//! 3. a rule in [`RELATIONS`] if it bounds or is bounded by another knob;
//! 4. `UPDATE_KNOB_DOCS=1 cargo test --test configuration` rewrites the generated docs; an API
//!    or HTTP limit also needs its row in the limits table of docs/api.md (a test says so).
//!
//! # Why TOML values in the middle
//! Each layer is turned into TOML values keyed by dotted path and merged into one table, which
//! then deserializes into [`Config`] (serde's `deny_unknown_fields` stays as a second guard). That
//! keeps the merge generic and lets every error name the key and the layer it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::{AuthMode, Backend, Config, Durability, MIN_CLAIM_GRACE_S, MIN_CLAIM_TTL_S, MIN_MESSAGE_TTL_S};
use crate::limits::{Limit, Overrides};
use crate::machine::MIN_IO_MEMORY_BYTES;
use crate::storage::codec;
use crate::storage::segment::{MAX_SEGMENT_SIZE_BYTES, MIN_SEGMENT_SIZE_BYTES, SEGMENT_HEADER_BYTES};

/// What values a knob takes. Ranges are inclusive.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    /// Any text.
    Str,
    /// Text never printed back (`--print-config` shows `<redacted>`).
    Secret,
    Enum(&'static [&'static str]),
    /// `host:port`, e.g. `0.0.0.0:8888`.
    Addr,
    /// CPU numbers, as a TOML array or as text like `0,2-5`.
    CpuList,
    /// `host:port`s (names or addresses), as a TOML array or as text like `a:7000,b:7001`.
    NodeList,
    Path,
    /// A file.
    File,
    /// A `tracing` filter such as `info` or `marconi=debug,warn`.
    LogFilter,
}

/// A knob's value when no layer sets it.
#[derive(Debug, Clone, Copy)]
pub enum DefaultValue {
    Int(i64),
    Bool(bool),
    /// Text: an address, a log filter, an enum's choice.
    Text(&'static str),
    /// No value (an optional knob); the text says what that means.
    Unset(&'static str),
}

/// The unit of an integer knob, named by the end of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// `…_bytes`
    Bytes,
    /// `…_ms`
    Milliseconds,
    /// `…_s`
    Seconds,
    /// Anything else: a number of things.
    Count,
}

/// One knob: its dotted key, what it takes, its default, and a line about it (the trade-offs of
/// each are in `tuning/README.md`).
#[derive(Debug, Clone, Copy)]
pub struct Knob {
    pub key: &'static str,
    pub kind: Kind,
    pub default: DefaultValue,
    pub doc: &'static str,
}

const fn int(key: &'static str, min: i64, max: i64, default: i64, doc: &'static str) -> Knob {
    Knob { key, kind: Kind::Int { min, max }, default: DefaultValue::Int(default), doc }
}
const fn boolean(key: &'static str, default: bool, doc: &'static str) -> Knob {
    Knob { key, kind: Kind::Bool, default: DefaultValue::Bool(default), doc }
}
const fn choice(key: &'static str, choices: &'static [&'static str], default: &'static str, doc: &'static str) -> Knob {
    Knob { key, kind: Kind::Enum(choices), default: DefaultValue::Text(default), doc }
}
const fn text(key: &'static str, kind: Kind, default: &'static str, doc: &'static str) -> Knob {
    Knob { key, kind, default: DefaultValue::Text(default), doc }
}
/// An optional knob; `meaning` says what leaving it unset does.
const fn unset(key: &'static str, kind: Kind, meaning: &'static str, doc: &'static str) -> Knob {
    Knob { key, kind, default: DefaultValue::Unset(meaning), doc }
}
/// The knob of a quota or rate limit: `limits.<name>`, 0 (unlimited) by default.
const fn limit(limit: Limit, doc: &'static str) -> Knob {
    Knob { key: limit.knob(), kind: Kind::Int { min: 0, max: limit.max() as i64 }, default: DefaultValue::Int(0), doc }
}
const fn range(min: i64, max: i64) -> Kind {
    Kind::Int { min, max }
}

const KIB: i64 = 1024;
const MIB: i64 = 1024 * KIB;
const GIB: i64 = 1024 * MIB;
const MINUTE_S: i64 = 60;
const HOUR_S: i64 = 60 * MINUTE_S;
const DAY_S: i64 = 24 * HOUR_S;
/// Largest CPU number the kernel's affinity mask (`CPU_SETSIZE`) can name.
pub const MAX_CPU: i64 = 1023;

/// Every knob, in the order `--print-config` and the docs show them (top-level keys first, then by
/// section). A row is the whole definition of a knob; see the module documentation to add one.
pub const KNOBS: &[Knob] = &[
    text("listen", Kind::Addr, "127.0.0.1:8888", "address every shard accepts on (SO_REUSEPORT)"),
    text("log", Kind::LogFilter, "info", "log filter; start-up steps and errors only, never requests"),
    boolean("access_log", false, "one info line per request (target marconi::access)"),
    unset("shards", range(1, 1024), "one per CPU in `cpus`", "executors, one pinned thread each"),
    unset("cpus", Kind::CpuList, "every CPU this process may run on", "CPUs to pin shards to, in order"),
    unset("data_dir", Kind::Path, "./marconi-data (none with memory durability)", "where shards keep their data"),
    int("mesh_channel_capacity", 8, 65_536, 1024, "slots of each shard-to-shard channel"),
    int("io_memory_bytes", MIN_IO_MEMORY_BYTES as i64, GIB, MIB, "io_uring buffer per shard (locked memory, x3 rings)"),
    int("io_ring_depth", 8, 4096, 128, "submission entries of each io_uring ring"),
    int(
        "api.default_message_ttl_s",
        MIN_MESSAGE_TTL_S as i64,
        365 * DAY_S,
        HOUR_S,
        "TTL of messages posted without one",
    ),
    int("api.max_message_ttl_s", MIN_MESSAGE_TTL_S as i64, 365 * DAY_S, 14 * DAY_S, "largest message TTL accepted"),
    int("api.max_message_delay_s", 0, 365 * DAY_S, 15 * MINUTE_S, "largest message delay accepted"),
    int("api.default_claim_ttl_s", MIN_CLAIM_TTL_S as i64, 14 * DAY_S, 5 * MINUTE_S, "TTL of claims made without one"),
    int("api.max_claim_ttl_s", MIN_CLAIM_TTL_S as i64, 14 * DAY_S, 12 * HOUR_S, "largest claim TTL accepted"),
    int(
        "api.default_claim_grace_s",
        MIN_CLAIM_GRACE_S as i64,
        14 * DAY_S,
        MINUTE_S,
        "grace of claims made without one",
    ),
    int("api.max_claim_grace_s", MIN_CLAIM_GRACE_S as i64, 14 * DAY_S, 12 * HOUR_S, "largest claim grace accepted"),
    int("api.max_queues_per_page", 1, 1000, 20, "largest `limit` of a queue listing"),
    int("api.max_messages_per_page", 1, 1000, 20, "largest `limit` of a message listing or `ids` list"),
    int("api.max_messages_per_claim_or_pop", 1, 1000, 20, "most messages one claim or pop takes"),
    int("api.max_queue_metadata_bytes", KIB, 16 * MIB, 64 * KIB, "largest queue metadata body"),
    int("api.max_messages_post_size_bytes", KIB, 64 * MIB, 256 * KIB, "largest message post body"),
    choice("api.client_id_uuid_safe", &["strict", "off"], "strict", "strict: Client-ID must be a UUID"),
    boolean("api.message_delete_with_claim_id", false, "bulk delete by ids also needs claim_ids"),
    int("api.max_wait_s", 0, 600, 20, "cap on the `wait` of a long poll"),
    boolean("api.admin_mode", true, "serve GET /v2/health"),
    int(
        "api.max_json_depth",
        1,
        crate::config::MAX_JSON_DEPTH_CEILING as i64,
        64,
        "deepest nesting of arrays and objects in a JSON body (400 above)",
    ),
    int(
        "api.max_messages_per_post",
        1,
        crate::config::MAX_MESSAGES_PER_POST_CEILING as i64,
        100,
        "most messages in one post (400 above)",
    ),
    int("http.max_head_bytes", KIB, MIB, 16 * KIB, "request line plus headers (431 above)"),
    int("http.max_headers", 8, 1024, 64, "headers per request (431 above)"),
    int("http.max_body_bytes", 4 * KIB, GIB, 8 * MIB, "any request body (413 above)"),
    int("http.header_read_timeout_ms", 100, 600_000, 10_000, "time to receive a whole request head"),
    int("http.body_read_timeout_ms", 100, 3_600_000, 60_000, "time to receive a whole request body (408 above)"),
    int("http.idle_timeout_ms", 100, DAY_S * 1000, 120_000, "keep-alive idle time; longest stall of a read or write"),
    int("http.max_connections_per_shard", 1, 1_048_576, 16_384, "open connections per shard; more are closed"),
    int(
        "http.max_connections_per_address",
        1,
        1_048_576,
        1024,
        "open connections from one client address, per shard; more are closed",
    ),
    int(
        "http.max_new_connections_per_second",
        1,
        10_000_000,
        20_000,
        "connections a shard accepts per second; a storm beyond it is closed at accept",
    ),
    limit(Limit::QueuesPerProject, "queues a project may have (exact but for concurrent creates); 403 above"),
    limit(Limit::MessagesPerQueue, "messages a queue may hold, expired ones not yet collected included; 403 above"),
    limit(Limit::BytesPerQueue, "message body bytes a queue may hold; 403 above"),
    limit(Limit::MessagesPerProject, "messages a project may hold, counted per shard (see docs/api.md); 403 above"),
    limit(Limit::BytesPerProject, "message body bytes a project may hold, counted per shard; 403 above"),
    limit(Limit::RequestsPerSecondPerProject, "requests per second of a project, per shard (token bucket); 429 above"),
    limit(
        Limit::RequestsPerSecondPerCredential,
        "requests per second of a credential (X-Auth-Token), per shard (token bucket); 429 above",
    ),
    limit(Limit::LongPollsPerProject, "long polls (wait=) of a project in flight, per shard; 403 above"),
    choice(
        "storage.backend",
        &["local", "redis-cluster"],
        "local",
        "where queues live: the embedded segment store, or a Redis Cluster many nodes share",
    ),
    choice("storage.durability", &["sync", "interval", "none", "memory"], "sync", "what an acknowledgement promises"),
    int("storage.flush_interval_ms", 1, 60_000, 50, "flush period of `interval` durability"),
    int(
        "storage.segment_size_bytes",
        MIN_SEGMENT_SIZE_BYTES as i64,
        MAX_SEGMENT_SIZE_BYTES as i64,
        64 * MIB,
        "size of each preallocated segment file",
    ),
    boolean("storage.repair", false, "start despite damaged segments: keep what passes its CRC, set the rest aside"),
    unset(
        "redis.nodes",
        Kind::NodeList,
        "redis-cluster cannot start",
        "seed nodes of the Redis Cluster; the rest is discovered",
    ),
    choice(
        "redis.ack",
        &["replicas", "fsync", "async"],
        "replicas",
        "what a reply waits for: WAIT on replicas, WAITAOF (Redis 7.2+), or the master alone",
    ),
    int("redis.ack_replicas", 0, 16, 1, "replicas that must have a change before it is acknowledged"),
    int("redis.ack_timeout_ms", 1, 60_000, 500, "longest a batch waits for its replicas (503 past it)"),
    boolean("redis.read_fence", true, "reads wait behind a replication fence, so no reply shows an undoable change"),
    int("redis.command_timeout_ms", 10, 600_000, 2_000, "longest one call to Redis may take (503 past it)"),
    int("redis.poll_fallback_ms", 10, 60_000, 1_000, "long polls re-check this often, in case a wake-up was lost"),
    int("redis.max_batch", 1, 65_536, 1024, "calls one pipeline round to a master carries"),
    text("redis.key_prefix", Kind::Str, "mq", "prefix of every key marconi writes"),
    unset("signed_url.secret_key", Kind::Secret, "the share endpoint answers 400", "HMAC key of pre-signed URLs"),
    choice(
        "auth.mode",
        &["none", "keystone", "token"],
        "none",
        "who a request is from: none believes X-Project-ID (loopback only), keystone, or marconi tokens",
    ),
    boolean("auth.insecure_no_auth", false, "serve a non-loopback address with auth.mode = none"),
    unset(
        "auth.keys_file",
        Kind::File,
        "token mode cannot start",
        "signing keys of token mode (`marconi token keygen`)",
    ),
    unset(
        "auth.subjects_file",
        Kind::File,
        "client certificates stand for no credential",
        "client-certificate subjects and what each may do (token mode, docs/security.md)",
    ),
    int(
        "auth.max_token_ttl_s",
        MINUTE_S,
        3650 * DAY_S,
        365 * DAY_S,
        "longest token lifetime accepted; revocations are kept this long",
    ),
    int("auth.max_revocations", 1, 10_000_000, 100_000, "revoked token ids and names kept (409 past it)"),
    int("auth.cache_entries", 0, 10_000_000, 10_000, "validated credentials each shard remembers"),
    boolean("auth.public_metrics", false, "serve /metrics and /v2/health without a manage credential"),
    unset("auth.keystone.url", Kind::Str, "keystone mode cannot start", "Keystone identity endpoint, http://host:port"),
    unset(
        "auth.keystone.service_token",
        Kind::Secret,
        "the service credentials get one",
        "token marconi validates others with",
    ),
    unset("auth.keystone.username", Kind::Str, "no service credentials", "service user that validates tokens"),
    unset("auth.keystone.password", Kind::Secret, "no service credentials", "password of the service user"),
    text("auth.keystone.user_domain", Kind::Str, "Default", "domain of the service user"),
    unset("auth.keystone.project", Kind::Str, "no service credentials", "project of the service user's token"),
    text("auth.keystone.project_domain", Kind::Str, "Default", "domain of that project"),
    int("auth.keystone.timeout_ms", 100, 60_000, 2_000, "longest call to Keystone (503 past it)"),
    int(
        "auth.keystone.cache_ttl_s",
        0,
        DAY_S,
        5 * MINUTE_S,
        "longest a validated token is trusted without asking Keystone again",
    ),
    int("auth.keystone.negative_cache_ms", 0, 60_000, 2_000, "how long a refused token is refused without asking"),
    unset(
        "tls.listen",
        Kind::Addr,
        "`listen` speaks TLS when a certificate is set",
        "a TLS address beside plain `listen`",
    ),
    unset("tls.cert_file", Kind::File, "no TLS", "PEM certificate and chain; reloaded on SIGHUP"),
    unset("tls.key_file", Kind::File, "no TLS", "PEM private key of the certificate; reloaded on SIGHUP"),
    unset("tls.client_ca_file", Kind::File, "no client certificates", "PEM CA that client certificates must chain to"),
    choice(
        "tls.client_auth",
        &["off", "optional", "required"],
        "off",
        "client certificates: off, optional or required",
    ),
];

/// How the second knob of a [`Relation`] must stand to the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `bound` ≥ `key`.
    NotBelow,
    /// A segment of `bound` bytes holds a record carrying `key` bytes (a message body or queue
    /// metadata) beside its header, with the longest project id and queue name; with durable
    /// storage only.
    HoldsRecord,
}

/// A rule between two integer knobs, checked by [`Config::validate`].
#[derive(Debug, Clone, Copy)]
pub struct Relation {
    pub key: &'static str,
    pub bound: &'static str,
    pub rule: Rule,
    /// What goes wrong when the rule is broken.
    pub why: &'static str,
}

const fn not_above(key: &'static str, bound: &'static str, why: &'static str) -> Relation {
    Relation { key, bound, rule: Rule::NotBelow, why }
}
const fn held_by_segment(key: &'static str, why: &'static str) -> Relation {
    Relation { key, bound: "storage.segment_size_bytes", rule: Rule::HoldsRecord, why }
}

/// Bytes a segment needs beyond a record's payload: the largest record's header, fixed fields,
/// names and padding, and the segment's own header.
pub const SEGMENT_RECORD_OVERHEAD_BYTES: i64 = (codec::largest_record_bytes(0) + SEGMENT_HEADER_BYTES) as i64;

/// Every rule between knobs. Defaults must satisfy them all (a test loads the defaults).
pub const RELATIONS: &[Relation] = &[
    not_above("api.default_message_ttl_s", "api.max_message_ttl_s", "messages posted without a TTL would be refused"),
    not_above("api.default_claim_ttl_s", "api.max_claim_ttl_s", "claims made without a TTL would be refused"),
    not_above("api.default_claim_grace_s", "api.max_claim_grace_s", "claims made without a grace would be refused"),
    not_above("api.max_messages_post_size_bytes", "http.max_body_bytes", "413 would come before the API's own limit"),
    not_above("api.max_queue_metadata_bytes", "http.max_body_bytes", "413 would come before the API's own limit"),
    not_above(
        "http.header_read_timeout_ms",
        "http.idle_timeout_ms",
        "a slow head could hold a connection longer than idling",
    ),
    held_by_segment("api.max_messages_post_size_bytes", "a post of one large message would be refused with 503"),
    held_by_segment("api.max_queue_metadata_bytes", "the largest queue metadata would be refused with 503"),
];

impl Relation {
    /// The smallest value of `bound` that `key` = `value` allows.
    pub fn needed(&self, value: i64) -> i64 {
        match self.rule {
            Rule::NotBelow => value,
            Rule::HoldsRecord => value.saturating_add(SEGMENT_RECORD_OVERHEAD_BYTES),
        }
    }

    fn applies(&self, config: &Config) -> bool {
        match self.rule {
            Rule::NotBelow => true,
            Rule::HoldsRecord => config.storage.durability != Durability::Memory,
        }
    }

    /// The rule for people, e.g. "`api.default_message_ttl_s` ≤ `api.max_message_ttl_s`".
    pub fn describe(&self) -> String {
        match self.rule {
            Rule::NotBelow => format!("`{}` ≤ `{}`", self.key, self.bound),
            Rule::HoldsRecord => format!(
                "`{}` ≥ `{}` + {SEGMENT_RECORD_OVERHEAD_BYTES} (record and segment headers, longest names), \
                 unless `storage.durability` = memory",
                self.bound, self.key
            ),
        }
    }
}

// ------------------------------------------------------------------------------------------
// The table's consistency and the rules between constants, checked by the compiler
// ------------------------------------------------------------------------------------------

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The range of the integer knob `key`; fails to compile when there is none.
const fn int_range(key: &str) -> (i64, i64) {
    let mut i = 0;
    while i < KNOBS.len() {
        if same(KNOBS[i].key, key) {
            if let Kind::Int { min, max } = KNOBS[i].kind {
                return (min, max);
            }
        }
        i += 1;
    }
    panic!("no integer knob has this key")
}

const fn check_table() {
    let mut i = 0;
    while i < KNOBS.len() {
        let knob = &KNOBS[i];
        match (knob.kind, knob.default) {
            (Kind::Int { min, max }, DefaultValue::Int(d)) => {
                assert!(min <= d && d <= max, "a default is out of range")
            }
            (Kind::Int { min, max }, DefaultValue::Unset(_)) => assert!(min <= max, "a range is empty"),
            (Kind::Bool, DefaultValue::Bool(_)) => {}
            (Kind::Enum(choices), DefaultValue::Text(d)) => {
                let mut found = false;
                let mut c = 0;
                while c < choices.len() {
                    found |= same(choices[c], d);
                    c += 1;
                }
                assert!(found, "an enum knob's default is not one of its choices");
            }
            (Kind::Addr | Kind::LogFilter | Kind::Str | Kind::Path | Kind::File, DefaultValue::Text(_)) => {}
            (_, DefaultValue::Unset(_)) => {}
            _ => panic!("a knob's default is not of its kind"),
        }
        let mut j = i + 1;
        while j < KNOBS.len() {
            assert!(!same(knob.key, KNOBS[j].key), "two knobs share a key");
            j += 1;
        }
        i += 1;
    }
    let mut r = 0;
    while r < RELATIONS.len() {
        // Both sides must be integer knobs (int_range fails otherwise).
        let _ = (int_range(RELATIONS[r].key), int_range(RELATIONS[r].bound));
        r += 1;
    }
}
const _: () = check_table();

// A claim of the most messages the table allows fits the smallest segment it allows.
const _: () = assert!(
    (codec::largest_claim_record_bytes(int_range("api.max_messages_per_claim_or_pop").1 as usize)
        + SEGMENT_HEADER_BYTES) as i64
        <= int_range("storage.segment_size_bytes").0,
    "the largest claim must fit the smallest segment"
);

/// The knob with this dotted key.
pub fn knob(key: &str) -> Option<&'static Knob> {
    KNOBS.iter().find(|k| k.key == key)
}

/// The environment variable of a knob: `api.max_wait_s` ↔ `MARCONI_API_MAX_WAIT_S`.
pub fn env_name(key: &str) -> String {
    let mut name = String::with_capacity(8 + key.len());
    name.push_str("MARCONI_");
    name.extend(key.chars().map(|c| if c == '.' { '_' } else { c.to_ascii_uppercase() }));
    name
}

impl Knob {
    /// The unit of an integer knob, from its key's suffix; `None` for other kinds.
    pub fn unit(&self) -> Option<Unit> {
        let Kind::Int { .. } = self.kind else { return None };
        Some(if self.key.ends_with("_bytes") {
            Unit::Bytes
        } else if self.key.ends_with("_ms") {
            Unit::Milliseconds
        } else if self.key.ends_with("_s") {
            Unit::Seconds
        } else {
            Unit::Count
        })
    }

    pub fn env(&self) -> String {
        env_name(self.key)
    }

    /// `n` in this knob's unit, for people: `64 MiB`, `2 min`, `14 d`, `1024`.
    pub fn show(&self, n: i64) -> String {
        fn exact(n: i64, units: &[(i64, &str)], last: &str) -> String {
            match units.iter().find(|(size, _)| n != 0 && n % size == 0) {
                Some((size, name)) => format!("{} {name}", n / size),
                None => format!("{n} {last}"),
            }
        }
        match self.unit() {
            Some(Unit::Bytes) => exact(n, &[(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")], "bytes"),
            Some(Unit::Milliseconds) if n % 1000 != 0 || n == 0 => format!("{n} ms"),
            Some(Unit::Milliseconds) => exact(n / 1000, &[(DAY_S, "d"), (HOUR_S, "h"), (MINUTE_S, "min")], "s"),
            Some(Unit::Seconds) => exact(n, &[(DAY_S, "d"), (HOUR_S, "h"), (MINUTE_S, "min")], "s"),
            Some(Unit::Count) | None => n.to_string(),
        }
    }

    /// The default for people: `262144 (256 KiB)`, `50 ms`, `1024`, `sync`, or what unset means.
    pub fn default_text(&self) -> String {
        match self.default {
            DefaultValue::Int(n) => {
                let (shown, plain) = (self.show(n), self.show_plain(n));
                if shown == plain {
                    plain
                } else {
                    format!("{n} ({shown})")
                }
            }
            DefaultValue::Bool(b) => b.to_string(),
            DefaultValue::Text(t) => t.to_owned(),
            DefaultValue::Unset(meaning) => meaning.to_owned(),
        }
    }

    /// `n` with its unit's name and nothing converted: `262144 bytes`, `50 ms`.
    fn show_plain(&self, n: i64) -> String {
        match self.unit() {
            Some(Unit::Bytes) => format!("{n} bytes"),
            Some(Unit::Milliseconds) => format!("{n} ms"),
            Some(Unit::Seconds) => format!("{n} s"),
            Some(Unit::Count) | None => n.to_string(),
        }
    }

    /// What values it takes, for people: `1 KiB ..= 64 MiB`, `sync, interval, none, memory`.
    pub fn values_text(&self) -> String {
        match self.kind {
            Kind::Int { min, max } => format!("{} ..= {}", self.show(min), self.show(max)),
            Kind::Bool => "true, false".into(),
            Kind::Str => "text".into(),
            Kind::Secret => "text (never printed)".into(),
            Kind::Enum(choices) => choices.join(", "),
            Kind::Addr => "host:port".into(),
            Kind::CpuList => format!("CPU numbers 0 ..= {MAX_CPU}: \"0,2-5\" or [0, 2]"),
            Kind::NodeList => "host:port list: \"h1:7000,h2:7001\" or [\"h1:7000\"]".into(),
            Kind::Path => "a directory".into(),
            Kind::File => "a file".into(),
            Kind::LogFilter => "a tracing filter".into(),
        }
    }

    /// The placeholder of its value in `--help`.
    pub fn value_name(&self) -> &'static str {
        match (self.kind, self.unit()) {
            (Kind::Int { .. }, Some(Unit::Bytes)) => "BYTES",
            (Kind::Int { .. }, Some(Unit::Milliseconds)) => "MS",
            (Kind::Int { .. }, Some(Unit::Seconds)) => "SECONDS",
            (Kind::Int { .. }, _) => "N",
            (Kind::Bool, _) => "BOOL",
            (Kind::Enum(_), _) => "MODE",
            (Kind::Addr, _) => "ADDR",
            (Kind::CpuList, _) => "CPUS",
            (Kind::NodeList, _) => "NODES",
            (Kind::Path, _) => "DIR",
            (Kind::File, _) => "FILE",
            (Kind::LogFilter, _) => "FILTER",
            (Kind::Str | Kind::Secret, _) => "TEXT",
        }
    }

    /// The default as a TOML value; `None` when unset.
    fn default_toml(&self) -> Option<toml::Value> {
        match self.default {
            DefaultValue::Int(n) => Some(toml::Value::Integer(n)),
            DefaultValue::Bool(b) => Some(toml::Value::Boolean(b)),
            DefaultValue::Text(t) => Some(toml::Value::String(t.to_owned())),
            DefaultValue::Unset(_) => None,
        }
    }

    /// Judges a typed value: the one validator of ranges and choices, for every layer and for the
    /// whole configuration. Errors name the default as the origin; callers put the real one in.
    pub fn check(&'static self, value: &toml::Value) -> Result<(), SettingsError> {
        use toml::Value as V;
        let bad = |expected: String| SettingsError::BadValue {
            key: self.key.to_owned(),
            origin: Source::Default,
            value: value.to_string(),
            expected,
        };
        let out_of_range = |value: i64, min: i64, max: i64| SettingsError::OutOfRange {
            key: self.key,
            value,
            min,
            max,
            origin: Source::Default,
        };
        match (self.kind, value) {
            (Kind::Int { min, max }, V::Integer(n)) if !(min..=max).contains(n) => Err(out_of_range(*n, min, max)),
            (Kind::Enum(choices), V::String(s)) if !choices.contains(&s.as_str()) => {
                Err(bad(format!("one of {}", choices.join(", "))))
            }
            (Kind::CpuList, V::Array(cpus)) if cpus.is_empty() => Err(bad("at least one CPU".into())),
            (Kind::CpuList, V::Array(cpus)) => {
                match cpus.iter().filter_map(V::as_integer).find(|c| !(0..=MAX_CPU).contains(c)) {
                    Some(cpu) => Err(out_of_range(cpu, 0, MAX_CPU)),
                    None => Ok(()),
                }
            }
            (Kind::NodeList, V::Array(nodes)) if nodes.is_empty() => Err(bad("at least one host:port".into())),
            (Kind::NodeList, V::Array(nodes)) => {
                match nodes.iter().find(|n| n.as_str().is_none_or(|n| !is_host_port(n))) {
                    Some(_) => Err(bad("host:port entries such as 127.0.0.1:7000 or redis-1:6379".into())),
                    None => Ok(()),
                }
            }
            (Kind::LogFilter, V::String(s)) if tracing_subscriber::EnvFilter::try_new(s).is_err() => {
                Err(bad("a log filter such as `info` or `marconi=debug,warn`".into()))
            }
            _ => Ok(()),
        }
    }
}

/// The help of a knob's own flag: its line, default, values and environment variable (a switch
/// shows only its line and variable).
pub fn flag_help(key: &str) -> String {
    match knob(key) {
        Some(k) if matches!(k.kind, Kind::Bool) => format!("{} [env: {}]", k.doc, k.env()),
        Some(k) => {
            format!("{} [default: {}] [values: {}] [env: {}]", k.doc, k.default_text(), k.values_text(), k.env())
        }
        None => format!("(`{key}` is not a knob)"),
    }
}

/// A knob that has no effect while another knob has some value: `serve` warns when it is set
/// anyway, and `--print-config` says so.
struct Unused {
    key: &'static str,
    because: &'static str,
    when: fn(&Config) -> bool,
    why: &'static str,
}

fn in_memory(config: &Config) -> bool {
    config.storage.durability == Durability::Memory && !on_redis(config)
}

fn on_redis(config: &Config) -> bool {
    config.storage.backend == Backend::RedisCluster
}

const UNUSED: &[Unused] = &[
    Unused {
        key: "storage.durability",
        because: "storage.backend",
        when: on_redis,
        why: "no effect, `redis.ack` says what an acknowledgement promises",
    },
    Unused {
        key: "data_dir",
        because: "storage.backend",
        when: on_redis,
        why: "no effect, a node on the Redis Cluster keeps no data",
    },
    Unused {
        key: "storage.segment_size_bytes",
        because: "storage.backend",
        when: on_redis,
        why: "no effect, a node on the Redis Cluster keeps no segments",
    },
    Unused {
        key: "storage.repair",
        because: "storage.backend",
        when: on_redis,
        why: "no effect, a node on the Redis Cluster has nothing to recover",
    },
    Unused {
        key: "redis.nodes",
        because: "storage.backend",
        when: |c| !on_redis(c),
        why: "no effect, queues live in the embedded store",
    },
    Unused {
        key: "storage.flush_interval_ms",
        because: "storage.durability",
        when: |c| c.storage.durability != Durability::Interval,
        why: "no effect, only `interval` durability flushes on a timer",
    },
    Unused {
        key: "data_dir",
        because: "storage.durability",
        when: in_memory,
        why: "no effect, nothing is kept on disk",
    },
    Unused {
        key: "storage.segment_size_bytes",
        because: "storage.durability",
        when: in_memory,
        why: "no effect, no segment is made",
    },
    Unused {
        key: "storage.repair",
        because: "storage.durability",
        when: in_memory,
        why: "no effect, there is nothing to recover",
    },
    Unused {
        key: "auth.keys_file",
        because: "auth.mode",
        when: |c| c.auth.mode != AuthMode::Token,
        why: "no effect, only `token` mode verifies marconi tokens",
    },
    Unused {
        key: "auth.subjects_file",
        because: "auth.mode",
        when: |c| c.auth.mode != AuthMode::Token,
        why: "no effect, only `token` mode maps certificate subjects to credentials",
    },
    Unused {
        key: "auth.keystone.url",
        because: "auth.mode",
        when: |c| c.auth.mode != AuthMode::Keystone,
        why: "no effect, only `keystone` mode asks Keystone",
    },
    Unused {
        key: "auth.insecure_no_auth",
        because: "auth.mode",
        when: |c| c.auth.mode != AuthMode::None,
        why: "no effect, requests are authenticated",
    },
    Unused {
        key: "cpus",
        because: "shards",
        when: |c| c.shards.is_some_and(|s| c.cpus.as_ref().is_some_and(|cpus| cpus.len() > s)),
        why: "CPUs past the first `shards` stay idle",
    },
];

/// `MARCONI_…` variables that are not knobs: the configuration file and the client's target.
pub const OTHER_ENV: [&str; 5] =
    ["MARCONI_CONFIG", "MARCONI_URL", "MARCONI_PROJECT", "MARCONI_CLIENT_ID", "MARCONI_TOKEN"];

/// The `MARCONI_…` names among `names` that no knob reads: a typo there would otherwise be
/// silently ignored, so `serve` warns about each and `--print-config` lists them.
pub fn unknown_env<I, S>(names: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut unknown: Vec<String> = names
        .into_iter()
        .map(|n| n.as_ref().to_owned())
        .filter(|n| n.starts_with("MARCONI_") && !OTHER_ENV.contains(&n.as_str()))
        .filter(|n| !KNOBS.iter().any(|k| env_name(k.key) == *n))
        .collect();
    unknown.sort();
    unknown
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(var) => write!(f, "env {var}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("configuration file {} is not valid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("unknown configuration key `{key}` ({origin}); known keys{near}: {known}")]
    UnknownKey { key: String, origin: Source, near: String, known: String },
    #[error("`{key}` = {value} ({origin}) is not valid: expected {expected}")]
    BadValue { key: String, origin: Source, value: String, expected: String },
    #[error("`{key}` = {value} ({origin}) is out of range: allowed {min}..={max}")]
    OutOfRange { key: &'static str, value: i64, min: i64, max: i64, origin: Source },
    #[error(transparent)]
    Relation(Box<BrokenRelation>),
    #[error("`--set {0}` must look like KEY=VALUE, e.g. --set api.max_wait_s=10")]
    BadSet(String),
    /// The authentication settings cannot work together; the text says why and what to do.
    #[error("{0}")]
    Auth(String),
    /// The storage backend lacks what it needs; the text says what to set.
    #[error("{0}")]
    Backend(String),
    #[error("the configuration does not fit its own model: {0}")]
    Internal(String),
}

/// A broken [`Relation`]: both knobs, their values and where each came from.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{key}` = {value} ({origin}) needs `{bound}` of at least {needed}, but it is {bound_value} \
     ({bound_origin}): {why}. Raise `{bound}` or lower `{key}`"
)]
pub struct BrokenRelation {
    pub key: &'static str,
    pub value: i64,
    pub origin: Source,
    pub bound: &'static str,
    pub bound_value: i64,
    pub bound_origin: Source,
    pub needed: i64,
    pub why: &'static str,
}

impl SettingsError {
    /// The same error, blaming `origin` for the value (and for a relation's bound).
    fn with_origin(self, origin: impl Fn(&str) -> Source) -> Self {
        match self {
            SettingsError::BadValue { key, value, expected, .. } => {
                SettingsError::BadValue { origin: origin(&key), key, value, expected }
            }
            SettingsError::OutOfRange { key, value, min, max, .. } => {
                SettingsError::OutOfRange { key, value, min, max, origin: origin(key) }
            }
            SettingsError::Relation(mut broken) => {
                broken.origin = origin(broken.key);
                broken.bound_origin = origin(broken.bound);
                SettingsError::Relation(broken)
            }
            other => other,
        }
    }
}

/// The configuration in force and where each of its values came from.
#[derive(Debug, Clone)]
pub struct Effective {
    pub config: Config,
    sources: BTreeMap<&'static str, Source>,
}

/// The command line's contribution: `(key, value, flag as typed)`, in the order given (later wins).
pub type Flags = Vec<(String, String, String)>;

/// Every knob's default, typed, as one TOML table: the first layer of every configuration.
fn defaults_table() -> Result<toml::Table, SettingsError> {
    let mut table = toml::Table::new();
    for knob in KNOBS {
        if let Some(value) = knob.default_toml() {
            insert(&mut table, knob.key, typed(knob, value, &Source::Default)?);
        } else if let Some((section, _)) = knob.key.rsplit_once('.') {
            // A section of optional knobs only is still a section, at every depth.
            let mut at = &mut table;
            for name in section.split('.') {
                let entry = at.entry(name).or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let toml::Value::Table(inner) = entry else {
                    return Err(SettingsError::Internal(format!("`{section}` is both a knob and a section")));
                };
                at = inner;
            }
        }
    }
    Ok(table)
}

fn deserialize(table: toml::Table) -> Result<Config, SettingsError> {
    toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| SettingsError::Internal(e.to_string()))
}

/// The configuration of every knob at its default in [`KNOBS`]: what `Config::default()` is.
pub fn defaults() -> Result<Config, SettingsError> {
    deserialize(defaults_table()?)
}

impl Default for Config {
    /// Every knob at its default in [`KNOBS`], built once.
    fn default() -> Self {
        static DEFAULTS: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
        DEFAULTS
            .get_or_init(|| {
                defaults()
                    .unwrap_or_else(|e| panic!("settings::KNOBS must give every Config field a valid default: {e}"))
            })
            .clone()
    }
}

impl Effective {
    /// Where the value of `key` came from.
    pub fn source(&self, key: &str) -> Source {
        knob(key).and_then(|k| self.sources.get(k.key)).cloned().unwrap_or(Source::Default)
    }

    /// Builds the configuration from its four layers. `env` is looked up by variable name (pass
    /// `|v| std::env::var(v).ok()` outside tests).
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: &[(String, String, String)],
    ) -> Result<Self, SettingsError> {
        let mut merged = defaults_table()?;
        let mut sources = BTreeMap::new();
        let mut projects = BTreeMap::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| SettingsError::Read { path: path.to_owned(), source })?;
            let mut table: toml::Table = toml::from_str(&text)
                .map_err(|e| SettingsError::Syntax { path: path.to_owned(), message: e.message().to_owned() })?;
            projects = project_limits(&mut table, &Source::File(path.to_owned()))?;
            let mut leaves = Vec::new();
            flatten("", toml::Value::Table(table), &mut leaves);
            for (key, value) in leaves {
                let source = Source::File(path.to_owned());
                let Some(knob) = knob(&key) else { return Err(unknown(&key, source)) };
                let value = typed(knob, value, &source)?;
                insert(&mut merged, knob.key, value);
                sources.insert(knob.key, source);
            }
        }
        for knob in KNOBS {
            let var = env_name(knob.key);
            if let Some(text) = env(&var) {
                let source = Source::Env(var);
                let value = typed(knob, toml::Value::String(text), &source)?;
                insert(&mut merged, knob.key, value);
                sources.insert(knob.key, source);
            }
        }
        for (key, text, flag) in flags {
            let source = Source::Flag(flag.clone());
            let Some(knob) = knob(key) else { return Err(unknown(key, source)) };
            let value = typed(knob, toml::Value::String(text.clone()), &source)?;
            insert(&mut merged, knob.key, value);
            sources.insert(knob.key, source);
        }
        let mut config = deserialize(merged)?;
        config.limits.projects = projects;
        // An empty secret means "none": the share endpoint then refuses, as Zaqar does.
        let keystone = &mut config.auth.keystone;
        for secret in [&mut config.signed_url.secret_key, &mut keystone.service_token, &mut keystone.password] {
            if secret.as_deref() == Some("") {
                *secret = None;
            }
        }
        let effective = Effective { config, sources };
        effective.config.validate().map_err(|e| e.with_origin(|key| effective.source(key)))?;
        Ok(effective)
    }

    /// Knobs set to a value that the rest of the configuration leaves (partly) unused, one line
    /// each, naming both knobs. Not errors: a profile may keep a value for when the mode changes.
    pub fn notes(&self) -> Vec<String> {
        let Ok(values) = flat_values(&self.config) else { return Vec::new() };
        let show = |key: &str| values.get(key).map_or_else(|| "unset".to_owned(), toml::Value::to_string);
        UNUSED
            .iter()
            .filter(|u| self.source(u.key) != Source::Default && (u.when)(&self.config))
            .map(|u| {
                format!(
                    "`{}` = {} ({}) with `{}` = {} ({}): {}",
                    u.key,
                    show(u.key),
                    self.source(u.key),
                    u.because,
                    show(u.because),
                    self.source(u.because),
                    u.why
                )
            })
            .collect()
    }

    /// The effective configuration as TOML (usable as a configuration file), each value followed
    /// by a comment naming its source. Secrets are redacted.
    pub fn render(&self) -> String {
        let head = "# marconi: effective configuration (defaults < file < MARCONI_* env < flags).\n\
                    # Each line names where its value came from; unset optional keys are commented out.\n";
        let mut out = render_toml(head, &self.config, |knob| format!("{}; env {}", self.source(knob.key), knob.env()));
        for (project, overrides) in &self.config.limits.projects {
            out.push_str(&format!("\n[limits.projects.{}]\n", toml::Value::String(project.clone())));
            for (limit, value) in overrides.iter() {
                out.push_str(&format!("{} = {value}\n", limit.name()));
            }
        }
        out
    }
}

/// `config` as TOML in the table's order, every line followed by `# ` and its `comment`.
fn render_toml(head: &str, config: &Config, comment: impl Fn(&Knob) -> String) -> String {
    let values = match flat_values(config) {
        Ok(v) => v,
        Err(e) => return format!("# cannot render the configuration: {e}\n"),
    };
    let mut out = head.to_owned();
    let mut section = "";
    for knob in KNOBS {
        let (sec, name) = knob.key.rsplit_once('.').unwrap_or(("", knob.key));
        if sec != section {
            out.push_str(&format!("\n[{sec}]\n"));
            section = sec;
        }
        let line = match (values.get(knob.key), knob.kind, knob.default) {
            (Some(_), Kind::Secret, _) => format!("{name} = \"<redacted>\""),
            (Some(v), _, _) => format!("{name} = {v}"),
            (None, _, DefaultValue::Unset(meaning)) => format!("# {name} = (unset: {meaning})"),
            (None, _, _) => format!("# {name} = (unset)"),
        };
        out.push_str(&format!("{line:<48} # {}\n", comment(knob)));
    }
    out
}

/// The body of `tuning/default.toml` (everything after its opening comment): every knob at its
/// default with its line from the table.
pub fn default_profile() -> String {
    render_toml("", &Config::default(), |knob| knob.doc.to_owned())
}

/// The knob reference of `tuning/README.md`: one row per knob, then the rules between knobs.
pub fn markdown_reference() -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out = String::from("| knob | default | values | environment | what it does |\n|---|---|---|---|---|\n");
    for knob in KNOBS {
        out.push_str(&format!(
            "| `{}` | {} | {} | `{}` | {} |\n",
            knob.key,
            cell(&knob.default_text()),
            cell(&knob.values_text()),
            knob.env(),
            cell(knob.doc)
        ));
    }
    out.push_str("\nRules between knobs, checked at start-up (the error names both):\n\n");
    for relation in RELATIONS {
        out.push_str(&format!("- {}: otherwise {}.\n", relation.describe(), relation.why));
    }
    out
}

impl Config {
    /// Checks every knob with [`Knob::check`], then the [`RELATIONS`] between knobs. The single
    /// place where a configuration is judged, whatever built it (the server runs it too).
    pub fn validate(&self) -> Result<(), SettingsError> {
        let values = flat_values(self)?;
        for knob in KNOBS {
            if let Some(value) = values.get(knob.key) {
                knob.check(value)?;
            }
        }
        self.check_auth()?;
        if on_redis(self) && self.redis.nodes.is_none() {
            return Err(SettingsError::Backend(
                "storage.backend = redis-cluster needs redis.nodes, the cluster's seed nodes \
                 (e.g. --redis-nodes 127.0.0.1:7000; scripts/redis-cluster.sh start makes a local cluster)"
                    .into(),
            ));
        }
        for (project, overrides) in &self.limits.projects {
            check_project_id(project, &Source::Default)?;
            for (limit, value) in overrides.iter() {
                let knob =
                    knob(limit.knob()).ok_or_else(|| SettingsError::Internal(format!("{limit:?} has no knob")))?;
                knob.check(&toml::Value::Integer(i64::try_from(value).unwrap_or(i64::MAX)))?;
            }
        }
        let int = |key: &str| values.get(key).and_then(toml::Value::as_integer);
        for relation in RELATIONS.iter().filter(|r| r.applies(self)) {
            if let (Some(value), Some(bound_value)) = (int(relation.key), int(relation.bound)) {
                let needed = relation.needed(value);
                if bound_value < needed {
                    return Err(SettingsError::Relation(Box::new(BrokenRelation {
                        key: relation.key,
                        value,
                        origin: Source::Default,
                        bound: relation.bound,
                        bound_value,
                        bound_origin: Source::Default,
                        needed,
                        why: relation.why,
                    })));
                }
            }
        }
        Ok(())
    }
}

impl Config {
    /// The first address served beyond this machine (`listen`, then `tls.listen`).
    fn exposed(&self) -> Option<SocketAddr> {
        [Some(self.listen), self.tls.listen].into_iter().flatten().find(|a| !a.ip().is_loopback())
    }

    /// What each authentication mode needs, and the one refusal `serve` makes for safety: no
    /// authentication on an address beyond this machine, unless the operator says so.
    fn check_auth(&self) -> Result<(), SettingsError> {
        let auth = &self.auth;
        let fail = |text: String| Err(SettingsError::Auth(text));
        match auth.mode {
            AuthMode::None if !auth.insecure_no_auth => match self.exposed() {
                Some(addr) => fail(format!(
                    "refusing to serve {addr} without authentication (auth.mode = none): anyone who can reach it \
                     could read, claim and delete every project's queues; use --auth token (with auth.keys_file) \
                     or --auth keystone, or pass --insecure-no-auth if something in front of marconi authenticates"
                )),
                None => Ok(()),
            },
            AuthMode::Token if auth.keys_file.is_none() => fail(
                "auth.mode = token needs auth.keys_file (make one with `marconi token keygen --keys-file PATH`)".into(),
            ),
            AuthMode::Keystone => {
                let ks = &auth.keystone;
                match ks.url.as_deref() {
                    None => return fail("auth.mode = keystone needs auth.keystone.url (http://host:port)".into()),
                    Some(url) if !url.starts_with("http://") => {
                        return fail(format!(
                            "auth.keystone.url = {url:?}: marconi talks to Keystone over plain http:// only; for \
                             https, point it at a local TLS-terminating proxy (docs/security.md)"
                        ))
                    }
                    Some(_) => {}
                }
                let credentials = ks.username.is_some() && ks.password.is_some() && ks.project.is_some();
                if ks.service_token.is_none() && !credentials {
                    return fail(
                        "auth.mode = keystone needs auth.keystone.service_token, or auth.keystone.username, \
                         password and project, to validate tokens with"
                            .into(),
                    );
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Takes the `[limits.projects.<id>]` tables out of a configuration file: each is a project's
/// overrides, by limit name, each value judged by its knob.
fn project_limits(table: &mut toml::Table, source: &Source) -> Result<BTreeMap<String, Overrides>, SettingsError> {
    let Some(toml::Value::Table(limits)) = table.get_mut("limits") else { return Ok(BTreeMap::new()) };
    let Some(projects) = limits.remove("projects") else { return Ok(BTreeMap::new()) };
    let bad = |key: String, value: &toml::Value, expected: &str| SettingsError::BadValue {
        key,
        origin: source.clone(),
        value: value.to_string(),
        expected: expected.to_owned(),
    };
    let toml::Value::Table(projects) = projects else {
        return Err(bad("limits.projects".into(), &projects, "tables [limits.projects.<project id>]"));
    };
    let mut out = BTreeMap::new();
    for (project, values) in projects {
        check_project_id(&project, source)?;
        let key = |name: &str| format!("limits.projects.{project}.{name}");
        let toml::Value::Table(values) = values else {
            return Err(bad(key(""), &values, "a table of limits by name"));
        };
        let mut overrides = Overrides::default();
        for (name, value) in values {
            let Some(limit) = Limit::from_name(&name) else {
                return Err(SettingsError::UnknownKey {
                    key: key(&name),
                    origin: source.clone(),
                    near: " in [limits.projects.<id>]".into(),
                    known: crate::limits::names(),
                });
            };
            let checked =
                typed(knob(limit.knob()).ok_or_else(|| SettingsError::Internal(name.clone()))?, value, source)
                    .map_err(|e| match e {
                        SettingsError::OutOfRange { value, min, max, origin, .. } => SettingsError::BadValue {
                            key: key(&name),
                            origin,
                            value: value.to_string(),
                            expected: format!("{min}..={max}"),
                        },
                        SettingsError::BadValue { origin, value, expected, .. } => {
                            SettingsError::BadValue { key: key(&name), origin, value, expected }
                        }
                        other => other,
                    })?;
            let n = checked.as_integer().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
            overrides.set(limit, n).map_err(|e| bad(key(&name), &checked, &e.to_string()))?;
        }
        out.insert(project, overrides);
    }
    Ok(out)
}

/// A project id as the API takes it: 1..=256 bytes.
fn check_project_id(project: &str, source: &Source) -> Result<(), SettingsError> {
    if project.is_empty() || project.len() > crate::config::MAX_PROJECT_ID_BYTES {
        return Err(SettingsError::BadValue {
            key: format!("limits.projects.{project}"),
            origin: source.clone(),
            value: format!("{project:?}"),
            expected: format!("a project id of 1..={} bytes", crate::config::MAX_PROJECT_ID_BYTES),
        });
    }
    Ok(())
}

fn unknown(key: &str, source: Source) -> SettingsError {
    let section = key.rsplit_once('.').map_or("", |(s, _)| s);
    let mut in_section: Vec<&str> =
        KNOBS.iter().map(|k| k.key).filter(|k| k.rsplit_once('.').map_or("", |(s, _)| s) == section).collect();
    let near = if in_section.is_empty() || section.is_empty() {
        in_section = KNOBS.iter().map(|k| k.key).collect();
        String::new()
    } else {
        format!(" in [{section}]")
    };
    SettingsError::UnknownKey { key: key.to_owned(), origin: source, near, known: in_section.join(", ") }
}

/// Turns `value` (text from the environment or a flag, or a file's TOML value) into the knob's
/// typed value and judges it with [`Knob::check`] on the spot, so the error names the layer at
/// fault even when a later layer would override it.
fn typed(knob: &'static Knob, value: toml::Value, source: &Source) -> Result<toml::Value, SettingsError> {
    use toml::Value as V;
    let bad = |value: &V, expected: String| SettingsError::BadValue {
        key: knob.key.to_owned(),
        origin: source.clone(),
        value: value.to_string(),
        expected,
    };
    let text = value.as_str();
    let out = match knob.kind {
        Kind::Int { min, max } => {
            let n = match (&value, text) {
                (V::Integer(n), _) => Some(*n),
                (_, Some(t)) => t.trim().replace('_', "").parse::<i64>().ok(),
                _ => None,
            };
            V::Integer(n.ok_or_else(|| bad(&value, format!("an integer in {min}..={max}")))?)
        }
        Kind::Bool => match (&value, text.map(|t| t.trim().to_ascii_lowercase())) {
            (V::Boolean(b), _) => V::Boolean(*b),
            (_, Some(t)) if matches!(t.as_str(), "true" | "1" | "yes" | "on") => V::Boolean(true),
            (_, Some(t)) if matches!(t.as_str(), "false" | "0" | "no" | "off") => V::Boolean(false),
            _ => return Err(bad(&value, "true or false".into())),
        },
        Kind::Str | Kind::Secret | Kind::Path | Kind::File | Kind::LogFilter | Kind::Enum(_) => match text {
            Some(t) => V::String(t.to_owned()),
            None => return Err(bad(&value, "a string".into())),
        },
        Kind::Addr => match text.map(|t| t.trim().parse::<SocketAddr>()) {
            Some(Ok(addr)) => V::String(addr.to_string()),
            _ => return Err(bad(&value, "an address like 127.0.0.1:8888 or [::]:8888".into())),
        },
        Kind::CpuList => {
            let cpus = match &value {
                V::String(t) => parse_cpu_list(t).map_err(|e| bad(&value, e))?,
                V::Array(items) => items
                    .iter()
                    .map(|v| v.as_integer().and_then(|n| usize::try_from(n).ok()))
                    .collect::<Option<Vec<usize>>>()
                    .ok_or_else(|| bad(&value, "CPU numbers".into()))?,
                _ => return Err(bad(&value, "a CPU list like [0, 1] or \"0,2-5\"".into())),
            };
            V::Array(cpus.into_iter().map(|c| V::Integer(c as i64)).collect())
        }
        Kind::NodeList => match &value {
            V::String(t) => {
                V::Array(t.split(',').map(str::trim).filter(|n| !n.is_empty()).map(|n| V::String(n.into())).collect())
            }
            V::Array(_) => value.clone(),
            _ => return Err(bad(&value, "a list like [\"127.0.0.1:7000\"] or \"h1:7000,h2:7001\"".into())),
        },
    };
    knob.check(&out).map_err(|e| e.with_origin(|_| source.clone()))?;
    Ok(out)
}

/// Whether `s` is `host:port` with a non-empty host and a port number.
fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok_and(|p| p > 0)
    })
}

/// Parses `0,2-4` into `[0, 2, 3, 4]`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("`{part}` is not a CPU number or range like 2-5");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
                if a > b || b as i64 > MAX_CPU {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cpus.is_empty() {
        return Err("the CPU list is empty".into());
    }
    Ok(cpus)
}

/// Leaves of a TOML tree as (dotted key, value); arrays are leaves.
fn flatten(prefix: &str, value: toml::Value, out: &mut Vec<(String, toml::Value)>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let key = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        leaf => out.push((prefix.to_owned(), leaf)),
    }
}

/// Sets `key` (dotted) in `table`, creating sections on the way.
fn insert(table: &mut toml::Table, key: &str, value: toml::Value) {
    match key.split_once('.') {
        None => {
            table.insert(key.to_owned(), value);
        }
        Some((section, rest)) => {
            let entry = table.entry(section.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

/// Every value `config` holds, by dotted key (unset optional knobs are absent).
pub fn flat_values(config: &Config) -> Result<BTreeMap<String, toml::Value>, SettingsError> {
    let value = toml::Value::try_from(config).map_err(|e| SettingsError::Internal(e.to_string()))?;
    let mut leaves = Vec::new();
    flatten("", value, &mut leaves);
    Ok(leaves.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: Option<&str>, env: &[(&str, &str)], flags: &[(&str, &str)]) -> Result<Effective, SettingsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("marconi.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let flags: Flags = flags.iter().map(|(k, v)| (k.to_string(), v.to_string(), format!("--{k}"))).collect();
        Effective::load(
            file.map(|_| path.as_path()),
            |var| env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone()),
            &flags,
        )
    }

    #[test]
    fn the_redis_backend_needs_seeds_given_as_a_list_or_text() {
        let e = load(None, &[], &[("storage.backend", "redis-cluster")]).unwrap_err().to_string();
        assert!(e.contains("redis.nodes") && e.contains("redis-cluster.sh"), "{e}");
        let text = load(
            None,
            &[("MARCONI_REDIS_NODES", "10.0.0.1:7000, redis-2:7001")],
            &[("storage.backend", "redis-cluster")],
        )
        .unwrap();
        assert_eq!(
            text.config.redis.nodes.as_deref(),
            Some(&["10.0.0.1:7000".to_owned(), "redis-2:7001".to_owned()][..])
        );
        let file =
            load(Some("[storage]\nbackend = \"redis-cluster\"\n[redis]\nnodes = [\"h:1\"]\n"), &[], &[]).unwrap();
        assert_eq!(file.config.redis.nodes.as_deref(), Some(&["h:1".to_owned()][..]));
        for bad in ["h", "h:0", ":7000", "h:99999"] {
            let e = load(None, &[], &[("redis.nodes", bad)]).unwrap_err().to_string();
            assert!(e.contains("redis.nodes") && e.contains("host:port"), "{bad}: {e}");
        }
    }

    #[test]
    fn table_and_config_name_the_same_knobs() {
        let mut full =
            Config { shards: Some(2), cpus: Some(vec![0]), data_dir: Some("/tmp".into()), ..Default::default() };
        full.signed_url.secret_key = Some("k".into());
        full.auth.keys_file = Some("/k".into());
        full.auth.subjects_file = Some("/s".into());
        full.redis.nodes = Some(vec!["h:1".into()]);
        let tls = &mut full.tls;
        (tls.listen, tls.cert_file, tls.key_file, tls.client_ca_file) =
            (Some(([127, 0, 0, 1], 1).into()), Some("/c".into()), Some("/k".into()), Some("/a".into()));
        let ks = &mut full.auth.keystone;
        (ks.url, ks.service_token, ks.username, ks.password, ks.project) =
            (Some("u".into()), Some("t".into()), Some("n".into()), Some("p".into()), Some("j".into()));
        let keys: Vec<String> = flat_values(&full).unwrap().into_keys().collect();
        for key in &keys {
            assert!(knob(key).is_some(), "Config has `{key}` but KNOBS does not: add a row");
        }
        for knob in KNOBS {
            assert!(keys.iter().any(|k| k == knob.key), "KNOBS has `{}` but Config does not", knob.key);
        }
        let mut envs: Vec<String> = KNOBS.iter().map(|k| env_name(k.key)).collect();
        envs.sort();
        envs.dedup();
        assert_eq!(envs.len(), KNOBS.len(), "two knobs map to one environment variable");
    }

    #[test]
    fn project_limits_load_from_the_file_check_each_value_and_print_back() {
        let file = "[limits]\nqueues_per_project = 5\n[limits.projects.a]\nqueues_per_project = 1\n\
                    [limits.projects.\"b.c\"]\nbytes_per_queue = 0\n";
        let effective = load(Some(file), &[], &[]).unwrap();
        let projects = &effective.config.limits.projects;
        assert_eq!(projects["a"].get(Limit::QueuesPerProject), Some(1));
        assert_eq!(projects["b.c"].get(Limit::BytesPerQueue), Some(0));
        assert_eq!(effective.config.limits.defaults().get(Limit::QueuesPerProject), 5);
        // `--print-config` is a configuration file that loads back to the same overrides.
        let again = load(Some(&effective.render()), &[], &[]).unwrap();
        assert_eq!(&again.config.limits.projects, projects);
        for bad in [
            "[limits.projects.a]\nqueues = 1\n",
            "[limits.projects.a]\nqueues_per_project = -1\n",
            "[limits.projects.a]\nqueues_per_project = \"x\"\n",
            "[limits]\nprojects = 3\n",
            "[limits.projects]\na = 3\n",
        ] {
            let err = load(Some(bad), &[], &[]).unwrap_err().to_string();
            assert!(err.contains("limits.projects"), "{bad}: {err}");
        }
    }

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
        let effective = load(None, &[], &[]).unwrap();
        assert_eq!(effective.source("api.max_wait_s"), Source::Default);
    }

    #[test]
    fn defaults_are_the_tables() {
        let values = flat_values(&Config::default()).unwrap();
        for knob in KNOBS {
            match knob.default_toml() {
                Some(default) => {
                    let typed = typed(knob, default, &Source::Default).unwrap();
                    assert_eq!(
                        values.get(knob.key),
                        Some(&typed),
                        "Config::default() and KNOBS differ on `{}`",
                        knob.key
                    );
                }
                None => assert_eq!(values.get(knob.key), None, "`{}` is unset by default", knob.key),
            }
        }
        assert!(knob("data_dir").unwrap().default_text().contains(crate::config::DEFAULT_DATA_DIR));
        assert_eq!(crate::config::ApiLimits::default().max_wait_s, 20);
    }

    #[test]
    fn values_show_in_their_units() {
        let k = |key| knob(key).unwrap();
        assert_eq!(k("api.max_messages_post_size_bytes").default_text(), "262144 (256 KiB)");
        assert_eq!(k("api.max_messages_post_size_bytes").values_text(), "1 KiB ..= 64 MiB");
        assert_eq!(k("http.idle_timeout_ms").default_text(), "120000 (2 min)");
        assert_eq!(k("storage.flush_interval_ms").default_text(), "50 ms");
        assert_eq!(k("api.max_message_ttl_s").default_text(), "1209600 (14 d)");
        assert_eq!(k("api.max_wait_s").default_text(), "20 s");
        assert_eq!(k("io_ring_depth").default_text(), "128");
        assert_eq!(k("storage.durability").values_text(), "sync, interval, none, memory");
        assert_eq!(k("shards").unit(), Some(Unit::Count));
        assert_eq!(k("listen").unit(), None);
        assert!(flag_help("storage.segment_size_bytes").contains("[default: 67108864 (64 MiB)]"));
        assert!(flag_help("storage.segment_size_bytes").contains("MARCONI_STORAGE_SEGMENT_SIZE_BYTES"));
    }

    #[test]
    fn every_relation_names_both_knobs_and_the_least_bound() {
        for r in RELATIONS {
            let (DefaultValue::Int(mut value), Kind::Int { min, .. }) =
                (knob(r.key).unwrap().default, knob(r.bound).unwrap().kind)
            else {
                panic!("{r:?} relates integer knobs with defaults")
            };
            // The smallest value from the default up whose rule can be broken in the bound's range.
            value += (min + 1 - r.needed(value)).max(0);
            let needed = r.needed(value);
            // Whatever else the bound limits goes to its minimum, so that only this rule can break.
            let others: Vec<(&str, String)> = RELATIONS
                .iter()
                .filter(|o| o.bound == r.bound && o.key != r.key)
                .map(|o| match knob(o.key).unwrap().kind {
                    Kind::Int { min, .. } => (o.key, min.to_string()),
                    _ => unreachable!("relations relate integer knobs"),
                })
                .collect();
            let with = |bound: i64| {
                let bound = bound.to_string();
                let mut flags: Vec<(&str, &str)> = others.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let value = value.to_string();
                flags.extend([(r.key, value.as_str()), (r.bound, bound.as_str())]);
                load(None, &[], &flags).map_err(|e| e.to_string())
            };
            let err = with(needed - 1).unwrap_err();
            assert!(err.contains(&format!("`{}`", r.key)) && err.contains(&format!("`{}`", r.bound)), "{err}");
            assert!(err.contains(&format!("at least {needed}")) && err.contains("flag --"), "{err}");
            with(needed).unwrap();
        }
        // Segments matter only to durable storage.
        load(None, &[], &[("storage.segment_size_bytes", "65536"), ("storage.durability", "memory")]).unwrap();
    }

    #[test]
    fn values_without_effect_are_noted_with_both_knobs() {
        let e = load(None, &[("MARCONI_STORAGE_FLUSH_INTERVAL_MS", "5")], &[]).unwrap();
        let notes = e.notes();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("`storage.flush_interval_ms`") && notes[0].contains("`storage.durability`"));
        assert!(notes[0].contains("env MARCONI_STORAGE_FLUSH_INTERVAL_MS"), "{notes:?}");
        let e = load(None, &[], &[("storage.flush_interval_ms", "5"), ("storage.durability", "interval")]).unwrap();
        assert!(e.notes().is_empty());
        let e = load(None, &[], &[("shards", "1"), ("cpus", "0-1")]).unwrap();
        assert!(e.notes()[0].contains("`cpus`") && e.notes()[0].contains("`shards`"), "{:?}", e.notes());
        assert!(load(None, &[], &[]).unwrap().notes().is_empty());
    }

    #[test]
    fn unknown_marconi_variables_are_named() {
        let names = ["MARCONI_API_MAX_WAIT_S", "MARCONI_API_MAX_WAIT", "MARCONI_URL", "PATH", "MARCONI_SHARD"];
        assert_eq!(unknown_env(names), ["MARCONI_API_MAX_WAIT", "MARCONI_SHARD"]);
    }

    #[test]
    fn env_names_are_derived_from_keys() {
        assert_eq!(env_name("api.max_message_ttl_s"), "MARCONI_API_MAX_MESSAGE_TTL_S");
        assert_eq!(env_name("listen"), "MARCONI_LISTEN");
        assert_eq!(env_name("signed_url.secret_key"), "MARCONI_SIGNED_URL_SECRET_KEY");
    }

    #[test]
    fn layers_override_in_order_and_remember_their_source() {
        let file = "shards = 3\n[api]\nmax_wait_s = 5\nmax_message_ttl_s = 7200\n\
                    [http]\nidle_timeout_ms = 5000\nheader_read_timeout_ms = 4000\n";
        let e = load(
            Some(file),
            &[("MARCONI_API_MAX_WAIT_S", "7"), ("MARCONI_HTTP_MAX_HEADERS", "32"), ("MARCONI_SHARDS", "4")],
            &[("shards", "5")],
        )
        .unwrap();
        assert_eq!(e.config.shards, Some(5));
        assert_eq!(e.source("shards"), Source::Flag("--shards".into()));
        assert_eq!(e.config.api.max_wait_s, 7);
        assert_eq!(e.source("api.max_wait_s"), Source::Env("MARCONI_API_MAX_WAIT_S".into()));
        assert_eq!(e.config.api.max_message_ttl_s, 7200);
        assert!(matches!(e.source("api.max_message_ttl_s"), Source::File(_)));
        assert_eq!(e.config.http.max_headers, 32);
        assert_eq!(e.config.http.idle_timeout_ms, 5000);
        assert_eq!(e.config.http.max_body_bytes, Config::default().http.max_body_bytes);
        let text = e.render();
        assert!(text.contains("max_wait_s = 7"), "{text}");
        assert!(text.contains("env MARCONI_API_MAX_WAIT_S"), "{text}");
        assert!(text.contains("flag --shards"), "{text}");
        assert!(text.contains("# cpus = (unset"), "{text}");
    }

    #[test]
    fn rendered_configuration_loads_back_to_the_same_values() {
        let e = load(None, &[("MARCONI_CPUS", "0")], &[("api.max_wait_s", "3")]).unwrap();
        let again = load(Some(&e.render()), &[], &[]).unwrap();
        assert_eq!(flat_values(&again.config).unwrap(), flat_values(&e.config).unwrap());
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = load(Some("[api]\nmax_ttl = 5\n"), &[], &[]).unwrap_err().to_string();
        assert!(err.contains("`api.max_ttl`") && err.contains("api.max_message_ttl_s"), "{err}");
        let err = load(Some("colour = 1\n"), &[], &[]).unwrap_err().to_string();
        assert!(err.contains("`colour`"), "{err}");
        let err = load(None, &[], &[("http.nope", "1")]).unwrap_err().to_string();
        assert!(err.contains("`http.nope`") && err.contains("--http.nope"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_key_range_and_source() {
        let err = load(None, &[("MARCONI_API_MAX_MESSAGE_TTL_S", "5")], &[]).unwrap_err().to_string();
        assert!(err.contains("api.max_message_ttl_s") && err.contains("60..=31536000"), "{err}");
        assert!(err.contains("MARCONI_API_MAX_MESSAGE_TTL_S"), "{err}");
        let err = load(Some("[http]\nmax_headers = 2\n"), &[], &[]).unwrap_err().to_string();
        assert!(err.contains("http.max_headers") && err.contains("8..=1024"), "{err}");
        let err = load(Some("io_memory_bytes = -1\n"), &[], &[]).unwrap_err().to_string();
        assert!(err.contains("io_memory_bytes"), "{err}");
        let err = load(None, &[], &[("shards", "many")]).unwrap_err().to_string();
        assert!(err.contains("shards") && err.contains("an integer in 1..=1024"), "{err}");
        let err = load(None, &[("MARCONI_API_CLIENT_ID_UUID_SAFE", "maybe")], &[]).unwrap_err().to_string();
        assert!(err.contains("strict, off"), "{err}");
        let err = load(None, &[], &[("listen", "localhost")]).unwrap_err().to_string();
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn knobs_that_bound_each_other_are_checked_together() {
        let err = load(Some("[api]\ndefault_message_ttl_s = 7200\nmax_message_ttl_s = 3600\n"), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("api.default_message_ttl_s") && err.contains("api.max_message_ttl_s"), "{err}");
        let err = load(None, &[("MARCONI_HTTP_MAX_BODY_BYTES", "100000")], &[]).unwrap_err().to_string();
        assert!(err.contains("http.max_body_bytes"), "{err}");
    }

    #[test]
    fn cpu_lists_accept_ranges_arrays_and_text() {
        assert_eq!(parse_cpu_list("0,2-4").unwrap(), vec![0, 2, 3, 4]);
        assert!(parse_cpu_list("4-2").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("").is_err());
        assert_eq!(load(Some("cpus = [1, 0]\n"), &[], &[]).unwrap().config.cpus, Some(vec![1, 0]));
        assert_eq!(load(Some("cpus = \"0-2\"\n"), &[], &[]).unwrap().config.cpus, Some(vec![0, 1, 2]));
        assert!(load(None, &[], &[("cpus", "5000")]).is_err());
    }

    #[test]
    fn secrets_are_redacted_and_empty_secrets_unset() {
        let e = load(None, &[("MARCONI_SIGNED_URL_SECRET_KEY", "hunter2")], &[]).unwrap();
        assert!(!e.render().contains("hunter2"));
        assert!(e.render().contains("<redacted>"));
        let e = load(None, &[], &[("signed_url.secret_key", "")]).unwrap();
        assert_eq!(e.config.signed_url.secret_key, None);
    }

    #[test]
    fn authentication_settings_are_checked_together() {
        let err = load(None, &[], &[("listen", "0.0.0.0:8888")]).unwrap_err().to_string();
        assert!(err.contains("without authentication") && err.contains("--insecure-no-auth"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        load(None, &[], &[("listen", "0.0.0.0:8888"), ("auth.insecure_no_auth", "true")]).unwrap();
        load(None, &[], &[("listen", "[::1]:8888")]).unwrap();
        let err = load(None, &[], &[("auth.mode", "token")]).unwrap_err().to_string();
        assert!(err.contains("auth.keys_file") && err.contains("marconi token keygen"), "{err}");
        load(None, &[], &[("listen", "0.0.0.0:1"), ("auth.mode", "token"), ("auth.keys_file", "/k")]).unwrap();
        let keystone = |extra: &[(&str, &str)]| {
            let mut flags = vec![("auth.mode", "keystone")];
            flags.extend_from_slice(extra);
            load(None, &[], &flags).map_err(|e| e.to_string())
        };
        assert!(keystone(&[]).unwrap_err().contains("auth.keystone.url"));
        let url = ("auth.keystone.url", "http://127.0.0.1:5000");
        assert!(keystone(&[url]).unwrap_err().contains("service_token"));
        keystone(&[url, ("auth.keystone.service_token", "t")]).unwrap();
        let creds = [("auth.keystone.username", "u"), ("auth.keystone.password", "p"), ("auth.keystone.project", "s")];
        keystone(&[&[url], &creds[..]].concat()).unwrap();
        let tls = keystone(&[("auth.keystone.url", "https://k:5000"), ("auth.keystone.service_token", "t")]);
        assert!(tls.unwrap_err().contains("http://"));
        // An empty secret is no secret.
        assert!(keystone(&[url, ("auth.keystone.service_token", "")]).is_err());
    }

    #[test]
    fn bad_log_filters_are_refused() {
        assert!(load(None, &[], &[("log", "info,=[")]).is_err());
        assert!(load(None, &[], &[("log", "marconi=debug,warn")]).is_ok());
    }
}
