//! Gossip (chitchat: scuttlebutt anti-entropy with phi-accrual failure detection, over UDP on
//! the cluster listener's address): who is alive, where each node's link listener is, and each
//! node's routes. Every node owns its keys and only writes its own:
//! - `link` = its cluster listener address;
//! - `r:<len(mountpoint)>:<mountpoint><filter>` = "" for each filter subscribed on it (one key
//!   per filter, never per client);
//! - `left` = "" once it has left the cluster;
//! - `leave:<node>` = `<generation>` when an operator on this node made that generation of
//!   `<node>` leave (a later start of it is a new generation and may join again).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use sha2::{Digest, Sha256};

use super::gate::{Gate, GatedUdp};

/// What gossip says about one node (the newest generation of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Its `nodename`.
    pub node: Arc<str>,
    /// Its generation (the start time, in ms, of the process gossiping for it).
    pub generation: u64,
    /// Whether the failure detector holds it alive.
    pub live: bool,
    /// Its cluster listener.
    pub link: Option<SocketAddr>,
    /// Its routes: (mountpoint, filter).
    pub routes: Vec<(String, String)>,
    /// Whether it said it left.
    pub left: bool,
    /// Nodes (and their generation) it made leave.
    pub evicts: Vec<(String, u64)>,
}

/// This node's gossip.
pub struct Gossip {
    handle: ChitchatHandle,
    me: ChitchatId,
    /// The routes this node advertises now.
    advertised: HashSet<(String, String)>,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip").field("me", &self.me).finish()
    }
}

/// The route key of (mountpoint, filter).
fn route_key(mountpoint: &str, filter: &str) -> String {
    format!("r:{}:{mountpoint}{filter}", mountpoint.len())
}

/// The (mountpoint, filter) of a route key, if it is one.
fn parse_route_key(key: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix("r:")?;
    let (len, rest) = rest.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let mountpoint = rest.get(..len)?;
    let filter = rest.get(len..)?;
    Some((mountpoint.to_owned(), filter.to_owned()))
}

impl Gossip {
    /// Starts gossiping on `bind` (UDP), telling peers to reach this node at `advertise`
    /// (gossip and link), with `seeds` to contact first.
    pub async fn start(
        node: &str,
        cookie: &str,
        bind: SocketAddr,
        advertise: SocketAddr,
        interval: Duration,
        seeds: Vec<SocketAddr>,
        gate: Arc<Gate>,
    ) -> Result<Gossip, String> {
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let me = ChitchatId::new(node, generation, advertise);
        // Nodes with different cookies gossip in different "clusters": they ignore each other.
        let cluster_id = format!("vmq-{}", &hex(&Sha256::digest(cookie.as_bytes()))[..16]);
        let config = ChitchatConfig {
            chitchat_id: me.clone(),
            cluster_id,
            gossip_interval: interval,
            listen_addr: bind,
            seed_nodes: seeds.iter().map(ToString::to_string).collect(),
            failure_detector_config: FailureDetectorConfig {
                // A heartbeat every gossip round: a silent node is suspected within a few
                // seconds, and never before an interval has passed.
                initial_interval: interval * 10,
                max_interval: Duration::from_secs(10),
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        let handle = chitchat::spawn_chitchat(
            config,
            vec![("link".to_owned(), advertise.to_string())],
            &GatedUdp(gate),
        )
        .await
        .map_err(|e| format!("cannot gossip on udp {bind}: {e}"))?;
        Ok(Gossip {
            handle,
            me,
            advertised: HashSet::new(),
        })
    }

    /// This process's generation.
    pub fn generation(&self) -> u64 {
        self.me.generation_id
    }

    /// Gossips once with `addr` now (a join).
    pub fn contact(&self, addr: SocketAddr) -> Result<(), String> {
        self.handle.gossip(addr).map_err(|e| e.to_string())
    }

    /// Makes this node advertise exactly `routes`.
    pub async fn advertise(&mut self, routes: Vec<(String, String)>) {
        let wanted: HashSet<(String, String)> = routes.into_iter().collect();
        if wanted == self.advertised {
            return;
        }
        let chitchat = self.handle.chitchat();
        let mut c = chitchat.lock().await;
        let state = c.self_node_state();
        for (mp, f) in self.advertised.difference(&wanted) {
            state.delete(&route_key(mp, f));
        }
        for (mp, f) in wanted.difference(&self.advertised) {
            state.set(route_key(mp, f), "");
        }
        drop(c);
        self.advertised = wanted;
    }

    /// Sets one of this node's own keys.
    pub async fn set(&self, key: &str, value: &str) {
        let chitchat = self.handle.chitchat();
        chitchat.lock().await.self_node_state().set(key, value);
    }

    /// A cheap fingerprint of everything [`Gossip::nodes`] would report: it changes when a
    /// node's state or liveness does.
    pub async fn fingerprint(&self) -> u64 {
        let chitchat = self.handle.chitchat();
        let c = chitchat.lock().await;
        let live: HashSet<&ChitchatId> = c.live_nodes().collect();
        let mut h = foldhash::quality::FixedState::with_seed(7).build_hasher();
        use std::hash::{BuildHasher, Hash, Hasher};
        for (id, state) in c.node_states() {
            id.hash(&mut h);
            state.max_version().hash(&mut h);
            live.contains(id).hash(&mut h);
        }
        h.finish()
    }

    /// Every other node gossip knows of (its newest generation), with what it says.
    pub async fn nodes(&self) -> Vec<NodeView> {
        let chitchat = self.handle.chitchat();
        let c = chitchat.lock().await;
        let live: HashSet<&ChitchatId> = c.live_nodes().collect();
        let mut newest: BTreeMap<&str, &ChitchatId> = BTreeMap::new();
        for id in c.node_states().keys() {
            if *id.node_id == *self.me.node_id {
                continue;
            }
            let e = newest.entry(&id.node_id).or_insert(id);
            if id.generation_id > e.generation_id {
                *e = id;
            }
        }
        newest
            .into_values()
            .filter_map(|id| {
                let state = c.node_state(id)?;
                let mut routes = Vec::new();
                let mut evicts = Vec::new();
                for (k, v) in state.key_values() {
                    if let Some(r) = parse_route_key(k) {
                        routes.push(r);
                    } else if let Some(n) = k.strip_prefix("leave:")
                        && let Ok(generation) = v.parse()
                    {
                        evicts.push((n.to_owned(), generation));
                    }
                }
                Some(NodeView {
                    node: id.node_id.clone(),
                    generation: id.generation_id,
                    live: live.contains(id),
                    link: state.get("link").and_then(|a| a.parse().ok()),
                    routes,
                    left: state.get("left").is_some(),
                    evicts,
                })
            })
            .collect()
    }

    /// Stops gossiping.
    pub async fn shutdown(self) {
        let _ = self.handle.shutdown().await;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_keys_round_trip_whatever_the_mountpoint_holds() {
        for (mp, f) in [
            ("", "a/+"),
            ("m:p", "x:y/#"),
            ("r:3:", "$share/g/t"),
            ("é", "é/é"),
        ] {
            assert_eq!(
                parse_route_key(&route_key(mp, f)),
                Some((mp.to_owned(), f.to_owned()))
            );
        }
        assert_eq!(parse_route_key("link"), None);
        assert_eq!(parse_route_key("r:9:ab"), None);
        assert_eq!(parse_route_key("r:x:ab"), None);
    }
}
