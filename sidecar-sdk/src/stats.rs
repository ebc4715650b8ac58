//! Counters a sidecar operator wants to see: what came in, what was skipped, what failed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Copies of the per-frame counters: each codec counts into its own (picked in turn), so
/// connections handled on different threads do not fight over one cache line per frame.
const SHARDS: usize = 16;

/// Live counters, shared by a server and the codecs of its connections. Cheap to update from
/// many tasks (relaxed atomics); read them with [`Stats::snapshot`].
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_active: AtomicU64,
    pub(crate) connections_failed: AtomicU64,
    shards: [FrameCounters; SHARDS],
    next_shard: AtomicUsize,
}

/// One copy of the per-frame counters, on cache lines of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct FrameCounters {
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
        let sum = |c: fn(&FrameCounters) -> &AtomicU64| -> u64 {
            self.shards.iter().map(|s| c(s).load(Relaxed)).sum()
        };
        StatsSnapshot {
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_active: self.connections_active.load(Relaxed),
            connections_failed: self.connections_failed.load(Relaxed),
            frames: sum(|s| &s.frames),
            bytes: sum(|s| &s.bytes),
            decode_errors: sum(|s| &s.decode_errors),
            skipped_frames: sum(|s| &s.skipped_frames),
        }
    }

    /// The per-frame counters a new codec (connection) counts into.
    pub(crate) fn shard(&self) -> usize {
        self.next_shard.fetch_add(1, Relaxed) % SHARDS
    }

    /// The per-frame counters of `shard`.
    pub(crate) fn frames(&self, shard: usize) -> &FrameCounters {
        &self.shards[shard % SHARDS]
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Relaxed);
    }
}
