//! The client side of one thread: its connections, each driven by a small state machine that
//! produces one request at a time and checks the answer.
//!
//! Thread-per-core: a thread's connections share its `Stats` and logs through `RefCell`s (never
//! borrowed across an await) and touch shared memory only for the `--requests` budget and a
//! per-thread progress slot.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use glommio::sync::Semaphore;
use wire::Response;

use crate::check::{DeliveryLog, MarkerTracker, Violation};
use crate::cli::{MixOp, Workload};
use crate::conn::{Conn, TransportError};
use crate::http::{encode_request, is_safe_path};
use crate::plan::{Budget, Clock, Plan};
use crate::stats::{micros, Op, Stats};
use crate::zaqar::{claim_id_of, encode_post_body, MessagesPage, Posted};

/// Live counters of one thread, read once a second by the progress printer. Padded so that two
/// threads never write the same cache line.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct Slot {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub messages: AtomicU64,
    pub violations: AtomicU64,
    pub latency_sum_us: AtomicU64,
    pub open_conns: AtomicU64,
}

/// Cross-thread coordination: all threads connect first, then the main thread picks one start
/// instant for everybody, so warm-up and duration mean the same on every thread.
#[derive(Debug)]
pub struct Gate {
    pub slots: Vec<Slot>,
    pub ready: AtomicUsize,
    pub done: AtomicUsize,
    pub start: OnceLock<Instant>,
    pub budget: Budget,
    /// Connects not finished by this instant are left to the first request.
    pub connect_deadline: Instant,
}

impl Gate {
    pub fn new(threads: usize, budget: Budget, connect_deadline: Instant) -> Gate {
        Gate {
            slots: (0..threads).map(|_| Slot::default()).collect(),
            ready: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            start: OnceLock::new(),
            budget,
            connect_deadline,
        }
    }
}

/// What a thread hands back at the end.
#[derive(Debug, Default)]
pub struct ThreadResult {
    pub stats: Stats,
    pub log: DeliveryLog,
    pub open_at_end: u64,
    pub failed_connects: u64,
    pub connects: u64,
    /// Completion time of the last measured request.
    pub last_done: Option<Instant>,
}

/// What a connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Produce,
    Consume,
    Read(u32),
    Queues,
    Idle,
    Mixed,
}

/// Roles of all connections of the run, by global connection index.
pub fn roles(plan: &Plan) -> Vec<Role> {
    let a = &plan.args;
    let base = match a.workload {
        Workload::Produce | Workload::Pubsub => Role::Produce,
        Workload::Consume => Role::Consume,
        Workload::Queues => Role::Queues,
        Workload::Connections => Role::Idle,
        Workload::Mixed => Role::Mixed,
    };
    let mut v = vec![base; a.connections];
    if a.workload == Workload::Pubsub {
        for q in &plan.queues {
            v.extend(std::iter::repeat_n(Role::Read(q.index), a.readers));
        }
    }
    v
}

/// Send schedule of one connection.
#[derive(Debug, Clone, Copy)]
pub enum Pacer {
    /// Next request as soon as the previous answer is in.
    Closed,
    /// Request k is due at `first + k * interval`, whether or not the previous one is done.
    Open { next: Instant, interval: Duration },
}

impl Pacer {
    /// Open-loop schedule for one of `n` connections sharing `rate` requests/s, staggered by
    /// `phase` (0..1) of an interval so that connections do not fire in lockstep.
    pub fn open(start: Instant, rate: f64, n: usize, phase: f64) -> Pacer {
        let interval = Duration::from_secs_f64(n as f64 / rate);
        Pacer::Open { next: start + interval.mul_f64(phase.clamp(0.0, 1.0)), interval }
    }

    /// The intended send time of the next request (`None` in closed loop: "now").
    pub fn next_send(&mut self) -> Option<Instant> {
        match self {
            Pacer::Closed => None,
            Pacer::Open { next, interval } => {
                let t = *next;
                *next += *interval;
                Some(t)
            }
        }
    }
}

/// Set by the first Ctrl-C: connections finish their request in flight and the run ends
/// early with a normal summary (a second Ctrl-C kills the process).
static STOP: AtomicBool = AtomicBool::new(false);

pub fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

extern "C" fn on_sigint(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Installs the Ctrl-C handler (one-shot: SA_RESETHAND restores the default afterwards).
pub fn install_sigint_handler() {
    // SAFETY: sigaction with a handler that only stores to an atomic (async-signal-safe).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigint as *const () as usize;
        sa.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
    }
}

/// Sleeps until `t` in slices, so that a Ctrl-C is noticed within 100 ms even by an idle
/// connection whose next ping is seconds away.
async fn sleep_until(t: Instant) {
    loop {
        let now = Instant::now();
        if now >= t || stopped() {
            return;
        }
        glommio::timer::sleep((t - now).min(Duration::from_millis(100))).await;
    }
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Why a response was not what the workload expects.
enum Bad {
    Status(u16),
    Body,
    Other(&'static str),
}

impl Bad {
    fn key(&self) -> String {
        match self {
            Bad::Status(s) => format!("http_{s}"),
            Bad::Body => "bad_body".into(),
            Bad::Other(k) => (*k).into(),
        }
    }
}

/// Per-thread state shared by its connections.
struct Thread {
    plan: Arc<Plan>,
    gate: Arc<Gate>,
    index: usize,
    stats: RefCell<Stats>,
    log: RefCell<DeliveryLog>,
    connect_sem: Semaphore,
    clock: Cell<Option<Clock>>,
    start_sem: Semaphore,
    ready_sem: Semaphore,
    open_at_end: Cell<u64>,
    failed_connects: Cell<u64>,
    connects: Cell<u64>,
    last_done: Cell<Option<Instant>>,
}

impl Thread {
    fn slot(&self) -> &Slot {
        &self.gate.slots[self.index]
    }

    fn violation(&self, v: Violation) {
        self.stats.borrow_mut().violation(|| v.to_string());
        self.slot().violations.fetch_add(1, Ordering::Relaxed);
    }

    fn duplicate(&self, v: Violation) {
        if self.plan.redelivery_legal {
            self.stats.borrow_mut().redeliveries += 1;
        } else {
            self.violation(v);
        }
    }
}

/// Runs all connections assigned to thread `index` (global connection `g` goes to thread
/// `g % threads`) and returns what they measured.
pub async fn run_thread(plan: Arc<Plan>, gate: Arc<Gate>, index: usize) -> ThreadResult {
    let threads = plan.args.cpus.0.len();
    let all = roles(&plan);
    let mine: Vec<(usize, Role)> = all.iter().copied().enumerate().filter(|(g, _)| g % threads == index).collect();
    let th = Rc::new(Thread {
        connect_sem: Semaphore::new(plan.args.connect_concurrency as u64),
        plan,
        gate,
        index,
        stats: RefCell::new(Stats::default()),
        log: RefCell::new(DeliveryLog::default()),
        clock: Cell::new(None),
        start_sem: Semaphore::new(0),
        ready_sem: Semaphore::new(0),
        open_at_end: Cell::new(0),
        failed_connects: Cell::new(0),
        connects: Cell::new(0),
        last_done: Cell::new(None),
    });
    let n = mine.len() as u64;
    let tasks: Vec<_> =
        mine.into_iter().map(|(g, role)| glommio::spawn_local(connection(th.clone(), g, role))).collect();

    // Connect phase: wait for every connection's first connect, report ready, wait for the
    // common start instant, then release the connections.
    let _ = th.ready_sem.acquire(n).await;
    th.gate.ready.fetch_add(1, Ordering::SeqCst);
    let start = loop {
        if let Some(s) = th.gate.start.get() {
            break *s;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    };
    th.clock.set(Some(Clock::new(&th.plan, start)));
    th.start_sem.signal(n);
    for t in tasks {
        t.await;
    }
    th.gate.done.fetch_add(1, Ordering::SeqCst);
    let th = match Rc::try_unwrap(th) {
        Ok(th) => th,
        // All tasks have finished, so nothing else holds the Rc; keep a fallback anyway.
        Err(rc) => {
            return ThreadResult {
                stats: rc.stats.borrow().clone(),
                log: rc.log.borrow().clone(),
                ..ThreadResult::default()
            }
        }
    };
    ThreadResult {
        stats: th.stats.into_inner(),
        log: th.log.into_inner(),
        open_at_end: th.open_at_end.get(),
        failed_connects: th.failed_connects.get(),
        connects: th.connects.get(),
        last_done: th.last_done.get(),
    }
}

async fn connection(th: Rc<Thread>, global: usize, role: Role) {
    let plan = th.plan.clone();
    let mut conn = Conn::new(plan.target.addr, plan.source_for(global));
    let mut rng = fastrand::Rng::with_seed(
        u64::from_str_radix(&plan.run_id, 16).unwrap_or(1) ^ (global as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );

    // Connect phase (not measured as requests; `connections` reports its own histogram).
    {
        let permit = th.connect_sem.acquire_permit(1).await;
        let now = Instant::now();
        if permit.is_ok() && now < th.gate.connect_deadline {
            let limit = plan.timeout.min(th.gate.connect_deadline - now);
            match conn.ensure_connected(limit).await {
                Ok(()) => {
                    th.stats.borrow_mut().connect.saturating_record(micros(now.elapsed()));
                    th.slot().open_conns.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    th.failed_connects.set(th.failed_connects.get() + 1);
                    th.stats.borrow_mut().error(format!("transport_{}", e.kind()));
                }
            }
        }
        conn.shrink();
    }
    th.ready_sem.signal(1);
    let _ = th.start_sem.acquire(1).await;
    let Some(clock) = th.clock.get() else { return };

    let a = &plan.args;
    let mut pacer = match (role, a.rate) {
        (Role::Read(_), _) => Pacer::Closed,
        (Role::Idle, rate) => {
            // Pings spread over the interval; `--rate` (total pings/s) overrides the interval.
            let rate = rate.unwrap_or(a.connections as f64 / a.ping_interval_s);
            Pacer::open(clock.start, rate, a.connections, rng.f64())
        }
        (_, Some(rate)) => Pacer::open(clock.start, rate, a.connections, global as f64 / a.connections as f64),
        (_, None) => Pacer::Closed,
    };
    let mut driver = Driver::new(&plan, role, global);
    let mut out = Vec::with_capacity(1024);
    let mut was_open = conn.is_connected();

    loop {
        if th.gate.budget.exhausted() || stopped() {
            break;
        }
        let intended = pacer.next_send();
        if let Some(t) = intended {
            if t >= clock.end {
                break;
            }
            let now = Instant::now();
            if t > now {
                sleep_until(t).await;
            }
        }
        let send = Instant::now();
        if send >= clock.end || stopped() {
            break;
        }
        let measured = intended.unwrap_or(send) >= clock.measure_start;
        if measured && !th.gate.budget.take() {
            break;
        }
        out.clear();
        let op = driver.next(&plan, &mut rng, &mut out);
        let result = conn.request(&out, false, plan.timeout).await;
        let done = Instant::now();
        let latency = done.saturating_duration_since(intended.unwrap_or(send));
        let mut pause = false;
        let ok = match result {
            Ok(resp) => match driver.handle(&th, op, &resp, measured) {
                Ok(p) => {
                    pause = p;
                    true
                }
                Err(bad) => {
                    th.stats.borrow_mut().error(bad.key());
                    false
                }
            },
            Err(e) => {
                driver.transport_error(op);
                th.stats.borrow_mut().error(transport_key(&e));
                pause = true;
                false
            }
        };
        if measured {
            th.stats.borrow_mut().record(op, latency, ok);
            th.last_done.set(Some(done));
        }
        // Progress counts warm-up requests too, so that warm-up is visibly doing something.
        let slot = th.slot();
        slot.requests.fetch_add(1, Ordering::Relaxed);
        slot.latency_sum_us.fetch_add(micros(latency), Ordering::Relaxed);
        if !ok {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        if role == Role::Idle {
            conn.shrink();
        }
        let open = conn.is_connected();
        if open != was_open {
            if open {
                th.slot().open_conns.fetch_add(1, Ordering::Relaxed);
            } else {
                th.slot().open_conns.fetch_sub(1, Ordering::Relaxed);
            }
            was_open = open;
        }
        if pause && matches!(pacer, Pacer::Closed) {
            let left = clock.end.saturating_duration_since(Instant::now());
            glommio::timer::sleep(plan.poll_interval.min(left)).await;
        }
    }
    th.connects.set(th.connects.get() + conn.connects());
    if conn.is_connected() {
        th.open_at_end.set(th.open_at_end.get() + 1);
    }
}

fn transport_key(e: &TransportError) -> String {
    format!("transport_{}", e.kind())
}

/// Per-connection request state machines.
enum Driver {
    Produce(Producer),
    Consume(Consumer),
    Read(Reader),
    Queues(QueueCycler),
    Idle,
    Mixed(Box<Mixed>),
}

impl Driver {
    fn new(plan: &Plan, role: Role, global: usize) -> Driver {
        match role {
            Role::Produce => Driver::Produce(Producer::new(global as u32)),
            Role::Consume => Driver::Consume(Consumer::default()),
            Role::Read(q) => Driver::Read(Reader {
                queue: q,
                href: plan.queues[q as usize].read_path.clone(),
                tracker: MarkerTracker::new(),
            }),
            Role::Queues => Driver::Queues(QueueCycler { step: 0, queue: 0 }),
            Role::Idle => Driver::Idle,
            Role::Mixed => Driver::Mixed(Box::new(Mixed {
                producer: Producer::new(global as u32),
                consumer: Consumer::default(),
                total: plan.args.mix.0.iter().map(|(_, w)| *w).sum(),
                queue: 0,
            })),
        }
    }

    fn next(&mut self, plan: &Plan, rng: &mut fastrand::Rng, out: &mut Vec<u8>) -> Op {
        match self {
            Driver::Produce(p) => p.next(plan, rng, out),
            Driver::Consume(c) => c.next(plan, rng, out),
            Driver::Read(r) => {
                let q = &plan.queues[r.queue as usize];
                encode_request(out, "GET", &r.href, &plan.common, &q.project_header, None);
                Op::List
            }
            Driver::Queues(c) => c.next(plan, rng, out),
            Driver::Idle => ping(plan, out),
            Driver::Mixed(m) => m.next(plan, rng, out),
        }
    }

    /// Checks a response: `Ok(pause)` when it is what the workload expects (`pause` asks a
    /// closed loop to wait before polling again: nothing was there).
    fn handle(&mut self, th: &Thread, op: Op, resp: &Response<'_>, measured: bool) -> Result<bool, Bad> {
        match self {
            Driver::Produce(p) => p.handle(th, resp, measured),
            Driver::Consume(c) => c.handle(th, op, resp, measured),
            Driver::Read(r) => r.handle(th, resp, measured),
            Driver::Queues(c) => c.handle(op, resp),
            Driver::Idle => expect_ping(resp),
            Driver::Mixed(m) => m.handle(th, op, resp, measured),
        }
    }

    fn transport_error(&mut self, op: Op) {
        match self {
            Driver::Consume(c) => c.transport_error(op),
            Driver::Mixed(m) => m.consumer.transport_error(op),
            Driver::Queues(c) => c.step = (c.step + 1) % 3,
            _ => {}
        }
    }
}

fn ping(plan: &Plan, out: &mut Vec<u8>) -> Op {
    encode_request(out, "GET", "/v2/ping", &plan.common, &plan.queues[0].project_header, None);
    Op::Ping
}

fn expect_ping(resp: &Response<'_>) -> Result<bool, Bad> {
    match resp.status {
        200 | 204 => Ok(false),
        s => Err(Bad::Status(s)),
    }
}

struct Producer {
    id: u32,
    seq: u32,
    body: Vec<u8>,
    /// Queue and first sequence number of the POST in flight.
    inflight: (u32, u32),
}

impl Producer {
    fn new(id: u32) -> Producer {
        Producer { id, seq: 0, body: Vec::new(), inflight: (0, 0) }
    }

    fn next(&mut self, plan: &Plan, rng: &mut fastrand::Rng, out: &mut Vec<u8>) -> Op {
        let a = &plan.args;
        let q = &plan.queues[plan.sampler.sample(rng)];
        self.body.clear();
        encode_post_body(
            &mut self.body,
            &plan.run_id,
            self.id,
            self.seq,
            a.batch,
            q.index,
            a.message_bytes,
            a.message_ttl,
            now_us(),
        );
        encode_request(out, "POST", &q.messages_path, &plan.common, &q.project_header, Some(&self.body));
        self.inflight = (q.index, self.seq);
        self.seq = self.seq.wrapping_add(a.batch as u32);
        Op::Post
    }

    fn handle(&mut self, th: &Thread, resp: &Response<'_>, measured: bool) -> Result<bool, Bad> {
        if resp.status != 201 {
            return Err(Bad::Status(resp.status));
        }
        let posted: Posted = serde_json::from_slice(resp.body).map_err(|_| Bad::Body)?;
        let batch = th.plan.args.batch;
        if posted.resources.len() != batch {
            th.violation_msg(format!(
                "POST of {batch} messages was acknowledged with {} resources",
                posted.resources.len()
            ));
        }
        if measured {
            th.stats.borrow_mut().messages_sent += batch as u64;
        }
        th.slot().messages.fetch_add(batch as u64, Ordering::Relaxed);
        if th.plan.track_deliveries {
            let (_, first) = self.inflight;
            let mut log = th.log.borrow_mut();
            for i in 0..batch as u32 {
                log.posted.insert(crate::zaqar::msg_key(self.id, first.wrapping_add(i)));
            }
        }
        Ok(false)
    }
}

impl Thread {
    fn violation_msg(&self, msg: String) {
        self.stats.borrow_mut().violation(|| msg);
        self.slot().violations.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Consumer {
    /// Hrefs (with claim ids) still to delete, with their queue.
    pending: VecDeque<(u32, String)>,
    claim_queue: u32,
}

impl Consumer {
    fn next(&mut self, plan: &Plan, rng: &mut fastrand::Rng, out: &mut Vec<u8>) -> Op {
        if let Some((q, href)) = self.pending.front() {
            let q = &plan.queues[*q as usize];
            encode_request(out, "DELETE", href, &plan.common, &q.project_header, None);
            return Op::Delete;
        }
        let q = &plan.queues[plan.sampler.sample(rng)];
        self.claim_queue = q.index;
        encode_request(out, "POST", &q.claims_path, &plan.common, &q.project_header, Some(&plan.claim_body));
        Op::Claim
    }

    fn handle(&mut self, th: &Thread, op: Op, resp: &Response<'_>, measured: bool) -> Result<bool, Bad> {
        match op {
            Op::Delete => {
                self.pending.pop_front();
                if resp.status != 204 {
                    return Err(Bad::Status(resp.status));
                }
                if measured {
                    th.stats.borrow_mut().messages_received += 1;
                }
                th.slot().messages.fetch_add(1, Ordering::Relaxed);
                Ok(false)
            }
            _ => match resp.status {
                204 => {
                    th.stats.borrow_mut().empty += 1;
                    Ok(true)
                }
                201 => {
                    let page: MessagesPage = serde_json::from_slice(resp.body).map_err(|_| Bad::Body)?;
                    if page.messages.is_empty() {
                        th.stats.borrow_mut().empty += 1;
                        return Ok(true);
                    }
                    let q = self.claim_queue;
                    for m in page.messages {
                        match m.body.ours(&th.plan.run_id) {
                            Some(meta) => {
                                if meta.queue != q {
                                    th.violation(Violation::WrongQueue { key: meta.key, expected: q, got: meta.queue });
                                }
                                if th.plan.track_deliveries && !th.log.borrow_mut().deliver(meta.key) {
                                    th.duplicate(Violation::Duplicate {
                                        key: meta.key,
                                        context: "claimed twice on one thread",
                                    });
                                }
                            }
                            None => th.violation(Violation::Foreign { id: m.id.clone().unwrap_or_default() }),
                        }
                        let Some(href) = m.href.filter(|h| is_safe_path(h)) else {
                            th.stats.borrow_mut().error("bad_href");
                            continue;
                        };
                        if claim_id_of(&href).is_none() {
                            th.violation(Violation::NoClaimId { href });
                            continue;
                        }
                        self.pending.push_back((q, href));
                    }
                    Ok(false)
                }
                s => Err(Bad::Status(s)),
            },
        }
    }

    fn transport_error(&mut self, op: Op) {
        if op == Op::Delete {
            // Unknown outcome: the message stays claimed until its claim expires; the audit
            // still finds it in the queue, so it is not counted as lost.
            self.pending.pop_front();
        }
    }
}

struct Reader {
    queue: u32,
    href: String,
    tracker: MarkerTracker,
}

impl Reader {
    fn handle(&mut self, th: &Thread, resp: &Response<'_>, measured: bool) -> Result<bool, Bad> {
        if resp.status == 204 {
            // Zaqar's api-ref documents 204 for an empty page; the code sends 200 + [].
            th.stats.borrow_mut().empty += 1;
            return Ok(true);
        }
        if resp.status != 200 {
            return Err(Bad::Status(resp.status));
        }
        let page: MessagesPage = serde_json::from_slice(resp.body).map_err(|_| Bad::Body)?;
        if page.messages.is_empty() {
            th.stats.borrow_mut().empty += 1;
            return Ok(true);
        }
        let now = now_us();
        let count = page.messages.len() as u64;
        for m in &page.messages {
            match m.body.ours(&th.plan.run_id) {
                Some(meta) => {
                    if let Some(v) = self.tracker.observe(&meta, self.queue) {
                        th.violation(v);
                    }
                    if measured && meta.sent_us > 0 {
                        th.stats.borrow_mut().delivery.saturating_record(now.saturating_sub(meta.sent_us).max(1));
                    }
                }
                None => th.violation(Violation::Foreign { id: m.id.clone().unwrap_or_default() }),
            }
        }
        if measured {
            th.stats.borrow_mut().messages_received += count;
        }
        th.slot().messages.fetch_add(count, Ordering::Relaxed);
        match page.next_href() {
            Some(h) if is_safe_path(h) => {
                if let Some(v) = self.tracker.advance(h) {
                    th.violation(v);
                }
                self.href = h.to_string();
                Ok(false)
            }
            Some(_) => Err(Bad::Other("bad_href")),
            // Without a next link the reader would re-read this page forever.
            None => Err(Bad::Other("missing_next_link")),
        }
    }
}

struct QueueCycler {
    step: u8,
    queue: u32,
}

impl QueueCycler {
    fn next(&mut self, plan: &Plan, rng: &mut fastrand::Rng, out: &mut Vec<u8>) -> Op {
        if self.step == 0 {
            self.queue = plan.sampler.sample(rng) as u32;
        }
        let q = &plan.queues[self.queue as usize];
        let (method, path, op) = match self.step {
            0 => ("PUT", q.queue_path.as_str(), Op::QueueCreate),
            1 => ("GET", "/v2/queues?limit=20", Op::QueueList),
            _ => ("DELETE", q.queue_path.as_str(), Op::QueueDelete),
        };
        encode_request(out, method, path, &plan.common, &q.project_header, None);
        op
    }

    fn handle(&mut self, op: Op, resp: &Response<'_>) -> Result<bool, Bad> {
        self.step = (self.step + 1) % 3;
        let ok = match op {
            Op::QueueCreate => matches!(resp.status, 201 | 204),
            Op::QueueList => {
                if resp.status == 200 {
                    #[derive(serde::Deserialize)]
                    struct Queues {
                        #[allow(dead_code)]
                        queues: Vec<serde::de::IgnoredAny>,
                    }
                    serde_json::from_slice::<Queues>(resp.body).map_err(|_| Bad::Body)?;
                }
                // 204 is what the api-ref (not the code) documents for an empty list.
                matches!(resp.status, 200 | 204)
            }
            _ => resp.status == 204,
        };
        if ok {
            Ok(false)
        } else {
            Err(Bad::Status(resp.status))
        }
    }
}

struct Mixed {
    producer: Producer,
    consumer: Consumer,
    total: u32,
    queue: u32,
}

impl Mixed {
    fn next(&mut self, plan: &Plan, rng: &mut fastrand::Rng, out: &mut Vec<u8>) -> Op {
        // A consume op is claim + one delete per message: finish it before picking again.
        if !self.consumer.pending.is_empty() {
            return self.consumer.next(plan, rng, out);
        }
        let mut pick = rng.u32(..self.total.max(1));
        let mut chosen = MixOp::Ping;
        for (op, w) in &plan.args.mix.0 {
            if pick < *w {
                chosen = *op;
                break;
            }
            pick -= w;
        }
        match chosen {
            MixOp::Produce => self.producer.next(plan, rng, out),
            MixOp::Consume => self.consumer.next(plan, rng, out),
            MixOp::List | MixOp::Stats => {
                let q = &plan.queues[plan.sampler.sample(rng)];
                self.queue = q.index;
                let (path, op) =
                    if chosen == MixOp::List { (&q.list_path, Op::List) } else { (&q.stats_path, Op::Stats) };
                encode_request(out, "GET", path, &plan.common, &q.project_header, None);
                op
            }
            MixOp::Ping => ping(plan, out),
        }
    }

    fn handle(&mut self, th: &Thread, op: Op, resp: &Response<'_>, measured: bool) -> Result<bool, Bad> {
        match op {
            Op::Post => self.producer.handle(th, resp, measured),
            Op::Claim | Op::Delete => self.consumer.handle(th, op, resp, measured),
            Op::List => {
                if resp.status == 204 {
                    return Ok(false);
                }
                if resp.status != 200 {
                    return Err(Bad::Status(resp.status));
                }
                let page: MessagesPage = serde_json::from_slice(resp.body).map_err(|_| Bad::Body)?;
                for m in &page.messages {
                    match m.body.ours(&th.plan.run_id) {
                        Some(meta) if meta.queue != self.queue => {
                            th.violation(Violation::WrongQueue { key: meta.key, expected: self.queue, got: meta.queue })
                        }
                        Some(_) => {}
                        None => th.violation(Violation::Foreign { id: m.id.clone().unwrap_or_default() }),
                    }
                }
                Ok(false)
            }
            Op::Stats => match resp.status {
                200 => Ok(false),
                s => Err(Bad::Status(s)),
            },
            _ => expect_ping(resp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_schedule_is_fixed_rate_and_staggered() {
        let t0 = Instant::now();
        // 4 connections sharing 1000 req/s: each sends every 4 ms.
        let mut p = Pacer::open(t0, 1000.0, 4, 0.5);
        let a = p.next_send().unwrap();
        let b = p.next_send().unwrap();
        let c = p.next_send().unwrap();
        assert_eq!(a - t0, Duration::from_millis(2));
        assert_eq!(b - a, Duration::from_millis(4));
        assert_eq!(c - b, Duration::from_millis(4));
        assert!(Pacer::Closed.next_send().is_none());
    }
}
