//! vmq-broker: an MQTT 3.1/3.1.1/5.0 broker in the mould of VerneMQ.
//!
//! Data flows one way: [`listener`] -> [`connection`] ([`mqtt`] codec) -> [`engine`] (router,
//! sessions) -> connection. [`Server`] ties them together for the binary and for tests;
//! `ARCHITECTURE.md` draws the rooms.

pub mod cluster;
pub mod config;
pub mod connection;
pub mod engine;
pub mod hooks;
pub mod http;
pub mod listener;
pub mod logging;
pub mod message;
pub mod metrics;
pub mod mqtt;
pub mod plugins;
pub mod reporters;
pub mod store;
pub mod topic;
pub mod trace;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

pub use config::Config;
pub use engine::Engine;

/// A running broker: its listeners are bound and accepting.
#[derive(Debug)]
pub struct Server {
    engine: Arc<Engine>,
    cluster: Option<Arc<cluster::Cluster>>,
    node: Arc<http::Node>,
    addrs: Vec<SocketAddr>,
    http_addrs: Vec<SocketAddr>,
    tasks: TaskTracker,
}

/// What a shutdown did, for the final log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Whether every connection had closed within the grace period.
    pub connections_closed: bool,
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
        extra: Vec<Arc<dyn hooks::Plugin>>,
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
        let host = Arc::new(plugins::Host::start(&config, extra).map_err(std::io::Error::other)?);
        let admission = Arc::new(listener::Admission::new(&config));
        let api_keys = http::ApiKeys::new(&config.persistent_data_dir);
        let engine = Engine::new(config, host.hooks(), metrics, store);
        host.started(&engine.handle());
        // Everything stored is back before the first client is accepted.
        engine.restore(recovered);
        let cluster = cluster::Cluster::start(&engine).await?.map(Arc::new);
        let ctx = connection::Context {
            engine: engine.clone(),
            tracer: Arc::default(),
        };
        let mut handles = Vec::new();
        let mut addrs = Vec::new();
        for l in &listeners {
            addrs.push(l.local_addr()?);
            handles.push(l.handle()?);
        }
        let mut http_addrs = Vec::new();
        for l in &http_listeners {
            http_addrs.push(l.local_addr()?);
            handles.push(l.handle()?);
        }
        let node = Arc::new(http::Node {
            engine: engine.clone(),
            listeners: handles.clone(),
            api_keys,
            rates: Arc::default(),
            tracer: ctx.tracer.clone(),
            plugins: host,
            cluster: cluster.clone(),
        });
        let tasks = TaskTracker::new();
        for (l, handle) in listeners.into_iter().zip(&handles) {
            tasks.spawn(l.run(
                ctx.clone(),
                admission.clone(),
                tasks.clone(),
                handle.clone(),
            ));
        }
        for l in http_listeners {
            tasks.spawn(l.run(node.clone()));
        }
        tasks.spawn(node.rates.clone().run(engine.clone()));
        tasks.spawn(reporters::systree::run(engine.clone()));
        tasks.spawn(reporters::graphite::run(engine.clone()));
        Ok(Server {
            engine,
            cluster,
            node,
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

    /// The broker's core (sessions, subscriptions, retained messages, counters).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The running plugin of type `T`, if the config turned it on.
    pub fn plugin<T: plugins::Hosted>(&self) -> Option<Arc<T>> {
        self.node.plugins.plugin::<T>()
    }

    /// This node's part in a cluster, if it has a cluster listener.
    pub fn cluster(&self) -> Option<&Arc<cluster::Cluster>> {
        self.cluster.as_ref()
    }

    /// Every listener (MQTT and HTTP), as operators see them.
    pub fn listeners(&self) -> &[Arc<listener::ListenerHandle>] {
        &self.node.listeners
    }

    /// Stops the broker in order, losing nothing it could keep:
    /// 1. stops accepting and tells every client the server is going (v5 DISCONNECT 0x8B),
    ///    waiting up to `grace` for the connections to close (their gone/offline hooks fire);
    /// 2. lets the plugins finish: the events relay writes out its backlog for up to
    ///    `vmq_events_sidecar.shutdown_timeout` and counts the rest as dropped (`shutdown`);
    ///    stops the cluster's gossip and links (the node stays a member);
    /// 3. commits what the store has pending and closes it.
    pub async fn shutdown(self, grace: Duration) -> Stopped {
        self.engine.stop();
        self.tasks.close();
        let connections_closed = tokio::time::timeout(grace, self.tasks.wait()).await.is_ok();
        if !connections_closed {
            tracing::warn!(
                ?grace,
                "some connections had not closed within the grace period"
            );
        }
        self.node.plugins.stop(Duration::MAX).await;
        if let Some(cluster) = &self.cluster {
            cluster.stop().await;
        }
        if let Some(store) = self.engine.store().cloned() {
            // Commits what is pending and closes the file.
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
        }
        Stopped { connections_closed }
    }
}

fn io_error(e: store::StoreError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}
