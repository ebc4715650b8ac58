//! A store backend in memory: for tests, where a clone of it outlives a broker so that a
//! restart in the same process finds the state again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{Backend, Snapshot, StoreError, Write};

#[derive(Debug, Default)]
struct Tables {
    sessions: BTreeMap<Vec<u8>, Vec<u8>>,
    queued: BTreeMap<Vec<u8>, Vec<u8>>,
    retained: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Three ordered maps behind a lock; clones share them.
#[derive(Debug, Default, Clone)]
pub struct MemoryBackend {
    tables: Arc<Mutex<Tables>>,
}

impl MemoryBackend {
    /// Number of queued-message records (for tests).
    pub fn queued_len(&self) -> usize {
        self.tables.lock().map_or(0, |t| t.queued.len())
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Backend("memory store lock poisoned".into())
}

impl Backend for MemoryBackend {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let t = self.tables.lock().map_err(poisoned)?;
        let all = |m: &BTreeMap<Vec<u8>, Vec<u8>>| -> Vec<(Vec<u8>, Vec<u8>)> {
            m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        Ok(Snapshot {
            sessions: all(&t.sessions),
            queued: all(&t.queued),
            retained: all(&t.retained),
        })
    }

    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let mut t = self.tables.lock().map_err(poisoned)?;
        for w in writes {
            match w {
                Write::PutSession(k, v) => {
                    t.sessions.insert(k.clone(), v.clone());
                }
                Write::DeleteSession(k) => {
                    t.sessions.remove(k);
                    let doomed: Vec<Vec<u8>> = t
                        .queued
                        .range(k.clone()..)
                        .take_while(|(q, _)| q.len() == k.len() + 8 && q.starts_with(k))
                        .map(|(q, _)| q.clone())
                        .collect();
                    for q in doomed {
                        t.queued.remove(&q);
                    }
                }
                Write::PutQueued(k, v) => {
                    t.queued.insert(k.clone(), v.clone());
                }
                Write::DeleteQueued(k) => {
                    t.queued.remove(k);
                }
                Write::PutRetained(k, v) => {
                    t.retained.insert(k.clone(), v.clone());
                }
                Write::DeleteRetained(k) => {
                    t.retained.remove(k);
                }
            }
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.tables.lock().map_or(0, |t| {
            [&t.sessions, &t.queued, &t.retained]
                .iter()
                .flat_map(|m| m.iter())
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum()
        })
    }
}
