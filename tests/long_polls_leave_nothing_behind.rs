//! Long polls that time out or are cancelled leave nothing behind: after each round every
//! notifier of every shard is back to the waiters it had before, and the mesh holds no pending
//! reply or parked poll. Polls come from many connections, so they are both local to the shard
//! that owns their queue and forwarded to it over the mesh.

mod common;
use common::*;
use std::io::Write;
use std::net::Shutdown;

const POLLS_PER_KIND: usize = 24;

#[test]
fn timed_out_and_cancelled_polls_leave_no_waiter() {
    let server = Server::start();
    let addr = server.addr;
    let (a, b) = queues_on_each_shard("test-project", "leak");
    let before = metrics(addr);
    let log_waiters = before[r#"marconi_waiters{shard="all",on="log"}"#];
    for round in 1..=3 {
        // Polls that run out by themselves.
        let timing_out: Vec<_> = (0..POLLS_PER_KIND)
            .map(|i| {
                let path = format!("/v2/queues/{}/messages?wait=1", if i % 2 == 0 { &a } else { &b });
                std::thread::spawn(move || Client::connect(addr).get(&path))
            })
            .collect();
        // Polls whose clients hang up while they are parked.
        let mut cancelled: Vec<Client> = (0..POLLS_PER_KIND)
            .map(|i| {
                let mut c = Client::connect(addr);
                let q = if i % 2 == 0 { &a } else { &b };
                let req = c.build("POST", &format!("/v2/queues/{q}/claims?wait=20"), Some("{}"), &[]);
                c.stream.write_all(&req).unwrap();
                c
            })
            .collect();
        let parked = (2 * POLLS_PER_KIND) as f64;
        until_metrics(addr, "every poll parked", |m| {
            m[r#"marconi_long_polls_parked{shard="all"}"#]
                + m[r#"marconi_long_polls_total{shard="all",ended="timeout"}"#]
                - (round - 1) as f64 * POLLS_PER_KIND as f64
                >= parked
        });
        for c in &mut cancelled {
            c.stream.shutdown(Shutdown::Both).unwrap();
        }
        for t in timing_out {
            assert_eq!(t.join().unwrap().json()["messages"], serde_json::json!([]));
        }
        let expected = (round * POLLS_PER_KIND) as f64;
        until_metrics(addr, "every poll ended", |m| {
            m[r#"marconi_long_polls_parked{shard="all"}"#] == 0.0
                && m[r#"marconi_long_polls_total{shard="all",ended="cancelled"}"#] == expected
                && m[r#"marconi_long_polls_total{shard="all",ended="timeout"}"#] == expected
        });
        let m = metrics(addr);
        for shard in ["0", "1"] {
            assert!(m[&format!("marconi_long_polls_parked{{shard=\"{shard}\"}}")] == 0.0);
        }
        assert_eq!(m[r#"marconi_waiters{shard="all",on="stop"}"#], 0.0, "round {round}");
        assert_eq!(m[r#"marconi_waiters{shard="all",on="queue"}"#], 0.0, "round {round}");
        assert_eq!(m[r#"marconi_waiters{shard="all",on="queue_notifiers"}"#], 0.0, "round {round}");
        assert_eq!(m[r#"marconi_waiters{shard="all",on="log"}"#], log_waiters, "round {round}");
        // The scrape itself awaits its peer's snapshot: that one reply may be pending, no more (the
        // baseline can hold a reply of the set-up still in flight, so it is no bound).
        let pending = r#"marconi_mesh_pending_replies{shard="all"}"#;
        assert!(m[pending] <= 1.0, "round {round}: {} replies pending", m[pending]);
        assert_eq!(m[r#"marconi_mesh_parked_long_polls{shard="all"}"#], 0.0, "round {round}");
        assert!(m[r#"marconi_mesh_hops_total{shard="all"}"#] > 0.0, "some polls crossed the mesh");
    }
}
