//! [`SegmentStore`]: the durable store. One per shard, in `data/shard-NNN/`.
//!
//! Appends encode a record into a staging buffer and return at once; [`Store::write_out`] (the
//! shard calls it before any answer is shown) hands everything staged to the kernel with one
//! `pwrite`, and durability is the business of the shard's flusher (io.rs), which the
//! connection awaits before answering in `sync` mode. The segment's mapping is only read: bodies
//! are slices of it once written out, and of the staging buffer before
//! (`location = file_no << 32 | offset` either way). Writing through the mapping instead made
//! every flush write-protect the pages it wrote, and the next append to them fault and wait for
//! the flush (docs/perf.md, "How appends reach the disk"). When a record does not fit, the log
//! moves to the spare segment made ahead of need; a new spare is asked for at once.
//!
//! The store counts, per segment, the bytes of message records still referenced by the engine
//! (added on append, removed on release); compaction (compact.rs) uses these estimates to decide
//! when retiring the oldest segments pays.

use std::rc::Rc;
use std::time::Duration;

use super::codec;
use super::compact::{self, Compactor, LogParts};
use super::io::LogShared;
use super::recovery::{Recovered, ReplayLog};
use super::segment::{Header, Link, Segment, SegmentKind, SEGMENT_HEADER_BYTES};
use super::segments::Segments;
use super::{BodyRef, LiveIndex, Record, Store, StoreError, StoreStats};
use crate::config::StorageConfig;

/// A staging buffer that grew past this (a big post) is freed once written out.
const STAGED_KEEP_BYTES: usize = 1 << 20;

pub struct SegmentStore {
    shared: Rc<LogShared>,
    shard: u32,
    segment_bytes: u64,
    /// The log's files, oldest first, with their live estimates (segments.rs keeps them in step).
    segments: Segments,
    /// End of the records in the active segment (staged ones included).
    active_off: usize,
    /// Records appended to the active segment and not yet written to its file; they start at
    /// offset `active_off - staged.len()`.
    staged: Vec<u8>,
    /// Bytes appended since start (staged ones included); the log position durability waits
    /// on is this less what is staged.
    lsn: u64,
    spare: Option<Rc<Segment>>,
    compactor: Compactor,
}

impl SegmentStore {
    /// Builds the store over what recovery found; returns it with the log to replay and the
    /// mailbox the shard's I/O tasks share with it.
    pub fn open(rec: Recovered, config: &StorageConfig) -> (SegmentStore, ReplayLog, Rc<LogShared>) {
        let shared =
            LogShared::new(config.durability, Duration::from_millis(config.flush_interval_ms), rec.dir.clone());
        let replay: Vec<(Rc<Segment>, usize)> = rec.segs.into_iter().map(|(seg, end)| (Rc::new(seg), end)).collect();
        let segments = Segments::recovered(replay.iter().cloned(), rec.next_file_no);
        let active_off = segments.active().map_or(SEGMENT_HEADER_BYTES, |s| s.end);
        if let Some(active) = segments.active() {
            shared.set_active(active.seg.clone(), active_off);
        }
        let mut store = SegmentStore {
            shared: shared.clone(),
            shard: rec.shard,
            segment_bytes: config.segment_size_bytes,
            segments,
            active_off,
            staged: Vec::new(),
            lsn: 0,
            spare: rec.spare.map(Rc::new),
            compactor: Compactor::default(),
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
        self.segments.iter().map(|s| s.seg.path()).collect()
    }

    fn active(&self) -> Option<&Rc<Segment>> {
        self.segments.active().map(|s| &s.seg)
    }

    fn request_spare(&mut self) {
        let file_no = self.segments.take_file_no();
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
        let Some(old) = self.active().cloned() else {
            return Err(StoreError::Io("the log has no active segment".into()));
        };
        self.write_staged()?;
        next.write_link(Link { prev_seq: old.header.seq, prev_end: self.active_off as u64, end: 0 });
        self.shared.rotated(old, self.active_off, next.clone());
        self.segments.rotate(self.active_off, self.lsn, next);
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

    /// Encodes a record at the end of the log (staged); returns its file, offset and body range.
    fn write(&mut self, record: &Record<'_>, body: &[u8]) -> Result<(u32, usize, std::ops::Range<usize>), StoreError> {
        if let Some(err) = self.shared.failed() {
            return Err(err);
        }
        let len = codec::check_encodable(record, body.len()).map_err(|_| StoreError::TooLarge)?;
        let padded = codec::padded(len);
        self.make_room(padded)?;
        let off = self.active_off;
        let seg = self.active().cloned().ok_or_else(|| StoreError::Io("no active segment".into()))?;
        if off + padded > seg.capacity() {
            return Err(StoreError::Io("record past the file".into()));
        }
        let at = self.staged.len();
        self.staged.resize(at + padded, 0);
        let dst = self.staged.get_mut(at..).ok_or_else(|| StoreError::Io("staging buffer".into()))?;
        let body_range = codec::encode_into(dst, record, body);
        self.active_off += padded;
        self.lsn += padded as u64;
        Ok((seg.header.file_no, off, body_range))
    }

    /// Writes what is staged to the active segment's file (one `pwrite`) and tells the flusher
    /// how far the log now reaches in the kernel.
    fn write_staged(&mut self) -> Result<(), StoreError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let Some(seg) = self.active().cloned() else {
            return Err(StoreError::Io("the log has no active segment".into()));
        };
        let from = self.active_off - self.staged.len();
        seg.write_at(&self.staged, from).map_err(|e| self.failed_write(&e))?;
        self.staged.clear();
        if self.staged.capacity() > STAGED_KEEP_BYTES {
            self.staged = Vec::new();
        }
        let room_low = self.room_low(seg.capacity());
        self.shared.appended(self.lsn, self.active_off, room_low);
        Ok(())
    }

    /// A write to a segment file failed: what the log holds in memory is no longer what the file
    /// holds, so the log refuses changes until a restart (recovery reads what is on disk).
    fn failed_write(&self, e: &std::io::Error) -> StoreError {
        self.shared.flush_done_failed(format!("writing the log failed ({e})"));
        self.shared.failed().unwrap_or_else(|| StoreError::Io(e.to_string()))
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
        scratch.truncate(keep);
        if let Err(e) = self.write_staged() {
            return e;
        }
        if let Some(seg) = self.active() {
            // The torn bytes reach the file but not the log's end: the next record overwrites them.
            let _ = seg.write_at(&scratch, self.active_off);
        }
        StoreError::Io("injected short write".into())
    }

    fn locate(at: BodyRef) -> (u32, usize) {
        ((at.location >> 32) as u32, (at.location & 0xffff_ffff) as usize)
    }
}

impl Drop for SegmentStore {
    /// A store dropped in the same process (tools, tests, a shard that stops) leaves its staged
    /// records in the file, as the mapping used to; a killed process loses them, and none of
    /// them was acknowledged (answers wait for `write_out`).
    fn drop(&mut self) {
        let _ = self.write_staged();
    }
}

impl Store for SegmentStore {
    fn append_message(&mut self, record: &Record<'_>, body: &[u8]) -> Result<BodyRef, StoreError> {
        let len = u32::try_from(body.len()).map_err(|_| StoreError::TooLarge)?;
        let (file_no, off, range) = self.write(record, body)?;
        self.segments.add_live(file_no, len);
        Ok(BodyRef { location: (u64::from(file_no) << 32) | (off + range.start) as u64, len })
    }

    fn append(&mut self, record: &Record<'_>) -> Result<(), StoreError> {
        self.write(record, &[]).map(|_| ())
    }

    /// Panics when `at` is not a body this log can hold: its file is not mapped (never made, or
    /// retired by compaction), or it lies in a segment's header or past the records written.
    fn body(&self, at: BodyRef) -> &[u8] {
        let (file_no, off) = Self::locate(at);
        let active = self.active().is_some_and(|s| s.header.file_no == file_no);
        let (written, staged_from) =
            if active { (self.active_off, self.active_off - self.staged.len()) } else { (usize::MAX, usize::MAX) };
        let end = off.saturating_add(at.len as usize);
        let bytes = if off >= staged_from {
            // Not written out yet: the bytes are in the staging buffer.
            self.staged.get(off - staged_from..end.saturating_sub(staged_from))
        } else {
            self.segments
                .file(file_no)
                .filter(|_| off >= SEGMENT_HEADER_BYTES && end <= written.min(staged_from))
                .and_then(|s| s.bytes(off, at.len as usize))
        };
        match bytes {
            Some(bytes) => bytes,
            None => panic!(
                "body reference {at:?} (file {file_no}, offset {off}) names no bytes of shard {}'s log: \
                 the engine's index is corrupt",
                self.shard
            ),
        }
    }

    fn release(&mut self, at: BodyRef) {
        let (file_no, _) = Self::locate(at);
        self.segments.remove_live(file_no, at.len);
    }

    fn write_out(&mut self) -> Result<(), StoreError> {
        self.write_staged()
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
        self.segments.add_live(file_no, at.len);
    }

    fn compact_step(&mut self, index: &mut dyn LiveIndex, budget_bytes: usize) -> bool {
        let log = LogParts {
            segments: &mut self.segments,
            shared: &self.shared,
            lsn: self.lsn,
            segment_bytes: self.segment_bytes,
            shard: self.shard,
        };
        compact::step(&mut self.compactor, log, index, budget_bytes)
    }

    fn stats(&self) -> StoreStats {
        let (written, durable) = self.shared.positions();
        let (flushes, flush_latency) = self.shared.flush_figures();
        StoreStats {
            segments: self.segments.len() as u64,
            disk_bytes: self.segments.iter().map(|s| s.seg.capacity() as u64).sum(),
            live_bytes: self.segments.live_total(),
            written_bytes: written,
            durable_bytes: durable,
            compactions: self.compactor.done,
            flushes,
            flush_latency,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::storage::recovery::{scan_dir, ScanOptions};
    use crate::storage::QueueRef;

    const SEGMENT_BYTES: u64 = 64 * 1024;

    /// A fresh store in a temporary directory (kept alive with it) holding one body.
    fn with_one(body: &[u8]) -> (tempfile::TempDir, SegmentStore, BodyRef) {
        let dir = tempfile::tempdir().unwrap();
        let rec = scan_dir(dir.path(), &ScanOptions { shard: 0, segment_bytes: SEGMENT_BYTES, repair: false }).unwrap();
        let config = StorageConfig { segment_size_bytes: SEGMENT_BYTES, ..StorageConfig::default() };
        let mut store = SegmentStore::open(rec, &config).0;
        let queue = QueueRef { project: "p", name: "q" };
        let record = Record::MessageAppend { queue, seq: 1, created_ms: 0, ttl_s: 60, delay_ms: 0, client_hash: 0 };
        let at = store.append_message(&record, body).unwrap();
        (dir, store, at)
    }

    #[test]
    fn bodies_read_back_from_the_mapping() {
        let (_dir, store, at) = with_one(b"[1,2]");
        assert_eq!(store.body(at), b"[1,2]");
    }

    #[test]
    #[should_panic(expected = "the engine's index is corrupt")]
    fn a_body_in_no_file_of_the_log_panics() {
        let (_dir, store, at) = with_one(b"[1]");
        store.body(BodyRef { location: at.location + (1000 << 32), len: at.len });
    }

    #[test]
    #[should_panic(expected = "the engine's index is corrupt")]
    fn a_body_past_the_records_written_panics() {
        let (_dir, store, at) = with_one(b"[1]");
        store.body(BodyRef { location: at.location + 64, len: at.len });
    }

    #[test]
    #[should_panic(expected = "whose live estimate is only 0")]
    fn a_body_released_twice_panics() {
        let (_dir, mut store, at) = with_one(b"[1]");
        store.release(at);
        store.release(at);
    }
}
