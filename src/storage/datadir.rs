//! The data directory: one lock for the whole server, a meta file, one folder per shard.
//!
//! ## Format
//! ```text
//! <data-dir>/
//!   LOCK            flock(2)ed (exclusive, non-blocking) while a server runs; holds its pid
//!   marconi.meta    {"format": 2, "shards": N}: written atomically (tmp, fsync, rename) when the
//!                   directory is made, and again when a directory of an older format is upgraded
//!   limits.json     overrides of quotas per project set by PUT (limits_file.rs), atomically too
//!   shard-000/      segment files of shard 0 (segment.rs)
//!   shard-001/ ...
//! ```
//! Queues are placed by a hash modulo the shard count, so a directory written with N shards only
//! makes sense with N shards: another count is refused (marconi cannot reshard yet) rather than
//! silently hiding queues. A newer format than this build's is refused; an older one it reads is
//! upgraded (its meta file rewritten before anything of the new format is written), after which
//! older builds refuse the directory instead of misreading records they do not know.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::segment::{sync_dir, FORMAT_VERSION, OLDEST_FORMAT_VERSION};

const LOCK_FILE: &str = "LOCK";
const META_FILE: &str = "marconi.meta";

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot use data directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "data directory {path} is in use by another marconi process{holder}; stop it, or give this \
         one another --data-dir"
    )]
    Locked { path: PathBuf, holder: String },
    #[error(
        "data directory {path} holds {found} shard(s) but this server was started with {wanted}; start \
         it with --shards {found} (marconi cannot reshard a data directory yet)"
    )]
    ShardCount { path: PathBuf, found: usize, wanted: usize },
    #[error("data directory {path} is in format {found}; this build reads formats 1 to {wanted}")]
    Format { path: PathBuf, found: u32, wanted: u32 },
    #[error("{path}: {reason}")]
    BadMeta { path: PathBuf, reason: String },
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    format: u32,
    shards: usize,
}

/// An open, locked data directory. The lock lasts as long as this value.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates the directory if needed, takes its lock and checks (or writes) its meta file.
    pub fn open(path: &Path, shards: usize) -> Result<DataDir, DataDirError> {
        let io = |source| DataDirError::Io { path: path.to_owned(), source };
        std::fs::create_dir_all(path).map_err(io)?;
        let lock_path = path.join(LOCK_FILE);
        let mut lock =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock_path).map_err(io)?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut pid = String::new();
                let _ = lock.read_to_string(&mut pid);
                let pid = pid.trim();
                let holder = if pid.is_empty() { String::new() } else { format!(" (pid {pid})") };
                return Err(DataDirError::Locked { path: path.to_owned(), holder });
            }
            return Err(io(err));
        }
        // Who holds it, for the next one's error message; informative only.
        let _ = lock.set_len(0).and_then(|()| lock.rewind()).and_then(|()| writeln!(lock, "{}", std::process::id()));

        let meta_path = path.join(META_FILE);
        match std::fs::read(&meta_path) {
            Ok(bytes) => {
                let meta: Meta = serde_json::from_slice(&bytes)
                    .map_err(|e| DataDirError::BadMeta { path: meta_path.clone(), reason: e.to_string() })?;
                if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&meta.format) {
                    return Err(DataDirError::Format {
                        path: path.to_owned(),
                        found: meta.format,
                        wanted: FORMAT_VERSION,
                    });
                }
                if meta.shards != shards {
                    return Err(DataDirError::ShardCount { path: path.to_owned(), found: meta.shards, wanted: shards });
                }
                if meta.format < FORMAT_VERSION {
                    tracing::info!(path = %path.display(), from = meta.format, to = FORMAT_VERSION, "upgrading the data directory's format");
                    write_meta(path, &Meta { format: FORMAT_VERSION, shards }).map_err(io)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let has_shards = std::fs::read_dir(path)
                    .map_err(io)?
                    .filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().starts_with("shard-"));
                if has_shards {
                    return Err(DataDirError::BadMeta {
                        path: meta_path,
                        reason: "missing, but shard folders exist; restore it (it records the shard count) \
                                 or start in an empty directory"
                            .into(),
                    });
                }
                write_meta(path, &Meta { format: FORMAT_VERSION, shards }).map_err(io)?;
            }
            Err(e) => return Err(io(e)),
        }
        Ok(DataDir { path: path.to_owned(), _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder of one shard's segments.
    pub fn shard_dir(&self, shard: usize) -> PathBuf {
        self.path.join(format!("shard-{shard:03}"))
    }
}

fn write_meta(dir: &Path, meta: &Meta) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    write_atomic(&dir.join(META_FILE), &bytes)
}

/// Replaces the file at `path` with `bytes` so that a crash leaves the old or the new one whole:
/// a temporary beside it, fsync, rename, fsync of the directory. Blocking.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().ok_or_else(|| std::io::Error::other("a file path without a directory"))?;
    let mut tmp_name = path.file_name().ok_or_else(|| std::io::Error::other("a path without a file name"))?.to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_second_opener_is_refused_and_the_shard_count_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDir::open(dir.path(), 2).unwrap();
        let err = DataDir::open(dir.path(), 2).unwrap_err();
        assert!(matches!(err, DataDirError::Locked { .. }), "{err}");
        assert!(err.to_string().contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        std::fs::create_dir(dir.path().join("shard-000")).unwrap();
        let err = DataDir::open(dir.path(), 3).unwrap_err();
        assert!(err.to_string().contains("--shards 2"), "{err}");
        DataDir::open(dir.path(), 2).unwrap();
    }

    #[test]
    fn an_older_format_is_upgraded_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join(META_FILE);
        std::fs::write(&meta, r#"{"format": 1, "shards": 2}"#).unwrap();
        drop(DataDir::open(dir.path(), 2).unwrap());
        let text = std::fs::read_to_string(&meta).unwrap();
        assert!(text.contains(&format!("\"format\":{FORMAT_VERSION}")), "{text}");
        std::fs::write(&meta, format!(r#"{{"format": {}, "shards": 2}}"#, FORMAT_VERSION + 1)).unwrap();
        let err = DataDir::open(dir.path(), 2).unwrap_err();
        assert!(matches!(err, DataDirError::Format { .. }), "{err}");
    }

    #[test]
    fn a_missing_meta_beside_shard_folders_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("shard-000")).unwrap();
        let err = DataDir::open(dir.path(), 1).unwrap_err();
        assert!(matches!(err, DataDirError::BadMeta { .. }), "{err}");
    }
}
