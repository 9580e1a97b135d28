//! Orchestration: prefill, start one pinned executor per `--cpus` entry, synchronise their
//! start, print progress, enforce the hard stop, merge, audit, clean up, summarise.

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use thiserror::Error;

use crate::check::{self, merge_logs, Violation};
use crate::cli::{Args, Workload};
use crate::plan::{Budget, Clock, Plan, PlanError};
use crate::poll::{with_poller, Poller};
use crate::report::{AgentsReport, AuditReport, ConnectionsReport, MemoryReport, OpSummary, Summary};
use crate::setup::{self, SetupError};
use crate::stats::{Percentiles, Stats};
use crate::worker::{run_thread, Gate, ThreadResult};

/// io_uring registered-buffer memory per executor. glommio's default is far above the 8 MiB
/// locked-memory limit common on shared machines (rings then fail to register); the client
/// reads into its own buffers, so a small pool is enough.
const IO_MEMORY: usize = 512 * 1024;
/// Slack after the end before the watchdog gives up on the workers and exits the process.
const WATCHDOG_SLACK: Duration = Duration::from_secs(15);

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("cannot run a client thread on cpu {cpu}: {reason}")]
    Executor { cpu: usize, reason: String },
}

/// Runs `f` to completion on a fresh executor pinned to `cpu`, with a socket poller.
fn on_executor<T, F, Fut>(cpu: usize, name: &str, f: F) -> Result<T, RunError>
where
    T: Send + 'static,
    F: FnOnce(Rc<Poller>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    let err = |e: String| RunError::Executor { cpu, reason: e };
    LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name(name)
        .io_memory(IO_MEMORY)
        .spawn(move || with_poller(f))
        .map_err(|e| err(e.to_string()))?
        .join()
        .map_err(|e| err(e.to_string()))?
        .map_err(|e| err(format!("cannot start the socket poller: {e}")))
}

/// CPUs this process may run on, to turn a bad `--cpus` into a clear error up front.
fn allowed_cpus() -> Option<HashSet<usize>> {
    // SAFETY: sched_getaffinity fills a zeroed cpu_set_t of the size we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        Some((0..libc::CPU_SETSIZE as usize).filter(|c| libc::CPU_ISSET(*c, &set)).collect())
    }
}

/// Raises the open-file soft limit to the hard limit: each connection is a descriptor.
fn raise_nofile_limit(needed: usize) -> Option<String> {
    // SAFETY: getrlimit/setrlimit on a properly initialised struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        let want = needed as u64 + 64;
        (lim.rlim_cur < want).then(|| {
            format!("open-file limit {} is below the {needed} connections asked for; raise `ulimit -Hn`", lim.rlim_cur)
        })
    }
}

pub fn run(args: Args) -> Result<Summary, RunError> {
    let plan = Arc::new(Plan::new(args)?);
    let mut warnings = plan.warnings();
    warnings.extend(raise_nofile_limit(plan.total_connections));
    for w in &warnings {
        eprintln!("loadgen: warning: {w}");
    }
    let cpus = plan.args.cpus.0.clone();
    if let Some(allowed) = allowed_cpus() {
        if let Some(bad) = cpus.iter().find(|c| !allowed.contains(c)) {
            return Err(RunError::Executor {
                cpu: *bad,
                reason: format!("not in this process's CPU set {:?}", {
                    let mut v: Vec<_> = allowed.into_iter().collect();
                    v.sort_unstable();
                    v
                }),
            });
        }
    }
    let progress = !plan.args.no_progress;
    crate::worker::install_sigint_handler();

    // Phase 1: prefill (not measured).
    let mut prefilled: HashSet<u64> = HashSet::new();
    if plan.prefill > 0 {
        if progress {
            eprintln!("loadgen: prefilling {} queue(s) with {} messages each", plan.queues.len(), plan.prefill);
        }
        let p = plan.clone();
        let pre = on_executor(cpus[0], "loadgen-prefill", move |poller| setup::prefill(p, poller))??;
        if progress {
            eprintln!("loadgen: prefilled {} messages in {:.1} s", pre.posted.len(), pre.elapsed.as_secs_f64());
        }
        prefilled = pre.posted;
    }

    // Phase 2: the run.
    let threads = cpus.len();
    let connect_cap = plan.timeout.max(Duration::from_secs(60));
    let producers = if plan.args.workload == Workload::Agents { plan.args.connections } else { 0 };
    let gate = Arc::new(Gate::new(threads, Budget::new(plan.args.requests), Instant::now() + connect_cap, producers));
    let mut handles = Vec::new();
    let mut spawn_error = None;
    for (i, cpu) in cpus.iter().copied().enumerate() {
        let (p, g) = (plan.clone(), gate.clone());
        match LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name("loadgen")
            .io_memory(IO_MEMORY)
            .spawn(move || run_thread(p, g, i))
        {
            Ok(h) => handles.push(h),
            Err(e) => {
                spawn_error = Some(RunError::Executor { cpu, reason: e.to_string() });
                break;
            }
        }
    }
    if let Some(e) = spawn_error {
        // Let the threads that did start finish at once: a start with the deadline behind it.
        let _ = gate.start.set(Instant::now() - plan.warmup - plan.duration);
        for h in handles {
            let _ = h.join();
        }
        return Err(e);
    }

    // Wait for every thread's connect phase (bounded by the connect deadline).
    let mut last_print = Instant::now();
    while gate.ready.load(Ordering::SeqCst) < threads
        && Instant::now() < gate.connect_deadline + Duration::from_secs(1)
        && !crate::worker::stopped()
    {
        std::thread::sleep(Duration::from_millis(20));
        if progress && last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let open: u64 = gate.slots.iter().map(|s| s.open_conns.load(Ordering::Relaxed)).sum();
            eprintln!("[connecting] {open} of {} open", plan.total_connections);
        }
    }
    let start = Instant::now();
    let _ = gate.start.set(start);
    let clock = Clock::new(&plan, start);

    let finished_flag = Arc::new(AtomicBool::new(false));
    {
        // Hard stop: every request has a timeout, so workers end by `end + tail`; if they
        // somehow don't, exit rather than hang a benchmark script forever.
        let flag = finished_flag.clone();
        let hard = clock.end + plan.tail() + WATCHDOG_SLACK;
        std::thread::spawn(move || {
            while Instant::now() < hard {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !flag.load(Ordering::SeqCst) {
                eprintln!("loadgen: workers did not stop by the hard deadline; exiting");
                std::process::exit(3);
            }
        });
    }

    let mut conns = ConnectionsReport { target: plan.total_connections, ..ConnectionsReport::default() };
    let mut printer = Progress::new(start, clock.measure_start);
    let mut memory = MemoryReport { server_pid: plan.args.server_pid, ..MemoryReport::default() };
    let mut window_open = true;
    let mut last_sample: Option<Instant> = None;
    while gate.done.load(Ordering::SeqCst) < threads {
        // Wakes at the window's end to the millisecond, to read memory before the drain.
        let left = clock.end.saturating_duration_since(Instant::now());
        let nap = if window_open && !left.is_zero() { left } else { Duration::from_millis(50) };
        std::thread::sleep(nap.min(Duration::from_millis(50)));
        if progress {
            printer.maybe_print(&gate);
        }
        let now = Instant::now();
        if window_open && last_sample.is_none_or(|t| now - t >= Duration::from_secs(1)) {
            last_sample = Some(now);
            memory.sample_server();
        }
        if window_open && now >= clock.end {
            // The end of the measured window, before agents drain and connections close.
            window_open = false;
            memory.sample_server();
            memory.window_end(plan.args.server_pid);
        }
    }
    if window_open {
        // The run ended early (requests budget, Ctrl-C): its end is the window's.
        memory.sample_server();
        memory.window_end(plan.args.server_pid);
    }
    conns.open_at_window_end = gate.slots.iter().map(|s| s.open_at_window_end.load(Ordering::Relaxed)).sum();
    let mut results: Vec<ThreadResult> = Vec::new();
    for (h, cpu) in handles.into_iter().zip(&cpus) {
        let err = |reason: String| RunError::Executor { cpu: *cpu, reason };
        results.push(h.join().map_err(|e| err(e.to_string()))?.map_err(err)?);
    }
    let finished = Instant::now();
    finished_flag.store(true, Ordering::SeqCst);

    // Merge.
    let mut stats = Stats::default();
    let mut logs = Vec::new();
    let last_done = results.iter().filter_map(|r| r.last_done).max();
    for r in results {
        stats.merge(&r.stats);
        conns.open_at_end += r.open_at_end;
        conns.failed_connects += r.failed_connects;
        conns.connects += r.connects;
        logs.push(r.log);
    }
    conns.connect_us = Percentiles::of(&stats.connect);

    // Phase 3: audit and cleanup (not measured).
    let mut audit_report = None;
    if plan.track_deliveries {
        let mut merged = merge_logs(logs);
        merged.posted.extend(prefilled.iter().copied());
        for key in &merged.duplicates {
            stats.duplicates += 1;
            if plan.redelivery_legal {
                stats.redeliveries += 1;
            } else {
                let v = Violation::Duplicate { key: *key, context: "claimed on two threads" };
                stats.violation(|| v.to_string());
            }
        }
        let mut report = AuditReport {
            posted: merged.posted.len() as u64,
            delivered: merged.delivered.len() as u64,
            ..AuditReport::default()
        };
        if plan.args.no_audit {
            report.note = Some("skipped (--no-audit)".into());
        } else {
            if progress {
                eprintln!("loadgen: auditing what is left in the queues");
            }
            let p = plan.clone();
            let expected = merged.posted.len();
            let audit = on_executor(cpus[0], "loadgen-audit", move |poller| setup::audit(p, poller, expected))?;
            report.remaining = audit.remaining.len() as u64;
            report.complete = audit.complete;
            report.note = audit.note;
            if audit.complete {
                let lost = check::lost(&merged.posted, &merged.delivered, &audit.remaining);
                report.lost = lost.len() as u64;
                if let Some(first) = lost.first() {
                    let v = Violation::Lost { count: lost.len() as u64, example: *first };
                    stats.violation(|| v.to_string());
                }
            }
        }
        audit_report = Some(report);
    }
    let mut cleanup_failures = None;
    let touches_queues = !matches!(plan.args.workload, Workload::Connections);
    if touches_queues && !plan.args.no_cleanup {
        let p = plan.clone();
        cleanup_failures = Some(on_executor(cpus[0], "loadgen-cleanup", move |poller| setup::cleanup(p, poller))?);
    }

    // Summary.
    // Stopped by `--requests`: the window ends with the last answer. Stopped by time: it is
    // the configured duration (answers still in flight at the end add no extra time).
    let measured = if gate.budget.exhausted() {
        last_done.unwrap_or(finished).saturating_duration_since(clock.measure_start)
    } else {
        finished.saturating_duration_since(clock.measure_start).min(plan.duration)
    };
    let secs = measured.as_secs_f64().max(1e-6);
    let messages = match plan.args.workload {
        Workload::Produce => stats.messages_sent,
        Workload::Consume | Workload::Pubsub | Workload::Agents => stats.messages_received,
        Workload::Mixed => stats.messages_sent + stats.messages_received,
        Workload::Queues | Workload::Connections => 0,
    };
    let ops: BTreeMap<String, OpSummary> = stats
        .ops()
        .map(|(op, s)| {
            (
                op.name().to_string(),
                OpSummary {
                    requests: s.requests,
                    rps: round1(s.requests as f64 / secs),
                    latency_us: Percentiles::of(&s.latency),
                },
            )
        })
        .collect();
    Ok(Summary {
        workload: plan.args.workload,
        params: plan.args.clone(),
        run_id: plan.run_id.clone(),
        client_id: plan.client_id.clone(),
        mode: plan.mode(),
        threads,
        duration_s: (secs * 1000.0).round() / 1000.0,
        requests: stats.requests,
        ok: stats.ok,
        messages,
        messages_sent: stats.messages_sent,
        messages_received: stats.messages_received,
        rps: round1(stats.requests as f64 / secs),
        mps: round1(messages as f64 / secs),
        latency_us: Percentiles::of(&stats.latency),
        ops,
        empty_responses: stats.empty,
        error_count: stats.error_count(),
        errors: stats.errors.clone(),
        violations: stats.violations,
        violation_samples: stats.violation_samples.clone(),
        redeliveries: stats.redeliveries,
        delivery_latency_us: matches!(plan.args.workload, Workload::Pubsub | Workload::Agents)
            .then(|| Percentiles::of(&stats.delivery)),
        duplicates: stats.duplicates,
        pipeline: plan.pipeline,
        agents: (plan.args.workload == Workload::Agents).then(|| AgentsReport {
            agents: plan.args.agents,
            producers: plan.args.connections,
            acknowledged: gate.drain.acked.load(Ordering::SeqCst),
            unknown: gate.drain.unknown.load(Ordering::SeqCst),
            delivered: gate.drain.delivered.load(Ordering::SeqCst),
            drained: gate.drain.complete(),
        }),
        memory,
        connections: conns,
        prefilled: (plan.prefill > 0).then_some(prefilled.len() as u64),
        audit: audit_report,
        cleanup_failures,
        warnings,
        interrupted: crate::worker::stopped(),
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The once-a-second stderr line.
struct Progress {
    start: Instant,
    measure_start: Instant,
    last: Instant,
    last_requests: u64,
    last_messages: u64,
    last_latency: u64,
}

impl Progress {
    fn new(start: Instant, measure_start: Instant) -> Progress {
        Progress { start, measure_start, last: start, last_requests: 0, last_messages: 0, last_latency: 0 }
    }

    fn maybe_print(&mut self, gate: &Gate) {
        let now = Instant::now();
        let dt = now.duration_since(self.last);
        if dt < Duration::from_secs(1) {
            return;
        }
        let sum = |f: fn(&crate::worker::Slot) -> u64| -> u64 { gate.slots.iter().map(f).sum() };
        let requests = sum(|s| s.requests.load(Ordering::Relaxed));
        let messages = sum(|s| s.messages.load(Ordering::Relaxed));
        let latency = sum(|s| s.latency_sum_us.load(Ordering::Relaxed));
        let errors = sum(|s| s.errors.load(Ordering::Relaxed));
        let violations = sum(|s| s.violations.load(Ordering::Relaxed));
        let open = sum(|s| s.open_conns.load(Ordering::Relaxed));
        let d_req = requests - self.last_requests;
        let avg_ms = if d_req > 0 { (latency - self.last_latency) as f64 / d_req as f64 / 1000.0 } else { 0.0 };
        let phase = if now < self.measure_start { "warmup" } else { "run" };
        let secs = dt.as_secs_f64();
        eprintln!(
            "[{:>4.0}s {phase}] {:>9.0} req/s {:>9.0} msg/s  avg {avg_ms:.2} ms  requests {requests}  errors {errors}  violations {violations}  open conns {open}",
            now.duration_since(self.start).as_secs_f64(),
            d_req as f64 / secs,
            (messages - self.last_messages) as f64 / secs,
        );
        self.last = now;
        self.last_requests = requests;
        self.last_messages = messages;
        self.last_latency = latency;
    }
}
