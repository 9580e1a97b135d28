//! `/v2/queues`, `/v2/queues/{q}`, `.../stats`, `.../purge` (reference §2).

use serde_json::Value;

use super::json::{parse_value, write_next_link, write_str, write_u64, write_value};
use super::limits::room_for_queue;
use super::{query, Ctx};
use crate::config::{ApiLimits, DEFAULT_PAGE_SIZE};
use crate::error::ApiError;
use crate::http::{Known, Method, Response};
use crate::limits::Limit;
use crate::queue::{ListQueues, Metadata, PatchOp, QueueListing};
use crate::shard::{Command, Reply};

const PATCH_MEDIA_TYPE: &str = "application/openstack-messaging-v2.0-json-patch";
/// Query parameters of a queue listing; any other becomes a metadata filter.
const LIST_PARAMS: [&str; 5] = ["marker", "limit", "detailed", "name", "with_count"];

pub async fn list(ctx: &Ctx<'_>, resp: &mut Response) -> Result<(), ApiError> {
    let max = ctx.config().api.max_queues_per_page;
    let limit = match ctx.query.i64("limit")? {
        None => DEFAULT_PAGE_SIZE,
        Some(n) if n >= 1 && n as usize <= max => n as usize,
        Some(_) => {
            return Err(ApiError::invalid_request(format!("Limit must be at least 1 and no greater than {max}.")))
        }
    };
    let detailed = ctx.query.bool("detailed")?;
    let with_count = ctx.query.bool("with_count")?;
    let metadata_filters = ctx
        .query
        .pairs()
        .filter(|(k, _)| !LIST_PARAMS.contains(k))
        .map(|(k, v)| (k.to_owned(), v.parse::<i64>().map_or_else(|_| Value::from(v), Value::from)))
        .collect();
    let opts = ListQueues {
        after: ctx.query.get("marker").map(str::to_owned),
        limit,
        detailed: detailed.unwrap_or(false),
        name_contains: ctx.query.get("name").map(str::to_owned),
        visible: ctx.credential.visible_queues().map(str::to_owned),
        metadata_filters,
        with_count: with_count.unwrap_or(false),
    };
    let replies = ctx.shard().scatter(ctx.project, Command::ListQueues { opts: opts.clone() }).await?;
    let mut queues: Vec<QueueListing> = Vec::new();
    let mut count = 0;
    for reply in replies {
        if let Reply::Queues(page) = reply {
            queues.extend(page.queues);
            count += page.count.unwrap_or(0);
        }
    }
    queues.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    queues.truncate(limit);

    let limits = &ctx.config().api;
    let out = &mut resp.body;
    out.extend_from_slice(b"{\"queues\":[");
    for (i, q) in queues.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        write_str(out, &q.name);
        out.extend_from_slice(b",\"href\":");
        write_str(out, &format!("/v2/queues/{}", q.name));
        if let Some(meta) = &q.metadata {
            out.extend_from_slice(b",\"metadata\":");
            write_value(out, &meta.with_defaults(limits));
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"links\":[");
    if let Some(last) = queues.last() {
        let mut href = String::from("/v2/queues?");
        let mut params: Vec<(&str, String)> = Vec::new();
        params.push(("limit", limit.to_string()));
        if let Some(d) = detailed {
            params.push(("detailed", d.to_string()));
        }
        if let Some(n) = &opts.name_contains {
            params.push(("name", n.clone()));
        }
        if let Some(c) = with_count {
            params.push(("with_count", c.to_string()));
        }
        params.push(("marker", last.name.clone()));
        for (i, (k, v)) in params.iter().enumerate() {
            if i > 0 {
                href.push('&');
            }
            href.push_str(k);
            href.push('=');
            query::encode(v, &mut href);
        }
        write_next_link(out, &href);
    }
    out.push(b']');
    if opts.with_count && count > 0 {
        out.extend_from_slice(b",\"count\":");
        write_u64(out, count);
    }
    out.push(b'}');
    resp.json(200);
    Ok(())
}

pub async fn queue(ctx: &Ctx<'_>, name: &str, resp: &mut Response) -> Result<(), ApiError> {
    let queue = ctx.queue(name);
    match ctx.method {
        Method::Get => {
            let metadata = match ctx.shard().call(queue, Command::GetQueue, 0).await? {
                Reply::Metadata(m) => m.unwrap_or_default(),
                _ => return Err(unexpected()),
            };
            write_value(&mut resp.body, &metadata.with_defaults(&ctx.config().api));
            resp.json(200);
        }
        // Divergence: Zaqar has no HEAD here; python-zaqarclient uses it to test existence.
        Method::Head => match ctx.shard().call(queue, Command::QueueExists, 0).await? {
            Reply::Exists(true) => resp.empty(204),
            Reply::Exists(false) => return Err(ApiError::not_found("Queue does not exist.")),
            _ => return Err(unexpected()),
        },
        Method::Put => {
            let metadata = if ctx.body.is_empty() { None } else { Some(parse_metadata(ctx.body, &ctx.config().api)?) };
            if ctx.limits.of(Limit::QueuesPerProject).is_some()
                && matches!(ctx.shard().call(queue, Command::QueueExists, 0).await?, Reply::Exists(false))
            {
                room_for_queue(ctx).await?;
            }
            let created = match ctx.shard().call(queue, Command::CreateQueue { metadata }, 0).await? {
                Reply::Created(c) => c,
                _ => return Err(unexpected()),
            };
            resp.header("Location", format!("/v2/queues/{name}"));
            resp.empty(if created { 201 } else { 204 });
        }
        Method::Patch => {
            let ops = patch_ops(ctx)?;
            let metadata = match ctx.shard().call(queue, Command::PatchQueue { ops }, 0).await? {
                Reply::Metadata(Some(m)) => m,
                _ => return Err(unexpected()),
            };
            write_value(&mut resp.body, &metadata.with_defaults(&ctx.config().api));
            resp.json(200);
        }
        Method::Delete => {
            ctx.shard().call(queue, Command::DeleteQueue, 0).await?;
            resp.empty(204);
        }
        _ => return Err(unexpected()),
    }
    Ok(())
}

/// The metadata document of a queue `PUT`, checked as Zaqar checks it.
pub fn parse_metadata(body: &[u8], limits: &ApiLimits) -> Result<Metadata, ApiError> {
    match parse_value(body, limits.max_json_depth)? {
        Value::Object(map) => Ok(Metadata::from_map(map, limits)?),
        _ => Err(ApiError::invalid_body("Document type not supported.")),
    }
}

/// The content type and body of a queue `PATCH`.
fn patch_ops(ctx: &Ctx<'_>) -> Result<Vec<PatchOp>, ApiError> {
    let content_type = ctx.head.known(Known::ContentType).unwrap_or("");
    if content_type.split(';').next().map(str::trim) != Some(PATCH_MEDIA_TYPE) {
        return Err(ApiError::UnsupportedMediaType(
            format!("Accepted media type for PATCH: {{'Accept-Patch': '{PATCH_MEDIA_TYPE}'}}.").into(),
        ));
    }
    parse_patch(ctx.body, &ctx.config().api)
}

/// Parses and checks a JSON-Patch (draft 10 subset) document, with Zaqar's messages. Each value
/// is at least two levels shallower than the document, so metadata patched with it stays
/// within `max_json_depth` too.
pub fn parse_patch(body: &[u8], limits: &ApiLimits) -> Result<Vec<PatchOp>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid_body("PATCH body could not be empty for update."));
    }
    let Value::Array(changes) = parse_value(body, limits.max_json_depth)? else {
        return Err(ApiError::invalid_body("Document type not supported."));
    };
    changes.into_iter().map(patch_op).collect()
}

fn patch_op(change: Value) -> Result<PatchOp, ApiError> {
    const OPS: &str = "add, remove, replace";
    let Value::Object(mut change) = change else {
        return Err(ApiError::invalid_request("Operations must be JSON objects."));
    };
    let op = match change.get("op") {
        None => {
            return Err(ApiError::invalid_request(format!(
                "Unable to find `op` in JSON Schema change. It must be one of the following: {OPS}."
            )))
        }
        Some(Value::String(op)) if ["add", "remove", "replace"].contains(&op.as_str()) => op.clone(),
        Some(other) => {
            let op = other.as_str().map_or_else(|| other.to_string(), str::to_owned);
            return Err(ApiError::invalid_request(format!(
                "Invalid operation: `{op}`. It must be one of the following: {OPS}."
            )));
        }
    };
    let Some(Value::String(pointer)) = change.get("path") else {
        return Err(ApiError::invalid_request("Unable to find 'path' in JSON Schema change"));
    };
    let path = decode_pointer(pointer)?;
    if path.len() != 2 {
        return Err(ApiError::invalid_request(format!(
            "Invalid JSON pointer for this resource: '/{}, e.g /metadata/key'",
            path.join("/")
        )));
    }
    let (root, key) = (&path[0], path[1].clone());
    if op != "remove" && !root.eq_ignore_ascii_case("metadata") {
        return Err(ApiError::invalid_request("The root of path must be metadata, e.g /metadata/key."));
    }
    if op == "remove" {
        return Ok(PatchOp::Remove { key });
    }
    let value = change
        .remove("value")
        .ok_or_else(|| ApiError::invalid_request(format!("Operation \"{op}\" requires a member named \"value\".")))?;
    Ok(if op == "add" { PatchOp::Add { key, value } } else { PatchOp::Replace { key, value } })
}

/// Splits a JSON pointer the way Zaqar does, with its checks and messages.
fn decode_pointer(pointer: &str) -> Result<Vec<String>, ApiError> {
    let fail = |why: &str| Err(ApiError::invalid_request(format!("Pointer `{pointer}` {why}")));
    if !pointer.starts_with('/') {
        return fail("does not start with \"/\".");
    }
    let inner = &pointer[1..];
    if inner.split('/').skip(1).any(|seg| seg.trim().is_empty()) && inner.contains('/') {
        return fail("contains adjacent \"/\".");
    }
    if pointer.len() > 1 && pointer.ends_with('/') {
        return fail("end with \"/\".");
    }
    let bad_tilde = pointer.ends_with('~')
        || pointer.match_indices('~').any(|(i, _)| !matches!(pointer.as_bytes().get(i + 1), Some(b'0' | b'1')));
    if bad_tilde {
        return fail("contains \"~\" not part of a recognized escape sequence.");
    }
    Ok(inner.split('/').map(|p| p.replace("~1", "/").replace("~0", "~").trim().to_owned()).collect())
}

pub async fn stats(ctx: &Ctx<'_>, name: &str, resp: &mut Response) -> Result<(), ApiError> {
    let stats = match ctx.shard().call(ctx.queue(name), Command::Stats, 0).await? {
        Reply::Stats(s) => s,
        _ => return Err(unexpected()),
    };
    let out = &mut resp.body;
    out.extend_from_slice(b"{\"messages\":{\"claimed\":");
    write_u64(out, stats.claimed);
    out.extend_from_slice(b",\"free\":");
    write_u64(out, stats.free);
    out.extend_from_slice(b",\"total\":");
    write_u64(out, stats.total);
    for (label, summary) in [("oldest", &stats.oldest), ("newest", &stats.newest)] {
        if let Some(m) = summary {
            out.extend_from_slice(format!(",\"{label}\":{{\"href\":").as_bytes());
            write_str(out, &format!("/v2/queues/{name}/messages/{}", m.id));
            out.extend_from_slice(b",\"age\":");
            write_u64(out, m.age_s);
            out.extend_from_slice(b",\"created\":");
            write_str(out, &crate::time::iso8601(m.created_ms / 1000));
            out.push(b'}');
        }
    }
    out.extend_from_slice(b"}}");
    resp.json(200);
    Ok(())
}

/// Divergence 6: purge removes claimed messages too (it empties the queue).
pub async fn purge(ctx: &Ctx<'_>, name: &str, resp: &mut Response) -> Result<(), ApiError> {
    if parse_purge(ctx.body, &ctx.config().api)? {
        ctx.shard().call(ctx.queue(name), Command::Purge, 0).await?;
    }
    resp.empty(204);
    Ok(())
}

/// The optional body of a purge: whether it asks for messages to go (subscriptions are out of
/// scope, so purging only them does nothing).
pub fn parse_purge(body: &[u8], limits: &ApiLimits) -> Result<bool, ApiError> {
    const TYPES: [&str; 2] = ["messages", "subscriptions"];
    if body.is_empty() {
        return Ok(true);
    }
    let Value::Object(doc) = parse_value(body, limits.max_json_depth)? else {
        return Err(ApiError::invalid_body("Document type not supported."));
    };
    let Some(types) = doc.get("resource_types") else {
        return Err(ApiError::invalid_request("Post body must contain key \"resource_types\"."));
    };
    let listed: Option<Vec<&str>> = types.as_array().and_then(|a| a.iter().map(Value::as_str).collect());
    match listed {
        Some(list) if list.iter().all(|t| TYPES.contains(t)) => Ok(list.contains(&"messages")),
        _ => Err(ApiError::invalid_request(format!("Resource types must be a sub set of {}.", TYPES.join(", ")))),
    }
}

pub(super) fn unexpected() -> ApiError {
    ApiError::Internal("A shard answered with an unexpected reply.".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_decode_like_zaqar() {
        assert_eq!(decode_pointer("/metadata/a~1b~0c").unwrap(), vec!["metadata", "a/b~c"]);
        assert!(decode_pointer("metadata/key").is_err());
        assert!(decode_pointer("/metadata//key").is_err());
        assert!(decode_pointer("/metadata/key/").is_err());
        assert!(decode_pointer("/metadata/k~2").is_err());
    }

    #[test]
    fn patch_ops_are_checked() {
        let op = |v: &str| patch_op(serde_json::from_str(v).unwrap());
        assert_eq!(
            op(r#"{"op": "add", "path": "/metadata/k", "value": 1}"#).unwrap(),
            PatchOp::Add { key: "k".into(), value: Value::from(1) }
        );
        assert_eq!(op(r#"{"op": "remove", "path": "/metadata/k"}"#).unwrap(), PatchOp::Remove { key: "k".into() });
        assert!(op(r#"{"op": "move", "path": "/metadata/k"}"#).is_err());
        assert!(op(r#"{"op": "add", "path": "/metadata/k"}"#).is_err());
        assert!(op(r#"{"op": "add", "path": "/other/k", "value": 1}"#).is_err());
        assert!(op(r#"{"op": "add", "path": "/metadata/k/x", "value": 1}"#).is_err());
        assert!(op(r#"{"path": "/metadata/k"}"#).is_err());
    }
}
