//! A bounded cache with CLOCK eviction (second chance): each slot has a "used" bit set by a hit;
//! the hand sweeps slots, clearing bits, and replaces the first slot whose bit was clear. Hot
//! entries survive, memory is fixed by the capacity, and nothing costs more than a pass over the
//! slots. One per shard, so no lock.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::Hash;

struct Slot<K, V> {
    key: K,
    value: V,
    used: Cell<bool>,
}

pub struct ClockCache<K, V> {
    slots: Vec<Slot<K, V>>,
    index: HashMap<K, usize, ahash::RandomState>,
    capacity: usize,
    hand: usize,
}

impl<K: Hash + Eq + Copy, V> ClockCache<K, V> {
    /// A cache of at most `capacity` entries (0: it keeps nothing).
    pub fn new(capacity: usize) -> Self {
        ClockCache { slots: Vec::new(), index: HashMap::default(), capacity, hand: 0 }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        let slot = self.slots.get(*self.index.get(key)?)?;
        slot.used.set(true);
        Some(&slot.value)
    }

    /// Inserts or replaces; evicts one entry when full.
    pub fn insert(&mut self, key: K, value: V) {
        if self.capacity == 0 {
            return;
        }
        if let Some(slot) = self.index.get(&key).and_then(|&i| self.slots.get_mut(i)) {
            slot.value = value;
            slot.used.set(true);
            return;
        }
        if self.slots.len() < self.capacity {
            self.index.insert(key, self.slots.len());
            self.slots.push(Slot { key, value, used: Cell::new(false) });
            return;
        }
        // At most two passes: the first clears every bit, so the second finds a clear one.
        loop {
            self.hand = (self.hand + 1) % self.slots.len();
            let Some(slot) = self.slots.get_mut(self.hand) else { return };
            if slot.used.replace(false) {
                continue;
            }
            self.index.remove(&slot.key);
            *slot = Slot { key, value, used: Cell::new(false) };
            self.index.insert(key, self.hand);
            return;
        }
    }

    pub fn remove(&mut self, key: &K) {
        let Some(i) = self.index.remove(key) else { return };
        self.slots.swap_remove(i);
        if let Some(moved) = self.slots.get(i) {
            self.index.insert(moved.key, i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_cache_evicts_what_was_not_used_since_the_last_sweep() {
        let mut c = ClockCache::new(3);
        for k in 1..=3 {
            c.insert(k, k * 10);
        }
        assert_eq!(c.get(&1), Some(&10));
        assert_eq!(c.get(&3), Some(&30));
        c.insert(4, 40);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&2), None, "the one entry not used is the one evicted");
        assert_eq!((c.get(&1), c.get(&3), c.get(&4)), (Some(&10), Some(&30), Some(&40)));
        for k in 5..100 {
            c.insert(k, k);
        }
        assert_eq!(c.len(), 3, "never more than the capacity");
        c.remove(&99);
        assert_eq!(c.get(&99), None);
        let mut none = ClockCache::new(0);
        none.insert(1, 1);
        assert!(none.is_empty());
    }
}
