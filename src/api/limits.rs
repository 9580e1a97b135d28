//! Quotas and rate limits per project at the API edge (docs/api.md, "Quotas and rate limits").
//!
//! - Rate limits: a token bucket per project and per credential on the shard that accepted the
//!   connection ([`Admission::admit`]), before the request does anything.
//! - Long polls: requests with `wait` in flight per project on this shard ([`Ctx::long_poll`]).
//! - Queues per project: counted over every shard before a queue is made ([`room_for_queue`]).
//! - Messages and bytes: checked by the queue's owner ([`crate::limits::StoreQuota`]).
//! - `GET` and `PUT /v2/projects/{id}/limits` ([`resource`]).

use std::cell::RefCell;

use ahash::AHashMap;

use super::{json, Ctx};
use crate::error::ApiError;
use crate::http::{Known, Method, RequestHead, Response};
use crate::limits::{Limit, LimitSet, OverrideError, Overrides, RateLimiter, Refused, MAX_BUCKETS};
use crate::shard::{Command, Reply};

/// Largest body of `PUT /v2/projects/{id}/limits` (every limit with the largest values fits in
/// well under half of it).
pub const MAX_LIMITS_BODY_BYTES: usize = 4096;

/// The opaque key the per-credential rate limit counts by: the bytes of the request's credential.
///
/// This is the hook for authentication: today it is the `X-Auth-Token` header, or the token of
/// `Authorization: Bearer`, as sent; once tokens are verified, return the verified token's id
/// here instead (so a token is one bucket however it is spelled). `None`: no credential, and no
/// per-credential limit applies.
pub fn credential<'h>(head: &RequestHead<'h>) -> Option<&'h [u8]> {
    if let Some(token) = head.known_bytes(Known::XAuthToken).filter(|t| !t.is_empty()) {
        return Some(token);
    }
    let auth = head.known_bytes(Known::Authorization)?;
    let token = auth.get(..7).filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer ")).and(auth.get(7..))?;
    Some(token.trim_ascii()).filter(|t| !t.is_empty())
}

/// One shard's request-rate buckets and long-poll counts. Shard-local: no locks, and a request
/// that passes allocates nothing once its project's bucket exists.
pub struct Admission {
    projects: RefCell<RateLimiter>,
    credentials: RefCell<RateLimiter>,
    /// Long polls in flight by project key; an entry leaves when its count drops to 0, so the map
    /// is bounded by the requests in flight.
    polls: RefCell<AHashMap<u64, u64>>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            projects: RefCell::new(RateLimiter::new(MAX_BUCKETS)),
            credentials: RefCell::new(RateLimiter::new(MAX_BUCKETS)),
            polls: RefCell::default(),
        }
    }
}

impl Admission {
    /// Takes a token for the project and one for the credential, or refuses with 429.
    pub fn admit(
        &self,
        project: &str,
        credential: Option<&[u8]>,
        limits: &LimitSet,
        now_ms: u64,
    ) -> Result<(), Refused> {
        let rate = |limit: Limit, limiter: &RefCell<RateLimiter>, key: &[u8]| -> Result<(), Refused> {
            let Some(value) = limits.of(limit) else { return Ok(()) };
            let mut limiter = limiter.borrow_mut();
            let key = limiter.key(key);
            limiter.take(key, value, now_ms).map_err(|retry_after_s| Refused::Rate { limit, value, retry_after_s })
        };
        rate(Limit::RequestsPerSecondPerProject, &self.projects, project.as_bytes())?;
        if let Some(credential) = credential {
            rate(Limit::RequestsPerSecondPerCredential, &self.credentials, credential)?;
        }
        Ok(())
    }
}

/// A long poll counted against its project while it lives.
pub struct PollSlot<'a> {
    admission: &'a Admission,
    key: u64,
}

impl Drop for PollSlot<'_> {
    fn drop(&mut self) {
        let mut polls = self.admission.polls.borrow_mut();
        if let Some(n) = polls.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                polls.remove(&self.key);
            }
        }
    }
}

impl<'r> Ctx<'r> {
    /// Counts a request with `wait` against `long_polls_per_project` (no slot without `wait`).
    pub fn long_poll(&self, wait_ms: u64) -> Result<Option<PollSlot<'r>>, ApiError> {
        let admission = &self.api.admission;
        if wait_ms == 0 {
            return Ok(None);
        }
        let key = admission.projects.borrow().key(self.project.as_bytes());
        let mut polls = admission.polls.borrow_mut();
        let n = polls.entry(key).or_default();
        if let Some(value) = self.limits.of(Limit::LongPollsPerProject).filter(|&v| *n >= v) {
            if *n == 0 {
                polls.remove(&key);
            }
            return Err(ApiError::from(Refused::Quota { limit: Limit::LongPollsPerProject, value }));
        }
        *n += 1;
        Ok(Some(PollSlot { admission, key }))
    }
}

/// Whether the project may have one more queue: counts its queues on every shard (a scatter,
/// made only while `queues_per_project` is set and only for a queue that does not exist yet).
/// Creates racing on several shards can each pass: the overshoot is at most the creates of the
/// project in flight at once.
pub async fn room_for_queue(ctx: &Ctx<'_>) -> Result<(), ApiError> {
    let Some(value) = ctx.limits.of(Limit::QueuesPerProject) else { return Ok(()) };
    let mut queues = 0;
    for reply in ctx.shard().scatter(ctx.project, Command::ProjectVolume).await? {
        if let Reply::Volume(v) = reply {
            queues += v.queues;
        }
    }
    if queues >= value {
        return Err(ApiError::from(Refused::Quota { limit: Limit::QueuesPerProject, value }));
    }
    Ok(())
}

/// `GET` and `PUT /v2/projects/{project}/limits`.
///
/// Authorization: a `manage` operation (`Route::access`) on the project in the path, which must
/// be the credential's own once authentication is on; with `auth.mode = none` every route is open.
pub async fn resource(ctx: &Ctx<'_>, project: &str, resp: &mut Response) -> Result<(), ApiError> {
    if project.is_empty() || project.len() > crate::config::MAX_PROJECT_ID_BYTES {
        return Err(ApiError::InvalidQueueName);
    }
    if ctx.config().auth.mode != crate::config::AuthMode::None && project != ctx.credential.project {
        return Err(ctx.api.auth.forbid("This credential may not manage another project's limits."));
    }
    if ctx.method == Method::Put {
        let overrides = parse_limits(ctx.body, &ctx.config().api)?;
        ctx.shard().put_limits(project, overrides).await?;
    }
    write_limits(&mut resp.body, &ctx.shard().limits(project), &ctx.shard().stored_limits(project));
    resp.json(200);
    Ok(())
}

/// The body of a `PUT`: an object of limits by name, each a non-negative integer (0 is
/// unlimited); limits it leaves out fall back to the configuration. `{}` removes every override.
pub fn parse_limits(body: &[u8], limits: &crate::config::ApiLimits) -> Result<Overrides, ApiError> {
    let value = json::parse_value(body, limits.max_json_depth)?;
    let Some(object) = value.as_object() else {
        return Err(ApiError::invalid_body("The limits must be a JSON object of limits by name."));
    };
    Overrides::from_pairs(object.iter().map(|(k, v)| (k.as_str(), v.as_u64()))).map_err(|e| match e {
        OverrideError::Unknown(_) => ApiError::invalid_body(e.to_string()),
        _ => ApiError::invalid_request(e.to_string()),
    })
}

/// `{"limits": {every limit in force}, "overrides": {those set by PUT}}`.
fn write_limits(out: &mut Vec<u8>, limits: &LimitSet, stored: &Overrides) {
    out.extend_from_slice(b"{\"limits\": {");
    for (i, limit) in Limit::ALL.into_iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        json::write_str(out, limit.name());
        out.extend_from_slice(b": ");
        json::write_u64(out, limits.get(limit));
    }
    out.extend_from_slice(b"}, \"overrides\": {");
    for (i, (limit, value)) in stored.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        json::write_str(out, limit.name());
        out.extend_from_slice(b": ");
        json::write_u64(out, value);
    }
    out.extend_from_slice(b"}}");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::ApiLimits;

    #[test]
    fn bodies_are_objects_of_known_limits_with_counts() {
        let api = ApiLimits::default();
        let o = parse_limits(br#"{"queues_per_project": 2, "bytes_per_queue": 0}"#, &api).unwrap();
        assert_eq!(o.get(Limit::QueuesPerProject), Some(2));
        assert_eq!(o.get(Limit::BytesPerQueue), Some(0));
        assert!(parse_limits(b"{}", &api).unwrap().is_empty());
        for (bad, status) in [
            (&br#"{"queues": 1}"#[..], 400),
            (br#"{"queues_per_project": -1}"#, 400),
            (br#"{"queues_per_project": "1"}"#, 400),
            (br#"{"queues_per_project": 1.5}"#, 400),
            (br#"{"queues_per_project": 1099511627777}"#, 400),
            (br#"[1]"#, 400),
            (b"", 400),
        ] {
            let err = parse_limits(bad, &api).unwrap_err();
            assert_eq!(err.status(), status, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_written_document_lists_every_limit_and_the_overrides() {
        let mut out = Vec::new();
        let mut o = Overrides::default();
        o.set(Limit::MessagesPerQueue, 7).unwrap();
        write_limits(&mut out, &LimitSet::UNLIMITED.with(&o), &o);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["limits"].as_object().unwrap().len(), crate::limits::LIMITS);
        assert_eq!(v["limits"]["messages_per_queue"], 7);
        assert_eq!(v["overrides"], serde_json::json!({"messages_per_queue": 7}));
    }
}
