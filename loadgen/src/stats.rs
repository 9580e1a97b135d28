//! Counters and latency histograms. Each client thread owns one `Stats` (no sharing on the hot
//! path); they are merged once at the end, which is exact for HDR histograms.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency tracked: one hour in µs. Open-loop latencies include queueing behind a
/// stalled server, so they can exceed the request timeout by far.
const MAX_US: u64 = 3_600_000_000;
/// How many violation messages are kept verbatim (all are counted).
pub const MAX_VIOLATION_SAMPLES: usize = 20;

pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid")
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    #[serde(rename = "p99.9")]
    pub p99_9: u64,
    #[serde(rename = "p99.99")]
    pub p99_99: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            p99_99: h.value_at_quantile(0.9999),
            max: h.max(),
        }
    }
}

/// Kinds of HTTP request, for per-operation breakdowns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Post,
    Claim,
    Delete,
    List,
    Stats,
    Ping,
    QueueCreate,
    QueueList,
    QueueDelete,
}

impl Op {
    /// Every kind, in `Op` order (the index of the per-operation table).
    pub const ALL: [Op; 9] = [
        Op::Post,
        Op::Claim,
        Op::Delete,
        Op::List,
        Op::Stats,
        Op::Ping,
        Op::QueueCreate,
        Op::QueueList,
        Op::QueueDelete,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Post => "post_messages",
            Op::Claim => "claim",
            Op::Delete => "delete_message",
            Op::List => "list_messages",
            Op::Stats => "queue_stats",
            Op::Ping => "ping",
            Op::QueueCreate => "create_queue",
            Op::QueueList => "list_queues",
            Op::QueueDelete => "delete_queue",
        }
    }
}

#[derive(Debug, Clone)]
pub struct OpStats {
    pub requests: u64,
    pub latency: Histogram<u64>,
}

/// Everything one thread measured.
#[derive(Debug, Clone)]
pub struct Stats {
    pub latency: Histogram<u64>,
    /// Per operation, indexed by `Op as usize`; created on an operation's first request (a
    /// table, not a map: recording is on every request's path).
    ops: [Option<Box<OpStats>>; Op::ALL.len()],
    /// Measured requests (answered or not).
    pub requests: u64,
    /// Measured requests answered with an expected status.
    pub ok: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    /// Claims that found nothing (204) and pages that came back empty.
    pub empty: u64,
    pub errors: BTreeMap<String, u64>,
    pub violations: u64,
    pub violation_samples: Vec<String>,
    /// Duplicate deliveries that are legal because the claim could have expired.
    pub redeliveries: u64,
    /// Every duplicate delivery, legal or not.
    pub duplicates: u64,
    /// Post-to-read latency seen by pubsub readers (µs, from the timestamp in the body).
    pub delivery: Histogram<u64>,
    /// Connect time of each fresh connection in `connections`.
    pub connect: Histogram<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency: new_histogram(),
            ops: Default::default(),
            requests: 0,
            ok: 0,
            messages_sent: 0,
            messages_received: 0,
            empty: 0,
            errors: BTreeMap::new(),
            violations: 0,
            violation_samples: Vec::new(),
            redeliveries: 0,
            duplicates: 0,
            delivery: new_histogram(),
            connect: new_histogram(),
        }
    }
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Stats {
    /// Records one measured request.
    pub fn record(&mut self, op: Op, latency: Duration, ok: bool) {
        let us = micros(latency);
        self.latency.saturating_record(us);
        let entry = self.op_mut(op);
        entry.requests += 1;
        entry.latency.saturating_record(us);
        self.requests += 1;
        if ok {
            self.ok += 1;
        }
    }

    fn op_mut(&mut self, op: Op) -> &mut OpStats {
        self.ops[op as usize].get_or_insert_with(|| Box::new(OpStats { requests: 0, latency: new_histogram() }))
    }

    /// The operations that were requested, in `Op` order.
    pub fn ops(&self) -> impl Iterator<Item = (Op, &OpStats)> {
        Op::ALL.into_iter().zip(&self.ops).filter_map(|(op, s)| s.as_deref().map(|s| (op, s)))
    }

    pub fn error(&mut self, key: impl Into<String>) {
        *self.errors.entry(key.into()).or_insert(0) += 1;
    }

    /// Violations are recorded even during warm-up: a broken guarantee is never "warm-up".
    /// Samples are kept once each: a stuck server repeats the same violation on every poll.
    pub fn violation(&mut self, msg: impl FnOnce() -> String) {
        self.violations += 1;
        if self.violation_samples.len() < MAX_VIOLATION_SAMPLES {
            let m = msg();
            if !self.violation_samples.contains(&m) {
                self.violation_samples.push(m);
            }
        }
    }

    pub fn merge(&mut self, other: &Stats) {
        // Same bounds on both sides, so add cannot fail; saturating on the off chance.
        let _ = self.latency.add(&other.latency);
        let _ = self.delivery.add(&other.delivery);
        let _ = self.connect.add(&other.connect);
        for (op, s) in other.ops() {
            let e = self.op_mut(op);
            e.requests += s.requests;
            let _ = e.latency.add(&s.latency);
        }
        self.requests += other.requests;
        self.ok += other.ok;
        self.messages_sent += other.messages_sent;
        self.messages_received += other.messages_received;
        self.empty += other.empty;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_insert(0) += v;
        }
        self.violations += other.violations;
        for s in &other.violation_samples {
            if self.violation_samples.len() < MAX_VIOLATION_SAMPLES && !self.violation_samples.contains(s) {
                self.violation_samples.push(s.clone());
            }
        }
        self.redeliveries += other.redeliveries;
        self.duplicates += other.duplicates;
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_exact() {
        // Thread A sees 1..=900 ms-ish values, thread B a slow tail; the merge must give the
        // percentiles of the union, not an average of percentiles.
        let mut a = Stats::default();
        let mut b = Stats::default();
        for i in 1..=900u64 {
            a.record(Op::Post, Duration::from_micros(i), true);
        }
        for i in 1..=100u64 {
            b.record(Op::Claim, Duration::from_micros(10_000 + i), i % 2 == 0);
        }
        b.error("http_503");
        b.error("http_503");
        a.error("transport_timeout");
        let mut m = Stats::default();
        m.merge(&a);
        m.merge(&b);
        assert_eq!(m.requests, 1000);
        assert_eq!(m.ok, 950);
        assert_eq!(m.errors["http_503"], 2);
        assert_eq!(m.errors["transport_timeout"], 1);
        let p = Percentiles::of(&m.latency);
        assert_eq!(p.count, 1000);
        assert_eq!(p.min, 1);
        // p50 = 500th value = 500 µs; p90 = 900 µs; p99 falls in B's tail.
        assert!((499..=501).contains(&p.p50), "{p:?}");
        assert!((899..=901).contains(&p.p90), "{p:?}");
        assert!((10_080..=10_100).contains(&p.p99), "{p:?}");
        assert!((10_095..=10_110).contains(&p.max), "{p:?}");
        let ops: BTreeMap<Op, &OpStats> = m.ops().collect();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[&Op::Post].requests, 900);
        assert_eq!(ops[&Op::Claim].requests, 100);
        assert_eq!(Percentiles::of(&ops[&Op::Post].latency).max, 900);
    }

    #[test]
    fn empty_histogram_gives_zeros() {
        assert_eq!(Percentiles::of(&new_histogram()), Percentiles::default());
    }

    #[test]
    fn huge_latencies_saturate() {
        let mut s = Stats::default();
        s.record(Op::Ping, Duration::from_secs(10 * 3600), false);
        assert_eq!(s.requests, 1);
        assert!(Percentiles::of(&s.latency).max >= MAX_US / 2);
    }

    #[test]
    fn violation_samples_are_capped() {
        let mut s = Stats::default();
        for i in 0..100 {
            s.violation(|| format!("v{i}"));
        }
        assert_eq!(s.violations, 100);
        assert_eq!(s.violation_samples.len(), MAX_VIOLATION_SAMPLES);
        let mut t = Stats::default();
        t.violation(|| "same".into());
        t.violation(|| "same".into());
        assert_eq!((t.violations, t.violation_samples.len()), (2, 1));
    }
}
