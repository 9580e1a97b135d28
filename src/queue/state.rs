//! The engine's in-memory index: what one queue holds, laid out for millions of queues.
//!
//! ## Format
//! - [`Queue`]: 40 bytes. Counters that must outlive every message (sequence numbers are never
//!   reused within an incarnation), the epoch, and two lazily allocated boxes: metadata (absent
//!   when empty) and the [`MessageLog`] (absent while the queue holds no message and no claim).
//!   An empty queue therefore costs its map entry, its name twice (map key and the project's
//!   ordered index) and nothing else.
//! - [`MessageEntry`]: 64 bytes per message, bodies live in the store. Entries sit in a `VecDeque`
//!   sorted by `seq`; a deleted entry in the middle becomes a tombstone (`expires_ms == 0`, which
//!   every "is it expired?" test already treats as gone) and tombstones are compacted away once
//!   they are half of the log.
//! - [`Claim`]: kept in a `Vec` sorted by claim sequence (claims are created in that order, so
//!   insertion is a push and lookup a binary search).

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use crate::queue::{ClaimId, Metadata};
use crate::storage::BodyRef;

/// A queue's key in the engine's map: the interned project and the queue name. The name is
/// shared with the project's ordered index, so each queue's name is allocated once (at a million
/// queues a second copy is a sixth of an empty queue's cost).
pub(crate) struct QueueKey {
    pub project: u32,
    pub name: Rc<str>,
}

/// A borrowed [`QueueKey`], so lookups need no allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct KeyRef<'a> {
    pub project: u32,
    pub name: &'a str,
}

/// The bridge that lets a `HashMap<QueueKey, _>` be searched with a [`KeyRef`]: both hash and
/// compare through their `KeyRef` view.
pub(crate) trait AsKeyRef {
    fn key_ref(&self) -> KeyRef<'_>;
}

impl AsKeyRef for QueueKey {
    fn key_ref(&self) -> KeyRef<'_> {
        KeyRef { project: self.project, name: &self.name }
    }
}

impl AsKeyRef for KeyRef<'_> {
    fn key_ref(&self) -> KeyRef<'_> {
        *self
    }
}

impl<'a> Borrow<dyn AsKeyRef + 'a> for QueueKey {
    fn borrow(&self) -> &(dyn AsKeyRef + 'a) {
        self
    }
}

impl Hash for QueueKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key_ref().hash(state)
    }
}

impl PartialEq for QueueKey {
    fn eq(&self, other: &Self) -> bool {
        self.key_ref() == other.key_ref()
    }
}

impl Eq for QueueKey {}

impl Hash for dyn AsKeyRef + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key_ref().hash(state)
    }
}

impl PartialEq for dyn AsKeyRef + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key_ref() == other.key_ref()
    }
}

impl Eq for dyn AsKeyRef + '_ {}

/// One queue incarnation.
pub(crate) struct Queue {
    /// Sequence number of the last message appended (0: none yet). Markers start at 1.
    pub last_seq: u64,
    /// Sequence number of the last claim made; claim ids are never reused in an incarnation, so
    /// a stale claim id can never match a newer claim.
    pub last_claim_seq: u64,
    pub meta: Option<Box<Metadata>>,
    pub log: Option<Box<MessageLog>>,
    pub epoch: u32,
}

impl Queue {
    pub fn new(epoch: u32, meta: Option<Metadata>) -> Self {
        Queue { last_seq: 0, last_claim_seq: 0, meta: meta.filter(|m| !m.is_empty()).map(Box::new), log: None, epoch }
    }

    pub fn settings(&self) -> Option<&crate::queue::QueueSettings> {
        self.meta.as_deref().map(Metadata::settings)
    }

    /// Drops the log box once it holds nothing, so queues that were busy once and are idle now
    /// cost what empty queues cost.
    pub fn settle(&mut self) {
        if let Some(log) = self.log.as_deref_mut() {
            log.tidy();
            if log.entries.is_empty() && log.claims.is_empty() {
                self.log = None;
            }
        }
    }
}

/// The index entry of one message. See the module's Format section for the tombstone encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessageEntry {
    pub seq: u64,
    pub body_location: u64,
    pub created_ms: u64,
    /// When the message stops existing; raised (never lowered) by claims. 0 marks a tombstone.
    pub expires_ms: u64,
    pub client_hash: u64,
    /// Sequence number of the claim that last took the message (0: none); the claim may have
    /// expired since; whether it is live is decided by the claim's own expiry.
    pub claim: u64,
    pub body_len: u32,
    /// Time after `created_ms` before the message may be claimed or listed by default.
    pub delay_ms: u32,
    /// The TTL as posted (divergence 3: claims do not rewrite it).
    pub ttl_s: u32,
    pub claim_count: u32,
}

impl MessageEntry {
    /// A message as appended (and as replay rebuilds it from its append record), unclaimed.
    pub fn appended(seq: u64, at: BodyRef, created_ms: u64, ttl_s: u32, delay_ms: u32, client_hash: u64) -> Self {
        MessageEntry {
            seq,
            body_location: at.location,
            created_ms,
            // Never 0, which marks a tombstone.
            expires_ms: created_ms.saturating_add(u64::from(ttl_s) * 1000).max(1),
            client_hash,
            claim: 0,
            body_len: at.len,
            delay_ms,
            ttl_s,
            claim_count: 0,
        }
    }

    pub fn body_ref(&self) -> BodyRef {
        BodyRef { location: self.body_location, len: self.body_len }
    }

    pub fn is_tombstone(&self) -> bool {
        self.expires_ms == 0
    }

    /// Not deleted and not expired at `now_ms` (tombstones fail this too).
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_ms > now_ms
    }

    pub fn visible_at_ms(&self) -> u64 {
        self.created_ms.saturating_add(u64::from(self.delay_ms))
    }

    pub fn is_visible(&self, now_ms: u64) -> bool {
        self.visible_at_ms() <= now_ms
    }

    pub fn make_tombstone(&mut self) {
        self.expires_ms = 0;
        self.claim = 0;
    }
}

/// A claim over some messages of one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    pub seq: u64,
    /// The 64 random bits its id carries (see [`ClaimId`]). `None` for a claim replayed from a
    /// format-1 record, made before claims had secrets: no id names it, so it can be neither
    /// renewed nor released, and it ends by expiring (at most `api.max_claim_ttl_s` after the
    /// upgrade).
    pub secret: Option<u64>,
    /// Creation or last renewal: the claim's `age` counts from here.
    pub renewed_ms: u64,
    pub expires_ms: u64,
    pub ttl_s: u32,
    pub grace_s: u32,
    /// The messages taken at creation that still exist, ascending.
    pub seqs: Vec<u64>,
}

impl Claim {
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_ms > now_ms
    }

    /// Restarts the claim's clock at `at_ms` with a new ttl and grace (a renewal, live or
    /// replayed), and raises the expiry of its messages that would die before the claim does plus
    /// its grace (divergence 3: the visible `ttl` stays as posted).
    pub fn renew(&mut self, entries: &mut VecDeque<MessageEntry>, at_ms: u64, ttl_s: u32, grace_s: u32) {
        self.renewed_ms = at_ms;
        self.expires_ms = at_ms.saturating_add(u64::from(ttl_s) * 1000);
        self.ttl_s = ttl_s;
        self.grace_s = grace_s;
        let keep_until_ms = self.expires_ms.saturating_add(u64::from(grace_s) * 1000);
        for &seq in &self.seqs {
            if let Some(e) = entry_mut(entries, seq).filter(|e| !e.is_tombstone()) {
                e.expires_ms = e.expires_ms.max(keep_until_ms);
            }
        }
    }
}

/// The messages and claims of a queue that has any.
pub(crate) struct MessageLog {
    pub entries: VecDeque<MessageEntry>,
    pub tombstones: usize,
    pub claims: Vec<Claim>,
    /// Every entry with a smaller sequence number is a tombstone, expired, or held by a claim
    /// that is still in `claims`; claim and pop scans start here. Lowered when a claim ends.
    pub claim_from: u64,
    /// No live entry expires before this (a lower bound; the sweep skips the queue until then).
    pub min_expires_ms: u64,
    /// No claim expires before this (a lower bound).
    pub min_claim_expires_ms: u64,
    /// Body bytes of the entries that are not tombstones (for the byte quotas).
    pub live_bytes: u64,
}

impl MessageLog {
    /// Messages (not tombstones) and their body bytes, expired ones not collected yet included.
    pub fn held(&self) -> (u64, u64) {
        ((self.entries.len() - self.tombstones) as u64, self.live_bytes)
    }

    pub fn new() -> Self {
        MessageLog {
            entries: VecDeque::new(),
            tombstones: 0,
            claims: Vec::new(),
            claim_from: 0,
            min_expires_ms: u64::MAX,
            min_claim_expires_ms: u64::MAX,
            live_bytes: 0,
        }
    }

    /// Index of the entry with this sequence number (tombstones included).
    pub fn position(&self, seq: u64) -> Option<usize> {
        self.entries.binary_search_by_key(&seq, |e| e.seq).ok()
    }

    /// The entry with this sequence number (tombstones included) and its index.
    pub fn find(&self, seq: u64) -> Option<(usize, &MessageEntry)> {
        let i = self.position(seq)?;
        Some((i, self.entries.get(i)?))
    }

    /// The entry at `index`, which the caller found in this log (by [`MessageLog::find`], a scan
    /// or a walk) since its last change that moves entries ([`MessageLog::tidy`]).
    ///
    /// # Panics
    /// When `index` is past the entries: the caller kept an index across such a change.
    pub fn at(&self, index: usize) -> &MessageEntry {
        match self.entries.get(index) {
            Some(e) => e,
            None => panic!("entry index {index} is past the {} entries of the queue's index", self.entries.len()),
        }
    }

    /// [`MessageLog::at`], to change the entry.
    pub fn at_mut(&mut self, index: usize) -> &mut MessageEntry {
        let len = self.entries.len();
        match self.entries.get_mut(index) {
            Some(e) => e,
            None => panic!("entry index {index} is past the {len} entries of the queue's index"),
        }
    }

    /// Turns the entry at `index` (as in [`MessageLog::at`]) into a tombstone and takes it off
    /// the claim holding it; returns the entry as it was and that claim's index, if the claim is
    /// still here. The caller releases the body and settles the queue.
    pub fn tombstone(&mut self, index: usize) -> (MessageEntry, Option<usize>) {
        let entry = self.at_mut(index);
        let e = *entry;
        entry.make_tombstone();
        self.tombstones += 1;
        self.live_bytes = self.live_bytes.checked_sub(u64::from(e.body_len)).unwrap_or_else(|| {
            panic!("a message of {} bytes left a queue that counted {}", e.body_len, self.live_bytes)
        });
        let holder = (e.claim != 0).then(|| self.claim_index(e.claim)).flatten();
        if let Some(claim) = holder.and_then(|ci| self.claims.get_mut(ci)) {
            claim.seqs.retain(|&s| s != e.seq);
        }
        (e, holder)
    }

    /// Index of the first entry with a sequence number above `seq`.
    pub fn first_after(&self, seq: u64) -> usize {
        self.entries.partition_point(|e| e.seq <= seq)
    }

    pub fn claim_index(&self, claim_seq: u64) -> Option<usize> {
        self.claims.binary_search_by_key(&claim_seq, |c| c.seq).ok()
    }

    pub fn claim(&self, claim_seq: u64) -> Option<&Claim> {
        self.claims.get(self.claim_index(claim_seq)?)
    }

    /// The live claim holding `e` at `now_ms`, if any.
    pub fn live_claim(&self, e: &MessageEntry, now_ms: u64) -> Option<u64> {
        if e.claim == 0 {
            return None;
        }
        self.claim(e.claim).filter(|c| c.is_live(now_ms)).map(|c| c.seq)
    }

    /// The id of the live claim holding `e` at `now_ms`, if that claim has one (see
    /// [`Claim::secret`]).
    pub fn live_claim_id(&self, e: &MessageEntry, now_ms: u64) -> Option<ClaimId> {
        let seq = self.live_claim(e, now_ms)?;
        Some(ClaimId::new(seq, self.claim(seq)?.secret?))
    }

    /// Whether `id` names a claim of this log that is live at `now_ms` (its secret checked).
    pub fn claim_named(&self, id: ClaimId, now_ms: u64) -> Option<&Claim> {
        self.claim(id.seq).filter(|c| c.is_live(now_ms) && id.holds(c.seq, c.secret))
    }

    /// Detaches a claim's messages and lowers the scan hint so they are found again.
    pub fn forget_claim(&mut self, index: usize) -> Claim {
        let claim = self.claims.remove(index);
        for &seq in &claim.seqs {
            if let Some(e) = entry_mut(&mut self.entries, seq).filter(|e| e.claim == claim.seq) {
                e.claim = 0;
            }
        }
        if let Some(&first) = claim.seqs.first() {
            self.claim_from = self.claim_from.min(first);
        }
        self.min_claim_expires_ms = self.claims.iter().map(|c| c.expires_ms).min().unwrap_or(u64::MAX);
        claim
    }

    /// Pops tombstones off the front, compacts when they are half of the log, and gives memory
    /// back after a burst.
    pub fn tidy(&mut self) {
        while self.entries.front().is_some_and(MessageEntry::is_tombstone) {
            self.entries.pop_front();
            let Some(left) = self.tombstones.checked_sub(1) else {
                panic!("a tombstone was popped that the queue's tombstone count did not hold");
            };
            self.tombstones = left;
        }
        if self.tombstones > 0 && self.tombstones * 2 > self.entries.len() {
            self.entries.retain(|e| !e.is_tombstone());
            self.tombstones = 0;
        }
        let (len, cap) = (self.entries.len(), self.entries.capacity());
        if cap > 64 && len * 4 < cap {
            self.entries.shrink_to(len * 2);
        }
    }
}

/// The entry with this sequence number (tombstones included), to change it.
pub(crate) fn entry_mut(entries: &mut VecDeque<MessageEntry>, seq: u64) -> Option<&mut MessageEntry> {
    let i = entries.binary_search_by_key(&seq, |e| e.seq).ok()?;
    entries.get_mut(i)
}

/// The claim with this sequence number, to change it.
pub(crate) fn claim_mut(claims: &mut [Claim], claim_seq: u64) -> Option<&mut Claim> {
    let i = claims.binary_search_by_key(&claim_seq, |c| c.seq).ok()?;
    claims.get_mut(i)
}
