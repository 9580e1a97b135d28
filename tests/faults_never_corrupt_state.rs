//! Storage faults (failed writes, short writes, a failed flush) make requests fail, never
//! corrupt state: what the engine shows after a fault is what recovery rebuilds from disk, and
//! a failed flush makes waiting requests and every later change fail until a restart.

mod store;

use marconi::config::ApiLimits;
use marconi::queue::{ClaimParams, Engine, NewMessage};
use marconi::storage::faulty::{FaultPlan, FaultyStore};
use marconi::storage::recovery::{self, ScanOptions};
use marconi::storage::{SegmentStore, Store};
use store::*;

const SEGMENT_BYTES: u64 = 64 * 1024;
const T0: u64 = 1_700_000_000_000;

fn open_faulty(
    dir: &std::path::Path,
    plan: FaultPlan,
) -> (Engine<FaultyStore<SegmentStore>>, std::rc::Rc<marconi::storage::io::LogShared>) {
    let rec = recovery::scan_dir(dir, &ScanOptions { shard: 0, segment_bytes: SEGMENT_BYTES, repair: false }).unwrap();
    let (store, replay, shared) = SegmentStore::open(rec, &config(SEGMENT_BYTES));
    let mut engine = Engine::new(FaultyStore::new(store, plan), ApiLimits::default(), 11);
    engine.replay_log(&replay).unwrap();
    (engine, shared)
}

#[test]
fn failed_and_short_writes_fail_requests_and_recovery_shows_the_same_state() {
    for seed in 1..=4u64 {
        let dir = tempfile::tempdir().unwrap();
        let (mut engine, shared) = open_faulty(dir.path(), FaultPlan { at: Vec::new(), per_mille: 60, seed });
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut failed_tags = Vec::new();
        let (mut errors, mut ops) = (0, 0);
        for n in 0..600u32 {
            let now = T0 + u64::from(n) * 100;
            let name = ["a", "b", "c"][rng.usize(..3)];
            let faults_before = engine.store().injected.len();
            let result = match rng.u8(..10) {
                0..=4 => {
                    let count = rng.usize(1..4);
                    let mut bodies = Vec::new();
                    let mut msgs = Vec::new();
                    for i in 0..count {
                        let start = bodies.len() as u32;
                        bodies.extend_from_slice(
                            format!("{{\"tag\":\"{n}-{i}\",\"pad\":\"{}\"}}", "z".repeat(rng.usize(..800))).as_bytes(),
                        );
                        msgs.push(NewMessage { ttl_s: Some(3600), delay_s: Some(0), body: start..bodies.len() as u32 });
                    }
                    let r = engine.post_messages(q(name), 1, &msgs, &bodies, 10, now).map(|_| ());
                    if r.is_err() {
                        failed_tags.extend((0..count).map(|i| format!("{n}-{i}")));
                    }
                    r
                }
                5..=6 => {
                    let page = observe(&engine, now);
                    match page.messages.iter().find(|m| m.queue == name && m.claim.is_none()) {
                        Some(m) => engine.delete_message(q(name), m.id, None, now),
                        None => Ok(()),
                    }
                }
                7..=8 => engine
                    .claim(q(name), ClaimParams { ttl_s: 300, grace_s: 60, limit: 2, secret: now }, now)
                    .map(|_| ()),
                _ => engine.purge(q(name)),
            };
            ops += 1;
            if result.is_err() {
                errors += 1;
                assert!(engine.store().injected.len() > faults_before, "seed {seed} op {n}: an error without a fault");
            }
            engine.store_mut().write_out().unwrap();
            shared.run_io_blocking();
            shared.flush_blocking().unwrap();
        }
        assert!(errors > 5, "seed {seed}: only {errors} of {ops} operations failed");
        let now = T0 + 600 * 100;
        let before = observe(&engine, now);
        drop(engine);
        let after = open(dir.path(), SEGMENT_BYTES).unwrap();
        let mut after = observe(&after.engine, now);
        // A post that failed half way told its client so; its first messages may still be on
        // disk (at-least-once for failed posts), and nothing else may differ.
        after.messages.retain(|m| {
            let body: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
            !failed_tags.iter().any(|t| body["tag"] == *t)
        });
        assert_eq!(before.queues, after.queues, "seed {seed}");
        assert_eq!(before.messages, after.messages, "seed {seed}");
        assert_eq!(before.claims, after.claims, "seed {seed}");
    }
}

#[test]
fn a_failed_flush_fails_the_waiting_request_and_every_later_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(256 * 1024)
        .spawn(move || async move {
            let mut o = open(&path, SEGMENT_BYTES).unwrap();
            o.shared.spawn_tasks();
            let msg = [NewMessage { ttl_s: Some(3600), delay_s: Some(0), body: 0..2 }];
            o.engine.post_messages(q("f"), 0, &msg, b"{}", 10, T0).unwrap();
            // As the shard does before any answer: staged records to the kernel, then the flush.
            o.engine.store_mut().write_out().unwrap();
            o.shared.settle().await.expect("a good flush");
            o.shared.fail_next_flushes(1);
            o.engine.post_messages(q("f"), 0, &msg, b"[]", 10, T0).unwrap();
            o.engine.store_mut().write_out().unwrap();
            let err = o.shared.settle().await.expect_err("the flush failed");
            assert!(err.to_string().contains("restart"), "{err}");
            let refused = o.engine.post_messages(q("f"), 0, &msg, b"{}", 10, T0).unwrap_err();
            assert!(refused.to_string().contains("flush"), "{refused}");
            assert!(o.engine.delete_queue(q("f")).is_err());
            // Reads go on.
            assert_eq!(observe(&o.engine, T0).messages.len(), 2);
        })
        .unwrap()
        .join()
        .unwrap();
    // After a restart the log is what the disk holds.
    let o = open(dir.path(), SEGMENT_BYTES).unwrap();
    assert_eq!(observe(&o.engine, T0).messages.len(), 2);
}
