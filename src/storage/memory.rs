//! Keeps bodies in memory only: nothing survives a restart. The explicit choice for tests and
//! for deployments that treat marconi as a cache.

use super::{BodyRef, Record, Store, StoreError};

/// Bodies in a slab with a free list, so that a steady produce/consume load reuses slots.
#[derive(Default)]
pub struct MemoryStore {
    bodies: Vec<Box<[u8]>>,
    free: Vec<u32>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bodies currently held (for tests and metrics).
    pub fn live_bodies(&self) -> usize {
        self.bodies.len() - self.free.len()
    }
}

impl Store for MemoryStore {
    fn append_message(&mut self, _record: &Record<'_>, body: &[u8]) -> Result<BodyRef, StoreError> {
        let len = u32::try_from(body.len()).map_err(|_| StoreError::Io("body over 4 GiB".into()))?;
        let boxed: Box<[u8]> = body.into();
        let location = match self.free.pop() {
            Some(slot) => {
                self.bodies[slot as usize] = boxed;
                slot
            }
            None => {
                self.bodies.push(boxed);
                (self.bodies.len() - 1) as u32
            }
        };
        Ok(BodyRef { location: u64::from(location), len })
    }

    fn append(&mut self, _record: &Record<'_>) -> Result<(), StoreError> {
        Ok(())
    }

    fn body(&self, at: BodyRef) -> &[u8] {
        self.bodies.get(at.location as usize).map(|b| &b[..]).unwrap_or(&[])
    }

    fn release(&mut self, at: BodyRef) {
        if let Some(slot) = self.bodies.get_mut(at.location as usize) {
            *slot = Box::default();
            self.free.push(at.location as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::QueueRef;

    fn rec() -> Record<'static> {
        Record::MessageAppend {
            queue: QueueRef { project: "p", name: "q" },
            seq: 1,
            created_ms: 0,
            ttl_s: 60,
            delay_ms: 0,
            client_hash: 0,
        }
    }

    #[test]
    fn bodies_round_trip_and_slots_are_reused() {
        let mut store = MemoryStore::new();
        let a = store.append_message(&rec(), b"{\"a\":1}").unwrap();
        let b = store.append_message(&rec(), b"[2]").unwrap();
        assert_eq!(store.body(a), b"{\"a\":1}");
        assert_eq!(store.body(b), b"[2]");
        store.release(a);
        assert_eq!(store.live_bodies(), 1);
        let c = store.append_message(&rec(), b"null").unwrap();
        assert_eq!(c.location, a.location);
        assert_eq!(store.body(c), b"null");
        assert_eq!(store.body(b), b"[2]");
    }
}
