//! The cluster's operating surface: `vmq-admin cluster join | leave | show` (also under
//! `/api/v1/cluster/...`), its metrics and its status.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::link::{LinkStats, dial};
use super::wire::{self, Body, Frame, Join};
use super::{Cluster, Inner};
use crate::mqtt::DisconnectReason;
use crate::plugins::MetricsOut;
use crate::plugins::command::{Answer, Args, CommandError, row, text};

/// A per-peer metric: name, kind, help, and how to read it from a link's counters.
type PerLink = (
    &'static str,
    &'static str,
    &'static str,
    fn(&LinkStats) -> u64,
);

impl Cluster {
    /// Runs a `cluster ...` command; `None` for other words.
    pub async fn command(
        &self,
        words: &[&str],
        args: &Args,
    ) -> Option<Result<Answer, CommandError>> {
        let inner = &self.inner;
        Some(match words {
            ["cluster", "show"] => args.check(&[]).map(|()| inner.show()),
            ["cluster", "join"] => match args.check(&["discovery-node"]) {
                Ok(()) => match args.need("discovery-node") {
                    Ok(node) => inner.join(node).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            ["cluster", "leave"] => match args.check(&["node", "-k", "--kill_sessions"]) {
                Ok(()) => match args.need("node") {
                    Ok(node) => {
                        let kill =
                            args.get("-k").is_some() || args.get("--kill_sessions").is_some();
                        inner.leave(node, kill).await
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            ["cluster", "partition", rest @ ..] => inner.partition(rest, args),
            ["cluster", ..] => Err(CommandError::not_found(
                "cluster commands: show, join discovery-node=<name>@<ip> (or <ip>:<port>), \
                 leave node=<name> [-k]",
            )),
            _ => return None,
        })
    }

    /// The cluster's counters, in Prometheus form.
    pub fn metrics(&self, out: &mut dyn MetricsOut) {
        let inner = &self.inner;
        let table = inner.forwarder.table();
        let live = inner.views.lock().iter().filter(|v| v.live).count();
        out.single(
            "cluster_members",
            "gauge",
            "Nodes in this node's cluster, itself included.",
            table.links.len() as u64 + 1,
        );
        out.single(
            "cluster_members_running",
            "gauge",
            "Members gossip holds alive, this node included.",
            live as u64 + 1,
        );
        out.single(
            "cluster_routes_remote",
            "gauge",
            "Filters other nodes subscribe to (one per node and filter).",
            table.routes.len() as u64,
        );
        let per_link: [PerLink; 5] = [
            (
                "cluster_link_up",
                "gauge",
                "Whether the link to the peer is up.",
                |s| u64::from(s.up.load(Relaxed)),
            ),
            (
                "cluster_bytes_sent",
                "counter",
                "Bytes written to the peer.",
                |s| s.bytes_out.load(Relaxed),
            ),
            (
                "cluster_messages_sent",
                "counter",
                "Messages written to the peer.",
                |s| s.frames_out.load(Relaxed),
            ),
            (
                "cluster_bytes_dropped",
                "counter",
                "Bytes for the peer dropped: its buffer (outgoing_clustering_buffer_size) was full, or a write failed.",
                |s| s.bytes_dropped.load(Relaxed),
            ),
            (
                "cluster_messages_dropped",
                "counter",
                "Messages for the peer dropped.",
                |s| s.frames_dropped.load(Relaxed),
            ),
        ];
        for (name, kind, help, value) in per_link {
            out.header(name, kind, help);
            for link in &table.links {
                out.sample(name, &[("peer", &link.peer)], value(&link.stats));
            }
        }
        out.header(
            "cluster_bytes_queued",
            "gauge",
            "Bytes waiting to be written to the peer.",
        );
        for link in &table.links {
            out.sample(
                "cluster_bytes_queued",
                &[("peer", &link.peer)],
                link.queued_bytes() as u64,
            );
        }
        let t = &inner.takeovers;
        out.single(
            "cluster_sessions_taken_over",
            "counter",
            "Sessions this node took over from another node (their client connected here).",
            t.taken.load(Relaxed),
        );
        out.single(
            "cluster_sessions_handed_over",
            "counter",
            "Sessions this node let go of because their client connected to another node.",
            t.given.load(Relaxed),
        );
        out.single(
            "cluster_claim_timeouts",
            "counter",
            "Session claims that did not hear from every node within cluster.takeover_timeout.",
            t.timeouts.load(Relaxed),
        );
        out.single(
            "cluster_duplicates_closed",
            "counter",
            "Connections closed after a netsplit healed: the same client id was connected on both sides (allow_register_during_netsplit = on); the older one goes.",
            t.duplicates.load(Relaxed),
        );
        out.single(
            "cluster_shared_rerouted",
            "counter",
            "Share group deliveries that waited for a node that died, sent to another member instead.",
            t.rerouted.load(Relaxed),
        );
        let s = &inner.inbound;
        out.single(
            "cluster_bytes_received",
            "counter",
            "Bytes read from peers' links.",
            s.bytes_in.load(Relaxed),
        );
        out.single(
            "cluster_messages_received",
            "counter",
            "Publishes peers forwarded here.",
            s.publishes_in.load(Relaxed),
        );
        out.single(
            "cluster_links_refused",
            "counter",
            "Links refused: wrong cookie, protocol version or handshake.",
            s.refused.load(Relaxed),
        );
    }

    /// The cluster's state for `/status.json`.
    pub fn status(&self) -> Value {
        match self.inner.show() {
            Answer::Table(rows) => Value::Array(rows.into_iter().map(Value::Object).collect()),
            Answer::Text(t) => Value::String(t),
        }
    }
}

impl Inner {
    /// `cluster show`: this node, then every member.
    fn show(&self) -> Answer {
        let table = self.forwarder.table();
        let views = self.views.lock().clone();
        let clustered = self.clustered.load(Acquire);
        let local_routes = self.engine.local_routes().map_or(0, |r| r.snapshot().len());
        let mut rows = vec![row([
            ("Node", json!(&*self.me.node)),
            ("Running", json!(true)),
            ("Address", json!(self.advertise.to_string())),
            ("Link", json!("self")),
            ("Routes", json!(local_routes)),
            ("Queued", json!(0)),
            ("Dropped", json!(0)),
            ("Gossip", json!(if clustered { "on" } else { "off" })),
        ])];
        for link in &table.links {
            let view = views.iter().find(|v| v.node == link.peer);
            let routes = view.map_or(0, |v| v.routes.len());
            rows.push(row([
                ("Node", json!(&*link.peer)),
                ("Running", json!(view.is_some_and(|v| v.live))),
                (
                    "Address",
                    json!(link.addr().map_or(String::new(), |a| a.to_string())),
                ),
                (
                    "Link",
                    json!(if link.stats.up.load(Relaxed) {
                        "up"
                    } else {
                        "down"
                    }),
                ),
                ("Routes", json!(routes)),
                ("Queued", json!(link.queued_bytes())),
                ("Dropped", json!(link.stats.bytes_dropped.load(Relaxed))),
                (
                    "Gossip",
                    json!(if view.is_some() { "seen" } else { "not yet" }),
                ),
            ]));
        }
        Answer::Table(rows)
    }

    /// `cluster join discovery-node=<name>@<ip>` (the peer's cluster listener on this node's
    /// port, as VerneMQ nodes share theirs) or `discovery-node=<ip>:<port>`.
    async fn join(&self, discovery: &str) -> Result<Answer, CommandError> {
        let (name, addr): (Option<&str>, SocketAddr) = match discovery.rsplit_once('@') {
            Some((_, host)) => {
                let ip = host.parse().map_err(|_| {
                    CommandError::bad(format!(
                        "discovery-node={discovery}: the part after @ must be an IP address"
                    ))
                })?;
                (Some(discovery), SocketAddr::new(ip, self.advertise.port()))
            }
            None => (
                None,
                discovery.parse().map_err(|_| {
                    CommandError::bad(format!(
                        "discovery-node={discovery}: expected <name>@<ip> or <ip>:<port>"
                    ))
                })?,
            ),
        };
        if addr == self.advertise || name == Some(&*self.me.node) {
            return Err(CommandError::bad("a node cannot join itself"));
        }
        let (mut stream, peer) = tokio::time::timeout(Duration::from_secs(5), dial(addr, &self.me))
            .await
            .map_err(|_| CommandError::bad(format!("{addr}: no answer within 5 s")))?
            .map_err(CommandError::bad)?;
        if let Some(name) = name
            && name != peer
        {
            return Err(CommandError::bad(format!(
                "the node at {addr} is {peer:?}, not {name:?}"
            )));
        }
        let join = wire::frame(&Frame {
            body: Some(Body::Join(Join {
                addr: self.advertise.to_string(),
                retained: true,
            })),
        });
        stream
            .write_all(&join)
            .await
            .map_err(|e| CommandError::bad(format!("{addr}: {e}")))?;
        let _ = stream.shutdown().await;
        self.members.insert(&peer, addr);
        self.ensure_gossip().await.map_err(CommandError::bad)?;
        if let Some(g) = self.gossip.lock().await.as_ref() {
            let _ = g.contact(addr);
        }
        self.update_links(&self.views.lock().clone());
        // Gossip brings the rest of the cluster; wait (a little) until the peer is seen.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline {
            if self
                .views
                .lock()
                .iter()
                .any(|v| v.node.as_ref() == peer && v.live)
            {
                return text(format!("Done: joined {peer} ({addr})"));
            }
            tokio::time::sleep(self.config.gossip_interval).await;
        }
        text(format!(
            "Done: {peer} ({addr}) is a member; gossip has not reached it yet"
        ))
    }

    /// `cluster leave node=<name> [-k]`: this node leaves, or makes a member leave (the member
    /// itself stops gossiping when it hears it; a dead member is forgotten). With `-k`, run on
    /// the leaving node itself, it disconnects its clients so that they reconnect elsewhere.
    async fn leave(&self, node: &str, kill: bool) -> Result<Answer, CommandError> {
        if node == &*self.me.node {
            if !self.clustered.load(Acquire) {
                return Err(CommandError::bad("this node is not in a cluster"));
            }
            self.leave_self().await;
            if kill {
                self.disconnect_all().await;
            }
            return text(format!("Done: {node} left the cluster"));
        }
        if !self.members.list().iter().any(|(n, _)| n == node) {
            return Err(CommandError::not_found(format!(
                "{node:?} is not a member of this node's cluster"
            )));
        }
        let generation = self
            .views
            .lock()
            .iter()
            .find(|v| &*v.node == node)
            .map_or(0, |v| v.generation);
        if let Some(g) = self.gossip.lock().await.as_ref() {
            g.set(&format!("leave:{node}"), &generation.to_string())
                .await;
        }
        self.members.remove(node);
        self.update_links(&self.views.lock().clone());
        if kill {
            return text(format!(
                "Done: {node} leaves the cluster (-k acts only on the leaving node itself)"
            ));
        }
        text(format!("Done: {node} leaves the cluster"))
    }

    /// `cluster partition block=<node>,... | heal` (with `cluster.fault_injection = on`): this
    /// node stops hearing and reaching those nodes, or hears everyone again.
    fn partition(&self, words: &[&str], args: &Args) -> Result<Answer, CommandError> {
        if !self.config.fault_injection {
            return Err(CommandError::bad(
                "cluster partition is fault injection for tests: set cluster.fault_injection = on",
            ));
        }
        match words {
            ["block"] | [] if args.get("block").is_some() => {
                args.check(&["block"])?;
                let mut ips = Vec::new();
                for node in args.need("block")?.split(',').map(str::trim) {
                    let known = self.members.list();
                    let ip = known
                        .iter()
                        .find(|(n, _)| n == node)
                        .map(|(_, a)| a.ip())
                        .or_else(|| node.rsplit('@').next()?.parse().ok())
                        .ok_or_else(|| {
                            CommandError::bad(format!("{node:?}: not a member, nor <name>@<ip>"))
                        })?;
                    ips.push(ip);
                }
                self.gate.block(ips);
            }
            ["heal"] => {
                args.check(&[])?;
                self.gate.heal();
            }
            _ => {
                return Err(CommandError::bad(
                    "cluster partition block=<node>[,<node>...] | cluster partition heal",
                ));
            }
        }
        let blocked: Vec<String> = self
            .gate
            .blocked()
            .iter()
            .map(ToString::to_string)
            .collect();
        text(format!(
            "Cut off: {}",
            if blocked.is_empty() {
                "none".into()
            } else {
                blocked.join(", ")
            }
        ))
    }

    /// Disconnects every client of this node (v5: "use another server").
    async fn disconnect_all(&self) {
        for slot in self.engine.sessions() {
            if slot.mailbox.is_online() {
                self.engine
                    .disconnect(
                        &slot.mountpoint,
                        &slot.client_id,
                        DisconnectReason::UseAnotherServer,
                    )
                    .await;
            }
        }
    }
}
