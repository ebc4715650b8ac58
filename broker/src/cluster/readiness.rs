//! Whether this node sees a majority of its cluster (itself included), and so what it does:
//! a node cut off from the majority refuses CONNECT, PUBLISH, SUBSCRIBE and UNSUBSCRIBE unless
//! `allow_*_during_netsplit` says otherwise (VerneMQ's keys; VerneMQ asks for every node, here a
//! majority is enough, so one dead node of three stops nothing). `/health` says so too.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::config::DuringNetsplit;
use crate::engine::ClusterOp;

/// Members and running members, as gossip last said.
#[derive(Debug)]
pub struct Readiness {
    members: AtomicUsize,
    running: AtomicUsize,
    allow: DuringNetsplit,
}

impl Readiness {
    /// A lone node (in quorum) with these `allow_*_during_netsplit` settings.
    pub fn new(allow: DuringNetsplit) -> Readiness {
        Readiness {
            members: AtomicUsize::new(1),
            running: AtomicUsize::new(1),
            allow,
        }
    }

    /// Records the cluster's size and how many of its members run, both counting this node.
    pub fn set(&self, members: usize, running: usize) {
        self.members.store(members.max(1), Relaxed);
        self.running.store(running.max(1), Relaxed);
    }

    /// (members, running), both counting this node.
    pub fn counts(&self) -> (usize, usize) {
        (self.members.load(Relaxed), self.running.load(Relaxed))
    }

    /// Whether more than half of the members run.
    pub fn in_quorum(&self) -> bool {
        let (members, running) = self.counts();
        running * 2 > members
    }

    /// Whether a CONNECT may go ahead.
    pub fn allows_register(&self) -> bool {
        self.allow.register || self.in_quorum()
    }

    /// Whether `op` may go ahead.
    pub fn allows(&self, op: ClusterOp) -> bool {
        let allowed = match op {
            ClusterOp::Publish => self.allow.publish,
            ClusterOp::Subscribe => self.allow.subscribe,
            ClusterOp::Unsubscribe => self.allow.unsubscribe,
        };
        allowed || self.in_quorum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_is_a_quorum_and_the_flags_open_what_they_name() {
        let r = Readiness::new(DuringNetsplit {
            publish: true,
            ..DuringNetsplit::default()
        });
        assert!(r.in_quorum(), "alone");
        r.set(3, 2);
        assert!(r.in_quorum(), "one of three down");
        assert!(r.allows_register() && r.allows(ClusterOp::Subscribe));
        r.set(3, 1);
        assert!(!r.in_quorum());
        assert!(!r.allows_register());
        assert!(!r.allows(ClusterOp::Subscribe) && !r.allows(ClusterOp::Unsubscribe));
        assert!(
            r.allows(ClusterOp::Publish),
            "allow_publish_during_netsplit = on"
        );
        r.set(2, 1);
        assert!(
            !r.in_quorum(),
            "half is not a majority: two nodes cannot lose one"
        );
        r.set(4, 3);
        assert!(r.in_quorum());
    }
}
