//! A store that fails on purpose, for tests: failed writes, short (torn) writes, failed flushes.
//!
//! Wraps any [`Store`]; each write consults the plan, which fails chosen writes (by number, or at
//! random from a seed, so a failing run can be replayed). A short write needs the inner store's
//! help to leave half a record behind ([`TornWrite`]); the segment store provides it. Failed
//! flushes are injected in the segment store's flusher ([`LogShared::fail_next_flushes`]
//! (super::io::LogShared::fail_next_flushes)).

use super::{BodyRef, LiveIndex, Record, Store, StoreError, StoreStats};

/// Stores that can leave a torn record behind, as a crash mid-write would.
pub trait TornWrite {
    /// Writes the first `keep` bytes of the record and returns the error the caller sees.
    fn append_torn(&mut self, record: &Record<'_>, body: &[u8], keep: usize) -> StoreError;
}

impl TornWrite for super::SegmentStore {
    fn append_torn(&mut self, record: &Record<'_>, body: &[u8], keep: usize) -> StoreError {
        super::SegmentStore::append_torn(self, record, body, keep)
    }
}

impl TornWrite for super::MemoryStore {
    fn append_torn(&mut self, _: &Record<'_>, _: &[u8], _: usize) -> StoreError {
        StoreError::Io("injected short write".into())
    }
}

/// What happens to one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Fail(StoreError),
    /// Only this many bytes of the record reach the log.
    Short(usize),
}

/// Which writes fail.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    /// Faults by write number (0-based), checked first.
    pub at: Vec<(u64, Fault)>,
    /// Otherwise, each write fails with this probability (per mille), drawn from `seed`.
    pub per_mille: u32,
    pub seed: u64,
}

pub struct FaultyStore<S> {
    pub inner: S,
    plan: FaultPlan,
    rng: u64,
    writes: u64,
    /// Faults injected so far, with the write number.
    pub injected: Vec<(u64, Fault)>,
}

impl<S: Store + TornWrite> FaultyStore<S> {
    pub fn new(inner: S, plan: FaultPlan) -> Self {
        let rng = plan.seed | 1;
        FaultyStore { inner, plan, rng, writes: 0, injected: Vec::new() }
    }

    fn next_fault(&mut self) -> Option<Fault> {
        let n = self.writes;
        self.writes += 1;
        if let Some((_, f)) = self.plan.at.iter().find(|(k, _)| *k == n) {
            return Some(f.clone());
        }
        if self.plan.per_mille == 0 {
            return None;
        }
        // xorshift64: deterministic from the seed.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        if self.rng % 1000 < u64::from(self.plan.per_mille) {
            let kind = (self.rng >> 20) % 3;
            Some(match kind {
                0 => Fault::Fail(StoreError::DiskFull),
                1 => Fault::Fail(StoreError::Io("injected write failure".into())),
                _ => Fault::Short(((self.rng >> 32) % 64) as usize),
            })
        } else {
            None
        }
    }

    fn apply(&mut self, record: &Record<'_>, body: &[u8]) -> Result<(), StoreError> {
        let Some(fault) = self.next_fault() else {
            return Ok(());
        };
        self.injected.push((self.writes - 1, fault.clone()));
        Err(match fault {
            Fault::Fail(e) => e,
            Fault::Short(keep) => self.inner.append_torn(record, body, keep),
        })
    }
}

impl<S: Store + TornWrite> Store for FaultyStore<S> {
    fn append_message(&mut self, record: &Record<'_>, body: &[u8]) -> Result<BodyRef, StoreError> {
        self.apply(record, body)?;
        self.inner.append_message(record, body)
    }
    fn append(&mut self, record: &Record<'_>) -> Result<(), StoreError> {
        self.apply(record, &[])?;
        self.inner.append(record)
    }
    fn body(&self, at: BodyRef) -> &[u8] {
        self.inner.body(at)
    }
    fn release(&mut self, at: BodyRef) {
        self.inner.release(at)
    }
    fn write_out(&mut self) -> Result<(), StoreError> {
        self.inner.write_out()
    }
    fn reserve(&mut self, records: usize, body_bytes: usize) -> Result<(), StoreError> {
        self.inner.reserve(records, body_bytes)
    }
    fn recovered(&mut self, at: BodyRef) {
        self.inner.recovered(at)
    }
    fn compact_step(&mut self, index: &mut dyn LiveIndex, budget_bytes: usize) -> bool {
        self.inner.compact_step(index, budget_bytes)
    }
    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;

    #[test]
    #[should_panic(expected = "the engine's index is corrupt")]
    fn an_unknown_reference_panics_through_the_wrapper() {
        let store = FaultyStore::new(MemoryStore::new(), FaultPlan::default());
        store.body(BodyRef { location: 0, len: 1 });
    }
}
