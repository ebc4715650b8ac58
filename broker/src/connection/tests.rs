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
use crate::hooks::Hooks;
use crate::metrics::Metrics;
use crate::mqtt::{
    ConnAckReason, Connect, Disconnect, DisconnectReason, MqttCodec, Packet, Properties, Protocol,
};

type Client = Framed<tokio::io::DuplexStream, MqttCodec>;

fn engine() -> Arc<Engine> {
    let config = Config {
        allow_anonymous: true,
        ..Config::default()
    };
    Engine::new(
        config,
        Hooks::new(Vec::new()),
        Arc::new(Metrics::default()),
        None,
    )
}

/// Connects `client_id` (v5, clean start) with `keep_alive` seconds.
async fn connect(engine: &Arc<Engine>, client_id: &str, keep_alive: u16) -> Client {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let arrival = Arrival {
        peer: "127.0.0.1:1".parse().unwrap(),
        mountpoint: String::new(),
        admission: Ok(Box::new(())),
        identity: None,
    };
    let ctx = Context {
        engine: engine.clone(),
        tracer: Arc::default(),
    };
    tokio::spawn(run(Box::new(server), arrival, ctx));
    let mut c = Framed::new(client, MqttCodec::for_client(Protocol::V5, 1 << 20));
    c.send(&Packet::Connect(Box::new(Connect {
        protocol: Protocol::V5,
        clean_start: true,
        keep_alive,
        client_id: client_id.into(),
        username: None,
        password: None,
        will: None,
        properties: Properties::default(),
    })))
    .await
    .unwrap();
    match c.next().await {
        Some(Ok(Packet::ConnAck(a))) => assert_eq!(a.code, ConnAckReason::Success),
        other => panic!("no CONNACK: {other:?}"),
    }
    c
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
