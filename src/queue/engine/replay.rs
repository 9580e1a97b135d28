//! Rebuilding the index from the log, and answering compaction's questions about it.
//!
//! Replay applies each [`Record`] as the rules in `storage::record` say, logging nothing:
//! ids (epoch and sequence numbers) come from the records, so every recovered message keeps its
//! id and marker; delivery counts are rebuilt by adding one per claim created over a message; a
//! record about something that does not exist is ignored (compaction relies on this, and it makes
//! replay idempotent for `--repair`).

use super::*;
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
                        let pid = self.intern(queue.project);
                        if let Some(project) = self.projects[pid as usize].as_mut() {
                            project.queues.insert(queue.name.into());
                        }
                        self.queues.insert(QueueKey { project: pid, name: queue.name.into() }, Queue::new(epoch, meta));
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
                    for e in log.entries.iter().filter(|e| !e.is_tombstone()) {
                        store.release(e.body_ref());
                        *message_count = message_count.saturating_sub(1);
                    }
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
                let Some(idx) = log.position(seq).filter(|&i| !log.entries[i].is_tombstone()) else {
                    return true;
                };
                let e = log.entries[idx];
                store.release(e.body_ref());
                log.entries[idx].make_tombstone();
                log.tombstones += 1;
                *message_count = message_count.saturating_sub(1);
                if let Some(ci) = (e.claim != 0).then(|| log.claim_index(e.claim)).flatten() {
                    // The claim itself ends with its own record, if it was logged.
                    log.claims[ci].seqs.retain(|&s| s != seq);
                }
                // Keeps a long produce/consume history from piling up tombstones during replay.
                log.tidy();
                q.settle();
                true
            }
            Record::ClaimUpsert { queue, claim_seq, created_ms, ttl_s, grace_s, seqs } => {
                let Some(Parts { queue: q, .. }) = self.parts(queue) else {
                    return false;
                };
                q.last_claim_seq = q.last_claim_seq.max(claim_seq);
                let log = q.log.get_or_insert_with(|| Box::new(MessageLog::new()));
                let MessageLog { entries, claims, .. } = &mut **log;
                let ci = match claims.binary_search_by_key(&claim_seq, |c| c.seq) {
                    Ok(ci) => ci,
                    // A new claim: each message it still holds counts one more delivery.
                    Err(ci) => {
                        let mut held = Vec::with_capacity(seqs.len());
                        for &seq in seqs {
                            let Ok(p) = entries.binary_search_by_key(&seq, |e| e.seq) else { continue };
                            let e = &mut entries[p];
                            if !e.is_tombstone() {
                                e.claim = claim_seq;
                                e.claim_count = e.claim_count.saturating_add(1);
                                held.push(seq);
                            }
                        }
                        let claim = Claim { seq: claim_seq, renewed_ms: 0, expires_ms: 0, ttl_s, grace_s, seqs: held };
                        claims.insert(ci, claim);
                        ci
                    }
                };
                claims[ci].renew(entries, created_ms, ttl_s, grace_s);
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
        let Some((_, queue)) = self.queues.remove_entry(&key as &dyn AsKeyRef) else {
            return false;
        };
        if let Some(log) = queue.log {
            for e in log.entries.iter().filter(|e| !e.is_tombstone()) {
                self.store.release(e.body_ref());
                self.message_count = self.message_count.saturating_sub(1);
            }
        }
        if let Some(project) = self.projects.get_mut(key.project as usize).and_then(Option::as_mut) {
            project.queues.remove(q.name);
            if project.queues.is_empty() {
                self.project_ids.remove(q.project);
                self.projects[key.project as usize] = None;
                self.free_projects.push(key.project);
            }
        }
        true
    }

    /// The queue's `(epoch, last_seq, last_claim_seq)`: what ids come next (tests compare a
    /// recovered engine with the live one through it).
    pub fn counters(&self, q: QueueRef<'_>) -> Option<(u32, u64, u64)> {
        self.find(q).map(|x| (x.epoch, x.last_seq, x.last_claim_seq))
    }

    /// One bounded step of the store's space reclamation, which asks this index what is still
    /// alive; `true` while there is more to do soon.
    pub fn compact_step(&mut self, budget_bytes: usize) -> bool {
        let Engine { store, project_ids, queues, .. } = self;
        store.compact_step(&mut IndexView { project_ids, queues }, budget_bytes)
    }
}

/// The engine's index as compaction sees it.
struct IndexView<'e> {
    project_ids: &'e FastMap<Box<str>, u32>,
    queues: &'e mut FastMap<QueueKey, Queue>,
}

impl IndexView<'_> {
    fn queue(&self, q: QueueRef<'_>) -> Option<&Queue> {
        let key = KeyRef { project: *self.project_ids.get(q.project)?, name: q.name };
        self.queues.get(&key as &dyn AsKeyRef)
    }

    fn entry(&self, q: QueueRef<'_>, seq: u64) -> Option<&MessageEntry> {
        let log = self.queue(q)?.log.as_deref()?;
        log.position(seq).map(|p| &log.entries[p]).filter(|e| !e.is_tombstone())
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

    fn relocate(&mut self, q: QueueRef<'_>, seq: u64, to: BodyRef) {
        let Some(&project) = self.project_ids.get(q.project) else {
            return;
        };
        let key = KeyRef { project, name: q.name };
        let Some(log) = self.queues.get_mut(&key as &dyn AsKeyRef).and_then(|x| x.log.as_deref_mut()) else {
            return;
        };
        if let Some(p) = log.position(seq) {
            log.entries[p].body_location = to.location;
        }
    }
}
