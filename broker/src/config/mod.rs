//! The broker's configuration, from a `vernemq.conf`-style file: `key.sub = value` lines, `#`
//! comments, durations (`30s`, `1h`, `never`), sizes (`64KB`, `1MB`) and `on`/`off` flags.
//!
//! Every key is known: a misspelt key or a bad value is an error naming the line, and the broker
//! does not start half-configured.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod keys;
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

/// The `$SYS` tree: the broker's counters published as messages (VerneMQ's `systree_*` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysTree {
    /// `systree_enabled` (on).
    pub enabled: bool,
    /// `systree_interval`, in milliseconds in the file (20000); zero turns it off.
    pub interval: Duration,
    /// `systree_qos` (0).
    pub qos: u8,
    /// `systree_retain` (off).
    pub retain: bool,
    /// `systree_mountpoint` ("").
    pub mountpoint: String,
}

impl Default for SysTree {
    fn default() -> Self {
        SysTree {
            enabled: true,
            interval: Duration::from_secs(20),
            qos: 0,
            retain: false,
            mountpoint: String::new(),
        }
    }
}

/// The Graphite reporter: the counters pushed as plaintext lines over TCP (`graphite_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graphite {
    /// `graphite_enabled` (off).
    pub enabled: bool,
    /// `graphite_host` (localhost).
    pub host: String,
    /// `graphite_port` (2003).
    pub port: u16,
    /// `graphite_interval`, in milliseconds in the file (20000).
    pub interval: Duration,
    /// `graphite_prefix`: put before every metric name, with a dot.
    pub prefix: Option<String>,
    /// `graphite_api_key` (hosted Graphite): put before the prefix, with a dot.
    pub api_key: Option<String>,
}

impl Default for Graphite {
    fn default() -> Self {
        Graphite {
            enabled: false,
            host: "localhost".into(),
            port: 2003,
            interval: Duration::from_secs(20),
            prefix: None,
            api_key: None,
        }
    }
}

/// Where the console log goes (`log.console`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleTarget {
    /// Standard error.
    Console,
    /// `log.console.file`.
    File,
    /// Both.
    Both,
    /// Nowhere.
    Off,
}

/// A log file and its rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    /// The file.
    pub path: PathBuf,
    /// Rotated once it would grow past this many bytes (`None`: `infinity`, never).
    pub rotation_size: Option<u64>,
    /// Rotated files kept (`<file>.0` is the newest).
    pub rotation_keep: usize,
}

/// The `log.*` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `log.console` (console: this broker's default; VerneMQ's generated file says file).
    pub console: ConsoleTarget,
    /// `log.console.level`: `debug`, `info`, `warning` or `error`.
    pub level: String,
    /// `log.console.file` (./log/console.log) and its rotation.
    pub console_file: LogFile,
    /// `log.error` (off here unless set; VerneMQ's generated file sets on): errors also to
    /// `log.error.file`.
    pub error_on: bool,
    /// `log.error.file` (./log/error.log) and its rotation.
    pub error: LogFile,
    /// `log.syslog` (off): also to the local syslog.
    pub syslog: bool,
    /// `log.syslog.facility` as its number (daemon: 3).
    pub facility: u8,
}

impl Default for LogConfig {
    fn default() -> Self {
        let file = |path: &str| LogFile {
            path: PathBuf::from(path),
            rotation_size: None,
            rotation_keep: 5,
        };
        LogConfig {
            console: ConsoleTarget::Console,
            level: "info".into(),
            console_file: file("./log/console.log"),
            error_on: false,
            error: file("./log/error.log"),
            syslog: false,
            facility: 3,
        }
    }
}

impl LogConfig {
    /// The error file, when `log.error = on` (off unless the file says so: VerneMQ's
    /// generated file does).
    pub fn error_file(&self) -> Option<&LogFile> {
        self.error_on.then_some(&self.error)
    }
}

fn rotation_size(v: &str) -> Result<Option<u64>, String> {
    if v == "infinity" {
        return Ok(None);
    }
    let n = parse_size(v)?;
    if n == 0 {
        return Err("a rotation size is at least one byte (or infinity)".into());
    }
    Ok(Some(n as u64))
}

fn syslog_facility(v: &str) -> Result<u8, String> {
    const NAMES: [&str; 24] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
        "authpriv", "ftp", "", "", "", "", "local0", "local1", "local2", "local3", "local4",
        "local5", "local6", "local7",
    ];
    NAMES
        .iter()
        .position(|n| !n.is_empty() && *n == v)
        .map(|i| i as u8)
        .ok_or_else(|| format!("unknown syslog facility {v:?}"))
}

/// Milliseconds, as VerneMQ writes `systree_interval` and `graphite_interval`.
fn millis(v: &str) -> Result<Duration, String> {
    v.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("expected milliseconds, got {v:?}"))
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

/// The keys the typed parser implements by name (for suggestions; listener keys are patterns).
const TYPED_KEYS: &[&str] = &[
    "nodename",
    "allow_anonymous",
    "max_inflight_messages",
    "max_online_messages",
    "max_offline_messages",
    "persistent_client_expiration",
    "max_message_size",
    "max_client_id_size",
    "topic_alias_max",
    "topic_alias_max_client",
    "receive_max_broker",
    "shared_subscription_policy",
    "retain_available",
    "persistent_data_dir",
    "message_store",
    "message_store.durability",
    "max_keepalive",
    "log.console.level",
    "listener.max_connections",
    "max_connections",
    "max_connect_rate",
    "max_subscriptions_per_client",
    "connect_timeout",
    "vmq_passwd.password_file",
    "vmq_passwd.password_reload_interval",
    "vmq_acl.acl_file",
    "vmq_acl.acl_reload_interval",
    "vmq_events_sidecar.hostname",
    "vmq_events_sidecar.port",
    "vmq_events_sidecar.pool_size",
    "vmq_events_sidecar.backlog_size",
    "vmq_events_sidecar.hooks",
    "vmq_events_sidecar.shutdown_timeout",
    "plugins.vmq_passwd",
    "plugins.vmq_acl",
    "plugins.vmq_events_sidecar",
    "systree_enabled",
    "systree_interval",
    "systree_qos",
    "systree_retain",
    "systree_mountpoint",
    "graphite_enabled",
    "graphite_host",
    "graphite_port",
    "graphite_interval",
    "graphite_prefix",
    "graphite_api_key",
    "topic_max_depth",
    "log.console",
    "log.console.file",
    "log.console.rotation.size",
    "log.console.rotation.keep",
    "log.error",
    "log.error.file",
    "log.error.rotation.size",
    "log.error.rotation.keep",
    "log.syslog",
    "log.syslog.facility",
    "upgrade_outgoing_qos",
    "override_max_online_messages",
    "max_last_will_delay",
    "listener.max_connection_lifetime",
    "max_ws_frame_size",
    "retry_interval",
    "prometheus_namespace",
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
                        if let Some(class) = keys::lookup(key) {
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

/// Where a setting came from.
#[derive(Debug, Clone, Copy)]
enum Origin<'a> {
    /// A line of a file.
    File(&'a str, usize),
    /// An environment variable.
    Env(&'a str),
}

impl Origin<'_> {
    fn error(self, message: String) -> ConfigError {
        match self {
            Origin::File(file, line) => ConfigError::Line {
                file: file.to_owned(),
                line,
                message,
            },
            Origin::Env(var) => ConfigError::Invalid(format!("environment {var}: {message}")),
        }
    }

    /// The file and line (an environment variable is line 0 of `environment <NAME>`).
    fn file_line(self) -> (String, usize) {
        match self {
            Origin::File(f, l) => (f.to_owned(), l),
            Origin::Env(var) => (format!("environment {var}"), 0),
        }
    }
}

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(file, line) => write!(f, "{file}:{line}"),
            Origin::Env(var) => write!(f, "environment {var}"),
        }
    }
}

/// One `key = value` setting.
struct Line<'a> {
    origin: Origin<'a>,
    key: &'a str,
    value: &'a str,
}

impl<'a> Line<'a> {
    /// A file line's setting; `None` for blank lines and comments.
    fn split(file: &'a str, line: usize, raw: &'a str) -> Result<Option<Line<'a>>, ConfigError> {
        let text = raw.trim();
        if text.is_empty() || text.starts_with('#') {
            return Ok(None);
        }
        let origin = Origin::File(file, line);
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| origin.error(format!("expected `key = value`, got {text:?}")))?;
        Ok(Some(Line {
            origin,
            key: key.trim(),
            value: value.trim(),
        }))
    }
}

fn many(mut problems: Vec<ConfigError>) -> ConfigError {
    if problems.len() == 1 {
        problems.remove(0)
    } else {
        ConfigError::Many(problems)
    }
}

fn clone_error(e: &ConfigError) -> ConfigError {
    match e {
        ConfigError::Line {
            file,
            line,
            message,
        } => ConfigError::Line {
            file: file.clone(),
            line: *line,
            message: message.clone(),
        },
        other => ConfigError::Invalid(other.to_string()),
    }
}

/// What happens to a plugin that is not one of ours.
const NO_SUCH_PLUGIN: &str =
    "no such plugin here (Erlang plugins cannot be loaded); the broker runs without it";

/// A plugin name that is not ours is refused when it looks like a misspelling of one of ours
/// (`vmq_paswd`: the broker must not start without the auth the user asked for).
fn check_plugin_name(name: &str) -> Result<(), String> {
    let known = KNOWN_PLUGINS.iter().chain(&keys::ABSENT_PLUGINS).copied();
    match keys::suggest(name, known) {
        Some(near) => Err(format!(
            "unknown plugin {name:?} (did you mean {near:?}? available: {})",
            KNOWN_PLUGINS.join(", ")
        )),
        None => Ok(()),
    }
}

/// An unknown key, with the nearest known key when it looks misspelt.
fn unknown_key(key: &str) -> String {
    let known = TYPED_KEYS.iter().copied().chain(keys::literal_keys());
    match keys::suggest(key, known) {
        Some(near) => format!("unknown key {key:?} (did you mean {near:?}?)"),
        None => format!("unknown key {key:?}"),
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
        assert_eq!(
            e.to_string(),
            "f.conf:3: unknown key \"allow_anonymus\" (did you mean \"allow_anonymous\"?)"
        );
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
        let e = Config::parse("plugins.vmq_paswd = on", "f").unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown plugin \"vmq_paswd\" (did you mean \"vmq_passwd\"?"),
            "{e}"
        );
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

    #[test]
    fn every_problem_of_a_file_is_reported_at_once_with_suggestions() {
        let text = "listener.tcp.a = 127.0.0.1:1\nalow_anonymous = on\nmax_inflight_mesages = 5\n\
                    colour = blue\nmax_online_messages = lots\nlistener.ssl.b = 127.0.0.1:2\n";
        let e = Config::parse(text, "f.conf").unwrap_err();
        let lines: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
        assert_eq!(
            lines,
            [
                "f.conf:2: unknown key \"alow_anonymous\" (did you mean \"allow_anonymous\"?)",
                "f.conf:3: unknown key \"max_inflight_mesages\" (did you mean \"max_inflight_messages\"?)",
                "f.conf:4: unknown key \"colour\"",
                "f.conf:5: expected a number, got \"lots\"",
                "f.conf:6: listener.ssl.b needs listener.ssl.b.certfile and listener.ssl.b.keyfile (or listener.ssl.certfile and listener.ssl.keyfile)",
            ]
        );
    }

    #[test]
    fn vernemq_keys_are_known_and_classified() {
        let text = "listener.tcp.a = 127.0.0.1:1\nerlang.max_ports = 262144\n\
                    leveldb.maximum_memory.percent = 70\nlistener.ssl.pskfile = ./etc/vmq.psk\n\
                    listener.tcp.name.allow_anonymous_override = off\nplugins.vmq_bridge = on\n\
                    plugins.vmq_webhooks = off\nvmq_diversity.auth_postgres.enabled = off\n";
        let c = Config::parse(text, "f").unwrap();
        let classes: Vec<(&str, bool)> = c
            .accepted
            .iter()
            .map(|a| (a.key.as_str(), matches!(a.class, keys::KeyClass::NotYet(_))))
            .collect();
        assert_eq!(
            classes,
            [
                ("erlang.max_ports", false),
                ("leveldb.maximum_memory.percent", false),
                ("listener.ssl.pskfile", true),
                ("plugins.vmq_bridge", true),
                ("vmq_diversity.auth_postgres.enabled", true),
            ]
        );
        // The PSK file is not a listener named "pskfile", nor is "name" (a policy setting of a
        // listener with no address, as in VerneMQ's default file) a listener here.
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.not_implemented().count(), 3);
        assert_eq!(c.accepted[0].origin, "f:2");
    }

    #[test]
    fn transport_settings_apply_to_every_listener_of_the_transport() {
        let text = "listener.ssl.a = 127.0.0.1:1\nlistener.ssl.b = 127.0.0.1:2\n\
                    listener.ssl.certfile = c.pem\nlistener.ssl.keyfile = k.pem\n\
                    listener.ssl.b.certfile = b.pem\nlistener.tcp.mountpoint = m\n\
                    listener.tcp.t = 127.0.0.1:3\n";
        let c = Config::parse(text, "f").unwrap();
        let certs: Vec<_> = c
            .listeners
            .iter()
            .map(|l| {
                (
                    l.name.as_str(),
                    l.tls.certfile.clone(),
                    l.mountpoint.as_str(),
                )
            })
            .collect();
        assert_eq!(
            certs,
            [
                ("t", None, "m"),
                ("a", Some(PathBuf::from("c.pem")), ""),
                ("b", Some(PathBuf::from("b.pem")), ""),
            ]
        );
    }

    #[test]
    fn docker_environment_variables_override_the_file() {
        assert_eq!(
            env_key("DOCKER_VERNEMQ_LISTENER__TCP__DEFAULT").as_deref(),
            Some("listener.tcp.default")
        );
        assert_eq!(
            env_key("DOCKER_VERNEMQ_ALLOW_ANONYMOUS").as_deref(),
            Some("allow_anonymous")
        );
        assert_eq!(env_key("HOME"), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.conf");
        std::fs::write(
            &path,
            "listener.tcp.a = 127.0.0.1:1\nallow_anonymous = off\n",
        )
        .unwrap();
        let env = [
            ("DOCKER_VERNEMQ_ALLOW_ANONYMOUS".to_owned(), "on".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let c = Config::load_with_env(&path, env).unwrap();
        assert!(c.allow_anonymous);
        let env = [(
            "DOCKER_VERNEMQ_MAX_INFLIGHT_MESSAGES".to_owned(),
            "x".to_owned(),
        )];
        let e = Config::load_with_env(&path, env).unwrap_err().to_string();
        assert!(
            e.starts_with("environment DOCKER_VERNEMQ_MAX_INFLIGHT_MESSAGES: expected a number"),
            "{e}"
        );
    }
}
