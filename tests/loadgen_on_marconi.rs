//! The workspace's load generator against the real server: what its checks report on marconi
//! is what the benchmarks in docs/perf.md rely on. loadgen runs in-process (its library), so the
//! test always drives the binary built with it. Counts and facts only, never timings.

mod common;
use clap::Parser;
use common::*;

fn loadgen(server: &Server, extra: &[&str]) -> loadgen::report::Summary {
    let url = format!("http://{}", server.addr);
    let pid = server.pid().to_string();
    let mut argv = vec!["loadgen", "--url", &url, "--cpus", "0", "--no-progress", "--server-pid", &pid];
    argv.extend_from_slice(extra);
    loadgen::run::run(loadgen::cli::Args::parse_from(argv)).expect("loadgen runs")
}

/// Agents long-poll their own queues (claims with `wait`, on both shards) while producers post
/// commands to random agents: each acknowledged command reaches its agent exactly once.
#[test]
fn agents_receive_every_command_exactly_once() {
    let server = Server::start();
    let s = loadgen(
        &server,
        &["-w", "agents", "--agents", "40", "-c", "4", "--requests", "600", "--wait-s", "5", "--drain-s", "60"],
    );
    assert_eq!(s.violations, 0, "{:?}", s.violation_samples);
    assert_eq!(s.error_count, 0, "{:?}", s.errors);
    let agents = s.agents.as_ref().expect("agents report");
    assert_eq!(agents.acknowledged, 600, "every post was acknowledged");
    assert_eq!(agents.unknown, 0);
    assert!(agents.drained, "the drain ran out before every command arrived: {agents:?}");
    assert_eq!(agents.delivered, 600, "delivered once each");
    assert_eq!(s.duplicates, 0);
    let audit = s.audit.as_ref().expect("audit");
    assert!(audit.complete, "{audit:?}");
    assert_eq!((audit.posted, audit.delivered, audit.lost), (600, 600, 0), "{audit:?}");
    assert_eq!(s.delivery_latency_us.expect("delivery latency").count, 600);
    assert_eq!(s.connections.open_at_window_end, 44, "40 agents and 4 producers were connected");
    assert!(s.memory.server_rss_kib.is_some_and(|kib| kib > 0), "{:?}", s.memory);
}

/// Pipelined posts: every one answered, in order, and stored.
#[test]
fn pipelined_posts_are_answered_and_stored() {
    let server = Server::start();
    let s = loadgen(
        &server,
        &["-w", "produce", "--pipeline", "8", "-c", "3", "--requests", "480", "--queue-prefix", "pl", "--no-cleanup"],
    );
    assert_eq!((s.requests, s.ok, s.messages_sent), (480, 480, 480), "{:?}", s.errors);
    assert_eq!(s.violations, 0, "{:?}", s.violation_samples);
    let mut c = server.client().with_project("loadgen-0");
    let stats = c.get("/v2/queues/pl-0/stats");
    assert_eq!(stats.status, 200, "{}", stats.text());
    assert_eq!(stats.json()["messages"]["total"], 480);
}
