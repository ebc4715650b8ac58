//! The subscription trie: topic levels as nodes, `+` and `#` as their own children, so a
//! publish visits only the branches that can match.

/// Maps keyed by topic levels and client ids: foldhash is several times faster than SipHash
/// on these short keys and keeps a per-process random seed against flooding.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::engine::Mailbox;
use crate::mqtt::SubOptions;

/// Who receives a subscription's messages. Today every subscriber is a session of this node,
/// reached through its mailbox; the cluster adds a variant for a session on another node
/// (deliveries forwarded over that node's link), and the compiler then shows every place that
/// must handle it.
#[derive(Debug, Clone)]
pub enum Subscriber {
    /// A session on this node.
    Local(Arc<Mailbox>),
}

impl Subscriber {
    /// Whether the subscriber's client is connected now.
    pub fn is_online(&self) -> bool {
        let Subscriber::Local(mailbox) = self;
        mailbox.is_online()
    }
}

/// One client's subscription on one filter.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The subscriber.
    pub client_id: Arc<str>,
    /// Where deliveries go.
    pub subscriber: Subscriber,
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
    /// The group's full filter, `$share/<group>/<filter>`.
    pub key: Arc<str>,
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
            .find(|s| s.subscriber.is_online())
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
                let group = node.groups.entry(g.into()).or_insert_with(|| Group {
                    key: format!("$share/{g}/{filter}").into(),
                    ..Group::default()
                });
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::metrics::Metrics;
    use crate::topic;
    use crate::topic::strategies::{filter, topic_name};

    fn sub(client: &str) -> Subscription {
        let client_id: Arc<str> = client.into();
        let mailbox = Mailbox::new(
            "".into(),
            client_id.clone(),
            (10, 10),
            Arc::new(Metrics::default()),
            None,
        );
        Subscription {
            client_id,
            subscriber: Subscriber::Local(Arc::new(mailbox)),
            options: SubOptions::default(),
            id: None,
            acl: None,
        }
    }

    /// (client, filter, share group) triples.
    fn subscriptions() -> impl Strategy<Value = Vec<(u8, String, Option<u8>)>> {
        prop::collection::vec((0u8..6, filter(), prop::option::of(0u8..2)), 0..16)
    }

    proptest! {
        /// What the trie finds for a topic is exactly what `topic::matches` says of the
        /// subscriptions it holds (a model map, replaced on re-subscribe, with one removal):
        /// every plain one, and every share group with its members.
        #[test]
        fn trie_agrees_with_matches(subs in subscriptions(), t in topic_name(), remove in 0usize..16) {
            let mut trie = Trie::default();
            // (group, filter, client) -> the subscription identifier of its latest insert.
            let mut model: std::collections::BTreeMap<(Option<String>, String, String), u32> =
                Default::default();
            for (i, (client, f, group)) in subs.iter().enumerate() {
                let g = group.map(|g| format!("g{g}"));
                let client = format!("c{client}");
                let mut s = sub(&client);
                s.id = Some(i as u32);
                let existed = trie.insert(f, g.as_deref(), s);
                let key = (g.clone(), f.clone(), client.clone());
                prop_assert_eq!(existed, model.insert(key.clone(), i as u32).is_some());
                if i == remove {
                    prop_assert!(trie.remove(f, g.as_deref(), &client));
                    model.remove(&key);
                }
            }
            prop_assert_eq!(trie.len(), model.len());
            let mut plain_got = BTreeSet::new();
            let mut groups_got = BTreeSet::new();
            trie.matches(
                &t,
                &mut |s: &Subscription| {
                    plain_got.insert(s.id.unwrap_or(u32::MAX));
                },
                &mut |g: &Group| {
                    let ids: BTreeSet<u32> = g.members.iter().filter_map(|m| m.id).collect();
                    groups_got.insert(ids);
                },
            );
            let plain_want: BTreeSet<u32> = model
                .iter()
                .filter(|((g, f, _), _)| g.is_none() && topic::matches(f, &t))
                .map(|(_, id)| *id)
                .collect();
            let mut groups: std::collections::BTreeMap<(String, String), BTreeSet<u32>> =
                Default::default();
            for ((g, f, _), id) in &model {
                if let Some(g) = g
                    && topic::matches(f, &t)
                {
                    groups.entry((g.clone(), f.clone())).or_default().insert(*id);
                }
            }
            let groups_want: BTreeSet<BTreeSet<u32>> = groups.into_values().collect();
            prop_assert_eq!(plain_got, plain_want);
            prop_assert_eq!(groups_got, groups_want);
        }
    }
}
