//! The engine's [`Peers`] on a cluster node: after a publish has been routed here, it is
//! encoded once and queued on the link of every node with a matching route (a retained one on
//! every link, so that each node keeps the retained messages of the whole cluster).

use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;

use super::link::Link;
use super::routes::RemoteRoutes;
use super::wire::{self, Body, Frame, Publish};
use crate::engine::Peers;
use crate::message::Message;
use crate::store::message_record;

/// The links and the routes of the other nodes, replaced whole when gossip changes them.
#[derive(Debug, Default)]
pub struct Table {
    /// One per member node; route node numbers index it.
    pub links: Vec<Arc<Link>>,
    /// The other nodes' routes.
    pub routes: RemoteRoutes,
}

/// Forwards publishes to the nodes that want them.
#[derive(Debug, Default)]
pub struct Forwarder {
    table: RwLock<Arc<Table>>,
}

impl Forwarder {
    /// Replaces the table.
    pub fn set(&self, table: Table) {
        *self.table.write() = Arc::new(table);
    }

    /// The current table.
    pub fn table(&self) -> Arc<Table> {
        self.table.read().clone()
    }
}

impl Peers for Forwarder {
    fn forward(&self, mountpoint: &str, message: &Arc<Message>) {
        let table = self.table();
        if table.links.is_empty() {
            return;
        }
        let mut nodes = Vec::new();
        if message.retain {
            nodes.extend(0..table.links.len());
        } else {
            table
                .routes
                .matching(mountpoint, &message.topic, &mut nodes);
        }
        if nodes.is_empty() {
            return;
        }
        let now = (SystemTime::now(), tokio::time::Instant::now());
        let frame = wire::frame(&Frame {
            body: Some(Body::Publish(Publish {
                mountpoint: mountpoint.to_owned(),
                message: Some(message_record(message, now)),
            })),
        });
        for n in nodes {
            if let Some(link) = table.links.get(n) {
                link.send(&frame);
            }
        }
    }
}
