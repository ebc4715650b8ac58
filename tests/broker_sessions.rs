//! Subscription options, flow control, queue limits, session expiry and mountpoints, driven
//! by a raw MQTT client so every field on the wire can be checked.

use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use tokio::time::Instant;
use vmq_broker::metrics::Metrics;
use vmq_broker::mqtt::{
    Disconnect, DisconnectReason, Packet, Properties, Protocol, PubResp, QoS, SubOptions,
};
use vmq_tests::WAIT;
use vmq_tests::broker::{
    expect_publish, nothing_pending, publish, session, start_broker, subscribe,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_is_downgraded_to_the_granted_maximum() {
    let (_s, addr) = start_broker("").await;
    let (mut sub, _) = session(addr, Protocol::V311, "low", true, Properties::default()).await;
    sub.send(subscribe(
        "d/#",
        SubOptions {
            qos: QoS::AtMostOnce,
            ..Default::default()
        },
    ))
    .await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let (mut publisher, _) =
        session(addr, Protocol::V311, "high", true, Properties::default()).await;
    publisher
        .send(publish("d/1", QoS::ExactlyOnce, 5, false, "x"))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubRec(_))));
    let p = expect_publish(&mut sub).await;
    assert_eq!(p.qos, QoS::AtMostOnce);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_retain_as_published_and_retain_handling() {
    let (_s, addr) = start_broker("").await;
    let (mut c, _) = session(addr, Protocol::V5, "opts", true, Properties::default()).await;
    // no local: own publishes are not echoed.
    c.send(subscribe(
        "nl/#",
        SubOptions {
            qos: QoS::AtLeastOnce,
            no_local: true,
            ..Default::default()
        },
    ))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c.send(publish("nl/1", QoS::AtMostOnce, 0, false, "mine"))
        .await;
    nothing_pending(&mut c).await;

    // retain as published: a live retained publish keeps its flag.
    let (mut other, _) = session(addr, Protocol::V5, "other", true, Properties::default()).await;
    c.send(subscribe(
        "rap/#",
        SubOptions {
            qos: QoS::AtMostOnce,
            retain_as_published: true,
            ..Default::default()
        },
    ))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    other
        .send(publish("rap/1", QoS::AtMostOnce, 0, true, "kept"))
        .await;
    let p = expect_publish(&mut c).await;
    assert!(p.retain, "retain as published");

    // retain handling 2: no retained messages on subscribe; 1: only for a new subscription.
    c.send(subscribe(
        "rap/#",
        SubOptions {
            retain_handling: 2,
            ..Default::default()
        },
    ))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    nothing_pending(&mut c).await;
    c.send(subscribe(
        "rap/#",
        SubOptions {
            retain_handling: 1,
            ..Default::default()
        },
    ))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    nothing_pending(&mut c).await;
    c.send(subscribe(
        "rap/+",
        SubOptions {
            retain_handling: 1,
            ..Default::default()
        },
    ))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    let p = expect_publish(&mut c).await;
    assert_eq!((p.topic.as_str(), p.retain), ("rap/1", true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_topic_aliases_up_to_the_clients_maximum() {
    let (_s, addr) = start_broker("").await;
    let props = Properties::from(vmq_broker::mqtt::PropertyFields {
        topic_alias_maximum: Some(1),
        ..Default::default()
    });
    let (mut c, _) = session(addr, Protocol::V5, "aliased", true, props).await;
    c.send(subscribe("al/#", SubOptions::default())).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    let (mut publisher, _) =
        session(addr, Protocol::V5, "alias-pub", true, Properties::default()).await;
    for t in ["al/a", "al/a", "al/b"] {
        publisher
            .send(publish(t, QoS::AtMostOnce, 0, false, t))
            .await;
    }
    let first = expect_publish(&mut c).await;
    assert_eq!(
        (first.topic.as_str(), first.properties.topic_alias),
        ("al/a", Some(1))
    );
    let second = expect_publish(&mut c).await;
    assert_eq!(
        (second.topic.as_str(), second.properties.topic_alias),
        ("", Some(1))
    );
    let third = expect_publish(&mut c).await;
    assert_eq!(
        (third.topic.as_str(), third.properties.topic_alias),
        ("al/b", None),
        "no alias left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_the_receive_maximum_is_0x93() {
    let (_s, addr) = start_broker("receive_max_broker = 2\n").await;
    let (mut c, _) = session(addr, Protocol::V5, "greedy", true, Properties::default()).await;
    for id in 1..=3 {
        c.send(publish("rm/x", QoS::ExactlyOnce, id, false, "x"))
            .await;
    }
    let mut last = None;
    while let Some(p) = c.recv().await {
        last = Some(p);
    }
    match last {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason, DisconnectReason::ReceiveMaximumExceeded)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_window_holds_back_until_acknowledged() {
    let (_s, addr) = start_broker("max_inflight_messages = 2\n").await;
    let (mut c, _) = session(addr, Protocol::V311, "slow", true, Properties::default()).await;
    c.send(subscribe(
        "w/#",
        SubOptions {
            qos: QoS::AtLeastOnce,
            ..Default::default()
        },
    ))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    let (mut publisher, _) =
        session(addr, Protocol::V311, "fast", true, Properties::default()).await;
    for i in 1..=5 {
        publisher
            .send(publish("w/x", QoS::AtLeastOnce, i, false, &i.to_string()))
            .await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    let a = expect_publish(&mut c).await;
    let b = expect_publish(&mut c).await;
    nothing_pending(&mut c).await; // the window is full
    c.send(Packet::PubAck(PubResp::ok(a.packet_id))).await;
    let third = expect_publish(&mut c).await;
    assert_eq!(&third.payload[..], b"3");
    nothing_pending(&mut c).await;
    c.send(Packet::PubAck(PubResp::ok(b.packet_id))).await;
    c.send(Packet::PubAck(PubResp::ok(third.packet_id))).await;
    assert_eq!(&expect_publish(&mut c).await.payload[..], b"4");
    assert_eq!(&expect_publish(&mut c).await.payload[..], b"5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_queue_overflow_is_dropped_and_counted() {
    let (server, addr) = start_broker("max_offline_messages = 5\n").await;
    let (mut c, _) = session(addr, Protocol::V311, "full", false, Properties::default()).await;
    c.send(subscribe(
        "f/#",
        SubOptions {
            qos: QoS::AtLeastOnce,
            ..Default::default()
        },
    ))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c.send(Packet::Disconnect(Disconnect::default())).await;
    c.until_closed().await;
    let deadline = Instant::now() + WAIT;
    while server.engine().is_online("", "full") {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut publisher, _) =
        session(addr, Protocol::V311, "flood", true, Properties::default()).await;
    for i in 1..=10 {
        publisher
            .send(publish("f/x", QoS::AtLeastOnce, i, false, &i.to_string()))
            .await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    assert_eq!(
        Metrics::get(&server.engine().metrics().queue_message_drop),
        5
    );
    let (mut back, present) =
        session(addr, Protocol::V311, "full", false, Properties::default()).await;
    assert!(present);
    for i in 1..=5 {
        let p = expect_publish(&mut back).await;
        assert_eq!(
            p.payload,
            Bytes::from(i.to_string()),
            "the oldest five are kept"
        );
        back.send(Packet::PubAck(PubResp::ok(p.packet_id))).await;
    }
    nothing_pending(&mut back).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_session_expiry_interval_ends_the_session() {
    let (server, addr) = start_broker("").await;
    let props = || {
        Properties::from(vmq_broker::mqtt::PropertyFields {
            session_expiry_interval: Some(1),
            ..Default::default()
        })
    };
    let (mut c, present) = session(addr, Protocol::V5, "brief", false, props()).await;
    assert!(!present);
    c.send(subscribe("e/#", SubOptions::default())).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    drop(c);
    // Back within the interval: the session is there.
    let deadline = Instant::now() + WAIT;
    while server.engine().is_online("", "brief") {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (c, present) = session(addr, Protocol::V5, "brief", false, props()).await;
    assert!(present);
    drop(c);
    // Gone once the interval has passed (the expiry timer is what is tested).
    let deadline = Instant::now() + WAIT;
    while Metrics::get(&server.engine().metrics().sessions_expired) == 0 {
        assert!(Instant::now() < deadline, "session never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_c, present) = session(addr, Protocol::V5, "brief", false, props()).await;
    assert!(!present);
    assert_eq!(server.engine().subscription_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mountpoints_isolate_listeners() {
    let text = "listener.tcp.default = 127.0.0.1:0\nlistener.tcp.iot = 127.0.0.1:0\n\
                listener.tcp.iot.mountpoint = iot\nallow_anonymous = on\nmessage_store = off\n";
    let server = vmq_broker::Server::start(vmq_broker::Config::parse(text, "t").unwrap())
        .await
        .unwrap();
    let (plain, iot) = (server.local_addrs()[0], server.local_addrs()[1]);
    let (mut a, _) = session(
        plain,
        Protocol::V311,
        "same-id",
        true,
        Properties::default(),
    )
    .await;
    let (mut b, _) = session(iot, Protocol::V311, "same-id", true, Properties::default()).await;
    for c in [&mut a, &mut b] {
        c.send(subscribe("m/#", SubOptions::default())).await;
        assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    }
    // The same client id on two mountpoints is two sessions: no takeover.
    b.send(publish("m/1", QoS::AtMostOnce, 0, false, "iot only"))
        .await;
    assert_eq!(&expect_publish(&mut b).await.payload[..], b"iot only");
    nothing_pending(&mut a).await;
    a.send(publish("m/1", QoS::AtMostOnce, 0, false, "plain only"))
        .await;
    assert_eq!(&expect_publish(&mut a).await.payload[..], b"plain only");
    nothing_pending(&mut b).await;
}

/// Flow control: a publisher faster than a subscriber that keeps reading is slowed down (its
/// socket is not read for a moment) instead of overrunning the subscriber's queue; a
/// subscriber that stops reading is not waited for, and its queue drops (counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_publishers_are_paced_by_reading_subscribers_not_by_stuck_ones() {
    let (server, addr) = start_broker("max_online_messages = 100\n").await;
    let metrics = server.engine().metrics().clone();
    let qos0 = SubOptions {
        qos: QoS::AtMostOnce,
        ..SubOptions::default()
    };
    let (mut slow, _) = session(addr, Protocol::V311, "slow", true, Properties::default()).await;
    slow.send(subscribe("flow/#", qos0)).await;
    assert!(matches!(slow.recv().await, Some(Packet::SubAck(_))));
    let (mut stuck, _) = session(addr, Protocol::V311, "stuck", true, Properties::default()).await;
    stuck.send(subscribe("jam/#", qos0)).await;
    assert!(matches!(stuck.recv().await, Some(Packet::SubAck(_))));
    let (mut publisher, _) =
        session(addr, Protocol::V311, "fast", true, Properties::default()).await;

    // 3,000 QoS 0 messages as fast as the socket takes them, to a subscriber that reads with
    // pauses: all of them arrive, none dropped, and the publisher was paced.
    const N: usize = 3_000;
    let send = tokio::spawn(async move {
        for i in 0..N {
            publisher
                .framed
                .feed(&publish(
                    "flow/1",
                    QoS::AtMostOnce,
                    0,
                    false,
                    &i.to_string(),
                ))
                .await
                .unwrap();
        }
        publisher.framed.flush().await.unwrap();
        publisher
    });
    let mut got = 0;
    while got < N {
        match tokio::time::timeout(WAIT, slow.recv()).await {
            Ok(Some(Packet::Publish(p))) => {
                assert_eq!(
                    p.payload,
                    Bytes::from(got.to_string()),
                    "in order, none missing"
                );
                got += 1;
                if got % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            other => panic!("after {got}: {other:?}"),
        }
    }
    let mut publisher = send.await.unwrap();
    assert_eq!(Metrics::get(&metrics.queue_message_drop), 0);
    assert!(
        Metrics::get(&metrics.publishers_paced) > 0,
        "the publisher was paced"
    );

    // A subscriber that never reads: the publisher is not held up beyond the short pauses
    // while it still looked alive, and the overflow is dropped and counted.
    // (1 KiB messages: enough to fill the socket buffers between broker and subscriber.)
    let started = Instant::now();
    let big = "x".repeat(1024);
    for _ in 0..10_000 {
        publisher
            .framed
            .feed(&publish("jam/1", QoS::AtMostOnce, 0, false, &big))
            .await
            .unwrap();
    }
    nothing_pending(&mut publisher).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a stuck subscriber held the publisher for {:?}",
        started.elapsed()
    );
    assert!(Metrics::get(&metrics.queue_message_drop) > 0);
    drop(stuck);
}

/// Connections that go quiet give their buffers back (after CONNACK and after a second of
/// silence): a packet that arrives afterwards, even one split by a long pause, is read whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_connections_still_read_whole_packets() {
    let (_s, addr) = start_broker("").await;
    let (mut sub, _) = session(
        addr,
        Protocol::V311,
        "quiet-sub",
        true,
        Properties::default(),
    )
    .await;
    sub.send(subscribe(
        "q/#",
        SubOptions {
            qos: QoS::AtLeastOnce,
            ..Default::default()
        },
    ))
    .await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let (mut publisher, _) = session(
        addr,
        Protocol::V311,
        "quiet-pub",
        true,
        Properties::default(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1300)).await;

    let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let packet = Packet::Publish(vmq_broker::mqtt::Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "q/big".into(),
        packet_id: 7,
        payload: Bytes::from(payload.clone()),
        properties: Properties::default(),
    });
    let mut wire = bytes::BytesMut::new();
    vmq_broker::mqtt::encode_packet(&packet, Protocol::V311, &mut wire);
    // A packet (the connection takes buffers again), then half of the big one, a pause longer
    // than the quiet period with that half buffered, then the rest.
    publisher
        .send(publish("q/warm", QoS::AtMostOnce, 0, false, "warm"))
        .await;
    assert_eq!(expect_publish(&mut sub).await.payload, Bytes::from("warm"));
    let (first, rest) = wire.split_at(wire.len() / 2);
    publisher.send_bytes(first).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    publisher.send_bytes(rest).await;
    assert_eq!(publisher.recv().await, Some(Packet::PubAck(PubResp::ok(7))));
    let got = expect_publish(&mut sub).await;
    assert_eq!(got.topic, "q/big");
    assert_eq!(got.payload, Bytes::from(payload));
    // Both connections keep working after another quiet spell.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    publisher
        .send(publish("q/small", QoS::AtMostOnce, 0, false, "after"))
        .await;
    assert_eq!(expect_publish(&mut sub).await.payload, Bytes::from("after"));
    nothing_pending(&mut publisher).await;
}
