//! `vmq_events_sidecar`: relays hook events to a local sidecar as length-prefixed
//! `google.protobuf.Any` frames, compatible with Gojek's plugin and better than it: per-client
//! order, a backlog that survives sidecar restarts, batching, and every event counted.
//!
//! The hook caller (a session task) only encodes the event into a bounded backlog; it never
//! waits on the network. The events that come once per message are written straight from the
//! hook's arguments (`frame.rs`); the others through prost (`encode.rs`).

pub mod config;
mod encode;
mod frame;
pub mod metrics;
mod relay;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use bytes::BufMut;
use vmq_sidecar_sdk::DEFAULT_MAX_FRAME_LENGTH;

pub use config::EventsSidecarConfig;
pub use metrics::{DropReason, RelayMetrics};

use crate::hooks::{Hook, HookSet, Notification, Plugin};
use config::{RELAYABLE, SAMPLEABLE};
use relay::Relay;

/// The events sidecar plugin.
#[derive(Debug)]
pub struct EventsSidecar {
    enabled: AtomicU32,
    sampling: RwLock<HashMap<(Hook, String), u8>>,
    relay: Relay,
    metrics: Arc<RelayMetrics>,
}

/// Why a runtime change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventsError {
    /// Not one of the 13 relayable hooks.
    #[error("unknown hook {0:?}")]
    UnknownHook(String),
    /// Sampling only applies to on_publish, on_deliver and on_delivery_complete.
    #[error("sampling applies to on_publish, on_deliver and on_delivery_complete, not {0}")]
    NotSampleable(String),
    /// Percentages go from 0 to 100.
    #[error("percentage must be 0..100, got {0}")]
    BadPercentage(u32),
}

fn relayable(name: &str) -> Result<Hook, EventsError> {
    Hook::parse(name)
        .filter(|h| RELAYABLE.contains(h))
        .ok_or_else(|| EventsError::UnknownHook(name.to_owned()))
}

impl EventsSidecar {
    /// Starts the relay towards `config.hostname:config.port`. Must run inside a tokio runtime.
    pub fn start(config: EventsSidecarConfig) -> EventsSidecar {
        let metrics = Arc::new(RelayMetrics::default());
        let relay = Relay::start(
            format!("{}:{}", config.hostname, config.port),
            config.pool_size.max(1),
            config.backlog_size.max(1),
            metrics.clone(),
        );
        let enabled = config
            .hooks
            .iter()
            .fold(HookSet::default(), |s, h| s.with(*h));
        EventsSidecar {
            enabled: AtomicU32::new(enabled.0),
            sampling: RwLock::new(
                config
                    .sampling
                    .into_iter()
                    .map(|(h, acl, pct)| ((h, acl), pct))
                    .collect(),
            ),
            relay,
            metrics,
        }
    }

    /// Starts relaying `hook` (`vmq-admin events enable hook=...`).
    pub fn enable(&self, hook: &str) -> Result<(), EventsError> {
        let h = relayable(hook)?;
        self.enabled.fetch_or(h.bit(), Ordering::AcqRel);
        Ok(())
    }

    /// Stops relaying `hook`.
    pub fn disable(&self, hook: &str) -> Result<(), EventsError> {
        let h = relayable(hook)?;
        self.enabled.fetch_and(!h.bit(), Ordering::AcqRel);
        Ok(())
    }

    /// The hooks relayed now.
    pub fn enabled_hooks(&self) -> Vec<Hook> {
        HookSet(self.enabled.load(Ordering::Acquire))
            .iter()
            .collect()
    }

    /// Keeps `percentage` % of `hook` events whose matched ACL is `acl_name`.
    pub fn set_sampling(
        &self,
        hook: &str,
        acl_name: &str,
        percentage: u32,
    ) -> Result<(), EventsError> {
        let h = relayable(hook)?;
        if !SAMPLEABLE.contains(&h) {
            return Err(EventsError::NotSampleable(h.name().to_owned()));
        }
        let pct = u8::try_from(percentage)
            .ok()
            .filter(|p| *p <= 100)
            .ok_or(EventsError::BadPercentage(percentage))?;
        if let Ok(mut s) = self.sampling.write() {
            s.insert((h, acl_name.to_owned()), pct);
        }
        Ok(())
    }

    /// Removes a sampling rule; returns whether it existed.
    pub fn clear_sampling(&self, hook: &str, acl_name: &str) -> Result<bool, EventsError> {
        let h = relayable(hook)?;
        Ok(self
            .sampling
            .write()
            .is_ok_and(|mut s| s.remove(&(h, acl_name.to_owned())).is_some()))
    }

    /// Every sampling rule: (hook, ACL name, percentage).
    pub fn sampling_rules(&self) -> Vec<(Hook, String, u8)> {
        let mut v: Vec<_> = self
            .sampling
            .read()
            .map(|s| s.iter().map(|((h, a), p)| (*h, a.clone(), *p)).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| (a.0.name(), &a.1).cmp(&(b.0.name(), &b.1)));
        v
    }

    /// Sent and dropped counters.
    pub fn metrics(&self) -> &Arc<RelayMetrics> {
        &self.metrics
    }

    /// Events waiting in the backlogs.
    pub fn backlog(&self) -> usize {
        self.relay.backlog()
    }

    fn sampled_out(&self, hook: Hook, event: &Notification<'_>) -> bool {
        let Some(acl) = encode::acl_name(event) else {
            return false;
        };
        let Ok(rules) = self.sampling.read() else {
            return false;
        };
        if rules.is_empty() {
            return false;
        }
        match rules.get(&(hook, acl.to_owned())) {
            Some(&pct) => fastrand::u8(0..100) >= pct,
            None => false,
        }
    }
}

impl Plugin for EventsSidecar {
    fn name(&self) -> &str {
        "vmq_events_sidecar"
    }

    fn wants(&self, hook: Hook) -> bool {
        self.enabled.load(Ordering::Relaxed) & hook.bit() != 0
    }

    fn notify(&self, event: &Notification<'_>) {
        let hook = event.hook();
        let index = metrics::index(hook);
        if SAMPLEABLE.contains(&hook) && self.sampled_out(hook, event) {
            let lane = self.relay.lane_of(encode::order_key(event));
            self.metrics.dropped(lane, index, DropReason::SampledOut);
            return;
        }
        // Encoded into the backlog under its lock, only if there is room (an absent sidecar
        // costs no encoding); the timestamp is taken there too. Bodies over the SDK's maximum
        // frame length would be refused by the sidecar: counted as encode errors instead.
        self.relay.push(encode::order_key(event), index, |buf| {
            let timestamp = encode::now();
            if let Some(frame) = frame::direct(event, &timestamp) {
                if frame.len() - 4 > DEFAULT_MAX_FRAME_LENGTH {
                    return false;
                }
                return frame.put(buf);
            } else {
                let event = encode::to_event(event, timestamp);
                let body = event.any_encoded_len();
                if body > DEFAULT_MAX_FRAME_LENGTH {
                    return false;
                }
                buf.reserve(4 + body);
                buf.put_u32(body as u32);
                event.encode_any(buf);
            }
            true
        });
    }
}
