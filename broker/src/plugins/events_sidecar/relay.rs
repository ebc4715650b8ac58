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
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
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

    /// Empties the backlog, counting every frame in it as dropped for `reason`.
    fn discard(&self, lane_no: usize, metrics: &RelayMetrics, reason: DropReason) -> usize {
        let mut b = self.backlog.lock();
        let n = b.frames.len();
        for (hook, _) in b.frames.drain(..) {
            metrics.dropped(lane_no, usize::from(hook), reason);
        }
        b.bytes.clear();
        n
    }
}

/// The relay's lanes and writers.
#[derive(Debug)]
pub struct Relay {
    lanes: Vec<Arc<Lane>>,
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
        let writers = TaskTracker::new();
        for (i, lane) in lanes.iter().enumerate() {
            writers.spawn(writer(
                i,
                lane.clone(),
                pool.clone(),
                metrics.clone(),
                stop.clone(),
            ));
        }
        writers.close();
        Relay {
            lanes,
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
                let waiting = l.backlog.lock().frames.len();
                waiting + l.in_flight.load(Relaxed)
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
    lane: Arc<Lane>,
    pool: bb8::Pool<Connector>,
    metrics: Arc<RelayMetrics>,
    stop: CancellationToken,
) {
    // The frames of the batch being written (hook, length); a batch that could not be written
    // because the sidecar went away is kept (with its bytes) and goes first on the next
    // connection.
    let mut frames: Vec<(u8, u32)> = Vec::new();
    let mut unsent: Option<Bytes> = None;
    write_lane(
        lane_no,
        &lane,
        &pool,
        &metrics,
        &stop,
        &mut frames,
        &mut unsent,
    )
    .await;
    if unsent.is_some() {
        for (hook, _) in frames.drain(..) {
            metrics.dropped(lane_no, usize::from(hook), DropReason::Shutdown);
        }
    }
    lane.in_flight.store(0, Relaxed);
}

async fn write_lane(
    lane_no: usize,
    lane: &Lane,
    pool: &bb8::Pool<Connector>,
    metrics: &RelayMetrics,
    stop: &CancellationToken,
    frames: &mut Vec<(u8, u32)>,
    unsent: &mut Option<Bytes>,
) {
    let mut backoff = BACKOFF_MIN;
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
                    frames.clear();
                    lane.take(frames)
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
                *unsent = Some(buf);
                break;
            }
            // Written piece by piece, so that a stop in the middle knows which frames got out.
            let mut off = 0;
            let written: Result<(), Option<io::Error>> = loop {
                if off == buf.len() {
                    break Ok(());
                }
                tokio::select! {
                    w = conn.stream.write(&buf[off..]) => match w {
                        Ok(0) => break Err(Some(io::ErrorKind::WriteZero.into())),
                        Ok(n) => off += n,
                        Err(e) => break Err(Some(e)),
                    },
                    () = stop.cancelled() => break Err(None),
                }
            };
            metrics.bytes_sent.fetch_add(off as u64, Relaxed);
            match &written {
                Ok(()) => {
                    // Counted per hook once per batch, not per frame.
                    let mut per_hook = [0u64; 13];
                    for (hook, _) in frames.iter() {
                        if let Some(n) = per_hook.get_mut(usize::from(*hook)) {
                            *n += 1;
                        }
                    }
                    for (hook, n) in per_hook.into_iter().enumerate().filter(|(_, n)| *n > 0) {
                        metrics.sent(lane_no, hook, n);
                    }
                }
                Err(Some(e)) => {
                    warn!(lane = lane_no, error = %e, events = frames.len(), "sidecar connection died with events in flight");
                    for (hook, _) in frames.iter() {
                        metrics.dropped(lane_no, usize::from(*hook), DropReason::SocketDied);
                    }
                }
                Err(None) => {
                    // Stopped while the sidecar was too slow to take the batch: the frames the
                    // socket took are sent (the sidecar reads them before our FIN), the rest
                    // dropped; the sidecar may see a partial last frame.
                    let mut end = 0;
                    for (hook, len) in frames.iter() {
                        end += *len as usize;
                        if end <= off {
                            metrics.sent(lane_no, usize::from(*hook), 1);
                        } else {
                            metrics.dropped(lane_no, usize::from(*hook), DropReason::Shutdown);
                        }
                    }
                }
            }
            frames.clear();
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

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

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
        let relay = Relay::start(addr, 2, 500, metrics.clone());
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
        let relay = Relay::start(addr, 3, 100, metrics.clone());
        push(&relay, 250);
        let drained = relay.drain(Duration::from_millis(50)).await;
        assert!(!drained.complete);
        assert_eq!(drained.waiting, 250);
        assert_eq!(drained.dropped, 250);
        assert_eq!(relay.backlog(), 0);
        assert_eq!(metrics.total_dropped_for(DropReason::Shutdown), 250);
        assert_eq!(accounted(&relay, &metrics), 250);
    }
}
