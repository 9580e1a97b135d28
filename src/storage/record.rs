//! The state changes the engine logs. A durable store encodes these; recovery decodes them and
//! replays them into a fresh engine.

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
    /// A claim was created or renewed over `seqs`.
    ClaimUpsert {
        queue: QueueRef<'a>,
        claim_seq: u64,
        created_ms: u64,
        ttl_s: u32,
        grace_s: u32,
        seqs: &'a [u64],
    },
    ClaimDelete {
        queue: QueueRef<'a>,
        claim_seq: u64,
    },
}
