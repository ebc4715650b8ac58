//! The message store across in-process restarts (graceful shutdown, then a new broker on the
//! same data directory): retained messages, subscriptions and queues come back, expiry keeps
//! counting while the broker is down, and a QoS 2 exchange resumes where it stopped.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use vmq_broker::Server;
use vmq_broker::metrics::Metrics;
use vmq_broker::mqtt::{Disconnect, Packet, Properties, Protocol, PubResp, QoS, SubOptions};
use vmq_tests::broker::{
    expect_publish, nothing_pending, publish, session, start_broker, subscribe,
};

async fn start_on(dir: &Path) -> (Server, SocketAddr) {
    start_broker(&format!(
        "message_store = on\npersistent_data_dir = {}\n",
        dir.display()
    ))
    .await
}

async fn restart(server: Server, dir: &Path) -> (Server, SocketAddr) {
    server.shutdown(Duration::from_secs(5)).await;
    start_on(dir).await
}

fn qos(q: QoS) -> SubOptions {
    SubOptions {
        qos: q,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
    }
}

fn expiry(secs: u32) -> Properties {
    Properties::from(vmq_broker::mqtt::PropertyFields {
        session_expiry_interval: Some(secs),
        ..Default::default()
    })
}

fn disconnect() -> Packet {
    Packet::Disconnect(Disconnect::default())
}

async fn expect(raw: &mut vmq_tests::broker::Raw, want: Packet) {
    assert_eq!(raw.recv().await, Some(want));
}

fn counter(server: &Server, pick: impl Fn(&Metrics) -> &vmq_broker::metrics::Counter) -> u64 {
    Metrics::get(pick(server.engine().metrics()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_subscriptions_and_queues_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start_on(dir.path()).await;
    let (mut sub, present) =
        session(addr, Protocol::V311, "keeper", false, Properties::default()).await;
    assert!(!present);
    sub.send(subscribe("a/#", qos(QoS::AtLeastOnce))).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    sub.send(disconnect()).await;
    assert_eq!(sub.recv().await, None);

    let (mut publisher, _) =
        session(addr, Protocol::V311, "pub", true, Properties::default()).await;
    for (id, (topic, payload)) in [
        ("r/1", "kept"),
        ("r/2", "gone"),
        ("r/2", ""),
        ("a/1", "while-offline"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = id as u16 + 1;
        let retain = topic.starts_with("r/");
        publisher
            .send(publish(topic, QoS::AtLeastOnce, id, retain, payload))
            .await;
        expect(&mut publisher, Packet::PubAck(PubResp::ok(id))).await;
    }
    drop(publisher);

    let (server, addr) = restart(server, dir.path()).await;
    assert_eq!(server.engine().retained_count(), 1, "r/2 was cleared");
    assert_eq!(server.engine().subscription_count(), 1);
    assert_eq!(counter(&server, |m| &m.store_sessions_recovered), 1);
    assert_eq!(counter(&server, |m| &m.store_messages_recovered), 1);
    assert_eq!(counter(&server, |m| &m.store_retained_recovered), 1);

    let (mut sub, present) =
        session(addr, Protocol::V311, "keeper", false, Properties::default()).await;
    assert!(present);
    let p = expect_publish(&mut sub).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("a/1", &b"while-offline"[..])
    );
    sub.send(Packet::PubAck(PubResp::ok(p.packet_id))).await;

    // The restored subscription routes new messages without a new SUBSCRIBE.
    let (mut publisher, _) =
        session(addr, Protocol::V311, "pub", true, Properties::default()).await;
    publisher
        .send(publish("a/2", QoS::AtMostOnce, 0, false, "live"))
        .await;
    let p = expect_publish(&mut sub).await;
    assert_eq!(&p.payload[..], b"live");

    let (mut other, _) = session(addr, Protocol::V5, "reader", true, Properties::default()).await;
    other.send(subscribe("r/#", qos(QoS::AtMostOnce))).await;
    assert!(matches!(other.recv().await, Some(Packet::SubAck(_))));
    let p = expect_publish(&mut other).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.retain),
        ("r/1", &b"kept"[..], true)
    );
    nothing_pending(&mut other).await;

    // Acknowledged: not delivered again after another restart.
    sub.send(disconnect()).await;
    let (server, addr) = restart(server, dir.path()).await;
    assert_eq!(counter(&server, |m| &m.store_messages_recovered), 0);
    let (mut sub, present) =
        session(addr, Protocol::V311, "keeper", false, Properties::default()).await;
    assert!(present);
    nothing_pending(&mut sub).await;
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_keeps_counting_while_the_broker_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start_on(dir.path()).await;
    for (id, secs) in [("short", 1), ("long", 3600)] {
        let (mut c, _) = session(addr, Protocol::V5, id, false, expiry(secs)).await;
        c.send(subscribe("t/#", qos(QoS::AtLeastOnce))).await;
        assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
        c.send(disconnect()).await;
        assert_eq!(c.recv().await, None);
    }
    server.shutdown(Duration::from_secs(5)).await;
    // The wall-clock time the short session has to outlive (this is what is tested).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (server, addr) = start_on(dir.path()).await;
    assert_eq!(counter(&server, |m| &m.sessions_expired), 1);
    assert_eq!(server.engine().session_count(), 1);
    assert_eq!(server.engine().subscription_count(), 1);
    let (_long, present) = session(addr, Protocol::V5, "long", false, expiry(3600)).await;
    assert!(present);
    let (_short, present) = session(addr, Protocol::V5, "short", false, expiry(1)).await;
    assert!(!present, "expired while the broker was down");
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos2_exchange_resumes_with_the_same_packet_id_after_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start_on(dir.path()).await;
    let (mut sub, _) = session(addr, Protocol::V5, "q2", false, expiry(u32::MAX)).await;
    sub.send(subscribe("q/#", qos(QoS::ExactlyOnce))).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let (mut publisher, _) = session(addr, Protocol::V5, "pub", true, Properties::default()).await;
    publisher
        .send(publish("q/1", QoS::ExactlyOnce, 7, false, "once"))
        .await;
    expect(&mut publisher, Packet::PubRec(PubResp::ok(7))).await;
    publisher.send(Packet::PubRel(PubResp::ok(7))).await;
    expect(&mut publisher, Packet::PubComp(PubResp::ok(7))).await;
    // Received, never acknowledged.
    let first = expect_publish(&mut sub).await;
    assert!(!first.dup);

    let (server, addr) = restart(server, dir.path()).await;
    let (mut sub, present) = session(addr, Protocol::V5, "q2", false, expiry(u32::MAX)).await;
    assert!(present);
    let again = expect_publish(&mut sub).await;
    assert!(again.dup);
    assert_eq!(again.packet_id, first.packet_id);
    assert_eq!(&again.payload[..], b"once");
    sub.send(Packet::PubRec(PubResp::ok(first.packet_id))).await;
    expect(&mut sub, Packet::PubRel(PubResp::ok(first.packet_id))).await;
    // PUBREL sent, PUBCOMP not: the next broker resends PUBREL, not the message.

    let (server, addr) = restart(server, dir.path()).await;
    let (mut sub, _) = session(addr, Protocol::V5, "q2", false, expiry(u32::MAX)).await;
    expect(&mut sub, Packet::PubRel(PubResp::ok(first.packet_id))).await;
    sub.send(Packet::PubComp(PubResp::ok(first.packet_id)))
        .await;
    nothing_pending(&mut sub).await;

    let (server, addr) = restart(server, dir.path()).await;
    assert_eq!(counter(&server, |m| &m.store_messages_recovered), 0);
    let (mut sub, _) = session(addr, Protocol::V5, "q2", false, expiry(u32::MAX)).await;
    nothing_pending(&mut sub).await;
    server.shutdown(Duration::from_secs(5)).await;
}

/// The in-memory backend (for embedding programs' tests) behaves like the file: a broker
/// restarted in the same process on the same backend finds its state again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_memory_backend_survives_an_in_process_restart() {
    use vmq_broker::store::memory::MemoryBackend;
    let backend = MemoryBackend::default();
    let config = || {
        vmq_broker::Config::parse(
            "listener.tcp.default = 127.0.0.1:0\nallow_anonymous = on\n",
            "t",
        )
        .unwrap()
    };
    let server = Server::start_with_backend(config(), Vec::new(), backend.clone())
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    let (mut sub, _) = session(addr, Protocol::V311, "mem", false, Properties::default()).await;
    sub.send(subscribe("m/#", qos(QoS::AtLeastOnce))).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    sub.send(disconnect()).await;
    assert_eq!(sub.recv().await, None);
    let (mut publisher, _) = session(addr, Protocol::V311, "p", true, Properties::default()).await;
    publisher
        .send(publish("m/1", QoS::AtLeastOnce, 1, true, "kept"))
        .await;
    expect(&mut publisher, Packet::PubAck(PubResp::ok(1))).await;
    server.shutdown(Duration::from_secs(5)).await;
    assert_eq!(backend.queued_len(), 1);

    let server = Server::start_with_backend(config(), Vec::new(), backend.clone())
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    assert_eq!(server.engine().retained_count(), 1);
    let (mut sub, present) =
        session(addr, Protocol::V311, "mem", false, Properties::default()).await;
    assert!(present);
    let p = expect_publish(&mut sub).await;
    assert_eq!(&p.payload[..], b"kept");
    sub.send(Packet::PubAck(PubResp::ok(p.packet_id))).await;
    nothing_pending(&mut sub).await;
    server.shutdown(Duration::from_secs(5)).await;
    assert_eq!(backend.queued_len(), 0, "acknowledged, so deleted");
}
