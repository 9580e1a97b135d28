//! What the machine offers the server and how the server lays itself out on it: the CPUs this
//! process may run on, the locked-memory limit, the shard placement and io_uring buffer planned
//! from them, and the data directory in use. Shared by the server, which starts from the plan,
//! and the start-up checks, which judge it, so neither reaches into the other.

use crate::config::{Config, Durability};

/// Below this much locked memory per ring, glommio fails to start an executor (design notes):
/// the smallest `io_memory_bytes`.
pub const MIN_IO_MEMORY_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("CPU {cpu} is not online or not allowed for this process (online: {online:?})")]
    CpuNotOnline { cpu: usize, online: Vec<usize> },
    #[error("--shards must be at least 1")]
    NoShards,
}

/// Where the server ended up: the address it listens on and its shard placement.
pub struct Layout {
    pub shards: usize,
    pub cpus: Vec<usize>,
    pub io_memory_bytes: usize,
}

/// CPUs this process may run on, in ascending order.
pub fn online_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// The locked-memory limit in bytes (`None` when unlimited).
pub fn memlock_limit() -> Option<usize> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0;
    (ok && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur as usize)
}

/// Decides shard count, CPU placement and the io_uring buffer each executor registers: glommio
/// registers `io_memory` in each of its 3 rings, and silently runs slower when the locked-memory
/// limit cannot hold that for every shard, so the buffer is sized from the limit.
pub fn plan(config: &Config) -> Result<Layout, PlanError> {
    let online = online_cpus();
    let cpus = match &config.cpus {
        Some(list) => {
            if let Some(&cpu) = list.iter().find(|c| !online.contains(c)) {
                return Err(PlanError::CpuNotOnline { cpu, online });
            }
            list.clone()
        }
        None => online.clone(),
    };
    let shards = config.shards.unwrap_or(cpus.len());
    if shards == 0 || cpus.is_empty() {
        return Err(PlanError::NoShards);
    }
    let per_ring_budget = memlock_limit().map_or(usize::MAX, |l| l / (shards * 3 + 1));
    let io_memory_bytes = config.io_memory_bytes.min(per_ring_budget).max(MIN_IO_MEMORY_BYTES);
    Ok(Layout { shards, cpus, io_memory_bytes })
}

/// The data directory in use, from the configuration (`None` with `memory` durability).
pub fn data_dir(config: &Config) -> Option<std::path::PathBuf> {
    (config.storage.durability != Durability::Memory && config.storage.backend == crate::config::Backend::Local)
        .then(|| config.data_dir.clone().unwrap_or_else(|| crate::config::DEFAULT_DATA_DIR.into()))
}
