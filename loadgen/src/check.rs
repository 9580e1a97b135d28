//! Correctness checks on what the server delivers.
//!
//! A load generator that only counts status codes would happily report great numbers for a
//! server that loses or duplicates messages under load; these checks turn such bugs into
//! violations (non-zero exit).

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::zaqar::{key_parts, query_param, MsgMeta};

/// A broken delivery guarantee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The same message was delivered twice (to one reader, or by two live claims).
    Duplicate { key: u64, context: &'static str },
    /// A reader's `next` marker moved backwards.
    MarkerBack { prev: String, next: String },
    /// A non-empty page returned the same marker as the previous page.
    MarkerStalled { marker: String },
    /// A reader saw a producer's messages out of order (a lower sequence after a higher one).
    OutOfOrder { producer: u32, prev: u32, seq: u32 },
    /// A message tagged for another queue came back from this one.
    WrongQueue { key: u64, expected: u32, got: u32 },
    /// A message of this run's queues without this run's tag.
    Foreign { id: String },
    /// A claimed message's href had no `claim_id`, so it cannot be deleted as the claimer.
    NoClaimId { href: String },
    /// A message acknowledged on POST was neither consumed nor left in the queue.
    Lost { count: u64, example: u64 },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Duplicate { key, context } => {
                let (p, s) = key_parts(*key);
                write!(f, "duplicate delivery of message p{p}/s{s} ({context})")
            }
            Violation::MarkerBack { prev, next } => {
                write!(f, "marker went back from `{prev}` to `{next}`")
            }
            Violation::MarkerStalled { marker } => {
                write!(f, "non-empty page did not advance the marker `{marker}`")
            }
            Violation::OutOfOrder { producer, prev, seq } => {
                write!(f, "producer {producer}: message s{seq} read after s{prev} (order went back)")
            }
            Violation::WrongQueue { key, expected, got } => {
                let (p, s) = key_parts(*key);
                write!(f, "message p{p}/s{s} posted to queue #{got} came back from queue #{expected}")
            }
            Violation::Foreign { id } => {
                write!(f, "message `{id}` in this run's queue is not from this run")
            }
            Violation::NoClaimId { href } => {
                write!(f, "claimed message href `{href}` has no claim_id")
            }
            Violation::Lost { count, example } => {
                let (p, s) = key_parts(*example);
                write!(
                    f,
                    "{count} acknowledged messages were neither consumed nor left in their queue (e.g. p{p}/s{s})"
                )
            }
        }
    }
}

/// Compares two markers: numerically when both are integers (Zaqar's Mongo driver, and any
/// server using counters), otherwise only equality is meaningful for opaque markers.
fn marker_order(prev: &str, next: &str) -> Option<std::cmp::Ordering> {
    match (prev.parse::<u128>(), next.parse::<u128>()) {
        (Ok(a), Ok(b)) => Some(a.cmp(&b)),
        _ => (prev == next).then_some(std::cmp::Ordering::Equal),
    }
}

/// One pub-sub reader's view: its own cursor, and everything it has read so far.
#[derive(Debug, Default)]
pub struct MarkerTracker {
    last_marker: Option<String>,
    seen: HashSet<u64>,
    last_seq: HashMap<u32, u32>,
}

impl MarkerTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks one message of a page read from queue `queue`.
    pub fn observe(&mut self, m: &MsgMeta, queue: u32) -> Option<Violation> {
        if m.queue != queue {
            return Some(Violation::WrongQueue { key: m.key, expected: queue, got: m.queue });
        }
        if !self.seen.insert(m.key) {
            return Some(Violation::Duplicate { key: m.key, context: "seen twice by one reader" });
        }
        let prev = self.last_seq.insert(m.producer, m.seq);
        match prev {
            Some(prev) if prev >= m.seq => Some(Violation::OutOfOrder { producer: m.producer, prev, seq: m.seq }),
            _ => None,
        }
    }

    /// Checks the `next` href of a non-empty page and moves the cursor.
    pub fn advance(&mut self, next_href: &str) -> Option<Violation> {
        let next = query_param(next_href, "marker").unwrap_or("").to_string();
        let v = match self.last_marker.as_deref() {
            Some(prev) => match marker_order(prev, &next) {
                Some(std::cmp::Ordering::Greater) => {
                    Some(Violation::MarkerBack { prev: prev.to_string(), next: next.clone() })
                }
                Some(std::cmp::Ordering::Equal) => Some(Violation::MarkerStalled { marker: next.clone() }),
                _ => None,
            },
            None => None,
        };
        self.last_marker = Some(next);
        v
    }

    pub fn seen(&self) -> usize {
        self.seen.len()
    }
}

/// Per-thread record of what was posted (acknowledged with 201) and what claims delivered.
#[derive(Debug, Default, Clone)]
pub struct DeliveryLog {
    pub posted: HashSet<u64>,
    pub delivered: HashSet<u64>,
}

impl DeliveryLog {
    /// Records a delivery by a claim; false if this thread had already received it.
    pub fn deliver(&mut self, key: u64) -> bool {
        self.delivered.insert(key)
    }
}

/// Union of all threads' logs; `duplicates` are keys delivered on more than one thread.
pub struct MergedLog {
    pub posted: HashSet<u64>,
    pub delivered: HashSet<u64>,
    pub duplicates: Vec<u64>,
}

pub fn merge_logs(logs: Vec<DeliveryLog>) -> MergedLog {
    let mut m = MergedLog { posted: HashSet::new(), delivered: HashSet::new(), duplicates: Vec::new() };
    for log in logs {
        m.posted.extend(log.posted);
        for k in log.delivered {
            if !m.delivered.insert(k) {
                m.duplicates.push(k);
            }
        }
    }
    m
}

/// Acknowledged messages that were neither delivered nor found in the queues afterwards.
pub fn lost(posted: &HashSet<u64>, delivered: &HashSet<u64>, remaining: &HashSet<u64>) -> Vec<u64> {
    let mut v: Vec<u64> = posted.iter().filter(|k| !delivered.contains(k) && !remaining.contains(k)).copied().collect();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zaqar::msg_key;

    fn meta(p: u32, s: u32, q: u32) -> MsgMeta {
        MsgMeta { key: msg_key(p, s), producer: p, seq: s, queue: q, sent_us: 0 }
    }

    #[test]
    fn reader_sees_each_message_once_in_producer_order() {
        let mut t = MarkerTracker::new();
        assert_eq!(t.observe(&meta(1, 1, 0), 0), None);
        assert_eq!(t.observe(&meta(2, 1, 0), 0), None);
        assert_eq!(t.observe(&meta(1, 2, 0), 0), None);
        assert!(matches!(t.observe(&meta(1, 2, 0), 0), Some(Violation::Duplicate { .. })));
        assert!(matches!(t.observe(&meta(2, 0, 0), 0), Some(Violation::OutOfOrder { producer: 2, prev: 1, seq: 0 })));
        assert!(matches!(t.observe(&meta(3, 1, 5), 0), Some(Violation::WrongQueue { .. })));
        assert_eq!(t.seen(), 4);
    }

    #[test]
    fn numeric_markers_must_increase() {
        let mut t = MarkerTracker::new();
        assert_eq!(t.advance("/v2/queues/q/messages?marker=5&limit=20"), None);
        assert_eq!(t.advance("/v2/queues/q/messages?marker=9&limit=20"), None);
        assert_eq!(
            t.advance("/v2/queues/q/messages?limit=20&marker=7"),
            Some(Violation::MarkerBack { prev: "9".into(), next: "7".into() })
        );
        // After a violation the cursor still follows the server.
        assert_eq!(t.advance("/v2/queues/q/messages?marker=10"), None);
        assert_eq!(
            t.advance("/v2/queues/q/messages?marker=10"),
            Some(Violation::MarkerStalled { marker: "10".into() })
        );
    }

    #[test]
    fn opaque_markers_only_need_to_move() {
        let mut t = MarkerTracker::new();
        assert_eq!(t.advance("/m?marker=66a1f0"), None);
        assert_eq!(t.advance("/m?marker=0a"), None, "no order on opaque markers");
        assert!(matches!(t.advance("/m?marker=0a"), Some(Violation::MarkerStalled { .. })));
    }

    #[test]
    fn cross_thread_duplicates_and_lost() {
        let mut a = DeliveryLog::default();
        let mut b = DeliveryLog::default();
        for s in 0..10 {
            a.posted.insert(msg_key(1, s));
        }
        assert!(a.deliver(msg_key(1, 0)));
        assert!(!a.deliver(msg_key(1, 0)));
        assert!(b.deliver(msg_key(1, 0)));
        assert!(b.deliver(msg_key(1, 1)));
        let m = merge_logs(vec![a, b]);
        assert_eq!(m.duplicates, vec![msg_key(1, 0)]);
        let remaining: HashSet<u64> = (2..9).map(|s| msg_key(1, s)).collect();
        assert_eq!(lost(&m.posted, &m.delivered, &remaining), vec![msg_key(1, 9)]);
        let v = Violation::Lost { count: 1, example: msg_key(1, 9) };
        assert!(v.to_string().contains("p1/s9"));
    }
}
