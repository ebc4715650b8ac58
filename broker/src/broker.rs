//! The broker's shared context: configuration, router, sessions and counters. One `Arc<Broker>`
//! is handed to every connection task.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::hooks::Hooks;
use crate::message::Message;
use crate::metrics::Metrics;
use crate::plugins::Plugins;
use crate::router::Router;
use crate::session::Registry;
use crate::settings::Settings;
use crate::store::{Op, Store, Ticket};

/// Everything connections share.
#[derive(Debug)]
pub struct Broker {
    /// Configuration.
    pub config: Config,
    /// Subscriptions and retained messages.
    pub router: Router,
    /// Sessions by client id.
    pub registry: Arc<Registry>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the broker shuts down: connections say goodbye (v5: 0x8B) and close.
    pub shutdown: CancellationToken,
    /// The plugins the config turned on.
    pub plugins: Plugins,
    /// Where persistent sessions and retained messages are written (`message_store = on`).
    pub store: Option<Arc<Store>>,
    /// What an operator may change at run time.
    pub settings: Settings,
    /// When the broker started, for uptime.
    pub started: std::time::Instant,
    /// Every listener (MQTT and HTTP), as operators see them.
    pub listeners: std::sync::Mutex<Vec<Arc<crate::listener::ListenerHandle>>>,
    /// The management API's keys (in the data directory).
    pub api_keys: crate::http::ApiKeys,
    /// Publish rates, sampled each second for the status page.
    pub rates: crate::http::Rates,
    /// Live traces of clients (`vmq-admin trace client`).
    pub tracer: crate::trace::Tracer,
    /// MQTT connections open now, across listeners.
    pub connections: std::sync::atomic::AtomicUsize,
    /// Start of the current one-second window of `max_connect_rate`, and connections in it.
    pub connect_window: std::sync::Mutex<(std::time::Instant, usize)>,
}

impl Broker {
    /// A broker with nothing in it yet: starts the plugins the config turns on, beside the
    /// embedding program's `extra` ones (they see only the hook API, like the built-in ones),
    /// with counters and store made by the caller (the server opens the store first, so that
    /// its counters are the broker's). Must run inside a tokio runtime.
    pub fn assemble(
        config: Config,
        extra: Vec<Arc<dyn crate::hooks::Plugin>>,
        metrics: Arc<Metrics>,
        store: Option<Arc<Store>>,
    ) -> Result<Arc<Broker>, String> {
        let plugins = Plugins::start(&config, &metrics, extra)?;
        Ok(Arc::new(Broker {
            settings: Settings::from_config(&config),
            listeners: std::sync::Mutex::default(),
            api_keys: crate::http::ApiKeys::new(&config.persistent_data_dir),
            rates: crate::http::Rates::default(),
            tracer: crate::trace::Tracer::default(),
            connections: std::sync::atomic::AtomicUsize::new(0),
            connect_window: std::sync::Mutex::new((std::time::Instant::now(), 0)),
            started: std::time::Instant::now(),
            config,
            router: Router::default(),
            registry: Arc::default(),
            metrics,
            shutdown: CancellationToken::new(),
            plugins,
            store,
        }))
    }

    /// Stores (or, with an empty payload, clears) the retained message of its topic, in the
    /// router and in the store; the ticket says when the store has it.
    pub fn retain(&self, mountpoint: &str, message: Arc<Message>) -> Option<Ticket> {
        let store = self.store.as_ref().map(|store| {
            store.submit(Op::PutRetained {
                mountpoint: mountpoint.into(),
                topic: message.topic.clone(),
                message: (!message.payload.is_empty()).then(|| message.clone()),
            })
        });
        self.router.retain(mountpoint, message);
        store
    }

    /// The hook chains.
    pub fn hooks(&self) -> &Hooks {
        &self.plugins.hooks
    }
}
