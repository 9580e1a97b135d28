//! The client side of one thread: its connections, each driven by a small state machine that
//! produces requests (one at a time, or `--pipeline` independent ones at once) and checks the
//! answers.
//!
//! The request path formats nothing: requests are copies of bytes the plan rendered, a post's
//! varying fields are patched in place ([`crate::zaqar::PostBody`]), responses are parsed where
//! they lie in the connection's buffer, and latencies go into per-thread histograms.
//!
//! Thread-per-core: a thread's connections share its `Stats` and logs through `RefCell`s (never
//! borrowed across an await) and touch shared memory only for the `--requests` budget and a
//! per-thread progress slot.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use glommio::sync::Semaphore;
use wire::Response;

use crate::check::{DeliveryLog, MarkerTracker, Violation};
use crate::cli::{MixOp, Workload};
use crate::conn::{Conn, TransportError};
use crate::http::{encode_request, is_safe_path};
use crate::plan::{now_us, Budget, Clock, Plan};
use crate::poll::Poller;
use crate::stats::{micros, Op, Stats};
use crate::zaqar::{claim_id_of, MessagesPage, Posted};

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
    /// `open_conns` at the end of the measured window.
    pub open_at_window_end: AtomicU64,
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
    pub drain: Drain,
}

impl Gate {
    pub fn new(threads: usize, budget: Budget, connect_deadline: Instant, producers: usize) -> Gate {
        Gate {
            slots: (0..threads).map(|_| Slot::default()).collect(),
            ready: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            start: OnceLock::new(),
            budget,
            connect_deadline,
            drain: Drain { producers_left: AtomicUsize::new(producers), ..Drain::default() },
        }
    }
}

/// `agents`: what tells the agents of every thread that all commands are in.
#[derive(Debug, Default)]
pub struct Drain {
    /// Producer connections still running.
    pub producers_left: AtomicUsize,
    /// Commands acknowledged (201) to producers.
    pub acked: AtomicU64,
    /// Commands whose post ended without an answer: stored or not, nobody knows.
    pub unknown: AtomicU64,
    /// Commands delivered to an agent for the first time.
    pub delivered: AtomicU64,
}

impl Drain {
    /// Every command that may have been stored has been delivered, and no more will be posted.
    pub fn complete(&self) -> bool {
        self.producers_left.load(Ordering::SeqCst) == 0
            && self.delivered.load(Ordering::SeqCst)
                >= self.acked.load(Ordering::SeqCst) + self.unknown.load(Ordering::SeqCst)
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
    /// Claims from its own queue, with a long poll.
    Agent(u32),
}

/// Roles of all connections of the run, by global connection index.
pub fn roles(plan: &Plan) -> Vec<Role> {
    let a = &plan.args;
    let base = match a.workload {
        Workload::Produce | Workload::Pubsub | Workload::Agents => Role::Produce,
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
    if a.workload == Workload::Agents {
        v.extend(plan.queues.iter().map(|q| Role::Agent(q.index)));
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
        let t = self.peek();
        if let Pacer::Open { next, interval } = self {
            *next += *interval;
        }
        t
    }

    /// When the next request is due, without taking it.
    pub fn peek(&self) -> Option<Instant> {
        match self {
            Pacer::Closed => None,
            Pacer::Open { next, .. } => Some(*next),
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
    poller: Rc<Poller>,
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
    /// `agents`: every command is in (or the drain ran out); agents stop.
    agents_done: Cell<bool>,
    /// Connection tasks still running.
    live: Cell<usize>,
}

impl Thread {
    fn slot(&self) -> &Slot {
        &self.gate.slots[self.index]
    }

    fn violation(&self, v: Violation) {
        self.stats.borrow_mut().violation(|| v.to_string());
        self.slot().violations.fetch_add(1, Ordering::Relaxed);
    }

    fn violation_msg(&self, msg: String) {
        self.stats.borrow_mut().violation(|| msg);
        self.slot().violations.fetch_add(1, Ordering::Relaxed);
    }

    fn duplicate(&self, v: Violation) {
        self.stats.borrow_mut().duplicates += 1;
        if self.plan.redelivery_legal {
            self.stats.borrow_mut().redeliveries += 1;
        } else {
            self.violation(v);
        }
    }
}

/// Runs all connections assigned to thread `index` (global connection `g` goes to thread
/// `g % threads`) and returns what they measured, or why the thread could not run.
pub async fn run_thread(plan: Arc<Plan>, gate: Arc<Gate>, index: usize) -> Result<ThreadResult, String> {
    let poller = match Poller::new() {
        Ok(p) => p,
        Err(e) => {
            // Counted as ready and done, so that the other threads are not kept waiting.
            gate.ready.fetch_add(1, Ordering::SeqCst);
            gate.done.fetch_add(1, Ordering::SeqCst);
            return Err(format!("cannot start the socket poller: {e}"));
        }
    };
    let poll_task = glommio::spawn_local(poller.clone().run());
    let result = run_connections(plan, gate, index, poller.clone()).await;
    poller.close();
    poll_task.await;
    Ok(result)
}

async fn run_connections(plan: Arc<Plan>, gate: Arc<Gate>, index: usize, poller: Rc<Poller>) -> ThreadResult {
    let threads = plan.args.cpus.0.len();
    let all = roles(&plan);
    let mine: Vec<(usize, Role)> = all.iter().copied().enumerate().filter(|(g, _)| g % threads == index).collect();
    let has_agents = mine.iter().any(|(_, r)| matches!(r, Role::Agent(_)));
    let th = Rc::new(Thread {
        connect_sem: Semaphore::new(plan.args.connect_concurrency as u64),
        plan,
        poller,
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
        agents_done: Cell::new(false),
        live: Cell::new(mine.len()),
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
    let clock = Clock::new(&th.plan, start);
    th.clock.set(Some(clock));
    th.start_sem.signal(n);
    let watcher = glommio::spawn_local(window_end(th.clone(), clock, has_agents));
    for t in tasks {
        t.await;
    }
    watcher.await;
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

/// At the end of the measured window, notes the open connections; then, with agents, waits
/// until every command that may have been stored was delivered (on any thread), or the drain
/// ran out, and ends this thread's agents, cutting their long polls short.
async fn window_end(th: Rc<Thread>, clock: Clock, has_agents: bool) {
    // The window also ends when the connections stopped early (`--requests`, Ctrl-C), and for
    // agents when there is nothing more to wait for but their commands.
    loop {
        let now = Instant::now();
        let producers_done = th.gate.drain.producers_left.load(Ordering::SeqCst) == 0;
        if now >= clock.end || stopped() || th.live.get() == 0 || (has_agents && producers_done) {
            break;
        }
        glommio::timer::sleep((clock.end - now).min(Duration::from_millis(100))).await;
    }
    th.slot().open_at_window_end.store(th.slot().open_conns.load(Ordering::Relaxed), Ordering::Relaxed);
    if !has_agents {
        return;
    }
    let deadline = clock.end + th.plan.timeout + th.plan.drain;
    loop {
        let drain = &th.gate.drain;
        let producers_done = drain.producers_left.load(Ordering::SeqCst) == 0;
        if stopped() || drain.complete() || (producers_done && Instant::now() >= deadline) {
            break;
        }
        glommio::timer::sleep(DRAIN_CHECK).await;
    }
    th.agents_done.set(true);
    th.poller.interrupt();
}

/// How often the drain's progress is looked at.
const DRAIN_CHECK: Duration = Duration::from_millis(5);

/// One request of a batch, as sent.
#[derive(Debug, Clone, Copy)]
struct Sent {
    op: Op,
    /// The queue it went to (index into the plan's queues).
    queue: u32,
    /// A post's first sequence number.
    seq: u32,
}

impl Sent {
    fn of(op: Op) -> Sent {
        Sent { op, queue: 0, seq: 0 }
    }
}

/// A request of the batch in flight: what was sent, when it was due, whether it counts.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    sent: Sent,
    intended: Option<Instant>,
    measured: bool,
}

async fn connection(th: Rc<Thread>, global: usize, role: Role) {
    let plan = th.plan.clone();
    let mut conn = Conn::new(&th.poller, plan.target.addr, plan.source_for(global));
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
                    th.stats.borrow_mut().error(transport_key(&e));
                }
            }
        }
        conn.shrink();
    }
    th.ready_sem.signal(1);
    let _ = th.start_sem.acquire(1).await;
    if let Some(clock) = th.clock.get() {
        drive(&th, &mut conn, &mut rng, global, role, clock).await;
    }
    if role == Role::Produce && plan.args.workload == Workload::Agents {
        th.gate.drain.producers_left.fetch_sub(1, Ordering::SeqCst);
    }
    th.connects.set(th.connects.get() + conn.connects());
    if conn.is_connected() {
        th.open_at_end.set(th.open_at_end.get() + 1);
    }
    th.live.set(th.live.get() - 1);
}

/// The request loop of one connection.
async fn drive(th: &Thread, conn: &mut Conn, rng: &mut fastrand::Rng, global: usize, role: Role, clock: Clock) {
    let plan = &th.plan;
    let a = &plan.args;
    let agent = matches!(role, Role::Agent(_));
    let mut pacer = match (role, a.rate) {
        (Role::Read(_) | Role::Agent(_), _) => Pacer::Closed,
        (Role::Idle, rate) => {
            // Pings spread over the interval; `--rate` (total pings/s) overrides the interval.
            let rate = rate.unwrap_or(a.connections as f64 / a.ping_interval_s);
            Pacer::open(clock.start, rate, a.connections, rng.f64())
        }
        (_, Some(rate)) => Pacer::open(clock.start, rate, a.connections, global as f64 / a.connections as f64),
        (_, None) => Pacer::Closed,
    };
    let depth = if matches!(role, Role::Produce | Role::Mixed) { plan.pipeline } else { 1 };
    let mut driver = Driver::new(plan, role, global);
    let mut out = Vec::with_capacity(1024);
    let mut batch: Vec<InFlight> = Vec::with_capacity(depth);
    let mut was_open = conn.is_connected();

    loop {
        if stopped() || th.agents_done.get() || (!agent && th.gate.budget.exhausted()) {
            break;
        }
        let first = pacer.next_send();
        if let Some(t) = first {
            if t >= clock.end {
                break;
            }
            if t > Instant::now() {
                sleep_until(t).await;
            }
        }
        let now = Instant::now();
        // Agents go on past the window until the drain watcher ends them.
        if (!agent && now >= clock.end) || stopped() || th.agents_done.get() {
            break;
        }

        // The batch: the request that was due, and (pipelining) more that are due by now.
        out.clear();
        batch.clear();
        let mut intended = first;
        loop {
            let at = intended.unwrap_or(now);
            let measured = at >= clock.measure_start && at < clock.end;
            if measured && !agent && !th.gate.budget.take() {
                break;
            }
            let sent = driver.next(plan, rng, &mut out);
            batch.push(InFlight { sent, intended, measured });
            if batch.len() == depth {
                break;
            }
            intended = match pacer.peek() {
                None => None,
                Some(t) if t <= now && t < clock.end => pacer.next_send(),
                Some(_) => break,
            };
        }
        if batch.is_empty() {
            break;
        }

        let timeout = driver.timeout(plan, batch[0].sent.op);
        let send = Instant::now();
        let mut failed = conn.send(&out, timeout).await.err();
        let mut pause = false;
        let (mut latency_sum, mut errors) = (0u64, 0u64);
        let last = batch.len() - 1;
        for (i, r) in batch.iter().enumerate() {
            let ok = match failed {
                Some(_) => false,
                None => match conn.next_response(false, i < last).await {
                    Ok(resp) => {
                        let elapsed = send.elapsed();
                        match driver.handle(th, r.sent, &resp, r.measured, elapsed) {
                            Ok(p) => {
                                pause |= p;
                                true
                            }
                            Err(bad) => {
                                th.stats.borrow_mut().error(bad.key());
                                false
                            }
                        }
                    }
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                },
            };
            let done = Instant::now();
            let mut counted = r.measured;
            if let Some(e) = &failed {
                driver.transport_error(th, r.sent);
                pause = true;
                if matches!(e, TransportError::Cancelled) && th.agents_done.get() {
                    // The drain ended this agent's long poll: that is how agents stop.
                    counted = false;
                } else {
                    th.stats.borrow_mut().error(transport_key(e));
                }
            }
            let latency = done.saturating_duration_since(r.intended.unwrap_or(send));
            if counted {
                th.stats.borrow_mut().record(r.sent.op, latency, ok);
                th.last_done.set(Some(done));
            }
            latency_sum += micros(latency);
            errors += u64::from(!ok);
        }
        // Progress counts warm-up requests too, so that warm-up is visibly doing something.
        let slot = th.slot();
        slot.requests.fetch_add(batch.len() as u64, Ordering::Relaxed);
        slot.latency_sum_us.fetch_add(latency_sum, Ordering::Relaxed);
        if errors > 0 {
            slot.errors.fetch_add(errors, Ordering::Relaxed);
        }
        if role == Role::Idle {
            conn.shrink();
        }
        let open = conn.is_connected();
        if open != was_open {
            if open {
                slot.open_conns.fetch_add(1, Ordering::Relaxed);
            } else {
                slot.open_conns.fetch_sub(1, Ordering::Relaxed);
            }
            was_open = open;
        }
        if pause && matches!(pacer, Pacer::Closed) && !th.agents_done.get() {
            let left = if agent { plan.poll_interval } else { clock.end.saturating_duration_since(Instant::now()) };
            glommio::timer::sleep(plan.poll_interval.min(left)).await;
        }
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
    Agent(Consumer),
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
            })),
            Role::Agent(q) => Driver::Agent(Consumer { own_queue: Some(q), ..Consumer::default() }),
        }
    }

    /// Appends the next request to `out`.
    fn next(&mut self, plan: &Plan, rng: &mut fastrand::Rng, out: &mut Vec<u8>) -> Sent {
        match self {
            Driver::Produce(p) => p.next(plan, rng, out),
            Driver::Consume(c) | Driver::Agent(c) => c.next(plan, rng, out),
            Driver::Read(r) => {
                let q = &plan.queues[r.queue as usize];
                encode_request(out, "GET", &r.href, &plan.common, &q.project_header, None);
                Sent { op: Op::List, queue: r.queue, seq: 0 }
            }
            Driver::Queues(c) => c.next(plan, rng, out),
            Driver::Idle => ping(plan, out),
            Driver::Mixed(m) => m.next(plan, rng, out),
        }
    }

    /// How long the request (its batch) may take: a claim of an agent waits on the server.
    fn timeout(&self, plan: &Plan, op: Op) -> Duration {
        match (self, op) {
            (Driver::Agent(_), Op::Claim) => plan.timeout + plan.agent_wait,
            _ => plan.timeout,
        }
    }

    /// Checks a response: `Ok(pause)` when it is what the workload expects (`pause` asks a
    /// closed loop to wait before polling again: nothing was there).
    fn handle(
        &mut self,
        th: &Thread,
        sent: Sent,
        resp: &Response<'_>,
        measured: bool,
        elapsed: Duration,
    ) -> Result<bool, Bad> {
        match self {
            Driver::Produce(p) => p.handle(th, sent, resp, measured),
            Driver::Consume(c) => c.handle(th, sent, resp, measured),
            Driver::Agent(c) => {
                let pause = c.handle(th, sent, resp, measured)?;
                // An empty answer is the long poll running out; one that came back at once
                // means the server ignores `wait`, and the agent must not spin on it.
                Ok(pause && elapsed < th.plan.agent_wait / 2)
            }
            Driver::Read(r) => r.handle(th, resp, measured),
            Driver::Queues(c) => c.handle(sent.op, resp),
            Driver::Idle => expect_ping(resp),
            Driver::Mixed(m) => m.handle(th, sent, resp, measured),
        }
    }

    /// The request got no answer.
    fn transport_error(&mut self, th: &Thread, sent: Sent) {
        match self {
            Driver::Consume(c) | Driver::Agent(c) => c.transport_error(sent.op),
            Driver::Mixed(m) => m.consumer.transport_error(sent.op),
            Driver::Queues(c) => c.step = (c.step + 1) % 3,
            Driver::Produce(_) if sent.op == Op::Post && th.plan.args.workload == Workload::Agents => {
                // Posted or not, nobody knows: the drain waits for it until it runs out.
                th.gate.drain.unknown.fetch_add(th.plan.post_body.batch() as u64, Ordering::SeqCst);
            }
            _ => {}
        }
    }
}

fn ping(plan: &Plan, out: &mut Vec<u8>) -> Sent {
    out.extend_from_slice(&plan.ping_request);
    Sent::of(Op::Ping)
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
}

impl Producer {
    fn new(id: u32) -> Producer {
        Producer { id, seq: 0 }
    }

    /// A post is the queue's pre-rendered head and a copy of the run's body, with this
    /// producer, its next sequence numbers, the queue and the send time patched in.
    fn next(&mut self, plan: &Plan, rng: &mut fastrand::Rng, out: &mut Vec<u8>) -> Sent {
        let q = &plan.queues[plan.sampler.sample(rng)];
        out.extend_from_slice(&q.post_head);
        let at = out.len();
        out.extend_from_slice(plan.post_body.bytes());
        plan.post_body.patch(out, at, self.id, self.seq, q.index, now_us());
        let sent = Sent { op: Op::Post, queue: q.index, seq: self.seq };
        self.seq = self.seq.wrapping_add(plan.post_body.batch() as u32);
        sent
    }

    fn handle(&mut self, th: &Thread, sent: Sent, resp: &Response<'_>, measured: bool) -> Result<bool, Bad> {
        if resp.status != 201 {
            return Err(Bad::Status(resp.status));
        }
        let posted: Posted = serde_json::from_slice(resp.body).map_err(|_| Bad::Body)?;
        let batch = th.plan.post_body.batch();
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
            let mut log = th.log.borrow_mut();
            for i in 0..batch as u32 {
                log.posted.insert(crate::zaqar::msg_key(self.id, sent.seq.wrapping_add(i)));
            }
        }
        if th.plan.args.workload == Workload::Agents {
            th.gate.drain.acked.fetch_add(batch as u64, Ordering::SeqCst);
        }
        Ok(false)
    }
}

#[derive(Default)]
struct Consumer {
    /// Hrefs (with claim ids) still to delete, with their queue.
    pending: VecDeque<(u32, String)>,
    /// An agent claims only from its own queue, and its deliveries are commands.
    own_queue: Option<u32>,
}

impl Consumer {
    fn next(&mut self, plan: &Plan, rng: &mut fastrand::Rng, out: &mut Vec<u8>) -> Sent {
        if let Some((q, href)) = self.pending.front() {
            let q = &plan.queues[*q as usize];
            encode_request(out, "DELETE", href, &plan.common, &q.project_header, None);
            return Sent { op: Op::Delete, queue: q.index, seq: 0 };
        }
        let q = match self.own_queue {
            Some(q) => &plan.queues[q as usize],
            None => &plan.queues[plan.sampler.sample(rng)],
        };
        out.extend_from_slice(&q.claim_request);
        Sent { op: Op::Claim, queue: q.index, seq: 0 }
    }

    fn handle(&mut self, th: &Thread, sent: Sent, resp: &Response<'_>, measured: bool) -> Result<bool, Bad> {
        match sent.op {
            Op::Delete => {
                self.pending.pop_front();
                if resp.status != 204 {
                    return Err(Bad::Status(resp.status));
                }
                if measured && self.own_queue.is_none() {
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
                    let q = sent.queue;
                    let now = now_us();
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
                                } else if self.own_queue.is_some() {
                                    self.command(th, &meta, now);
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

    /// An agent received a command for the first time: count it everywhere the drain and the
    /// summary look, with its delivery latency when it was sent in the measured window.
    fn command(&self, th: &Thread, meta: &crate::zaqar::MsgMeta, now: u64) {
        th.gate.drain.delivered.fetch_add(1, Ordering::SeqCst);
        th.slot().messages.fetch_add(1, Ordering::Relaxed);
        let Some(clock) = th.clock.get() else { return };
        if meta.sent_us >= clock.measure_start_us {
            let mut stats = th.stats.borrow_mut();
            stats.messages_received += 1;
            stats.delivery.saturating_record(now.saturating_sub(meta.sent_us).max(1));
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
    fn next(&mut self, plan: &Plan, rng: &mut fastrand::Rng, out: &mut Vec<u8>) -> Sent {
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
        Sent { op, queue: q.index, seq: 0 }
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
}

impl Mixed {
    fn next(&mut self, plan: &Plan, rng: &mut fastrand::Rng, out: &mut Vec<u8>) -> Sent {
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
                let (path, op) =
                    if chosen == MixOp::List { (&q.list_path, Op::List) } else { (&q.stats_path, Op::Stats) };
                encode_request(out, "GET", path, &plan.common, &q.project_header, None);
                Sent { op, queue: q.index, seq: 0 }
            }
            MixOp::Ping => ping(plan, out),
        }
    }

    fn handle(&mut self, th: &Thread, sent: Sent, resp: &Response<'_>, measured: bool) -> Result<bool, Bad> {
        match sent.op {
            Op::Post => self.producer.handle(th, sent, resp, measured),
            Op::Claim | Op::Delete => self.consumer.handle(th, sent, resp, measured),
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
                        Some(meta) if meta.queue != sent.queue => {
                            th.violation(Violation::WrongQueue { key: meta.key, expected: sent.queue, got: meta.queue })
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
        assert_eq!(p.peek(), Some(c + Duration::from_millis(4)), "peeking does not take");
        assert_eq!(p.next_send(), Some(c + Duration::from_millis(4)));
        assert!(Pacer::Closed.next_send().is_none());
    }
}
