//! One segment file: a preallocated file mapped with memmap2, a 4 KiB header, then records.
//!
//! ## Format (version 2; version 1 differs only in the records it may hold, see `codec`)
//! File name: `{seq:016x}-{file_no:08x}.seg` (a `.tmp` suffix while being made). `seq` orders the
//! log; `file_no` is unique per file and, with the record's offset, locates a message body
//! ([`BodyRef::location`](super::BodyRef) = `file_no << 32 | offset`). Header, little-endian:
//!
//! | offset | size | field | written |
//! |---|---|---|---|
//! | 0 | 8 | magic `MRCNSEG\0` | at creation |
//! | 8 | 4 | format version of the build that made it (1 or 2) | |
//! | 12 | 4 | kind: 1 log segment, 2 compaction output | |
//! | 16 | 4 | shard number | |
//! | 20 | 4 | `file_no` | |
//! | 24 | 8 | `seq`: log order; a compaction output takes the `seq` of the last segment it replaces | |
//! | 32 | 8 | capacity: the file's size | |
//! | 40 | 8 | creation time, ms since the Unix epoch | |
//! | 48 | 4 | CRC32C of bytes 0..48 | |
//! | 64 | 8 | link `prev_seq`: `seq` of the segment before (0: first) | when the segment becomes active |
//! | 72 | 8 | link `prev_end`: where the records of that segment end | |
//! | 80 | 8 | link `end`: where this file's records end (compaction outputs; 0 otherwise) | |
//! | 88 | 4 | CRC32C of bytes 64..88 | |
//! | 128 | 8 | seal `SEALMRCN`: the previous segment was fully on disk before this one was flushed | by the flusher |
//! | 192 | 8 | `synced`: records up to this offset were on disk at some flush | by the flusher |
//! | 200 | 8 | bitwise NOT of `synced` (a torn or stale pair is ignored) | |
//!
//! Records start at offset 4096 (codec.rs). The unwritten rest is zeros (preallocated), so a zero
//! record length marks the end. A segment made but never linked is a spare: it holds no records
//! that count. The link, seal and `synced` words let recovery tell a torn tail (allowed after the
//! newest data that reached the disk) from damage (refused); see recovery.rs.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io;
use std::marker::PhantomData;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use memmap2::{MmapOptions, MmapRaw};

use super::codec::Fields;

pub const SEGMENT_HEADER_BYTES: usize = 4096;
/// Segment files are whole pages: a configured size is rounded up to a multiple of this.
pub const SEGMENT_ALIGN_BYTES: u64 = 4096;
/// Smallest segment file accepted (`storage.segment_size_bytes`): tests use small segments to
/// exercise rotation and compaction.
pub const MIN_SEGMENT_SIZE_BYTES: u64 = 64 * 1024;
/// Largest segment file accepted. Body locations are `file_no << 32 | offset`, so every offset
/// into a file must fit 32 bits, and a compaction output may hold up to twice a segment
/// (`compact::MAX_OUTPUT_BYTES`).
pub const MAX_SEGMENT_SIZE_BYTES: u64 = 1 << 30;

const _: () = assert!(MIN_SEGMENT_SIZE_BYTES >= 2 * SEGMENT_HEADER_BYTES as u64, "a segment holds two headers");
const _: () = assert!(MAX_SEGMENT_SIZE_BYTES % SEGMENT_ALIGN_BYTES == 0, "the largest segment is whole pages");

/// The size of the files made for a configured `segment_size_bytes`.
pub const fn segment_capacity(segment_size_bytes: u64) -> u64 {
    segment_size_bytes.div_ceil(SEGMENT_ALIGN_BYTES) * SEGMENT_ALIGN_BYTES
}
/// The format this build writes. Version 2 added claim secrets and revocations (record kinds 9
/// and 10); this build reads every version from [`OLDEST_FORMAT_VERSION`] up.
pub const FORMAT_VERSION: u32 = 2;
pub const OLDEST_FORMAT_VERSION: u32 = 1;
const MAGIC: [u8; 8] = *b"MRCNSEG\0";
const SEAL_MAGIC: u64 = u64::from_le_bytes(*b"SEALMRCN");
const LINK_AT: usize = 64;
const SEAL_AT: usize = 128;
const SYNCED_AT: usize = 192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    /// Written by appends, in log order.
    Log,
    /// Written by compaction: the live records of every segment up to its `seq`, which it
    /// replaces.
    Compacted,
}

/// The fixed part of a segment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: SegmentKind,
    pub shard: u32,
    pub file_no: u32,
    pub seq: u64,
    pub capacity: u64,
    pub created_ms: u64,
}

/// Where a segment sits in the chain; written when it becomes active (or, for a compaction
/// output, when it is complete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub prev_seq: u64,
    pub prev_end: u64,
    pub end: u64,
}

impl Header {
    pub fn file_name(&self) -> String {
        format!("{:016x}-{:08x}.seg", self.seq, self.file_no)
    }

    fn encode(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        let kind: u32 = match self.kind {
            SegmentKind::Log => 1,
            SegmentKind::Compacted => 2,
        };
        b[12..16].copy_from_slice(&kind.to_le_bytes());
        b[16..20].copy_from_slice(&self.shard.to_le_bytes());
        b[20..24].copy_from_slice(&self.file_no.to_le_bytes());
        b[24..32].copy_from_slice(&self.seq.to_le_bytes());
        b[32..40].copy_from_slice(&self.capacity.to_le_bytes());
        b[40..48].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..48]);
        b[48..52].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and checks a header; the error says what is wrong.
    pub fn decode(b: &[u8]) -> Result<Header, String> {
        const SHORT: &str = "file shorter than a header";
        let b: &[u8; 64] = b.first_chunk().ok_or(SHORT)?;
        let mut f = Fields::new(b);
        if f.array::<8>() != Some(MAGIC) {
            return Err("not a marconi segment (bad magic)".into());
        }
        let (version, kind, shard, file_no) = (f.u32(), f.u32(), f.u32(), f.u32());
        let (seq, capacity, created_ms, crc) = (f.u64(), f.u64(), f.u64(), f.u32());
        if crc != Some(crc32c::crc32c(&b[0..48])) {
            return Err("header checksum mismatch".into());
        }
        let version = version.ok_or(SHORT)?;
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(format!(
                "format version {version}; this build reads versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}"
            ));
        }
        let kind = match kind.ok_or(SHORT)? {
            1 => SegmentKind::Log,
            2 => SegmentKind::Compacted,
            k => return Err(format!("unknown segment kind {k}")),
        };
        Ok(Header {
            kind,
            shard: shard.ok_or(SHORT)?,
            file_no: file_no.ok_or(SHORT)?,
            seq: seq.ok_or(SHORT)?,
            capacity: capacity.ok_or(SHORT)?,
            created_ms: created_ms.ok_or(SHORT)?,
        })
    }
}

impl Link {
    fn encode(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(&self.prev_seq.to_le_bytes());
        b[8..16].copy_from_slice(&self.prev_end.to_le_bytes());
        b[16..24].copy_from_slice(&self.end.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..24]);
        b[24..28].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// `None` when the link was never written (or did not reach the disk whole).
    fn decode(b: &[u8]) -> Option<Link> {
        let mut f = Fields::new(b);
        let link = Link { prev_seq: f.u64()?, prev_end: f.u64()?, end: f.u64()? };
        let covered = b.get(0..24)?;
        (f.u32()? == crc32c::crc32c(covered)).then_some(link)
    }
}

/// A mapped segment file.
///
/// Bytes are written through the mapping from one thread (the shard's), and only where no
/// shared slice handed out by [`Segment::bytes`] can point: the store appends past every record
/// it has exposed, and header words are only read at recovery. That invariant is what makes the
/// `unsafe` writes sound; `Segment` is `!Sync` so a reference cannot leave the thread.
pub struct Segment {
    pub header: Header,
    dir: PathBuf,
    file: File,
    map: MmapRaw,
    _single_thread: PhantomData<Cell<()>>,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment").field("header", &self.header).field("dir", &self.dir).finish()
    }
}

/// Whether an I/O error means the disk (or quota) is full.
pub fn is_disk_full(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// fsync of a directory, so that a file created, renamed or removed in it stays so.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Segment {
    /// Creates, preallocates, stamps and maps a new segment. Blocking: run it off the shard.
    /// With `publish`, the file gets its final name (durably); without, it keeps its `.tmp` name
    /// until [`publish`] (compaction outputs are published only once complete).
    pub fn create(dir: &Path, header: Header, publish: bool) -> io::Result<Segment> {
        let tmp = dir.join(format!("{}.tmp", header.file_name()));
        let made = Self::create_at(&tmp, dir, header, publish);
        if made.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        made
    }

    fn create_at(tmp: &Path, dir: &Path, header: Header, publish_now: bool) -> io::Result<Segment> {
        let capacity = usize::try_from(header.capacity).map_err(|_| io::Error::other("segment too large"))?;
        if capacity < SEGMENT_HEADER_BYTES * 2 {
            return Err(io::Error::other("segment smaller than two headers"));
        }
        let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o644).open(tmp)?;
        preallocate(&file, header.capacity)?;
        if header.kind == SegmentKind::Log {
            zero_fill(&file, capacity)?;
        }
        file.write_all_at(&header.encode(), 0)?;
        file.sync_all()?;
        if publish_now {
            std::fs::rename(tmp, dir.join(header.file_name()))?;
        }
        sync_dir(dir)?;
        // Pre-faults the whole mapping here, off the shard, so appends never fault a page in.
        let map = MmapOptions::new().len(capacity).populate().map_raw(&file)?;
        Ok(Segment { header, dir: dir.to_owned(), file, map, _single_thread: PhantomData })
    }

    /// Opens an existing segment and checks its header. Blocking (recovery).
    pub fn open(path: &Path) -> Result<Segment, String> {
        let dir = path.parent().ok_or("segment path has no directory")?.to_owned();
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| e.to_string())?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        if len < (SEGMENT_HEADER_BYTES * 2) as u64 {
            return Err(format!("file is {len} bytes, shorter than a segment can be"));
        }
        let mut head = [0u8; 64];
        file.read_exact_at(&mut head, 0).map_err(|e| e.to_string())?;
        let header = Header::decode(&head)?;
        if header.capacity != len {
            return Err(format!("header says {} bytes, file has {len}", header.capacity));
        }
        let size = usize::try_from(len).map_err(|_| "segment too large for this machine".to_string())?;
        let map = MmapOptions::new().len(size).populate().map_raw(&file).map_err(|e| e.to_string())?;
        Ok(Segment { header, dir, file, map, _single_thread: PhantomData })
    }

    pub fn capacity(&self) -> usize {
        self.map.len()
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(self.header.file_name())
    }

    pub fn tmp_path(&self) -> PathBuf {
        self.dir.join(format!("{}.tmp", self.header.file_name()))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Read-only view of `range`, or `None` when it lies outside the file. Callers only ask for
    /// bytes that are no longer written (records below the append offset).
    pub fn bytes(&self, start: usize, len: usize) -> Option<&[u8]> {
        let end = start.checked_add(len)?;
        if end > self.map.len() {
            return None;
        }
        // SAFETY: in bounds of a live mapping; by the type's invariant nothing writes these bytes
        // while the returned slice lives.
        Some(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start), len) })
    }

    /// Mutable view of a range nobody reads yet, for encoding a record in place.
    ///
    /// # Safety
    /// No slice from [`Segment::bytes`] may overlap the range while the returned one lives.
    #[expect(
        clippy::mut_from_ref,
        reason = "writes go through the mapping's raw pointer; the caller keeps ranges disjoint"
    )]
    pub unsafe fn bytes_mut(&self, start: usize, len: usize) -> Option<&mut [u8]> {
        let end = start.checked_add(len)?;
        if end > self.map.len() {
            return None;
        }
        Some(std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(start), len))
    }

    /// Writes records at `offset` through the file (not the mapping, which only reads them back:
    /// see log.rs). Blocking, into the page cache.
    pub fn write_at(&self, data: &[u8], offset: usize) -> io::Result<()> {
        let end = offset.checked_add(data.len()).filter(|&end| end <= self.map.len());
        if offset < SEGMENT_HEADER_BYTES || end.is_none() {
            return Err(io::Error::other(format!(
                "a write at {offset} of {} bytes is outside the records",
                data.len()
            )));
        }
        self.file.write_all_at(data, offset as u64)
    }

    fn write_header_bytes(&self, at: usize, data: &[u8]) {
        // Checked in every build: the write below is unchecked, and header words are rare.
        assert!(at + data.len() <= SEGMENT_HEADER_BYTES, "header write at {at}..{} past the header", at + data.len());
        // SAFETY: header bytes past the fixed part are never handed out as slices while the store
        // runs (recovery reads them before the store exists), and the mapping is at least two
        // headers long.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.as_mut_ptr().add(at), data.len()) }
    }

    /// Header bytes after the fixed part. Every mapping is at least two headers long (`create`
    /// and `open` refuse anything shorter), so these are always there.
    fn header_bytes(&self, at: usize, len: usize) -> &[u8] {
        match self.bytes(at, len).filter(|_| at + len <= SEGMENT_HEADER_BYTES) {
            Some(b) => b,
            None => panic!("header bytes {at}..{} of {} are outside its header", at + len, self.path().display()),
        }
    }

    pub fn write_link(&self, link: Link) {
        self.write_header_bytes(LINK_AT, &link.encode());
    }

    pub fn link(&self) -> Option<Link> {
        Link::decode(self.header_bytes(LINK_AT, 32))
    }

    pub fn write_seal(&self) {
        self.write_header_bytes(SEAL_AT, &SEAL_MAGIC.to_le_bytes());
    }

    pub fn sealed(&self) -> bool {
        Fields::new(self.header_bytes(SEAL_AT, 8)).u64() == Some(SEAL_MAGIC)
    }

    pub fn write_synced(&self, offset: u64) {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&offset.to_le_bytes());
        b[8..16].copy_from_slice(&(!offset).to_le_bytes());
        self.write_header_bytes(SYNCED_AT, &b);
    }

    /// The last `synced` offset that reached the disk whole (0 when none).
    pub fn synced(&self) -> u64 {
        let mut f = Fields::new(self.header_bytes(SYNCED_AT, 16));
        match (f.u64(), f.u64()) {
            (Some(a), Some(n)) if a == !n => a,
            _ => 0,
        }
    }

    /// Zeroes `range` (cutting a torn tail at recovery). Blocking caller; nothing reads it.
    pub fn zero(&self, start: usize, end: usize) {
        let end = end.min(self.map.len());
        if start < end {
            // SAFETY: at recovery no slice of the segment is alive; the range is in bounds.
            unsafe { std::ptr::write_bytes(self.map.as_mut_ptr().add(start), 0, end - start) }
        }
    }

    /// Blocking fdatasync (recovery, tests and tools; shards flush through io_uring).
    pub fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// A second descriptor of the file, for the shard's io_uring flushes.
    pub fn clone_file(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    pub fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }
}

/// Reserves the blocks of the whole file now, so writes through the mapping can never meet a full
/// disk (which would kill the process with SIGBUS) and the disk-full case surfaces here, off the
/// request path, as ENOSPC.
fn preallocate(file: &File, len: u64) -> io::Result<()> {
    let len_off = libc::off_t::try_from(len).map_err(|_| io::Error::other("segment too large"))?;
    // SAFETY: fallocate on a descriptor we own, with plain integers.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len_off) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
        // A filesystem without fallocate: a sparse file works, but a full disk then shows up
        // later; say so once per segment.
        tracing::warn!("the data directory's filesystem cannot preallocate; a full disk may stop the server");
        return file.set_len(len);
    }
    Err(err)
}

/// Writes zeros over a log segment's blocks before it is used. `fallocate` leaves them
/// *unwritten* extents: the first write to each then makes the next `fdatasync` journal an extent
/// conversion as well as write the data, about doubling a group commit's flush on ext4
/// (docs/perf.md, "How appends reach the disk"). Zeroing them ahead of need, off the shard, makes
/// a flush write data only. Blocking.
fn zero_fill(file: &File, len: usize) -> io::Result<()> {
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK.min(len)];
    let mut at = 0;
    while at < len {
        let n = zeros.len().min(len - at);
        file.write_all_at(zeros.get(..n).unwrap_or_default(), at as u64)?;
        at += n;
    }
    Ok(())
}

/// Renames a finished compaction output to its final name, durably. Blocking.
pub fn publish(tmp: &Path, path: &Path) -> io::Result<()> {
    std::fs::rename(tmp, path)?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn header(file_no: u32) -> Header {
        Header {
            kind: SegmentKind::Log,
            shard: 3,
            file_no,
            seq: u64::from(file_no),
            capacity: 64 * 1024,
            created_ms: 5,
        }
    }

    #[test]
    fn created_segments_reopen_with_their_header_link_and_seal() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::create(dir.path(), header(7), true).unwrap();
        assert!(seg.link().is_none());
        assert!(!seg.sealed());
        assert_eq!(seg.synced(), 0);
        seg.write_link(Link { prev_seq: 6, prev_end: 8192, end: 0 });
        seg.write_seal();
        seg.write_synced(4096 + 64);
        seg.sync_data().unwrap();
        let path = seg.path();
        drop(seg);
        let again = Segment::open(&path).unwrap();
        assert_eq!(again.header, header(7));
        assert_eq!(again.link(), Some(Link { prev_seq: 6, prev_end: 8192, end: 0 }));
        assert!(again.sealed());
        assert_eq!(again.synced(), 4096 + 64);
    }

    #[test]
    fn damaged_headers_are_named() {
        let mut bytes = header(1).encode();
        assert_eq!(Header::decode(&bytes), Ok(header(1)));
        bytes[30] ^= 1;
        assert!(Header::decode(&bytes).unwrap_err().contains("checksum"));
        assert!(Header::decode(&[0u8; 64]).unwrap_err().contains("magic"));
    }
}
