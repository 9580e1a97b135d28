//! Random operations on an engine over the segment store, with compaction running between them;
//! now and then the store is dropped without a shutdown (as a killed process leaves it) and the
//! log is recovered into a fresh engine, which must show exactly what the live one showed: the
//! same queues and metadata, messages with the same ids, bodies, claims and delivery counts, the
//! same claims, and the same next ids. Seeds are fixed (replayable); `MARCONI_MODEL_SEEDS=N` runs
//! more of them.

mod store;

use marconi::queue::{ClaimId, ClaimParams, MessageId, Metadata, NewMessage, PatchOp};
use serde_json::json;
use store::*;

const SEGMENT_BYTES: u64 = 64 * 1024;
const T0: u64 = 1_700_000_000_000;
const NAMES: [&str; 5] = ["alpha", "beta", "gamma", "delta", "dlq"];

fn meta(v: serde_json::Value) -> Metadata {
    match v {
        serde_json::Value::Object(map) => Metadata::from_map(map, &Default::default()).unwrap(),
        _ => unreachable!(),
    }
}

struct Run {
    rng: fastrand::Rng,
    now: u64,
    posted: u64,
}

impl Run {
    fn name(&mut self) -> &'static str {
        NAMES[self.rng.usize(..NAMES.len())]
    }

    fn some_message(&mut self, o: &Opened, name: &str) -> Option<(MessageId, Option<ClaimId>)> {
        let all = observe(&o.engine, self.now);
        let mine: Vec<_> = all.messages.iter().filter(|m| m.queue == name).collect();
        if mine.is_empty() {
            return None;
        }
        let m = mine[self.rng.usize(..mine.len())];
        Some((m.id, m.claim))
    }

    fn step(&mut self, o: &mut Opened) {
        let name = self.name();
        let e = &mut o.engine;
        let now = self.now;
        // Errors (full queues, unknown ids, claims) are part of the game; panics are not.
        match self.rng.u32(..100) {
            0..=4 => {
                let m = match self.rng.u8(..3) {
                    0 => None,
                    1 => Some(meta(json!({"color": self.rng.u32(..9), "_default_message_ttl": 600}))),
                    _ => Some(meta(json!({"_max_claim_count": 2, "_dead_letter_queue": "dlq"}))),
                };
                let _ = e.create_queue(q(name), m, now);
            }
            5..=6 => {
                let ops = [PatchOp::Add { key: "n".into(), value: json!(self.rng.u32(..100)) }];
                let _ = e.patch_queue(q(name), &ops);
            }
            7 => {
                let _ = e.delete_queue(q(name));
            }
            8 => {
                let _ = e.purge(q(name));
            }
            9..=39 => {
                let n = self.rng.usize(1..6);
                let mut bodies = Vec::new();
                let mut msgs = Vec::new();
                for _ in 0..n {
                    self.posted += 1;
                    let start = bodies.len() as u32;
                    let pad = "x".repeat(self.rng.usize(..1500));
                    bodies.extend_from_slice(format!("{{\"n\":{},\"pad\":\"{pad}\"}}", self.posted).as_bytes());
                    let ttl = [60, 300, 3600][self.rng.usize(..3)];
                    msgs.push(NewMessage {
                        ttl_s: Some(ttl),
                        delay_s: Some(self.rng.u32(..2) * 30),
                        body: start..bodies.len() as u32,
                    });
                }
                let _ = e.post_messages(q(name), self.rng.u64(..3), &msgs, &bodies, 100, now);
            }
            40..=49 => {
                if let Some((id, claim)) = self.some_message(o, name) {
                    let _ = o.engine.delete_message(q(name), id, claim, now);
                }
            }
            50..=53 => {
                let ids: Vec<MessageId> = (0..3).filter_map(|_| self.some_message(o, name).map(|x| x.0)).collect();
                let _ = o.engine.delete_messages(q(name), &ids, None, now);
            }
            54..=66 => {
                let params = ClaimParams {
                    ttl_s: [60, 120][self.rng.usize(..2)],
                    grace_s: 60,
                    limit: self.rng.usize(1..5),
                    secret: self.rng.u64(..),
                };
                if let Ok(outcome) = e.claim(q(name), params, now) {
                    if let Some(letters) = outcome.dead_letters {
                        let _ = e.post_messages(q(&letters.queue), 0, &letters.messages, &letters.bodies, 0, now);
                    }
                }
            }
            67..=71 => {
                if let Some((_, Some(claim))) = self.some_message(o, name) {
                    let _ = o.engine.renew_claim(q(name), claim, 90, 30, now);
                }
            }
            72..=76 => {
                if let Some((_, Some(claim))) = self.some_message(o, name) {
                    let _ = o.engine.release_claim(q(name), claim, now);
                }
            }
            77..=79 => {
                let _ = e.pop(q(name), self.rng.usize(1..3), now);
            }
            80..=89 => self.now += self.rng.u64(..40_000),
            90..=93 => {
                e.sweep(now, 50);
            }
            _ => {
                for _ in 0..self.rng.usize(1..20) {
                    o.engine.compact_step(16 * 1024);
                    o.pump();
                }
            }
        }
        o.pump();
    }
}

/// After a reopen, both engines must hand out the same next ids (no sequence number reused).
fn next_ids(o: &mut Opened, now: u64) -> Vec<Option<MessageId>> {
    NAMES
        .iter()
        .map(|name| {
            if !o.engine.queue_exists(q(name)) {
                return None;
            }
            let msg = [NewMessage { ttl_s: Some(60), delay_s: Some(0), body: 0..2 }];
            o.engine.post_messages(q(name), 0, &msg, b"{}", 10, now).ok().and_then(|ids| ids.first().copied())
        })
        .collect()
}

fn assert_same(seed: u64, step: usize, before: &Observed, after: &Observed) {
    assert_eq!(before.queues, after.queues, "seed {seed} step {step}: queues");
    if before.messages.len() != after.messages.len() {
        for m in &before.messages {
            if !after.messages.iter().any(|a| a.id == m.id && a.queue == m.queue) {
                eprintln!("missing after: {} {} claim {:?} count {}", m.queue, m.id, m.claim, m.claim_count);
            }
        }
        for m in &after.messages {
            if !before.messages.iter().any(|a| a.id == m.id && a.queue == m.queue) {
                eprintln!("extra after: {} {}", m.queue, m.id);
            }
        }
    }
    assert_eq!(before.messages.len(), after.messages.len(), "seed {seed} step {step}: message count");
    for (b, a) in before.messages.iter().zip(&after.messages) {
        assert_eq!(b, a, "seed {seed} step {step}");
    }
    assert_eq!(before.claims, after.claims, "seed {seed} step {step}: claims");
}

fn run_seed(seed: u64, steps: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut run = Run { rng: fastrand::Rng::with_seed(seed), now: T0, posted: 0 };
    let mut live = open(dir.path(), SEGMENT_BYTES).unwrap();
    let mut compactions = 0;
    for i in 0..steps {
        run.step(&mut live);
        if i % 97 != 96 && i + 1 != steps {
            continue;
        }
        // A copy of the disk now, recovered beside the live engine: same view, same next ids.
        let snap = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), snap.path());
        let before = observe(&live.engine, run.now);
        let mut twin = open(snap.path(), SEGMENT_BYTES).unwrap_or_else(|e| panic!("seed {seed} step {i}: {e}"));
        assert_same(seed, i, &before, &observe(&twin.engine, run.now));
        for name in NAMES {
            assert_eq!(
                live.engine.counters(q(name)),
                twin.engine.counters(q(name)),
                "seed {seed} step {i}: counters of {name}"
            );
        }
        assert_eq!(next_ids(&mut live, run.now), next_ids(&mut twin, run.now), "seed {seed} step {i}: next ids");
        drop(twin);
        // Then the live one is dropped unflushed, as a killed process leaves it, and recovered.
        let before = observe(&live.engine, run.now);
        compactions += marconi::storage::Store::stats(live.engine.store()).compactions;
        drop(live);
        live = open(dir.path(), SEGMENT_BYTES).unwrap_or_else(|e| panic!("seed {seed} step {i}: {e}"));
        assert_same(seed, i, &before, &observe(&live.engine, run.now));
    }
    let stats = marconi::storage::Store::stats(live.engine.store());
    assert!(compactions > 0, "seed {seed}: compaction never ran ({stats:?})");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn recovered_engines_show_what_the_live_one_showed() {
    let seeds: u64 = std::env::var("MARCONI_MODEL_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    for seed in 1..=seeds {
        run_seed(seed, 1500);
    }
}
