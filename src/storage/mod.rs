//! The store interface under the queue engine, and its implementations.
//!
//! The engine keeps the index (what exists, in which order, claimed by whom); a store keeps the
//! bytes. Every state change the engine makes is described as a [`Record`] and handed to the store
//! before the engine answers, so a durable store can rebuild the index by replaying its records.
//! Message bodies live only in the store; the index holds a [`BodyRef`] to them.
//!
//! # Layout
//! - [`record`]: the state changes, and the rules replay applies them by.
//! - [`codec`]: their binary form, field by field.
//! - [`segment`]: one preallocated, memory-mapped segment file and its header.
//! - [`log`]: [`SegmentStore`], the durable store: appends, rotation, body lookups.
//! - `segments`: the log's files and their live estimates, and the invariant that keeps them in
//!   step (the one interface between the log and compaction).
//! - [`compact`]: how space comes back (retiring the oldest segments, live records copied forward).
//! - [`io`]: what runs beside the shard: group-commit flushes through io_uring, segment files made
//!   ahead of need on a helper thread, compaction's file operations.
//! - [`recovery`]: the start-up scan (checksums, torn tails, damage, `--repair`) and the record
//!   iterator that replay feeds on.
//! - [`datadir`]: the data directory's lock and meta file.
//! - [`faulty`]: a fault-injecting store for tests.
//! - [`memory`]: bodies in memory only (`--durability memory`).
//!
//! docs/storage.md describes the format, the durability modes and recovery for operators.

#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

pub mod codec;
mod compact;
pub mod datadir;
pub mod faulty;
pub mod io;
pub mod limits_file;
pub mod log;
pub mod memory;
pub mod record;
pub mod recovery;
pub mod segment;
mod segments;

pub use log::SegmentStore;
pub use memory::MemoryStore;
pub use record::{QueueRef, Record};

/// Where a stored message body lives. Opaque to the engine; meaningful to the store that made it
/// (the segment store: `file_no << 32 | offset in the file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRef {
    pub location: u64,
    pub len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Preallocating the next segment failed with ENOSPC (or a quota): nothing was written; the
    /// store keeps retrying and works again once space returns.
    #[error("the disk is full")]
    DiskFull,
    /// The next segment file is still being prepared (a burst outran the helper).
    #[error("the next segment file is not ready yet")]
    NotReady,
    /// A record larger than a segment (raise `segment_size_bytes`).
    #[error("a record is larger than a segment file")]
    TooLarge,
    #[error("storage I/O failed: {0}")]
    Io(String),
}

/// What the engine needs from storage. Calls are synchronous and never block: a durable store
/// buffers writes in memory-mapped segments and flushes them from the shard's event loop.
pub trait Store {
    /// Stores a message body along with its append record; returns where the body now lives.
    fn append_message(&mut self, record: &Record<'_>, body: &[u8]) -> Result<BodyRef, StoreError>;
    /// Logs any other state change.
    fn append(&mut self, record: &Record<'_>) -> Result<(), StoreError>;
    /// The bytes of a body previously stored and not yet released.
    ///
    /// # Panics
    /// When the store did not make `at`, or no longer holds it (as far as it can tell cheaply).
    /// Only the engine's index hands references back, so such a reference means the index is
    /// corrupt: answering it with some other bytes, or none, would hand a client a wrong body.
    /// A panic stops the process instead, and recovery rebuilds the index from the checksummed
    /// log.
    fn body(&self, at: BodyRef) -> &[u8];
    /// The engine no longer references this body (deleted, expired, purged, moved). Releasing a
    /// reference twice, or one the store did not make, is the same corruption as in
    /// [`Store::body`] and panics where the store can tell.
    fn release(&mut self, at: BodyRef);
    /// Hands every change appended so far to the kernel, so it survives a crash of the process
    /// (a durable store stages appends in memory and writes them out in one system call). Called
    /// before any answer is shown; stores without a file have nothing to do.
    fn write_out(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Makes sure `records` message appends with `body_bytes` of bodies and names in all will all
    /// succeed (barring I/O failure), so that a multi-message post is never half on disk.
    fn reserve(&mut self, _records: usize, _body_bytes: usize) -> Result<(), StoreError> {
        Ok(())
    }
    /// Replay found this body live in the log (so the store can account for it).
    fn recovered(&mut self, _at: BodyRef) {}
    /// One bounded step of space reclamation, judged against the engine's index; `true` while
    /// there is more to do soon. Stores without a log have nothing to reclaim.
    fn compact_step(&mut self, _index: &mut dyn LiveIndex, _budget_bytes: usize) -> bool {
        false
    }
    /// Gauges for metrics and tests.
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}

/// What compaction asks the engine: is this record still needed? All answers are about the
/// queue's *current* incarnation; compaction checks the epoch first.
pub trait LiveIndex {
    /// Epoch of the queue's current incarnation, if it exists.
    fn epoch(&self, q: QueueRef<'_>) -> Option<u32>;
    /// The message `seq` is in the index, not deleted, with its body at `location`.
    fn holds_body(&self, q: QueueRef<'_>, seq: u64, location: u64) -> bool;
    /// The message `seq` is in the index and not deleted.
    fn message_live(&self, q: QueueRef<'_>, seq: u64) -> bool;
    /// The claim `claim_seq` is in the index (it may have expired and await the sweep).
    fn claim_live(&self, q: QueueRef<'_>, claim_seq: u64) -> bool;
    /// The queue's `(last_seq, last_claim_seq)`.
    fn counters(&self, q: QueueRef<'_>) -> Option<(u64, u64)>;
    /// The revocation of `q.name` in `q.project` is in force as this record states it (a later
    /// record for the same subject, or its end, makes it dead).
    fn revocation_live(&self, q: QueueRef<'_>, revoked_ms: u64, until_ms: u64) -> bool;
    /// The body of message `seq` moved (compaction copied its record).
    fn relocate(&mut self, q: QueueRef<'_>, seq: u64, to: BodyRef);
}

/// Storage gauges of one shard: the store reports its figures as this value, which the shard
/// copies into its metrics snapshot (the store never writes metrics itself).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Segment files in use (the spare and compaction outputs in progress not counted).
    pub segments: u64,
    /// Bytes of those files on disk.
    pub disk_bytes: u64,
    /// Estimated bytes of live message records.
    pub live_bytes: u64,
    /// Bytes appended since start, and how many of them are known to be on disk.
    pub written_bytes: u64,
    pub durable_bytes: u64,
    /// Compactions finished since start.
    pub compactions: u64,
    /// Flushes (fdatasync rounds) since start: with `written_bytes`, shows how well group commit
    /// batches.
    pub flushes: u64,
    pub flush_latency: crate::metrics::HistogramSnapshot,
}

/// A store with a count of the bodies it holds for the engine: every body enters through
/// `append_message` or `recovered` and leaves through `release`, so counting at this boundary is
/// exact for any store, costs two adds per message, and spares a metrics scrape a walk over every
/// message of the shard.
pub struct Tallied<S> {
    inner: S,
    bodies: u64,
    body_bytes: u64,
}

impl<S> Tallied<S> {
    pub fn new(inner: S) -> Self {
        Tallied { inner, bodies: 0, body_bytes: 0 }
    }
    pub fn inner(&self) -> &S {
        &self.inner
    }
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }
    /// Bodies held, and their bytes.
    pub fn held(&self) -> (u64, u64) {
        (self.bodies, self.body_bytes)
    }
    fn add(&mut self, at: BodyRef) {
        self.bodies += 1;
        self.body_bytes += u64::from(at.len);
    }
}

impl<S: Store> Store for Tallied<S> {
    fn append_message(&mut self, record: &Record<'_>, body: &[u8]) -> Result<BodyRef, StoreError> {
        let at = self.inner.append_message(record, body)?;
        self.add(at);
        Ok(at)
    }
    fn append(&mut self, record: &Record<'_>) -> Result<(), StoreError> {
        self.inner.append(record)
    }
    fn body(&self, at: BodyRef) -> &[u8] {
        self.inner.body(at)
    }
    fn release(&mut self, at: BodyRef) {
        assert!(
            self.bodies > 0 && self.body_bytes >= u64::from(at.len),
            "the engine released a body it does not hold ({at:?}; {} bodies, {} bytes held)",
            self.bodies,
            self.body_bytes
        );
        self.bodies -= 1;
        self.body_bytes -= u64::from(at.len);
        self.inner.release(at)
    }
    fn write_out(&mut self) -> Result<(), StoreError> {
        self.inner.write_out()
    }
    fn reserve(&mut self, records: usize, body_bytes: usize) -> Result<(), StoreError> {
        self.inner.reserve(records, body_bytes)
    }
    fn recovered(&mut self, at: BodyRef) {
        self.add(at);
        self.inner.recovered(at)
    }
    fn compact_step(&mut self, index: &mut dyn LiveIndex, budget_bytes: usize) -> bool {
        self.inner.compact_step(index, budget_bytes)
    }
    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
}

/// Shards hold their store as `Box<dyn Store>`: which store runs is chosen at start-up.
impl<T: Store + ?Sized> Store for Box<T> {
    fn append_message(&mut self, record: &Record<'_>, body: &[u8]) -> Result<BodyRef, StoreError> {
        (**self).append_message(record, body)
    }
    fn append(&mut self, record: &Record<'_>) -> Result<(), StoreError> {
        (**self).append(record)
    }
    fn body(&self, at: BodyRef) -> &[u8] {
        (**self).body(at)
    }
    fn release(&mut self, at: BodyRef) {
        (**self).release(at)
    }
    fn write_out(&mut self) -> Result<(), StoreError> {
        (**self).write_out()
    }
    fn reserve(&mut self, records: usize, body_bytes: usize) -> Result<(), StoreError> {
        (**self).reserve(records, body_bytes)
    }
    fn recovered(&mut self, at: BodyRef) {
        (**self).recovered(at)
    }
    fn compact_step(&mut self, index: &mut dyn LiveIndex, budget_bytes: usize) -> bool {
        (**self).compact_step(index, budget_bytes)
    }
    fn stats(&self) -> StoreStats {
        (**self).stats()
    }
}
