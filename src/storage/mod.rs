//! The store interface under the queue engine, and its implementations.
//!
//! The engine keeps the index (what exists, in which order, claimed by whom); a store keeps the
//! bytes. Every state change the engine makes is described as a [`Record`] and handed to the store
//! before the engine answers, so a durable store can rebuild the index by replaying its records.
//! Message bodies live only in the store; the index holds a [`BodyRef`] to them.

pub mod memory;
pub mod record;

pub use memory::MemoryStore;
pub use record::{QueueRef, Record};

/// Where a stored message body lives. Opaque to the engine; meaningful to the store that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRef {
    pub location: u64,
    pub len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the disk is full")]
    DiskFull,
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
    /// The bytes of a body previously stored. The reference must come from this store.
    fn body(&self, at: BodyRef) -> &[u8];
    /// The engine no longer references this body (deleted, expired, purged, moved).
    fn release(&mut self, at: BodyRef);
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
}
