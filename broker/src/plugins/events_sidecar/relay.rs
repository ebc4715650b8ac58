//! The relay: one bounded backlog and one writer task per pool connection. The hook caller
//! only pushes an encoded frame into the backlog its (mountpoint, client id) hashes to, so a
//! client's events keep their order and the caller never waits on the network.
//!
//! Writers take their connection from a bb8 pool (connect timeout, validation) and reconnect
//! with jittered exponential backoff; while a connection is down its backlog keeps filling and is
//! flushed on reconnect. A sidecar that half-closes its side (the SDK server does on graceful
//! shutdown) is noticed before the next write, the writer half-closes too, and the sidecar reads
//! everything that was sent: a sidecar restart loses nothing within the backlog.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
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

/// One connection's backlog: encoded frames with the index of their hook.
#[derive(Debug)]
struct Lane {
    queue: Mutex<VecDeque<(usize, Bytes)>>,
    notify: Notify,
    capacity: usize,
    /// Frames taken from the queue and being written.
    in_flight: AtomicUsize,
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
                    queue: Mutex::new(VecDeque::new()),
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

    fn lane(&self, key: (&str, &str)) -> &Lane {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        &self.lanes[(h.finish() % self.lanes.len() as u64) as usize]
    }

    /// Whether the backlog of `key`'s connection is full: then the event need not even be
    /// encoded (the sidecar is away or slow, and this is the hot path).
    pub fn is_full(&self, key: (&str, &str)) -> bool {
        let lane = self.lane(key);
        lane.queue.lock().is_ok_and(|q| q.len() >= lane.capacity)
    }

    /// Queues a frame for the connection of `key`; never blocks, counts a drop if the backlog
    /// is full.
    pub fn enqueue(&self, key: (&str, &str), hook_index: usize, frame: Bytes) {
        let lane = self.lane(key);
        {
            let Ok(mut q) = lane.queue.lock() else {
                return;
            };
            if q.len() >= lane.capacity {
                drop(q);
                self.metrics.dropped(hook_index, DropReason::BacklogFull);
                return;
            }
            q.push_back((hook_index, frame));
        }
        lane.notify.notify_one();
    }

    /// Events waiting in all backlogs or being written: with the sent and dropped counters,
    /// every event is accounted for.
    pub fn backlog(&self) -> usize {
        self.lanes
            .iter()
            .map(|l| {
                l.queue
                    .lock()
                    .map_or(0, |q| q.len() + l.in_flight.load(Relaxed))
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
    let mut batch: Vec<(usize, Bytes)> = Vec::new();
    let mut buf = BytesMut::new();
    loop {
        // Only connect when there is something to send.
        while lane.queue.lock().map_or(true, |q| q.is_empty()) {
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
            batch.clear();
            buf.clear();
            if let Ok(mut q) = lane.queue.lock() {
                while let Some((_, frame)) = q.front() {
                    if !batch.is_empty() && buf.len() + frame.len() > BATCH_BYTES {
                        break;
                    }
                    buf.extend_from_slice(frame);
                    if let Some(item) = q.pop_front() {
                        batch.push(item);
                    }
                }
                lane.in_flight.store(batch.len(), Relaxed);
            }
            if batch.is_empty() {
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
            }
            if conn.peer_closed() {
                // Not written yet: back to the front of the backlog for the next connection.
                if let Ok(mut q) = lane.queue.lock() {
                    for item in batch.drain(..).rev() {
                        q.push_front(item);
                    }
                    lane.in_flight.store(0, Relaxed);
                }
                break;
            }
            let written = conn.stream.write_all(&buf).await;
            match &written {
                Ok(()) => {
                    metrics.bytes_sent.fetch_add(buf.len() as u64, Relaxed);
                    for (hook, _) in &batch {
                        metrics.sent(*hook, 1);
                    }
                }
                Err(e) => {
                    warn!(lane = lane_no, error = %e, events = batch.len(), "sidecar connection died with events in flight");
                    for (hook, _) in &batch {
                        metrics.dropped(*hook, DropReason::SocketDied);
                    }
                }
            }
            lane.in_flight.store(0, Relaxed);
            if written.is_err() {
                break;
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
