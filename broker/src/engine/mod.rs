//! The engine: the broker's core, with nothing above it. It owns the router (subscriptions),
//! the session registry (client id -> session, takeover, expiry), the retained messages, the
//! message store, the hook chains, the run-time settings and the counters.
//!
//! Everything above it (connections, listeners, HTTP, plugins) holds an [`Engine`] and asks it
//! to do things through methods that say what they do (`publish`, `subscribe`, `attach`, ...);
//! none of them reaches into its parts. The engine never names a connection, a listener or a
//! plugin: sessions are [`Mailbox`]es, plugins are [`Hooks`].

mod mailbox;
mod peers;
mod registry;
mod restore;
pub mod retained;
pub mod router;
pub mod settings;
mod timers;

use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use mailbox::{Mailbox, Pushed};
pub use peers::{Backlog, ClusterOp, Congested, Peers};
pub use registry::{
    Attachment, Handover, OutState, Outgoing, Ownership, SessionSlot, SessionState,
};
pub use retained::{Retained, RetainedStore};
pub use router::{Routed, Subscriber, Subscription};
pub use settings::Settings;
pub use timers::Timers;

use crate::config::Config;
use crate::hooks::{Hook, Hooks, MessageInfo, Notification};
use crate::message::Message;
use crate::metrics::Metrics;
use crate::mqtt::DisconnectReason;
use crate::store::{Op, Recovered, Store, Ticket};
use registry::Registry;
use router::Router;

/// The broker's core, shared by every task as `Arc<Engine>`.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    router: Router,
    retained: Box<dyn RetainedStore>,
    registry: Registry,
    metrics: Arc<Metrics>,
    /// Cancelled when the broker shuts down: connections say goodbye (v5: 0x8B) and close.
    stopping: CancellationToken,
    hooks: Hooks,
    store: Option<Arc<Store>>,
    settings: Settings,
    timers: Timers,
    started: Instant,
    /// Other nodes, once a cluster has started (never, on a single node).
    peers: OnceLock<Arc<dyn Peers>>,
}

impl Engine {
    /// An engine with nothing in it yet, calling `hooks`, with counters and store made by the
    /// caller (the server opens the store first, so that its counters are the engine's).
    pub fn new(
        config: Config,
        hooks: Hooks,
        metrics: Arc<Metrics>,
        store: Option<Arc<Store>>,
    ) -> Arc<Engine> {
        let router = Router::new(config.upgrade_outgoing_qos, config.cluster.listen.is_some());
        let stopping = CancellationToken::new();
        Arc::new_cyclic(|weak| Engine {
            timers: Timers::start(weak.clone(), stopping.clone()),
            settings: Settings::from_config(&config),
            started: Instant::now(),
            config,
            router,
            retained: Box::new(Retained::default()),
            registry: Registry::default(),
            metrics,
            stopping,
            hooks,
            store,
            peers: OnceLock::new(),
        })
    }

    /// An engine with `config`, no plugins, fresh counters and no store (unit tests).
    #[cfg(test)]
    pub(crate) fn for_tests(config: Config) -> Arc<Engine> {
        Engine::new(
            config,
            Hooks::new(Vec::new()),
            Arc::new(Metrics::default()),
            None,
        )
    }

    /// The configuration the broker started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The hook chains.
    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// What an operator may change at run time.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Session expiry and will delay timers.
    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    /// Whether persistent state goes to a store (`message_store = on`).
    pub fn has_store(&self) -> bool {
        self.store.is_some()
    }

    /// Where persistent sessions and retained messages are written, if anywhere.
    pub(crate) fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Cancelled when the broker shuts down.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Starts the shutdown: every task watching [`Engine::stopping`] winds down.
    pub fn stop(&self) {
        self.stopping.cancel();
    }

    /// How long the broker has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// A weak handle for plugins (they are owned by the engine's hook chains, so they must not
    /// own it back).
    pub fn handle(self: &Arc<Self>) -> BrokerHandle {
        BrokerHandle {
            engine: Arc::downgrade(self),
        }
    }

    /// Queues `message` for every matching subscriber of `mountpoint` (one delivery per
    /// session, one member per share group). With `report`, the deliveries that went to an
    /// offline session or were dropped are listed (for the offline/drop hooks).
    pub fn publish(&self, mountpoint: &str, message: &Arc<Message>, report: bool) -> Routed {
        let Some(peers) = self.peers.get() else {
            return self
                .router
                .route(mountpoint, message, report, router::Groups::All);
        };
        let serve = |group: &str| peers.serve_here(mountpoint, group);
        let mut routed =
            self.router
                .route(mountpoint, message, report, router::Groups::Chosen(&serve));
        if let Some(link) = peers.forward(mountpoint, message, &routed.shared_here)
            && routed.congested.is_none()
        {
            routed.congested = Some(Congested::Peer(link));
        }
        routed
    }

    /// Routes a message another node forwarded here to this node's subscribers only: its
    /// plain subscribers, and the share groups in `groups` (those the sender picked this node
    /// for). The deliveries queued offline or dropped here are reported to the hooks
    /// (`on_offline_message`, `on_message_drop`), as the node that holds those queues.
    pub fn publish_from_peer(
        &self,
        mountpoint: &str,
        message: &Arc<Message>,
        groups: &[String],
    ) -> Routed {
        let serve = |group: &str| groups.iter().any(|g| g == group);
        let hooks = &self.hooks;
        let report = hooks.wants(Hook::OnOfflineMessage) || hooks.wants(Hook::OnMessageDrop);
        let routed = self
            .router
            .route(mountpoint, message, report, router::Groups::Chosen(&serve));
        let info = MessageInfo {
            topic: &message.topic,
            payload: &message.payload,
            qos: message.qos,
            retain: message.retain,
            properties: &message.properties,
        };
        self.report_queued(mountpoint, &routed, info);
        routed
    }

    /// Tells the hooks about the deliveries of a publish (`message`) that went to an offline
    /// session (`on_offline_message`) or were dropped at a full queue (`on_message_drop`).
    pub fn report_queued(&self, mountpoint: &str, routed: &Routed, message: MessageInfo<'_>) {
        for (mailbox, pushed, qos, retain) in &routed.notable {
            let info = MessageInfo {
                qos: *qos,
                retain: *retain,
                ..message
            };
            let session_id = mailbox.session_id();
            self.hooks.notify(&match pushed {
                Pushed::Offline => Notification::OfflineMessage {
                    mountpoint,
                    client_id: &mailbox.client_id,
                    session_id: &session_id,
                    message: info,
                },
                _ => Notification::MessageDrop {
                    mountpoint,
                    client_id: &mailbox.client_id,
                    session_id: &session_id,
                    message: info,
                    reason: "queue_full",
                    acl: None,
                },
            });
        }
    }

    /// Connects the engine to other nodes (once; a second call is ignored): from now on every
    /// publish is also handed to `peers`.
    pub fn set_peers(&self, peers: Arc<dyn Peers>) {
        let _ = self.peers.set(peers);
    }

    /// Whether `op` may go ahead: always on a single node; on a cluster node, when it sees a
    /// majority of its cluster or the config allows `op` during a netsplit.
    pub fn cluster_allows(&self, op: ClusterOp) -> bool {
        self.peers.get().is_none_or(|p| p.allows(op))
    }

    /// Makes `ownership` decide which node holds each session (once; a cluster sets it
    /// before clients are accepted).
    pub fn set_ownership(&self, ownership: Arc<dyn Ownership>) {
        self.registry.set_ownership(ownership);
    }

    /// Lets go of the session of `client_id` for another node that claimed it (its
    /// connection is told the session was taken over); returns it, if it existed (empty
    /// unless `keep`).
    pub async fn hand_over(
        &self,
        mountpoint: &str,
        client_id: &str,
        keep: bool,
    ) -> Option<Handover> {
        self.registry
            .hand_over(self, mountpoint, client_id, keep)
            .await
    }

    /// The filters subscribed on this node, when it is a cluster node.
    pub fn local_routes(&self) -> Option<&router::LocalRoutes> {
        self.router.local_routes()
    }

    /// Adds or replaces a subscription (`filter` may be `$share/<group>/...`, already
    /// validated). Returns whether it existed.
    pub fn subscribe(&self, mountpoint: &str, filter: &str, sub: Subscription) -> bool {
        self.router.subscribe(mountpoint, filter, sub)
    }

    /// Removes a subscription; returns whether it existed.
    pub fn unsubscribe(&self, mountpoint: &str, filter: &str, client_id: &str) -> bool {
        self.router.unsubscribe(mountpoint, filter, client_id)
    }

    /// Number of subscriptions in all mountpoints.
    pub fn subscription_count(&self) -> usize {
        self.router.subscription_count()
    }

    /// Stores (or, with an empty payload, clears) the retained message of its topic, in
    /// memory and in the store; the ticket says when the store has it.
    pub fn retain(&self, mountpoint: &str, message: Arc<Message>) -> Option<Ticket> {
        let ticket = self.store.as_ref().map(|store| {
            store.submit(Op::PutRetained {
                mountpoint: mountpoint.into(),
                topic: message.topic.clone(),
                message: (!message.payload.is_empty()).then(|| message.clone()),
            })
        });
        self.retained.put(mountpoint, message);
        ticket
    }

    /// Retained messages matching `filter` (without any `$share/` prefix), expired ones left out.
    pub fn retained_matching(&self, mountpoint: &str, filter: &str) -> Vec<Arc<Message>> {
        self.retained.matching(mountpoint, filter)
    }

    /// Every retained message with its mountpoint, sorted by mountpoint and topic.
    pub fn retained_all(&self) -> Vec<(String, Arc<Message>)> {
        self.retained.all()
    }

    /// Number of retained messages in all mountpoints.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// Attaches a new connection to the session of `client_id`: an existing connection is
    /// kicked out (and waited for), an existing session is resumed unless `clean_start`.
    /// Refused (with why) when this node may not hold the session.
    pub async fn attach(
        &self,
        mountpoint: &str,
        client_id: &Arc<str>,
        clean_start: bool,
    ) -> Result<Attachment, String> {
        self.registry
            .attach(self, mountpoint, client_id, clean_start)
            .await
    }

    /// Detaches a connection: the state goes back into the slot; the session is kept for
    /// `expiry` (`None`: forever) or removed at once (`Some(0)`).
    pub fn detach(
        self: &Arc<Self>,
        slot: &Arc<SessionSlot>,
        state: Box<SessionState>,
        expiry: Option<Duration>,
    ) {
        self.registry.detach(self, slot, state, expiry);
    }

    /// Closes the connection of `client_id` (v5: DISCONNECT with `code`) and waits until it
    /// has detached. Returns whether a connection was attached.
    pub async fn disconnect(
        &self,
        mountpoint: &str,
        client_id: &str,
        code: DisconnectReason,
    ) -> bool {
        self.registry.disconnect(mountpoint, client_id, code).await
    }

    /// Every session, online and offline, sorted by mountpoint and client id.
    pub fn sessions(&self) -> Vec<Arc<SessionSlot>> {
        self.registry.sessions()
    }

    /// The user name a plugin asked `client_id`'s subscriptions to be reauthorized as, once
    /// (see [`BrokerHandle::reauthorize_subscriptions`]).
    pub(crate) fn take_reauthorize(
        &self,
        mountpoint: &str,
        client_id: &str,
    ) -> Option<Option<String>> {
        self.registry.take_reauthorize(mountpoint, client_id)
    }

    /// Number of sessions, online and offline.
    pub fn session_count(&self) -> usize {
        self.registry.len()
    }

    /// Number of sessions with a connection attached.
    pub fn online_count(&self) -> usize {
        self.registry.online()
    }

    /// Whether the session of `client_id` exists and has a connection attached.
    pub fn is_online(&self, mountpoint: &str, client_id: &str) -> bool {
        self.registry.is_online(mountpoint, client_id)
    }

    /// A new, empty, offline mailbox for a session of `client_id`, with the current limits.
    pub(crate) fn new_mailbox(&self, mountpoint: &str, client_id: &Arc<str>) -> Arc<Mailbox> {
        Arc::new(
            Mailbox::new(
                mountpoint.into(),
                client_id.clone(),
                self.settings.queue_limits(),
                self.metrics.clone(),
                self.store.clone(),
            )
            .dropping_oldest(self.config.override_max_online_messages),
        )
    }

    /// Brings back what the store held (at start, before listeners accept).
    pub fn restore(self: &Arc<Self>, recovered: Recovered) {
        restore::restore(self, recovered);
    }
}

/// What a plugin may do with the broker: publish, disconnect a client, look up sessions. It
/// holds the engine weakly: once the broker is gone, every call does nothing.
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    engine: Weak<Engine>,
}

impl BrokerHandle {
    /// Publishes `message` on `mountpoint` as the broker (no publisher, no hooks); returns how
    /// many deliveries were queued.
    pub fn publish(&self, mountpoint: &str, message: Message) -> usize {
        let Some(engine) = self.engine.upgrade() else {
            return 0;
        };
        let message = Arc::new(message);
        if message.retain {
            engine.retain(mountpoint, message.clone());
        }
        engine.publish(mountpoint, &message, false).queued
    }

    /// Disconnects `client_id` (v5: with `code`); returns whether it was connected.
    pub async fn disconnect(
        &self,
        mountpoint: &str,
        client_id: &str,
        code: DisconnectReason,
    ) -> bool {
        match self.engine.upgrade() {
            Some(engine) => engine.disconnect(mountpoint, client_id, code).await,
            None => false,
        }
    }

    /// Runs `auth_on_subscribe` again for the subscriptions of `client_id`'s session, as
    /// `username`, and removes those no plugin allows now (VerneMQ's
    /// `vmq_api.reauthorize_subscriptions`). It happens in the session's connection, soon
    /// after this returns (never inside the caller, which may be the plugin it asks); an
    /// offline session is reauthorized when its client connects again. Returns whether the
    /// session exists.
    pub fn reauthorize_subscriptions(
        &self,
        mountpoint: &str,
        client_id: &str,
        username: Option<String>,
    ) -> bool {
        self.engine.upgrade().is_some_and(|e| {
            e.registry
                .request_reauthorize(mountpoint, client_id, username)
        })
    }

    /// Whether `client_id` has a session with a connection attached.
    pub fn is_online(&self, mountpoint: &str, client_id: &str) -> bool {
        self.engine
            .upgrade()
            .is_some_and(|e| e.is_online(mountpoint, client_id))
    }

    /// Number of sessions, online and offline.
    pub fn session_count(&self) -> usize {
        self.engine.upgrade().map_or(0, |e| e.session_count())
    }
}
