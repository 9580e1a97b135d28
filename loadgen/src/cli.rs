//! Command-line interface. Every knob is a flag so that a benchmark run is fully described by
//! its command line (and echoed back under `params` in the `--json` summary).

use std::fmt;
use std::str::FromStr;

use clap::{Parser, ValueEnum};
use serde::{Serialize, Serializer};

/// What the generator does on each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// POST batches of `--batch` messages of `--message-bytes` bytes.
    Produce,
    /// Claim up to `--claim-limit` messages, then DELETE each one with its claim id.
    Consume,
    /// Producers post while `--readers` readers per queue follow their own `next` markers.
    Pubsub,
    /// Create, list and delete queues.
    Queues,
    /// Hold `--connections` idle keep-alive connections, pinging each now and then.
    Connections,
    /// A weighted blend of operations, see `--mix`.
    Mixed,
    /// `--agents` connections each long-poll (claim with `wait`) their own queue while the
    /// `--connections` producers post commands to random agents; reports delivery latency.
    Agents,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Workload::Produce => "produce",
            Workload::Consume => "consume",
            Workload::Pubsub => "pubsub",
            Workload::Queues => "queues",
            Workload::Connections => "connections",
            Workload::Mixed => "mixed",
            Workload::Agents => "agents",
        };
        f.write_str(s)
    }
}

/// Drives a Zaqar v2 endpoint with a thread-per-core HTTP/1.1 client and checks the answers.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(name = "loadgen", version, about, long_about = None)]
pub struct Args {
    /// Workload to run.
    #[arg(short, long, value_enum, default_value_t = Workload::Produce)]
    pub workload: Workload,

    /// Base URL of the server; must be a loopback address (127.0.0.0/8, ::1 or localhost).
    #[arg(long, default_value = "http://127.0.0.1:8888")]
    pub url: String,

    /// Connections for the run, spread round-robin over the `--cpus` threads. In `pubsub` these
    /// are the producers; the readers come on top (`--readers` per queue).
    #[arg(short, long, default_value_t = 16)]
    pub connections: usize,

    /// CPUs to run client threads on, one pinned executor each: `1`, `0,1` or `2-5`.
    #[arg(long, default_value = "0")]
    pub cpus: CpuList,

    /// Open loop: total requests per second, scheduled at fixed intervals. Latency is measured
    /// from each request's intended send time, so a stalled server is not hidden (coordinated
    /// omission). Without it the run is closed-loop: each connection sends as fast as it can.
    #[arg(long)]
    pub rate: Option<f64>,

    /// Requests in flight per connection (`produce`, and `mixed` without `consume`): a
    /// connection writes this many at once and reads their answers in order.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,

    /// `agents`: agent connections, each claiming from its own queue `<queue-prefix>-agent-<i>`.
    #[arg(long, default_value_t = 100)]
    pub agents: usize,

    /// `agents`: the `wait` (long poll, seconds) of each claim.
    #[arg(long, default_value_t = 20)]
    pub wait_s: u32,

    /// `agents`: seconds the agents go on claiming after the measured window, until every
    /// acknowledged command has been delivered.
    #[arg(long, default_value_t = 10.0)]
    pub drain_s: f64,

    /// Process id of the server, to report its memory (VmRSS, VmHWM from /proc) at the end of
    /// the measured window.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Seconds of load before measuring starts (requests run but are not recorded).
    #[arg(long, default_value_t = 0.0)]
    pub warmup_s: f64,

    /// Seconds to measure. Defaults to 10, or to a 600 s cap when `--requests` is given.
    #[arg(long)]
    pub duration_s: Option<f64>,

    /// Stop after this many measured requests (over all connections).
    #[arg(long)]
    pub requests: Option<u64>,

    /// Per-request timeout in milliseconds (connect + send + full response).
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,

    /// `Client-ID` header; a random UUID by default.
    #[arg(long)]
    pub client_id: Option<String>,

    /// Number of projects (`X-Project-ID` values `<project-prefix>-<i>`).
    #[arg(long, default_value_t = 1)]
    pub projects: usize,

    /// Queues per project.
    #[arg(long, default_value_t = 1)]
    pub queues: usize,

    /// How requests pick a queue: `uniform`, or `zipf:<s>` (queue 0 of project 0 is hottest).
    #[arg(long, default_value = "uniform")]
    pub dist: Dist,

    /// Size in bytes of each message body (JSON object with a padding field).
    #[arg(long, default_value_t = 256)]
    pub message_bytes: usize,

    /// Messages per POST.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,

    /// `limit` of each claim (1..20 on Zaqar).
    #[arg(long, default_value_t = 10)]
    pub claim_limit: usize,

    /// Readers per queue in `pubsub`.
    #[arg(long, default_value_t = 1)]
    pub readers: usize,

    /// Weights of `mixed`: comma list of op=weight, ops: produce, consume, list, stats, ping.
    #[arg(long, default_value = "produce=1,consume=1,list=1")]
    pub mix: Mix,

    /// Messages posted to each queue before `consume` (default 1000) or `mixed` (default 0)
    /// starts; not measured.
    #[arg(long)]
    pub prefill: Option<usize>,

    /// TTL in seconds of posted messages.
    #[arg(long, default_value_t = 3600)]
    pub message_ttl: u32,

    /// Claim TTL in seconds. Defaults to longer than the whole run so that any duplicate
    /// delivery is a violation rather than a legal redelivery after claim expiry.
    #[arg(long)]
    pub claim_ttl: Option<u32>,

    /// Claim grace in seconds.
    #[arg(long, default_value_t = 60)]
    pub claim_grace: u32,

    /// Bind client sockets to this many loopback source addresses 127.0.0.1..127.0.0.K, so that
    /// more than ~28k connections fit the ephemeral port range. 0 = automatic (one address per
    /// 25,000 connections in `connections`, else none).
    #[arg(long, default_value_t = 0)]
    pub source_ips: usize,

    /// Closed loop: pause after an empty claim, an empty page or a transport error before the
    /// next request (ms), so an idle queue or a dead server is not spun on.
    #[arg(long, default_value_t = 10)]
    pub poll_interval_ms: u64,

    /// `connections`: seconds between pings on each idle connection.
    #[arg(long, default_value_t = 10.0)]
    pub ping_interval_s: f64,

    /// Connects in flight at once per thread (keeps the server's accept backlog from overflowing).
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,

    /// Queue name prefix; defaults to `lg-<random run id>` so that runs never see each other.
    #[arg(long)]
    pub queue_prefix: Option<String>,

    /// Project id prefix.
    #[arg(long, default_value = "loadgen")]
    pub project_prefix: String,

    /// Print one JSON object as the summary instead of the human summary.
    #[arg(long)]
    pub json: bool,

    /// No per-second progress line on stderr.
    #[arg(long)]
    pub no_progress: bool,

    /// Exit non-zero on request errors too, not only on violations.
    #[arg(long)]
    pub fail_on_errors: bool,

    /// Skip the post-run audit (`consume`/`mixed`: list what is left to find lost messages).
    #[arg(long)]
    pub no_audit: bool,

    /// Leave the run's queues in place instead of deleting them at the end.
    #[arg(long)]
    pub no_cleanup: bool,
}

/// A list of CPU ids, parsed from `0,1` or `0-3` forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

impl FromStr for CpuList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut cpus = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some((a, b)) = part.split_once('-') {
                let a: usize = a.trim().parse().map_err(|_| format!("bad cpu `{a}`"))?;
                let b: usize = b.trim().parse().map_err(|_| format!("bad cpu `{b}`"))?;
                if a > b {
                    return Err(format!("bad cpu range `{part}`"));
                }
                cpus.extend(a..=b);
            } else {
                cpus.push(part.parse().map_err(|_| format!("bad cpu `{part}`"))?);
            }
        }
        if cpus.is_empty() {
            return Err("no cpus given".into());
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = cpus.iter().find(|c| !seen.insert(**c)) {
            return Err(format!("cpu {dup} listed twice"));
        }
        Ok(CpuList(cpus))
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|c| c.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

impl Serialize for CpuList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Queue-choice distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dist {
    Uniform,
    /// Zipf with exponent `s` > 0 over the flattened (project, queue) list.
    Zipf(f64),
}

impl FromStr for Dist {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "uniform" {
            return Ok(Dist::Uniform);
        }
        if let Some(exp) = s.strip_prefix("zipf:") {
            let e: f64 = exp.parse().map_err(|_| format!("bad zipf exponent `{exp}`"))?;
            if !(e.is_finite() && e > 0.0) {
                return Err("zipf exponent must be > 0".into());
            }
            return Ok(Dist::Zipf(e));
        }
        if s == "zipf" {
            return Ok(Dist::Zipf(1.0));
        }
        Err(format!("unknown distribution `{s}` (uniform | zipf:<s>)"))
    }
}

impl fmt::Display for Dist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dist::Uniform => f.write_str("uniform"),
            Dist::Zipf(s) => write!(f, "zipf:{s}"),
        }
    }
}

impl Serialize for Dist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One operation of the `mixed` workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MixOp {
    Produce,
    Consume,
    List,
    Stats,
    Ping,
}

impl MixOp {
    pub fn name(self) -> &'static str {
        match self {
            MixOp::Produce => "produce",
            MixOp::Consume => "consume",
            MixOp::List => "list",
            MixOp::Stats => "stats",
            MixOp::Ping => "ping",
        }
    }
}

/// Weighted blend for `mixed`, e.g. `produce=3,consume=2,list=1`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix(pub Vec<(MixOp, u32)>);

impl Mix {
    pub fn weight(&self, op: MixOp) -> u32 {
        self.0.iter().filter(|(o, _)| *o == op).map(|(_, w)| *w).sum()
    }
}

impl FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut ops = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = part.split_once('=').unwrap_or((part, "1"));
            let op = match name.trim() {
                "produce" => MixOp::Produce,
                "consume" => MixOp::Consume,
                "list" => MixOp::List,
                "stats" => MixOp::Stats,
                "ping" => MixOp::Ping,
                other => return Err(format!("unknown mix op `{other}` (produce, consume, list, stats, ping)")),
            };
            let w: u32 = w.trim().parse().map_err(|_| format!("bad weight `{w}`"))?;
            if ops.iter().any(|(o, _)| *o == op) {
                return Err(format!("mix op `{name}` given twice"));
            }
            ops.push((op, w));
        }
        if ops.iter().map(|(_, w)| *w as u64).sum::<u64>() == 0 {
            return Err("mix weights add up to 0".into());
        }
        Ok(Mix(ops))
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(o, w)| format!("{}={w}", o.name())).collect();
        f.write_str(&parts.join(","))
    }
}

impl Serialize for Mix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!("1".parse::<CpuList>().unwrap().0, vec![1]);
        assert_eq!("0,1".parse::<CpuList>().unwrap().0, vec![0, 1]);
        assert_eq!("2-4,7".parse::<CpuList>().unwrap().0, vec![2, 3, 4, 7]);
        assert!("".parse::<CpuList>().is_err());
        assert!("1,1".parse::<CpuList>().is_err());
        assert!("3-1".parse::<CpuList>().is_err());
        assert!("x".parse::<CpuList>().is_err());
    }

    #[test]
    fn dists() {
        assert_eq!("uniform".parse::<Dist>().unwrap(), Dist::Uniform);
        assert_eq!("zipf:1.2".parse::<Dist>().unwrap(), Dist::Zipf(1.2));
        assert!("zipf:0".parse::<Dist>().is_err());
        assert!("zipf:-1".parse::<Dist>().is_err());
        assert!("pareto".parse::<Dist>().is_err());
    }

    #[test]
    fn mixes() {
        let m: Mix = "produce=3,consume=2,list=1".parse().unwrap();
        assert_eq!(m.weight(MixOp::Produce), 3);
        assert_eq!(m.weight(MixOp::Stats), 0);
        assert_eq!(m.to_string(), "produce=3,consume=2,list=1");
        assert!("produce=0".parse::<Mix>().is_err());
        assert!("bogus=1".parse::<Mix>().is_err());
        assert!("list=1,list=2".parse::<Mix>().is_err());
    }

    #[test]
    fn clap_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
