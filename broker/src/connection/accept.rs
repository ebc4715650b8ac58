//! The CONNECT phase of a connection: reading CONNECT within the connect timeout, refusing it
//! (limits, bad client id, authentication, bad will) with the right return or reason code, or
//! attaching the session and answering CONNACK. What comes out is the connection's state,
//! ready to be served.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::time::timeout;
use tokio_util::codec::Framed;
use tracing::{debug, info, warn};

use super::{Arrival, Conn, Exit, Stream};
use crate::engine::Engine;
use crate::hooks::{
    AuthResult, ClientInfo, Hook, INVALID_CREDENTIALS, Notification, RegisterFailure,
    RegisterRequest,
};
use crate::metrics::Metrics;
use crate::mqtt::codec::CodecError;
use crate::mqtt::{
    ConnAck, ConnAckReason, Connect, DecodeError, MqttCodec, Packet, Properties, Protocol,
};

/// Initial capacity of a connection's read buffer.
const READ_BUFFER: usize = 512;

/// How much a connection writes into its buffer before it must write to the socket (a busy
/// subscriber's deliveries are sent this many bytes at a time, at most). Its buffer grows to
/// about twice this: 64 KiB was 10 % faster in a QoS 0 fan-out to 100 subscribers at 6 M msg/s,
/// and four times the memory per busy connection.
const WRITE_BATCH: usize = 16 * 1024;

/// How long a connection that is being turned away has to send the CONNECT we answer.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads CONNECT (within the connect timeout), applies the admission limits, and accepts the
/// client; `None` when the connection ended there.
pub(super) async fn open(
    stream: Stream,
    arrival: Arrival,
    ctx: super::Context,
) -> Option<Box<Conn>> {
    let engine = &ctx.engine;
    let Arrival {
        peer,
        mountpoint,
        admission,
        identity,
        policy,
    } = arrival;
    // A small initial read buffer: it grows for large packets, and idle clients stay cheap.
    let mut framed = Framed::with_capacity(
        stream,
        MqttCodec::new(engine.config().max_packet_size()),
        READ_BUFFER,
    );
    // The write buffer grows with what is written instead of starting at 8 KiB; it is
    // written out when the connection's loop has nothing more to add, or when it reaches
    // `WRITE_BATCH` (`with_capacity` made that the read buffer's small size: a subscriber
    // then wrote every sixth 64-byte message in a system call of its own).
    *framed.write_buffer_mut() = bytes::BytesMut::new();
    framed.set_backpressure_boundary(WRITE_BATCH);
    let wait = match &admission {
        Ok(_) => engine.config().connect_timeout,
        Err(_) => engine.config().connect_timeout.min(REFUSAL_TIMEOUT),
    };
    let mut connect = match timeout(wait, framed.next()).await {
        Ok(Some(Ok(Packet::Connect(c)))) => c,
        Ok(Some(Ok(other))) => {
            debug!(%peer, packet = other.name(), "first packet is not CONNECT; closing");
            Metrics::inc(&engine.metrics().mqtt_protocol_error);
            return None;
        }
        Ok(Some(Err(e))) => {
            refuse_undecodable_connect(&mut framed, engine, peer, e).await;
            return None;
        }
        Ok(None) => {
            debug!(%peer, "closed before CONNECT");
            return None;
        }
        Err(_) => {
            debug!(%peer, "no CONNECT within the connect timeout; closing");
            Metrics::inc(&engine.metrics().connections_connect_timeout);
            return None;
        }
    };
    Metrics::inc(&engine.metrics().mqtt_connect_received);
    let admitted = match admission {
        Ok(a) => a,
        Err(turned_away) => {
            use super::Refusal;
            let (counter, code) = match turned_away {
                Refusal::ListenerFull => (
                    &engine.metrics().connections_refused_listener_limit,
                    ConnAckReason::QuotaExceeded,
                ),
                Refusal::NodeFull => (
                    &engine.metrics().connections_refused_total_limit,
                    ConnAckReason::QuotaExceeded,
                ),
                Refusal::RateExceeded => (
                    &engine.metrics().connections_refused_rate_limit,
                    ConnAckReason::ConnectionRateExceeded,
                ),
            };
            Metrics::inc(counter);
            let _ = framed
                .send(&Packet::ConnAck(ConnAck {
                    session_present: false,
                    code,
                    properties: Properties::default(),
                }))
                .await;
            info!(%peer, refusal = ?turned_away, "connection refused by a limit");
            return None;
        }
    };
    if identity.is_some() {
        // use_identity_as_username: the certificate's name replaces what the client sent.
        connect.username = identity;
    }
    accept(framed, peer, mountpoint, &ctx, connect, admitted, policy).await
}

/// Answers a CONNECT that did not decode: CONNACK 0x01 for an unsupported protocol level,
/// otherwise the connection is just closed (the client's version is unknown).
async fn refuse_undecodable_connect(
    framed: &mut Framed<Stream, MqttCodec>,
    engine: &Engine,
    peer: SocketAddr,
    e: CodecError,
) {
    Metrics::inc(&engine.metrics().mqtt_protocol_error);
    warn!(%peer, error = %e, "bad CONNECT; closing");
    if let CodecError::Decode(DecodeError::UnsupportedProtocol { name, .. }) = &e
        && (name == "MQTT" || name == "MQIsdp")
    {
        let ack = Packet::ConnAck(ConnAck {
            session_present: false,
            code: ConnAckReason::UnsupportedProtocolVersion,
            properties: Properties::default(),
        });
        let _ = framed.send(&ack).await;
    }
}

/// Validates CONNECT, attaches the session, sends CONNACK.
async fn accept(
    mut framed: Framed<Stream, MqttCodec>,
    peer: SocketAddr,
    mountpoint: String,
    ctx: &super::Context,
    connect: Box<Connect>,
    admitted: super::Admitted,
    policy: super::ListenerPolicy,
) -> Option<Box<Conn>> {
    let engine = &ctx.engine;
    let p = connect.protocol;
    let config = &engine.config();
    let mut assigned = None;
    let refuse = |code: ConnAckReason| {
        Packet::ConnAck(ConnAck {
            session_present: false,
            code,
            properties: Properties::default(),
        })
    };
    let mut client_id = connect.client_id.clone();
    if client_id.is_empty() {
        if p == Protocol::V31 || (p == Protocol::V311 && !connect.clean_start) {
            let _ = framed
                .send(&refuse(ConnAckReason::ClientIdentifierNotValid))
                .await;
            debug!(%peer, "empty client id refused");
            return None;
        }
        client_id = generated_client_id();
        if p.is_v5() {
            assigned = Some(client_id.clone());
        }
    }
    if client_id.len() > engine.settings().max_client_id_size() {
        let code = ConnAckReason::ClientIdentifierNotValid;
        Metrics::inc(&engine.metrics().connections_refused_client_id_size);
        let _ = framed.send(&refuse(code)).await;
        debug!(%peer, "client id too long");
        return None;
    }
    let info = Arc::new(ClientInfo {
        mountpoint: mountpoint.clone(),
        client_id: client_id.as_str().into(),
        username: connect.username.clone(),
        peer,
        session_id: uuid::Uuid::new_v4().to_string().into(),
        protocol: p,
    });
    // Authentication: the auth_on_register chain decides; if no plugin does, anonymous access
    // (allow_anonymous) does.
    let hooks = engine.hooks();
    // As VerneMQ: anonymous access (global or the listener's) lets every client in without
    // asking the auth_on_register chain at all.
    let anonymous = engine.settings().allow_anonymous() || policy.allow_anonymous;
    let decision = if !anonymous && hooks.wants(Hook::AuthOnRegister) {
        let req = RegisterRequest {
            client: &info,
            password: connect.password.as_ref(),
            clean_start: connect.clean_start,
            properties: &connect.properties,
        };
        hooks.auth_on_register(&req).await
    } else {
        None
    };
    ctx.tracer.emit(&mountpoint, &client_id, || {
        format!(
            "MQTT RECV: CID: {client_id:?} CONNECT(p{}, c{}, k{}, u{:?})\nCalling auth_on_register({:?}, {client_id:?}, {:?})\n{}",
            p.level(),
            u8::from(connect.clean_start),
            connect.keep_alive,
            connect.username,
            peer,
            connect.username,
            crate::trace::outcome(false, decision.as_ref())
        )
    });
    let (failure, modifiers, why) = match decision {
        Some(AuthResult::Ok(_)) => (None, None, None),
        Some(AuthResult::OkWith(m, _)) => (None, Some(m), None),
        Some(AuthResult::Error(why)) if why.as_deref() == Some(INVALID_CREDENTIALS) => {
            (Some(RegisterFailure::InvalidCredentials), None, why)
        }
        Some(AuthResult::Error(why)) => (Some(RegisterFailure::NotAuthorized), None, why),
        Some(AuthResult::Next) | None if anonymous => (None, None, None),
        Some(AuthResult::Next) | None => (Some(RegisterFailure::NoMatchingHookFound), None, None),
    };
    if let Some(failure) = failure {
        // As VerneMQ: MQTT 3 hears "bad user name or password" (4) only for invalid
        // credentials and "not authorized" (5) for any other refusal; MQTT 5 hears 0x86 for
        // every refusal a plugin made.
        let code = match failure {
            RegisterFailure::InvalidCredentials => ConnAckReason::BadUsernameOrPassword,
            RegisterFailure::NotAuthorized if p.is_v5() => ConnAckReason::BadUsernameOrPassword,
            _ => ConnAckReason::NotAuthorized,
        };
        if hooks.wants(Hook::OnRegisterFailed) {
            hooks.notify(&Notification::RegisterFailed {
                client: &info,
                clean_session: connect.clean_start,
                reason: failure,
                reason_text: why.as_deref(),
            });
        }
        let _ = framed.send(&refuse(code)).await;
        info!(%peer, client_id, ?failure, why = why.as_deref().unwrap_or(""), "connection refused");
        return None;
    }
    // What auth_on_register changed: the connection goes on as the plugin said.
    let mut clean_start = connect.clean_start;
    let mut window_cap = None;
    let (mountpoint, info) = match modifiers {
        Some(m) => {
            let ignored = m.not_applied();
            if !ignored.is_empty() {
                debug!(%peer, client_id, ?ignored, "auth_on_register modifiers with no effect here");
            }
            if let Some(c) = m.clean_session {
                clean_start = c;
            }
            if let Some(max) = m.max_message_size.filter(|m| *m > 0) {
                framed.codec_mut().set_max_packet_size(max as usize);
            }
            window_cap = m.max_inflight_messages.filter(|m| *m > 0);
            let mut changed = (*info).clone();
            if let Some(mp) = m.mountpoint {
                changed.mountpoint = mp;
            }
            if let Some(id) = m.client_id.filter(|id| !id.is_empty()) {
                changed.client_id = id.into();
            }
            if m.username.is_some() {
                changed.username = m.username;
            }
            (changed.mountpoint.clone(), Arc::new(changed))
        }
        None => (mountpoint, info),
    };
    if let Some(w) = &connect.will
        && crate::topic::validate_name(&w.topic).is_err()
    {
        let _ = framed.send(&refuse(ConnAckReason::TopicNameInvalid)).await;
        return None;
    }

    let session_expiry = if p.is_v5() {
        match connect.properties.session_expiry_interval.unwrap_or(0) {
            u32::MAX => None,
            s => Some(Duration::from_secs(u64::from(s))),
        }
    } else if clean_start {
        Some(Duration::ZERO)
    } else {
        engine.settings().persistent_client_expiration()
    };
    let client_id = info.client_id.clone();
    let attachment = match engine.attach(&mountpoint, &client_id, clean_start).await {
        Ok(a) => a,
        Err(why) => {
            warn!(%peer, client_id = %client_id, %why, "session cannot be held here; connection refused");
            let _ = framed.send(&refuse(ConnAckReason::ServerUnavailable)).await;
            return None;
        }
    };
    // A resumed session keeps its session id (here, or carried over from another node); a
    // new session has the one minted for this connection.
    let resumed = attachment.slot.mailbox.session_id();
    let info = if attachment.session_present && !resumed.is_empty() {
        Arc::new(ClientInfo {
            session_id: resumed,
            ..(*info).clone()
        })
    } else {
        info
    };

    let mut properties = Properties::default();
    let mut keep_alive = connect.keep_alive;
    if p.is_v5() {
        // A v5 client is told to use a shorter keep-alive than it asked for (or one at all)
        // when max_keepalive caps it; a v3 client cannot be told and keeps its own.
        let max = config.max_keepalive;
        if max < u16::MAX && (keep_alive == 0 || keep_alive > max) {
            keep_alive = max;
            properties.server_keep_alive = Some(max);
        }
        properties.assigned_client_identifier = assigned;
        properties.receive_maximum = Some(config.receive_max_broker);
        properties.topic_alias_maximum = Some(config.topic_alias_max);
        if config.max_message_size > 0 {
            properties.maximum_packet_size = u32::try_from(config.max_message_size).ok();
        }
        if !config.retain_available {
            properties.retain_available = Some(0);
        }
    }
    let ack = Packet::ConnAck(ConnAck {
        session_present: attachment.session_present,
        code: ConnAckReason::Success,
        properties,
    });
    Metrics::inc(&engine.metrics().mqtt_connack_sent);
    let inflight_cap = match window_cap.map(usize::from) {
        Some(n) => n,
        None => match engine.settings().max_inflight_messages() {
            0 => usize::from(u16::MAX),
            n => n,
        },
    };
    let window = if p.is_v5() {
        inflight_cap.min(usize::from(
            connect.properties.receive_maximum.unwrap_or(u16::MAX),
        ))
    } else {
        inflight_cap
    };
    let mut conn = Box::new(Conn {
        engine: engine.clone(),
        tracer: ctx.tracer.clone(),
        framed,
        protocol: p,
        peer,
        mountpoint,
        client_id,
        info,
        slot: attachment.slot,
        state: attachment.state,
        window,
        client_max_packet: connect.properties.maximum_packet_size.map(|n| n as usize),
        client_alias_max: connect.properties.topic_alias_maximum.unwrap_or(0),
        out_aliases: HashMap::new(),
        in_aliases: HashMap::new(),
        session_expiry,
        connect_expiry_zero: session_expiry == Some(Duration::ZERO),
        kick: Some(attachment.kick),
        done: Some(attachment.done),
        will: connect.will.map(Box::new),
        keep_alive: (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500)),
        held: Vec::new(),
        hold_for: 0,
        pace: None,
        throttle: None,
        publish_auth_waits: false,
        _admitted: admitted,
        end_of_life: policy.max_lifetime.map(|d| tokio::time::Instant::now() + d),
        retry: config.retry_interval.filter(|_| !p.is_v5()),
    });
    conn.slot
        .mailbox
        .set_persistent(session_expiry != Some(Duration::ZERO));
    conn.persist_session(false);
    *conn.slot.mailbox.session_id.lock() = conn.info.session_id.clone();
    *conn.slot.info.lock() = Some(conn.info.clone());
    if conn.framed.send(&ack).await.is_err() {
        let will_msg = conn.will.take().map(|w| *w);
        conn.finish(Exit::Lost, will_msg).await;
        return None;
    }
    if hooks.wants(Hook::OnRegister) {
        hooks.notify(&Notification::Register {
            client: &conn.info,
            properties: &connect.properties,
        });
    }
    if hooks.wants(Hook::OnClientWakeup) {
        hooks.notify(&Notification::ClientWakeup { client: &conn.info });
    }
    debug!(peer = %conn.peer, client_id = %conn.client_id, protocol = ?p, session_present = attachment.session_present, "client connected");
    Some(conn)
}

/// A client id for a client that sent none.
fn generated_client_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "vmq-auto-{nanos:x}-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
