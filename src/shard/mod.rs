//! Shards: one per core, each owning the queues that hash to it.
//!
//! A [`Shard`] holds its engine and its end of the channel mesh. [`Shard::call`] runs a command
//! on the queue's owner: inline when that is this shard, otherwise as a typed [`Command`] over
//! the mesh, whose [`Reply`] comes back the same way. Long polls park on the owner, woken by posts
//! and claim releases or by a timer set to the engine's next scheduled change (delay end, claim
//! expiry). glommio types stay behind this module and `server`.

pub mod command;
pub mod placement;
pub mod redis;

use std::cell::{Cell, OnceCell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use ahash::AHashMap;
use futures_lite::future;
use glommio::channels::channel_mesh::{Receivers, Senders};

pub use command::{Command, NamesQueue, QueueName, Reply, Volume, REVOCATIONS_OWNER};

use crate::limits::{LimitSet, Overrides, StoreQuota, Table};
use crate::queue::{DeadLetters, Engine, EngineError, Revocation, Revocations, Revoked};
use crate::storage::io::LogShared;
use crate::storage::{QueueRef, Store, StoreError};
use crate::sync::{self, Notify};
use crate::time::now_ms;

/// How often a shard reclaims expired messages and claims, and how many entries one pass examines
/// (bounded so a sweep never holds the executor for long).
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);
const SWEEP_BUDGET: usize = 20_000;
/// Compaction works in steps of this many bytes of old records (well under a millisecond), and
/// looks for work this often when it has none.
const COMPACT_BUDGET_BYTES: usize = 256 * 1024;
const COMPACT_POLL: Duration = Duration::from_millis(50);

type Outcome = Result<Reply, EngineError>;

/// What can go wrong running a command on a queue's owner: the owner's engine refused it, or the
/// owner could not be reached. Mapped to API errors at the API edge (`api::errors`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The mesh to the owner is closed (the server is stopping, or a shard died).
    #[error("a shard of this server is not answering")]
    MeshDown,
}

/// What travels between shards.
pub enum Envelope {
    Request {
        tag: u64,
        queue: QueueName,
        command: Command,
        wait_ms: u64,
    },
    Reply {
        tag: u64,
        outcome: Outcome,
    },
    /// The requester went away: stop a parked long poll.
    Cancel {
        tag: u64,
    },
    /// The sender has drained its connections and needs nothing more from the mesh.
    Drained,
}

/// The mesh end of one shard (absent with a single shard).
pub struct Mesh {
    pub senders: Senders<Envelope>,
    pub receivers: Receivers<Envelope>,
}

pub struct Shard {
    pub id: usize,
    pub count: usize,
    engine: RefCell<Engine<Box<dyn Store>>>,
    senders: Option<Senders<Envelope>>,
    next_tag: Cell<u64>,
    pending: RefCell<AHashMap<u64, sync::Sender<Outcome>>>,
    /// Long polls of remote requesters, by (peer, tag), so a Cancel can stop them.
    parked: RefCell<AHashMap<(usize, u64), glommio::task::JoinHandle<()>>>,
    waiters: RefCell<AHashMap<QueueName, Rc<Notify>>>,
    drained_peers: Cell<usize>,
    all_drained: Notify,
    /// Set on shutdown: parked long polls answer at once and no new ones park.
    stopping: Cell<bool>,
    stopped: Notify,
    /// The durable log's flusher mailbox (absent with `memory` durability): replies wait on it.
    log: OnceCell<Rc<LogShared>>,
    recovery: Cell<Recovery>,
    /// The revoked tokens this shard's requests are checked against: loaded from the owner at
    /// start-up, then added to by every revocation (see [`Shard::revoke`]).
    revoked: RefCell<Revocations>,
    /// Quotas and rate limits of every project; shard 0 keeps the `PUT` overrides in a file.
    limits: RefCell<Table>,
    limits_file: OnceCell<PathBuf>,
    /// Shard 0 applies one `PUT` of limits at a time (the file holds all of them).
    limits_busy: Cell<bool>,
    limits_free: Notify,
    /// The `redis-cluster` backend, when configured: queue commands run there instead of on
    /// `engine`, from whichever shard took the request (the cluster owns the data, so there is
    /// no owner shard to hop to).
    remote: OnceCell<Remote>,
}

/// A shard's way into the Redis Cluster.
pub struct Remote {
    pub queues: redis::RedisQueues,
    pub cluster: Rc<crate::redis::Cluster>,
    /// Longest a parked long poll sleeps before it looks again (pub/sub wake-ups may be lost).
    pub poll_fallback: Duration,
}

/// This shard's connections (also `marconi check`'s) to the Redis Cluster of the `redis-cluster` backend.
pub async fn connect_remote(config: &crate::config::Config) -> Result<Remote, crate::redis::RedisError> {
    let wanted = &config.redis;
    let options = crate::redis::Options {
        nodes: wanted.nodes.clone().unwrap_or_default(),
        ack: match wanted.ack {
            crate::config::RedisAck::Replicas => crate::redis::Ack::Replicas,
            crate::config::RedisAck::Fsync => crate::redis::Ack::Fsync,
            crate::config::RedisAck::Async => crate::redis::Ack::Async,
        },
        ack_replicas: wanted.ack_replicas,
        ack_timeout_ms: wanted.ack_timeout_ms,
        read_fence: wanted.read_fence,
        command_timeout_ms: wanted.command_timeout_ms,
        max_batch: wanted.max_batch,
        library: redis::LIBRARY,
        library_name: redis::LIBRARY_NAME,
    };
    let cluster = crate::redis::Cluster::connect(options).await?;
    let queues = redis::RedisQueues::new(cluster.clone(), &wanted.key_prefix, config.api.clone());
    Ok(Remote { queues, cluster, poll_fallback: Duration::from_millis(wanted.poll_fallback_ms) })
}

/// Shard 0 of a node on the Redis Cluster sweeps this many queues that hold messages this often,
/// a rolling pass over the cluster (expiry is exact at read time whatever these are; they bound
/// how long expired messages of untouched queues hold memory, and how stale health's counts are).
pub const REMOTE_IDLE_SWEEP: Duration = Duration::from_secs(1);
pub const REMOTE_IDLE_SWEEP_BUDGET: usize = 1000;

/// How often a shard on the Redis Cluster reloads the revocations, which other marconi nodes may
/// have added: the longest a token revoked through another node still works here.
pub const REMOTE_REVOCATIONS_REFRESH: Duration = Duration::from_secs(2);

/// The file in the data directory that keeps the overrides set by `PUT /v2/projects/{id}/limits`.
pub const LIMITS_FILE: &str = "limits.json";

/// The shard that applies `PUT`s of limits (and writes their file), so they happen in one order.
const LIMITS_SHARD: usize = 0;

/// How this shard's start-up recovery went, for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recovery {
    pub ms: u64,
    pub records: u64,
}

impl Shard {
    /// Builds the shard; `mesh` is `None` when it is the only one. Call [`Shard::start`] next.
    pub fn new(id: usize, count: usize, engine: Engine<Box<dyn Store>>, mesh: Option<Senders<Envelope>>) -> Rc<Self> {
        Rc::new(Self {
            id,
            count,
            engine: RefCell::new(engine),
            senders: mesh,
            next_tag: Cell::new(1),
            pending: RefCell::default(),
            parked: RefCell::default(),
            waiters: RefCell::default(),
            drained_peers: Cell::new(0),
            all_drained: Notify::new(),
            stopping: Cell::new(false),
            stopped: Notify::new(),
            log: OnceCell::new(),
            recovery: Cell::default(),
            revoked: RefCell::default(),
            limits: RefCell::default(),
            limits_file: OnceCell::new(),
            limits_busy: Cell::new(false),
            limits_free: Notify::new(),
            remote: OnceCell::new(),
        })
    }

    /// Puts this shard's queues on the Redis Cluster (before [`Shard::start`]).
    pub fn set_remote(&self, remote: Remote) {
        let _ = self.remote.set(remote);
    }

    /// The Redis Cluster backend, when queues live there.
    pub fn remote(&self) -> Option<&Remote> {
        self.remote.get()
    }

    /// Attaches the durable log (before [`Shard::start`]): replies then wait for its flushes as
    /// the durability mode says, and a compaction task runs.
    pub fn set_log(&self, log: Rc<LogShared>) {
        let _ = self.log.set(log);
    }

    /// Sets the limits of every project (before [`Shard::start`]) and, with durable storage, the
    /// file that keeps the overrides set by `PUT`.
    pub fn set_limits(&self, table: Table, file: Option<PathBuf>) {
        *self.limits.borrow_mut() = table;
        if let Some(file) = file {
            let _ = self.limits_file.set(file);
        }
    }

    /// The limits in force for `project`.
    pub fn limits(&self, project: &str) -> LimitSet {
        self.limits.borrow().limits(project)
    }

    /// The overrides set by `PUT` for `project`.
    pub fn stored_limits(&self, project: &str) -> Overrides {
        self.limits.borrow().stored(project)
    }

    /// Replaces the overrides of `project` set by `PUT`: on shard 0, in the file, then on every
    /// shard, before it returns.
    pub async fn put_limits(self: &Rc<Self>, project: &str, overrides: Overrides) -> Result<(), ShardError> {
        if self.remote.get().is_some() {
            return Err(EngineError::Invalid(
                "limits set by PUT are kept in the data directory, which a node on the redis-cluster backend \
                 does not have: set them under [limits.projects] in every node's configuration"
                    .into(),
            )
            .into());
        }
        let queue = QueueRef { project, name: "" };
        self.call_on(LIMITS_SHARD, queue, Command::PutLimits { overrides }, 0).await.map(|_| ())
    }

    /// Shard 0's part of [`Shard::put_limits`], one at a time, in a task of its own: a requester
    /// that goes away cannot stop it between the file and the shards.
    async fn apply_put_limits(self: &Rc<Self>, project: &str, overrides: Overrides) -> Outcome {
        let (shard, project) = (self.clone(), project.to_owned());
        let task = glommio::spawn_local(async move { shard.apply_put_limits_in_turn(&project, overrides).await });
        task.detach().await.unwrap_or_else(|| Err(peer_down()))
    }

    async fn apply_put_limits_in_turn(self: &Rc<Self>, project: &str, overrides: Overrides) -> Outcome {
        while self.limits_busy.get() {
            self.limits_free.notified().await;
        }
        self.limits_busy.set(true);
        let outcome = self.apply_put_limits_alone(project, overrides).await;
        self.limits_busy.set(false);
        self.limits_free.notify_all();
        outcome
    }

    async fn apply_put_limits_alone(self: &Rc<Self>, project: &str, overrides: Overrides) -> Outcome {
        if let Some(file) = self.limits_file.get() {
            let mut all = self.limits.borrow().stored_all().clone();
            if overrides.is_empty() {
                all.remove(project);
            } else {
                all.insert(project.to_owned(), overrides);
            }
            let bytes = crate::storage::limits_file::encode(&all);
            let path = file.clone();
            glommio::executor()
                .spawn_blocking(move || crate::storage::limits_file::write(&path, &bytes))
                .await
                .map_err(|e| EngineError::Store(StoreError::Io(format!("writing {}: {e}", file.display()))))?;
        }
        self.limits.borrow_mut().set_stored(project, overrides);
        let queue = QueueRef { project, name: "" };
        let mut pending = Vec::with_capacity(self.count);
        for peer in (0..self.count).filter(|&p| p != self.id) {
            let sent = self.send_request(peer, queue.into(), Command::SetLimits { overrides }, 0).await;
            pending.push(sent.map_err(|_| peer_down())?);
        }
        for reply in pending {
            reply.wait().await.map_err(|_| peer_down())??;
        }
        Ok(Reply::Done)
    }

    /// Records how recovery went (before [`Shard::start`]).
    pub fn set_recovery(&self, recovery: Recovery) {
        self.recovery.set(recovery);
    }

    /// Flushes the log for shutdown.
    pub async fn close_log(&self) {
        if let Some(log) = self.log.get() {
            if let Err(err) = self.write_out() {
                tracing::error!(%err, "writing the log out at shutdown failed");
            }
            log.close().await;
        }
    }

    /// Starts the background tasks: one mesh reader per peer, and the expiry sweep.
    pub fn start(self: &Rc<Self>, receivers: Option<Receivers<Envelope>>) {
        if let Some(mut receivers) = receivers {
            for (peer, stream) in receivers.streams() {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    while let Some(envelope) = stream.recv().await {
                        crate::metrics::with(|m| m.mesh_received(peer));
                        shard.on_envelope(peer, envelope);
                    }
                })
                .detach();
            }
        }
        if self.remote.get().is_some() {
            let shard = self.clone();
            glommio::spawn_local(async move {
                loop {
                    glommio::timer::sleep(REMOTE_REVOCATIONS_REFRESH).await;
                    if let Err(err) = shard.load_revocations().await {
                        tracing::warn!(%err, "reloading revocations from the cluster failed; trying again");
                    }
                    shard.revoked.borrow_mut().prune(now_ms());
                }
            })
            .detach();
            if self.id == 0 {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    loop {
                        glommio::timer::sleep(REMOTE_IDLE_SWEEP).await;
                        if let Some(remote) = shard.remote.get() {
                            if let Err(err) = remote.queues.sweep_step(REMOTE_IDLE_SWEEP_BUDGET).await {
                                tracing::warn!(%err, "sweeping idle queues of the cluster failed; trying again");
                            }
                        }
                    }
                })
                .detach();
            }
            return;
        }
        let shard = self.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(SWEEP_INTERVAL).await;
                let now = now_ms();
                shard.engine.borrow_mut().sweep(now, SWEEP_BUDGET);
                shard.revoked.borrow_mut().prune(now);
                // What the sweep logged goes out now rather than with the next answer.
                let _ = shard.write_out();
            }
        })
        .detach();
        if self.log.get().is_some() {
            let shard = self.clone();
            glommio::spawn_local(async move {
                loop {
                    if shard.engine.borrow_mut().compact_step(COMPACT_BUDGET_BYTES) {
                        futures_lite::future::yield_now().await;
                    } else {
                        glommio::timer::sleep(COMPACT_POLL).await;
                    }
                }
            })
            .detach();
        }
    }

    /// The shard that owns `queue`.
    pub fn owner_of(&self, queue: QueueRef<'_>) -> usize {
        placement::owner(queue.project, queue.name, self.count)
    }

    /// Runs `command` on the owner of `queue`, parking up to `wait_ms` while the answer is empty.
    pub async fn call(
        self: &Rc<Self>,
        queue: QueueRef<'_>,
        command: Command,
        wait_ms: u64,
    ) -> Result<Reply, ShardError> {
        let owner = self.owner_of(queue);
        self.call_on(owner, queue, command, wait_ms).await
    }

    /// Runs `command` on every shard (project-wide listings, health) and returns the replies in
    /// shard order. All requests are in flight at once.
    pub async fn scatter(self: &Rc<Self>, project: &str, command: Command) -> Result<Vec<Reply>, ShardError> {
        let queue = QueueRef { project, name: "" };
        if self.remote.get().is_some() && command.lives_in_backend() {
            // The cluster answers for every shard of every node at once.
            return Ok(vec![self.run_local(queue, &command, 0).await?]);
        }
        let mut remote = Vec::with_capacity(self.count);
        for peer in (0..self.count).filter(|&p| p != self.id) {
            remote.push(self.send_request(peer, queue.into(), command.clone(), 0).await?);
        }
        let local = self.run_local(queue, &command, 0).await;
        let mut replies = Vec::with_capacity(self.count);
        for pending in remote {
            replies.push(pending.wait().await??);
        }
        // Peers were asked in ascending order without this shard: its reply goes at its index.
        replies.insert(self.id.min(replies.len()), local?);
        Ok(replies)
    }

    async fn call_on(
        self: &Rc<Self>,
        owner: usize,
        queue: QueueRef<'_>,
        command: Command,
        wait_ms: u64,
    ) -> Result<Reply, ShardError> {
        if owner == self.id || (self.remote.get().is_some() && command.lives_in_backend()) {
            return Ok(self.run_local(queue, &command, wait_ms).await?);
        }
        crate::metrics::with(|m| m.mesh_hops.set(m.mesh_hops.get() + 1));
        let pending = self.send_request(owner, queue.into(), command, wait_ms).await?;
        Ok(pending.wait().await??)
    }

    async fn send_request(
        self: &Rc<Self>,
        owner: usize,
        queue: QueueName,
        command: Command,
        wait_ms: u64,
    ) -> Result<PendingReply, ShardError> {
        let senders = self.senders.as_ref().ok_or_else(mesh_down)?;
        let tag = self.next_tag.get();
        self.next_tag.set(tag.wrapping_add(1));
        let (tx, rx) = sync::oneshot();
        self.pending.borrow_mut().insert(tag, tx);
        let guard = PendingReply { shard: self.clone(), owner, tag, rx: Some(rx), cancel_on_drop: wait_ms > 0 };
        if senders.send_to(owner, Envelope::Request { tag, queue, command, wait_ms }).await.is_err() {
            return Err(mesh_down());
        }
        crate::metrics::with(|m| m.mesh_sent(owner));
        Ok(guard)
    }

    /// Executes locally, parking while the answer is empty and `wait_ms` has not run out.
    ///
    /// The outcome may show changes that are not yet as durable as the mode promises: whoever
    /// shows it to a client first awaits [`Shard::settle`] (the connection, once per batch of
    /// answers; this shard, before it replies over the mesh).
    async fn run_local(self: &Rc<Self>, queue: QueueRef<'_>, command: &Command, wait_ms: u64) -> Outcome {
        match command {
            Command::Metrics => return Ok(Reply::Metrics(Box::new(self.metrics_snapshot()))),
            Command::Volume if self.remote.get().is_some() => {
                return Ok(Reply::Volume(self.remote.get().map(|r| r.queues.swept_volume()).unwrap_or_default()))
            }
            Command::InstallRevocations(list) => {
                self.install(list);
                return Ok(Reply::Done);
            }
            Command::PutLimits { overrides } => return self.apply_put_limits(queue.project, *overrides).await,
            Command::SetLimits { overrides } => {
                self.limits.borrow_mut().set_stored(queue.project, *overrides);
                return Ok(Reply::Done);
            }
            _ => {}
        }
        if let Some(remote) = self.remote.get() {
            return self.run_remote(remote, queue, command, wait_ms).await;
        }
        self.run_engine(queue, command, wait_ms).await
    }

    /// [`Shard::run_local`] on the Redis Cluster. A long poll that finds nothing subscribes to
    /// its queue's wake-up channel (posts and releases through any node publish there), looks
    /// once more (a post may have landed before the subscription), then sleeps until a wake-up,
    /// the queue's next scheduled change, the fallback interval, its deadline or shutdown.
    async fn run_remote(&self, remote: &Remote, queue: QueueRef<'_>, command: &Command, wait_ms: u64) -> Outcome {
        let deadline = now_ms().saturating_add(wait_ms);
        let mut poll = (wait_ms > 0).then(LongPoll::default);
        let mut subscription = None;
        loop {
            let executed = remote.queues.execute(queue, command).await?;
            let Some(poll) = poll.as_mut() else { return Ok(executed.reply) };
            if !Command::reply_is_empty(&executed.reply) {
                poll.end(poll.woken_by.unwrap_or(PollEnd::Immediate));
                return Ok(executed.reply);
            }
            let now = now_ms();
            if self.stopping.get() || now >= deadline {
                poll.end(if self.stopping.get() { PollEnd::Shutdown } else { PollEnd::Timeout });
                return Ok(executed.reply);
            }
            drop(executed.reply);
            let Some(wakes) = subscription.as_mut() else {
                let wakes = remote.cluster.subscribe(&remote.queues.wake_channel(queue));
                // Look again only once the node confirmed the subscription, so a post between the
                // two looks is heard; an unreachable node leaves it to the fallback.
                future::or(wakes.ready(), glommio::timer::sleep(remote.poll_fallback)).await;
                subscription = Some(wakes);
                continue;
            };
            let until_deadline = deadline - now;
            let (nap, timer_end) = match executed.next_change_in_ms {
                Some(at) if at < until_deadline => (at, PollEnd::Scheduled),
                _ => (until_deadline, PollEnd::Timeout),
            };
            let fallback = remote.poll_fallback.as_millis() as u64;
            let (nap, timer_end) = if fallback < nap { (fallback, PollEnd::Scheduled) } else { (nap, timer_end) };
            let _parked = Parked::new();
            let woken = async {
                wakes.next().await;
                PollEnd::Woken
            };
            let timer = async {
                glommio::timer::sleep(Duration::from_millis(nap.max(1))).await;
                timer_end
            };
            let stopped = async {
                self.stopped.notified().await;
                PollEnd::Shutdown
            };
            poll.woken_by = Some(future::or(stopped, future::or(woken, timer)).await);
        }
    }

    /// Waits until every change this shard made so far is as durable as the mode promises (in
    /// `sync`, on disk): the barrier before any answer is shown, reads included. Concurrent
    /// callers share one flush (group commit).
    pub async fn settle(&self) -> Result<(), ShardError> {
        if let Some(log) = self.log.get() {
            self.write_out()?;
            log.settle().await.map_err(|e| ShardError::Engine(e.into()))?;
        }
        Ok(())
    }

    /// Hands what the store staged to the kernel (every mode promises that much before an answer).
    fn write_out(&self) -> Result<(), ShardError> {
        self.engine.borrow_mut().store_mut().write_out().map_err(|e| ShardError::Engine(e.into()))
    }

    async fn run_engine(self: &Rc<Self>, queue: QueueRef<'_>, command: &Command, wait_ms: u64) -> Outcome {
        if let Some(log) = self.log.get() {
            log.wait_for_room().await;
        }
        let deadline = now_ms().saturating_add(wait_ms);
        // Counts how the long poll ended (cancelled unless it says otherwise before it drops).
        let mut poll = (wait_ms > 0).then(LongPoll::default);
        loop {
            let now = now_ms();
            let mut outcome = command::execute(&mut self.engine.borrow_mut(), queue, command, now);
            let mut parks = false;
            if let Ok(reply) = &mut outcome {
                if command.may_wake_waiters() {
                    self.wake(queue);
                }
                if let Reply::Claimed(claimed) = reply {
                    if let Some(letters) = claimed.dead_letters.take() {
                        self.forward_dead_letters(queue.project, letters);
                    }
                }
                if let Some(poll) = poll.as_mut().filter(|_| Command::reply_is_empty(reply)) {
                    if self.stopping.get() {
                        poll.end(PollEnd::Shutdown);
                    } else if now >= deadline {
                        poll.end(PollEnd::Timeout);
                    } else {
                        parks = true;
                    }
                    if !parks {
                        return outcome;
                    }
                }
            }
            if let Some(poll) = poll.as_mut().filter(|_| parks) {
                // The empty answer is not kept while parked (a page's buffer per poll).
                drop(outcome);
                poll.woken_by = Some(self.park(queue, now, deadline).await);
                continue;
            }
            if let Some(poll) = poll.as_mut() {
                poll.end(poll.woken_by.unwrap_or(PollEnd::Immediate));
            }
            return outcome;
        }
    }

    /// Sleeps until a notification for `queue`, the engine's next scheduled change, `deadline`
    /// or shutdown, and says which came first. Leaves no waiter behind, whichever it was.
    async fn park(&self, queue: QueueRef<'_>, now: u64, deadline: u64) -> PollEnd {
        let (wake_at, timer_end) = match self.engine.borrow().next_change_ms(queue, now) {
            Some(at) if at < deadline => (at, PollEnd::Scheduled),
            _ => (deadline, PollEnd::Timeout),
        };
        let known = self.waiters.borrow().get(&queue as &dyn NamesQueue).cloned();
        let notify = known.unwrap_or_else(|| self.waiters.borrow_mut().entry(queue.into()).or_default().clone());
        let _parked = Parked::new();
        let ended = {
            let notified = async {
                notify.notified().await;
                PollEnd::Woken
            };
            let nap = async {
                glommio::timer::sleep(Duration::from_millis(wake_at.saturating_sub(now).max(1))).await;
                timer_end
            };
            let stopped = async {
                self.stopped.notified().await;
                PollEnd::Shutdown
            };
            future::or(stopped, future::or(notified, nap)).await
        };
        // Nobody else waits on this queue: drop its notifier rather than keep one per queue ever
        // polled.
        if notify.waiters() == 0 {
            self.waiters.borrow_mut().remove(&queue as &dyn NamesQueue);
        }
        ended
    }

    fn wake(&self, queue: QueueRef<'_>) {
        let notify = self.waiters.borrow().get(&queue as &dyn NamesQueue).cloned();
        if let Some(n) = notify {
            n.notify_all();
        }
    }

    /// Moves messages into their dead-letter queue, which may live on another shard.
    fn forward_dead_letters(self: &Rc<Self>, project: &str, letters: DeadLetters) {
        let shard = self.clone();
        let queue = QueueName::new(project, &letters.queue);
        glommio::spawn_local(async move {
            // Moving messages is no new load: quotas apply to what clients post.
            let command = Command::PostMessages {
                client_hash: 0,
                messages: letters.messages,
                bodies: letters.bodies,
                request_bytes: 0,
                quota: StoreQuota::UNLIMITED,
            };
            if let Err(err) = shard.call(queue.as_ref(), command, 0).await {
                tracing::warn!(%err, "moving messages to a dead-letter queue failed");
            }
        })
        .detach();
    }

    fn on_envelope(self: &Rc<Self>, peer: usize, envelope: Envelope) {
        match envelope {
            Envelope::Request { tag, queue, command, wait_ms } => {
                let shard = self.clone();
                let task = glommio::spawn_local(async move {
                    let mut outcome = shard.run_local(queue.as_ref(), &command, wait_ms).await;
                    // The reply leaves this shard: it may show only what is settled here.
                    if let Err(ShardError::Engine(err)) = shard.settle().await {
                        outcome = Err(err);
                    }
                    shard.parked.borrow_mut().remove(&(peer, tag));
                    shard.reply(peer, tag, outcome).await;
                })
                .detach();
                if wait_ms > 0 {
                    self.parked.borrow_mut().insert((peer, tag), task);
                }
            }
            Envelope::Reply { tag, outcome } => {
                if let Some(tx) = self.pending.borrow_mut().remove(&tag) {
                    tx.send(outcome);
                }
            }
            Envelope::Cancel { tag } => {
                if let Some(task) = self.parked.borrow_mut().remove(&(peer, tag)) {
                    task.cancel();
                }
            }
            Envelope::Drained => {
                self.drained_peers.set(self.drained_peers.get() + 1);
                self.all_drained.notify_all();
            }
        }
    }

    async fn reply(&self, peer: usize, tag: u64, outcome: Outcome) {
        if let Some(senders) = &self.senders {
            // A closed mesh means the peer is gone: nobody is left to answer.
            if senders.send_to(peer, Envelope::Reply { tag, outcome }).await.is_ok() {
                crate::metrics::with(|m| m.mesh_sent(peer));
            }
        }
    }

    /// Tells every peer this shard needs nothing more, then serves their requests until each of
    /// them has said the same. Shards may only exit once no peer can still call them.
    pub async fn drain_mesh(&self) {
        let Some(senders) = &self.senders else { return };
        for peer in (0..self.count).filter(|&p| p != self.id) {
            if senders.send_to(peer, Envelope::Drained).await.is_ok() {
                crate::metrics::with(|m| m.mesh_sent(peer));
            }
        }
        while self.drained_peers.get() + 1 < self.count {
            self.all_drained.notified().await;
        }
    }

    /// Shutdown has begun: release every parked long poll (each answers as its wait ran out).
    pub fn stop(&self) {
        self.stopping.set(true);
        self.stopped.notify_all();
    }

    /// Revokes the tokens of `project` named by `subject` issued up to `revoked.revoked_ms`: a
    /// durable record on the owner of revocations, then every shard's set, all before this
    /// returns. The owner keeps at most `max` subjects.
    pub async fn revoke(
        self: &Rc<Self>,
        project: &str,
        subject: &str,
        revoked: Revoked,
        max: usize,
    ) -> Result<(), ShardError> {
        let queue = QueueRef { project, name: subject };
        self.call_on(REVOCATIONS_OWNER, queue, Command::Revoke { revoked, max }, 0).await?;
        let one = Revocation { project: project.to_owned(), subject: subject.to_owned(), revoked };
        self.scatter(project, Command::InstallRevocations(vec![one])).await?;
        Ok(())
    }

    /// Fills this shard's set from the owner's records (at start-up, before serving).
    pub async fn load_revocations(self: &Rc<Self>) -> Result<usize, ShardError> {
        let queue = QueueRef { project: "", name: "" };
        match self.call_on(REVOCATIONS_OWNER, queue, Command::Revocations, 0).await? {
            Reply::Revocations(list) => {
                self.install(&list);
                Ok(list.len())
            }
            _ => Err(ShardError::MeshDown),
        }
    }

    fn install(&self, list: &[Revocation]) {
        let mut revoked = self.revoked.borrow_mut();
        for r in list {
            revoked.insert(&r.project, &r.subject, r.revoked);
        }
    }

    /// Whether a token of `project` named by `subject` and issued at `issued_ms` is revoked.
    pub fn is_revoked(&self, project: &str, subject: &str, issued_ms: u64) -> bool {
        self.revoked.borrow().refuses(project, subject, issued_ms)
    }

    /// This shard's counters, its engine's totals and its mesh gauges.
    pub fn metrics_snapshot(&self) -> crate::metrics::Snapshot {
        let mut snapshot = command::engine_snapshot(&self.engine.borrow(), self.count);
        let recovery = self.recovery.get();
        (snapshot.recovery_ms, snapshot.recovered_records) = (recovery.ms, recovery.records);
        snapshot.shard = self.id;
        snapshot.mesh_pending_replies = self.pending.borrow().len() as u64;
        snapshot.mesh_parked = self.parked.borrow().len() as u64;
        snapshot.revocations = self.revoked.borrow().len() as u64;
        snapshot.redis = self.remote.get().map(|r| r.cluster.stats());
        let queues = self.waiters.borrow();
        snapshot.waiters = crate::metrics::Waiters {
            stop: (self.stopped.waiters() + self.all_drained.waiters()) as u64,
            queues: queues.values().map(|n| n.waiters() as u64).sum(),
            queue_notifiers: queues.len() as u64,
            log: self.log.get().map_or(0, |log| log.waiters() as u64),
        };
        snapshot
    }

    /// Totals of this shard's engine.
    pub fn volume(&self) -> Volume {
        let engine = self.engine.borrow();
        Volume { queues: engine.queue_count() as u64, messages: engine.message_count() as u64 }
    }
}

/// Why a long poll ended, as `/metrics` counts it (`marconi_long_polls_total{ended=…}`).
pub use crate::metrics::PollEnd;

/// A long poll in progress: records how it ended exactly once, as cancelled if it is dropped
/// before it says otherwise (the client or the requesting shard went away).
#[derive(Default)]
struct LongPoll {
    /// What ended the last park, if it parked: a poll that then finds messages ended that way.
    woken_by: Option<PollEnd>,
    ended: bool,
}

impl LongPoll {
    fn end(&mut self, how: PollEnd) {
        debug_assert!(!self.ended, "a long poll ended twice");
        self.ended = true;
        crate::metrics::with(|m| m.long_poll_ended(how));
    }
}

impl Drop for LongPoll {
    fn drop(&mut self) {
        if !self.ended {
            crate::metrics::with(|m| m.long_poll_ended(PollEnd::Cancelled));
        }
    }
}

/// Counts a parked long poll for the `marconi_long_polls_parked` gauge while it lives.
struct Parked;

impl Parked {
    fn new() -> Self {
        crate::metrics::with(|m| m.long_polls_parked.set(m.long_polls_parked.get() + 1));
        Parked
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        crate::metrics::with(|m| m.long_polls_parked.set(m.long_polls_parked.get() - 1));
    }
}

/// A request in flight to another shard. Dropping it before the reply (the client went away)
/// cancels a parked long poll on the owner.
struct PendingReply {
    shard: Rc<Shard>,
    owner: usize,
    tag: u64,
    rx: Option<sync::Receiver<Outcome>>,
    cancel_on_drop: bool,
}

impl PendingReply {
    async fn wait(mut self) -> Result<Outcome, ShardError> {
        let rx = self.rx.take().ok_or_else(mesh_down)?;
        let outcome = rx.await.ok_or_else(mesh_down);
        self.cancel_on_drop = false;
        outcome
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        if self.shard.pending.borrow_mut().remove(&self.tag).is_some() && self.cancel_on_drop {
            if let Some(senders) = &self.shard.senders {
                if senders.try_send_to(self.owner, Envelope::Cancel { tag: self.tag }).is_ok() {
                    crate::metrics::with(|m| m.mesh_sent(self.owner));
                }
            }
        }
    }
}

fn mesh_down() -> ShardError {
    ShardError::MeshDown
}

/// A peer did not take a change of limits: the `PUT` answers 503 and can be repeated.
fn peer_down() -> EngineError {
    EngineError::Store(StoreError::Io("a shard did not take the new limits".into()))
}
