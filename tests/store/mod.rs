//! Opens a shard's log directly (no server, no executor): the blocking I/O driver stands in for
//! the shard's I/O tasks, so store-level tests control every flush and every segment made.
#![allow(dead_code)]

use std::path::Path;
use std::rc::Rc;

use marconi::config::{ApiLimits, Durability, StorageConfig};
use marconi::queue::{ClaimId, Engine, ListMessages, ListQueues, MessageId};
use marconi::storage::io::LogShared;
use marconi::storage::recovery::{self, RecoveryError, ScanOptions, ScanReport};
use marconi::storage::{QueueRef, SegmentStore, Store};

pub const PROJECT: &str = "proj";

pub struct Opened {
    pub engine: Engine<SegmentStore>,
    pub shared: Rc<LogShared>,
    pub scan: ScanReport,
}

pub fn config(segment_bytes: u64) -> StorageConfig {
    StorageConfig {
        backend: marconi::config::Backend::Local,
        durability: Durability::Sync,
        flush_interval_ms: 50,
        segment_size_bytes: segment_bytes,
        repair: false,
    }
}

pub fn open(dir: &Path, segment_bytes: u64) -> Result<Opened, RecoveryError> {
    open_with(dir, segment_bytes, false)
}

pub fn open_with(dir: &Path, segment_bytes: u64, repair: bool) -> Result<Opened, RecoveryError> {
    let rec = recovery::scan_dir(dir, &ScanOptions { shard: 0, segment_bytes, repair })?;
    let scan = rec.report.clone();
    let (store, replay, shared) = SegmentStore::open(rec, &config(segment_bytes));
    let mut engine = Engine::new(store, ApiLimits::default(), 7);
    engine.replay_log(&replay)?;
    drop(replay);
    Ok(Opened { engine, shared, scan })
}

impl Opened {
    /// What the shard's tasks would do now: make requested files, flush everything.
    pub fn pump(&mut self) {
        self.engine.store_mut().write_out().expect("write out");
        self.shared.run_io_blocking();
        self.shared.flush_blocking().expect("flush");
        self.shared.run_io_blocking();
    }

    /// Runs compaction to the end of whatever it starts now.
    pub fn compact(&mut self) {
        for _ in 0..10_000 {
            let more = self.engine.compact_step(64 * 1024);
            self.pump();
            if !more && !self.engine.compact_step(64 * 1024) {
                self.pump();
                if !self.engine.compact_step(64 * 1024) {
                    return;
                }
            }
        }
    }
}

pub fn q(name: &str) -> QueueRef<'_> {
    QueueRef { project: PROJECT, name }
}

/// Everything a client could observe of the engine at `now_ms`.
#[derive(Debug, PartialEq)]
pub struct Observed {
    pub queues: Vec<(String, String)>,
    pub messages: Vec<ObservedMessage>,
    pub claims: Vec<(String, ClaimId, u64, u32, Vec<MessageId>)>,
}

#[derive(Debug, PartialEq)]
pub struct ObservedMessage {
    pub queue: String,
    pub id: MessageId,
    pub body: Vec<u8>,
    pub ttl_s: u32,
    pub created_ms: u64,
    pub claim: Option<ClaimId>,
    pub claim_count: u32,
}

pub fn observe<S: marconi::storage::Store>(engine: &Engine<S>, now_ms: u64) -> Observed {
    let opts = ListQueues {
        after: None,
        limit: usize::MAX,
        detailed: true,
        name_contains: None,
        visible: None,
        metadata_filters: Vec::new(),
        with_count: false,
    };
    let page = engine.list_queues(PROJECT, &opts);
    let mut out = Observed { queues: Vec::new(), messages: Vec::new(), claims: Vec::new() };
    for listing in page.queues {
        let meta = listing.metadata.map(|m| serde_json::to_string(m.as_map()).unwrap()).unwrap_or_default();
        out.queues.push((listing.name.clone(), meta));
        let all = ListMessages {
            after_seq: 0,
            limit: usize::MAX,
            client_hash: 0,
            echo: true,
            include_claimed: true,
            include_delayed: true,
        };
        let msgs = engine.list_messages(q(&listing.name), &all, now_ms);
        let mut claims = Vec::new();
        for m in &msgs.messages {
            out.messages.push(ObservedMessage {
                queue: listing.name.clone(),
                id: m.id,
                body: msgs.body(m).to_vec(),
                ttl_s: m.ttl_s,
                created_ms: m.created_ms,
                claim: m.claim,
                claim_count: m.claim_count,
            });
            if let Some(c) = m.claim {
                if !claims.contains(&c) {
                    claims.push(c);
                }
            }
        }
        for c in claims {
            let view = engine.get_claim(q(&listing.name), c, now_ms).expect("live claim");
            let ids = view.page.messages.iter().map(|m| m.id).collect();
            out.claims.push((listing.name.clone(), c, view.age_s, view.ttl_s, ids));
        }
    }
    out
}
