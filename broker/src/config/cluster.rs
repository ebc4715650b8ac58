//! The cluster's settings: VerneMQ's keys (`listener.vmq.clustering`, `distributed_cookie`,
//! `outgoing_clustering_buffer_size`) and ours for gossip timing (`cluster.*`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::values::{parse_duration, parse_flag, parse_size};

/// How this node takes part in a cluster. Without `listen` it is a single node: nothing is
/// bound, nothing is gossiped, and the engine keeps no route table for peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `listener.vmq.clustering = ip:port`: the node-to-node listener. Publishes travel over
    /// TCP on this address; gossip (liveness, routes) over UDP on the same address.
    pub listen: Option<SocketAddr>,
    /// `distributed_cookie` ("vmq"): a shared secret; a peer that cannot prove it knows the
    /// cookie is refused, and nodes with different cookies do not gossip with each other.
    pub cookie: String,
    /// `outgoing_clustering_buffer_size` (64 MiB): bytes held for one peer while its link is
    /// down or slow; beyond it, messages to that peer are dropped and counted.
    pub outgoing_buffer: usize,
    /// `cluster.gossip_interval` (ours, 100 ms): how often a node gossips.
    pub gossip_interval: Duration,
    /// `cluster.reconnect_interval` (ours, 1 s): how long a link waits before redialling.
    pub reconnect_interval: Duration,
    /// `cluster.takeover_timeout` (ours, 5 s): how long a connecting client's node waits for
    /// the other nodes to let go of its session.
    pub takeover_timeout: Duration,
    /// `allow_register_during_netsplit`, `allow_publish_during_netsplit`,
    /// `allow_subscribe_during_netsplit`, `allow_unsubscribe_during_netsplit` (all off): what a
    /// node that does not see a majority of its cluster still does.
    pub during_netsplit: DuringNetsplit,
    /// `cluster.fault_injection` (ours, off): enables `vmq-admin cluster partition` (tests).
    pub fault_injection: bool,
    /// `listener.vmqs.clustering` instead of `listener.vmq.clustering`: the links run over TLS
    /// with `listener.vmqs.certfile`, `keyfile`, `cafile`, `require_certificate`.
    pub tls: Option<ClusterTls>,
    /// Whether the listener came from `listener.vmqs.clustering`.
    vmqs: bool,
    /// The TLS files, whichever key came first.
    files: ClusterTls,
}

/// TLS on the cluster links: each node is the server of the links it accepts and the client of
/// those it dials, with the same certificate; peers are checked against `cafile`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterTls {
    /// This node's certificate chain (PEM), shown to peers on both sides of a link.
    pub certfile: Option<PathBuf>,
    /// Its key (PEM).
    pub keyfile: Option<PathBuf>,
    /// The CA (PEM) peers' certificates must chain to.
    pub cafile: Option<PathBuf>,
    /// Whether a dialling peer must show a certificate.
    pub require_certificate: bool,
}

/// What a node cut off from the majority of its cluster may still do (VerneMQ's
/// `allow_*_during_netsplit`; all off: it refuses them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DuringNetsplit {
    /// Accept CONNECTs.
    pub register: bool,
    /// Accept PUBLISHes.
    pub publish: bool,
    /// Accept SUBSCRIBEs.
    pub subscribe: bool,
    /// Accept UNSUBSCRIBEs.
    pub unsubscribe: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            listen: None,
            cookie: "vmq".into(),
            outgoing_buffer: 64 << 20,
            gossip_interval: Duration::from_millis(100),
            reconnect_interval: Duration::from_secs(1),
            takeover_timeout: Duration::from_secs(5),
            during_netsplit: DuringNetsplit::default(),
            fault_injection: false,
            tls: None,
            vmqs: false,
            files: ClusterTls::default(),
        }
    }
}

impl ClusterConfig {
    /// Settles what depends on several keys, once every line is read.
    pub(super) fn finish(&mut self) -> Result<(), String> {
        self.tls = None;
        if self.vmqs {
            if self.files.certfile.is_none() || self.files.keyfile.is_none() {
                return Err(
                    "listener.vmqs.clustering needs listener.vmqs.certfile and listener.vmqs.keyfile"
                        .into(),
                );
            }
            self.tls = Some(self.files.clone());
        }
        Ok(())
    }

    /// Applies one key; `Ok(false)` when it is not a cluster key.
    pub(super) fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "listener.vmq.clustering" | "listener.vmqs.clustering" => {
                let vmqs = key == "listener.vmqs.clustering";
                if self.listen.is_some() && vmqs != self.vmqs {
                    return Err(
                        "set one of listener.vmq.clustering and listener.vmqs.clustering (TLS)"
                            .into(),
                    );
                }
                self.vmqs = vmqs;
                self.listen =
                    Some(value.parse().map_err(|_| {
                        format!("expected ip:port (e.g. 0.0.0.0:44053), got {value:?}")
                    })?)
            }
            "listener.vmqs.certfile" => self.files.certfile = Some(PathBuf::from(value)),
            "listener.vmqs.keyfile" => self.files.keyfile = Some(PathBuf::from(value)),
            "listener.vmqs.cafile" => self.files.cafile = Some(PathBuf::from(value)),
            "listener.vmqs.require_certificate" => {
                self.files.require_certificate = parse_flag(value)?
            }
            "distributed_cookie" => {
                if value.is_empty() {
                    return Err("distributed_cookie must not be empty".into());
                }
                self.cookie = value.to_owned()
            }
            "outgoing_clustering_buffer_size" => {
                self.outgoing_buffer = parse_size(value)?;
                if self.outgoing_buffer < 1024 {
                    return Err("outgoing_clustering_buffer_size must be at least 1KB".into());
                }
            }
            "cluster.gossip_interval" => self.gossip_interval = positive(value)?,
            "cluster.reconnect_interval" => self.reconnect_interval = positive(value)?,
            "cluster.takeover_timeout" => self.takeover_timeout = positive(value)?,
            "cluster.fault_injection" => self.fault_injection = parse_flag(value)?,
            "allow_register_during_netsplit" => self.during_netsplit.register = parse_flag(value)?,
            "allow_publish_during_netsplit" => self.during_netsplit.publish = parse_flag(value)?,
            "allow_subscribe_during_netsplit" => {
                self.during_netsplit.subscribe = parse_flag(value)?
            }
            "allow_unsubscribe_during_netsplit" => {
                self.during_netsplit.unsubscribe = parse_flag(value)?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn positive(value: &str) -> Result<Duration, String> {
    parse_duration(value)?
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("expected a positive duration (e.g. 100ms), got {value:?}"))
}
