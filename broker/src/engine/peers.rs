//! The seam to other nodes: after a publish is routed to this node's subscribers, the engine
//! hands it to its [`Peers`] (a cluster node's links), which send it on to the nodes with a
//! matching route. A single node has none. What arrives from a peer is routed here only
//! ([`super::Engine::publish_from_peer`]): it is never forwarded again.

use std::sync::Arc;

use crate::message::Message;

/// Other nodes that may have subscribers.
pub trait Peers: Send + Sync + std::fmt::Debug {
    /// Whether the share group `group` (`$share/<group>/<filter>`, with members here) gets a
    /// publish here rather than on another node (`shared_subscription_policy`).
    fn serve_here(&self, mountpoint: &str, group: &str) -> bool;

    /// Sends `message` (published on `mountpoint` on this node) to every node with a matching
    /// route, a retained one to every node, and to one node of each matching share group not
    /// in `shared_here`. Must not block: links queue what they send.
    fn forward(&self, mountpoint: &str, message: &Arc<Message>, shared_here: &[Arc<str>]);
}
