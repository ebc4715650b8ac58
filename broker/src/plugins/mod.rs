//! The plugin host, and the plugins shipped with the broker (`plugins.<name> = on`).
//!
//! A plugin is a unit: it owns its config keys (`<name>.*`, parsed by the plugin from the raw
//! settings the config file held), its hook side (a [`crate::hooks::Plugin`]), its admin
//! commands (`vmq-admin <words>` = `/api/v1/<words>`), its metrics and its status, and it gets a
//! [`BrokerHandle`] when the engine exists. The host builds the plugins the config turns on,
//! hands their hook sides to the engine, and routes commands, metrics, status and shutdown to
//! them. HTTP and the admin tool know the host, never a plugin by name.

pub mod acl;
pub mod client_tls;
pub mod command;
pub mod events_sidecar;
pub(crate) mod hook_names;
pub mod lua;
pub(crate) mod modifiers;
pub mod passwd;
mod reload;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::config::{Config, ConfigError, PluginSetting};
use crate::engine::BrokerHandle;
use crate::hooks::{Hooks, Plugin};
use command::{Answer, Args, CommandError};

/// Where a plugin writes its metrics (the Prometheus exposition implements it).
pub trait MetricsOut {
    /// Starts a metric family.
    fn header(&mut self, name: &str, kind: &str, help: &str);
    /// One sample of the current family.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64);
    /// A family with a single unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.header(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// A plugin as the host runs it.
pub trait Hosted: Send + Sync + 'static {
    /// Its name (`vmq_events_sidecar`): `plugins.<name> = on` turns it on.
    fn name(&self) -> &'static str;

    /// Its side of the hook API.
    fn hooks(self: Arc<Self>) -> Arc<dyn Plugin>;

    /// Itself, for [`Host::plugin`] to hand out as its own type.
    fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync>;

    /// Called once the engine exists, with what the plugin may do with the broker.
    fn start(&self, _broker: BrokerHandle) {}

    /// The first command words it answers (`["events"]`), and its usage lines.
    fn commands(&self) -> (&'static [&'static str], &'static str) {
        (&[], "")
    }

    /// Runs one of its commands; `words` start with one of [`Hosted::commands`].
    fn command(&self, words: &[&str], _args: &Args) -> Result<Answer, CommandError> {
        Err(CommandError::not_found(format!(
            "unknown command {:?}",
            words.join(" ")
        )))
    }

    /// Writes its metrics.
    fn metrics(&self, _out: &mut dyn MetricsOut) {}

    /// Its status, for `/status.json` and `plugin show`.
    fn status(&self) -> Value {
        Value::Null
    }

    /// The broker is stopping and its clients are gone: finish what is pending within
    /// `within` (the events relay writes out its backlog) and say what could not be done.
    fn stop(&self, _within: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The host side of a plugin that reads one file (`<name>.<file_key>`, reloaded every
/// `<name>.<reload_key>`) and starts with `<Type>::start(path, reload, priority)`: its settings
/// check, its start, and its [`Hosted`] impl.
macro_rules! file_plugin {
    ($plugin:ty, $name:literal, $keys:expr, $default:literal) => {
        fn settings(
            s: &[crate::config::PluginSetting],
        ) -> Result<super::reload::FileSettings, crate::config::ConfigError> {
            super::reload::FileSettings::parse(s, $name, $keys, $default)
        }

        #[doc = concat!("Checks the `", $name, ".*` lines.")]
        pub(super) fn check_settings(
            s: &[crate::config::PluginSetting],
        ) -> Result<(), crate::config::ConfigError> {
            settings(s).map(drop)
        }

        #[doc = concat!("Starts the plugin from its `", $name, ".*` lines.")]
        pub(super) fn start_hosted(
            _config: &crate::config::Config,
            s: &[crate::config::PluginSetting],
            priority: i32,
        ) -> Result<Arc<dyn super::Hosted>, String> {
            let f = settings(s).map_err(|e| e.to_string())?;
            Ok(<$plugin>::start(&f.path, f.reload, priority)?)
        }

        impl super::Hosted for $plugin {
            fn name(&self) -> &'static str {
                $name
            }

            fn hooks(self: Arc<Self>) -> Arc<dyn Plugin> {
                self
            }

            fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
                self
            }
        }
    };
}
use file_plugin;

/// Starts a shipped plugin from the config, its own lines and its priority.
type StartFn = fn(&Config, &[PluginSetting], i32) -> Result<Arc<dyn Hosted>, String>;

/// A plugin the broker ships: its name, how it reads its settings (without starting) and how
/// it starts.
struct Shipped {
    name: &'static str,
    check: fn(&[PluginSetting]) -> Result<(), ConfigError>,
    start: StartFn,
    usage: &'static str,
}

/// Every plugin the broker ships, in start order. Their names are the config's
/// [`crate::config::KNOWN_PLUGINS`].
const SHIPPED: [Shipped; 5] = [
    Shipped {
        name: "vmq_passwd",
        check: passwd::check_settings,
        start: passwd::start_hosted,
        usage: "",
    },
    Shipped {
        name: "vmq_acl",
        check: acl::check_settings,
        start: acl::start_hosted,
        usage: "",
    },
    Shipped {
        name: lua::NAME,
        check: lua::check_settings,
        start: lua::start_hosted,
        usage: lua::USAGE,
    },
    Shipped {
        name: webhooks::NAME,
        check: webhooks::check_settings,
        start: webhooks::start_hosted,
        usage: webhooks::USAGE,
    },
    Shipped {
        name: events_sidecar::NAME,
        check: events_sidecar::check_settings,
        start: events_sidecar::start_hosted,
        usage: events_sidecar::USAGE,
    },
];

/// Checks the settings of every shipped plugin (on or off): the first wrong one, with its file
/// and line. [`Host::start`] does this too; `--check` and tests call it alone.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    for s in &SHIPPED {
        (s.check)(config.plugin_settings(s.name))?;
    }
    Ok(())
}

/// The usage lines of every shipped plugin's commands (on or off).
pub fn usage() -> String {
    SHIPPED
        .iter()
        .map(|s| s.usage)
        .filter(|u| !u.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The plugins the config turned on, and the embedding program's own.
pub struct Host {
    hosted: Vec<Arc<dyn Hosted>>,
    extra: Vec<Arc<dyn Plugin>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.hosted.iter().map(|p| p.name()))
            .entries(self.extra.iter().map(|p| p.name().to_owned()))
            .finish()
    }
}

impl Host {
    /// Starts every plugin the config turns on, beside the embedding program's `extra` ones
    /// (they see only the hook API, like the built-in ones). Must run inside a tokio runtime. A
    /// plugin that cannot start (a bad setting, its file missing or not parsing) is an error:
    /// the broker does not start half-protected.
    pub fn start(config: &Config, extra: Vec<Arc<dyn Plugin>>) -> Result<Host, String> {
        check(config).map_err(|e| e.to_string())?;
        let mut hosted = Vec::new();
        for s in &SHIPPED {
            if config.plugins.get(s.name).copied().unwrap_or(false) {
                let priority = config.plugin_priority.get(s.name).copied().unwrap_or(0);
                hosted.push((s.start)(config, config.plugin_settings(s.name), priority)?);
            }
        }
        Ok(Host { hosted, extra })
    }

    /// The hook chains of every plugin, for the engine.
    pub fn hooks(&self) -> Hooks {
        let mut list = self.extra.clone();
        list.extend(self.hosted.iter().map(|p| p.clone().hooks()));
        Hooks::new(list)
    }

    /// Hands each plugin its broker handle.
    pub fn started(&self, broker: &BrokerHandle) {
        for p in &self.hosted {
            p.start(broker.clone());
        }
    }

    /// The plugin named `name`, if it is on.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Hosted>> {
        self.hosted.iter().find(|p| p.name() == name)
    }

    /// The running plugin of type `T`, if it is on (for the embedding program and tests).
    pub fn plugin<T: Hosted>(&self) -> Option<Arc<T>> {
        self.hosted
            .iter()
            .find_map(|p| p.clone().as_any().downcast::<T>().ok())
    }

    /// Runs a plugin's command, if a plugin owns `words[0]`: `None` when none does.
    pub fn command(&self, words: &[&str], args: &Args) -> Option<Result<Answer, CommandError>> {
        let first = *words.first()?;
        let plugin = self
            .hosted
            .iter()
            .find(|p| p.commands().0.contains(&first))?;
        Some(plugin.command(words, args))
    }

    /// The usage lines of every plugin's commands.
    pub fn usage(&self) -> String {
        self.hosted
            .iter()
            .map(|p| p.commands().1)
            .filter(|u| !u.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every plugin's metrics.
    pub fn metrics(&self, out: &mut dyn MetricsOut) {
        for p in &self.hosted {
            p.metrics(out);
        }
    }

    /// Every plugin's status, by name.
    pub fn status(&self) -> serde_json::Map<String, Value> {
        self.hosted
            .iter()
            .map(|p| (p.name().to_owned(), p.status()))
            .collect()
    }

    /// Lets every plugin finish within `within`, all at once.
    pub async fn stop(&self, within: Duration) {
        futures::future::join_all(self.hosted.iter().map(|p| p.stop(within))).await;
    }
}
