//! Keeps bodies in memory only: nothing survives a restart. The explicit choice for tests and
//! for deployments that treat marconi as a cache.

use super::{BodyRef, Record, Store, StoreError};

/// Bodies in a slab with a free list, so that a steady produce/consume load reuses slots.
/// A free slot is `None` (the same 16 bytes as a held one), so a reference to it is caught, and
/// so is one to a reused slot whose body has another length.
#[derive(Default)]
pub struct MemoryStore {
    bodies: Vec<Option<Box<[u8]>>>,
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

/// The panic of a reference this store does not hold (see [`Store::body`]).
fn corrupt(at: BodyRef, what: &str) -> ! {
    panic!("{what} body reference {at:?}, which the memory store does not hold: the engine's index is corrupt")
}

impl Store for MemoryStore {
    fn append_message(&mut self, _record: &Record<'_>, body: &[u8]) -> Result<BodyRef, StoreError> {
        let len = u32::try_from(body.len()).map_err(|_| StoreError::Io("body over 4 GiB".into()))?;
        let boxed = Some(body.into());
        let location = match self.free.pop() {
            Some(slot) => {
                match self.bodies.get_mut(slot as usize) {
                    Some(free @ None) => *free = boxed,
                    _ => panic!("slot {slot} is on the memory store's free list but is not a free slot"),
                }
                slot
            }
            None => {
                let slot =
                    u32::try_from(self.bodies.len()).map_err(|_| StoreError::Io("over 4 billion bodies".into()))?;
                self.bodies.push(boxed);
                slot
            }
        };
        Ok(BodyRef { location: u64::from(location), len })
    }

    fn append(&mut self, _record: &Record<'_>) -> Result<(), StoreError> {
        Ok(())
    }

    fn body(&self, at: BodyRef) -> &[u8] {
        match self.bodies.get(at.location as usize) {
            Some(Some(body)) if body.len() == at.len as usize => body,
            _ => corrupt(at, "read of"),
        }
    }

    fn release(&mut self, at: BodyRef) {
        match self.bodies.get_mut(at.location as usize) {
            Some(slot) if slot.as_deref().is_some_and(|body| body.len() == at.len as usize) => *slot = None,
            _ => corrupt(at, "release of"),
        }
        self.free.push(at.location as u32);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
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

    /// A store that held one body and released it, with that body's reference.
    fn released() -> (MemoryStore, BodyRef) {
        let mut store = MemoryStore::new();
        let a = store.append_message(&rec(), b"[1]").unwrap();
        store.release(a);
        (store, a)
    }

    #[test]
    #[should_panic(expected = "read of body reference")]
    fn a_released_reference_panics() {
        let (store, a) = released();
        store.body(a);
    }

    #[test]
    #[should_panic(expected = "the engine's index is corrupt")]
    fn an_unknown_reference_panics() {
        MemoryStore::new().body(BodyRef { location: 3, len: 1 });
    }

    #[test]
    #[should_panic(expected = "release of body reference")]
    fn a_double_release_panics() {
        let (mut store, a) = released();
        store.release(a);
    }
}
