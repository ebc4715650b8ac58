//! The subscription trie: topic levels as nodes, `+` and `#` as their own children, so a
//! publish visits only the branches that can match.

/// Maps keyed by topic levels and client ids: foldhash is several times faster than SipHash
/// on these short keys and keeps a per-process random seed against flooding.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::mqtt::SubOptions;
use crate::session::Mailbox;

/// One client's subscription on one filter.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The subscriber.
    pub client_id: Arc<str>,
    /// Where deliveries go.
    pub mailbox: Arc<Mailbox>,
    /// Options granted.
    pub options: SubOptions,
    /// v5 subscription identifier.
    pub id: Option<u32>,
    /// The ACL that authorized it.
    pub acl: Option<Arc<crate::hooks::MatchedAcl>>,
}

/// The members of one share group on one filter.
#[derive(Debug, Default)]
pub struct Group {
    /// Members, in subscription order.
    pub members: Vec<Subscription>,
    next: AtomicUsize,
}

impl Group {
    /// The member that gets the next message (round robin over online members first).
    pub fn pick(&self) -> Option<&Subscription> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.members[(start + i) % n])
            .find(|s| s.mailbox.is_online())
            .or_else(|| self.members.get(start % n))
    }
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    /// Plain subscriptions ending here, by client id.
    subs: HashMap<Arc<str>, Subscription>,
    /// Shared subscriptions ending here, by group name.
    groups: HashMap<Box<str>, Group>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subs.is_empty() && self.groups.is_empty()
    }
}

/// All subscriptions of one mountpoint.
#[derive(Debug, Default)]
pub struct Trie {
    root: Node,
    count: usize,
}

impl Trie {
    /// Adds or replaces a subscription; returns whether it already existed.
    pub fn insert(&mut self, filter: &str, group: Option<&str>, sub: Subscription) -> bool {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        let existed = match group {
            None => node.subs.insert(sub.client_id.clone(), sub).is_some(),
            Some(g) => {
                let group = node.groups.entry(g.into()).or_default();
                match group
                    .members
                    .iter_mut()
                    .find(|m| m.client_id == sub.client_id)
                {
                    Some(m) => {
                        *m = sub;
                        true
                    }
                    None => {
                        group.members.push(sub);
                        false
                    }
                }
            }
        };
        if !existed {
            self.count += 1;
        }
        existed
    }

    /// Removes a client's subscription; returns whether it existed.
    pub fn remove(&mut self, filter: &str, group: Option<&str>, client_id: &str) -> bool {
        fn walk<'a>(
            node: &mut Node,
            mut levels: impl Iterator<Item = &'a str>,
            group: Option<&str>,
            client_id: &str,
        ) -> bool {
            match levels.next() {
                None => match group {
                    None => node.subs.remove(client_id).is_some(),
                    Some(g) => {
                        let Some(members) = node.groups.get_mut(g) else {
                            return false;
                        };
                        let before = members.members.len();
                        members.members.retain(|m| &*m.client_id != client_id);
                        let removed = members.members.len() != before;
                        if members.members.is_empty() {
                            node.groups.remove(g);
                        }
                        removed
                    }
                },
                Some(level) => {
                    let Some(child) = node.children.get_mut(level) else {
                        return false;
                    };
                    let removed = walk(child, levels, group, client_id);
                    if child.is_empty() {
                        node.children.remove(level);
                    }
                    removed
                }
            }
        }
        let removed = walk(&mut self.root, filter.split('/'), group, client_id);
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there is no subscription.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Calls `plain` for every plain subscription matching `topic` and `shared` for every share
    /// group matching it.
    pub fn matches<'a>(
        &'a self,
        topic: &str,
        plain: &mut impl FnMut(&'a Subscription),
        shared: &mut impl FnMut(&'a Group),
    ) {
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        walk(&self.root, &levels, 0, dollar, plain, shared);

        fn visit<'a>(
            node: &'a Node,
            plain: &mut impl FnMut(&'a Subscription),
            shared: &mut impl FnMut(&'a Group),
        ) {
            node.subs.values().for_each(&mut *plain);
            node.groups.values().for_each(&mut *shared);
        }

        fn walk<'a>(
            node: &'a Node,
            levels: &[&str],
            depth: usize,
            dollar: bool,
            plain: &mut impl FnMut(&'a Subscription),
            shared: &mut impl FnMut(&'a Group),
        ) {
            let wildcards_allowed = !(depth == 0 && dollar);
            if wildcards_allowed && let Some(hash) = node.children.get("#") {
                visit(hash, plain, shared);
            }
            let Some((level, rest)) = levels.split_first() else {
                visit(node, plain, shared);
                return;
            };
            if let Some(child) = node.children.get(*level) {
                walk(child, rest, depth + 1, dollar, plain, shared);
            }
            if wildcards_allowed && let Some(plus) = node.children.get("+") {
                walk(plus, rest, depth + 1, dollar, plain, shared);
            }
        }
    }
}
