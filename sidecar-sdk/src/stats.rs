//! Counters a sidecar operator wants to see: what came in, what was skipped, what failed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters, shared by a server and the codecs of its connections. Cheap to update from
/// many tasks (relaxed atomics); read them with [`Stats::snapshot`].
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_active: AtomicU64,
    pub(crate) connections_failed: AtomicU64,
    pub(crate) frames: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) skipped_frames: AtomicU64,
}

/// A point-in-time copy of [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_active: u64,
    /// Connections closed because of a fatal stream error (oversized length, truncated frame,
    /// socket error).
    pub connections_failed: u64,
    /// Non-empty frames read, whether they decoded or not.
    pub frames: u64,
    /// Bytes of complete frames read, length prefixes included.
    pub bytes: u64,
    /// Frames whose `Any` or inner message did not decode.
    pub decode_errors: u64,
    /// Zero-length frames (upstream emits them for events it could not encode), skipped.
    pub skipped_frames: u64,
}

impl Stats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_active: self.connections_active.load(Relaxed),
            connections_failed: self.connections_failed.load(Relaxed),
            frames: self.frames.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            decode_errors: self.decode_errors.load(Relaxed),
            skipped_frames: self.skipped_frames.load(Relaxed),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Relaxed);
    }
}
