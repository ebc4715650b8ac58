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
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::metrics::{DropReason, RelayMetrics};

mod acked;

pub use acked::{ACK_TYPE_URL, BATCH_TYPE_URL, Released};
use acked::{Unacked, batch_frame, read_acks};

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
/// How often a drain looks whether the backlogs are empty.
const DRAIN_POLL: Duration = Duration::from_millis(5);
/// At least once: by default, events unacknowledged this long with no acknowledgement moving
/// make the lane "stalled" (logged, and counted in `sidecar_ack_stalled_lanes`).
pub const ACK_STALL: Duration = Duration::from_secs(10);
/// At least once: how often an idle writer with unacknowledged events looks for a stall (at
/// most; a shorter ack timeout is looked at more often).
const STALL_CHECK: Duration = Duration::from_secs(1);
/// What the sidecar may have sent and the writer not yet read (acknowledgements are small).
const MAX_INBOX: usize = 64 * 1024;

/// How the relay delivers (`vmq_events_sidecar.delivery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Written once; what the sidecar had not handled when it died is lost (VerneMQ's way, and
    /// the default: the bytes on the wire are exactly the events).
    AtMostOnce,
    /// Numbered, kept until acknowledged, written again after a reconnect.
    AtLeastOnce {
        /// This broker run's epoch (random, never 0).
        epoch: u64,
        /// How long events may wait for an acknowledgement before the lane is reported
        /// stalled (`vmq_events_sidecar.ack_timeout`).
        ack_timeout: Duration,
    },
}

/// A sidecar connection as the pool hands it out.
#[derive(Debug)]
pub struct SidecarConn {
    stream: TcpStream,
    broken: bool,
    /// At least once: what the sidecar sent (acknowledgements) and is not read yet.
    inbox: BytesMut,
}

impl SidecarConn {
    /// Reads what the sidecar sent, keeping it in `inbox` if `keep` (at least once: its
    /// acknowledgements), discarding it otherwise (a sidecar at most once has nothing to say).
    /// True if the sidecar has closed its side, the socket failed, or the inbox overflowed.
    fn read_incoming(&mut self, keep: bool) -> bool {
        let mut scratch = [0u8; 1024];
        loop {
            match self.stream.try_read(&mut scratch) {
                Ok(0) => return true,
                Ok(n) if keep => {
                    if self.inbox.len() + n > MAX_INBOX {
                        return true;
                    }
                    self.inbox.extend_from_slice(&scratch[..n]);
                }
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
            inbox: BytesMut::new(),
        })
    }

    async fn is_valid(&self, conn: &mut SidecarConn) -> Result<(), io::Error> {
        // A pooled connection is only checked out by its own lane's writer, which read what it
        // needed before giving it back: anything left is stale.
        conn.inbox.clear();
        if conn.read_incoming(false) {
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
    /// At least once: written, waiting for the sidecar's acknowledgement (only the lane's
    /// writer touches it; `unacked_len` is its size for the others).
    unacked: Mutex<Unacked>,
    unacked_len: AtomicUsize,
    /// At least once: events have waited the ack timeout without an acknowledgement.
    stalled: AtomicBool,
}

impl Lane {
    fn is_empty(&self) -> bool {
        self.backlog.lock().frames.is_empty()
    }

    /// Takes frames from the front, up to [`BATCH_BYTES`] (at least one): their bytes, and
    /// their hooks and lengths into `frames`.
    fn take(&self, frames: &mut Vec<(u8, u32)>) -> Option<Bytes> {
        let mut b = self.backlog.lock();
        let mut total = 0;
        while let Some(&(hook, len)) = b.frames.front() {
            let n = len as usize;
            if total > 0 && total + n > BATCH_BYTES {
                break;
            }
            total += n;
            frames.push((hook, len));
            b.frames.pop_front();
        }
        self.in_flight.store(frames.len(), Relaxed);
        (total > 0).then(|| b.bytes.split_to(total).freeze())
    }

    /// Empties the backlog and forgets what waits for an acknowledgement, counting every
    /// frame as dropped for `reason`.
    fn discard(&self, lane_no: usize, metrics: &RelayMetrics, reason: DropReason) -> usize {
        let mut b = self.backlog.lock();
        let mut n = b.frames.len();
        for (hook, _) in b.frames.drain(..) {
            metrics.dropped(lane_no, usize::from(hook), reason);
        }
        b.bytes.clear();
        let mut unacked = self.unacked.lock();
        for hook in unacked.clear() {
            metrics.dropped(lane_no, usize::from(hook), reason);
            n += 1;
        }
        self.unacked_len.store(0, Relaxed);
        n
    }

    /// At least once: applies the acknowledgements in `conn`'s inbox. False if the sidecar
    /// acknowledged events never written (it is confused: the connection is dropped).
    fn apply_acks(
        &self,
        conn: &mut SidecarConn,
        (epoch, lane_no, ack_timeout): (u64, usize, Duration),
        metrics: &RelayMetrics,
    ) -> bool {
        let seqs = match read_acks(&mut conn.inbox, epoch, lane_no as u32) {
            Ok(seqs) => seqs,
            Err(e) => {
                warn!(lane = lane_no, error = %e, "closing the sidecar connection");
                return false;
            }
        };
        let mut unacked = self.unacked.lock();
        for seq in seqs {
            let Some(released) = unacked.ack(seq) else {
                warn!(
                    lane = lane_no,
                    seq, "sidecar acknowledged events never written; closing the connection"
                );
                return false;
            };
            metrics.acknowledged(lane_no, &released);
        }
        self.unacked_len.store(unacked.len(), Relaxed);
        if self.stalled.load(Relaxed) && !unacked.stalled(ack_timeout) {
            self.stalled.store(false, Relaxed);
            metrics.stalled_lanes.fetch_sub(1, Relaxed);
            tracing::info!(lane = lane_no, "sidecar acknowledges events again");
        }
        true
    }

    /// At least once: notes (once) that events wait for an acknowledgement too long.
    fn check_stall(&self, lane_no: usize, ack_timeout: Duration, metrics: &RelayMetrics) {
        let unacked = self.unacked.lock();
        if !self.stalled.load(Relaxed) && unacked.stalled(ack_timeout) {
            self.stalled.store(true, Relaxed);
            metrics.stalled_lanes.fetch_add(1, Relaxed);
            warn!(
                lane = lane_no,
                waiting = unacked.len(),
                "sidecar has not acknowledged events for {:?}: is it running in at-least-once mode (vmq_events_sidecar.delivery)? Events are kept until the backlog is full, then dropped (backlog_full)",
                ack_timeout
            );
        }
    }
}

/// The relay's lanes and writers.
#[derive(Debug)]
pub struct Relay {
    lanes: Vec<Arc<Lane>>,
    delivery: Delivery,
    metrics: Arc<RelayMetrics>,
    /// Cancelled to make the writers stop at once (what they hold is counted as dropped).
    stop: CancellationToken,
    writers: TaskTracker,
}

/// What a drain at shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Events that were waiting when the drain began.
    pub waiting: usize,
    /// Of those and any that came after, the ones still not written when the time ran out:
    /// counted as dropped with reason `shutdown`.
    pub dropped: u64,
    /// Whether everything was written in time.
    pub complete: bool,
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
        delivery: Delivery,
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
                    unacked: Mutex::default(),
                    unacked_len: AtomicUsize::new(0),
                    stalled: AtomicBool::new(false),
                })
            })
            .collect();
        let writers = TaskTracker::new();
        for (i, lane) in lanes.iter().enumerate() {
            writers.spawn(writer(
                i,
                delivery,
                lane.clone(),
                pool.clone(),
                metrics.clone(),
                stop.clone(),
            ));
        }
        writers.close();
        Relay {
            lanes,
            delivery,
            metrics,
            stop,
            writers,
        }
    }

    /// Writes out what is waiting, for at most `within`, then stops the writers: whatever is
    /// still not written (the sidecar is away, or reads too slowly) is counted as dropped with
    /// reason `shutdown`. Afterwards every event pushed is either sent or counted as dropped.
    pub async fn drain(&self, within: Duration) -> Drained {
        let waiting = self.backlog();
        let before = self.metrics.total_dropped_for(DropReason::Shutdown);
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(within)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        while self.backlog() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        self.stop.cancel();
        // Writers stop at their next await, counting the batch they hold.
        self.writers.wait().await;
        for (i, lane) in self.lanes.iter().enumerate() {
            lane.discard(i, &self.metrics, DropReason::Shutdown);
        }
        let dropped = self.metrics.total_dropped_for(DropReason::Shutdown) - before;
        Drained {
            waiting,
            dropped,
            complete: dropped == 0,
        }
    }

    /// How events are delivered.
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    /// At least once: events written and waiting for an acknowledgement.
    pub fn unacked(&self) -> usize {
        self.lanes.iter().map(|l| l.unacked_len.load(Relaxed)).sum()
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
            let mut b = lane.backlog.lock();
            if b.frames.len() + lane.unacked_len.load(Relaxed) >= lane.capacity {
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

    /// Events waiting in all backlogs, being written, or (at least once) waiting for an
    /// acknowledgement: with the sent and dropped counters, every event is accounted for.
    pub fn backlog(&self) -> usize {
        self.lanes
            .iter()
            .map(|l| {
                let waiting = l.backlog.lock().frames.len();
                waiting + l.in_flight.load(Relaxed) + l.unacked_len.load(Relaxed)
            })
            .sum()
    }
}

fn jittered(backoff: Duration) -> Duration {
    let ms = backoff.as_millis() as u64;
    Duration::from_millis(ms / 2 + fastrand::u64(0..=ms))
}

/// Writes one lane's backlog to the sidecar for as long as the relay lives; when stopped, the
/// frames it holds and could not write are counted as dropped (`shutdown`).
async fn writer(
    lane_no: usize,
    delivery: Delivery,
    lane: Arc<Lane>,
    pool: bb8::Pool<Connector>,
    metrics: Arc<RelayMetrics>,
    stop: CancellationToken,
) {
    let mut w = Writer {
        lane_no,
        delivery,
        lane: &lane,
        metrics: &metrics,
        stop: &stop,
        frames: Vec::new(),
        unsent: None,
    };
    w.run(&pool).await;
    if w.unsent.is_some() {
        for (hook, _) in w.frames.drain(..) {
            metrics.dropped(lane_no, usize::from(hook), DropReason::Shutdown);
        }
    }
    lane.in_flight.store(0, Relaxed);
}

/// One lane's writer.
struct Writer<'a> {
    lane_no: usize,
    delivery: Delivery,
    lane: &'a Lane,
    metrics: &'a RelayMetrics,
    stop: &'a CancellationToken,
    /// The frames of the batch being written (hook, length).
    frames: Vec<(u8, u32)>,
    /// At most once: a batch that could not be written because the sidecar went away; it goes
    /// first on the next connection. (At least once, such a batch is among the unacknowledged,
    /// which a new connection writes first anyway.)
    unsent: Option<Bytes>,
}

/// How writing a batch ended.
enum Written {
    /// Every byte is in the socket.
    All,
    /// The connection failed after `n` bytes.
    Failed(usize, io::Error),
    /// Stopped after `n` bytes.
    Stopped(usize),
}

impl Writer<'_> {
    fn epoch(&self) -> Option<u64> {
        match self.delivery {
            Delivery::AtMostOnce => None,
            Delivery::AtLeastOnce { epoch, .. } => Some(epoch),
        }
    }

    fn ack_timeout(&self) -> Duration {
        match self.delivery {
            Delivery::AtMostOnce => ACK_STALL,
            Delivery::AtLeastOnce { ack_timeout, .. } => ack_timeout,
        }
    }

    /// Whether the connection is still good to write on: reads what the sidecar sent
    /// (acknowledgements at least once) and notices it closing.
    fn connection_good(&self, conn: &mut SidecarConn) -> bool {
        let epoch = self.epoch();
        if conn.read_incoming(epoch.is_some()) {
            return false;
        }
        match epoch {
            Some(epoch) => self.lane.apply_acks(
                conn,
                (epoch, self.lane_no, self.ack_timeout()),
                self.metrics,
            ),
            None => true,
        }
    }

    async fn run(&mut self, pool: &bb8::Pool<Connector>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            // Only connect when there is something to send.
            while self.unsent.is_none()
                && self.lane.is_empty()
                && self.lane.unacked_len.load(Relaxed) == 0
            {
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    () = self.lane.notify.notified() => {}
                }
            }
            let mut conn = tokio::select! {
                () = self.stop.cancelled() => return,
                c = pool.get_owned() => match c {
                    Ok(c) => c,
                    Err(e) => {
                        debug!(lane = self.lane_no, error = ?e, "sidecar unreachable; backing off");
                        tokio::select! {
                            () = self.stop.cancelled() => return,
                            () = tokio::time::sleep(jittered(backoff)) => {}
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                },
            };
            backoff = BACKOFF_MIN;
            self.metrics.connects.fetch_add(1, Relaxed);
            self.metrics.connections_up.fetch_add(1, Relaxed);
            self.serve(&mut conn).await;
            // Tell the sidecar we are done so it can read to the end, then let the pool drop it.
            let _ = conn.stream.shutdown().await;
            conn.broken = true;
            self.metrics.connections_up.fetch_sub(1, Relaxed);
            drop(conn);
            if self.stop.is_cancelled() {
                return;
            }
        }
    }

    /// Writes on one connection until it fails or the relay stops.
    async fn serve(&mut self, conn: &mut SidecarConn) {
        if self.epoch().is_some() && !self.resend(conn).await {
            return;
        }
        let mut stall_check = tokio::time::interval(
            STALL_CHECK
                .min(self.ack_timeout() / 4)
                .max(Duration::from_millis(10)),
        );
        loop {
            let batch = match self.unsent.take() {
                Some(bytes) => Some(bytes),
                None => {
                    self.frames.clear();
                    self.lane.take(&mut self.frames)
                }
            };
            let Some(buf) = batch else {
                // Idle: wait for work, acknowledgements, or the sidecar going away.
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    () = self.lane.notify.notified() => continue,
                    r = conn.stream.readable() => {
                        if r.is_err() || !self.connection_good(conn) {
                            return;
                        }
                        continue;
                    }
                    _ = stall_check.tick(), if self.epoch().is_some() => {
                        self.lane.check_stall(self.lane_no, self.ack_timeout(), self.metrics);
                        continue;
                    }
                }
            };
            if !self.connection_good(conn) {
                self.keep_unwritten(buf);
                return;
            }
            let header = self.number(&buf);
            // At least once the Batch frame and the run go out in one vectored write.
            let written = match &header {
                Some(header) => write_all(conn, &[header, &buf], self.stop).await,
                None => write_all(conn, &[&buf], self.stop).await,
            };
            let ok = self.account(&written, buf.len(), header.is_some());
            self.frames.clear();
            self.lane.in_flight.store(0, Relaxed);
            if !ok {
                return;
            }
            if buf.len() < SMALL_BATCH {
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    () = tokio::time::sleep(LINGER) => {}
                }
            }
        }
    }

    /// At least once: keeps the batch just taken among the unacknowledged (numbered) and gives
    /// the `Batch` frame to write before it. `None` at most once.
    fn number(&mut self, batch: &Bytes) -> Option<Bytes> {
        let epoch = self.epoch()?;
        let mut unacked = self.lane.unacked.lock();
        let first = unacked.keep(&self.frames, batch.clone());
        self.lane.unacked_len.store(unacked.len(), Relaxed);
        self.lane.in_flight.store(0, Relaxed);
        Some(batch_frame(
            epoch,
            self.lane_no as u32,
            first,
            self.frames.len(),
            false,
        ))
    }

    /// A batch taken but not written because the connection is gone: at most once it goes
    /// first on the next connection; at least once it is numbered and kept with the other
    /// unacknowledged events, which a new connection writes first.
    fn keep_unwritten(&mut self, buf: Bytes) {
        if self.epoch().is_some() {
            self.number(&buf);
            self.frames.clear();
        } else {
            self.unsent = Some(buf);
        }
    }

    /// At least once, on a new connection: writes every unacknowledged event again, oldest
    /// first, each run after a `Batch` frame saying it is re-sent. False if the connection
    /// failed (they stay kept).
    async fn resend(&mut self, conn: &mut SidecarConn) -> bool {
        let Some(epoch) = self.epoch() else {
            return true;
        };
        let runs: Vec<(u64, usize, Bytes)> = self
            .lane
            .unacked
            .lock()
            .resend()
            .map(|(first, frames, bytes)| (first, frames.len(), bytes))
            .collect();
        for (first, count, bytes) in runs {
            let header = batch_frame(epoch, self.lane_no as u32, first, count, true);
            match write_all(conn, &[&header, &bytes], self.stop).await {
                Written::All => {}
                Written::Failed(_, e) => {
                    warn!(lane = self.lane_no, error = %e, "sidecar connection died while re-sending");
                    return false;
                }
                Written::Stopped(_) => return false,
            }
            self.metrics.resent.fetch_add(count as u64, Relaxed);
        }
        true
    }

    /// Counts how writing the current batch ended; false if the connection is done.
    fn account(&mut self, written: &Written, len: usize, at_least_once: bool) -> bool {
        let (lane_no, metrics) = (self.lane_no, self.metrics);
        let off = match written {
            Written::All => {
                metrics.bytes_sent.fetch_add(len as u64, Relaxed);
                if at_least_once {
                    // Counted as sent when acknowledged.
                    return true;
                }
                // Counted per hook once per batch, not per frame.
                let mut per_hook = [0u64; 13];
                for (hook, _) in &self.frames {
                    if let Some(n) = per_hook.get_mut(usize::from(*hook)) {
                        *n += 1;
                    }
                }
                for (hook, n) in per_hook.into_iter().enumerate().filter(|(_, n)| *n > 0) {
                    metrics.sent(lane_no, hook, n);
                }
                return true;
            }
            Written::Failed(off, e) => {
                warn!(lane = lane_no, error = %e, events = self.frames.len(), "sidecar connection died with events in flight");
                *off
            }
            Written::Stopped(off) => *off,
        };
        metrics.bytes_sent.fetch_add(off as u64, Relaxed);
        if at_least_once {
            // Kept among the unacknowledged: written again on the next connection, or counted
            // as dropped by the drain at shutdown.
            return false;
        }
        match written {
            Written::Failed(..) => {
                for (hook, _) in &self.frames {
                    metrics.dropped(lane_no, usize::from(*hook), DropReason::SocketDied);
                }
            }
            _ => {
                // Stopped while the sidecar was too slow to take the batch: the frames the
                // socket took are sent (the sidecar reads them before our FIN), the rest
                // dropped; the sidecar may see a partial last frame.
                let mut end = 0;
                for (hook, len) in &self.frames {
                    end += *len as usize;
                    if end <= off {
                        metrics.sent(lane_no, usize::from(*hook), 1);
                    } else {
                        metrics.dropped(lane_no, usize::from(*hook), DropReason::Shutdown);
                    }
                }
            }
        }
        false
    }
}

/// Writes `parts` one after the other (vectored: one system call for all of them when the socket
/// takes it), piece by piece, so that a stop in the middle knows which bytes got out (the
/// offsets in `Written` count from the start of the first part).
async fn write_all(conn: &mut SidecarConn, parts: &[&[u8]], stop: &CancellationToken) -> Written {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut off = 0;
    while off < total {
        // The parts from `off` on.
        let mut skip = off;
        let slices: Vec<IoSlice<'_>> = parts
            .iter()
            .filter_map(|p| {
                if skip >= p.len() {
                    skip -= p.len();
                    None
                } else {
                    let s = IoSlice::new(&p[skip..]);
                    skip = 0;
                    Some(s)
                }
            })
            .collect();
        tokio::select! {
            w = conn.stream.write_vectored(&slices) => match w {
                Ok(0) => return Written::Failed(off, io::ErrorKind::WriteZero.into()),
                Ok(n) => off += n,
                Err(e) => return Written::Failed(off, e),
            },
            () = stop.cancelled() => return Written::Stopped(off),
        }
    }
    Written::All
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// Pushes `n` frames of 100 bytes for (a different) client each.
    fn push(relay: &Relay, n: usize) {
        for i in 0..n {
            let id = format!("c{i}");
            relay.push(("", &id), 0, |buf| {
                buf.put_u32(96);
                buf.put_slice(&[7u8; 96]);
                true
            });
        }
    }

    fn accounted(relay: &Relay, m: &RelayMetrics) -> u64 {
        m.total_sent() + m.total_dropped() + relay.backlog() as u64
    }

    async fn until(mut done: impl FnMut() -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("in time");
    }

    #[tokio::test]
    async fn every_event_is_sent_dropped_or_waiting_across_a_socket_death() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let metrics = Arc::new(RelayMetrics::default());
        let relay = Relay::start(addr, 2, 500, Delivery::AtMostOnce, metrics.clone());
        // More than the backlogs hold: the rest is dropped (backlog full) and counted.
        push(&relay, 1500);
        assert_eq!(accounted(&relay, &metrics), 1500);
        assert!(metrics.total_dropped_for(DropReason::BacklogFull) > 0);
        // A sidecar that reads a little, then dies with data unread.
        let (mut a, _) = listener.accept().await.unwrap();
        let (mut b, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 1000];
        let _ = a.read(&mut buf).await.unwrap();
        let _ = b.read(&mut buf).await.unwrap();
        drop((a, b));
        // A new sidecar: every connection it accepts is read to its end.
        let (bytes_tx, mut bytes_rx) = tokio::sync::mpsc::unbounded_channel();
        let acceptor = tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let bytes_tx = bytes_tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut n = 0;
                    while let Ok(k) = s.read(&mut buf).await {
                        if k == 0 {
                            break;
                        }
                        n += k;
                    }
                    let _ = bytes_tx.send(n);
                });
            }
        });
        // Events keep coming: writers find their sockets dead (a failed write, counted as
        // socket_died, or the sidecar's end seen before writing) and reconnect.
        let mut pushed = 1500;
        tokio::time::timeout(Duration::from_secs(10), async {
            while metrics.connects.load(Relaxed) < 4 {
                push(&relay, 20);
                pushed += 20;
                assert_eq!(accounted(&relay, &metrics), pushed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("writers reconnect");
        until(|| relay.backlog() == 0).await;
        assert_eq!(accounted(&relay, &metrics), pushed);
        let drained = relay.drain(Duration::from_secs(1)).await;
        assert!(drained.complete);
        assert_eq!(accounted(&relay, &metrics), pushed);
        // The new connections end (the writers shut them down): whole frames only.
        for _ in 0..2 {
            let bytes = tokio::time::timeout(Duration::from_secs(10), bytes_rx.recv())
                .await
                .expect("connection closed after the drain")
                .unwrap();
            assert_eq!(bytes % 100, 0);
        }
        acceptor.abort();
    }

    #[tokio::test]
    async fn a_drain_with_no_sidecar_counts_everything_as_dropped_at_shutdown() {
        // A port nobody listens on.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap().to_string();
        drop(free);
        let metrics = Arc::new(RelayMetrics::default());
        let relay = Relay::start(addr, 3, 100, Delivery::AtMostOnce, metrics.clone());
        push(&relay, 250);
        let drained = relay.drain(Duration::from_millis(50)).await;
        assert!(!drained.complete);
        assert_eq!(drained.waiting, 250);
        assert_eq!(drained.dropped, 250);
        assert_eq!(relay.backlog(), 0);
        assert_eq!(metrics.total_dropped_for(DropReason::Shutdown), 250);
        assert_eq!(accounted(&relay, &metrics), 250);
    }

    /// Reads frames from `s` (into `buf`) until `n` event frames arrived after their `Batch`
    /// frames; returns each event's (seq, resent) and body.
    async fn read_numbered(
        s: &mut TcpStream,
        buf: &mut BytesMut,
        n: usize,
    ) -> Vec<(u64, bool, Vec<u8>)> {
        use prost::Message;
        use vmq_sidecar_sdk::proto::{Any, Batch};
        let mut out = Vec::new();
        let mut next: Option<(u64, bool)> = None;
        while out.len() < n {
            while buf.len() >= 4 {
                let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if buf.len() < 4 + len {
                    break;
                }
                let frame = buf.split_to(4 + len);
                let body = &frame[4..];
                match Any::decode(body) {
                    Ok(any) if any.type_url == BATCH_TYPE_URL => {
                        let b = Batch::decode(&any.value[..]).unwrap();
                        next = Some((b.first_seq, b.resent));
                    }
                    _ => {
                        let (seq, resent) = next.expect("an event frame after a Batch frame");
                        out.push((seq, resent, body.to_vec()));
                        next = Some((seq + 1, resent));
                    }
                }
            }
            if out.len() < n {
                let mut chunk = [0u8; 4096];
                let k = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
                    .await
                    .expect("frames in time")
                    .unwrap();
                assert!(k > 0, "connection closed with {} of {n} events", out.len());
                buf.extend_from_slice(&chunk[..k]);
            }
        }
        out
    }

    #[tokio::test]
    async fn at_least_once_keeps_events_until_acknowledged_and_resends_the_rest() {
        use tokio::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let metrics = Arc::new(RelayMetrics::default());
        let epoch = 77;
        let delivery = Delivery::AtLeastOnce {
            epoch,
            ack_timeout: Duration::from_millis(300),
        };
        let relay = Relay::start(addr, 1, 50, delivery, metrics.clone());
        push(&relay, 10);
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        let first = read_numbered(&mut s, &mut buf, 10).await;
        let seqs: Vec<u64> = first.iter().map(|(seq, _, _)| *seq).collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
        assert!(first.iter().all(|(_, resent, _)| !resent));
        // Written but not acknowledged: still counted as waiting, and the backlog bound holds
        // them too (50 in all: 40 more fit, the rest is dropped).
        assert_eq!(relay.backlog(), 10);
        push(&relay, 45);
        until(|| relay.backlog() == 50).await;
        assert_eq!(metrics.total_dropped_for(DropReason::BacklogFull), 5);
        // Nothing acknowledged for longer than the ack timeout: the lane is reported stalled;
        // an acknowledgement clears it. Then the sidecar dies with the rest unacknowledged.
        until(|| metrics.stalled_lanes.load(Relaxed) == 1).await;
        s.write_all(&vmq_sidecar_sdk::ack_frame(epoch, 0, 4))
            .await
            .unwrap();
        until(|| metrics.acked.load(Relaxed) == 4).await;
        until(|| metrics.stalled_lanes.load(Relaxed) == 0).await;
        let _ = read_numbered(&mut s, &mut buf, 40).await;
        drop(s);
        // The next connection gets 5..=50 again, in order, marked re-sent, bodies unchanged.
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        let again = read_numbered(&mut s, &mut buf, 46).await;
        let seqs: Vec<u64> = again.iter().map(|(seq, _, _)| *seq).collect();
        assert_eq!(seqs, (5..=50).collect::<Vec<_>>());
        assert!(again.iter().all(|(_, resent, _)| *resent));
        assert_eq!(again[0].2, first[4].2);
        assert_eq!(metrics.resent.load(Relaxed), 46);
        // New events after the re-sent ones continue the numbering.
        push(&relay, 1);
        let new = read_numbered(&mut s, &mut buf, 1).await;
        assert_eq!((new[0].0, new[0].1), (51, false));
        // An acknowledgement of another epoch changes nothing; this one releases everything.
        s.write_all(&vmq_sidecar_sdk::ack_frame(epoch + 1, 0, 51))
            .await
            .unwrap();
        s.write_all(&vmq_sidecar_sdk::ack_frame(epoch, 0, 51))
            .await
            .unwrap();
        until(|| relay.backlog() == 0).await;
        assert_eq!(metrics.acked.load(Relaxed), 51);
        assert_eq!(metrics.total_dropped(), 5);
        // Acknowledging what was never written: the connection is closed.
        s.write_all(&vmq_sidecar_sdk::ack_frame(epoch, 0, 99))
            .await
            .unwrap();
        push(&relay, 1);
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the relay closed the connection");
        let drained = relay.drain(Duration::from_millis(200)).await;
        assert!(!drained.complete);
        // Sent (acknowledged) 51, dropped 5 (backlog full) and 1 (never acknowledged, shutdown).
        assert_eq!(metrics.total_dropped_for(DropReason::Shutdown), 1);
        assert_eq!(accounted(&relay, &metrics), 57);
    }
}
