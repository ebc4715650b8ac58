//! MQTT listeners: bind each configured address, accept, and run one connection task per
//! client, over TCP, TLS ([`tls`]), WebSocket or WebSocket over TLS ([`ws`]); the handshakes
//! run in the connection's task, under the connect timeout. A listener that cannot bind (or
//! whose certificates cannot be read) stops the broker from starting. Each listener has a
//! [`ListenerHandle`] through which operators see it and stop or start it at run time
//! (`vmq-admin listener stop|start`): a stopped listener closes its socket, so new clients
//! are refused while connected ones stay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

pub mod tls;
pub mod ws;

use crate::config::{Config, TcpListenerConfig, Transport};
use crate::connection::{self, Context, Refusal};
use crate::metrics::Metrics;

/// What operators see of a listener, and how they stop and start it.
#[derive(Debug)]
pub struct ListenerHandle {
    /// `mqtt` or `http`.
    pub kind: &'static str,
    /// The name after `listener.<type>.`.
    pub name: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// Mountpoint (MQTT).
    pub mountpoint: String,
    /// Most connections at once (`None`: no limit).
    pub max_connections: Option<usize>,
    /// Connections open now.
    pub active: AtomicUsize,
    wanted: watch::Sender<bool>,
    accepting: AtomicBool,
    /// The TLS settings in use (`ssl`, `wss`), replaced by [`ListenerHandle::reload_tls`].
    tls: std::sync::RwLock<Option<tls::Acceptor>>,
    /// Its configuration, to read the certificates again.
    config: Option<TcpListenerConfig>,
}

impl ListenerHandle {
    /// A handle for a listener bound to `addr`, accepting.
    pub fn new(kind: &'static str, name: &str, addr: SocketAddr, mountpoint: &str) -> Self {
        ListenerHandle {
            kind,
            name: name.to_owned(),
            addr,
            mountpoint: mountpoint.to_owned(),
            max_connections: None,
            active: AtomicUsize::new(0),
            tls: std::sync::RwLock::new(None),
            config: None,
            wanted: watch::Sender::new(true),
            accepting: AtomicBool::new(true),
        }
    }

    /// Whether it is accepting connections.
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    /// Asks it to stop accepting (connected clients stay).
    pub fn stop(&self) {
        self.wanted.send_replace(false);
    }

    /// Asks it to accept again (it binds its address anew).
    pub fn start(&self) {
        self.wanted.send_replace(true);
    }

    /// Reads its certificate, key and CA files again; new connections use them, connected
    /// clients keep theirs. A file that does not load leaves the current ones in place.
    /// Returns whether the listener uses TLS at all.
    pub fn reload_tls(&self) -> std::io::Result<bool> {
        let Some(config) = self.config.as_ref().filter(|c| c.transport.is_tls()) else {
            return Ok(false);
        };
        let acceptor = tls::acceptor(config)?;
        if let Ok(mut t) = self.tls.write() {
            *t = Some(acceptor);
        }
        info!(name = %self.name, "TLS certificates reloaded");
        Ok(true)
    }

    fn acceptor(&self) -> Option<tls::Acceptor> {
        self.tls.read().ok().and_then(|t| t.clone())
    }
}

/// The node's connection limits, shared by its MQTT listeners: `max_connections` across
/// listeners and `max_connect_rate`.
#[derive(Debug)]
pub struct Admission {
    /// MQTT connections open now, across listeners.
    connections: AtomicUsize,
    /// Start of the current one-second window of `max_connect_rate`, and connections in it.
    window: parking_lot::Mutex<(std::time::Instant, usize)>,
    max_connections: Option<usize>,
    max_connect_rate: Option<usize>,
}

impl Admission {
    /// The limits `config` sets.
    pub fn new(config: &Config) -> Admission {
        Admission {
            connections: AtomicUsize::new(0),
            window: parking_lot::Mutex::new((std::time::Instant::now(), 0)),
            max_connections: config.max_connections,
            max_connect_rate: config.max_connect_rate,
        }
    }

    /// MQTT connections open now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }
}

/// A connection's place under the limits; released when dropped.
#[derive(Debug)]
struct Admitted {
    handle: Arc<ListenerHandle>,
    admission: Arc<Admission>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.handle.active.fetch_sub(1, Ordering::AcqRel);
        self.admission.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a new connection against the connect rate, its listener's and the node's limits.
fn admit(
    admission: &Arc<Admission>,
    handle: &Arc<ListenerHandle>,
) -> Result<connection::Admitted, Refusal> {
    if let Some(rate) = admission.max_connect_rate {
        let mut w = admission.window.lock();
        let now = std::time::Instant::now();
        if now.duration_since(w.0) >= Duration::from_secs(1) {
            *w = (now, 0);
        }
        if w.1 >= rate {
            return Err(Refusal::RateExceeded);
        }
        w.1 += 1;
    }
    let listener = handle.active.fetch_add(1, Ordering::AcqRel);
    let node = admission.connections.fetch_add(1, Ordering::AcqRel);
    let admitted = Admitted {
        handle: handle.clone(),
        admission: admission.clone(),
    };
    if handle.max_connections.is_some_and(|m| listener >= m) {
        return Err(Refusal::ListenerFull);
    }
    if admission.max_connections.is_some_and(|m| node >= m) {
        return Err(Refusal::NodeFull);
    }
    Ok(Box::new(admitted))
}

/// What a TLS or WebSocket connection goes through before MQTT.
struct Handshake {
    transport: Transport,
    tls: Option<tls::Acceptor>,
    identity_as_username: bool,
}

impl Handshake {
    /// Runs the handshakes under the connect timeout, then the connection.
    async fn run(self, tcp: tokio::net::TcpStream, mut arrival: connection::Arrival, ctx: Context) {
        let engine = ctx.engine.clone();
        let max = engine.config().max_packet_size().saturating_add(16);
        let frame_max = engine.config().max_ws_frame_size;
        let peer = arrival.peer;
        let shake = async {
            let (stream, identity): (connection::Stream, Option<String>) =
                match (&self.tls, self.transport) {
                    (Some(acceptor), t) => {
                        let tls = acceptor.0.accept(tcp).await?;
                        let identity = if self.identity_as_username {
                            tls.get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(tls::common_name)
                        } else {
                            None
                        };
                        if t == Transport::Wss {
                            (Box::new(ws::accept(tls, max, frame_max).await?), identity)
                        } else {
                            (Box::new(tls), identity)
                        }
                    }
                    (None, Transport::Ws) => {
                        (Box::new(ws::accept(tcp, max, frame_max).await?), None)
                    }
                    (None, _) => (Box::new(tcp), None),
                };
            Ok::<_, std::io::Error>((stream, identity))
        };
        // Boxed: a TLS or WebSocket handshake's state is large and only needed until it ends.
        match Box::pin(tokio::time::timeout(engine.config().connect_timeout, shake)).await {
            Ok(Ok((stream, identity))) => {
                arrival.identity = identity;
                connection::run(stream, arrival, ctx).await;
            }
            Ok(Err(e)) => {
                Metrics::inc(&engine.metrics().listener_handshake_errors);
                tracing::debug!(%peer, transport = self.transport.key(), error = %e, "handshake failed");
            }
            Err(_) => {
                Metrics::inc(&engine.metrics().connections_connect_timeout);
                tracing::debug!(%peer, "handshake did not complete within the connect timeout");
            }
        }
    }
}

/// A bound MQTT listener.
pub struct Listener {
    config: TcpListenerConfig,
    socket: TcpListener,
    tls: Option<tls::Acceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("config", &self.config)
            .field("socket", &self.socket)
            .finish()
    }
}

impl Listener {
    /// Binds the listener's address.
    pub async fn bind(config: TcpListenerConfig) -> std::io::Result<Listener> {
        let tls = if config.transport.is_tls() {
            Some(tls::acceptor(&config)?)
        } else {
            None
        };
        let socket = TcpListener::bind(config.addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "listener.{}.{} cannot bind {}: {e}",
                    config.transport.key(),
                    config.name,
                    config.addr
                ),
            )
        })?;
        Ok(Listener {
            config,
            socket,
            tls,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Its handle (for operators, through the HTTP side; taken before [`Listener::run`]).
    pub fn handle(&self) -> std::io::Result<Arc<ListenerHandle>> {
        let mut h = ListenerHandle::new(
            match self.config.transport {
                Transport::Tcp => "mqtt",
                Transport::Ssl => "mqtts",
                Transport::Ws => "mqttws",
                Transport::Wss => "mqttwss",
            },
            &self.config.name,
            self.local_addr()?,
            &self.config.mountpoint,
        );
        h.max_connections = self.config.max_connections;
        h.config = Some(self.config.clone());
        h.tls = std::sync::RwLock::new(self.tls.clone());
        Ok(Arc::new(h))
    }

    /// Accepts clients until the broker shuts down; connection tasks are tracked by `tasks`.
    pub async fn run(
        self,
        ctx: Context,
        admission: Arc<Admission>,
        tasks: TaskTracker,
        handle: Arc<ListenerHandle>,
    ) {
        let stopping = ctx.engine.stopping().clone();
        let mut wanted = handle.wanted.subscribe();
        let name = self.config.name.clone();
        let transport = self.config.transport;
        let identity_as_username = self.config.tls.use_identity_as_username;
        let mountpoint = self.config.mountpoint.clone();
        let policy = connection::ListenerPolicy {
            allow_anonymous: self.config.allow_anonymous_override,
            max_lifetime: self.config.max_connection_lifetime,
        };
        let mut socket = Some(self.socket);
        info!(%name, addr = %handle.addr, %mountpoint, transport = transport.key(), "MQTT listener accepting");
        loop {
            let Some(listener) = &socket else {
                // Stopped: wait to be started (or for the end), then bind again.
                tokio::select! {
                    () = stopping.cancelled() => break,
                    changed = wanted.wait_for(|w| *w) => if changed.is_err() { break },
                }
                match TcpListener::bind(handle.addr).await {
                    Ok(l) => {
                        info!(%name, addr = %handle.addr, "MQTT listener started");
                        socket = Some(l);
                        handle.accepting.store(true, Ordering::Release);
                    }
                    Err(e) => {
                        error!(%name, addr = %handle.addr, error = %e, "MQTT listener cannot bind again");
                        handle.wanted.send_replace(false);
                    }
                }
                continue;
            };
            let accepted = tokio::select! {
                () = stopping.cancelled() => break,
                _ = wanted.wait_for(|w| !*w) => {
                    socket = None;
                    handle.accepting.store(false, Ordering::Release);
                    warn!(%name, addr = %handle.addr, "MQTT listener stopped");
                    continue;
                }
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let arrival = connection::Arrival {
                        peer,
                        mountpoint: mountpoint.clone(),
                        admission: admit(&admission, &handle),
                        identity: None,
                        policy,
                    };
                    if transport == Transport::Tcp {
                        tasks.spawn(connection::run(Box::new(stream), arrival, ctx.clone()));
                    } else {
                        let handshake = Handshake {
                            transport,
                            tls: handle.acceptor(),
                            identity_as_username,
                        };
                        tasks.spawn(handshake.run(stream, arrival, ctx.clone()));
                    }
                }
                Err(e) => {
                    error!(%name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        handle.accepting.store(false, Ordering::Release);
    }
}
