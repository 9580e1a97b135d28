//! Which shard owns a queue.
//!
//! The owner is a stable hash of (project, queue name) modulo the shard count. Stable means the
//! same on every build, CPU and run (FNV-1a, written out here), unlike ahash whose output may
//! change between versions: placement decides which shard's files hold a queue's data.

/// FNV-1a, 64-bit, over the project, a separator byte that no name contains, and the queue name.
pub fn placement_hash(project: &str, queue: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for &b in project.as_bytes().iter().chain(&[0xff]).chain(queue.as_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

/// The shard that owns `(project, queue)` among `shards` shards.
pub fn owner(project: &str, queue: &str, shards: usize) -> usize {
    (placement_hash(project, queue) % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_pinned_to_known_values() {
        // If these change, every existing data directory would see its queues move shards.
        assert_eq!(placement_hash("", ""), 0xaf64_724c_8602_eb6e);
        assert_eq!(owner("project", "queue", 1), 0);
        assert_eq!(placement_hash("project", "queue"), 0xa53a_2844_5415_e4d2);
        assert_eq!(owner("project", "queue", 16), 2);
    }

    #[test]
    fn project_and_name_do_not_run_together() {
        assert_ne!(placement_hash("ab", "c"), placement_hash("a", "bc"));
    }

    #[test]
    fn queues_spread_over_shards() {
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[owner("p", &format!("q{i}"), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
