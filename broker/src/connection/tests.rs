//! The connection's time-driven behaviour, on tokio's paused clock: no test here waits in real
//! time. A client speaks to `run` over an in-memory pipe.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::time::{Instant, timeout};
use tokio_util::codec::Framed;

use super::{Arrival, Context, run};
use crate::config::Config;
use crate::engine::Engine;
use crate::mqtt::{
    ConnAckReason, Connect, Disconnect, DisconnectReason, MqttCodec, Packet, Properties, Protocol,
};

type Client = Framed<tokio::io::DuplexStream, MqttCodec>;

fn engine() -> Arc<Engine> {
    engine_with(Config {
        allow_anonymous: true,
        ..Config::default()
    })
}

fn engine_with(config: Config) -> Arc<Engine> {
    Engine::for_tests(config)
}

/// How a test client connects: what its CONNECT says and what its listener allows.
struct Opening {
    protocol: Protocol,
    clean_start: bool,
    keep_alive: u16,
    will: Option<crate::mqtt::Will>,
    properties: Properties,
    policy: super::ListenerPolicy,
}

impl Default for Opening {
    fn default() -> Self {
        Opening {
            protocol: Protocol::V5,
            clean_start: true,
            keep_alive: 0,
            will: None,
            properties: Properties::default(),
            policy: super::ListenerPolicy::default(),
        }
    }
}

/// Runs a connection task on one end of an in-memory pipe and sends CONNECT (clean start) on
/// the other; returns the client and the CONNACK's reason.
async fn open_with(engine: &Arc<Engine>, client_id: &str, o: Opening) -> (Client, ConnAckReason) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    open_over(engine, Box::new(server), client, client_id, o).await
}

/// [`open_with`] over a pipe the caller made: `server` is the connection's end.
async fn open_over(
    engine: &Arc<Engine>,
    server: super::Stream,
    client: tokio::io::DuplexStream,
    client_id: &str,
    o: Opening,
) -> (Client, ConnAckReason) {
    let arrival = Arrival {
        peer: "127.0.0.1:1".parse().unwrap(),
        mountpoint: String::new(),
        admission: Ok(Box::new(())),
        identity: None,
        policy: o.policy,
    };
    let ctx = Context {
        engine: engine.clone(),
        tracer: Arc::default(),
    };
    tokio::spawn(run(server, arrival, ctx));
    let mut c = Framed::new(client, MqttCodec::for_client(o.protocol, 1 << 20));
    c.send(&Packet::Connect(Box::new(Connect {
        protocol: o.protocol,
        clean_start: o.clean_start,
        keep_alive: o.keep_alive,
        client_id: client_id.into(),
        username: None,
        password: None,
        will: o.will,
        properties: o.properties,
    })))
    .await
    .unwrap();
    match c.next().await {
        Some(Ok(Packet::ConnAck(a))) => (c, a.code),
        other => panic!("no CONNACK: {other:?}"),
    }
}

/// Connects `client_id` (v5, clean start) with `keep_alive` seconds; it must be accepted.
async fn connect(engine: &Arc<Engine>, client_id: &str, keep_alive: u16) -> Client {
    connect_with(
        engine,
        client_id,
        Opening {
            keep_alive,
            ..Opening::default()
        },
    )
    .await
}

/// [`open_with`], which must be accepted.
async fn connect_with(engine: &Arc<Engine>, client_id: &str, o: Opening) -> Client {
    let (c, code) = open_with(engine, client_id, o).await;
    assert_eq!(code, ConnAckReason::Success);
    c
}

/// Opens a connection through a listener with `policy` (v5, no keep-alive).
async fn open(
    engine: &Arc<Engine>,
    client_id: &str,
    policy: super::ListenerPolicy,
) -> (Client, ConnAckReason) {
    open_with(
        engine,
        client_id,
        Opening {
            policy,
            ..Opening::default()
        },
    )
    .await
}

#[tokio::test]
async fn a_resumed_session_keeps_its_session_id_and_a_clean_start_gets_a_new_one() {
    let engine = engine();
    let persistent = || Opening {
        clean_start: false,
        properties: Properties::from(crate::mqtt::PropertyFields {
            session_expiry_interval: Some(3600),
            ..Default::default()
        }),
        ..Opening::default()
    };
    let session_id = |e: &Arc<Engine>| {
        e.sessions()
            .into_iter()
            .find(|s| &*s.client_id == "p")
            .map(|s| s.mailbox.session_id().to_string())
            .unwrap()
    };
    let online = |e: &Arc<Engine>| e.is_online("", "p");
    let c = connect_with(&engine, "p", persistent()).await;
    let first = session_id(&engine);
    assert!(!first.is_empty());
    drop(c);
    while online(&engine) {
        tokio::task::yield_now().await;
    }
    let c = connect_with(&engine, "p", persistent()).await;
    assert_eq!(session_id(&engine), first, "resumed: the same session");
    drop(c);
    while online(&engine) {
        tokio::task::yield_now().await;
    }
    let _c = connect_with(&engine, "p", Opening::default()).await;
    assert_ne!(session_id(&engine), first, "clean start: a new session");
}

#[tokio::test(start_paused = true)]
async fn keep_alive_closes_a_silent_client_at_one_and_a_half_times_and_a_ping_resets_it() {
    let engine = engine();
    let mut c = connect(&engine, "k", 10).await;
    let start = Instant::now();
    // Silent for 10 s: still connected; a PINGREQ is answered and restarts the clock.
    assert!(timeout(Duration::from_secs(10), c.next()).await.is_err());
    c.send(&Packet::PingReq).await.unwrap();
    assert!(matches!(c.next().await, Some(Ok(Packet::PingResp))));
    let pinged = Instant::now();
    // 14 s after the ping: still there.
    assert!(timeout(Duration::from_secs(14), c.next()).await.is_err());
    assert!(engine.is_online("", "k"));
    // At 15 s (1.5 x 10 s) the broker says goodbye: keep-alive timeout.
    match timeout(Duration::from_secs(2), c.next()).await {
        Ok(Some(Ok(Packet::Disconnect(Disconnect { reason, .. })))) => {
            assert_eq!(reason, DisconnectReason::KeepAliveTimeout)
        }
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
    let waited = pinged.elapsed();
    assert!(
        waited >= Duration::from_secs(15) && waited < Duration::from_secs(16),
        "{waited:?} after the ping, {:?} in all",
        start.elapsed()
    );
    assert!(matches!(c.next().await, None | Some(Err(_))));
    // The session is gone (clean start).
    tokio::task::yield_now().await;
    assert_eq!(engine.session_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_client_without_keep_alive_is_never_timed_out() {
    let engine = engine();
    let mut c = connect(&engine, "forever", 0).await;
    assert!(
        timeout(Duration::from_secs(86_400), c.next())
            .await
            .is_err()
    );
    assert!(engine.is_online("", "forever"));
}

#[tokio::test(start_paused = true)]
async fn max_last_will_delay_caps_what_the_client_asked_for() {
    use crate::engine::{Subscriber, Subscription};
    let engine = engine_with(Config {
        allow_anonymous: true,
        max_last_will_delay: Some(Duration::from_secs(10)),
        ..Config::default()
    });
    // A watcher of the will topic.
    let watcher: Arc<str> = "watcher".into();
    let w = engine.attach("", &watcher, true).await.unwrap();
    engine.subscribe(
        "",
        "wills/#",
        Subscription {
            client_id: watcher,
            subscriber: Subscriber::Local(w.slot.mailbox.clone()),
            options: crate::mqtt::SubOptions::default(),
            id: None,
            acl: None,
        },
    );
    let will = crate::mqtt::Will {
        topic: "wills/c".into(),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: crate::mqtt::QoS::AtMostOnce,
        retain: false,
        properties: Properties::from(crate::mqtt::PropertyFields {
            will_delay_interval: Some(100),
            ..Default::default()
        }),
    };
    let session = Properties::from(crate::mqtt::PropertyFields {
        session_expiry_interval: Some(3600),
        ..Default::default()
    });
    let c = connect_with(
        &engine,
        "c",
        Opening {
            will: Some(will),
            properties: session,
            ..Opening::default()
        },
    )
    .await;
    // The socket goes without DISCONNECT: the will is due, after min(100 s, 10 s).
    drop(c);
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(w.slot.mailbox.len(), 0, "not before 10 s");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(w.slot.mailbox.len(), 1, "published at 10 s, not 100 s");
}

#[tokio::test(start_paused = true)]
async fn a_listener_may_let_anonymous_clients_in_whatever_allow_anonymous_says() {
    let engine = engine_with(Config::default());
    let (_, refused) = open(&engine, "a", super::ListenerPolicy::default()).await;
    assert_eq!(refused, ConnAckReason::NotAuthorized);
    let policy = super::ListenerPolicy {
        allow_anonymous: true,
        ..Default::default()
    };
    let (_c, accepted) = open(&engine, "b", policy).await;
    assert_eq!(accepted, ConnAckReason::Success);
}

#[tokio::test(start_paused = true)]
async fn max_connection_lifetime_closes_the_connection_when_it_is_up() {
    let engine = engine();
    let policy = super::ListenerPolicy {
        max_lifetime: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let (mut c, code) = open(&engine, "short-lived", policy).await;
    assert_eq!(code, ConnAckReason::Success);
    let start = Instant::now();
    assert!(timeout(Duration::from_secs(29), c.next()).await.is_err());
    match timeout(Duration::from_secs(2), c.next()).await {
        Ok(Some(Ok(Packet::Disconnect(d)))) => {
            assert_eq!(d.reason, DisconnectReason::MaximumConnectTime)
        }
        other => panic!("expected DISCONNECT 0xA0, got {other:?}"),
    }
    assert!(start.elapsed() >= Duration::from_secs(30));
}

/// A client of `protocol` subscribed at QoS 1 to `r`, and the message the engine routes to it.
async fn subscribed(engine: &Arc<Engine>, protocol: Protocol) -> (Client, crate::mqtt::Publish) {
    use crate::mqtt::{QoS, SubOptions, Subscribe};
    let id = format!("retry-{}", protocol.level());
    let mut c = connect_with(
        engine,
        &id,
        Opening {
            protocol,
            ..Opening::default()
        },
    )
    .await;
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            "r".into(),
            SubOptions {
                qos: QoS::AtLeastOnce,
                ..SubOptions::default()
            },
        )],
        properties: Properties::default(),
    }))
    .await
    .unwrap();
    assert!(matches!(c.next().await, Some(Ok(Packet::SubAck(_)))));
    let p = crate::mqtt::Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "r".into(),
        packet_id: 0,
        payload: bytes::Bytes::from_static(b"once"),
        properties: Properties::default(),
    };
    let message = Arc::new(crate::message::Message::from_publish(&p, "r".into(), None));
    engine.publish("", &message, false);
    match c.next().await {
        Some(Ok(Packet::Publish(p))) => {
            assert!(!p.dup);
            (c, p)
        }
        other => panic!("no PUBLISH: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn retry_interval_resends_unacknowledged_messages_to_mqtt3_clients_only() {
    let engine = engine_with(Config {
        allow_anonymous: true,
        retry_interval: Some(Duration::from_secs(20)),
        ..Config::default()
    });
    let (mut c, first) = subscribed(&engine, Protocol::V311).await;
    // Not acknowledged: sent again, marked DUP, within two intervals.
    match timeout(Duration::from_secs(41), c.next()).await {
        Ok(Some(Ok(Packet::Publish(p)))) => {
            assert!(p.dup);
            assert_eq!(p.packet_id, first.packet_id);
        }
        other => panic!("expected a DUP PUBLISH, got {other:?}"),
    }
    c.send(&Packet::PubAck(crate::mqtt::PubResp::ok(first.packet_id)))
        .await
        .unwrap();
    // Acknowledged: never again.
    assert!(timeout(Duration::from_secs(120), c.next()).await.is_err());

    // MQTT 5 forbids resending on a live connection: nothing comes.
    let (mut c5, _) = subscribed(&engine, Protocol::V5).await;
    assert!(timeout(Duration::from_secs(120), c5.next()).await.is_err());
}

/// A pipe end that counts the writes made to it.
struct CountingWrites {
    inner: tokio::io::DuplexStream,
    writes: Arc<std::sync::atomic::AtomicUsize>,
}

impl tokio::io::AsyncRead for CountingWrites {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountingWrites {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Deliveries queued for a subscriber go out together: 200 small messages in one or two
/// writes, not a write every few hundred bytes (a 512-byte write limit once made a busy
/// subscriber write every sixth message on its own).
#[tokio::test]
async fn queued_deliveries_go_out_in_few_writes() {
    use crate::mqtt::{QoS, SubOptions, Subscribe};
    let engine = engine();
    let (client, server) = tokio::io::duplex(1 << 20);
    let writes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = CountingWrites {
        inner: server,
        writes: writes.clone(),
    };
    let opening = Opening {
        protocol: Protocol::V311,
        ..Opening::default()
    };
    let (mut c, code) = open_over(&engine, Box::new(server), client, "busy", opening).await;
    assert_eq!(code, ConnAckReason::Success);
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![("busy/#".into(), SubOptions::default())],
        properties: Properties::default(),
    }))
    .await
    .unwrap();
    assert!(matches!(c.next().await, Some(Ok(Packet::SubAck(_)))));
    let before = writes.load(std::sync::atomic::Ordering::Relaxed);
    // Queued while the connection's task waits: it finds them all when it runs.
    for i in 0..200 {
        let p = crate::mqtt::Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: format!("busy/{i}"),
            packet_id: 0,
            payload: bytes::Bytes::from(vec![b'x'; 64]),
            properties: Properties::default(),
        };
        let message = Arc::new(crate::message::Message::from_publish(
            &p,
            p.topic.as_str().into(),
            None,
        ));
        assert_eq!(engine.publish("", &message, false).queued, 1);
    }
    for i in 0..200 {
        match c.next().await {
            Some(Ok(Packet::Publish(p))) => assert_eq!(p.topic, format!("busy/{i}")),
            other => panic!("no PUBLISH {i}: {other:?}"),
        }
    }
    let made = writes.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(made <= 2, "200 queued deliveries took {made} writes");
}
