//! Share group messages picked for a node that died: when gossip marks a node dead, the
//! publishes waiting in its link's buffer that carry share groups go to another live node with
//! members of each group (or to this node's own members), so a group does not lose what was
//! picked for a member that is gone. The rest of the buffer stays for the node, in order, with
//! the groups taken off (it delivers them to its plain subscribers when it comes back).

use std::sync::Arc;

use bytes::Buf;

use super::forward::Table;
use super::link::Link;
use super::wire::{self, Body, Frame};
use crate::engine::Engine;
use crate::store::message_from;

/// Re-routes the share-group part of what waits for the dead node `dead` (index `dead_at` in
/// `table`); returns how many group deliveries went elsewhere.
pub fn reroute(engine: &Engine, table: &Table, dead_at: usize, dead: &Arc<Link>) -> usize {
    let mut pending = dead.take().bytes.freeze();
    let mut moved = 0;
    while pending.len() >= 4 {
        let len = (&pending[..4]).get_u32() as usize;
        if pending.len() < 4 + len {
            break;
        }
        let raw = pending.split_to(4 + len);
        let frame: Frame = match wire::decode(&raw[4..], "frame") {
            Ok(f) => f,
            Err(_) => continue,
        };
        let Some(Body::Publish(mut p)) = frame.body else {
            dead.send(&raw);
            continue;
        };
        if p.groups.is_empty() {
            dead.send(&raw);
            continue;
        }
        for group in std::mem::take(&mut p.groups) {
            let live: Vec<usize> = table
                .routes
                .group_nodes(&p.mountpoint, &group)
                .iter()
                .copied()
                .filter(|n| *n != dead_at && table.live.get(*n) == Some(&true))
                .collect();
            moved += 1;
            match live.get(fastrand::usize(..live.len().max(1))) {
                Some(n) => {
                    let to = wire::Publish {
                        groups: vec![group],
                        ..p.clone()
                    };
                    table.links[*n].send(&wire::frame(&Frame {
                        body: Some(Body::Publish(to)),
                    }));
                }
                None => {
                    // No live node has members: this node's own, if it has some.
                    let Some(record) = p.message.clone() else {
                        continue;
                    };
                    let now = (std::time::SystemTime::now(), tokio::time::Instant::now());
                    if let Ok(m) = message_from(record, now) {
                        engine.publish_from_peer(&p.mountpoint, &Arc::new(m), &[group]);
                    }
                }
            }
        }
        // What stays for the dead node: its plain subscribers' copy.
        dead.send(&wire::frame(&Frame {
            body: Some(Body::Publish(p)),
        }));
    }
    moved
}
