//! A lane's writer: takes runs of frames from its backlog and writes them to the sidecar, one
//! connection after another; at least once, numbers them, keeps them until acknowledged and
//! writes the unacknowledged ones again on a new connection.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::acked::batch_frame;
use super::conn::{Connector, SidecarConn};
use super::{
    ACK_STALL, BACKOFF_MAX, BACKOFF_MIN, Delivery, LINGER, Lane, SMALL_BATCH, STALL_CHECK, jittered,
};
use crate::plugins::events_sidecar::metrics::{DropReason, RelayMetrics};

/// Writes one lane's backlog to the sidecar for as long as the relay lives; when stopped, the
/// frames it holds and could not write are counted as dropped (`shutdown`).
pub(super) async fn writer(
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
