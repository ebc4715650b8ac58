//! Plugins shipped with the broker, built from config (`plugins.<name> = on`). They see the
//! broker only through [`crate::hooks`].

pub mod events_sidecar;

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
    /// Starts every plugin the config turns on. Must run inside a tokio runtime.
    pub fn start(config: &Config, _metrics: &Arc<Metrics>, extra: Vec<Arc<dyn Plugin>>) -> Plugins {
        let mut list: Vec<Arc<dyn Plugin>> = extra;
        let mut events_sidecar = None;
        if config
            .plugins
            .get("vmq_events_sidecar")
            .copied()
            .unwrap_or(false)
        {
            let plugin = Arc::new(events_sidecar::EventsSidecar::start(
                config.events_sidecar.clone(),
            ));
            list.push(plugin.clone());
            events_sidecar = Some(plugin);
        }
        Plugins {
            hooks: Hooks::new(list),
            events_sidecar,
        }
    }
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.hooks.fmt(f)
    }
}
