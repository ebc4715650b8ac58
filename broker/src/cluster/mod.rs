//! Clustering: several nodes serving one MQTT namespace. A client may connect to any node and
//! gets what is published on every other.
//!
//! - `link.rs`: the link this node dials to each peer (ordered, batched, bounded buffer);
//! - `inbound.rs`: the cluster listener accepting the peers' links, routing what they forward;
//! - `gossip.rs`: chitchat gossip (UDP on the cluster listener's address): liveness, each
//!   node's link address and routes;
//! - `routes.rs`: the other nodes' routes as a trie; `forward.rs`: the engine's `Peers`;
//! - `takeover.rs`: a client id unique cluster-wide (the engine's `Ownership`): a session
//!   moves to the node its client connects to;
//! - `reroute.rs`: share group messages waiting for a node that died go to another member;
//! - `readiness.rs`: whether this node sees a majority (the `allow_*_during_netsplit` keys);
//! - `tls.rs`: TLS on the links (`listener.vmqs.clustering`);
//! - `gate.rs`: `cluster partition` (fault injection for tests);
//! - `members.rs`: the member list kept in `persistent_data_dir` (a restarted node rejoins);
//! - `admin.rs`: `vmq-admin cluster join | leave | show` and the metrics.
//!
//! A node with `listener.vmq.clustering` set binds it and can be joined or join others; it
//! gossips only while it is a member of a cluster (it joined one, or was joined).

mod admin;
mod forward;
mod gate;
mod gossip;
mod inbound;
mod link;
mod members;
mod readiness;
mod reroute;
mod routes;
mod takeover;
#[cfg(test)]
mod tests;
mod tls;
mod wire;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ClusterConfig;
use crate::engine::Engine;
use forward::{Forwarder, Table};
use gate::Gate;
use gossip::{Gossip, NodeView};
use inbound::{InboundStats, JoinRequest, Receiver};
use link::{Identity, Link};
use members::Members;
use readiness::Readiness;
use routes::RemoteRoutes;
use takeover::{Links, Takeovers};

/// This node's part in a cluster.
#[derive(Debug)]
pub struct Cluster {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    me: Identity,
    config: ClusterConfig,
    /// Where peers reach this node (links and gossip).
    advertise: SocketAddr,
    /// Where this node listens.
    bind: SocketAddr,
    engine: Arc<Engine>,
    forwarder: Arc<Forwarder>,
    gossip: tokio::sync::Mutex<Option<Gossip>>,
    /// Whether gossip runs (this node is in a cluster).
    clustered: AtomicBool,
    links: Links,
    takeovers: Arc<Takeovers>,
    members: Members,
    /// What gossip said last, for `cluster show`.
    views: Mutex<Vec<NodeView>>,
    inbound: Arc<InboundStats>,
    /// Whether this node sees a majority of its cluster.
    readiness: Arc<Readiness>,
    /// Peers cut off by `cluster partition` (fault injection).
    gate: Arc<Gate>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Cluster {
    /// Binds the cluster listener of `engine`'s config and starts serving it; `None` when the
    /// config has none (a single node). A node that was a member when it stopped rejoins.
    pub async fn start(engine: &Arc<Engine>) -> std::io::Result<Option<Cluster>> {
        let config = engine.config().cluster.clone();
        let Some(listen) = config.listen else {
            return Ok(None);
        };
        let listener = TcpListener::bind(listen).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot bind the cluster listener {listen}: {e}"),
            )
        })?;
        let bind = listener.local_addr()?;
        let nodename = engine.config().nodename.clone();
        let advertise = advertised(bind, &nodename).map_err(std::io::Error::other)?;
        let members = Members::open(&engine.config().persistent_data_dir, &nodename)
            .map_err(std::io::Error::other)?;
        let tls = match &config.tls {
            Some(t) => Some(Arc::new(tls::Tls::new(t).map_err(std::io::Error::other)?)),
            None => None,
        };
        let me = Identity {
            node: nodename.into(),
            cookie: config.cookie.as_str().into(),
            tls,
        };
        let (joins_tx, joins) = mpsc::channel(16);
        let links = Links::default();
        let readiness = Arc::new(Readiness::new(config.during_netsplit));
        let takeovers = Arc::new(Takeovers::new(
            links.clone(),
            config.takeover_timeout,
            readiness.clone(),
        ));
        let inner = Arc::new(Inner {
            me: me.clone(),
            config,
            advertise,
            bind,
            engine: engine.clone(),
            forwarder: Arc::new(Forwarder::new(
                engine.config().shared_subscription_policy,
                readiness.clone(),
            )),
            gossip: tokio::sync::Mutex::new(None),
            clustered: AtomicBool::new(false),
            links,
            takeovers,
            members,
            views: Mutex::default(),
            inbound: Arc::default(),
            readiness,
            gate: Arc::default(),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        engine.set_peers(inner.forwarder.clone());
        engine.set_ownership(inner.takeovers.clone());
        let rx = Receiver {
            engine: engine.clone(),
            me,
            stats: inner.inbound.clone(),
            joins: joins_tx,
            takeovers: inner.takeovers.clone(),
            gate: inner.gate.clone(),
        };
        inner
            .tasks
            .spawn(inbound::run(listener, rx, inner.stop.clone()));
        let known = inner.members.list();
        if !known.is_empty() {
            tracing::info!(
                members = known.len(),
                "cluster: rejoining the members this node knew"
            );
            inner.ensure_gossip().await.map_err(std::io::Error::other)?;
            inner.update_links(&[]);
        }
        inner.tasks.spawn(inner.clone().sync(joins));
        tracing::info!(%bind, %advertise, "cluster listener bound");
        Ok(Some(Cluster { inner }))
    }

    /// For `/health`: whether this node sees a majority of its cluster, and the counts.
    pub fn quorum(&self) -> (bool, usize, usize) {
        let (members, running) = self.inner.readiness.counts();
        (self.inner.readiness.in_quorum(), members, running)
    }

    /// The address the cluster listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.bind
    }

    /// Stops gossip, links and the listener (other nodes see this node go down; it stays a
    /// member and rejoins when it starts again).
    pub async fn stop(&self) {
        let inner = &self.inner;
        inner.stop.cancel();
        for link in inner.links.lock().values() {
            link.close();
        }
        if let Some(g) = inner.gossip.lock().await.take() {
            g.shutdown().await;
        }
        inner.tasks.close();
        inner.tasks.wait().await;
    }
}

/// Where peers reach this node: the bound address, or, when it is a wildcard, the IP of
/// `nodename`'s host part (`VerneMQ@10.0.0.2`).
fn advertised(bind: SocketAddr, nodename: &str) -> Result<SocketAddr, String> {
    if !bind.ip().is_unspecified() {
        return Ok(bind);
    }
    let host = nodename.rsplit_once('@').map_or("", |(_, h)| h);
    let ip: IpAddr = host.parse().map_err(|_| {
        format!(
            "listener.vmq.clustering binds {bind}: peers need this node's address, taken from \
             nodename's host part, but {nodename:?} has no IP there (set nodename = name@<ip> \
             or bind the cluster listener to an IP)"
        )
    })?;
    Ok(SocketAddr::new(ip, bind.port()))
}

impl Inner {
    /// Starts gossip if it is not running, with the known members as seeds.
    async fn ensure_gossip(&self) -> Result<(), String> {
        let mut g = self.gossip.lock().await;
        if g.is_none() {
            let seeds = self.members.list().into_iter().map(|(_, a)| a).collect();
            let bind = SocketAddr::new(self.bind.ip(), self.advertise.port());
            *g = Some(
                Gossip::start(
                    &self.me.node,
                    &self.me.cookie,
                    bind,
                    self.advertise,
                    self.config.gossip_interval,
                    seeds,
                    self.gate.clone(),
                )
                .await?,
            );
            self.clustered.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Every gossip interval: advertises this node's routes when they changed, and applies
    /// what gossip says about the others when that changed. Also serves join requests.
    async fn sync(self: Arc<Self>, mut joins: mpsc::Receiver<JoinRequest>) {
        let mut advertised_version = None;
        let mut fingerprint = None;
        let mut tick = tokio::time::interval(self.config.gossip_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                Some(j) = joins.recv() => {
                    self.joined_by(j).await;
                    continue;
                }
                _ = tick.tick() => {}
            }
            let mut guard = self.gossip.lock().await;
            let Some(gossip) = guard.as_mut() else {
                advertised_version = None;
                fingerprint = None;
                continue;
            };
            if let Some(routes) = self.engine.local_routes() {
                let v = routes.version();
                if advertised_version != Some(v) {
                    gossip.advertise(routes.snapshot()).await;
                    advertised_version = Some(v);
                }
            }
            let fp = gossip.fingerprint().await;
            if fingerprint == Some(fp) {
                continue;
            }
            fingerprint = Some(fp);
            let generation = gossip.generation();
            let views = gossip.nodes().await;
            drop(guard);
            let evicted_me = views.iter().any(|v| {
                v.live
                    && !v.left
                    && v.evicts
                        .iter()
                        .any(|(n, g)| *n == *self.me.node && *g == generation)
            });
            if evicted_me {
                tracing::warn!("cluster: another member made this node leave");
                self.leave_self().await;
                continue;
            }
            self.apply(views);
        }
    }

    /// Updates members, links and routes from gossip.
    fn apply(&self, views: Vec<NodeView>) {
        // Who was alive before this update (the views themselves are not copied).
        let was_live: Vec<(Arc<str>, bool)> = self
            .views
            .lock()
            .iter()
            .map(|b| (b.node.clone(), b.live))
            .collect();
        let was =
            |node: &Arc<str>, live: bool| was_live.iter().any(|(n, l)| n == node && *l == live);
        if self.config.during_netsplit.register {
            // Nodes seen again (after a split, or a restart): they learn which clients are
            // connected here, and close their own older connection of the same client id.
            for v in views.iter().filter(|v| v.live) {
                let was_down = was(&v.node, false);
                if was_down && let Some(link) = self.links.lock().get(&v.node).cloned() {
                    link.send(&wire::frame(&wire::Frame {
                        body: Some(wire::Body::Online(Takeovers::online(&self.engine, false))),
                    }));
                }
            }
        }
        let evicted: Vec<(String, u64)> = views
            .iter()
            .filter(|v| !v.left)
            .flat_map(|v| v.evicts.iter().cloned())
            .collect();
        for v in &views {
            let gone = v.left
                || evicted
                    .iter()
                    .any(|(n, g)| *n == *v.node && *g >= v.generation);
            if gone {
                if self.members.remove(&v.node) {
                    tracing::info!(node = %v.node, "cluster: member left");
                }
            } else if let Some(addr) = v.link {
                self.members.insert(&v.node, addr);
            }
        }
        self.update_links(&views);
        // Nodes that just died: what waits for them for share groups goes elsewhere.
        let table = self.forwarder.table();
        for v in views.iter().filter(|v| !v.live) {
            if was(&v.node, true)
                && let Some(at) = table.links.iter().position(|l| l.peer == v.node)
            {
                let moved = reroute::reroute(&self.engine, &table, at, &table.links[at]);
                if moved > 0 {
                    self.takeovers
                        .rerouted
                        .fetch_add(moved as u64, Ordering::Relaxed);
                    tracing::warn!(node = %v.node, moved, "cluster: share group messages for a dead node sent to other members");
                }
            }
        }
        *self.views.lock() = views;
    }

    /// One link per member (dialling the address gossip or the member list gives), none for
    /// others; the forwarding table rebuilt with the members' routes.
    fn update_links(&self, views: &[NodeView]) {
        let members = self.members.list();
        let mut links = self.links.lock();
        links.retain(|name, link| {
            let keep = members.iter().any(|(n, _)| **n == **name);
            if !keep {
                link.close();
            }
            keep
        });
        for (name, addr) in &members {
            let link = links.entry(name.as_str().into()).or_insert_with(|| {
                let link = Link::new(
                    name.as_str().into(),
                    self.config.outgoing_buffer,
                    self.stop.child_token(),
                    self.gate.clone(),
                );
                self.tasks.spawn(
                    link.clone()
                        .run(self.me.clone(), self.config.reconnect_interval),
                );
                link
            });
            link.set_addr(*addr);
        }
        let mut table = Table {
            links: links.values().cloned().collect(),
            live: Vec::with_capacity(links.len()),
            routes: RemoteRoutes::default(),
        };
        for (i, link) in table.links.iter().enumerate() {
            let view = views.iter().find(|v| v.node == link.peer);
            table.live.push(view.is_some_and(|v| v.live));
            for (mp, filter) in view.map_or(&[][..], |v| &v.routes) {
                table.routes.add(mp, filter, i);
            }
        }
        drop(links);
        let running = table.live.iter().filter(|l| **l).count();
        self.readiness.set(table.links.len() + 1, running + 1);
        self.forwarder.set(table);
    }

    /// A node dialled this one and asked to join: gossip starts here if it was not running,
    /// and the node becomes a member.
    async fn joined_by(&self, j: JoinRequest) {
        tracing::info!(node = %j.node, addr = %j.addr, "cluster: join request");
        self.members.insert(&j.node, j.addr);
        if let Err(e) = self.ensure_gossip().await {
            tracing::error!("cluster: cannot start gossip: {e}");
            return;
        }
        if let Some(g) = self.gossip.lock().await.as_ref() {
            let _ = g.contact(j.addr);
        }
        self.update_links(&self.views.lock().clone());
        if j.retained {
            self.send_retained(&j.node);
        }
    }

    /// Sends every retained message here to `node` (which just joined), for its store only.
    fn send_retained(&self, node: &str) {
        let Some(link) = self.links.lock().get(node).cloned() else {
            return;
        };
        let now = (std::time::SystemTime::now(), tokio::time::Instant::now());
        let all = self.engine.retained_all();
        let n = all.len();
        for (mountpoint, message) in all {
            link.send(&wire::frame(&wire::Frame {
                body: Some(wire::Body::Publish(wire::Publish {
                    mountpoint,
                    message: Some(crate::store::message_record(&message, now)),
                    groups: Vec::new(),
                    store_only: true,
                })),
            }));
        }
        tracing::info!(%node, retained = n, "cluster: retained messages sent to a joining node");
    }

    /// This node leaves its cluster: it says so in gossip, lets that spread, then stops
    /// gossiping and closes its links. It keeps serving its own clients as a single node.
    async fn leave_self(&self) {
        let Some(g) = self.gossip.lock().await.take() else {
            return;
        };
        g.set("left", "").await;
        // A few gossip rounds for the others to hear it.
        tokio::time::sleep(self.config.gossip_interval * 5).await;
        g.shutdown().await;
        self.clustered.store(false, Ordering::Release);
        self.members.clear();
        self.views.lock().clear();
        self.update_links(&[]);
        tracing::info!("cluster: this node left its cluster");
    }
}
