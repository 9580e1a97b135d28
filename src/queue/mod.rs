//! The per-shard queue engine: queues, messages, claims, expiry, delays and dead letters.
//!
//! One [`Engine`] per shard owns every queue placed on that shard. It is synchronous and never
//! reads the clock (callers pass `now_ms`), so its semantics are unit-tested without a runtime.
//! Bodies live in the [`Store`](crate::storage::Store); the engine holds only a compact index.
//!
//! Semantics (see docs/api.md for the divergences from Zaqar):
//! - markers are per-queue sequence numbers assigned at commit, strictly increasing, never reused;
//!   a marker is resolved by value, so it stays valid after its message is gone;
//! - message ids are 24 hex digits: the queue's epoch (new on every re-creation) and a sequence
//!   number, so an id names exactly one message of one queue incarnation; claim ids are 32 hex
//!   digits, a sequence number and a random secret, so they cannot be guessed (`ids`);
//! - expiry of messages and claims is exact at read time; a sweep reclaims the memory later;
//! - claims only take messages that are visible (delay over), unexpired and not under a live
//!   claim; delivery counts survive renewals; a message past `_max_claim_count` moves to the
//!   dead-letter queue on its next claim attempt.

#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

mod engine;
mod glob;
mod ids;
mod metadata;
mod revocations;
mod state;

pub use engine::{dead_letter_cycle, metadata_matches, post_size_refusal, Engine, ReplayReport, MAX_DEAD_LETTER_HOPS};
pub use glob::{glob_matches, is_valid_glob, MAX_GLOB_BYTES};
pub use ids::{ClaimId, MessageId};
pub use metadata::{is_valid_queue_name, Metadata, PatchOp, QueueSettings};
pub use revocations::{Revocation, Revocations, Revoked};

use std::ops::Range;

/// What can go wrong inside the engine. Converted to API errors in `crate::error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("queue not found")]
    QueueNotFound,
    #[error("message not found")]
    MessageNotFound,
    #[error("claim not found")]
    ClaimNotFound,
    /// Deleting a message held by a live claim without its claim id (403).
    #[error("message is claimed")]
    MessageClaimed,
    /// A claim id was given but the message is not under a live claim (400).
    #[error("message is not claimed")]
    MessageNotClaimed,
    /// A claim id was given that is malformed, unknown or expired (400).
    #[error("claim does not exist or has expired")]
    ClaimMismatch,
    #[error("{0}")]
    Conflict(String),
    /// A value the API could not check without the queue's state (e.g. per-queue post size).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] crate::storage::StoreError),
    /// A quota of the queue or of the project's part on this shard is full.
    #[error(transparent)]
    Refused(#[from] crate::limits::Refused),
}

/// One message of a post, its body a range into the post's shared body buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// `None`: the queue's `_default_message_ttl`, else the configured default.
    pub ttl_s: Option<u32>,
    /// `None`: the queue's `_default_message_delay` (0 when unset).
    pub delay_s: Option<u32>,
    pub body: Range<u32>,
}

/// A message as the API shows it; the body is a range into the enclosing page's `bodies`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageView {
    pub id: MessageId,
    /// The listing marker of this message.
    pub seq: u64,
    /// The TTL as posted (claims extend life without rewriting it: divergence 3).
    pub ttl_s: u32,
    pub age_s: u64,
    pub created_ms: u64,
    /// The live claim holding the message, if any.
    pub claim: Option<ClaimId>,
    pub claim_count: u32,
    pub body: Range<u32>,
}

/// Messages with their bodies packed into one buffer: two allocations per page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessagePage {
    pub messages: Vec<MessageView>,
    pub bodies: Vec<u8>,
}

impl MessagePage {
    /// The body of `m`, a message of this page.
    ///
    /// # Panics
    /// When `m`'s range lies outside this page's bodies: `m` is from another page, and any bytes
    /// returned would be another message's.
    pub fn body(&self, m: &MessageView) -> &[u8] {
        match self.bodies.get(m.body.start as usize..m.body.end as usize) {
            Some(body) => body,
            None => panic!("message {} has body bytes {:?}, outside its page's {}", m.id, m.body, self.bodies.len()),
        }
    }
}

/// Options of a message listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListMessages {
    /// Only messages with a sequence number strictly greater than this.
    pub after_seq: u64,
    pub limit: usize,
    /// Hash of the caller's Client-ID, to skip its own messages unless `echo`.
    pub client_hash: u64,
    pub echo: bool,
    pub include_claimed: bool,
    pub include_delayed: bool,
}

/// Parameters of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimParams {
    pub ttl_s: u32,
    pub grace_s: u32,
    pub limit: usize,
    /// The secret of the claim's id, 64 random bits (`crate::random`): drawn by the caller, so
    /// the engine stays deterministic.
    pub secret: u64,
}

/// A claim's state as `GET .../claims/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimView {
    pub id: ClaimId,
    /// Seconds since the claim was created or last renewed.
    pub age_s: u64,
    pub ttl_s: u32,
    pub page: MessagePage,
}

/// The result of a claim: its id and the messages it took, plus messages that moved to a
/// dead-letter queue instead of being delivered (the shard forwards those to the DLQ's owner).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimOutcome {
    pub claim: Option<(ClaimId, MessagePage)>,
    pub dead_letters: Option<DeadLetters>,
}

/// Messages leaving a queue for its dead-letter queue (same project).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetters {
    pub queue: String,
    /// TTL for the moved messages: `_dead_letter_queue_messages_ttl`, else their own TTL.
    pub messages: Vec<NewMessage>,
    pub bodies: Vec<u8>,
}

/// Summary of a message for queue stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSummary {
    pub id: MessageId,
    pub age_s: u64,
    pub created_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub claimed: u64,
    /// Unclaimed messages, delayed ones included.
    pub free: u64,
    pub total: u64,
    pub oldest: Option<MessageSummary>,
    pub newest: Option<MessageSummary>,
}

/// One queue of a project listing.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueListing {
    pub name: String,
    /// Present when the listing asked for `detailed`.
    pub metadata: Option<Metadata>,
}

/// Options of a queue listing on one shard.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQueues {
    /// Only names strictly greater than this (byte order).
    pub after: Option<String>,
    pub limit: usize,
    pub detailed: bool,
    /// Substring the name must contain.
    pub name_contains: Option<String>,
    /// Glob the name must match: the queues the caller's credential may see (`None`: all).
    /// Filtered before paging and counting, so pages and counts never show others.
    pub visible: Option<String>,
    /// Metadata keys that must equal these values.
    pub metadata_filters: Vec<(String, serde_json::Value)>,
    pub with_count: bool,
}

/// A page of a project's queues on one shard, sorted by name, plus the project's queue count
/// on that shard when asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueuePage {
    pub queues: Vec<QueueListing>,
    pub count: Option<u64>,
}
