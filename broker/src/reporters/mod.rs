//! Reporters: the broker's counters sent out at an interval, as VerneMQ does — the `$SYS` tree
//! (`systree.rs`, messages on `$SYS/<nodename>/...`) and Graphite's plaintext protocol
//! (`graphite.rs`). Each is one task, started by the server when its config turns it on and
//! ended when the broker stops.

pub mod graphite;
pub mod systree;

use crate::engine::Engine;

/// Every counter with its VerneMQ name, and the gauges `/metrics` computes from the engine.
pub fn values(engine: &Engine) -> Vec<(&'static str, u64)> {
    let mut v = engine.metrics().snapshot();
    v.push(("mqtt_clients_online", engine.online_count() as u64));
    v.push(("queue_processes", engine.session_count() as u64));
    v.push(("router_subscriptions", engine.subscription_count() as u64));
    v.push(("retain_messages", engine.retained_count() as u64));
    v.push(("uptime_seconds", engine.uptime().as_secs()));
    v
}
