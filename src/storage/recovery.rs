//! Start-up: find the log of a shard on disk, check it, and hand it to replay.
//!
//! [`scan_dir`] runs before the shard's executor serves anything (on a plain thread, blocking):
//!
//! 1. `*.tmp` files are unfinished segment files or compaction outputs: removed.
//! 2. Every `*.seg` header is checked (magic, version, checksum, shard, name).
//! 3. The newest compaction output replaces every file up to its `seq`; those are removed.
//! 4. The log segments after it must form a chain (each one's link names the one before it).
//!    A segment never linked is a spare and is removed, with everything after it unless a later
//!    segment proves that the log went on (then that is damage).
//! 5. Every record's length, checksum and structure is checked. A segment followed by another
//!    must end exactly where the next one's link says. Where the checks stop early:
//!    - in the newest segment, past its `synced` word: a torn tail (a write in flight when the
//!      machine stopped); it is cut (zeroed) and the log goes on from there;
//!    - in an older segment whose successors are not sealed: also a torn tail, across a segment
//!      switch the flusher had not finished; the log ends there and the later segments go;
//!    - anywhere else the bytes had reached the disk, so this is damage: start-up stops with the
//!      file and offset ([`RecoveryError::Damaged`]). `--repair` copies every record that passes
//!      its checksum into one new file and keeps the damaged files aside as `*.damaged`.
//! 6. Everything kept is flushed, so what replay builds on is on disk.
//!
//! Nothing that reached the disk in `sync` mode before an acknowledgement is cut by these rules:
//! acknowledged records lie below the newest `synced` word, or in segments whose successor is
//! sealed.

use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::codec;
use super::segment::{self, Header, Link, Segment, SegmentKind, SEGMENT_HEADER_BYTES};
use super::{BodyRef, Record};

/// Why a shard's log cannot be used as it is.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(
        "{file} is damaged at offset {offset}: {reason}. The records before that offset are intact; \
         nothing was changed on disk. Start with --repair to keep every record that passes its checksum \
         (damaged files are kept aside as *.damaged); see docs/storage.md"
    )]
    Damaged { file: PathBuf, offset: u64, reason: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn damaged(file: &Path, offset: usize, reason: impl Into<String>) -> RecoveryError {
    RecoveryError::Damaged { file: file.to_owned(), offset: offset as u64, reason: reason.into() }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RecoveryError + '_ {
    move |source| RecoveryError::Io { path: path.to_owned(), source }
}

#[derive(Debug, Clone, Copy)]
pub struct ScanOptions {
    pub shard: u32,
    pub segment_bytes: u64,
    pub repair: bool,
}

/// A torn tail that recovery cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailCut {
    pub file: PathBuf,
    pub offset: u64,
    pub reason: String,
}

#[derive(Debug, Default, Clone)]
pub struct ScanReport {
    pub segments: usize,
    pub records: u64,
    pub record_bytes: u64,
    pub cut: Option<TailCut>,
    /// Files removed: unfinished, superseded, spares, or past a torn segment switch.
    pub removed: Vec<PathBuf>,
    /// Files moved aside by `--repair`.
    pub damaged: Vec<PathBuf>,
    pub elapsed: Duration,
}

/// A shard's log as recovery left it: segments in log order with the end of their records (the
/// last one a log segment to append to), a spare, and the next file number.
pub struct Recovered {
    pub shard: u32,
    pub dir: PathBuf,
    pub segs: Vec<(Segment, usize)>,
    pub spare: Option<Segment>,
    pub next_file_no: u32,
    pub report: ScanReport,
}

struct Listed {
    seq: u64,
    file_no: u32,
    path: PathBuf,
}

fn parse_name(name: &str) -> Option<(u64, u32)> {
    let stem = name.strip_suffix(".seg")?;
    let (seq, no) = stem.split_once('-')?;
    if seq.len() != 16 || no.len() != 8 {
        return None;
    }
    Some((u64::from_str_radix(seq, 16).ok()?, u32::from_str_radix(no, 16).ok()?))
}

/// Lists segment files, removing unfinished `.tmp` ones.
fn list(dir: &Path, report: &mut ScanReport) -> Result<Vec<Listed>, RecoveryError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        if name.ends_with(".seg.tmp") {
            fs::remove_file(&path).map_err(io_err(&path))?;
            report.removed.push(path);
        } else if let Some((seq, file_no)) = parse_name(&name) {
            out.push(Listed { seq, file_no, path });
        }
    }
    out.sort_by_key(|l| (l.seq, l.file_no));
    Ok(out)
}

/// How far the records of `seg` check out between `start` and `limit`: the offset reached, and
/// why it stopped there if before `limit`.
fn check_records(seg: &Segment, start: usize, limit: usize, report: &mut ScanReport) -> (usize, Option<String>) {
    let Some(buf) = seg.bytes(start, limit.saturating_sub(start)) else {
        return (start, Some("past the end of the file".into()));
    };
    let scan = scan_records(buf);
    report.records += scan.records;
    report.record_bytes += scan.end as u64;
    (start + scan.end, scan.stop)
}

/// What [`scan_records`] found in a run of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Where the valid records end (relative to the buffer).
    pub end: usize,
    pub records: u64,
    /// Why the scan stopped before the end of the buffer, if it did.
    pub stop: Option<String>,
}

/// Checks records from the start of `buf` (a segment's record area) as recovery does: length,
/// checksum, padding and structure of each, stopping at the first that fails or at a zero length.
/// Never panics, whatever the bytes (fuzzed: fuzz/fuzz_targets/record_scan.rs).
pub fn scan_records(buf: &[u8]) -> Scan {
    let mut seqs = Vec::new();
    let (mut off, mut records) = (0, 0);
    while let Some(rest) = buf.get(off..).filter(|rest| !rest.is_empty()) {
        match codec::decode(rest, &mut seqs, true) {
            Ok(Some(d)) => {
                records += 1;
                off += d.padded_len;
            }
            Ok(None) => return Scan { end: off, records, stop: Some("the log ends here (zero length)".into()) },
            Err(e) => return Scan { end: off, records, stop: Some(e.to_string()) },
        }
    }
    Scan { end: off, records, stop: None }
}

/// Zeroes whatever lies after `from` in `seg` (a torn tail), returning whether anything did.
fn cut_tail(seg: &Segment, from: usize) -> bool {
    let cap = seg.capacity();
    let Some(rest) = seg.bytes(from, cap.saturating_sub(from)) else { return false };
    let Some(last) = rest.iter().rposition(|&b| b != 0) else { return false };
    seg.zero(from, from + last + 1);
    true
}

/// Finds, checks and prepares a shard's log. Blocking: run it before the shard serves.
pub fn scan_dir(dir: &Path, opts: &ScanOptions) -> Result<Recovered, RecoveryError> {
    let started = Instant::now();
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    if let Some(parent) = dir.parent() {
        segment::sync_dir(parent).map_err(io_err(parent))?;
    }
    let mut report = ScanReport::default();
    let listed = list(dir, &mut report)?;
    let mut rec = match check(dir, listed, opts, &mut report) {
        Err(RecoveryError::Damaged { file, offset, reason }) if opts.repair => {
            tracing::warn!(file = %file.display(), offset, %reason, "damaged log; repairing");
            let listed = list(dir, &mut report)?;
            salvage(dir, listed, opts, &mut report)?;
            report.records = 0;
            report.record_bytes = 0;
            let listed = list(dir, &mut report)?;
            check(dir, listed, opts, &mut report)?
        }
        other => other?,
    };
    rec.report = report;
    rec.report.elapsed = started.elapsed();
    Ok(rec)
}

fn check(
    dir: &Path,
    listed: Vec<Listed>,
    opts: &ScanOptions,
    report: &mut ScanReport,
) -> Result<Recovered, RecoveryError> {
    let mut next_file_no = 1u32;
    let mut all = Vec::with_capacity(listed.len());
    for l in listed {
        next_file_no = next_file_no.max(l.file_no.saturating_add(1));
        let seg = Segment::open(&l.path).map_err(|reason| damaged(&l.path, 0, reason))?;
        if seg.header.seq != l.seq || seg.header.file_no != l.file_no {
            return Err(damaged(&l.path, 24, "the header names another file"));
        }
        if seg.header.shard != opts.shard {
            return Err(damaged(&l.path, 16, format!("it belongs to shard {}", seg.header.shard)));
        }
        all.push(seg);
    }

    // The newest compaction output replaces every file up to its seq.
    let (winner, base_seq) = all
        .iter()
        .enumerate()
        .filter(|(_, s)| s.header.kind == SegmentKind::Compacted)
        .max_by_key(|(_, s)| (s.header.seq, s.header.file_no))
        .map(|(i, s)| (i, s.header.seq))
        .unzip();
    let mut base: Option<(Segment, usize)> = None;
    let mut chain = Vec::new();
    let mut remove = Vec::new();
    for (i, seg) in all.into_iter().enumerate() {
        if Some(i) == winner {
            let link = seg.link().ok_or_else(|| damaged(&seg.path(), 64, "compaction output without its link"))?;
            let end = usize::try_from(link.end).unwrap_or(usize::MAX);
            if end < SEGMENT_HEADER_BYTES || end > seg.capacity() {
                return Err(damaged(&seg.path(), 64, "compaction output with an impossible end"));
            }
            let (reached, why) = check_records(&seg, SEGMENT_HEADER_BYTES, end, report);
            if reached != end {
                return Err(damaged(&seg.path(), reached, why.unwrap_or_default()));
            }
            base = Some((seg, end));
        } else if base_seq.is_some_and(|b| seg.header.seq <= b) {
            remove.push(seg);
        } else if seg.header.kind == SegmentKind::Compacted {
            return Err(damaged(&seg.path(), 12, "a compaction output newer than the newest one"));
        } else {
            chain.push(seg);
        }
    }

    // The linked prefix of the log segments.
    let links: Vec<Option<Link>> = chain.iter().map(Segment::link).collect();
    let linked = links.iter().position(Option::is_none).unwrap_or(chain.len());
    if let Some((unlinked, after)) = chain.get(linked..).and_then(<[Segment]>::split_first) {
        if let Some(later) = after.iter().find(|s| s.link().is_some() && s.sealed()) {
            return Err(damaged(
                &unlinked.path(),
                64,
                format!("never linked into the log, yet {} is", later.path().display()),
            ));
        }
    }
    let mut prev_seq = base.as_ref().map_or(0, |(s, _)| s.header.seq);
    for (seg, link) in chain.iter().zip(&links).take(linked) {
        let Some(link) = link else { break };
        if link.prev_seq != prev_seq {
            return Err(damaged(
                &seg.path(),
                64,
                format!(
                    "it follows segment seq {:x}, but the segment before it is seq {prev_seq:x}: a segment is missing",
                    link.prev_seq
                ),
            ));
        }
        prev_seq = seg.header.seq;
    }

    // Check records; find where the log really ends.
    let mut kept: Vec<(Segment, usize)> = Vec::new();
    let mut rest = chain.into_iter();
    let mut index = 0;
    while index < linked {
        let Some(seg) = rest.next() else { break };
        let expected_end = links.get(index + 1).copied().flatten().filter(|_| index + 1 < linked).map(|l| l.prev_end);
        match expected_end {
            Some(end) => {
                let end = usize::try_from(end).unwrap_or(usize::MAX).min(seg.capacity());
                let (reached, why) = check_records(&seg, SEGMENT_HEADER_BYTES, end, report);
                if reached == end && why.is_none() {
                    kept.push((seg, end));
                    index += 1;
                    continue;
                }
                let why = why.unwrap_or_else(|| "shorter than the next segment says".into());
                // Stopped early: a torn switch if no later segment is sealed, else damage.
                let later_linked = linked.saturating_sub(index + 1);
                if rest.as_slice().iter().take(later_linked).any(Segment::sealed) {
                    return Err(damaged(&seg.path(), reached, why));
                }
                newest(&seg, reached, &why, report)?;
                kept.push((seg, reached));
                index = linked;
            }
            None => {
                let (reached, why) = check_records(&seg, SEGMENT_HEADER_BYTES, seg.capacity(), report);
                newest(&seg, reached, why.as_deref().unwrap_or(""), report)?;
                kept.push((seg, reached));
                index += 1;
            }
        }
    }
    // Whatever was not kept (spares, segments past a torn switch) goes.
    remove.extend(rest);

    let mut segs: Vec<(Segment, usize)> = base.into_iter().chain(kept).collect();
    for (seg, _) in &segs {
        seg.sync_data().map_err(io_err(&seg.path()))?;
    }
    // The log must end in a log segment to append to.
    if segs.last().is_none_or(|(s, _)| s.header.kind != SegmentKind::Log) {
        let (prev_seq, prev_end) = segs.last().map_or((0, 0), |(s, e)| (s.header.seq, *e as u64));
        let seg = new_segment(dir, opts, &mut next_file_no)?;
        seg.write_link(Link { prev_seq, prev_end, end: 0 });
        // Everything before it is on disk (flushed above).
        seg.write_seal();
        seg.sync_data().map_err(io_err(&seg.path()))?;
        segs.push((seg, SEGMENT_HEADER_BYTES));
    }
    if let Some((seg, end)) = segs.last() {
        seg.write_synced(*end as u64);
        seg.sync_data().map_err(io_err(&seg.path()))?;
    }
    for seg in remove {
        let path = seg.path();
        drop(seg);
        fs::remove_file(&path).map_err(io_err(&path))?;
        report.removed.push(path);
    }
    segment::sync_dir(dir).map_err(io_err(dir))?;
    let spare = new_segment(dir, opts, &mut next_file_no)?;
    report.segments = segs.len();
    Ok(Recovered {
        shard: opts.shard,
        dir: dir.to_owned(),
        segs,
        spare: Some(spare),
        next_file_no,
        report: ScanReport::default(),
    })
}

/// The rule for the newest segment: records that stop before its `synced` word are damage; after
/// it, a torn tail, which is cut.
fn newest(seg: &Segment, reached: usize, why: &str, report: &mut ScanReport) -> Result<(), RecoveryError> {
    if (reached as u64) < seg.synced() {
        return Err(damaged(&seg.path(), reached, format!("{why}, below the part known to be on disk")));
    }
    if cut_tail(seg, reached) {
        seg.sync_data().map_err(io_err(&seg.path()))?;
        tracing::warn!(file = %seg.path().display(), offset = reached, reason = why, "cut a torn tail off the log");
        report.cut = Some(TailCut { file: seg.path(), offset: reached as u64, reason: why.to_owned() });
    }
    Ok(())
}

fn new_segment(dir: &Path, opts: &ScanOptions, next_file_no: &mut u32) -> Result<Segment, RecoveryError> {
    let file_no = *next_file_no;
    *next_file_no = next_file_no.saturating_add(1);
    let header = Header {
        kind: SegmentKind::Log,
        shard: opts.shard,
        file_no,
        seq: u64::from(file_no),
        capacity: opts.segment_bytes,
        created_ms: crate::time::now_ms(),
    };
    Segment::create(dir, header, true).map_err(io_err(dir))
}

/// `--repair`: every record that passes its checksum, in log order, into one new compaction
/// output that replaces all the files; files where anything was skipped are kept as `*.damaged`.
fn salvage(dir: &Path, listed: Vec<Listed>, opts: &ScanOptions, report: &mut ScanReport) -> Result<(), RecoveryError> {
    let file_no = listed.iter().map(|l| l.file_no.saturating_add(1)).max().unwrap_or(1);
    let max_seq = listed.iter().map(|l| l.seq).max().unwrap_or(0);
    // Honour the newest compaction output whose header is sound.
    let mut opened: Vec<(Listed, Option<Segment>)> = listed
        .into_iter()
        .map(|l| {
            let seg = Segment::open(&l.path).ok();
            (l, seg)
        })
        .collect();
    let base_seq = opened
        .iter()
        .filter_map(|(_, s)| s.as_ref())
        .filter(|s| s.header.kind == SegmentKind::Compacted && s.link().is_some())
        .map(|s| (s.header.seq, s.header.file_no))
        .max();
    let mut records: Vec<u8> = Vec::new();
    let mut damaged_files = Vec::new();
    let mut seqs = Vec::new();
    for (l, seg) in &mut opened {
        let superseded = base_seq.is_some_and(|(seq, no)| l.seq < seq || (l.seq == seq && l.file_no != no));
        if superseded {
            continue;
        }
        let Some(seg) = seg.take() else {
            damaged_files.push(l.path.clone());
            continue;
        };
        let limit = match (seg.header.kind, seg.link()) {
            (SegmentKind::Compacted, Some(link)) => usize::try_from(link.end).unwrap_or(0).min(seg.capacity()),
            _ => seg.capacity(),
        };
        let mut off = SEGMENT_HEADER_BYTES;
        let mut skipped = false;
        while off < limit {
            let Some(buf) = seg.bytes(off, limit - off) else { break };
            match codec::decode(buf, &mut seqs, true) {
                Ok(Some(d)) => {
                    records.extend_from_slice(d.bytes);
                    off += d.padded_len;
                }
                Ok(None) => off += codec::RECORD_ALIGN,
                Err(_) => {
                    skipped = true;
                    off += codec::RECORD_ALIGN;
                }
            }
        }
        if skipped {
            damaged_files.push(l.path.clone());
        }
    }
    let capacity = SEGMENT_HEADER_BYTES + (records.len() + 4096).div_ceil(4096) * 4096;
    let header = Header {
        kind: SegmentKind::Compacted,
        shard: opts.shard,
        file_no,
        seq: max_seq,
        capacity: capacity.max(2 * SEGMENT_HEADER_BYTES) as u64,
        created_ms: crate::time::now_ms(),
    };
    let out = Segment::create(dir, header, false).map_err(io_err(dir))?;
    // SAFETY: the new file is ours alone; nothing reads it yet.
    if let Some(dst) = unsafe { out.bytes_mut(SEGMENT_HEADER_BYTES, records.len()) } {
        dst.copy_from_slice(&records);
    }
    out.write_link(Link { prev_seq: 0, prev_end: 0, end: (SEGMENT_HEADER_BYTES + records.len()) as u64 });
    out.sync_data().map_err(io_err(&out.path()))?;
    for path in &damaged_files {
        let aside = path.with_extension("seg.damaged");
        fs::rename(path, &aside).map_err(io_err(path))?;
        report.damaged.push(aside);
    }
    segment::publish(&out.tmp_path(), &out.path()).map_err(io_err(&out.path()))?;
    tracing::warn!(
        kept_bytes = records.len(),
        damaged = ?report.damaged,
        "repair kept every readable record in {}",
        out.path().display()
    );
    Ok(())
}

/// The log a fresh engine replays, oldest record first.
pub struct ReplayLog {
    pub segs: Vec<(Rc<Segment>, usize)>,
}

/// What replay went through.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReplayStats {
    pub records: u64,
    pub bytes: u64,
    pub messages: u64,
}

impl ReplayLog {
    /// Calls `f` with every record in log order, with the body of message appends. Recovery has
    /// checked every record already; a failure here means the file changed under us.
    pub fn for_each(&self, mut f: impl FnMut(&Record<'_>, Option<BodyRef>)) -> Result<ReplayStats, RecoveryError> {
        let mut stats = ReplayStats::default();
        let mut seqs = Vec::new();
        for (seg, end) in &self.segs {
            let mut off = SEGMENT_HEADER_BYTES;
            while off < *end {
                let buf =
                    seg.bytes(off, end - off).ok_or_else(|| damaged(&seg.path(), off, "past the end of the file"))?;
                match codec::decode(buf, &mut seqs, false) {
                    Ok(Some(d)) => {
                        let body = d.body.map(|r| BodyRef {
                            location: (u64::from(seg.header.file_no) << 32) | (off + r.start) as u64,
                            len: r.len() as u32,
                        });
                        stats.messages += u64::from(body.is_some());
                        f(&d.record, body);
                        stats.records += 1;
                        stats.bytes += d.padded_len as u64;
                        off += d.padded_len;
                    }
                    Ok(None) => break,
                    Err(e) => return Err(damaged(&seg.path(), off, e.to_string())),
                }
            }
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::storage::QueueRef;
    use proptest::prelude::*;

    fn encode(record: &Record<'_>, body: &[u8]) -> Vec<u8> {
        let len = codec::check_encodable(record, body.len()).unwrap();
        let mut out = vec![0; codec::padded(len)];
        codec::encode_into(&mut out, record, body);
        out
    }

    proptest! {
        /// The scan accepts exactly the valid records in front, whatever follows them, and never
        /// panics (the proptest twin of the fuzz target).
        #[test]
        fn the_scan_stops_exactly_where_valid_records_end(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let q = QueueRef { project: "p", name: "q" };
            let mut buf = Vec::new();
            for (i, body) in bodies.iter().enumerate() {
                let r = Record::MessageAppend { queue: q, seq: i as u64 + 1, created_ms: 1, ttl_s: 60, delay_ms: 0, client_hash: 0 };
                buf.extend(encode(&r, body));
            }
            let valid = buf.len();
            buf.extend(&tail);
            let scan = scan_records(&buf);
            prop_assert!(scan.end >= valid);
            prop_assert!(scan.records >= bodies.len() as u64);
            // Whatever else it accepted must decode too.
            let mut seqs = Vec::new();
            let mut off = 0;
            while off < scan.end {
                let d = codec::decode(&buf[off..], &mut seqs, true).unwrap().unwrap();
                off += d.padded_len;
            }
            prop_assert_eq!(off, scan.end);
        }

        #[test]
        fn scanning_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let scan = scan_records(&bytes);
            prop_assert!(scan.end <= bytes.len());
        }
    }
}
