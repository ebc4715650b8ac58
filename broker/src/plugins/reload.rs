//! Re-reading a plugin's file when it changes (password file, ACL file), as VerneMQ does: the
//! file's modification time is checked every interval; a file that no longer parses keeps the
//! rules loaded before, and says why in the log.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Calls `reload` whenever `path`'s modification time moves, checking every `interval` (zero:
/// never). Stops with the runtime.
pub fn watch(path: PathBuf, interval: Duration, reload: impl Fn() + Send + Sync + 'static) {
    if interval.is_zero() {
        return;
    }
    let modified = |p: &PathBuf| -> Option<SystemTime> {
        std::fs::metadata(p).and_then(|m| m.modified()).ok()
    };
    let mut last = modified(&path);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = modified(&path);
            if now != last {
                last = now;
                reload();
            }
        }
    });
}

/// The parsed contents of a plugin's file, replaced when the file changes and still parses.
pub struct Watched<T> {
    path: PathBuf,
    what: &'static str,
    parse: fn(&str, &std::path::Path) -> Result<T, String>,
    current: parking_lot::RwLock<std::sync::Arc<T>>,
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// Reads and parses `path` (`key` names the config key in errors: the file must exist and
    /// parse), then re-reads it every `interval` when it changed.
    pub fn start(
        key: &'static str,
        path: &std::path::Path,
        interval: Duration,
        parse: fn(&str, &std::path::Path) -> Result<T, String>,
    ) -> Result<std::sync::Arc<Watched<T>>, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{key} {}: {e}", path.display()))?;
        let value = parse(&text, path)?;
        tracing::info!(file = %path.display(), "{key} loaded");
        let watched = std::sync::Arc::new(Watched {
            path: path.to_owned(),
            what: key,
            parse,
            current: parking_lot::RwLock::new(std::sync::Arc::new(value)),
        });
        let weak = std::sync::Arc::downgrade(&watched);
        watch(path.to_owned(), interval, move || {
            if let Some(w) = weak.upgrade() {
                w.reload();
            }
        });
        Ok(watched)
    }

    /// What the file says now.
    pub fn get(&self) -> Option<std::sync::Arc<T>> {
        Some(self.current.read().clone())
    }

    /// Re-reads the file; one that does not parse leaves the previous contents in place.
    pub fn reload(&self) {
        match std::fs::read_to_string(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))
            .and_then(|t| (self.parse)(&t, &self.path))
        {
            Ok(value) => {
                tracing::info!(file = %self.path.display(), "{} reloaded", self.what);
                *self.current.write() = std::sync::Arc::new(value);
            }
            Err(e) => {
                tracing::error!(error = %e, "{}: keeping what was loaded before", self.what)
            }
        }
    }
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").field("path", &self.path).finish()
    }
}

/// The settings of a plugin that reads one file: where it is and how often to look at it
/// (`<plugin>.<file_key>`, `<plugin>.<reload_key>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSettings {
    /// The file.
    pub path: PathBuf,
    /// How often its modification time is checked (zero: never).
    pub reload: Duration,
}

impl FileSettings {
    /// Reads the plugin's lines: `file_key` (default `default_path`) and `reload_key`
    /// (default 10 s); any other key is an error naming its line.
    pub fn parse(
        settings: &[crate::config::PluginSetting],
        plugin: &str,
        (file_key, reload_key): (&str, &str),
        default_path: &str,
    ) -> Result<FileSettings, crate::config::ConfigError> {
        let mut f = FileSettings {
            path: PathBuf::from(default_path),
            reload: Duration::from_secs(10),
        };
        for s in settings {
            if s.key == file_key {
                f.path = PathBuf::from(&s.value);
            } else if s.key == reload_key {
                f.reload = crate::config::reload_interval(&s.value).map_err(|e| s.error(e))?;
            } else {
                return Err(s.error(format!(
                    "unknown key \"{plugin}.{}\" (known: {plugin}.{file_key}, {plugin}.{reload_key})",
                    s.key
                )));
            }
        }
        Ok(f)
    }
}
