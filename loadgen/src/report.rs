//! The end-of-run summary: one struct, printed either for people or as one JSON object.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::cli::{Args, Workload};
use crate::stats::Percentiles;

#[derive(Debug, Clone, Serialize)]
pub struct OpSummary {
    pub requests: u64,
    pub rps: f64,
    pub latency_us: Percentiles,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectionsReport {
    /// Connections the run asked for (readers included).
    pub target: usize,
    /// Connections that were open when the run ended.
    pub open_at_end: u64,
    /// Connections that were open at the end of the measured window.
    pub open_at_window_end: u64,
    /// First connects that failed (or did not finish within the connect phase).
    pub failed_connects: u64,
    /// TCP connects made during the whole run, first ones included.
    pub connects: u64,
    /// Time of the first connect of each connection.
    pub connect_us: Percentiles,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditReport {
    pub posted: u64,
    pub delivered: u64,
    pub remaining: u64,
    pub lost: u64,
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `agents`: what the drain saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentsReport {
    pub agents: usize,
    pub producers: usize,
    /// Commands acknowledged (201) to the producers, warm-up included.
    pub acknowledged: u64,
    /// Commands whose post got no answer (stored or not).
    pub unknown: u64,
    /// Commands delivered to their agent (first deliveries; duplicates are counted apart).
    pub delivered: u64,
    /// Every command that may have been stored was delivered before the drain ran out.
    pub drained: bool,
}

/// Memory at the end of the measured window, from `/proc/<pid>/status` (KiB).
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemoryReport {
    pub server_pid: Option<u32>,
    /// The server's VmRSS at the end of the window.
    pub server_rss_kib: Option<u64>,
    /// The largest server VmRSS seen, sampled once a second during the window.
    pub server_rss_max_kib: Option<u64>,
    /// The server's VmHWM (peak RSS of its whole life) at the end of the window.
    pub server_hwm_kib: Option<u64>,
    /// loadgen's own VmRSS at the end of the window.
    pub loadgen_rss_kib: Option<u64>,
}

impl MemoryReport {
    /// Takes one sample of the server's RSS into the maximum.
    pub fn sample_server(&mut self) {
        if let Some(rss) = self.server_pid.and_then(|pid| vm_kib(&pid.to_string(), "VmRSS")) {
            self.server_rss_max_kib = Some(self.server_rss_max_kib.unwrap_or(0).max(rss));
        }
    }

    /// The end-of-window readings.
    pub fn window_end(&mut self, server: Option<u32>) {
        if let Some(pid) = server {
            self.server_rss_kib = vm_kib(&pid.to_string(), "VmRSS");
            self.server_hwm_kib = vm_kib(&pid.to_string(), "VmHWM");
        }
        self.loadgen_rss_kib = vm_kib("self", "VmRSS");
    }
}

/// A `kB` field of `/proc/<pid>/status`.
pub fn vm_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub workload: Workload,
    pub params: Args,
    pub run_id: String,
    pub client_id: String,
    /// `closed` (as fast as possible) or `open` (fixed rate, latency from intended send time).
    pub mode: &'static str,
    pub threads: usize,
    /// Seconds measured (after warm-up).
    pub duration_s: f64,
    pub requests: u64,
    pub ok: u64,
    /// The workload's message count: posted (produce), deleted after claim (consume),
    /// delivered to readers (pubsub), posted + deleted (mixed).
    pub messages: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub rps: f64,
    pub mps: f64,
    pub latency_us: Percentiles,
    pub ops: BTreeMap<String, OpSummary>,
    /// Claims that found nothing and pages that were empty.
    pub empty_responses: u64,
    pub errors: BTreeMap<String, u64>,
    pub error_count: u64,
    pub violations: u64,
    pub violation_samples: Vec<String>,
    /// Duplicate deliveries not counted as violations because the claim TTL was shorter than
    /// the run (legal at-least-once redelivery).
    pub redeliveries: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_latency_us: Option<Percentiles>,
    /// Duplicate deliveries, legal (`redeliveries`) or not (violations).
    pub duplicates: u64,
    /// Requests in flight per connection.
    pub pipeline: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<AgentsReport>,
    pub memory: MemoryReport,
    pub connections: ConnectionsReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefilled: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup_failures: Option<u64>,
    pub warnings: Vec<String>,
    /// The run was cut short by Ctrl-C.
    pub interrupted: bool,
}

impl Summary {
    /// 0 = clean; 1 = violations (or errors under `--fail-on-errors`).
    pub fn exit_code(&self) -> i32 {
        if self.violations > 0 || (self.params.fail_on_errors && self.error_count > 0) {
            1
        } else {
            0
        }
    }

    pub fn to_json(&self) -> String {
        // Summary holds only strings, numbers and maps with string keys: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn human(&self) -> String {
        let p = &self.params;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "loadgen {} -> {} ({} loop{}{}, {} connections on cpus {}, {} project(s) x {} queue(s), {})",
            self.workload,
            p.url,
            self.mode,
            p.rate.map(|r| format!(" at {r} req/s")).unwrap_or_default(),
            if self.pipeline > 1 { format!(", pipeline {}", self.pipeline) } else { String::new() },
            self.connections.target,
            p.cpus,
            p.projects,
            p.queues,
            p.dist
        );
        let _ = writeln!(
            s,
            "  duration  {:.2} s   requests {} (ok {})   {:.1} req/s   {:.1} msg/s   (sent {}, received {})",
            self.duration_s, self.requests, self.ok, self.rps, self.mps, self.messages_sent, self.messages_received
        );
        let _ = writeln!(s, "  latency   {}", fmt_percentiles(&self.latency_us));
        for (name, op) in &self.ops {
            let _ = writeln!(
                s,
                "    {name:<15} {:>9} req {:>10.1}/s  {}",
                op.requests,
                op.rps,
                fmt_percentiles(&op.latency_us)
            );
        }
        if let Some(d) = &self.delivery_latency_us {
            let how = if self.workload == Workload::Agents {
                "post -> claimed by its agent"
            } else {
                "post -> read by a reader"
            };
            let _ = writeln!(s, "  delivery  {} ({how})", fmt_percentiles(d));
        }
        if let Some(g) = &self.agents {
            let _ = writeln!(
                s,
                "  agents    {} agents, {} producers: commands acknowledged {} (no answer {}), delivered {}, duplicates {}, {}",
                g.agents,
                g.producers,
                g.acknowledged,
                g.unknown,
                g.delivered,
                self.duplicates,
                if g.drained { "all delivered" } else { "NOT all delivered when the drain ran out" }
            );
        }
        if matches!(self.workload, Workload::Connections | Workload::Agents) || self.connections.failed_connects > 0 {
            let c = &self.connections;
            let _ = writeln!(
                s,
                "  connections open at window end {}, at end {} of {}, failed first connects {}, connects {}, connect {}",
                c.open_at_window_end,
                c.open_at_end,
                c.target,
                c.failed_connects,
                c.connects,
                fmt_percentiles(&c.connect_us)
            );
        }
        let m = &self.memory;
        if let Some(pid) = m.server_pid {
            let kib = |v: Option<u64>| v.map_or("?".to_string(), |v| format!("{:.1} MiB", v as f64 / 1024.0));
            let _ = writeln!(
                s,
                "  memory    server (pid {pid}) RSS at window end {}, max {}, peak (VmHWM) {}; loadgen RSS {}",
                kib(m.server_rss_kib),
                kib(m.server_rss_max_kib),
                kib(m.server_hwm_kib),
                kib(m.loadgen_rss_kib)
            );
        }
        if self.empty_responses > 0 {
            let _ = writeln!(s, "  empty claims/pages {}", self.empty_responses);
        }
        if let Some(n) = self.prefilled {
            let _ = writeln!(s, "  prefilled {n} messages");
        }
        if let Some(a) = &self.audit {
            let _ = writeln!(
                s,
                "  audit     posted {} delivered {} still queued {} lost {}{}",
                a.posted,
                a.delivered,
                a.remaining,
                a.lost,
                if a.complete { String::new() } else { format!(" (incomplete: {})", a.note.as_deref().unwrap_or("?")) }
            );
        }
        if self.errors.is_empty() {
            let _ = writeln!(s, "  errors    none");
        } else {
            let list: Vec<String> = self.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(s, "  errors    {} ({})", self.error_count, list.join(" "));
        }
        if self.redeliveries > 0 {
            let _ = writeln!(s, "  redeliveries {} (legal: claim TTL shorter than the run)", self.redeliveries);
        }
        if self.violations == 0 {
            let _ = writeln!(s, "  violations none");
        } else {
            let _ = writeln!(s, "  VIOLATIONS {}:", self.violations);
            for v in &self.violation_samples {
                let _ = writeln!(s, "    - {v}");
            }
        }
        for w in &self.warnings {
            let _ = writeln!(s, "  warning: {w}");
        }
        if self.interrupted {
            let _ = writeln!(s, "  interrupted by Ctrl-C");
        }
        s
    }
}

fn fmt_percentiles(p: &Percentiles) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}",
        fmt_us(p.p50),
        fmt_us(p.p90),
        fmt_us(p.p99),
        fmt_us(p.p99_9),
        fmt_us(p.p99_99),
        fmt_us(p.max)
    )
}

/// µs below 10 ms, ms above: readable at a glance across six orders of magnitude.
pub fn fmt_us(us: u64) -> String {
    if us < 10_000 {
        format!("{us}us")
    } else if us < 10_000_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(fmt_us(950), "950us");
        assert_eq!(fmt_us(12_345), "12.3ms");
        assert_eq!(fmt_us(12_345_678), "12.35s");
    }
}
