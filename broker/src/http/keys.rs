//! API keys for the management API: random 32-character keys, stored only as SHA-256 hashes in
//! `<persistent_data_dir>/api_keys` (one `hash created expires` line each, `expires` 0 for
//! never), so reading the file does not reveal a key. `vmq-admin api-key create` edits the file
//! directly (whoever can write the data directory is an administrator) and the running broker
//! sees the change on the next request: the file is re-read when its modification time moves.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// The key file's name inside the data directory.
pub const FILE_NAME: &str = "api_keys";

/// What can go wrong with the key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("api key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of the file is not `hash created expires`.
    #[error("api key file {path}:{line}: not `<sha256> <created> <expires>`")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// No such key.
    #[error("no such API key")]
    Unknown,
}

/// One stored key, without the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// SHA-256 of the key, hex.
    pub hash: String,
    /// When it was created (Unix seconds).
    pub created: u64,
    /// When it stops working (Unix seconds), if it does.
    pub expires: Option<u64>,
}

impl KeyEntry {
    /// A short, stable identifier to show (the hash's first 12 characters).
    pub fn id(&self) -> &str {
        &self.hash[..12.min(self.hash.len())]
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// SHA-256 of a key, hex.
pub fn hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key file of a data directory, with the copy the broker checks requests against.
#[derive(Debug)]
pub struct ApiKeys {
    path: PathBuf,
    cache: Mutex<(Option<SystemTime>, Vec<KeyEntry>)>,
}

impl ApiKeys {
    /// The key file in `data_dir` (it need not exist yet).
    pub fn new(data_dir: &Path) -> ApiKeys {
        ApiKeys {
            path: data_dir.join(FILE_NAME),
            cache: Mutex::new((None, Vec::new())),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> KeyError {
        KeyError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Every stored key (expired ones included).
    pub fn list(&self) -> Result<Vec<KeyEntry>, KeyError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(e)),
        };
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || KeyError::Malformed {
                path: self.path.clone(),
                line: i + 1,
            };
            let mut parts = line.split_whitespace();
            let (Some(hash), Some(created), Some(expires), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            let created = created.parse().map_err(|_| bad())?;
            let expires: u64 = expires.parse().map_err(|_| bad())?;
            out.push(KeyEntry {
                hash: hash.to_owned(),
                created,
                expires: (expires != 0).then_some(expires),
            });
        }
        Ok(out)
    }

    fn write(&self, entries: &[KeyEntry]) -> Result<(), KeyError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        }
        let mut text =
            String::from("# vmq-broker API keys: sha256(key) created expires (0: never)\n");
        for e in entries {
            text.push_str(&format!(
                "{} {} {}\n",
                e.hash,
                e.created,
                e.expires.unwrap_or(0)
            ));
        }
        // Write then rename: a reader never sees half a file.
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(|e| self.io(e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))
    }

    /// Creates a key valid for `ttl` (forever if `None`); returns the key, which is not stored.
    pub fn create(&self, ttl: Option<Duration>) -> Result<String, KeyError> {
        let key = uuid::Uuid::new_v4().simple().to_string();
        let mut entries = self.list()?;
        let created = now();
        entries.push(KeyEntry {
            hash: hash(&key),
            created,
            expires: ttl.map(|d| created + d.as_secs().max(1)),
        });
        self.write(&entries)?;
        Ok(key)
    }

    /// Deletes a key, given as the key itself or as the id `api-key show` prints.
    pub fn delete(&self, key_or_id: &str) -> Result<(), KeyError> {
        let mut entries = self.list()?;
        let h = hash(key_or_id);
        let before = entries.len();
        entries.retain(|e| e.hash != h && !(key_or_id.len() >= 8 && e.hash.starts_with(key_or_id)));
        if entries.len() == before {
            return Err(KeyError::Unknown);
        }
        self.write(&entries)
    }

    /// Whether `key` is a stored, unexpired key. Re-reads the file when it changed.
    pub fn check(&self, key: &str) -> bool {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let Ok(mut cache) = self.cache.lock() else {
            return false;
        };
        if cache.0 != modified || modified.is_none() {
            match self.list() {
                Ok(entries) => *cache = (modified, entries),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the API keys; refusing API requests");
                    *cache = (None, Vec::new());
                }
            }
        }
        let h = hash(key);
        let now = now();
        cache
            .1
            .iter()
            .any(|e| e.hash == h && e.expires.is_none_or(|t| t > now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_check_expire_delete() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ApiKeys::new(dir.path());
        assert!(!keys.check("nothing"));
        let k = keys.create(None).unwrap();
        assert_eq!(k.len(), 32);
        assert!(keys.check(&k));
        let text = std::fs::read_to_string(keys.path()).unwrap();
        assert!(!text.contains(&k), "only the hash is stored");
        assert!(!keys.check("wrong"));
        let short = keys.create(Some(Duration::from_secs(1))).unwrap();
        assert!(keys.check(&short));
        let mut entries = keys.list().unwrap();
        entries[1].expires = Some(now() - 1);
        keys.write(&entries).unwrap();
        assert!(!keys.check(&short), "expired");
        keys.delete(&k).unwrap();
        assert!(!keys.check(&k));
        assert!(matches!(keys.delete(&k), Err(KeyError::Unknown)));
        std::fs::write(keys.path(), "garbage\n").unwrap();
        assert!(matches!(
            keys.list(),
            Err(KeyError::Malformed { line: 1, .. })
        ));
    }
}
