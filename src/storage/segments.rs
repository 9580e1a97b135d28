//! [`Segments`]: the files of one shard's log and the live-byte estimate of each, kept in step.
//!
//! The log (log.rs) appends and rotates; compaction (compact.rs) adds an output and installs it
//! in place of the oldest segments. Both change this one structure through its methods and
//! nothing else, so the rule that keeps segments, mapped files and live counts consistent is
//! written, and checked, here only:
//!
//! 1. every segment of the log (`segs`, oldest first, the active one last) is mapped in `files`
//!    under its file number, and has a live estimate in `live`;
//! 2. `files` holds exactly the log's segments plus at most one compaction output in progress;
//! 3. `live` has an entry for every mapped file and for nothing else;
//! 4. along the log, file numbers are distinct and `seq`s strictly increase.
//!
//! [`Segments::check`] asserts all four after every structural change (rotation, a new output,
//! an installed output; a handful of segments each, rare), so a bug surfaces where it happens,
//! not as a body that cannot be found later. The live estimates are asserted as they change (one
//! compare per append and release): a body dying in a file that is not mapped, or more dying in
//! a file than ever lived there, is a double release or an index entry that outlived its file.

use std::collections::VecDeque;
use std::rc::Rc;

use ahash::AHashMap;

use super::segment::{Segment, SEGMENT_HEADER_BYTES};

/// What a message record is assumed to cost beyond its body when estimating live bytes (the
/// estimate only steers compaction, which measures exactly before it acts).
pub(super) const MESSAGE_OVERHEAD_ESTIMATE: u64 = 96;

pub(super) fn live_estimate(body_len: u32) -> u64 {
    u64::from(body_len) + MESSAGE_OVERHEAD_ESTIMATE
}

/// A segment in the log, in log order.
pub(super) struct SegInfo {
    pub seg: Rc<Segment>,
    /// Where its records end (for the active one: as of the last rotation; the log keeps the
    /// live end itself).
    pub end: usize,
    /// Log position at its end, once sealed (`u64::MAX` while active; 0 for recovered ones, which
    /// recovery made durable).
    pub end_lsn: u64,
}

#[derive(Default)]
pub(super) struct Segments {
    segs: VecDeque<SegInfo>,
    files: AHashMap<u32, Rc<Segment>>,
    live: AHashMap<u32, u64>,
    /// The compaction output being written, mapped but not yet part of the log.
    output: Option<u32>,
    next_file_no: u32,
}

impl Segments {
    /// The log as recovery found it, oldest first; `next_file_no` is the first unused number.
    pub fn recovered(found: impl IntoIterator<Item = (Rc<Segment>, usize)>, next_file_no: u32) -> Self {
        let mut this = Segments { next_file_no, ..Segments::default() };
        for (seg, end) in found {
            this.map(&seg);
            this.segs.push_back(SegInfo { seg, end, end_lsn: 0 });
        }
        if let Some(active) = this.segs.back_mut() {
            active.end_lsn = u64::MAX;
        }
        this.check();
        this
    }

    fn map(&mut self, seg: &Rc<Segment>) {
        self.files.insert(seg.header.file_no, seg.clone());
        self.live.insert(seg.header.file_no, 0);
    }

    pub fn take_file_no(&mut self) -> u32 {
        let n = self.next_file_no;
        self.next_file_no = self.next_file_no.saturating_add(1);
        n
    }

    pub fn iter(&self) -> impl Iterator<Item = &SegInfo> {
        self.segs.iter()
    }

    pub fn len(&self) -> usize {
        self.segs.len()
    }

    pub fn active(&self) -> Option<&SegInfo> {
        self.segs.back()
    }

    /// A mapped file (a segment of the log or the output in progress).
    pub fn file(&self, file_no: u32) -> Option<&Rc<Segment>> {
        self.files.get(&file_no)
    }

    /// The active segment is complete at `end` (log position `end_lsn`): `next` follows it.
    pub fn rotate(&mut self, end: usize, end_lsn: u64, next: Rc<Segment>) {
        let Some(old) = self.segs.back_mut() else {
            panic!("rotation of a log without an active segment");
        };
        old.end = end;
        old.end_lsn = end_lsn;
        self.map(&next);
        self.segs.push_back(SegInfo { seg: next, end: SEGMENT_HEADER_BYTES, end_lsn: u64::MAX });
        self.check();
    }

    /// The live estimate of a mapped file (rule 3 gives every one an entry).
    pub fn live_of(&self, file_no: u32) -> u64 {
        match self.live.get(&file_no) {
            Some(&live) => live,
            None => panic!("file {file_no} has no live estimate: it is not mapped"),
        }
    }

    /// Bytes of live message records in all the log's segments.
    pub fn live_total(&self) -> u64 {
        self.segs.iter().map(|s| self.live_of(s.seg.header.file_no)).sum()
    }

    /// A message record of `body_len` in `file_no` became live. Bodies are only ever written to
    /// mapped files (the active segment, the output in progress), so an unknown file is a bug.
    pub fn add_live(&mut self, file_no: u32, body_len: u32) {
        let Some(l) = self.live.get_mut(&file_no) else {
            panic!("a body of {body_len} bytes became live in file {file_no}, which is not mapped");
        };
        *l += live_estimate(body_len);
    }

    /// A message record of `body_len` in `file_no` died (deleted, or copied elsewhere). Every
    /// removal matches an earlier `add_live` of the same body (the estimate is exact arithmetic
    /// on the body length), so a file that is not mapped or an estimate going below zero means a
    /// body was released twice, or an index entry outlived its segment: both are asserted.
    pub fn remove_live(&mut self, file_no: u32, body_len: u32) {
        let Some(l) = self.live.get_mut(&file_no) else {
            panic!("a body of {body_len} bytes died in file {file_no}, which is not mapped");
        };
        let Some(left) = l.checked_sub(live_estimate(body_len)) else {
            panic!("a body of {body_len} bytes died in file {file_no}, whose live estimate is only {l}");
        };
        *l = left;
    }

    /// Maps a compaction output while it is being written.
    pub fn add_output(&mut self, out: Rc<Segment>) {
        assert!(self.output.is_none(), "a second compaction output while one is in progress");
        self.output = Some(out.header.file_no);
        self.map(&out);
        self.check();
    }

    /// Puts the finished output (records ending at `out_end`) in place of the oldest segments of
    /// `run`; returns the segments it retired, for their files to be removed.
    pub fn install_output(&mut self, run: &[(Rc<Segment>, usize)], out_end: usize) -> Vec<Rc<Segment>> {
        let out = self.output.take().and_then(|no| self.files.get(&no).cloned());
        let Some(out) = out else {
            panic!("a compaction output was installed that was never added");
        };
        let mut retired = Vec::with_capacity(run.len());
        for (seg, _) in run {
            // Only compaction removes segments, and only the prefix it planned: anything else at
            // the front means the log changed under it.
            let Some(s) = self.segs.pop_front().filter(|s| Rc::ptr_eq(&s.seg, seg)) else {
                panic!("the compacted run is not the oldest segments of the log (at {})", seg.path().display());
            };
            self.files.remove(&s.seg.header.file_no);
            self.live.remove(&s.seg.header.file_no);
            retired.push(s.seg);
        }
        self.segs.push_front(SegInfo { seg: out, end: out_end, end_lsn: 0 });
        self.check();
        retired
    }

    /// Asserts the invariant of the module docs.
    pub fn check(&self) {
        let mut last_seq = None;
        for s in &self.segs {
            let no = s.seg.header.file_no;
            assert!(
                self.files.get(&no).is_some_and(|f| Rc::ptr_eq(f, &s.seg)),
                "log segment {no} is not the file mapped under its number"
            );
            assert!(self.live.contains_key(&no), "log segment {no} has no live estimate");
            assert!(last_seq < Some(s.seg.header.seq), "log segment {no} is out of order");
            last_seq = Some(s.seg.header.seq);
        }
        assert_eq!(
            self.files.len(),
            self.segs.len() + usize::from(self.output.is_some()),
            "mapped files are not the log's segments plus the output in progress"
        );
        if let Some(out) = self.output {
            assert!(self.files.contains_key(&out), "the compaction output {out} is not mapped");
        }
        assert!(
            self.live.len() == self.files.len() && self.files.keys().all(|no| self.live.contains_key(no)),
            "live estimates and mapped files disagree"
        );
    }
}
