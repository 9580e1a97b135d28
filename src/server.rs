//! Starts the server: one pinned glommio executor per shard, each accepting on the same port
//! (SO_REUSEPORT), joined by the channel mesh; stops them gracefully on SIGINT/SIGTERM.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use std::time::Instant;

use ahash::AHashMap;
use futures_lite::future;
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};

use crate::api::Api;
use crate::auth::{keystone, subjects, Authenticator, Keyring};
use crate::config::{AuthMode, Backend, Config};
use crate::http::{self, Shutdown};
use crate::limits::Table;
use crate::machine::{self, Layout, PlanError};
use crate::metrics::Refusal;
use crate::queue::Engine;
use crate::settings::SettingsError;
use crate::shard::{Envelope, Shard, LIMITS_FILE};
use crate::storage::datadir::{DataDir, DataDirError};
use crate::storage::limits_file::{self, LimitsFileError};
use crate::storage::recovery::{self, Recovered, RecoveryError, ScanOptions};
use crate::storage::segment::segment_capacity;
use crate::storage::{MemoryStore, SegmentStore, Store};
use crate::sync::Notify;
use crate::tls;

/// How often shards look at the stop flag set by the signal handler (not on any request path).
const STOP_POLL: Duration = Duration::from_millis(50);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);
/// How long a node on the Redis Cluster keeps asking for the revocations at start-up (the cluster
/// may be settling), and how often.
const REMOTE_START_WAIT: Duration = Duration::from_secs(30);
const REMOTE_START_RETRY: Duration = Duration::from_millis(200);
/// Open connections a shard must have reached before their closing hands memory back to the OS.
const TRIM_AFTER_PEAK: usize = 1024;
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start shard {shard}: {reason}")]
    Executor { shard: usize, reason: String },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("shard {shard}: {source}")]
    Recovery { shard: usize, source: RecoveryError },
    #[error(transparent)]
    Config(#[from] SettingsError),
    #[error(transparent)]
    Keys(#[from] crate::auth::keys::KeysError),
    #[error("{0}")]
    Keystone(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Limits(#[from] LimitsFileError),
}

/// What authentication needs loaded before any shard serves (reading files and resolving names
/// block, so not on a shard): the signing keys of `token` mode, Keystone's address.
#[derive(Clone)]
struct AuthSetup {
    keys: Option<Arc<Keyring>>,
    keystone: Option<keystone::Endpoint>,
    subjects: Arc<Vec<subjects::Grant>>,
}

impl AuthSetup {
    fn load(config: &Config) -> Result<AuthSetup, ServerError> {
        let auth = &config.auth;
        let mut setup = AuthSetup { keys: None, keystone: None, subjects: Arc::default() };
        match auth.mode {
            AuthMode::Token => {
                let path = auth.keys_file.as_deref().ok_or_else(|| {
                    ServerError::Config(SettingsError::Auth("auth.mode = token needs auth.keys_file".into()))
                })?;
                let keys = Keyring::load(path)?;
                if Keyring::readable_by_others(path) {
                    tracing::warn!(path = %path.display(), "the keys file can be read by others than its owner: chmod 600 it");
                }
                tracing::info!(keys = keys.ids().count(), signing = %keys.newest().id, "auth: token mode");
                setup.keys = Some(Arc::new(keys));
                if let Some(path) = &auth.subjects_file {
                    let grants = subjects::load(path)?;
                    if config.tls.client_ca_file.is_none() {
                        tracing::warn!(
                            "auth.subjects_file is set but tls.client_ca_file is not: no client presents a certificate"
                        );
                    }
                    tracing::info!(subjects = grants.len(), "auth: client certificates stand for credentials");
                    setup.subjects = Arc::new(grants);
                }
            }
            AuthMode::Keystone => {
                let url = auth.keystone.url.as_deref().unwrap_or("");
                let endpoint = keystone::Endpoint::resolve(url).map_err(ServerError::Keystone)?;
                tracing::info!(url, addrs = ?endpoint.addrs, "auth: keystone mode");
                setup.keystone = Some(endpoint);
            }
            AuthMode::None => tracing::info!("auth: none (X-Project-ID is believed; loopback or --insecure-no-auth)"),
        }
        Ok(setup)
    }
}

/// The addresses the server accepts on: plain HTTP, TLS, or both (`tls.listen` beside `listen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub plain: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
}

impl Bound {
    /// What the configuration asks for: with a certificate, `listen` speaks TLS unless
    /// `tls.listen` gives TLS its own address.
    fn planned(config: &Config, tls: bool) -> Self {
        match (tls, config.tls.listen) {
            (false, _) => Bound { plain: Some(config.listen), tls: None },
            (true, None) => Bound { plain: None, tls: Some(config.listen) },
            (true, Some(tls)) => Bound { plain: Some(config.listen), tls: Some(tls) },
        }
    }

    /// The address `listen` names: the one clients are told about first.
    pub fn main(&self) -> Option<SocketAddr> {
        self.plain.or(self.tls)
    }
}

/// Locks the data directory and checks every shard's log, all shards at once on plain threads
/// (blocking I/O, before any executor serves).
fn open_storage(config: &Config, shards: usize) -> Result<Option<(DataDir, Vec<Recovered>)>, ServerError> {
    let Some(path) = machine::data_dir(config) else {
        return Ok(None);
    };
    let storage = &config.storage;
    let dir = DataDir::open(&path, shards)?;
    let segment_bytes = storage.segment_size_bytes;
    let scans: Vec<Result<Recovered, RecoveryError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..shards)
            .map(|id| {
                let shard_dir = dir.shard_dir(id);
                let opts = ScanOptions { shard: id as u32, segment_bytes, repair: storage.repair };
                scope.spawn(move || recovery::scan_dir(&shard_dir, &opts))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(RecoveryError::Io { path: path.clone(), source: std::io::Error::other("recovery panicked") })
                })
            })
            .collect()
    });
    let mut recovered = Vec::with_capacity(shards);
    for (shard, scan) in scans.into_iter().enumerate() {
        recovered.push(scan.map_err(|source| ServerError::Recovery { shard, source })?);
    }
    Ok(Some((dir, recovered)))
}

/// Runs the server until SIGINT or SIGTERM; `on_ready` gets the bound address once every shard
/// listens. The configuration is judged by [`Config::validate`] alone, whoever built it: the
/// server has no limits of its own beyond the knob table's.
pub fn run(config: Config, on_ready: impl FnOnce(&Bound, &Layout)) -> Result<(), ServerError> {
    config.validate()?;
    let layout = machine::plan(&config)?;
    let certificates = match tls::Files::of(&config.tls)? {
        Some(files) => {
            let certificates = tls::Certificates::load(files)?;
            tls::watch_sighup(certificates.clone()).map_err(ServerError::Signals)?;
            Some(certificates)
        }
        None => None,
    };
    let mut config = config;
    config.storage.segment_size_bytes = segment_capacity(config.storage.segment_size_bytes);
    // Held until every shard stopped: the lock keeps a second server off the directory.
    let (_data_dir, recovered) = match open_storage(&config, layout.shards)? {
        Some((dir, recovered)) => (Some(dir), recovered.into_iter().map(Some).collect()),
        None => (None, (0..layout.shards).map(|_| None).collect::<Vec<_>>()),
    };
    let mut recovered = recovered.into_iter();
    let auth = AuthSetup::load(&config)?;
    // The quotas of every project: the configuration's, then those set by PUT (shard 0 keeps them).
    let limits_file = _data_dir.as_ref().map(|dir| dir.path().join(LIMITS_FILE));
    let stored = match &limits_file {
        Some(path) => limits_file::read(path)?,
        None => Default::default(),
    };
    let limits = Table::new(config.limits.defaults(), config.limits.projects.clone(), stored);
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).map_err(ServerError::Signals)?;
    }
    let config = Arc::new(config);
    let mesh =
        (layout.shards > 1).then(|| MeshBuilder::<Envelope, Full>::full(layout.shards, config.mesh_channel_capacity));
    let mut listen = Bound::planned(&config, certificates.is_some());
    let mut handles = Vec::with_capacity(layout.shards);
    for id in 0..layout.shards {
        let cpu = layout.cpus[id % layout.cpus.len()];
        let (bound_tx, bound_rx) = mpsc::channel();
        let (config, mesh, stop, auth) = (config.clone(), mesh.clone(), stop.clone(), auth.clone());
        let shards = layout.shards;
        let log = recovered.next().flatten();
        let certificates = certificates.clone();
        let limits = (limits.clone(), limits_file.clone().filter(|_| id == 0));
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{id}"))
            .io_memory(layout.io_memory_bytes)
            .ring_depth(config.io_ring_depth)
            .spawn(move || async move {
                shard_main(id, shards, listen, certificates, config, mesh, stop, bound_tx, log, auth, limits).await
            })
            .map_err(|e| ServerError::Executor { shard: id, reason: e.to_string() })?;
        match bound_rx.recv() {
            // Shard 0 may have bound port 0: the others must join the port it got.
            Ok(Ok(bound)) => {
                tracing::info!(shard = id, cpu, plain = ?bound.plain, tls = ?bound.tls, io_memory_bytes = layout.io_memory_bytes, "shard listening");
                listen = bound;
            }
            Ok(Err(err)) => return Err(err),
            Err(_) => {
                let reason = match handle.join() {
                    Ok(Err(e)) => e.to_string(),
                    _ => "executor exited before listening".to_owned(),
                };
                return Err(ServerError::Executor { shard: id, reason });
            }
        }
        handles.push(handle);
    }
    on_ready(&listen, &layout);
    let mut first_error = None;
    for (id, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(ServerError::Executor { shard: id, reason: format!("{e:?}") })),
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[allow(clippy::too_many_arguments)]
async fn shard_main(
    id: usize,
    shards: usize,
    listen: Bound,
    certificates: Option<Arc<tls::Certificates>>,
    config: Arc<Config>,
    mesh: Option<MeshBuilder<Envelope, Full>>,
    stop: Arc<AtomicBool>,
    bound: mpsc::Sender<Result<Bound, ServerError>>,
    recovered: Option<Recovered>,
    auth: AuthSetup,
    (limits, limits_file): (Table, Option<PathBuf>),
) -> Result<(), ServerError> {
    let bind = |addr: Option<SocketAddr>| -> Result<Option<(TcpListener, SocketAddr)>, ServerError> {
        let Some(addr) = addr else { return Ok(None) };
        TcpListener::bind(addr)
            .and_then(|l| l.local_addr().map(|a| (l, a)))
            .map(Some)
            .map_err(|e| ServerError::Bind { addr, source: std::io::Error::other(e.to_string()) })
    };
    let listeners = bind(listen.plain).and_then(|plain| Ok((plain, bind(listen.tls)?)));
    let (plain, secure) = match listeners {
        Ok(pair) => pair,
        Err(err) => {
            let _ = bound.send(Err(ServerError::Executor { shard: id, reason: err.to_string() }));
            return Err(err);
        }
    };
    let _ = bound.send(Ok(Bound { plain: plain.as_ref().map(|p| p.1), tls: secure.as_ref().map(|s| s.1) }));
    let (senders, receivers) = match mesh {
        Some(m) => match m.join().await {
            Ok((s, r)) => (Some(s), Some(r)),
            Err(e) => return Err(ServerError::Executor { shard: id, reason: format!("could not join the mesh: {e}") }),
        },
        None => (None, None),
    };
    let seed = (crate::time::now_ms() as u32) ^ (id as u32).wrapping_mul(0x9e37_79b9);
    let mut recovery = crate::shard::Recovery::default();
    let (engine, log) = match recovered {
        None => (Engine::new(Box::new(MemoryStore::new()) as Box<dyn Store>, config.api.clone(), seed), None),
        Some(rec) => {
            let scan = rec.report.clone();
            let (store, replay, shared) = SegmentStore::open(rec, &config.storage);
            let mut engine = Engine::new(Box::new(store) as Box<dyn Store>, config.api.clone(), seed);
            match engine.replay_log(&replay) {
                Ok(report) => recovery = report_recovery(id, &scan, &report),
                Err(err) => {
                    // Recovery checked every record already: the files changed under us. Peers
                    // wait for this shard on the mesh, so stop the whole process.
                    tracing::error!(shard = id, %err, "replay failed");
                    eprintln!("marconi: shard {id}: {err}");
                    std::process::exit(1);
                }
            }
            (engine, Some(shared))
        }
    };
    let shard = Shard::new(id, shards, engine, senders);
    if config.storage.backend == Backend::RedisCluster {
        let started = Instant::now();
        let connected = loop {
            match crate::shard::connect_remote(&config).await {
                Err(err) if started.elapsed() < REMOTE_START_WAIT => {
                    tracing::warn!(shard = id, %err, "the Redis Cluster is not answering yet; trying again");
                    glommio::timer::sleep(REMOTE_START_RETRY).await;
                }
                connected => break connected,
            }
        };
        match connected {
            Ok(remote) => shard.set_remote(remote),
            Err(err) => {
                // Peers wait for this shard on the mesh: stop the whole process, saying why.
                tracing::error!(shard = id, %err, "cannot reach the Redis Cluster");
                eprintln!("marconi: shard {id}: cannot use the Redis Cluster: {err}");
                std::process::exit(1);
            }
        }
    }
    shard.set_recovery(recovery);
    shard.set_limits(limits, limits_file);
    if let Some(shared) = log {
        shard.set_log(shared.clone());
        shared.spawn_tasks();
    }
    shard.start(receivers);
    // Revoked tokens are in force from the first request: the set comes from its owner's log
    // before this shard accepts (connections wait in the listen backlog meanwhile).
    // A cluster that is still settling (a replica syncing, a failover) answers 503 for a while:
    // a node on it waits up to REMOTE_START_WAIT for the revocations rather than exit.
    let started = Instant::now();
    loop {
        match shard.load_revocations().await {
            Ok(n) if n > 0 => tracing::info!(shard = id, revocations = n, "revocations loaded"),
            Ok(_) => {}
            Err(err) if shard.remote().is_some() && started.elapsed() < REMOTE_START_WAIT => {
                tracing::warn!(shard = id, %err, "the Redis Cluster is not answering yet; trying again");
                glommio::timer::sleep(REMOTE_START_RETRY).await;
                continue;
            }
            Err(err) => {
                return Err(ServerError::Executor { shard: id, reason: format!("cannot load revocations: {err}") })
            }
        }
        break;
    }

    let config = Rc::new((*config).clone());
    let authenticator = Authenticator::new(&config.auth, auth.keys, auth.keystone, &auth.subjects, shard.clone());
    let api = Rc::new(Api::new(shard.clone(), config.clone(), authenticator));
    let shutdown = Rc::new(Shutdown::new());
    {
        let (shutdown, shard) = (shutdown.clone(), shard.clone());
        glommio::spawn_local(async move {
            while !stop.load(Ordering::Relaxed) {
                glommio::timer::sleep(STOP_POLL).await;
            }
            shutdown.trigger();
            shard.stop();
        })
        .detach();
    }

    let conns = Rc::new(Connections::new(api, config, shutdown.clone()));
    let mut accepting = Vec::new();
    if let Some((listener, _)) = plain {
        accepting.push(glommio::spawn_local(accept_loop(id, listener, None, conns.clone())));
    }
    if let (Some((listener, _)), Some(certificates)) = (secure, certificates) {
        let acceptor = tls::Acceptor::new(certificates);
        accepting.push(glommio::spawn_local(accept_loop(id, listener, Some(acceptor), conns.clone())));
    }
    for task in accepting {
        task.await;
    }
    while conns.open.get() > 0 {
        conns.closed.notified().await;
    }
    shard.drain_mesh().await;
    shard.close_log().await;
    tracing::info!(shard = id, "stopped");
    Ok(())
}

/// What a shard's accept loops share: the API, the limits, shutdown, and the connections open.
struct Connections {
    api: Rc<Api>,
    config: Rc<Config>,
    shutdown: Rc<Shutdown>,
    open: Cell<usize>,
    /// The most open at once since memory was last handed back to the OS.
    peak: Cell<usize>,
    /// Open connections by client address; an address leaves the map with its last connection.
    per_address: RefCell<AHashMap<IpAddr, usize>>,
    /// The accept rate's token bucket: tokens, and when it was last filled.
    accept_tokens: Cell<(f64, Instant)>,
    closed: Notify,
}

impl Connections {
    fn new(api: Rc<Api>, config: Rc<Config>, shutdown: Rc<Shutdown>) -> Self {
        let burst = config.http.max_new_connections_per_second as f64;
        Connections {
            api,
            config,
            shutdown,
            open: Cell::new(0),
            peak: Cell::new(0),
            per_address: RefCell::default(),
            accept_tokens: Cell::new((burst, Instant::now())),
            closed: Notify::new(),
        }
    }

    /// Counts a new connection in, or says which limit closes it. The cheap checks come first:
    /// a storm is shed before it costs a map entry.
    fn admit(&self, addr: Option<SocketAddr>) -> Result<(), Refusal> {
        let limits = &self.config.http;
        let rate = limits.max_new_connections_per_second as f64;
        let (tokens, at) = self.accept_tokens.get();
        let now = Instant::now();
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * rate).min(rate);
        if tokens < 1.0 {
            self.accept_tokens.set((tokens, now));
            return Err(Refusal::Rate);
        }
        if self.open.get() >= limits.max_connections_per_shard {
            self.accept_tokens.set((tokens, now));
            return Err(Refusal::Shard);
        }
        if let Some(ip) = addr.map(|a| a.ip()) {
            let mut per_address = self.per_address.borrow_mut();
            let n = per_address.entry(ip).or_default();
            if *n >= limits.max_connections_per_address {
                self.accept_tokens.set((tokens, now));
                return Err(Refusal::Address);
            }
            *n += 1;
        }
        self.accept_tokens.set((tokens - 1.0, now));
        self.open.set(self.open.get() + 1);
        self.peak.set(self.peak.get().max(self.open.get()));
        Ok(())
    }

    /// A connection [`admit`](Connections::admit) let in has ended.
    fn release(&self, addr: Option<SocketAddr>) {
        if let Some(ip) = addr.map(|a| a.ip()) {
            let mut per_address = self.per_address.borrow_mut();
            match per_address.get_mut(&ip) {
                Some(1) => {
                    per_address.remove(&ip);
                }
                Some(n) => *n -= 1,
                None => panic!("a connection from {ip} ended that was never counted in"),
            }
        }
        self.open.set(self.open.get() - 1);
        crate::metrics::with(|m| m.connections_open.set(self.open.get() as u64));
        if self.peak.get() >= TRIM_AFTER_PEAK && self.open.get() <= self.peak.get() / 2 {
            self.peak.set(self.open.get());
            // Its own task: its future would otherwise enlarge every connection's.
            glommio::spawn_local(return_free_memory()).detach();
        }
        self.closed.notify_all();
    }
}

/// Hands the allocator's free memory back to the OS, on the executor's blocking thread. glibc
/// keeps what closed connections freed in its arenas (the pages stay resident) unless asked; a
/// burst of connections that closed would otherwise pin its peak for the life of the process.
async fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glommio::executor()
        .spawn_blocking(|| {
            // SAFETY: malloc_trim has no preconditions; it only returns free pages to the kernel.
            unsafe { libc::malloc_trim(0) };
        })
        .await;
}

/// Accepts on `listener` until shutdown; each connection runs in its own task (with its TLS
/// handshake first, when `tls` is given).
async fn accept_loop(id: usize, listener: TcpListener, mut tls: Option<tls::Acceptor>, conns: Rc<Connections>) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            conns.shutdown.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(err)) => {
                tracing::warn!(shard = id, %err, "accept failed");
                glommio::timer::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let addr = stream.peer_addr().ok();
        if let Err(why) = conns.admit(addr) {
            tracing::debug!(shard = id, ?why, ?addr, "closing a new connection at accept");
            crate::metrics::with(|m| m.connection_refused(why));
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        crate::metrics::with(|m| {
            m.connections_accepted.set(m.connections_accepted.get() + 1);
            m.connections_open.set(conns.open.get() as u64);
        });
        let acceptor = tls.as_mut().map(tls::Acceptor::current);
        let conns = conns.clone();
        glommio::spawn_local(async move {
            let served = match acceptor {
                None => {
                    let peer = http::Peer { addr, ..http::Peer::default() };
                    http::serve(stream, &*conns.api, &conns.config.http, &conns.shutdown, &peer).await
                }
                Some(acceptor) => serve_tls(stream, addr, acceptor, &conns).await,
            };
            if let Err(err) = served {
                tracing::debug!(%err, "connection ended with an error");
            }
            conns.release(addr);
        })
        .detach();
    }
}

/// The TLS handshake, under the same deadline as a request head, then HTTP on the TLS stream.
async fn serve_tls(
    stream: TcpStream,
    addr: Option<SocketAddr>,
    acceptor: futures_rustls::TlsAcceptor,
    conns: &Connections,
) -> std::io::Result<()> {
    let deadline = conns.config.http.header_read_timeout();
    let handshake = future::or(async { Some(acceptor.accept(stream).await) }, async {
        glommio::timer::sleep(deadline).await;
        None
    });
    let stream = match handshake.await {
        Some(Ok(stream)) => stream,
        Some(Err(err)) => {
            crate::metrics::with(|m| m.tls_handshakes_failed.set(m.tls_handshakes_failed.get() + 1));
            tracing::debug!(%err, "TLS handshake failed");
            return Ok(());
        }
        None => {
            crate::metrics::with(|m| m.tls_handshakes_failed.set(m.tls_handshakes_failed.get() + 1));
            return Ok(());
        }
    };
    crate::metrics::with(|m| m.tls_handshakes.set(m.tls_handshakes.get() + 1));
    let peer = http::Peer { addr, certificate_subject: tls::peer_subject(stream.get_ref().1) };
    http::serve(stream, &*conns.api, &conns.config.http, &conns.shutdown, &peer).await
}

/// One line per shard on how recovery went (the speed operators plan restarts by), and the
/// figures for its metrics.
fn report_recovery(
    id: usize,
    scan: &recovery::ScanReport,
    replay: &crate::queue::ReplayReport,
) -> crate::shard::Recovery {
    let secs = (scan.elapsed + replay.elapsed).as_secs_f64().max(1e-6);
    let mb = replay.bytes as f64 / 1e6;
    tracing::info!(
        shard = id,
        segments = scan.segments,
        records = replay.records,
        queues = replay.queues,
        messages = replay.messages,
        mb = format!("{mb:.1}"),
        scan_ms = scan.elapsed.as_millis() as u64,
        replay_ms = replay.elapsed.as_millis() as u64,
        mb_per_s = format!("{:.0}", mb / secs),
        records_per_s = format!("{:.0}", replay.records as f64 / secs),
        "recovered"
    );
    if replay.orphans > 0 {
        tracing::warn!(shard = id, orphans = replay.orphans, "records named queues that did not exist; ignored");
    }
    if let Some(cut) = &scan.cut {
        tracing::warn!(shard = id, file = %cut.file.display(), offset = cut.offset, reason = %cut.reason, "cut a torn tail");
    }
    crate::shard::Recovery { ms: (scan.elapsed + replay.elapsed).as_millis() as u64, records: replay.records }
}
