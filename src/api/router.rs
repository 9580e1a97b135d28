//! Maps a method and path to a resource. Trailing slashes are accepted (python-zaqarclient sends
//! some), unknown paths are 404 and known paths with the wrong method are 405 with `Allow`.

use crate::auth::{Access, Op, Ops};
use crate::error::ApiError;
use crate::http::Method;
use crate::metrics::RouteKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<N> {
    Versions,
    /// `GET /metrics`: Prometheus text, outside `/v2` and its headers.
    Metrics,
    Home,
    Ping,
    Health,
    Queues,
    Queue(N),
    QueueStats(N),
    QueuePurge(N),
    QueueShare(N),
    Messages(N),
    Message(N, N),
    Claims(N),
    Claim(N, N),
    /// Subscriptions are not supported, but these routes answer as Zaqar does when there are
    /// none (see `api::subscriptions`).
    Subscriptions(N),
    Subscription(N, N),
    SubscriptionConfirm(N, N),
    /// Topics, pools and flavors: known to Zaqar, out of this product's scope. Carries the topic
    /// named in the path, which is still validated.
    OutOfScope(&'static str, Option<N>),
    /// `DELETE /v2/tokens/{id or name}`: revokes marconi tokens (`token` mode).
    Token(N),
    /// `GET`/`PUT /v2/projects/{project}/limits`: the project's quotas and rate limits. With
    /// authentication this is a `manage` operation on the project in the path.
    ProjectLimits(N),
}

impl<N> Route<N> {
    /// The methods each resource serves, as sent in `Allow`.
    fn allow(&self) -> &'static str {
        match self {
            Route::Versions | Route::Home | Route::Health | Route::Queues | Route::QueueStats(_) => "GET, HEAD",
            Route::Metrics => "GET, HEAD",
            Route::Ping => "GET, HEAD",
            Route::Queue(_) => "GET, HEAD, PUT, PATCH, DELETE",
            Route::QueuePurge(_) | Route::QueueShare(_) | Route::Claims(_) => "POST",
            Route::Messages(_) => "GET, HEAD, POST, DELETE",
            Route::Message(..) => "GET, HEAD, DELETE",
            Route::Claim(..) | Route::Subscription(..) => "GET, HEAD, PATCH, DELETE",
            Route::Subscriptions(_) => "GET, HEAD, POST",
            Route::SubscriptionConfirm(..) => "PUT",
            Route::OutOfScope(..) => "GET, HEAD, POST, PUT, PATCH, DELETE",
            Route::Token(_) => "DELETE",
            Route::ProjectLimits(_) => "GET, HEAD, PUT",
        }
    }

    /// What the request needs of its credential: the one table from routes to operations
    /// (docs/security.md lists it). `pops` is a `DELETE …/messages?pop=N` (it reads what it
    /// deletes); `admin_protected` whether `/metrics` and `/v2/health` need `manage`.
    pub fn access(&self, method: Method, pops: bool, admin_protected: bool) -> Access {
        let reads = matches!(method, Method::Get | Method::Head);
        match self {
            Route::Versions => Access::Public,
            Route::Metrics | Route::Health if admin_protected => Access::needs(Op::Manage),
            Route::Metrics | Route::Health => Access::Public,
            Route::Home | Route::Ping | Route::OutOfScope(..) => Access::Authenticated,
            Route::Queues | Route::QueueStats(_) => Access::needs(Op::Read),
            Route::Queue(_) | Route::Subscriptions(_) | Route::Subscription(..) if reads => Access::needs(Op::Read),
            Route::Queue(_)
            | Route::QueuePurge(_)
            | Route::QueueShare(_)
            | Route::Subscriptions(_)
            | Route::Subscription(..)
            | Route::SubscriptionConfirm(..)
            | Route::Token(_)
            | Route::ProjectLimits(_) => Access::needs(Op::Manage),
            Route::Messages(_) if method == Method::Post => Access::needs(Op::Post),
            Route::Messages(_) if method == Method::Delete && pops => Access::Needs(Ops::of(&[Op::Read, Op::Delete])),
            Route::Messages(_) | Route::Message(..) if method == Method::Delete => Access::needs(Op::Delete),
            Route::Messages(_) | Route::Message(..) => Access::needs(Op::Read),
            Route::Claims(_) | Route::Claim(..) => Access::needs(Op::Claim),
        }
    }

    fn allows(&self, method: Method) -> bool {
        // A bit per method, checked on every request: no string work on the hot path.
        const GET: u8 = 1;
        const HEAD: u8 = 2;
        const POST: u8 = 4;
        const PUT: u8 = 8;
        const PATCH: u8 = 16;
        const DELETE: u8 = 32;
        let allowed = match self {
            Route::Versions
            | Route::Home
            | Route::Health
            | Route::Metrics
            | Route::Queues
            | Route::QueueStats(_)
            | Route::Ping => GET | HEAD,
            Route::Queue(_) => GET | HEAD | PUT | PATCH | DELETE,
            Route::QueuePurge(_) | Route::QueueShare(_) | Route::Claims(_) => POST,
            Route::Messages(_) => GET | HEAD | POST | DELETE,
            Route::Message(..) => GET | HEAD | DELETE,
            Route::Claim(..) | Route::Subscription(..) => GET | HEAD | PATCH | DELETE,
            Route::Subscriptions(_) => GET | HEAD | POST,
            Route::SubscriptionConfirm(..) => PUT,
            Route::OutOfScope(..) => GET | HEAD | POST | PUT | PATCH | DELETE,
            Route::Token(_) => DELETE,
            Route::ProjectLimits(_) => GET | HEAD | PUT,
        };
        let bit = match method {
            Method::Get => GET,
            Method::Head => HEAD,
            Method::Post => POST,
            Method::Put => PUT,
            Method::Patch => PATCH,
            Method::Delete => DELETE,
            _ => 0,
        };
        allowed & bit != 0
    }

    /// The route's metrics index: no allocation, no label strings on the request path.
    pub fn kind(&self) -> RouteKind {
        match self {
            Route::Versions => RouteKind::Versions,
            Route::Metrics => RouteKind::Metrics,
            Route::Home => RouteKind::Home,
            Route::Ping => RouteKind::Ping,
            Route::Health => RouteKind::Health,
            Route::Queues => RouteKind::Queues,
            Route::Queue(_) => RouteKind::Queue,
            Route::QueueStats(_) => RouteKind::QueueStats,
            Route::QueuePurge(_) => RouteKind::QueuePurge,
            Route::QueueShare(_) => RouteKind::QueueShare,
            Route::Messages(_) => RouteKind::Messages,
            Route::Message(..) => RouteKind::Message,
            Route::Claims(_) => RouteKind::Claims,
            Route::Claim(..) => RouteKind::Claim,
            Route::Subscriptions(_) | Route::Subscription(..) | Route::SubscriptionConfirm(..) => {
                RouteKind::Subscriptions
            }
            Route::OutOfScope(..) => RouteKind::OutOfScope,
            Route::Token(_) => RouteKind::Token,
            Route::ProjectLimits(_) => RouteKind::ProjectLimits,
        }
    }

    /// The queue named in the path, if any.
    pub fn queue(&self) -> Option<&N> {
        match self {
            Route::Queue(q)
            | Route::QueueStats(q)
            | Route::QueuePurge(q)
            | Route::QueueShare(q)
            | Route::Messages(q)
            | Route::Message(q, _)
            | Route::Claims(q)
            | Route::Claim(q, _)
            | Route::Subscriptions(q)
            | Route::Subscription(q, _)
            | Route::SubscriptionConfirm(q, _)
            | Route::OutOfScope(_, Some(q)) => Some(q),
            _ => None,
        }
    }

    /// The same route with each name in the path replaced by `f(name)`.
    fn map<M>(self, f: impl Fn(N) -> M) -> Route<M> {
        match self {
            Route::Versions => Route::Versions,
            Route::Metrics => Route::Metrics,
            Route::Home => Route::Home,
            Route::Ping => Route::Ping,
            Route::Health => Route::Health,
            Route::Queues => Route::Queues,
            Route::Queue(q) => Route::Queue(f(q)),
            Route::QueueStats(q) => Route::QueueStats(f(q)),
            Route::QueuePurge(q) => Route::QueuePurge(f(q)),
            Route::QueueShare(q) => Route::QueueShare(f(q)),
            Route::Messages(q) => Route::Messages(f(q)),
            Route::Message(q, id) => Route::Message(f(q), f(id)),
            Route::Claims(q) => Route::Claims(f(q)),
            Route::Claim(q, id) => Route::Claim(f(q), f(id)),
            Route::Subscriptions(q) => Route::Subscriptions(f(q)),
            Route::Subscription(q, id) => Route::Subscription(f(q), f(id)),
            Route::SubscriptionConfirm(q, id) => Route::SubscriptionConfirm(f(q), f(id)),
            Route::OutOfScope(what, q) => Route::OutOfScope(what, q.map(f)),
            Route::Token(id) => Route::Token(f(id)),
            Route::ProjectLimits(p) => Route::ProjectLimits(f(p)),
        }
    }
}

/// Where a name lies in the path: lets a route resolved from a request's head outlive the borrow
/// of its bytes (the head may be copied before the handler runs), so routing happens once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl<'p> Route<&'p str> {
    /// The route with its names as places in `path`, which they must be slices of.
    pub fn spans(self, path: &'p str) -> Route<Span> {
        let base = path.as_ptr() as usize;
        self.map(|name| {
            let start = (name.as_ptr() as usize).wrapping_sub(base);
            assert!(start + name.len() <= path.len(), "a route name that is not part of its path");
            Span { start: start as u32, end: (start + name.len()) as u32 }
        })
    }
}

impl Route<Span> {
    /// The route with its names read back from `path` (the same path `spans` was given).
    pub fn names(self, path: &str) -> Route<&str> {
        self.map(|s| path.get(s.start as usize..s.end as usize).unwrap_or_default())
    }
}

/// Resolves `path` (without its query) for `method`.
pub fn route(method: Method, path: &str) -> Result<Route<&str>, ApiError> {
    let route = resolve(path).ok_or_else(|| ApiError::not_found("The requested resource does not exist."))?;
    if route.allows(method) {
        Ok(route)
    } else {
        Err(ApiError::MethodNotAllowed { method: method.as_str().to_owned(), allow: route.allow() })
    }
}

fn resolve(path: &str) -> Option<Route<&str>> {
    match path {
        "/" => return Some(Route::Versions),
        "/metrics" => return Some(Route::Metrics),
        _ => {}
    }
    let rest = path.strip_prefix("/v2")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut segments = rest.split('/');
    if !segments.next()?.is_empty() {
        return None;
    }
    // At most five segments matter; the routing runs on every request, so no Vec.
    let mut parts = [""; 6];
    let mut count = 0;
    for segment in segments {
        *parts.get_mut(count)? = segment;
        count += 1;
    }
    let parts = parts.get(..count)?;
    Some(match parts {
        [] => Route::Home,
        ["ping"] => Route::Ping,
        ["health"] => Route::Health,
        ["queues"] => Route::Queues,
        ["queues", q] => Route::Queue(q),
        ["queues", q, "stats"] => Route::QueueStats(q),
        ["queues", q, "purge"] => Route::QueuePurge(q),
        ["queues", q, "share"] => Route::QueueShare(q),
        ["queues", q, "messages"] => Route::Messages(q),
        ["queues", q, "messages", id] => Route::Message(q, id),
        ["queues", q, "claims"] => Route::Claims(q),
        ["queues", q, "claims", id] => Route::Claim(q, id),
        ["queues", q, "subscriptions"] => Route::Subscriptions(q),
        ["queues", q, "subscriptions", id] => Route::Subscription(q, id),
        ["queues", q, "subscriptions", id, "confirm"] => Route::SubscriptionConfirm(q, id),
        ["projects", p, "limits"] => Route::ProjectLimits(p),
        ["topics"] => Route::OutOfScope("Topics", None),
        ["topics", t, ..] => Route::OutOfScope("Topics", Some(t)),
        ["pools", ..] => Route::OutOfScope("Pools", None),
        ["flavors", ..] => Route::OutOfScope("Flavors", None),
        ["tokens", id] => Route::Token(id),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_every_resource_with_or_without_trailing_slash() {
        assert_eq!(route(Method::Get, "/").unwrap(), Route::Versions);
        assert_eq!(route(Method::Get, "/v2").unwrap(), Route::Home);
        assert_eq!(route(Method::Get, "/metrics").unwrap(), Route::Metrics);
        assert_eq!(route(Method::Get, "/v2/").unwrap(), Route::Home);
        assert_eq!(route(Method::Delete, "/v2/queues/q/messages/").unwrap(), Route::Messages("q"));
        assert_eq!(route(Method::Patch, "/v2/queues/q/claims/c1").unwrap(), Route::Claim("q", "c1"));
        assert_eq!(route(Method::Head, "/v2/queues/q").unwrap(), Route::Queue("q"));
        assert_eq!(route(Method::Post, "/v2/queues/q/subscriptions/").unwrap(), Route::Subscriptions("q"));
        assert_eq!(route(Method::Get, "/v2/queues/q/subscriptions/x").unwrap(), Route::Subscription("q", "x"));
        assert_eq!(
            route(Method::Put, "/v2/queues/q/subscriptions/x/confirm").unwrap(),
            Route::SubscriptionConfirm("q", "x")
        );
        assert_eq!(route(Method::Get, "/v2/topics/t/x").unwrap(), Route::OutOfScope("Topics", Some("t")));
    }

    #[test]
    fn allow_header_and_method_check_agree() {
        for path in [
            "/",
            "/v2",
            "/v2/ping",
            "/v2/queues/q",
            "/v2/queues/q/messages",
            "/v2/queues/q/claims/c",
            "/v2/queues/q/subscriptions",
            "/v2/queues/q/subscriptions/s",
            "/v2/queues/q/subscriptions/s/confirm",
            "/v2/tokens/t",
            "/v2/projects/p/limits",
        ] {
            for method in [Method::Get, Method::Head, Method::Post, Method::Put, Method::Patch, Method::Delete] {
                let r = resolve(path).unwrap();
                assert_eq!(r.allows(method), r.allow().split(", ").any(|m| m == method.as_str()), "{path} {method:?}");
            }
        }
    }

    #[test]
    fn every_route_needs_one_operation() {
        use Method::*;
        let needs = |path: &str, method: Method| route(method, path).unwrap().access(method, false, true);
        let op = |op: Op| Access::needs(op);
        for (path, method, want) in [
            ("/", Get, Access::Public),
            ("/metrics", Get, op(Op::Manage)),
            ("/v2/health", Get, op(Op::Manage)),
            ("/v2", Get, Access::Authenticated),
            ("/v2/ping", Head, Access::Authenticated),
            ("/v2/queues", Get, op(Op::Read)),
            ("/v2/queues/q", Get, op(Op::Read)),
            ("/v2/queues/q", Head, op(Op::Read)),
            ("/v2/queues/q", Put, op(Op::Manage)),
            ("/v2/queues/q", Patch, op(Op::Manage)),
            ("/v2/queues/q", Delete, op(Op::Manage)),
            ("/v2/queues/q/stats", Get, op(Op::Read)),
            ("/v2/queues/q/purge", Post, op(Op::Manage)),
            ("/v2/queues/q/share", Post, op(Op::Manage)),
            ("/v2/queues/q/messages", Post, op(Op::Post)),
            ("/v2/queues/q/messages", Get, op(Op::Read)),
            ("/v2/queues/q/messages", Delete, op(Op::Delete)),
            ("/v2/queues/q/messages/m", Get, op(Op::Read)),
            ("/v2/queues/q/messages/m", Delete, op(Op::Delete)),
            ("/v2/queues/q/claims", Post, op(Op::Claim)),
            ("/v2/queues/q/claims/c", Get, op(Op::Claim)),
            ("/v2/queues/q/claims/c", Patch, op(Op::Claim)),
            ("/v2/queues/q/claims/c", Delete, op(Op::Claim)),
            ("/v2/queues/q/subscriptions", Get, op(Op::Read)),
            ("/v2/queues/q/subscriptions", Post, op(Op::Manage)),
            ("/v2/queues/q/subscriptions/s", Delete, op(Op::Manage)),
            ("/v2/queues/q/subscriptions/s/confirm", Put, op(Op::Manage)),
            ("/v2/tokens/t", Delete, op(Op::Manage)),
            ("/v2/topics", Get, Access::Authenticated),
        ] {
            assert_eq!(needs(path, method), want, "{method:?} {path}");
        }
        let pop = route(Delete, "/v2/queues/q/messages").unwrap().access(Delete, true, true);
        assert_eq!(pop, Access::Needs(Ops::of(&[Op::Read, Op::Delete])), "a pop reads what it deletes");
        let open = route(Get, "/metrics").unwrap().access(Get, false, false);
        assert_eq!(open, Access::Public, "auth.public_metrics");
    }

    #[test]
    fn unknown_paths_404_and_wrong_methods_405() {
        assert_eq!(route(Method::Get, "/v3/queues").unwrap_err().status(), 404);
        assert_eq!(route(Method::Get, "/v2/queues/q/nope").unwrap_err().status(), 404);
        assert_eq!(route(Method::Get, "/v2//queues").unwrap_err().status(), 404);
        assert_eq!(route(Method::Get, "/v2/queues/q/subscriptions/s/nope").unwrap_err().status(), 404);
        assert_eq!(route(Method::Get, "/v2/queues/q/subscriptions/s/confirm").unwrap_err().status(), 405);
        let err = route(Method::Post, "/v2/queues/q").unwrap_err();
        assert_eq!(err.status(), 405);
    }
}
