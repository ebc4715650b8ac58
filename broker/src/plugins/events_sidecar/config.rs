//! `vmq_events_sidecar.*` settings, as Gojek's plugin reads them.

use std::time::Duration;

use crate::config::{ConfigError, PluginSetting, parse_duration};
use crate::hooks::Hook;

/// Hooks the events sidecar can relay (the 13 events of the wire contract).
pub const RELAYABLE: [Hook; 13] = [
    Hook::OnRegister,
    Hook::OnRegisterFailed,
    Hook::OnPublish,
    Hook::OnSubscribe,
    Hook::OnUnsubscribe,
    Hook::OnDeliver,
    Hook::OnDeliveryComplete,
    Hook::OnOfflineMessage,
    Hook::OnMessageDrop,
    Hook::OnClientWakeup,
    Hook::OnClientOffline,
    Hook::OnClientGone,
    Hook::OnSessionExpired,
];

/// Hooks whose events may be sampled by ACL name.
pub const SAMPLEABLE: [Hook; 3] = [Hook::OnPublish, Hook::OnDeliver, Hook::OnDeliveryComplete];

/// The events sidecar's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsSidecarConfig {
    /// Where the sidecar listens.
    pub hostname: String,
    /// Its port.
    pub port: u16,
    /// Number of connections (and of per-connection backlogs).
    pub pool_size: usize,
    /// Events each connection's backlog holds while the sidecar is slow or away.
    pub backlog_size: usize,
    /// Hooks relayed from the start.
    pub hooks: Vec<Hook>,
    /// (hook, ACL name, percentage kept).
    pub sampling: Vec<(Hook, String, u8)>,
    /// `delivery = at_least_once`: events numbered, kept until the sidecar acknowledges them,
    /// written again after a reconnect.
    pub at_least_once: bool,
    /// At least once: how long events may wait for an acknowledgement before the connection is
    /// reported stalled.
    pub ack_timeout: Duration,
    /// How long a stopping broker keeps writing the backlog to the sidecar before it counts
    /// the rest as dropped (`shutdown_timeout`, ours).
    pub shutdown_timeout: Duration,
    /// The `node` field of every event: the `nodename` of a cluster node, empty on a single
    /// node (not a `vmq_events_sidecar.*` key).
    pub node: String,
}

impl Default for EventsSidecarConfig {
    fn default() -> Self {
        EventsSidecarConfig {
            hostname: "127.0.0.1".into(),
            port: 8890,
            pool_size: 100,
            backlog_size: 4096,
            hooks: Vec::new(),
            sampling: Vec::new(),
            at_least_once: false,
            ack_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
            node: String::new(),
        }
    }
}

/// Parses `on_register,on_publish` or `[on_register, on_publish]`.
pub fn parse_hooks(value: &str) -> Result<Vec<Hook>, String> {
    let inner = value.trim();
    let inner = inner
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(inner);
    let mut hooks = Vec::new();
    for name in inner.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let hook = Hook::parse(name)
            .filter(|h| RELAYABLE.contains(h))
            .ok_or_else(|| format!("unknown hook {name:?} (relayable: {})", names(&RELAYABLE)))?;
        if !hooks.contains(&hook) {
            hooks.push(hook);
        }
    }
    Ok(hooks)
}

/// Comma-separated hook names.
pub fn names(hooks: &[Hook]) -> String {
    hooks
        .iter()
        .map(|h| h.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl EventsSidecarConfig {
    /// Reads the `vmq_events_sidecar.*` lines; the first wrong one is an error with its line.
    pub fn from_settings(settings: &[PluginSetting]) -> Result<Self, ConfigError> {
        let mut c = EventsSidecarConfig::default();
        for s in settings {
            c.set(&s.key, &s.value).map_err(|e| s.error(e))?;
        }
        Ok(c)
    }

    /// Applies one `vmq_events_sidecar.<key>` setting.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let num = |v: &str| {
            v.parse::<usize>()
                .map_err(|_| format!("expected a number, got {v:?}"))
        };
        match key {
            "hostname" => self.hostname = value.to_owned(),
            "port" => {
                self.port = value
                    .parse()
                    .map_err(|_| format!("expected a port, got {value:?}"))?
            }
            "pool_size" => {
                self.pool_size = num(value)?;
                if self.pool_size == 0 || self.pool_size > 1024 {
                    return Err("pool_size must be between 1 and 1024".into());
                }
            }
            "backlog_size" => {
                self.backlog_size = num(value)?;
                if self.backlog_size == 0 {
                    return Err("backlog_size must be at least 1".into());
                }
            }
            "hooks" => self.hooks = parse_hooks(value)?,
            "ack_timeout" => {
                self.ack_timeout =
                    parse_duration(value)?
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| {
                            format!("ack_timeout must be a positive duration, got {value:?}")
                        })?
            }
            "delivery" => {
                self.at_least_once = match value {
                    "at_most_once" => false,
                    "at_least_once" => true,
                    other => {
                        return Err(format!(
                            "expected at_most_once or at_least_once, got {other:?}"
                        ));
                    }
                }
            }
            "shutdown_timeout" => {
                self.shutdown_timeout = parse_duration(value)?.unwrap_or(Duration::MAX)
            }
            _ => {
                // sample.<hook>.<acl_name>.percentage
                let rule = key
                    .strip_prefix("sample.")
                    .and_then(|r| r.strip_suffix(".percentage"))
                    .and_then(|r| r.split_once('.'))
                    .ok_or_else(|| format!("unknown key \"vmq_events_sidecar.{key}\""))?;
                let hook = Hook::parse(rule.0)
                    .filter(|h| SAMPLEABLE.contains(h))
                    .ok_or_else(|| {
                        format!(
                            "sampling applies to {}, not {:?}",
                            names(&SAMPLEABLE),
                            rule.0
                        )
                    })?;
                let pct: u8 = value
                    .parse()
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| format!("expected a percentage 0..100, got {value:?}"))?;
                self.sampling
                    .retain(|(h, acl, _)| !(*h == hook && acl == rule.1));
                self.sampling.push((hook, rule.1.to_owned(), pct));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_in_both_spellings() {
        let a = parse_hooks("on_register,on_publish").unwrap();
        let b = parse_hooks("[on_register, on_publish]").unwrap();
        assert_eq!(a, vec![Hook::OnRegister, Hook::OnPublish]);
        assert_eq!(a, b);
        assert_eq!(
            parse_hooks("[on_publish_m5]").unwrap(),
            vec![Hook::OnPublish]
        );
        assert!(parse_hooks("on_nothing").is_err());
        assert!(parse_hooks("auth_on_publish").is_err());
    }

    #[test]
    fn sampling_rules() {
        let mut c = EventsSidecarConfig::default();
        c.set("sample.on_publish.telemetry.percentage", "25")
            .unwrap();
        assert_eq!(c.sampling, vec![(Hook::OnPublish, "telemetry".into(), 25)]);
        assert!(c.set("sample.on_register.x.percentage", "5").is_err());
        assert!(c.set("sample.on_publish.x.percentage", "101").is_err());
        assert!(c.set("colour", "blue").is_err());
        c.set("shutdown_timeout", "2s").unwrap();
        assert_eq!(c.shutdown_timeout, Duration::from_secs(2));
    }

    #[test]
    fn settings_errors_name_their_line() {
        let text = "listener.tcp.a = 127.0.0.1:1\nvmq_events_sidecar.port = 9\nvmq_events_sidecar.hooks = on_tuesday\n";
        let config = crate::config::Config::parse(text, "f").unwrap();
        let e = EventsSidecarConfig::from_settings(config.plugin_settings("vmq_events_sidecar"))
            .unwrap_err();
        assert!(e.to_string().starts_with("f:3: unknown hook"), "{e}");
    }

    #[test]
    fn delivery_and_ack_timeout() {
        let mut c = EventsSidecarConfig::default();
        assert!(!c.at_least_once);
        c.set("delivery", "at_least_once").unwrap();
        c.set("ack_timeout", "2s").unwrap();
        assert!(c.at_least_once);
        assert_eq!(c.ack_timeout, Duration::from_secs(2));
        c.set("delivery", "at_most_once").unwrap();
        assert!(!c.at_least_once);
        let e = c.set("delivery", "exactly_once").unwrap_err();
        assert!(e.contains("at_most_once or at_least_once"), "{e}");
        assert!(c.set("ack_timeout", "0s").is_err());
        assert!(c.set("ack_timeout", "never").is_err());
    }
}
