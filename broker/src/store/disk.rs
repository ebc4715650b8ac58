//! The production store backend: one redb file (`store.redb`) in `persistent_data_dir`, three
//! tables (sessions, queued messages, retained messages), one durable transaction per batch.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Backend, Snapshot, StoreError, Write};

type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;
type Row = (Vec<u8>, Vec<u8>);

const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
const QUEUED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("queued");
const RETAINED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("retained");

/// The store file's name inside the data directory.
pub const FILE_NAME: &str = "store.redb";

/// Memory redb may use to cache pages.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// A redb database holding the broker's persistent state.
pub struct RedbBackend {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for RedbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbBackend")
            .field("path", &self.path)
            .finish()
    }
}

fn backend_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl RedbBackend {
    /// Opens (or creates) `dir/store.redb`, creating `dir` if needed. A file that is not a
    /// store, a damaged one redb cannot repair, or one another broker has open is an error.
    pub fn open_dir(dir: &Path) -> Result<RedbBackend, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let open_err = |message: String| StoreError::Open {
            path: path.clone(),
            message,
        };
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_repair_callback(|_| {
                tracing::warn!("the message store was not closed cleanly; repairing it");
            })
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::Storage(redb::StorageError::Corrupted(message)) => {
                    StoreError::Damaged {
                        path: path.clone(),
                        message,
                    }
                }
                other => open_err(other.to_string()),
            })?;
        // Create the tables so reads never meet a missing one.
        let txn = db.begin_write().map_err(|e| open_err(e.to_string()))?;
        for t in [SESSIONS, QUEUED, RETAINED] {
            txn.open_table(t).map_err(|e| open_err(e.to_string()))?;
        }
        txn.commit().map_err(|e| open_err(e.to_string()))?;
        Ok(RedbBackend { db, path })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Backend for RedbBackend {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read().map_err(backend_err)?;
        let read = |def: Table| -> Result<Vec<Row>, StoreError> {
            let table = txn.open_table(def).map_err(backend_err)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(backend_err)? {
                let (k, v) = row.map_err(backend_err)?;
                out.push((k.value().to_vec(), v.value().to_vec()));
            }
            Ok(out)
        };
        Ok(Snapshot {
            sessions: read(SESSIONS)?,
            queued: read(QUEUED)?,
            retained: read(RETAINED)?,
        })
    }

    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend_err)?;
        {
            let mut sessions = txn.open_table(SESSIONS).map_err(backend_err)?;
            let mut queued = txn.open_table(QUEUED).map_err(backend_err)?;
            let mut retained = txn.open_table(RETAINED).map_err(backend_err)?;
            for w in writes {
                match w {
                    Write::PutSession(k, v) => {
                        sessions.insert(k.as_slice(), v.as_slice()).map(drop)
                    }
                    Write::DeleteSession(k) => {
                        sessions.remove(k.as_slice()).map_err(backend_err)?;
                        let mut end = k.clone();
                        end.extend_from_slice(&u64::MAX.to_be_bytes());
                        let mut start = k.clone();
                        start.extend_from_slice(&0u64.to_be_bytes());
                        queued.retain_in(start.as_slice()..=end.as_slice(), |_, _| false)
                    }
                    Write::PutQueued(k, v) => queued.insert(k.as_slice(), v.as_slice()).map(drop),
                    Write::DeleteQueued(k) => queued.remove(k.as_slice()).map(drop),
                    Write::PutRetained(k, v) => {
                        retained.insert(k.as_slice(), v.as_slice()).map(drop)
                    }
                    Write::DeleteRetained(k) => retained.remove(k.as_slice()).map(drop),
                }
                .map_err(backend_err)?;
            }
        }
        txn.commit().map_err(backend_err)
    }

    fn compact(&mut self) -> Result<(), StoreError> {
        while self.db.compact().map_err(backend_err)? {}
        Ok(())
    }

    fn size(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_survive_reopening_and_sessions_take_their_queue_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let s1 = super::super::session_key_bytes("", "a");
        let s2 = super::super::session_key_bytes("", "b");
        {
            let mut b = RedbBackend::open_dir(dir.path()).unwrap();
            let mut writes = vec![
                Write::PutSession(s1.clone(), b"one".to_vec()),
                Write::PutSession(s2.clone(), b"two".to_vec()),
                Write::PutRetained(b"r".to_vec(), b"kept".to_vec()),
            ];
            for seq in 0..5 {
                writes.push(Write::PutQueued(
                    super::super::queued_key_bytes(&s1, seq),
                    b"m".to_vec(),
                ));
                writes.push(Write::PutQueued(
                    super::super::queued_key_bytes(&s2, seq),
                    b"m".to_vec(),
                ));
            }
            b.commit(&writes).unwrap();
            b.commit(&[
                Write::DeleteSession(s1.clone()),
                Write::DeleteQueued(super::super::queued_key_bytes(&s2, 0)),
            ])
            .unwrap();
        }
        let mut b = RedbBackend::open_dir(dir.path()).unwrap();
        let snap = b.load().unwrap();
        assert_eq!(snap.sessions, vec![(s2.clone(), b"two".to_vec())]);
        assert_eq!(snap.queued.len(), 4);
        assert!(snap.queued.iter().all(|(k, _)| k.starts_with(&s2)));
        assert_eq!(snap.retained.len(), 1);
    }

    #[test]
    fn a_second_opener_and_a_foreign_file_get_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let _first = RedbBackend::open_dir(dir.path()).unwrap();
        let e = RedbBackend::open_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("cannot open the message store"), "{e}");
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join(FILE_NAME), vec![0x42; 10_000]).unwrap();
        let e = RedbBackend::open_dir(other.path()).unwrap_err().to_string();
        assert!(e.contains("cannot open the message store"), "{e}");
    }
}
