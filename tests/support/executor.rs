//! Runs a test's future on a glommio executor of its own (the client and the backend are
//! single-thread types that live on one).
#![allow(dead_code)]

use std::future::Future;

/// Runs `make()`'s future on a fresh glommio executor on its own thread.
pub fn run<F, T>(make: impl FnOnce() -> F + Send + 'static) -> T
where
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(64 * 1024)
        .spawn(make)
        .expect("executor starts")
        .join()
        .expect("executor finishes")
}
