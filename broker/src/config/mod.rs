//! The broker's configuration, from a `vernemq.conf`-style file: `key.sub = value` lines, `#`
//! comments, durations (`30s`, `1h`, `never`), sizes (`64KB`, `1MB`) and `on`/`off` flags.
//!
//! Every key is known: a misspelt key or a bad value is an error naming the line, and the broker
//! does not start half-configured.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod cluster;
pub mod keys;
mod lines;
mod listeners;
mod reporting;
mod values;

pub use cluster::{ClusterConfig, ClusterTls, DuringNetsplit};
use keys::{NO_SUCH_PLUGIN, check_plugin_name, unknown_key};
use lines::{Line, Origin, clone_error, many};
pub use listeners::{HttpListenerConfig, TcpListenerConfig, TlsConfig, Transport};
pub use reporting::{ConsoleTarget, Graphite, LogConfig, LogFile, SysTree};
use reporting::{millis, rotation_size, syslog_facility};
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
    /// Several of the above, one per line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Many(Vec<ConfigError>),
}

impl ConfigError {
    /// Each problem on its own (a [`ConfigError::Many`] gives its parts).
    pub fn problems(&self) -> Vec<&ConfigError> {
        match self {
            ConfigError::Many(all) => all.iter().flat_map(ConfigError::problems).collect(),
            one => vec![one],
        }
    }
}

/// A VerneMQ key the typed parser does not implement, as the file had it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedKey {
    /// The key.
    pub key: String,
    /// Where it was set (`file:line`, or the environment variable).
    pub origin: String,
    /// What it does here.
    pub class: keys::KeyClass,
}

/// The environment variables VerneMQ's Docker image reads: `DOCKER_VERNEMQ_<KEY>=value`, the
/// key lower-cased with `__` standing for `.`.
pub const ENV_PREFIX: &str = "DOCKER_VERNEMQ_";

/// The config key an environment variable sets, if it is one of VerneMQ's Docker variables.
pub fn env_key(variable: &str) -> Option<String> {
    let rest = variable.strip_prefix(ENV_PREFIX)?;
    (!rest.is_empty()).then(|| rest.to_lowercase().replace("__", "."))
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
    /// Where the log goes (`log.*`).
    pub log: LogConfig,
    /// Clustering (`listener.vmq.clustering`, `distributed_cookie`, ...).
    pub cluster: ClusterConfig,
    /// `plugins.<name> = on|off`.
    pub plugins: BTreeMap<String, bool>,
    /// `plugins.<name>.priority = <n>`: lower runs first in the auth chains.
    pub plugin_priority: BTreeMap<String, i32>,
    /// `<plugin>.<key> = value` lines of the known plugins, as written: each plugin parses
    /// its own, when the plugin host starts it.
    pub plugin_keys: BTreeMap<String, Vec<PluginSetting>>,
    /// `listener.max_connections`: the default limit of each listener (`None`: none).
    pub listener_max_connections: Option<usize>,
    /// `listener.max_connection_lifetime`: the default of each listener (`None`: none).
    pub listener_max_connection_lifetime: Option<Duration>,
    /// `max_connections`: connections across all listeners (`None`: no limit).
    pub max_connections: Option<usize>,
    /// `max_connect_rate`: new connections accepted per second (`None`: no limit).
    pub max_connect_rate: Option<usize>,
    /// `max_subscriptions_per_client` (`None`: no limit).
    pub max_subscriptions_per_client: Option<usize>,
    /// How long a new connection has to send its CONNECT.
    pub connect_timeout: Duration,
    /// The `$SYS` tree (`systree_*`).
    pub systree: SysTree,
    /// The Graphite reporter (`graphite_*`).
    pub graphite: Graphite,
    /// Most levels a topic name or filter may have (`topic_max_depth`; `None`: no limit).
    pub topic_max_depth: Option<usize>,
    /// `upgrade_outgoing_qos`: deliver at the subscription's QoS, not min(published, granted).
    pub upgrade_outgoing_qos: bool,
    /// `override_max_online_messages`: a full online queue drops its oldest message for the
    /// new one (instead of the new one).
    pub override_max_online_messages: bool,
    /// `max_last_will_delay` (`client`: `None`, the client's will delay as it asked).
    pub max_last_will_delay: Option<Duration>,
    /// `max_ws_frame_size`: the largest WebSocket frame a client may send, in bytes.
    pub max_ws_frame_size: usize,
    /// `prometheus_namespace`: a prefix of every `/metrics` name (none unless set; VerneMQ's
    /// generated file sets `vernemq_`).
    pub prometheus_namespace: String,
    /// The `DOCKER_VERNEMQ_*` variables applied over the file: (variable, key, value).
    pub environment: Vec<(String, String, String)>,
    /// `retry_interval` (seconds; 0: never): unacknowledged QoS 1/2 messages are sent again to
    /// MQTT 3 clients that stay connected (MQTT 5 forbids it except on reconnect).
    pub retry_interval: Option<Duration>,
    /// VerneMQ keys accepted without being implemented (classes 2 and 3 of
    /// [`keys::KeyClass`]), in the order they were read.
    pub accepted: Vec<AcceptedKey>,
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
    /// `key = value` lines as a plugin's settings from file `f` (for plugins' tests).
    #[cfg(test)]
    pub(crate) fn lines(text: &str) -> Vec<PluginSetting> {
        text.lines()
            .enumerate()
            .filter_map(|(i, l)| {
                let (k, v) = l.split_once('=')?;
                Some(PluginSetting {
                    key: k.trim().into(),
                    value: v.trim().into(),
                    file: "f".into(),
                    line: i + 1,
                })
            })
            .collect()
    }

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
pub const KNOWN_PLUGINS: [&str; 5] = [
    "vmq_events_sidecar",
    "vmq_passwd",
    "vmq_acl",
    "vmq_webhooks",
    "vmq_diversity",
];

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
            log: LogConfig::default(),
            cluster: ClusterConfig::default(),
            plugins: BTreeMap::new(),
            plugin_priority: BTreeMap::new(),
            plugin_keys: BTreeMap::new(),
            listener_max_connections: None,
            listener_max_connection_lifetime: None,
            max_connections: None,
            max_connect_rate: None,
            max_subscriptions_per_client: None,
            connect_timeout: Duration::from_secs(10),
            systree: SysTree::default(),
            graphite: Graphite::default(),
            topic_max_depth: Some(10),
            upgrade_outgoing_qos: false,
            override_max_online_messages: false,
            max_last_will_delay: None,
            max_ws_frame_size: 268_435_456,
            prometheus_namespace: String::new(),
            environment: Vec::new(),
            retry_interval: Some(Duration::from_secs(20)),
            accepted: Vec::new(),
        }
    }
}

impl Config {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::iter::empty())
    }

    /// Reads and parses a config file, then applies VerneMQ's Docker environment variables
    /// (`DOCKER_VERNEMQ_ALLOW_ANONYMOUS=on`; others in `env` are ignored) over it.
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let env: Vec<(String, String, String)> = env
            .into_iter()
            .filter_map(|(var, value)| env_key(&var).map(|key| (var, key, value)))
            .collect();
        let mut config = Self::parse_with(&text, &path.display().to_string(), &env)?;
        config.environment = env;
        Ok(config)
    }

    /// Parses config text; `file` names it in errors. Every problem is reported at once.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        Self::parse_with(text, file, &[])
    }

    /// `text`, then the (variable, key, value) settings from the environment over it.
    fn parse_with(
        text: &str,
        file: &str,
        env: &[(String, String, String)],
    ) -> Result<Config, ConfigError> {
        let mut bad = Vec::new();
        let lines: Vec<Line<'_>> = text
            .lines()
            .enumerate()
            .filter_map(|(i, raw)| match Line::split(file, i + 1, raw) {
                Ok(line) => line,
                Err(e) => {
                    bad.push(e);
                    None
                }
            })
            .chain(env.iter().map(|(var, key, value)| Line {
                origin: Origin::Env(var),
                key,
                value: value.trim(),
            }))
            .collect();
        match Self::parse_lines(lines.into_iter(), file) {
            Ok(c) if bad.is_empty() => Ok(c),
            Ok(_) => Err(many(bad)),
            Err(e) => {
                bad.extend(e.problems().into_iter().map(clone_error));
                Err(many(bad))
            }
        }
    }

    fn parse_lines<'a>(
        lines: impl Iterator<Item = Line<'a>>,
        file: &str,
    ) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        let mut listeners = listeners::Builder::default();
        let mut problems = Vec::new();
        for Line { origin, key, value } in lines {
            let err = |message: String| origin.error(message);
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
                    "log.console" => {
                        c.log.console = match value {
                            "console" => ConsoleTarget::Console,
                            "file" => ConsoleTarget::File,
                            "both" => ConsoleTarget::Both,
                            "off" => ConsoleTarget::Off,
                            _ => {
                                return Err(format!(
                                    "expected console, file, both or off, got {value:?}"
                                ));
                            }
                        }
                    }
                    "log.console.file" => c.log.console_file.path = PathBuf::from(value),
                    "log.console.rotation.size" => {
                        c.log.console_file.rotation_size = rotation_size(value)?
                    }
                    "log.console.rotation.keep" => {
                        c.log.console_file.rotation_keep = parse_num(value)?
                    }
                    "log.error" => c.log.error_on = parse_flag(value)?,
                    "log.error.file" => c.log.error.path = PathBuf::from(value),
                    "log.error.rotation.size" => c.log.error.rotation_size = rotation_size(value)?,
                    "log.error.rotation.keep" => c.log.error.rotation_keep = parse_num(value)?,
                    "log.syslog" => c.log.syslog = parse_flag(value)?,
                    "log.syslog.facility" => c.log.facility = syslog_facility(value)?,
                    "log.console.level" => match value {
                        "debug" | "info" | "warning" | "error" => c.log.level = value.to_owned(),
                        _ => {
                            return Err(format!(
                                "expected debug, info, warning or error, got {value:?}"
                            ));
                        }
                    },
                    _ if key.starts_with("plugins.") && key.ends_with(".priority") => {
                        let name = &key["plugins.".len()..key.len() - ".priority".len()];
                        let priority = parse_num(value)?;
                        if KNOWN_PLUGINS.contains(&name) {
                            c.plugin_priority.insert(name.to_owned(), priority);
                        } else {
                            check_plugin_name(name)?;
                            c.accepted.push(AcceptedKey {
                                key: key.to_owned(),
                                origin: origin.to_string(),
                                class: keys::KeyClass::NotYet(NO_SUCH_PLUGIN),
                            });
                        }
                    }
                    _ if key.starts_with("plugins.")
                        && keys::ABSENT_PLUGINS.contains(&&key["plugins.".len()..]) =>
                    {
                        if parse_flag(value)? {
                            c.accepted.push(AcceptedKey {
                                key: key.to_owned(),
                                origin: origin.to_string(),
                                class: keys::KeyClass::NotYet(
                                    "this VerneMQ plugin does not exist here (yet); the broker runs without it",
                                ),
                            });
                        }
                    }
                    _ if key.starts_with("plugins.") && !key["plugins.".len()..].contains('.') => {
                        let name = &key["plugins.".len()..];
                        let on = parse_flag(value)?;
                        if KNOWN_PLUGINS.contains(&name) {
                            c.plugins.insert(name.to_owned(), on);
                        } else {
                            // Not a misspelling of ours: one of the user's own Erlang plugins.
                            check_plugin_name(name)?;
                            if on {
                                c.accepted.push(AcceptedKey {
                                    key: key.to_owned(),
                                    origin: origin.to_string(),
                                    class: keys::KeyClass::NotYet(NO_SUCH_PLUGIN),
                                });
                            }
                        }
                    }
                    _ if let Some((plugin, rest)) = key.split_once('.')
                        && KNOWN_PLUGINS.contains(&plugin) =>
                    {
                        let (file, line) = origin.file_line();
                        c.plugin_keys
                            .entry(plugin.to_owned())
                            .or_default()
                            .push(PluginSetting {
                                key: rest.to_owned(),
                                value: value.to_owned(),
                                file,
                                line,
                            });
                    }
                    _ if key.starts_with("listener.http.")
                        && !key["listener.http.".len()..].contains('.') =>
                    {
                        listeners::set_http(&mut c.http_listeners, key, value)?
                    }
                    "listener.max_connections" => c.listener_max_connections = parse_limit(value)?,
                    "listener.max_connection_lifetime" => {
                        c.listener_max_connection_lifetime = listeners::lifetime(value)?
                    }
                    "max_connections" => c.max_connections = parse_limit(value)?,
                    "max_connect_rate" => c.max_connect_rate = parse_limit(value)?,
                    "max_subscriptions_per_client" => {
                        // 0 is no limit, as in VerneMQ.
                        c.max_subscriptions_per_client = parse_limit(value)?.filter(|n| *n > 0)
                    }
                    "systree_enabled" => c.systree.enabled = parse_flag(value)?,
                    "systree_interval" => c.systree.interval = millis(value)?,
                    "systree_qos" => {
                        c.systree.qos = parse_num(value)?;
                        if c.systree.qos > 2 {
                            return Err("systree_qos is 0, 1 or 2".into());
                        }
                    }
                    "systree_retain" => c.systree.retain = parse_flag(value)?,
                    "systree_mountpoint" => c.systree.mountpoint = value.to_owned(),
                    "graphite_enabled" => c.graphite.enabled = parse_flag(value)?,
                    "graphite_host" => c.graphite.host = value.to_owned(),
                    "graphite_port" => c.graphite.port = parse_num(value)?,
                    "graphite_interval" => {
                        c.graphite.interval = millis(value)?;
                        if c.graphite.interval.is_zero() {
                            return Err("graphite_interval must be at least 1 ms".into());
                        }
                    }
                    "graphite_prefix" => c.graphite.prefix = Some(value.to_owned()),
                    "graphite_api_key" => c.graphite.api_key = Some(value.to_owned()),
                    "upgrade_outgoing_qos" => c.upgrade_outgoing_qos = parse_flag(value)?,
                    "prometheus_namespace" => {
                        if !value
                            .chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
                            || value.starts_with(|ch: char| ch.is_ascii_digit())
                        {
                            return Err(format!(
                                "{value:?} cannot start a Prometheus metric name (letters, digits, _ and :)"
                            ));
                        }
                        c.prometheus_namespace = value.to_owned()
                    }
                    "retry_interval" => {
                        let secs: u64 = parse_num(value)?;
                        c.retry_interval = (secs > 0).then(|| Duration::from_secs(secs));
                    }
                    "max_ws_frame_size" => {
                        c.max_ws_frame_size = parse_size(value)?;
                        if c.max_ws_frame_size < 16 {
                            return Err("max_ws_frame_size must be at least 16 bytes".into());
                        }
                    }
                    "override_max_online_messages" => {
                        c.override_max_online_messages = parse_flag(value)?
                    }
                    "max_last_will_delay" => {
                        c.max_last_will_delay = match value {
                            "client" => None,
                            _ => Some(parse_duration(value)?.unwrap_or(Duration::MAX)),
                        }
                    }
                    "topic_max_depth" => c.topic_max_depth = parse_limit(value)?.filter(|n| *n > 0),
                    "connect_timeout" => {
                        c.connect_timeout = parse_duration(value)?
                            .filter(|d| !d.is_zero())
                            .ok_or("connect_timeout must be a positive duration")?
                    }
                    _ => {
                        if c.cluster.set(key, value)? {
                        } else if let Some(class) = keys::lookup(key) {
                            c.accepted.push(AcceptedKey {
                                key: key.to_owned(),
                                origin: origin.to_string(),
                                class,
                            });
                        } else if !listeners.set(key, value, origin.file_line())? {
                            return Err(unknown_key(key));
                        }
                    }
                }
                Ok(())
            })();
            if let Err(message) = r {
                problems.push(err(message));
            }
        }
        match listeners.finish(
            c.listener_max_connections,
            c.listener_max_connection_lifetime,
        ) {
            Ok(l) => c.listeners = l,
            Err(e) => problems.extend(e),
        }
        if let Err(e) = c.cluster.finish() {
            problems.push(ConfigError::Invalid(format!("{file}: {e}")));
        }
        if c.listeners.is_empty() && problems.is_empty() {
            problems.push(ConfigError::Invalid(format!(
                "{file}: no MQTT listener configured (add e.g. listener.tcp.default = 127.0.0.1:1883)"
            )));
        }
        if problems.is_empty() {
            Ok(c)
        } else {
            Err(many(problems))
        }
    }

    /// The accepted keys that do nothing here although a user would notice (class 3), for
    /// the warnings at start.
    pub fn not_implemented(&self) -> impl Iterator<Item = &AcceptedKey> {
        self.accepted
            .iter()
            .filter(|a| matches!(a.class, keys::KeyClass::NotYet(_)))
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
mod tests;
