//! The queue semantics on a Redis Cluster (`--storage-backend redis-cluster`): each
//! [`Command`] becomes calls of the function library in `library.lua` (loaded on every master
//! by `crate::redis`), and their replies become the same [`Reply`]s and [`EngineError`]s the
//! embedded [`crate::queue::Engine`] gives, which stays the specification.
//!
//! Every key of a queue shares one hash tag, `<prefix>:{<project>/<queue>}` with `{`, `}`, `%`
//! and `/` percent-escaped, so each call on a queue is one atomic function on one master. What
//! spans slots is done in idempotent steps from here:
//! - the project index `<prefix>:{<project>}:queues` (a lex zset) is updated *before* a queue
//!   is created and *after* it is deleted, so it always holds every queue; listings drop the
//!   names whose queue is gone. A create racing a delete of the same queue can leave a queue
//!   out of the index until the next create of it.
//! - dead letters: the claim moves them into the source's `:dead` stream, then they are posted
//!   to the DLQ by a function that remembers their source ids (a retry never doubles them), then
//!   acknowledged off `:dead`. An interrupted move is finished by the next claim of the queue.
//! - quotas: the queue's own message and byte quotas are exact (checked inside the post). The
//!   project's are approximate: the project's other queues are summed from their `:q` hashes
//!   at most once per [`HELD_CACHE_MS`] per shard (the first [`MAX_PROJECT_SCAN`] queues of its
//!   index), so posts racing on several queues or nodes can overshoot by what they add in that
//!   window.
//!
//! Replies are decoded defensively: a reply of the wrong shape is a `StoreError::Io` naming the
//! function, never a panic.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use super::command::{Command, Reply, Volume};
use crate::config::ApiLimits;
use crate::limits::{Limit, Refused, StoreQuota};
use crate::queue::{
    dead_letter_cycle, glob_matches, metadata_matches, post_size_refusal, ClaimId, ClaimOutcome, ClaimParams,
    ClaimView, EngineError, ListMessages, ListQueues, MessageId, MessagePage, MessageSummary, MessageView, Metadata,
    NewMessage, PatchOp, QueueListing, QueuePage, QueueStats, Revocation, Revoked, MAX_DEAD_LETTER_HOPS,
};
use crate::redis::{Cluster, Kind, Value};
use crate::storage::{QueueRef, StoreError};

/// The function library, loaded on every master.
pub const LIBRARY: &str = include_str!("library.lua");
/// The keys of a queue beside its base, as `keys_of` in `library.lua` names them (the `:n`
/// pub/sub channel is no key).
const QUEUE_KEY_SUFFIXES: [&str; 11] =
    [":q", ":log", ":exp", ":ready", ":dl", ":cl", ":st", ":c", ":ce", ":dead", ":src"];

/// Keys one `SCAN` call of [`RedisQueues::sweep_step`] asks a master to look at.
const IDLE_SWEEP_SCAN_COUNT: &[u8] = b"256";

pub const LIBRARY_NAME: &str = "marconi_v1";

/// How long a project's summed figures serve posts before they are summed again.
pub const HELD_CACHE_MS: u64 = 1000;
/// Queues of a project summed for its quotas, and names a filtered count walks, at most.
pub const MAX_PROJECT_SCAN: usize = 10_000;
/// Projects whose figures one shard keeps at once.
const HELD_CACHE_PROJECTS: usize = 256;
/// Names read from the project index per step of a listing.
const INDEX_CHUNK: usize = 256;
/// Compare-and-set attempts of a metadata patch before it answers 503.
const PATCH_ATTEMPTS: usize = 8;
/// Elements of one reply decoded at most (a page of the largest size is far below this).
const MAX_REPLY_ITEMS: usize = 1 << 20;

/// The result of one command: the reply, and for a listing or claim that found nothing, how
/// long until the queue's next scheduled change (a delay ending, a claim expiring).
#[derive(Debug, Clone)]
pub struct Executed {
    pub reply: Reply,
    pub next_change_in_ms: Option<u64>,
}

impl Executed {
    fn now(reply: Reply) -> Self {
        Executed { reply, next_change_in_ms: None }
    }
}

/// The summed figures of one project's queues, for the project quotas.
struct Held {
    at: Instant,
    queues: HashMap<String, (u64, u64)>,
}

/// The queues of every project, kept on the Redis Cluster. One per shard.
pub struct RedisQueues {
    cluster: Rc<Cluster>,
    /// The key prefix with braces escaped, so that only our tags are hash tags.
    prefix: Vec<u8>,
    limits: ApiLimits,
    held: RefCell<HashMap<String, Held>>,
    /// Where the rolling sweep of idle queues stands.
    pass: RefCell<Pass>,
}

/// A pass of [`RedisQueues::sweep_step`]: the master it is on (in `Cluster::masters` order), its
/// `SCAN` cursor there, what it counted so far, and the totals of the last complete pass.
#[derive(Debug, Default)]
struct Pass {
    master: usize,
    cursor: Vec<u8>,
    queues: u64,
    messages: u64,
    finished: Option<Volume>,
}

/// A dead letter waiting in a queue's `:dead` stream.
struct DeadLetter {
    id: Vec<u8>,
    queue: String,
    seq: u64,
    ttl_s: u32,
    body: Vec<u8>,
}

impl RedisQueues {
    pub fn new(cluster: Rc<Cluster>, prefix: &str, limits: ApiLimits) -> Self {
        let mut escaped = Vec::with_capacity(prefix.len());
        escape(&mut escaped, prefix);
        RedisQueues { cluster, prefix: escaped, limits, held: RefCell::new(HashMap::new()), pass: RefCell::default() }
    }

    /// One step of the rolling sweep over every master's queues that hold messages (their `:exp`
    /// keys, found by `SCAN` from where the last step stopped): each gets its bounded sweep, so
    /// expired messages and ended claims of queues nobody touches do not hold the cluster's memory
    /// until the next call on them. At most `budget` queues a step; returns how many were swept.
    /// A pass that reached the last master leaves its totals in [`RedisQueues::swept_volume`].
    /// Several nodes sweeping at once only repeat work.
    pub async fn sweep_step(&self, budget: usize) -> Result<usize, EngineError> {
        let mut pattern = Vec::with_capacity(self.prefix.len() + 8);
        for &b in &self.prefix {
            if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
                pattern.push(b'\\');
            }
            pattern.push(b);
        }
        pattern.extend_from_slice(b":{*}:exp");
        let masters = self.cluster.masters();
        let mut swept = 0;
        while swept < budget {
            let (index, cursor) = {
                let pass = self.pass.borrow();
                // A pass starts each master at SCAN's cursor 0 (an empty cursor is a new pass).
                let cursor = if pass.cursor.is_empty() { b"0".to_vec() } else { pass.cursor.clone() };
                (pass.master, cursor)
            };
            let Some(master) = masters.get(index) else {
                let mut pass = self.pass.borrow_mut();
                pass.finished = Some(Volume { queues: pass.queues, messages: pass.messages });
                *pass = Pass { finished: pass.finished, ..Pass::default() };
                break;
            };
            let args: [&[u8]; 6] = [b"SCAN", &cursor, b"MATCH", &pattern, b"COUNT", IDLE_SWEEP_SCAN_COUNT];
            let reply = self.cluster.on_node(&master.addr, &args).await.map_err(|e| io(format!("SCAN: {e}")))?;
            let Some([Value::Bulk(next), Value::Array(keys)]) = reply.as_array() else {
                return Err(io(format!("SCAN answered {reply}")));
            };
            for key in keys {
                if let Some(base) = key.as_bytes().and_then(|k| k.strip_suffix(b":exp")) {
                    let held = self.call("mqv1_sweep", base, &[], Kind::Write).await?.as_int().unwrap_or(-1);
                    swept += 1;
                    if let Ok(held) = u64::try_from(held) {
                        let mut pass = self.pass.borrow_mut();
                        pass.queues += 1;
                        pass.messages += held;
                    }
                }
            }
            let mut pass = self.pass.borrow_mut();
            if next.as_slice() == b"0" {
                (pass.master, pass.cursor) = (index + 1, b"0".to_vec());
            } else {
                pass.cursor = next.clone();
            }
        }
        Ok(swept)
    }

    /// The queues holding messages and the messages they held, over the cluster, as the last
    /// complete pass of [`RedisQueues::sweep_step`] counted them (zero before one completed, and
    /// on shards that do not sweep).
    pub fn swept_volume(&self) -> Volume {
        self.pass.borrow().finished.unwrap_or_default()
    }

    /// The base of the queue's keys, `<prefix>:{<project>/<queue>}` (every key of the queue is
    /// this plus a suffix; see `library.lua`).
    pub fn queue_key(&self, q: QueueRef<'_>) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + q.project.len() + q.name.len() + 4);
        key.extend_from_slice(&self.prefix);
        key.extend_from_slice(b":{");
        escape(&mut key, q.project);
        key.push(b'/');
        escape(&mut key, q.name);
        key.push(b'}');
        key
    }

    /// The project's index of queue names.
    pub fn index_key(&self, project: &str) -> Vec<u8> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(b":{");
        escape(&mut key, project);
        key.extend_from_slice(b"}:queues");
        key
    }

    fn revocations_key(&self) -> Vec<u8> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(b":{revocations}");
        key
    }

    /// The sharded pub/sub channel (same hash tag as the queue) that posts, claim releases and
    /// sweeps that make messages claimable publish to.
    pub fn wake_channel(&self, q: QueueRef<'_>) -> Vec<u8> {
        let mut channel = self.queue_key(q);
        channel.extend_from_slice(b":n");
        channel
    }

    /// Runs one command.
    pub async fn execute(&self, q: QueueRef<'_>, command: &Command) -> Result<Executed, EngineError> {
        Ok(match command {
            Command::CreateQueue { metadata } => Executed::now(Reply::Created(self.create_queue(q, metadata).await?)),
            Command::QueueExists => Executed::now(Reply::Exists(self.held_of(q).await?.is_some())),
            Command::GetQueue => Executed::now(Reply::Metadata(self.metadata(q).await?.map(|(m, _, _)| m))),
            Command::PatchQueue { ops } => Executed::now(Reply::Metadata(Some(self.patch_queue(q, ops).await?))),
            Command::DeleteQueue => {
                let key = self.queue_key(q);
                self.call("mqv1_drop", &key, &[], Kind::Write).await?;
                self.call("mqv1_index_del", &self.index_key(q.project), &[q.name.as_bytes()], Kind::Write).await?;
                Executed::now(Reply::Done)
            }
            Command::Stats => Executed::now(Reply::Stats(self.stats(q).await?)),
            Command::Purge => {
                self.call("mqv1_purge", &self.queue_key(q), &[], Kind::Write).await?;
                Executed::now(Reply::Done)
            }
            Command::ListQueues { opts } => Executed::now(Reply::Queues(self.list_queues(q.project, opts).await?)),
            Command::PostMessages { client_hash, messages, bodies, request_bytes, quota } => {
                Executed::now(Reply::Posted(self.post(q, *client_hash, messages, bodies, *request_bytes, quota).await?))
            }
            Command::ListMessages { opts } => {
                let (page, next) = self.list_messages(q, opts).await?;
                Executed { reply: Reply::Page(page), next_change_in_ms: next }
            }
            Command::GetMessages { ids } => Executed::now(Reply::Page(self.get_messages(q, ids).await?)),
            Command::DeleteMessage { id, claim } => {
                let (cseq, secret) = match claim {
                    Some(c) => (c.seq.to_string(), hex16(c.secret)),
                    None => (String::new(), String::new()),
                };
                let args = [
                    id.epoch.to_string().into_bytes(),
                    id.seq.to_string().into_bytes(),
                    cseq.into_bytes(),
                    secret.into_bytes(),
                ];
                self.call_owned("mqv1_delete", &self.queue_key(q), &args, Kind::Write).await?;
                Executed::now(Reply::Done)
            }
            Command::DeleteMessages { ids, claim_ids } => {
                self.delete_messages(q, ids, claim_ids.as_deref()).await?;
                Executed::now(Reply::Done)
            }
            Command::Pop { limit } => {
                let value =
                    self.call("mqv1_pop", &self.queue_key(q), &[limit.to_string().as_bytes()], Kind::Write).await?;
                let mut r = Fields::new("mqv1_pop", value)?;
                let (now, epoch, n) = (r.u64()?, r.epoch()?, r.count()?);
                Executed::now(Reply::Page(r.page(n, epoch, now, Claims::None)?))
            }
            Command::Claim { params } => {
                let (outcome, next) = self.claim(q, params).await?;
                Executed { reply: Reply::Claimed(outcome), next_change_in_ms: next }
            }
            Command::GetClaim { id } => Executed::now(Reply::Claim(self.get_claim(q, *id).await?)),
            Command::RenewClaim { id, ttl_s, grace_s } => {
                let args = [
                    id.seq.to_string().into_bytes(),
                    hex16(id.secret).into_bytes(),
                    ttl_s.to_string().into_bytes(),
                    grace_s.to_string().into_bytes(),
                ];
                self.call_owned("mqv1_renew", &self.queue_key(q), &args, Kind::Write).await?;
                Executed::now(Reply::Done)
            }
            Command::ReleaseClaim { id } => {
                let args = [id.seq.to_string().into_bytes(), hex16(id.secret).into_bytes()];
                self.call_owned("mqv1_release", &self.queue_key(q), &args, Kind::Write).await?;
                Executed::now(Reply::Done)
            }
            Command::Revoke { revoked, max } => {
                self.revoke(q, *revoked, *max).await?;
                Executed::now(Reply::Done)
            }
            Command::Revocations => Executed::now(Reply::Revocations(self.revocations().await?)),
            // Messages are left at 0: only the queue count is asked for (`queues_per_project`), and
            // summing the project's messages would cost a call per queue.
            Command::ProjectVolume => {
                let value = self.call("mqv1_index_count", &self.index_key(q.project), &[], Kind::Read).await?;
                let queues = value.as_int().and_then(|n| u64::try_from(n).ok());
                let queues = queues.ok_or_else(|| malformed("mqv1_index_count", "not a count"))?;
                Executed::now(Reply::Volume(Volume { queues, messages: 0 }))
            }
            Command::Volume
            | Command::Metrics
            | Command::InstallRevocations(_)
            | Command::PutLimits { .. }
            | Command::SetLimits { .. } => {
                return Err(EngineError::Invalid(format!(
                    "{} is the shard's own business, not the redis-cluster backend's",
                    command_name(command)
                )))
            }
        })
    }

    // -----------------------------------------------------------------------------------------
    // Calls
    // -----------------------------------------------------------------------------------------

    /// One function call on the master of `key`'s slot; the function's own refusals become the
    /// engine's errors, everything else that failed a `StoreError::Io` (503).
    async fn call(&self, function: &'static str, key: &[u8], args: &[&[u8]], kind: Kind) -> Result<Value, EngineError> {
        // A queue function names every key of its queue, not only the base: while its slot
        // migrates, Redis then answers TRYAGAIN or ASK (retried by the client) instead of
        // running the function against the half of the queue still on the old master.
        // All the names live in one buffer: one allocation a call, not one a key.
        let mut names = Vec::new();
        let mut declared: [&[u8]; 1 + QUEUE_KEY_SUFFIXES.len()] = [key; 1 + QUEUE_KEY_SUFFIXES.len()];
        let declared = if function.starts_with("mqv1_index") || function.starts_with("mqv1_revo") {
            &declared[..1]
        } else {
            names.reserve(QUEUE_KEY_SUFFIXES.iter().map(|s| key.len() + s.len()).sum());
            let mut ends = [0; QUEUE_KEY_SUFFIXES.len()];
            for (end, suffix) in ends.iter_mut().zip(QUEUE_KEY_SUFFIXES) {
                names.extend_from_slice(key);
                names.extend_from_slice(suffix.as_bytes());
                *end = names.len();
            }
            let mut start = 0;
            for (slot, end) in declared.iter_mut().skip(1).zip(ends) {
                *slot = names.get(start..end).unwrap_or_default();
                start = end;
            }
            &declared[..]
        };
        match self.cluster.fcall(function, declared, args, kind).await {
            Ok(Value::Error(message)) => Err(self.refusal(function, &message)),
            Ok(value) => Ok(value),
            Err(err) => Err(io(format!("{function}: {err}"))),
        }
    }

    async fn call_owned(
        &self,
        function: &'static str,
        key: &[u8],
        args: &[Vec<u8>],
        kind: Kind,
    ) -> Result<Value, EngineError> {
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        self.call(function, key, &args, kind).await
    }

    /// An error reply of the library: `MQ_<CODE> <detail>` (see `fail` in `library.lua`).
    fn refusal(&self, function: &str, message: &str) -> EngineError {
        let text = message.strip_prefix("ERR ").unwrap_or(message);
        let mut words = text.split(' ');
        let code = words.next().unwrap_or_default();
        let detail: Vec<&str> = words.collect();
        match code {
            "MQ_CLAIMED" => EngineError::MessageClaimed,
            "MQ_NOTCLAIMED" => EngineError::MessageNotClaimed,
            "MQ_MISMATCH" => EngineError::ClaimMismatch,
            "MQ_NOCLAIM" => EngineError::ClaimNotFound,
            "MQ_NOQUEUE" => EngineError::QueueNotFound,
            "MQ_POSTSIZE" => {
                let queue_max = detail.first().and_then(|d| d.parse::<u32>().ok()).filter(|&m| m > 0);
                post_size_refusal(queue_max, self.limits.max_messages_post_size_bytes)
            }
            "MQ_FULL" => {
                let max = detail.first().copied().unwrap_or("?");
                EngineError::Conflict(format!(
                    "This server already holds {max} revocations (auth.max_revocations): rotate the signing key \
                     instead, which revokes every token it signed."
                ))
            }
            "MQ_QUOTA" => {
                let limit = detail.first().and_then(|name| Limit::from_name(name));
                let value = detail.get(1).and_then(|v| v.parse::<u64>().ok());
                match (limit, value) {
                    (Some(limit), Some(value)) => EngineError::Refused(Refused::Quota { limit, value }),
                    _ => io(format!("{function}: unreadable quota refusal: {message}")),
                }
            }
            _ => io(format!("{function}: {message}")),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Queues
    // -----------------------------------------------------------------------------------------

    async fn index_add(&self, q: QueueRef<'_>) -> Result<(), EngineError> {
        self.call("mqv1_index_add", &self.index_key(q.project), &[q.name.as_bytes()], Kind::Write).await.map(|_| ())
    }

    /// The engine's `create_queue`: `true` if it did not exist; non-empty metadata replaces the
    /// old, none or empty leaves it.
    async fn create_queue(&self, q: QueueRef<'_>, metadata: &Option<Metadata>) -> Result<bool, EngineError> {
        let metadata = metadata.as_ref().filter(|m| !m.is_empty());
        if let Some(m) = metadata {
            self.check_dead_letter_cycle(q, m).await?;
        }
        self.index_add(q).await?;
        let mut args = vec![seed().into_bytes()];
        match metadata {
            Some(m) => {
                args.push(b"1".to_vec());
                args.push(m.to_json());
                args.extend(settings_args(m));
            }
            None => args.push(b"0".to_vec()),
        }
        let value = self.call_owned("mqv1_create", &self.queue_key(q), &args, Kind::Write).await?;
        match value.as_int() {
            Some(1) => Ok(true),
            Some(0) => Ok(false),
            _ => Err(malformed("mqv1_create", "not 0 or 1")),
        }
    }

    /// The queue's metadata (empty when none was set), its version and its dead-letter queue;
    /// `None` if there is no queue.
    async fn metadata(&self, q: QueueRef<'_>) -> Result<Option<(Metadata, i64, String)>, EngineError> {
        let value = self.call("mqv1_meta", &self.queue_key(q), &[], Kind::Read).await?;
        let mut r = Fields::new("mqv1_meta", value)?;
        let exists = r.int()? == 1;
        let version = r.int()?;
        let json = r.bytes()?;
        let dlq = r.text()?;
        if !exists {
            return Ok(None);
        }
        let metadata = if json.is_empty() {
            Metadata::default()
        } else {
            Metadata::from_stored(&json, &self.limits).unwrap_or_default()
        };
        Ok(Some((metadata, version, dlq)))
    }

    /// Messages and body bytes the queue holds; `None` if there is no queue.
    async fn held_of(&self, q: QueueRef<'_>) -> Result<Option<(u64, u64)>, EngineError> {
        let value = self.call("mqv1_held", &self.queue_key(q), &[], Kind::Read).await?;
        let mut r = Fields::new("mqv1_held", value)?;
        let exists = r.int()? == 1;
        let held = (r.u64()?, r.u64()?);
        Ok(exists.then_some(held))
    }

    /// Read, patch here with the engine's own code, write back if nobody changed it meanwhile.
    async fn patch_queue(&self, q: QueueRef<'_>, ops: &[PatchOp]) -> Result<Metadata, EngineError> {
        for _ in 0..PATCH_ATTEMPTS {
            let (current, version, _) = self.metadata(q).await?.ok_or(EngineError::QueueNotFound)?;
            let next = current.apply_patch(ops, &self.limits)?;
            self.check_dead_letter_cycle(q, &next).await?;
            let mut args = vec![version.to_string().into_bytes()];
            if next.is_empty() {
                args.push(Vec::new());
                args.extend(std::iter::repeat_n(Vec::new(), SETTINGS));
            } else {
                args.push(next.to_json());
                args.extend(settings_args(&next));
            }
            match self.call_owned("mqv1_set_meta", &self.queue_key(q), &args, Kind::Write).await? {
                Value::Simple(s) if s == "MQ_RETRY" => continue,
                Value::Int(1) => return Ok(next),
                _ => return Err(malformed("mqv1_set_meta", "neither 1 nor MQ_RETRY")),
            }
        }
        Err(io(format!("the metadata of queue {} kept changing during {PATCH_ATTEMPTS} attempts to patch it", q.name)))
    }

    /// The engine's `check_dead_letter_cycle`, following the chain through each queue's
    /// metadata (the chain may cross slots, so this is a read per hop, not atomic).
    async fn check_dead_letter_cycle(&self, q: QueueRef<'_>, meta: &Metadata) -> Result<(), EngineError> {
        let Some(first) = meta.settings().dead_letter_queue.as_deref() else {
            return Ok(());
        };
        if first == q.name {
            return Err(dead_letter_cycle(None));
        }
        let mut target = first.to_owned();
        for _ in 0..MAX_DEAD_LETTER_HOPS {
            let next = self.metadata(QueueRef { project: q.project, name: &target }).await?;
            match next.map(|(_, _, dlq)| dlq).filter(|d| !d.is_empty()) {
                None => return Ok(()),
                Some(n) if n == q.name => return Err(dead_letter_cycle(Some(first))),
                Some(n) => target = n,
            }
        }
        Ok(())
    }

    async fn stats(&self, q: QueueRef<'_>) -> Result<QueueStats, EngineError> {
        let value = self.call("mqv1_stats", &self.queue_key(q), &[], Kind::Read).await?;
        let mut r = Fields::new("mqv1_stats", value)?;
        let now = r.u64()?;
        let epoch = r.epoch()?;
        let (claimed, total) = (r.u64()?, r.u64()?);
        let (oldest, oldest_created, newest, newest_created) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        if epoch == 0 {
            return Ok(QueueStats::default());
        }
        let summary = |seq: u64, created_ms: u64| {
            (seq > 0).then(|| MessageSummary {
                id: MessageId::new(epoch, seq),
                age_s: now.saturating_sub(created_ms) / 1000,
                created_ms,
            })
        };
        Ok(QueueStats {
            claimed,
            free: total.saturating_sub(claimed),
            total,
            oldest: summary(oldest, oldest_created),
            newest: summary(newest, newest_created),
        })
    }

    /// The engine's `list_queues` over the project index: names in byte order after `after`,
    /// the name filters applied here, then each candidate's metadata (or existence) read from
    /// its own slot with all reads of a step in flight at once.
    async fn list_queues(&self, project: &str, opts: &ListQueues) -> Result<QueuePage, EngineError> {
        let index = self.index_key(project);
        let name_ok = |name: &str| -> bool {
            if opts.visible.as_deref().is_some_and(|glob| !glob_matches(glob, name)) {
                return false;
            }
            opts.name_contains.as_deref().is_none_or(|part| name.contains(part))
        };
        let mut queues = Vec::new();
        let mut after = opts.after.clone().unwrap_or_default();
        while queues.len() < opts.limit {
            let names = self.index_range(&index, &after, INDEX_CHUNK).await?;
            let Some(last) = names.last() else { break };
            after = last.clone();
            let wanted: Vec<&String> = names.iter().filter(|n| name_ok(n)).collect();
            let found = join_all(wanted.iter().map(|name| self.metadata(QueueRef { project, name }))).await;
            for (name, meta) in wanted.into_iter().zip(found) {
                let Some((meta, _, _)) = meta? else { continue };
                if !metadata_matches(Some(&meta), &opts.metadata_filters) {
                    continue;
                }
                queues.push(QueueListing { name: name.clone(), metadata: opts.detailed.then_some(meta) });
                if queues.len() >= opts.limit {
                    break;
                }
            }
            if names.len() < INDEX_CHUNK {
                break;
            }
        }
        let filtered = opts.name_contains.as_deref().is_some_and(|s| !s.is_empty())
            || !opts.metadata_filters.is_empty()
            || opts.visible.is_some();
        let count = match (opts.with_count, filtered) {
            (false, _) => None,
            (true, false) => {
                let value = self.call("mqv1_index_count", &index, &[], Kind::Read).await?;
                Some(
                    value
                        .as_int()
                        .and_then(|n| u64::try_from(n).ok())
                        .ok_or_else(|| malformed("mqv1_index_count", "not a count"))?,
                )
            }
            (true, true) => Some(self.count_matching(project, &index, &name_ok, &opts.metadata_filters).await?),
        };
        Ok(QueuePage { queues, count })
    }

    /// The count of a filtered listing: the first [`MAX_PROJECT_SCAN`] names of the index that
    /// pass the filters (metadata filters read each candidate's metadata).
    async fn count_matching(
        &self,
        project: &str,
        index: &[u8],
        name_ok: &dyn Fn(&str) -> bool,
        filters: &[(String, Json)],
    ) -> Result<u64, EngineError> {
        let (mut count, mut seen, mut after) = (0u64, 0usize, String::new());
        while seen < MAX_PROJECT_SCAN {
            let names = self.index_range(index, &after, INDEX_CHUNK).await?;
            let Some(last) = names.last() else { break };
            after = last.clone();
            seen += names.len();
            let wanted: Vec<&String> = names.iter().filter(|n| name_ok(n)).collect();
            if filters.is_empty() {
                count += wanted.len() as u64;
            } else {
                let found = join_all(wanted.iter().map(|name| self.metadata(QueueRef { project, name }))).await;
                for meta in found {
                    if meta?.is_some_and(|(m, _, _)| metadata_matches(Some(&m), filters)) {
                        count += 1;
                    }
                }
            }
            if names.len() < INDEX_CHUNK {
                break;
            }
        }
        Ok(count)
    }

    async fn index_range(&self, index: &[u8], after: &str, limit: usize) -> Result<Vec<String>, EngineError> {
        let value =
            self.call("mqv1_index_range", index, &[after.as_bytes(), limit.to_string().as_bytes()], Kind::Read).await?;
        let mut r = Fields::new("mqv1_index_range", value)?;
        let mut names = Vec::with_capacity(r.len());
        while !r.is_empty() {
            names.push(r.text()?);
        }
        Ok(names)
    }

    // -----------------------------------------------------------------------------------------
    // Messages
    // -----------------------------------------------------------------------------------------

    /// The engine's `post_messages_within`: all or nothing, the queue created lazily when the
    /// quota allows it (listed in the project index first).
    async fn post(
        &self,
        q: QueueRef<'_>,
        client_hash: u64,
        messages: &[NewMessage],
        bodies: &[u8],
        request_bytes: usize,
        quota: &StoreQuota,
    ) -> Result<Vec<MessageId>, EngineError> {
        let mut slices = Vec::with_capacity(messages.len());
        for m in messages {
            let body = bodies
                .get(m.body.start as usize..m.body.end as usize)
                .ok_or_else(|| EngineError::Invalid("A message body lies outside the request.".into()))?;
            slices.push(body);
        }
        let (others_messages, others_bytes) =
            if quota.counts_project() { self.project_held_besides(q).await? } else { (0, 0) };
        let number = |v: Option<u64>| v.unwrap_or(0).to_string().into_bytes();
        let mut args: Vec<Vec<u8>> = vec![
            hex16(client_hash).into_bytes(),
            request_bytes.to_string().into_bytes(),
            self.limits.max_messages_post_size_bytes.to_string().into_bytes(),
            self.limits.default_message_ttl_s.to_string().into_bytes(),
            if quota.may_create_queue { b"1".to_vec() } else { b"0".to_vec() },
            seed().into_bytes(),
            number(quota.messages_per_queue),
            number(quota.bytes_per_queue),
            number(quota.messages_per_project),
            number(quota.bytes_per_project),
            others_messages.to_string().into_bytes(),
            others_bytes.to_string().into_bytes(),
            messages.len().to_string().into_bytes(),
        ];
        for (m, body) in messages.iter().zip(&slices) {
            args.push(m.ttl_s.map(|t| t.to_string()).unwrap_or_default().into_bytes());
            args.push(m.delay_s.map(|d| d.to_string()).unwrap_or_default().into_bytes());
            args.push(body.to_vec());
        }
        let key = self.queue_key(q);
        let mut value = self.call_owned("mqv1_post", &key, &args, Kind::Write).await?;
        if matches!(&value, Value::Simple(s) if s == "MQ_CREATE") {
            self.index_add(q).await?;
            if let Some(flag) = args.get_mut(4) {
                *flag = b"2".to_vec();
            }
            value = self.call_owned("mqv1_post", &key, &args, Kind::Write).await?;
        }
        let mut r = Fields::new("mqv1_post", value)?;
        let _created = r.int()?;
        let epoch = r.epoch()?;
        let first = r.u64()?;
        let n = r.u64()?;
        if n != messages.len() as u64 {
            return Err(malformed("mqv1_post", "a count other than the messages posted"));
        }
        Ok((0..n).map(|i| MessageId::new(epoch, first + i)).collect())
    }

    /// Messages and bytes of the project's queues other than `q`, as summed at most
    /// [`HELD_CACHE_MS`] ago.
    async fn project_held_besides(&self, q: QueueRef<'_>) -> Result<(u64, u64), EngineError> {
        let fresh = |h: &Held| h.at.elapsed() < Duration::from_millis(HELD_CACHE_MS);
        let cached = self.held.borrow().get(q.project).filter(|h| fresh(h)).map(|h| sum_besides(&h.queues, q.name));
        if let Some(held) = cached {
            return Ok(held);
        }
        let index = self.index_key(q.project);
        let mut queues = HashMap::new();
        let mut after = String::new();
        while queues.len() < MAX_PROJECT_SCAN {
            let names = self.index_range(&index, &after, INDEX_CHUNK).await?;
            let Some(last) = names.last() else { break };
            after = last.clone();
            let found = join_all(names.iter().map(|name| self.held_of(QueueRef { project: q.project, name }))).await;
            for (name, held) in names.iter().zip(found) {
                if let Some(held) = held? {
                    queues.insert(name.clone(), held);
                }
            }
            if names.len() < INDEX_CHUNK {
                break;
            }
        }
        let held = sum_besides(&queues, q.name);
        let mut cache = self.held.borrow_mut();
        if cache.len() >= HELD_CACHE_PROJECTS {
            cache.retain(|_, h| fresh(h));
            if cache.len() >= HELD_CACHE_PROJECTS {
                cache.clear();
            }
        }
        cache.insert(q.project.to_owned(), Held { at: Instant::now(), queues });
        Ok(held)
    }

    async fn list_messages(
        &self,
        q: QueueRef<'_>,
        opts: &ListMessages,
    ) -> Result<(MessagePage, Option<u64>), EngineError> {
        let flag = |b: bool| if b { b"1".as_slice() } else { b"0".as_slice() };
        let args = [
            opts.after_seq.to_string().into_bytes(),
            opts.limit.to_string().into_bytes(),
            hex16(opts.client_hash).into_bytes(),
            flag(opts.echo).to_vec(),
            flag(opts.include_claimed).to_vec(),
            flag(opts.include_delayed).to_vec(),
        ];
        let value = self.call_owned("mqv1_list", &self.queue_key(q), &args, Kind::Read).await?;
        let mut r = Fields::new("mqv1_list", value)?;
        let (now, epoch, n) = (r.u64()?, r.epoch()?, r.count()?);
        let page = r.page(n, epoch, now, Claims::PerMessage)?;
        let next = u64::try_from(r.int()?).ok().filter(|_| page.messages.is_empty());
        Ok((page, next))
    }

    /// The engine's `get_messages`: in the order asked, each once.
    async fn get_messages(&self, q: QueueRef<'_>, ids: &[MessageId]) -> Result<MessagePage, EngineError> {
        let mut args = Vec::with_capacity(ids.len() * 2);
        for (i, id) in ids.iter().enumerate() {
            if ids.iter().take(i).any(|seen| seen == id) {
                continue;
            }
            args.push(id.epoch.to_string().into_bytes());
            args.push(id.seq.to_string().into_bytes());
        }
        let value = self.call_owned("mqv1_get", &self.queue_key(q), &args, Kind::Read).await?;
        let mut r = Fields::new("mqv1_get", value)?;
        let (now, epoch, n) = (r.u64()?, r.epoch()?, r.count()?);
        r.page(n, epoch, now, Claims::PerMessage)
    }

    async fn delete_messages(
        &self,
        q: QueueRef<'_>,
        ids: &[MessageId],
        claim_ids: Option<&[ClaimId]>,
    ) -> Result<(), EngineError> {
        let claims = claim_ids.unwrap_or_default();
        let mut args = Vec::with_capacity(2 + claims.len() * 2 + ids.len() * 2);
        args.push(if claim_ids.is_some() { b"1".to_vec() } else { b"0".to_vec() });
        args.push(claims.len().to_string().into_bytes());
        for c in claims {
            args.push(c.seq.to_string().into_bytes());
            args.push(hex16(c.secret).into_bytes());
        }
        for id in ids {
            args.push(id.epoch.to_string().into_bytes());
            args.push(id.seq.to_string().into_bytes());
        }
        self.call_owned("mqv1_delete_many", &self.queue_key(q), &args, Kind::Write).await.map(|_| ())
    }

    // -----------------------------------------------------------------------------------------
    // Claims
    // -----------------------------------------------------------------------------------------

    /// The engine's `claim`, with the dead-letter move finished here (so `dead_letters` is
    /// always `None`). A move that fails is left in `:dead` for the next claim to finish; the
    /// claim itself still answers.
    async fn claim(&self, q: QueueRef<'_>, params: &ClaimParams) -> Result<(ClaimOutcome, Option<u64>), EngineError> {
        let args = [
            params.ttl_s.to_string().into_bytes(),
            params.grace_s.to_string().into_bytes(),
            params.limit.to_string().into_bytes(),
            hex16(params.secret).into_bytes(),
        ];
        let key = self.queue_key(q);
        let value = self.call_owned("mqv1_claim", &key, &args, Kind::Write).await?;
        let mut r = Fields::new("mqv1_claim", value)?;
        let (now, epoch, claim_seq, n) = (r.u64()?, r.epoch()?, r.u64()?, r.count()?);
        let id = ClaimId::new(claim_seq, params.secret);
        let page = r.page(n, epoch, now, Claims::All(id))?;
        let letters = r.count()?;
        let mut dead = Vec::with_capacity(letters.min(64));
        for _ in 0..letters {
            dead.push(DeadLetter {
                id: r.bytes()?,
                queue: r.text()?,
                seq: r.u64()?,
                ttl_s: r.u32()?,
                body: r.bytes()?,
            });
        }
        let next = u64::try_from(r.int()?).ok();
        if !dead.is_empty() {
            if let Err(err) = self.move_dead_letters(q, epoch, dead).await {
                tracing::warn!(%err, queue = q.name, "moving messages to a dead-letter queue failed; the next claim retries");
            }
        }
        let claim = (claim_seq > 0).then_some((id, page));
        let next = next.filter(|_| claim.is_none());
        Ok((ClaimOutcome { claim, dead_letters: None }, next))
    }

    /// Posts dead letters to their DLQs (each remembers their source ids, so a retry never
    /// doubles them), then takes them off the source queue's `:dead`.
    async fn move_dead_letters(&self, q: QueueRef<'_>, epoch: u32, dead: Vec<DeadLetter>) -> Result<(), EngineError> {
        let mut groups: Vec<(String, Vec<DeadLetter>)> = Vec::new();
        for letter in dead {
            match groups.iter_mut().find(|(name, _)| *name == letter.queue) {
                Some((_, letters)) => letters.push(letter),
                None => groups.push((letter.queue.clone(), vec![letter])),
            }
        }
        for (name, letters) in groups {
            if !crate::queue::is_valid_queue_name(&name) {
                tracing::warn!(queue = q.name, dlq = %name, "a dead letter names no valid queue; it stays");
                continue;
            }
            let dlq = QueueRef { project: q.project, name: &name };
            let mut args = vec![b"1".to_vec(), seed().into_bytes(), q.name.as_bytes().to_vec()];
            args.push(letters.len().to_string().into_bytes());
            for letter in &letters {
                args.push(MessageId::new(epoch, letter.seq).to_hex().to_vec());
                args.push(letter.ttl_s.to_string().into_bytes());
                args.push(letter.body.clone());
            }
            let dlq_key = self.queue_key(dlq);
            let mut value = self.call_owned("mqv1_post_dead", &dlq_key, &args, Kind::Write).await?;
            if matches!(&value, Value::Simple(s) if s == "MQ_CREATE") {
                self.index_add(dlq).await?;
                if let Some(flag) = args.first_mut() {
                    *flag = b"2".to_vec();
                }
                value = self.call_owned("mqv1_post_dead", &dlq_key, &args, Kind::Write).await?;
            }
            Fields::new("mqv1_post_dead", value)?;
            let ids: Vec<&[u8]> = letters.iter().map(|l| l.id.as_slice()).collect();
            self.call("mqv1_dead_ack", &self.queue_key(q), &ids, Kind::Write).await?;
        }
        Ok(())
    }

    async fn get_claim(&self, q: QueueRef<'_>, id: ClaimId) -> Result<ClaimView, EngineError> {
        let args = [id.seq.to_string().into_bytes(), hex16(id.secret).into_bytes()];
        let value = self.call_owned("mqv1_get_claim", &self.queue_key(q), &args, Kind::Read).await?;
        let mut r = Fields::new("mqv1_get_claim", value)?;
        let (now, epoch, renewed_ms, ttl_s, n) = (r.u64()?, r.epoch()?, r.u64()?, r.u32()?, r.count()?);
        let page = r.page(n, epoch, now, Claims::All(id))?;
        Ok(ClaimView { id, age_s: now.saturating_sub(renewed_ms) / 1000, ttl_s, page })
    }

    // -----------------------------------------------------------------------------------------
    // Revocations: one hash for the whole cluster, subjects `<len(project)>:<project><subject>`
    // -----------------------------------------------------------------------------------------

    /// The engine's `revoke`: at most `max` subjects; an existing one is still widened.
    async fn revoke(&self, q: QueueRef<'_>, revoked: Revoked, max: usize) -> Result<(), EngineError> {
        let subject = format!("{}:{}{}", q.project.len(), q.project, q.name);
        let args = [
            subject.into_bytes(),
            revoked.revoked_ms.to_string().into_bytes(),
            revoked.until_ms.to_string().into_bytes(),
            max.to_string().into_bytes(),
        ];
        self.call_owned("mqv1_revoke", &self.revocations_key(), &args, Kind::Write).await.map(|_| ())
    }

    async fn revocations(&self) -> Result<Vec<Revocation>, EngineError> {
        let value = self.call("mqv1_revocations", &self.revocations_key(), &[], Kind::Read).await?;
        let mut r = Fields::new("mqv1_revocations", value)?;
        let mut out = Vec::with_capacity(r.len() / 2);
        while !r.is_empty() {
            let subject = r.text()?;
            let times = r.text()?;
            let parsed = parse_subject(&subject).zip(times.split_once(':')).and_then(|((project, subject), (a, b))| {
                let revoked = Revoked { revoked_ms: a.parse().ok()?, until_ms: b.parse().ok()? };
                Some(Revocation { project: project.to_owned(), subject: subject.to_owned(), revoked })
            });
            out.push(parsed.ok_or_else(|| malformed("mqv1_revocations", "an unreadable revocation"))?);
        }
        Ok(out)
    }
}

/// `<len>:<project><subject>` split back.
fn parse_subject(field: &str) -> Option<(&str, &str)> {
    let (len, rest) = field.split_once(':')?;
    let len: usize = len.parse().ok()?;
    Some((rest.get(..len)?, rest.get(len..)?))
}

/// Percent-escapes what would make a hash tag ambiguous (and `%` itself).
fn escape(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'{' | b'}' | b'%' | b'/' => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push(b'%');
                out.extend(HEX.get(usize::from(b >> 4)).copied());
                out.extend(HEX.get(usize::from(b & 0xf)).copied());
            }
            _ => out.push(b),
        }
    }
}

fn hex16(v: u64) -> String {
    format!("{v:016x}")
}

/// The epoch of a new queue with no tombstone. Not a capability (ids are not secrets), so the
/// fast generator does.
fn seed() -> String {
    fastrand::u32(1..).to_string()
}

/// How many settings `set_meta` in `library.lua` takes.
const SETTINGS: usize = 6;

/// The parsed reserved keys as `library.lua` stores them: ttl, delay, maxpost, maxcc, dlq,
/// dlqttl; empty for unset.
fn settings_args(m: &Metadata) -> [Vec<u8>; SETTINGS] {
    let s = m.settings();
    let n = |v: Option<u32>| v.map(|v| v.to_string().into_bytes()).unwrap_or_default();
    [
        n(s.default_message_ttl_s),
        n(s.default_message_delay_s),
        n(s.max_messages_post_size),
        n(s.max_claim_count),
        s.dead_letter_queue.as_deref().map(|d| d.as_bytes().to_vec()).unwrap_or_default(),
        n(s.dead_letter_queue_messages_ttl_s),
    ]
}

fn sum_besides(queues: &HashMap<String, (u64, u64)>, name: &str) -> (u64, u64) {
    queues
        .iter()
        .filter(|(n, _)| n.as_str() != name)
        .fold((0, 0), |(m, b), (_, (dm, db))| (m.saturating_add(*dm), b.saturating_add(*db)))
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Volume => "Volume",
        Command::Metrics => "Metrics",
        Command::InstallRevocations(_) => "InstallRevocations",
        Command::PutLimits { .. } => "PutLimits",
        Command::SetLimits { .. } => "SetLimits",
        _ => "this command",
    }
}

fn io(message: String) -> EngineError {
    EngineError::Store(StoreError::Io(message))
}

fn malformed(function: &str, what: &str) -> EngineError {
    io(format!("{function} answered a malformed reply: {what}"))
}

/// Runs all `futures` at once on this task; their outputs in order.
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *output = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Which claim id the messages of a page show.
#[derive(Clone, Copy)]
enum Claims {
    /// None (a pop).
    None,
    /// This one (the claim's own messages).
    All(ClaimId),
    /// Each message's own, sent with it (claim seq 0: none).
    PerMessage,
}

/// A reply array read front to back; every read checks the shape.
struct Fields {
    function: &'static str,
    items: std::vec::IntoIter<Value>,
}

impl Fields {
    fn new(function: &'static str, value: Value) -> Result<Self, EngineError> {
        match value {
            Value::Array(items) if items.len() <= MAX_REPLY_ITEMS => Ok(Fields { function, items: items.into_iter() }),
            Value::Array(items) => Err(malformed(function, &format!("{} elements", items.len()))),
            other => Err(malformed(function, &format!("not an array: {other:?}"))),
        }
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.len() == 0
    }

    fn next(&mut self) -> Result<Value, EngineError> {
        self.items.next().ok_or_else(|| malformed(self.function, "too short"))
    }

    fn int(&mut self) -> Result<i64, EngineError> {
        match self.next()? {
            Value::Int(n) => Ok(n),
            other => Err(malformed(self.function, &format!("{other:?} where an integer belongs"))),
        }
    }

    fn u64(&mut self) -> Result<u64, EngineError> {
        let n = self.int()?;
        u64::try_from(n).map_err(|_| malformed(self.function, &format!("{n} where a count belongs")))
    }

    fn u32(&mut self) -> Result<u32, EngineError> {
        let n = self.int()?;
        u32::try_from(n).map_err(|_| malformed(self.function, &format!("{n} is out of range")))
    }

    fn epoch(&mut self) -> Result<u32, EngineError> {
        self.u32()
    }

    /// A count of following records, which cannot be more than the elements left.
    fn count(&mut self) -> Result<usize, EngineError> {
        let n = self.u64()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.items.len())
            .ok_or_else(|| malformed(self.function, &format!("a count of {n} past the reply's end")))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, EngineError> {
        match self.next()? {
            Value::Bulk(b) => Ok(b),
            Value::Simple(s) => Ok(s.into_bytes()),
            Value::Nil => Ok(Vec::new()),
            other => Err(malformed(self.function, &format!("{other:?} where a string belongs"))),
        }
    }

    fn text(&mut self) -> Result<String, EngineError> {
        String::from_utf8(self.bytes()?).map_err(|_| malformed(self.function, "text that is not UTF-8"))
    }

    /// `n` messages: seq, created, ttl, deliveries, body, and with [`Claims::PerMessage`] the
    /// claim seq and secret.
    fn page(&mut self, n: usize, epoch: u32, now: u64, claims: Claims) -> Result<MessagePage, EngineError> {
        let mut page = MessagePage { messages: Vec::with_capacity(n), bodies: Vec::new() };
        for _ in 0..n {
            let seq = self.u64()?;
            let created_ms = self.u64()?;
            let ttl_s = self.u32()?;
            let claim_count = self.u32()?;
            let body = self.bytes()?;
            let claim = match claims {
                Claims::None => None,
                Claims::All(id) => Some(id),
                Claims::PerMessage => {
                    let claim_seq = self.u64()?;
                    let secret = self.text()?;
                    match claim_seq {
                        0 => None,
                        _ => Some(ClaimId::new(
                            claim_seq,
                            u64::from_str_radix(&secret, 16)
                                .map_err(|_| malformed(self.function, "a claim secret that is not hex"))?,
                        )),
                    }
                }
            };
            let start = offset(self.function, page.bodies.len())?;
            page.bodies.extend_from_slice(&body);
            let end = offset(self.function, page.bodies.len())?;
            page.messages.push(MessageView {
                id: MessageId::new(epoch, seq),
                seq,
                ttl_s,
                age_s: now.saturating_sub(created_ms) / 1000,
                created_ms,
                claim,
                claim_count,
                body: start..end,
            });
        }
        Ok(page)
    }
}

fn offset(function: &str, n: usize) -> Result<u32, EngineError> {
    u32::try_from(n).map_err(|_| malformed(function, "a page past 4 GiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_unambiguous() {
        let mut out = Vec::new();
        escape(&mut out, "a{b}/c%d");
        assert_eq!(out, b"a%7Bb%7D%2Fc%25d");
        assert_eq!(parse_subject("3:abcsubject"), Some(("abc", "subject")));
        assert_eq!(parse_subject("9:abc"), None);
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        let r = Fields::new("f", Value::Int(3));
        assert!(matches!(r, Err(EngineError::Store(StoreError::Io(_)))));
        let mut r = Fields::new("f", Value::Array(vec![Value::Int(5), Value::Bulk(b"x".to_vec())])).unwrap();
        assert!(r.count().is_err(), "a count past the end is refused");
        let mut r = Fields::new("f", Value::Array(vec![Value::Int(1), Value::Int(-1)])).unwrap();
        assert!(r.page(1, 1, 0, Claims::None).is_err());
        let mut r = Fields::new("f", Value::Array(vec![Value::Int(-1)])).unwrap();
        assert!(r.epoch().is_err());
    }

    #[test]
    fn post_size_texts_match_the_engine() {
        assert_eq!(
            post_size_refusal(None, 262_144),
            EngineError::Invalid("Message collection size is too large. Max size 262144".into())
        );
        assert!(matches!(post_size_refusal(Some(1023), 262_144), EngineError::Invalid(t) if t.contains("is 1023.")));
    }
}
