//! The Redis Cluster client (`marconi::redis`) against real clusters of 3 masters × 1 replica on
//! loopback: routing by slot, group WAIT (many calls share a round), a paused replica failing
//! only its master's writes, failover, MOVED after a reshard, sharded pub/sub from a function,
//! and against fake nodes: a malformed reply and a node that never answers.
//!
//! The tests that start a cluster run one at a time (each forms its own: they change it).

#[path = "support/executor.rs"]
mod executor;
#[path = "support/redis_cluster.rs"]
mod redis_cluster;

use std::future::Future;
use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::Duration;

use executor::run;
use marconi::redis::{key_slot, Ack, Cluster, Kind, Options, RedisError, Value};
use redis_cluster::RedisCluster;

/// Clusters take seconds to form and load two cores: one at a time.
static ONE_CLUSTER: Mutex<()> = Mutex::new(());

const LIBRARY: &str = r#"#!lua name=marconi_test
local function incr(keys, args)
  return redis.call('INCR', keys[1])
end
local function get(keys, args)
  return redis.call('GET', keys[1])
end
local function fail(keys, args)
  return redis.error_reply('NOTFOUND nothing at ' .. keys[1])
end
local function echo(keys, args)
  return args
end
local function publish(keys, args)
  redis.call('INCR', keys[1])
  return redis.call('SPUBLISH', keys[1], args[1])
end
redis.register_function('t_incr', incr)
redis.register_function{function_name = 't_get', callback = get, flags = {'no-writes'}}
redis.register_function('t_fail', fail)
redis.register_function{function_name = 't_echo', callback = echo, flags = {'no-writes'}}
redis.register_function('t_publish', publish)
"#;

fn options(seeds: Vec<String>) -> Options {
    Options {
        nodes: seeds,
        ack: Ack::Replicas,
        ack_replicas: 1,
        ack_timeout_ms: 300,
        read_fence: true,
        command_timeout_ms: 2000,
        max_batch: 256,
        library: LIBRARY,
        library_name: "marconi_test",
    }
}

/// Increments `key` until a write to its master is acknowledged again (100 tries, 100 ms apart):
/// only "not acknowledged" may come back meanwhile.
async fn incr_until_acknowledged(c: &Cluster, key: &str) {
    for _ in 0..100 {
        match incr(c, key).await {
            Ok(Value::Int(_)) => return,
            Err(RedisError::Unavailable(_)) => glommio::timer::sleep(Duration::from_millis(100)).await,
            other => panic!("{other:?}"),
        }
    }
    panic!("writes to {key} were never acknowledged again");
}

/// Fails the test instead of hanging it.
async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("timed out: {what}"))
}

/// `n` keys, each with its own hash tag, that the fixture says `master` serves.
fn keys_on(cluster: &RedisCluster, master: usize, n: usize, prefix: &str) -> Vec<String> {
    (0..).map(|i| format!("{{{prefix}{i}}}:k")).filter(|k| cluster.master_of_key(k) == master).take(n).collect()
}

async fn incr(c: &Cluster, key: &str) -> Result<Value, RedisError> {
    c.fcall("t_incr", &[key.as_bytes()], &[], Kind::Write).await
}

#[test]
fn calls_route_by_slot_and_share_rounds() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = RedisCluster::start(3, 1);
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    let per_master: Vec<Vec<String>> = masters.iter().map(|&m| keys_on(&cluster, m, 4, "route")).collect();
    let seeds = cluster.seed_list();
    let (direct, expected) = {
        let per_master = per_master.clone();
        let masters = masters.clone();
        let addrs: Vec<String> = masters.iter().map(|&m| cluster.addr(m)).collect();
        run(move || async move {
            let c = Cluster::connect(options(seeds)).await.expect("connects");
            assert_eq!(c.masters().len(), 3);
            assert_eq!(c.stats().library_loads, 3, "the library went to every master");
            for (keys, addr) in per_master.iter().zip(&addrs) {
                for key in keys {
                    assert_eq!(c.master_of_key(key.as_bytes()).as_deref(), Some(addr.as_str()));
                    assert_eq!(incr(&c, key).await, Ok(Value::Int(1)));
                    let read = c.fcall("t_get", &[key.as_bytes()], &[], Kind::Read).await;
                    assert_eq!(read, Ok(Value::Bulk(b"1".to_vec())));
                }
            }
            // A function's own error is a value, not a RedisError.
            let key = per_master[0][0].as_bytes();
            match c.fcall("t_fail", &[key], &[], Kind::Write).await {
                Ok(Value::Error(e)) => assert!(e.starts_with("NOTFOUND nothing at"), "{e}"),
                other => panic!("{other:?}"),
            }
            let echoed = c.fcall("t_echo", &[key], &[b"a", b"", b"\r\n"], Kind::Read).await;
            assert_eq!(
                echoed,
                Ok(Value::Array(vec![Value::Bulk(b"a".to_vec()), Value::Bulk(vec![]), Value::Bulk(b"\r\n".to_vec())]))
            );

            // Group WAIT: 600 concurrent writes over the three masters share rounds.
            let before = c.stats();
            let all: Vec<String> = (0..600).map(|i| format!("{{many{}}}:k", i % 60)).collect();
            let tasks: Vec<_> = all
                .iter()
                .cloned()
                .map(|key| {
                    let c = c.clone();
                    glommio::spawn_local(async move { incr(&c, &key).await })
                })
                .collect();
            for task in tasks {
                assert!(matches!(task.await, Ok(Value::Int(_))), "every concurrent write succeeds");
            }
            let after = c.stats();
            let (calls, batches) = (after.calls - before.calls, after.batches - before.batches);
            assert_eq!(calls, 600);
            assert!(batches < calls / 4, "{calls} calls went out in {batches} rounds: they did not share rounds");
            assert!(after.wait_ok > before.wait_ok, "rounds with writes were acknowledged by WAIT");
            assert_eq!(after.batched_commands - before.batched_commands, 600);

            // Admin commands reach every master, and every node.
            let pongs = c.on_every_master(&[b"PING"]).await.expect("every master answers");
            assert_eq!(pongs.len(), 3);
            assert!(pongs.iter().all(|(_, v)| *v == Value::Simple("PONG".into())), "{pongs:?}");
            let roles = c.on_every_node(&[b"ROLE"]).await.expect("every node answers");
            assert_eq!(roles.len(), 6);
            let direct: Vec<(String, String)> = per_master
                .iter()
                .flatten()
                .map(|k| (k.clone(), c.master_of_key(k.as_bytes()).unwrap_or_default()))
                .collect();
            (direct, c.stats().latency.sum_us)
        })
    };
    assert!(expected > 0, "latency was recorded");
    // The writes landed on the masters the fixture says serve their slots.
    for (key, addr) in direct {
        let id = cluster.addrs().iter().position(|a| *a == addr).expect("a fixture node");
        assert_eq!(cluster.cli(id, &["GET", &key]).trim(), "1", "{key} on {addr}");
    }

    // A master that lost its functions gets them back on "Function not found", and the call runs.
    let master = masters[1];
    assert_eq!(cluster.cli(master, &["FUNCTION", "FLUSH"]).trim(), "OK");
    let key = per_master[1][0].clone();
    let seeds = cluster.seed_list();
    run(move || async move {
        let c = Cluster::connect(Options { library: LIBRARY, ..options(seeds) }).await.expect("connects");
        assert_eq!(incr(&c, &key).await, Ok(Value::Int(2)));
        let flush = c.on_node(&c.master_of_key(key.as_bytes()).unwrap_or_default(), &[b"FUNCTION", b"FLUSH"]).await;
        assert_eq!(flush, Ok(Value::Simple("OK".into())));
        let loads = c.stats().library_loads;
        assert_eq!(incr(&c, &key).await, Ok(Value::Int(3)), "reloaded and retried");
        assert_eq!(c.stats().library_loads, loads + 1);
    });
}

#[test]
fn a_paused_replica_fails_only_its_masters_writes() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = RedisCluster::start(3, 1);
    let masters = cluster.masters();
    let slow = masters[0];
    let replica = cluster.replicas_of(slow)[0];
    let slow_keys = keys_on(&cluster, slow, 3, "slow");
    let fine_keys: Vec<String> = masters[1..].iter().flat_map(|&m| keys_on(&cluster, m, 3, "fine")).collect();
    let seeds = cluster.seed_list();
    cluster.pause(replica);
    let (slow2, fine2) = (slow_keys.clone(), fine_keys.clone());
    let seeds2 = seeds.clone();
    run(move || async move {
        let c = Cluster::connect(options(seeds2.clone())).await.expect("connects");
        for key in &slow2 {
            match within("a write behind a paused replica", Duration::from_secs(10), incr(&c, key)).await {
                Err(RedisError::Unavailable(m)) => assert!(m.contains("not acknowledged"), "{m}"),
                other => panic!("{key}: {other:?}"),
            }
            let read = c.fcall("t_get", &[key.as_bytes()], &[], Kind::Read).await;
            assert!(
                matches!(read, Err(RedisError::Unavailable(_))),
                "a fenced read is not acknowledged either: {read:?}"
            );
        }
        for key in &fine2 {
            assert_eq!(incr(&c, key).await, Ok(Value::Int(1)), "{key} on another master does not notice");
        }
        let stats = c.stats();
        assert!(stats.wait_short >= 3, "{stats:?}");
        // Without fence and WAIT, the same master answers at once.
        let fast = Cluster::connect(Options { ack: Ack::Async, read_fence: false, ..options(seeds2) })
            .await
            .expect("connects");
        for key in &slow2 {
            assert!(matches!(incr(&fast, key).await, Ok(Value::Int(_))));
        }
    });
    cluster.resume(replica);
    run(move || async move {
        let c = Cluster::connect(options(seeds)).await.expect("connects");
        let key = &slow_keys[0];
        // The replica catches up after SIGCONT: writes are acknowledged again.
        incr_until_acknowledged(&c, key).await;
    });
}

#[test]
fn failover_moves_calls_to_the_promoted_replica() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = RedisCluster::start(3, 1);
    let masters = cluster.masters();
    let doomed = masters[0];
    let heir = cluster.replicas_of(doomed)[0];
    let doomed_key = keys_on(&cluster, doomed, 1, "doomed").remove(0);
    let other_keys: Vec<String> = masters[1..].iter().flat_map(|&m| keys_on(&cluster, m, 2, "other")).collect();
    let seeds = cluster.seed_list();

    // Phase 1: the master hangs. The per-call deadline holds; other masters keep answering.
    let cluster_ref = std::sync::Arc::new(Mutex::new(cluster));
    let handle = cluster_ref.clone();
    let (dk, ok2) = (doomed_key.clone(), other_keys.clone());
    let seeds1 = seeds.clone();
    run(move || async move {
        let quick = Options { command_timeout_ms: 300, ack: Ack::Async, read_fence: false, ..options(seeds1) };
        let c = Cluster::connect(quick).await.expect("connects");
        assert_eq!(incr(&c, &dk).await, Ok(Value::Int(1)));
        handle.lock().unwrap().pause(doomed);
        let hung = within("a call to a hung master", Duration::from_secs(10), incr(&c, &dk)).await;
        assert!(matches!(hung, Err(RedisError::Unavailable(_))), "{hung:?}");
        for key in &ok2 {
            assert_eq!(incr(&c, key).await, Ok(Value::Int(1)), "{key}: other masters do not notice");
        }
        // Phase 2: it dies; Redis promotes its replica; calls find the new master.
        {
            let mut cluster = handle.lock().unwrap();
            cluster.kill(doomed);
            cluster.wait_until_master(heir);
        }
        let mut tries = 0;
        loop {
            match incr(&c, &dk).await {
                Ok(Value::Int(n)) => {
                    assert!(n >= 1, "{n}");
                    break;
                }
                Err(RedisError::Unavailable(_)) if tries < 200 => tries += 1,
                other => panic!("{other:?}"),
            }
            for key in &ok2 {
                assert!(matches!(incr(&c, key).await, Ok(Value::Int(_))), "{key}: other masters do not notice");
            }
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(c.master_of_key(dk.as_bytes()), Some(handle.lock().unwrap().addr(heir)));
        assert!(c.stats().topology_refreshes >= 2, "the client refreshed its slot map");
    });

    // Phase 3: the old master comes back as a replica of the new one: acknowledged writes resume.
    {
        let mut cluster = cluster_ref.lock().unwrap();
        cluster.restart(doomed);
        cluster.wait_until_healthy();
        assert_eq!(cluster.replicas_of(heir), vec![doomed]);
    }
    run(move || async move {
        let c = Cluster::connect(options(seeds)).await.expect("connects");
        incr_until_acknowledged(&c, &doomed_key).await;
    });
}

#[test]
fn moved_after_a_reshard_is_followed() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = RedisCluster::start(3, 1);
    let (from, to) = (cluster.master_of_slot(0), cluster.master_of_slot(16383));
    // Keys in the lowest slots of the master of slot 0: the reshard of 200 slots moves them.
    let moving: Vec<String> =
        (0..).map(|i| format!("{{mv{i}}}:k")).filter(|k| key_slot(k.as_bytes()) < 100).take(3).collect();
    for key in &moving {
        assert_eq!(cluster.master_of_key(key), from);
    }
    let seeds = cluster.seed_list();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn({
        let moving = moving.clone();
        move || {
            run(move || async move {
                let c = Cluster::connect(options(seeds)).await.expect("connects");
                for key in &moving {
                    assert_eq!(incr(&c, key).await, Ok(Value::Int(1)));
                }
                // The reshard happens now, while the client holds the old slot map.
                done_tx.send(()).expect("test thread waits");
                while rx.try_recv().is_err() {
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                }
                let before = c.stats();
                for key in &moving {
                    assert_eq!(incr(&c, key).await, Ok(Value::Int(2)), "{key} followed its slot");
                }
                let after = c.stats();
                assert!(after.moved > before.moved, "the old master answered MOVED: {after:?}");
                assert_eq!(after.unavailable, 0);
                c.master_of_key(moving[0].as_bytes())
            })
        }
    });
    done_rx.recv().expect("the client wrote");
    cluster.reshard(200);
    for key in &moving {
        assert_eq!(cluster.master_of_key(key), to, "the reshard moved {key}");
    }
    tx.send(()).expect("client waits");
    let routed = client.join().expect("client passes");
    assert_eq!(routed, Some(cluster.addr(to)));
}

#[test]
fn a_subscription_hears_spublish_from_a_function() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = RedisCluster::start(3, 1);
    let masters = cluster.masters();
    let channels: Vec<String> = masters.iter().map(|&m| keys_on(&cluster, m, 1, "chan").remove(0)).collect();
    let seeds = cluster.seed_list();
    run(move || async move {
        let c = Cluster::connect(options(seeds)).await.expect("connects");
        let mut subs: Vec<_> = channels.iter().map(|ch| c.subscribe(ch.as_bytes())).collect();
        let twin = c.subscribe(channels[0].as_bytes());
        assert_eq!(c.stats().subscriptions, 3, "two subscribers of one channel share it");
        for sub in &subs {
            within("SSUBSCRIBE confirmed", Duration::from_secs(10), sub.ready()).await;
        }
        for (i, ch) in channels.iter().enumerate() {
            let published = c.fcall("t_publish", &[ch.as_bytes()], &[b"hello"], Kind::Write).await;
            assert_eq!(
                published,
                Ok(Value::Int(1)),
                "one connection per node holds the channel, however many subscribers"
            );
            within("the message", Duration::from_secs(10), subs[i].next()).await;
        }
        assert_eq!(c.stats().pubsub_messages, 3);
        drop(twin);
        drop(subs.remove(0));
        assert_eq!(c.stats().subscriptions, 2, "the last subscriber's drop unsubscribes");
        // A message to a channel nobody holds wakes nothing; one to a held channel still does.
        assert!(c.fcall("t_publish", &[channels[0].as_bytes()], &[b"x"], Kind::Write).await.is_ok());
        assert!(c.fcall("t_publish", &[channels[1].as_bytes()], &[b"x"], Kind::Write).await.is_ok());
        within("the second message", Duration::from_secs(10), subs[0].next()).await;
        let unsubscribed = within("SUNSUBSCRIBE", Duration::from_secs(10), async {
            loop {
                let numsub = c
                    .on_every_master(&[b"PUBSUB", b"SHARDNUMSUB", channels[0].as_bytes()])
                    .await
                    .expect("masters answer");
                // The master of the slot counts its subscribers; the others may redirect.
                let counts: Vec<i64> =
                    numsub.into_iter().filter_map(|(_, v)| v.as_array().and_then(|a| a.get(1)?.as_int())).collect();
                if counts.iter().all(|&n| n == 0) {
                    break counts.len();
                }
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(unsubscribed >= 1, "the channel's master answered");
    });
}

/// A fake node of a Redis before 7.0: refuses `CLUSTER SHARDS`, answers `CLUSTER SLOTS` with a
/// map pointing at itself, then answers the next command with `reply` (or nothing, holding the
/// connection open, when `None`).
fn fake_node(reply: Option<&'static [u8]>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let slots = format!("*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:{port}\r\n$2\r\nid\r\n");
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                let asked = String::from_utf8_lossy(&buf[..n]).to_uppercase();
                if n == 0 {
                    break;
                } else if asked.contains("SHARDS") {
                    let _ = stream.write_all(b"-ERR unknown subcommand 'SHARDS'. Try CLUSTER HELP.\r\n");
                } else if asked.contains("SLOTS") {
                    let _ = stream.write_all(slots.as_bytes());
                } else {
                    if let Some(reply) = reply {
                        let _ = stream.write_all(reply);
                    }
                    held.push(stream);
                    break;
                }
            }
        }
    });
    format!("127.0.0.1:{port}")
}

#[test]
fn a_malformed_reply_fails_the_call_with_protocol() {
    let seed = fake_node(Some(b"*1\r\n?garbage\r\n"));
    run(move || async move {
        let opts = Options { library: "", ack: Ack::Async, read_fence: false, ..options(vec![seed]) };
        let c = Cluster::connect(opts).await.expect("connects");
        let got = within("the call", Duration::from_secs(10), c.fcall("f", &[b"k"], &[], Kind::Write)).await;
        assert!(matches!(got, Err(RedisError::Protocol(_))), "{got:?}");
        let stats = c.stats();
        assert_eq!((stats.protocol_errors, stats.connections_lost), (1, 1));
    });
}

#[test]
fn a_node_that_never_answers_times_the_call_out() {
    let seed = fake_node(None);
    run(move || async move {
        let opts = Options { library: "", command_timeout_ms: 200, ..options(vec![seed]) };
        let c = Cluster::connect(opts).await.expect("connects");
        let got = within("the call", Duration::from_secs(10), c.fcall("f", &[b"k"], &[], Kind::Write)).await;
        assert!(matches!(got, Err(RedisError::Unavailable(_))), "{got:?}");
        let read = within("the read", Duration::from_secs(10), c.fcall("f", &[b"k"], &[], Kind::Read)).await;
        assert!(matches!(read, Err(RedisError::Unavailable(_))), "{read:?}");
    });
}

#[test]
fn no_reachable_seed_is_a_setup_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    run(move || async move {
        let got = Cluster::connect(options(vec![format!("127.0.0.1:{port}")])).await;
        assert!(matches!(got, Err(RedisError::Setup(_))), "{:?}", got.err());
        let got = Cluster::connect(options(vec![])).await;
        assert!(matches!(got, Err(RedisError::Setup(_))), "{:?}", got.err());
    });
}
