//! The routes of the other nodes, as gossiped: which nodes have a subscriber on which filter.
//! A publish asks it once for the set of nodes to forward to. Shared subscriptions
//! (`$share/<group>/<filter>`) are kept apart, by group: a publish goes to one of their nodes
//! only through the group pick.

use std::collections::HashMap;
use std::sync::Arc;

use crate::topic;

/// One level of the route trie: the nodes whose filter ends here, the share groups ending
/// here (the full `$share/...` filter, and a node with members), and the deeper levels.
#[derive(Debug, Default)]
struct Level {
    nodes: Vec<usize>,
    groups: Vec<(Arc<str>, usize)>,
    children: HashMap<String, Level>,
}

/// Filters of other nodes per mountpoint; nodes are indices into the caller's list of peers.
#[derive(Debug, Default)]
pub struct RemoteRoutes {
    tries: HashMap<String, Level>,
    /// The nodes of each share group, by (mountpoint, `$share/<group>/<filter>`).
    groups: HashMap<(String, Arc<str>), Vec<usize>>,
    len: usize,
}

impl RemoteRoutes {
    /// Adds node `node`'s route on `filter` (`$share/<group>/...` for a share group); an
    /// invalid filter is ignored.
    pub fn add(&mut self, mountpoint: &str, filter: &str, node: usize) {
        let Ok(parsed) = topic::parse_filter(filter) else {
            return;
        };
        let mut level = self.tries.entry(mountpoint.to_owned()).or_default();
        for part in parsed.filter.split('/') {
            level = level.children.entry(part.to_owned()).or_default();
        }
        let added = match parsed.group {
            None if !level.nodes.contains(&node) => {
                level.nodes.push(node);
                true
            }
            Some(_)
                if !level
                    .groups
                    .iter()
                    .any(|(k, n)| **k == *filter && *n == node) =>
            {
                let key: Arc<str> = filter.into();
                level.groups.push((key.clone(), node));
                self.groups
                    .entry((mountpoint.to_owned(), key))
                    .or_default()
                    .push(node);
                true
            }
            _ => false,
        };
        self.len += usize::from(added);
    }

    /// The nodes with members of the share group `group` (`$share/<group>/<filter>`).
    pub fn group_nodes(&self, mountpoint: &str, group: &str) -> &[usize] {
        self.groups
            .get(&(mountpoint.to_owned(), Arc::from(group)))
            .map_or(&[], Vec::as_slice)
    }

    /// Number of (node, filter) routes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Adds to `nodes` (without repeating one) every node with a filter matching `topic`, and
    /// to `groups` every (share group filter, node with members) matching it.
    pub fn matching(
        &self,
        mountpoint: &str,
        topic: &str,
        nodes: &mut Vec<usize>,
        groups: &mut Vec<(Arc<str>, usize)>,
    ) {
        let Some(root) = self.tries.get(mountpoint) else {
            return;
        };
        let levels: Vec<&str> = topic.split('/').collect();
        let mut out = Out { nodes, groups };
        walk(root, &levels, 0, topic.starts_with('$'), &mut out);

        struct Out<'a> {
            nodes: &'a mut Vec<usize>,
            groups: &'a mut Vec<(Arc<str>, usize)>,
        }

        fn visit(level: &Level, out: &mut Out<'_>) {
            for n in &level.nodes {
                if !out.nodes.contains(n) {
                    out.nodes.push(*n);
                }
            }
            out.groups.extend(level.groups.iter().cloned());
        }

        fn walk(level: &Level, levels: &[&str], depth: usize, dollar: bool, out: &mut Out<'_>) {
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
        r.matching(mp, t, &mut out, &mut Vec::new());
        out.sort();
        out
    }

    fn groups(r: &RemoteRoutes, mp: &str, t: &str) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        r.matching(mp, t, &mut Vec::new(), &mut out);
        let mut out: Vec<(String, usize)> =
            out.into_iter().map(|(k, n)| (k.to_string(), n)).collect();
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
        r.add("", "$share/g/a/b", 4);
        r.add("", "$share/g/a/+", 1);
        r.add("", "$share/h/#", 4);
        r.add("", "$share/bad", 4);
        assert_eq!(r.len(), 8);
        assert_eq!(nodes(&r, "", "a/b"), vec![0, 1, 2]);
        assert_eq!(
            groups(&r, "", "a/b"),
            vec![
                ("$share/g/a/+".to_owned(), 1),
                ("$share/g/a/b".to_owned(), 4),
                ("$share/h/#".to_owned(), 4)
            ]
        );
        assert_eq!(groups(&r, "", "x"), vec![("$share/h/#".to_owned(), 4)]);
        assert_eq!(r.group_nodes("", "$share/g/a/b"), &[4]);
        assert_eq!(r.group_nodes("", "$share/g/a/c"), &[] as &[usize]);
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
