//! The Zaqar v2 API: request hooks, routing, and one file per resource.
//!
//! [`Api`] is a shard's [`Handler`](crate::http::Handler). Every `/v2` request passes Zaqar's
//! hooks in Zaqar's order (pre-signed URL or, with authentication on, the token; content type,
//! Accept, Client-ID, X-Project-ID, queue name), then is authorized once for its route's
//! operation ([`crate::auth`], the table is [`Route::access`]), before its resource's function
//! talks to the owning shard through [`Shard`](crate::shard::Shard). Failures are [`ApiError`]s,
//! rendered in one place.

mod claims;
mod errors;
mod health;
pub mod json;
pub mod limits;
mod messages;
mod metrics;
pub mod query;
mod queues;
pub mod router;
mod share;
mod subscriptions;
mod tokens;

use std::rc::Rc;
use std::time::Instant;

use crate::auth::{self, Access, Authenticator, Credential, TokenBuf, Verified};
use crate::config::{AuthMode, ClientIdCheck, Config, MAX_CLIENT_ID_BYTES, MIN_CLIENT_ID_BYTES};
use crate::error::ApiError;
use crate::http::{Handler, Known, Method, Request, RequestHead, Response};
use crate::limits::LimitSet;
use crate::metrics::RouteKind;
use crate::shard::Shard;
use crate::storage::QueueRef;

pub use router::{Route, Span};

pub const JSON: &str = "application/json";

/// Headers that name who is asking or what they may do: each must come at most once.
const SINGLE_HEADERS: [Known; 8] = [
    Known::XProjectId,
    Known::ClientId,
    Known::UrlSignature,
    Known::UrlExpires,
    Known::UrlMethods,
    Known::UrlPaths,
    Known::XAuthToken,
    Known::Authorization,
];

/// One shard's API handler.
pub struct Api {
    shard: Rc<Shard>,
    config: Rc<Config>,
    auth: Authenticator,
    admission: limits::Admission,
}

/// What every resource function gets: the checked request and where to answer.
pub struct Ctx<'r> {
    pub api: &'r Api,
    pub method: Method,
    /// The credential the request was authorized with; `project` is its project.
    pub credential: Credential<'r>,
    pub project: &'r str,
    pub client_hash: u64,
    pub query: query::Query<'r>,
    pub body: &'r [u8],
    pub head: &'r RequestHead<'r>,
    /// The quotas and rate limits of `project`.
    pub limits: LimitSet,
}

impl Ctx<'_> {
    /// The queue `name` of the caller's project, borrowed: a call on this shard copies nothing.
    pub fn queue<'q>(&'q self, name: &'q str) -> QueueRef<'q> {
        QueueRef { project: self.project, name }
    }
    pub fn shard(&self) -> &Rc<Shard> {
        &self.api.shard
    }
    pub fn config(&self) -> &Config {
        &self.api.config
    }
    pub fn auth(&self) -> &Authenticator {
        &self.api.auth
    }
}

impl Api {
    pub fn new(shard: Rc<Shard>, config: Rc<Config>, auth: Authenticator) -> Self {
        Self { shard, config, auth, admission: limits::Admission::default() }
    }

    /// Answers `req`; sets `kind` as soon as the route is known, for the request metrics.
    async fn dispatch(
        &self,
        req: &Request<'_>,
        routed: Option<Route<Span>>,
        resp: &mut Response,
        kind: &mut RouteKind,
    ) -> Result<(), ApiError> {
        let head = &req.head;
        let route = match routed {
            Some(route) => route.names(head.path()),
            // `check_head` found no route: this answers why.
            None => router::route(head.method(), head.path())?,
        };
        *kind = route.kind();
        // `check_head` judged declared lengths; a chunked body declares none, so it is judged here.
        if let Some(limit) = BodyLimit::of(route, head.method(), &self.config.api) {
            if req.body.len() > limit.max() {
                return Err(limit.error());
            }
        }
        let query = query::Query::parse(head.query());
        let pops = head.method() == Method::Delete && query.get("pop").is_some();
        let access = route.access(head.method(), pops, self.auth.protects_metrics());
        let mut buf = auth::token_buf();
        let peer_subject = req.peer.certificate_subject.as_deref();
        match route {
            // Outside /v2: no Zaqar headers, so scrapers and version probes need none.
            Route::Versions => {
                health::versions(resp);
                return Ok(());
            }
            Route::Metrics => {
                let token = if access == Access::Public {
                    None
                } else {
                    self.auth.authenticate(head, peer_subject, &mut buf).await?
                };
                if let Some(verified) = token {
                    self.auth.authorize(&verified.credential(), access, None, auth::project_header(head)?)?;
                }
                // Boxed, as are the other scatters: a future is as large as its largest branch,
                // and every request in progress (a parked long poll too) carries this one.
                return Box::pin(metrics::metrics(&self.shard, resp)).await;
            }
            _ => {}
        }
        let verified = self.check_hooks(head, req.body, peer_subject, route, access, &mut buf).await?;
        let credential = verified.credential();
        let limits = self.shard.limits(credential.project);
        self.admission.admit(credential.project, limits::credential(head), &limits, crate::time::now_ms())?;
        let client_id = head.known(Known::ClientId).unwrap_or("");
        let ctx = Ctx {
            api: self,
            method: head.method(),
            credential,
            project: credential.project,
            client_hash: client_hash(client_id),
            query,
            body: req.body,
            head,
            limits,
        };
        match route {
            Route::Versions => health::versions(resp),
            Route::Metrics => Box::pin(metrics::metrics(&self.shard, resp)).await?,
            Route::Home => health::home(resp),
            Route::Ping => health::ping(resp),
            Route::Health => Box::pin(health::health(&ctx, resp)).await?,
            Route::Queues => Box::pin(queues::list(&ctx, resp)).await?,
            Route::Queue(q) => queues::queue(&ctx, q, resp).await?,
            Route::QueueStats(q) => queues::stats(&ctx, q, resp).await?,
            Route::QueuePurge(q) => queues::purge(&ctx, q, resp).await?,
            Route::QueueShare(q) => share::create(&ctx, q, resp)?,
            Route::Messages(q) => messages::collection(&ctx, q, resp).await?,
            Route::Message(q, id) => messages::item(&ctx, q, id, resp).await?,
            Route::Claims(q) => claims::create(&ctx, q, resp).await?,
            Route::Claim(q, id) => claims::item(&ctx, q, id, resp).await?,
            Route::ProjectLimits(p) => limits::resource(&ctx, p, resp).await?,
            Route::Subscriptions(_) => subscriptions::collection(&ctx, resp)?,
            Route::Subscription(_, id) | Route::SubscriptionConfirm(_, id) => subscriptions::item(&ctx, id, resp)?,
            Route::Token(id) => tokens::revoke(&ctx, id, resp).await?,
            Route::OutOfScope(what, _) => {
                // Bad input is still reported as such before "not implemented", as Zaqar
                // validates a topic's metadata before its storage refuses the call.
                if ctx.method == Method::Put {
                    parse_out_of_scope(ctx.body, &self.config.api)?;
                }
                return Err(ApiError::NotImplemented(format!("{what} are not supported by this server.").into()));
            }
        }
        Ok(())
    }

    /// Zaqar's request hooks, in Zaqar's order, and the authorization of `access` to the
    /// request. Returns the request's verified credential. With authentication on, the token
    /// is judged first, so a client without a credential learns nothing else.
    async fn check_hooks<'h>(
        &self,
        head: &RequestHead<'h>,
        body: &[u8],
        peer_subject: Option<&str>,
        route: Route<&str>,
        access: Access,
        buf: &'h mut TokenBuf,
    ) -> Result<Verified<'h>, ApiError> {
        // Divergence: Zaqar (like most WSGI stacks) reads the first copy of a repeated header; a
        // proxy in front may read another, so the request is refused instead.
        if let Some(name) = head.repeated(&SINGLE_HEADERS) {
            return Err(ApiError::InvalidHeader {
                title: "Repeated header",
                description: format!("The {} header must be sent only once.", name.name()).into(),
            });
        }
        // A valid signature stands for its own credential, in every mode (as in Zaqar).
        let signed = head.known(Known::UrlSignature).is_some();
        let token = if signed {
            share::verify(&self.config, head)?;
            None
        } else if access == Access::Public {
            None
        } else {
            self.auth.authenticate(head, peer_subject, buf).await?
        };
        if !body.is_empty()
            && head
                .known(Known::ContentType)
                .is_some_and(|ct| ct.trim_start().starts_with("application/x-www-form-urlencoded"))
        {
            return Err(ApiError::invalid_request("Invalid Content-Type"));
        }
        if let Some(accept) = head.known(Known::Accept) {
            if !accepts_json(accept) {
                return Err(ApiError::NotAcceptable);
            }
        }
        self.check_client_id(head.known(Known::ClientId))?;
        let named = auth::project_header(head)?;
        let verified = match token {
            Some(verified) => verified,
            None if signed => Verified::SignedUrl { project: named.ok_or_else(auth::missing_project)? },
            // A public route (versions, or metrics and health left open) needs no project with
            // authentication on: it touches no project's queues.
            None if self.auth.mode() != AuthMode::None => Verified::Open { project: named.unwrap_or("") },
            None => Verified::Open { project: named.ok_or_else(auth::missing_project)? },
        };
        if let Some(q) = route.queue() {
            if !crate::queue::is_valid_queue_name(q) {
                return Err(ApiError::InvalidQueueName);
            }
        }
        self.auth.authorize(&verified.credential(), access, route.queue().copied(), named)?;
        Ok(verified)
    }

    /// Turns a failure into its answer, and records the request (metrics, access log).
    #[inline(never)]
    fn finish(
        &self,
        req: &Request<'_>,
        outcome: Result<(), ApiError>,
        resp: &mut Response,
        kind: RouteKind,
        started: Instant,
    ) {
        if let Err(err) = outcome {
            // Server-side failures are worth a line each; client mistakes (4xx) and the
            // out-of-scope 501s are the client's business and would flood the log.
            if err.status() >= 500 && err.status() != 501 {
                tracing::error!(shard = self.shard.id, method = req.head.method_str(), path = req.head.path(), "{err}");
            }
            if let ApiError::QuotaExceeded { limit, .. } | ApiError::RateLimited { limit, .. } = &err {
                crate::metrics::with(|m| m.limit_refused(*limit));
            }
            resp.reset();
            resp.error(&err);
        }
        let elapsed = started.elapsed();
        let method = req.head.method();
        crate::metrics::with(|m| m.record_request(kind, method, resp.status, elapsed));
        if self.config.access_log {
            tracing::info!(
                target: "marconi::access",
                shard = self.shard.id,
                method = req.head.method_str(),
                path = req.head.target(),
                status = resp.status,
                micros = elapsed.as_micros() as u64,
                project = req.head.known(Known::XProjectId).unwrap_or("-"),
            );
        }
    }

    fn check_client_id(&self, client_id: Option<&str>) -> Result<(), ApiError> {
        let Some(id) = client_id else {
            return Err(ApiError::MissingHeader {
                title: "Missing header value",
                description: "The Client-ID header is required.".into(),
            });
        };
        let ok = match self.config.api.client_id_uuid_safe {
            ClientIdCheck::Strict => uuid::Uuid::parse_str(id.trim()).is_ok(),
            ClientIdCheck::Off => (MIN_CLIENT_ID_BYTES..=MAX_CLIENT_ID_BYTES).contains(&id.len()),
        };
        if ok {
            Ok(())
        } else if self.config.api.client_id_uuid_safe == ClientIdCheck::Strict {
            Err(ApiError::InvalidHeader {
                title: "Wrong UUID value",
                description: "Malformed hexadecimal UUID.".into(),
            })
        } else {
            Err(ApiError::InvalidHeader {
                title: "Invalid client id",
                description: format!(
                    "Length of client id must be at least {MIN_CLIENT_ID_BYTES} and no greater than {MAX_CLIENT_ID_BYTES}."
                )
                .into(),
            })
        }
    }
}

/// The most body bytes a route accepts (Zaqar's per-route limits, below `http.max_body_bytes`).
#[derive(Debug, Clone, Copy)]
enum BodyLimit {
    Post(usize),
    Metadata(usize),
    Limits(usize),
}

impl BodyLimit {
    fn of(route: Route<&str>, method: Method, limits: &crate::config::ApiLimits) -> Option<Self> {
        match route {
            Route::Messages(_) if method == Method::Post => Some(BodyLimit::Post(limits.max_messages_post_size_bytes)),
            Route::Queue(_) if matches!(method, Method::Put | Method::Patch) => {
                Some(BodyLimit::Metadata(limits.max_queue_metadata_bytes))
            }
            Route::ProjectLimits(_) if method == Method::Put => Some(BodyLimit::Limits(limits::MAX_LIMITS_BODY_BYTES)),
            _ => None,
        }
    }

    fn max(self) -> usize {
        match self {
            BodyLimit::Post(n) | BodyLimit::Metadata(n) | BodyLimit::Limits(n) => n,
        }
    }

    /// Zaqar's answer, written only when a body is refused.
    fn error(self) -> ApiError {
        ApiError::invalid_request(match self {
            BodyLimit::Post(n) => format!("Message collection size is too large. Max size {n}"),
            BodyLimit::Metadata(n) => format!("Queue metadata is too large. Max size: {n}"),
            BodyLimit::Limits(n) => format!("Limits are too large. Max size: {n}"),
        })
    }
}

impl Handler for Api {
    /// The route, resolved once per request; `None` when the path has none (the handler then
    /// says why).
    type Checked = Option<Route<Span>>;

    fn check_head(&self, head: &RequestHead) -> Result<Self::Checked, ApiError> {
        let Ok(route) = router::route(head.method(), head.path()) else {
            return Ok(None);
        };
        if let (Some(limit), Some(len)) = (BodyLimit::of(route, head.method(), &self.config.api), head.content_length())
        {
            if len > limit.max() {
                return Err(limit.error());
            }
        }
        Ok(Some(route.spans(head.path())))
    }

    async fn handle(&self, req: &Request<'_>, routed: Self::Checked, resp: &mut Response) {
        let started = Instant::now();
        let mut kind = RouteKind::Unmatched;
        let outcome = self.dispatch(req, routed, resp, &mut kind).await;
        // Not inline: what a future does after its last await still sizes its state, and every
        // request in progress (a parked long poll too) carries this one.
        self.finish(req, outcome, resp, kind, started);
    }

    async fn settle(&self) -> Result<(), ApiError> {
        self.shard.settle().await.map_err(ApiError::from)
    }

    /// Listing messages and claiming take `wait` (a long poll).
    fn may_park(&self, head: &RequestHead<'_>, routed: &Self::Checked) -> bool {
        matches!(
            (routed, head.method()),
            (Some(Route::Messages(_)), Method::Get) | (Some(Route::Claims(_)), Method::Post)
        ) && head.query().contains("wait=")
    }
}

/// The optional body of a `PUT` on an out-of-scope resource (a topic's metadata): an object.
pub fn parse_out_of_scope(body: &[u8], limits: &crate::config::ApiLimits) -> Result<(), ApiError> {
    if !body.is_empty() && !json::parse_value(body, limits.max_json_depth)?.is_object() {
        return Err(ApiError::invalid_body("Document type not supported."));
    }
    Ok(())
}

/// The reader of every request body the API takes, as the handlers use it, by endpoint: each
/// checks a body completely (well-formed, shallow enough, the right shape and values) without
/// touching a queue. Public for the fuzz target `fuzz/fuzz_targets/request_bodies.rs`.
pub mod bodies {
    pub use super::claims::ttl_and_grace as claim;
    pub use super::messages::parse_messages as messages;
    pub use super::parse_out_of_scope as out_of_scope;
    pub use super::queues::{parse_metadata as queue_metadata, parse_patch as queue_patch, parse_purge as purge};
    pub use super::share::{parse_share as share, ShareRequest};
}

/// Whether an Accept header admits a JSON response.
fn accepts_json(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let media = range.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        matches!(media.as_str(), "" | "*/*" | "application/*" | "application/json")
    })
}

/// Messages remember a 64-bit hash of their poster's Client-ID (8 bytes instead of up to 36), so
/// echo filtering could in theory confuse two clients whose ids collide: odds of 2^-64 per pair.
pub fn client_hash(client_id: &str) -> u64 {
    crate::shard::placement::placement_hash(client_id.trim(), "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_must_admit_json() {
        assert!(accepts_json("application/json"));
        assert!(accepts_json("text/html, */*;q=0.1"));
        assert!(accepts_json("application/*"));
        assert!(!accepts_json("application/xml"));
        assert!(!accepts_json("text/plain"));
    }
}
