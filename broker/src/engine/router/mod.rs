//! The router: per-mountpoint subscription tries and shared subscription groups. A publish
//! takes only read locks and hands each subscriber its delivery through the subscriber's own
//! mailbox; no global lock is held while deliveries are queued. Each mountpoint's trie has its
//! own lock, so a storm of SUBSCRIBEs on one mountpoint does not hold up publishes on another.

mod routes;
mod trie;

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};

pub use routes::LocalRoutes;
pub use trie::{Group, Subscriber, Subscription, Trie};

use super::{Congested, Mailbox, Pushed};
use crate::hooks::MatchedAcl;
use crate::message::{Delivery, Message};
use crate::mqtt::QoS;
use crate::store::Ticket;
use crate::topic;

/// A lock read by every publish on every worker and written only by (un)subscribes: sharded
/// per thread, so that readers on two cores do not pass one lock word back and forth (with
/// parking_lot's `RwLock`, the two read locks of each publish were a third of the broker's
/// time in QoS 0 pairwise at two million messages a second); a writer takes every shard.
type ReadMostly<T> = ShardedLock<T>;

/// Reads `lock` (a panic while it was written leaves nothing half-done that matters here).
fn read<T>(lock: &ReadMostly<T>) -> ShardedLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes `lock`.
fn write<T>(lock: &ReadMostly<T>) -> ShardedLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Subscriptions of every mountpoint, each mountpoint's behind its own lock (the map itself is
/// only written when a mountpoint gets its first subscription).
#[derive(Debug, Default)]
pub struct Router {
    /// The default mountpoint's subscriptions: most brokers have no other, and every publish
    /// reads them (a field rather than a map entry: looking it up per publish read a small
    /// table that shares its cache lines with whatever the allocator put next to it, objects
    /// the workers write all the time).
    default: Arc<ReadMostly<Trie>>,
    /// The other mountpoints'.
    tries: ReadMostly<HashMap<String, Arc<ReadMostly<Trie>>>>,
    /// `upgrade_outgoing_qos`: deliveries at the subscription's QoS.
    upgrade_qos: bool,
    /// The filters with at least one subscriber here, kept only on a cluster node (its peers
    /// are told which filters to forward here).
    routes: Option<LocalRoutes>,
}

/// One subscriber's share of a publish, before it is queued.
struct Pending {
    mailbox: Arc<Mailbox>,
    qos: QoS,
    retain: bool,
    ids: Vec<u32>,
    acl: Option<Arc<MatchedAcl>>,
}

/// What routing did: deliveries queued and, when asked for, the ones that went to an offline
/// session or were dropped (for the `on_offline_message` / `on_message_drop` hooks).
#[derive(Debug, Default)]
pub struct Routed {
    /// Deliveries queued.
    pub queued: usize,
    /// Subscribers whose delivery was queued offline or dropped, with its QoS and retain flag.
    pub notable: Vec<(Arc<Mailbox>, Pushed, QoS, bool)>,
    /// When every delivery written to the store is durable (none written: `None`).
    pub ticket: Option<Ticket>,
    /// A subscriber queue (or link to another node) this publish found congested: the
    /// publisher should pause on it.
    pub congested: Option<Congested>,
    /// The share groups (`$share/<group>/<filter>`) served here.
    pub shared_here: Vec<Arc<str>>,
}

/// Which share groups a publish serves on this node.
#[derive(Clone, Copy)]
pub enum Groups<'a> {
    /// Every matching group (a single node).
    All,
    /// Those `serve` says yes to (a cluster node deciding with its peers).
    Chosen(&'a dyn Fn(&str) -> bool),
}

impl Router {
    /// A router; `upgrade_qos` delivers at the subscription's QoS (`upgrade_outgoing_qos`);
    /// `track_routes` keeps the set of filters subscribed here (a cluster node).
    pub fn new(upgrade_qos: bool, track_routes: bool) -> Router {
        Router {
            upgrade_qos,
            routes: track_routes.then(LocalRoutes::default),
            ..Router::default()
        }
    }

    /// The filters subscribed here, when the router keeps them.
    pub fn local_routes(&self) -> Option<&LocalRoutes> {
        self.routes.as_ref()
    }

    /// The QoS of a delivery: the lower of published and granted, or the granted one when
    /// upgrading.
    fn delivery_qos(&self, published: QoS, granted: QoS) -> QoS {
        if self.upgrade_qos {
            granted
        } else {
            published.min(granted)
        }
    }

    /// Adds or replaces a subscription (`filter` may be `$share/<group>/...`, already
    /// validated). Returns whether it existed.
    pub fn subscribe(&self, mountpoint: &str, filter: &str, sub: Subscription) -> bool {
        let Ok(parsed) = topic::parse_filter(filter) else {
            return false;
        };
        let trie = match self.trie(mountpoint) {
            Some(t) => t,
            None => write(&self.tries)
                .entry(mountpoint.to_owned())
                .or_default()
                .clone(),
        };
        let existed = write(&trie).insert(parsed.filter, parsed.group, sub);
        if !existed && let Some(routes) = &self.routes {
            routes.add(mountpoint, filter);
        }
        existed
    }

    /// Removes a subscription; returns whether it existed.
    pub fn unsubscribe(&self, mountpoint: &str, filter: &str, client_id: &str) -> bool {
        let Ok(parsed) = topic::parse_filter(filter) else {
            return false;
        };
        let trie = self.trie(mountpoint);
        let removed =
            trie.is_some_and(|t| write(&t).remove(parsed.filter, parsed.group, client_id));
        if removed && let Some(routes) = &self.routes {
            routes.remove(mountpoint, filter);
        }
        removed
    }

    /// Number of subscriptions in all mountpoints.
    pub fn subscription_count(&self) -> usize {
        let mut tries: Vec<Arc<ReadMostly<Trie>>> = read(&self.tries).values().cloned().collect();
        tries.push(self.default.clone());
        tries.iter().map(|t| read(t).len()).sum()
    }

    /// The subscriptions of `mountpoint`, if it has any.
    fn trie(&self, mountpoint: &str) -> Option<Arc<ReadMostly<Trie>>> {
        if mountpoint.is_empty() {
            return Some(self.default.clone());
        }
        read(&self.tries).get(mountpoint).cloned()
    }

    /// Queues `message` for every matching subscriber: one delivery per client (overlapping
    /// subscriptions merged: highest QoS, every subscription identifier), one member per share
    /// group. Returns how many deliveries were queued.
    pub fn route(
        &self,
        mountpoint: &str,
        message: &Arc<Message>,
        report: bool,
        groups: Groups<'_>,
    ) -> Routed {
        // One entry per subscribing session (its mailbox is its identity). A publish usually
        // matches a handful: a linear scan, with an index once there are many.
        let mut by_client: Vec<Pending> = Vec::new();
        let mut index: Option<HashMap<*const Mailbox, usize, foldhash::fast::RandomState>> = None;
        let mut shared: Vec<Pending> = Vec::new();
        let mut shared_here = Vec::new();
        {
            let others;
            let trie = if mountpoint.is_empty() {
                &self.default
            } else {
                others = read(&self.tries);
                match others.get(mountpoint) {
                    Some(trie) => trie,
                    None => return Routed::default(),
                }
            };
            let trie = read(trie);
            let publisher = message.publisher.as_deref();
            trie.matches(
                &message.topic,
                &mut |sub: &Subscription| {
                    if sub.options.no_local && publisher == Some(&*sub.client_id) {
                        return;
                    }
                    let qos = self.delivery_qos(message.qos, sub.options.qos);
                    let retain = sub.options.retain_as_published && message.retain;
                    let Subscriber::Local(mailbox) = &sub.subscriber;
                    let key = Arc::as_ptr(mailbox);
                    let found = match &index {
                        Some(ix) => ix.get(&key).copied(),
                        None => by_client
                            .iter()
                            .position(|p| Arc::as_ptr(&p.mailbox) == key),
                    };
                    let at = match found {
                        Some(at) => at,
                        None => {
                            by_client.push(Pending {
                                mailbox: mailbox.clone(),
                                qos,
                                retain,
                                ids: Vec::new(),
                                acl: sub.acl.clone(),
                            });
                            let at = by_client.len() - 1;
                            if let Some(ix) = &mut index {
                                ix.insert(key, at);
                            } else if by_client.len() > 16 {
                                index = Some(
                                    by_client
                                        .iter()
                                        .enumerate()
                                        .map(|(i, p)| (Arc::as_ptr(&p.mailbox), i))
                                        .collect(),
                                );
                            }
                            at
                        }
                    };
                    let entry = &mut by_client[at];
                    entry.qos = entry.qos.max(qos);
                    entry.retain |= retain;
                    entry.ids.extend(sub.id);
                },
                &mut |group: &Group| {
                    if let Groups::Chosen(serve) = groups
                        && !serve(&group.key)
                    {
                        return;
                    }
                    if let Some(sub) = group.pick() {
                        shared_here.push(group.key.clone());
                        let Subscriber::Local(mailbox) = &sub.subscriber;
                        shared.push(Pending {
                            mailbox: mailbox.clone(),
                            qos: self.delivery_qos(message.qos, sub.options.qos),
                            retain: sub.options.retain_as_published && message.retain,
                            ids: sub.id.into_iter().collect(),
                            acl: sub.acl.clone(),
                        });
                    }
                },
            );
        }
        let mut routed = Routed {
            shared_here,
            ..Routed::default()
        };
        for p in by_client.into_iter().chain(shared) {
            let delivery = Delivery {
                message: message.clone(),
                qos: p.qos,
                retain: p.retain,
                subscription_ids: p.ids,
                persisted: false,
                acl: p.acl,
                stored: None,
            };
            let (pushed, ticket) = p.mailbox.push(delivery);
            routed.ticket = routed.ticket.max(ticket);
            if pushed == Pushed::Online && routed.congested.is_none() && p.mailbox.congested() {
                routed.congested = Some(Congested::Queue(p.mailbox.clone()));
            }
            if pushed != Pushed::Dropped {
                routed.queued += 1;
            }
            if report && pushed != Pushed::Online {
                routed.notable.push((p.mailbox, pushed, p.qos, p.retain));
            }
        }
        routed
    }
}
