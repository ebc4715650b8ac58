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
pub use relay::{ACK_TYPE_URL, BATCH_TYPE_URL, Delivery, Drained};

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
    broker: &Config,
    s: &[PluginSetting],
    _priority: i32,
) -> Result<Arc<dyn Hosted>, String> {
    let mut config = EventsSidecarConfig::from_settings(s).map_err(|e| e.to_string())?;
    // A cluster node names itself in every event; a single node's events stay as they were.
    if broker.cluster.listen.is_some() {
        config.node = broker.nodename.clone();
    }
    Ok(Arc::new(EventsSidecar::start(config)))
}

/// The events sidecar plugin.
#[derive(Debug)]
pub struct EventsSidecar {
    enabled: AtomicU32,
    /// Sampling percentages per hook and matched ACL name.
    sampling: RwLock<HashMap<Hook, HashMap<String, u8>>>,
    /// The hooks with a sampling rule (their bits): the others never look at `sampling`.
    sampled_hooks: AtomicU32,
    relay: Relay,
    metrics: Arc<RelayMetrics>,
    shutdown_timeout: Duration,
    /// The `node` field of every event (empty on a single node).
    node: String,
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
        let delivery = if config.at_least_once {
            // Any non-zero number: a consumer tells this run's sequence numbers from the last.
            Delivery::AtLeastOnce {
                epoch: fastrand::u64(1..),
                ack_timeout: config.ack_timeout,
            }
        } else {
            Delivery::AtMostOnce
        };
        let relay = Relay::start(
            format!("{}:{}", config.hostname, config.port),
            config.pool_size.max(1),
            config.backlog_size.max(1),
            delivery,
            metrics.clone(),
        );
        let enabled = config
            .hooks
            .iter()
            .fold(HookSet::default(), |s, h| s.with(*h));
        let sidecar = EventsSidecar {
            enabled: AtomicU32::new(enabled.0),
            sampling: RwLock::default(),
            sampled_hooks: AtomicU32::new(0),
            relay,
            metrics,
            shutdown_timeout: config.shutdown_timeout,
            node: config.node,
        };
        for (hook, acl, pct) in config.sampling {
            sidecar.sample(hook, acl, pct);
        }
        sidecar
    }

    fn sample(&self, hook: Hook, acl_name: String, pct: u8) {
        let mut rules = self.sampling.write();
        rules.entry(hook).or_default().insert(acl_name, pct);
        self.sampled_hooks.fetch_or(hook.bit(), Ordering::AcqRel);
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
        self.sample(h, acl_name.to_owned(), pct);
        Ok(())
    }

    /// Removes a sampling rule; returns whether it existed.
    pub fn clear_sampling(&self, hook: &str, acl_name: &str) -> Result<bool, EventsError> {
        let h = relayable(hook)?;
        let mut rules = self.sampling.write();
        let Some(of_hook) = rules.get_mut(&h) else {
            return Ok(false);
        };
        let removed = of_hook.remove(acl_name).is_some();
        if of_hook.is_empty() {
            rules.remove(&h);
            self.sampled_hooks.fetch_and(!h.bit(), Ordering::AcqRel);
        }
        Ok(removed)
    }

    /// Every sampling rule: (hook, ACL name, percentage).
    pub fn sampling_rules(&self) -> Vec<(Hook, String, u8)> {
        let mut v: Vec<_> = self
            .sampling
            .read()
            .iter()
            .flat_map(|(h, rules)| rules.iter().map(|(a, p)| (*h, a.clone(), *p)))
            .collect();
        v.sort_by(|a, b| (a.0.name(), &a.1).cmp(&(b.0.name(), &b.1)));
        v
    }

    /// Sent and dropped counters.
    pub fn metrics(&self) -> &Arc<RelayMetrics> {
        &self.metrics
    }

    /// Events waiting in the backlogs (and, at least once, for an acknowledgement).
    pub fn backlog(&self) -> usize {
        self.relay.backlog()
    }

    /// How events are delivered.
    pub fn delivery(&self) -> Delivery {
        self.relay.delivery()
    }

    /// Whether a sampling rule leaves this event out. Hooks without rules cost one load: the
    /// rules' lock is shared by every session thread and would bounce between cores.
    fn sampled_out(&self, hook: Hook, event: &Notification<'_>) -> bool {
        if self.sampled_hooks.load(Relaxed) & hook.bit() == 0 {
            return false;
        }
        let Some(acl) = encode::acl_name(event) else {
            return false;
        };
        let rules = self.sampling.read();
        match rules.get(&hook).and_then(|r| r.get(acl)) {
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
        if self.sampled_out(hook, event) {
            let lane = self.relay.lane_of(encode::order_key(event));
            self.metrics.dropped(lane, index, DropReason::SampledOut);
            return;
        }
        // Encoded into the backlog under its lock, only if there is room (an absent sidecar
        // costs no encoding); the timestamp is taken there too. Bodies over the SDK's maximum
        // frame length would be refused by the sidecar: counted as encode errors instead.
        self.relay.push(encode::order_key(event), index, |buf| {
            let timestamp = encode::now();
            if let Some(written) =
                frame::put_direct(event, &timestamp, &self.node, buf, DEFAULT_MAX_FRAME_LENGTH)
            {
                return written;
            }
            let event = encode::to_event(event, timestamp, &self.node);
            let body = event.any_encoded_len();
            if body > DEFAULT_MAX_FRAME_LENGTH {
                return false;
            }
            buf.reserve(4 + body);
            buf.put_u32(body as u32);
            event.encode_any(buf);
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
            "Events written to the sidecar (at least once: acknowledged by it), by hook.",
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
        if let Delivery::AtLeastOnce { .. } = self.delivery() {
            out.single(
                "sidecar_events_unacked",
                "gauge",
                "At least once: events written and waiting for the sidecar's acknowledgement.",
                self.relay.unacked() as u64,
            );
            out.single(
                "sidecar_events_acked",
                "counter",
                "At least once: events the sidecar acknowledged.",
                m.acked.load(Relaxed),
            );
            out.single(
                "sidecar_events_resent",
                "counter",
                "At least once: events written again after a reconnect.",
                m.resent.load(Relaxed),
            );
            out.single(
                "sidecar_ack_latency_microseconds_sum",
                "counter",
                "At least once: total time from write to acknowledgement of the acknowledged events (divide by sidecar_events_acked for the mean).",
                m.ack_latency_us.load(Relaxed),
            );
            out.single(
                "sidecar_ack_stalled_lanes",
                "gauge",
                "At least once: connections whose events have waited over vmq_events_sidecar.ack_timeout without an acknowledgement.",
                m.stalled_lanes.load(Relaxed),
            );
        }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::hooks::{ClientInfo, MatchedAcl, MessageInfo};
    use crate::mqtt::{Properties, Protocol, QoS};

    /// Relays on_publish to a port nobody listens on: events stay in the backlog, where the
    /// test counts them.
    fn sidecar(sampling: Vec<(Hook, String, u8)>) -> EventsSidecar {
        EventsSidecar::start(EventsSidecarConfig {
            port: 1,
            pool_size: 1,
            hooks: vec![Hook::OnPublish],
            sampling,
            ..EventsSidecarConfig::default()
        })
    }

    fn publish(s: &EventsSidecar, acl_name: &str) {
        let client = ClientInfo {
            mountpoint: String::new(),
            client_id: "c".into(),
            username: None,
            peer: "127.0.0.1:5000".parse().unwrap(),
            session_id: Arc::from("s"),
            protocol: Protocol::V311,
        };
        let (payload, properties) = (Bytes::from_static(b"x"), Properties::default());
        let acl = MatchedAcl {
            name: acl_name.into(),
            pattern: "#".into(),
        };
        s.notify(&Notification::Publish {
            client: &client,
            message: MessageInfo {
                topic: "t",
                payload: &payload,
                qos: QoS::AtMostOnce,
                retain: false,
                properties: &properties,
            },
            acl: Some(&acl),
        });
    }

    fn sampled_out(s: &EventsSidecar) -> u64 {
        s.metrics()
            .dropped_count(Hook::OnPublish, DropReason::SampledOut)
    }

    #[tokio::test]
    async fn sampling_rules_keep_their_share_of_their_acl_only() {
        // From the config: nothing of ACL "quiet" is kept.
        let s = sidecar(vec![(Hook::OnPublish, "quiet".into(), 0)]);
        publish(&s, "quiet");
        publish(&s, "other");
        assert_eq!((sampled_out(&s), s.backlog()), (1, 1));

        // At run time: everything of "all" kept, about half of "half".
        s.set_sampling("on_publish", "all", 100).unwrap();
        s.set_sampling("on_publish", "half", 50).unwrap();
        for _ in 0..10 {
            publish(&s, "all");
        }
        assert_eq!((sampled_out(&s), s.backlog()), (1, 11));
        for _ in 0..1000 {
            publish(&s, "half");
        }
        let half = sampled_out(&s) - 1;
        assert!((300..700).contains(&half), "{half} of 1000 left out");
        assert_eq!(
            s.sampling_rules(),
            vec![
                (Hook::OnPublish, "all".into(), 100),
                (Hook::OnPublish, "half".into(), 50),
                (Hook::OnPublish, "quiet".into(), 0),
            ]
        );

        // Rules removed: every event kept again.
        for acl in ["quiet", "half", "all"] {
            assert!(s.clear_sampling("on_publish", acl).unwrap());
        }
        assert!(!s.clear_sampling("on_publish", "quiet").unwrap());
        let before = (sampled_out(&s), s.backlog());
        publish(&s, "quiet");
        assert_eq!((sampled_out(&s), s.backlog()), (before.0, before.1 + 1));
        assert_eq!(
            s.set_sampling("on_register", "a", 5),
            Err(EventsError::NotSampleable("on_register".into()))
        );
    }
}
