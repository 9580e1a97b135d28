//! `GET /` (versions), `GET /v2` (home document), `/v2/ping` and `/v2/health` (reference §1, §5).

use std::time::Instant;

use super::json::{write_str, write_u64};
use super::Ctx;
use crate::error::ApiError;
use crate::http::Response;
use crate::queue::{ClaimParams, ListMessages, NewMessage};
use crate::shard::{Command, Reply};
use crate::storage::QueueRef;

/// Health checks exercise a queue in this project. No client can name it: HTTP header values
/// cannot carry a NUL byte.
const HEALTH_PROJECT: &str = "\0health";

pub fn versions(resp: &mut Response) {
    resp.body.extend_from_slice(
        br#"{"versions":[{"id":"2","status":"CURRENT","updated":"2014-9-24T04:06:47Z","media-types":[{"base":"application/json","type":"application/vnd.openstack.messaging-v2+json"}],"links":[{"href":"/v2/","rel":"self"}]}]}"#,
    );
    resp.json(300);
}

/// The json-home document: one entry per resource, with its URI template and methods.
pub fn home(resp: &mut Response) {
    const RESOURCES: [(&str, &str, &str, &str); 16] = [
        ("queues", "/v2/queues{?marker,limit,detailed}", "marker,limit,detailed", "GET"),
        ("queue", "/v2/queues/{queue_name}", "queue_name", "PUT,DELETE,GET,PATCH"),
        ("queue_stats", "/v2/queues/{queue_name}/stats", "queue_name", "GET"),
        ("queue_share", "/v2/queues/{queue_name}/share", "queue_name", "POST"),
        ("queue_purge", "/v2/queues/{queue_name}/purge", "queue_name", "POST"),
        (
            "messages",
            "/v2/queues/{queue_name}/messages{?marker,limit,echo,include_claimed,wait}",
            "queue_name,marker,limit,echo,include_claimed,wait",
            "GET",
        ),
        ("post_messages", "/v2/queues/{queue_name}/messages", "queue_name", "POST"),
        ("messages_delete", "/v2/queues/{queue_name}/messages{?ids,pop}", "queue_name,ids,pop", "DELETE"),
        (
            "message_delete",
            "/v2/queues/{queue_name}/messages/{message_id}{?claim}",
            "queue_name,message_id,claim",
            "DELETE",
        ),
        ("message_get", "/v2/queues/{queue_name}/messages/{message_id}", "queue_name,message_id", "GET"),
        ("claim", "/v2/queues/{queue_name}/claims/{claim_id}", "queue_name,claim_id", "GET"),
        ("post_claim", "/v2/queues/{queue_name}/claims{?limit,wait}", "queue_name,limit,wait", "POST"),
        ("patch_claim", "/v2/queues/{queue_name}/claims/{claim_id}", "queue_name,claim_id", "PATCH"),
        ("delete_claim", "/v2/queues/{queue_name}/claims/{claim_id}", "queue_name,claim_id", "DELETE"),
        ("ping", "/v2/ping", "", "GET,HEAD"),
        ("health", "/v2/health", "", "GET"),
    ];
    let out = &mut resp.body;
    out.extend_from_slice(b"{\"resources\":{");
    for (i, (rel, template, vars, allow)) in RESOURCES.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, &format!("rel/{rel}"));
        out.extend_from_slice(b":{\"href-template\":");
        write_str(out, template);
        out.extend_from_slice(b",\"href-vars\":{");
        for (j, var) in vars.split(',').filter(|v| !v.is_empty()).enumerate() {
            if j > 0 {
                out.push(b',');
            }
            write_str(out, var);
            out.push(b':');
            write_str(out, &format!("param/{var}"));
        }
        out.extend_from_slice(b"},\"hints\":{\"allow\":[");
        for (j, method) in allow.split(',').enumerate() {
            if j > 0 {
                out.push(b',');
            }
            write_str(out, method);
        }
        out.extend_from_slice(b"],\"formats\":{\"application/json\":{}}}}");
    }
    out.extend_from_slice(b"}}");
    resp.json(200);
    resp.content_type = Some("application/json-home");
    resp.header("Cache-Control", "max-age=86400".to_owned());
}

/// 204: the shard that took the request is serving, and its store lives in this process. Kept
/// free of cross-shard work: ping is the HTTP layer's throughput ceiling in benchmarks.
pub fn ping(resp: &mut Response) {
    resp.empty(204);
}

pub async fn health(ctx: &Ctx<'_>, resp: &mut Response) -> Result<(), ApiError> {
    if !ctx.config().api.admin_mode {
        return Err(ApiError::not_found("The requested resource does not exist."));
    }
    // On Redis Cluster the counts are those of the last complete sweep pass (docs/storage.md).
    let reachable = match ctx.shard().remote() {
        Some(remote) => remote.cluster.on_every_master(&[b"PING"]).await.is_ok(),
        None => true,
    };
    let replies = ctx.shard().scatter(HEALTH_PROJECT, Command::Volume).await?;
    let (mut queues, mut messages) = (0, 0);
    for reply in replies {
        if let Reply::Volume(v) = reply {
            queues += v.queues;
            messages += v.messages;
        }
    }
    let out = &mut resp.body;
    out.extend_from_slice(if reachable { b"{\"storage_reachable\":true" } else { b"{\"storage_reachable\":false" });
    out.extend_from_slice(b",\"message_volume\":{\"total\":");
    write_u64(out, messages);
    out.extend_from_slice(b",\"queues\":");
    write_u64(out, queues);
    out.push(b'}');
    out.extend_from_slice(b",\"operation_status\":{");
    let probe_name = format!("probe-{}", ctx.shard().id);
    let secret = crate::random::u64()?;
    let probe = QueueRef { project: HEALTH_PROJECT, name: &probe_name };
    let mut bodies = b"{\"probe\":true}".to_vec();
    let steps: [(&str, Command); 6] = [
        ("create_queue", Command::CreateQueue { metadata: None }),
        (
            "post_messages",
            Command::PostMessages {
                client_hash: 0,
                messages: vec![NewMessage { ttl_s: Some(60), delay_s: None, body: 0..bodies.len() as u32 }],
                bodies: std::mem::take(&mut bodies),
                request_bytes: 0,
                quota: crate::limits::StoreQuota::UNLIMITED,
            },
        ),
        (
            "list_messages",
            Command::ListMessages {
                opts: ListMessages {
                    after_seq: 0,
                    limit: 1,
                    client_hash: 1,
                    echo: true,
                    include_claimed: true,
                    include_delayed: true,
                },
            },
        ),
        ("claim_messages", Command::Claim { params: ClaimParams { ttl_s: 60, grace_s: 60, limit: 1, secret } }),
        ("purge_messages", Command::Purge),
        ("delete_queue", Command::DeleteQueue),
    ];
    for (i, (name, command)) in steps.into_iter().enumerate() {
        let started = Instant::now();
        let result = ctx.shard().call(probe, command, 0).await;
        if i > 0 {
            out.push(b',');
        }
        write_str(out, name);
        out.extend_from_slice(
            format!(":{{\"succeeded\":{},\"seconds\":{:.6},\"ref\":", result.is_ok(), started.elapsed().as_secs_f64())
                .as_bytes(),
        );
        match result {
            Ok(_) => out.extend_from_slice(b"null"),
            Err(e) => write_str(out, &e.to_string()),
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"}}");
    resp.json(200);
    Ok(())
}
