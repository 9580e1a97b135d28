//! What runs beside a shard for its log: the flusher (group commit), the maker of segment files,
//! and compaction's file operations. [`LogShared`] is the mailbox between the synchronous
//! [`SegmentStore`](super::SegmentStore), which the engine calls, and these tasks.
//!
//! Nothing here blocks the shard's thread: data is flushed with `fdatasync` through io_uring
//! (glommio's `BufferedFile` on a second descriptor of the segment; it flushes pages dirtied
//! through the shared mapping), and file creation, preallocation, pre-faulting, renames, removals,
//! directory fsyncs and unmapping run on the executor's blocking thread (`spawn_blocking`).
//!
//! ## Group commit (`sync`)
//! A request that changed something waits in [`LogShared::settle`] until the durable position
//! passes the log's end as it was when the request finished. One flusher per shard takes the
//! current end, flushes, and wakes every waiter up to it; requests arriving meanwhile are covered
//! by the next flush, so N concurrent requests share about two flushes instead of N.
//!
//! ## Sealing
//! When the log moves to a new segment, the flusher flushes the old one completely and only then
//! writes the new one's seal word (flushed with it). Recovery relies on this order: a segment
//! whose successor is sealed was complete on disk, so damage in it is damage, never a torn write.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::os::unix::io::{FromRawFd, IntoRawFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use super::segment::{self, Header, Segment};
use super::StoreError;
use crate::config::Durability;
use crate::metrics::{Histogram, HistogramSnapshot};
use crate::sync::Notify;

/// How long a failed segment creation (e.g. a full disk) waits before it is tried again.
const CREATE_RETRY: Duration = Duration::from_secs(1);
/// How long a request waits for the next segment before trying (and maybe failing) anyway.
const ROOM_WAIT: Duration = Duration::from_secs(2);

/// A segment that is full and waits for its final flush, with the one after it (whose seal word
/// that flush writes).
struct Sealed {
    seg: Rc<Segment>,
    successor: Rc<Segment>,
}

#[derive(Default)]
struct IoState {
    /// Log positions (bytes appended since start): written, and known to be on disk.
    written: u64,
    durable: u64,
    /// Requests waiting in `settle`.
    waiting: usize,
    sealed: VecDeque<Sealed>,
    active: Option<(Rc<Segment>, usize)>,
    /// `synced` offset last written into the active segment's header.
    active_synced: usize,
    failed: Option<StoreError>,
    room_low: bool,
    spare_wanted: Option<Header>,
    spare_ready: Option<Segment>,
    spare_error: Option<StoreError>,
    output_wanted: Option<Header>,
    output_ready: Option<Result<Segment, StoreError>>,
    finish_wanted: Option<Rc<Segment>>,
    finish_done: Option<Result<(), StoreError>>,
    retired: Vec<Rc<Segment>>,
    stopping: bool,
    flushes: u64,
    /// How long each flush took, for `StoreStats` (and so `/metrics`).
    flush_latency: Histogram,
    /// Test hook: this many coming flushes fail as if the disk had reported an error.
    failing_flushes: u32,
}

/// The mailbox between a shard's [`SegmentStore`](super::SegmentStore) and its I/O tasks.
pub struct LogShared {
    pub mode: Durability,
    pub flush_interval: Duration,
    pub dir: PathBuf,
    state: RefCell<IoState>,
    flush_wake: Notify,
    maint_wake: Notify,
    durable_wake: Notify,
    room_wake: Notify,
}

/// One flush: for each segment, fdatasync it, then write the header word it enables.
pub struct FlushPlan {
    target: u64,
    steps: Vec<FlushStep>,
    inject_failure: bool,
    /// When the plan was made, for the flush-latency histogram.
    started: std::time::Instant,
}

struct FlushStep {
    seg: Rc<Segment>,
    /// Written after the sync: the successor's seal (this segment is complete on disk).
    seal_next: Option<Rc<Segment>>,
    /// Written after the sync: this (active) segment's `synced` offset.
    synced: Option<usize>,
}

impl FlushStep {
    fn after_sync(&self) {
        if let Some(next) = &self.seal_next {
            next.write_seal();
        }
        if let Some(off) = self.synced {
            self.seg.write_synced(off as u64);
        }
    }
}

impl LogShared {
    pub fn new(mode: Durability, flush_interval: Duration, dir: PathBuf) -> Rc<Self> {
        Rc::new(LogShared {
            mode,
            flush_interval,
            dir,
            state: RefCell::default(),
            flush_wake: Notify::new(),
            maint_wake: Notify::new(),
            durable_wake: Notify::new(),
            room_wake: Notify::new(),
        })
    }

    // -------------------------------------------------------------------------------------
    // Called by the store
    // -------------------------------------------------------------------------------------

    pub(super) fn failed(&self) -> Option<StoreError> {
        self.state.borrow().failed.clone()
    }

    pub(super) fn set_active(&self, seg: Rc<Segment>, end: usize) {
        let mut s = self.state.borrow_mut();
        s.active_synced = end;
        s.active = Some((seg, end));
    }

    /// Records were appended: the log now ends at `written`, `end` bytes into the active segment.
    pub(super) fn appended(&self, written: u64, end: usize, room_low: bool) {
        let mut s = self.state.borrow_mut();
        s.written = written;
        if let Some(active) = s.active.as_mut() {
            active.1 = end;
        }
        s.room_low = room_low;
    }

    /// The log moved from `old` (ending at `old_end`) to `new`.
    pub(super) fn rotated(&self, old: Rc<Segment>, old_end: usize, new: Rc<Segment>) {
        {
            let mut s = self.state.borrow_mut();
            if let Some(active) = s.active.as_mut() {
                active.1 = old_end;
            }
            s.sealed.push_back(Sealed { seg: old, successor: new.clone() });
            s.active = Some((new, super::segment::SEGMENT_HEADER_BYTES));
            s.active_synced = 0;
        }
        self.flush_wake.notify_all();
    }

    pub(super) fn request_spare(&self, header: Header) {
        self.state.borrow_mut().spare_wanted = Some(header);
        self.maint_wake.notify_all();
    }

    pub(super) fn spare_is_ready(&self) -> bool {
        self.state.borrow().spare_ready.is_some()
    }

    pub(super) fn take_spare(&self) -> Option<Segment> {
        self.state.borrow_mut().spare_ready.take()
    }

    /// Why there is no spare: the last creation error, else "not ready".
    pub(super) fn spare_error(&self) -> StoreError {
        self.state.borrow().spare_error.clone().unwrap_or(StoreError::NotReady)
    }

    pub(super) fn request_output(&self, header: Header) {
        self.state.borrow_mut().output_wanted = Some(header);
        self.maint_wake.notify_all();
    }

    pub(super) fn take_output(&self) -> Option<Result<Segment, StoreError>> {
        self.state.borrow_mut().output_ready.take()
    }

    pub(super) fn request_finish(&self, out: Rc<Segment>) {
        self.state.borrow_mut().finish_wanted = Some(out);
        self.maint_wake.notify_all();
    }

    pub(super) fn take_finish(&self) -> Option<Result<(), StoreError>> {
        self.state.borrow_mut().finish_done.take()
    }

    pub(super) fn retire(&self, segs: Vec<Rc<Segment>>) {
        self.state.borrow_mut().retired.extend(segs);
        self.maint_wake.notify_all();
    }

    pub(super) fn positions(&self) -> (u64, u64) {
        let s = self.state.borrow();
        (s.written, s.durable)
    }

    /// Flushes since start and how long they took.
    pub(super) fn flush_figures(&self) -> (u64, HistogramSnapshot) {
        let s = self.state.borrow();
        (s.flushes, s.flush_latency.snapshot())
    }

    // -------------------------------------------------------------------------------------
    // Called by the shard
    // -------------------------------------------------------------------------------------

    /// Waits, in `sync` mode, until everything written so far is on disk; at once otherwise.
    /// Every reply of the shard passes here, reads included, so no client ever sees a change
    /// that a crash could still undo.
    pub async fn settle(&self) -> Result<(), StoreError> {
        if self.mode != Durability::Sync {
            return Ok(());
        }
        let target = self.state.borrow().written;
        let mut waiting = None;
        loop {
            let notified = self.durable_wake.notified();
            {
                let s = self.state.borrow();
                if s.durable >= target {
                    return Ok(());
                }
                if let Some(err) = &s.failed {
                    return Err(err.clone());
                }
            }
            if waiting.is_none() {
                waiting = Some(WaitGuard::new(self));
                self.flush_wake.notify_all();
            }
            notified.await;
        }
    }

    /// Before a request runs: if the active segment is nearly full and the next one is not ready
    /// yet, wait for it (bounded), rather than fail the request.
    pub async fn wait_for_room(&self) {
        if !self.state.borrow().room_low {
            return;
        }
        let deadline = std::time::Instant::now() + ROOM_WAIT;
        loop {
            let notified = self.room_wake.notified();
            {
                let s = self.state.borrow();
                if !s.room_low || s.spare_ready.is_some() || s.spare_error.is_some() || s.failed.is_some() {
                    return;
                }
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            futures_lite::future::or(notified, async {
                glommio::timer::sleep(left).await;
            })
            .await;
        }
    }

    /// Tasks pending on the log's signals (the flusher and maintainer's own waits included).
    pub fn waiters(&self) -> usize {
        [&self.flush_wake, &self.maint_wake, &self.durable_wake, &self.room_wake].iter().map(|n| n.waiters()).sum()
    }

    /// Test hook: the next `n` flushes fail as a disk error would.
    pub fn fail_next_flushes(&self, n: u32) {
        self.state.borrow_mut().failing_flushes = n;
    }

    // -------------------------------------------------------------------------------------
    // Flushing
    // -------------------------------------------------------------------------------------

    /// Whether the flusher should flush now rather than sleep: a full segment waits for its final
    /// flush (in every mode: it keeps the log a clean prefix on disk), or, in `sync`, a request
    /// waits for the log's end.
    fn flush_wanted(&self) -> bool {
        let s = self.state.borrow();
        if s.failed.is_some() {
            return false;
        }
        !s.sealed.is_empty() || (self.mode == Durability::Sync && s.written > s.durable && s.waiting > 0)
    }

    /// What a flush now would do; `None` when nothing is dirty (with `force`, the active segment
    /// is flushed anyway, for its header).
    pub fn flush_plan(&self, force: bool) -> Option<FlushPlan> {
        let mut s = self.state.borrow_mut();
        if s.failed.is_some() {
            return None;
        }
        let active_dirty = s.active.as_ref().is_some_and(|(_, end)| *end > s.active_synced);
        if !force && s.written <= s.durable && s.sealed.is_empty() && !active_dirty {
            return None;
        }
        let mut steps: Vec<FlushStep> = s
            .sealed
            .iter()
            .map(|x| FlushStep { seg: x.seg.clone(), seal_next: Some(x.successor.clone()), synced: None })
            .collect();
        if let Some((seg, end)) = &s.active {
            steps.push(FlushStep { seg: seg.clone(), seal_next: None, synced: Some(*end) });
        }
        let inject_failure = s.failing_flushes > 0;
        s.failing_flushes = s.failing_flushes.saturating_sub(1);
        Some(FlushPlan { target: s.written, steps, inject_failure, started: std::time::Instant::now() })
    }

    /// Records the outcome of a flush and wakes whoever it concerns. A failed flush poisons the
    /// log: the kernel may have dropped the pages it could not write, so nothing written since
    /// the last good flush can be trusted, and the shard refuses changes until restarted
    /// (recovery then reads what really is on disk).
    pub fn flush_done(&self, plan: FlushPlan, result: Result<(), StoreError>) {
        {
            let mut s = self.state.borrow_mut();
            match result {
                Ok(()) => {
                    s.durable = s.durable.max(plan.target);
                    // By identity: another flush (shutdown's) may have run alongside.
                    let done = |seg: &Rc<Segment>| {
                        plan.steps.iter().any(|st| st.seal_next.is_some() && Rc::ptr_eq(&st.seg, seg))
                    };
                    s.sealed.retain(|x| !done(&x.seg));
                    if let Some(FlushStep { synced: Some(off), .. }) = plan.steps.last() {
                        s.active_synced = s.active_synced.max(*off);
                    }
                    s.flushes += 1;
                    s.flush_latency.record(plan.started.elapsed());
                }
                Err(err) => {
                    tracing::error!(%err, "flushing the log failed; this shard refuses changes until restarted");
                    s.failed = Some(StoreError::Io(format!(
                        "a flush to disk failed ({err}); restart the server to recover from what is on disk"
                    )));
                }
            }
        }
        self.durable_wake.notify_all();
        self.room_wake.notify_all();
    }

    /// Something other than a flush left the log untrustworthy in memory: refuse changes.
    pub(super) fn flush_done_failed(&self, reason: String) {
        self.state.borrow_mut().failed = Some(StoreError::Io(format!("{reason}; restart the server")));
        self.durable_wake.notify_all();
        self.room_wake.notify_all();
    }

    /// Runs a flush with blocking syscalls (tests, tools and recovery; never on a shard).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        let Some(plan) = self.flush_plan(false) else {
            return self.failed().map_or(Ok(()), Err);
        };
        let result = if plan.inject_failure {
            Err(StoreError::Io("injected flush failure".into()))
        } else {
            plan.steps.iter().try_for_each(|step| {
                step.seg.sync_data().map_err(|e| StoreError::Io(e.to_string()))?;
                step.after_sync();
                Ok(())
            })
        };
        self.flush_done(plan, result.clone());
        result
    }

    /// Runs a flush through io_uring, if anything is dirty.
    async fn flush_async(&self, files: &mut HashMap<u32, glommio::io::BufferedFile>) {
        if let Some(plan) = self.flush_plan(false) {
            self.run_plan_async(plan, files).await;
        }
    }

    /// `files` caches one glommio file (a second descriptor) per segment.
    async fn run_plan_async(&self, plan: FlushPlan, files: &mut HashMap<u32, glommio::io::BufferedFile>) {
        let mut result = Ok(());
        if plan.inject_failure {
            result = Err(StoreError::Io("injected flush failure".into()));
        }
        for step in &plan.steps {
            if result.is_err() {
                break;
            }
            let file_no = step.seg.header.file_no;
            if let std::collections::hash_map::Entry::Vacant(slot) = files.entry(file_no) {
                match step.seg.clone_file() {
                    // SAFETY: the descriptor is a fresh duplicate that the BufferedFile now owns.
                    Ok(f) => {
                        slot.insert(unsafe { glommio::io::BufferedFile::from_raw_fd(f.into_raw_fd()) });
                    }
                    Err(e) => {
                        result = Err(StoreError::Io(e.to_string()));
                        break;
                    }
                }
            }
            if let Some(file) = files.get(&file_no) {
                match file.fdatasync().await {
                    Ok(()) => step.after_sync(),
                    Err(e) => result = Err(StoreError::Io(e.to_string())),
                }
            }
        }
        // Descriptors of segments that are complete on disk are not needed any more.
        let keep: Vec<u32> = {
            let s = self.state.borrow();
            s.sealed.iter().map(|x| x.seg.header.file_no).chain(s.active.iter().map(|a| a.0.header.file_no)).collect()
        };
        files.retain(|no, _| keep.contains(no));
        self.flush_done(plan, result);
    }

    /// Flushes everything now (shutdown), twice so that the header's `synced` word written after
    /// the first flush is on disk too. The I/O tasks stop.
    pub async fn close(&self) {
        let mut files = HashMap::new();
        self.state.borrow_mut().stopping = true;
        self.flush_wake.notify_all();
        self.maint_wake.notify_all();
        for force in [false, true] {
            if let Some(plan) = self.flush_plan(force) {
                self.run_plan_async(plan, &mut files).await;
            }
        }
        for (_, file) in files {
            let _ = file.close().await;
        }
        let s = self.state.borrow();
        tracing::info!(mode = self.mode.as_str(), written_bytes = s.written, flushes = s.flushes, "log closed");
    }

    // -------------------------------------------------------------------------------------
    // Tasks
    // -------------------------------------------------------------------------------------

    /// Starts the flusher and the maintenance task on the current glommio executor.
    pub fn spawn_tasks(self: &Rc<Self>) {
        let shared = self.clone();
        glommio::spawn_local(async move { shared.flusher().await }).detach();
        let shared = self.clone();
        glommio::spawn_local(async move { shared.maintainer().await }).detach();
    }

    async fn flusher(&self) {
        let mut files = HashMap::new();
        loop {
            let notified = self.flush_wake.notified();
            if self.state.borrow().stopping {
                return;
            }
            if self.flush_wanted() {
                self.flush_async(&mut files).await;
                continue;
            }
            if self.mode == Durability::Interval {
                let tick = glommio::timer::sleep(self.flush_interval);
                futures_lite::future::or(notified, async {
                    tick.await;
                })
                .await;
                let (written, durable) = self.positions();
                if written > durable {
                    self.flush_async(&mut files).await;
                }
            } else {
                notified.await;
            }
        }
    }

    async fn maintainer(&self) {
        loop {
            let notified = self.maint_wake.notified();
            if self.state.borrow().stopping {
                return;
            }
            let mut retry = false;
            let spare = self.state.borrow().spare_wanted;
            if let Some(header) = spare {
                let dir = self.dir.clone();
                let made = glommio::executor().spawn_blocking(move || Segment::create(&dir, header, true)).await;
                retry |= made.is_err();
                self.spare_made(made);
            }
            let output = self.state.borrow_mut().output_wanted.take();
            if let Some(header) = output {
                let dir = self.dir.clone();
                let made = glommio::executor().spawn_blocking(move || Segment::create(&dir, header, false)).await;
                self.state.borrow_mut().output_ready = Some(made.map_err(store_error));
            }
            let finish = self.state.borrow_mut().finish_wanted.take();
            if let Some(out) = finish {
                let done = finish_output(&out).await;
                if let Err(err) = &done {
                    tracing::error!(%err, "finishing a compaction failed; this shard refuses changes until restarted");
                    self.state.borrow_mut().failed = Some(err.clone());
                    self.durable_wake.notify_all();
                }
                self.state.borrow_mut().finish_done = Some(done);
            }
            let retired = std::mem::take(&mut self.state.borrow_mut().retired);
            if !retired.is_empty() {
                let leftover = remove_files(&self.dir, retired).await;
                self.state.borrow_mut().retired.extend(leftover);
            }
            if retry {
                glommio::timer::sleep(CREATE_RETRY).await;
            } else {
                notified.await;
            }
        }
    }

    fn spare_made(&self, made: std::io::Result<Segment>) {
        {
            let mut s = self.state.borrow_mut();
            match made {
                Ok(seg) => {
                    s.spare_wanted = None;
                    s.spare_error = None;
                    s.spare_ready = Some(seg);
                }
                Err(e) => {
                    let err = store_error(e);
                    if s.spare_error.as_ref() != Some(&err) {
                        tracing::warn!(%err, "cannot make the next segment file; retrying every second");
                    }
                    s.spare_error = Some(err);
                }
            }
        }
        self.room_wake.notify_all();
    }

    /// Does every pending request with blocking syscalls (tests and tools; never on a shard).
    pub fn run_io_blocking(&self) {
        let spare = self.state.borrow().spare_wanted;
        if let Some(header) = spare {
            self.spare_made(Segment::create(&self.dir, header, true));
        }
        let output = self.state.borrow_mut().output_wanted.take();
        if let Some(header) = output {
            self.state.borrow_mut().output_ready = Some(Segment::create(&self.dir, header, false).map_err(store_error));
        }
        let finish = self.state.borrow_mut().finish_wanted.take();
        if let Some(out) = finish {
            let done = out
                .sync_data()
                .and_then(|()| segment::publish(&out.tmp_path(), &out.path()))
                .map_err(|e| StoreError::Io(e.to_string()));
            self.state.borrow_mut().finish_done = Some(done);
        }
        let retired = std::mem::take(&mut self.state.borrow_mut().retired);
        let mut leftover = Vec::new();
        for seg in retired {
            match Rc::try_unwrap(seg) {
                Ok(seg) => {
                    let _ = std::fs::remove_file(seg.path());
                }
                Err(seg) => leftover.push(seg),
            }
        }
        let _ = segment::sync_dir(&self.dir);
        self.state.borrow_mut().retired.extend(leftover);
    }
}

/// Keeps the count of requests waiting for a flush right, even when one is cancelled.
struct WaitGuard<'a>(&'a LogShared);

impl<'a> WaitGuard<'a> {
    fn new(shared: &'a LogShared) -> Self {
        shared.state.borrow_mut().waiting += 1;
        WaitGuard(shared)
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state.borrow_mut();
        // Each guard counted itself in `new`; fewer means the count is broken.
        assert!(s.waiting > 0, "a flush waiter left that was never counted");
        s.waiting -= 1;
    }
}

fn store_error(e: std::io::Error) -> StoreError {
    if segment::is_disk_full(&e) {
        StoreError::DiskFull
    } else {
        StoreError::Io(e.to_string())
    }
}

/// Makes a finished compaction output durable and gives it its final name.
async fn finish_output(out: &Rc<Segment>) -> Result<(), StoreError> {
    let file = out.clone_file().map_err(store_error)?;
    // SAFETY: a fresh duplicate descriptor, owned by the BufferedFile from here on.
    let file = unsafe { glommio::io::BufferedFile::from_raw_fd(file.into_raw_fd()) };
    let synced = file.fdatasync().await;
    let _ = file.close().await;
    synced.map_err(|e| StoreError::Io(e.to_string()))?;
    let (tmp, path) = (out.tmp_path(), out.path());
    glommio::executor().spawn_blocking(move || segment::publish(&tmp, &path)).await.map_err(store_error)
}

/// Removes retired segment files (and unmaps them) on the blocking thread; returns those still
/// referenced elsewhere, to try again later.
async fn remove_files(dir: &std::path::Path, retired: Vec<Rc<Segment>>) -> Vec<Rc<Segment>> {
    let mut owned = Vec::new();
    let mut leftover = Vec::new();
    for seg in retired {
        match Rc::try_unwrap(seg) {
            Ok(seg) => owned.push(seg),
            Err(seg) => leftover.push(seg),
        }
    }
    if !owned.is_empty() {
        let dir = dir.to_owned();
        let removed = glommio::executor()
            .spawn_blocking(move || {
                for seg in &owned {
                    if let Err(e) = std::fs::remove_file(seg.path()) {
                        tracing::warn!(path = %seg.path().display(), %e, "cannot remove a retired segment");
                    }
                }
                // Unmapping happens here too, as `owned` drops.
                segment::sync_dir(&dir)
            })
            .await;
        if let Err(e) = removed {
            tracing::warn!(%e, "cannot sync the data directory after removing segments");
        }
    }
    leftover
}
