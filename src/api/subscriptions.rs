//! `/v2/queues/{q}/subscriptions`, `.../subscriptions/{id}` and `.../{id}/confirm` (reference §10).
//!
//! marconi forwards no messages to subscribers (web hooks, e-mail), so no subscription can be
//! created and none exists. Each route answers what Zaqar answers for a queue without
//! subscriptions, so that unchanged Zaqar clients keep working: a listing is Zaqar's empty page
//! (python-zaqarclient's `Queue.subscriptions()`, tempest's purge test), a subscription is never
//! found, and deleting one is done. Creating one is refused with 400, as Zaqar refuses a
//! subscriber type it does not support: python-zaqarclient raises on a 400 but takes a 501 for a
//! subscription without an id. As in Zaqar, none of them needs the queue to exist.

use super::messages::page_limit;
use super::Ctx;
use crate::config::DEFAULT_PAGE_SIZE;
use crate::error::ApiError;
use crate::http::{Method, Response};

/// Zaqar's `max_subscriptions_per_page`. A listing is always empty, so `limit` is only checked.
const MAX_SUBSCRIPTIONS_PER_PAGE: usize = 20;

/// `GET`/`HEAD` (list) and `POST` (create) on `.../subscriptions`.
pub fn collection(ctx: &Ctx<'_>, resp: &mut Response) -> Result<(), ApiError> {
    if ctx.method == Method::Post {
        return Err(ApiError::invalid_request(
            "Subscriptions are not supported: marconi does not forward messages to subscribers (web hooks, e-mail).",
        ));
    }
    page_limit(ctx, "limit", DEFAULT_PAGE_SIZE, MAX_SUBSCRIPTIONS_PER_PAGE)?;
    resp.body.extend_from_slice(br#"{"subscriptions":[],"links":[]}"#);
    resp.json(200);
    Ok(())
}

/// `.../subscriptions/{id}` (`GET`, `HEAD`, `PATCH`, `DELETE`) and `.../{id}/confirm` (`PUT`):
/// deleting is done (Zaqar deletes idempotently); everything else finds no such subscription.
pub fn item(ctx: &Ctx<'_>, id: &str, resp: &mut Response) -> Result<(), ApiError> {
    if ctx.method == Method::Delete {
        resp.empty(204);
        return Ok(());
    }
    Err(ApiError::not_found(format!("Subscription {id} does not exist.")))
}
