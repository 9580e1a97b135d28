//! `/v2/queues/{q}/claims` and `/v2/queues/{q}/claims/{id}` (reference §4).

use serde_json::Value;

use super::json::{parse_value, write_str, write_u64};
use super::messages::{page_limit, wait_ms, write_messages, Shape};
use super::queues::unexpected;
use super::Ctx;
use crate::config::{ApiLimits, DEFAULT_CLAIM_LIMIT, MIN_CLAIM_GRACE_S, MIN_CLAIM_TTL_S};
use crate::error::ApiError;
use crate::http::{Method, Response};
use crate::queue::{ClaimId, ClaimParams};
use crate::shard::{Command, Reply};

pub async fn create(ctx: &Ctx<'_>, name: &str, resp: &mut Response) -> Result<(), ApiError> {
    let limits = &ctx.config().api;
    let max = limits.max_messages_per_claim_or_pop;
    let limit = page_limit(ctx, "limit", DEFAULT_CLAIM_LIMIT.min(max), max)?;
    let (ttl_s, grace_s) = ttl_and_grace(ctx.body, limits, true)?;
    let wait = wait_ms(ctx)?;
    let _poll = ctx.long_poll(wait)?;
    let command = Command::Claim { params: ClaimParams { ttl_s, grace_s, limit, secret: crate::random::u64()? } };
    let outcome = match ctx.shard().call(ctx.queue(name), command, wait).await? {
        Reply::Claimed(outcome) => outcome,
        _ => return Err(unexpected()),
    };
    match outcome.claim {
        Some((id, page)) if !page.messages.is_empty() => {
            resp.body.extend_from_slice(b"{\"messages\":[");
            write_messages(&mut resp.body, name, &page, Shape::Listed);
            resp.body.extend_from_slice(b"]}");
            resp.header("Location", format!("/v2/queues/{name}/claims/{id}"));
            resp.json(201);
        }
        _ => resp.empty(204),
    }
    Ok(())
}

pub async fn item(ctx: &Ctx<'_>, name: &str, id: &str, resp: &mut Response) -> Result<(), ApiError> {
    let queue = ctx.queue(name);
    let not_found = || ApiError::not_found("Claim does not exist or has expired.");
    match ctx.method {
        Method::Get | Method::Head => {
            let id = ClaimId::parse(id).ok_or_else(not_found)?;
            let view = match ctx.shard().call(queue, Command::GetClaim { id }, 0).await? {
                Reply::Claim(view) => view,
                _ => return Err(unexpected()),
            };
            let out = &mut resp.body;
            out.extend_from_slice(b"{\"age\":");
            write_u64(out, view.age_s);
            out.extend_from_slice(b",\"ttl\":");
            write_u64(out, u64::from(view.ttl_s));
            out.extend_from_slice(b",\"href\":");
            write_str(out, &format!("/v2/queues/{name}/claims/{id}"));
            out.extend_from_slice(b",\"messages\":[");
            write_messages(out, name, &view.page, Shape::Listed);
            out.extend_from_slice(b"]}");
            resp.json(200);
        }
        Method::Patch => {
            if ctx.body.is_empty() {
                return Err(ApiError::invalid_body("Request body can not be empty"));
            }
            let (ttl_s, grace_s) = ttl_and_grace(ctx.body, &ctx.config().api, false)?;
            let id = ClaimId::parse(id).ok_or_else(not_found)?;
            ctx.shard().call(queue, Command::RenewClaim { id, ttl_s, grace_s }, 0).await?;
            resp.empty(204);
        }
        Method::Delete => {
            if let Some(id) = ClaimId::parse(id) {
                ctx.shard().call(queue, Command::ReleaseClaim { id }, 0).await?;
            }
            resp.empty(204);
        }
        _ => return Err(unexpected()),
    }
    Ok(())
}

/// Reads `ttl` and `grace` with their defaults; grace is range-checked on creation only, as in
/// Zaqar.
pub fn ttl_and_grace(body: &[u8], limits: &ApiLimits, creating: bool) -> Result<(u32, u32), ApiError> {
    let doc =
        if body.is_empty() { Value::Object(Default::default()) } else { parse_value(body, limits.max_json_depth)? };
    let Value::Object(doc) = doc else {
        return Err(ApiError::invalid_body("Document type not supported."));
    };
    let field = |name: &str, default: u32| -> Result<i64, ApiError> {
        match doc.get(name) {
            None => Ok(i64::from(default)),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| ApiError::invalid_body(format!("The value of the \"{name}\" field must be a int."))),
        }
    };
    let ttl = field("ttl", limits.default_claim_ttl_s)?;
    let grace = field("grace", limits.default_claim_grace_s)?;
    if ttl < i64::from(MIN_CLAIM_TTL_S) || ttl > i64::from(limits.max_claim_ttl_s) {
        return Err(ApiError::invalid_request(format!(
            "The TTL for a claim may not exceed {} seconds, and must be at least {MIN_CLAIM_TTL_S} seconds long.",
            limits.max_claim_ttl_s
        )));
    }
    if creating && (grace < i64::from(MIN_CLAIM_GRACE_S) || grace > i64::from(limits.max_claim_grace_s)) {
        return Err(ApiError::invalid_request(format!(
            "The grace for a claim may not exceed {} seconds, and must be at least {MIN_CLAIM_GRACE_S} seconds long.",
            limits.max_claim_grace_s
        )));
    }
    // Renewals only check ttl (Zaqar); keep the grace within what a u32 of seconds can hold.
    Ok((ttl as u32, grace.clamp(0, i64::from(limits.max_claim_grace_s)) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_ranges() {
        let limits = ApiLimits::default();
        assert_eq!(ttl_and_grace(b"", &limits, true).unwrap(), (300, 60));
        assert_eq!(ttl_and_grace(b"{}", &limits, true).unwrap(), (300, 60));
        assert_eq!(ttl_and_grace(br#"{"ttl": 100}"#, &limits, true).unwrap(), (100, 60));
        assert!(ttl_and_grace(br#"{"ttl": 59}"#, &limits, true).is_err());
        assert!(ttl_and_grace(br#"{"grace": 43201}"#, &limits, true).is_err());
        assert!(ttl_and_grace(br#"{"grace": 43201}"#, &limits, false).is_ok());
        assert!(ttl_and_grace(br#"{"ttl": "x"}"#, &limits, true).is_err());
        assert!(ttl_and_grace(b"[]", &limits, true).is_err());
    }
}
