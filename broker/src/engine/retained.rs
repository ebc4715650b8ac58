//! Retained messages: one topic trie per mountpoint, so a new subscription finds its retained
//! messages by walking the levels its filter can match instead of scanning every retained
//! message. Each mountpoint has its own lock: retaining on one never waits for another.
//!
//! [`RetainedStore`] is the seam a cluster backend implements (retained messages replicated
//! across nodes); [`Retained`] is the local one.

use std::collections::HashMap;
use std::sync::Arc;
use tokio::time::Instant;

use parking_lot::RwLock;

use crate::message::Message;

/// Where retained messages live.
pub trait RetainedStore: Send + Sync + std::fmt::Debug {
    /// Stores `message` as its topic's retained message, or clears it (empty payload).
    fn put(&self, mountpoint: &str, message: Arc<Message>);
    /// The retained messages whose topic `filter` matches, expired ones left out.
    fn matching(&self, mountpoint: &str, filter: &str) -> Vec<Arc<Message>>;
    /// Every retained message with its mountpoint, sorted by mountpoint and topic.
    fn all(&self) -> Vec<(String, Arc<Message>)>;
    /// How many there are.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    message: Option<Arc<Message>>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.message.is_none()
    }

    /// Sets (`Some`) or clears (`None`) the message at `levels`; returns the change in count.
    fn put(&mut self, levels: &[&str], message: Option<Arc<Message>>) -> isize {
        let Some((first, rest)) = levels.split_first() else {
            let had = self.message.is_some();
            let has = message.is_some();
            self.message = message;
            return has as isize - had as isize;
        };
        if message.is_none() {
            let Some(child) = self.children.get_mut(*first) else {
                return 0;
            };
            let change = child.put(rest, None);
            if child.is_empty() {
                self.children.remove(*first);
            }
            return change;
        }
        self.children
            .entry((*first).into())
            .or_default()
            .put(rest, message)
    }

    fn collect_all(&self, out: &mut Vec<Arc<Message>>) {
        out.extend(self.message.iter().cloned());
        for child in self.children.values() {
            child.collect_all(out);
        }
    }

    /// Messages under this node matching the filter `levels`; `root` says whether this is the
    /// topic's first level (where wildcards skip `$` topics).
    fn matching(&self, levels: &[&str], root: bool, out: &mut Vec<Arc<Message>>) {
        let Some((first, rest)) = levels.split_first() else {
            out.extend(self.message.iter().cloned());
            return;
        };
        let visible = |name: &str| !(root && name.starts_with('$'));
        match *first {
            "#" => {
                // `a/#` matches `a` itself too.
                out.extend(self.message.iter().cloned());
                for (name, child) in &self.children {
                    if visible(name) {
                        child.collect_all(out);
                    }
                }
            }
            "+" => {
                for (name, child) in &self.children {
                    if visible(name) {
                        child.matching(rest, false, out);
                    }
                }
            }
            level => {
                if let Some(child) = self.children.get(level) {
                    child.matching(rest, false, out);
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Tree {
    root: Node,
    count: usize,
}

/// The local retained store: a trie per mountpoint, each behind its own lock.
#[derive(Debug, Default)]
pub struct Retained {
    mountpoints: RwLock<HashMap<String, Arc<RwLock<Tree>>>>,
}

impl Retained {
    fn tree(&self, mountpoint: &str) -> Option<Arc<RwLock<Tree>>> {
        self.mountpoints.read().get(mountpoint).cloned()
    }
}

impl RetainedStore for Retained {
    fn put(&self, mountpoint: &str, message: Arc<Message>) {
        let clear = message.payload.is_empty();
        let tree = match self.tree(mountpoint) {
            Some(t) => t,
            None if clear => return,
            None => self
                .mountpoints
                .write()
                .entry(mountpoint.to_owned())
                .or_default()
                .clone(),
        };
        let levels: Vec<&str> = message.topic.split('/').collect();
        let mut tree = tree.write();
        let change = tree.root.put(&levels, (!clear).then(|| message.clone()));
        tree.count = tree.count.saturating_add_signed(change);
    }

    fn matching(&self, mountpoint: &str, filter: &str) -> Vec<Arc<Message>> {
        let Some(tree) = self.tree(mountpoint) else {
            return Vec::new();
        };
        let levels: Vec<&str> = filter.split('/').collect();
        let mut out = Vec::new();
        tree.read().root.matching(&levels, true, &mut out);
        let now = Instant::now();
        out.retain(|m| !m.is_expired(now));
        out
    }

    fn all(&self) -> Vec<(String, Arc<Message>)> {
        let trees: Vec<(String, Arc<RwLock<Tree>>)> = self
            .mountpoints
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut v = Vec::new();
        for (mp, tree) in trees {
            let mut out = Vec::new();
            tree.read().root.collect_all(&mut out);
            v.extend(out.into_iter().map(|m| (mp.clone(), m)));
        }
        v.sort_by(|a, b| (&a.0, &a.1.topic).cmp(&(&b.0, &b.1.topic)));
        v
    }

    fn len(&self) -> usize {
        let trees: Vec<Arc<RwLock<Tree>>> = self.mountpoints.read().values().cloned().collect();
        trees.iter().map(|t| t.read().count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::{Properties, QoS};
    use crate::topic;
    use crate::topic::strategies::{filter, topic_name};
    use proptest::prelude::*;

    fn msg(topic: &str, payload: &str) -> Arc<Message> {
        let publish = crate::mqtt::Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: true,
            topic: topic.into(),
            packet_id: 0,
            payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
            properties: Properties::default(),
        };
        Arc::new(Message::from_publish(&publish, topic.into(), None))
    }

    #[test]
    fn put_clear_and_count() {
        let r = Retained::default();
        r.put("", msg("a/b", "1"));
        r.put("", msg("a/b", "2"));
        r.put("", msg("a", "3"));
        r.put("m", msg("a/b", "4"));
        assert_eq!(r.len(), 3);
        assert_eq!(r.matching("", "a/b")[0].payload.as_ref(), b"2");
        r.put("", msg("a/b", ""));
        r.put("", msg("never/was", ""));
        assert_eq!(r.len(), 2);
        assert!(r.matching("", "a/b").is_empty());
        assert_eq!(r.matching("m", "#").len(), 1);
        assert_eq!(r.all().len(), 2);
    }

    proptest! {
        /// The trie finds exactly the retained topics `topic::matches` says the filter matches.
        #[test]
        fn trie_agrees_with_matches(topics in prop::collection::vec(topic_name(), 0..12), f in filter()) {
            let r = Retained::default();
            for t in &topics {
                r.put("", msg(t, "x"));
            }
            let mut got: Vec<String> = r.matching("", &f).iter().map(|m| m.topic.to_string()).collect();
            got.sort();
            let mut want: Vec<String> = topics.iter().filter(|t| topic::matches(&f, t)).cloned().collect();
            want.sort();
            want.dedup();
            prop_assert_eq!(got, want);
        }
    }
}
