//! The relay: one bounded backlog and one writer task per pool connection. The hook caller
//! only writes its frame into the backlog its (mountpoint, client id) hashes to, so a client's
//! events keep their order and the caller never waits on the network.
//!
//! A backlog is one buffer of frames back to back (plus each frame's hook and length): the
//! caller encodes straight into it, and the writer sends a whole batch with one `write` of a
//! slice of it. No allocation or copy per event beyond the encoding itself.
//!
//! Writers take their connection from a bb8 pool (connect timeout, validation) and reconnect
//! with jittered exponential backoff; while a connection is down its backlog keeps filling and is
//! flushed on reconnect. A sidecar that half-closes its side (the SDK server does on graceful
//! shutdown) is noticed before the next write, the writer half-closes too, and the sidecar reads
//! everything that was sent: a sidecar restart loses nothing within the backlog.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::io;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::metrics::{DropReason, RelayMetrics};

/// Largest batch written in one go.
const BATCH_BYTES: usize = 256 * 1024;
/// After writing a batch smaller than this, the writer waits [`LINGER`] before the next one.
const SMALL_BATCH: usize = 16 * 1024;
/// How long a busy writer lets events gather: under a steady stream of events a connection
/// then takes one write per millisecond instead of one per event or two, which is most of what
/// relaying costs the broker. An event after a quiet spell is written at once.
const LINGER: Duration = Duration::from_millis(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A sidecar connection as the pool hands it out.
#[derive(Debug)]
pub struct SidecarConn {
    stream: TcpStream,
    broken: bool,
}

impl SidecarConn {
    /// Whether the sidecar has closed its side (or the socket failed). The sidecar never
    /// sends, so anything readable is either EOF or ignorable noise.
    fn peer_closed(&mut self) -> bool {
        let mut scratch = [0u8; 256];
        loop {
            match self.stream.try_read(&mut scratch) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }
}

/// Opens connections to the sidecar for bb8.
#[derive(Debug, Clone)]
pub struct Connector {
    addr: String,
}

impl bb8::ManageConnection for Connector {
    type Connection = SidecarConn;
    type Error = io::Error;

    async fn connect(&self) -> Result<SidecarConn, io::Error> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(SidecarConn {
            stream,
            broken: false,
        })
    }

    async fn is_valid(&self, conn: &mut SidecarConn) -> Result<(), io::Error> {
        if conn.peer_closed() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "sidecar closed",
            ));
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut SidecarConn) -> bool {
        conn.broken
    }
}

/// Encoded frames waiting for a connection.
#[derive(Debug, Default)]
struct Backlog {
    /// The frames, back to back.
    bytes: BytesMut,
    /// Hook index and length of each frame in `bytes`, in order.
    frames: VecDeque<(u8, u32)>,
}

/// One connection's backlog and the writer's wake-up.
#[derive(Debug)]
struct Lane {
    backlog: Mutex<Backlog>,
    notify: Notify,
    /// At most this many frames wait.
    capacity: usize,
    /// Frames taken from the backlog and being written.
    in_flight: AtomicUsize,
}

impl Lane {
    fn is_empty(&self) -> bool {
        self.backlog.lock().map_or(true, |b| b.frames.is_empty())
    }

    /// Takes frames from the front, up to [`BATCH_BYTES`] (at least one): their bytes, and
    /// their hooks into `hooks`.
    fn take(&self, hooks: &mut Vec<u8>) -> Option<Bytes> {
        let mut b = self.backlog.lock().ok()?;
        let mut total = 0;
        while let Some(&(hook, len)) = b.frames.front() {
            let len = len as usize;
            if total > 0 && total + len > BATCH_BYTES {
                break;
            }
            total += len;
            hooks.push(hook);
            b.frames.pop_front();
        }
        self.in_flight.store(hooks.len(), Relaxed);
        (total > 0).then(|| b.bytes.split_to(total).freeze())
    }
}

/// The relay's lanes and writers.
#[derive(Debug)]
pub struct Relay {
    lanes: Vec<Arc<Lane>>,
    metrics: Arc<RelayMetrics>,
    stop: CancellationToken,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Relay {
    /// Starts `pool_size` writers towards `addr`. Must run inside a tokio runtime.
    pub fn start(
        addr: String,
        pool_size: usize,
        backlog_size: usize,
        metrics: Arc<RelayMetrics>,
    ) -> Relay {
        let pool = bb8::Pool::builder()
            .max_size(pool_size as u32)
            .min_idle(None)
            .connection_timeout(CONNECT_TIMEOUT)
            .test_on_check_out(true)
            .retry_connection(false)
            .build_unchecked(Connector { addr });
        let stop = CancellationToken::new();
        let lanes: Vec<Arc<Lane>> = (0..pool_size)
            .map(|_| {
                Arc::new(Lane {
                    backlog: Mutex::new(Backlog::default()),
                    notify: Notify::new(),
                    capacity: backlog_size,
                    in_flight: AtomicUsize::new(0),
                })
            })
            .collect();
        for (i, lane) in lanes.iter().enumerate() {
            tokio::spawn(writer(
                i,
                lane.clone(),
                pool.clone(),
                metrics.clone(),
                stop.clone(),
            ));
        }
        Relay {
            lanes,
            metrics,
            stop,
        }
    }

    /// The lane (connection) of `key`'s events.
    pub fn lane_of(&self, key: (&str, &str)) -> usize {
        // A fixed-key hash (foldhash, as hashbrown uses): only the spread across lanes matters.
        let h = foldhash::fast::FixedState::with_seed(0).hash_one(key);
        (h % self.lanes.len() as u64) as usize
    }

    /// Lets `write` append one frame to the backlog of `key`'s connection, unless the backlog
    /// is full (then nothing is encoded: an absent sidecar costs a lock and a counter).
    /// `write` returns false if the event cannot be framed; whatever it wrote is taken back.
    /// Never blocks on the network; drops are counted here.
    pub fn push(
        &self,
        key: (&str, &str),
        hook_index: usize,
        write: impl FnOnce(&mut BytesMut) -> bool,
    ) {
        let lane_no = self.lane_of(key);
        let lane = &self.lanes[lane_no];
        let was_empty = {
            let Ok(mut b) = lane.backlog.lock() else {
                return;
            };
            if b.frames.len() >= lane.capacity {
                drop(b);
                self.metrics
                    .dropped(lane_no, hook_index, DropReason::BacklogFull);
                return;
            }
            let start = b.bytes.len();
            let ok = write(&mut b.bytes);
            let len = b.bytes.len() - start;
            if !ok || len == 0 || u32::try_from(len).is_err() {
                b.bytes.truncate(start);
                drop(b);
                self.metrics
                    .dropped(lane_no, hook_index, DropReason::EncodeError);
                return;
            }
            b.frames.push_back((hook_index as u8, len as u32));
            b.frames.len() == 1
        };
        // The writer only sleeps on an empty backlog: waking it once per burst is enough (a
        // notification with no one waiting is kept for the next wait).
        if was_empty {
            lane.notify.notify_one();
        }
    }

    /// Events waiting in all backlogs or being written: with the sent and dropped counters,
    /// every event is accounted for.
    pub fn backlog(&self) -> usize {
        self.lanes
            .iter()
            .map(|l| {
                l.backlog
                    .lock()
                    .map_or(0, |b| b.frames.len() + l.in_flight.load(Relaxed))
            })
            .sum()
    }
}

fn jittered(backoff: Duration) -> Duration {
    let ms = backoff.as_millis() as u64;
    Duration::from_millis(ms / 2 + fastrand::u64(0..=ms))
}

/// Writes one lane's backlog to the sidecar for as long as the relay lives.
async fn writer(
    lane_no: usize,
    lane: Arc<Lane>,
    pool: bb8::Pool<Connector>,
    metrics: Arc<RelayMetrics>,
    stop: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    // The hooks of the batch being written; a batch that could not be written because the
    // sidecar went away is kept here (with its bytes) and goes first on the next connection.
    let mut hooks: Vec<u8> = Vec::new();
    let mut unsent: Option<Bytes> = None;
    loop {
        // Only connect when there is something to send.
        while unsent.is_none() && lane.is_empty() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = lane.notify.notified() => {}
            }
        }
        let mut conn = tokio::select! {
            () = stop.cancelled() => return,
            c = pool.get_owned() => match c {
                Ok(c) => c,
                Err(e) => {
                    debug!(lane = lane_no, error = ?e, "sidecar unreachable; backing off");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(jittered(backoff)) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        backoff = BACKOFF_MIN;
        metrics.connects.fetch_add(1, Relaxed);
        metrics.connections_up.fetch_add(1, Relaxed);
        loop {
            let batch = match unsent.take() {
                Some(bytes) => Some(bytes),
                None => {
                    hooks.clear();
                    lane.take(&mut hooks)
                }
            };
            let Some(buf) = batch else {
                // Idle: wait for work, or notice the sidecar going away.
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = lane.notify.notified() => continue,
                    r = conn.stream.readable() => {
                        if r.is_err() || conn.peer_closed() {
                            break;
                        }
                        continue;
                    }
                }
            };
            if conn.peer_closed() {
                // Not written: it goes first on the next connection.
                unsent = Some(buf);
                break;
            }
            let written = conn.stream.write_all(&buf).await;
            match &written {
                Ok(()) => {
                    metrics.bytes_sent.fetch_add(buf.len() as u64, Relaxed);
                    for hook in &hooks {
                        metrics.sent(lane_no, usize::from(*hook), 1);
                    }
                }
                Err(e) => {
                    warn!(lane = lane_no, error = %e, events = hooks.len(), "sidecar connection died with events in flight");
                    for hook in &hooks {
                        metrics.dropped(lane_no, usize::from(*hook), DropReason::SocketDied);
                    }
                }
            }
            lane.in_flight.store(0, Relaxed);
            if written.is_err() {
                break;
            }
            if buf.len() < SMALL_BATCH {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(LINGER) => {}
                }
            }
        }
        // Tell the sidecar we are done so it can read to the end, then let the pool drop it.
        let _ = conn.stream.shutdown().await;
        conn.broken = true;
        metrics.connections_up.fetch_sub(1, Relaxed);
        drop(conn);
        if stop.is_cancelled() {
            return;
        }
    }
}
