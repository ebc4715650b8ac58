//! The plugin's counters: VerneMQ's (`webhooks_<hook>_requests`, `_errors`, `_bytes_sent`,
//! and `_timeouts`, `_cancelled`, `_elapsed_ms` of `auth_on_register(_m5)`), and ours: the
//! notification queues (depth, drops by reason) and the cache.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::plugins::MetricsOut;
use crate::plugins::hook_names::{HOOKS, UNREGISTRABLE};

/// Counters of one hook name.
#[derive(Debug, Default)]
pub struct HookCounters {
    /// HTTP requests made (not cache hits).
    pub requests: AtomicU64,
    /// Requests that failed, or answered `{"error": ...}`.
    pub errors: AtomicU64,
    /// Bytes of JSON bodies sent.
    pub bytes_sent: AtomicU64,
    /// Requests that hit `response_timeout`.
    pub timeouts: AtomicU64,
    /// Milliseconds spent waiting for answers.
    pub elapsed_ms: AtomicU64,
}

/// Why a notification was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// Its endpoint's queue was full (the endpoint is slower than the broker).
    QueueFull,
    /// The broker stopped before it was sent.
    Shutdown,
}

/// Every counter of the plugin.
#[derive(Debug)]
pub struct WebhookMetrics {
    hooks: Vec<HookCounters>,
    /// Notifications dropped because a queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Notifications dropped at shutdown.
    pub dropped_shutdown: AtomicU64,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        WebhookMetrics {
            hooks: (0..HOOKS.len() + UNREGISTRABLE.len())
                .map(|_| HookCounters::default())
                .collect(),
            dropped_queue_full: AtomicU64::new(0),
            dropped_shutdown: AtomicU64::new(0),
        }
    }
}

impl WebhookMetrics {
    /// The counters of hook `index` (into [`HOOKS`]).
    pub fn hook(&self, index: usize) -> &HookCounters {
        &self.hooks[index]
    }

    /// Counts a dropped notification.
    pub fn dropped(&self, why: Drop, n: u64) {
        match why {
            Drop::QueueFull => &self.dropped_queue_full,
            Drop::Shutdown => &self.dropped_shutdown,
        }
        .fetch_add(n, Relaxed);
    }

    /// Writes VerneMQ's counters, one family per name as VerneMQ has them.
    pub fn write(&self, out: &mut dyn MetricsOut) {
        let names = HOOKS.iter().map(|h| h.name).chain(UNREGISTRABLE);
        for (name, c) in names.zip(&self.hooks) {
            out.single(
                &format!("webhooks_{name}_requests"),
                "counter",
                &format!("Number of requests to {name} webhooks."),
                c.requests.load(Relaxed),
            );
            out.single(
                &format!("webhooks_{name}_errors"),
                "counter",
                &format!("Number of errors calling {name} webhooks."),
                c.errors.load(Relaxed),
            );
            out.single(
                &format!("webhooks_{name}_bytes_sent"),
                "counter",
                &format!("Number of bytes sent to {name} webhooks."),
                c.bytes_sent.load(Relaxed),
            );
            if name.starts_with("auth_on_register") {
                out.single(
                    &format!("webhooks_{name}_timeouts"),
                    "counter",
                    &format!("Number of {name} webhook requests that timed out."),
                    c.timeouts.load(Relaxed),
                );
                out.single(
                    &format!("webhooks_{name}_cancelled"),
                    "counter",
                    &format!(
                        "Number of {name} webhook requests cancelled because the client closed \
                         (never here: the request is finished and its answer dropped)."
                    ),
                    0,
                );
                out.single(
                    &format!("webhooks_{name}_elapsed_ms"),
                    "counter",
                    &format!("Milliseconds spent waiting for {name} webhooks."),
                    c.elapsed_ms.load(Relaxed),
                );
            }
        }
        out.header(
            "webhooks_notifications_dropped",
            "counter",
            "Notification webhook calls not made, by reason.",
        );
        out.sample(
            "webhooks_notifications_dropped",
            &[("reason", "queue_full")],
            self.dropped_queue_full.load(Relaxed),
        );
        out.sample(
            "webhooks_notifications_dropped",
            &[("reason", "shutdown")],
            self.dropped_shutdown.load(Relaxed),
        );
    }
}
