//! The per-shard queue engine. See the module docs of [`crate::queue`] for the semantics and
//! [`super::state`] for the memory layout.
//!
//! Every mutation is logged to the store *before* the in-memory index changes, so a store error
//! leaves the index as the log describes it. Operations that log several records stop at the
//! first failure with the earlier records applied (each record is a complete state change on its
//! own), except a post, which undoes itself: a post is all-or-nothing for the client.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::ops::Bound;
use std::rc::Rc;

use serde_json::Value;

use super::state::{claim_mut, AsKeyRef, Claim, KeyRef, MessageEntry, MessageLog, Queue, QueueKey};
use super::{
    ClaimId, ClaimOutcome, ClaimParams, ClaimView, DeadLetters, EngineError, ListMessages, ListQueues, MessageId,
    MessagePage, MessageSummary, MessageView, Metadata, NewMessage, PatchOp, QueueListing, QueuePage, QueueStats,
    Revocations, Revoked,
};
use crate::config::ApiLimits;
use crate::limits::StoreQuota;
use crate::storage::{QueueRef, Record, Store, StoreError, Tallied};

type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;

/// How far a chain of dead-letter queues on this shard is followed when looking for a cycle.
/// Chains are short in practice; the bound keeps a pathological chain from costing more.
pub const MAX_DEAD_LETTER_HOPS: usize = 64;

/// The seed used when the caller passes 0, which xorshift cannot leave.
const EPOCH_SEED_FALLBACK: u32 = 0x9e37_79b9;

/// The queues of one project on this shard, ordered by name for listings.
struct Project {
    name: Box<str>,
    queues: BTreeSet<Rc<str>>,
}

/// Where the incremental sweep stands: the queue it is in or last finished, and, inside a queue
/// too large for one call, the epoch, next sequence number and smallest live expiry seen so far.
#[derive(Default)]
struct SweepCursor {
    project: u32,
    name: Option<Rc<str>>,
    partial: Option<(u32, u64, u64)>,
}

/// The engine of one shard: all queues placed on it, their messages and claims.
pub struct Engine<S: Store> {
    store: Tallied<S>,
    limits: ApiLimits,
    epoch_state: u32,
    project_ids: FastMap<Box<str>, u32>,
    /// Indexed by interned project id; `None` marks a free slot (a project whose last queue here
    /// was deleted), so idle project ids do not accumulate.
    projects: Vec<Option<Project>>,
    free_projects: Vec<u32>,
    queues: FastMap<QueueKey, Queue>,
    message_count: usize,
    sweep: SweepCursor,
    /// Revoked tokens, on the shard that owns them (empty elsewhere): logged, replayed, compacted.
    revocations: Revocations,
}

/// Disjoint borrows of one queue and the engine parts that mutations need alongside it.
struct Parts<'e, S> {
    queue: &'e mut Queue,
    store: &'e mut Tallied<S>,
    message_count: &'e mut usize,
}

impl<S: Store> Engine<S> {
    pub fn new(store: S, limits: ApiLimits, epoch_seed: u32) -> Self {
        Engine {
            store: Tallied::new(store),
            limits,
            epoch_state: if epoch_seed == 0 { EPOCH_SEED_FALLBACK } else { epoch_seed },
            project_ids: FastMap::default(),
            projects: Vec::new(),
            free_projects: Vec::new(),
            queues: FastMap::default(),
            message_count: 0,
            sweep: SweepCursor::default(),
            revocations: Revocations::default(),
        }
    }

    pub fn store(&self) -> &S {
        self.store.inner()
    }

    pub fn store_mut(&mut self) -> &mut S {
        self.store.inner_mut()
    }

    pub fn limits(&self) -> &ApiLimits {
        &self.limits
    }

    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// Messages in the index, including expired ones the sweep has not collected yet.
    pub fn message_count(&self) -> usize {
        self.message_count
    }

    /// Claims in the index, including expired ones not collected yet. Walks every queue: for
    /// metrics scrapes, not for request paths.
    pub fn claim_count(&self) -> usize {
        self.queues.values().filter_map(|q| q.log.as_deref()).map(|log| log.claims.len()).sum()
    }

    /// Bytes of message bodies in the index, expired ones not collected yet included: counted
    /// where bodies enter and leave the store (`Tallied`), whatever the store.
    pub fn body_bytes(&self) -> u64 {
        let (bodies, bytes) = self.store.held();
        debug_assert_eq!(bodies, self.message_count as u64, "every message in the index holds one body");
        bytes
    }

    // ---------------------------------------------------------------------------------------
    // Queues
    // ---------------------------------------------------------------------------------------

    /// Creates the queue; `true` if it did not exist. On an existing queue, no or empty metadata
    /// leaves it alone (ensure-exists), while non-empty metadata replaces the old (divergence 8:
    /// Zaqar silently ignores it, which surprises users who "create with metadata" twice).
    pub fn create_queue(
        &mut self,
        q: QueueRef<'_>,
        metadata: Option<Metadata>,
        _now_ms: u64,
    ) -> Result<bool, EngineError> {
        let metadata = metadata.filter(|m| !m.is_empty());
        if let Some(m) = &metadata {
            self.check_dead_letter_cycle(q, m)?;
        }
        if let Some(parts) = self.parts(q) {
            if let Some(m) = metadata {
                parts.store.append(&Record::QueueUpsert {
                    queue: q,
                    epoch: parts.queue.epoch,
                    metadata: &m.to_json(),
                })?;
                parts.queue.meta = Some(Box::new(m));
            }
            return Ok(false);
        }
        self.insert_queue(q, metadata)?;
        Ok(true)
    }

    pub fn queue_exists(&self, q: QueueRef<'_>) -> bool {
        self.find(q).is_some()
    }

    /// The queue's metadata as stored (empty when none was set); `None` if there is no queue.
    pub fn queue_metadata(&self, q: QueueRef<'_>) -> Option<Metadata> {
        Some(self.find(q)?.meta.as_deref().cloned().unwrap_or_default())
    }

    pub fn patch_queue(&mut self, q: QueueRef<'_>, ops: &[PatchOp]) -> Result<Metadata, EngineError> {
        let queue = self.find(q).ok_or(EngineError::QueueNotFound)?;
        let current = queue.meta.as_deref().cloned().unwrap_or_default();
        let next = current.apply_patch(ops, &self.limits)?;
        self.check_dead_letter_cycle(q, &next)?;
        let parts = self.parts(q).ok_or(EngineError::QueueNotFound)?;
        parts.store.append(&Record::QueueUpsert { queue: q, epoch: parts.queue.epoch, metadata: &next.to_json() })?;
        parts.queue.meta = if next.is_empty() { None } else { Some(Box::new(next.clone())) };
        Ok(next)
    }

    /// Deletes the queue with its messages and claims. Parked long polls are the shard's to
    /// answer; the engine wakes nothing.
    pub fn delete_queue(&mut self, q: QueueRef<'_>) -> Result<(), EngineError> {
        let Some(key) = self.key(q) else {
            return Ok(());
        };
        if !self.queues.contains_key(&key as &dyn AsKeyRef) {
            return Ok(());
        }
        self.store.append(&Record::QueueDelete { queue: q })?;
        self.remove_queue(key, q);
        Ok(())
    }

    /// This shard's queues of `project`, by name. Uses the project's ordered index, so a page
    /// costs O(log n + page) without filters. With filters, each candidate's metadata is checked
    /// and `count` (the queues matching the name and metadata filters, ignoring `after`) needs
    /// a pass over the project's queues.
    pub fn list_queues(&self, project: &str, opts: &ListQueues) -> QueuePage {
        let Some((pid, proj)) = self.project_by_name(project) else {
            return QueuePage { queues: Vec::new(), count: opts.with_count.then_some(0) };
        };
        let filtered = opts.name_contains.as_deref().is_some_and(|s| !s.is_empty())
            || !opts.metadata_filters.is_empty()
            || opts.visible.is_some();
        let matches = |name: &str| -> bool {
            if opts.visible.as_deref().is_some_and(|glob| !super::glob_matches(glob, name)) {
                return false;
            }
            if let Some(part) = opts.name_contains.as_deref() {
                if !name.contains(part) {
                    return false;
                }
            }
            if opts.metadata_filters.is_empty() {
                return true;
            }
            let key = KeyRef { project: pid, name };
            let meta = self.queues.get(&key as &dyn AsKeyRef).and_then(|x| x.meta.as_deref());
            metadata_matches(meta, &opts.metadata_filters)
        };
        let lower = match opts.after.as_deref() {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        let mut queues = Vec::new();
        for name in proj.queues.range::<str, _>((lower, Bound::Unbounded)) {
            if queues.len() >= opts.limit {
                break;
            }
            if !matches(name) {
                continue;
            }
            let metadata = opts.detailed.then(|| {
                let key = KeyRef { project: pid, name };
                self.queues.get(&key as &dyn AsKeyRef).and_then(|x| x.meta.as_deref().cloned()).unwrap_or_default()
            });
            queues.push(QueueListing { name: name.to_string(), metadata });
        }
        let count = opts.with_count.then(|| {
            if filtered {
                proj.queues.iter().filter(|n| matches(n)).count() as u64
            } else {
                proj.queues.len() as u64
            }
        });
        QueuePage { queues, count }
    }

    /// Queues of `project` on this shard.
    pub fn project_queue_count(&self, project: &str) -> usize {
        self.project_by_name(project).map_or(0, |(_, p)| p.queues.len())
    }

    /// Messages and body bytes of `project`'s queues on this shard: a pass over those queues,
    /// made only while a project-wide quota is set.
    pub fn project_held(&self, project: &str) -> (u64, u64) {
        let Some((pid, proj)) = self.project_by_name(project) else { return (0, 0) };
        proj.queues
            .iter()
            .filter_map(|name| self.queues.get(&KeyRef { project: pid, name } as &dyn AsKeyRef)?.log.as_deref())
            .map(MessageLog::held)
            .fold((0, 0), |(m, b), (dm, db)| (m + dm, b + db))
    }

    /// Exact counts at `now_ms`: expired messages are not counted; `free` includes delayed ones.
    pub fn stats(&self, q: QueueRef<'_>, now_ms: u64) -> QueueStats {
        let mut stats = QueueStats::default();
        let Some(queue) = self.find(q) else {
            return stats;
        };
        let Some(log) = queue.log.as_deref() else {
            return stats;
        };
        let summary = |e: &MessageEntry| MessageSummary {
            id: MessageId::new(queue.epoch, e.seq),
            age_s: age_s(e.created_ms, now_ms),
            created_ms: e.created_ms,
        };
        for e in log.entries.iter().filter(|e| e.is_live(now_ms)) {
            stats.total += 1;
            if log.live_claim(e, now_ms).is_some() {
                stats.claimed += 1;
            } else {
                stats.free += 1;
            }
            if stats.oldest.is_none() {
                stats.oldest = Some(summary(e));
            }
        }
        stats.newest = log.entries.iter().rev().find(|e| e.is_live(now_ms)).map(summary);
        stats
    }

    /// Empties the queue, claimed messages included (divergence 6: purge is an admin "empty the
    /// queue", and Zaqar's pop loop leaving claimed messages behind is a surprise). The one
    /// `Purge` record also ends every claim of the queue: they can hold nothing any more.
    pub fn purge(&mut self, q: QueueRef<'_>) -> Result<(), EngineError> {
        let Some(Parts { queue, store, message_count }) = self.parts(q) else {
            return Ok(());
        };
        store.append(&Record::Purge { queue: q, last_seq: queue.last_seq })?;
        if let Some(log) = queue.log.take() {
            release_all(store, &log, message_count);
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Messages
    // ---------------------------------------------------------------------------------------

    /// Appends messages, creating the queue if needed. Each message's own `delay` is honoured on
    /// every queue (divergence 5). All-or-nothing: on a store failure the messages already
    /// stored are released and logged as deleted; their sequence numbers are not reused, since
    /// the log may already hold them.
    pub fn post_messages(
        &mut self,
        q: QueueRef<'_>,
        client_hash: u64,
        msgs: &[NewMessage],
        bodies: &[u8],
        request_bytes: usize,
        now_ms: u64,
    ) -> Result<Vec<MessageId>, EngineError> {
        self.post_messages_within(q, client_hash, msgs, bodies, request_bytes, now_ms, &StoreQuota::UNLIMITED)
    }

    /// [`Engine::post_messages`] within `quota`: the queue's figures are exact, the project's are
    /// its queues on this shard. A queue that does not exist is not created unless the quota
    /// allows it (`QueueNotFound` then), so the API can count the project's queues first.
    #[allow(clippy::too_many_arguments)]
    pub fn post_messages_within(
        &mut self,
        q: QueueRef<'_>,
        client_hash: u64,
        msgs: &[NewMessage],
        bodies: &[u8],
        request_bytes: usize,
        now_ms: u64,
        quota: &StoreQuota,
    ) -> Result<Vec<MessageId>, EngineError> {
        let mut slices = Vec::with_capacity(msgs.len());
        for m in msgs {
            let body = bodies
                .get(m.body.start as usize..m.body.end as usize)
                .ok_or_else(|| EngineError::Invalid("A message body lies outside the request.".into()))?;
            slices.push(body);
        }
        let settings = self.find(q).and_then(Queue::settings);
        let max_post = settings.and_then(|s| s.max_messages_post_size);
        let default_ttl_s = settings.and_then(|s| s.default_message_ttl_s).unwrap_or(self.limits.default_message_ttl_s);
        let default_delay_s = settings.and_then(|s| s.default_message_delay_s).unwrap_or(0);
        self.check_post_size(max_post, request_bytes)?;
        let adding = (slices.len() as u64, slices.iter().map(|b| b.len() as u64).sum());
        let held = self.find(q).and_then(|x| x.log.as_deref()).map_or((0, 0), MessageLog::held);
        quota.check(held, || self.project_held(q.project), adding)?;

        if !self.queue_exists(q) {
            if !quota.may_create_queue {
                return Err(EngineError::QueueNotFound);
            }
            self.insert_queue(q, None)?;
        }
        let Parts { queue, store, message_count } = self.parts(q).ok_or(EngineError::QueueNotFound)?;
        // All or nothing on disk too: room for every record before the first is written.
        let names = q.project.len() + q.name.len();
        let reserved = slices.iter().map(|b| b.len() + names).sum();
        store.reserve(msgs.len(), reserved)?;
        let first_seq = queue.last_seq + 1;
        let mut staged: Vec<MessageEntry> = Vec::with_capacity(msgs.len());
        for (i, (m, body)) in msgs.iter().zip(slices).enumerate() {
            let seq = first_seq + i as u64;
            let ttl_s = m.ttl_s.unwrap_or(default_ttl_s);
            let delay_s = m.delay_s.unwrap_or(default_delay_s);
            let delay_ms = u32::try_from(u64::from(delay_s) * 1000).unwrap_or(u32::MAX);
            let record = Record::MessageAppend { queue: q, seq, created_ms: now_ms, ttl_s, delay_ms, client_hash };
            match store.append_message(&record, body) {
                Ok(at) => staged.push(MessageEntry::appended(seq, at, now_ms, ttl_s, delay_ms, client_hash)),
                Err(err) => {
                    for e in &staged {
                        // Best effort: the store is already failing, and the client is told the
                        // whole post failed either way.
                        let _ = store.append(&Record::MessageDelete { queue: q, seq: e.seq });
                        store.release(e.body_ref());
                    }
                    queue.last_seq = seq;
                    return Err(err.into());
                }
            }
        }
        let Some(last) = staged.last() else {
            return Ok(Vec::new());
        };
        queue.last_seq = last.seq;
        let log = queue.log.get_or_insert_with(|| Box::new(MessageLog::new()));
        for e in &staged {
            log.min_expires_ms = log.min_expires_ms.min(e.expires_ms);
            log.live_bytes += u64::from(e.body_len);
        }
        *message_count += staged.len();
        let ids = staged.iter().map(|e| MessageId::new(queue.epoch, e.seq)).collect();
        log.entries.extend(staged);
        Ok(ids)
    }

    /// Messages after `after_seq` in marker order. Filters may leave a page short even when more
    /// messages follow; only an empty page means "caught up".
    pub fn list_messages(&self, q: QueueRef<'_>, opts: &ListMessages, now_ms: u64) -> MessagePage {
        let mut page = MessagePage::default();
        let Some(queue) = self.find(q) else {
            return page;
        };
        let Some(log) = queue.log.as_deref() else {
            return page;
        };
        let start = log.first_after(opts.after_seq);
        for e in log.entries.range(start..) {
            if page.messages.len() >= opts.limit {
                break;
            }
            if !e.is_live(now_ms) || (!opts.echo && e.client_hash == opts.client_hash) {
                continue;
            }
            if !opts.include_delayed && !e.is_visible(now_ms) {
                continue;
            }
            if !opts.include_claimed && log.live_claim(e, now_ms).is_some() {
                continue;
            }
            push_view(&self.store, &mut page, queue.epoch, e, log.live_claim_id(e, now_ms), now_ms);
        }
        page
    }

    /// Messages by id, in the order asked, each once; claims, delays and echo do not matter.
    pub fn get_messages(&self, q: QueueRef<'_>, ids: &[MessageId], now_ms: u64) -> MessagePage {
        let mut page = MessagePage::default();
        let Some(queue) = self.find(q) else {
            return page;
        };
        let Some(log) = queue.log.as_deref() else {
            return page;
        };
        for (i, id) in ids.iter().enumerate() {
            if id.epoch != queue.epoch || ids.iter().take(i).any(|seen| seen == id) {
                continue;
            }
            let Some((_, e)) = log.find(id.seq) else {
                continue;
            };
            if e.is_live(now_ms) {
                push_view(&self.store, &mut page, queue.epoch, e, log.live_claim_id(e, now_ms), now_ms);
            }
        }
        page
    }

    /// Deletes one message under the claim rules of reference §3.6, checked in the order of
    /// Zaqar's redis driver (the one the conformance baseline runs): a missing message is
    /// already deleted; then "claimed but no claim given" (403), "claim given but the message is
    /// free" (400), and for a message held by another claim, 400 if the given claim is not a
    /// live claim of this queue, else 403.
    pub fn delete_message(
        &mut self,
        q: QueueRef<'_>,
        id: MessageId,
        claim: Option<ClaimId>,
        now_ms: u64,
    ) -> Result<(), EngineError> {
        let Some(Parts { queue, store, message_count }) = self.parts(q) else {
            return Ok(());
        };
        if id.epoch != queue.epoch {
            return Ok(());
        }
        let Some(log) = queue.log.as_deref_mut() else {
            return Ok(());
        };
        let Some((idx, &e)) = log.find(id.seq) else {
            return Ok(());
        };
        if !e.is_live(now_ms) {
            return Ok(());
        }
        match (claim, log.live_claim(&e, now_ms)) {
            (None, None) => {}
            (None, Some(_)) => return Err(EngineError::MessageClaimed),
            (Some(_), None) => return Err(EngineError::MessageNotClaimed),
            (Some(c), Some(holder)) if c.holds(holder, log.claim(holder).and_then(|x| x.secret)) => {}
            (Some(c), Some(_)) => {
                // Only a claim whose secret matches counts as known: a guessed id learns nothing.
                let known = log.claim_named(c, now_ms).is_some();
                return Err(if known { EngineError::MessageClaimed } else { EngineError::ClaimMismatch });
            }
        }
        remove_entry(store, q, log, idx, message_count)?;
        queue.settle();
        Ok(())
    }

    /// Deletes messages by id; unknown ids are ignored.
    ///
    /// Claims: with `claim_ids`, every listed message held by a live claim must be held by one of
    /// those claims, or nothing is deleted and the call fails with `MessageClaimed` (divergence
    /// 4, as a 403 instead of Zaqar's 503). Without `claim_ids`, claimed messages are deleted
    /// like any other, as Zaqar does: its storage test `test_queue_count_on_claim_delete`
    /// (tests/unit/storage/base.py) bulk-deletes claimed messages without claim ids and expects
    /// them gone, and with the default `message_delete_with_claim_id = false` the API never
    /// passes claim ids, so enforcing claims there would turn every such call into a 403.
    pub fn delete_messages(
        &mut self,
        q: QueueRef<'_>,
        ids: &[MessageId],
        claim_ids: Option<&[ClaimId]>,
        now_ms: u64,
    ) -> Result<(), EngineError> {
        let Some(Parts { queue, store, message_count }) = self.parts(q) else {
            return Ok(());
        };
        let epoch = queue.epoch;
        let Some(log) = queue.log.as_deref_mut() else {
            return Ok(());
        };
        let live_index = |log: &MessageLog, id: &MessageId| -> Option<usize> {
            let (idx, e) = log.find(id.seq).filter(|_| id.epoch == epoch)?;
            e.is_live(now_ms).then_some(idx)
        };
        if let Some(claim_ids) = claim_ids {
            for id in ids {
                let Some(idx) = live_index(log, id) else {
                    continue;
                };
                if let Some(holder) = log.live_claim(log.at(idx), now_ms) {
                    let secret = log.claim(holder).and_then(|c| c.secret);
                    if !claim_ids.iter().any(|c| c.holds(holder, secret)) {
                        return Err(EngineError::MessageClaimed);
                    }
                }
            }
        }
        let mut result = Ok(());
        for id in ids {
            let Some(idx) = live_index(log, id) else {
                continue;
            };
            if let Err(err) = remove_entry(store, q, log, idx, message_count) {
                result = Err(err.into());
                break;
            }
        }
        queue.settle();
        result
    }

    /// Removes and returns up to `limit` claimable messages, oldest first: at-most-once delivery.
    /// A store failure after some were removed returns those (they are gone either way).
    pub fn pop(&mut self, q: QueueRef<'_>, limit: usize, now_ms: u64) -> Result<MessagePage, EngineError> {
        let mut page = MessagePage::default();
        let Some(Parts { queue, store, message_count }) = self.parts(q) else {
            return Ok(page);
        };
        let epoch = queue.epoch;
        let Some(log) = queue.log.as_deref_mut() else {
            return Ok(page);
        };
        expire_claims(store, q, log, now_ms)?;
        let (candidates, hint) = scan_claimable(log, limit, now_ms);
        log.claim_from = hint;
        let mut result = Ok(());
        for idx in candidates {
            let e = *log.at(idx);
            let mark = (page.messages.len(), page.bodies.len());
            push_view(&*store, &mut page, epoch, &e, None, now_ms);
            if let Err(err) = remove_entry(store, q, log, idx, message_count) {
                page.messages.truncate(mark.0);
                page.bodies.truncate(mark.1);
                log.claim_from = log.claim_from.min(e.seq);
                result = Err(err);
                break;
            }
        }
        queue.settle();
        match result {
            Err(err) if page.messages.is_empty() => Err(err.into()),
            _ => Ok(page),
        }
    }

    // ---------------------------------------------------------------------------------------
    // Claims
    // ---------------------------------------------------------------------------------------

    /// Claims up to `limit` messages that are visible, unexpired and free, oldest first.
    ///
    /// Dead letters (§7.6 with divergence 7): with both `_max_claim_count` and
    /// `_dead_letter_queue` set, a candidate already delivered that many times is moved out
    /// (returned in `dead_letters`, for the shard to post to the DLQ) instead of delivered; so a
    /// message is delivered at most `_max_claim_count` times. Moved messages count against
    /// `limit`, as in Zaqar, which keeps one claim's work bounded.
    ///
    /// Messages that would expire before the claim does live until claim expiry + grace; their
    /// visible `ttl` is not rewritten (divergence 3).
    pub fn claim(&mut self, q: QueueRef<'_>, params: ClaimParams, now_ms: u64) -> Result<ClaimOutcome, EngineError> {
        let mut outcome = ClaimOutcome::default();
        let Some(Parts { queue, store, message_count }) = self.parts(q) else {
            return Ok(outcome);
        };
        let dead_letter = queue.settings().and_then(|s| {
            let (name, max) = s.dead_letter()?;
            Some((name.to_owned(), max, s.dead_letter_queue_messages_ttl_s))
        });
        let epoch = queue.epoch;
        let Some(log) = queue.log.as_deref_mut() else {
            return Ok(outcome);
        };
        expire_claims(store, q, log, now_ms)?;
        let (candidates, hint) = scan_claimable(log, params.limit, now_ms);
        let moves_out = |e: &MessageEntry| dead_letter.as_ref().is_some_and(|(_, max, _)| e.claim_count >= *max);
        let (moved, delivered): (Vec<usize>, Vec<usize>) = candidates.into_iter().partition(|&i| moves_out(log.at(i)));

        if !delivered.is_empty() {
            let claim_seq = queue.last_claim_seq + 1;
            let expires_ms = now_ms.saturating_add(u64::from(params.ttl_s) * 1000);
            let keep_until_ms = expires_ms.saturating_add(u64::from(params.grace_s) * 1000);
            let seqs: Vec<u64> = delivered.iter().map(|&i| log.at(i).seq).collect();
            store.append(&Record::ClaimUpsert {
                queue: q,
                claim_seq,
                secret: Some(params.secret),
                created_ms: now_ms,
                ttl_s: params.ttl_s,
                grace_s: params.grace_s,
                seqs: &seqs,
            })?;
            queue.last_claim_seq = claim_seq;
            let id = ClaimId::new(claim_seq, params.secret);
            let mut page = MessagePage::default();
            for &i in &delivered {
                let e = log.at_mut(i);
                e.claim = claim_seq;
                e.claim_count = e.claim_count.saturating_add(1);
                e.expires_ms = e.expires_ms.max(keep_until_ms);
                push_view(&*store, &mut page, epoch, e, Some(id), now_ms);
            }
            log.claims.push(Claim {
                seq: claim_seq,
                secret: Some(params.secret),
                renewed_ms: now_ms,
                expires_ms,
                ttl_s: params.ttl_s,
                grace_s: params.grace_s,
                seqs,
            });
            log.min_claim_expires_ms = log.min_claim_expires_ms.min(expires_ms);
            outcome.claim = Some((id, page));
        }
        log.claim_from = hint;

        if let Some((dlq, _, dlq_ttl_s)) = dead_letter.filter(|_| !moved.is_empty()) {
            let mut letters = DeadLetters { queue: dlq, messages: Vec::new(), bodies: Vec::new() };
            for i in moved {
                let e = *log.at(i);
                let start = letters.bodies.len();
                letters.bodies.extend_from_slice(store.body(e.body_ref()));
                if remove_entry(store, q, log, i, message_count).is_err() {
                    // It stays here, free, and is found again by the next claim.
                    letters.bodies.truncate(start);
                    log.claim_from = log.claim_from.min(e.seq);
                    break;
                }
                letters.messages.push(NewMessage {
                    ttl_s: Some(dlq_ttl_s.unwrap_or(e.ttl_s)),
                    delay_s: Some(0),
                    body: to_u32(start)..to_u32(letters.bodies.len()),
                });
            }
            if !letters.messages.is_empty() {
                outcome.dead_letters = Some(letters);
            }
        }
        queue.settle();
        Ok(outcome)
    }

    pub fn get_claim(&self, q: QueueRef<'_>, id: ClaimId, now_ms: u64) -> Result<ClaimView, EngineError> {
        let queue = self.find(q).ok_or(EngineError::ClaimNotFound)?;
        let log = queue.log.as_deref().ok_or(EngineError::ClaimNotFound)?;
        let claim = log.claim_named(id, now_ms).ok_or(EngineError::ClaimNotFound)?;
        let mut page = MessagePage::default();
        for &seq in &claim.seqs {
            if let Some((_, e)) = log.find(seq).filter(|(_, e)| e.is_live(now_ms)) {
                push_view(&self.store, &mut page, queue.epoch, e, Some(id), now_ms);
            }
        }
        Ok(ClaimView { id, age_s: age_s(claim.renewed_ms, now_ms), ttl_s: claim.ttl_s, page })
    }

    /// Restarts a live claim with a new TTL and grace; the delivery counts stay as they are.
    pub fn renew_claim(
        &mut self,
        q: QueueRef<'_>,
        id: ClaimId,
        ttl_s: u32,
        grace_s: u32,
        now_ms: u64,
    ) -> Result<(), EngineError> {
        let Parts { queue, store, .. } = self.parts(q).ok_or(EngineError::ClaimNotFound)?;
        let log = queue.log.as_deref_mut().ok_or(EngineError::ClaimNotFound)?;
        let MessageLog { entries, claims, min_claim_expires_ms, .. } = log;
        let claim = claim_mut(claims, id.seq)
            .filter(|c| c.is_live(now_ms) && id.holds(c.seq, c.secret))
            .ok_or(EngineError::ClaimNotFound)?;
        store.append(&Record::ClaimUpsert {
            queue: q,
            claim_seq: id.seq,
            secret: claim.secret,
            created_ms: now_ms,
            ttl_s,
            grace_s,
            seqs: &claim.seqs,
        })?;
        claim.renew(entries, now_ms, ttl_s, grace_s);
        *min_claim_expires_ms = (*min_claim_expires_ms).min(claim.expires_ms);
        Ok(())
    }

    /// Ends a claim now; its messages are claimable at once. Unknown claims are fine.
    pub fn release_claim(&mut self, q: QueueRef<'_>, id: ClaimId, _now_ms: u64) -> Result<(), EngineError> {
        let Some(Parts { queue, store, .. }) = self.parts(q) else {
            return Ok(());
        };
        let Some(log) = queue.log.as_deref_mut() else {
            return Ok(());
        };
        let Some(ci) =
            log.claim_index(id.seq).filter(|&ci| log.claims.get(ci).is_some_and(|c| id.holds(c.seq, c.secret)))
        else {
            return Ok(());
        };
        store.append(&Record::ClaimDelete { queue: q, claim_seq: id.seq })?;
        log.forget_claim(ci);
        queue.settle();
        Ok(())
    }

    /// The next moment after `now_ms` at which a message that is not claimable now becomes
    /// claimable (its delay ends or its claim expires), for waking long polls; `None` if no such
    /// moment is pending. Costs a pass over the queue's index.
    pub fn next_change_ms(&self, q: QueueRef<'_>, now_ms: u64) -> Option<u64> {
        let log = self.find(q)?.log.as_deref()?;
        let claims = log.claims.iter().filter(|c| c.is_live(now_ms) && !c.seqs.is_empty()).map(|c| c.expires_ms);
        let delays = log
            .entries
            .iter()
            .filter(|e| e.is_live(now_ms) && !e.is_visible(now_ms) && e.visible_at_ms() < e.expires_ms)
            .map(MessageEntry::visible_at_ms);
        claims.chain(delays).min()
    }

    // ---------------------------------------------------------------------------------------
    // Revocations
    // ---------------------------------------------------------------------------------------

    /// Logs and records that tokens of `q.project` named by `q.name` (a token id in hex or a
    /// token name) issued up to `revoked.revoked_ms` are refused. At most `max` subjects are kept:
    /// past that a new one is refused (an existing one is still widened).
    pub fn revoke(&mut self, q: QueueRef<'_>, revoked: Revoked, max: usize) -> Result<(), EngineError> {
        if self.revocations.get(q.project, q.name).is_none() && self.revocations.len() >= max {
            return Err(EngineError::Conflict(format!(
                "This server already holds {max} revocations (auth.max_revocations): rotate the signing key \
                 instead, which revokes every token it signed."
            )));
        }
        self.store.append(&Record::Revocation {
            queue: q,
            revoked_ms: revoked.revoked_ms,
            until_ms: revoked.until_ms,
        })?;
        self.revocations.insert(q.project, q.name, revoked);
        Ok(())
    }

    /// The revocations this engine keeps.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    // ---------------------------------------------------------------------------------------
    // Sweep
    // ---------------------------------------------------------------------------------------

    /// Drops expired messages and claims, examining about `budget` index entries (queues,
    /// claims, messages) per call and resuming where the last call stopped; returns how many
    /// messages and claims it removed. Queues with nothing due are skipped in O(1) thanks to their
    /// lower bounds on expiry.
    pub fn sweep(&mut self, now_ms: u64, budget: usize) -> usize {
        let budget = budget.max(1);
        // Nothing is logged: a replayed revocation that has ended is pruned again, and
        // compaction drops its record.
        let (mut examined, mut removed) = (0, self.revocations.prune(now_ms));
        let mut wrapped = false;
        while examined < budget {
            let pid = self.sweep.project;
            if pid as usize >= self.projects.len() {
                if wrapped || self.projects.is_empty() {
                    break;
                }
                wrapped = true;
                self.sweep = SweepCursor::default();
                continue;
            }
            let name = match self.sweep.partial {
                Some(_) => self.sweep.name.clone(),
                None => self.projects.get(pid as usize).and_then(Option::as_ref).and_then(|p| {
                    let lower = match self.sweep.name.as_deref() {
                        Some(n) => Bound::Excluded(n),
                        None => Bound::Unbounded,
                    };
                    p.queues.range::<str, _>((lower, Bound::Unbounded)).next().cloned()
                }),
            };
            let Some(name) = name else {
                self.sweep = SweepCursor { project: pid + 1, name: None, partial: None };
                continue;
            };
            let partial = self.sweep.partial.take();
            let (ex, rm, partial) = self.sweep_queue(pid, &name, partial, now_ms, budget - examined);
            examined += ex.max(1);
            removed += rm;
            self.sweep.name = Some(name);
            self.sweep.partial = partial;
        }
        removed
    }

    /// One step of the sweep in one queue: returns entries examined, items removed, and where to
    /// resume if the budget ran out (or the store failed) inside the queue.
    fn sweep_queue(
        &mut self,
        pid: u32,
        name: &str,
        partial: Option<(u32, u64, u64)>,
        now_ms: u64,
        budget: usize,
    ) -> (usize, usize, Option<(u32, u64, u64)>) {
        let Engine { projects, queues, store, message_count, .. } = self;
        let Some(project) = projects.get(pid as usize).and_then(Option::as_ref) else {
            return (1, 0, None);
        };
        let q = QueueRef { project: &project.name, name };
        let Some(queue) = queues.get_mut(&KeyRef { project: pid, name } as &dyn AsKeyRef) else {
            return (1, 0, None);
        };
        let epoch = queue.epoch;
        let Some(log) = queue.log.as_deref_mut() else {
            return (1, 0, None);
        };
        let (mut examined, mut removed) = (1, 0);
        let (from_seq, mut min_seen) = match partial {
            Some((e, seq, min_seen)) if e == epoch => (seq, min_seen),
            _ => {
                if now_ms >= log.min_claim_expires_ms {
                    examined += log.claims.len();
                    match expire_claims(store, q, log, now_ms) {
                        Ok(n) => removed += n,
                        Err(_) => return (examined, removed, None),
                    }
                }
                if now_ms < log.min_expires_ms {
                    queue.settle();
                    return (examined, removed, None);
                }
                (0, u64::MAX)
            }
        };
        let mut resume = None;
        let first = log.entries.partition_point(|e| e.seq < from_seq);
        let mut idx = first;
        while let Some(&e) = log.entries.get(idx) {
            // At least one entry per visit, so even a budget of 1 makes progress.
            if examined >= budget && idx > first {
                resume = Some((epoch, e.seq, min_seen));
                break;
            }
            examined += 1;
            if e.is_tombstone() {
            } else if e.expires_ms <= now_ms {
                if remove_entry(store, q, log, idx, message_count).is_err() {
                    resume = Some((epoch, e.seq, min_seen));
                    break;
                }
                removed += 1;
            } else {
                min_seen = min_seen.min(e.expires_ms);
            }
            idx += 1;
        }
        if resume.is_none() {
            log.min_expires_ms = min_seen;
        }
        queue.settle();
        (examined, removed, resume)
    }

    // ---------------------------------------------------------------------------------------
    // Internals
    // ---------------------------------------------------------------------------------------

    /// A fresh epoch per queue creation: xorshift32 visits every non-zero u32 before repeating,
    /// so two incarnations created on this shard never share one.
    fn next_epoch(&mut self) -> u32 {
        let mut x = self.epoch_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.epoch_state = x;
        x
    }

    fn project_by_name(&self, project: &str) -> Option<(u32, &Project)> {
        let pid = *self.project_ids.get(project)?;
        Some((pid, self.projects.get(pid as usize)?.as_ref()?))
    }

    fn key<'a>(&self, q: QueueRef<'a>) -> Option<KeyRef<'a>> {
        Some(KeyRef { project: *self.project_ids.get(q.project)?, name: q.name })
    }

    fn find(&self, q: QueueRef<'_>) -> Option<&Queue> {
        let key = self.key(q)?;
        self.queues.get(&key as &dyn AsKeyRef)
    }

    fn parts(&mut self, q: QueueRef<'_>) -> Option<Parts<'_, S>> {
        let key = self.key(q)?;
        let queue = self.queues.get_mut(&key as &dyn AsKeyRef)?;
        Some(Parts { queue, store: &mut self.store, message_count: &mut self.message_count })
    }

    /// The id of a project, interning it in a free slot (or a new one) if it has none.
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&pid) = self.project_ids.get(name) {
            return pid;
        }
        let project = Some(Project { name: name.into(), queues: BTreeSet::new() });
        let pid = match self.free_projects.pop() {
            Some(pid) => {
                match self.projects.get_mut(pid as usize) {
                    Some(slot @ None) => *slot = project,
                    _ => panic!("project slot {pid} is on the free list but is not free: the index is corrupt"),
                }
                pid
            }
            None => {
                self.projects.push(project);
                (self.projects.len() - 1) as u32
            }
        };
        self.project_ids.insert(name.into(), pid);
        pid
    }

    /// Adds a new incarnation of `q` (which has none now) to the index, without logging it.
    fn add_queue(&mut self, q: QueueRef<'_>, queue: Queue) {
        let pid = self.intern(q.project);
        let name: Rc<str> = q.name.into();
        match self.projects.get_mut(pid as usize).and_then(Option::as_mut) {
            Some(project) => project.queues.insert(Rc::clone(&name)),
            None => panic!("project {:?} is interned as {pid}, which is no project: the index is corrupt", q.project),
        };
        // Replacing an incarnation here would leak its bodies and its share of the count.
        let replaced = self.queues.insert(QueueKey { project: pid, name }, queue);
        assert!(replaced.is_none(), "{q:?} was added while an incarnation of it was in the index");
    }

    /// Takes `q` (under `key`) out of the index with its messages, without logging it; `false` if
    /// it was not there.
    fn remove_queue(&mut self, key: KeyRef<'_>, q: QueueRef<'_>) -> bool {
        let Some((_, queue)) = self.queues.remove_entry(&key as &dyn AsKeyRef) else {
            return false;
        };
        if let Some(log) = queue.log {
            release_all(&mut self.store, &log, &mut self.message_count);
        }
        let pid = key.project;
        let Some(slot) = self.projects.get_mut(pid as usize) else {
            panic!("{q:?} has project id {pid}, past the project table: the index is corrupt");
        };
        let Some(project) = slot.as_mut() else {
            panic!("{q:?} has project id {pid}, a free slot: the index is corrupt");
        };
        let listed = project.queues.remove(q.name);
        assert!(listed, "{q:?} was not in its project's ordered index: the index is corrupt");
        if project.queues.is_empty() {
            *slot = None;
            self.project_ids.remove(q.project);
            self.free_projects.push(pid);
        }
        true
    }

    /// Logs and inserts a new queue incarnation with a fresh epoch.
    fn insert_queue(&mut self, q: QueueRef<'_>, metadata: Option<Metadata>) -> Result<(), EngineError> {
        let epoch = self.next_epoch();
        let json = metadata.as_ref().map_or_else(|| b"{}".to_vec(), Metadata::to_json);
        self.store.append(&Record::QueueUpsert { queue: q, epoch, metadata: &json })?;
        self.add_queue(q, Queue::new(epoch, metadata));
        Ok(())
    }

    /// Refuses dead-letter cycles that this shard can see (divergence 7): the queue as its own
    /// DLQ, or a chain of DLQs on this shard leading back to it. Chains that leave the shard are
    /// not followed.
    fn check_dead_letter_cycle(&self, q: QueueRef<'_>, meta: &Metadata) -> Result<(), EngineError> {
        let Some(first) = meta.settings().dead_letter_queue.as_deref() else {
            return Ok(());
        };
        if first == q.name {
            return Err(dead_letter_cycle(None));
        }
        let mut target = first;
        for _ in 0..MAX_DEAD_LETTER_HOPS {
            let next = self
                .find(QueueRef { project: q.project, name: target })
                .and_then(Queue::settings)
                .and_then(|s| s.dead_letter_queue.as_deref());
            match next {
                None => return Ok(()),
                Some(n) if n == q.name => return Err(dead_letter_cycle(Some(first))),
                Some(n) => target = n,
            }
        }
        Ok(())
    }

    /// The post-size checks of Zaqar's `message_length`, in its order and with its texts.
    fn check_post_size(&self, queue_max: Option<u32>, request_bytes: usize) -> Result<(), EngineError> {
        let config_max = self.limits.max_messages_post_size_bytes;
        if let Some(queue_max) = queue_max.filter(|&q| request_bytes > (q as usize).min(config_max)) {
            return Err(post_size_refusal(Some(queue_max), config_max));
        }
        if request_bytes > config_max {
            return Err(post_size_refusal(None, config_max));
        }
        Ok(())
    }
}

/// The refusal of a dead-letter queue that is the queue itself (`None`) or whose chain of dead
/// letter queues, starting at `first`, leads back to it. Every backend answers with these texts.
pub fn dead_letter_cycle(first: Option<&str>) -> EngineError {
    EngineError::Invalid(match first {
        None => "_dead_letter_queue can not be the queue itself.".into(),
        Some(first) => {
            format!("_dead_letter_queue {first} leads back to this queue through its own dead letter queues.")
        }
    })
}

/// Zaqar's refusal of a post over its size: over the queue's `_max_messages_post_size` (when
/// `queue_max` is set) or over the configured maximum. Every backend answers with these texts.
pub fn post_size_refusal(queue_max: Option<u32>, config_max: usize) -> EngineError {
    match queue_max {
        Some(queue_max) => {
            let effective = (queue_max as usize).min(config_max);
            EngineError::Invalid(format!(
                "Message collection size is too large. The max size for current queue is \
                 {effective}. It is calculated by max size = min(max_messages_post_size_config: \
                 {config_max}, max_messages_post_size_queue: {queue_max})."
            ))
        }
        None => EngineError::Invalid(format!("Message collection size is too large. Max size {config_max}")),
    }
}

/// Whether a queue's metadata has every `key = value` of a listing's filters.
pub fn metadata_matches(meta: Option<&Metadata>, filters: &[(String, Value)]) -> bool {
    filters.iter().all(|(k, want)| meta.and_then(|m| m.as_map().get(k)).is_some_and(|have| json_eq(have, want)))
}

/// Logs the delete of entry `idx`, releases its body, turns it into a tombstone and detaches it
/// from its claim (dropping the claim once it holds nothing: Zaqar's mongo driver answers 404
/// for such a claim too, and it frees the memory). The caller settles the queue afterwards.
fn remove_entry<S: Store>(
    store: &mut S,
    q: QueueRef<'_>,
    log: &mut MessageLog,
    idx: usize,
    message_count: &mut usize,
) -> Result<(), StoreError> {
    // Checks the index before anything is logged.
    let seq = log.at(idx).seq;
    store.append(&Record::MessageDelete { queue: q, seq })?;
    let (e, holder) = log.tombstone(idx);
    store.release(e.body_ref());
    uncount(message_count, 1);
    let emptied = holder.filter(|&ci| log.claims.get(ci).is_some_and(|c| c.seqs.is_empty()));
    if let Some(ci) = emptied {
        // If this record fails the empty claim just stays until it expires.
        if store.append(&Record::ClaimDelete { queue: q, claim_seq: e.claim }).is_ok() {
            log.claims.remove(ci);
        }
    }
    Ok(())
}

/// Ends the claims that have expired by `now_ms` (cheap when none can have), so that their
/// messages are found by the next scan. Returns how many ended.
fn expire_claims<S: Store>(
    store: &mut S,
    q: QueueRef<'_>,
    log: &mut MessageLog,
    now_ms: u64,
) -> Result<usize, StoreError> {
    if now_ms < log.min_claim_expires_ms {
        return Ok(0);
    }
    let mut ended = 0;
    let mut i = 0;
    while let Some(claim) = log.claims.get(i) {
        if claim.is_live(now_ms) {
            i += 1;
            continue;
        }
        store.append(&Record::ClaimDelete { queue: q, claim_seq: claim.seq })?;
        log.forget_claim(i);
        ended += 1;
    }
    log.min_claim_expires_ms = log.claims.iter().map(|c| c.expires_ms).min().unwrap_or(u64::MAX);
    Ok(ended)
}

/// Indices of up to `limit` claimable entries (visible, unexpired, free), oldest first, and the
/// new scan hint assuming all of them get taken: the hint moves over the leading run of entries
/// that cannot become claimable without a claim ending, and stops at the first delayed one.
/// Expects expired claims to have been ended.
fn scan_claimable(log: &MessageLog, limit: usize, now_ms: u64) -> (Vec<usize>, u64) {
    let mut out = Vec::new();
    let mut hint = log.claim_from;
    let mut advancing = true;
    let start = log.entries.partition_point(|e| e.seq < log.claim_from);
    for (i, e) in log.entries.range(start..).enumerate() {
        if out.len() >= limit {
            break;
        }
        let passed = if !e.is_live(now_ms) || log.live_claim(e, now_ms).is_some() {
            true
        } else if !e.is_visible(now_ms) {
            false
        } else {
            out.push(start + i);
            true
        };
        advancing &= passed;
        if advancing {
            hint = e.seq + 1;
        }
    }
    (out, hint)
}

fn push_view<S: Store>(
    store: &S,
    page: &mut MessagePage,
    epoch: u32,
    e: &MessageEntry,
    claim: Option<ClaimId>,
    now_ms: u64,
) {
    let start = page.bodies.len();
    page.bodies.extend_from_slice(store.body(e.body_ref()));
    page.messages.push(MessageView {
        id: MessageId::new(epoch, e.seq),
        seq: e.seq,
        ttl_s: e.ttl_s,
        age_s: age_s(e.created_ms, now_ms),
        created_ms: e.created_ms,
        claim,
        claim_count: e.claim_count,
        body: to_u32(start)..to_u32(page.bodies.len()),
    });
}

fn age_s(since_ms: u64, now_ms: u64) -> u64 {
    now_ms.saturating_sub(since_ms) / 1000
}

/// An offset into a page's bodies. The API's limits (messages per page, bytes per message) keep
/// pages far below 4 GiB, so a larger one is a bug: its ranges would name the wrong bytes.
fn to_u32(n: usize) -> u32 {
    match u32::try_from(n) {
        Ok(n) => n,
        Err(_) => panic!("a page holds {n} bytes of bodies, past what its ranges can address"),
    }
}

/// Releases the bodies of every message of `log` (its queue is being deleted or purged) and takes
/// them off the engine's count.
fn release_all<S: Store>(store: &mut S, log: &MessageLog, message_count: &mut usize) {
    let mut released = 0;
    for e in log.entries.iter().filter(|e| !e.is_tombstone()) {
        store.release(e.body_ref());
        released += 1;
    }
    uncount(message_count, released);
}

/// `n` messages left the index. The count is the index's own (one per entry that is not a
/// tombstone), so going below zero is a bug, not something to saturate.
fn uncount(message_count: &mut usize, n: usize) {
    let Some(left) = message_count.checked_sub(n) else {
        panic!("{n} messages left an index that counted {message_count}");
    };
    *message_count = left;
}

/// Equality for metadata filters: numbers compare by value (a filter `?n=1` matches `1` and
/// `1.0`, as MongoDB's `$eq` does); everything else structurally.
fn json_eq(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
            (Some(x), Some(y), _, _) => x == y,
            (_, _, Some(x), Some(y)) => x == y,
            _ => a.as_f64() == b.as_f64(),
        },
        _ => have == want,
    }
}

mod replay;
pub use replay::ReplayReport;

#[cfg(test)]
mod tests;
