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
//!
//! At least once (`vmq_events_sidecar.delivery`), a sidecar killed outright loses nothing
//! either: the writer numbers each run of frames (`acked.rs`), keeps it until the sidecar
//! acknowledges it, and on a new connection writes what is unacknowledged again first
//! (`writer.rs`); the backlog bound counts those kept events too.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::metrics::{DropReason, RelayMetrics};

mod acked;
mod conn;
mod writer;

pub use acked::{ACK_TYPE_URL, BATCH_TYPE_URL, Released};
use acked::{Unacked, read_acks};
pub use conn::{Connector, SidecarConn};
use writer::writer;

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
