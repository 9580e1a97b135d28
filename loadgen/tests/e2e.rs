//! End-to-end: the real loadgen binary against the in-process fake Zaqar. Runs are bounded and
//! tiny (the machine is shared), but every workload and every check is exercised.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{eventually, run_loadgen, FakeZaqar, Faults};
use serde_json::Value;

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("`{key}` missing in {v}"))
}

#[test]
fn produce_counts_match_the_server() {
    let z = FakeZaqar::start(Faults::default());
    let (code, v, err) = run_loadgen(&[
        "--url",
        &z.url(),
        "-w",
        "produce",
        "--requests",
        "120",
        "-c",
        "4",
        "--batch",
        "3",
        "--message-bytes",
        "100",
        "--queues",
        "3",
        "--dist",
        "zipf:1.1",
    ]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(u(&v, "requests"), 120);
    assert_eq!(u(&v, "ok"), 120);
    assert_eq!(u(&v, "messages"), 360);
    assert_eq!(u(&v, "violations"), 0);
    assert!(v["errors"].as_object().unwrap().is_empty(), "{v}");
    assert_eq!(z.counters.posted.load(Ordering::Relaxed), 360);
}

#[test]
fn consume_delivers_every_message_once() {
    let z = FakeZaqar::start(Faults::default());
    let (code, v, err) = run_loadgen(&[
        "--url",
        &z.url(),
        "-w",
        "consume",
        "--prefill",
        "150",
        "--queues",
        "2",
        "-c",
        "3",
        "--claim-limit",
        "7",
        "--duration-s",
        "2",
    ]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(u(&v, "violations"), 0, "{v}");
    assert_eq!(u(&v, "prefilled"), 300);
    let audit = &v["audit"];
    assert!(audit["complete"].as_bool().unwrap(), "{v}");
    assert_eq!(u(audit, "posted"), 300);
    assert_eq!(u(audit, "lost"), 0);
    // Everything is either delivered or still queued (claimed-but-undeleted counts as both).
    assert!(u(audit, "delivered") + u(audit, "remaining") >= 300, "{v}");
    let received = u(&v, "messages_received");
    assert!(received > 0);
    assert_eq!(received, z.counters.deleted.load(Ordering::Relaxed));
    assert!(v["ops"]["claim"]["requests"].as_u64().unwrap() > 0);
    assert!(v["ops"]["delete_message"]["requests"].as_u64().unwrap() > 0);
}

#[test]
fn pubsub_readers_follow_their_markers() {
    let z = FakeZaqar::start(Faults::default());
    let (code, v, err) = run_loadgen(&[
        "--url",
        &z.url(),
        "-w",
        "pubsub",
        "-c",
        "2",
        "--queues",
        "2",
        "--readers",
        "2",
        "--rate",
        "300",
        "--batch",
        "2",
        "--duration-s",
        "1.5",
        "--poll-interval-ms",
        "5",
    ]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(u(&v, "violations"), 0, "{v}");
    assert_eq!(v["mode"], "open");
    let sent = u(&v, "messages_sent");
    let received = u(&v, "messages_received");
    assert!(sent > 0 && received > 0, "{v}");
    // Two readers per queue each read (at most) everything posted to their queue.
    assert!(received <= 2 * sent + 2 * 2 * 20, "{v}");
    assert!(u(&v["delivery_latency_us"], "count") > 0);
    assert_eq!(u(&v["connections"], "target"), 2 + 2 * 2);
}

#[test]
fn json_summary_has_the_documented_shape() {
    let z = FakeZaqar::start(Faults::default());
    let (code, v, err) = run_loadgen(&["--url", &z.url(), "-w", "produce", "--requests", "20"]);
    assert_eq!(code, 0, "{err}");
    assert!(v.is_object(), "stdout was not one JSON object");
    for key in
        ["workload", "params", "duration_s", "requests", "messages", "rps", "mps", "latency_us", "errors", "violations"]
    {
        assert!(v.get(key).is_some(), "missing `{key}` in {v}");
    }
    for p in ["p50", "p90", "p99", "p99.9", "p99.99", "max"] {
        assert!(v["latency_us"][p].as_u64().is_some(), "missing latency {p}");
    }
    assert!(u(&v["latency_us"], "max") >= u(&v["latency_us"], "p50"));
    assert_eq!(v["workload"], "produce");
    assert_eq!(v["params"]["requests"], 20);
    assert!(v["rps"].as_f64().unwrap() > 0.0);
}

#[test]
fn queues_connections_and_mixed_run_clean() {
    let z = FakeZaqar::start(Faults::default());
    let url = z.url();
    let (code, v, err) = run_loadgen(&["--url", &url, "-w", "queues", "--queues", "4", "-c", "2", "--requests", "60"]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(u(&v, "ok"), 60, "{v}");
    // Two connections cycle create -> list -> delete; the budget split between them is free.
    for op in ["create_queue", "list_queues", "delete_queue"] {
        let n = u(&v["ops"][op], "requests");
        assert!((19..=21).contains(&n), "{op}: {n}");
    }

    let (code, v, err) = run_loadgen(&[
        "--url",
        &url,
        "-w",
        "connections",
        "-c",
        "40",
        "--source-ips",
        "3",
        "--ping-interval-s",
        "0.2",
        "--duration-s",
        "1",
    ]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(u(&v["connections"], "open_at_end"), 40, "{v}");
    assert_eq!(u(&v["connections"], "failed_connects"), 0);
    assert!(u(&v, "requests") >= 40, "every connection pings at least once: {v}");
    assert_eq!(u(&v, "ok"), u(&v, "requests"));

    let (code, v, err) = run_loadgen(&[
        "--url",
        &url,
        "-w",
        "mixed",
        "--mix",
        "produce=3,consume=2,list=1,stats=1",
        "-c",
        "3",
        "--queues",
        "2",
        "--prefill",
        "20",
        "--requests",
        "300",
    ]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(u(&v, "requests"), 300);
    assert_eq!(u(&v, "violations"), 0, "{v}");
    assert_eq!(u(&v["audit"], "lost"), 0, "{v}");
    assert!(v["errors"].as_object().unwrap().is_empty(), "{v}");
}

#[test]
fn duplicate_claims_are_violations() {
    let z = FakeZaqar::start(Faults { duplicate_claims: true, ..Faults::default() });
    let (code, v, err) =
        run_loadgen(&["--url", &z.url(), "-w", "consume", "--prefill", "100", "-c", "4", "--duration-s", "1"]);
    assert_eq!(code, 1, "{err}\n{v}");
    assert!(u(&v, "violations") > 0);
    let samples = v["violation_samples"].to_string();
    assert!(samples.contains("duplicate delivery"), "{samples}");
}

#[test]
fn markers_going_back_are_violations() {
    let z = FakeZaqar::start(Faults { marker_back: true, ..Faults::default() });
    let (code, v, err) = run_loadgen(&[
        "--url",
        &z.url(),
        "-w",
        "pubsub",
        "-c",
        "1",
        "--readers",
        "1",
        "--batch",
        "5",
        "--rate",
        "100",
        "--duration-s",
        "1",
    ]);
    assert_eq!(code, 1, "{err}\n{v}");
    let samples = v["violation_samples"].to_string();
    assert!(samples.contains("marker went back") || samples.contains("seen twice"), "{samples}");
}

#[test]
fn a_hung_server_cannot_hang_the_run() {
    let z = FakeZaqar::start(Faults { silent: true, ..Faults::default() });
    // run_loadgen fails the test if the run does not end by itself.
    let (code, v, err) = run_loadgen(&[
        "--url",
        &z.url(),
        "-w",
        "produce",
        "-c",
        "2",
        "--timeout-ms",
        "300",
        "--duration-s",
        "0.5",
        "--requests",
        "1000000",
    ]);
    assert_eq!(code, 0, "errors alone do not fail the run: {err}\n{v}");
    assert!(u(&v["errors"], "transport_timeout") >= 2, "{v}");
    assert_eq!(u(&v, "ok"), 0);
    assert!(eventually(Duration::from_secs(1), || z.counters.requests.load(Ordering::Relaxed) >= 2));

    // Nothing listening: connect errors, and `--fail-on-errors` turns them into exit 1.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (code, v, err) = run_loadgen(&[
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "-w",
        "produce",
        "-c",
        "1",
        "--duration-s",
        "0.3",
        "--fail-on-errors",
    ]);
    assert_eq!(code, 1, "{err}\n{v}");
    assert!(u(&v["errors"], "transport_connect") > 0, "{v}");
}

#[test]
fn refuses_non_loopback_targets() {
    let (code, v, err) = run_loadgen(&["--url", "http://10.1.2.3:8888", "--requests", "1"]);
    assert_eq!(code, 2);
    assert!(v.is_null());
    assert!(err.contains("loopback"), "{err}");
}

/// A 600 ms stall at 100 req/s on one connection: closed loop sees one slow request, but the
/// open loop must charge the stall to every request that was due during it (coordinated
/// omission), so its p90 is large.
#[test]
fn open_loop_corrects_for_coordinated_omission() {
    let stall = Faults { stall: Some((30, 600)), ..Faults::default() };
    let z = FakeZaqar::start(stall);
    let (code, open, err) =
        run_loadgen(&["--url", &z.url(), "-w", "produce", "-c", "1", "--rate", "100", "--duration-s", "1.5"]);
    assert_eq!(code, 0, "{err}");
    let z = FakeZaqar::start(stall);
    let (code, closed, err) = run_loadgen(&["--url", &z.url(), "-w", "produce", "-c", "1", "--requests", "150"]);
    assert_eq!(code, 0, "{err}");
    for v in [&open, &closed] {
        assert!(u(&v["latency_us"], "max") >= 590_000, "{v}");
    }
    assert!(u(&open["latency_us"], "p90") >= 200_000, "{open}");
    assert!(u(&closed["latency_us"], "p90") < 100_000, "{closed}");
    // The open loop still sent at its rate (the backlog is sent once the stall ends).
    assert!(u(&open, "requests") >= 140, "{open}");
}

#[test]
fn pipelined_posts_are_all_answered_in_order() {
    let z = FakeZaqar::start(Faults::default());
    let (code, v, err) =
        run_loadgen(&["--url", &z.url(), "-w", "produce", "--pipeline", "5", "-c", "2", "--requests", "100"]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!((u(&v, "requests"), u(&v, "ok"), u(&v, "pipeline")), (100, 100, 5), "{v}");
    assert!(v["errors"].as_object().unwrap().is_empty(), "{v}");
    assert_eq!(z.counters.posted.load(Ordering::Relaxed), 100);
    // Only independent requests can be in flight together.
    let (code, _, err) = run_loadgen(&["--url", &z.url(), "-w", "consume", "--pipeline", "2", "--requests", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--pipeline"), "{err}");
}

/// The fake ignores `wait` (a claim of an empty queue answers 204 at once), so the agents poll;
/// every command must still reach its agent once, and the run must end by itself after them.
#[test]
fn agents_receive_every_command_once() {
    let z = FakeZaqar::start(Faults::default());
    let (code, v, err) = run_loadgen(&[
        "--url",
        &z.url(),
        "-w",
        "agents",
        "--agents",
        "6",
        "-c",
        "2",
        "--requests",
        "120",
        "--wait-s",
        "2",
        "--poll-interval-ms",
        "2",
    ]);
    assert_eq!(code, 0, "{err}\n{v}");
    let agents = &v["agents"];
    assert_eq!((u(agents, "agents"), u(agents, "producers")), (6, 2), "{v}");
    assert_eq!(u(agents, "acknowledged"), 120, "{v}");
    assert_eq!(u(agents, "delivered"), 120, "{v}");
    assert_eq!(agents["drained"], true, "{v}");
    assert_eq!((u(&v, "duplicates"), u(&v, "violations")), (0, 0), "{v}");
    assert_eq!(u(&v["audit"], "lost"), 0, "{v}");
    assert_eq!(u(&v["delivery_latency_us"], "count"), 120, "{v}");
    assert_eq!(u(&v["connections"], "open_at_window_end"), 8, "{v}");
    assert_eq!(z.counters.deleted.load(Ordering::Relaxed), 120, "each agent deletes what it claimed");
}
