//! vmq-broker: an MQTT 3.1/3.1.1/5.0 broker in the mould of VerneMQ.
//!
//! Data flows one way: [`listener`] -> connection ([`mqtt`] codec) -> [`session`] -> [`router`]
//! -> session -> connection. [`Server`] ties them together for the binary and for tests.

pub mod broker;
pub mod config;
pub mod hooks;
pub mod http;
pub mod listener;
pub mod message;
pub mod metrics;
pub mod mqtt;
pub mod plugins;
pub mod router;
pub mod session;
pub mod settings;
pub mod store;
pub mod topic;
pub mod trace;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

pub use broker::Broker;
pub use config::Config;

/// A running broker: its listeners are bound and accepting.
#[derive(Debug)]
pub struct Server {
    broker: Arc<Broker>,
    addrs: Vec<SocketAddr>,
    http_addrs: Vec<SocketAddr>,
    tasks: TaskTracker,
}

impl Server {
    /// Binds every listener of `config` and starts accepting. Fails (binding nothing) if any
    /// listener cannot bind.
    pub async fn start(config: Config) -> std::io::Result<Server> {
        Self::start_with_plugins(config, Vec::new()).await
    }

    /// Like [`Server::start`], with extra plugins (an embedding program's own auth, say).
    pub async fn start_with_plugins(
        config: Config,
        plugins: Vec<Arc<dyn hooks::Plugin>>,
    ) -> std::io::Result<Server> {
        let metrics = Arc::new(metrics::Metrics::default());
        let store = if config.message_store {
            let dir = &config.persistent_data_dir;
            let durability = config.message_store_durability;
            Some(store::Store::open_dir(dir, durability, metrics.clone()).map_err(io_error)?)
        } else {
            None
        };
        Self::start_inner(config, plugins, metrics, store).await
    }

    /// Like [`Server::start_with_plugins`], with the store kept in `backend` whatever the
    /// config says (tests keep a [`store::memory::MemoryBackend`] across restarts).
    pub async fn start_with_backend(
        config: Config,
        plugins: Vec<Arc<dyn hooks::Plugin>>,
        backend: impl store::Backend,
    ) -> std::io::Result<Server> {
        let metrics = Arc::new(metrics::Metrics::default());
        let durability = config.message_store_durability;
        let store = store::Store::start(backend, durability, metrics.clone()).map_err(io_error)?;
        Self::start_inner(config, plugins, metrics, Some(store)).await
    }

    async fn start_inner(
        config: Config,
        plugins: Vec<Arc<dyn hooks::Plugin>>,
        metrics: Arc<metrics::Metrics>,
        store: Option<(store::Store, store::Recovered)>,
    ) -> std::io::Result<Server> {
        let mut listeners = Vec::new();
        for l in &config.listeners {
            listeners.push(listener::Listener::bind(l.clone()).await?);
        }
        let mut http_listeners = Vec::new();
        for l in &config.http_listeners {
            http_listeners.push(http::HttpListener::bind(l.clone()).await?);
        }
        let (store, recovered) = match store {
            Some((s, r)) => (Some(Arc::new(s)), r),
            None => (None, store::Recovered::default()),
        };
        let broker =
            Broker::assemble(config, plugins, metrics, store).map_err(std::io::Error::other)?;
        // Everything stored is back before the first client is accepted.
        session::persist::restore(&broker, recovered);
        let tasks = TaskTracker::new();
        let mut addrs = Vec::new();
        let mut handles = Vec::new();
        for l in listeners {
            addrs.push(l.local_addr()?);
            let handle = l.handle()?;
            handles.push(handle.clone());
            tasks.spawn(l.run(broker.clone(), tasks.clone(), handle));
        }
        let mut http_addrs = Vec::new();
        for l in http_listeners {
            http_addrs.push(l.local_addr()?);
            handles.push(l.handle()?);
            tasks.spawn(l.run(broker.clone()));
        }
        if let Ok(mut all) = broker.listeners.lock() {
            *all = handles;
        }
        tasks.spawn(http::Rates::run(broker.clone()));
        Ok(Server {
            broker,
            addrs,
            http_addrs,
            tasks,
        })
    }

    /// The bound addresses, in config order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The bound HTTP addresses, in config order.
    pub fn http_addrs(&self) -> &[SocketAddr] {
        &self.http_addrs
    }

    /// The shared broker context (metrics, router, sessions).
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stops accepting, tells clients the server is going (v5 DISCONNECT 0x8B), and waits up
    /// to `grace` for connections to close.
    pub async fn shutdown(self, grace: Duration) {
        self.broker.shutdown.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
        if let Some(store) = self.broker.store.clone() {
            // Commits what is pending and closes the file.
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
        }
    }
}

fn io_error(e: store::StoreError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}
