//! The broker's counters, named as VerneMQ names them where it has the metric. Each is sharded
//! per thread ([`Counter`]): cheap on the hot path from every worker at once; read (summed) by
//! the HTTP `/metrics` endpoint, the status page and tests.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use crossbeam_utils::CachePadded;

/// Copies of each counter; threads beyond this many share them.
const SHARDS: usize = 8;

/// A count written by every worker thread: one copy per shard, each on its own cache line, so
/// that two threads counting the same event do not pass the line back and forth (one shared
/// line of counters, incremented a few times per message by both workers, was a tenth of the
/// broker's time at two million messages a second). Its value is the sum of the copies.
#[derive(Default)]
pub struct Counter {
    shards: [CachePadded<AtomicU64>; SHARDS],
}

/// This thread's shard: threads are numbered as they first count, so the workers of a small
/// runtime each get their own.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.shards[shard()].fetch_add(n, Relaxed);
    }

    /// The count: the sum of the copies.
    pub fn value(&self) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.load(Relaxed)))
    }

    /// Sets a gauge (a level, not a count; one writer): kept in the first copy.
    pub fn set(&self, value: u64) {
        self.shards[0].store(value, Relaxed);
    }

    /// Raises a gauge to `value` if it is below (one writer, as [`Counter::set`]).
    pub fn raise_to(&self, value: u64) {
        self.shards[0].fetch_max(value, Relaxed);
    }
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value().fmt(f)
    }
}

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $name:ident ),* $(,)?) => {
        /// Live counters of the broker.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[doc = $doc])* pub $name: Counter, )*
        }

        impl Metrics {
            /// Every counter with its name, for exposition.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$( (stringify!($name), self.$name.value()), )*]
            }

            /// Every counter's name and description (its doc comment), for `# HELP` lines.
            pub fn descriptions() -> Vec<(&'static str, &'static str)> {
                vec![$( (stringify!($name), concat!($($doc),*).trim_ascii()), )*]
            }
        }
    };
}

/// The entries of [`Metrics`] that are gauges (a level, not a count of events).
pub const GAUGES: [&str; 2] = ["store_size_bytes", "store_write_latency_us_max"];

counters! {
    /// TCP connections accepted.
    socket_open,
    /// TCP connections closed.
    socket_close,
    /// CONNECT packets received.
    mqtt_connect_received,
    /// CONNACK packets sent.
    mqtt_connack_sent,
    /// PUBLISH packets received.
    mqtt_publish_received,
    /// PUBLISH packets sent.
    mqtt_publish_sent,
    /// SUBSCRIBE packets received.
    mqtt_subscribe_received,
    /// UNSUBSCRIBE packets received.
    mqtt_unsubscribe_received,
    /// Packets larger than `max_message_size` (connection closed, v5 DISCONNECT 0x95).
    mqtt_invalid_msg_size_error,
    /// Malformed or protocol-violating packets.
    mqtt_protocol_error,
    /// Messages put in a session queue.
    queue_message_in,
    /// Messages taken out of a session queue for sending.
    queue_message_out,
    /// Messages dropped because a queue was full.
    queue_message_drop,
    /// Messages dropped because they expired before delivery.
    queue_message_expired,
    /// Publishes that matched no subscriber.
    router_matches_none,
    /// Times a publisher's connection paused because a subscriber queue it feeds was congested.
    publishers_paced,
    /// Connections refused because their listener was at `max_connections`.
    connections_refused_listener_limit,
    /// Connections refused because the node was at `max_connections`.
    connections_refused_total_limit,
    /// Connections refused because more than `max_connect_rate` arrived in one second.
    connections_refused_rate_limit,
    /// TLS or WebSocket handshakes that failed (bad certificate, wrong path or subprotocol, ...).
    listener_handshake_errors,
    /// CONNECTs refused because the client id was longer than `max_client_id_size`.
    connections_refused_client_id_size,
    /// Connections closed because no CONNECT arrived within `connect_timeout`.
    connections_connect_timeout,
    /// SUBSCRIBE topics refused because the client was at `max_subscriptions_per_client`.
    subscriptions_refused_limit,
    /// Subscriptions removed because auth_on_subscribe no longer allowed them when a plugin
    /// asked for their reauthorization (`vmq_api.reauthorize_subscriptions`).
    subscriptions_reauthorize_removed,
    /// PUBLISH packets refused by the auth_on_publish chain (v5: 0x87; v3: acknowledged and dropped).
    mqtt_publish_auth_error,
    /// SUBSCRIBE topics refused by the auth_on_subscribe chain (SUBACK 0x80 / 0x87).
    mqtt_subscribe_auth_error,
    /// PUBLISH packets, SUBSCRIBE and UNSUBSCRIBE topics refused because this cluster node did
    /// not see a majority of its cluster (`allow_*_during_netsplit = off`; v5: 0x83).
    netsplit_refused,
    /// Sessions that expired offline.
    sessions_expired,
    /// Will messages published.
    wills_published,
    /// Message store: transactions committed (each one a group of writes and one fsync).
    store_commits,
    /// Message store: records written or deleted.
    store_writes,
    /// Message store: QoS 1/2 messages written for persistent sessions.
    store_messages_stored,
    /// Message store: failed commits (the store stops acknowledging after one).
    store_write_errors,
    /// Message store: total commit time, microseconds (with `store_commits`, the mean).
    store_write_latency_us_sum,
    /// Message store: the slowest commit, microseconds.
    store_write_latency_us_max,
    /// Message store: file size in bytes (a gauge).
    store_size_bytes,
    /// Message store: sessions read back at start.
    store_sessions_recovered,
    /// Message store: queued messages read back at start.
    store_messages_recovered,
    /// Message store: retained messages read back at start.
    store_retained_recovered,
}

impl Metrics {
    /// Adds one.
    pub fn inc(counter: &Counter) {
        counter.add(1);
    }

    /// Adds `n`.
    pub fn inc_by(counter: &Counter, n: u64) {
        counter.add(n);
    }

    /// Reads a counter.
    pub fn get(counter: &Counter) -> u64 {
        counter.value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_sums_what_every_thread_counted() {
        let c = std::sync::Arc::new(Counter::default());
        let threads: Vec<_> = (0..(SHARDS + 3))
            .map(|i| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.add(1);
                    }
                    c.add(i as u64);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = (SHARDS + 3) as u64;
        assert_eq!(c.value(), n * 1000 + n * (n - 1) / 2);
    }

    #[test]
    fn a_gauge_is_set_and_raised() {
        let g = Counter::default();
        g.set(10);
        g.raise_to(7);
        assert_eq!(g.value(), 10);
        g.raise_to(12);
        g.set(3);
        assert_eq!(g.value(), 3);
    }
}
