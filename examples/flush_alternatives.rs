//! How should the log make a group of appends durable? Side by side, on the disk of `DIR`:
//!
//! ```text
//! cargo run --release --example flush_alternatives -- [DIR] [SECONDS] [IN_FLIGHT]
//! ```
//!
//! A model of the server's `sync` group commit: a writer thread appends 320-byte records (a
//! 256-byte message and its record header) as long as fewer than IN_FLIGHT (default 64, the
//! benchmark's connections) are not yet durable, as 64 closed-loop clients would; a flusher makes
//! everything appended so far durable, over and over. Each method is one way of doing that:
//!
//! - `mmap`: records are copied into a shared mapping of the segment, `fdatasync` writes the
//!   dirty pages (what the server did before issue 10);
//! - `pwrite`: records are staged in memory and written with one `pwrite` per flush, then
//!   `fdatasync` (the mapping is only read);
//! - `dsync`: one `pwritev2(RWF_DSYNC)` per flush instead of write + sync;
//! - `direct`: `O_DIRECT | O_DSYNC` writes of the whole 4 KiB blocks a flush touches;
//! - `pwrite2`: as `pwrite`, with a second flush in flight while the first completes.
//!
//! each on a segment preallocated with `fallocate` (unwritten extents: the first write to a
//! block makes the flush journal an extent conversion) or filled with zeros ahead of need
//! (`+zeroed`: written extents, so a flush writes data only). Prints records/s, flushes/s,
//! records per flush, flush latency and the writer's longest stall (a page fault on a page the
//! flush write-protected shows up there).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const SEGMENT: usize = 64 << 20;
const RECORD: usize = 320;
const BLOCK: usize = 4096;

#[derive(Clone, Copy, PartialEq)]
enum Method {
    Mmap,
    Pwrite,
    Dsync,
    Direct,
    Pwrite2,
}

struct Shared {
    /// Bytes appended, bytes durable (a prefix), bytes a flusher has taken.
    state: Mutex<(usize, usize, usize)>,
    cond: Condvar,
    stop: AtomicBool,
    staged: Mutex<Vec<u8>>,
    flushes: AtomicU64,
}

fn prepare(path: &std::path::Path, zeroed: bool) -> File {
    let _ = std::fs::remove_file(path);
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).unwrap();
    if zeroed {
        let zeros = vec![0u8; 1 << 20];
        let mut w = &f;
        for _ in 0..SEGMENT / zeros.len() {
            w.write_all(&zeros).unwrap();
        }
    } else {
        // SAFETY: fallocate on a descriptor we own.
        assert_eq!(unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, SEGMENT as libc::off_t) }, 0);
    }
    f.sync_all().unwrap();
    f
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1))).copied().unwrap_or_default()
}

fn run(dir: &std::path::Path, method: Method, zeroed: bool, secs: f64, in_flight: usize) {
    let path = dir.join("flush-alternatives.seg");
    let file = Arc::new(prepare(&path, zeroed));
    let direct = (method == Method::Direct).then(|| {
        Arc::new(OpenOptions::new().write(true).custom_flags(libc::O_DIRECT | libc::O_DSYNC).open(&path).unwrap())
    });
    let map = memmap2::MmapOptions::new().len(SEGMENT).map_raw(&*file).unwrap();
    let map_ptr = map.as_mut_ptr() as usize;
    let shared = Arc::new(Shared {
        state: Mutex::new((0, 0, 0)),
        cond: Condvar::new(),
        stop: AtomicBool::new(false),
        staged: Mutex::new(Vec::new()),
        flushes: AtomicU64::new(0),
    });
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let flushers = if method == Method::Pwrite2 { 2 } else { 1 };
    let mut handles = Vec::new();
    for _ in 0..flushers {
        let (shared, file, direct, latencies) = (shared.clone(), file.clone(), direct.clone(), latencies.clone());
        handles.push(std::thread::spawn(move || {
            let mut block_buf = AlignedBlocks::new(SEGMENT);
            loop {
                let (from, to) = {
                    let mut s = shared.state.lock().unwrap();
                    while s.0 == s.2 && !shared.stop.load(Ordering::Relaxed) {
                        s = shared.cond.wait(s).unwrap();
                    }
                    if shared.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let range = (s.2, s.0);
                    s.2 = s.0;
                    range
                };
                let started = Instant::now();
                let bytes = || {
                    let staged = shared.staged.lock().unwrap();
                    staged[from..to].to_vec()
                };
                match method {
                    Method::Mmap => file.sync_data().unwrap(),
                    Method::Pwrite | Method::Pwrite2 => {
                        file.write_all_at(&bytes(), from as u64).unwrap();
                        file.sync_data().unwrap();
                    }
                    Method::Dsync => {
                        let b = bytes();
                        let iov = libc::iovec { iov_base: b.as_ptr() as *mut _, iov_len: b.len() };
                        // SAFETY: one iovec over a live buffer; RWF_DSYNC makes the write durable.
                        let n = unsafe { libc::pwritev2(file.as_raw_fd(), &iov, 1, from as i64, libc::RWF_DSYNC) };
                        assert_eq!(n as usize, b.len());
                    }
                    Method::Direct => {
                        let start = from / BLOCK * BLOCK;
                        let end = to.div_ceil(BLOCK) * BLOCK;
                        let staged = shared.staged.lock().unwrap();
                        let blocks = block_buf.get(end - start);
                        let have = (to - start).min(blocks.len());
                        blocks[..have].copy_from_slice(&staged[start..start + have]);
                        blocks[have..].fill(0);
                        drop(staged);
                        direct.as_ref().unwrap().write_all_at(blocks, start as u64).unwrap();
                    }
                }
                latencies.lock().unwrap().push(started.elapsed());
                shared.flushes.fetch_add(1, Ordering::Relaxed);
                let mut s = shared.state.lock().unwrap();
                // With two flushers, durability advances only over a prefix: a flush that
                // finishes first waits for the one before it.
                while s.1 < from {
                    s = shared.cond.wait(s).unwrap();
                }
                s.1 = s.1.max(to);
                shared.cond.notify_all();
            }
        }));
    }
    let started = Instant::now();
    let record = [7u8; RECORD];
    let mut appended = 0usize;
    let mut longest_stall = Duration::ZERO;
    while started.elapsed().as_secs_f64() < secs && appended + RECORD <= SEGMENT {
        {
            let mut s = shared.state.lock().unwrap();
            while s.0 - s.1 >= in_flight * RECORD {
                s = shared.cond.wait(s).unwrap();
            }
        }
        let t = Instant::now();
        if method == Method::Mmap {
            // SAFETY: in bounds (checked above); nothing else writes this range.
            unsafe { std::ptr::copy_nonoverlapping(record.as_ptr(), (map_ptr as *mut u8).add(appended), RECORD) };
        }
        shared.staged.lock().unwrap().extend_from_slice(&record);
        longest_stall = longest_stall.max(t.elapsed());
        appended += RECORD;
        let mut s = shared.state.lock().unwrap();
        s.0 = appended;
        shared.cond.notify_all();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let durable = shared.state.lock().unwrap().1;
    shared.stop.store(true, Ordering::Relaxed);
    shared.cond.notify_all();
    for h in handles {
        h.join().unwrap();
    }
    let flushes = shared.flushes.load(Ordering::Relaxed);
    let mut lat = latencies.lock().unwrap().clone();
    let records = durable / RECORD;
    let name = match method {
        Method::Mmap => "mmap",
        Method::Pwrite => "pwrite",
        Method::Dsync => "dsync",
        Method::Direct => "direct",
        Method::Pwrite2 => "pwrite2",
    };
    println!(
        "| {name}{} | {:.0} | {:.0} | {:.1} | {} | {} | {} | {} |",
        if zeroed { "+zeroed" } else { "" },
        records as f64 / elapsed,
        flushes as f64 / elapsed,
        records as f64 / flushes.max(1) as f64,
        pct(&mut lat, 0.5).as_micros(),
        pct(&mut lat, 0.99).as_micros(),
        pct(&mut lat, 1.0).as_micros(),
        longest_stall.as_micros(),
    );
    drop(map);
    let _ = std::fs::remove_file(&path);
}

/// A 4 KiB-aligned scratch buffer for O_DIRECT writes.
struct AlignedBlocks {
    buf: Vec<u8>,
    offset: usize,
}

impl AlignedBlocks {
    fn new(max: usize) -> Self {
        let buf = vec![0u8; max.min(16 << 20) + BLOCK];
        let offset = buf.as_ptr().align_offset(BLOCK);
        AlignedBlocks { buf, offset }
    }
    fn get(&mut self, len: usize) -> &mut [u8] {
        &mut self.buf[self.offset..self.offset + len]
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "/var/tmp".into()));
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let in_flight: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(64);
    println!("# {} s per method, {in_flight} records in flight, {RECORD}-byte records, on {}", secs, dir.display());
    println!("| method | records/s | flushes/s | records/flush | flush p50 µs | p99 µs | max µs | writer's longest stall µs |");
    println!("|---|---|---|---|---|---|---|---|");
    for zeroed in [false, true] {
        for method in [Method::Mmap, Method::Pwrite, Method::Dsync, Method::Direct, Method::Pwrite2] {
            run(&dir, method, zeroed, secs, in_flight);
        }
    }
}
