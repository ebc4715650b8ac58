//! The link to one peer: one ordered TCP connection this node dials, carrying what it forwards
//! (VerneMQ's `vmq_cluster_node`). Publishes are appended to a bounded buffer and written by
//! one task in as few writes as they allow, so a publisher never waits for a peer: while the
//! peer is slow or unreachable the buffer fills up to `outgoing_clustering_buffer_size`, then
//! what does not fit is dropped and counted (`cluster_bytes_dropped`). A write that fails loses
//! what it carried (at most once across a link loss, as VerneMQ); those bytes are counted as
//! dropped too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use super::gate::Gate;
use super::tls::{Stream, Tls};
use super::wire::{self, Challenge, Hello, Proof};
use crate::engine::Backlog;

/// How long a dial and its handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes waiting on an up link beyond which publishers pause (at most half the buffer): the
/// peer is slower than the publishers, and waiting a moment loses nothing where dropping at
/// the buffer's end would.
const HIGH_WATER: usize = 1 << 20;

/// Who this node is, for handshakes.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `nodename`.
    pub node: Arc<str>,
    /// `distributed_cookie`.
    pub cookie: Arc<str>,
    /// TLS on the links (`listener.vmqs.clustering`), if configured.
    pub tls: Option<Arc<Tls>>,
}

/// A link's counters.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Whether the connection is up.
    pub up: AtomicBool,
    /// Bytes written to the peer.
    pub bytes_out: AtomicU64,
    /// Frames written to the peer.
    pub frames_out: AtomicU64,
    /// Bytes dropped: the buffer was full, or a write failed.
    pub bytes_dropped: AtomicU64,
    /// Frames dropped.
    pub frames_dropped: AtomicU64,
    /// Connections made.
    pub connects: AtomicU64,
}

/// What waits to be written.
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// The frames, back to back.
    pub(super) bytes: BytesMut,
    /// How many.
    pub(super) frames: u64,
}

/// The link to one peer.
#[derive(Debug)]
pub struct Link {
    /// The peer's `nodename`.
    pub peer: Arc<str>,
    addr: watch::Sender<Option<SocketAddr>>,
    pending: Mutex<Pending>,
    wake: Notify,
    /// Woken each time the writer takes what is pending (publishers pacing on the link).
    drained: Notify,
    /// Whether more than the high water mark waits (set by `send`, cleared by the writer).
    over_mark: AtomicBool,
    limit: usize,
    /// Counters.
    pub stats: LinkStats,
    stop: CancellationToken,
    gate: Arc<Gate>,
}

impl Link {
    /// A link to `peer` (not dialled until it has an address), buffering at most `limit`
    /// bytes.
    pub fn new(
        peer: Arc<str>,
        limit: usize,
        stop: CancellationToken,
        gate: Arc<Gate>,
    ) -> Arc<Link> {
        Arc::new(Link {
            peer,
            addr: watch::channel(None).0,
            pending: Mutex::default(),
            wake: Notify::new(),
            drained: Notify::new(),
            over_mark: AtomicBool::new(false),
            limit,
            stats: LinkStats::default(),
            stop,
            gate,
        })
    }

    /// Where the peer listens (from gossip); a change redials.
    pub fn set_addr(&self, addr: SocketAddr) {
        self.addr.send_if_modified(|a| {
            let changed = *a != Some(addr);
            *a = Some(addr);
            changed
        });
    }

    /// The peer's address, if known.
    pub fn addr(&self) -> Option<SocketAddr> {
        *self.addr.borrow()
    }

    /// Queues one encoded frame; returns false (and counts it) when the buffer is full.
    pub fn send(&self, frame: &[u8]) -> bool {
        {
            let mut p = self.pending.lock();
            if p.bytes.len() + frame.len() > self.limit {
                drop(p);
                self.stats
                    .bytes_dropped
                    .fetch_add(frame.len() as u64, Relaxed);
                self.stats.frames_dropped.fetch_add(1, Relaxed);
                return false;
            }
            p.bytes.extend_from_slice(frame);
            p.frames += 1;
            if p.bytes.len() > HIGH_WATER.min(self.limit / 2) {
                self.over_mark.store(true, Relaxed);
            }
        }
        self.wake.notify_one();
        true
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.pending.lock().bytes.len()
    }

    /// Takes everything pending (for the writer) and wakes the publishers pacing on it.
    pub(super) fn take(&self) -> Pending {
        let mut chunk = Pending::default();
        self.swap(&mut chunk);
        chunk
    }

    /// Swaps what is pending with `spare` (empty, its capacity kept for the next round) and
    /// wakes the publishers pacing on the link.
    fn swap(&self, spare: &mut Pending) {
        {
            let mut pending = self.pending.lock();
            std::mem::swap(&mut *pending, spare);
            // Under the lock: a send crossing the mark right after sets it again.
            self.over_mark.store(false, Relaxed);
        }
        self.drained.notify_waiters();
    }

    /// Whether publishers should pause: the link is up and more than its high water mark
    /// waits (a down link is not waited for: its buffer fills, then drops). No lock: `send`
    /// marks it, the writer's take clears it.
    pub fn congested(&self) -> bool {
        self.stats.up.load(Relaxed) && self.over_mark.load(Relaxed)
    }

    /// Stops the link's task.
    pub fn close(&self) {
        self.stop.cancel();
    }

    /// Dials, writes, redials after `reconnect` when the connection fails, until closed.
    pub async fn run(self: Arc<Self>, me: Identity, reconnect: Duration) {
        let mut addrs = self.addr.subscribe();
        loop {
            let addr = *addrs.borrow_and_update();
            if let Some(addr) = addr.filter(|a| !self.gate.blocks(a.ip())) {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, dial(addr, &me)).await {
                    Ok(Ok((stream, node))) if *node == *self.peer => {
                        self.stats.connects.fetch_add(1, Relaxed);
                        self.stats.up.store(true, Relaxed);
                        tracing::info!(peer = %self.peer, %addr, "cluster link up");
                        let why = self.serve(stream, addr, &mut addrs).await;
                        self.stats.up.store(false, Relaxed);
                        if self.stop.is_cancelled() {
                            return;
                        }
                        tracing::warn!(peer = %self.peer, %addr, "cluster link down: {why}");
                    }
                    Ok(Ok((_, node))) => tracing::warn!(
                        peer = %self.peer, %addr,
                        "cluster link: {addr} is node {node:?}, not {:?}", self.peer
                    ),
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %self.peer, %addr, "cluster link: {e}")
                    }
                    Err(_) => tracing::debug!(peer = %self.peer, %addr, "cluster link: timed out"),
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = addrs.changed() => {}
                _ = tokio::time::sleep(reconnect) => {}
            }
        }
    }

    /// Writes what is queued until the connection fails, the address changes or the link
    /// closes; says why it stopped.
    async fn serve(
        &self,
        stream: Box<dyn Stream>,
        addr: SocketAddr,
        addrs: &mut watch::Receiver<Option<SocketAddr>>,
    ) -> String {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut probe = [0u8; 1];
        let mut gate = self.gate.watch();
        // Two buffers taking turns: publishers append to one while the other is written, and
        // neither gives its capacity back.
        let mut chunk = Pending::default();
        loop {
            chunk.bytes.clear();
            chunk.frames = 0;
            self.swap(&mut chunk);
            if !chunk.bytes.is_empty() {
                let n = chunk.bytes.len() as u64;
                if let Err(e) = wr.write_all(&chunk.bytes).await {
                    self.stats.bytes_dropped.fetch_add(n, Relaxed);
                    self.stats.frames_dropped.fetch_add(chunk.frames, Relaxed);
                    return format!("write failed: {e}");
                }
                self.stats.bytes_out.fetch_add(n, Relaxed);
                self.stats.frames_out.fetch_add(chunk.frames, Relaxed);
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = self.stop.cancelled() => return "closed".into(),
                _ = addrs.changed() => return "the peer's address changed".into(),
                _ = gate.changed() => if self.gate.blocks(addr.ip()) {
                    return "partitioned (fault injection)".into();
                },
                // The listener never writes after the handshake: anything here is its close.
                r = rd.read(&mut probe) => return match r {
                    Ok(0) => "closed by the peer".into(),
                    Ok(_) => "the peer wrote after the handshake".into(),
                    Err(e) => format!("read failed: {e}"),
                },
            }
        }
    }
}

impl Backlog for Link {
    fn drained(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let wake = self.drained.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            if self.congested() {
                wake.await;
            }
        })
    }
}

/// Dials `addr` and runs the dialler's half of the handshake; returns the stream and the
/// peer's name.
pub async fn dial(addr: SocketAddr, me: &Identity) -> Result<(Box<dyn Stream>, String), String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut stream: Box<dyn Stream> = match &me.tls {
        Some(tls) => tls.connect(addr, tcp).await?,
        None => Box::new(tcp),
    };
    let nonce = wire::nonce();
    let hello = Hello {
        node: me.node.to_string(),
        nonce: nonce.clone(),
        version: wire::VERSION,
    };
    stream
        .write_all(&wire::frame(&hello))
        .await
        .map_err(|e| format!("cannot write to {addr}: {e}"))?;
    let challenge: Challenge = {
        let mut frames = FramedRead::new(&mut stream, codec(4096));
        let frame = frames
            .next()
            .await
            .ok_or_else(|| format!("{addr} closed the connection during the handshake"))?
            .map_err(|e| format!("handshake with {addr}: {e}"))?;
        wire::decode(&frame, "handshake challenge")?
    };
    if let Some(why) = challenge.refused {
        return Err(format!("{addr} refused the link: {why}"));
    }
    let expected = wire::proof("listener", &me.cookie, &nonce, &challenge.nonce);
    if !wire::same(&challenge.proof, &expected) {
        return Err(format!(
            "{addr} ({:?}) does not know this node's distributed_cookie",
            challenge.node
        ));
    }
    let proof = Proof {
        proof: wire::proof("dialler", &me.cookie, &challenge.nonce, &nonce),
    };
    stream
        .write_all(&wire::frame(&proof))
        .await
        .map_err(|e| format!("cannot write to {addr}: {e}"))?;
    Ok((stream, challenge.node))
}

/// The frame reader: 4-byte big-endian lengths, frames up to `max` bytes.
pub fn codec(max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max)
        .new_codec()
}
