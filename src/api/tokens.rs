//! `DELETE /v2/tokens/{id or name}`: revokes marconi tokens of the caller's project (`token`
//! mode; docs/security.md). The credential must `manage` every queue of the project (glob `*`).
//! The revocation is durable and in force on every shard before the 204.

use super::Ctx;
use crate::auth::token::{self, TokenId};
use crate::config::AuthMode;
use crate::error::ApiError;
use crate::http::Response;
use crate::queue::Revoked;

pub async fn revoke(ctx: &Ctx<'_>, subject: &str, resp: &mut Response) -> Result<(), ApiError> {
    if ctx.auth().mode() != AuthMode::Token {
        return Err(ApiError::not_found("Token revocation needs auth.mode = token."));
    }
    if ctx.credential.visible_queues().is_some() {
        return Err(ctx.auth().forbid("Revoking tokens needs a credential for every queue of the project."));
    }
    let hex;
    let subject = match TokenId::parse(subject) {
        Some(id) => {
            hex = id.to_string();
            hex.as_str()
        }
        None if token::is_valid_name(subject) => subject,
        None => {
            return Err(ApiError::invalid_request(
                "Name a token by its id (32 hex digits) or by its name ([A-Za-z0-9_.-], at most 64).",
            ))
        }
    };
    let now_ms = crate::time::now_ms();
    let until_ms = now_ms.saturating_add(ctx.auth().max_token_ttl_s().saturating_mul(1000));
    let max = ctx.config().auth.max_revocations;
    ctx.shard().revoke(ctx.project, subject, Revoked { revoked_ms: now_ms, until_ms }, max).await?;
    resp.empty(204);
    Ok(())
}
