//! The state changes the engine logs. A durable store encodes these (`codec`); recovery decodes
//! them and replays them into a fresh engine (`Engine::replay`).
//!
//! Replay rules, which compaction relies on (docs/storage.md, "Replay"):
//! - records name queues, not incarnations: a record applies to the queue's current incarnation
//!   at its place in the log; `QueueUpsert` with another epoch starts a new incarnation;
//! - records about things that do not exist (any more) are ignored;
//! - a `ClaimUpsert` for a claim that does not exist creates it and adds 1 to the delivery count
//!   of each message it takes; one for an existing claim renews it;
//! - sequence counters take the maximum of every sequence number seen;
//! - a `Revocation` adds its subject to the revoked set (the later of two for one subject wins).

/// A queue, named as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueRef<'a> {
    pub project: &'a str,
    pub name: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// A queue was created or its metadata changed. `metadata` is its JSON object.
    QueueUpsert {
        queue: QueueRef<'a>,
        epoch: u32,
        metadata: &'a [u8],
    },
    QueueDelete {
        queue: QueueRef<'a>,
    },
    /// Every message of the queue with a sequence number up to `last_seq` is gone.
    Purge {
        queue: QueueRef<'a>,
        last_seq: u64,
    },
    MessageAppend {
        queue: QueueRef<'a>,
        seq: u64,
        created_ms: u64,
        ttl_s: u32,
        delay_ms: u32,
        client_hash: u64,
    },
    MessageDelete {
        queue: QueueRef<'a>,
        seq: u64,
    },
    /// A claim was created or renewed over `seqs`. `secret` is the random half of the claim's id;
    /// `None` only in records of format 1, written before claims had secrets.
    ClaimUpsert {
        queue: QueueRef<'a>,
        claim_seq: u64,
        secret: Option<u64>,
        created_ms: u64,
        ttl_s: u32,
        grace_s: u32,
        seqs: &'a [u64],
    },
    ClaimDelete {
        queue: QueueRef<'a>,
        claim_seq: u64,
    },
    /// Written only by compaction: the queue's sequence counters, so that markers and claim ids
    /// are never reused once the records that carried the highest ones are gone.
    QueueCounters {
        queue: QueueRef<'a>,
        last_seq: u64,
        last_claim_seq: u64,
    },
    /// Tokens of `project` named by `subject` (a token id in hex, or a token name) are revoked:
    /// those issued before `revoked_ms` are refused. The record is needed until `until_ms`, when
    /// every token it can refuse has expired anyway. Kept by one shard (the owner of revocations,
    /// see `shard`); its queue is `{project, subject}`, which names no queue.
    Revocation {
        queue: QueueRef<'a>,
        revoked_ms: u64,
        until_ms: u64,
    },
}

impl<'a> Record<'a> {
    /// The queue the record is about (for a [`Record::Revocation`], its project and subject).
    pub fn queue(&self) -> QueueRef<'a> {
        match *self {
            Record::QueueUpsert { queue, .. }
            | Record::QueueDelete { queue }
            | Record::Purge { queue, .. }
            | Record::MessageAppend { queue, .. }
            | Record::MessageDelete { queue, .. }
            | Record::ClaimUpsert { queue, .. }
            | Record::ClaimDelete { queue, .. }
            | Record::QueueCounters { queue, .. }
            | Record::Revocation { queue, .. } => queue,
        }
    }
}
