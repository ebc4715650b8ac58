//! The settings an operator may change while the broker runs (`vmq-admin set key=value`,
//! `vmq-admin show key`). They start from the config file; a change applies to what happens
//! next (the next CONNECT, the next session created), never retroactively.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use crate::config::{Config, parse_duration, parse_flag};

/// Runtime-changeable settings, read lock-free on the connection path.
#[derive(Debug)]
pub struct Settings {
    allow_anonymous: AtomicBool,
    max_inflight_messages: AtomicUsize,
    max_online_messages: AtomicUsize,
    max_offline_messages: AtomicUsize,
    max_client_id_size: AtomicUsize,
    /// Seconds; `u64::MAX` is never.
    persistent_client_expiration: AtomicU64,
}

/// The keys `set` and `show` accept.
pub const KEYS: [&str; 6] = [
    "allow_anonymous",
    "max_inflight_messages",
    "max_online_messages",
    "max_offline_messages",
    "max_client_id_size",
    "persistent_client_expiration",
];

fn number(v: &str) -> Result<usize, String> {
    v.parse()
        .map_err(|_| format!("expected a number, got {v:?}"))
}

impl Settings {
    /// The settings as the config file has them.
    pub fn from_config(c: &Config) -> Settings {
        Settings {
            allow_anonymous: AtomicBool::new(c.allow_anonymous),
            max_inflight_messages: AtomicUsize::new(usize::from(c.max_inflight_messages)),
            max_online_messages: AtomicUsize::new(c.max_online_messages),
            max_offline_messages: AtomicUsize::new(c.max_offline_messages),
            max_client_id_size: AtomicUsize::new(c.max_client_id_size),
            persistent_client_expiration: AtomicU64::new(
                c.persistent_client_expiration
                    .map_or(u64::MAX, |d| d.as_secs()),
            ),
        }
    }

    /// Whether clients without credentials may connect.
    pub fn allow_anonymous(&self) -> bool {
        self.allow_anonymous.load(Relaxed)
    }

    /// Unacknowledged QoS 1/2 messages per client (0: no limit beyond 65535).
    pub fn max_inflight_messages(&self) -> usize {
        self.max_inflight_messages.load(Relaxed)
    }

    /// Queue limits of new sessions: (online, offline).
    pub fn queue_limits(&self) -> (usize, usize) {
        (
            self.max_online_messages.load(Relaxed),
            self.max_offline_messages.load(Relaxed),
        )
    }

    /// Longest client id accepted.
    pub fn max_client_id_size(&self) -> usize {
        self.max_client_id_size.load(Relaxed)
    }

    /// How long a v3 persistent session lives offline (`None`: forever).
    pub fn persistent_client_expiration(&self) -> Option<Duration> {
        match self.persistent_client_expiration.load(Relaxed) {
            u64::MAX => None,
            s => Some(Duration::from_secs(s)),
        }
    }

    /// Changes one setting; the value is parsed as in the config file.
    pub fn set(&self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "allow_anonymous" => self.allow_anonymous.store(parse_flag(value)?, Relaxed),
            "max_inflight_messages" => {
                let n = number(value)?;
                if n > 65_535 {
                    return Err("max_inflight_messages is at most 65535".into());
                }
                self.max_inflight_messages.store(n, Relaxed)
            }
            "max_online_messages" => self.max_online_messages.store(number(value)?, Relaxed),
            "max_offline_messages" => self.max_offline_messages.store(number(value)?, Relaxed),
            "max_client_id_size" => self.max_client_id_size.store(number(value)?, Relaxed),
            "persistent_client_expiration" => self.persistent_client_expiration.store(
                parse_duration(value)?.map_or(u64::MAX, |d| d.as_secs()),
                Relaxed,
            ),
            _ => {
                return Err(format!(
                    "{key:?} cannot be changed at run time (these can: {})",
                    KEYS.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// One setting's current value, written as in the config file.
    pub fn show(&self, key: &str) -> Result<String, String> {
        let flag = |b: bool| if b { "on" } else { "off" }.to_owned();
        Ok(match key {
            "allow_anonymous" => flag(self.allow_anonymous()),
            "max_inflight_messages" => self.max_inflight_messages().to_string(),
            "max_online_messages" => self.queue_limits().0.to_string(),
            "max_offline_messages" => self.queue_limits().1.to_string(),
            "max_client_id_size" => self.max_client_id_size().to_string(),
            "persistent_client_expiration" => match self.persistent_client_expiration() {
                None => "never".into(),
                Some(d) => format!("{}s", d.as_secs()),
            },
            _ => {
                return Err(format!(
                    "unknown setting {key:?} (known: {})",
                    KEYS.join(", ")
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_then_show_and_bad_values_refused() {
        let s = Settings::from_config(&Config::default());
        assert_eq!(s.show("allow_anonymous").unwrap(), "off");
        s.set("allow_anonymous", "on").unwrap();
        assert!(s.allow_anonymous());
        s.set("persistent_client_expiration", "1h").unwrap();
        assert_eq!(s.show("persistent_client_expiration").unwrap(), "3600s");
        assert!(s.set("allow_anonymous", "maybe").is_err());
        assert!(s.set("max_inflight_messages", "70000").is_err());
        let e = s.set("nodename", "x").unwrap_err();
        assert!(e.contains("cannot be changed at run time"), "{e}");
    }
}
