//! `/v2/queues/{q}/messages` and `/v2/queues/{q}/messages/{id}` (reference §3).

use super::json::{parse_post, write_next_link, write_u64};
use super::limits::room_for_queue;
use super::queues::unexpected;
use super::{query, Ctx};
use crate::config::{ApiLimits, DEFAULT_PAGE_SIZE, MIN_MESSAGE_TTL_S};
use crate::error::ApiError;
use crate::http::{Method, Response};
use crate::limits::Limit;
use crate::queue::{ClaimId, EngineError, ListMessages, MessageId, MessagePage, MessageView, NewMessage};
use crate::shard::{Command, Reply, ShardError};

pub async fn collection(ctx: &Ctx<'_>, name: &str, resp: &mut Response) -> Result<(), ApiError> {
    match ctx.method {
        Method::Get | Method::Head if ctx.query.get("ids").is_some() => get_by_ids(ctx, name, resp).await,
        Method::Get | Method::Head => list(ctx, name, resp).await,
        Method::Post => post(ctx, name, resp).await,
        Method::Delete => bulk_delete(ctx, name, resp).await,
        _ => Err(unexpected()),
    }
}

pub async fn item(ctx: &Ctx<'_>, name: &str, id: &str, resp: &mut Response) -> Result<(), ApiError> {
    let queue = ctx.queue(name);
    match ctx.method {
        Method::Get | Method::Head => {
            let not_found = || ApiError::not_found("Message not found.");
            let id = MessageId::parse(id).ok_or_else(not_found)?;
            let page = page_of(ctx.shard().call(queue, Command::GetMessages { ids: vec![id] }, 0).await?)?;
            let message = page.messages.first().ok_or_else(not_found)?;
            write_message(&mut resp.body, name, &page, message, Shape::Listed);
            resp.json(200);
        }
        Method::Delete => {
            let claim = match ctx.query.get("claim_id") {
                None => None,
                Some(c) => {
                    Some(ClaimId::parse(c).ok_or_else(|| ApiError::from(crate::queue::EngineError::ClaimMismatch))?)
                }
            };
            // A malformed id names no message: deleting it is a no-op, as in Zaqar.
            if let Some(id) = MessageId::parse(id) {
                ctx.shard().call(queue, Command::DeleteMessage { id, claim }, 0).await?;
            }
            resp.empty(204);
        }
        _ => return Err(unexpected()),
    }
    Ok(())
}

/// A `limit`-like parameter: `default` when absent, 1..=`max` or Zaqar's 400.
pub fn page_limit(ctx: &Ctx<'_>, param: &str, default: usize, max: usize) -> Result<usize, ApiError> {
    match ctx.query.i64(param)? {
        None => Ok(default),
        Some(n) if n >= 1 && n as usize <= max => Ok(n as usize),
        Some(_) => {
            Err(ApiError::invalid_request(format!("Limit must be at least 1 and may not be greater than {max}.")))
        }
    }
}

/// The `wait` of a long poll in milliseconds, capped by the configuration.
pub fn wait_ms(ctx: &Ctx<'_>) -> Result<u64, ApiError> {
    let cap = u64::from(ctx.config().api.max_wait_s);
    Ok(ctx.query.u64("wait")?.map_or(0, |s| s.min(cap) * 1000))
}

async fn list(ctx: &Ctx<'_>, name: &str, resp: &mut Response) -> Result<(), ApiError> {
    let limit = page_limit(ctx, "limit", DEFAULT_PAGE_SIZE, ctx.config().api.max_messages_per_page)?;
    let echo = ctx.query.bool("echo")?;
    let include_claimed = ctx.query.bool("include_claimed")?;
    let include_delayed = ctx.query.bool("include_delayed")?;
    let wait = wait_ms(ctx)?;
    let _poll = ctx.long_poll(wait)?;
    let out = &mut resp.body;
    // Markers are sequence numbers: anything else names no position, so the page is empty.
    let after_seq = match ctx.query.get("marker") {
        None => Some(0),
        Some(m) => m.parse::<u64>().ok(),
    };
    let page = match after_seq {
        Some(after_seq) => {
            let opts = ListMessages {
                after_seq,
                limit,
                client_hash: ctx.client_hash,
                echo: echo.unwrap_or(false),
                include_claimed: include_claimed.unwrap_or(false),
                include_delayed: include_delayed.unwrap_or(false),
            };
            page_of(ctx.shard().call(ctx.queue(name), Command::ListMessages { opts }, wait).await?)?
        }
        None => MessagePage::default(),
    };
    out.extend_from_slice(b"{\"messages\":[");
    write_messages(out, name, &page, Shape::Listed);
    out.extend_from_slice(b"],\"links\":[");
    if let Some(last) = page.messages.last() {
        let mut href = format!("/v2/queues/{name}/messages?marker={}&limit={limit}", last.seq);
        for (param, value) in
            [("echo", echo), ("include_claimed", include_claimed), ("include_delayed", include_delayed)]
        {
            if let Some(v) = value {
                href.push_str(&format!("&{param}={v}"));
            }
        }
        if let Some(w) = ctx.query.get("wait") {
            href.push_str("&wait=");
            query::encode(w, &mut href);
        }
        write_next_link(out, &href);
    }
    out.extend_from_slice(b"]}");
    resp.json(200);
    Ok(())
}

async fn get_by_ids(ctx: &Ctx<'_>, name: &str, resp: &mut Response) -> Result<(), ApiError> {
    let raw = ctx.query.list("ids").unwrap_or_default();
    let max = ctx.config().api.max_messages_per_page;
    if raw.is_empty() || raw.len() > max {
        return Err(ApiError::invalid_request(format!("Limit must be at least 1 and may not be greater than {max}.")));
    }
    let ids: Vec<MessageId> = raw.iter().filter_map(|id| MessageId::parse(id)).collect();
    let page = if ids.is_empty() {
        MessagePage::default()
    } else {
        page_of(ctx.shard().call(ctx.queue(name), Command::GetMessages { ids }, 0).await?)?
    };
    if page.messages.is_empty() {
        return Err(ApiError::not_found(format!(
            "No messages with IDs: {} found in the queue {name} for project {}.",
            raw.join(", "),
            ctx.project
        )));
    }
    resp.body.extend_from_slice(b"{\"messages\":[");
    write_messages(&mut resp.body, name, &page, Shape::Listed);
    resp.body.extend_from_slice(b"]}");
    resp.json(200);
    Ok(())
}

/// A post's messages with their `ttl` and `delay` checked, and their bodies copied out side by
/// side (what `Command::PostMessages` carries).
pub fn parse_messages(body: &[u8], limits: &ApiLimits) -> Result<(Vec<NewMessage>, Vec<u8>), ApiError> {
    let posted = parse_post(body, limits)?;
    if posted.is_empty() {
        return Err(ApiError::invalid_request("No messages to enqueu."));
    }
    let mut bodies = Vec::with_capacity(body.len());
    let mut messages = Vec::with_capacity(posted.len());
    for m in &posted {
        let ttl_s = match m.ttl_s {
            None => None,
            Some(t) if t >= i64::from(MIN_MESSAGE_TTL_S) && t <= i64::from(limits.max_message_ttl_s) => Some(t as u32),
            Some(_) => {
                return Err(ApiError::invalid_request(format!(
                    "The TTL for a message may not exceed {} seconds, and must be at least {MIN_MESSAGE_TTL_S} seconds long.",
                    limits.max_message_ttl_s
                )))
            }
        };
        let delay_s = match m.delay_s {
            None => None,
            Some(d) if d >= 0 && d <= i64::from(limits.max_message_delay_s) => Some(d as u32),
            Some(_) => {
                return Err(ApiError::invalid_request(format!(
                    "The Delay TTL for a message may not exceed {} seconds,and must be at least 0 seconds long.",
                    limits.max_message_delay_s
                )))
            }
        };
        let raw = body.get(m.body.clone()).unwrap_or(b"null");
        let start = bodies.len() as u32;
        bodies.extend_from_slice(raw);
        messages.push(NewMessage { ttl_s, delay_s, body: start..bodies.len() as u32 });
    }
    Ok((messages, bodies))
}

async fn post(ctx: &Ctx<'_>, name: &str, resp: &mut Response) -> Result<(), ApiError> {
    // While the project's queues are counted, a post may not make its queue: the first post to
    // a new queue comes back, the project's queues are counted, and the post is made again.
    let counted = ctx.limits.of(Limit::QueuesPerProject).is_some();
    let ids = match post_once(ctx, name, !counted).await? {
        Ok(ids) => ids,
        Err(ShardError::Engine(EngineError::QueueNotFound)) if counted => {
            room_for_queue(ctx).await?;
            ctx.shard().call(ctx.queue(name), Command::CreateQueue { metadata: None }, 0).await?;
            post_once(ctx, name, true).await??
        }
        Err(e) => return Err(e.into()),
    };
    write_posted(resp, name, &ids);
    Ok(())
}

/// Reads the post and sends it to the queue's owner: the outer error is the body's, the inner
/// one the owner's.
async fn post_once(
    ctx: &Ctx<'_>,
    name: &str,
    may_create_queue: bool,
) -> Result<Result<Vec<MessageId>, ShardError>, ApiError> {
    let (messages, bodies) = parse_messages(ctx.body, &ctx.config().api)?;
    let command = Command::PostMessages {
        client_hash: ctx.client_hash,
        messages,
        bodies,
        request_bytes: ctx.body.len(),
        quota: ctx.limits.store_quota(may_create_queue),
    };
    Ok(match ctx.shard().call(ctx.queue(name), command, 0).await {
        Ok(Reply::Posted(ids)) => Ok(ids),
        Ok(_) => return Err(unexpected()),
        Err(e) => Err(e),
    })
}

/// The 201 of a post: the href of every new message, and a `Location` naming them all (bounded
/// by `api.max_messages_per_post`, see [`crate::http::MAX_RESPONSE_HEAD_BYTES`]).
fn write_posted(resp: &mut Response, name: &str, ids: &[MessageId]) {
    let mut location = Vec::with_capacity(32 + name.len() + ids.len() * 25);
    location.extend_from_slice(b"/v2/queues/");
    location.extend_from_slice(name.as_bytes());
    location.extend_from_slice(b"/messages?ids=");
    let out = &mut resp.body;
    out.extend_from_slice(b"{\"resources\":[");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(b',');
            location.push(b',');
        }
        id.write_to(&mut location);
        out.extend_from_slice(b"\"/v2/queues/");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"/messages/");
        id.write_to(out);
        out.push(b'"');
    }
    out.extend_from_slice(b"]}");
    // Queue names and ids are ASCII: the conversion cannot fail.
    resp.header("Location", String::from_utf8(location).unwrap_or_default());
    resp.json(201);
}

async fn bulk_delete(ctx: &Ctx<'_>, name: &str, resp: &mut Response) -> Result<(), ApiError> {
    let limits = &ctx.config().api;
    let ids = ctx.query.list("ids");
    let pop = ctx.query.i64("pop")?;
    let claim_ids = ctx.query.list("claim_ids");
    match (&ids, pop) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_request(
                "pop and id params cannot be present together in the delete request.",
            ))
        }
        (None, None) => {
            return Err(ApiError::invalid_request(
                "The request should have either \"ids\" or \"pop\" parameter in the request, to be able to delete.",
            ))
        }
        _ => {}
    }
    if limits.message_delete_with_claim_id && (ids.is_some() != claim_ids.is_some()) {
        return Err(ApiError::invalid_request(
            "The request should have both \"ids\" and \"claim_ids\" parameter in the request when message_delete_with_claim_id is True.",
        ));
    }
    if let Some(n) = pop {
        let max = limits.max_messages_per_claim_or_pop;
        if n < 1 || n as usize > max {
            return Err(ApiError::invalid_request(format!(
                "Pop value must be at least 1 and may not be greater than {max}."
            )));
        }
        let page = page_of(ctx.shard().call(ctx.queue(name), Command::Pop { limit: n as usize }, 0).await?)?;
        resp.body.extend_from_slice(b"{\"messages\":[");
        write_messages(&mut resp.body, name, &page, Shape::Popped);
        resp.body.extend_from_slice(b"]}");
        resp.json(200);
        return Ok(());
    }
    let ids = ids.unwrap_or_default();
    let max = limits.max_messages_per_page;
    if ids.is_empty() || ids.len() > max {
        return Err(ApiError::invalid_request(format!(
            "ids parameter should have at least 1 and not greater than {max} values."
        )));
    }
    let claim_ids = match claim_ids {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|c| ClaimId::parse(c).ok_or(crate::queue::EngineError::ClaimMismatch))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let ids: Vec<MessageId> = ids.iter().filter_map(|id| MessageId::parse(id)).collect();
    if !ids.is_empty() {
        ctx.shard().call(ctx.queue(name), Command::DeleteMessages { ids, claim_ids }, 0).await?;
    }
    resp.empty(204);
    Ok(())
}

pub fn page_of(reply: Reply) -> Result<MessagePage, ApiError> {
    match reply {
        Reply::Page(page) => Ok(page),
        _ => Err(unexpected()),
    }
}

/// How a message is shown: listings carry an href, pops carry claim fields instead.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Listed,
    Popped,
}

pub fn write_messages(out: &mut Vec<u8>, queue: &str, page: &MessagePage, shape: Shape) {
    for (i, m) in page.messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_message(out, queue, page, m, shape);
    }
}

pub fn write_message(out: &mut Vec<u8>, queue: &str, page: &MessagePage, m: &MessageView, shape: Shape) {
    out.extend_from_slice(b"{\"id\":\"");
    m.id.write_to(out);
    out.push(b'"');
    if shape == Shape::Listed {
        out.extend_from_slice(b",\"href\":\"/v2/queues/");
        out.extend_from_slice(queue.as_bytes());
        out.extend_from_slice(b"/messages/");
        m.id.write_to(out);
        if let Some(claim) = m.claim {
            out.extend_from_slice(b"?claim_id=");
            claim.write_to(out);
        }
        out.push(b'"');
    }
    out.extend_from_slice(b",\"ttl\":");
    write_u64(out, u64::from(m.ttl_s));
    out.extend_from_slice(b",\"age\":");
    write_u64(out, m.age_s);
    out.extend_from_slice(b",\"body\":");
    out.extend_from_slice(page.body(m));
    if shape == Shape::Popped {
        out.extend_from_slice(b",\"claim_id\":null,\"claim_count\":");
        write_u64(out, u64::from(m.claim_count));
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MAX_MESSAGES_PER_POST_CEILING, MAX_QUEUE_NAME_BYTES};
    use crate::http::{ConnectionHeader, MAX_RESPONSE_HEAD_BYTES};

    /// The head of the 201 to a post of `count` messages into the longest queue name.
    fn post_answer_head(count: usize) -> usize {
        let name = "q".repeat(MAX_QUEUE_NAME_BYTES);
        let ids: Vec<MessageId> = (0..count as u64).map(|seq| MessageId::new(u32::MAX, u64::MAX - seq)).collect();
        let mut resp = Response::new();
        write_posted(&mut resp, &name, &ids);
        let location = resp.headers.iter().find(|(n, _)| *n == "Location").map(|(_, v)| v.len()).unwrap();
        assert!(location > count * 25, "every id is there: {location}");
        let mut out = Vec::new();
        resp.write_to(&mut out, false, ConnectionHeader::Close);
        out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4
    }

    #[test]
    fn the_largest_post_answer_has_a_head_clients_read() {
        let head = post_answer_head(MAX_MESSAGES_PER_POST_CEILING);
        assert!(head <= MAX_RESPONSE_HEAD_BYTES, "{head}");
        // The default is far below: its answer fits a proxy's 4 KiB header buffer.
        let head = post_answer_head(ApiLimits::default().max_messages_per_post);
        assert!(head <= 4096, "{head}");
    }
}
