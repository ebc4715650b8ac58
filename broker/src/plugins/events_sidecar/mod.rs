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
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::BufMut;
use futures::future::BoxFuture;
use parking_lot::RwLock;
use serde_json::{Value, json};
use vmq_sidecar_sdk::DEFAULT_MAX_FRAME_LENGTH;

pub use config::EventsSidecarConfig;
pub use metrics::{DropReason, RelayMetrics};
pub use relay::Drained;

use super::command::{Answer, Args, CommandError, row, text};
use super::{Hosted, MetricsOut};
use crate::config::{Config, ConfigError, PluginSetting};
use crate::hooks::{Hook, HookSet, Notification, Plugin};
use config::{RELAYABLE, SAMPLEABLE};
use relay::Relay;

/// The plugin's name.
pub const NAME: &str = "vmq_events_sidecar";

/// Checks the `vmq_events_sidecar.*` lines.
pub(super) fn check_settings(s: &[PluginSetting]) -> Result<(), ConfigError> {
    EventsSidecarConfig::from_settings(s).map(drop)
}

/// Starts the relay from the `vmq_events_sidecar.*` lines.
pub(super) fn start_hosted(
    _config: &Config,
    s: &[PluginSetting],
    _priority: i32,
) -> Result<Arc<dyn Hosted>, String> {
    let config = EventsSidecarConfig::from_settings(s).map_err(|e| e.to_string())?;
    Ok(Arc::new(EventsSidecar::start(config)))
}

/// The events sidecar plugin.
#[derive(Debug)]
pub struct EventsSidecar {
    enabled: AtomicU32,
    sampling: RwLock<HashMap<(Hook, String), u8>>,
    relay: Relay,
    metrics: Arc<RelayMetrics>,
    shutdown_timeout: Duration,
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
            shutdown_timeout: config.shutdown_timeout,
        }
    }

    /// Writes out the backlogs for at most `within`, then stops the relay: whatever is left is
    /// counted as dropped (`shutdown`). Logs the totals.
    pub async fn drain(&self, within: Duration) -> Drained {
        let drained = self.relay.drain(within).await;
        let sent = self.metrics.total_sent();
        let dropped = self.metrics.total_dropped();
        // Per hook, every reason: with the sidecar's own count of what it received, this
        // accounts for every event.
        let by_hook = self
            .metrics
            .snapshot()
            .iter()
            .map(|c| (c.hook, c.dropped.iter().map(|(_, n)| n).sum::<u64>()))
            .filter(|(_, n)| *n > 0)
            .map(|(h, n)| format!("{}:{n}", h.name()))
            .collect::<Vec<_>>()
            .join(",");
        if drained.complete {
            tracing::info!(
                waiting = drained.waiting,
                sent,
                dropped,
                dropped_shutdown = 0,
                dropped_by_hook = %by_hook,
                "events relay drained: every event written to the sidecar or counted as dropped"
            );
        } else {
            tracing::warn!(
                waiting = drained.waiting,
                sent,
                dropped,
                dropped_shutdown = drained.dropped,
                dropped_by_hook = %by_hook,
                "events relay stopped with events unwritten (sidecar away or too slow): counted as dropped, reason shutdown"
            );
        }
        drained
    }

    /// Starts relaying `hook` (`vmq-admin events enable hook=...`).
    pub fn enable(&self, hook: &str) -> Result<(), EventsError> {
        let h = relayable(hook)?;
        self.enabled.fetch_or(h.bit(), Ordering::AcqRel);
        tracing::info!(hook = h.name(), "events relay: hook enabled");
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
        self.sampling.write().insert((h, acl_name.to_owned()), pct);
        Ok(())
    }

    /// Removes a sampling rule; returns whether it existed.
    pub fn clear_sampling(&self, hook: &str, acl_name: &str) -> Result<bool, EventsError> {
        let h = relayable(hook)?;
        Ok(self
            .sampling
            .write()
            .remove(&(h, acl_name.to_owned()))
            .is_some())
    }

    /// Every sampling rule: (hook, ACL name, percentage).
    pub fn sampling_rules(&self) -> Vec<(Hook, String, u8)> {
        let mut v: Vec<_> = self
            .sampling
            .read()
            .iter()
            .map(|((h, a), p)| (*h, a.clone(), *p))
            .collect();
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
        let rules = self.sampling.read();
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

/// Its commands.
pub const USAGE: &str = "\
  events show | events enable hook=<hook> | events disable hook=<hook>
  events sampling show | events sampling enable hook=<hook> acl_name=<name> percentage=<0-100>
  events sampling disable hook=<hook> acl_name=<name>";

impl Hosted for EventsSidecar {
    fn name(&self) -> &'static str {
        NAME
    }

    fn hooks(self: Arc<Self>) -> Arc<dyn Plugin> {
        self
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }

    fn commands(&self) -> (&'static [&'static str], &'static str) {
        (&["events"], USAGE)
    }

    fn command(&self, words: &[&str], args: &Args) -> Result<Answer, CommandError> {
        let err = |e: EventsError| CommandError::bad(e.to_string());
        match words {
            ["events", "show"] => {
                args.check(&[])?;
                let enabled = self.enabled_hooks();
                let rows = RELAYABLE
                    .iter()
                    .map(|h| {
                        row([
                            ("hook", json!(h.name())),
                            ("enabled", json!(enabled.contains(h))),
                            ("sent", json!(self.metrics.sent_count(*h))),
                        ])
                    })
                    .collect();
                Ok(Answer::Table(rows))
            }
            ["events", "enable"] => {
                args.check(&["hook"])?;
                self.enable(args.need("hook")?).map_err(err)?;
                text("Done")
            }
            ["events", "disable"] => {
                args.check(&["hook"])?;
                self.disable(args.need("hook")?).map_err(err)?;
                text("Done")
            }
            ["events", "sampling", "show"] => {
                args.check(&[])?;
                let rows = self
                    .sampling_rules()
                    .into_iter()
                    .map(|(h, acl, pct)| {
                        row([
                            ("hook", json!(h.name())),
                            ("acl_name", json!(acl)),
                            ("percentage", json!(pct)),
                        ])
                    })
                    .collect();
                Ok(Answer::Table(rows))
            }
            ["events", "sampling", "enable"] => {
                args.check(&["hook", "acl_name", "percentage"])?;
                let pct: u8 = args
                    .need("percentage")?
                    .parse()
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| CommandError::bad("percentage must be 0 to 100"))?;
                self.set_sampling(args.need("hook")?, args.need("acl_name")?, u32::from(pct))
                    .map_err(err)?;
                text("Done")
            }
            ["events", "sampling", "disable"] => {
                args.check(&["hook", "acl_name"])?;
                let removed = self
                    .clear_sampling(args.need("hook")?, args.need("acl_name")?)
                    .map_err(err)?;
                if removed {
                    text("Done")
                } else {
                    Err(CommandError::not_found("no such sampling rule"))
                }
            }
            _ => Err(CommandError::not_found(format!(
                "unknown command {:?}\n{USAGE}",
                words.join(" ")
            ))),
        }
    }

    fn metrics(&self, out: &mut dyn MetricsOut) {
        let m = &self.metrics;
        let snapshot = m.snapshot();
        out.header(
            "sidecar_events",
            "counter",
            "Events written to the sidecar, by hook.",
        );
        for c in &snapshot {
            out.sample("sidecar_events", &[("hook", c.hook.name())], c.sent);
        }
        out.header(
            "sidecar_events_error",
            "counter",
            "Events not delivered to the sidecar, by hook (every reason).",
        );
        for c in &snapshot {
            let total = c.dropped.iter().map(|(_, n)| n).sum();
            out.sample("sidecar_events_error", &[("hook", c.hook.name())], total);
        }
        out.header(
            "sidecar_events_dropped",
            "counter",
            "Events not delivered to the sidecar, by hook and reason.",
        );
        for c in &snapshot {
            for (reason, n) in c.dropped {
                out.sample(
                    "sidecar_events_dropped",
                    &[("hook", c.hook.name()), ("reason", reason.name())],
                    n,
                );
            }
        }
        out.single(
            "sidecar_backlog",
            "gauge",
            "Events waiting in the relay's backlogs (sidecar slow or away).",
            self.backlog() as u64,
        );
        out.single(
            "sidecar_connections_up",
            "gauge",
            "Relay connections to the sidecar currently up.",
            m.connections_up.load(Relaxed),
        );
        out.single(
            "sidecar_connects",
            "counter",
            "Relay connections established since start.",
            m.connects.load(Relaxed),
        );
        out.single(
            "sidecar_bytes_sent",
            "counter",
            "Bytes written to the sidecar.",
            m.bytes_sent.load(Relaxed),
        );
    }

    fn status(&self) -> Value {
        let m = &self.metrics;
        json!({
            "enabled": true,
            "hooks": self.enabled_hooks().iter().map(|h| h.name()).collect::<Vec<_>>(),
            "sent": m.total_sent(),
            "dropped": m.total_dropped(),
            "backlog": self.backlog(),
            "connections_up": m.connections_up.load(Relaxed),
        })
    }

    fn stop(&self, within: Duration) -> BoxFuture<'_, ()> {
        let within = within.min(self.shutdown_timeout);
        Box::pin(async move {
            self.drain(within).await;
        })
    }
}
