//! The routes of the other nodes, as gossiped: which nodes have a subscriber on which filter.
//! A publish asks it once for the set of nodes to forward to. Shared subscriptions
//! (`$share/...`) are kept apart: a publish goes to their nodes only through the group pick.

use std::collections::HashMap;

/// One level of the route trie: the nodes whose filter ends here, and the deeper levels.
#[derive(Debug, Default)]
struct Level {
    nodes: Vec<usize>,
    children: HashMap<String, Level>,
}

/// Filters of other nodes per mountpoint; nodes are indices into the caller's list of peers.
#[derive(Debug, Default)]
pub struct RemoteRoutes {
    tries: HashMap<String, Level>,
    len: usize,
}

impl RemoteRoutes {
    /// Adds node `node`'s route on `filter` (already a valid filter; a `$share/` one is
    /// ignored here).
    pub fn add(&mut self, mountpoint: &str, filter: &str, node: usize) {
        if filter.starts_with("$share/") {
            return;
        }
        let mut level = self.tries.entry(mountpoint.to_owned()).or_default();
        for part in filter.split('/') {
            level = level.children.entry(part.to_owned()).or_default();
        }
        if !level.nodes.contains(&node) {
            level.nodes.push(node);
            self.len += 1;
        }
    }

    /// Number of (node, filter) routes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Adds to `out` (without repeating one) every node with a filter matching `topic`.
    pub fn matching(&self, mountpoint: &str, topic: &str, out: &mut Vec<usize>) {
        let Some(root) = self.tries.get(mountpoint) else {
            return;
        };
        let levels: Vec<&str> = topic.split('/').collect();
        walk(root, &levels, 0, topic.starts_with('$'), out);

        fn visit(level: &Level, out: &mut Vec<usize>) {
            for n in &level.nodes {
                if !out.contains(n) {
                    out.push(*n);
                }
            }
        }

        fn walk(level: &Level, levels: &[&str], depth: usize, dollar: bool, out: &mut Vec<usize>) {
            // MQTT: wildcards at the first level do not match topics starting with '$'.
            let wildcards = !(depth == 0 && dollar);
            if wildcards && let Some(hash) = level.children.get("#") {
                visit(hash, out);
            }
            let Some((first, rest)) = levels.split_first() else {
                visit(level, out);
                return;
            };
            if let Some(child) = level.children.get(*first) {
                walk(child, rest, depth + 1, dollar, out);
            }
            if wildcards && let Some(plus) = level.children.get("+") {
                walk(plus, rest, depth + 1, dollar, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::topic;

    fn nodes(r: &RemoteRoutes, mp: &str, t: &str) -> Vec<usize> {
        let mut out = Vec::new();
        r.matching(mp, t, &mut out);
        out.sort();
        out
    }

    #[test]
    fn nodes_are_found_once_per_publish() {
        let mut r = RemoteRoutes::default();
        r.add("", "a/+", 0);
        r.add("", "a/#", 0);
        r.add("", "a/b", 1);
        r.add("", "#", 2);
        r.add("mp", "a/b", 3);
        r.add("", "$share/g/a/b", 4);
        assert_eq!(r.len(), 5);
        assert_eq!(nodes(&r, "", "a/b"), vec![0, 1, 2]);
        assert_eq!(nodes(&r, "", "a"), vec![0, 2], "a/# matches its parent");
        assert_eq!(nodes(&r, "", "$SYS/x"), Vec::<usize>::new());
        assert_eq!(nodes(&r, "mp", "a/b"), vec![3]);
        assert_eq!(nodes(&r, "other", "a/b"), Vec::<usize>::new());
    }

    proptest! {
        // The trie agrees with the filter matcher the broker uses everywhere else.
        #[test]
        fn agrees_with_topic_matches(
            filters in proptest::collection::vec(topic::strategies::filter(), 1..8),
            name in topic::strategies::topic_name(),
        ) {
            let mut r = RemoteRoutes::default();
            for (i, f) in filters.iter().enumerate() {
                r.add("", f, i);
            }
            let expected: Vec<usize> = filters
                .iter()
                .enumerate()
                .filter(|(_, f)| !f.starts_with("$share/") && topic::matches(f, &name))
                .map(|(i, _)| i)
                .collect();
            prop_assert_eq!(nodes(&r, "", &name), expected);
        }
    }
}
