//! `keystone` mode: Keystone v3 tokens, validated with `GET /v3/auth/tokens` (`X-Subject-Token`)
//! and cached per shard.
//!
//! - **Never blocking.** Calls go over a glommio `TcpStream` with the `wire` codec, one
//!   connection per call (`Connection: close`), the whole call bounded by
//!   `auth.keystone.timeout_ms`. The endpoint's address is resolved once, at start-up.
//! - **A hot token costs no call.** Each shard keeps up to `auth.cache_entries` validated tokens,
//!   keyed by the SHA-256 of the token (tokens are never kept or logged), trusted until the
//!   earlier of their expiry and `auth.keystone.cache_ttl_s`; a refused token is remembered as
//!   refused for `auth.keystone.negative_cache_ms`.
//! - **One call per token at a time.** A burst of requests with one uncached token waits on the
//!   first one's call and shares its answer.
//! - **Down is not a pass.** A token not in the cache while Keystone cannot be reached (refused,
//!   timed out, 5xx, or marconi's own credentials refused) gets 503 with `Retry-After`.
//! - **marconi's own credentials.** Either a fixed `auth.keystone.service_token`, or a service
//!   user (`username`, `password`, `project`) whose token is fetched with `POST /v3/auth/tokens`,
//!   kept until shortly before it expires, and fetched again when Keystone refuses it.

use std::cell::RefCell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

use ahash::AHashMap;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::cache::ClockCache;
use crate::config::AuthConfig;
use crate::sync::{Notified, Notify};
use crate::time::now_ms;

/// Largest answer read from Keystone (a token without its catalog is a few KiB).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// A service token is fetched again this long before it expires.
const SERVICE_TOKEN_MARGIN_S: u64 = 60;

/// Where Keystone is: resolved once, before the shards start (resolving blocks).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addrs: Vec<SocketAddr>,
    /// The `Host` header: the URL's authority.
    pub host: String,
    /// The path before `/v3`, without a trailing slash.
    pub prefix: String,
}

impl Endpoint {
    /// Parses `http://host[:port][/prefix]` (a trailing `/v3` is dropped) and resolves the host.
    pub fn resolve(url: &str) -> Result<Endpoint, String> {
        let bad = || format!("auth.keystone.url {url:?} is not http://host[:port][/path]");
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() || authority.contains('@') {
            return Err(bad());
        }
        let with_port = match authority.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.ends_with(']')) && p.parse::<u16>().is_ok() => {
                authority.to_owned()
            }
            _ => format!("{authority}:80"),
        };
        let addrs: Vec<SocketAddr> = with_port
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve the Keystone host of {url:?}: {e}"))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("the Keystone host of {url:?} has no address"));
        }
        let path = path.trim_end_matches('/');
        let path = path.strip_suffix("v3").unwrap_or(path).trim_end_matches('/');
        let prefix = if path.is_empty() { String::new() } else { format!("/{path}") };
        Ok(Endpoint { addrs, host: authority.to_owned(), prefix })
    }
}

/// Who a Keystone token is: its project (the request's), its user, its expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub project: Box<str>,
    pub user_id: Box<str>,
    pub expires_s: u64,
}

/// Why a token got no identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Keystone says it is not a valid token (unknown, expired, revoked, not project-scoped).
    Invalid,
    /// Keystone could not say: the text says why.
    Down(String),
}

enum Cached {
    Valid { identity: Rc<Identity>, until_ms: u64 },
    Refused { until_ms: u64 },
}

/// One call in progress that others wait on, and its answer once there.
struct Flight<T> {
    done: Notify,
    answer: RefCell<Option<T>>,
}

impl<T: Clone> Flight<T> {
    fn new() -> Rc<Self> {
        Rc::new(Flight { done: Notify::new(), answer: RefCell::new(None) })
    }

    async fn wait(self: Rc<Self>) -> Option<T> {
        // A latch: resolves at once if the answer came before this wait began.
        Notified::since(&self.done, 0).await;
        self.answer.borrow().clone()
    }

    fn finish(&self, answer: T) {
        *self.answer.borrow_mut() = Some(answer);
        self.done.notify_all();
    }
}

/// Takes a flight out of its table and wakes its waiters even if the call is dropped half way
/// (the client went away): they then find no answer and try again themselves.
struct Landing<'a, K: std::hash::Hash + Eq, T> {
    table: &'a RefCell<AHashMap<K, Rc<Flight<T>>>>,
    key: Option<K>,
}

impl<K: std::hash::Hash + Eq, T> Drop for Landing<'_, K, T> {
    fn drop(&mut self) {
        if let Some(flight) = self.key.take().and_then(|k| self.table.borrow_mut().remove(&k)) {
            flight.done.notify_all();
        }
    }
}

type Validation = Result<Rc<Identity>, Failure>;
/// marconi's own token, or why it could not get one.
type Login = Result<Rc<str>, String>;

enum ServiceAuth {
    Token(String),
    Password(String),
}

/// One shard's Keystone client and cache.
pub struct Keystone {
    endpoint: Endpoint,
    auth: ServiceAuth,
    timeout: Duration,
    cache_ttl_ms: u64,
    negative_ms: u64,
    cache: RefCell<ClockCache<[u8; 32], Cached>>,
    flights: RefCell<AHashMap<[u8; 32], Rc<Flight<Validation>>>>,
    /// The service user's token and when it expires (Unix seconds).
    service: RefCell<Option<(Rc<str>, u64)>>,
    logins: RefCell<AHashMap<(), Rc<Flight<Login>>>>,
}

impl Keystone {
    pub fn new(endpoint: Endpoint, config: &AuthConfig) -> Self {
        let ks = &config.keystone;
        let auth = match &ks.service_token {
            Some(token) => ServiceAuth::Token(token.clone()),
            None => ServiceAuth::Password(
                json!({"auth": {
                    "identity": {"methods": ["password"], "password": {"user": {
                        "name": ks.username, "domain": {"name": ks.user_domain}, "password": ks.password}}},
                    "scope": {"project": {"name": ks.project, "domain": {"name": ks.project_domain}}}
                }})
                .to_string(),
            ),
        };
        Keystone {
            endpoint,
            auth,
            timeout: ks.timeout(),
            cache_ttl_ms: ks.cache_ttl_s.saturating_mul(1000),
            negative_ms: ks.negative_cache_ms,
            cache: RefCell::new(ClockCache::new(config.cache_entries)),
            flights: RefCell::default(),
            service: RefCell::new(None),
            logins: RefCell::default(),
        }
    }

    /// The identity of a Keystone token: from the cache, from a call in progress for the same
    /// token, or from Keystone.
    pub async fn validate(&self, token: &str) -> Validation {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        loop {
            if let Some(answer) = self.cached(&key, now_ms()) {
                crate::metrics::with(|m| m.auth_cache_hits.set(m.auth_cache_hits.get() + 1));
                return answer;
            }
            let flight = self.flights.borrow().get(&key).cloned();
            match flight {
                Some(flight) => {
                    if let Some(answer) = flight.wait().await {
                        return answer;
                    }
                }
                None => break,
            }
        }
        crate::metrics::with(|m| m.auth_cache_misses.set(m.auth_cache_misses.get() + 1));
        let flight = Flight::new();
        self.flights.borrow_mut().insert(key, flight.clone());
        let _landing = Landing { table: &self.flights, key: Some(key) };
        let answer = self.bounded(self.ask(token)).await;
        let now = now_ms();
        match &answer {
            Ok(identity) => {
                let until_ms = identity.expires_s.saturating_mul(1000).min(now.saturating_add(self.cache_ttl_ms));
                if until_ms > now {
                    self.cache.borrow_mut().insert(key, Cached::Valid { identity: identity.clone(), until_ms });
                }
            }
            Err(Failure::Invalid) if self.negative_ms > 0 => {
                self.cache.borrow_mut().insert(key, Cached::Refused { until_ms: now.saturating_add(self.negative_ms) });
            }
            Err(_) => {}
        }
        flight.finish(answer.clone());
        answer
    }

    fn cached(&self, key: &[u8; 32], now: u64) -> Option<Validation> {
        match self.cache.borrow().get(key)? {
            Cached::Valid { identity, until_ms } if now < *until_ms => Some(Ok(identity.clone())),
            Cached::Refused { until_ms } if now < *until_ms => Some(Err(Failure::Invalid)),
            _ => None,
        }
    }

    async fn bounded<T>(&self, call: impl std::future::Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
        let limit = self.timeout;
        futures_lite::future::or(call, async move {
            glommio::timer::sleep(limit).await;
            Err(Failure::Down(format!("no answer within {} ms", limit.as_millis())))
        })
        .await
    }

    /// Validates with the service token; a refused service token is fetched again once.
    async fn ask(&self, token: &str) -> Validation {
        for attempt in 0..2 {
            let service = self.service_token(attempt > 0).await.map_err(Failure::Down)?;
            let path = format!("{}/v3/auth/tokens?nocatalog", self.endpoint.prefix);
            let headers = [("X-Auth-Token", &*service), ("X-Subject-Token", token)];
            let answer = self.exchange("GET", &path, &headers, None).await.map_err(Failure::Down)?;
            match answer.status {
                200 => return identity(&answer.body, now_ms() / 1000),
                404 => return Err(Failure::Invalid),
                401 if matches!(self.auth, ServiceAuth::Password(_)) && attempt == 0 => continue,
                401 | 403 => {
                    return Err(Failure::Down(format!("Keystone refused marconi's credentials ({})", answer.status)))
                }
                other => return Err(Failure::Down(format!("Keystone answered {other}"))),
            }
        }
        Err(Failure::Down("Keystone refused marconi's fresh credentials".into()))
    }

    /// marconi's own token: the configured one, or the service user's (fetched when absent,
    /// about to expire, or `renew`).
    async fn service_token(&self, renew: bool) -> Result<Rc<str>, String> {
        let body = match &self.auth {
            ServiceAuth::Token(token) => return Ok(token.as_str().into()),
            ServiceAuth::Password(body) => body,
        };
        let now_s = now_ms() / 1000;
        if !renew {
            if let Some((token, expires_s)) = &*self.service.borrow() {
                if now_s + SERVICE_TOKEN_MARGIN_S < *expires_s {
                    return Ok(token.clone());
                }
            }
        }
        let flight = self.logins.borrow().get(&()).cloned();
        if let Some(flight) = flight {
            if let Some(answer) = flight.wait().await {
                return answer;
            }
        }
        let flight = Flight::new();
        self.logins.borrow_mut().insert((), flight.clone());
        let _landing = Landing { table: &self.logins, key: Some(()) };
        let path = format!("{}/v3/auth/tokens?nocatalog", self.endpoint.prefix);
        let answer =
            match self.exchange("POST", &path, &[("Content-Type", "application/json")], Some(body.as_bytes())).await {
                Ok(a) if a.status == 201 || a.status == 200 => {
                    let token = a.header("x-subject-token").map(str::to_owned);
                    let expires = expires_at(&a.body);
                    match (token, expires) {
                        (Some(token), Some(expires_s)) => {
                            let token: Rc<str> = token.into();
                            *self.service.borrow_mut() = Some((token.clone(), expires_s));
                            Ok(token)
                        }
                        _ => Err("Keystone's answer to marconi's login has no token".to_owned()),
                    }
                }
                Ok(a) => Err(format!("Keystone refused marconi's service credentials ({})", a.status)),
                Err(e) => Err(e),
            };
        flight.finish(answer.clone());
        answer
    }

    /// One HTTP/1.1 request on a fresh connection, and its whole answer.
    async fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<wire::OwnedResponse, String> {
        crate::metrics::with(|m| m.keystone_calls.set(m.keystone_calls.get() + 1));
        let mut bytes = Vec::with_capacity(512);
        let mut req = wire::Request::new(&mut bytes, method, path);
        for (k, v) in [("Host", self.endpoint.host.as_str()), ("Accept", "application/json"), ("Connection", "close")]
            .iter()
            .chain(headers)
        {
            wire::check_header(k, v).map_err(|e| format!("cannot send to Keystone: {e}"))?;
            req.header(k, v);
        }
        match body {
            Some(b) => req.body(b),
            None => req.end(),
        }
        let mut last = String::from("no address");
        let mut stream = None;
        for addr in &self.endpoint.addrs {
            match TcpStream::connect_timeout(addr, self.timeout).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = format!("cannot connect to Keystone at {addr}: {e}"),
            }
        }
        let mut stream = stream.ok_or(last)?;
        let io = |e: std::io::Error| format!("talking to Keystone: {e}");
        stream.write_all(&bytes).await.map_err(io)?;
        let limits = wire::Limits { head_bytes: 64 * 1024, body_bytes: MAX_ANSWER_BYTES };
        let mut parser = wire::Parser::new(limits).head_request(method == "HEAD");
        let mut rb = wire::ReadBuf::new();
        loop {
            if let Some(done) = rb.poll(&mut parser).map_err(|e| format!("Keystone's answer is not HTTP: {e}"))? {
                return Ok(rb.response(&done).owned());
            }
            let n = stream.read(rb.spare()).await.map_err(io)?;
            rb.filled(n);
        }
    }
}

/// The identity of a validation's 200 body at `now_s`; a token without a project scope, or
/// already expired, is invalid here.
fn identity(body: &[u8], now_s: u64) -> Validation {
    let doc: Value = serde_json::from_slice(body).map_err(|_| Failure::Down("Keystone's answer is not JSON".into()))?;
    let token = doc.get("token").ok_or_else(|| Failure::Down("Keystone's answer has no token".into()))?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).filter(|s| !s.is_empty()).map(Box::<str>::from);
    let project = text(token.pointer("/project/id")).ok_or(Failure::Invalid)?;
    if project.len() > crate::config::MAX_PROJECT_ID_BYTES {
        return Err(Failure::Invalid);
    }
    let user_id = text(token.pointer("/user/id")).unwrap_or_default();
    let expires_s = expires_at(body).ok_or(Failure::Invalid)?;
    if expires_s <= now_s {
        return Err(Failure::Invalid);
    }
    Ok(Rc::new(Identity { project, user_id, expires_s }))
}

fn expires_at(body: &[u8]) -> Option<u64> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    crate::time::parse_iso8601(doc.pointer("/token/expires_at")?.as_str()?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn endpoints_keep_their_prefix_without_v3() {
        let e = Endpoint::resolve("http://127.0.0.1:5000/v3").unwrap();
        assert_eq!((e.host.as_str(), e.prefix.as_str()), ("127.0.0.1:5000", ""));
        assert_eq!(e.addrs, ["127.0.0.1:5000".parse().unwrap()]);
        let e = Endpoint::resolve("http://127.0.0.1/identity/").unwrap();
        assert_eq!((e.prefix.as_str(), e.addrs[0].port()), ("/identity", 80));
        assert!(Endpoint::resolve("https://127.0.0.1:5000").is_err());
        assert!(Endpoint::resolve("http://u@127.0.0.1").is_err());
    }

    #[test]
    fn a_validation_names_the_project_user_and_expiry() {
        let body = br#"{"token": {"expires_at": "2030-01-01T00:00:00.000000Z", "project": {"id": "p1", "name": "demo"},
                         "user": {"id": "u1"}, "methods": ["password"]}}"#;
        let id = identity(body, 0).unwrap();
        assert_eq!((&*id.project, &*id.user_id, id.expires_s), ("p1", "u1", 1_893_456_000));
        assert_eq!(identity(body, 1_893_456_000), Err(Failure::Invalid), "expired by now");
        let unscoped = br#"{"token": {"expires_at": "2030-01-01T00:00:00Z", "user": {"id": "u1"}}}"#;
        assert_eq!(identity(unscoped, 0), Err(Failure::Invalid), "a token must be scoped to a project");
        assert!(matches!(identity(b"nope", 0), Err(Failure::Down(_))));
    }
}
