//! The broker's configuration, from a `vernemq.conf`-style file: `key.sub = value` lines, `#`
//! comments, durations (`30s`, `1h`, `never`), sizes (`64KB`, `1MB`) and `on`/`off` flags.
//!
//! Every key is known: a misspelt key or a bad value is an error naming the line, and the broker
//! does not start half-configured.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod listeners;
mod values;

pub use listeners::{HttpListenerConfig, TcpListenerConfig, TlsConfig, Transport};
use values::parse_limit;
pub use values::{parse_duration, parse_flag, parse_num, parse_size, reload_interval};

/// A configuration error, with the line it comes from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is wrong.
    #[error("{file}:{line}: {message}")]
    Line {
        /// The file (or `<string>`).
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The whole is inconsistent (e.g. no listener).
    #[error("{0}")]
    Invalid(String),
}

/// How a message for a share group picks its member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedPolicy {
    /// Any member (we go round robin over the online members).
    Random,
    /// Members on this node first: on a single node, the same as `Random`.
    PreferLocal,
    /// Only members on this node: on a single node, the same as `Random`.
    LocalOnly,
}

/// Everything the broker reads from its config file.
#[derive(Debug, Clone)]
pub struct Config {
    /// Node name (VerneMQ's `nodename`).
    pub nodename: String,
    /// MQTT TCP listeners.
    pub listeners: Vec<TcpListenerConfig>,
    /// HTTP listeners (`listener.http.<name> = ip:port`).
    pub http_listeners: Vec<HttpListenerConfig>,
    /// Whether clients without credentials may connect.
    pub allow_anonymous: bool,
    /// Unacknowledged QoS 1/2 messages per client (0 = unlimited, capped at 65535).
    pub max_inflight_messages: u16,
    /// Messages queued for an online client beyond the inflight window.
    pub max_online_messages: usize,
    /// Messages queued for an offline client.
    pub max_offline_messages: usize,
    /// How long a v3 persistent session lives offline (`None`: forever).
    pub persistent_client_expiration: Option<Duration>,
    /// Largest inbound packet in bytes (0 = the protocol's limit).
    pub max_message_size: usize,
    /// Longest client id accepted.
    pub max_client_id_size: usize,
    /// Highest inbound topic alias accepted from a v5 client (0 disables aliases).
    pub topic_alias_max: u16,
    /// Receive maximum the broker announces to v5 clients.
    pub receive_max_broker: u16,
    /// Shared subscription policy.
    pub shared_subscription_policy: SharedPolicy,
    /// Whether retained messages are supported.
    pub retain_available: bool,
    /// Where persistent state lives.
    pub persistent_data_dir: PathBuf,
    /// Whether persistent sessions, their queues and retained messages are kept in the store
    /// under `persistent_data_dir` (`message_store = on`) or in memory only.
    pub message_store: bool,
    /// When QoS 1/2 publishes are acknowledged relative to the store's commit.
    pub message_store_durability: Durability,
    /// The longest keep-alive a v5 client may use, in seconds (65535: no cap). A v5 client
    /// asking for more (or for none) is told this value in CONNACK's server keep alive.
    pub max_keepalive: u16,
    /// Log level for the console (`debug`, `info`, `warning`, `error`).
    pub log_console_level: String,
    /// `plugins.<name> = on|off`.
    pub plugins: BTreeMap<String, bool>,
    /// `plugins.<name>.priority = <n>`: lower runs first in the auth chains.
    pub plugin_priority: BTreeMap<String, i32>,
    /// `<plugin>.<key> = value` lines of the known plugins, as written: each plugin parses
    /// its own, when the plugin host starts it.
    pub plugin_keys: BTreeMap<String, Vec<PluginSetting>>,
    /// `listener.max_connections`: the default limit of each listener (`None`: none).
    pub listener_max_connections: Option<usize>,
    /// `max_connections`: connections across all listeners (`None`: no limit).
    pub max_connections: Option<usize>,
    /// `max_connect_rate`: new connections accepted per second (`None`: no limit).
    pub max_connect_rate: Option<usize>,
    /// `max_subscriptions_per_client` (`None`: no limit).
    pub max_subscriptions_per_client: Option<usize>,
    /// How long a new connection has to send its CONNECT.
    pub connect_timeout: Duration,
}

/// One `<plugin>.<key> = value` line, kept for the plugin to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSetting {
    /// The key after `<plugin>.`.
    pub key: String,
    /// The value, trimmed.
    pub value: String,
    /// The file it was read from.
    pub file: String,
    /// Its 1-based line.
    pub line: usize,
}

impl PluginSetting {
    /// An error about this line.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Line {
            file: self.file.clone(),
            line: self.line,
            message: message.into(),
        }
    }
}

/// When a QoS 1/2 publish whose message had to be stored is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// PUBACK/PUBREC only once the message is on disk (group commits): nothing acknowledged
    /// is lost, even to a crash.
    Durable,
    /// PUBACK/PUBREC at once; the store commits shortly after. A crash can lose the last
    /// moments' messages; a clean shutdown loses nothing.
    Relaxed,
}

/// The plugins this broker ships.
pub const KNOWN_PLUGINS: [&str; 3] = ["vmq_events_sidecar", "vmq_passwd", "vmq_acl"];

impl Default for Config {
    fn default() -> Self {
        Config {
            nodename: "VerneMQ@127.0.0.1".into(),
            listeners: Vec::new(),
            http_listeners: Vec::new(),
            allow_anonymous: false,
            max_inflight_messages: 20,
            max_online_messages: 1000,
            max_offline_messages: 1000,
            persistent_client_expiration: None,
            max_message_size: 0,
            max_client_id_size: 100,
            topic_alias_max: 10,
            receive_max_broker: 65_535,
            shared_subscription_policy: SharedPolicy::PreferLocal,
            retain_available: true,
            persistent_data_dir: PathBuf::from("./data"),
            message_store: true,
            message_store_durability: Durability::Durable,
            max_keepalive: u16::MAX,
            log_console_level: "info".into(),
            plugins: BTreeMap::new(),
            plugin_priority: BTreeMap::new(),
            plugin_keys: BTreeMap::new(),
            listener_max_connections: None,
            max_connections: None,
            max_connect_rate: None,
            max_subscriptions_per_client: None,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        let mut listeners = listeners::Builder::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| ConfigError::Line {
                file: file.to_owned(),
                line: i + 1,
                message,
            };
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| err(format!("expected `key = value`, got {line:?}")))?;
            let (key, value) = (key.trim(), value.trim());
            let r: Result<(), String> = (|| {
                match key {
                    "nodename" => c.nodename = value.to_owned(),
                    "allow_anonymous" => c.allow_anonymous = parse_flag(value)?,
                    "max_inflight_messages" => {
                        let n: u32 = parse_num(value)?;
                        c.max_inflight_messages = n.min(65_535) as u16;
                    }
                    "max_online_messages" => c.max_online_messages = parse_num(value)?,
                    "max_offline_messages" => c.max_offline_messages = parse_num(value)?,
                    "persistent_client_expiration" => {
                        c.persistent_client_expiration = parse_duration(value)?
                    }
                    "max_message_size" => c.max_message_size = parse_size(value)?,
                    "max_client_id_size" => c.max_client_id_size = parse_num(value)?,
                    "topic_alias_max" | "topic_alias_max_client" => {
                        c.topic_alias_max = parse_num(value)?
                    }
                    "receive_max_broker" => {
                        let n: u16 = parse_num(value)?;
                        if n == 0 {
                            return Err("receive_max_broker must be at least 1".into());
                        }
                        c.receive_max_broker = n;
                    }
                    "shared_subscription_policy" => {
                        c.shared_subscription_policy = match value {
                            "random" => SharedPolicy::Random,
                            "prefer_local" => SharedPolicy::PreferLocal,
                            "local_only" => SharedPolicy::LocalOnly,
                            _ => {
                                return Err(format!(
                                    "expected random, prefer_local or local_only, got {value:?}"
                                ));
                            }
                        }
                    }
                    "retain_available" => c.retain_available = parse_flag(value)?,
                    "persistent_data_dir" => c.persistent_data_dir = PathBuf::from(value),
                    "message_store" => c.message_store = parse_flag(value)?,
                    "message_store.durability" => {
                        c.message_store_durability = match value {
                            "durable" => Durability::Durable,
                            "relaxed" => Durability::Relaxed,
                            _ => {
                                return Err(format!("expected durable or relaxed, got {value:?}"));
                            }
                        }
                    }
                    "max_keepalive" => {
                        let n: u16 = parse_num(value)?;
                        if n == 0 {
                            return Err("max_keepalive must be at least 1 second".into());
                        }
                        c.max_keepalive = n;
                    }
                    "log.console.level" => match value {
                        "debug" | "info" | "warning" | "error" => {
                            c.log_console_level = value.to_owned()
                        }
                        _ => {
                            return Err(format!(
                                "expected debug, info, warning or error, got {value:?}"
                            ));
                        }
                    },
                    _ if key.starts_with("plugins.") && key.ends_with(".priority") => {
                        let name = &key["plugins.".len()..key.len() - ".priority".len()];
                        if !KNOWN_PLUGINS.contains(&name) {
                            return Err(format!(
                                "unknown plugin {name:?} (available: {})",
                                KNOWN_PLUGINS.join(", ")
                            ));
                        }
                        c.plugin_priority.insert(name.to_owned(), parse_num(value)?);
                    }
                    _ if key.starts_with("plugins.") => {
                        let name = &key["plugins.".len()..];
                        if !KNOWN_PLUGINS.contains(&name) {
                            return Err(format!(
                                "unknown plugin {name:?} (available: {})",
                                KNOWN_PLUGINS.join(", ")
                            ));
                        }
                        c.plugins.insert(name.to_owned(), parse_flag(value)?);
                    }
                    _ if let Some((plugin, rest)) = key.split_once('.')
                        && KNOWN_PLUGINS.contains(&plugin) =>
                    {
                        c.plugin_keys
                            .entry(plugin.to_owned())
                            .or_default()
                            .push(PluginSetting {
                                key: rest.to_owned(),
                                value: value.to_owned(),
                                file: file.to_owned(),
                                line: i + 1,
                            });
                    }
                    _ if key.starts_with("listener.http.") => {
                        listeners::set_http(&mut c.http_listeners, key, value)?
                    }
                    "listener.max_connections" => c.listener_max_connections = parse_limit(value)?,
                    "max_connections" => c.max_connections = parse_limit(value)?,
                    "max_connect_rate" => c.max_connect_rate = parse_limit(value)?,
                    "max_subscriptions_per_client" => {
                        c.max_subscriptions_per_client = parse_limit(value)?
                    }
                    "connect_timeout" => {
                        c.connect_timeout = parse_duration(value)?
                            .filter(|d| !d.is_zero())
                            .ok_or("connect_timeout must be a positive duration")?
                    }
                    _ => {
                        if !listeners.set(key, value, i + 1)? {
                            return Err(format!("unknown key {key:?}"));
                        }
                    }
                }
                Ok(())
            })();
            r.map_err(err)?;
        }
        c.listeners = listeners.finish(c.listener_max_connections, file)?;
        if c.listeners.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "{file}: no MQTT listener configured (add e.g. listener.tcp.default = 127.0.0.1:1883)"
            )));
        }
        Ok(c)
    }

    /// The `<plugin>.*` lines of `plugin`, in file order.
    pub fn plugin_settings(&self, plugin: &str) -> &[PluginSetting] {
        self.plugin_keys.get(plugin).map_or(&[], Vec::as_slice)
    }

    /// The largest inbound packet, in bytes.
    pub fn max_packet_size(&self) -> usize {
        if self.max_message_size == 0 {
            crate::mqtt::MAX_REMAINING_LENGTH + 5
        } else {
            self.max_message_size
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_and_listeners() {
        let c = Config::parse(
            "# comment\nallow_anonymous = on\nlistener.tcp.default = 127.0.0.1:1883\n\
             listener.tcp.iot = 127.0.0.1:1884\nlistener.tcp.iot.mountpoint = iot\n\
             persistent_client_expiration = 1h30m\nmax_message_size = 64KB\n",
            "t",
        )
        .unwrap();
        assert!(c.allow_anonymous);
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[1].mountpoint, "iot");
        assert_eq!(
            c.persistent_client_expiration,
            Some(Duration::from_secs(5400))
        );
        assert_eq!(c.max_message_size, 65536);
    }

    #[test]
    fn huge_durations_are_errors_not_panics() {
        // Found by the config fuzz target.
        for v in [
            "037w547814851762060w",
            "18446744073709551615w",
            "18446744073709551615s1s",
        ] {
            let e = parse_duration(v).unwrap_err();
            assert!(e.contains("too long"), "{v}: {e}");
        }
        assert!(reload_interval("037w547814851762060w").is_err());
    }

    #[test]
    fn errors_name_the_line() {
        let e = Config::parse(
            "listener.tcp.a = 127.0.0.1:1\n\nallow_anonymus = on\n",
            "f.conf",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "f.conf:3: unknown key \"allow_anonymus\"");
        let e = Config::parse("allow_anonymous = maybe", "f.conf").unwrap_err();
        assert!(
            e.to_string().starts_with("f.conf:1: expected on or off"),
            "{e}"
        );
        let e = Config::parse("listener.tcp.a = nowhere", "f").unwrap_err();
        assert!(e.to_string().contains("expected ip:port"), "{e}");
        assert!(
            Config::parse("allow_anonymous = on", "f").is_err(),
            "no listener"
        );
        assert!(parse_duration("5x").is_err());
        let e = Config::parse("plugins.vmq_nothing = on", "f").unwrap_err();
        assert!(e.to_string().contains("unknown plugin"), "{e}");
        let c = Config::parse(
            "listener.tcp.a = 127.0.0.1:1\nvmq_events_sidecar.hooks = on_tuesday",
            "f",
        )
        .unwrap();
        let s = &c.plugin_settings("vmq_events_sidecar")[0];
        assert_eq!(
            (s.key.as_str(), s.value.as_str(), s.line),
            ("hooks", "on_tuesday", 2)
        );
        assert_eq!(parse_duration("never").unwrap(), None);
    }
}
