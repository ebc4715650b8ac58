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
}

impl DropReason {
    /// Every reason.
    pub const ALL: [DropReason; 4] = [
        DropReason::BacklogFull,
        DropReason::SampledOut,
        DropReason::SocketDied,
        DropReason::EncodeError,
    ];

    /// Metric label.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::BacklogFull => "backlog_full",
            DropReason::SampledOut => "sampled_out",
            DropReason::SocketDied => "socket_died",
            DropReason::EncodeError => "encode_error",
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
    pub dropped: [(DropReason, u64); 4],
}

/// The relay's counters.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    sent: [AtomicU64; 13],
    dropped: [[AtomicU64; 4]; 13],
    /// Bytes written to sidecar connections.
    pub bytes_sent: AtomicU64,
    /// Connections established since start.
    pub connects: AtomicU64,
    /// Connections currently up.
    pub connections_up: AtomicU64,
}

/// Position of a relayable hook in the counters.
pub fn index(hook: Hook) -> usize {
    RELAYABLE.iter().position(|h| *h == hook).unwrap_or(0)
}

impl RelayMetrics {
    pub(crate) fn sent(&self, hook_index: usize, n: u64) {
        self.sent[hook_index].fetch_add(n, Relaxed);
    }

    pub(crate) fn dropped(&self, hook_index: usize, reason: DropReason) {
        self.dropped[hook_index][reason as usize].fetch_add(1, Relaxed);
    }

    /// Events of `hook` written to the sidecar.
    pub fn sent_count(&self, hook: Hook) -> u64 {
        self.sent[index(hook)].load(Relaxed)
    }

    /// Events of `hook` dropped for `reason`.
    pub fn dropped_count(&self, hook: Hook, reason: DropReason) -> u64 {
        self.dropped[index(hook)][reason as usize].load(Relaxed)
    }

    /// Events of every hook dropped for any reason.
    pub fn total_dropped(&self) -> u64 {
        self.dropped.iter().flatten().map(|c| c.load(Relaxed)).sum()
    }

    /// Events of every hook sent.
    pub fn total_sent(&self) -> u64 {
        self.sent.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Counters of every relayable hook.
    pub fn snapshot(&self) -> Vec<HookCounters> {
        RELAYABLE
            .iter()
            .enumerate()
            .map(|(i, h)| HookCounters {
                hook: *h,
                sent: self.sent[i].load(Relaxed),
                dropped: DropReason::ALL.map(|r| (r, self.dropped[i][r as usize].load(Relaxed))),
            })
            .collect()
    }
}
