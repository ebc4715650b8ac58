//! The settings of what the broker sends out: its log (`log.*`) and its reporters (`$SYS`,
//! Graphite).

use std::path::PathBuf;
use std::time::Duration;

use super::values::parse_size;

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

pub(super) fn rotation_size(v: &str) -> Result<Option<u64>, String> {
    if v == "infinity" {
        return Ok(None);
    }
    let n = parse_size(v)?;
    if n == 0 {
        return Err("a rotation size is at least one byte (or infinity)".into());
    }
    Ok(Some(n as u64))
}

pub(super) fn syslog_facility(v: &str) -> Result<u8, String> {
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
pub(super) fn millis(v: &str) -> Result<Duration, String> {
    v.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("expected milliseconds, got {v:?}"))
}
