//! A ready sidecar server: bind, accept the broker's pooled connections, decode every frame and
//! hand each event to a [`Handler`] (or to a plain [`Stream`] with [`Server::into_stream`]).
//!
//! One task per connection: events of one connection are handled in order, and a connection that
//! sends garbage is closed on its own while the others keep delivering.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedParts, FramedRead};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};
use vmq_sidecar_proto::v1::*;

use crate::codec::{CodecError, DEFAULT_MAX_FRAME_LENGTH, FrameCodec, FrameError};
use crate::delivery::{BATCH_TYPE_URL, Sequence, Sequencing};
use crate::event::{Event, EventDecodeError, dispatch};
use crate::stats::Stats;
use crate::view::EventView;

/// Where the broker's relay connects by default (`vmq_events_sidecar.hostname` and `.port`).
pub const DEFAULT_ADDR: &str = "127.0.0.1:8890";

/// How long a graceful shutdown waits for each broker connection to finish sending.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The connection an event arrived on. The broker sends all events of one client on one
/// connection, so per-connection order is per-client order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The broker side's address.
    pub addr: SocketAddr,
    /// A number unique to this connection within the server's lifetime.
    pub id: u64,
}

/// What a sidecar does with events: one method per event type, each defaulting to
/// [`Handler::on_event`], which does nothing by default. Override the ones you care about, or
/// only `on_event` to see everything (including [`Event::Unknown`] types from a newer broker).
///
/// Every event first reaches [`Handler::on_event_view`] borrowed from its frame; by default it
/// is made into the owned [`Event`] there and passed on. A handler on the hot path overrides
/// `on_event_view` instead and reads the fields in place: nothing is allocated per event.
///
/// Methods of one connection are awaited in order; a slow handler slows only that connection
/// (and, through TCP backpressure, that connection's backlog in the broker).
///
/// A closure `Fn(Event) -> impl Future<Output = ()>` is a `Handler` too.
pub trait Handler: Send + Sync + 'static {
    /// Every event, borrowed from `frame` (strings and payloads point into it). The default
    /// makes the owned [`Event`] (its payload a slice of `frame`, not a copy) and calls the
    /// method named after its hook. Override it to skip that conversion; call
    /// `view.to_event_in(frame)` for the events you want to keep.
    fn on_event_view(
        &self,
        peer: &Peer,
        view: EventView<'_>,
        frame: &Bytes,
    ) -> impl Future<Output = ()> + Send {
        dispatch(self, peer, view.to_event_in(frame))
    }
    /// At least once (`vmq_events_sidecar.delivery = at_least_once` on the broker): every
    /// event with its number. The default passes it on to [`Handler::on_event_view`]. When this
    /// returns the event counts as handled and is acknowledged (the broker forgets it), unless
    /// the handler [acknowledges explicitly](Handler::acks_explicitly). `seq.resent` says the
    /// broker sent it before: [`crate::Dedup`] tells whether this sidecar handled it.
    fn on_sequenced(
        &self,
        peer: &Peer,
        seq: &Sequence,
        view: EventView<'_>,
        frame: &Bytes,
    ) -> impl Future<Output = ()> + Send {
        let _ = seq;
        self.on_event_view(peer, view, frame)
    }

    /// At least once: true if the handler acknowledges events itself with [`Sequence::ack`]
    /// (e.g. a sink committing every N events acknowledges the last of them after the commit);
    /// false (the default) to acknowledge each event when its handler returns.
    fn acks_explicitly(&self) -> bool {
        false
    }

    /// A client connected.
    fn on_register(&self, peer: &Peer, event: OnRegister) -> impl Future<Output = ()> + Send {
        self.on_event(peer, event.into())
    }
    /// A client's connection was refused.
    fn on_register_failed(
        &self,
        peer: &Peer,
        event: OnRegisterFailed,
    ) -> impl Future<Output = ()> + Send {
        self.on_event(peer, event.into())
    }
    /// A client published.
    fn on_publish(&self, peer: &Peer, event: OnPublish) -> impl Future<Output = ()> + Send {
        self.on_event(peer, event.into())
    }
    /// A client subscribed.
    fn on_subscribe(&self, peer: &Peer, event: OnSubscribe) -> impl Future<Output = ()> + Send {
        self.on_event(peer, event.into())
    }
    /// A client unsubscribed.
    fn on_unsubscribe(&self, peer: &Peer, event: OnUnsubscribe) -> impl Future<Output = ()> + Send {
        self.on_event(peer, event.into())
    }
    /// A message was sent to a subscriber.
    fn on_deliver(&self, peer: &Peer, event: OnDeliver) -> impl Future<Output = ()> + Send {
        self.on_event(peer, event.into())
    }
    /// A subscriber acknowledged a QoS 1 or 2 message.
    fn on_delivery_complete(
        &self,
        peer: &Peer,
        event: OnDeliveryComplete,
    ) -> impl Future<Output = ()> + Send {
        self.on_event(peer, event.into())
    }
    /// A message was queued for an offline client.
    fn on_offline_message(
        &self,
        peer: &Peer,
        event: OnOfflineMessage,
    ) -> impl Future<Output = ()> + Send {
        self.on_event(peer, event.into())
    }
    /// A message was dropped.
    fn on_message_drop(
        &self,
        peer: &Peer,
        event: OnMessageDrop,
    ) -> impl Future<Output = ()> + Send {
        self.on_event(peer, event.into())
    }
    /// A session attached to its queue.
    fn on_client_wakeup(
        &self,
        peer: &Peer,
        event: OnClientWakeUp,
    ) -> impl Future<Output = ()> + Send {
        self.on_event(peer, event.into())
    }
    /// A persistent session's client went away.
    fn on_client_offline(
        &self,
        peer: &Peer,
        event: OnClientOffline,
    ) -> impl Future<Output = ()> + Send {
        self.on_event(peer, event.into())
    }
    /// A clean session's client went away.
    fn on_client_gone(&self, peer: &Peer, event: OnClientGone) -> impl Future<Output = ()> + Send {
        self.on_event(peer, event.into())
    }
    /// An offline session expired.
    fn on_session_expired(
        &self,
        peer: &Peer,
        event: OnSessionExpired,
    ) -> impl Future<Output = ()> + Send {
        self.on_event(peer, event.into())
    }
    /// The catch-all: every event whose own method is not overridden, and unknown types.
    fn on_event(&self, peer: &Peer, event: Event) -> impl Future<Output = ()> + Send {
        let _ = (peer, event);
        async {}
    }
    /// A frame arrived complete but did not decode. It is already logged and counted; the
    /// connection goes on with the next frame.
    fn on_frame_error(&self, peer: &Peer, error: &FrameError) -> impl Future<Output = ()> + Send {
        let _ = (peer, error);
        async {}
    }
}

impl<F, Fut> Handler for F
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    fn on_event(&self, _peer: &Peer, event: Event) -> impl Future<Output = ()> + Send {
        self(event)
    }
}

/// A bound sidecar server, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    stats: Arc<Stats>,
    max_frame_length: usize,
    grace: Duration,
}

impl Server {
    /// Binds the listening socket (use [`DEFAULT_ADDR`] for the broker's default).
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<Server> {
        Ok(Self::from_listener(TcpListener::bind(addr).await?))
    }

    /// Serves on an already bound listener.
    pub fn from_listener(listener: TcpListener) -> Server {
        Server {
            listener,
            stats: Arc::default(),
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
            grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }

    /// How long a graceful shutdown waits for the broker to finish sending on each connection.
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Server {
        self.grace = grace;
        self
    }

    /// Refuses frames longer than `max` bytes (the connection that sends one is closed).
    pub fn with_max_frame_length(mut self, max: usize) -> Server {
        self.max_frame_length = max;
        self
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The server's counters, live.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Serves until the process ends.
    pub async fn serve<H: Handler>(self, handler: H) {
        self.serve_with_shutdown(handler, std::future::pending())
            .await
    }

    /// Serves until `shutdown` completes, then stops accepting and closes the sending side of
    /// every connection: the broker's relay sees it, stops writing to that connection (keeping
    /// further events in its backlog for the next sidecar) and closes its side, and this server
    /// handles every frame up to that end. Nothing sent is lost. A peer that does not close
    /// within the grace period (default [`DEFAULT_SHUTDOWN_GRACE`]) is cut off after the frames
    /// already received are handled. Returns when all connection tasks are done.
    pub async fn serve_with_shutdown<H: Handler>(
        self,
        handler: H,
        shutdown: impl Future<Output = ()>,
    ) {
        let Server {
            listener,
            stats,
            max_frame_length,
            grace,
        } = self;
        let handler = Arc::new(handler);
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut next_id = 0u64;
        tokio::pin!(shutdown);
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "sidecar listening");
        }
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, addr)) => {
                    next_id += 1;
                    let peer = Peer { addr, id: next_id };
                    let codec = FrameCodec::with_max_frame_length(max_frame_length)
                        .with_stats(stats.clone());
                    tasks.spawn(connection(
                        stream,
                        peer,
                        handler.clone(),
                        codec,
                        stats.clone(),
                        (cancel.clone(), grace),
                    ));
                }
                // Out of file descriptors and the like: wait a little instead of spinning.
                Err(e) => {
                    error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(listener);
        info!("sidecar shutting down");
        cancel.cancel();
        tasks.close();
        tasks.wait().await;
    }

    /// Serves in a background task and returns the events as one plain [`Stream`], in arrival
    /// order per connection. The channel between the two is bounded (`capacity` events), so a
    /// slow consumer slows the sockets down instead of growing memory. Dropping the stream
    /// shuts the server down. Must be called within a tokio runtime.
    pub fn into_stream(self, capacity: usize) -> EventStream {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stop = CancellationToken::new();
        let local_addr = self.local_addr().ok();
        let stats = self.stats();
        let forward = move |event: Event| {
            let tx = tx.clone();
            async move {
                // The receiver is gone only when the stream was dropped, i.e. shutting down.
                let _ = tx.send(event).await;
            }
        };
        tokio::spawn(self.serve_with_shutdown(forward, stop.clone().cancelled_owned()));
        EventStream {
            rx,
            local_addr,
            stats,
            _stop: stop.drop_guard(),
        }
    }
}

/// The events of a server as a [`Stream`]; see [`Server::into_stream`].
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<Event>,
    local_addr: Option<SocketAddr>,
    stats: Arc<Stats>,
    _stop: DropGuard,
}

impl EventStream {
    /// The address the server is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The server's counters, live.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

/// Reads one broker connection to its end.
async fn connection<H: Handler>(
    stream: TcpStream,
    peer: Peer,
    handler: Arc<H>,
    codec: FrameCodec,
    stats: Arc<Stats>,
    (cancel, grace): (CancellationToken, Duration),
) {
    Stats::add(&stats.connections_accepted, 1);
    Stats::add(&stats.connections_active, 1);
    debug!(peer = %peer.addr, id = peer.id, "connection opened");
    let (read, mut write) = stream.into_split();
    let mut frames = FramedRead::new(read, codec);
    let mut deadline: Option<tokio::time::Instant> = None;
    // At least once: the broker's numbering of this connection's events, and the
    // acknowledgements owed: sent every 256 events, and on a 100 ms tick for what is left (or
    // acknowledged later by the handler). One acknowledgement per read would cost a system
    // call on each side for every few events.
    let mut seqs = Sequencing::default();
    let mut ack_tick = tokio::time::interval(ACK_INTERVAL);
    ack_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Created once: a cancellation waiter registered and dropped per event costs more than
    // decoding a small one.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    let outcome = loop {
        let item = match deadline {
            None => tokio::select! {
                biased;
                () = &mut cancelled => {
                    // Half-close: the relay notices, stops writing here and closes its side.
                    send_acks(&mut seqs, &mut write, true).await;
                    let _ = write.shutdown().await;
                    deadline = Some(tokio::time::Instant::now() + grace);
                    continue;
                }
                item = frames.next() => item,
                _ = ack_tick.tick(), if seqs.active() => {
                    send_acks(&mut seqs, &mut write, true).await;
                    continue;
                }
            },
            Some(at) => match tokio::time::timeout_at(at, frames.next()).await {
                Ok(item) => item,
                Err(_) => {
                    break drain(frames.into_parts(), &*handler, &peer, &stats, &mut seqs).await;
                }
            },
        };
        match item {
            None => break Ok(()),
            Some(Ok(frame)) => {
                handle(&*handler, &peer, &frame, &stats, &mut seqs).await;
                if deadline.is_none() {
                    send_acks(&mut seqs, &mut write, false).await;
                }
            }
            Some(Err(fatal)) => break Err(fatal),
        }
    };
    Stats::sub(&stats.connections_active, 1);
    match outcome {
        Ok(()) => debug!(peer = %peer.addr, id = peer.id, "connection closed"),
        Err(e) => {
            Stats::add(&stats.connections_failed, 1);
            error!(peer = %peer.addr, id = peer.id, error = %e, "closing connection");
        }
    }
}

/// How often the acknowledgements owed are sent when fewer than 256 events went by.
const ACK_INTERVAL: Duration = Duration::from_millis(100);

/// At least once: sends the acknowledgement owed, if due. A failed write means the broker
/// is gone; what was not acknowledged it sends again on its next connection.
async fn send_acks(seqs: &mut Sequencing, write: &mut OwnedWriteHalf, eager: bool) {
    if seqs.ack_due(eager)
        && let Some(frame) = seqs.take_ack()
    {
        let _ = write.write_all(&frame).await;
    }
}

/// One frame: a `Batch` numbering the next ones (at least once), or an event, to the handler,
/// borrowed; or, if it does not decode, the error (logged, counted, and the connection goes
/// on).
async fn handle<H: Handler>(
    handler: &H,
    peer: &Peer,
    frame: &Bytes,
    stats: &Stats,
    seqs: &mut Sequencing,
) {
    let result = match EventView::decode_any(frame) {
        Ok(EventView::Unknown { type_url, value }) if type_url == BATCH_TYPE_URL => {
            if seqs.start_batch(value) {
                return;
            }
            Err(EventDecodeError::BadBatch)
        }
        other => other,
    };
    // Every frame a batch announced takes its number, even one that does not decode (it is
    // skipped, so it counts as handled).
    let seq = seqs.next();
    match result {
        Ok(view) => match seq {
            Some(seq) => {
                handler.on_sequenced(peer, &seq, view, frame).await;
                if !handler.acks_explicitly() {
                    seq.ack();
                }
            }
            None => handler.on_event_view(peer, view, frame).await,
        },
        Err(source) => {
            Stats::add(&stats.frames(peer.id as usize).decode_errors, 1);
            let bad = FrameError {
                length: frame.len(),
                source,
            };
            warn!(peer = %peer.addr, id = peer.id, error = %bad, "undecodable frame skipped");
            handler.on_frame_error(peer, &bad).await;
            // Skipped, so handled; a handler that acknowledges itself covers it with the next
            // event it acknowledges (acknowledging here would cover its unfinished ones too).
            if let Some(seq) = seq
                && !handler.acks_explicitly()
            {
                seq.ack();
            }
        }
    }
}

/// After the grace period: handles the complete frames already read, then stops.
async fn drain<H: Handler>(
    mut parts: FramedParts<OwnedReadHalf, FrameCodec>,
    handler: &H,
    peer: &Peer,
    stats: &Stats,
    seqs: &mut Sequencing,
) -> Result<(), CodecError> {
    while let Some(frame) = parts.codec.next_frame(&mut parts.read_buf)? {
        handle(handler, peer, &frame, stats, seqs).await;
    }
    Ok(())
}
