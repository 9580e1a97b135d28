//! Unmeasured phases around the run: prefilling queues before `consume`, auditing what is left
//! afterwards (to tell "lost" from "still queued"), and deleting the run's queues.
//!
//! They run on one executor with a few connections; every request has the run's timeout and
//! every loop a bound, so these phases stop by themselves too.

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::conn::{Conn, TransportError};
use crate::http::{encode_request, is_safe_path};
use crate::plan::{Plan, QueueRef, ZAQAR_MAX_POST_BYTES};
use crate::poll::Poller;
use crate::zaqar::{encode_post_body, msg_key, MessagesPage};

/// Prefill messages are tagged with producer ids from here up (one per queue), far above any
/// connection index, so that they never collide with the run's own producers.
pub const PREFILL_PRODUCER_BASE: u32 = 0x8000_0000;
const PHASE_CONNECTIONS: usize = 8;
/// Audit stops after this long; the lost-message check is then skipped as incomplete.
const AUDIT_TIME_CAP: Duration = Duration::from_secs(120);

#[derive(Debug, Error)]
pub enum SetupError {
    #[error("prefill of queue `{queue}` failed: {reason}")]
    Prefill { queue: String, reason: String },
}

/// Splits the queues over `PHASE_CONNECTIONS` tasks and runs `f` for each queue, in order,
/// on the task's own connection.
async fn per_queue<T, F, Fut>(plan: &Arc<Plan>, poller: &Rc<Poller>, f: F) -> Vec<T>
where
    T: 'static,
    F: Fn(Arc<Plan>, Conn, QueueRef) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = (Conn, T)> + 'static,
{
    let local = plan.clone();
    let n = PHASE_CONNECTIONS.min(plan.queues.len()).max(1);
    let mut tasks = Vec::new();
    for t in 0..n {
        let f = f.clone();
        let local = local.clone();
        let poller = poller.clone();
        tasks.push(glommio::spawn_local(async move {
            let mut conn = Conn::new(&poller, local.target.addr, None);
            let mut out = Vec::new();
            for q in local.queues.iter().skip(t).step_by(n) {
                let (c, r) = f(local.clone(), conn, q.clone()).await;
                conn = c;
                out.push(r);
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await);
    }
    all
}

/// What the prefill posted (acknowledged keys).
#[derive(Debug, Default)]
pub struct Prefilled {
    pub posted: HashSet<u64>,
    pub elapsed: Duration,
}

/// Posts `plan.prefill` messages to every queue, in batches that fit Zaqar's POST size limit.
pub async fn prefill(plan: Arc<Plan>, poller: Rc<Poller>) -> Result<Prefilled, SetupError> {
    let started = Instant::now();
    let results = per_queue(&plan, &poller, |plan: Arc<Plan>, mut conn: Conn, q: QueueRef| async move {
        let r = prefill_queue(&plan, &mut conn, &q).await;
        (conn, r)
    })
    .await;
    let mut posted = HashSet::new();
    for r in results {
        posted.extend(r?);
    }
    Ok(Prefilled { posted, elapsed: started.elapsed() })
}

async fn prefill_queue(plan: &Plan, conn: &mut Conn, q: &QueueRef) -> Result<Vec<u64>, SetupError> {
    let a = &plan.args;
    let per_post = (ZAQAR_MAX_POST_BYTES * 3 / 4 / (a.message_bytes + 64)).clamp(1, 20);
    let producer = PREFILL_PRODUCER_BASE + q.index;
    let mut keys = Vec::with_capacity(plan.prefill);
    let mut body = Vec::new();
    let mut req = Vec::new();
    let mut seq = 0u32;
    let fail = |reason: String| SetupError::Prefill { queue: q.name.clone(), reason };
    while (seq as usize) < plan.prefill {
        let n = per_post.min(plan.prefill - seq as usize);
        body.clear();
        req.clear();
        encode_post_body(&mut body, &plan.run_id, producer, seq, n, q.index, a.message_bytes, a.message_ttl, 0);
        encode_request(&mut req, "POST", &q.messages_path, &plan.common, &q.project_header, Some(&body));
        let resp = conn.request(&req, false, plan.timeout).await.map_err(|e| fail(e.to_string()))?;
        if resp.status != 201 {
            return Err(fail(format!(
                "HTTP {}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)])
            )));
        }
        keys.extend((seq..seq + n as u32).map(|s| msg_key(producer, s)));
        seq += n as u32;
    }
    Ok(keys)
}

/// What the audit found left in the queues.
#[derive(Debug, Default)]
pub struct Audit {
    pub remaining: HashSet<u64>,
    pub pages: u64,
    pub complete: bool,
    pub note: Option<String>,
}

/// Lists every queue of the run to the end (claimed messages included) and collects the keys
/// of this run's messages still there.
pub async fn audit(plan: Arc<Plan>, poller: Rc<Poller>, expected: usize) -> Audit {
    // Enough pages for everything that could be there, twice over, plus the empty last pages.
    let max_pages = (expected / crate::plan::PAGE_LIMIT + 2) as u64 * 2 + plan.queues.len() as u64;
    let deadline = Instant::now() + AUDIT_TIME_CAP;
    let per_task_pages = max_pages.div_ceil(PHASE_CONNECTIONS as u64).max(4);
    let results = per_queue(&plan, &poller, move |plan: Arc<Plan>, mut conn: Conn, q: QueueRef| async move {
        let r = audit_queue(&plan, &mut conn, &q, per_task_pages, deadline).await;
        (conn, r)
    })
    .await;
    let mut a = Audit { complete: true, ..Audit::default() };
    for r in results {
        match r {
            Ok((keys, pages)) => {
                a.remaining.extend(keys);
                a.pages += pages;
            }
            Err(note) => {
                a.complete = false;
                a.note.get_or_insert(note);
            }
        }
    }
    a
}

async fn audit_queue(
    plan: &Plan,
    conn: &mut Conn,
    q: &QueueRef,
    max_pages: u64,
    deadline: Instant,
) -> Result<(Vec<u64>, u64), String> {
    let mut href = q.audit_path.clone();
    let mut keys = Vec::new();
    let mut req = Vec::new();
    let mut retried_first_page = false;
    for page_no in 1..=max_pages {
        if Instant::now() >= deadline {
            return Err(format!("audit time cap of {AUDIT_TIME_CAP:?} reached"));
        }
        req.clear();
        encode_request(&mut req, "GET", &href, &plan.common, &q.project_header, None);
        let resp = conn
            .request(&req, false, plan.timeout)
            .await
            .map_err(|e: TransportError| format!("audit of `{}`: {e}", q.name))?;
        if resp.status == 204 {
            return Ok((keys, page_no));
        }
        if resp.status == 503 && page_no == 1 && !retried_first_page {
            // Zaqar's Redis driver fails `include_claimed=true` without a marker (it looks up
            // the rank of a None marker); any marker that is not a message id starts at the head.
            retried_first_page = true;
            href = format!("{}&marker=0", q.audit_path);
            continue;
        }
        if resp.status != 200 {
            return Err(format!("audit of `{}`: HTTP {}", q.name, resp.status));
        }
        let page: MessagesPage =
            serde_json::from_slice(resp.body).map_err(|e| format!("audit of `{}`: bad page: {e}", q.name))?;
        if page.messages.is_empty() {
            return Ok((keys, page_no));
        }
        keys.extend(page.messages.iter().filter_map(|m| m.body.ours(&plan.run_id)).map(|m| m.key));
        match page.next_href() {
            // A next link back to this very page means the end on servers that re-serve the
            // last message instead of an empty page (Zaqar's Redis driver does, for the
            // message at rank 0).
            Some(h) if h == href => return Ok((keys, page_no)),
            Some(h) if is_safe_path(h) => href = h.to_string(),
            _ => return Err(format!("audit of `{}`: page without a usable next link", q.name)),
        }
    }
    Err(format!("audit of `{}` exceeded {max_pages} pages", q.name))
}

/// Deletes the run's queues; returns how many deletes failed.
pub async fn cleanup(plan: Arc<Plan>, poller: Rc<Poller>) -> u64 {
    let results = per_queue(&plan, &poller, |plan: Arc<Plan>, mut conn: Conn, q: QueueRef| async move {
        let mut req = Vec::new();
        encode_request(&mut req, "DELETE", &q.queue_path, &plan.common, &q.project_header, None);
        let ok = matches!(conn.request(&req, false, plan.timeout).await, Ok(r) if r.status == 204);
        (conn, ok)
    })
    .await;
    results.iter().filter(|ok| !**ok).count() as u64
}
