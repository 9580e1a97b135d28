//! Sharded pub/sub: `SSUBSCRIBE` on the master serving a channel's slot, one connection per node
//! per shard for all of its channels, at-most-once wake-ups.
//!
//! A channel is placed on the master its slot maps to; a topology refresh, a `MOVED` answer to
//! `SSUBSCRIBE` or the server's own `sunsubscribe` (its slot left the node) moves it. Messages
//! sent while a channel moves or its connection reconnects are lost, so a (re)subscription that
//! follows an earlier one wakes the channel's subscribers once: they re-check what they wait for.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Duration;

use super::cluster::{bump, Cluster, Core};
use super::conn::Conn;
use super::resp::{self, Value};
use super::slots;
use crate::sync::{Notified, Notify};

const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_millis(2000);

pub(crate) struct Chan {
    name: Vec<u8>,
    /// One generation per message (or per possible loss).
    messages: Notify,
    subscribers: Cell<usize>,
    /// The node it is placed on.
    node: RefCell<Option<Rc<str>>>,
    /// The node confirmed the subscription, and the connection has not failed since.
    active: Cell<bool>,
    activated: Notify,
    ever_active: Cell<bool>,
}

struct PubNode {
    addr: Rc<str>,
    socket: Option<SocketAddr>,
    wanted: RefCell<HashMap<Vec<u8>, Rc<Chan>>>,
    wake: Notify,
    running: Cell<bool>,
}

/// The channels of one client and the nodes they are placed on.
#[derive(Default)]
pub(crate) struct Registry {
    channels: RefCell<HashMap<Vec<u8>, Rc<Chan>>>,
    nodes: RefCell<HashMap<Rc<str>, Rc<PubNode>>>,
}

impl Registry {
    pub fn channels(&self) -> usize {
        self.channels.borrow().len()
    }

    /// Moves every channel to the master its slot maps to now.
    pub fn place_all(&self, cluster: &Rc<Cluster>) {
        let channels: Vec<Rc<Chan>> = self.channels.borrow().values().cloned().collect();
        for chan in channels {
            let target = cluster.topology.borrow().master_of(slots::key_slot(&chan.name)).cloned();
            self.place(cluster, &chan, target);
        }
    }

    fn place(&self, cluster: &Rc<Cluster>, chan: &Rc<Chan>, target: Option<Rc<str>>) {
        if *chan.node.borrow() == target {
            return;
        }
        let old = chan.node.replace(target.clone());
        if let Some(old) = old {
            self.unwant(&old, &chan.name);
        }
        chan.active.set(false);
        match target {
            None => cluster.core.want_refresh(),
            Some(addr) => {
                let node = self.node(cluster, &addr);
                node.wanted.borrow_mut().insert(chan.name.clone(), chan.clone());
                if !node.running.replace(true) {
                    let task = pub_loop(node.clone(), cluster.core.clone(), Rc::downgrade(cluster));
                    glommio::spawn_local(task).detach();
                } else {
                    node.wake.notify_all();
                }
            }
        }
    }

    fn unwant(&self, addr: &Rc<str>, name: &[u8]) {
        if let Some(node) = self.nodes.borrow().get(addr) {
            node.wanted.borrow_mut().remove(name);
            node.wake.notify_all();
        }
    }

    fn node(&self, cluster: &Cluster, addr: &Rc<str>) -> Rc<PubNode> {
        self.nodes
            .borrow_mut()
            .entry(addr.clone())
            .or_insert_with(|| {
                Rc::new(PubNode {
                    addr: addr.clone(),
                    socket: cluster.socket_of(addr),
                    wanted: RefCell::new(HashMap::new()),
                    wake: Notify::new(),
                    running: Cell::new(false),
                })
            })
            .clone()
    }

    pub fn close(&self) {
        for node in self.nodes.borrow().values() {
            node.wake.notify_all();
        }
    }
}

impl Cluster {
    /// `SSUBSCRIBE channel` on the node serving its slot. The returned [`Subscription`]'s
    /// `next()` resolves on each message published to it; dropping it unsubscribes. At most
    /// once: a reconnect or a move may lose messages (it then wakes `next()` once), so callers
    /// also re-check on a timer. Subscriptions share one connection per node.
    pub fn subscribe(self: &Rc<Self>, channel: &[u8]) -> Subscription {
        let existing = self.pubsub.channels.borrow().get(channel).cloned();
        let chan = match existing {
            Some(chan) => chan,
            None => {
                let chan = Rc::new(Chan {
                    name: channel.to_vec(),
                    messages: Notify::new(),
                    subscribers: Cell::new(0),
                    node: RefCell::new(None),
                    active: Cell::new(false),
                    activated: Notify::new(),
                    ever_active: Cell::new(false),
                });
                self.pubsub.channels.borrow_mut().insert(channel.to_vec(), chan.clone());
                let target = self.topology.borrow().master_of(slots::key_slot(channel)).cloned();
                self.pubsub.place(self, &chan, target);
                chan
            }
        };
        chan.subscribers.set(chan.subscribers.get() + 1);
        Subscription { seen: chan.messages.generation(), chan, cluster: self.clone() }
    }
}

/// One subscriber of a sharded pub/sub channel.
pub struct Subscription {
    cluster: Rc<Cluster>,
    chan: Rc<Chan>,
    seen: u64,
}

impl Subscription {
    /// Resolves at the next message published to the channel since the last `next()` (or
    /// since the subscription was made); messages in between coalesce into one wake-up.
    pub async fn next(&mut self) {
        Notified::since(&self.chan.messages, self.seen).await;
        self.seen = self.chan.messages.generation();
    }

    /// Resolves once the node has confirmed the subscription: a message published after that
    /// reaches [`next`](Self::next) (unless the connection fails).
    pub async fn ready(&self) {
        loop {
            let change = self.chan.activated.notified();
            if self.chan.active.get() {
                return;
            }
            change.await;
        }
    }

    pub fn is_active(&self) -> bool {
        self.chan.active.get()
    }

    pub fn channel(&self) -> &[u8] {
        &self.chan.name
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let left = self.chan.subscribers.get() - 1;
        self.chan.subscribers.set(left);
        if left == 0 {
            let registry = &self.cluster.pubsub;
            registry.channels.borrow_mut().remove(&self.chan.name);
            if let Some(addr) = self.chan.node.replace(None) {
                registry.unwant(&addr, &self.chan.name);
            }
        }
    }
}

/// One node's pub/sub connection: keeps its subscriptions equal to the wanted set, wakes
/// channels on messages, reconnects with backoff while any channel is wanted, and ends when
/// none is.
async fn pub_loop(node: Rc<PubNode>, core: Rc<Core>, cluster: Weak<Cluster>) {
    let mut backoff = Duration::ZERO;
    loop {
        if core.closed.get() || node.wanted.borrow().is_empty() {
            node.running.set(false);
            return;
        }
        let opened = match node.socket {
            Some(socket) => Conn::open(socket, core.settings.command_timeout).await.map_err(|e| e.to_string()),
            None => Err("not an IP address and port".to_string()),
        };
        let failure = match opened {
            Ok(mut conn) => {
                bump(&core.stats.connects);
                backoff = Duration::ZERO;
                let result = serve(&node, &core, &cluster, &mut conn).await;
                for chan in node.wanted.borrow().values() {
                    chan.active.set(false);
                }
                result.err()
            }
            Err(e) => {
                bump(&core.stats.connect_failures);
                Some(e)
            }
        };
        if let Some(e) = failure {
            tracing::debug!("redis pub/sub on {}: {e}", node.addr);
            bump(&core.stats.connections_lost);
            core.want_refresh();
            backoff = (backoff * 2).clamp(BACKOFF_FIRST, BACKOFF_MAX);
            let wake = node.wake.notified();
            // A change of the wanted set (or the client closing) ends the pause early.
            super::cluster::within(backoff, wake).await;
        }
    }
}

/// Runs one connection until it fails (`Err`) or nothing is wanted any more (`Ok`).
async fn serve(node: &PubNode, core: &Core, cluster: &Weak<Cluster>, conn: &mut Conn) -> Result<(), String> {
    let mut sent: HashSet<Vec<u8>> = HashSet::new();
    // The channel of each SSUBSCRIBE (true) and SUNSUBSCRIBE (false) not yet answered.
    let mut asked: VecDeque<(bool, Vec<u8>)> = VecDeque::new();
    loop {
        let changed = node.wake.notified();
        if core.closed.get() {
            return Ok(());
        }
        {
            let wanted = node.wanted.borrow();
            for name in wanted.keys() {
                if sent.insert(name.clone()) {
                    resp::encode_command(&mut conn.out, &[b"SSUBSCRIBE", name]);
                    asked.push_back((true, name.clone()));
                }
            }
            let gone: Vec<Vec<u8>> = sent.iter().filter(|n| !wanted.contains_key(*n)).cloned().collect();
            for name in gone {
                sent.remove(&name);
                resp::encode_command(&mut conn.out, &[b"SUNSUBSCRIBE", &name]);
                asked.push_back((false, name));
            }
        }
        if !conn.out.is_empty() {
            conn.flush_out().await.map_err(|e| e.to_string())?;
        }
        if sent.is_empty() && asked.is_empty() && node.wanted.borrow().is_empty() {
            return Ok(());
        }
        let read = futures_lite::future::or(async { Some(conn.read_value().await) }, async {
            changed.await;
            None
        })
        .await;
        let mut next = match read {
            None => continue,
            Some(value) => Some(value.map_err(|e| e.to_string())?),
        };
        while let Some(value) = next {
            handle(node, core, cluster, value, &mut sent, &mut asked)?;
            next = conn.buffered().map_err(|e| e.to_string())?;
        }
    }
}

fn handle(
    node: &PubNode,
    core: &Core,
    cluster: &Weak<Cluster>,
    value: Value,
    sent: &mut HashSet<Vec<u8>>,
    asked: &mut VecDeque<(bool, Vec<u8>)>,
) -> Result<(), String> {
    let lookup = |name: &[u8]| node.wanted.borrow().get(name).cloned();
    match value {
        Value::Array(parts) => {
            let kind = parts.first().and_then(Value::as_bytes).unwrap_or_default();
            let name = parts.get(1).and_then(Value::as_bytes).unwrap_or_default();
            if kind.eq_ignore_ascii_case(b"smessage") {
                if let Some(chan) = lookup(name) {
                    bump(&core.stats.pubsub_messages);
                    chan.messages.notify_all();
                }
            } else if kind.eq_ignore_ascii_case(b"ssubscribe") {
                if asked.front().is_some_and(|(sub, n)| *sub && n == name) {
                    asked.pop_front();
                }
                if let Some(chan) = lookup(name) {
                    if chan.ever_active.replace(true) {
                        // Messages may have been lost since the last subscription ended.
                        chan.messages.notify_all();
                    }
                    chan.active.set(true);
                    chan.activated.notify_all();
                }
            } else if kind.eq_ignore_ascii_case(b"sunsubscribe") {
                if asked.front().is_some_and(|(sub, n)| !*sub && n == name) {
                    asked.pop_front();
                } else {
                    // The server dropped it: its slot left this node. Subscribe again (a MOVED
                    // answer then moves it) once the slot map is fresh.
                    sent.remove(name);
                    if let Some(chan) = lookup(name) {
                        chan.active.set(false);
                    }
                    core.want_refresh();
                }
            }
            Ok(())
        }
        Value::Error(e) => {
            let Some((true, name)) = asked.pop_front() else {
                return Err(format!("{}: {e}", node.addr));
            };
            sent.remove(&name);
            let mut words = e.split(' ');
            let moved = match (words.next(), words.next().and_then(|s| s.parse::<u16>().ok()), words.next()) {
                (Some("MOVED"), Some(slot), Some(to)) => Some((slot, to)),
                _ => None,
            };
            let (Some((slot, to)), Some(cluster)) = (moved, cluster.upgrade()) else {
                // Anything else (CLUSTERDOWN, ...): reconnect after a pause and try again.
                return Err(format!("{}: SSUBSCRIBE: {e}", node.addr));
            };
            let to: Rc<str> = match to.strip_prefix(':') {
                Some(port) => slots::join_host_port(slots::host_of(&node.addr), port.parse().unwrap_or(0)).into(),
                None => to.into(),
            };
            cluster.topology.borrow_mut().set_slot(slot, &to);
            cluster.core.want_refresh();
            if let Some(chan) = lookup(&name) {
                cluster.pubsub.place(&cluster, &chan, Some(to));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
