//! `auth_cache` (`specs/lua.md` 4, 6): ACLs a script stores for a client (normally from its
//! `auth_on_register`, after asking a database), which then decide that client's publishes,
//! subscribes and unsubscribes without calling any script. Keyed by (mountpoint, client id);
//! an entry goes when the client goes offline or away, or its session expires.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use foldhash::fast::RandomState;
use parking_lot::RwLock;

use super::data::Data;
use crate::topic;

/// One ACL of an entry.
#[derive(Clone, Debug, PartialEq)]
struct Acl {
    /// The filter, `%m`, `%u`, `%c` replaced (as whole levels); `None` if it was invalid.
    pattern: Option<String>,
    max_qos: u8,
    max_payload_size: usize,
    allowed_retain: bool,
    modifiers: Option<Data>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Entry {
    publish: Vec<Acl>,
    subscribe: Vec<Acl>,
}

/// What the cache says about a request.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// The client has no entry: the scripts decide.
    NoEntry,
    /// Not allowed.
    Refused,
    /// Allowed, with the matching ACL's modifiers if it has any.
    Allowed(Option<Data>),
}

/// Entries by mountpoint, then client id: a lookup borrows the client's strings, allocates
/// nothing, and readers (every publish of a cached client) do not wait for each other.
type Entries = HashMap<String, HashMap<String, Entry, RandomState>, RandomState>;

/// Shards of the cache, by client id: the sessions of different clients, on different
/// workers, do not share one lock's cache line on every publish.
const SHARDS: usize = 16;

/// A shard on its own cache line: its lock's counter, written by every reader, must not make
/// the other shards' lines bounce between cores.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(RwLock<Entries>);

/// The cache.
#[derive(Debug, Default)]
pub struct AuthCache {
    shards: [Shard; SHARDS],
    hasher: RandomState,
    len: AtomicUsize,
}

/// Most clients an auth cache holds; inserting beyond refuses (the client is then decided by
/// the scripts).
const MAX_CLIENTS: usize = 1_000_000;

fn number(d: Option<&Data>) -> Option<i64> {
    match d? {
        Data::Int(i) => Some(*i),
        Data::Num(n) => Some(n.round() as i64),
        _ => None,
    }
}

fn acls(list: &Data, mountpoint: &str, username: &str, client_id: &str) -> Vec<Acl> {
    list.items()
        .into_iter()
        .map(|acl| {
            let pattern = acl.field("pattern").and_then(Data::as_str).map(|p| {
                p.split('/')
                    .map(|level| match level {
                        "%m" => mountpoint,
                        "%u" => username,
                        "%c" => client_id,
                        other => other,
                    })
                    .collect::<Vec<_>>()
                    .join("/")
            });
            let pattern = pattern.filter(|p| {
                let ok = topic::validate_filter(p).is_ok();
                if !ok {
                    tracing::warn!(pattern = %p, "auth_cache: invalid ACL pattern: ignored");
                }
                ok
            });
            Acl {
                pattern,
                max_qos: number(acl.field("max_qos")).map_or(2, |q| q.clamp(0, 2) as u8),
                max_payload_size: number(acl.field("max_payload_size"))
                    .map_or(268_435_456, |n| n.max(0) as usize),
                allowed_retain: !matches!(acl.field("allowed_retain"), Some(Data::Bool(false))),
                modifiers: acl.field("modifiers").cloned(),
            }
        })
        .collect()
}

impl AuthCache {
    fn shard(&self, client_id: &str) -> &RwLock<Entries> {
        &self.shards[self.hasher.hash_one(client_id) as usize % SHARDS].0
    }

    /// Whether any client has an entry.
    pub fn is_empty(&self) -> bool {
        self.len.load(Relaxed) == 0
    }

    /// Stores a client's ACLs (replacing what it had).
    pub fn insert(
        &self,
        mountpoint: &str,
        client_id: &str,
        username: &str,
        publish: Option<&Data>,
        subscribe: Option<&Data>,
    ) -> bool {
        let entry = Entry {
            publish: publish
                .map(|p| acls(p, mountpoint, username, client_id))
                .unwrap_or_default(),
            subscribe: subscribe
                .map(|s| acls(s, mountpoint, username, client_id))
                .unwrap_or_default(),
        };
        let mut entries = self.shard(client_id).write();
        let known = entries
            .get(mountpoint)
            .is_some_and(|m| m.contains_key(client_id));
        if !known && self.len.load(Relaxed) >= MAX_CLIENTS {
            return false;
        }
        entries
            .entry(mountpoint.to_owned())
            .or_default()
            .insert(client_id.to_owned(), entry);
        if !known {
            self.len.fetch_add(1, Relaxed);
        }
        true
    }

    /// Forgets a client.
    pub fn remove(&self, mountpoint: &str, client_id: &str) {
        if self.is_empty() {
            return;
        }
        let mut entries = self.shard(client_id).write();
        let Some(clients) = entries.get_mut(mountpoint) else {
            return;
        };
        if clients.remove(client_id).is_some() {
            self.len.fetch_sub(1, Relaxed);
        }
        if clients.is_empty() {
            entries.remove(mountpoint);
        }
    }

    /// May this client publish this?
    pub fn publish(
        &self,
        mountpoint: &str,
        client_id: &str,
        topic: &str,
        qos: u8,
        size: usize,
        retain: bool,
    ) -> Decision {
        if self.is_empty() {
            return Decision::NoEntry;
        }
        let entries = self.shard(client_id).read();
        let Some(e) = entries.get(mountpoint).and_then(|m| m.get(client_id)) else {
            return Decision::NoEntry;
        };
        let found = e.publish.iter().find(|a| {
            a.pattern
                .as_deref()
                .is_some_and(|p| topic::matches(p, topic))
                && qos <= a.max_qos
                && size <= a.max_payload_size
                && (!retain || a.allowed_retain)
        });
        match found {
            Some(a) => Decision::Allowed(a.modifiers.clone()),
            None => Decision::Refused,
        }
    }

    /// May this client subscribe to all of these? Modifiers of the matches are concatenated.
    pub fn subscribe(&self, mountpoint: &str, client_id: &str, topics: &[(&str, u8)]) -> Decision {
        if self.is_empty() {
            return Decision::NoEntry;
        }
        let entries = self.shard(client_id).read();
        let Some(e) = entries.get(mountpoint).and_then(|m| m.get(client_id)) else {
            return Decision::NoEntry;
        };
        let mut changes: Vec<Data> = Vec::new();
        for (filter, qos) in topics {
            let found = e.subscribe.iter().find(|a| {
                a.pattern
                    .as_deref()
                    .is_some_and(|p| topic::matches(p, filter))
                    && *qos <= a.max_qos
            });
            match found {
                Some(a) => {
                    if let Some(m) = &a.modifiers {
                        changes.extend(m.items().into_iter().cloned());
                    }
                }
                None => return Decision::Refused,
            }
        }
        Decision::Allowed((!changes.is_empty()).then(|| Data::array(changes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(pattern: &str, extra: Vec<(&'static str, Data)>) -> Data {
        let mut f = vec![("pattern", Data::str(pattern))];
        f.extend(extra);
        Data::record(f)
    }

    #[test]
    fn acls_decide_with_substitution_limits_and_modifiers() {
        let c = AuthCache::default();
        assert_eq!(c.publish("", "c", "a", 0, 1, false), Decision::NoEntry);
        let publish = Data::array(vec![
            acl("users/%u/#", vec![("max_qos", Data::Int(1))]),
            acl(
                "small/%c",
                vec![
                    ("max_payload_size", Data::Int(3)),
                    ("allowed_retain", Data::Bool(false)),
                ],
            ),
            acl(
                "rw",
                vec![(
                    "modifiers",
                    Data::record(vec![("topic", Data::str("rewritten"))]),
                )],
            ),
        ]);
        let subscribe = Data::array(vec![acl("users/+/news", vec![])]);
        assert!(c.insert("", "c", "alice", Some(&publish), Some(&subscribe)));
        assert_eq!(
            c.publish("", "c", "users/alice/x", 1, 10, true),
            Decision::Allowed(None)
        );
        assert_eq!(
            c.publish("", "c", "users/alice/x", 2, 10, false),
            Decision::Refused
        );
        assert_eq!(
            c.publish("", "c", "users/bob/x", 0, 10, false),
            Decision::Refused
        );
        assert_eq!(
            c.publish("", "c", "small/c", 0, 3, false),
            Decision::Allowed(None)
        );
        assert_eq!(
            c.publish("", "c", "small/c", 0, 4, false),
            Decision::Refused
        );
        assert_eq!(c.publish("", "c", "small/c", 0, 3, true), Decision::Refused);
        assert!(matches!(
            c.publish("", "c", "rw", 0, 1, false),
            Decision::Allowed(Some(_))
        ));
        assert_eq!(
            c.subscribe("", "c", &[("users/x/news", 1)]),
            Decision::Allowed(None)
        );
        assert_eq!(
            c.subscribe("", "c", &[("users/x/news", 1), ("other", 0)]),
            Decision::Refused
        );
        c.remove("", "c");
        assert_eq!(
            c.publish("", "c", "users/alice/x", 1, 10, true),
            Decision::NoEntry
        );
    }
}
