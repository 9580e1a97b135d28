//! The signing keys of `token` mode: a TOML file of `[[key]]` entries. The last entry signs new
//! tokens (`marconi token issue`); every entry verifies. Rotating is appending a key
//! (`marconi token keygen`), restarting the server so it knows the key, then issuing with it;
//! removing a key (and restarting) revokes every token it signed.
//!
//! ## Format
//! ```toml
//! [[key]]
//! id = "k-20260101-120000"      # 1..=32 of [A-Za-z0-9_-], unique; carried in each token
//! secret = "…"                  # base64url (no padding) of 32..=64 random bytes
//! created = "2026-01-01T12:00:00Z"   # informative
//! ```
//! The file holds secrets: `keygen` creates it readable by its owner only, and the server warns
//! when others can read it.

use std::io::Write as _;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::token::{base64url_decode, base64url_encode};

pub const MAX_KEY_ID_BYTES: usize = 32;
const MIN_SECRET_BYTES: usize = 32;
const MAX_SECRET_BYTES: usize = 64;
/// The size of the secrets `keygen` makes.
const NEW_SECRET_BYTES: usize = 32;

/// One key, ready to sign and verify: the HMAC state keyed once, cloned per token.
#[derive(Clone)]
pub struct HmacKey {
    pub id: String,
    mac: Hmac<Sha256>,
}

impl HmacKey {
    pub fn mac(&self) -> Hmac<Sha256> {
        self.mac.clone()
    }
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HmacKey({})", self.id)
    }
}

/// Every key of a keys file, in file order (never empty).
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<HmacKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read keys file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write keys file {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("keys file {path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error(transparent)]
    Random(#[from] crate::random::RandomError),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    key: Vec<Entry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    secret: String,
    #[serde(default)]
    #[allow(dead_code, reason = "informative only; read so that the file's format is checked")]
    created: Option<String>,
}

/// Whether `id` can name a key.
pub fn is_valid_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_BYTES).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Keyring {
    pub fn load(path: &Path) -> Result<Keyring, KeysError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read { path: shown.clone(), source })?;
        Self::from_toml(&text).map_err(|reason| KeysError::Invalid { path: shown, reason })
    }

    /// Whether others than the owner may read the file (the server warns).
    pub fn readable_by_others(path: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
    }

    pub fn from_toml(text: &str) -> Result<Keyring, String> {
        let file: File = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut keys: Vec<HmacKey> = Vec::with_capacity(file.key.len());
        for entry in file.key {
            if !is_valid_key_id(&entry.id) {
                return Err(format!("key id {:?} is not 1 to {MAX_KEY_ID_BYTES} of [A-Za-z0-9_-]", entry.id));
            }
            if keys.iter().any(|k| k.id == entry.id) {
                return Err(format!("key id {:?} appears twice", entry.id));
            }
            let mut secret = [0u8; MAX_SECRET_BYTES];
            let len = base64url_decode(entry.secret.trim().as_bytes(), &mut secret)
                .filter(|&n| n >= MIN_SECRET_BYTES)
                .ok_or_else(|| {
                    format!(
                        "the secret of key {:?} is not base64url of {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes",
                        entry.id
                    )
                })?;
            let key = secret.get(..len).ok_or("a secret longer than its buffer")?;
            let mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| e.to_string())?;
            keys.push(HmacKey { id: entry.id, mac });
        }
        if keys.is_empty() {
            return Err("it holds no [[key]] (make one with `marconi token keygen`)".into());
        }
        Ok(Keyring { keys })
    }

    /// The key that signs new tokens: the last of the file.
    pub fn newest(&self) -> &HmacKey {
        match self.keys.last() {
            Some(key) => key,
            None => panic!("a keyring is never empty (from_toml refuses an empty one)"),
        }
    }

    pub fn get(&self, id: &str) -> Option<&HmacKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Appends a fresh random key to the file at `path` (made, readable by its owner only, if it
    /// does not exist) and returns its id: from then on it signs. `id` defaults to one made from
    /// the current time.
    pub fn append_new(path: &Path, id: Option<&str>, now_s: u64) -> Result<String, KeysError> {
        use std::os::unix::fs::OpenOptionsExt;
        let shown = path.display().to_string();
        let invalid = |reason: String| KeysError::Invalid { path: shown.clone(), reason };
        let existing = match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(KeysError::Read { path: shown, source }),
        };
        let stamp = crate::time::iso8601(now_s);
        let id = match id {
            Some(id) => id.to_owned(),
            None => format!("k-{}", stamp.replace(['-', ':'], "").replace('T', "-").trim_end_matches('Z')),
        };
        if !is_valid_key_id(&id) {
            return Err(invalid(format!("key id {id:?} is not 1 to {MAX_KEY_ID_BYTES} of [A-Za-z0-9_-]")));
        }
        if let Some(text) = &existing {
            let ring = Self::from_toml(text).map_err(&invalid)?;
            if ring.get(&id).is_some() {
                return Err(invalid(format!("key id {id:?} exists already")));
            }
        }
        let mut secret = [0u8; NEW_SECRET_BYTES];
        crate::random::fill(&mut secret)?;
        let mut encoded = String::new();
        base64url_encode(&secret, &mut encoded);
        let mut block = String::new();
        if existing.is_none() {
            block
                .push_str("# marconi token signing keys (docs/security.md): the last key signs, every key verifies.\n");
        }
        block.push_str(&format!("\n[[key]]\nid = \"{id}\"\nsecret = \"{encoded}\"\ncreated = \"{stamp}\"\n"));
        let write = |source| KeysError::Write { path: shown.clone(), source };
        let mut file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path).map_err(write)?;
        file.write_all(block.as_bytes()).map_err(write)?;
        file.sync_all().map_err(write)?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keygen_appends_and_the_last_key_signs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let first = Keyring::append_new(&path, None, 1_767_225_600).unwrap();
        assert_eq!(first, "k-20260101-000000");
        assert!(!Keyring::readable_by_others(&path), "made readable by its owner only");
        Keyring::append_new(&path, Some("second"), 1_767_225_601).unwrap();
        let ring = Keyring::load(&path).unwrap();
        assert_eq!(ring.ids().collect::<Vec<_>>(), [first.as_str(), "second"]);
        assert_eq!(ring.newest().id, "second");
        assert!(matches!(Keyring::append_new(&path, Some("second"), 0), Err(KeysError::Invalid { .. })));
        assert!(matches!(Keyring::append_new(&path, Some("bad id"), 0), Err(KeysError::Invalid { .. })));
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        for (text, says) in [
            ("", "no [[key]]"),
            ("[[key]]\nid = \"a\"\nsecret = \"c2hvcnQ\"\n", "32 to 64 bytes"),
            ("[[key]]\nid = \"a b\"\nsecret = \"x\"\n", "key id"),
            ("[[key]]\nid = \"a\"\nsecret = \"x\"\nextra = 1\n", "unknown field"),
        ] {
            let err = Keyring::from_toml(text).unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
        }
        let twice = "[[key]]\nid = \"a\"\nsecret = \"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA\"\n";
        assert!(Keyring::from_toml(&format!("{twice}{twice}")).unwrap_err().contains("twice"));
    }
}
