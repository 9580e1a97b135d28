//! A cross-shard round trip: shard 0 asks shard 1 about a queue that shard 1 owns, over the
//! glommio channel mesh, and waits for the reply. `cargo bench --bench mesh`; under
//! `cargo test` it runs once, which keeps this file compiling and working.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use marconi::config::ApiLimits;
use marconi::queue::Engine;
use marconi::shard::{placement, Command, Envelope, QueueName, Shard};
use marconi::storage::{MemoryStore, Store};

/// Runs `iters` sequential round trips from shard 0 to shard 1 and returns their total time.
fn round_trips(iters: u64) -> Duration {
    let mesh = MeshBuilder::<Envelope, _>::full(2, 1024);
    let (elapsed_tx, elapsed_rx) = std::sync::mpsc::channel();
    let handles: Vec<_> = (0..2)
        .map(|id| {
            let mesh = mesh.clone();
            let elapsed_tx = elapsed_tx.clone();
            LocalExecutorBuilder::new(Placement::Unbound)
                .io_memory(256 * 1024)
                .spawn(move || async move {
                    let (senders, receivers) = mesh.join().await.expect("join mesh");
                    let store: Box<dyn Store> = Box::new(MemoryStore::new());
                    let shard = Shard::new(id, 2, Engine::new(store, ApiLimits::default(), 1), Some(senders));
                    shard.start(Some(receivers));
                    if id == 0 {
                        let name = (0..).map(|i| format!("q{i}")).find(|q| placement::owner("p", q, 2) == 1);
                        let queue = QueueName::new("p", &name.expect("a queue on shard 1"));
                        let started = Instant::now();
                        for _ in 0..iters {
                            shard.call(queue.as_ref(), Command::QueueExists, 0).await.expect("round trip");
                        }
                        elapsed_tx.send(started.elapsed()).expect("report");
                    }
                    shard.drain_mesh().await;
                })
                .expect("start executor")
        })
        .collect();
    for h in handles {
        h.join().expect("executor");
    }
    elapsed_rx.recv().expect("elapsed")
}

fn mesh(c: &mut Criterion) {
    c.bench_function("mesh/cross_shard_round_trip", |b| b.iter_custom(round_trips));
}

criterion_group!(benches, mesh);
criterion_main!(benches);
