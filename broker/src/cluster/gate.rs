//! Fault injection: a node may be told to stop hearing and reaching some peers
//! (`vmq-admin cluster partition block=<node>,...` / `heal`, only with
//! `cluster.fault_injection = on`), as a network partition would: gossip to and from their
//! addresses is dropped and links to and from them are closed and refused. Run on both sides,
//! it makes a partition between broker processes on one machine, for tests.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpTransport};
use parking_lot::RwLock;
use tokio::sync::watch;

/// The peers this node pretends not to reach, by IP address.
#[derive(Debug)]
pub struct Gate {
    blocked: RwLock<HashSet<IpAddr>>,
    changed: watch::Sender<u64>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            blocked: RwLock::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl Gate {
    /// Whether `ip` is cut off.
    pub fn blocks(&self, ip: IpAddr) -> bool {
        let blocked = self.blocked.read();
        !blocked.is_empty() && blocked.contains(&ip)
    }

    /// Cuts these addresses off (on top of those already cut off).
    pub fn block(&self, ips: impl IntoIterator<Item = IpAddr>) {
        self.blocked.write().extend(ips);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Ends every cut.
    pub fn heal(&self) {
        self.blocked.write().clear();
        self.changed.send_modify(|v| *v += 1);
    }

    /// The addresses cut off now.
    pub fn blocked(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.blocked.read().iter().copied().collect();
        v.sort();
        v
    }

    /// Changes whenever the set does.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// chitchat's UDP transport, with the gate applied to what goes out and comes in.
pub struct GatedUdp(pub Arc<Gate>);

struct GatedSocket {
    inner: Box<dyn Socket>,
    gate: Arc<Gate>,
}

#[async_trait]
impl Transport for GatedUdp {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let inner = UdpTransport.open(listen_addr).await?;
        Ok(Box::new(GatedSocket {
            inner,
            gate: self.0.clone(),
        }))
    }
}

#[async_trait]
impl Socket for GatedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        if self.gate.blocks(to.ip()) {
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        self.inner.send(to, envelope).await
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let received = self.inner.recv().await?;
            if !self.gate.blocks(received.from_addr.ip()) {
                return Ok(received);
            }
        }
    }
}
