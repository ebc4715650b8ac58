//! An ordered, lossless shutdown of the `vmq-broker` binary: on SIGTERM it disconnects its
//! clients (their gone/offline events are emitted), then writes out the events relay's backlog
//! for up to `vmq_events_sidecar.shutdown_timeout`, and counts whatever it could not write as
//! dropped with reason `shutdown` in its final log line. Every event is accounted for: received
//! by the sidecar, or counted.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::{Event, Incoming, QoS};
use support::{Logs, start_broker, terminate, v4_client, wait_with_timeout};
use tokio::io::AsyncReadExt;
use tokio_util::codec::Decoder;
use vmq_sidecar_sdk::{Event as SidecarEvent, EventCodec};

const CLIENTS: usize = 20;
const PUBLISHES: usize = 1000;
const SHUTDOWN_TIMEOUT_S: u64 = 2;

/// What the final log line of the relay says.
#[derive(Debug, Default)]
struct Totals {
    sent: u64,
    dropped_shutdown: u64,
    dropped_by_hook: BTreeMap<String, u64>,
}

fn totals(logs: &Logs) -> Totals {
    let lines = logs.lock().unwrap().clone();
    let line = lines
        .iter()
        .rev()
        .find(|l| l.contains("events relay") && l.contains("dropped_shutdown="))
        .unwrap_or_else(|| panic!("no final relay line in:\n{}", lines.join("\n")));
    let field = |name: &str| -> String {
        let at = line
            .find(&format!(" {name}="))
            .unwrap_or_else(|| panic!("{name} in {line}"));
        line[at + name.len() + 2..]
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_owned()
    };
    let by_hook = field("dropped_by_hook");
    Totals {
        sent: field("sent").parse().unwrap(),
        dropped_shutdown: field("dropped_shutdown").parse().unwrap(),
        dropped_by_hook: by_hook
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (h, n) = p.split_once(':').unwrap();
                (h.to_owned(), n.parse().unwrap())
            })
            .collect(),
    }
}

/// A sidecar that reads slowly (about 256 bytes per millisecond at best) until the broker
/// closes the connection, then decodes everything with the SDK's codec.
async fn slow_sidecar(listener: tokio::net::TcpListener) -> Vec<SidecarEvent> {
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut bytes = BytesMut::new();
    let mut buf = [0u8; 256];
    loop {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut codec = EventCodec::new();
    let mut events = Vec::new();
    // A stop in the middle of a write may leave a partial last frame: it was counted as
    // dropped by the broker, and is not an event here.
    while let Ok(Some(e)) = codec.decode(&mut bytes) {
        events.push(e);
    }
    events
}

/// SIGTERM; the broker must exit 0 within the relay's shutdown timeout (and the clients'
/// grace period); returns its logs.
async fn stop(broker: support::BrokerProcess) -> Logs {
    let logs = broker.logs();
    let stopping = Instant::now();
    terminate(&broker);
    let out = tokio::task::spawn_blocking(move || wait_with_timeout(broker))
        .await
        .unwrap();
    assert!(out.status.success(), "exit 0 after SIGTERM");
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(SHUTDOWN_TIMEOUT_S + 6),
        "stopped within the timeout: {took:?}"
    );
    logs
}

fn config(dir: &std::path::Path, sidecar_port: u16) -> std::path::PathBuf {
    let conf = dir.join("shutdown.conf");
    std::fs::write(
        &conf,
        format!(
            "listener.tcp.default = 127.0.0.1:0\nallow_anonymous = on\nmessage_store = off\n\
             plugins.vmq_events_sidecar = on\nvmq_events_sidecar.port = {sidecar_port}\n\
             vmq_events_sidecar.pool_size = 1\nvmq_events_sidecar.backlog_size = 1000000\n\
             vmq_events_sidecar.shutdown_timeout = {SHUTDOWN_TIMEOUT_S}s\n\
             vmq_events_sidecar.hooks = on_register,on_publish,on_message_drop,on_client_wakeup,on_client_offline,on_client_gone\n"
        ),
    )
    .unwrap();
    conf
}

/// 20 clients (10 clean, 10 persistent), each publishing enough to fill the relay's backlog,
/// all still connected when this returns.
async fn clients(port: &str) -> Vec<(rumqttc::AsyncClient, tokio::task::JoinHandle<()>)> {
    let mut out = Vec::new();
    for i in 0..CLIENTS {
        let clean = i % 2 == 0;
        let (client, mut eventloop) = v4_client(&format!("c{i}"), port, clean);
        // The event loop runs beside the publishes (the request queue is bounded); it says when
        // the last publish, QoS 1, is acknowledged: then every publish was handled.
        let (acked_tx, acked_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut acked_tx = Some(acked_tx);
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(Incoming::PubAck(_)) = event
                    && let Some(tx) = acked_tx.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        for n in 0..PUBLISHES {
            let qos = if n + 1 == PUBLISHES {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            };
            client
                .publish("nobody/listens", qos, false, vec![b'x'; 32])
                .await
                .unwrap();
        }
        tokio::time::timeout(support::WAIT, acked_rx)
            .await
            .expect("publishes acknowledged")
            .unwrap();
        out.push((client, task));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_slow_sidecar_accounts_for_every_event() {
    let dir = tempfile::tempdir().unwrap();
    // A small receive buffer (inherited by the accepted socket), so that what the kernel
    // holds for the slow reader stays small and the relay's own backlog fills.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let sidecar = socket.listen(16).unwrap();
    let sidecar_port = sidecar.local_addr().unwrap().port();
    let received = tokio::spawn(slow_sidecar(sidecar));
    let (broker, port) = start_broker(&config(dir.path(), sidecar_port));
    let connected = clients(&port).await;
    let logs = stop(broker).await;
    drop(connected);
    let events = tokio::time::timeout(support::WAIT, received)
        .await
        .expect("the sidecar sees the end of the stream")
        .unwrap();
    let t = totals(&logs);
    eprintln!("received {}, {t:?}", events.len());

    // Everything the broker counted as sent arrived, whole.
    assert_eq!(events.len() as u64, t.sent, "received = sent");
    // The sidecar was too slow for the timeout: the rest was counted, not lost silently.
    assert!(t.dropped_shutdown > 0, "some events were left: {t:?}");
    // Each client's last event is there: received, or counted as dropped.
    let mut gone = BTreeSet::new();
    let mut offline = BTreeSet::new();
    for e in &events {
        match e.hook() {
            "on_client_gone" => assert!(gone.insert(e.client_id().unwrap().to_owned())),
            "on_client_offline" => assert!(offline.insert(e.client_id().unwrap().to_owned())),
            _ => {}
        }
    }
    for id in &gone {
        let i: usize = id[1..].parse().unwrap();
        assert_eq!(i % 2, 0, "{id} is a clean session");
    }
    for id in &offline {
        let i: usize = id[1..].parse().unwrap();
        assert_eq!(i % 2, 1, "{id} is a persistent session");
    }
    let counted = |hook: &str| t.dropped_by_hook.get(hook).copied().unwrap_or(0);
    assert_eq!(
        gone.len() as u64 + counted("on_client_gone"),
        (CLIENTS / 2) as u64,
        "{t:?}"
    );
    assert_eq!(
        offline.len() as u64 + counted("on_client_offline"),
        (CLIENTS / 2) as u64,
        "{t:?}"
    );
    // And every publish: its on_publish and on_message_drop (no subscriber) events.
    let publishes = events.iter().filter(|e| e.hook() == "on_publish").count() as u64;
    assert_eq!(
        publishes + counted("on_publish"),
        (CLIENTS * PUBLISHES) as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_no_sidecar_counts_every_event_and_exits_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // A port with nobody listening.
    let port_free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sidecar_port = port_free.local_addr().unwrap().port();
    drop(port_free);
    let (broker, port) = start_broker(&config(dir.path(), sidecar_port));
    let connected = clients(&port).await;
    let logs = stop(broker).await;
    drop(connected);
    let t = totals(&logs);
    assert_eq!(t.sent, 0);
    let counted = |hook: &str| t.dropped_by_hook.get(hook).copied().unwrap_or(0);
    assert_eq!(counted("on_register"), CLIENTS as u64);
    assert_eq!(counted("on_client_gone"), (CLIENTS / 2) as u64);
    assert_eq!(counted("on_client_offline"), (CLIENTS / 2) as u64);
    assert_eq!(counted("on_publish"), (CLIENTS * PUBLISHES) as u64);
    let all: u64 = t.dropped_by_hook.values().sum();
    assert_eq!(t.dropped_shutdown, all, "every drop was at shutdown: {t:?}");
}
