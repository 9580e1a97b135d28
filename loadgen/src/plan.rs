//! Turns the command line into a validated, immutable run plan shared (via `Arc`) by all
//! client threads. Everything that can be rendered once (paths, header lines, claim body) is
//! rendered here so the per-request path only copies bytes.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;
use wire::HeaderBlock;

use crate::cli::{Args, MixOp, Workload};
use crate::dist::Sampler;
use crate::http::{common_headers, encode_request, project_header};
use crate::target::{parse_url, Target, UrlError};
use crate::zaqar::PostBody;

/// Zaqar's default cap on a POST body; exceeding it would turn a benchmark into a 400 storm.
pub const ZAQAR_MAX_POST_BYTES: usize = 262_144;
/// Zaqar's page-size cap for message listing.
pub const PAGE_LIMIT: usize = 20;
/// Ephemeral ports per source address are ~28k; stay below so connects don't fail.
const CONNS_PER_SOURCE_IP: usize = 25_000;
/// Most requests one connection may pipeline (a batch is written in one go).
pub const MAX_PIPELINE: usize = 512;
/// Most agents of one run (each is a connection and a queue).
const MAX_AGENTS: usize = 1_000_000;

#[derive(Debug, Error)]
pub enum PlanError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error("invalid option: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> PlanError {
    PlanError::Invalid(msg.into())
}

/// One queue of the run, with its request paths pre-rendered.
#[derive(Debug, Clone)]
pub struct QueueRef {
    pub index: u32,
    pub project: String,
    pub name: String,
    pub project_header: HeaderBlock,
    pub queue_path: String,
    pub messages_path: String,
    pub claims_path: String,
    /// First page for a pub-sub reader: `echo=true` because readers share the producers'
    /// Client-ID. No `include_claimed`: nothing claims in pubsub, and Zaqar's Redis driver
    /// answers 503 to `include_claimed=true` without a marker.
    pub read_path: String,
    /// First page for the post-run audit, which must also see claimed messages.
    pub audit_path: String,
    /// First page for `mixed`'s list op (default listing, as a plain client would ask).
    pub list_path: String,
    pub stats_path: String,
    /// Head of a post of [`Plan::post_body`] to this queue (request line to the empty line):
    /// a post is this, a copy of the body, and the body's fields patched.
    pub post_head: Vec<u8>,
    /// The whole claim request (`consume`, `mixed`; with `wait` for `agents`).
    pub claim_request: Vec<u8>,
}

/// The immutable description of a run.
#[derive(Debug)]
pub struct Plan {
    pub args: Args,
    pub target: Target,
    pub run_id: String,
    pub client_id: String,
    pub common: HeaderBlock,
    pub queues: Vec<QueueRef>,
    pub sampler: Sampler,
    pub timeout: Duration,
    pub warmup: Duration,
    pub duration: Duration,
    pub claim_ttl: u32,
    pub claim_body: Vec<u8>,
    /// Claims may expire within the run, so a second delivery is legal (at-least-once).
    pub redelivery_legal: bool,
    /// Source addresses to bind, round-robin by connection; empty = let the kernel choose.
    pub sources: Vec<IpAddr>,
    pub prefill: usize,
    pub poll_interval: Duration,
    /// Consume-side checks (posted/delivered logs, audit) are on.
    pub track_deliveries: bool,
    /// Total connections: `--connections` plus pub-sub readers or agents.
    pub total_connections: usize,
    /// The body of every post of the run (`--batch` messages of `--message-bytes`).
    pub post_body: PostBody,
    pub ping_request: Vec<u8>,
    /// Requests in flight per connection (1 = no pipelining).
    pub pipeline: usize,
    /// `agents`: the long poll of a claim, and how long agents drain after the window.
    pub agent_wait: Duration,
    pub drain: Duration,
}

impl Plan {
    pub fn new(args: Args) -> Result<Plan, PlanError> {
        let target = parse_url(&args.url)?;
        if args.connections == 0 {
            return Err(invalid("--connections must be at least 1"));
        }
        if args.projects == 0 || args.queues == 0 {
            return Err(invalid("--projects and --queues must be at least 1"));
        }
        let nqueues =
            if args.workload == Workload::Agents { Some(args.agents) } else { args.projects.checked_mul(args.queues) };
        let nqueues = nqueues.filter(|n| *n <= u32::MAX as usize / 2).ok_or_else(|| invalid("too many queues"))?;
        if args.batch == 0 || args.claim_limit == 0 {
            return Err(invalid("--batch and --claim-limit must be at least 1"));
        }
        if let Some(r) = args.rate {
            if !(r.is_finite() && r > 0.0) {
                return Err(invalid("--rate must be a positive number"));
            }
        }
        if !(args.warmup_s.is_finite() && args.warmup_s >= 0.0) {
            return Err(invalid("--warmup-s must be >= 0"));
        }
        if let Some(d) = args.duration_s {
            if !(d.is_finite() && d > 0.0) {
                return Err(invalid("--duration-s must be > 0"));
            }
        }
        if args.requests == Some(0) {
            return Err(invalid("--requests must be at least 1"));
        }
        if args.timeout_ms == 0 {
            return Err(invalid("--timeout-ms must be at least 1"));
        }
        if !(args.ping_interval_s.is_finite() && args.ping_interval_s > 0.0) {
            return Err(invalid("--ping-interval-s must be > 0"));
        }
        if args.connect_concurrency == 0 {
            return Err(invalid("--connect-concurrency must be at least 1"));
        }
        if args.workload == Workload::Pubsub && args.readers == 0 {
            return Err(invalid("pubsub needs --readers >= 1"));
        }
        if !(1..=MAX_PIPELINE).contains(&args.pipeline) {
            return Err(invalid(format!("--pipeline is 1..={MAX_PIPELINE}")));
        }
        let pipelines = match args.workload {
            Workload::Produce => true,
            Workload::Mixed => args.mix.weight(MixOp::Consume) == 0,
            _ => false,
        };
        if args.pipeline > 1 && !pipelines {
            // A claim's deletes, a reader's next page and a queue cycle each depend on the
            // answer before: only independent requests can be in flight together.
            return Err(invalid("--pipeline applies to `produce` and to `mixed` without `consume`"));
        }
        let agents = args.workload == Workload::Agents;
        if agents {
            if !(1..=MAX_AGENTS).contains(&args.agents) {
                return Err(invalid(format!("--agents is 1..={MAX_AGENTS}")));
            }
            if args.projects != 1 || args.queues != 1 {
                return Err(invalid("agents: each agent has its own queue; --projects and --queues do not apply"));
            }
            if args.wait_s > 3600 {
                return Err(invalid("--wait-s is at most 3600"));
            }
            if !(args.drain_s.is_finite() && args.drain_s >= 0.0) {
                return Err(invalid("--drain-s must be >= 0"));
            }
        }
        let bad_name = |s: &str| s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        let client_id = match &args.client_id {
            Some(c) if c.is_empty() || c.bytes().any(|b| b < b' ' || b == 0x7f) => {
                return Err(invalid("--client-id must be printable"))
            }
            Some(c) => c.clone(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        if args.project_prefix.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(invalid("--project-prefix must be printable without spaces"));
        }
        let run_id = format!("{:08x}", fastrand::u32(..));
        let prefix = args.queue_prefix.clone().unwrap_or_else(|| format!("lg-{run_id}"));
        if bad_name(&prefix) {
            return Err(invalid("--queue-prefix may only use [A-Za-z0-9_.-]"));
        }

        let warmup = Duration::from_secs_f64(args.warmup_s);
        let duration =
            Duration::from_secs_f64(args.duration_s.unwrap_or(if args.requests.is_some() { 600.0 } else { 10.0 }));
        let timeout = Duration::from_millis(args.timeout_ms);
        let (agent_wait, drain) = if agents {
            (Duration::from_secs(args.wait_s.into()), Duration::from_secs_f64(args.drain_s))
        } else {
            (Duration::ZERO, Duration::ZERO)
        };
        let run_len = warmup + duration + timeout + agent_wait + drain;
        let claim_ttl = args.claim_ttl.unwrap_or_else(|| (run_len.as_secs() + 120).clamp(60, 43_200) as u32);
        let redelivery_legal = u64::from(claim_ttl) <= run_len.as_secs();
        let claim_body = format!("{{\"ttl\":{claim_ttl},\"grace\":{}}}", args.claim_grace).into_bytes();
        let common = common_headers(&target.host_header, &client_id).map_err(|e| invalid(e.to_string()))?;
        let post_body = PostBody::new(&run_id, args.batch, args.message_bytes, args.message_ttl);

        let mut queues = Vec::with_capacity(nqueues);
        let per_project = if agents { args.agents } else { args.queues };
        for p in 0..args.projects {
            let project = format!("{}-{p}", args.project_prefix);
            for q in 0..per_project {
                let name = if agents { format!("{prefix}-agent-{q}") } else { format!("{prefix}-{q}") };
                if name.len() > 64 {
                    return Err(invalid("queue names would exceed 64 characters"));
                }
                let base = format!("/v2/queues/{name}");
                let project_header = project_header(&project).map_err(|e| invalid(e.to_string()))?;
                let messages_path = format!("{base}/messages");
                let claims_path = if agents {
                    format!("{base}/claims?limit={}&wait={}", args.claim_limit, args.wait_s)
                } else {
                    format!("{base}/claims?limit={}", args.claim_limit)
                };
                let mut post_head = Vec::new();
                encode_request(
                    &mut post_head,
                    "POST",
                    &messages_path,
                    &common,
                    &project_header,
                    Some(post_body.bytes()),
                );
                post_head.truncate(post_head.len() - post_body.bytes().len());
                let mut claim_request = Vec::new();
                encode_request(&mut claim_request, "POST", &claims_path, &common, &project_header, Some(&claim_body));
                queues.push(QueueRef {
                    index: queues.len() as u32,
                    project_header,
                    project: project.clone(),
                    post_head,
                    claim_request,
                    messages_path,
                    claims_path,
                    read_path: format!("{base}/messages?echo=true&limit={PAGE_LIMIT}"),
                    audit_path: format!("{base}/messages?echo=true&include_claimed=true&limit={PAGE_LIMIT}"),
                    list_path: format!("{base}/messages?echo=true&limit=10"),
                    stats_path: format!("{base}/stats"),
                    queue_path: base,
                    name,
                });
            }
        }

        let readers = if args.workload == Workload::Pubsub {
            nqueues.checked_mul(args.readers).ok_or_else(|| invalid("too many readers"))?
        } else {
            0
        };
        let total_connections = args.connections + readers + if agents { args.agents } else { 0 };

        let nsources = match args.source_ips {
            0 if matches!(args.workload, Workload::Connections | Workload::Agents) => {
                total_connections.div_ceil(CONNS_PER_SOURCE_IP)
            }
            0 => 1,
            n => n,
        };
        if nsources > 254 {
            return Err(invalid("--source-ips is at most 254 (127.0.0.1..127.0.0.254)"));
        }
        let sources = if nsources > 1 {
            if !target.addr.is_ipv4() {
                return Err(invalid("--source-ips needs an IPv4 loopback target"));
            }
            (1..=nsources as u8).map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 0, k))).collect()
        } else {
            Vec::new()
        };

        let consumes = match args.workload {
            Workload::Consume | Workload::Agents => true,
            Workload::Mixed => args.mix.weight(MixOp::Consume) > 0,
            _ => false,
        };
        let prefill = match args.workload {
            Workload::Consume => args.prefill.unwrap_or(1000),
            Workload::Mixed => args.prefill.unwrap_or(0),
            _ => 0,
        };

        let mut ping_request = Vec::new();
        let ping_project = queues.first().map(|q| &q.project_header).ok_or_else(|| invalid("no queues"))?;
        encode_request(&mut ping_request, "GET", "/v2/ping", &common, ping_project, None);

        Ok(Plan {
            common,
            post_body,
            ping_request,
            pipeline: args.pipeline,
            agent_wait,
            drain,
            sampler: Sampler::new(args.dist, nqueues),
            poll_interval: Duration::from_millis(args.poll_interval_ms),
            track_deliveries: consumes,
            target,
            run_id,
            client_id,
            queues,
            timeout,
            warmup,
            duration,
            claim_ttl,
            claim_body,
            redelivery_legal,
            sources,
            prefill,
            total_connections,
            args,
        })
    }

    /// Warnings worth printing before the run (not errors: the server may be configured
    /// differently from Zaqar's defaults).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let a = &self.args;
        let approx_post = a.batch * (a.message_bytes + 30) + 20;
        if matches!(a.workload, Workload::Produce | Workload::Pubsub | Workload::Mixed)
            && approx_post > ZAQAR_MAX_POST_BYTES
        {
            w.push(format!(
                "a POST of {} x {} B is ~{approx_post} B, over Zaqar's default 262144 B limit",
                a.batch, a.message_bytes
            ));
        }
        if a.workload == Workload::Agents && a.wait_s > 20 {
            w.push("--wait-s over 20 is cut to 20 by Zaqar-compatible servers (marconi's api.max_wait_s)".into());
        }
        if a.claim_limit > 20 {
            w.push("--claim-limit over 20 is rejected by Zaqar (400)".into());
        }
        if self.redelivery_legal && self.track_deliveries {
            w.push(format!(
                "claim TTL {} s is shorter than the run: duplicate deliveries are counted as legal redeliveries, not violations",
                self.claim_ttl
            ));
        }
        w
    }

    pub fn mode(&self) -> &'static str {
        // `connections` always paces its pings.
        if self.args.rate.is_some() || self.args.workload == Workload::Connections {
            "open"
        } else {
            "closed"
        }
    }

    /// How long after the measured window workers may legitimately still run: the last
    /// request's timeout, and for `agents` a long poll and the drain.
    pub fn tail(&self) -> Duration {
        self.timeout + self.agent_wait + self.drain
    }

    pub fn source_for(&self, global: usize) -> Option<IpAddr> {
        if self.sources.is_empty() {
            None
        } else {
            Some(self.sources[global % self.sources.len()])
        }
    }
}

/// When the run starts, starts measuring and stops.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub start: Instant,
    pub measure_start: Instant,
    pub end: Instant,
    /// `measure_start` on the wall clock (µs since the epoch), to tell the send times that
    /// message bodies carry from before and after it.
    pub measure_start_us: u64,
}

impl Clock {
    pub fn new(plan: &Plan, start: Instant) -> Clock {
        let measure_start = start + plan.warmup;
        let ahead = measure_start.saturating_duration_since(Instant::now());
        let measure_start_us = now_us() + u64::try_from(ahead.as_micros()).unwrap_or(u64::MAX);
        Clock { start, measure_start, end: measure_start + plan.duration, measure_start_us }
    }
}

/// Wall-clock time in µs since the epoch: what a message's send time says.
pub fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// The `--requests` bound, shared by all threads.
#[derive(Debug)]
pub struct Budget {
    limit: Option<u64>,
    taken: AtomicU64,
}

impl Budget {
    pub fn new(limit: Option<u64>) -> Budget {
        Budget { limit, taken: AtomicU64::new(0) }
    }

    /// Takes one request from the budget; false once it is spent.
    pub fn take(&self) -> bool {
        match self.limit {
            None => true,
            Some(l) => self.taken.fetch_add(1, Ordering::Relaxed) < l,
        }
    }

    pub fn exhausted(&self) -> bool {
        self.limit.is_some_and(|l| self.taken.load(Ordering::Relaxed) >= l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn plan(extra: &[&str]) -> Result<Plan, PlanError> {
        let mut v = vec!["loadgen"];
        v.extend_from_slice(extra);
        Plan::new(Args::parse_from(v))
    }

    #[test]
    fn defaults() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.queues.len(), 1);
        assert_eq!(p.duration, Duration::from_secs(10));
        assert!(p.claim_ttl > 10);
        assert!(!p.redelivery_legal);
        assert!(p.sources.is_empty());
        assert_eq!(p.queues[0].project, "loadgen-0");
        assert!(p.queues[0].name.starts_with("lg-"));
        uuid::Uuid::parse_str(&p.client_id).unwrap();
    }

    #[test]
    fn queue_layout_and_sources() {
        let p = plan(&["--projects", "2", "--queues", "3", "--queue-prefix", "x"]).unwrap();
        assert_eq!(p.queues.len(), 6);
        assert_eq!(p.queues[4].project, "loadgen-1");
        assert_eq!(p.queues[4].name, "x-1");
        assert_eq!(p.queues[4].claims_path, "/v2/queues/x-1/claims?limit=10");
        let p = plan(&["-w", "connections", "-c", "100000"]).unwrap();
        assert_eq!(p.sources.len(), 4);
        assert_eq!(p.source_for(5), Some("127.0.0.2".parse().unwrap()));
        let p = plan(&["-w", "pubsub", "--queues", "3", "--readers", "2", "-c", "4"]).unwrap();
        assert_eq!(p.total_connections, 10);
    }

    #[test]
    fn rejects_bad_options() {
        assert!(plan(&["--url", "http://192.168.1.1:80"]).is_err());
        assert!(plan(&["-c", "0"]).is_err());
        assert!(plan(&["--rate", "0"]).is_err());
        assert!(plan(&["--queue-prefix", "a/b"]).is_err());
        assert!(plan(&["--requests", "0"]).is_err());
        assert!(plan(&["--source-ips", "300"]).is_err());
    }

    #[test]
    fn short_claims_make_redelivery_legal() {
        let p = plan(&["-w", "consume", "--duration-s", "120", "--claim-ttl", "60"]).unwrap();
        assert!(p.redelivery_legal);
        assert!(!p.warnings().is_empty());
        let p = plan(&["--requests", "5"]).unwrap();
        assert_eq!(p.duration, Duration::from_secs(600));
    }

    #[test]
    fn budget() {
        let b = Budget::new(Some(2));
        assert!(b.take() && b.take() && !b.take());
        assert!(b.exhausted());
        assert!(Budget::new(None).take());
    }
}
