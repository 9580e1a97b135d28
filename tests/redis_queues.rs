//! The queue semantics of the `redis-cluster` backend (`shard::redis::RedisQueues`) against a
//! real cluster of 3 masters on loopback, through the scenarios of the embedded engine's own
//! tests (src/queue/engine/tests.rs): the engine is the specification, so the same calls must
//! give the same answers and errors. Expiry is exercised with short TTLs and polling loops.
//!
//! One cluster for the file (it takes seconds to form); each scenario uses its own project.

#[path = "support/executor.rs"]
mod executor;
#[path = "support/redis_cluster.rs"]
mod redis_cluster;

use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use executor::run;
use marconi::config::ApiLimits;
use marconi::limits::{Limit, LimitSet, Refused, StoreQuota};
use marconi::queue::{
    ClaimId, ClaimParams, EngineError, ListMessages, ListQueues, MessageId, MessagePage, Metadata, NewMessage, PatchOp,
    QueuePage, Revoked,
};
use marconi::redis::{Ack, Cluster, Kind, Options, Value};
use marconi::shard::command::{Command, Reply};
use marconi::shard::redis::{Executed, RedisQueues, LIBRARY, LIBRARY_NAME};
use marconi::storage::QueueRef;
use redis_cluster::RedisCluster;
use serde_json::json;

const CLIENT: u64 = 0xc1;
const OTHER: u64 = 0xc2;

fn options(seeds: Vec<String>) -> Options {
    Options {
        nodes: seeds,
        // No replicas here: the semantics are under test, not the acknowledgements.
        ack: Ack::Async,
        ack_replicas: 0,
        ack_timeout_ms: 300,
        read_fence: false,
        command_timeout_ms: 5000,
        max_batch: 256,
        library: LIBRARY,
        library_name: LIBRARY_NAME,
    }
}

async fn sleep_ms(ms: u64) {
    glommio::timer::sleep(Duration::from_millis(ms)).await;
}

/// One test's view of the backend: a project and helpers that unwrap the replies.
struct Q {
    rq: Rc<RedisQueues>,
    cluster: Rc<Cluster>,
    project: &'static str,
}

impl Q {
    fn q<'a>(&'a self, name: &'a str) -> QueueRef<'a> {
        QueueRef { project: self.project, name }
    }

    async fn exec(&self, name: &str, command: Command) -> Result<Executed, EngineError> {
        self.rq.execute(self.q(name), &command).await
    }

    async fn reply(&self, name: &str, command: Command) -> Result<Reply, EngineError> {
        self.exec(name, command).await.map(|e| e.reply)
    }

    async fn done(&self, name: &str, command: Command) -> Result<(), EngineError> {
        match self.reply(name, command).await? {
            Reply::Done => Ok(()),
            other => panic!("expected Done, got {other:?}"),
        }
    }

    /// Posts messages described as (ttl, delay); bodies are `[i]`.
    async fn post_spec(
        &self,
        name: &str,
        spec: &[(Option<u32>, Option<u32>)],
        client: u64,
        quota: StoreQuota,
    ) -> Result<Vec<MessageId>, EngineError> {
        let mut bodies = Vec::new();
        let mut messages = Vec::new();
        for (i, (ttl_s, delay_s)) in spec.iter().enumerate() {
            let start = bodies.len() as u32;
            bodies.extend_from_slice(format!("[{i}]").as_bytes());
            messages.push(NewMessage { ttl_s: *ttl_s, delay_s: *delay_s, body: start..bodies.len() as u32 });
        }
        let command = Command::PostMessages { client_hash: client, messages, bodies, request_bytes: 100, quota };
        match self.reply(name, command).await? {
            Reply::Posted(ids) => Ok(ids),
            other => panic!("expected Posted, got {other:?}"),
        }
    }

    async fn post(&self, name: &str, n: usize) -> Vec<MessageId> {
        self.post_spec(name, &vec![(Some(300), None); n], CLIENT, StoreQuota::UNLIMITED).await.unwrap()
    }

    async fn list(&self, name: &str, opts: ListMessages) -> MessagePage {
        match self.reply(name, Command::ListMessages { opts }).await.unwrap() {
            Reply::Page(page) => page,
            other => panic!("expected Page, got {other:?}"),
        }
    }

    async fn get(&self, name: &str, ids: &[MessageId]) -> MessagePage {
        match self.reply(name, Command::GetMessages { ids: ids.to_vec() }).await.unwrap() {
            Reply::Page(page) => page,
            other => panic!("expected Page, got {other:?}"),
        }
    }

    async fn claim_with(&self, name: &str, params: ClaimParams) -> Executed {
        self.exec(name, Command::Claim { params }).await.unwrap()
    }

    /// Claims with ttl 60, grace 60: the claim id and the seqs taken.
    async fn claim(&self, name: &str, limit: usize) -> Option<(ClaimId, Vec<u64>)> {
        let executed = self.claim_with(name, params(limit)).await;
        match executed.reply {
            Reply::Claimed(outcome) => {
                assert!(outcome.dead_letters.is_none(), "dead letters are moved inside the backend");
                outcome.claim.map(|(id, page)| (id, seqs(&page)))
            }
            other => panic!("expected Claimed, got {other:?}"),
        }
    }

    async fn stats(&self, name: &str) -> marconi::queue::QueueStats {
        match self.reply(name, Command::Stats).await.unwrap() {
            Reply::Stats(s) => s,
            other => panic!("expected Stats, got {other:?}"),
        }
    }

    async fn metadata(&self, name: &str) -> Option<Metadata> {
        match self.reply(name, Command::GetQueue).await.unwrap() {
            Reply::Metadata(m) => m,
            other => panic!("expected Metadata, got {other:?}"),
        }
    }

    async fn create(&self, name: &str, metadata: Option<Metadata>) -> Result<bool, EngineError> {
        match self.reply(name, Command::CreateQueue { metadata }).await? {
            Reply::Created(created) => Ok(created),
            other => panic!("expected Created, got {other:?}"),
        }
    }

    async fn exists(&self, name: &str) -> bool {
        match self.reply(name, Command::QueueExists).await.unwrap() {
            Reply::Exists(e) => e,
            other => panic!("expected Exists, got {other:?}"),
        }
    }

    async fn get_claim(&self, name: &str, id: ClaimId) -> Result<marconi::queue::ClaimView, EngineError> {
        match self.reply(name, Command::GetClaim { id }).await? {
            Reply::Claim(view) => Ok(view),
            other => panic!("expected Claim, got {other:?}"),
        }
    }

    async fn queues(&self, opts: ListQueues) -> QueuePage {
        match self.reply("", Command::ListQueues { opts }).await.unwrap() {
            Reply::Queues(page) => page,
            other => panic!("expected Queues, got {other:?}"),
        }
    }

    /// Whether any master holds `key`.
    async fn key_exists(&self, key: &[u8]) -> bool {
        let answers = self.cluster.on_every_master(&[b"EXISTS", key]).await.expect("EXISTS on every master");
        answers.iter().any(|(_, v)| matches!(v, Value::Int(n) if *n > 0))
    }
}

fn list_opts(after_seq: u64) -> ListMessages {
    ListMessages { after_seq, limit: 100, client_hash: OTHER, echo: true, include_claimed: true, include_delayed: true }
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

fn params(limit: usize) -> ClaimParams {
    ClaimParams { ttl_s: 60, grace_s: 60, limit, secret: 0x005e_c2e7 + limit as u64 }
}

fn seqs(page: &MessagePage) -> Vec<u64> {
    page.messages.iter().map(|m| m.seq).collect()
}

fn names(page: &QueuePage) -> Vec<&str> {
    page.queues.iter().map(|q| q.name.as_str()).collect()
}

fn meta(v: serde_json::Value) -> Metadata {
    match v {
        serde_json::Value::Object(map) => Metadata::from_map(map, &ApiLimits::default()).unwrap(),
        _ => panic!("metadata must be an object"),
    }
}

/// Polls `check` every 100 ms until it holds, failing after `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "never happened: {what}");
        sleep_ms(100).await;
    }
}

#[test]
fn redis_backend_behaves_like_the_engine() {
    let fixture = RedisCluster::start(3, 0);
    let seeds = fixture.seed_list();
    run(move || async move {
        let cluster = Cluster::connect(options(seeds)).await.expect("connects");
        let rq = Rc::new(RedisQueues::new(cluster.clone(), "mqt", ApiLimits::default()));
        let q = |project| Q { rq: rq.clone(), cluster: cluster.clone(), project };
        create_and_metadata(&q("meta")).await;
        post_defaults_and_lazy_creation(&q("post")).await;
        listing_filters_and_markers(&q("list")).await;
        get_messages_by_id(&q("get")).await;
        delete_rules(&q("del")).await;
        bulk_delete(&q("bulk")).await;
        pop_takes_claimable_oldest_first(&q("pop")).await;
        claims_take_only_free_visible_messages(&q("claims")).await;
        get_renew_release_claims(&q("renew")).await;
        expiry_of_messages_and_claims(&q("expiry")).await;
        stats_purge_and_empty_queues(&q("stats")).await;
        delete_and_recreate_gives_a_new_epoch(&q("epoch")).await;
        dead_letters_move_exactly_once(&q("dlq")).await;
        listing_queues(&q("listing")).await;
        quotas(&q("quota")).await;
        revocations_and_other_commands(&q("rev")).await;
        idle_queues_are_swept(&q("idle")).await;
    });
    drop(fixture);
}

async fn create_and_metadata(t: &Q) {
    assert!(!t.exists("a").await);
    assert_eq!(t.metadata("a").await, None);
    assert!(t.create("a", None).await.unwrap());
    assert!(t.exists("a").await);
    assert_eq!(t.metadata("a").await, Some(Metadata::default()));
    assert!(!t.create("a", Some(meta(json!({"k": 1})))).await.unwrap());
    assert_eq!(t.metadata("a").await, Some(meta(json!({"k": 1}))));
    // Empty or absent metadata on an existing queue changes nothing.
    assert!(!t.create("a", Some(Metadata::default())).await.unwrap());
    assert!(!t.create("a", None).await.unwrap());
    assert_eq!(t.metadata("a").await, Some(meta(json!({"k": 1}))));

    // Patches: the engine's rules, validation and conflicts.
    let ops = vec![
        PatchOp::Add { key: "owner".into(), value: json!("ops") },
        PatchOp::Replace { key: "k".into(), value: json!(2) },
    ];
    match t.reply("a", Command::PatchQueue { ops }).await.unwrap() {
        Reply::Metadata(Some(m)) => assert_eq!(m, meta(json!({"k": 2, "owner": "ops"}))),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.metadata("a").await, Some(meta(json!({"k": 2, "owner": "ops"}))));
    let bad = vec![PatchOp::Replace { key: "missing".into(), value: json!(1) }];
    assert_eq!(
        t.reply("a", Command::PatchQueue { ops: bad }).await.unwrap_err(),
        EngineError::Conflict("Can't replace non-existent object missing.".into())
    );
    let invalid = vec![PatchOp::Add { key: "_default_message_ttl".into(), value: json!(1) }];
    assert!(matches!(t.reply("a", Command::PatchQueue { ops: invalid }).await, Err(EngineError::Invalid(_))));
    let ops = vec![PatchOp::Add { key: "owner".into(), value: json!("x") }];
    assert_eq!(t.reply("nope", Command::PatchQueue { ops }).await.unwrap_err(), EngineError::QueueNotFound);
    let remove = vec![PatchOp::Remove { key: "k".into() }, PatchOp::Remove { key: "owner".into() }];
    match t.reply("a", Command::PatchQueue { ops: remove }).await.unwrap() {
        Reply::Metadata(Some(m)) => assert!(m.is_empty()),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.metadata("a").await, Some(Metadata::default()));

    // Dead-letter cycles are refused, across slots too.
    let own = t.create("c1", Some(meta(json!({"_dead_letter_queue": "c1"})))).await;
    assert!(matches!(own, Err(EngineError::Invalid(text)) if text.contains("itself")));
    assert!(!t.exists("c1").await);
    t.create("c1", Some(meta(json!({"_dead_letter_queue": "c2"})))).await.unwrap();
    t.create("c2", Some(meta(json!({"_dead_letter_queue": "c3"})))).await.unwrap();
    let back = t.create("c3", Some(meta(json!({"_dead_letter_queue": "c1"})))).await;
    assert!(matches!(back, Err(EngineError::Invalid(_))), "{back:?}");
    t.create("c3", None).await.unwrap();
    let patch = vec![PatchOp::Add { key: "_dead_letter_queue".into(), value: json!("c1") }];
    assert!(matches!(t.reply("c3", Command::PatchQueue { ops: patch }).await, Err(EngineError::Invalid(_))));
    let ok = vec![PatchOp::Add { key: "_dead_letter_queue".into(), value: json!("c4") }];
    assert!(t.reply("c3", Command::PatchQueue { ops: ok }).await.is_ok());
}

async fn post_defaults_and_lazy_creation(t: &Q) {
    let ids = t.post_spec("a", &[(None, None), (Some(100), Some(5))], CLIENT, StoreQuota::UNLIMITED).await.unwrap();
    assert_eq!(ids.iter().map(|i| i.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(ids[0].epoch, ids[1].epoch);
    assert_eq!(ids[0].to_string().len(), 24);
    assert_eq!(t.metadata("a").await, Some(Metadata::default()), "created lazily, empty");
    let page = t.get("a", &ids).await;
    assert_eq!(page.messages[0].ttl_s, 3600, "config default");
    assert_eq!(page.messages[1].ttl_s, 100);
    assert_eq!(page.body(&page.messages[1]), b"[1]");
    let undelayed = ListMessages { include_delayed: false, ..list_opts(0) };
    assert_eq!(seqs(&t.list("a", undelayed.clone()).await), [1], "the per-message delay is honoured");

    t.create("b", Some(meta(json!({"_default_message_ttl": 999, "_default_message_delay": 30})))).await.unwrap();
    let ids = t.post_spec("b", &[(None, None), (None, Some(0))], CLIENT, StoreQuota::UNLIMITED).await.unwrap();
    let page = t.get("b", &ids).await;
    assert_eq!(page.messages[0].ttl_s, 999, "queue default");
    assert_eq!(t.claim("b", 10).await.map(|c| c.1), Some(vec![2]), "#1 waits for the queue's delay");

    // Post size against the queue's limit, with the engine's texts; a refused post creates nothing.
    t.create("small", Some(meta(json!({"_max_messages_post_size": 1023})))).await.unwrap();
    let too_big = |request_bytes| Command::PostMessages {
        client_hash: CLIENT,
        messages: vec![NewMessage { ttl_s: None, delay_s: None, body: 0..2 }],
        bodies: b"{}".to_vec(),
        request_bytes,
        quota: StoreQuota::UNLIMITED,
    };
    assert_eq!(
        t.reply("small", too_big(1024)).await.unwrap_err(),
        EngineError::Invalid(
            "Message collection size is too large. The max size for current queue is 1023. It is \
             calculated by max size = min(max_messages_post_size_config: 262144, \
             max_messages_post_size_queue: 1023)."
                .into()
        )
    );
    assert!(t.reply("small", too_big(1023)).await.is_ok());
    assert_eq!(
        t.reply("fresh", too_big(262_145)).await.unwrap_err(),
        EngineError::Invalid("Message collection size is too large. Max size 262144".into())
    );
    assert!(!t.exists("fresh").await, "a refused post creates nothing");
    let outside = Command::PostMessages {
        client_hash: CLIENT,
        messages: vec![NewMessage { ttl_s: None, delay_s: None, body: 1..9 }],
        bodies: b"{}".to_vec(),
        request_bytes: 2,
        quota: StoreQuota::UNLIMITED,
    };
    assert!(matches!(t.reply("small", outside).await, Err(EngineError::Invalid(_))));

    // Bodies travel verbatim, whatever their bytes.
    let raw = br#"{"s": "\u00e9\r\n\u0000", "n": [1, 2.5e10]}"#.to_vec();
    let command = Command::PostMessages {
        client_hash: CLIENT,
        messages: vec![NewMessage { ttl_s: None, delay_s: None, body: 0..raw.len() as u32 }],
        bodies: raw.clone(),
        request_bytes: raw.len(),
        quota: StoreQuota::UNLIMITED,
    };
    let Reply::Posted(ids) = t.reply("raw", command).await.unwrap() else { panic!("not posted") };
    let page = t.get("raw", &ids).await;
    assert_eq!(page.body(&page.messages[0]), raw.as_slice());
}

async fn listing_filters_and_markers(t: &Q) {
    t.post_spec("a", &[(Some(300), None); 3], CLIENT, StoreQuota::UNLIMITED).await.unwrap();
    let ids =
        t.post_spec("a", &[(Some(300), None), (Some(300), Some(60))], OTHER, StoreQuota::UNLIMITED).await.unwrap();
    // Echo: the caller's own messages are skipped unless asked for.
    let mine = ListMessages { client_hash: CLIENT, echo: false, ..list_opts(0) };
    assert_eq!(seqs(&t.list("a", mine).await), [4, 5]);
    // Delayed messages are hidden by default.
    let default = ListMessages { include_claimed: false, include_delayed: false, ..list_opts(0) };
    assert_eq!(seqs(&t.list("a", default.clone()).await), [1, 2, 3, 4]);
    // Claimed messages are hidden unless asked for, and show their claim.
    let (cid, _) = t.claim("a", 1).await.unwrap();
    assert_eq!(seqs(&t.list("a", default.clone()).await), [2, 3, 4]);
    let all = t.list("a", list_opts(0)).await;
    assert_eq!(all.messages[0].claim, Some(cid));
    assert_eq!(all.messages[1].claim, None);
    assert_eq!(all.messages[0].claim_count, 1);
    // Markers are resolved by value: deleting the marker's message changes nothing.
    let second = MessageId::new(ids[0].epoch, 2);
    t.done("a", Command::DeleteMessage { id: second, claim: None }).await.unwrap();
    assert_eq!(seqs(&t.list("a", list_opts(2)).await), [3, 4, 5]);
    assert_eq!(seqs(&t.list("a", list_opts(1)).await), [3, 4, 5]);
    assert_eq!(seqs(&t.list("a", ListMessages { limit: 2, ..list_opts(0) }).await), [1, 3]);
    assert_eq!(seqs(&t.list("a", list_opts(99)).await), Vec::<u64>::new());
    assert!(t.list("missing", list_opts(0)).await.messages.is_empty());
    // An empty listing says when the queue next changes: #5's delay ends within 60 s.
    let executed = t.exec("a", Command::ListMessages { opts: ListMessages { after_seq: 4, ..default } }).await.unwrap();
    let next = executed.next_change_in_ms.expect("a scheduled change");
    assert!(next > 0 && next <= 60_000, "{next}");
}

async fn get_messages_by_id(t: &Q) {
    let spec = [(Some(300), None), (Some(300), Some(100)), (Some(300), None)];
    let ids = t.post_spec("a", &spec, CLIENT, StoreQuota::UNLIMITED).await.unwrap();
    t.claim("a", 1).await.unwrap();
    let wrong_epoch = MessageId::new(ids[0].epoch.wrapping_add(1), 1);
    let unknown = MessageId::new(ids[0].epoch, 77);
    let asked = [ids[2], ids[0], wrong_epoch, ids[2], unknown, ids[1]];
    let page = t.get("a", &asked).await;
    assert_eq!(seqs(&page), [3, 1, 2], "order asked, each once; claims and delays ignored");
    assert!(page.messages[1].claim.is_some());
    assert_eq!(page.body(&page.messages[0]), b"[2]");
    assert!(t.get("missing", &ids).await.messages.is_empty());
}

async fn delete_rules(t: &Q) {
    let ids = t.post("a", 4).await;
    let epoch = ids[0].epoch;
    let (c1, _) = t.claim("a", 2).await.unwrap(); // holds #1, #2
    let stranger = ClaimId::new(999, c1.secret);
    let guessed = ClaimId::new(c1.seq, c1.secret ^ 1);
    let delete = |id, claim| Command::DeleteMessage { id, claim };

    assert_eq!(t.done("a", delete(MessageId::new(epoch, 50), Some(stranger))).await, Ok(()));
    assert_eq!(t.done("zz", delete(ids[0], None)).await, Ok(()));
    assert_eq!(t.done("a", delete(ids[0], None)).await, Err(EngineError::MessageClaimed));
    assert_eq!(t.done("a", delete(ids[2], Some(c1))).await, Err(EngineError::MessageNotClaimed));
    assert_eq!(t.done("a", delete(ids[2], Some(stranger))).await, Err(EngineError::MessageNotClaimed));
    assert_eq!(t.done("a", delete(ids[0], Some(stranger))).await, Err(EngineError::ClaimMismatch));
    assert_eq!(t.done("a", delete(ids[0], Some(guessed))).await, Err(EngineError::ClaimMismatch));
    let (c2, taken) = t.claim("a", 1).await.unwrap();
    assert_eq!(taken, [3]);
    assert_eq!(t.done("a", delete(ids[0], Some(c2))).await, Err(EngineError::MessageClaimed));
    // Matching live claim: deleted and taken off the claim.
    assert_eq!(t.done("a", delete(ids[0], Some(c1))).await, Ok(()));
    assert_eq!(seqs(&t.get_claim("a", c1).await.unwrap().page), [2]);
    // Deleting the claim's last message ends the claim.
    assert_eq!(t.done("a", delete(ids[1], Some(c1))).await, Ok(()));
    assert_eq!(t.get_claim("a", c1).await.unwrap_err(), EngineError::ClaimNotFound);
    assert_eq!(t.done("a", delete(ids[3], None)).await, Ok(()));
    assert_eq!(t.done("a", delete(ids[3], None)).await, Ok(()));
    assert_eq!(t.stats("a").await.total, 1);
    // An id of another incarnation names nothing.
    let other = MessageId::new(epoch.wrapping_add(1), 3);
    assert_eq!(t.done("a", delete(other, None)).await, Ok(()));
    assert_eq!(t.stats("a").await.total, 1);
}

async fn bulk_delete(t: &Q) {
    let ids = t.post("a", 4).await;
    let (c1, _) = t.claim("a", 2).await.unwrap();
    let (c2, _) = t.claim("a", 1).await.unwrap();
    let unknown = MessageId::new(ids[0].epoch, 99);
    let many = |ids: Vec<MessageId>, claim_ids| Command::DeleteMessages { ids, claim_ids };

    let r = t.done("a", many(vec![ids[0], ids[2], ids[3]], Some(vec![c1]))).await;
    assert_eq!(r, Err(EngineError::MessageClaimed), "claim_ids that miss one holder delete nothing");
    assert_eq!(t.stats("a").await.total, 4);
    t.done("a", many(vec![ids[0], ids[2], ids[3], unknown], Some(vec![c1, c2]))).await.unwrap();
    assert_eq!(seqs(&t.list("a", list_opts(0)).await), [2]);
    // Without claim_ids, claimed messages go too (Zaqar's behaviour).
    t.done("a", many(vec![ids[1], ids[1]], None)).await.unwrap();
    assert_eq!(t.stats("a").await.total, 0);
    assert_eq!(t.get_claim("a", c1).await.unwrap_err(), EngineError::ClaimNotFound);
    t.done("missing", many(ids.clone(), None)).await.unwrap();
    // Nothing left behind but the queue's own hash.
    assert!(!t.key_exists(&[t.rq.queue_key(t.q("a")), b":log".to_vec()].concat()).await, "no empty stream");
    assert!(t.key_exists(&[t.rq.queue_key(t.q("a")), b":q".to_vec()].concat()).await);
}

async fn pop_takes_claimable_oldest_first(t: &Q) {
    let pop = |limit| Command::Pop { limit };
    match t.reply("a", pop(5)).await.unwrap() {
        Reply::Page(p) => assert!(p.messages.is_empty()),
        other => panic!("{other:?}"),
    }
    let spec = [(Some(300), None), (Some(300), Some(60)), (Some(300), None), (Some(300), None)];
    t.post_spec("a", &spec, CLIENT, StoreQuota::UNLIMITED).await.unwrap();
    t.claim("a", 1).await.unwrap(); // #1
    let Reply::Page(page) = t.reply("a", pop(1)).await.unwrap() else { panic!("not a page") };
    assert_eq!(seqs(&page), [3]);
    assert_eq!(page.body(&page.messages[0]), b"[2]");
    assert_eq!(page.messages[0].claim, None);
    let Reply::Page(page) = t.reply("a", pop(10)).await.unwrap() else { panic!("not a page") };
    assert_eq!(seqs(&page), [4]);
    let Reply::Page(page) = t.reply("a", pop(10)).await.unwrap() else { panic!("not a page") };
    assert!(page.messages.is_empty(), "only claimed and delayed messages are left");
    assert_eq!(t.stats("a").await.total, 2);
}

async fn claims_take_only_free_visible_messages(t: &Q) {
    let out = t.claim_with("missing", params(5)).await;
    assert!(matches!(out.reply, Reply::Claimed(ref o) if o.claim.is_none() && o.dead_letters.is_none()));
    assert!(!t.exists("missing").await, "claims do not create queues");
    let spec = [(Some(300), None), (Some(300), Some(30)), (Some(300), None), (Some(300), None)];
    t.post_spec("a", &spec, CLIENT, StoreQuota::UNLIMITED).await.unwrap();
    let (c1, got) = t.claim("a", 2).await.unwrap();
    assert_eq!(got, [1, 3]);
    assert_eq!(c1.seq, 1);
    assert_eq!(c1.to_string().len(), 32);
    let (c2, got) = t.claim("a", 5).await.unwrap();
    assert_eq!((c2.seq, got), (2, vec![4]));
    let none = t.claim_with("a", params(5)).await;
    assert!(matches!(none.reply, Reply::Claimed(ref o) if o.claim.is_none()), "nothing claimable: no claim");
    let next = none.next_change_in_ms.expect("the delay of #2 ends");
    assert!(next > 0 && next <= 30_000, "{next}");
    // Releasing makes messages claimable at once.
    t.done("a", Command::ReleaseClaim { id: c1 }).await.unwrap();
    let (c3, got) = t.claim("a", 5).await.unwrap();
    assert_eq!(got, [1, 3]);
    assert_ne!(c3, c1, "claim ids are not reused");
    let stats = t.stats("a").await;
    assert_eq!((stats.claimed, stats.free, stats.total), (3, 1, 4), "delayed messages count as free");
}

async fn get_renew_release_claims(t: &Q) {
    let ids = t.post("a", 2).await;
    let (cid, _) = t.claim("a", 1).await.unwrap();
    let view = t.get_claim("a", cid).await.unwrap();
    assert_eq!((view.id, view.ttl_s), (cid, 60));
    assert!(view.age_s <= 5);
    assert_eq!(seqs(&view.page), [1]);
    assert_eq!(view.page.messages[0].claim_count, 1);
    assert_eq!(view.page.messages[0].claim, Some(cid));
    t.done("a", Command::RenewClaim { id: cid, ttl_s: 200, grace_s: 100 }).await.unwrap();
    let view = t.get_claim("a", cid).await.unwrap();
    assert_eq!(view.ttl_s, 200);
    assert_eq!(view.page.messages[0].claim_count, 1, "renewal is not a delivery");

    let unknown = ClaimId::new(9, cid.secret);
    let guessed = ClaimId::new(cid.seq, cid.secret.wrapping_add(1));
    for id in [unknown, guessed] {
        assert_eq!(t.get_claim("a", id).await.unwrap_err(), EngineError::ClaimNotFound);
        let renew = Command::RenewClaim { id, ttl_s: 60, grace_s: 60 };
        assert_eq!(t.done("a", renew).await, Err(EngineError::ClaimNotFound));
        assert_eq!(t.done("a", Command::ReleaseClaim { id }).await, Ok(()));
    }
    assert!(t.get_claim("a", cid).await.is_ok(), "a wrong secret released nothing");
    assert_eq!(t.get_claim("missing", cid).await.unwrap_err(), EngineError::ClaimNotFound);
    assert_eq!(t.done("missing", Command::ReleaseClaim { id: cid }).await, Ok(()));

    t.done("a", Command::ReleaseClaim { id: cid }).await.unwrap();
    assert_eq!(t.get_claim("a", cid).await.unwrap_err(), EngineError::ClaimNotFound);
    let stats = t.stats("a").await;
    assert_eq!((stats.claimed, stats.free), (0, 2));
    let (_, got) = t.claim("a", 2).await.unwrap();
    assert_eq!(got, [1, 2]);
    let page = t.get("a", &ids).await;
    assert_eq!(page.messages.iter().map(|m| m.claim_count).collect::<Vec<_>>(), [2, 1], "delivery counts");
}

async fn expiry_of_messages_and_claims(t: &Q) {
    let limit = Duration::from_secs(20);
    // A message of 1 s is gone once its time is up.
    let ids = t.post_spec("a", &[(Some(1), None), (Some(300), None)], CLIENT, StoreQuota::UNLIMITED).await.unwrap();
    eventually("the 1 s message expires", limit, || async { seqs(&t.list("a", list_opts(0)).await) == [2] }).await;
    assert_eq!(seqs(&t.get("a", &ids).await), [2]);

    // A claim of 1 s ends by itself; its message is claimable again, and counted as delivered.
    let short = ClaimParams { ttl_s: 1, grace_s: 0, limit: 5, secret: 77 };
    let Reply::Claimed(out) = t.claim_with("a", short).await.reply else { panic!("not a claim") };
    let (first, _) = out.claim.expect("claims #2");
    eventually("the 1 s claim expires", limit, || async {
        matches!(t.get_claim("a", first).await, Err(EngineError::ClaimNotFound))
    })
    .await;
    let (_, got) = t.claim("a", 5).await.expect("#2 is free again");
    assert_eq!(got, [2]);
    assert_eq!(t.get("a", &ids[1..]).await.messages[0].claim_count, 2);

    // A claim keeps a short-lived message alive until claim expiry + grace, without rewriting
    // its visible ttl.
    let ids = t.post_spec("b", &[(Some(1), None)], CLIENT, StoreQuota::UNLIMITED).await.unwrap();
    let long = ClaimParams { ttl_s: 4, grace_s: 4, limit: 5, secret: 78 };
    let Reply::Claimed(out) = t.claim_with("b", long).await.reply else { panic!("not a claim") };
    let (cid, page) = out.claim.expect("claims the message");
    assert_eq!(page.messages[0].ttl_s, 1, "the visible ttl stays as posted");
    sleep_ms(1500).await;
    let page = t.get("b", &ids).await;
    assert_eq!(seqs(&page), [1], "alive past its own ttl while claimed");
    assert_eq!(page.messages[0].claim, Some(cid));
    eventually("the message goes after claim + grace", limit, || async { t.get("b", &ids).await.messages.is_empty() })
        .await;
    assert_eq!(t.stats("b").await.total, 0);
}

async fn stats_purge_and_empty_queues(t: &Q) {
    assert_eq!(t.stats("a").await, Default::default());
    let spec = [(Some(300), None), (Some(300), None), (Some(300), Some(30)), (Some(300), None)];
    let ids = t.post_spec("a", &spec, CLIENT, StoreQuota::UNLIMITED).await.unwrap();
    t.claim("a", 1).await.unwrap();
    let s = t.stats("a").await;
    assert_eq!((s.claimed, s.free, s.total), (1, 3, 4));
    assert_eq!(s.oldest.as_ref().map(|m| m.id), Some(ids[0]));
    assert_eq!(s.newest.as_ref().map(|m| m.id), Some(ids[3]));
    t.done("a", Command::DeleteMessage { id: ids[3], claim: None }).await.unwrap();
    assert_eq!(t.stats("a").await.newest.map(|m| m.id), Some(ids[2]));

    t.create("p", Some(meta(json!({"k": 1})))).await.unwrap();
    t.post("p", 3).await;
    let (cid, _) = t.claim("p", 2).await.unwrap();
    t.done("p", Command::Purge).await.unwrap();
    assert_eq!(t.stats("p").await.total, 0);
    assert_eq!(t.get_claim("p", cid).await.unwrap_err(), EngineError::ClaimNotFound);
    assert_eq!(t.metadata("p").await, Some(meta(json!({"k": 1}))));
    assert_eq!(t.post("p", 1).await[0].seq, 4, "markers are not reused after a purge");
    t.done("nothing", Command::Purge).await.unwrap();
    assert!(!t.exists("nothing").await);
}

async fn delete_and_recreate_gives_a_new_epoch(t: &Q) {
    let old = t.post("a", 3).await;
    t.done("a", Command::DeleteQueue).await.unwrap();
    assert!(!t.exists("a").await);
    assert!(t.get("a", &old).await.messages.is_empty());
    t.done("a", Command::DeleteQueue).await.unwrap();
    let mut epochs = vec![old[0].epoch];
    for _ in 0..3 {
        let new = t.post("a", 1).await;
        assert_eq!(new[0].seq, 1, "markers restart per incarnation");
        assert!(!epochs.contains(&new[0].epoch), "a new epoch for every incarnation");
        assert!(t.get("a", &old).await.messages.is_empty(), "old ids name nothing now");
        assert_eq!(t.get("a", &new).await.messages.len(), 1);
        epochs.push(new[0].epoch);
        t.done("a", Command::DeleteQueue).await.unwrap();
    }
    // Recreated explicitly: also a new epoch, and an empty queue.
    assert!(t.create("a", None).await.unwrap());
    assert_eq!(t.stats("a").await.total, 0);
    assert!(!t.queues(queue_opts()).await.queues.is_empty());
}

async fn dead_letters_move_exactly_once(t: &Q) {
    let m = json!({"_max_claim_count": 2, "_dead_letter_queue": "dlq", "_dead_letter_queue_messages_ttl": 120});
    t.create("a", Some(meta(m))).await.unwrap();
    t.post_spec("a", &[(Some(3000), None), (Some(3000), None)], CLIENT, StoreQuota::UNLIMITED).await.unwrap();
    for round in 1..=2 {
        let Reply::Claimed(out) = t.claim_with("a", params(1)).await.reply else { panic!("not a claim") };
        let (cid, page) = out.claim.unwrap();
        assert_eq!((seqs(&page), page.messages[0].claim_count), (vec![1], round));
        t.done("a", Command::ReleaseClaim { id: cid }).await.unwrap();
    }
    // Third attempt: #1 moves out; #2 is not taken because #1 used the limit.
    assert!(!t.exists("dlq").await);
    assert_eq!(t.claim("a", 1).await, None);
    let moved = t.list("dlq", list_opts(0)).await;
    assert_eq!(moved.messages.len(), 1, "moved exactly once");
    assert_eq!(moved.messages[0].ttl_s, 120);
    assert_eq!(moved.body(&moved.messages[0]), b"[0]");
    assert_eq!(seqs(&t.list("a", list_opts(0)).await), [2]);
    assert!(t.exists("dlq").await, "the DLQ was created by the move");
    assert!(names(&t.queues(queue_opts()).await).contains(&"dlq"), "and listed");
    assert_eq!(t.claim("a", 5).await.map(|c| c.1), Some(vec![2]));

    // An interrupted move (the claim ran, the DLQ post did not) is finished by the next claim.
    let m = json!({"_max_claim_count": 0, "_dead_letter_queue": "dlq2"});
    t.create("b", Some(meta(m))).await.unwrap();
    t.post_spec("b", &[(Some(700), None)], CLIENT, StoreQuota::UNLIMITED).await.unwrap();
    let key = t.rq.queue_key(t.q("b"));
    let raw = t.cluster.fcall("mqv1_claim", &[&key], &[b"60", b"60", b"5", b"00000000000000ab"], Kind::Write).await;
    assert!(matches!(raw, Ok(Value::Array(_))), "{raw:?}");
    assert!(!t.exists("dlq2").await, "only the first step ran");
    assert_eq!(t.stats("b").await.total, 0, "the letter left the queue");
    // A DLQ post that landed but whose acknowledgement was lost: the retry must not double it.
    let Ok(Value::Array(items)) = raw else { unreachable!() };
    let epoch = match items.get(1) {
        Some(Value::Int(e)) => *e as u32,
        other => panic!("{other:?}"),
    };
    let source_id = MessageId::new(epoch, 1).to_string();
    let dlq2 = t.rq.queue_key(t.q("dlq2"));
    t.cluster.fcall("mqv1_index_add", &[&t.rq.index_key(t.project)], &[b"dlq2"], Kind::Write).await.unwrap();
    let args: [&[u8]; 7] = [b"2", b"5", b"b", b"1", source_id.as_bytes(), b"700", b"[0]"];
    let posted = t.cluster.fcall("mqv1_post_dead", &[&dlq2], &args, Kind::Write).await;
    assert!(matches!(posted, Ok(Value::Array(_))), "{posted:?}");
    assert_eq!(t.claim("b", 5).await, None);
    let moved = t.list("dlq2", list_opts(0)).await;
    assert_eq!(moved.messages.len(), 1, "the retried move did not double the letter");
    assert_eq!(moved.messages[0].ttl_s, 700, "the letter keeps its ttl without a DLQ ttl");
    assert_eq!(t.claim("b", 5).await, None);
    assert_eq!(t.list("dlq2", list_opts(0)).await.messages.len(), 1);
    assert!(!t.key_exists(&[key, b":dead".to_vec()].concat()).await, "the move was acknowledged");
}

async fn listing_queues(t: &Q) {
    for (name, m) in [
        ("b", json!({"node": 34})),
        ("a", json!({"node": 1.0})),
        ("C", json!({})),
        ("ab", json!({"node": "34"})),
        ("b2", json!({"node": 34, "x": true})),
    ] {
        t.create(name, Some(meta(m))).await.unwrap();
    }
    let other = Q { rq: t.rq.clone(), cluster: t.cluster.clone(), project: "listing-other" };
    other.create("aa", None).await.unwrap();
    // A name left in the index by an interrupted create is not listed.
    t.cluster.fcall("mqv1_index_add", &[&t.rq.index_key(t.project)], &[b"ghost"], Kind::Write).await.unwrap();

    let page = t.queues(queue_opts()).await;
    assert_eq!(names(&page), ["C", "a", "ab", "b", "b2"]);
    assert_eq!(page.count, None);
    assert!(page.queues[0].metadata.is_none());
    let page = t.queues(ListQueues { after: Some("a".into()), limit: 2, with_count: true, ..queue_opts() }).await;
    assert_eq!(names(&page), ["ab", "b"]);
    let page = t.queues(ListQueues { name_contains: Some("b".into()), with_count: true, ..queue_opts() }).await;
    assert_eq!(names(&page), ["ab", "b", "b2"]);
    assert_eq!(page.count, Some(3));
    let by_number = ListQueues { metadata_filters: vec![("node".into(), json!(34))], ..queue_opts() };
    assert_eq!(names(&t.queues(by_number).await), ["b", "b2"]);
    let by_one = ListQueues { metadata_filters: vec![("node".into(), json!(1))], with_count: true, ..queue_opts() };
    let page = t.queues(by_one).await;
    assert_eq!((names(&page), page.count), (vec!["a"], Some(1)));
    let by_string = ListQueues { metadata_filters: vec![("node".into(), json!("34"))], ..queue_opts() };
    assert_eq!(names(&t.queues(by_string).await), ["ab"]);
    let scoped = ListQueues { visible: Some("b*".into()), limit: 1, with_count: true, ..queue_opts() };
    let page = t.queues(scoped.clone()).await;
    assert_eq!((names(&page), page.count), (vec!["b"], Some(2)));
    assert_eq!(names(&t.queues(ListQueues { after: Some("b".into()), ..scoped }).await), ["b2"]);
    let detailed = t.queues(ListQueues { detailed: true, limit: 2, ..queue_opts() }).await;
    assert_eq!(detailed.queues[0].metadata, Some(Metadata::default()));
    assert_eq!(detailed.queues[1].metadata, Some(meta(json!({"node": 1.0}))));
    let nobody = Q { rq: t.rq.clone(), cluster: t.cluster.clone(), project: "nobody" };
    let none = nobody.queues(ListQueues { with_count: true, ..queue_opts() }).await;
    assert_eq!((none.queues.len(), none.count), (0, Some(0)));

    // Pages through more names than one step of the index reads.
    let many = Q { rq: t.rq.clone(), cluster: t.cluster.clone(), project: "listing-many" };
    for i in 0..300 {
        many.create(&format!("q{i:03}"), None).await.unwrap();
    }
    many.done("q001", Command::DeleteQueue).await.unwrap();
    let page = many.queues(ListQueues { limit: 1000, with_count: true, ..queue_opts() }).await;
    assert_eq!(page.queues.len(), 299);
    assert_eq!(page.count, Some(299));
    assert!(!names(&page).contains(&"q001"), "deleted queues leave the index");
    let page = many.queues(ListQueues { after: Some("q297".into()), ..queue_opts() }).await;
    assert_eq!(names(&page), ["q298", "q299"]);
    let filtered = ListQueues { name_contains: Some("9".into()), with_count: true, limit: 3, ..queue_opts() };
    let page = many.queues(filtered).await;
    assert_eq!(names(&page), ["q009", "q019", "q029"]);
    assert_eq!(page.count, Some(57), "names 0..300 with a 9: 3 × 19");
    match many.reply("", Command::ProjectVolume).await.unwrap() {
        Reply::Volume(v) => assert_eq!(v.queues, 299),
        other => panic!("{other:?}"),
    }
}

fn quota(values: [u64; marconi::limits::LIMITS]) -> StoreQuota {
    LimitSet::new(values).store_quota(true)
}

async fn quotas(t: &Q) {
    let per_queue = quota([0, 2, 0, 0, 0, 0, 0, 0]);
    let spec = |n| vec![(Some(300), None); n];
    t.post_spec("a", &spec(2), CLIENT, per_queue).await.unwrap();
    let refused = t.post_spec("a", &spec(1), CLIENT, per_queue).await.unwrap_err();
    assert_eq!(refused, EngineError::Refused(Refused::Quota { limit: Limit::MessagesPerQueue, value: 2 }));
    let (cid, page) = match t.claim_with("a", params(1)).await.reply {
        Reply::Claimed(out) => out.claim.unwrap(),
        other => panic!("{other:?}"),
    };
    t.done("a", Command::DeleteMessage { id: page.messages[0].id, claim: Some(cid) }).await.unwrap();
    t.post_spec("a", &spec(1), CLIENT, per_queue).await.unwrap();

    let bytes = quota([0, 0, 9, 0, 0, 0, 0, 0]);
    t.post_spec("b", &spec(3), CLIENT, bytes).await.unwrap();
    let refused = t.post_spec("b", &spec(1), CLIENT, bytes).await.unwrap_err();
    assert_eq!(refused, EngineError::Refused(Refused::Quota { limit: Limit::BytesPerQueue, value: 9 }));
    t.done("b", Command::Purge).await.unwrap();
    t.post_spec("b", &spec(3), CLIENT, bytes).await.unwrap();

    // Without its quota's leave, a post does not make its queue.
    let counted = StoreQuota { may_create_queue: false, ..bytes };
    assert_eq!(t.post_spec("new", &spec(1), CLIENT, counted).await.unwrap_err(), EngineError::QueueNotFound);
    assert!(!t.exists("new").await);

    // The project's quota counts its other queues (as summed at most a second ago).
    // a holds 2 and b 3: 5 elsewhere in the project.
    let per_project = quota([0, 0, 0, 7, 0, 0, 0, 0]);
    let refused = t.post_spec("c", &spec(3), CLIENT, per_project).await.unwrap_err();
    assert_eq!(refused, EngineError::Refused(Refused::Quota { limit: Limit::MessagesPerProject, value: 7 }));
    t.post_spec("c", &spec(2), CLIENT, per_project).await.unwrap();
}

async fn revocations_and_other_commands(t: &Q) {
    let revoke = |revoked_ms, until_ms| Command::Revoke { revoked: Revoked { revoked_ms, until_ms }, max: 2 };
    let far = 4_000_000_000_000;
    t.done("agent", revoke(100, far)).await.unwrap();
    t.done("agent", revoke(50, far + 1)).await.unwrap();
    let other = Q { rq: t.rq.clone(), cluster: t.cluster.clone(), project: "rev-other" };
    other.done("agent", revoke(7, far)).await.unwrap();
    let full = t.done("third", revoke(1, far)).await;
    assert!(matches!(full, Err(EngineError::Conflict(text)) if text.contains("2 revocations")));
    t.done("agent", revoke(300, far)).await.unwrap();
    let Reply::Revocations(mut all) = t.reply("", Command::Revocations).await.unwrap() else {
        panic!("not revocations")
    };
    all.sort_by(|a, b| a.project.cmp(&b.project));
    let summary: Vec<(&str, &str, u64, u64)> = all
        .iter()
        .map(|r| (r.project.as_str(), r.subject.as_str(), r.revoked.revoked_ms, r.revoked.until_ms))
        .collect();
    assert_eq!(summary, [("rev", "agent", 300, far + 1), ("rev-other", "agent", 7, far)]);

    for command in [Command::Volume, Command::Metrics, Command::InstallRevocations(Vec::new())] {
        assert!(matches!(t.exec("", command).await, Err(EngineError::Invalid(_))));
    }
    let channel = t.rq.wake_channel(t.q("a"));
    assert!(channel.starts_with(&t.rq.queue_key(t.q("a"))), "the wake channel shares the queue's hash tag");
}

async fn idle_queues_are_swept(t: &Q) {
    // A message of 1 s in a queue nobody calls again: only the background sweep frees it.
    t.post_spec("quiet", &[(Some(1), None)], CLIENT, StoreQuota::UNLIMITED).await.unwrap();
    let log = [t.rq.queue_key(t.q("quiet")), b":log".to_vec()].concat();
    assert!(t.key_exists(&log).await, "the message is stored");
    sleep_ms(1500).await;
    assert!(t.key_exists(&log).await, "nothing has touched the queue since its message expired");
    assert_eq!(t.rq.swept_volume().queues, 0, "no pass has completed yet");
    let mut swept = 0;
    for _ in 0..100 {
        swept += t.rq.sweep_step(100).await.expect("sweeps");
        if t.rq.swept_volume().queues > 0 {
            break;
        }
    }
    let volume = t.rq.swept_volume();
    assert!(swept >= 1 && volume.queues >= 1, "a pass swept the quiet queue among others ({swept}, {volume:?})");
    assert!(volume.messages >= 1, "the other scenarios' queues still hold messages: {volume:?}");
    assert!(!t.key_exists(&log).await, "the expired message, and so the stream, is gone");
    assert!(t.exists("quiet").await, "the queue itself stays");
}
