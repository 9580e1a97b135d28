//! Compaction: how space comes back.
//!
//! Only the oldest segments are ever retired, and always a run that starts at the very first one
//! (a *prefix* of the log). Their records still needed are copied, byte for byte and in their
//! order, into one new file, the *output*, which takes the place of the run: its `seq` is the
//! run's last, and recovery ignores (and removes) every file it covers. Because the output sits
//! exactly where the run was, replaying it and then the rest of the log gives the state replaying
//! the whole log gave, for everything still alive:
//!
//! - a message append is kept when the engine still holds that message with its body at that very
//!   place (its body reference moves to the output); deletes and purges are dropped, since what
//!   they removed is dropped too, and one in a newer segment that names a dropped message finds
//!   nothing (replay ignores it): nothing deleted comes back;
//! - a queue's first and last upsert of its current incarnation are kept (creation before its
//!   messages, then the latest metadata); a deleted incarnation's records are all dropped;
//! - a claim's first record (its creation, which counts a delivery for each of its messages) and
//!   its last renewal are kept while the claim or any of its messages lives, and its delete with
//!   it; so delivery counts replay as they were;
//! - a `QueueCounters` record per live queue ends the output: sequence numbers whose records were
//!   dropped are never handed out again.
//!
//! Nothing written after the run is touched, and what dies during the copy is simply copied (its
//! delete lies in a newer segment). The work runs in bounded steps from the shard's compaction
//! task: measure (an upper bound of what to keep), make the output file (helper thread), copy,
//! flush and publish (rename, directory fsync), then install and remove the old files.
//!
//! A run is worth retiring when at least half of it is dead and the dead part is at least half a
//! segment; so disk use stays within about twice the live data plus a few segments, and no byte is
//! rewritten more than about once per halving of its segment.

use std::rc::Rc;

use ahash::{AHashMap, AHashSet};

use super::codec;
use super::io::LogShared;
use super::segment::{Header, Link, Segment, SegmentKind, MAX_SEGMENT_SIZE_BYTES, SEGMENT_HEADER_BYTES};
use super::segments::Segments;
use super::{BodyRef, LiveIndex, QueueRef, Record};

/// The largest output compaction makes: twice the largest segment, and no more than 32-bit body
/// offsets can address.
const MAX_OUTPUT_BYTES: usize = 2 * MAX_SEGMENT_SIZE_BYTES as usize;
const _: () = assert!(MAX_OUTPUT_BYTES as u64 <= 1 << 32, "body locations hold 32-bit offsets");
/// Spare room at the end of an output, beyond the measured bound.
const OUTPUT_SLACK_BYTES: usize = 4096;

/// Compaction's state in a log: what runs, and how many finished since start.
#[derive(Default)]
pub(super) struct Compactor {
    state: Compaction,
    pub done: u64,
}

/// What compaction may see and change of the log it works on: its segments (changed only
/// through [`Segments`], which keeps its invariant), its I/O mailbox, and a few figures.
pub(super) struct LogParts<'a> {
    pub segments: &'a mut Segments,
    pub shared: &'a LogShared,
    /// The log's end (bytes appended since start).
    pub lsn: u64,
    pub segment_bytes: u64,
    pub shard: u32,
}

enum Compaction {
    /// Nothing running; the next plan is looked for once the log reaches `recheck_lsn`.
    Idle {
        recheck_lsn: u64,
    },
    Running(Box<Job>),
}

impl Default for Compaction {
    fn default() -> Self {
        Compaction::Idle { recheck_lsn: 0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Measure,
    AwaitOutput,
    Copy,
    Finish,
}

/// A position in the run: segment index and offset.
type Pos = u64;

fn pos(seg: usize, off: usize) -> Pos {
    ((seg as u64) << 32) | off as u64
}

/// What the measuring pass learnt about the current incarnation of a queue in the run.
struct QueueScan {
    epoch: u32,
    live: bool,
    first_len: usize,
    first: Pos,
    last: Pos,
    last_len: usize,
    claims: AHashMap<u64, ClaimScan>,
}

struct ClaimScan {
    keep: bool,
    first_len: usize,
    last: Pos,
    last_len: usize,
    count: u32,
}

/// The copying pass's view of a queue's incarnation at the current record.
struct QueueCopy {
    /// Tells consecutive upserts of one incarnation from a new one.
    epoch: u32,
    live: bool,
    seen_claims: AHashSet<u64>,
    kept_claims: AHashSet<u64>,
}

pub(super) struct Job {
    phase: Phase,
    /// The run, with each segment's end of records.
    run: Vec<(Rc<Segment>, usize)>,
    through_seq: u64,
    used: usize,
    cursor: (usize, usize),
    measured: usize,
    measured_queues: AHashMap<Box<[u8]>, QueueScan>,
    copying: AHashMap<Box<[u8]>, QueueCopy>,
    out: Option<Rc<Segment>>,
    out_off: usize,
}

/// `project 0xff name`: 0xff never occurs in UTF-8, so keys are unambiguous.
fn key_of(q: QueueRef<'_>, scratch: &mut Vec<u8>) {
    scratch.clear();
    scratch.extend_from_slice(q.project.as_bytes());
    scratch.push(0xff);
    scratch.extend_from_slice(q.name.as_bytes());
}

/// The queue a key made by [`key_of`] names.
fn queue_of(key: &[u8]) -> QueueRef<'_> {
    let mut parts = key.splitn(2, |&b| b == 0xff).map(std::str::from_utf8);
    match (parts.next(), parts.next()) {
        (Some(Ok(project)), Some(Ok(name))) => QueueRef { project, name },
        _ => panic!("compaction's queue key {key:?} was not made by key_of"),
    }
}

/// Where the body of a message append lies, relative to its record. The codec gives every
/// append one; a record without it could not be kept right, so its absence is a bug.
fn message_body(body: Option<&std::ops::Range<usize>>) -> &std::ops::Range<usize> {
    match body {
        Some(body) => body,
        None => panic!("the codec decoded a message append without its body"),
    }
}

fn counters_len(key: &[u8]) -> usize {
    codec::padded(codec::RECORD_HEADER_BYTES + 20 + key.len().saturating_sub(1))
}

/// One bounded step; `true` when the caller should call again soon (work is in progress and not
/// waiting for I/O).
pub(super) fn step(c: &mut Compactor, mut parts: LogParts<'_>, index: &mut dyn LiveIndex, budget: usize) -> bool {
    let log = &mut parts;
    if log.shared.failed().is_some() {
        return false;
    }
    match std::mem::take(&mut c.state) {
        Compaction::Idle { recheck_lsn } => {
            if log.lsn < recheck_lsn {
                c.state = Compaction::Idle { recheck_lsn };
                return false;
            }
            match plan(log) {
                Some(job) => {
                    c.state = Compaction::Running(Box::new(job));
                    true
                }
                None => {
                    c.state = Compaction::Idle { recheck_lsn: log.lsn + log.segment_bytes / 8 };
                    false
                }
            }
        }
        Compaction::Running(mut job) => {
            let again = match job.phase {
                Phase::Measure => measure_some(log, &mut c.state, &mut job, index, budget),
                Phase::AwaitOutput => await_output(log, &mut c.state, &mut job),
                Phase::Copy => copy_some(log, &mut job, index, budget),
                Phase::Finish => return finish(log, c, job),
            };
            match again {
                Some(again) => {
                    c.state = Compaction::Running(job);
                    again
                }
                None => false,
            }
        }
    }
}

/// The longest run of old, durable segments worth retiring, if any.
fn plan(log: &LogParts<'_>) -> Option<Job> {
    let (_, durable) = log.shared.positions();
    let threshold = (log.segment_bytes / 2) as usize;
    let (mut live, mut used, mut best) = (0usize, 0usize, None);
    // Never the active segment; only segments whose every byte is on disk.
    for (i, s) in log.segments.iter().enumerate().take(log.segments.len().saturating_sub(1)) {
        if s.end_lsn > durable {
            break;
        }
        live += log.segments.live_of(s.seg.header.file_no) as usize;
        used += s.end.saturating_sub(SEGMENT_HEADER_BYTES);
        if live > MAX_OUTPUT_BYTES / 2 {
            break;
        }
        let dead = used.saturating_sub(live);
        if dead >= live && dead >= threshold {
            best = Some((i, used));
        }
    }
    let (last, used) = best?;
    let run: Vec<(Rc<Segment>, usize)> = log.segments.iter().take(last + 1).map(|s| (s.seg.clone(), s.end)).collect();
    let through_seq = run.last()?.0.header.seq;
    Some(Job {
        phase: Phase::Measure,
        run,
        through_seq,
        used,
        cursor: (0, SEGMENT_HEADER_BYTES),
        measured: 0,
        measured_queues: AHashMap::new(),
        copying: AHashMap::new(),
        out: None,
        out_off: SEGMENT_HEADER_BYTES,
    })
}

/// Walks records of the run from the job's cursor, `budget` bytes at most, calling `visit` with
/// each record, its position, its location (`file_no << 32 | offset`, as in a [`BodyRef`]), its
/// bytes (padding included) and its body range. Returns whether the run is done.
fn walk(
    job_run: &[(Rc<Segment>, usize)],
    cursor: &mut (usize, usize),
    budget: usize,
    mut visit: impl FnMut(&Record<'_>, Pos, u64, &[u8], Option<std::ops::Range<usize>>) -> bool,
) -> Result<bool, String> {
    let mut seqs = Vec::new();
    let mut done = 0;
    while done < budget {
        let Some((seg, end)) = job_run.get(cursor.0) else {
            return Ok(true);
        };
        if cursor.1 >= *end {
            *cursor = (cursor.0 + 1, SEGMENT_HEADER_BYTES);
            continue;
        }
        let buf = seg.bytes(cursor.1, end - cursor.1).ok_or("run segment shorter than its end")?;
        match codec::decode(buf, &mut seqs, false) {
            Ok(Some(d)) => {
                let here = pos(cursor.0, cursor.1);
                let location = (u64::from(seg.header.file_no) << 32) | cursor.1 as u64;
                if !visit(&d.record, here, location, d.bytes, d.body.clone()) {
                    return Err("the output is full".into());
                }
                cursor.1 += d.padded_len;
                done += d.padded_len;
            }
            Ok(None) => *cursor = (cursor.0 + 1, SEGMENT_HEADER_BYTES),
            Err(e) => return Err(format!("{} at {}: {e}", seg.path().display(), cursor.1)),
        }
    }
    Ok(false)
}

fn measure_some(
    log: &mut LogParts<'_>,
    state: &mut Compaction,
    job: &mut Job,
    index: &mut dyn LiveIndex,
    budget: usize,
) -> Option<bool> {
    let mut key = Vec::new();
    let Job { run, cursor, measured, measured_queues, .. } = job;
    let walked = walk(run, cursor, budget, |record, here, at, bytes, body| {
        let len = bytes.len();
        key_of(record.queue(), &mut key);
        let q = record.queue();
        match *record {
            Record::QueueUpsert { epoch, .. } => match measured_queues.get_mut(&key[..]) {
                Some(qs) if qs.epoch == epoch => {
                    qs.last = here;
                    qs.last_len = len;
                }
                _ => {
                    let live = index.epoch(q) == Some(epoch);
                    let scan = QueueScan {
                        epoch,
                        live,
                        first: here,
                        first_len: len,
                        last: here,
                        last_len: len,
                        claims: AHashMap::new(),
                    };
                    measured_queues.insert(key.clone().into_boxed_slice(), scan);
                }
            },
            Record::QueueDelete { .. } => {
                measured_queues.remove(&key[..]);
            }
            Record::MessageAppend { seq, .. } => {
                let location = at + message_body(body.as_ref()).start as u64;
                if index.holds_body(q, seq, location) {
                    *measured += len;
                }
            }
            Record::ClaimUpsert { claim_seq, seqs, .. } => {
                if let Some(qs) = measured_queues.get_mut(&key[..]).filter(|qs| qs.live) {
                    match qs.claims.get_mut(&claim_seq) {
                        Some(cs) => {
                            cs.last = here;
                            cs.last_len = len;
                            cs.count += 1;
                        }
                        None => {
                            let keep = index.claim_live(q, claim_seq) || seqs.iter().any(|&s| index.message_live(q, s));
                            let scan = ClaimScan { keep, first_len: len, last: here, last_len: len, count: 1 };
                            qs.claims.insert(claim_seq, scan);
                        }
                    }
                }
            }
            Record::ClaimDelete { claim_seq, .. } => {
                let kept =
                    measured_queues.get(&key[..]).and_then(|qs| qs.claims.get(&claim_seq)).is_some_and(|cs| cs.keep);
                if kept {
                    *measured += len;
                }
            }
            Record::Revocation { revoked_ms, until_ms, .. } => {
                if index.revocation_live(q, revoked_ms, until_ms) {
                    *measured += len;
                }
            }
            Record::Purge { .. } | Record::MessageDelete { .. } | Record::QueueCounters { .. } => {}
        }
        true
    });
    match walked {
        Err(e) => {
            tracing::error!(shard = log.shard, error = %e, "compaction cannot read its run; giving up on it");
            *state = Compaction::Idle { recheck_lsn: u64::MAX };
            None
        }
        Ok(false) => Some(true),
        Ok(true) => {
            let mut total = job.measured;
            for (key, qs) in job.measured_queues.iter().filter(|(_, qs)| qs.live) {
                total += qs.first_len + if qs.last != qs.first { qs.last_len } else { 0 } + counters_len(key);
                for cs in qs.claims.values().filter(|cs| cs.keep) {
                    total += cs.first_len + if cs.count > 1 { cs.last_len } else { 0 };
                }
            }
            // Worth it only if it frees at least half of the run and half a segment.
            let frees = job.used.saturating_sub(total);
            if total > MAX_OUTPUT_BYTES || frees < job.used / 2 || frees < (log.segment_bytes / 4) as usize {
                *state = Compaction::Idle { recheck_lsn: log.lsn + log.segment_bytes / 2 };
                return None;
            }
            let capacity = SEGMENT_HEADER_BYTES + (total + OUTPUT_SLACK_BYTES).div_ceil(4096) * 4096;
            let file_no = log.segments.take_file_no();
            log.shared.request_output(Header {
                kind: SegmentKind::Compacted,
                shard: log.shard,
                file_no,
                seq: job.through_seq,
                capacity: capacity.max(2 * SEGMENT_HEADER_BYTES) as u64,
                created_ms: crate::time::now_ms(),
            });
            job.phase = Phase::AwaitOutput;
            Some(false)
        }
    }
}

fn await_output(log: &mut LogParts<'_>, state: &mut Compaction, job: &mut Job) -> Option<bool> {
    match log.shared.take_output() {
        None => Some(false),
        Some(Err(err)) => {
            // Nothing was copied yet: giving up is free. A full disk retries later.
            tracing::warn!(shard = log.shard, %err, "cannot make a compaction output; will try again later");
            *state = Compaction::Idle { recheck_lsn: log.lsn + log.segment_bytes / 2 };
            None
        }
        Some(Ok(out)) => {
            let out = Rc::new(out);
            log.segments.add_output(out.clone());
            job.out = Some(out);
            job.cursor = (0, SEGMENT_HEADER_BYTES);
            job.phase = Phase::Copy;
            Some(true)
        }
    }
}

fn copy_some(log: &mut LogParts<'_>, job: &mut Job, index: &mut dyn LiveIndex, budget: usize) -> Option<bool> {
    let out = job.out.clone()?;
    let out_no = out.header.file_no;
    let mut key = Vec::new();
    let Job { run, cursor, measured_queues, copying, out_off, .. } = job;
    let segments = &mut *log.segments;
    let walked = walk(run, cursor, budget, |record, here, at, bytes, body| {
        key_of(record.queue(), &mut key);
        let q = record.queue();
        let keep = match *record {
            Record::QueueUpsert { epoch, .. } => {
                let fresh = copying.get(&key[..]).is_none_or(|c| c.epoch != epoch);
                let measured = measured_queues.get(&key[..]);
                if fresh {
                    // Only the incarnation still current at the end of the run can be alive, and
                    // it is known by the place of its first upsert, not by its epoch: an epoch
                    // may come back after a restart, a place never does.
                    let qc = QueueCopy {
                        epoch,
                        live: measured.is_some_and(|m| m.first == here && m.live),
                        seen_claims: AHashSet::new(),
                        kept_claims: AHashSet::new(),
                    };
                    copying.insert(key.clone().into_boxed_slice(), qc);
                }
                let live = copying.get(&key[..]).is_some_and(|c| c.live);
                let last = measured.is_some_and(|m| m.last == here);
                live && (fresh || last)
            }
            Record::QueueDelete { .. } => {
                copying.remove(&key[..]);
                false
            }
            Record::MessageAppend { seq, .. } => {
                let location = at + message_body(body.as_ref()).start as u64;
                index.holds_body(q, seq, location)
            }
            Record::ClaimUpsert { claim_seq, seqs, .. } => match copying.get_mut(&key[..]) {
                Some(qc) if qc.live => {
                    if qc.seen_claims.insert(claim_seq) {
                        let keep = index.claim_live(q, claim_seq) || seqs.iter().any(|&s| index.message_live(q, s));
                        if keep {
                            qc.kept_claims.insert(claim_seq);
                        }
                        keep
                    } else {
                        let last = measured_queues
                            .get(&key[..])
                            .filter(|m| m.epoch == qc.epoch)
                            .and_then(|m| m.claims.get(&claim_seq))
                            .is_some_and(|cs| cs.last == here);
                        qc.kept_claims.contains(&claim_seq) && last
                    }
                }
                _ => false,
            },
            Record::ClaimDelete { claim_seq, .. } => {
                copying.get(&key[..]).is_some_and(|qc| qc.live && qc.kept_claims.contains(&claim_seq))
            }
            Record::Revocation { revoked_ms, until_ms, .. } => index.revocation_live(q, revoked_ms, until_ms),
            Record::Purge { .. } | Record::MessageDelete { .. } | Record::QueueCounters { .. } => false,
        };
        if !keep {
            return true;
        }
        // SAFETY: the output's bytes past `out_off` were never handed out.
        let Some(dst) = (unsafe { out.bytes_mut(*out_off, bytes.len()) }) else {
            return false;
        };
        dst.copy_from_slice(bytes);
        if let Record::MessageAppend { seq, .. } = record {
            let body = message_body(body.as_ref());
            let len = body.len() as u32;
            let to = BodyRef { location: (u64::from(out_no) << 32) | (*out_off + body.start) as u64, len };
            index.relocate(q, *seq, to);
            segments.remove_live((at >> 32) as u32, len);
            segments.add_live(out_no, len);
        }
        *out_off += bytes.len();
        true
    });
    match walked {
        Err(e) => {
            // Bodies may already point into the output, so the job cannot be dropped: the log
            // is no longer trustworthy in memory. Refuse changes until a restart recovers it.
            tracing::error!(shard = log.shard, error = %e, "compaction failed half way");
            log.shared.flush_done_failed(format!("compaction failed: {e}"));
            None
        }
        Ok(false) => Some(true),
        Ok(true) => {
            // The counters of every live queue the run touched, with today's values (all newer
            // records carry smaller or equal ones).
            let mut scratch = Vec::new();
            for (key, _) in copying.iter().filter(|(_, qc)| qc.live) {
                let q = queue_of(key);
                // A queue deleted since the run was measured needs no counters.
                let Some((last_seq, last_claim_seq)) = index.counters(q) else { continue };
                let record = Record::QueueCounters { queue: q, last_seq, last_claim_seq };
                // Its names came out of records of this log, so they encode; skipping the record
                // instead would let sequence numbers be handed out again after a restart.
                let Ok(len) = codec::check_encodable(&record, 0) else {
                    panic!("the counters of {q:?}, whose names are in the log, cannot be encoded");
                };
                let padded = codec::padded(len);
                scratch.resize(padded, 0);
                codec::encode_into(&mut scratch, &record, &[]);
                // SAFETY: as above.
                match unsafe { out.bytes_mut(*out_off, padded) } {
                    Some(dst) => dst.copy_from_slice(&scratch),
                    None => {
                        log.shared.flush_done_failed("compaction output overflowed".into());
                        return None;
                    }
                }
                *out_off += padded;
            }
            out.write_link(Link { prev_seq: 0, prev_end: 0, end: *out_off as u64 });
            log.shared.request_finish(out);
            job.phase = Phase::Finish;
            Some(false)
        }
    }
}

/// Installs a published output in place of its run.
fn finish(log: &mut LogParts<'_>, c: &mut Compactor, job: Box<Job>) -> bool {
    match log.shared.take_finish() {
        None => {
            c.state = Compaction::Running(job);
            false
        }
        Some(Err(_)) => {
            // The maintenance task already refused further changes.
            c.state = Compaction::Idle { recheck_lsn: u64::MAX };
            false
        }
        Some(Ok(())) => {
            let retired = log.segments.install_output(&job.run, job.out_off);
            log.shared.retire(retired);
            c.done += 1;
            tracing::debug!(shard = log.shard, freed = job.used.saturating_sub(job.out_off), "compaction done");
            c.state = Compaction::Idle { recheck_lsn: log.lsn };
            true
        }
    }
}
