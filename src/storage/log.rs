//! [`SegmentStore`]: the durable store. One per shard, in `data/shard-NNN/`.
//!
//! Appends encode a record straight into the active segment's mapping (one copy of a body, from
//! the request into the page cache) and return at once; durability is the business of the
//! shard's flusher (io.rs), which the shard awaits before answering in `sync` mode. When a record
//! does not fit, the log moves to the spare segment made ahead of need; a new spare is asked for at
//! once. Bodies are read back as slices of the mapping: `location = file_no << 32 | offset`.
//!
//! The store counts, per segment, the bytes of message records still referenced by the engine
//! (added on append, removed on release); compaction (compact.rs) uses these estimates to decide
//! when retiring the oldest segments pays.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use ahash::AHashMap;

use super::codec;
use super::compact::Compaction;
use super::io::LogShared;
use super::recovery::{Recovered, ReplayLog};
use super::segment::{Header, Link, Segment, SegmentKind, SEGMENT_HEADER_BYTES};
use super::{BodyRef, LiveIndex, Record, Store, StoreError, StoreStats};
use crate::config::StorageConfig;

/// What a message record is assumed to cost beyond its body when estimating live bytes (the
/// estimate only steers compaction, which measures exactly before it acts).
pub(super) const MESSAGE_OVERHEAD_ESTIMATE: u64 = 96;

pub(super) fn live_estimate(body_len: u32) -> u64 {
    u64::from(body_len) + MESSAGE_OVERHEAD_ESTIMATE
}

/// A segment in the log, in log order.
pub(super) struct SegInfo {
    pub seg: Rc<Segment>,
    /// Where its records end (for the active one: as of the last rotation; see `active_off`).
    pub end: usize,
    /// Log position at its end, once sealed (`u64::MAX` while active; 0 for recovered ones, which
    /// recovery made durable).
    pub end_lsn: u64,
}

pub struct SegmentStore {
    pub(super) shared: Rc<LogShared>,
    pub(super) shard: u32,
    pub(super) segment_bytes: u64,
    /// The log, oldest first; the last one is the active segment.
    pub(super) segs: VecDeque<SegInfo>,
    /// Every mapped segment by file number (a compaction output in progress included).
    pub(super) files: AHashMap<u32, Rc<Segment>>,
    /// Estimated live message bytes per file number.
    pub(super) live: AHashMap<u32, u64>,
    pub(super) active_off: usize,
    /// Bytes appended since start: the log position that durability waits on.
    pub(super) lsn: u64,
    spare: Option<Rc<Segment>>,
    pub(super) next_file_no: u32,
    pub(super) compaction: Compaction,
    pub(super) compactions: u64,
}

impl SegmentStore {
    /// Builds the store over what recovery found; returns it with the log to replay and the
    /// mailbox the shard's I/O tasks share with it.
    pub fn open(rec: Recovered, config: &StorageConfig) -> (SegmentStore, ReplayLog, Rc<LogShared>) {
        let shared =
            LogShared::new(config.durability, Duration::from_millis(config.flush_interval_ms), rec.dir.clone());
        let mut segs = VecDeque::new();
        let mut files = AHashMap::new();
        let mut live = AHashMap::new();
        let mut replay = Vec::new();
        for (seg, end) in rec.segs {
            let seg = Rc::new(seg);
            files.insert(seg.header.file_no, seg.clone());
            live.insert(seg.header.file_no, 0);
            replay.push((seg.clone(), end));
            segs.push_back(SegInfo { seg, end, end_lsn: 0 });
        }
        let active_off = segs.back().map_or(SEGMENT_HEADER_BYTES, |s| s.end);
        if let Some(active) = segs.back_mut() {
            active.end_lsn = u64::MAX;
            shared.set_active(active.seg.clone(), active_off);
        }
        let mut store = SegmentStore {
            shared: shared.clone(),
            shard: rec.shard,
            segment_bytes: config.segment_size_bytes,
            segs,
            files,
            live,
            active_off,
            lsn: 0,
            spare: rec.spare.map(Rc::new),
            next_file_no: rec.next_file_no,
            compaction: Compaction::default(),
            compactions: 0,
        };
        if store.spare.is_none() {
            store.request_spare();
        }
        (store, ReplayLog { segs: replay }, shared)
    }

    pub fn shared(&self) -> &Rc<LogShared> {
        &self.shared
    }

    /// Segment files of the log, oldest first (for tests and tools).
    pub fn segment_files(&self) -> Vec<std::path::PathBuf> {
        self.segs.iter().map(|s| s.seg.path()).collect()
    }

    pub(super) fn active(&self) -> Option<&Rc<Segment>> {
        self.segs.back().map(|s| &s.seg)
    }

    pub(super) fn take_file_no(&mut self) -> u32 {
        let n = self.next_file_no;
        self.next_file_no = self.next_file_no.saturating_add(1);
        n
    }

    fn request_spare(&mut self) {
        let file_no = self.take_file_no();
        self.shared.request_spare(Header {
            kind: SegmentKind::Log,
            shard: self.shard,
            file_no,
            seq: u64::from(file_no),
            capacity: self.segment_bytes,
            created_ms: crate::time::now_ms(),
        });
    }

    /// Moves the log to the spare segment: links it after the active one and hands the full one to
    /// the flusher for its final flush.
    fn rotate(&mut self) -> Result<(), StoreError> {
        let next = match self.spare.take() {
            Some(s) => s,
            None => Rc::new(self.shared.take_spare().ok_or_else(|| self.shared.spare_error())?),
        };
        let Some(old) = self.segs.back_mut() else {
            return Err(StoreError::Io("the log has no active segment".into()));
        };
        next.write_link(Link { prev_seq: old.seg.header.seq, prev_end: self.active_off as u64, end: 0 });
        old.end = self.active_off;
        old.end_lsn = self.lsn;
        let old_seg = old.seg.clone();
        self.shared.rotated(old_seg, self.active_off, next.clone());
        self.files.insert(next.header.file_no, next.clone());
        self.live.insert(next.header.file_no, 0);
        self.segs.push_back(SegInfo { seg: next, end: SEGMENT_HEADER_BYTES, end_lsn: u64::MAX });
        self.active_off = SEGMENT_HEADER_BYTES;
        self.request_spare();
        Ok(())
    }

    fn make_room(&mut self, need: usize) -> Result<(), StoreError> {
        let capacity = self.active().map_or(0, |s| s.capacity());
        if self.active_off + need <= capacity {
            return Ok(());
        }
        if need > (self.segment_bytes as usize).saturating_sub(SEGMENT_HEADER_BYTES) {
            return Err(StoreError::TooLarge);
        }
        self.rotate()
    }

    /// The active segment is past three quarters and no spare is at hand: requests should wait
    /// for one rather than fail (see `LogShared::wait_for_room`).
    fn room_low(&self, capacity: usize) -> bool {
        capacity.saturating_sub(self.active_off) < capacity / 4 && self.spare.is_none() && !self.shared.spare_is_ready()
    }

    /// Encodes a record at the end of the log; returns its file, offset and body range.
    fn write(&mut self, record: &Record<'_>, body: &[u8]) -> Result<(u32, usize, std::ops::Range<usize>), StoreError> {
        if let Some(err) = self.shared.failed() {
            return Err(err);
        }
        let len = codec::check_encodable(record, body.len()).map_err(|_| StoreError::TooLarge)?;
        let padded = codec::padded(len);
        self.make_room(padded)?;
        let off = self.active_off;
        let seg = self.segs.back().map(|s| s.seg.clone()).ok_or_else(|| StoreError::Io("no active segment".into()))?;
        // SAFETY: bytes past `active_off` have never been handed out as slices.
        let dst = unsafe { seg.bytes_mut(off, padded) }.ok_or_else(|| StoreError::Io("record past the file".into()))?;
        let body_range = codec::encode_into(dst, record, body);
        self.active_off += padded;
        self.lsn += padded as u64;
        let room_low = self.room_low(seg.capacity());
        self.shared.appended(self.lsn, self.active_off, room_low);
        Ok((seg.header.file_no, off, body_range))
    }

    /// Test hook for the fault-injecting store: writes only the first `keep` bytes of the
    /// record's encoding (as a crash in the middle of a write would leave it) and fails.
    pub fn append_torn(&mut self, record: &Record<'_>, body: &[u8], keep: usize) -> StoreError {
        let Ok(len) = codec::check_encodable(record, body.len()) else {
            return StoreError::TooLarge;
        };
        let padded = codec::padded(len);
        if let Err(e) = self.make_room(padded) {
            return e;
        }
        let mut scratch = vec![0u8; padded];
        codec::encode_into(&mut scratch, record, body);
        let keep = keep.min(padded);
        if let Some(seg) = self.active() {
            // SAFETY: as in `write`; the torn bytes are never exposed as a record.
            if let Some(dst) = unsafe { seg.bytes_mut(self.active_off, keep) } {
                dst.copy_from_slice(&scratch[..keep]);
            }
        }
        StoreError::Io("injected short write".into())
    }

    fn locate(at: BodyRef) -> (u32, usize) {
        ((at.location >> 32) as u32, (at.location & 0xffff_ffff) as usize)
    }
}

impl Store for SegmentStore {
    fn append_message(&mut self, record: &Record<'_>, body: &[u8]) -> Result<BodyRef, StoreError> {
        let len = u32::try_from(body.len()).map_err(|_| StoreError::TooLarge)?;
        let (file_no, off, range) = self.write(record, body)?;
        *self.live.entry(file_no).or_default() += live_estimate(len);
        Ok(BodyRef { location: (u64::from(file_no) << 32) | (off + range.start) as u64, len })
    }

    fn append(&mut self, record: &Record<'_>) -> Result<(), StoreError> {
        self.write(record, &[]).map(|_| ())
    }

    fn body(&self, at: BodyRef) -> &[u8] {
        let (file_no, off) = Self::locate(at);
        self.files.get(&file_no).and_then(|s| s.bytes(off, at.len as usize)).unwrap_or(&[])
    }

    fn release(&mut self, at: BodyRef) {
        let (file_no, _) = Self::locate(at);
        if let Some(live) = self.live.get_mut(&file_no) {
            *live = live.saturating_sub(live_estimate(at.len));
        }
    }

    fn reserve(&mut self, records: usize, body_bytes: usize) -> Result<(), StoreError> {
        if let Some(err) = self.shared.failed() {
            return Err(err);
        }
        let need = body_bytes.saturating_add(records.saturating_mul(codec::MAX_MESSAGE_OVERHEAD_BYTES));
        self.make_room(need)
    }

    fn recovered(&mut self, at: BodyRef) {
        let (file_no, _) = Self::locate(at);
        *self.live.entry(file_no).or_default() += live_estimate(at.len);
    }

    fn compact_step(&mut self, index: &mut dyn LiveIndex, budget_bytes: usize) -> bool {
        super::compact::step(self, index, budget_bytes)
    }

    fn stats(&self) -> StoreStats {
        let (written, durable) = self.shared.positions();
        let (flushes, flush_latency) = self.shared.flush_figures();
        StoreStats {
            segments: self.segs.len() as u64,
            disk_bytes: self.segs.iter().map(|s| s.seg.capacity() as u64).sum(),
            live_bytes: self.segs.iter().filter_map(|s| self.live.get(&s.seg.header.file_no)).sum(),
            written_bytes: written,
            durable_bytes: durable,
            compactions: self.compactions,
            flushes,
            flush_latency,
        }
    }
}
