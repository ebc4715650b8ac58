//! The message store: what must survive a restart (persistent sessions with their
//! subscriptions, their queued QoS 1/2 messages, the in-flight QoS 2 state, retained messages).
//!
//! Sessions and the router stay the source of truth while the broker runs; the store is a
//! write-behind copy that is read back once, at start. Writes are submitted as [`Op`]s without
//! waiting; one writer thread applies everything pending in one transaction (a group commit)
//! and then publishes how far it got, so a connection that must not acknowledge a publish
//! before it is durable waits for its [`Ticket`], not for its own fsync.
//!
//! Where the bytes go is a [`Backend`]: [`disk::RedbBackend`] (one redb file under
//! `persistent_data_dir`) in production, [`memory::MemoryBackend`] for tests, where it also
//! survives an in-process restart.

pub mod disk;
pub mod memory;
mod record;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

use tokio::sync::watch;

pub(crate) use record::{
    MessageRecord, QueuedRecord, SubscriptionRecord, delivery_from, delivery_record, message_from,
    message_record, subscription_from, subscription_record,
};
pub use record::{RestoredQueued, RestoredSession};

/// A subscription as a session keeps it (and the store writes it): enough to restore or
/// remove it.
#[derive(Debug, Clone)]
pub struct SubRecord {
    /// Granted options.
    pub options: SubOptions,
    /// v5 subscription identifier.
    pub id: Option<u32>,
    /// The ACL that authorized it.
    pub acl: Option<Arc<crate::hooks::MatchedAcl>>,
}

use crate::config::Durability;
use crate::message::{Delivery, Message};
use crate::metrics::Metrics;
use crate::mqtt::SubOptions;

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be opened (locked by another broker, not a store file, ...).
    #[error("cannot open the message store {path}: {message}")]
    Open {
        /// The store file.
        path: PathBuf,
        /// Why, as the database says it.
        message: String,
    },
    /// The store file is damaged (truncated, overwritten): the broker does not start on it.
    #[error(
        "the message store {path} is damaged ({message}); move it away to start with an empty \
         store, or put back a backup"
    )]
    Damaged {
        /// The store file.
        path: PathBuf,
        /// What the database found.
        message: String,
    },
    /// The database failed while reading or writing.
    #[error("message store: {0}")]
    Backend(String),
    /// A record does not decode: the file is damaged or was written by something else.
    #[error("message store: corrupt {table} record {key}: {message}")]
    Corrupt {
        /// Which table.
        table: &'static str,
        /// The record's key, readable.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// A session's identity in the store: mountpoint and client id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// Mountpoint.
    pub mountpoint: Arc<str>,
    /// Client id.
    pub client_id: Arc<str>,
}

/// A position in the store's write order: durable once the writer has committed it.
pub type Ticket = u64;

/// A change to the stored state. Domain values go in (cheap clones of `Arc`s); the writer
/// thread encodes them, off the connections' path.
#[derive(Debug)]
pub enum Op {
    /// A persistent session: its subscriptions and expiry (replaces what was there).
    PutSession {
        /// Which session.
        key: SessionKey,
        /// Its subscriptions by filter.
        subscriptions: Vec<(String, SubRecord)>,
        /// How long it outlives its connection (`None`: forever).
        expiry: Option<Duration>,
        /// When its client went away (wall clock), if it is offline.
        offline_since: Option<SystemTime>,
    },
    /// A session and all its queued messages are gone.
    DeleteSession(SessionKey),
    /// A QoS 1/2 message queued for a session (or its new in-flight state).
    PutQueued {
        /// Which session.
        key: SessionKey,
        /// Its position in the session's queue.
        seq: u64,
        /// The delivery.
        delivery: Delivery,
        /// The packet id it was sent with, when that must survive (QoS 2).
        packet_id: Option<u16>,
        /// Whether PUBREL was sent (QoS 2, waiting for PUBCOMP).
        released: bool,
    },
    /// A queued message was acknowledged or dropped.
    DeleteQueued {
        /// Which session.
        key: SessionKey,
        /// Its position.
        seq: u64,
    },
    /// The retained message of a topic (`None`: cleared).
    PutRetained {
        /// Mountpoint.
        mountpoint: Arc<str>,
        /// Topic.
        topic: Arc<str>,
        /// The message, or `None` to clear it.
        message: Option<Arc<Message>>,
    },
}

/// One encoded change, as a backend applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Insert or replace a session record.
    PutSession(Vec<u8>, Vec<u8>),
    /// Remove a session record and every queue record under it.
    DeleteSession(Vec<u8>),
    /// Insert or replace a queue record (session key + sequence number).
    PutQueued(Vec<u8>, Vec<u8>),
    /// Remove a queue record.
    DeleteQueued(Vec<u8>),
    /// Insert or replace a retained message.
    PutRetained(Vec<u8>, Vec<u8>),
    /// Remove a retained message.
    DeleteRetained(Vec<u8>),
}

/// Everything a backend holds, raw, in key order.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Session key to session record.
    pub sessions: Vec<(Vec<u8>, Vec<u8>)>,
    /// Queue key (session key + big-endian sequence number) to queue record.
    pub queued: Vec<(Vec<u8>, Vec<u8>)>,
    /// Retained key (mountpoint + topic) to message record.
    pub retained: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Where the store's bytes live. A backend is used by one thread at a time: the writer.
pub trait Backend: Send + 'static {
    /// Reads everything (at start).
    fn load(&mut self) -> Result<Snapshot, StoreError>;
    /// Applies `writes` atomically and durably (one transaction, one fsync).
    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError>;
    /// Gives back the space of deleted records, if the backend can.
    fn compact(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Bytes used, for the `store_size_bytes` metric.
    fn size(&self) -> u64;
}

/// What was in the store at start, decoded.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Persistent sessions, each with its queue in order.
    pub sessions: Vec<RestoredSession>,
    /// Retained messages with their mountpoint.
    pub retained: Vec<(String, Message)>,
}

/// Pending operations beyond which even a relaxed store makes publishers wait for commits:
/// the write queue stays bounded.
pub const MAX_PENDING: u64 = 65_536;

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 8_192;

/// How far the writer got.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    committed: Ticket,
    broken: bool,
}

/// The submission side: the ticket counter and the channel, under one lock so tickets reach
/// the writer in order.
#[derive(Debug)]
struct Submitter {
    next: Ticket,
    tx: Option<mpsc::Sender<(Ticket, Op)>>,
}

/// The store as the broker uses it: submit operations, wait for durability where needed.
#[derive(Debug)]
pub struct Store {
    submitter: Mutex<Submitter>,
    progress: watch::Sender<Progress>,
    pending: Arc<AtomicU64>,
    durability: Durability,
    broken: Arc<AtomicBool>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The store failed a commit: nothing more is acknowledged as durable.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the message store failed; see the log")]
pub struct StoreBroken;

impl Store {
    /// Opens the redb store in `dir` and reads it back.
    pub fn open_dir(
        dir: &std::path::Path,
        durability: Durability,
        metrics: Arc<Metrics>,
    ) -> Result<(Store, Recovered), StoreError> {
        let backend = disk::RedbBackend::open_dir(dir)?;
        Self::start(backend, durability, metrics)
    }

    /// Reads `backend` back, compacts it and starts the writer thread.
    pub fn start(
        mut backend: impl Backend,
        durability: Durability,
        metrics: Arc<Metrics>,
    ) -> Result<(Store, Recovered), StoreError> {
        let snapshot = backend.load()?;
        let recovered = record::decode_snapshot(snapshot, SystemTime::now(), Instant::now())?;
        backend.compact()?;
        metrics.store_size_bytes.set(backend.size());
        let (tx, rx) = mpsc::channel();
        let (progress, _) = watch::channel(Progress::default());
        let pending = Arc::new(AtomicU64::new(0));
        let broken = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            backend,
            rx,
            progress: progress.clone(),
            pending: pending.clone(),
            metrics,
            broken: broken.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("vmq-store".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok((
            Store {
                submitter: Mutex::new(Submitter {
                    next: 0,
                    tx: Some(tx),
                }),
                progress,
                pending,
                durability,
                broken,
                writer: Mutex::new(Some(handle)),
            },
            recovered,
        ))
    }

    /// Queues `op`; the returned ticket is durable once the writer has committed it.
    pub fn submit(&self, op: Op) -> Ticket {
        let Ok(mut s) = self.submitter.lock() else {
            return 0;
        };
        s.next += 1;
        let ticket = s.next;
        if let Some(tx) = &s.tx
            && tx.send((ticket, op)).is_ok()
        {
            self.pending.fetch_add(1, Ordering::Relaxed);
        }
        ticket
    }

    /// Whether an acknowledgement that depends on `ticket` must wait for it: always in durable
    /// mode, in relaxed mode only while the write queue is over its bound.
    pub fn must_wait(&self, ticket: Ticket) -> bool {
        let must = self.durability == Durability::Durable
            || self.pending.load(Ordering::Relaxed) > MAX_PENDING;
        must && self.progress.borrow().committed < ticket
    }

    /// Completes when `ticket` is durable; fails if the store broke first.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), StoreBroken> {
        let mut rx = self.progress.subscribe();
        match rx.wait_for(|p| p.committed >= ticket || p.broken).await {
            Ok(p) if p.committed >= ticket => Ok(()),
            _ => Err(StoreBroken),
        }
    }

    /// Whether a commit has failed.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Commits what is pending and stops the writer (waits for it). Later submissions are
    /// ignored.
    pub fn close(&self) {
        if let Ok(mut s) = self.submitter.lock() {
            s.tx = None;
        }
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = h.join();
            // Whatever is submitted from now on will never be committed.
            self.progress.send_modify(|p| p.broken = true);
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer thread: drains the channel, one transaction per batch.
struct Writer<B> {
    backend: B,
    rx: mpsc::Receiver<(Ticket, Op)>,
    progress: watch::Sender<Progress>,
    pending: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    broken: Arc<AtomicBool>,
}

impl<B: Backend> Writer<B> {
    fn run(mut self) {
        let mut batch = Vec::new();
        let mut writes = Vec::new();
        let mut last_size_check = Instant::now();
        while let Ok(first) = self.rx.recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let last = batch.last().map_or(0, |(t, _)| *t);
            let n = batch.len() as u64;
            writes.clear();
            let now = (SystemTime::now(), Instant::now());
            for (_, op) in batch.drain(..) {
                if matches!(op, Op::PutQueued { .. }) {
                    Metrics::inc(&self.metrics.store_messages_stored);
                }
                record::encode_op(op, now, &mut writes);
            }
            if self.broken.load(Ordering::Relaxed) {
                self.pending.fetch_sub(n, Ordering::Relaxed);
                continue;
            }
            let started = Instant::now();
            let result = self.backend.commit(&writes);
            let micros = started.elapsed().as_micros() as u64;
            Metrics::inc(&self.metrics.store_commits);
            Metrics::inc_by(&self.metrics.store_writes, writes.len() as u64);
            Metrics::inc_by(&self.metrics.store_write_latency_us_sum, micros);
            self.metrics.store_write_latency_us_max.raise_to(micros);
            self.pending.fetch_sub(n, Ordering::Relaxed);
            match result {
                Ok(()) => {
                    self.progress.send_modify(|p| p.committed = last);
                }
                Err(e) => {
                    Metrics::inc(&self.metrics.store_write_errors);
                    tracing::error!(error = %e, "message store commit failed; persisted messages are no longer acknowledged");
                    self.broken.store(true, Ordering::Relaxed);
                    self.progress.send_modify(|p| p.broken = true);
                }
            }
            if last_size_check.elapsed() >= Duration::from_secs(1) {
                last_size_check = Instant::now();
                self.metrics.store_size_bytes.set(self.backend.size());
            }
        }
        self.metrics.store_size_bytes.set(self.backend.size());
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The store key of a session: length-prefixed mountpoint and client id, so that one
/// session's key is never a prefix of another's.
pub fn session_key_bytes(mountpoint: &str, client_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + mountpoint.len() + client_id.len());
    put_str16(&mut k, mountpoint);
    put_str16(&mut k, client_id);
    k
}

fn put_str16(k: &mut Vec<u8>, s: &str) {
    let len = s.len().min(usize::from(u16::MAX));
    k.extend_from_slice(&(len as u16).to_be_bytes());
    k.extend_from_slice(&s.as_bytes()[..len]);
}

/// Reads a length-prefixed string from the front of `k`.
fn take_str16<'a>(k: &mut &'a [u8]) -> Option<&'a str> {
    let (len, rest) = k.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return None;
    }
    let (s, rest) = rest.split_at(len);
    *k = rest;
    std::str::from_utf8(s).ok()
}

/// The store key of a retained message: length-prefixed mountpoint, then the topic.
pub fn retained_key_bytes(mountpoint: &str, topic: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + mountpoint.len() + topic.len());
    put_str16(&mut k, mountpoint);
    k.extend_from_slice(topic.as_bytes());
    k
}

/// The store key of a queued message: the session's key and the big-endian sequence number
/// (so a session's queue is one contiguous range, in order).
pub fn queued_key_bytes(session: &[u8], seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(session.len() + 8);
    k.extend_from_slice(session);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}
