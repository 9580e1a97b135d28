//! The typed commands that travel to a queue's owner shard, and their replies.
//!
//! A request for a queue owned elsewhere crosses the mesh as a [`Command`] (never as raw HTTP),
//! runs against the owner's engine in [`execute`], and comes back as a [`Reply`]. Local requests
//! take the same path without the hop, so both are one piece of code.

use crate::queue::{
    ClaimId, ClaimOutcome, ClaimParams, ClaimView, Engine, EngineError, ListMessages, ListQueues, MessageId,
    MessagePage, Metadata, NewMessage, PatchOp, QueuePage, QueueStats, Revocation, Revoked,
};
use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

use crate::limits::{Overrides, StoreQuota};
use crate::storage::{QueueRef, Store};

/// A queue named by owned strings, so that it can cross threads. Requests run on their own shard
/// with a borrowed [`QueueRef`]; only a hop over the mesh (or a parked poll's notifier) pays for
/// this copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueName {
    pub project: String,
    pub name: String,
}

impl QueueName {
    pub fn new(project: &str, name: &str) -> Self {
        Self { project: project.to_owned(), name: name.to_owned() }
    }
    pub fn as_ref(&self) -> QueueRef<'_> {
        QueueRef { project: &self.project, name: &self.name }
    }
}

impl From<QueueRef<'_>> for QueueName {
    fn from(q: QueueRef<'_>) -> Self {
        QueueName::new(q.project, q.name)
    }
}

/// Lets a map keyed by [`QueueName`] be searched with a borrowed [`QueueRef`], without building
/// the owned key: both borrow as `dyn NamesQueue`, and hash and compare the same way.
pub trait NamesQueue {
    fn queue_ref(&self) -> QueueRef<'_>;
}

impl NamesQueue for QueueName {
    fn queue_ref(&self) -> QueueRef<'_> {
        self.as_ref()
    }
}

impl NamesQueue for QueueRef<'_> {
    fn queue_ref(&self) -> QueueRef<'_> {
        *self
    }
}

impl<'a> Borrow<dyn NamesQueue + 'a> for QueueName {
    fn borrow(&self) -> &(dyn NamesQueue + 'a) {
        self
    }
}

impl Hash for dyn NamesQueue + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let q = self.queue_ref();
        q.project.hash(state);
        q.name.hash(state);
    }
}

impl Hash for QueueName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn NamesQueue).hash(state)
    }
}

impl PartialEq for dyn NamesQueue + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.queue_ref() == other.queue_ref()
    }
}

impl Eq for dyn NamesQueue + '_ {}

#[derive(Debug, Clone)]
pub enum Command {
    CreateQueue {
        metadata: Option<Metadata>,
    },
    QueueExists,
    GetQueue,
    PatchQueue {
        ops: Vec<PatchOp>,
    },
    DeleteQueue,
    Stats,
    Purge,
    ListQueues {
        opts: ListQueues,
    },
    PostMessages {
        client_hash: u64,
        messages: Vec<NewMessage>,
        bodies: Vec<u8>,
        request_bytes: usize,
        /// The project's quotas, as the requesting shard knows them.
        quota: StoreQuota,
    },
    ListMessages {
        opts: ListMessages,
    },
    GetMessages {
        ids: Vec<MessageId>,
    },
    DeleteMessage {
        id: MessageId,
        claim: Option<ClaimId>,
    },
    DeleteMessages {
        ids: Vec<MessageId>,
        claim_ids: Option<Vec<ClaimId>>,
    },
    Pop {
        limit: usize,
    },
    Claim {
        params: ClaimParams,
    },
    GetClaim {
        id: ClaimId,
    },
    RenewClaim {
        id: ClaimId,
        ttl_s: u32,
        grace_s: u32,
    },
    ReleaseClaim {
        id: ClaimId,
    },
    /// Records a revocation durably, on the shard that owns them ([`REVOCATIONS_OWNER`]); the
    /// queue names `{project, subject}`. At most `max` subjects are kept. A storage backend keeps
    /// these like any other record and answers [`Command::Revocations`] from them.
    Revoke {
        revoked: Revoked,
        max: usize,
    },
    /// Every revocation the owner keeps (a shard loads them at start-up).
    Revocations,
    /// Adds revocations to the in-memory set this shard checks tokens against: no storage, run by
    /// the shard itself on every shard after a [`Command::Revoke`].
    InstallRevocations(Vec<Revocation>),
    /// Totals of this shard, for health and metrics.
    Volume,
    /// This shard's part of the project: its queues and messages (for `queues_per_project`).
    ProjectVolume,
    /// To shard 0: replace the project's overrides set by `PUT`, keep them on disk, tell every
    /// shard. Answered `Done` once all that is done.
    PutLimits {
        overrides: Overrides,
    },
    /// From shard 0: the project's overrides set by `PUT` are now these.
    SetLimits {
        overrides: Overrides,
    },
    /// A copy of this shard's counters, for `GET /metrics`.
    Metrics,
}

/// Message totals of one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Volume {
    pub queues: u64,
    pub messages: u64,
}

#[derive(Debug, Clone)]
pub enum Reply {
    Done,
    Created(bool),
    Exists(bool),
    Metadata(Option<Metadata>),
    Stats(QueueStats),
    Queues(QueuePage),
    Posted(Vec<MessageId>),
    Page(MessagePage),
    Claimed(ClaimOutcome),
    Claim(ClaimView),
    Volume(Volume),
    Metrics(Box<crate::metrics::Snapshot>),
    Revocations(Vec<Revocation>),
}

/// The shard that keeps revocations durably: one place, so a revocation is one record.
pub const REVOCATIONS_OWNER: usize = 0;

impl Command {
    /// Whether a success of this command can make messages available to parked long polls.
    pub fn may_wake_waiters(&self) -> bool {
        matches!(self, Command::PostMessages { .. } | Command::ReleaseClaim { .. })
    }

    /// Whether the storage backend answers this command (everything but a shard's own state:
    /// its counters, its revocation set, its copy of the limits, and on Redis Cluster the
    /// totals its sweep counted). On the Redis Cluster such
    /// a command runs once, on the shard that took the request, for the whole cluster.
    pub fn lives_in_backend(&self) -> bool {
        !matches!(
            self,
            Command::Metrics
                | Command::Volume
                | Command::InstallRevocations(_)
                | Command::PutLimits { .. }
                | Command::SetLimits { .. }
        )
    }

    /// Whether an answer of this command is "nothing there yet", worth parking for with `wait`.
    pub fn reply_is_empty(reply: &Reply) -> bool {
        match reply {
            Reply::Page(page) => page.messages.is_empty(),
            Reply::Claimed(outcome) => outcome.claim.is_none(),
            _ => false,
        }
    }
}

/// Runs one command against the owner's engine. `project` is the caller's project (used by
/// project-wide commands, which carry no queue name).
pub fn execute<S: Store>(
    engine: &mut Engine<S>,
    q: QueueRef<'_>,
    command: &Command,
    now_ms: u64,
) -> Result<Reply, EngineError> {
    Ok(match command {
        Command::CreateQueue { metadata } => Reply::Created(engine.create_queue(q, metadata.clone(), now_ms)?),
        Command::QueueExists => Reply::Exists(engine.queue_exists(q)),
        Command::GetQueue => Reply::Metadata(engine.queue_metadata(q)),
        Command::PatchQueue { ops } => Reply::Metadata(Some(engine.patch_queue(q, ops)?)),
        Command::DeleteQueue => {
            engine.delete_queue(q)?;
            Reply::Done
        }
        Command::Stats => Reply::Stats(engine.stats(q, now_ms)),
        Command::Purge => {
            engine.purge(q)?;
            Reply::Done
        }
        Command::ListQueues { opts } => Reply::Queues(engine.list_queues(q.project, opts)),
        Command::PostMessages { client_hash, messages, bodies, request_bytes, quota } => Reply::Posted(
            engine.post_messages_within(q, *client_hash, messages, bodies, *request_bytes, now_ms, quota)?,
        ),
        Command::ListMessages { opts } => Reply::Page(engine.list_messages(q, opts, now_ms)),
        Command::GetMessages { ids } => Reply::Page(engine.get_messages(q, ids, now_ms)),
        Command::DeleteMessage { id, claim } => {
            engine.delete_message(q, *id, *claim, now_ms)?;
            Reply::Done
        }
        Command::DeleteMessages { ids, claim_ids } => {
            engine.delete_messages(q, ids, claim_ids.as_deref(), now_ms)?;
            Reply::Done
        }
        Command::Pop { limit } => Reply::Page(engine.pop(q, *limit, now_ms)?),
        Command::Claim { params } => Reply::Claimed(engine.claim(q, *params, now_ms)?),
        Command::GetClaim { id } => Reply::Claim(engine.get_claim(q, *id, now_ms)?),
        Command::RenewClaim { id, ttl_s, grace_s } => {
            engine.renew_claim(q, *id, *ttl_s, *grace_s, now_ms)?;
            Reply::Done
        }
        Command::ReleaseClaim { id } => {
            engine.release_claim(q, *id, now_ms)?;
            Reply::Done
        }
        Command::Revoke { revoked, max } => {
            engine.revoke(q, *revoked, *max)?;
            Reply::Done
        }
        Command::Revocations => Reply::Revocations(engine.revocations().to_vec()),
        // The shard's own set, not the engine's: `Shard::run_local` answers it before this.
        Command::InstallRevocations(_) => Reply::Done,
        Command::Volume => {
            Reply::Volume(Volume { queues: engine.queue_count() as u64, messages: engine.message_count() as u64 })
        }
        Command::ProjectVolume => Reply::Volume(Volume {
            queues: engine.project_queue_count(q.project) as u64,
            messages: engine.project_held(q.project).0,
        }),
        // The shard's own business, answered before the engine is asked (`Shard::run_local`).
        Command::PutLimits { .. } | Command::SetLimits { .. } => Reply::Done,
        // The engine's part; `Shard` adds its mesh gauges (see `Shard::metrics_snapshot`).
        Command::Metrics => Reply::Metrics(Box::new(engine_snapshot(engine, 1))),
    })
}

/// This thread's counters plus the figures of `engine` and its store (the shard's own gauges
/// stay 0 for it to fill).
pub fn engine_snapshot<S: Store>(engine: &Engine<S>, shards: usize) -> crate::metrics::Snapshot {
    let mut snapshot = crate::metrics::with(|m| m.snapshot(shards));
    snapshot.queues = engine.queue_count() as u64;
    snapshot.messages = engine.message_count() as u64;
    snapshot.claims = engine.claim_count() as u64;
    snapshot.body_bytes = engine.body_bytes();
    let stats = engine.store().stats();
    snapshot.segments = stats.segments;
    snapshot.disk_bytes = stats.disk_bytes;
    snapshot.flushes = stats.flushes;
    snapshot.flush_latency = stats.flush_latency;
    snapshot
}
