//! The seam to other nodes: after a publish is routed to this node's subscribers, the engine
//! hands it to its [`Peers`] (a cluster node's links), which send it on to the nodes with a
//! matching route. A single node has none. What arrives from a peer is routed here only
//! ([`super::Engine::publish_from_peer`]): it is never forwarded again.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::Mailbox;
use crate::message::Message;

/// Something a publisher waits on before it reads more, when it fills faster than it drains.
pub trait Backlog: Send + Sync + std::fmt::Debug {
    /// Completes when the backlog has drained enough (or at once if it is not congested).
    fn drained(&self) -> BoxFuture<'_, ()>;
}

/// What a publish found congested: a subscriber's queue here, or the link to another node.
#[derive(Debug, Clone)]
pub enum Congested {
    /// A local subscriber's queue.
    Queue(Arc<Mailbox>),
    /// The way to another node.
    Peer(Arc<dyn Backlog>),
}

impl Congested {
    /// Completes when it has drained enough to go on.
    pub async fn drained(&self) {
        match self {
            Congested::Queue(m) => m.drained().await,
            Congested::Peer(b) => b.drained().await,
        }
    }

    /// Whether this is `mailbox` (a client publishing to itself does not wait for itself).
    pub fn is_queue(&self, mailbox: &Arc<Mailbox>) -> bool {
        matches!(self, Congested::Queue(m) if Arc::ptr_eq(m, mailbox))
    }
}

/// What a node cut off from most of its cluster may refuse (VerneMQ's
/// `allow_*_during_netsplit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterOp {
    /// A PUBLISH.
    Publish,
    /// A SUBSCRIBE.
    Subscribe,
    /// An UNSUBSCRIBE.
    Unsubscribe,
}

/// Other nodes that may have subscribers.
pub trait Peers: Send + Sync + std::fmt::Debug {
    /// Whether `op` may go ahead now (the node sees a majority of its cluster, or the config
    /// allows `op` during a netsplit).
    fn allows(&self, op: ClusterOp) -> bool;

    /// Whether the share group `group` (`$share/<group>/<filter>`, with members here) gets a
    /// publish here rather than on another node (`shared_subscription_policy`).
    fn serve_here(&self, mountpoint: &str, group: &str) -> bool;

    /// Sends `message` (published on `mountpoint` on this node) to every node with a matching
    /// route, a retained one to every node, and to one node of each matching share group not
    /// in `shared_here`. Must not block: links queue what they send; a link filling faster
    /// than it drains is returned, for the publisher to pause on.
    fn forward(
        &self,
        mountpoint: &str,
        message: &Arc<Message>,
        shared_here: &[Arc<str>],
    ) -> Option<Arc<dyn Backlog>>;
}
