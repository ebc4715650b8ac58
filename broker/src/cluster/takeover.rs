//! A client id is unique across the cluster: before a node creates or resumes a session it
//! claims the client id from every peer whose link is up ([`wire::Claim`]); a peer holding the
//! session tells its connection the session was taken over (v5: 0x8E), lets go of it and
//! sends it back ([`wire::Claimed`]: subscriptions, in-flight and queued messages) unless the
//! client starts clean. The claimer waits for every answer, up to `cluster.takeover_timeout`.
//!
//! Without a consensus log this is first come, first served: two connections with one client
//! id arriving on two nodes at the same instant may both stay (the Raft registry closes that
//! window); a peer whose link is down is not asked, and keeps its copy until it is.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::link::Link;
use super::readiness::Readiness;
use super::wire::{self, Body, Claim, Claimed, Frame, Online, OnlineSession};
use crate::engine::{Engine, Handover, Ownership};
use crate::mqtt::DisconnectReason;
use crate::store::{delivery_from, delivery_record, subscription_from, subscription_record};

/// The links, by peer name (shared with the cluster, which keeps them up to date).
pub type Links = Arc<Mutex<BTreeMap<Arc<str>, Arc<Link>>>>;

/// Claims in flight and their counters.
#[derive(Debug)]
pub struct Takeovers {
    links: Links,
    next: AtomicU64,
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<Claimed>>>,
    timeout: Duration,
    readiness: Arc<Readiness>,
    /// Sessions taken over from another node.
    pub taken: AtomicU64,
    /// Sessions handed over to another node.
    pub given: AtomicU64,
    /// Claims that did not get every answer in time.
    pub timeouts: AtomicU64,
    /// Connections closed after a netsplit healed (the same client id on both sides).
    pub duplicates: AtomicU64,
    /// Share group deliveries waiting for a node that died, sent to another member.
    pub rerouted: AtomicU64,
}

impl Takeovers {
    /// Claims over `links`, waiting up to `timeout` for answers.
    pub fn new(links: Links, timeout: Duration, readiness: Arc<Readiness>) -> Takeovers {
        Takeovers {
            links,
            next: AtomicU64::new(1),
            pending: Mutex::default(),
            timeout,
            readiness,
            taken: AtomicU64::new(0),
            given: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rerouted: AtomicU64::new(0),
        }
    }

    /// An answer arrived from a peer.
    pub fn answered(&self, c: Claimed) {
        if let Some(tx) = self.pending.lock().get(&c.id) {
            let _ = tx.send(c);
        }
    }

    /// `node` claims a session: let go of it here and answer on the link to `node`.
    pub async fn claimed_by(&self, engine: &Engine, node: &str, claim: Claim) {
        let released = engine
            .hand_over(&claim.mountpoint, &claim.client_id, !claim.clean_start)
            .await;
        let now = (SystemTime::now(), tokio::time::Instant::now());
        let answer = match released {
            Some(h) => {
                self.given.fetch_add(1, Relaxed);
                tracing::info!(client_id = %claim.client_id, to = %node, "session handed over to another node");
                Claimed {
                    id: claim.id,
                    found: true,
                    subscriptions: h
                        .subscriptions
                        .into_iter()
                        .map(|(f, r)| subscription_record(f, &r))
                        .collect(),
                    queue: h.queue.iter().map(|d| delivery_record(d, now)).collect(),
                    session_id: h.session_id.map(|id| id.to_string()),
                }
            }
            None => Claimed {
                id: claim.id,
                found: false,
                ..Claimed::default()
            },
        };
        let link = self.links.lock().get(node).cloned();
        match link {
            Some(link) => {
                link.send(&wire::frame(&Frame {
                    body: Some(Body::Claimed(answer)),
                }));
            }
            None => tracing::warn!(%node, "a claim from a node with no link here: not answered"),
        }
    }

    /// This node's connected clients, for a peer seen again after a split.
    pub fn online(engine: &Engine, answer: bool) -> Online {
        Online {
            answer,
            sessions: engine
                .sessions()
                .into_iter()
                .filter(|s| s.mailbox.is_online())
                .map(|s| OnlineSession {
                    mountpoint: s.mountpoint.clone(),
                    client_id: s.client_id.to_string(),
                    since_ms: s.attached_at.load(Relaxed),
                })
                .collect(),
        }
    }

    /// `node` (seen again after a split) has these clients connected: of two connections
    /// with one client id the older goes (v5: 0x8E); the same rule runs on `node`, so exactly
    /// one stays. Equal times: the node with the smaller name keeps its own.
    pub async fn resolve_duplicates(&self, engine: &Engine, me: &str, node: &str, theirs: Online) {
        if !theirs.answer {
            let mine = Takeovers::online(engine, true);
            if let Some(link) = self.links.lock().get(node).cloned() {
                link.send(&wire::frame(&Frame {
                    body: Some(Body::Online(mine)),
                }));
            }
        }
        for s in theirs.sessions {
            let Some(mine) = engine
                .sessions()
                .into_iter()
                .find(|x| x.mountpoint == s.mountpoint && *x.client_id == *s.client_id)
                .filter(|x| x.mailbox.is_online())
            else {
                continue;
            };
            let since = mine.attached_at.load(Relaxed);
            if since < s.since_ms || (since == s.since_ms && me > node) {
                tracing::warn!(client_id = %s.client_id, other = %node, "the same client id was connected on both sides of a netsplit: closing the older connection here");
                self.duplicates.fetch_add(1, Relaxed);
                engine
                    .disconnect(
                        &s.mountpoint,
                        &s.client_id,
                        DisconnectReason::SessionTakenOver,
                    )
                    .await;
            }
        }
    }

    async fn claim(
        &self,
        mountpoint: &str,
        client_id: &str,
        clean_start: bool,
    ) -> Result<Option<Handover>, String> {
        if !self.readiness.allows_register() {
            return Err(
                "this node does not see a majority of its cluster (allow_register_during_netsplit = off)"
                    .into(),
            );
        }
        let peers: Vec<Arc<Link>> = self
            .links
            .lock()
            .values()
            .filter(|l| l.stats.up.load(Relaxed))
            .cloned()
            .collect();
        if peers.is_empty() {
            return Ok(None);
        }
        let id = self.next.fetch_add(1, Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.pending.lock().insert(id, tx);
        let frame = wire::frame(&Frame {
            body: Some(Body::Claim(Claim {
                id,
                mountpoint: mountpoint.to_owned(),
                client_id: client_id.to_owned(),
                clean_start,
            })),
        });
        let asked = peers.iter().filter(|l| l.send(&frame)).count();
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let mut answers = Vec::new();
        while answers.len() < asked {
            tokio::select! {
                Some(c) = rx.recv() => answers.push(c),
                _ = &mut deadline => {
                    self.timeouts.fetch_add(1, Relaxed);
                    tracing::warn!(%client_id, asked, answered = answers.len(), "session claim: not every node answered in time");
                    break;
                }
            }
        }
        self.pending.lock().remove(&id);
        let Some(found) = answers.into_iter().find(|c| c.found) else {
            return Ok(None);
        };
        self.taken.fetch_add(1, Relaxed);
        let now = (SystemTime::now(), tokio::time::Instant::now());
        let mut h = Handover::default();
        for s in found.subscriptions {
            h.subscriptions.push(subscription_from(s)?);
        }
        for q in found.queue {
            h.queue.push(delivery_from(q, now)?);
        }
        h.session_id = found.session_id.map(Into::into);
        Ok(Some(h))
    }
}

impl Ownership for Takeovers {
    fn claim<'a>(
        &'a self,
        mountpoint: &'a str,
        client_id: &'a str,
        clean_start: bool,
    ) -> BoxFuture<'a, Result<Option<Handover>, String>> {
        Box::pin(Takeovers::claim(self, mountpoint, client_id, clean_start))
    }
}
