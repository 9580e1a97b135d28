//! Start-up checks: each problem of the machine the server would hit (io_uring missing or blocked,
//! locked memory too small for the shards, too few file descriptors for the connection caps, CPUs
//! that are not there, a data directory it cannot write, a listen address it cannot bind) becomes
//! one message that says how to fix it.
//!
//! `marconi check` runs [`run_all`] and changes nothing but a scratch file in the data directory.
//! `marconi serve` runs [`run_startup`] (everything but the bind probe, since it binds anyway)
//! after first raising the soft `RLIMIT_NOFILE`/`RLIMIT_MEMLOCK` limits toward their hard limits,
//! as far as the configuration needs: a soft limit below the hard one is a default, not a policy.
//!
//! Each check is a pure function of the facts it is handed (limits, online CPUs, errno), so the
//! messages are unit-tested without changing the machine.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::Path;

use crate::config::Config;
use crate::machine;

/// glommio refuses to start an executor when `RLIMIT_MEMLOCK` is below this (its
/// `MIN_MEMLOCK_LIMIT`, checked per executor against the process limit).
pub const GLOMMIO_MIN_MEMLOCK_BYTES: u64 = 512 * 1024;
/// Descriptors a shard holds besides its connections: three rings, eventfds, the listener, data
/// files, with room to spare.
pub const FDS_PER_SHARD: u64 = 64;
/// Descriptors of the process besides its shards (stdio, signal pipe, logs).
pub const FDS_BASE: u64 = 64;
/// glommio rings per shard; each registers the shard's `io_memory` buffer.
pub const RINGS_PER_SHARD: u64 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Ok,
    /// The server runs, but worse than configured (say so, and how to fix it).
    Warning,
    /// The server cannot run (`serve` stops with the message).
    Fatal,
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub check: &'static str,
    pub severity: Severity,
    /// What was found and, unless all is well, how to fix it.
    pub message: String,
}

impl Finding {
    fn ok(check: &'static str, message: impl Into<String>) -> Self {
        Finding { check, severity: Severity::Ok, message: message.into() }
    }
    fn warn(check: &'static str, message: impl Into<String>) -> Self {
        Finding { check, severity: Severity::Warning, message: message.into() }
    }
    fn fatal(check: &'static str, message: impl Into<String>) -> Self {
        Finding { check, severity: Severity::Fatal, message: message.into() }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn has_fatal(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Fatal)
    }

    pub fn worst(&self) -> Severity {
        self.findings.iter().map(|f| f.severity).max().unwrap_or(Severity::Ok)
    }

    /// One line per check (`ok`, `WARN`, `FAIL`), then a summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let tag = match f.severity {
                Severity::Ok => "ok  ",
                Severity::Warning => "WARN",
                Severity::Fatal => "FAIL",
            };
            let _ = writeln!(out, "{tag}  {:<10} {}", f.check, f.message);
        }
        let count = |s| self.findings.iter().filter(|f| f.severity == s).count();
        let _ = writeln!(
            out,
            "{} check(s): {} ok, {} warning(s), {} fatal",
            self.findings.len(),
            count(Severity::Ok),
            count(Severity::Warning),
            count(Severity::Fatal)
        );
        out
    }
}

/// Every check, including a real glommio executor and a bind of the listen address.
pub fn run_all(config: &Config) -> Report {
    let mut report = checks(config, false);
    if !report.findings.iter().any(|f| f.check == "io_uring" && f.severity == Severity::Fatal) {
        report.findings.push(executor_probe(config));
    }
    report.findings.push(check_listen(config.listen));
    if config.storage.backend == crate::config::Backend::RedisCluster {
        report.findings.extend(check_redis_cluster(config));
    }
    report
}

/// The checks `serve` runs before it starts its shards; raises soft limits first.
pub fn run_startup(config: &Config) -> Report {
    checks(config, true)
}

fn checks(config: &Config, raise_limits: bool) -> Report {
    let mut findings = vec![check_io_uring()];
    let online = machine::online_cpus();
    let cpus_ok = match check_cpus(config.cpus.as_deref(), config.shards, &online) {
        f if f.severity == Severity::Fatal => {
            findings.push(f);
            false
        }
        f => {
            findings.push(f);
            true
        }
    };
    let shards = config.shards.unwrap_or_else(|| config.cpus.as_ref().map_or(online.len(), Vec::len)).max(1) as u64;
    let needed_memlock = memlock_needed(shards, config.io_memory_bytes as u64);
    let memlock = limit(libc::RLIMIT_MEMLOCK, raise_limits.then_some(needed_memlock));
    let planned = if cpus_ok { machine::plan(config).ok().map(|l| l.io_memory_bytes as u64) } else { None };
    findings.push(check_memlock(memlock, shards, config.io_memory_bytes as u64, planned));
    let needed_fds = fds_needed(shards, config.http.max_connections_per_shard as u64);
    let nofile = limit(libc::RLIMIT_NOFILE, raise_limits.then_some(needed_fds));
    findings.push(check_nofile(nofile, shards, config.http.max_connections_per_shard as u64, raise_limits));
    // The directory the store will really use: the default one too, unless storage is in memory.
    if let Some(dir) = machine::data_dir(config) {
        findings.push(check_data_dir(&dir));
    }
    Report { findings }
}

/// A resource limit: (soft, hard) after an optional raise of the soft limit; `None` = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
    /// The soft limit before this process raised it.
    pub raised_from: Option<u64>,
}

fn to_opt(v: libc::rlim_t) -> Option<u64> {
    // rlim_t is u64 on the Linux targets glommio supports.
    (v != libc::RLIM_INFINITY).then_some(v)
}

/// Reads `resource`; with `want`, first raises the soft limit to `min(want, hard)`.
fn limit(resource: libc::__rlimit_resource_t, want: Option<u64>) -> Limit {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(resource, &mut lim) } != 0 {
        return Limit { soft: None, hard: None, raised_from: None };
    }
    let (soft, hard) = (to_opt(lim.rlim_cur), to_opt(lim.rlim_max));
    if let (Some(want), Some(cur)) = (want, soft) {
        let target = hard.map_or(want, |h| want.min(h));
        if target > cur {
            let new = libc::rlimit { rlim_cur: target as libc::rlim_t, rlim_max: lim.rlim_max };
            // SAFETY: setrlimit reads the struct we own; raising a soft limit up to the hard one
            // needs no privilege.
            if unsafe { libc::setrlimit(resource, &new) } == 0 {
                return Limit { soft: Some(target), hard, raised_from: Some(cur) };
            }
        }
    }
    Limit { soft, hard, raised_from: None }
}

/// Locked memory for every shard's buffer in each of its rings, plus one more share for the rings
/// themselves (older kernels charge ring memory to the same limit): what `machine::plan` divides.
pub fn memlock_needed(shards: u64, io_memory_bytes: u64) -> u64 {
    (RINGS_PER_SHARD * shards + 1) * io_memory_bytes
}

pub fn fds_needed(shards: u64, max_connections_per_shard: u64) -> u64 {
    shards * (max_connections_per_shard + FDS_PER_SHARD) + FDS_BASE
}

fn kib(bytes: u64) -> String {
    if bytes >= 1024 * 1024 && bytes % (1024 * 1024) == 0 {
        format!("{} MiB", bytes / (1024 * 1024))
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

/// Rounds up to whole MiB, the unit people type into `ulimit -l` (KiB) and `LimitMEMLOCK=`.
fn mib_up(bytes: u64) -> u64 {
    bytes.div_ceil(1024 * 1024).max(1)
}

// ------------------------------------------------------------------------------------------
// io_uring
// ------------------------------------------------------------------------------------------

/// Sets up (and closes) a 4-entry ring: the cheapest way to learn whether io_uring works here.
fn probe_io_uring() -> Result<(), i32> {
    // struct io_uring_params is 120 bytes; zeroed means "no flags", and the kernel fills the rest.
    let mut params = [0u32; 30];
    // SAFETY: io_uring_setup reads and writes `params`, which is large enough; the returned
    // descriptor is ours to close.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: closing the descriptor io_uring_setup just gave us.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

fn check_io_uring() -> Finding {
    match probe_io_uring() {
        Ok(()) => Finding::ok("io_uring", "available"),
        Err(errno) => {
            let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
            io_uring_finding(errno, disabled.as_deref().map(str::trim))
        }
    }
}

/// The message for an `io_uring_setup` failure with `errno`, given the `kernel.io_uring_disabled`
/// sysctl if the kernel has it.
pub fn io_uring_finding(errno: i32, sysctl_disabled: Option<&str>) -> Finding {
    let msg = match (errno, sysctl_disabled) {
        (libc::ENOSYS, _) => "this kernel has no io_uring (io_uring_setup: ENOSYS). marconi needs Linux 5.8 or newer \
             built with CONFIG_IO_URING; fix: upgrade the kernel, or run on a host that has it"
            .to_owned(),
        (libc::EPERM, Some("2")) => "io_uring is switched off on this machine (sysctl kernel.io_uring_disabled = 2). \
             Fix: `sysctl -w kernel.io_uring_disabled=0` (persist it in /etc/sysctl.d/)"
            .to_owned(),
        (libc::EPERM, Some("1")) => "io_uring is limited to one group here (sysctl kernel.io_uring_disabled = 1). \
             Fix: add the service user to the group in kernel.io_uring_group, or \
             `sysctl -w kernel.io_uring_disabled=0`"
            .to_owned(),
        (libc::EPERM | libc::EACCES, _) => "io_uring is blocked for this process (io_uring_setup: permission denied), \
             most likely by a seccomp profile: Docker, containerd and Podman block io_uring by default. \
             Fix: run the container with `--security-opt seccomp=unconfined` or a profile allowing \
             io_uring_setup, io_uring_enter and io_uring_register; under systemd, allow them in \
             SystemCallFilter="
            .to_owned(),
        (libc::ENOMEM, _) => "io_uring_setup ran out of locked memory even for a tiny ring. \
             Fix: raise RLIMIT_MEMLOCK (`ulimit -l`, LimitMEMLOCK= in the systemd unit, \
             `--ulimit memlock=-1` for Docker)"
            .to_owned(),
        (errno, _) => format!(
            "io_uring_setup failed: {}. marconi cannot run its shards without io_uring",
            io::Error::from_raw_os_error(errno)
        ),
    };
    Finding::fatal("io_uring", msg)
}

/// Starts and stops one glommio executor with the planned buffer, as a shard would.
fn executor_probe(config: &Config) -> Finding {
    let io_memory = machine::plan(config).map_or(config.io_memory_bytes, |l| l.io_memory_bytes);
    let built = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("marconi-check")
        .io_memory(io_memory)
        .ring_depth(config.io_ring_depth)
        .make()
        .map(|ex| ex.run(async {}));
    match built {
        Ok(()) => Finding::ok("executor", format!("a glommio executor starts (io_memory {})", kib(io_memory as u64))),
        Err(e) => Finding::fatal(
            "executor",
            format!(
                "a glommio executor does not start: {e}. Fix: see the io_uring and memlock lines above \
                 (raise LimitMEMLOCK, allow io_uring)"
            ),
        ),
    }
}

// ------------------------------------------------------------------------------------------
// Limits
// ------------------------------------------------------------------------------------------

/// Judges the locked-memory limit for `shards` executors registering `io_memory_bytes` each in
/// three rings; `planned` is the buffer `machine::plan` settled on.
pub fn check_memlock(limit: Limit, shards: u64, io_memory_bytes: u64, planned: Option<u64>) -> Finding {
    let needed = memlock_needed(shards, io_memory_bytes);
    let fix = format!(
        "Fix: raise the locked-memory limit to at least {} MiB: `ulimit -l {}` (KiB) in the shell, \
         LimitMEMLOCK={}M in the systemd unit (scripts/marconi.service), `--ulimit memlock={}` for Docker, \
         or lower io_memory_bytes/shards",
        mib_up(needed),
        mib_up(needed) * 1024,
        mib_up(needed),
        mib_up(needed) * 1024 * 1024,
    );
    let Some(soft) = limit.soft else {
        return Finding::ok("memlock", "unlimited");
    };
    let raised = limit.raised_from.map_or(String::new(), |from| format!(" (raised from {})", kib(from)));
    if soft < GLOMMIO_MIN_MEMLOCK_BYTES {
        return Finding::fatal(
            "memlock",
            format!(
                "the locked-memory limit is {}{raised}; glommio needs at least {} to start a shard. {fix}",
                kib(soft),
                kib(GLOMMIO_MIN_MEMLOCK_BYTES)
            ),
        );
    }
    if soft < needed {
        let planned = planned.map_or(String::new(), |p| format!(" to {} per shard", kib(p)));
        let unregistered = soft < memlock_needed(shards, machine::MIN_IO_MEMORY_BYTES as u64);
        let effect = if unregistered {
            "too small to register even the smallest buffer: I/O runs unregistered (slower)".to_owned()
        } else {
            format!("so io_memory_bytes is cut from {}{planned}", kib(io_memory_bytes))
        };
        return Finding::warn(
            "memlock",
            format!(
                "the locked-memory limit is {}{raised}, below the {} that {shards} shard(s) x {RINGS_PER_SHARD} rings x \
                 {} need; {effect}. {fix}",
                kib(soft),
                kib(needed),
                kib(io_memory_bytes)
            ),
        );
    }
    Finding::ok("memlock", format!("{}{raised}, {} needed for {shards} shard(s)", kib(soft), kib(needed)))
}

/// Judges the open-file limit against every shard's connection cap.
pub fn check_nofile(limit: Limit, shards: u64, max_connections_per_shard: u64, raising: bool) -> Finding {
    let needed = fds_needed(shards, max_connections_per_shard);
    let Some(soft) = limit.soft else {
        return Finding::ok("nofile", "unlimited");
    };
    let raised = limit.raised_from.map_or(String::new(), |from| format!(" (raised from {from})"));
    if soft >= needed {
        return Finding::ok("nofile", format!("{soft}{raised}, {needed} needed for {shards} shard(s)"));
    }
    if !raising && limit.hard.is_none_or(|h| h >= needed) {
        return Finding::ok(
            "nofile",
            format!("soft limit {soft}, below the {needed} needed; `marconi serve` raises it (the hard limit allows)"),
        );
    }
    Finding::warn(
        "nofile",
        format!(
            "the open-file limit is {soft}{raised} (hard {}), below the {needed} that {shards} shard(s) x \
             http.max_connections_per_shard = {max_connections_per_shard} need: past about {soft} open \
             connections, accepts fail with EMFILE. Fix: LimitNOFILE={needed} in the systemd unit, \
             `ulimit -n {needed}` (raising the hard limit needs root, or /etc/security/limits.conf), \
             `--ulimit nofile={needed}` for Docker, or lower http.max_connections_per_shard",
            limit.hard.map_or("unlimited".into(), |h| h.to_string())
        ),
    )
}

// ------------------------------------------------------------------------------------------
// CPUs, data directory, listen address
// ------------------------------------------------------------------------------------------

/// `0-3,6` for `[0, 1, 2, 3, 6]`.
pub fn cpu_ranges(cpus: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while let Some(&start) = cpus.get(i) {
        let mut end = start;
        while cpus.get(i + 1) == Some(&(end + 1)) {
            end += 1;
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if end == start {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{end}");
        }
        i += 1;
    }
    out
}

pub fn check_cpus(requested: Option<&[usize]>, shards: Option<usize>, online: &[usize]) -> Finding {
    let allowed = cpu_ranges(online);
    let cpus: Vec<usize> = requested.map_or_else(|| online.to_vec(), <[usize]>::to_vec);
    if let Some(missing) = requested.and_then(|r| r.iter().find(|c| !online.contains(c))) {
        return Finding::fatal(
            "cpus",
            format!(
                "CPU {missing} in `cpus` is not online or not allowed for this process (allowed: {allowed}). \
                 Fix: choose CPUs from {allowed} (--cpus / MARCONI_CPUS); the allowed set comes from \
                 `taskset -p $$`, the cgroup cpuset or CPUAffinity= in the systemd unit"
            ),
        );
    }
    let shards = shards.unwrap_or(cpus.len());
    if shards > cpus.len() {
        return Finding::warn(
            "cpus",
            format!(
                "{shards} shards share {} CPU(s) ({}): shards on one CPU take turns and add latency. \
                 Fix: set shards to at most {} or give more CPUs",
                cpus.len(),
                cpu_ranges(&cpus),
                cpus.len()
            ),
        );
    }
    Finding::ok(
        "cpus",
        format!("{shards} shard(s) on CPU(s) {:?} (allowed: {allowed})", &cpus[..shards.min(cpus.len())]),
    )
}

/// Checks that the data directory (or, when it does not exist yet, the nearest existing parent)
/// takes a file: create, write, sync and remove one.
pub fn check_data_dir(dir: &Path) -> Finding {
    let fix = |what: &str| {
        format!(
            "data directory {}: {what}. Fix: create it and give the service user write access, e.g. \
             `install -d -o marconi -g marconi {}` (or StateDirectory=marconi in the systemd unit), \
             or choose another --data-dir",
            dir.display(),
            dir.display()
        )
    };
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => return Finding::fatal("data_dir", fix("exists but is not a directory")),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A relative path's last ancestor is "": that means the working directory.
            let parent = dir
                .ancestors()
                .skip(1)
                .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
                .find(|p| p.exists());
            return match parent {
                Some(p) if !p.is_dir() => {
                    Finding::fatal("data_dir", fix(&format!("cannot be created: {} is not a directory", p.display())))
                }
                Some(p) if writable(p) => {
                    Finding::ok("data_dir", format!("{} does not exist yet; it can be created", dir.display()))
                }
                Some(p) => Finding::fatal(
                    "data_dir",
                    fix(&format!("does not exist, and {} does not allow creating it", p.display())),
                ),
                None => Finding::fatal("data_dir", fix("does not exist")),
            };
        }
        Err(e) => return Finding::fatal("data_dir", fix(&e.to_string())),
    }
    let probe = dir.join(format!(".marconi-check-{}", std::process::id()));
    let result = (|| -> io::Result<()> {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&probe)?;
        file.write_all(b"marconi")?;
        file.sync_all()?;
        Ok(())
    })();
    let _ = std::fs::remove_file(&probe);
    match result {
        Ok(()) => Finding::ok("data_dir", format!("{} is writable", dir.display())),
        Err(e) => Finding::fatal("data_dir", fix(&format!("cannot write a file there ({e})"))),
    }
}

fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: access(2) reads the NUL-terminated path we own.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// Binds the listen address once (without SO_REUSEPORT, so a running server is noticed).
pub fn check_listen(addr: SocketAddr) -> Finding {
    if addr.port() == 0 {
        return Finding::ok("listen", format!("{addr}: any free port"));
    }
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Finding::ok("listen", format!("{addr} is free")),
        Err(e) => Finding::fatal("listen", listen_message(addr, &e)),
    }
}

pub fn listen_message(addr: SocketAddr, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => format!(
            "{addr} is in use (another marconi, or another program: `ss -ltnp 'sport = :{}'`). \
             Fix: stop it or choose another --listen",
            addr.port()
        ),
        io::ErrorKind::PermissionDenied => format!(
            "no permission to listen on {addr}: ports below 1024 need CAP_NET_BIND_SERVICE. \
             Fix: choose a port of 1024 or more, or AmbientCapabilities=CAP_NET_BIND_SERVICE in the unit"
        ),
        io::ErrorKind::AddrNotAvailable => {
            format!("{addr} is not an address of this machine. Fix: use 0.0.0.0, 127.0.0.1 or a local address")
        }
        _ => format!("cannot listen on {addr}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(soft: u64, hard: u64) -> Limit {
        Limit { soft: Some(soft), hard: Some(hard), raised_from: None }
    }

    #[test]
    fn memlock_below_glommios_floor_is_fatal_and_says_how_much() {
        let f = check_memlock(lim(64 * 1024, 64 * 1024), 4, 1 << 20, Some(64 * 1024));
        assert_eq!(f.severity, Severity::Fatal);
        assert!(f.message.contains("512 KiB") && f.message.contains("LimitMEMLOCK=13M"), "{}", f.message);
    }

    #[test]
    fn memlock_too_small_for_full_buffers_warns_with_the_cut() {
        let f = check_memlock(lim(8 << 20, 8 << 20), 4, 1 << 20, Some(630 * 1024));
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.message.contains("cut from 1 MiB to 630 KiB"), "{}", f.message);
        assert_eq!(check_memlock(lim(64 << 20, 64 << 20), 4, 1 << 20, None).severity, Severity::Ok);
        let unlimited = Limit { soft: None, hard: None, raised_from: None };
        assert_eq!(check_memlock(unlimited, 64, 1 << 30, None).severity, Severity::Ok);
    }

    #[test]
    fn open_files_below_the_connection_caps_warn_unless_serve_can_raise_them() {
        let f = check_nofile(lim(1024, 4096), 2, 16_384, true);
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.message.contains("LimitNOFILE=32960"), "{}", f.message);
        assert_eq!(check_nofile(lim(1024, 1 << 20), 2, 16_384, false).severity, Severity::Ok);
        assert_eq!(check_nofile(lim(1024, 4096), 2, 16_384, false).severity, Severity::Warning);
        assert_eq!(check_nofile(lim(1 << 20, 1 << 20), 2, 16_384, true).severity, Severity::Ok);
    }

    #[test]
    fn cpus_that_are_not_online_are_fatal_and_name_the_allowed_set() {
        let f = check_cpus(Some(&[0, 7]), None, &[0, 1, 2, 3]);
        assert_eq!(f.severity, Severity::Fatal);
        assert!(f.message.contains("CPU 7") && f.message.contains("0-3"), "{}", f.message);
        assert_eq!(check_cpus(None, Some(4), &[0, 1]).severity, Severity::Warning);
        assert_eq!(check_cpus(Some(&[1]), Some(1), &[0, 1]).severity, Severity::Ok);
        assert_eq!(cpu_ranges(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
    }

    #[test]
    fn io_uring_errors_explain_the_cause() {
        assert!(io_uring_finding(libc::ENOSYS, None).message.contains("5.8"));
        assert!(io_uring_finding(libc::EPERM, Some("2")).message.contains("io_uring_disabled=0"));
        assert!(io_uring_finding(libc::EPERM, Some("0")).message.contains("seccomp"));
        assert!(io_uring_finding(libc::ENOMEM, None).message.contains("LimitMEMLOCK"));
        assert_eq!(io_uring_finding(libc::EINVAL, None).severity, Severity::Fatal);
    }

    #[test]
    fn data_directories_must_take_a_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check_data_dir(dir.path()).severity, Severity::Ok);
        assert_eq!(check_data_dir(&dir.path().join("new/deeper")).severity, Severity::Ok);
        // Relative to the working directory, as the default `marconi-data` is.
        assert_eq!(check_data_dir(Path::new("marconi-check-not-there")).severity, Severity::Ok);
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let f = check_data_dir(&file);
        assert_eq!(f.severity, Severity::Fatal);
        assert!(f.message.contains("not a directory") && f.message.contains("install -d"), "{}", f.message);
        assert_eq!(check_data_dir(&file.join("sub")).severity, Severity::Fatal);
    }

    #[test]
    fn a_busy_listen_address_is_reported() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let f = check_listen(taken.local_addr().unwrap());
        assert_eq!(f.severity, Severity::Fatal);
        assert!(f.message.contains("in use"), "{}", f.message);
    }
}

// ------------------------------------------------------------------------------------------
// The Redis Cluster of the `redis-cluster` backend
// ------------------------------------------------------------------------------------------

/// What `marconi check` learns from one node of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub addr: String,
    pub master: bool,
    /// `cluster_state` of `CLUSTER INFO`.
    pub cluster_state: String,
    /// `connected_slaves` of `INFO replication` (masters).
    pub replicas: u32,
    /// `CONFIG GET` values; `None` when CONFIG is renamed or refused.
    pub appendonly: Option<String>,
    pub appendfsync: Option<String>,
    pub full_coverage: Option<String>,
    /// Whether the node has marconi's function library (masters).
    pub library: bool,
    /// Whether the node knows `WAITAOF` (Redis/Valkey 7.2 and later).
    pub waitaof: bool,
}

/// Connects as a shard would (on a throwaway executor) and asks every node for its facts.
fn check_redis_cluster(config: &Config) -> Vec<Finding> {
    let gathered = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("marconi-check-redis")
        .make()
        .map_err(|e| e.to_string())
        .and_then(|ex| ex.run(gather_cluster_facts(config)));
    match gathered {
        Ok(facts) => judge_cluster(config, &facts),
        Err(e) => vec![Finding::fatal(
            "redis",
            format!(
                "cannot use the Redis Cluster at {:?}: {e}. Fix: start it (scripts/redis-cluster.sh start) or \
                 point redis.nodes at reachable seed nodes",
                config.redis.nodes.as_deref().unwrap_or_default()
            ),
        )],
    }
}

async fn gather_cluster_facts(config: &Config) -> Result<Vec<NodeFacts>, String> {
    use crate::redis::Value;
    let remote = crate::shard::connect_remote(config).await.map_err(|e| e.to_string())?;
    let cluster = &remote.cluster;
    let text = |v: &Value| match v {
        Value::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Simple(s) => s.clone(),
        _ => String::new(),
    };
    let field = |info: &str, name: &str| {
        info.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':'))).map(|v| v.trim().to_owned())
    };
    let ask = |args: &'static [&'static [u8]]| async move {
        let answers = cluster.on_every_node(args).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(answers.into_iter().collect::<std::collections::BTreeMap<_, _>>())
    };
    let info = ask(&[b"INFO", b"replication"]).await?;
    let state = ask(&[b"CLUSTER", b"INFO"]).await?;
    let waitaof = ask(&[b"COMMAND", b"INFO", b"WAITAOF"]).await?;
    let library_name = crate::shard::redis::LIBRARY_NAME.as_bytes();
    let libraries = cluster
        .on_every_node(&[b"FUNCTION", b"LIST", b"LIBRARYNAME", library_name])
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>();
    let mut configs: [std::collections::BTreeMap<String, Value>; 3] = Default::default();
    for (i, key) in [&b"appendonly"[..], b"appendfsync", b"cluster-require-full-coverage"].into_iter().enumerate() {
        if let Some(slot) = configs.get_mut(i) {
            *slot = cluster
                .on_every_node(&[b"CONFIG", b"GET", key])
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .collect();
        }
    }
    let config_value = |i: usize, addr: &str| match configs.get(i).and_then(|m| m.get(addr)) {
        Some(Value::Array(pair)) => pair.get(1).map(text),
        _ => None,
    };
    let mut facts = Vec::new();
    for (addr, value) in &info {
        let info = text(value);
        facts.push(NodeFacts {
            addr: addr.clone(),
            master: field(&info, "role").as_deref() == Some("master"),
            cluster_state: state
                .get(addr)
                .map(|v| field(&text(v), "cluster_state").unwrap_or_default())
                .unwrap_or_default(),
            replicas: field(&info, "connected_slaves").and_then(|n| n.parse().ok()).unwrap_or(0),
            appendonly: config_value(0, addr),
            appendfsync: config_value(1, addr),
            full_coverage: config_value(2, addr),
            library: matches!(libraries.get(addr), Some(Value::Array(list)) if !list.is_empty()),
            waitaof: matches!(waitaof.get(addr), Some(Value::Array(list)) if list.iter().any(|c| *c != Value::Nil)),
        });
    }
    Ok(facts)
}

/// Judges the facts against what the configuration asks of the cluster, a fix with each problem.
pub fn judge_cluster(config: &Config, facts: &[NodeFacts]) -> Vec<Finding> {
    use crate::config::RedisAck;
    let wanted = &config.redis;
    let masters: Vec<&NodeFacts> = facts.iter().filter(|f| f.master).collect();
    let mut out = Vec::new();
    let bad_state: Vec<&str> = facts.iter().filter(|f| f.cluster_state != "ok").map(|f| f.addr.as_str()).collect();
    out.push(if bad_state.is_empty() {
        Finding::ok("redis", format!("cluster_state:ok on all {} nodes ({} masters)", facts.len(), masters.len()))
    } else {
        Finding::fatal(
            "redis",
            format!(
                "cluster_state is not ok on {}. Fix: `redis-cli --cluster check {}` and assign every slot \
                 (`redis-cli --cluster fix`)",
                bad_state.join(", "),
                bad_state.first().copied().unwrap_or_default()
            ),
        )
    });
    let needed = if wanted.ack == RedisAck::Async { 0 } else { wanted.ack_replicas };
    let short: Vec<String> =
        masters.iter().filter(|m| m.replicas < needed).map(|m| format!("{} ({})", m.addr, m.replicas)).collect();
    out.push(if short.is_empty() {
        Finding::ok("replicas", format!("every master has at least {needed} connected replica(s) (redis.ack_replicas)"))
    } else {
        Finding::fatal(
            "replicas",
            format!(
                "masters with fewer connected replicas than redis.ack_replicas = {needed}: {}; every write there \
                 would answer 503. Fix: add replicas (`redis-cli --cluster add-node NEW EXISTING --cluster-slave`) \
                 or lower redis.ack_replicas",
                short.join(", ")
            ),
        )
    });
    let not_always: Vec<&str> = facts
        .iter()
        .filter(|f| f.appendonly.as_deref() != Some("yes") || f.appendfsync.as_deref() != Some("always"))
        .map(|f| f.addr.as_str())
        .collect();
    out.push(if not_always.is_empty() {
        Finding::ok("aof", "appendonly yes, appendfsync always on every node")
    } else {
        Finding::warn(
            "aof",
            format!(
                "appendonly/appendfsync is not yes/always (or CONFIG is refused) on {}: a node's crash can lose \
                 what it acknowledged. Fix: `redis-cli -p PORT CONFIG SET appendonly yes` and \
                 `CONFIG SET appendfsync always` on each, and the same in redis.conf",
                not_always.join(", ")
            ),
        )
    });
    let full: Vec<&str> =
        facts.iter().filter(|f| f.full_coverage.as_deref() != Some("no")).map(|f| f.addr.as_str()).collect();
    out.push(if full.is_empty() {
        Finding::ok("coverage", "cluster-require-full-coverage no: one master's failover stops only its own queues")
    } else {
        Finding::warn(
            "coverage",
            format!(
                "cluster-require-full-coverage is not `no` on {}: while one master fails over, every queue stops. \
                 Fix: `CONFIG SET cluster-require-full-coverage no` on each node and in redis.conf",
                full.join(", ")
            ),
        )
    });
    let missing: Vec<&str> = masters.iter().filter(|m| !m.library).map(|m| m.addr.as_str()).collect();
    out.push(if missing.is_empty() {
        Finding::ok("library", format!("function library {} on every master", crate::shard::redis::LIBRARY_NAME))
    } else {
        Finding::fatal(
            "library",
            format!(
                "masters without the {} function library: {}. Fix: marconi loads it when it connects; check that \
                 its Redis user may run FUNCTION LOAD",
                crate::shard::redis::LIBRARY_NAME,
                missing.join(", ")
            ),
        )
    });
    if wanted.ack == RedisAck::Fsync {
        let old: Vec<&str> = facts.iter().filter(|f| !f.waitaof).map(|f| f.addr.as_str()).collect();
        out.push(if old.is_empty() {
            Finding::ok("waitaof", "every node knows WAITAOF (redis.ack = fsync)")
        } else {
            Finding::fatal(
                "waitaof",
                format!(
                    "redis.ack = fsync needs WAITAOF (Redis or Valkey 7.2+), which {} lack(s); every write would \
                     fail. Fix: upgrade those nodes, or use redis.ack = replicas",
                    old.join(", ")
                ),
            )
        });
    }
    out
}

#[cfg(test)]
mod cluster_tests {
    use super::*;
    use crate::config::RedisAck;

    fn healthy(addr: &str, master: bool) -> NodeFacts {
        NodeFacts {
            addr: addr.into(),
            master,
            cluster_state: "ok".into(),
            replicas: u32::from(master),
            appendonly: Some("yes".into()),
            appendfsync: Some("always".into()),
            full_coverage: Some("no".into()),
            library: master,
            waitaof: false,
        }
    }

    fn verdicts(config: &Config, facts: &[NodeFacts]) -> Vec<(&'static str, Severity)> {
        judge_cluster(config, facts).into_iter().map(|f| (f.check, f.severity)).collect()
    }

    #[test]
    fn a_healthy_cluster_passes_and_each_problem_names_its_fix() {
        let config = Config::default();
        let mut facts = vec![healthy("a:1", true), healthy("b:1", false)];
        assert!(verdicts(&config, &facts).iter().all(|(_, s)| *s == Severity::Ok), "{:?}", verdicts(&config, &facts));

        facts[0].replicas = 0;
        facts[1].appendfsync = Some("everysec".into());
        facts[1].full_coverage = None;
        facts[0].library = false;
        facts[1].cluster_state = "fail".into();
        let found = judge_cluster(&config, &facts);
        for (check, severity) in [
            ("redis", Severity::Fatal),
            ("replicas", Severity::Fatal),
            ("aof", Severity::Warning),
            ("coverage", Severity::Warning),
            ("library", Severity::Fatal),
        ] {
            let f = found.iter().find(|f| f.check == check).unwrap_or_else(|| panic!("no {check} finding"));
            assert_eq!(f.severity, severity, "{}", f.message);
            assert!(f.message.contains("Fix:"), "{}", f.message);
        }
    }

    #[test]
    fn replicas_matter_unless_async_and_fsync_needs_waitaof() {
        let mut config = Config::default();
        let facts = vec![healthy("a:1", true)];
        config.redis.ack_replicas = 2;
        assert!(verdicts(&config, &facts).contains(&("replicas", Severity::Fatal)));
        config.redis.ack = RedisAck::Async;
        assert!(verdicts(&config, &facts).contains(&("replicas", Severity::Ok)));
        config.redis.ack = RedisAck::Fsync;
        config.redis.ack_replicas = 1;
        assert!(verdicts(&config, &facts).contains(&("waitaof", Severity::Fatal)));
        let newer = vec![NodeFacts { waitaof: true, ..healthy("a:1", true) }];
        assert!(verdicts(&config, &newer).contains(&("waitaof", Severity::Ok)));
    }
}
