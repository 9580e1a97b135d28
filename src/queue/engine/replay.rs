//! Rebuilding the index from the log, and answering compaction's questions about it.
//!
//! Replay applies each [`Record`] as the rules in `storage::record` say, logging nothing:
//! ids (epoch and sequence numbers) come from the records, so every recovered message keeps its
//! id and marker; delivery counts are rebuilt by adding one per claim created over a message; a
//! record about something that does not exist is ignored (compaction relies on this, and it makes
//! replay idempotent for `--repair`).

use super::*;
use crate::queue::state::entry_mut;
use crate::storage::recovery::{RecoveryError, ReplayLog};
use crate::storage::{BodyRef, LiveIndex};

/// What replay rebuilt, for the start-up report.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReplayReport {
    pub records: u64,
    pub bytes: u64,
    pub queues: usize,
    pub messages: usize,
    /// Records naming a queue that did not exist at their place in the log.
    pub orphans: u64,
    pub elapsed: std::time::Duration,
}

impl<S: Store> Engine<S> {
    /// Replays a whole log into this (fresh) engine, then settles its index.
    pub fn replay_log(&mut self, log: &ReplayLog) -> Result<ReplayReport, RecoveryError> {
        let started = std::time::Instant::now();
        let mut orphans = 0;
        let stats = log.for_each(|record, body| {
            if !self.replay(record, body) {
                orphans += 1;
            }
        })?;
        self.finish_replay();
        Ok(ReplayReport {
            records: stats.records,
            bytes: stats.bytes,
            queues: self.queue_count(),
            messages: self.message_count(),
            orphans,
            elapsed: started.elapsed(),
        })
    }

    /// Applies one logged record without logging anything; `false` when it named a queue that
    /// does not exist (it is then ignored). Call [`Engine::finish_replay`] after the last one.
    pub fn replay(&mut self, record: &Record<'_>, body: Option<BodyRef>) -> bool {
        match *record {
            Record::QueueUpsert { queue, epoch, metadata } => {
                let meta = Metadata::from_stored(metadata, &self.limits);
                match self.find(queue).map(|q| q.epoch) {
                    Some(e) if e == epoch => {
                        if let Some(q) = self.parts(queue) {
                            q.queue.meta = meta.map(Box::new);
                        }
                    }
                    other => {
                        if other.is_some() {
                            // A new incarnation without a delete before it: the old one is gone.
                            self.replay_drop_queue(queue);
                        }
                        self.add_queue(queue, Queue::new(epoch, meta));
                    }
                }
                true
            }
            Record::QueueDelete { queue } => self.replay_drop_queue(queue),
            Record::Purge { queue, last_seq } => {
                let Some(Parts { queue: q, store, message_count }) = self.parts(queue) else {
                    return false;
                };
                q.last_seq = q.last_seq.max(last_seq);
                if let Some(log) = q.log.take() {
                    release_all(store, &log, message_count);
                }
                true
            }
            Record::MessageAppend { queue, seq, created_ms, ttl_s, delay_ms, client_hash } => {
                let Some(Parts { queue: q, store, message_count }) = self.parts(queue) else {
                    return false;
                };
                let Some(at) = body else {
                    return false;
                };
                q.last_seq = q.last_seq.max(seq);
                let log = q.log.get_or_insert_with(|| Box::new(MessageLog::new()));
                let entry = MessageEntry::appended(seq, at, created_ms, ttl_s, delay_ms, client_hash);
                match log.entries.back() {
                    Some(last) if last.seq >= seq => {
                        // Out of order only after `--repair`; a duplicate is ignored.
                        if log.position(seq).is_some() {
                            return true;
                        }
                        let at_index = log.first_after(seq);
                        log.entries.insert(at_index, entry);
                    }
                    _ => log.entries.push_back(entry),
                }
                log.live_bytes += u64::from(at.len);
                store.recovered(at);
                *message_count += 1;
                true
            }
            Record::MessageDelete { queue, seq } => {
                let Some(Parts { queue: q, store, message_count }) = self.parts(queue) else {
                    return false;
                };
                q.last_seq = q.last_seq.max(seq);
                let Some(log) = q.log.as_deref_mut() else {
                    return true;
                };
                let Some((idx, _)) = log.find(seq).filter(|(_, e)| !e.is_tombstone()) else {
                    return true;
                };
                // The claim holding it loses it; the claim itself ends with its own record, if
                // that was logged.
                let (e, _) = log.tombstone(idx);
                store.release(e.body_ref());
                uncount(message_count, 1);
                // Keeps a long produce/consume history from piling up tombstones during replay.
                log.tidy();
                q.settle();
                true
            }
            Record::ClaimUpsert { queue, claim_seq, secret, created_ms, ttl_s, grace_s, seqs } => {
                let Some(Parts { queue: q, .. }) = self.parts(queue) else {
                    return false;
                };
                q.last_claim_seq = q.last_claim_seq.max(claim_seq);
                let log = q.log.get_or_insert_with(|| Box::new(MessageLog::new()));
                let MessageLog { entries, claims, .. } = &mut **log;
                match claim_mut(claims, claim_seq) {
                    Some(claim) => claim.renew(entries, created_ms, ttl_s, grace_s),
                    // A new claim: each message it still holds counts one more delivery.
                    None => {
                        let mut held = Vec::with_capacity(seqs.len());
                        for &seq in seqs {
                            if let Some(e) = entry_mut(entries, seq).filter(|e| !e.is_tombstone()) {
                                e.claim = claim_seq;
                                e.claim_count = e.claim_count.saturating_add(1);
                                held.push(seq);
                            }
                        }
                        let mut claim =
                            Claim { seq: claim_seq, secret, renewed_ms: 0, expires_ms: 0, ttl_s, grace_s, seqs: held };
                        claim.renew(entries, created_ms, ttl_s, grace_s);
                        let at = claims.partition_point(|c| c.seq < claim_seq);
                        claims.insert(at, claim);
                    }
                }
                true
            }
            Record::ClaimDelete { queue, claim_seq } => {
                let Some(Parts { queue: q, .. }) = self.parts(queue) else {
                    return false;
                };
                q.last_claim_seq = q.last_claim_seq.max(claim_seq);
                if let Some(log) = q.log.as_deref_mut() {
                    if let Some(ci) = log.claim_index(claim_seq) {
                        log.forget_claim(ci);
                    }
                }
                q.settle();
                true
            }
            Record::Revocation { queue, revoked_ms, until_ms } => {
                self.revocations.insert(queue.project, queue.name, Revoked { revoked_ms, until_ms });
                true
            }
            Record::QueueCounters { queue, last_seq, last_claim_seq } => {
                let Some(Parts { queue: q, .. }) = self.parts(queue) else {
                    return false;
                };
                q.last_seq = q.last_seq.max(last_seq);
                q.last_claim_seq = q.last_claim_seq.max(last_claim_seq);
                true
            }
        }
    }

    /// Recomputes what the index keeps as hints (scan start, earliest expiries, tombstone
    /// counts) once every record is in.
    pub fn finish_replay(&mut self) {
        let mut count = 0;
        for q in self.queues.values_mut() {
            if let Some(log) = q.log.as_deref_mut() {
                log.tombstones = log.entries.iter().filter(|e| e.is_tombstone()).count();
                log.live_bytes = log.entries.iter().filter(|e| !e.is_tombstone()).map(|e| u64::from(e.body_len)).sum();
                log.claim_from = 0;
                log.min_expires_ms =
                    log.entries.iter().filter(|e| !e.is_tombstone()).map(|e| e.expires_ms).min().unwrap_or(u64::MAX);
                log.min_claim_expires_ms = log.claims.iter().map(|c| c.expires_ms).min().unwrap_or(u64::MAX);
                count += log.entries.len() - log.tombstones;
            }
            q.settle();
        }
        self.message_count = count;
    }

    /// Removes a queue during replay (no record is logged). `false` if it did not exist.
    fn replay_drop_queue(&mut self, q: QueueRef<'_>) -> bool {
        let Some(key) = self.key(q) else {
            return false;
        };
        self.remove_queue(key, q)
    }

    /// The queue's `(epoch, last_seq, last_claim_seq)`: what ids come next (tests compare a
    /// recovered engine with the live one through it).
    pub fn counters(&self, q: QueueRef<'_>) -> Option<(u32, u64, u64)> {
        self.find(q).map(|x| (x.epoch, x.last_seq, x.last_claim_seq))
    }

    /// One bounded step of the store's space reclamation, which asks this index what is still
    /// alive; `true` while there is more to do soon.
    pub fn compact_step(&mut self, budget_bytes: usize) -> bool {
        let Engine { store, project_ids, queues, revocations, .. } = self;
        store.compact_step(&mut IndexView { project_ids, queues, revocations }, budget_bytes)
    }
}

/// The engine's index as compaction sees it.
struct IndexView<'e> {
    project_ids: &'e FastMap<Box<str>, u32>,
    queues: &'e mut FastMap<QueueKey, Queue>,
    revocations: &'e Revocations,
}

impl IndexView<'_> {
    fn queue(&self, q: QueueRef<'_>) -> Option<&Queue> {
        let key = KeyRef { project: *self.project_ids.get(q.project)?, name: q.name };
        self.queues.get(&key as &dyn AsKeyRef)
    }

    fn entry(&self, q: QueueRef<'_>, seq: u64) -> Option<&MessageEntry> {
        let log = self.queue(q)?.log.as_deref()?;
        log.find(seq).map(|(_, e)| e).filter(|e| !e.is_tombstone())
    }
}

impl LiveIndex for IndexView<'_> {
    fn epoch(&self, q: QueueRef<'_>) -> Option<u32> {
        self.queue(q).map(|x| x.epoch)
    }

    fn holds_body(&self, q: QueueRef<'_>, seq: u64, location: u64) -> bool {
        self.entry(q, seq).is_some_and(|e| e.body_location == location)
    }

    fn message_live(&self, q: QueueRef<'_>, seq: u64) -> bool {
        self.entry(q, seq).is_some()
    }

    fn claim_live(&self, q: QueueRef<'_>, claim_seq: u64) -> bool {
        self.queue(q).and_then(|x| x.log.as_deref()).is_some_and(|log| log.claim_index(claim_seq).is_some())
    }

    fn counters(&self, q: QueueRef<'_>) -> Option<(u64, u64)> {
        self.queue(q).map(|x| (x.last_seq, x.last_claim_seq))
    }

    fn revocation_live(&self, q: QueueRef<'_>, revoked_ms: u64, until_ms: u64) -> bool {
        self.revocations.get(q.project, q.name) == Some(Revoked { revoked_ms, until_ms })
    }

    /// Compaction relocates only what it just found held ([`LiveIndex::holds_body`]) in the same
    /// step, so a message that is not there means the two disagree: the body would be left in a
    /// file about to be removed.
    fn relocate(&mut self, q: QueueRef<'_>, seq: u64, to: BodyRef) {
        let queues = &mut *self.queues;
        let entry = self
            .project_ids
            .get(q.project)
            .and_then(|&project| queues.get_mut(&KeyRef { project, name: q.name } as &dyn AsKeyRef))
            .and_then(|x| x.log.as_deref_mut())
            .and_then(|log| entry_mut(&mut log.entries, seq))
            .filter(|e| !e.is_tombstone());
        let Some(e) = entry else {
            panic!("compaction moved the body of message {seq} of {q:?}, which the index does not hold");
        };
        e.body_location = to.location;
    }
}
