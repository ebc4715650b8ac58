//! Plugins shipped with the broker, built from config (`plugins.<name> = on`). They see the
//! broker only through [`crate::hooks`].

pub mod acl;
pub mod events_sidecar;
pub mod passwd;
mod reload;

use std::sync::Arc;

use crate::config::Config;
use crate::hooks::{Hooks, Plugin};
use crate::metrics::Metrics;

/// The plugins the config turns on, registered with the hook system.
pub struct Plugins {
    /// The hook chains.
    pub hooks: Hooks,
    /// The events sidecar, if on (for its runtime API and metrics).
    pub events_sidecar: Option<Arc<events_sidecar::EventsSidecar>>,
}

impl Plugins {
    /// Starts every plugin the config turns on. Must run inside a tokio runtime. A plugin that
    /// cannot start (its file is missing or does not parse) is an error: the broker does not
    /// start half-protected.
    pub fn start(
        config: &Config,
        _metrics: &Arc<Metrics>,
        extra: Vec<Arc<dyn Plugin>>,
    ) -> Result<Plugins, String> {
        let mut list: Vec<Arc<dyn Plugin>> = extra;
        let on = |name: &str| config.plugins.get(name).copied().unwrap_or(false);
        let priority = |name: &str| config.plugin_priority.get(name).copied().unwrap_or(0);
        if on("vmq_passwd") {
            list.push(passwd::Passwd::start(
                &config.password_file,
                config.password_reload_interval,
                priority("vmq_passwd"),
            )?);
        }
        if on("vmq_acl") {
            list.push(acl::Acl::start(
                &config.acl_file,
                config.acl_reload_interval,
                priority("vmq_acl"),
            )?);
        }
        let mut events_sidecar = None;
        if on("vmq_events_sidecar") {
            let plugin = Arc::new(events_sidecar::EventsSidecar::start(
                config.events_sidecar.clone(),
            ));
            list.push(plugin.clone());
            events_sidecar = Some(plugin);
        }
        Ok(Plugins {
            hooks: Hooks::new(list),
            events_sidecar,
        })
    }
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.hooks.fmt(f)
    }
}
