//! The file that keeps the quota overrides set by `PUT /v2/projects/{id}/limits` across restarts.
//!
//! ## Format
//! `<data-dir>/limits.json`, replaced whole and atomically on every change (a temporary beside
//! it, fsync, rename, fsync of the directory: [`write_atomic`]):
//! ```text
//! {"format": 1, "projects": {"<project id>": {"<limit name>": <count>, ...}, ...}}
//! ```
//! Limit names are those of [`Limit`](crate::limits::Limit). Overrides are small and rare, so a
//! whole-file rewrite costs nothing worth a log record (and leaves the segment format alone).
//! A file this build cannot read stops start-up with its path, rather than dropping quotas.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::datadir::write_atomic;
use crate::limits::{OverrideError, Overrides};

const FORMAT: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    format: u32,
    projects: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LimitsFileError {
    #[error("cannot read {path}: {source}", path = path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is damaged ({reason}); fix it, or remove it to drop the overrides set by PUT", path = path.display())]
    Bad { path: PathBuf, reason: String },
}

/// The overrides in the file at `path`; none when there is no file.
pub fn read(path: &Path) -> Result<BTreeMap<String, Overrides>, LimitsFileError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => return Err(LimitsFileError::Io { path: path.to_owned(), source }),
    };
    let bad = |reason: String| LimitsFileError::Bad { path: path.to_owned(), reason };
    let file: LimitsFile = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if file.format != FORMAT {
        return Err(bad(format!("format {}, this build reads {FORMAT}", file.format)));
    }
    file.projects
        .into_iter()
        .map(|(project, values)| {
            let overrides = Overrides::from_pairs(values.iter().map(|(k, v)| (k.as_str(), Some(*v))))
                .map_err(|e: OverrideError| bad(format!("project {project:?}: {e}")))?;
            Ok((project, overrides))
        })
        .collect()
}

/// The file's bytes for `projects`.
pub fn encode(projects: &BTreeMap<String, Overrides>) -> Vec<u8> {
    let file = LimitsFile {
        format: FORMAT,
        projects: projects
            .iter()
            .map(|(p, o)| (p.clone(), o.iter().map(|(l, v)| (l.name().to_owned(), v)).collect()))
            .collect(),
    };
    let mut bytes = serde_json::to_vec(&file).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Replaces the file with `bytes` (from [`encode`]). Blocking: run it off the executor.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic(path, bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::limits::Limit;

    #[test]
    fn overrides_survive_a_write_and_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limits.json");
        assert!(read(&path).unwrap().is_empty(), "no file: no overrides");
        let mut o = Overrides::default();
        o.set(Limit::QueuesPerProject, 3).unwrap();
        o.set(Limit::RequestsPerSecondPerProject, 0).unwrap();
        let all = BTreeMap::from([("p \"1\"".to_owned(), o)]);
        write(&path, &encode(&all)).unwrap();
        assert_eq!(read(&path).unwrap(), all);
        assert!(!dir.path().join("limits.json.tmp").exists());
    }

    #[test]
    fn a_damaged_file_is_refused_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limits.json");
        for text in
            [&b"{"[..], br#"{"format": 2, "projects": {}}"#, br#"{"format": 1, "projects": {"p": {"nope": 1}}}"#]
        {
            std::fs::write(&path, text).unwrap();
            let err = read(&path).unwrap_err().to_string();
            assert!(err.contains("limits.json"), "{err}");
        }
    }
}
