//! Engine tests. Time is always passed in, so every expiry is tested at its exact millisecond.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use crate::limits::{Limit, Refused, StoreQuota};
use crate::queue::state::MessageEntry;
use crate::storage::{BodyRef, MemoryStore};
use proptest::prelude::*;
use serde_json::json;

const P: &str = "proj";
const T0: u64 = 1_700_000_000_000;
const CLIENT: u64 = 0xc1;
const OTHER: u64 = 0xc2;

fn qr(name: &str) -> QueueRef<'_> {
    QueueRef { project: P, name }
}

fn engine() -> Engine<TestStore> {
    Engine::new(TestStore::default(), ApiLimits::default(), 7)
}

fn meta(v: Value) -> Metadata {
    match v {
        Value::Object(map) => Metadata::from_map(map, &ApiLimits::default()).unwrap(),
        _ => panic!("metadata must be an object"),
    }
}

/// Posts messages described as (ttl, delay); bodies are `[seq-in-request]`.
fn post_spec<S: Store>(
    e: &mut Engine<S>,
    name: &str,
    spec: &[(Option<u32>, Option<u32>)],
    client: u64,
    now: u64,
) -> Result<Vec<MessageId>, EngineError> {
    let mut bodies = Vec::new();
    let mut msgs = Vec::new();
    for (i, (ttl_s, delay_s)) in spec.iter().enumerate() {
        let start = bodies.len() as u32;
        bodies.extend_from_slice(format!("[{i}]").as_bytes());
        msgs.push(NewMessage { ttl_s: *ttl_s, delay_s: *delay_s, body: start..bodies.len() as u32 });
    }
    e.post_messages(qr(name), client, &msgs, &bodies, 100, now)
}

fn post<S: Store>(e: &mut Engine<S>, name: &str, n: usize, now: u64) -> Vec<MessageId> {
    post_spec(e, name, &vec![(Some(300), None); n], CLIENT, now).unwrap()
}

fn list_opts(after_seq: u64) -> ListMessages {
    ListMessages { after_seq, limit: 100, client_hash: OTHER, echo: true, include_claimed: true, include_delayed: true }
}

fn seqs(page: &MessagePage) -> Vec<u64> {
    page.messages.iter().map(|m| m.seq).collect()
}

fn params(limit: usize) -> ClaimParams {
    ClaimParams { ttl_s: 60, grace_s: 60, limit, secret: 0x5ec2e7 + limit as u64 }
}

fn claim<S: Store>(e: &mut Engine<S>, name: &str, limit: usize, now: u64) -> Option<(ClaimId, Vec<u64>)> {
    let out = e.claim(qr(name), params(limit), now).unwrap();
    out.claim.map(|(id, page)| (id, seqs(&page)))
}

/// A memory store that records what was logged and can be told to fail.
#[derive(Default)]
struct TestStore {
    inner: MemoryStore,
    log: Vec<String>,
    appends: usize,
    fail_after: Option<usize>,
}

impl TestStore {
    fn check(&mut self) -> Result<(), StoreError> {
        if self.fail_after.is_some_and(|n| self.appends >= n) {
            return Err(StoreError::DiskFull);
        }
        self.appends += 1;
        Ok(())
    }

    fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }
}

fn describe(r: &Record<'_>) -> String {
    match r {
        Record::QueueUpsert { queue, metadata, .. } => {
            format!("QueueUpsert {} {}", queue.name, String::from_utf8_lossy(metadata))
        }
        Record::QueueDelete { queue } => format!("QueueDelete {}", queue.name),
        Record::Purge { queue, last_seq } => format!("Purge {} {last_seq}", queue.name),
        Record::MessageAppend { queue, seq, .. } => format!("MessageAppend {} {seq}", queue.name),
        Record::MessageDelete { queue, seq } => format!("MessageDelete {} {seq}", queue.name),
        Record::ClaimUpsert { queue, claim_seq, seqs, .. } => {
            format!("ClaimUpsert {} {claim_seq} {seqs:?}", queue.name)
        }
        Record::ClaimDelete { queue, claim_seq } => {
            format!("ClaimDelete {} {claim_seq}", queue.name)
        }
        Record::QueueCounters { queue, last_seq, last_claim_seq } => {
            format!("QueueCounters {} {last_seq} {last_claim_seq}", queue.name)
        }
        Record::Revocation { queue, revoked_ms, until_ms } => {
            format!("Revocation {} {} {revoked_ms} {until_ms}", queue.project, queue.name)
        }
    }
}

impl Store for TestStore {
    fn append_message(&mut self, record: &Record<'_>, body: &[u8]) -> Result<BodyRef, StoreError> {
        self.check()?;
        self.log.push(describe(record));
        self.inner.append_message(record, body)
    }
    fn append(&mut self, record: &Record<'_>) -> Result<(), StoreError> {
        self.check()?;
        self.log.push(describe(record));
        Ok(())
    }
    fn body(&self, at: BodyRef) -> &[u8] {
        self.inner.body(at)
    }
    fn release(&mut self, at: BodyRef) {
        self.inner.release(at)
    }
}

// -------------------------------------------------------------------------------------------
// Layout
// -------------------------------------------------------------------------------------------

#[test]
fn index_entries_stay_compact() {
    assert!(std::mem::size_of::<MessageEntry>() <= 64, "{}", std::mem::size_of::<MessageEntry>());
    assert!(std::mem::size_of::<Queue>() <= 40, "{}", std::mem::size_of::<Queue>());
}

// -------------------------------------------------------------------------------------------
// Queues
// -------------------------------------------------------------------------------------------

#[test]
fn create_queue_reports_creation_and_replaces_metadata_only_when_given() {
    let mut e = engine();
    assert!(!e.queue_exists(qr("a")));
    assert_eq!(e.queue_metadata(qr("a")), None);
    assert!(e.create_queue(qr("a"), None, T0).unwrap());
    assert!(e.queue_exists(qr("a")));
    assert_eq!(e.queue_metadata(qr("a")), Some(Metadata::default()));
    assert!(!e.create_queue(qr("a"), Some(meta(json!({"k": 1}))), T0).unwrap());
    assert_eq!(e.queue_metadata(qr("a")), Some(meta(json!({"k": 1}))));
    // Empty or absent metadata on an existing queue changes nothing.
    assert!(!e.create_queue(qr("a"), Some(Metadata::default()), T0).unwrap());
    assert!(!e.create_queue(qr("a"), None, T0).unwrap());
    assert_eq!(e.queue_metadata(qr("a")), Some(meta(json!({"k": 1}))));
    assert_eq!(e.store_mut().take_log(), ["QueueUpsert a {}", "QueueUpsert a {\"k\":1}"]);
    // Projects are separate namespaces.
    assert!(!e.queue_exists(QueueRef { project: "other", name: "a" }));
    assert_eq!(e.queue_count(), 1);
}

#[test]
fn dead_letter_cycles_visible_on_this_shard_are_refused() {
    let mut e = engine();
    let own = e.create_queue(qr("a"), Some(meta(json!({"_dead_letter_queue": "a"}))), T0);
    assert!(matches!(own, Err(EngineError::Invalid(t)) if t.contains("itself")));
    assert!(!e.queue_exists(qr("a")));
    e.create_queue(qr("a"), Some(meta(json!({"_dead_letter_queue": "b"}))), T0).unwrap();
    e.create_queue(qr("b"), Some(meta(json!({"_dead_letter_queue": "c"}))), T0).unwrap();
    let back = e.create_queue(qr("c"), Some(meta(json!({"_dead_letter_queue": "a"}))), T0);
    assert!(matches!(back, Err(EngineError::Invalid(_))), "{back:?}");
    let patch = [PatchOp::Add { key: "_dead_letter_queue".into(), value: json!("a") }];
    e.create_queue(qr("c"), None, T0).unwrap();
    assert!(matches!(e.patch_queue(qr("c"), &patch), Err(EngineError::Invalid(_))));
    // Without the cycle it is fine.
    let ok = [PatchOp::Add { key: "_dead_letter_queue".into(), value: json!("d") }];
    assert!(e.patch_queue(qr("c"), &ok).is_ok());
}

#[test]
fn patch_queue_validates_logs_and_needs_the_queue() {
    let mut e = engine();
    let ops = [PatchOp::Add { key: "owner".into(), value: json!("ops") }];
    assert_eq!(e.patch_queue(qr("a"), &ops), Err(EngineError::QueueNotFound));
    e.create_queue(qr("a"), None, T0).unwrap();
    e.store_mut().take_log();
    assert_eq!(e.patch_queue(qr("a"), &ops).unwrap(), meta(json!({"owner": "ops"})));
    assert_eq!(e.store_mut().take_log(), ["QueueUpsert a {\"owner\":\"ops\"}"]);
    let bad = [PatchOp::Replace { key: "missing".into(), value: json!(1) }];
    assert_eq!(
        e.patch_queue(qr("a"), &bad),
        Err(EngineError::Conflict("Can't replace non-existent object missing.".into()))
    );
    let remove = [PatchOp::Remove { key: "owner".into() }];
    assert!(e.patch_queue(qr("a"), &remove).unwrap().is_empty());
    assert_eq!(e.queue_metadata(qr("a")), Some(Metadata::default()));
}

#[test]
fn delete_queue_releases_everything_and_recreation_gets_a_new_epoch() {
    let mut e = engine();
    e.delete_queue(qr("a")).unwrap();
    let old = post(&mut e, "a", 3, T0);
    claim(&mut e, "a", 1, T0).unwrap();
    assert_eq!(e.store().inner.live_bodies(), 3);
    e.store_mut().take_log();
    e.delete_queue(qr("a")).unwrap();
    assert_eq!(e.store_mut().take_log(), ["QueueDelete a"]);
    assert_eq!(e.store().inner.live_bodies(), 0);
    assert_eq!((e.queue_count(), e.message_count()), (0, 0));
    assert!(e.project_ids.is_empty(), "the idle project id is given back");

    let new = post(&mut e, "a", 1, T0);
    assert_ne!(new[0].epoch, old[0].epoch);
    assert_eq!(new[0].seq, 1, "markers restart per incarnation");
    assert!(e.get_messages(qr("a"), &old, T0).messages.is_empty(), "old ids name nothing now");
    assert_eq!(e.get_messages(qr("a"), &new, T0).messages.len(), 1);
}

#[test]
fn epochs_differ_for_every_creation() {
    let mut e = engine();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..1000 {
        let id = post(&mut e, "a", 1, T0)[0];
        assert!(seen.insert(id.epoch));
        e.delete_queue(qr("a")).unwrap();
    }
}

fn list_names(page: &QueuePage) -> Vec<&str> {
    page.queues.iter().map(|q| q.name.as_str()).collect()
}

fn queue_opts() -> ListQueues {
    ListQueues {
        after: None,
        limit: 10,
        detailed: false,
        name_contains: None,
        visible: None,
        metadata_filters: Vec::new(),
        with_count: false,
    }
}

#[test]
fn list_queues_pages_in_byte_order_with_filters() {
    let mut e = engine();
    for (name, m) in [
        ("b", json!({"node": 34})),
        ("a", json!({"node": 1.0})),
        ("C", json!({})),
        ("ab", json!({"node": "34"})),
        ("b2", json!({"node": 34, "x": true})),
    ] {
        e.create_queue(qr(name), Some(meta(m)), T0).unwrap();
    }
    e.create_queue(QueueRef { project: "other", name: "aa" }, None, T0).unwrap();

    let page = e.list_queues(P, &queue_opts());
    assert_eq!(list_names(&page), ["C", "a", "ab", "b", "b2"]);
    assert_eq!(page.count, None);
    assert!(page.queues[0].metadata.is_none());

    let page = e.list_queues(P, &ListQueues { after: Some("a".into()), limit: 2, with_count: true, ..queue_opts() });
    assert_eq!(list_names(&page), ["ab", "b"]);
    assert_eq!(page.count, Some(5));

    let page = e.list_queues(P, &ListQueues { name_contains: Some("b".into()), with_count: true, ..queue_opts() });
    assert_eq!(list_names(&page), ["ab", "b", "b2"]);
    assert_eq!(page.count, Some(3));

    let by_number = ListQueues { metadata_filters: vec![("node".into(), json!(34))], ..queue_opts() };
    assert_eq!(list_names(&e.list_queues(P, &by_number)), ["b", "b2"]);
    let by_one = ListQueues { metadata_filters: vec![("node".into(), json!(1))], ..queue_opts() };
    assert_eq!(list_names(&e.list_queues(P, &by_one)), ["a"]);
    let by_string = ListQueues { metadata_filters: vec![("node".into(), json!("34"))], ..queue_opts() };
    assert_eq!(list_names(&e.list_queues(P, &by_string)), ["ab"]);

    // A credential's glob hides what it may not see, before paging and counting.
    let scoped = ListQueues { visible: Some("b*".into()), limit: 1, with_count: true, ..queue_opts() };
    let page = e.list_queues(P, &scoped);
    assert_eq!((list_names(&page), page.count), (vec!["b"], Some(2)));
    let page = e.list_queues(P, &ListQueues { after: Some("b".into()), ..scoped });
    assert_eq!(list_names(&page), ["b2"]);

    let detailed = e.list_queues(P, &ListQueues { detailed: true, limit: 1, ..queue_opts() });
    assert_eq!(detailed.queues[0].metadata, Some(Metadata::default()));
    let none = e.list_queues("nobody", &ListQueues { with_count: true, ..queue_opts() });
    assert_eq!((none.queues.len(), none.count), (0, Some(0)));
}

#[test]
fn stats_are_exact_at_read_time() {
    let mut e = engine();
    assert_eq!(e.stats(qr("a"), T0), QueueStats::default());
    let ids = post_spec(
        &mut e,
        "a",
        &[(Some(60), None), (Some(300), None), (Some(300), Some(30)), (Some(300), None)],
        CLIENT,
        T0,
    )
    .unwrap();
    claim(&mut e, "a", 1, T0).unwrap(); // takes #1 and extends it to claim expiry + grace
    let s = e.stats(qr("a"), T0 + 1000);
    assert_eq!((s.claimed, s.free, s.total), (1, 3, 4), "delayed messages count as free");
    assert_eq!(s.oldest.as_ref().map(|m| m.id), Some(ids[0]));
    assert_eq!(s.newest.as_ref().map(|m| (m.id, m.age_s)), Some((ids[3], 1)));
    // After the claim ends (T0+60s) #1 lives until T0+120s, then it is gone.
    let s = e.stats(qr("a"), T0 + 120_000);
    assert_eq!((s.claimed, s.free, s.total), (0, 3, 3));
    assert_eq!(s.oldest.map(|m| m.id), Some(ids[1]));
}

#[test]
fn purge_removes_claimed_messages_but_keeps_the_queue() {
    let mut e = engine();
    e.purge(qr("a")).unwrap();
    e.create_queue(qr("a"), Some(meta(json!({"k": 1}))), T0).unwrap();
    post(&mut e, "a", 3, T0);
    let (cid, _) = claim(&mut e, "a", 2, T0).unwrap();
    e.store_mut().take_log();
    e.purge(qr("a")).unwrap();
    assert_eq!(e.store_mut().take_log(), ["Purge a 3"]);
    assert_eq!(e.stats(qr("a"), T0).total, 0);
    assert_eq!(e.store().inner.live_bodies(), 0);
    assert_eq!(e.message_count(), 0);
    assert_eq!(e.get_claim(qr("a"), cid, T0), Err(EngineError::ClaimNotFound));
    assert_eq!(e.queue_metadata(qr("a")), Some(meta(json!({"k": 1}))));
    // Markers are not reused after a purge.
    assert_eq!(post(&mut e, "a", 1, T0)[0].seq, 4);
}

// -------------------------------------------------------------------------------------------
// Posting and reading
// -------------------------------------------------------------------------------------------

#[test]
fn post_assigns_consecutive_markers_and_defaults() {
    let mut e = engine();
    let ids = post_spec(&mut e, "a", &[(None, None), (Some(100), Some(5))], CLIENT, T0).unwrap();
    assert_eq!(ids.iter().map(|i| i.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(e.queue_metadata(qr("a")), Some(Metadata::default()), "created lazily, empty");
    let page = e.get_messages(qr("a"), &ids, T0);
    assert_eq!(page.messages[0].ttl_s, 3600, "config default");
    assert_eq!(page.messages[1].ttl_s, 100);
    assert_eq!(page.body(&page.messages[1]), b"[1]");
    // The per-message delay is honoured on a queue without a default delay (divergence 5).
    assert_eq!(seqs(&e.list_messages(qr("a"), &ListMessages { include_delayed: false, ..list_opts(0) }, T0)), [1]);
    assert_eq!(
        seqs(&e.list_messages(qr("a"), &ListMessages { include_delayed: false, ..list_opts(0) }, T0 + 5000)),
        [1, 2]
    );

    e.create_queue(qr("b"), Some(meta(json!({"_default_message_ttl": 999, "_default_message_delay": 10}))), T0)
        .unwrap();
    let ids = post_spec(&mut e, "b", &[(None, None), (None, Some(0))], CLIENT, T0).unwrap();
    let page = e.get_messages(qr("b"), &ids, T0);
    assert_eq!(page.messages[0].ttl_s, 999, "queue default");
    assert_eq!(claim(&mut e, "b", 10, T0).map(|c| c.1), Some(vec![2]), "#1 waits for the queue's delay");
    assert_eq!(claim(&mut e, "b", 10, T0 + 10_000).map(|c| c.1), Some(vec![1]));
}

#[test]
fn post_size_is_checked_against_the_queue_limit() {
    let mut e = engine();
    e.create_queue(qr("a"), Some(meta(json!({"_max_messages_post_size": 1023}))), T0).unwrap();
    let msgs = [NewMessage { ttl_s: None, delay_s: None, body: 0..2 }];
    let err = e.post_messages(qr("a"), CLIENT, &msgs, b"{}", 1024, T0).unwrap_err();
    assert_eq!(
        err,
        EngineError::Invalid(
            "Message collection size is too large. The max size for current queue is 1023. It is \
             calculated by max size = min(max_messages_post_size_config: 262144, \
             max_messages_post_size_queue: 1023)."
                .into()
        )
    );
    assert!(e.post_messages(qr("a"), CLIENT, &msgs, b"{}", 1023, T0).is_ok());
    let err = e.post_messages(qr("b"), CLIENT, &msgs, b"{}", 262_145, T0).unwrap_err();
    assert_eq!(err, EngineError::Invalid("Message collection size is too large. Max size 262144".into()));
    assert!(!e.queue_exists(qr("b")), "a refused post creates nothing");
    let bad = [NewMessage { ttl_s: None, delay_s: None, body: 1..9 }];
    assert!(matches!(e.post_messages(qr("a"), CLIENT, &bad, b"{}", 2, T0), Err(EngineError::Invalid(_))));
}

#[test]
fn post_is_all_or_nothing_when_the_store_fails() {
    let mut e = engine();
    post(&mut e, "a", 1, T0);
    let before = e.store().appends;
    e.store_mut().fail_after = Some(before + 2);
    let err = post_spec(&mut e, "a", &[(None, None); 3], CLIENT, T0);
    assert_eq!(err, Err(EngineError::Store(StoreError::DiskFull)));
    assert_eq!(e.store().inner.live_bodies(), 1);
    assert_eq!(e.message_count(), 1);
    assert_eq!(seqs(&e.list_messages(qr("a"), &list_opts(0), T0)), [1]);
    e.store_mut().fail_after = None;
    let next = post(&mut e, "a", 1, T0);
    assert!(next[0].seq > 4, "sequence numbers that may be in the log are not reused");
}

#[test]
fn listing_filters_and_markers() {
    let mut e = engine();
    post_spec(&mut e, "a", &[(Some(300), None); 3], CLIENT, T0).unwrap();
    post_spec(&mut e, "a", &[(Some(300), None), (Some(300), Some(60))], OTHER, T0).unwrap();
    // Echo: the caller's own messages are skipped unless asked for.
    let mine = ListMessages { client_hash: CLIENT, echo: false, ..list_opts(0) };
    assert_eq!(seqs(&e.list_messages(qr("a"), &mine, T0)), [4, 5]);
    // Delayed messages are hidden by default.
    let default = ListMessages { include_claimed: false, include_delayed: false, ..list_opts(0) };
    assert_eq!(seqs(&e.list_messages(qr("a"), &default, T0)), [1, 2, 3, 4]);
    // Claimed messages are hidden unless asked for, and show their claim.
    let (cid, _) = claim(&mut e, "a", 1, T0).unwrap();
    assert_eq!(seqs(&e.list_messages(qr("a"), &default, T0)), [2, 3, 4]);
    let all = e.list_messages(qr("a"), &list_opts(0), T0);
    assert_eq!(all.messages[0].claim, Some(cid));
    assert_eq!(all.messages[1].claim, None);
    // Markers are resolved by value: deleting the marker's message changes nothing.
    e.delete_message(qr("a"), MessageId::new(e.counters(qr("a")).unwrap().0, 2), None, T0).unwrap();
    assert_eq!(seqs(&e.list_messages(qr("a"), &list_opts(2), T0)), [3, 4, 5]);
    assert_eq!(seqs(&e.list_messages(qr("a"), &list_opts(1), T0)), [3, 4, 5]);
    assert_eq!(seqs(&e.list_messages(qr("a"), &ListMessages { limit: 2, ..list_opts(0) }, T0)), [1, 3]);
    assert_eq!(seqs(&e.list_messages(qr("a"), &list_opts(99), T0)), Vec::<u64>::new());
    assert!(e.list_messages(qr("missing"), &list_opts(0), T0).messages.is_empty());
}

#[test]
fn expiry_is_exact() {
    let mut e = engine();
    let ids = post_spec(&mut e, "a", &[(Some(60), None)], CLIENT, T0).unwrap();
    let page = e.list_messages(qr("a"), &list_opts(0), T0 + 59_999);
    assert_eq!((seqs(&page), page.messages[0].age_s), (vec![1], 59));
    assert!(e.list_messages(qr("a"), &list_opts(0), T0 + 60_000).messages.is_empty());
    assert!(e.get_messages(qr("a"), &ids, T0 + 60_000).messages.is_empty());
    assert_eq!(claim(&mut e, "a", 10, T0 + 60_000), None);
}

#[test]
fn get_messages_by_id() {
    let mut e = engine();
    let ids =
        post_spec(&mut e, "a", &[(Some(300), None), (Some(300), Some(100)), (Some(300), None)], CLIENT, T0).unwrap();
    claim(&mut e, "a", 1, T0).unwrap();
    let wrong_epoch = MessageId::new(ids[0].epoch.wrapping_add(1), 1);
    let unknown = MessageId::new(ids[0].epoch, 77);
    let asked = [ids[2], ids[0], wrong_epoch, ids[2], unknown, ids[1]];
    let page = e.get_messages(qr("a"), &asked, T0);
    assert_eq!(seqs(&page), [3, 1, 2], "order asked, each once; claims and delays ignored");
    assert!(page.messages[1].claim.is_some());
    assert!(e.get_messages(qr("missing"), &ids, T0).messages.is_empty());
}

#[test]
#[should_panic(expected = "the engine's index is corrupt")]
fn an_index_entry_whose_body_the_store_lost_panics_instead_of_answering_empty() {
    let mut e = engine();
    post(&mut e, "a", 2, T0);
    // Corrupts the index behind the engine's back: the store forgets the first body.
    let at = e.find(qr("a")).and_then(|q| q.log.as_deref()).map(|log| log.at(0).body_ref()).unwrap();
    e.store_mut().release(at);
    e.list_messages(qr("a"), &list_opts(0), T0);
}

#[test]
#[should_panic(expected = "page's")]
fn a_view_from_another_page_panics_instead_of_reading_the_wrong_bytes() {
    let mut e = engine();
    post(&mut e, "a", 2, T0);
    let page = e.list_messages(qr("a"), &list_opts(0), T0);
    page.body(&page.messages[0]);
    MessagePage::default().body(&page.messages[1]);
}

// -------------------------------------------------------------------------------------------
// Deleting
// -------------------------------------------------------------------------------------------

#[test]
fn delete_rules_table() {
    let mut e = engine();
    let ids = post(&mut e, "a", 4, T0);
    let epoch = ids[0].epoch;
    let (c1, _) = claim(&mut e, "a", 2, T0).unwrap(); // holds #1, #2
    let stranger = ClaimId::new(999, c1.secret);
    // The right sequence number with a guessed secret names nothing.
    let guessed = ClaimId::new(c1.seq, c1.secret ^ 1);

    // Absent or already deleted: fine, with or without a claim.
    assert_eq!(e.delete_message(qr("a"), MessageId::new(epoch, 50), Some(stranger), T0), Ok(()));
    assert_eq!(e.delete_message(qr("zz"), ids[0], None, T0), Ok(()));
    // No claim id, message claimed: 403.
    assert_eq!(e.delete_message(qr("a"), ids[0], None, T0), Err(EngineError::MessageClaimed));
    // A claim id given, message free: 400 (not claimed), whatever the claim.
    assert_eq!(e.delete_message(qr("a"), ids[2], Some(c1), T0), Err(EngineError::MessageNotClaimed));
    assert_eq!(e.delete_message(qr("a"), ids[2], Some(stranger), T0), Err(EngineError::MessageNotClaimed));
    // Unknown claim on a claimed message: 400 (claim does not exist).
    assert_eq!(e.delete_message(qr("a"), ids[0], Some(stranger), T0), Err(EngineError::ClaimMismatch));
    assert_eq!(e.delete_message(qr("a"), ids[0], Some(guessed), T0), Err(EngineError::ClaimMismatch));
    // Another live claim: 403.
    let (c2, taken) = claim(&mut e, "a", 1, T0).unwrap();
    assert_eq!(taken, [3]);
    assert_eq!(e.delete_message(qr("a"), ids[0], Some(c2), T0), Err(EngineError::MessageClaimed));
    // An expired claim on a message no longer claimed: 400 (not claimed).
    assert_eq!(e.delete_message(qr("a"), ids[0], Some(c1), T0 + 60_000), Err(EngineError::MessageNotClaimed));
    // Matching live claim: deleted and removed from the claim.
    e.store_mut().take_log();
    assert_eq!(e.delete_message(qr("a"), ids[0], Some(c1), T0), Ok(()));
    assert_eq!(e.store_mut().take_log(), ["MessageDelete a 1"]);
    assert_eq!(seqs(&e.get_claim(qr("a"), c1, T0).unwrap().page), [2]);
    // Deleting the claim's last message ends the claim.
    assert_eq!(e.delete_message(qr("a"), ids[1], Some(c1), T0), Ok(()));
    assert_eq!(e.store_mut().take_log(), ["MessageDelete a 2", "ClaimDelete a 1"]);
    assert_eq!(e.get_claim(qr("a"), c1, T0), Err(EngineError::ClaimNotFound));
    // A free message without a claim id: deleted; again: fine.
    assert_eq!(e.delete_message(qr("a"), ids[3], None, T0), Ok(()));
    assert_eq!(e.delete_message(qr("a"), ids[3], None, T0), Ok(()));
    assert_eq!(e.store().inner.live_bodies(), 1);
}

#[test]
fn bulk_delete_enforces_claims_only_when_claim_ids_are_given() {
    let mut e = engine();
    let ids = post(&mut e, "a", 4, T0);
    let (c1, _) = claim(&mut e, "a", 2, T0).unwrap();
    let (c2, _) = claim(&mut e, "a", 1, T0).unwrap();
    let unknown = MessageId::new(ids[0].epoch, 99);

    // claim_ids that miss one holder: nothing is deleted.
    let r = e.delete_messages(qr("a"), &[ids[0], ids[2], ids[3]], Some(&[c1]), T0);
    assert_eq!(r, Err(EngineError::MessageClaimed));
    assert_eq!(e.stats(qr("a"), T0).total, 4);
    // Matching claim_ids: deleted; unknown ids ignored.
    e.delete_messages(qr("a"), &[ids[0], ids[2], ids[3], unknown], Some(&[c1, c2]), T0).unwrap();
    assert_eq!(seqs(&e.list_messages(qr("a"), &list_opts(0), T0)), [2]);
    // No claim_ids: Zaqar's behaviour, claimed messages go too.
    e.delete_messages(qr("a"), &[ids[1], ids[1]], None, T0).unwrap();
    assert_eq!(e.stats(qr("a"), T0).total, 0);
    assert_eq!((e.store().inner.live_bodies(), e.message_count()), (0, 0));
    assert_eq!(e.get_claim(qr("a"), c1, T0), Err(EngineError::ClaimNotFound));
    e.delete_messages(qr("missing"), &ids, None, T0).unwrap();
}

#[test]
fn pop_takes_only_claimable_messages_oldest_first() {
    let mut e = engine();
    assert!(e.pop(qr("a"), 5, T0).unwrap().messages.is_empty());
    post_spec(
        &mut e,
        "a",
        &[(Some(300), None), (Some(300), Some(60)), (Some(300), None), (Some(300), None)],
        CLIENT,
        T0,
    )
    .unwrap();
    claim(&mut e, "a", 1, T0).unwrap(); // #1
    e.store_mut().take_log();
    let page = e.pop(qr("a"), 1, T0).unwrap();
    assert_eq!(seqs(&page), [3]);
    assert_eq!(page.body(&page.messages[0]), b"[2]");
    assert_eq!(page.messages[0].claim, None);
    assert_eq!(e.store_mut().take_log(), ["MessageDelete a 3"]);
    assert_eq!(seqs(&e.pop(qr("a"), 10, T0).unwrap()), [4]);
    assert!(e.pop(qr("a"), 10, T0).unwrap().messages.is_empty());
    // After the delay and the claim end, the rest can be popped, with their delivery counts.
    let page = e.pop(qr("a"), 10, T0 + 60_000).unwrap();
    assert_eq!(seqs(&page), [1, 2]);
    assert_eq!(page.messages[0].claim_count, 1);
    assert_eq!((e.message_count(), e.store().inner.live_bodies()), (0, 0));
}

// -------------------------------------------------------------------------------------------
// Claims
// -------------------------------------------------------------------------------------------

#[test]
fn claims_never_hand_out_claimed_or_delayed_messages() {
    let mut e = engine();
    assert_eq!(e.claim(qr("missing"), params(5), T0), Ok(ClaimOutcome::default()));
    assert!(!e.queue_exists(qr("missing")), "claims do not create queues");
    post_spec(
        &mut e,
        "a",
        &[(Some(300), None), (Some(300), Some(30)), (Some(300), None), (Some(300), None)],
        CLIENT,
        T0,
    )
    .unwrap();
    let (c1, got) = claim(&mut e, "a", 2, T0).unwrap();
    assert_eq!(got, [1, 3]);
    assert_eq!(c1.seq, 1);
    let (c2, got) = claim(&mut e, "a", 5, T0).unwrap();
    assert_eq!((c2.seq, got), (2, vec![4]));
    assert_eq!(claim(&mut e, "a", 5, T0), None, "nothing claimable: no claim");
    assert_eq!(claim(&mut e, "a", 5, T0 + 30_000).map(|c| c.1), Some(vec![2]));
    // Releasing makes messages claimable at once, ahead of the scan hint.
    e.release_claim(qr("a"), c1, T0 + 30_000).unwrap();
    assert_eq!(claim(&mut e, "a", 5, T0 + 30_000).map(|c| c.1), Some(vec![1, 3]));
    // Expiry does too.
    assert_eq!(claim(&mut e, "a", 5, T0 + 60_000).map(|c| c.1), Some(vec![4]));
}

#[test]
fn claims_extend_short_lives_without_rewriting_ttl() {
    let mut e = engine();
    let ids = post_spec(&mut e, "a", &[(Some(60), None), (Some(3600), None)], CLIENT, T0).unwrap();
    let out = e.claim(qr("a"), ClaimParams { ttl_s: 100, grace_s: 60, limit: 5, secret: 11 }, T0 + 30_000).unwrap();
    let (cid, page) = out.claim.unwrap();
    assert_eq!(page.messages[0].ttl_s, 60, "the visible ttl stays as posted");
    assert_eq!(page.messages[0].claim, Some(cid));
    assert_eq!(page.messages[0].age_s, 30);
    // #1 now lives until claim expiry (T0+130s) + grace (60s).
    assert_eq!(e.get_messages(qr("a"), &ids, T0 + 189_999).messages.len(), 2);
    assert_eq!(seqs(&e.get_messages(qr("a"), &ids, T0 + 190_000)), [2]);
}

#[test]
fn get_and_renew_claim() {
    let mut e = engine();
    let ids = post(&mut e, "a", 2, T0);
    let (cid, _) = claim(&mut e, "a", 1, T0).unwrap();
    let view = e.get_claim(qr("a"), cid, T0 + 10_000).unwrap();
    assert_eq!((view.id, view.age_s, view.ttl_s), (cid, 10, 60));
    assert_eq!(seqs(&view.page), [1]);
    assert_eq!(view.page.messages[0].claim_count, 1);

    e.store_mut().take_log();
    e.renew_claim(qr("a"), cid, 200, 100, T0 + 50_000).unwrap();
    assert_eq!(e.store_mut().take_log(), ["ClaimUpsert a 1 [1]"]);
    let view = e.get_claim(qr("a"), cid, T0 + 51_000).unwrap();
    assert_eq!((view.age_s, view.ttl_s), (1, 200), "age restarts at renewal");
    assert_eq!(view.page.messages[0].claim_count, 1, "renewal is not a delivery");
    // Message #1 (ttl 300 s) now lives until T0+50s+200s+100s.
    assert_eq!(e.get_messages(qr("a"), &ids[..1], T0 + 349_999).messages.len(), 1);
    assert!(e.get_claim(qr("a"), cid, T0 + 249_999).is_ok());
    assert_eq!(e.get_claim(qr("a"), cid, T0 + 250_000), Err(EngineError::ClaimNotFound));
    assert_eq!(e.renew_claim(qr("a"), cid, 60, 60, T0 + 250_000), Err(EngineError::ClaimNotFound));

    let unknown = ClaimId::new(9, cid.secret);
    let guessed = ClaimId::new(cid.seq, cid.secret.wrapping_add(1));
    for id in [unknown, guessed] {
        assert_eq!(e.get_claim(qr("a"), id, T0), Err(EngineError::ClaimNotFound));
        assert_eq!(e.renew_claim(qr("a"), id, 60, 60, T0), Err(EngineError::ClaimNotFound));
        assert_eq!(e.release_claim(qr("a"), id, T0), Ok(()));
    }
    assert_eq!(e.get_claim(qr("missing"), cid, T0), Err(EngineError::ClaimNotFound));
    assert_eq!(e.release_claim(qr("missing"), cid, T0), Ok(()));
}

#[test]
fn released_claims_are_gone_and_their_messages_free() {
    let mut e = engine();
    post(&mut e, "a", 2, T0);
    let (cid, _) = claim(&mut e, "a", 2, T0).unwrap();
    e.store_mut().take_log();
    e.release_claim(qr("a"), cid, T0).unwrap();
    assert_eq!(e.store_mut().take_log(), ["ClaimDelete a 1"]);
    assert_eq!(e.get_claim(qr("a"), cid, T0), Err(EngineError::ClaimNotFound));
    let s = e.stats(qr("a"), T0);
    assert_eq!((s.claimed, s.free), (0, 2));
    let (again, got) = claim(&mut e, "a", 2, T0).unwrap();
    assert_ne!(again, cid, "claim ids are not reused");
    assert_eq!(got, [1, 2]);
}

#[test]
fn dead_letters_move_on_the_attempt_after_max_claim_count() {
    let mut e = engine();
    let m = json!({"_max_claim_count": 2, "_dead_letter_queue": "dlq", "_dead_letter_queue_messages_ttl": 120});
    e.create_queue(qr("a"), Some(meta(m)), T0).unwrap();
    post_spec(&mut e, "a", &[(Some(3000), None), (Some(3000), None)], CLIENT, T0).unwrap();
    let mut now = T0;
    for round in 1..=2 {
        let out = e.claim(qr("a"), params(1), now).unwrap();
        let (cid, page) = out.claim.unwrap();
        assert_eq!((seqs(&page), page.messages[0].claim_count), (vec![1], round));
        assert!(out.dead_letters.is_none());
        e.release_claim(qr("a"), cid, now).unwrap();
        now += 1000;
    }
    e.store_mut().take_log();
    // Third attempt: #1 moves out; #2 is not taken because #1 used the limit.
    let out = e.claim(qr("a"), params(1), now).unwrap();
    assert!(out.claim.is_none());
    let letters = out.dead_letters.unwrap();
    assert_eq!(letters.queue, "dlq");
    assert_eq!(letters.messages.len(), 1);
    assert_eq!(letters.messages[0].ttl_s, Some(120));
    assert_eq!(letters.messages[0].delay_s, Some(0));
    let body = &letters.bodies[letters.messages[0].body.start as usize..letters.messages[0].body.end as usize];
    assert_eq!(body, b"[0]");
    assert_eq!(e.store_mut().take_log(), ["MessageDelete a 1"]);
    assert_eq!(seqs(&e.list_messages(qr("a"), &list_opts(0), now)), [2]);
    // A larger claim delivers #2 normally.
    assert_eq!(claim(&mut e, "a", 5, now).map(|c| c.1), Some(vec![2]));
    assert_eq!(e.store().inner.live_bodies(), 1);
}

#[test]
fn dead_letters_keep_their_ttl_without_a_dlq_ttl() {
    let mut e = engine();
    let m = json!({"_max_claim_count": 0, "_dead_letter_queue": "dlq"});
    e.create_queue(qr("a"), Some(meta(m)), T0).unwrap();
    post_spec(&mut e, "a", &[(Some(700), None)], CLIENT, T0).unwrap();
    let out = e.claim(qr("a"), params(5), T0).unwrap();
    assert_eq!(out.dead_letters.unwrap().messages[0].ttl_s, Some(700));
    // Only one of the two keys: no dead-lettering.
    e.create_queue(qr("b"), Some(meta(json!({"_max_claim_count": 0}))), T0).unwrap();
    post(&mut e, "b", 1, T0);
    let out = e.claim(qr("b"), params(5), T0).unwrap();
    assert!(out.claim.is_some() && out.dead_letters.is_none());
}

#[test]
fn next_change_reports_delays_and_claim_expiry() {
    let mut e = engine();
    assert_eq!(e.next_change_ms(qr("a"), T0), None);
    post(&mut e, "a", 1, T0);
    assert_eq!(e.next_change_ms(qr("a"), T0), None, "everything is claimable already");
    post_spec(&mut e, "a", &[(Some(300), Some(40))], CLIENT, T0).unwrap();
    assert_eq!(e.next_change_ms(qr("a"), T0), Some(T0 + 40_000));
    claim(&mut e, "a", 1, T0 + 1000).unwrap(); // expires at T0+61s
    assert_eq!(e.next_change_ms(qr("a"), T0 + 1000), Some(T0 + 40_000));
    assert_eq!(e.next_change_ms(qr("a"), T0 + 40_000), Some(T0 + 61_000));
    assert_eq!(e.next_change_ms(qr("a"), T0 + 61_000), None);
    // A delay longer than the life never makes the message claimable.
    post_spec(&mut e, "b", &[(Some(60), Some(900))], CLIENT, T0).unwrap();
    assert_eq!(e.next_change_ms(qr("b"), T0), None);
}

// -------------------------------------------------------------------------------------------
// Sweep
// -------------------------------------------------------------------------------------------

#[test]
fn sweep_collects_expired_messages_and_claims_incrementally() {
    let mut e = engine();
    for q in ["a", "b", "c"] {
        post_spec(&mut e, q, &[(Some(60), None), (Some(300), None), (Some(60), None)], CLIENT, T0).unwrap();
    }
    let (cid, _) = claim(&mut e, "b", 1, T0).unwrap(); // #1 of b lives on until T0+120s
    assert_eq!(e.sweep(T0 + 1000, 100), 0);
    e.store_mut().take_log();

    let now = T0 + 60_000;
    let mut removed = 0;
    let mut calls = 0;
    while calls < 50 {
        removed += e.sweep(now, 2);
        calls += 1;
    }
    // a and c lose #1 and #3; b loses its claim and #3 (#1 is kept alive by the claim's grace).
    assert_eq!(removed, 6);
    assert!(calls > 3);
    assert_eq!((e.message_count(), e.store().inner.live_bodies()), (4, 4));
    let log = e.store_mut().take_log();
    assert!(log.contains(&"ClaimDelete b 1".to_string()), "{log:?}");
    assert!(log.contains(&"MessageDelete c 3".to_string()), "{log:?}");
    assert_eq!(e.get_claim(qr("b"), cid, now), Err(EngineError::ClaimNotFound));
    // b's #1 goes at T0+120s; everything else at T0+300s.
    assert_eq!(e.sweep(T0 + 120_000, 1000), 1);
    assert_eq!(e.sweep(T0 + 300_000, 1000), 3);
    assert_eq!((e.message_count(), e.store().inner.live_bodies()), (0, 0));
    assert!(e.queues.values().all(|q| q.log.is_none()), "idle queues give their log back");
    assert_eq!(e.sweep(T0 + 400_000, 1000), 0);
}

#[test]
fn sweep_resumes_inside_a_large_queue() {
    let mut e = engine();
    post_spec(&mut e, "big", &vec![(Some(60), None); 1000], CLIENT, T0).unwrap();
    post_spec(&mut e, "big", &[(Some(600), None); 10], CLIENT, T0).unwrap();
    let now = T0 + 60_000;
    let mut removed = 0;
    for _ in 0..30 {
        removed += e.sweep(now, 100);
    }
    assert_eq!(removed, 1000);
    assert_eq!(e.message_count(), 10);
    assert_eq!(seqs(&e.list_messages(qr("big"), &list_opts(0), now)).len(), 10);
    // The queue's expiry bound was recomputed, so a later sweep skips it.
    let log = e.queues.values().next().unwrap().log.as_deref().unwrap();
    assert_eq!(log.min_expires_ms, T0 + 600_000);
    assert!(log.entries.len() <= 10 + log.tombstones);
}

#[test]
fn sweep_progresses_on_the_smallest_budget() {
    let mut e = engine();
    post_spec(&mut e, "a", &[(Some(60), None); 5], CLIENT, T0).unwrap();
    post_spec(&mut e, "b", &[(Some(60), None); 5], CLIENT, T0).unwrap();
    let removed: usize = (0..40).map(|_| e.sweep(T0 + 60_000, 1)).sum();
    assert_eq!((removed, e.message_count()), (10, 0));
}

#[test]
fn tombstones_are_compacted() {
    let mut e = engine();
    let ids = post(&mut e, "a", 100, T0);
    for id in ids.iter().skip(1).step_by(2) {
        e.delete_message(qr("a"), *id, None, T0).unwrap();
    }
    for id in ids.iter().skip(2).step_by(2).take(30) {
        e.delete_message(qr("a"), *id, None, T0).unwrap();
    }
    let log = e.queues.values().next().unwrap().log.as_deref().unwrap();
    assert!(log.tombstones * 2 <= log.entries.len(), "{} of {}", log.tombstones, log.entries.len());
    let live: Vec<u64> = ids.iter().step_by(2).skip(31).map(|i| i.seq).chain([1]).collect();
    let mut expected = live.clone();
    expected.sort_unstable();
    assert_eq!(seqs(&e.list_messages(qr("a"), &list_opts(0), T0)), expected);
    assert_eq!(e.message_count(), expected.len());
}

// -------------------------------------------------------------------------------------------
// Memory
// -------------------------------------------------------------------------------------------

mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// Counts, per thread (so tests running in parallel do not disturb a measurement), the bytes
    /// asked for and the bytes malloc really set aside (`malloc_usable_size`, size classes and
    /// rounding included).
    pub struct Counting;

    thread_local! {
        static ASKED: Cell<isize> = const { Cell::new(0) };
        static USABLE: Cell<isize> = const { Cell::new(0) };
    }

    fn add(asked: isize, usable: isize) {
        let _ = ASKED.try_with(|h| h.set(h.get() + asked));
        let _ = USABLE.try_with(|h| h.set(h.get() + usable));
    }

    /// (asked, usable) bytes this thread holds.
    pub fn held() -> (isize, isize) {
        (ASKED.with(Cell::get), USABLE.with(Cell::get))
    }

    fn usable(p: *mut u8) -> isize {
        // SAFETY: `p` is a live block from the system allocator (glibc malloc on Linux).
        unsafe { libc::malloc_usable_size(p.cast()) as isize }
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = System.alloc(layout);
            if !p.is_null() {
                add(layout.size() as isize, usable(p));
            }
            p
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            add(-(layout.size() as isize), -usable(ptr));
            System.dealloc(ptr, layout);
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let old = usable(ptr);
            let p = System.realloc(ptr, layout, new_size);
            if !p.is_null() {
                add(new_size as isize - layout.size() as isize, usable(p) - old);
            }
            p
        }
    }
}

#[global_allocator]
static COUNTING: counting::Counting = counting::Counting;

/// A store that allocates nothing, so the measurement sees only the index.
struct NullStore(u64);

impl Store for NullStore {
    fn append_message(&mut self, _: &Record<'_>, body: &[u8]) -> Result<BodyRef, StoreError> {
        self.0 += 1;
        Ok(BodyRef { location: self.0, len: body.len() as u32 })
    }
    fn append(&mut self, _: &Record<'_>) -> Result<(), StoreError> {
        Ok(())
    }
    fn body(&self, _: BodyRef) -> &[u8] {
        b"0"
    }
    fn release(&mut self, _: BodyRef) {}
}

#[test]
fn an_empty_queue_costs_at_most_200_bytes() {
    const N: usize = 100_000;
    let names: Vec<String> = (0..N).map(|i| format!("queue-{i:07}")).collect();
    let mut e = Engine::new(NullStore(0), ApiLimits::default(), 1);
    let before = counting::held();
    for name in &names {
        e.create_queue(qr(name), None, T0).unwrap();
    }
    let after = counting::held();
    let asked = (after.0 - before.0) as f64 / N as f64;
    let usable = (after.1 - before.1) as f64 / N as f64;
    println!("empty queue, 13-byte names: {asked:.1} bytes asked, {usable:.1} bytes held by malloc");
    assert!(usable <= 200.0, "{usable:.1} bytes per empty queue");
    assert_eq!(e.queue_count(), N);
}

#[test]
fn a_message_costs_at_most_64_bytes_of_index() {
    const N: usize = 100_000;
    let mut e = Engine::new(NullStore(0), ApiLimits::default(), 1);
    post(&mut e, "a", 1, T0);
    let before = counting::held();
    for _ in 0..N / 100 {
        post(&mut e, "a", 100, T0);
    }
    let per_message = (counting::held().1 - before.1) as f64 / N as f64;
    println!("message index: {per_message:.1} bytes per message (VecDeque growth included)");
    // A doubling VecDeque holds up to twice what it needs; at 100_001 entries it holds 131_072.
    assert!(per_message <= 64.0 * 1.35, "{per_message:.1}");
}

// -------------------------------------------------------------------------------------------
// Properties
// -------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Post(usize, u32),
    Claim(usize),
    Delete(usize, bool),
    BulkDelete(usize),
    Release(usize),
    Renew(usize),
    Pop(usize),
    Advance(u64),
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1usize..4, prop_oneof![Just(0u32), 1u32..30]).prop_map(|(n, d)| Op::Post(n, d)),
        3 => (1usize..5).prop_map(Op::Claim),
        2 => (0usize..64, any::<bool>()).prop_map(|(i, c)| Op::Delete(i, c)),
        1 => (0usize..64).prop_map(Op::BulkDelete),
        1 => (0usize..16).prop_map(Op::Release),
        1 => (0usize..16).prop_map(Op::Renew),
        1 => (1usize..3).prop_map(Op::Pop),
        2 => (0u64..40_000).prop_map(Op::Advance),
        1 => Just(Op::Sweep),
    ]
}

/// What a claim should take, by the listing's independent filters: the oldest `limit` messages
/// that are unexpired, visible and free.
fn claimable<S: Store>(e: &Engine<S>, now: u64, limit: usize) -> Vec<u64> {
    let opts = ListMessages { include_claimed: false, include_delayed: false, limit, ..list_opts(0) };
    seqs(&e.list_messages(qr("q"), &opts, now))
}

/// A claim as the client saw it.
struct Held {
    id: ClaimId,
    expires_ms: u64,
    seqs: Vec<u64>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn claims_are_exclusive_and_markers_increase(ops in prop::collection::vec(op(), 1..120)) {
        let mut e = engine();
        let mut now = T0;
        let mut posted: Vec<MessageId> = Vec::new();
        let mut held: Vec<Held> = Vec::new();
        let mut visible_at: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
        for op in ops {
            match op {
                Op::Post(n, delay) => {
                    let ids = post_spec(&mut e, "q", &vec![(Some(90), Some(delay)); n], CLIENT, now).unwrap();
                    for id in &ids {
                        visible_at.insert(id.seq, now + u64::from(delay) * 1000);
                    }
                    posted.extend(ids);
                }
                Op::Claim(limit) => {
                    let expected = claimable(&e, now, limit);
                    let out = e.claim(qr("q"), ClaimParams { ttl_s: 60, grace_s: 60, limit, secret: now }, now).unwrap();
                    let got = out.claim.as_ref().map(|(_, page)| seqs(page)).unwrap_or_default();
                    prop_assert_eq!(got, expected, "claims take the oldest claimable messages");
                    if let Some((id, page)) = out.claim {
                        prop_assert!(page.messages.len() <= limit && !page.messages.is_empty());
                        for m in &page.messages {
                            prop_assert!(visible_at[&m.seq] <= now, "claimed delayed seq {}", m.seq);
                            for h in held.iter().filter(|h| h.expires_ms > now) {
                                prop_assert!(!h.seqs.contains(&m.seq), "seq {} handed out twice", m.seq);
                            }
                        }
                        held.push(Held { id, expires_ms: now + 60_000, seqs: seqs(&page) });
                    }
                }
                Op::Delete(i, with_claim) => {
                    if let Some(&id) = posted.get(i % posted.len().max(1)) {
                        let claim = with_claim
                            .then(|| held.iter().rev().find(|h| h.seqs.contains(&id.seq)).map(|h| h.id))
                            .flatten();
                        if e.delete_message(qr("q"), id, claim, now).is_ok() {
                            for h in &mut held {
                                h.seqs.retain(|&s| s != id.seq);
                            }
                        }
                    }
                }
                Op::BulkDelete(i) => {
                    let ids: Vec<MessageId> = posted.iter().skip(i % posted.len().max(1)).take(3).copied().collect();
                    let claims: Vec<ClaimId> = held.iter().map(|h| h.id).collect();
                    e.delete_messages(qr("q"), &ids, Some(&claims), now).unwrap();
                    for h in &mut held {
                        h.seqs.retain(|s| !ids.iter().any(|id| id.seq == *s));
                    }
                }
                Op::Release(i) => {
                    if !held.is_empty() {
                        let h = held.remove(i % held.len());
                        e.release_claim(qr("q"), h.id, now).unwrap();
                    }
                }
                Op::Renew(i) => {
                    let n = held.len().max(1);
                    if let Some(h) = held.get_mut(i % n) {
                        if e.renew_claim(qr("q"), h.id, 60, 60, now).is_ok() {
                            prop_assert!(h.expires_ms > now, "renewed an expired claim");
                            h.expires_ms = now + 60_000;
                        }
                    }
                }
                Op::Pop(n) => {
                    let expected = claimable(&e, now, n);
                    let page = e.pop(qr("q"), n, now).unwrap();
                    prop_assert_eq!(seqs(&page), expected, "pop takes the oldest claimable messages");
                    for m in &page.messages {
                        prop_assert!(visible_at[&m.seq] <= now, "popped delayed seq {}", m.seq);
                        for h in held.iter().filter(|h| h.expires_ms > now) {
                            prop_assert!(!h.seqs.contains(&m.seq), "popped claimed seq {}", m.seq);
                        }
                    }
                }
                Op::Advance(ms) => now += ms,
                Op::Sweep => {
                    e.sweep(now, 7);
                }
            }
            // What the engine says is claimed agrees with what clients hold.
            let claimed = e.stats(qr("q"), now).claimed;
            let mut live: Vec<u64> = held.iter().filter(|h| h.expires_ms > now).flat_map(|h| h.seqs.clone()).collect();
            let before = live.len();
            live.sort_unstable();
            live.dedup();
            prop_assert_eq!(live.len(), before, "a message is in two live claims");
            prop_assert_eq!(claimed, live.len() as u64);
            // Paging through the queue: markers strictly increase.
            let mut after = 0;
            let mut last = 0;
            loop {
                let page = e.list_messages(qr("q"), &ListMessages { limit: 3, ..list_opts(after) }, now);
                let Some(m) = page.messages.last() else { break };
                for m in &page.messages {
                    prop_assert!(m.seq > last);
                    last = m.seq;
                }
                after = m.seq;
            }
        }
    }
}

// -------------------------------------------------------------------------------------------
// Claim secrets and revocations (format 2)
// -------------------------------------------------------------------------------------------

#[test]
fn a_claim_replayed_from_format_1_is_named_by_no_id() {
    let mut e = engine();
    let ids = post(&mut e, "a", 2, T0);
    let legacy = Record::ClaimUpsert {
        queue: qr("a"),
        claim_seq: 1,
        secret: None,
        created_ms: T0,
        ttl_s: 60,
        grace_s: 60,
        seqs: &[1],
    };
    assert!(e.replay(&legacy, None));
    let default = ListMessages { include_claimed: false, ..list_opts(0) };
    assert_eq!(seqs(&e.list_messages(qr("a"), &default, T0)), [2], "the message is still claimed");
    let all = e.list_messages(qr("a"), &list_opts(0), T0);
    assert_eq!(all.messages[0].claim, None, "no id is shown for it");
    for secret in [0, 1, u64::MAX] {
        let id = ClaimId::new(1, secret);
        assert_eq!(e.get_claim(qr("a"), id, T0), Err(EngineError::ClaimNotFound));
        assert_eq!(e.delete_message(qr("a"), ids[0], Some(id), T0), Err(EngineError::ClaimMismatch));
    }
    assert_eq!(e.delete_message(qr("a"), ids[0], None, T0), Err(EngineError::MessageClaimed));
    assert_eq!(seqs(&e.list_messages(qr("a"), &default, T0 + 60_000)), [1, 2], "it ends by expiring");
}

#[test]
fn revocations_are_logged_replayed_bounded_and_pruned() {
    let mut e = engine();
    let subject = |name| QueueRef { project: P, name };
    let r = Revoked { revoked_ms: T0, until_ms: T0 + 1000 };
    e.revoke(subject("agent"), r, 2).unwrap();
    assert_eq!(e.store_mut().take_log(), [format!("Revocation {P} agent {T0} {}", T0 + 1000)]);
    e.revoke(subject("other"), r, 2).unwrap();
    assert!(matches!(e.revoke(subject("third"), r, 2), Err(EngineError::Conflict(_))), "at most `max` subjects");
    let later = Revoked { revoked_ms: T0 + 5, until_ms: T0 + 2000 };
    // A known subject is widened past the bound.
    e.revoke(subject("agent"), later, 2).unwrap();
    assert_eq!(e.revocations().get(P, "agent"), Some(later));

    let mut fresh = engine();
    let logged = Record::Revocation { queue: subject("agent"), revoked_ms: T0, until_ms: T0 + 1000 };
    assert!(fresh.replay(&logged, None));
    assert!(fresh.revocations().refuses(P, "agent", T0));
    assert!(!fresh.revocations().refuses(P, "agent", T0 + 1));

    e.sweep(T0 + 1000, 10);
    assert_eq!(e.revocations().len(), 1, "`other` ended, `agent` was widened");
    e.sweep(T0 + 2000, 10);
    assert!(e.revocations().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Quotas
// ---------------------------------------------------------------------------------------------

/// Posts `n` messages with bodies `[i]` (3 bytes each) within `quota`.
fn post_within(
    e: &mut Engine<TestStore>,
    name: &str,
    n: usize,
    ttl_s: u32,
    now: u64,
    quota: &StoreQuota,
) -> Result<(), EngineError> {
    let mut bodies = Vec::new();
    let mut msgs = Vec::new();
    for i in 0..n {
        let start = bodies.len() as u32;
        bodies.extend_from_slice(format!("[{}]", i % 10).as_bytes());
        msgs.push(NewMessage { ttl_s: Some(ttl_s), delay_s: None, body: start..bodies.len() as u32 });
    }
    e.post_messages_within(qr(name), CLIENT, &msgs, &bodies, 100, now, quota).map(|_| ())
}

fn quota(values: [u64; crate::limits::LIMITS]) -> StoreQuota {
    crate::limits::LimitSet::new(values).store_quota(true)
}

#[test]
fn expired_and_swept_messages_free_their_queues_and_projects_quota() {
    let mut e = engine();
    let q = quota([0, 2, 6, 3, 0, 0, 0, 0]);
    post_within(&mut e, "a", 2, 60, T0, &q).unwrap();
    let refused = post_within(&mut e, "a", 1, 60, T0, &q).unwrap_err();
    assert!(matches!(refused, EngineError::Refused(Refused::Quota { limit: Limit::MessagesPerQueue, value: 2 })));
    post_within(&mut e, "b", 1, 300, T0, &q).unwrap();
    let refused = post_within(&mut e, "c", 1, 60, T0, &q).unwrap_err();
    assert!(matches!(refused, EngineError::Refused(Refused::Quota { limit: Limit::MessagesPerProject, value: 3 })));
    // Expired but not yet collected: still counted (the sweep collects within a second).
    let later = T0 + 61_000;
    assert!(post_within(&mut e, "a", 1, 60, later, &q).is_err());
    e.sweep(later, 1000);
    post_within(&mut e, "a", 2, 60, later, &q).unwrap();
    assert_eq!(e.project_held(P), (3, 9));
    assert!(post_within(&mut e, "c", 1, 60, later, &q).is_err(), "the project is full again");
}

#[test]
fn claimed_and_deleted_messages_free_bytes_and_a_refused_post_keeps_nothing() {
    let mut e = engine();
    let q = quota([0, 0, 9, 0, 0, 0, 0, 0]);
    post_within(&mut e, "a", 3, 300, T0, &q).unwrap();
    let refused = post_within(&mut e, "a", 1, 300, T0, &q).unwrap_err();
    assert!(matches!(refused, EngineError::Refused(Refused::Quota { limit: Limit::BytesPerQueue, value: 9 })));
    assert_eq!(e.message_count(), 3);
    let (claim, page) = e.claim(qr("a"), params(1), T0).unwrap().claim.unwrap();
    e.delete_message(qr("a"), page.messages[0].id, Some(claim), T0).unwrap();
    post_within(&mut e, "a", 1, 300, T0, &q).unwrap();
    e.purge(qr("a")).unwrap();
    post_within(&mut e, "a", 3, 300, T0, &q).unwrap();
    // Without its quota's leave, a post does not make its queue.
    let counted = StoreQuota { may_create_queue: false, ..q };
    assert!(matches!(post_within(&mut e, "new", 1, 300, T0, &counted), Err(EngineError::QueueNotFound)));
    assert!(!e.queue_exists(qr("new")));
    assert_eq!(e.project_queue_count(P), 1);
}
