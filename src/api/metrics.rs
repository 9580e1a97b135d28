//! `GET /metrics`: every shard's counters in the Prometheus text format (see [`crate::metrics`]).

use std::rc::Rc;

use crate::error::ApiError;
use crate::http::Response;
use crate::metrics::Snapshot;
use crate::shard::{Command, Reply, Shard};

/// What Prometheus expects for its text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn metrics(shard: &Rc<Shard>, resp: &mut Response) -> Result<(), ApiError> {
    // Scatter names no queue: the command reads shard-wide counters.
    let replies = shard.scatter("", Command::Metrics).await?;
    let snapshots: Vec<Snapshot> = replies
        .into_iter()
        .filter_map(|reply| match reply {
            Reply::Metrics(snapshot) => Some(*snapshot),
            _ => None,
        })
        .collect();
    resp.body.extend_from_slice(crate::metrics::render(&snapshots).as_bytes());
    resp.status = 200;
    resp.content_type = Some(CONTENT_TYPE);
    Ok(())
}
