//! The relay when the sidecar is away or stuck: MQTT traffic is never slowed, and every event
//! is accounted for as sent, dropped (with its reason) or still waiting in the backlog.

use std::sync::Arc;

use bytes::Bytes;
use rumqttc::QoS as RQoS;
use vmq_broker::hooks::Hook;
use vmq_broker::plugins::events_sidecar::DropReason;
use vmq_sidecar_sdk::Event;
use vmq_tests::broker::{relay_broker as broker, v4_client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_sidecar_never_slows_mqtt_and_every_event_is_accounted_for() {
    // Nothing listens on this port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (_server, addr, relay) = broker(
        port,
        "vmq_events_sidecar.hooks = on_publish\nvmq_events_sidecar.pool_size = 1\nvmq_events_sidecar.backlog_size = 10\n",
        vec![],
    )
    .await;
    let (mut sub, _) = v4_client(addr, "listener", true, |_| {}).await;
    sub.client
        .subscribe("absent/#", RQoS::AtMostOnce)
        .await
        .unwrap();
    sub.suback().await;
    let (publisher, _) = v4_client(addr, "talker", true, |_| {}).await;
    for k in 0..100 {
        publisher
            .client
            .publish("absent/x", RQoS::AtMostOnce, false, k.to_string())
            .await
            .unwrap();
    }
    for k in 0..100 {
        assert_eq!(sub.next_publish().await.payload, Bytes::from(k.to_string()));
    }
    let m = relay.metrics();
    assert_eq!(m.sent_count(Hook::OnPublish), 0);
    assert_eq!(
        m.dropped_count(Hook::OnPublish, DropReason::BacklogFull),
        90
    );
    assert_eq!(relay.backlog(), 10, "the rest waits for the sidecar");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_sidecar_does_not_block_mqtt_and_drops_are_counted() {
    // A sidecar whose handler never returns until the end: it stops reading.
    let server = vmq_sidecar_sdk::Server::bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port();
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    tokio::spawn(server.serve(move |_e: Event| {
        let g = g.clone();
        async move { g.notified().await }
    }));
    let (_server, addr, relay) = broker(
        port,
        "vmq_events_sidecar.hooks = on_publish,on_deliver\nvmq_events_sidecar.pool_size = 1\nvmq_events_sidecar.backlog_size = 100\n",
        vec![],
    )
    .await;
    let (mut sub, _) = v4_client(addr, "reader", true, |_| {}).await;
    sub.client
        .subscribe("slow/#", RQoS::AtMostOnce)
        .await
        .unwrap();
    sub.suback().await;
    let (publisher, _) = v4_client(addr, "writer", true, |_| {}).await;
    // In rounds, so the subscriber's own queue (max_online_messages) never overflows: what is
    // measured is the relay, not a slow MQTT subscriber.
    let n = 20_000;
    let payload = vec![b'x'; 200];
    for _ in 0..n / 100 {
        for _ in 0..100 {
            publisher
                .client
                .publish("slow/x", RQoS::AtMostOnce, false, payload.clone())
                .await
                .unwrap();
        }
        for _ in 0..100 {
            sub.next_publish().await;
        }
    }
    let m = relay.metrics();
    let dropped = m.dropped_count(Hook::OnPublish, DropReason::BacklogFull)
        + m.dropped_count(Hook::OnDeliver, DropReason::BacklogFull);
    assert!(dropped > 0, "the backlog filled and drops were counted");
    assert_eq!(
        m.total_sent() + dropped + relay.backlog() as u64,
        2 * n as u64,
        "every event accounted for"
    );
    gate.notify_waiters();
}
