//! Revoked tokens: per project, the subjects (a token id in hex, or a token name) whose tokens
//! issued up to some moment are refused.
//!
//! One shard keeps the durable copy in its engine (a `Revocation` record per change, replayed at
//! start-up, kept by compaction while needed); every shard keeps a copy in memory for the checks
//! of its requests, filled from that one at start-up and by every revocation as it happens
//! (`shard`). Entries are dropped once `until_ms` has passed: every token they could refuse has
//! expired by then.

use std::collections::HashMap;

type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;

/// When a subject was revoked and how long the revocation matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revoked {
    /// Tokens issued at or before this moment are refused.
    pub revoked_ms: u64,
    /// After this, no token the revocation refuses can be valid: it may be forgotten.
    pub until_ms: u64,
}

/// One revocation, owned, as it crosses the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub project: String,
    pub subject: String,
    pub revoked: Revoked,
}

/// Revoked subjects by project. Looking one up allocates nothing.
#[derive(Debug)]
pub struct Revocations {
    by_project: FastMap<Box<str>, FastMap<Box<str>, Revoked>>,
    count: usize,
    /// No entry ends before this (a lower bound), so pruning a large set costs nothing until then.
    earliest_until_ms: u64,
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations { by_project: FastMap::default(), count: 0, earliest_until_ms: u64::MAX }
    }
}

impl Revocations {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds (or widens) a revocation: the later moment and the later end win, so replaying or
    /// installing the same revocations in any order gives the same set.
    pub fn insert(&mut self, project: &str, subject: &str, revoked: Revoked) {
        self.earliest_until_ms = self.earliest_until_ms.min(revoked.until_ms);
        let subjects = match self.by_project.get_mut(project) {
            Some(s) => s,
            None => self.by_project.entry(project.into()).or_default(),
        };
        match subjects.get_mut(subject) {
            Some(r) => {
                r.revoked_ms = r.revoked_ms.max(revoked.revoked_ms);
                r.until_ms = r.until_ms.max(revoked.until_ms);
            }
            None => {
                subjects.insert(subject.into(), revoked);
                self.count += 1;
            }
        }
    }

    pub fn get(&self, project: &str, subject: &str) -> Option<Revoked> {
        self.by_project.get(project)?.get(subject).copied()
    }

    /// Whether a token of `project` named by `subject` and issued at `issued_ms` is revoked.
    pub fn refuses(&self, project: &str, subject: &str, issued_ms: u64) -> bool {
        // The common case, nothing revoked, costs one compare.
        !self.is_empty() && self.get(project, subject).is_some_and(|r| issued_ms <= r.revoked_ms)
    }

    /// Forgets revocations that can no longer refuse anything at `now_ms`; returns how many.
    pub fn prune(&mut self, now_ms: u64) -> usize {
        if now_ms < self.earliest_until_ms {
            return 0;
        }
        let before = self.count;
        self.by_project.retain(|_, subjects| {
            subjects.retain(|_, r| r.until_ms > now_ms);
            !subjects.is_empty()
        });
        self.count = self.by_project.values().map(HashMap::len).sum();
        self.earliest_until_ms =
            self.by_project.values().flat_map(|s| s.values()).map(|r| r.until_ms).min().unwrap_or(u64::MAX);
        before - self.count
    }

    /// Every revocation, owned (for a shard that loads them at start-up).
    pub fn to_vec(&self) -> Vec<Revocation> {
        self.by_project
            .iter()
            .flat_map(|(project, subjects)| {
                subjects.iter().map(|(subject, &revoked)| Revocation {
                    project: project.to_string(),
                    subject: subject.to_string(),
                    revoked,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_refuse_older_tokens_merge_and_expire() {
        let mut r = Revocations::default();
        assert!(!r.refuses("p", "agent", 0));
        r.insert("p", "agent", Revoked { revoked_ms: 100, until_ms: 1000 });
        assert!(r.refuses("p", "agent", 100), "issued at the moment of revocation");
        assert!(!r.refuses("p", "agent", 101), "issued after it");
        assert!(!r.refuses("q", "agent", 0), "revocations are per project");
        r.insert("p", "agent", Revoked { revoked_ms: 50, until_ms: 2000 });
        assert_eq!(r.get("p", "agent"), Some(Revoked { revoked_ms: 100, until_ms: 2000 }));
        r.insert("q", "x", Revoked { revoked_ms: 1, until_ms: 10 });
        assert_eq!(r.len(), 2);
        assert_eq!(r.prune(10), 1);
        assert_eq!(r.to_vec().len(), 1);
        assert_eq!(r.prune(2000), 1);
        assert!(r.is_empty());
    }
}
