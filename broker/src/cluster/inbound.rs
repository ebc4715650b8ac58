//! The cluster listener (`listener.vmq.clustering`, VerneMQ's `vmq_cluster_com`): accepts the
//! links other nodes dial, checks that they know the cookie, and routes what they forward to
//! this node's subscribers only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::SystemTime;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::gate::Gate;
use super::link::{Identity, codec};
use super::takeover::Takeovers;
use super::tls::Stream;
use super::wire::{self, Body, Challenge, Frame, Hello, Proof};
use crate::engine::Engine;
use crate::store::message_from;

/// The longest the link from a peer pauses for one congested subscriber queue here.
const PACE_MAX: std::time::Duration = std::time::Duration::from_millis(100);

/// What arrived from peers.
#[derive(Debug, Default)]
pub struct InboundStats {
    /// Links accepted (handshake passed).
    pub links: AtomicU64,
    /// Links refused (bad handshake, wrong cookie or version).
    pub refused: AtomicU64,
    /// Bytes of frames read.
    pub bytes_in: AtomicU64,
    /// Publishes routed here.
    pub publishes_in: AtomicU64,
    /// Frames that did not decode (the link is closed).
    pub bad_frames: AtomicU64,
}

/// A node asking to join this node's cluster: its name and cluster listener.
#[derive(Debug)]
pub struct JoinRequest {
    /// Its `nodename`.
    pub node: String,
    /// Its cluster listener.
    pub addr: SocketAddr,
    /// Whether it wants this node's retained messages.
    pub retained: bool,
}

/// What an accepted link needs.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Where publishes go.
    pub engine: Arc<Engine>,
    /// This node, for the handshake.
    pub me: Identity,
    /// Counters.
    pub stats: Arc<InboundStats>,
    /// Where join requests go.
    pub joins: mpsc::Sender<JoinRequest>,
    /// Session claims and their answers.
    pub takeovers: Arc<Takeovers>,
    /// Peers this node pretends not to hear (fault injection).
    pub gate: Arc<Gate>,
}

/// Accepts links until `stop`.
pub async fn run(listener: TcpListener, rx: Receiver, stop: CancellationToken) {
    let tasks = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((_, from)) if rx.gate.blocks(from.ip()) => {}
            Ok((stream, from)) => {
                let (rx, stop) = (rx.clone(), stop.clone());
                tasks.spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let r = tokio::select! {
                        _ = stop.cancelled() => Ok(()),
                        r = serve(stream, from, &rx) => r,
                    };
                    if let Err(e) = r {
                        tracing::warn!(%from, "cluster link from {from}: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("cluster listener: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    tasks.close();
    tasks.wait().await;
}

/// One accepted link: the listener's half of the handshake, then frames until it closes.
async fn serve(tcp: TcpStream, from: SocketAddr, rx: &Receiver) -> Result<(), String> {
    let (engine, me, stats) = (&rx.engine, &rx.me, &rx.stats);
    let mut stream: Box<dyn Stream> = match &me.tls {
        Some(tls) => {
            match tokio::time::timeout(std::time::Duration::from_secs(5), tls.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    stats.refused.fetch_add(1, Relaxed);
                    return Err(e);
                }
                Err(_) => return Err("no TLS handshake within 5 s".into()),
            }
        }
        None => Box::new(tcp),
    };
    let mut frames = FramedRead::new(&mut stream, codec(4096));
    let hello: Hello =
        match tokio::time::timeout(std::time::Duration::from_secs(5), frames.next()).await {
            Ok(Some(Ok(f))) => wire::decode(&f, "handshake hello")?,
            Ok(Some(Err(e))) => return Err(format!("handshake: {e}")),
            Ok(None) => return Ok(()),
            Err(_) => return Err("no handshake within 5 s".into()),
        };
    let nonce = wire::nonce();
    let refused = (hello.version != wire::VERSION).then(|| {
        format!(
            "cluster protocol version {} here, {} there",
            wire::VERSION,
            hello.version
        )
    });
    let challenge = Challenge {
        node: me.node.to_string(),
        proof: wire::proof("listener", &me.cookie, &hello.nonce, &nonce),
        nonce: nonce.clone(),
        refused: refused.clone(),
    };
    drop(frames);
    stream
        .write_all(&wire::frame(&challenge))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    if let Some(why) = refused {
        stats.refused.fetch_add(1, Relaxed);
        return Err(format!("node {:?} refused: {why}", hello.node));
    }
    let mut frames = FramedRead::new(stream, codec(wire::MAX_FRAME));
    let proof: Proof = match frames.next().await {
        Some(Ok(f)) => wire::decode(&f, "handshake proof")?,
        _ => {
            stats.refused.fetch_add(1, Relaxed);
            return Err(format!(
                "node {:?} did not finish the handshake",
                hello.node
            ));
        }
    };
    let expected = wire::proof("dialler", &me.cookie, &nonce, &hello.nonce);
    if !wire::same(&proof.proof, &expected) {
        stats.refused.fetch_add(1, Relaxed);
        return Err(format!(
            "node {:?} does not know this node's distributed_cookie: refused",
            hello.node
        ));
    }
    stats.links.fetch_add(1, Relaxed);
    tracing::info!(peer = %hello.node, "cluster link accepted");
    let mut gate = rx.gate.watch();
    loop {
        let frame = tokio::select! {
            f = frames.next() => f,
            _ = gate.changed() => {
                if rx.gate.blocks(from.ip()) {
                    return Err(format!("link from {:?}: partitioned (fault injection)", hello.node));
                }
                continue;
            }
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| format!("link from {:?}: {e}", hello.node))?;
        stats.bytes_in.fetch_add(frame.len() as u64 + 4, Relaxed);
        let frame: Frame = match wire::decode(&frame, "frame") {
            Ok(f) => f,
            Err(e) => {
                stats.bad_frames.fetch_add(1, Relaxed);
                return Err(format!("link from {:?}: {e}", hello.node));
            }
        };
        match frame.body {
            Some(Body::Publish(p)) => {
                let Some(record) = p.message else {
                    stats.bad_frames.fetch_add(1, Relaxed);
                    return Err(format!(
                        "link from {:?}: a publish without a message",
                        hello.node
                    ));
                };
                let message =
                    message_from(record, (SystemTime::now(), tokio::time::Instant::now()))
                        .map_err(|e| format!("link from {:?}: {e}", hello.node))?;
                let message = Arc::new(message);
                if p.store_only {
                    if message.retain {
                        engine.retain(&p.mountpoint, message);
                    }
                    continue;
                }
                stats.publishes_in.fetch_add(1, Relaxed);
                if message.retain {
                    engine.retain(&p.mountpoint, message.clone());
                }
                let routed = engine.publish_from_peer(&p.mountpoint, &message, &p.groups);
                if let Some(congested) = routed.congested {
                    // A subscriber here drains slower than the peer sends: not reading the
                    // link for a moment pushes back on the peer (its publishers pause on the
                    // link), as a publisher's own connection does.
                    let _ = tokio::time::timeout(PACE_MAX, congested.drained()).await;
                }
            }
            Some(Body::Join(j)) => {
                let addr = j
                    .addr
                    .parse()
                    .map_err(|_| format!("join from {:?}: bad address {:?}", hello.node, j.addr))?;
                let _ = rx.joins.try_send(JoinRequest {
                    node: hello.node.clone(),
                    addr,
                    retained: j.retained,
                });
            }
            Some(Body::Claim(claim)) => {
                // Handing a session over waits for its connection to go: not on the reader.
                let (engine, takeovers, node) =
                    (rx.engine.clone(), rx.takeovers.clone(), hello.node.clone());
                tokio::spawn(async move { takeovers.claimed_by(&engine, &node, claim).await });
            }
            Some(Body::Claimed(answer)) => rx.takeovers.answered(answer),
            Some(Body::Online(online)) => {
                let (engine, takeovers, node, me) = (
                    rx.engine.clone(),
                    rx.takeovers.clone(),
                    hello.node.clone(),
                    rx.me.node.clone(),
                );
                tokio::spawn(async move {
                    takeovers
                        .resolve_duplicates(&engine, &me, &node, online)
                        .await
                });
            }
            // A newer peer's frame this node does not know: skipped.
            None => {}
        }
    }
    Ok(())
}
