//! The connection state machine: one task per client connection. CONNECT (`accept.rs`), then a
//! loop over the socket, the session's mailbox, the keep-alive deadline and takeover (this
//! file), packets from the client (`inbound.rs`) and to it (`outbound.rs`); at the end, the
//! will (`will.rs`) and the session's fate, written to the store when it is persistent
//! (`persist.rs`). It speaks to the broker only through the [`Engine`] handle.

mod accept;
mod inbound;
mod outbound;
mod persist;
mod publish;
#[cfg(test)]
mod tests;
mod will;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use std::pin::Pin;
use tokio::sync::oneshot;

use tokio::time::{Instant, Sleep, sleep_until, timeout};
use tokio_util::codec::Framed;
use tracing::{debug, warn};

use crate::engine::Engine;
use crate::engine::{Congested, SessionSlot, SessionState};
use crate::hooks::{ClientInfo, DisconnectReason, Hook, Notification};
use crate::metrics::Metrics;
use crate::mqtt::codec::CodecError;
use crate::mqtt::{
    DecodeError, Disconnect, DisconnectReason as MqttDisconnect, MqttCodec, Packet, Properties,
    Protocol, Will,
};
use crate::trace::Tracer;

/// The longest a publisher's connection pauses for one congested subscriber queue.
const PACE_MAX: Duration = Duration::from_millis(100);

/// How long a client must have sent nothing before its connection gives its buffers back.
const QUIET: Duration = Duration::from_secs(1);

/// Any byte stream a client connects over: TCP, TLS, WebSocket.
pub trait ByteStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> ByteStream for T {}

/// A client's stream, whatever the transport.
pub type Stream = Box<dyn ByteStream>;

/// Why a new connection is turned away (it still gets a CONNACK saying so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its listener is at `max_connections`.
    ListenerFull,
    /// The node is at `max_connections`.
    NodeFull,
    /// More than `max_connect_rate` connections arrived this second.
    RateExceeded,
}

/// A connection's place under the listener's limits, whatever the listener made it of: held
/// for as long as the connection lives and given back when dropped.
pub type Admitted = Box<dyn std::any::Any + Send + Sync>;

/// What the listener knows of a new connection.
pub struct Arrival {
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener's mountpoint.
    pub mountpoint: String,
    /// Its place under the connection limits, or why there is none.
    pub admission: Result<Admitted, Refusal>,
    /// The username its TLS client certificate gives (`use_identity_as_username`).
    pub identity: Option<String>,
    /// The listener's settings for its connections.
    pub policy: ListenerPolicy,
}

/// What a listener says about each of its connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerPolicy {
    /// `allow_anonymous_override`: anonymous clients are let in here whatever
    /// `allow_anonymous` says.
    pub allow_anonymous: bool,
    /// `max_connection_lifetime`: the connection is closed after this long (v5: 0xA0).
    pub max_lifetime: Option<Duration>,
}

/// What every connection needs from the node: the engine, and the tracer that shows an
/// operator one client's packets.
#[derive(Debug, Clone)]
pub struct Context {
    /// The broker's core.
    pub engine: Arc<Engine>,
    /// Live traces (`vmq-admin trace client`).
    pub tracer: Arc<Tracer>,
}

/// The read buffer of a connection that sends in bursts: one read then takes many packets.
const BUSY_READ_BUFFER: usize = 8192;

/// Why a connection ended; decides the will and the v5 DISCONNECT sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// The client sent DISCONNECT (no will).
    Disconnected,
    /// The client sent DISCONNECT with reason 0x04: publish the will.
    DisconnectedWithWill,
    /// The socket closed or failed.
    Lost,
    /// The server closes with this v5 reason code.
    Closed(MqttDisconnect),
}

/// A connected client: the socket, the protocol it speaks and the session it is attached to.
pub(crate) struct Conn {
    engine: Arc<Engine>,
    tracer: Arc<Tracer>,
    framed: Framed<Stream, MqttCodec>,
    protocol: Protocol,
    peer: SocketAddr,
    mountpoint: String,
    client_id: Arc<str>,
    /// Who this connection is, as hooks see it.
    info: Arc<ClientInfo>,
    slot: Arc<SessionSlot>,
    state: Box<SessionState>,
    /// Client's receive maximum: at most this many unacknowledged QoS 1/2 sent to it.
    window: usize,
    /// Client's maximum packet size.
    client_max_packet: Option<usize>,
    /// Client's topic alias maximum (outbound aliases we may assign).
    client_alias_max: u16,
    /// Outbound aliases assigned.
    out_aliases: HashMap<Arc<str>, u16>,
    /// Inbound aliases set by the client.
    in_aliases: HashMap<u16, String>,
    /// v5 session expiry (None: never).
    session_expiry: Option<Duration>,
    /// Whether CONNECT asked for session expiry 0 (then DISCONNECT may not raise it).
    connect_expiry_zero: bool,
    /// Fires when another connection takes the session over.
    kick: Option<oneshot::Receiver<MqttDisconnect>>,
    /// Completed once the session is detached.
    done: Option<oneshot::Sender<()>>,
    /// The will, until it is published or discarded.
    will: Option<Box<Will>>,
    /// 1.5 x the keep-alive, if any.
    keep_alive: Option<Duration>,
    /// Acknowledgements waiting for the store to commit (durable mode).
    held: Vec<Packet>,
    /// The ticket the held acknowledgements wait for.
    hold_for: crate::store::Ticket,
    /// A subscriber queue this client's publishes congest: before reading more from the
    /// client, the connection waits (a bounded time) for it to drain. This is the flow control
    /// that keeps fast publishers from overrunning a subscriber that is reading.
    pace: Option<Congested>,
    /// How long to stop reading from the client, as an `auth_on_publish` said (`throttle`).
    throttle: Option<Duration>,
    /// The last publish had to wait for its `auth_on_publish` answer (a Lua state, an HTTP
    /// endpoint): publishes read together are then asked about together. While the plugins
    /// answer at once (a cache), each publish goes its own, cheaper way.
    publish_auth_waits: bool,
    /// Its place under the connection limits, given back when the connection ends.
    _admitted: Admitted,
    /// When the listener's `max_connection_lifetime` ends the connection.
    end_of_life: Option<Instant>,
    /// `retry_interval`, for MQTT 3 clients only.
    retry: Option<Duration>,
}

/// Completes when `timer` fires; never when there is none.
async fn fire(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Runs one client connection to its end.
///
/// The task of a connection holds little more than pointers: each phase (reading and checking
/// CONNECT, serving, finishing) is a boxed future of its own and the connection's state is
/// boxed too, so an idle connection costs what it uses, not the size of the largest phase.
pub async fn run(stream: Stream, arrival: Arrival, ctx: Context) {
    let metrics = ctx.engine.metrics().clone();
    Metrics::inc(&metrics.socket_open);
    if let Some(mut conn) = Box::pin(accept::open(stream, arrival, ctx)).await {
        let (exit, will_msg) = Box::pin(conn.serve()).await;
        Box::pin(conn.finish(exit, will_msg)).await;
    }
    Metrics::inc(&metrics.socket_close);
}

impl Conn {
    /// The main loop; returns why it ended and the will to consider.
    async fn serve(&mut self) -> (Exit, Option<Will>) {
        let mut kick = self.kick.take();
        // The rare and large steps are boxed, and only entered when they have work: what stays
        // in this (long-lived) future is the few waiters below.
        if !self.state.outgoing.is_empty() {
            Box::pin(self.resend_inflight()).await;
        }
        // Long-lived futures, created once: no timer or waiter registration per packet.
        let shutdown = self.engine.stopping().clone();
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let mut last_seen = Instant::now();
        let keep_alive = self.keep_alive;
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        // One timer for the keep-alive and for giving back the buffers of a client gone quiet.
        // The buffers that read CONNECT and wrote CONNACK go now: many clients then say
        // nothing for a long time, and one that talks gets new ones at once.
        let mut buffers_held = !self.release_buffers();
        let timer = sleep_until(
            keep_alive
                .map_or(far, |k| last_seen + k)
                .min(last_seen + QUIET),
        );
        tokio::pin!(timer);
        // The lifetime and retry timers are boxed and made only when used: an idle connection
        // carries a pointer for each, not a timer.
        let mut lifetime: Option<Pin<Box<Sleep>>> =
            self.end_of_life.map(|t| Box::pin(sleep_until(t)));
        // Retries: at each tick, what was already unacknowledged at the previous one (so for
        // at least one interval) is sent again.
        let retry_every = self.retry.unwrap_or(Duration::from_secs(86_400));
        let mut retry_timer: Option<Pin<Box<Sleep>>> = None;
        let mut retry_mark = self.state.next_seq;
        let mut retry_due = None;
        let exit = loop {
            if let Some(mark) = retry_due.take()
                && Box::pin(self.resend_older_than(mark)).await.is_err()
            {
                break Exit::Lost;
            }
            if !self.held.is_empty()
                && let Err(exit) = Box::pin(self.release_held()).await
            {
                break exit;
            }
            if self.slot.mailbox.take_reauthorize() {
                Box::pin(self.reauthorize()).await;
            }
            if !self.slot.mailbox.is_empty() && Box::pin(self.pump()).await.is_err() {
                break Exit::Lost;
            }
            if self.framed.flush().await.is_err() {
                break Exit::Lost;
            }
            if let Some(congested) = self.pace.take().filter(|c| !c.is_queue(&self.slot.mailbox)) {
                // Not reading the socket for a moment pushes back on the publisher through
                // TCP; a subscriber that stops reading is not waited for (its queue drops).
                Metrics::inc(&self.engine.metrics().publishers_paced);
                let _ = Box::pin(timeout(PACE_MAX, congested.drained())).await;
            }
            if let Some(pause) = self.throttle.take() {
                // An auth plugin throttles this publisher: nothing is read for a while (TCP
                // pushes back); deliveries to it still go out before and after.
                tokio::select! {
                    () = &mut cancelled => break Exit::Closed(MqttDisconnect::ServerShuttingDown),
                    () = tokio::time::sleep(pause) => {}
                }
            }
            let retrying = self.retry.is_some() && !self.state.outgoing.is_empty();
            if retrying && retry_timer.is_none() {
                retry_timer = Some(Box::pin(sleep_until(Instant::now() + retry_every)));
            }
            let room = self.state.outgoing.len() < self.window;
            // Only the read arm awaits, and not inside select!: the select's output (which can
            // hold a whole packet) would otherwise be kept in this future across the await.
            let batch = tokio::select! {
                code = async { kick.as_mut().expect("kick present").await }, if kick.is_some() => {
                    break Exit::Closed(code.unwrap_or(MqttDisconnect::SessionTakenOver));
                }
                () = &mut cancelled => break Exit::Closed(MqttDisconnect::ServerShuttingDown),
                () = fire(&mut retry_timer), if retrying => {
                    retry_due = Some(retry_mark);
                    retry_mark = self.state.next_seq;
                    if let Some(t) = &mut retry_timer {
                        t.as_mut().reset(Instant::now() + retry_every);
                    }
                    None
                }
                () = fire(&mut lifetime), if lifetime.is_some() => {
                    break Exit::Closed(MqttDisconnect::MaximumConnectTime);
                }
                () = &mut timer, if keep_alive.is_some() || buffers_held => {
                    // The timer is only moved when it fires: packets just note the time.
                    let now = Instant::now();
                    let due = keep_alive.map_or(far, |k| last_seen + k);
                    if due <= now {
                        debug!(client_id = %self.client_id, "keep-alive expired");
                        break Exit::Closed(MqttDisconnect::KeepAliveTimeout);
                    }
                    if buffers_held && last_seen + QUIET <= now {
                        buffers_held = !self.release_buffers();
                    }
                    timer.as_mut().reset(if buffers_held { due.min(last_seen + QUIET) } else { due });
                    None
                }
                () = self.slot.mailbox.notified(), if room => None,
                // Boxed, once per batch: handling packets takes a large, short-lived state that
                // an idle connection should not carry.
                item = self.framed.next() => Some(Box::pin(self.read_batch(item))),
            };
            let Some(batch) = batch else {
                continue;
            };
            last_seen = Instant::now();
            if let Some(exit) = batch.await {
                break exit;
            }
            if !buffers_held {
                // Talking again: give the buffers back once it is quiet again.
                buffers_held = true;
                let deadline = timer.deadline().min(last_seen + QUIET);
                timer.as_mut().reset(deadline);
            }
        };
        (exit, self.will.take().map(|w| *w))
    }

    /// Handles `item` and the packets already buffered after it (a bounded number), so their
    /// answers are flushed in one write. Returns how the connection ends, if it does.
    async fn read_batch(&mut self, first: Option<Result<Packet, CodecError>>) -> Option<Exit> {
        let mut item = first;
        let mut budget: usize = 64;
        loop {
            // An item already read after a run of publishes: handled next, whatever the budget.
            let mut read_ahead = None;
            let exit = match item {
                Some(Ok(Packet::Publish(p)))
                    if budget > 1
                        && self.publish_auth_waits
                        && self.engine.hooks().wants(Hook::AuthOnPublish) =>
                {
                    let mut run = vec![p];
                    while run.len() < budget {
                        match futures::FutureExt::now_or_never(self.framed.next()) {
                            Some(Some(Ok(Packet::Publish(p)))) => run.push(p),
                            Some(other) => {
                                read_ahead = Some(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    budget -= run.len() - 1;
                    self.process_publishes(run).await
                }
                other => self.process(other).await,
            };
            if let Some(exit) = exit {
                return Some(exit);
            }
            budget = budget.saturating_sub(1);
            if let Some(next) = read_ahead {
                item = next;
                continue;
            }
            // A congested subscriber ends the batch: the pause comes before the next packet,
            // so a queue overruns by at most one batch per publisher.
            if budget == 0 || self.pace.is_some() || self.throttle.is_some() {
                break;
            }
            match futures::FutureExt::now_or_never(self.framed.next()) {
                Some(next) => item = next,
                None => break,
            }
        }
        // Idle clients keep a small read buffer; one that sent several packets at once gets a
        // large one, so a busy publisher is not read a few hundred bytes at a time.
        let buffer = self.framed.read_buffer_mut();
        if budget < 60 && buffer.capacity() < BUSY_READ_BUFFER {
            buffer.reserve(BUSY_READ_BUFFER - buffer.len());
        }
        None
    }

    /// Frees the read and write buffers of a connection that has gone quiet, if they hold no
    /// partial packet: most clients of a broker are idle most of the time, and a buffer per
    /// idle client is most of what one costs. They are allocated again on the next packet.
    /// Returns whether they were freed.
    fn release_buffers(&mut self) -> bool {
        if !self.framed.read_buffer().is_empty() || !self.framed.write_buffer().is_empty() {
            return false;
        }
        *self.framed.read_buffer_mut() = bytes::BytesMut::new();
        *self.framed.write_buffer_mut() = bytes::BytesMut::new();
        self.framed.codec_mut().quiet();
        true
    }

    /// Handles one item from the socket; `Some` ends the connection.
    async fn process(&mut self, item: Option<Result<Packet, CodecError>>) -> Option<Exit> {
        match item {
            None => Some(Exit::Lost),
            Some(Err(CodecError::Io(e))) => {
                debug!(client_id = %self.client_id, error = %e, "socket error");
                Some(Exit::Lost)
            }
            Some(Err(CodecError::Decode(e))) => {
                if matches!(e, DecodeError::TooLarge { .. }) {
                    Metrics::inc(&self.engine.metrics().mqtt_invalid_msg_size_error);
                }
                Metrics::inc(&self.engine.metrics().mqtt_protocol_error);
                warn!(client_id = %self.client_id, peer = %self.peer, error = %e, "bad packet; closing");
                Some(Exit::Closed(e.disconnect_reason()))
            }
            Some(Ok(packet)) => {
                self.trace(|| {
                    format!(
                        "MQTT RECV: CID: {:?} {}",
                        self.client_id,
                        crate::trace::describe(&packet)
                    )
                });
                self.process_packet(packet).await
            }
        }
    }

    /// Handles publishes read one after the other, the plugins asked about them together.
    async fn process_publishes(&mut self, run: Vec<crate::mqtt::Publish>) -> Option<Exit> {
        for p in &run {
            self.trace(|| {
                format!(
                    "MQTT RECV: CID: {:?} {}",
                    self.client_id,
                    crate::trace::describe(&Packet::Publish(p.clone()))
                )
            });
        }
        let step = if run.len() == 1 {
            let p = run.into_iter().next().expect("one publish");
            self.handle(Packet::Publish(p)).await
        } else {
            self.on_publishes(run).await
        };
        match step {
            Ok(None) => None,
            Ok(Some(exit)) => Some(exit),
            Err(()) => Some(Exit::Lost),
        }
    }

    async fn process_packet(&mut self, packet: Packet) -> Option<Exit> {
        match self.handle(packet).await {
            Ok(None) => None,
            Ok(Some(exit)) => Some(exit),
            Err(()) => Some(Exit::Lost),
        }
    }

    /// Sends a v5 DISCONNECT if the server is the one closing, then detaches the session and
    /// deals with the will.
    pub(super) async fn finish(&mut self, exit: Exit, will_msg: Option<Will>) {
        // Acknowledgements still held go out once durable (a client that sent DISCONNECT
        // right after its publishes may still be reading).
        let _ = self.release_held().await;
        if let Exit::Closed(code) = exit
            && self.protocol.is_v5()
        {
            let _ = self
                .framed
                .send(&Packet::Disconnect(Disconnect {
                    reason: code,
                    properties: Properties::default(),
                }))
                .await;
        }
        let _ = self.framed.close().await;
        if self.session_expiry != Some(Duration::ZERO) {
            self.persist_session(true);
        }
        let state = std::mem::take(&mut self.state);
        let send_will = !matches!(exit, Exit::Disconnected);
        let engine = self.engine.clone();
        let persistent = self.session_expiry != Some(Duration::ZERO);
        let hooks = engine.hooks();
        let hook = if persistent {
            Hook::OnClientOffline
        } else {
            Hook::OnClientGone
        };
        if hooks.wants(hook) {
            let reason = match exit {
                Exit::Disconnected | Exit::DisconnectedWithWill => {
                    DisconnectReason::NormalDisconnect
                }
                Exit::Lost => DisconnectReason::TcpClosed,
                Exit::Closed(MqttDisconnect::SessionTakenOver) => {
                    DisconnectReason::SessionTakenOver
                }
                Exit::Closed(MqttDisconnect::KeepAliveTimeout) => {
                    DisconnectReason::KeepAliveTimeout
                }
                Exit::Closed(MqttDisconnect::ServerShuttingDown) => {
                    DisconnectReason::AdministrativeAction
                }
                Exit::Closed(MqttDisconnect::ReceiveMaximumExceeded) => {
                    DisconnectReason::ReceiveMaxExceeded
                }
                Exit::Closed(_) => DisconnectReason::ProtocolError,
            };
            hooks.notify(&if persistent {
                Notification::ClientOffline {
                    client: &self.info,
                    reason,
                }
            } else {
                Notification::ClientGone {
                    client: &self.info,
                    reason,
                }
            });
        }
        engine.detach(&self.slot, state, self.session_expiry);
        if let Some(w) = will_msg.filter(|_| send_will) {
            let delay =
                Duration::from_secs(u64::from(w.properties.will_delay_interval.unwrap_or(0)));
            let delay = match self.session_expiry {
                Some(expiry) => delay.min(expiry),
                None => delay,
            };
            let delay = match engine.config().max_last_will_delay {
                Some(max) => delay.min(max),
                None => delay,
            };
            will::schedule_will(&engine, &self.slot, &w, delay);
        }
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
        debug!(client_id = %self.client_id, ?exit, "client disconnected");
    }
}
