//! Every relayed event is counted: sent, or dropped with a reason, per hook. Exposed later by
//! `/metrics` as VerneMQ's `sidecar_events{hook}` / `sidecar_events_error{hook}` plus ours.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::config::RELAYABLE;
use crate::hooks::Hook;

/// Why an event was not delivered to the sidecar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The connection's backlog was full (sidecar slow or away too long).
    BacklogFull,
    /// A sampling rule left it out.
    SampledOut,
    /// The socket failed while the event was being written.
    SocketDied,
    /// The event could not be encoded.
    EncodeError,
    /// The broker stopped before the event could be written (sidecar away or too slow for
    /// `vmq_events_sidecar.shutdown_timeout`).
    Shutdown,
}

impl DropReason {
    /// Every reason.
    pub const ALL: [DropReason; 5] = [
        DropReason::BacklogFull,
        DropReason::SampledOut,
        DropReason::SocketDied,
        DropReason::EncodeError,
        DropReason::Shutdown,
    ];

    /// Metric label.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::BacklogFull => "backlog_full",
            DropReason::SampledOut => "sampled_out",
            DropReason::SocketDied => "socket_died",
            DropReason::EncodeError => "encode_error",
            DropReason::Shutdown => "shutdown",
        }
    }
}

/// One hook's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookCounters {
    /// The hook.
    pub hook: Hook,
    /// Events sent.
    pub sent: u64,
    /// Events dropped, per reason.
    pub dropped: [(DropReason, u64); DropReason::ALL.len()],
}

/// How many copies of the per-hook counters there are. A counter bumped for every event by
/// session tasks on every core would bounce its cache line between the cores at each event
/// (the cost of an absent sidecar, when every event is a drop); each relay lane counts into the
/// copy its index picks, and readers add the copies up.
pub const SHARDS: usize = 8;

/// One copy of the per-hook counters, on cache lines of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    sent: [AtomicU64; 13],
    dropped: [[AtomicU64; DropReason::ALL.len()]; 13],
}

/// The relay's counters.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    shards: [Shard; SHARDS],
    /// Bytes written to sidecar connections.
    pub bytes_sent: AtomicU64,
    /// Connections established since start.
    pub connects: AtomicU64,
    /// Connections currently up.
    pub connections_up: AtomicU64,
    /// At least once: events acknowledged by the sidecar (they are counted as sent then, not
    /// when written).
    pub acked: AtomicU64,
    /// At least once: events written again after a reconnect.
    pub resent: AtomicU64,
    /// At least once: sum of the acknowledged events' times from first write to
    /// acknowledgement, in µs (with `acked`, the mean).
    pub ack_latency_us: AtomicU64,
    /// At least once: lanes whose events wait too long for an acknowledgement.
    pub stalled_lanes: AtomicU64,
}

/// Position of a relayable hook in the counters (a table lookup: this runs for every event).
pub fn index(hook: Hook) -> usize {
    const TABLE: [usize; Hook::ALL.len()] = {
        let mut t = [0; Hook::ALL.len()];
        let mut i = 0;
        while i < RELAYABLE.len() {
            t[RELAYABLE[i] as usize] = i;
            i += 1;
        }
        t
    };
    TABLE[hook as usize]
}

impl RelayMetrics {
    /// Counts `n` events of a hook sent, in the copy of the counters `shard` picks.
    pub(crate) fn sent(&self, shard: usize, hook_index: usize, n: u64) {
        self.shards[shard % SHARDS].sent[hook_index].fetch_add(n, Relaxed);
    }

    /// Counts what an acknowledgement released: at least once, events count as sent when the
    /// sidecar acknowledges them.
    pub(crate) fn acknowledged(&self, shard: usize, r: &super::relay::Released) {
        for (hook, n) in r.per_hook.iter().enumerate().filter(|(_, n)| **n > 0) {
            self.sent(shard, hook, *n);
        }
        if r.events > 0 {
            self.acked.fetch_add(r.events, Relaxed);
            self.ack_latency_us
                .fetch_add(r.latency.as_micros() as u64, Relaxed);
        }
    }

    /// Counts an event of a hook dropped, in the copy of the counters `shard` picks.
    pub(crate) fn dropped(&self, shard: usize, hook_index: usize, reason: DropReason) {
        self.shards[shard % SHARDS].dropped[hook_index][reason as usize].fetch_add(1, Relaxed);
    }

    fn sum(&self, counter: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards.iter().map(|s| counter(s).load(Relaxed)).sum()
    }

    /// Events of `hook` written to the sidecar.
    pub fn sent_count(&self, hook: Hook) -> u64 {
        let i = index(hook);
        self.sum(|s| &s.sent[i])
    }

    /// Events of `hook` dropped for `reason`.
    pub fn dropped_count(&self, hook: Hook, reason: DropReason) -> u64 {
        let i = index(hook);
        self.sum(|s| &s.dropped[i][reason as usize])
    }

    /// Events of every hook dropped for `reason`.
    pub fn total_dropped_for(&self, reason: DropReason) -> u64 {
        (0..RELAYABLE.len())
            .map(|i| self.sum(|s| &s.dropped[i][reason as usize]))
            .sum()
    }

    /// Events of every hook dropped for any reason.
    pub fn total_dropped(&self) -> u64 {
        (0..RELAYABLE.len())
            .flat_map(|i| DropReason::ALL.map(|r| (i, r)))
            .map(|(i, r)| self.sum(|s| &s.dropped[i][r as usize]))
            .sum()
    }

    /// Events of every hook sent.
    pub fn total_sent(&self) -> u64 {
        (0..RELAYABLE.len()).map(|i| self.sum(|s| &s.sent[i])).sum()
    }

    /// Counters of every relayable hook.
    pub fn snapshot(&self) -> Vec<HookCounters> {
        RELAYABLE
            .iter()
            .enumerate()
            .map(|(i, h)| HookCounters {
                hook: *h,
                sent: self.sum(|s| &s.sent[i]),
                dropped: DropReason::ALL.map(|r| (r, self.sum(|s| &s.dropped[i][r as usize]))),
            })
            .collect()
    }
}
