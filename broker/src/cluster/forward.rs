//! The engine's [`Peers`] on a cluster node: after a publish has been routed here, it is
//! queued on the link of every node with a matching route (a retained one on every link, so
//! that each node keeps the retained messages of the whole cluster), and each matching share
//! group gets it on exactly one node, as `shared_subscription_policy` says:
//! - `prefer_local` (default): here when the group has members here, else on one live node
//!   with members (round robin);
//! - `random`: on any node with members, this one included, alike;
//! - `local_only`: only here.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::SystemTime;

use parking_lot::RwLock;

use super::link::Link;
use super::readiness::Readiness;
use super::routes::RemoteRoutes;
use super::wire::{self, Body, Frame, Publish};
use crate::config::SharedPolicy;
use crate::engine::{Backlog, ClusterOp, Peers};
use crate::message::Message;
use crate::store::message_record;

/// The links and the routes of the other nodes, replaced whole when gossip changes them.
#[derive(Debug, Default)]
pub struct Table {
    /// One per member node; route node numbers index it.
    pub links: Vec<Arc<Link>>,
    /// Whether gossip holds each node alive (share groups go to live nodes only).
    pub live: Vec<bool>,
    /// The other nodes' routes.
    pub routes: RemoteRoutes,
}

/// Forwards publishes to the nodes that want them.
#[derive(Debug)]
pub struct Forwarder {
    table: RwLock<Arc<Table>>,
    policy: SharedPolicy,
    readiness: Arc<Readiness>,
    /// Round robin over a group's nodes.
    next: AtomicUsize,
}

impl Forwarder {
    /// A forwarder with no peers yet.
    pub fn new(policy: SharedPolicy, readiness: Arc<Readiness>) -> Forwarder {
        Forwarder {
            table: RwLock::default(),
            policy,
            readiness,
            next: AtomicUsize::new(0),
        }
    }

    /// Replaces the table.
    pub fn set(&self, table: Table) {
        *self.table.write() = Arc::new(table);
    }

    /// The current table.
    pub fn table(&self) -> Arc<Table> {
        self.table.read().clone()
    }

    /// The live nodes among `candidates` (all of them when none is live).
    fn reachable(table: &Table, candidates: &mut Vec<usize>) {
        if candidates.iter().any(|n| table.live.get(*n) == Some(&true)) {
            candidates.retain(|n| table.live.get(*n) == Some(&true));
        }
    }
}

impl Peers for Forwarder {
    fn allows(&self, op: ClusterOp) -> bool {
        self.readiness.allows(op)
    }

    fn serve_here(&self, mountpoint: &str, group: &str) -> bool {
        if self.policy != SharedPolicy::Random {
            return true;
        }
        let table = self.table();
        let live = table
            .routes
            .group_nodes(mountpoint, group)
            .iter()
            .filter(|n| table.live.get(**n) == Some(&true))
            .count();
        // This node and each live node with members, alike.
        fastrand::usize(..=live) == 0
    }

    fn forward(
        &self,
        mountpoint: &str,
        message: &Arc<Message>,
        shared_here: &[Arc<str>],
    ) -> Option<Arc<dyn Backlog>> {
        let table = self.table();
        if table.links.is_empty() {
            return None;
        }
        let mut nodes = Vec::new();
        let mut groups = Vec::new();
        table
            .routes
            .matching(mountpoint, &message.topic, &mut nodes, &mut groups);
        if message.retain {
            nodes = (0..table.links.len()).collect();
        }
        // One node per share group not served here.
        let mut picked: Vec<(usize, String)> = Vec::new();
        if self.policy != SharedPolicy::LocalOnly {
            groups.sort();
            let mut at = 0;
            while at < groups.len() {
                let key = groups[at].0.clone();
                let end = at + groups[at..].iter().take_while(|(k, _)| *k == key).count();
                if !shared_here.contains(&key) {
                    let mut candidates: Vec<usize> =
                        groups[at..end].iter().map(|(_, n)| *n).collect();
                    Self::reachable(&table, &mut candidates);
                    let n = candidates[self.next.fetch_add(1, Relaxed) % candidates.len()];
                    picked.push((n, key.to_string()));
                }
                at = end;
            }
        }
        for (n, _) in &picked {
            if !nodes.contains(n) {
                nodes.push(*n);
            }
        }
        if nodes.is_empty() {
            return None;
        }
        let now = (SystemTime::now(), tokio::time::Instant::now());
        let mut publish = Publish {
            mountpoint: mountpoint.to_owned(),
            message: Some(message_record(message, now)),
            groups: Vec::new(),
            store_only: false,
        };
        let mut shared_frame = None;
        let mut congested: Option<Arc<dyn Backlog>> = None;
        for n in nodes {
            let Some(link) = table.links.get(n) else {
                continue;
            };
            if picked.iter().any(|(p, _)| *p == n) {
                // This node serves share groups: its own frame naming them.
                publish.groups = picked
                    .iter()
                    .filter(|(p, _)| *p == n)
                    .map(|(_, k)| k.clone())
                    .collect();
                let frame = wire::frame(&Frame {
                    body: Some(Body::Publish(publish.clone())),
                });
                link.send(&frame);
            } else {
                // Every other node gets the same bytes.
                let frame = shared_frame.get_or_insert_with(|| {
                    let mut p = publish.clone();
                    p.groups.clear();
                    wire::frame(&Frame {
                        body: Some(Body::Publish(p)),
                    })
                });
                link.send(frame);
            }
            if congested.is_none() && link.congested() {
                congested = Some(link.clone());
            }
        }
        congested
    }
}
